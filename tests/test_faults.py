"""The fault catalogue: each bad input or broken file ends in a clear error (or warning) that names what to change,
raised before the expensive step where the input alone decides it; never a nan or an empty result that looks
like a finding, and never a lost result. One test per case, tiny models only."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lfcore import cache as cache_mod
from lfcore import capture as capture_mod
from lfcore import cli, convert, corpus, metrics, models, regions, runner, tiny
from lfcore.cache import Cache, CacheError
from lfcore.capture import Activations, capture
from lfcore.evaluate import deactivation_table
from lfcore.lock import FolderBusy, hold_folder
from lfcore.params import ParamsError, load_params, params_from_dict
from lfcore.perplexity import perplexity

from synthetic import planted

ROOT = Path(__file__).resolve().parent.parent
FOUR = ["en", "zh", "fr", "ar"]


@pytest.fixture(scope="module")
def lm():
    return models.load_model("tiny:llama-32")


@pytest.fixture(scope="module")
def sents():
    return corpus.bundled_ntrex().select(FOUR, n=3, seed=0)


def _yaml(tmp_path, text: str | bytes) -> Path:
    path = tmp_path / "p.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


# ------------------------------------------------------------------------------------ thresholds and regions


def test_unreachable_threshold_is_an_error_in_key_regions():
    acts = planted()  # 4 languages: no z-score exceeds sqrt(3) = 1.732
    z, _ = regions.zscores(regions.contribution_scores(acts)[0])
    assert float(z.max()) <= regions.max_zscore(4) + 1e-9
    with pytest.raises(ValueError, match=r"2 can never be exceeded with 4 languages.*sqrt\(4 - 1\) = 1.732.*e\.g\. 1"):
        regions.key_regions(acts, threshold=2.0)
    assert regions.key_regions(acts, threshold=1.2).sklr > 0


def test_unreachable_threshold_is_an_error_at_params_load():
    with pytest.raises(ParamsError, match=r"regions.threshold: 2 can never be exceeded with 4 languages"):
        params_from_dict({"languages": FOUR, "regions": {"threshold": 2.0, "sweep": [1.0]}})
    with pytest.raises(ParamsError, match=r"regions.sweep\[1\]: 1.8 can never"):
        params_from_dict({"languages": FOUR, "regions": {"threshold": 1.0, "sweep": [1.0, 1.8]}})


def test_one_sentence_per_language_is_an_error():
    acts = planted(n_ids=1)
    with pytest.raises(ValueError, match=r"at least 2 sentences per language.*\['en', 'zh', 'fr', 'ar'\] have 1"):
        regions.key_regions(acts, threshold=1.0)


def test_nan_threshold_is_an_error(tmp_path):
    with pytest.raises(ParamsError, match=r"regions.threshold: nan is not a finite number"):
        load_params(_yaml(tmp_path, "regions: {threshold: .nan}\n"))
    with pytest.raises(ValueError, match="not a finite number"):
        regions.key_regions(planted(), threshold=float("nan"))


# ------------------------------------------------------------------------------------------ non-finite values


def test_nan_written_into_values_after_construction_is_caught_at_use():
    acts = planted()
    acts.values[5, 1, 3] = float("nan")
    for compute in (metrics.scores, metrics.layerwise, lambda a: regions.key_regions(a, 1.0)):
        with pytest.raises(ValueError, match=r"sentence 's005' \(en\) has inf or nan activations"):
            compute(acts)


def _nan_model(token: int):
    """A tiny LLaMA whose embedding of ``token`` is nan: every later position's loss is nan, as in float16."""
    model, tok = tiny.from_spec("tiny:llama-32")
    model.model.embed_tokens.weight.data[token] = float("nan")
    return models.from_objects(model, tok, "tiny-nan")


def test_nan_perplexity_is_an_error_naming_dtype_window_and_language():
    text = corpus.bundled_ntrex().text(corpus.bundled_ntrex().ids[0], "en")
    _, tok = tiny.from_spec("tiny:llama-32")
    ids = tok(text, add_special_tokens=False)["input_ids"]
    late = next(t for t in ids[20:] if t not in ids[:12])
    bad = _nan_model(late)
    with pytest.raises(ValueError, match=r"float32: inf or nan loss in window \d+ of \d+.*'bfloat16' or 'float32'"):
        perplexity(bad.model, bad.tokenizer, text, seqlen=16, add_bos=False)
    with pytest.raises(ValueError, match=r"language 'en', condition 'Full model'"):
        deactivation_table(bad, {"en": text}, {}, seqlen=16, add_bos=False, progress=False)
    first = _nan_model(ids[0])  # nan in the head check's logits: no "atol must be ... -nan" from torch
    with pytest.raises(ValueError, match=r"in float32 gives inf or nan logits.*dtype='bfloat16'"):
        perplexity(first.model, first.tokenizer, text, seqlen=16, add_bos=False)


def test_nan_log_likelihoods_are_an_error_not_an_accuracy():
    from lfcore.evaluate import crosslingual_accuracy

    bad = _nan_model(slice(None))
    with pytest.raises(ValueError, match=r"inf or nan log-likelihood in task xcopa_xl_en, document 0 \(language 'en'\)"):
        crosslingual_accuracy(bad, ["en"], limit=2, batch_size=2)


# ---------------------------------------------------------------------------------------------------- cache


def test_cache_labels_are_verified(tmp_path, lm, sents):
    store = Cache(tmp_path)
    capture(lm, sents, cache=store, progress=False)
    (meta_path,) = (tmp_path / "activations").glob("*.json")
    record = json.loads(meta_path.read_text())
    ids = record["meta"]["sentence_ids"]
    other = next(k for k, i in enumerate(ids) if i != ids[0])
    ids[0], ids[other] = ids[other], ids[0]  # two rows relabelled: would change SADS silently
    meta_path.write_text(json.dumps(record))
    with pytest.raises(CacheError, match="labels in .* do not match their digest"):
        capture(lm, sents, cache=store, progress=False)


def test_unwritable_cache_stops_capture_before_the_first_batch(tmp_path, lm, sents, monkeypatch):
    in_the_way = tmp_path / "cache"
    in_the_way.write_text("a file where the cache folder should be")

    def no_forward(*a, **k):
        raise AssertionError("capture started")

    monkeypatch.setattr(capture_mod, "input_hooks", no_forward)
    with pytest.raises(CacheError, match=r"cache .*activations cannot be written.*--cache-dir"):
        capture(lm, sents, cache=in_the_way, progress=False)


def test_result_that_cannot_be_cached_is_returned_with_a_warning(tmp_path, lm, sents, monkeypatch):
    def disk_full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cache_mod, "write_entry", disk_full)
    with pytest.warns(UserWarning, match="No space left on device.*returned but not cached"):
        acts = capture(lm, sents, cache=tmp_path, progress=False)
    assert acts.values.shape[0] == len(sents.records)


def test_unwritable_cache_stops_reproduce_before_any_notebook(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(CacheError, match="cannot be written"):
        runner.reproduce(ROOT / "params" / "smoke.yaml", out=tmp_path / "out", cache=tmp_path / "file",
                         log=lambda *a: None)
    assert not (tmp_path / "out" / "obs1_similarity.ipynb").exists()


# ------------------------------------------------------------------------------------------- files and models


def test_truncated_gguf_names_the_file(tmp_path):
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF\x03\x00\x00\x00" + bytes(20))
    with pytest.raises(ValueError, match=r"cannot read GGUF file .*model.gguf \(28 bytes\).*download it again"):
        convert.convert_gguf(gguf, tmp_path / "out")


def test_unwritable_conversion_folder_fails_before_the_gguf_load(tmp_path):
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")  # never read: the folder check comes first
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match=r"cannot write the converted model under .*file .*LFCORE_CACHE"):
        convert.convert_gguf(gguf, tmp_path / "file" / "conv")


def test_empty_notebook_list_is_an_error(tmp_path):
    with pytest.raises(ParamsError, match="notebooks: the list is empty, so nothing would run"):
        load_params(_yaml(tmp_path, "notebooks: []\n"))


def test_damaged_gguf_conversion_is_rebuilt_not_fatal(tmp_path):
    folder = tmp_path / "conv"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"abc")
    (folder / "lfcore-manifest.json").write_text(json.dumps({"files": {"model.safetensors": "0" * 64}}))
    with pytest.warns(UserWarning, match="is damaged .*converting the GGUF file again"):
        assert convert._converted_ok(folder) is False  # convert_gguf then converts into a fresh folder


def _saved_tiny(folder: Path, tokenizer: bool = True) -> Path:
    model, tok = tiny.from_spec("tiny:llama-32")
    model.save_pretrained(folder)
    if tokenizer:
        tok.save_pretrained(folder)
    return folder


def test_truncated_safetensors_names_the_file(tmp_path):
    folder = _saved_tiny(tmp_path / "m")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])
    with pytest.raises(ValueError, match=r"model.safetensors is damaged \(5,000 bytes.*download it again"):
        models.load_model(folder)


def test_model_folder_without_tokenizer_names_the_folder(tmp_path):
    folder = _saved_tiny(tmp_path / "m", tokenizer=False)
    with pytest.raises(ValueError, match=r"(?s)tokenizer from the model .*m: .*it holds .*tokenizer.json"):
        models.load_model(folder)


def test_non_utf8_corpus_and_params_name_the_file(tmp_path):
    bad = tmp_path / "c.jsonl"
    bad.write_bytes(b'{"id": 1, "lang": "en", "text": "ok"}\n{"id": 2, "lang": "en", "text": "caf\xe9"}\n')
    with pytest.raises(ValueError, match=r"c.jsonl:2: not UTF-8 text"):
        corpus.load_corpus(str(bad))
    with pytest.raises(ParamsError, match=r"p.yaml: not UTF-8 text"):
        load_params(_yaml(tmp_path, b"title: caf\xe9\n"))


def test_misspelt_bundled_key_or_missing_relative_path_never_goes_to_the_hub(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"'gemma-3-27m' is not a bundled key: did you mean 'gemma-3-270m'"):
        models.load_model("gemma-3-27m")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"(?s)from the Hugging Face hub.*no local path 'my-model' exists \(from "):
        models.load_model("my-model")  # offline in tests: the hub error also says the local path is missing
    (tmp_path / "models").mkdir()
    with pytest.raises(ValueError, match=r"'models/bloom': no such local path"):
        models.load_model("models/bloom")
    with pytest.raises(ParamsError, match=r"model.spec: .*no such local path"):
        params_from_dict({"model": {"spec": "models/bloom"}}, base=tmp_path)


def test_site_is_settable_in_params_and_checked_at_load(lm, sents):
    from lfcore.steps import load

    p = params_from_dict({"model": {"spec": "tiny:llama-32", "site": "model.layers.{layer}.mlp.down_proj"}})
    custom = load(p.model)
    assert custom.site == "model.layers.{layer}.mlp.down_proj"
    assert capture(custom, sents, progress=False).meta["site"] == custom.site
    with pytest.raises(ValueError, match=r"module 'model.layers.0.mlp.act_fn' \(\w+\) has no 2-D weight.*down_proj"):
        models.load_model("tiny:llama-32", site="model.layers.{layer}.mlp.act_fn")


# ------------------------------------------------------------------------------------------------------- CLI


def test_cli_user_error_is_one_line_and_debug_shows_the_traceback(capsys, tmp_path):
    argv = ["scores", "tiny:llama-32", "--langs", *FOUR, "--n", "3", "--threshold", "2"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("lfcore: ValueError: --threshold: 2 can never be exceeded")
    with pytest.raises(ValueError, match="can never be exceeded"):
        cli.main(argv + ["--debug"])
    assert cli.main(["reproduce", str(_yaml(tmp_path, "title: a\ntitle: b\n"))]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "p.yaml:2: key 'title' appears twice" in err


def test_cli_scores_takes_site(capsys):
    argv = ["scores", "tiny:llama-32", "--langs", *FOUR, "--n", "3", "--threshold", "1", "--no-cache",
            "--site", "model.layers.{layer}.mlp.act_fn"]
    assert cli.main(argv) == 2
    assert "has no 2-D weight" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------- silent acceptance


def test_null_sentence_id_is_an_error(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"id": "a", "lang": "en", "text": "one"}\n{"id": null, "lang": "en", "text": "two"}\n')
    with pytest.raises(ValueError, match=r"c.jsonl:2: 'id': sentence id None \(NoneType\)"):
        corpus.from_jsonl(path)
    tsv = tmp_path / "c.tsv"
    tsv.write_text("id\ten\tfr\na\tone\tun\n\ttwo\tdeux\n")
    with pytest.raises(ValueError, match=r"c.tsv:3: column 'id': sentence id ''"):
        corpus.from_tsv(tsv)


def test_duplicate_yaml_keys_are_an_error(tmp_path):
    with pytest.raises(ParamsError, match=r"p.yaml:3: key 'threshold' appears twice in one mapping \(first at line 2"):
        load_params(_yaml(tmp_path, "regions:\n  threshold: 2.0\n  threshold: 1.0\n"))


def test_empty_params_file_is_an_error_not_the_default_run(tmp_path):
    for text in ("", "# only a comment\n"):
        with pytest.raises(ParamsError, match="the params file is empty"):
            load_params(_yaml(tmp_path, text))


def test_sentences_cut_at_max_length_warn_naming_languages(lm, sents):
    with pytest.warns(UserWarning, match=r"\d+ sentence\(s\) were cut at max_length=4 tokens \(en: 3, zh: 3"):
        capture(lm, sents, max_length=4, progress=False)


def test_wrong_type_inside_a_list_names_the_item(tmp_path):
    with pytest.raises(ParamsError, match=r"robustness.seeds\[1\]: expected int, got str"):
        load_params(_yaml(tmp_path, "robustness: {seeds: [0, 'one']}\n"))
    with pytest.raises(ParamsError, match=r"languages\[2\]"):
        load_params(_yaml(tmp_path, "languages: [en, zh, english]\n"))


def test_activations_with_mismatched_labels_is_a_value_error():
    with pytest.raises(ValueError, match="3 rows of values, but 2 sentence ids"):
        Activations(torch.ones(3, 1, 4), ["a", "b"], ["en", "en"], [0], torch.ones(2), {})


def test_window_beyond_the_position_table_is_an_error(lm):
    limit = models.position_limit(lm.model)
    with pytest.raises(ValueError, match=rf"seqlen={limit + 1} exceeds the {limit} positions"):
        perplexity(lm.model, lm.tokenizer, "some text " * 20, seqlen=limit + 1)


# --------------------------------------------------------------------------------------------- one run per --out


def test_second_run_into_the_same_out_refuses(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with hold_folder(out):
        with pytest.raises(FolderBusy, match=rf"in use by another lfcore run \(pid {os.getpid()} on .*another --out"):
            runner.reproduce(ROOT / "params" / "smoke.yaml", out=out, cache=tmp_path / "cache", log=lambda *a: None)


def test_lock_of_a_killed_run_is_not_stale(tmp_path):
    code = ("import os, sys; from pathlib import Path; from lfcore.lock import hold_folder\n"
            "with hold_folder(Path(sys.argv[1])): os.kill(os.getpid(), 9)")
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert (tmp_path / ".lfcore.lock.json").exists()  # the killed run's note is left behind ...
    with hold_folder(tmp_path):  # ... but its OS lock went with it
        pass
