"""Capture and deactivation on models split by accelerate (device_map), checked against the unsplit model.

There is no GPU here, so the splits mix the ways accelerate places weights: on the CPU, offloaded to disk
(an offload folder; parameters sit on "meta" and are loaded for each forward) and offloaded to a CPU
weights map (``cpu_offload``). What lfcore must get right is the same on GPUs: hooks that see inputs
on whichever device their layer runs, buffers created there, and no weights left loaded after a capture
that stops early.
"""
from __future__ import annotations

import pytest
import torch

from conftest import make_tiny
from lfcore import corpus as corpus_mod
from lfcore.capture import capture
from lfcore.deactivate import deactivate
from lfcore.models import from_objects, load_model
from lfcore.perplexity import perplexity

NEURONS = {0: [1, 5, 7], 2: [0, 3]}
TEXT = "Le conseil municipal a annoncé lundi que la route sera fermée. " * 8


def _prefix(kind: str) -> str:
    return "transformer" if kind == "bloom" else "model"


def _layers(kind: str) -> str:
    return "transformer.h" if kind == "bloom" else "model.layers"


def _split_map(kind: str, middle: str = "disk") -> dict:
    """Embeddings and layer 0 on the CPU, layer 1 offloaded (``middle``), the rest on the CPU."""
    p = _prefix(kind)
    embed = f"{p}.word_embeddings" if kind == "bloom" else f"{p}.embed_tokens"
    rest = {f"{p}.word_embeddings_layernorm": "cpu", f"{p}.ln_f": "cpu"} if kind == "bloom" else \
        {f"{p}.norm": "cpu", f"{p}.rotary_emb": "cpu"}
    return {embed: "cpu", f"{_layers(kind)}.0": "cpu", f"{_layers(kind)}.1": middle, f"{_layers(kind)}.2": "cpu",
            **rest, "lm_head": "cpu"}


@pytest.fixture(scope="module")
def sentences():
    return corpus_mod.bundled_ntrex().select(["en", "zh", "ar"], n=4, seed=2)


@pytest.fixture(scope="module", params=["llama", "bloom"])
def saved(request, tmp_path_factory, tiny_tokenizer):
    """A tiny model saved to a folder, and its unsplit results: capture, deactivated capture, perplexities."""
    kind = request.param
    folder = tmp_path_factory.mktemp(f"tiny-{kind}")
    model = make_tiny(kind, seed=5)
    model.config.tie_word_embeddings = False  # a separate lm_head can live on its own device
    model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())
    model.save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    return kind, folder


def _reference(folder, tokenizer, sentences):
    lm = load_model(folder)
    return _results(lm, sentences)


def _results(lm, sentences) -> dict:
    out = {"acts": capture(lm, sentences, batch_size=3, progress=False).values}
    with deactivate(lm.model, NEURONS):
        out["acts_off"] = capture(lm, sentences, batch_size=3, progress=False).values
        out["ppl_off"] = perplexity(lm.model, lm.tokenizer, TEXT, seqlen=48, batch_size=2)["ppl"]
    out["ppl"] = perplexity(lm.model, lm.tokenizer, TEXT, seqlen=48, batch_size=2)["ppl"]
    return out


def _assert_same(got: dict, want: dict):
    torch.testing.assert_close(got["acts"], want["acts"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got["acts_off"], want["acts_off"], rtol=1e-5, atol=1e-6)
    assert got["ppl"] == pytest.approx(want["ppl"], rel=1e-5)
    assert got["ppl_off"] == pytest.approx(want["ppl_off"], rel=1e-5)
    for layer, idx in NEURONS.items():  # deactivated neurons read back as exact zeros
        assert torch.count_nonzero(got["acts_off"][:, layer, idx]) == 0
    assert not torch.equal(got["acts_off"], got["acts"])


def _param_devices(model) -> dict:
    return {name: p.device.type for name, p in model.named_parameters()}


def test_from_pretrained_with_disk_offload(saved, sentences, tiny_tokenizer, tmp_path):
    """transformers + accelerate place layer 1 on disk (parameters on meta, loaded per forward)."""
    from transformers import AutoModelForCausalLM

    kind, folder = saved
    want = _reference(folder, tiny_tokenizer, sentences)
    model = AutoModelForCausalLM.from_pretrained(folder, device_map=_split_map(kind, "disk"),
                                                 offload_folder=tmp_path / "offload", dtype=torch.float32)
    lm = from_objects(model, tiny_tokenizer, f"split-{kind}")
    before = _param_devices(model)
    assert "meta" in before.values() and "cpu" in before.values()
    assert hasattr(model, "hf_device_map")
    got = _results(lm, sentences)
    _assert_same(got, want)
    assert _param_devices(model) == before  # an early-stopped capture leaves no offloaded weight loaded


def test_dispatch_model_manual_map(saved, sentences, tiny_tokenizer, tmp_path):
    """accelerate.dispatch_model with a hand-written map and an offload folder."""
    from accelerate import dispatch_model

    kind, folder = saved
    want = _reference(folder, tiny_tokenizer, sentences)
    lm = load_model(folder)
    dispatch_model(lm.model, device_map=_split_map(kind, "disk"), offload_dir=str(tmp_path / "offload"))
    before = _param_devices(lm.model)
    assert "meta" in before.values()
    got = _results(lm, sentences)
    _assert_same(got, want)
    assert _param_devices(lm.model) == before


def test_cpu_offload(saved, sentences, tiny_tokenizer):
    """accelerate.cpu_offload: every weight lives in a CPU map and is loaded onto the execution device per module."""
    from accelerate import cpu_offload

    kind, folder = saved
    want = _reference(folder, tiny_tokenizer, sentences)
    lm = load_model(folder)
    cpu_offload(lm.model, execution_device=torch.device("cpu"))
    assert set(_param_devices(lm.model).values()) == {"meta"}
    got = _results(lm, sentences)
    _assert_same(got, want)
    assert set(_param_devices(lm.model).values()) == {"meta"}


def test_load_model_device_map(saved, sentences, tiny_tokenizer):
    """load_model passes device_map through (here "auto" and an explicit per-layer map, all on the CPU)."""
    kind, folder = saved
    want = _reference(folder, tiny_tokenizer, sentences)
    for device_map in ("auto", _split_map(kind, "cpu")):
        lm = load_model(folder, device_map=device_map)
        assert set(_param_devices(lm.model).values()) == {"cpu"}
        _assert_same(_results(lm, sentences), want)


def test_load_model_with_disk_offload(saved, sentences, tiny_tokenizer, tmp_path):
    """load_model itself with a map that offloads a layer to disk (offload_folder passed through)."""
    kind, folder = saved
    want = _reference(folder, tiny_tokenizer, sentences)
    lm = load_model(folder, device_map=_split_map(kind, "disk"), offload_folder=str(tmp_path / "offload"))
    before = _param_devices(lm.model)
    assert "meta" in before.values()
    _assert_same(_results(lm, sentences), want)
    assert _param_devices(lm.model) == before
