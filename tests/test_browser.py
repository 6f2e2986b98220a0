"""The notebooks work in the Jupyter tools researchers use, checked in a real browser and a real server:

- lfcore's reports load offline in headless Chromium: figures drawn, the index links them, not blank;
- moving a slider (a mouse click on a step of the rail, through the Chrome DevTools protocol) switches the
  data and keeps the figure title (obs1's layer slider in lfcore's report, obs2's threshold slider in plain
  nbconvert's page);
- plain ``papermill`` (no kernel or language flag, run from another folder, ``-f``/``-p`` overrides) and plain
  ``jupyter nbconvert --to html`` give a page with every figure drawn with the network off, and ``lfcore render``
  a page with no external request at all;
- a running JupyterLab serves ``notebooks/*.py`` as notebooks on the ``lfcore`` kernel (contents API).

Skipped without Debian's chromium (``apt-get install chromium``) or JupyterLab (the ``test`` extra); CI has both.
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
import zlib
from pathlib import Path

import pytest

import lfcore.cli
import lfcore.runner

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT / "params" / "smoke.yaml"
OFFLINE = "--proxy-server=127.0.0.1:9"  # every http(s) request fails: a page must draw from what it embeds

needs_chromium = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium "
                                    "(apt-get install chromium); CI installs it")


def _chromium(tmp_path: Path, url: str, *args: str) -> subprocess.CompletedProcess:
    """Headless Chromium with networking features off; scripts get 8 s of virtual time."""
    profile = tmp_path / "profile"
    profile.mkdir(exist_ok=True)
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-default-apps", OFFLINE,
           f"--user-data-dir={profile}", "--virtual-time-budget=8000", *args, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def _evaluate(tmp_path: Path, url: str, expression: str, timeout: float = 90):
    """Open ``url`` in headless Chromium and return the value of the JavaScript ``expression`` (a promise is
    awaited), evaluated through the DevTools protocol once the page itself (not the blank page before) runs it.
    Real time, not virtual: plotly's slider applies a step in an animation frame."""
    from tornado.websocket import websocket_connect

    profile = tmp_path / "devtools-profile"
    profile.mkdir(exist_ok=True)
    proc = subprocess.Popen([str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", OFFLINE,
                             f"--user-data-dir={profile}", "--remote-debugging-port=0", url],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file, deadline = profile / "DevToolsActivePort", time.time() + timeout
        while not (port_file.exists() and port_file.read_text().strip()):
            assert time.time() < deadline, "Chromium did not open its DevTools port"
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        pages = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10))
        socket_url = next(p["webSocketDebuggerUrl"] for p in pages if p["type"] == "page")

        async def run():
            ws = await websocket_connect(socket_url)
            for k in range(200):
                ws.write_message(json.dumps({"id": k, "method": "Runtime.evaluate", "params": {
                    "expression": f"location.href === {json.dumps(url)} && ({expression})",
                    "awaitPromise": True, "returnByValue": True}}))
                while (msg := json.loads(await ws.read_message())).get("id") != k:
                    pass
                value = msg.get("result", {}).get("result", {}).get("value")
                if value:
                    return value
                await asyncio.sleep(0.2)

        return asyncio.run(asyncio.wait_for(run(), timeout))
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# Click the second step of every slider of the page; report each slider figure's drawn title, visible traces
# and legend entries before and after.
MOVE_SLIDERS = """new Promise(done => {
  const go = () => setTimeout(() => {
    const figs = [...document.querySelectorAll(".js-plotly-plot")].filter(gd => gd.querySelector(".slider-container"));
    const state = gd => ({title: (gd.querySelector(".gtitle") || {}).textContent || null,
                          visible: gd.data.map(t => t.visible !== false),
                          legend: gd.querySelectorAll(".legend .traces").length});
    const before = figs.map(state);
    for (const gd of figs) {
      const rail = gd.querySelector("rect.slider-rail-touch-rect");
      const tick = gd.querySelectorAll("rect.slider-tick-rect")[1];
      const r = rail.getBoundingClientRect(), t = tick.getBoundingClientRect();
      const at = {clientX: t.left + t.width / 2, clientY: r.top + r.height / 2, bubbles: true, view: window};
      rail.dispatchEvent(new MouseEvent("mousedown", at));
      gd.dispatchEvent(new MouseEvent("mouseup", at));
    }
    setTimeout(() => done({figs: figs.map((gd, k) => ({before: before[k], after: state(gd)})),
                           plots: document.querySelectorAll(".js-plotly-plot").length,
                           divs: document.querySelectorAll(".plotly-graph-div").length}), 1000);
  }, 500);
  document.readyState === "complete" ? go() : window.addEventListener("load", go);
})"""


def _kernel_env(tmp: Path) -> dict:
    """The environment with a kernelspec named "lfcore" (this interpreter) first on JUPYTER_PATH, as
    ``scripts/run.sh`` registers it in .venv, and this checkout first on PYTHONPATH."""
    spec = tmp / "jupyter" / "kernels" / "lfcore"
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "kernel.json").write_text(json.dumps({"argv": [sys.executable, "-m", "ipykernel_launcher", "-f",
                                                           "{connection_file}"],
                                                  "display_name": "lfcore", "language": "python"}))
    env = dict(os.environ, JUPYTER_PATH=os.pathsep.join([str(tmp / "jupyter"), os.environ.get("JUPYTER_PATH", "")]),
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), OMP_NUM_THREADS="1")
    return env


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    if not CHROMIUM.exists():
        pytest.skip("needs chromium")
    out = ROOT / "reports" / f".test-browser-{uuid.uuid4().hex[:8]}"  # inside the repository, as by default
    try:
        (run,) = lfcore.runner.reproduce(SMOKE, only=["obs1"], out=out, threads=1, log=lambda *a: None)
        assert run.status == "ok", run.error
        yield out, run
    finally:
        shutil.rmtree(out, ignore_errors=True)


@pytest.fixture(scope="module")
def papermill_html(tmp_path_factory):
    """obs2 executed by plain papermill from a folder outside the repository (``-f smoke.yaml``, ``-p`` paths
    relative to the repository root), rendered by plain ``jupyter nbconvert --to html``."""
    if not CHROMIUM.exists():
        pytest.skip("needs chromium")
    tmp = tmp_path_factory.mktemp("papermill")
    env, rel = _kernel_env(tmp), f"reports/.test-papermill-{uuid.uuid4().hex[:8]}"
    subprocess.run([sys.executable, "-m", "jupytext", "--to", "ipynb", "-o", str(tmp / "obs2.ipynb"),
                    str(ROOT / "notebooks" / "obs2_regions.py")], check=True, env=env, capture_output=True)
    try:
        pm = subprocess.run([sys.executable, "-m", "papermill", "obs2.ipynb", "out.ipynb", "-f", str(SMOKE),
                             "-p", "out_dir", f"{rel}/obs2", "-p", "cache_dir", f"{rel}/cache", "--no-progress-bar"],
                            cwd=tmp, env=env, capture_output=True, text=True, timeout=600)
        assert pm.returncode == 0, pm.stderr[-3000:]
        assert (ROOT / rel / "obs2" / "summary.json").exists(), "out_dir did not resolve against the repository"
    finally:
        shutil.rmtree(ROOT / rel, ignore_errors=True)
    nbc = subprocess.run([sys.executable, "-m", "nbconvert", "--to", "html", "out.ipynb"], cwd=tmp, env=env,
                         capture_output=True, text=True, timeout=300)
    assert nbc.returncode == 0, nbc.stderr[-3000:]
    return tmp / "out.html"


@needs_chromium
def test_report_draws_the_heatmap(report, tmp_path):
    out, run = report
    dom = _chromium(tmp_path, run.html.as_uri(), "--dump-dom").stdout
    assert dom.count('class="plotly-graph-div') >= 4, "figures missing"
    assert "main-svg" in dom, "plotly.js did not draw (is it embedded?)"
    assert 'class="hm"' in dom or "heatmaplayer" in dom, "no heatmap layer drawn"
    assert "slider-container" in dom, "the layer slider was not drawn"
    assert "Observation I" in dom


@needs_chromium
def test_index_page_lists_the_report(report, tmp_path):
    out, run = report
    dom = _chromium(tmp_path, (out / "index.html").as_uri(), "--dump-dom").stdout
    assert run.html.name in dom and "similarity_map.json" in dom and "LRDS" in dom


@needs_chromium
def test_report_carries_no_absolute_path(report):
    out, run = report
    for f in (run.html, run.ipynb, out / "index.html"):
        assert str(ROOT) not in f.read_text(encoding="utf-8"), f"{f.name} names a folder of this machine"


@needs_chromium
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


@needs_chromium
def test_layer_slider_switches_the_map_and_keeps_its_title(report, tmp_path):
    out, run = report
    (fig,) = _evaluate(tmp_path, run.html.as_uri(), MOVE_SLIDERS)["figs"]
    assert fig["before"]["title"].endswith("layer 0") and fig["after"]["title"].endswith("layer 1")
    assert fig["before"]["visible"] == [True, False, False] and fig["after"]["visible"] == [False, True, False]


@needs_chromium
def test_plain_papermill_and_nbconvert_draw_every_figure_offline(papermill_html, tmp_path):
    text = papermill_html.read_text(encoding="utf-8")
    assert text.count("* plotly.js v") == 1, "plotly.js must be embedded exactly once"
    assert 'src="https://cdn.plot.ly' not in text
    page = _evaluate(tmp_path, papermill_html.as_uri(), MOVE_SLIDERS)
    assert page["divs"] >= 5 and page["plots"] == page["divs"], "a figure was not drawn"
    (fig,) = page["figs"]  # obs2's threshold slider (smoke sweep 0.5, 1, 1.5) over 4 languages
    assert fig["before"]["title"].startswith("Key neurons per layer by z threshold: z > 0.5 (SKLR")
    assert fig["after"]["title"].startswith("Key neurons per layer by z threshold: z > 1 (SKLR")
    assert fig["after"]["visible"] == [False] * 4 + [True] * 4 + [False] * 4
    assert fig["before"]["legend"] == fig["after"]["legend"] == 4, "the legend must list every language"


@needs_chromium
def test_lfcore_render_makes_a_page_without_external_requests(papermill_html, tmp_path):
    page = tmp_path / "render.html"
    assert lfcore.cli.main(["render", str(papermill_html.with_suffix(".ipynb")), "-o", str(page)]) == 0
    text = page.read_text(encoding="utf-8")
    assert text.count("* plotly.js v") == 1 and 'src="http' not in text
    drawn = _evaluate(tmp_path, page.as_uri(), MOVE_SLIDERS)
    assert drawn["divs"] >= 5 and drawn["plots"] == drawn["divs"]


def test_render_rejects_what_is_not_an_executed_notebook(tmp_path, capsys):
    assert lfcore.cli.main(["render", str(ROOT / "notebooks" / "obs1_similarity.py")]) == 2
    assert "not an .ipynb file" in capsys.readouterr().err


def test_jupyterlab_opens_the_percent_scripts_as_notebooks_on_the_lfcore_kernel(tmp_path):
    pytest.importorskip("jupyterlab", reason="needs JupyterLab (pip install -e '.[test]')")
    env = _kernel_env(tmp_path)
    env.update(JUPYTER_CONFIG_DIR=str(tmp_path / "config"), JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"))
    # jupytext's default viewer for .py, as scripts/run.sh sets it (there in .venv/etc/jupyter)
    subprocess.run([sys.executable, "-m", "jupytext_config", "--settings-file",
                    str(tmp_path / "config" / "labconfig" / "default_setting_overrides.json"), "set-default-viewer",
                    "python"], check=True, env=env, capture_output=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = uuid.uuid4().hex
    lab = subprocess.Popen([sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
                            f"--ServerApp.token={token}", f"--ServerApp.root_dir={ROOT}",
                            *(["--allow-root"] if os.geteuid() == 0 else [])], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def get(path: str):
        url = f"http://127.0.0.1:{port}{path}{'&' if '?' in path else '?'}token={token}"
        return json.load(urllib.request.urlopen(url, timeout=30))

    try:
        deadline = time.time() + 90
        while True:
            try:
                get("/api/status")
                break
            except OSError:
                assert lab.poll() is None and time.time() < deadline, "JupyterLab did not start"
                time.sleep(0.5)
        nb = get("/api/contents/notebooks/obs1_similarity.py?type=notebook&content=1")
        assert nb["type"] == "notebook" and nb["format"] == "json"
        assert nb["content"]["metadata"]["kernelspec"]["name"] == "lfcore"
        assert any("parameters" in c["metadata"].get("tags", []) for c in nb["content"]["cells"])
        assert "lfcore" in get("/api/kernelspecs")["kernelspecs"]
        viewers = get("/lab/api/settings/@jupyterlab/docmanager-extension:plugin")["schema"]["properties"]
        assert viewers["defaultViewers"]["default"]["python"] == "Jupytext Notebook"  # a double click opens a notebook
    finally:
        lab.terminate()
        lab.wait(timeout=30)
