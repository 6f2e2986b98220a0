"""The rendered reports work in a real browser, offline: headless Chromium loads index.html and a report, runs
the embedded plotly.js (no network), and draws the similarity heatmap and the layer slider."""
from __future__ import annotations

import subprocess
import zlib
from pathlib import Path

import pytest

import lfcore.runner

CHROMIUM = Path("/usr/bin/chromium")
SMOKE = Path(__file__).resolve().parent.parent / "params" / "smoke.yaml"

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium "
                                "(apt-get install chromium); CI installs it")


def _chromium(tmp_path: Path, url: str, *args: str) -> subprocess.CompletedProcess:
    """Headless Chromium with networking features off; scripts get 8 s of virtual time."""
    profile = tmp_path / "profile"
    profile.mkdir(exist_ok=True)
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-default-apps",
           f"--user-data-dir={profile}", "--virtual-time-budget=8000", *args, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("browser")
    (run,) = lfcore.runner.reproduce(SMOKE, only=["obs1"], out=out, threads=1, log=lambda *a: None)
    assert run.status == "ok", run.error
    return out, run


def test_report_draws_the_heatmap(report, tmp_path):
    out, run = report
    dom = _chromium(tmp_path, run.html.as_uri(), "--dump-dom").stdout
    assert dom.count('class="plotly-graph-div') >= 4, "figures missing"
    assert "main-svg" in dom, "plotly.js did not draw (is it embedded?)"
    assert 'class="hm"' in dom or "heatmaplayer" in dom, "no heatmap layer drawn"
    assert "slider-container" in dom, "the layer slider was not drawn"
    assert "Observation I" in dom


def test_index_page_lists_the_report(report, tmp_path):
    out, run = report
    dom = _chromium(tmp_path, (out / "index.html").as_uri(), "--dump-dom").stdout
    assert run.html.name in dom and "similarity_map.json" in dom and "LRDS" in dom


def test_screenshot_is_not_blank(report, tmp_path):
    out, run = report
    png = tmp_path / "shot.png"
    _chromium(tmp_path, run.html.as_uri(), "--window-size=1200,2600", f"--screenshot={png}")
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    idat, pos = b"", 8  # walk the PNG chunks, collect the image data
    while pos < len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        kind = data[pos + 4:pos + 8]
        if kind == b"IDAT":
            idat += data[pos + 8:pos + 8 + length]
        pos += 12 + length
    pixels = zlib.decompress(idat)
    assert len(set(pixels)) > 64, "the page looks blank"  # a heatmap brings many distinct colour values
