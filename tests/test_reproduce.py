"""reproduce: params validation names key and file; every notebook runs under smoke.yaml through the runner and
writes HTML, CSV and JSON holding numbers; a second run reads the cache; failures name notebook and cell;
identical checkpoints warn; the CLI."""
from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import jupytext
import pandas as pd
import pytest
import yaml

import lfcore.cache
import lfcore.capture
import lfcore.cli
import lfcore.params
import lfcore.report
import lfcore.runner
import lfcore.series
import lfcore.specs
import lfcore.steps
import lfcore.uncertainty
from lfcore.params import ParamsError
from lfcore.specs import NOTEBOOKS

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT / "params" / "smoke.yaml"


def _write(tmp_path: Path, data: dict, name: str = "p.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------- params


@pytest.mark.parametrize("data, key, words", [
    ({"capture": {"batchsize": 4}}, "capture.batchsize", ["unknown key", "did you mean 'capture.batch_size'"]),
    ({"modle": {"spec": "x"}}, "modle", ["unknown key", "did you mean 'model'"]),
    ({"checkpoints": {"models": [{"spec": "tiny:llama-32", "revison": "a"}]}}, "checkpoints.models[0].revison",
     ["unknown key"]),
    ({"capture": {"batch_size": "16"}}, "capture.batch_size", ["expected int", "'16'"]),
    ({"capture": {"skip_first": 1}}, "capture.skip_first", ["expected bool"]),
    ({"languages": "en"}, "languages", ["expected a list"]),
    ({"model": {"dtype": "fp8"}}, "model.dtype", ["'fp8' is not one of"]),
    ({"corpus": {"source": "bible", "files": {"en": "nope/English.xml", "zh": "nope/Chinese.xml"}}},
     "corpus.files.en", ["file not found", "nope/English.xml", "relative to the params file"]),
    ({"corpus": {"source": "missing.jsonl"}}, "corpus.source", ["file not found"]),
    ({"model": {"spec": "./no-such-model"}}, "model.spec", ["file not found"]),
    ({"languages": ["en", "xx"]}, "languages[1]", ["unknown language code 'xx'"]),
    ({"languages": ["en", "chinese"]}, "languages[1]", ["did you mean 'zh'"]),
    ({"languages": ["en", "sw"]}, "languages[1]", ["'sw' is not available in the bundled corpus"]),
    ({"accuracy": {"languages": ["en", "fr"]}}, "accuracy.languages[1]", ["'fr' is not available in task 'xcopa_xl'"]),
    ({"generation": {"languages": ["de"], "prompts": {"en": ["x"]}}}, "generation.languages[0]", ["not available"]),
    ({"notebooks": ["obs9"]}, "notebooks[0]", ["unknown notebook 'obs9'"]),
    ({"languages": ["en", "zh", "ar"], "generation": {"languages": ["en", "fr"]}}, "generation.languages[1]",
     ["'fr' is not in languages", "add 'fr' to languages"]),
    ({"perplexity": {"seqlen": -5}}, "perplexity.seqlen", ["-5 must be at least 3"]),
    ({"perplexity": {"stride": 0}}, "perplexity.stride", ["0 must be at least 1"]),
    ({"perplexity": {"seqlen": 64, "stride": 64}}, "perplexity.stride", ["must be below perplexity.seqlen"]),
    ({"perplexity": {"random_percent": 250}}, "perplexity.random_percent", ["250.0 must be in (0, 100]"]),
    ({"perplexity": {"documents": 0}}, "perplexity.documents", ["must be at least 1"]),
    ({"perplexity": {"max_tokens": 0}}, "perplexity.max_tokens", ["must be at least 1"]),
    ({"accuracy": {"limit": -3}}, "accuracy.limit", ["must be at least 1"]),
    ({"accuracy": {"languages": []}}, "accuracy.languages", ["must not be empty"]),
    ({"uncertainty": {"level": 95}}, "uncertainty.level", ["must be in (0, 1)"]),
    ({"uncertainty": {"n_boot": 0}}, "uncertainty.n_boot", ["must be at least 1"]),
    ({"generation": {"prompts_per_language": 0}}, "generation.prompts_per_language", ["must be at least 1"]),
    ({"generation": {"max_new_tokens": 0}}, "generation.max_new_tokens", ["must be at least 1"]),
    ({"capture": {"batch_size": 0}}, "capture.batch_size", ["must be at least 1"]),
    ({"corpus": {"n": 1}}, "corpus.n", ["must be at least 2"]),
    ({"corpus": {"n": 100000}}, "corpus.n", ["100000 sentences per language asked", "has only"]),
    ({"diagnostics": {"share": 1.5}}, "diagnostics.share", ["must be in (0, 1]"]),
    ({"sizes": {"models": []}}, "sizes.models", ["must not be empty"]),
    ({"sizes": {"models": [{"spec": "tiny:llama-32", "params": -1}]}}, "sizes.models[0].params", ["must be > 0"]),
])
def test_params_errors_name_key_and_file(tmp_path, data, key, words):
    path = _write(tmp_path, data)
    with pytest.raises(ParamsError) as err:
        lfcore.params.load_params(path)
    msg = str(err.value)
    assert str(path) in msg and key in msg, msg
    for w in words:
        assert w in msg, msg


def test_generation_languages_matter_only_when_obs2_runs(tmp_path):
    p = lfcore.params.load_params(_write(tmp_path, {"languages": ["en", "ar"], "notebooks": ["obs1"]}))
    assert p.generation.languages == ["en", "zh", "fr"]  # the default, unused without obs2
    with pytest.raises(ParamsError, match="generation.languages.1.: 'zh' is not in languages"):
        lfcore.params.load_params(_write(tmp_path, {"languages": ["en", "ar"]}))


def test_params_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ParamsError, match="params file not found"):
        lfcore.params.load_params(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("languages: [en, zh\n")
    with pytest.raises(ParamsError, match="bad.yaml: not valid YAML"):
        lfcore.params.load_params(bad)


def test_paths_are_relative_to_the_params_file(tmp_path, monkeypatch):
    (tmp_path / "sub" / "data").mkdir(parents=True)
    lines = [json.dumps({"id": f"s{i}", "lang": lang, "text": f"{lang} {i}"}) for i in range(3) for lang in ("en", "fr")]
    (tmp_path / "sub" / "data" / "c.jsonl").write_text("\n".join(lines))
    path = _write(tmp_path / "sub", {"languages": ["en", "fr"], "corpus": {"source": "data/c.jsonl", "n": 2},
                                     "generation": {"languages": ["en", "fr"]}, "steering": {"patch_languages": None},
                                     "regions": {"threshold": 0.5, "sweep": [0.5]}})  # 2 languages: z <= 1
    monkeypatch.chdir(tmp_path)  # the working directory does not matter
    p = lfcore.params.load_params(path)
    assert p.corpus.source == str((tmp_path / "sub" / "data" / "c.jsonl").resolve())
    assert len(lfcore.steps.sentences(p.corpus, p.languages)) == 4


def test_language_missing_from_a_corpus_file(tmp_path):
    lines = [json.dumps({"id": f"s{i}", "lang": lang, "text": "x"}) for i in range(3) for lang in ("en", "fr")]
    (tmp_path / "c.jsonl").write_text("\n".join(lines))
    path = _write(tmp_path, {"languages": ["en", "zh"], "corpus": {"source": "c.jsonl"}})
    with pytest.raises(ParamsError) as err:
        lfcore.params.load_params(path)
    assert "p.yaml: languages[1]: language 'zh' is not available in corpus.source" in str(err.value)
    assert "c.jsonl" in str(err.value)


def test_shipped_params_files_validate(tmp_path):
    for name in ("default", "smoke"):
        p = lfcore.params.load_params(ROOT / "params" / f"{name}.yaml")
        assert p.notebooks == list(NOTEBOOKS)
    # the paper's files need the Bible corpus beside the repository: validate them against placeholder files
    (tmp_path / "params").mkdir()
    bibles = tmp_path / "data" / "bible-corpus" / "bibles"
    bibles.mkdir(parents=True)
    for f in sorted((ROOT / "params").glob("paper_*.yaml")):
        shutil.copy(f, tmp_path / "params" / f.name)
        for rel in (yaml.safe_load(f.read_text()).get("corpus", {}).get("files") or {}).values():
            (tmp_path / "params" / rel).resolve().write_text("<cesDoc/>")
        p = lfcore.params.load_params(tmp_path / "params" / f.name)
        assert p.corpus.source == "bible" and all(Path(v).is_file() for v in p.corpus.files.values())
    assert {f.stem for f in (ROOT / "params").glob("paper_*.yaml")} == {
        "paper_bloom7b1", "paper_bloom_sizes", "paper_bloom_checkpoints", "paper_llama2"}


def test_perplexity_text_from_a_multi_config_dataset(tmp_path, monkeypatch):
    """XL-Sum's layout (one config per language, a test split, a text column), as a local dataset folder."""
    configs = {"ar": "arabic", "en": "english"}
    readme = ["---", "configs:"]
    for lang, name in configs.items():
        (tmp_path / name).mkdir()
        rows = [{"id": f"{name}-{i}", "text": f"{name} document {i}.", "summary": "s"} for i in range(4)]
        (tmp_path / name / "test.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
        readme += [f"- config_name: {name}", "  data_files:", "  - split: test", f"    path: {name}/test.jsonl"]
    (tmp_path / "README.md").write_text("\n".join(readme + ["---", ""]))
    p = lfcore.params.params_from_dict({"languages": ["ar", "en"], "generation": {"languages": ["en"]},
                                        "steering": {"patch_languages": None},
                                        "regions": {"sweep": [0.5], "threshold": 0.5}, "perplexity": {
        "source": f"hf:{tmp_path}", "hf_configs": configs, "documents": 2, "max_tokens": None, "revision": None}})
    texts = lfcore.steps.perplexity_texts(p.perplexity, p.languages)
    assert texts == {"ar": ["arabic document 0.", "arabic document 1."],
                     "en": ["english document 0.", "english document 1."]}

    import datasets

    def script(*a, **k):
        raise RuntimeError("Dataset scripts are no longer supported, but found xlsum.py")

    monkeypatch.setattr(datasets, "load_dataset", script)
    with pytest.raises(ValueError, match=r"loading script.*revision: refs/convert/parquet"):
        lfcore.steps.perplexity_texts(p.perplexity, p.languages)


# ---------------------------------------------------------------------------------------- notebooks


@pytest.mark.parametrize("key", list(NOTEBOOKS))
def test_parameters_cell_holds_plain_literals(key):
    stem, _, sections = NOTEBOOKS[key]
    nb = jupytext.read(ROOT / "notebooks" / f"{stem}.py")
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    names = []
    for stmt in ast.parse(tagged[0].source).body:
        assert isinstance(stmt, ast.Assign) and len(stmt.targets) == 1, ast.dump(stmt)
        ast.literal_eval(stmt.value)  # raises on anything but a literal
        names.append(stmt.targets[0].id)
    assert set(names) == set(sections) | {"title", "out_dir", "cache_dir"}
    # the defaults in the notebook are a valid params set, and they are lfcore's defaults (one source)
    values = {n: ast.literal_eval(s.value) for n, s in zip(names, ast.parse(tagged[0].source).body)}
    p, defaults = lfcore.params.notebook_params(**{n: values[n] for n in sections}), lfcore.specs.Params()
    for n in sections:
        assert getattr(p, n) == getattr(defaults, n), f"{stem}: parameters cell {n} differs from lfcore.params"
    # jupytext keeps the tag through a round trip (notebooks/jupytext.toml's cell_metadata_filter keeps "tags")
    again = jupytext.reads(jupytext.writes(nb, fmt="py:percent"), fmt="py:percent")
    assert any("parameters" in c.metadata.get("tags", []) for c in again.cells)


def test_jupytext_config_keeps_tags_and_kernel_in_notebooks_only():
    import tomllib

    from jupytext.config import find_jupytext_configuration_file

    config = tomllib.loads((ROOT / "notebooks" / "jupytext.toml").read_text())
    assert "py:percent" in config["formats"] and "tags" in config["cell_metadata_filter"].split(",")
    assert "kernelspec" in config["notebook_metadata_filter"].split(",")
    assert "jupytext" not in tomllib.loads((ROOT / "pyproject.toml").read_text()).get("tool", {})
    assert find_jupytext_configuration_file(str(ROOT / "notebooks")) == str(ROOT / "notebooks" / "jupytext.toml")


@pytest.mark.parametrize("key", list(NOTEBOOKS))
def test_notebook_names_the_project_kernel_and_round_trips(key):
    from jupytext.config import load_jupytext_configuration_file

    path = ROOT / "notebooks" / f"{NOTEBOOKS[key][0]}.py"
    nb = jupytext.read(path)
    assert nb.metadata["kernelspec"] == {"display_name": "lfcore", "language": "python", "name": "lfcore"}
    config = load_jupytext_configuration_file(str(ROOT / "notebooks" / "jupytext.toml"))
    assert jupytext.writes(nb, fmt="py:percent", config=config) == path.read_text(encoding="utf-8")


# ------------------------------------------------------------------------------------- cache units


def test_result_cache_round_trips_frames_and_counts(tmp_path):
    cache = lfcore.cache.Cache(tmp_path)
    calls = []

    def compute():
        calls.append(1)
        df = pd.DataFrame({"lang": ["en", "zh"], "acc": [0.5, 0.75]})
        df.attrs["model"] = {"name": "x"}
        return df

    a = cache.frame("accuracy", {"k": 1}, compute)
    b = cache.frame("accuracy", {"k": 1}, compute)
    cache.frame("accuracy", {"k": 2}, compute)
    assert len(calls) == 2 and cache.summary() == {"hits": {"accuracy": 1}, "misses": {"accuracy": 2}}
    pd.testing.assert_frame_equal(a, b)
    assert b.attrs["model"] == {"name": "x"}


def test_result_cache_frames_are_exact(tmp_path):
    """A hit equals the computed frame bit for bit (JSON alone keeps 10 digits)."""
    cache = lfcore.cache.Cache(tmp_path)
    table = pd.DataFrame({"Full model Perplexity": [13.941234567891234, float("nan")], "×en": [0.1 + 0.2, 49152.0],
                          "n": [3, 4], "note": ["a", "é"]}, index=pd.Index(["en", "Key Neuron Number"], name="lang"))
    table.attrs["window_nll"] = {"en": [1 / 3, 2 / 7]}
    first = cache.frame("deactivation", {"k": 1}, lambda: table)
    hit = cache.frame("deactivation", {"k": 1}, lambda: 1 / 0)
    pd.testing.assert_frame_equal(hit, first, check_exact=True)
    assert hit.attrs == table.attrs and cache.summary()["hits"] == {"deactivation": 1}


def test_code_digest_sees_every_file(tmp_path, monkeypatch):
    (tmp_path / "tasks").mkdir()
    (tmp_path / "a.py").write_text("x = 1")
    (tmp_path / "tasks" / "t.yaml").write_text("task: t")
    monkeypatch.setattr(lfcore.cache, "PACKAGE", tmp_path)

    def fresh(*paths):
        lfcore.cache.code_digest.cache_clear()
        return lfcore.cache.code_digest(*paths)

    before = fresh("a.py", "tasks")
    (tmp_path / "tasks" / "t.yaml").write_text("task: t2")
    assert fresh("a.py", "tasks") != before
    assert fresh("a.py") != fresh("tasks")
    lfcore.cache.code_digest.cache_clear()


def test_code_key_follows_the_imports(monkeypatch):
    """The code key of a step covers its module and every lfcore module that module imports, transitively."""
    hashed = []
    monkeypatch.setattr(lfcore.cache, "code_digest", lambda *paths: hashed.append(paths) or "k")
    lfcore.cache.code_key(lfcore.capture.capture)
    lfcore.cache.code_key(lfcore.uncertainty.score_intervals, data=("tasks",))
    assert {"capture.py", "cache.py", "core.py", "hooks.py", "models.py", "tiny.py"} <= set(hashed[0])
    assert "evaluate.py" not in hashed[0] and "runner.py" not in hashed[0]
    assert {"uncertainty.py", "metrics.py", "core.py"} <= set(hashed[1]) and hashed[1][-1] == "tasks"
    assert "models.py" not in hashed[1]


def test_step_keys_carry_code_and_data(tmp_path, tiny_llama, monkeypatch):
    """A fix to the code (or bundled data) that computes Table 1, accuracy or generations recomputes them."""
    from lfcore.specs import AccuracySpec, GenerationSpec, PerplexitySpec

    version, asked = {"v": "old"}, []

    def fake_key(*functions, data=()):
        asked.append(({f.__name__ for f in functions}, data))
        return version["v"]

    monkeypatch.setattr(lfcore.steps, "code_key", fake_key)
    cache = lfcore.cache.Cache(tmp_path)
    sets = {"en": {0: [1, 2]}, "zh": {1: [3]}}

    def run():
        lfcore.steps.perplexity_table(tiny_llama, {"en": "Some text to score, twice over."}, sets,
                                        PerplexitySpec(seqlen=8, batch_size=2), cache)
        lfcore.steps.task_accuracy(tiny_llama, AccuracySpec(languages=["en"], limit=2), cache)
        lfcore.steps.generations(tiny_llama, GenerationSpec(languages=["en"], prompts_per_language=1,
                                                            max_new_tokens=2), sets, cache)

    run()
    run()
    version["v"] = "new"
    run()
    steps = {"deactivation", "accuracy", "generations"}
    assert cache.summary() == {"hits": dict.fromkeys(steps, 1), "misses": dict.fromkeys(steps, 2)}
    assert {"deactivation_table", "crosslingual_accuracy", "generate"} == set().union(*(f for f, _ in asked))
    assert any("tasks" in data and "data/xcopa_en_id_vi_zh.jsonl" in data for _, data in asked)  # accuracy


def test_identical_checkpoints_warn(tmp_path, tiny_tokenizer):
    from lfcore import tiny

    for name in ("ckpt-a", "ckpt-b"):  # the same weights saved under two names
        tiny.model("llama", seed=3).save_pretrained(tmp_path / name)
        tiny_tokenizer.save_pretrained(tmp_path / name)
    p = lfcore.params.params_from_dict({"languages": ["en", "zh", "fr"], "corpus": {"n": 3},
                                        "regions": {"threshold": 1.0, "sweep": [1.0]}, "notebooks": ["obs3"],
                                        "checkpoints": {"models": [{"spec": "ckpt-a", "step": 1},
                                                                   {"spec": "ckpt-b", "step": 2}]}}, tmp_path, "test")
    cache = lfcore.cache.Cache(tmp_path / "cache")
    report = lfcore.report.Report(tmp_path / "out", "obs3", cache)
    sentences = lfcore.steps.sentences(p.corpus, p.languages)
    with pytest.warns(lfcore.series.IdenticalCheckpointsWarning, match="ckpt-b.*identical weights"):
        points = lfcore.series.run_series(p.checkpoints.models, sentences, p.capture, 1.0, cache, report=report)
    assert points[0].meta["fingerprint"] == points[1].meta["fingerprint"]
    assert "identical weights" in json.loads((tmp_path / "out" / "summary.json").read_text())["warnings"][0]
    assert lfcore.series.check_fingerprints([{"model": "m", "revision": "a", "fingerprint": "f1"},
                                             {"model": "m", "revision": "b", "fingerprint": "f2"}]) == []


# --------------------------------------------------------------------------------- runner (smoke)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """Every notebook under smoke.yaml, executed once through the runner."""
    out = tmp_path_factory.mktemp("smoke")
    runs = lfcore.runner.reproduce(SMOKE, out=out, threads=1, log=lambda *a: None)
    return out, runs


def _numbers_in(obj) -> bool:
    if isinstance(obj, bool):
        return False
    if isinstance(obj, (int, float)):
        return True
    if isinstance(obj, dict):
        return any(_numbers_in(v) for v in obj.values())
    if isinstance(obj, list):
        return any(_numbers_in(v) for v in obj)
    return False


def test_every_notebook_runs_under_smoke(smoke):
    out, runs = smoke
    assert [r.key for r in runs] == list(NOTEBOOKS)
    failed = [r.error for r in runs if r.status != "ok"]
    assert not failed, "\n".join(failed)
    for r in runs:
        html = r.html.read_text(encoding="utf-8")
        assert "plotly-graph-div" in html and "Plotly.newPlot" in html, r.stem
        assert "<script src=" not in html and "<link rel=\"stylesheet\" href=\"http" not in html, r.stem  # offline
        assert "injected-parameters" in r.ipynb.read_text(), r.stem
        assert "widget-view" not in r.ipynb.read_text(), r.stem  # no live widgets under the runner
        summary = r.summary
        assert summary["tables"] and summary["figures"] and summary["headline"], r.stem
        for rel in summary["tables"]:
            df = pd.read_csv(out / r.stem / rel)
            assert len(df), f"{r.stem}/{rel} is empty"
            if not rel.endswith("generations.csv"):  # generated text is the one table without numbers
                assert len(df.select_dtypes("number").columns), f"{r.stem}/{rel} holds no numbers"
        for rel in summary["figures"]:
            fig = json.loads((out / r.stem / rel).read_text())
            assert "bdata" not in json.dumps(fig["data"]), rel
            assert _numbers_in(fig["data"]), f"{r.stem}/{rel} holds no numbers"


def test_index_links_every_report_table_and_figure(smoke):
    out, runs = smoke
    index = (out / "index.html").read_text(encoding="utf-8")
    for r in runs:
        assert f"href='{r.html.name}'" in index and f"href='{r.ipynb.name}'" in index
        for rel in r.summary["tables"] + r.summary["figures"]:
            assert f"href='{r.stem}/{rel}'" in index
            assert (out / r.stem / rel).is_file()
    assert "LRDS" in index and "SKLR" in index


def test_second_run_reads_the_cache(smoke):
    out, _ = smoke
    cache = out / "cache"
    before = {p: p.stat().st_mtime_ns for p in cache.rglob("*.json")}
    runs = lfcore.runner.reproduce(SMOKE, only=["obs2", "obs4"], out=out, threads=1, force=True, log=lambda *a: None)
    assert all(r.status == "ok" and not r.reused for r in runs), [r.error for r in runs]
    for r in runs:
        assert r.summary["cache"]["misses"] == {}, (r.stem, r.summary["cache"])
        assert r.summary["cache"]["hits"].get("activations"), r.stem
    assert runs[0].summary["cache"]["hits"].keys() >= {"activations", "deactivation", "generations"}
    assert runs[1].summary["cache"]["hits"] == {"activations": 3, "accuracy": 3, "intervals": 3}
    after = {p: p.stat().st_mtime_ns for p in cache.rglob("*.json")}
    assert after == before  # nothing recomputed, nothing rewritten
    index = (out / "index.html").read_text(encoding="utf-8")
    assert all(f"href='{NOTEBOOKS[k][0]}.html'" in index for k in NOTEBOOKS)  # --only keeps the other reports


def test_unchanged_inputs_keep_the_last_run(smoke, tmp_path):
    out, first = smoke
    html = {r.key: r.html.read_bytes() for r in first}
    logged = []
    runs = lfcore.runner.reproduce(SMOKE, out=out, threads=1, log=logged.append)
    assert all(r.reused and r.status == "ok" for r in runs), logged
    assert {r.key: r.html.read_bytes() for r in runs} == html  # nothing executed or re-rendered
    assert sum("inputs unchanged" in line for line in logged) == len(NOTEBOOKS)
    assert "inputs unchanged since" in (out / "index.html").read_text(encoding="utf-8")
    # a changed parameter executes the notebooks that take it, and only those
    params = yaml.safe_load(SMOKE.read_text())
    params["regions"]["threshold"] = 1.5
    changed = tmp_path / "smoke.yaml"
    changed.write_text(yaml.safe_dump(params))
    runs = lfcore.runner.reproduce(changed, only=["obs1", "obs3"], out=out, threads=1, log=lambda *a: None)
    assert [(r.key, r.reused, r.status) for r in runs] == [("obs1", True, "ok"), ("obs3", False, "ok")]


def test_interrupted_run_leaves_no_stale_record(tmp_path, monkeypatch):
    """runs.json drops a notebook's record before it executes and records it as soon as it finishes, so a run
    interrupted in a later notebook cannot leave an earlier one's old record vouching for its new files."""
    import papermill

    stop = {"at": None}

    def execute(nb, path, parameters, cwd, **kw):
        if Path(path).stem == stop["at"]:
            raise KeyboardInterrupt
        Path(path).write_text(json.dumps({"title": parameters["title"]}))
        (Path(cwd) / "summary.json").write_text(json.dumps({"headline": {"title": parameters["title"]}}))

    def render(ipynb, html_path, title=""):
        Path(html_path).write_text(Path(ipynb).read_text())
        return Path(html_path)

    monkeypatch.setattr(papermill, "execute_notebook", execute)
    monkeypatch.setattr(lfcore.runner, "render_html", render)
    params = {}
    for name in ("x", "y"):
        data = yaml.safe_load(SMOKE.read_text())
        data["title"] = name.upper()
        params[name] = _write(tmp_path, data, f"{name}.yaml")
    out, quiet = tmp_path / "out", (lambda *a: None)

    lfcore.runner.reproduce(params["x"], only=["obs1", "obs3"], out=out, log=quiet)
    stop["at"] = "obs3_training"
    with pytest.raises(KeyboardInterrupt):
        lfcore.runner.reproduce(params["y"], only=["obs1", "obs3"], out=out, log=quiet)
    runs = json.loads((out / "runs.json").read_text())
    assert set(runs) == {"obs1"} and runs["obs1"]["status"] == "ok"  # obs1 ran with Y; obs3's record is gone
    assert "Observation III" not in (out / "index.html").read_text(encoding="utf-8")
    stop["at"] = None
    (run,) = lfcore.runner.reproduce(params["x"], only=["obs1"], out=out, log=quiet)
    assert not run.reused and json.loads(run.ipynb.read_text())["title"] == "X"

    # --only: each card links the params it was executed with and marks those of an older call
    lfcore.runner.reproduce(params["x"], only=["obs3"], out=out, log=quiet)
    lfcore.runner.reproduce(params["y"], only=["obs1"], out=out, log=quiet)
    assert (out / "obs1_similarity" / "params.yaml").read_text() == params["y"].read_text()
    assert (out / "obs3_training" / "params.yaml").read_text() == params["x"].read_text()
    index = (out / "index.html").read_text(encoding="utf-8")
    cards = {c.split("</h2>")[0]: c for c in index.split("<section")[1:]}
    (obs1,) = [c for t, c in cards.items() if "Observation I:" in t]
    (obs3,) = [c for t, c in cards.items() if "Observation III" in t]
    assert "href='obs1_similarity/params.yaml'" in obs1 and "executed with other params" not in obs1
    assert "href='obs3_training/params.yaml'" in obs3 and "executed with other params" in obs3


def test_run_environment_is_set_for_the_kernels_and_only_its_own_keys_restored(tmp_path, monkeypatch):
    """The kernels inherit the runner's variables; afterwards those keys are as before, and a variable that other
    code set during the run (a library at import, say) stays."""
    import os

    import papermill

    seen = {}

    def execute(nb, path, parameters, cwd, **kw):
        seen.update({k: os.environ.get(k) for k in (lfcore.report.RUNNER_ENV, "OMP_NUM_THREADS")})
        os.environ["LFCORE_TEST_SET_DURING_RUN"] = "1"
        raise RuntimeError("stop here")

    monkeypatch.setattr(papermill, "execute_notebook", execute)
    monkeypatch.setattr(lfcore.runner, "render_html", lambda ipynb, html_path, title="": Path(html_path))
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    monkeypatch.delenv(lfcore.report.RUNNER_ENV, raising=False)
    monkeypatch.delenv("LFCORE_TEST_SET_DURING_RUN", raising=False)
    lfcore.runner.reproduce(SMOKE, only=["obs1"], out=tmp_path / "out", threads=1, log=lambda *a: None)
    assert seen == {lfcore.report.RUNNER_ENV: "1", "OMP_NUM_THREADS": "1"}
    assert os.environ["OMP_NUM_THREADS"] == "7" and lfcore.report.RUNNER_ENV not in os.environ
    assert os.environ["LFCORE_TEST_SET_DURING_RUN"] == "1"


def test_inputs_digest_sees_local_files_and_unpinned_hub_models(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(b"1")
    params = {"model": {"spec": str(folder), "revision": None}, "out_dir": str(tmp_path / "out")}
    before = lfcore.runner.inputs_digest("# %%", params)
    assert before and lfcore.runner.inputs_digest("# %%", params) == before
    (folder / "weights.bin").write_bytes(b"22")
    assert lfcore.runner.inputs_digest("# %%", params) not in (None, before)
    assert lfcore.runner.inputs_digest("# %%", {"model": {"spec": "org/model", "revision": "main"}}) is None
    assert lfcore.runner.inputs_digest("# %%", {"model": {"spec": "org/model", "revision": "a" * 40}})
    assert lfcore.runner.inputs_digest("# %%", {"corpus": {"source": "hf:org/data"}}) is None


def test_rendered_html_drops_progress_bar_widgets(tmp_path):
    import nbformat

    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("lm = load()")
    cell.outputs = [nbformat.v4.new_output("display_data", data={
        "application/vnd.jupyter.widget-view+json": {"model_id": "x", "version_major": 2, "version_minor": 0},
        "text/plain": "Loading weights: 100%"}), nbformat.v4.new_output("stream", name="stdout", text="loaded\n")]
    nb.cells = [cell, nbformat.v4.new_code_cell("explore()", outputs=[nbformat.v4.new_output(
        "display_data", data={"text/html": lfcore.report.WIDGET_NOTE})])]
    nbformat.write(nb, tmp_path / "n.ipynb")
    html = lfcore.report.render_html(tmp_path / "n.ipynb", tmp_path / "n.html").read_text(encoding="utf-8")
    assert "Loading weights" not in html and "loaded" in html
    assert html.count("interactive control") == 1  # the explorer's note, not one for the progress bar


def test_failing_notebook_names_notebook_cell_and_file(tmp_path):
    params = yaml.safe_load(SMOKE.read_text())
    params["model"] = {"spec": "tiny:llama-30"}  # valid YAML and types; the hidden size fails at load time
    path = _write(tmp_path, params, "broken.yaml")
    logged = []
    runs = lfcore.runner.reproduce(path, only=["obs1"], out=tmp_path / "out", log=logged.append)
    (run,) = runs
    assert run.status == "failed"
    assert "notebook obs1_similarity failed in cell" in run.error
    assert "lfcore.steps.load(p.model)" in run.error and "multiple of 16" in run.error
    assert str(tmp_path / "out" / "obs1_similarity.ipynb") in run.error
    assert run.html.is_file() and "multiple of 16" in run.html.read_text(encoding="utf-8")
    assert any("FAILED" in line for line in logged)
    assert "class='card failed'" in (tmp_path / "out" / "index.html").read_text(encoding="utf-8")


# ---------------------------------------------------------------------------------------------- CLI


def test_cli_reports_params_errors(tmp_path, capsys):
    path = _write(tmp_path, {"capture": {"batch_size": "x"}})
    assert lfcore.cli.main(["reproduce", str(path)]) == 2
    err = capsys.readouterr().err
    assert "capture.batch_size" in err and str(path) in err and "Traceback" not in err
    assert lfcore.cli.main(["reproduce", str(SMOKE), "--only", "obs7"]) == 2
    assert "unknown notebook" in capsys.readouterr().err


def test_cli_scores(tmp_path, capsys):
    code = lfcore.cli.main(["scores", "tiny:llama-32", "--langs", "en", "zh", "fr", "ar", "--n", "4", "--threshold",
                               "1", "--cache-dir", str(tmp_path)])
    assert code == 0
    out = capsys.readouterr().out
    assert "LRDS" in out and "SADS" in out and "SKLR" in out and "key_neurons" in out
    assert list(tmp_path.glob("activations/*.json"))


# ------------------------------------------------------------------------------- paths in notebooks


def test_notebook_paths_resolve_against_the_repository_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert lfcore.params.repo_path("reports/interactive/obs1") == ROOT / "reports" / "interactive" / "obs1"
    assert lfcore.params.repo_path(tmp_path / "x") == tmp_path / "x"
    report = lfcore.report.Report("reports/interactive/obs1_similarity", None, "obs1")
    assert report.dir == ROOT / "reports" / "interactive" / "obs1_similarity"


def test_injected_parameters_carry_no_absolute_path():
    params = {"out_dir": str(ROOT / "reports" / "smoke" / "obs1"), "corpus": {"files": {"en": str(ROOT / "a.txt")}},
              "languages": ["en"], "n": 3}
    assert lfcore.runner._portable(params) == {"out_dir": "reports/smoke/obs1", "corpus": {"files": {"en": "a.txt"}},
                                               "languages": ["en"], "n": 3}
    assert lfcore.runner._label("SKLR_percent_of_neurons") == "SKLR, % of neurons"
