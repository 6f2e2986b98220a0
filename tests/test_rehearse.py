"""rehearse: the local hub holds exactly what the params name (ids, revisions, tokenizer files or none, dataset
configs and splits, Bible files at the params' relative paths), and every params/paper_*.yaml runs unchanged
against it through ``lfcore reproduce --rehearse``."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from huggingface_hub import scan_cache_dir

import lfcore.runner
from lfcore.params import ParamsError
from lfcore.rehearse import prepare

ROOT = Path(__file__).resolve().parent.parent
PAPER = sorted((ROOT / "params").glob("paper_*.yaml"))


def _snapshot_files(hub: Path, repo: str, revision: str, kind: str = "models") -> set[str]:
    folder = hub / f"{kind}--{repo.replace('/', '--')}"
    commit = (folder / "refs" / revision).read_text()
    return {str(f.relative_to(folder / "snapshots" / commit)) for f in (folder / "snapshots" / commit).rglob("*")
            if f.is_file()}


def test_local_hub_holds_what_the_checkpoint_params_name(tmp_path):
    source = ROOT / "params" / "paper_bloom_checkpoints.yaml"
    copy, env = prepare(source, tmp_path)
    assert copy.read_bytes() == source.read_bytes() and tmp_path in copy.parents  # unchanged, never in the tree
    assert env["HF_HUB_OFFLINE"] == "1" and env["HF_HUB_CACHE"].startswith(str(tmp_path))
    hub = Path(env["HF_HUB_CACHE"])
    data = yaml.safe_load(source.read_text())
    for m in data["checkpoints"]["models"]:
        files = _snapshot_files(hub, m["spec"], m.get("revision", "main"))
        assert {"config.json", "model.safetensors"} <= files
        # the intermediate branches hold no tokenizer, as on the hub; bloom-7b1 (their tokenizer) holds one
        assert ("tokenizer.json" in files) == (m["spec"] == "bigscience/bloom-7b1")
    repos = {r.repo_id: r for r in scan_cache_dir(hub).repos}  # huggingface_hub reads the layout
    branches = {ref for rev in repos["bigscience/bloom-7b1-intermediate"].revisions for ref in rev.refs}
    assert branches == {m["revision"] for m in data["checkpoints"]["models"] if "revision" in m}
    for lang in data["accuracy"]["languages"]:
        assert f"{lang}/eval/0000.parquet" in _snapshot_files(hub, "juletxara/xstory_cloze", "main", "datasets")
    for rel in data["corpus"]["files"].values():
        assert (copy.parent / rel).resolve().is_file()


def test_xlsum_parquet_export_has_test_and_validation(tmp_path):
    copy, env = prepare(ROOT / "params" / "paper_bloom7b1.yaml", tmp_path)
    files = _snapshot_files(Path(env["HF_HUB_CACHE"]), "csebuetnlp/xlsum", "refs/convert/parquet", "datasets")
    assert {"arabic/test/0000.parquet", "arabic/validation/0000.parquet", "vietnamese/test/0000.parquet"} <= files


def test_absolute_bible_paths_cannot_be_rehearsed(tmp_path):
    params = tmp_path / "p.yaml"
    params.write_text(yaml.safe_dump({"languages": ["en", "fr"], "notebooks": ["obs1"], "corpus": {
        "source": "bible", "files": {"en": "/data/English.xml", "fr": "/data/French.xml"}}}))
    with pytest.raises(ParamsError, match="corpus.files.en: /data/English.xml is absolute"):
        prepare(params, tmp_path / "root")


@pytest.mark.rehearsal
@pytest.mark.parametrize("params", PAPER, ids=[p.stem for p in PAPER])
def test_paper_params_rehearse(params, tmp_path):
    runs = lfcore.runner.rehearse(params, out=tmp_path / "out", threads=1, log=lambda *a: None)
    failed = [r.error for r in runs if r.status != "ok"]
    assert not failed, failed
    assert {r.key for r in runs} == set(yaml.safe_load(params.read_text())["notebooks"])
