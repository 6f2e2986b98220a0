"""intervene(): each mode edits exactly its neurons, restores bit for bit, works inside generate, nests with
deactivate, runs on an offloaded model, and validates before registering any hook."""
from __future__ import annotations

import pytest
import torch

from lfcore import hooks
from lfcore.capture import Activations
from lfcore.deactivate import deactivate
from lfcore.core import language_means, patch_values
from lfcore.intervene import intervene
from lfcore.models import neuron_sites, neuron_width
from test_deactivate import _logits, _no_hooks

TEXT = "The city council announced on Monday that the bridge will reopen."
NEURONS = {1: [0, 4, 7]}


def _ids(lm, texts=(TEXT,)):
    return lm.tokenizer(list(texts), return_tensors="pt", padding=True)["input_ids"]


def _site_inputs(lm, ids):
    """The site input of every layer, (batch, tokens, neurons) each, as the site receives it."""
    seen = {}

    def keep(i):
        def fn(x):
            seen[i] = x.detach().clone()
        return fn

    with hooks.input_hooks(lm.model, {name: keep(i) for i, name in enumerate(neuron_sites(lm.model))}):
        _logits(lm, ids)
    return seen


def _edited(lm, ids, block):
    """Site inputs of layer 1 under ``block``, with the block's hook running before the reading hook."""
    with block:
        return _site_inputs(lm, ids)


@pytest.mark.parametrize("mode, value, expect", [
    ("zero", None, lambda a, v: torch.zeros_like(a)),
    ("scale", 3.0, lambda a, v: 3.0 * a),
    ("set", 0.25, lambda a, v: torch.full_like(a, 0.25)),
    ("add", -1.5, lambda a, v: a - 1.5),
])
def test_each_mode_edits_exactly_its_neurons(tiny, mode, value, expect):
    ids = _ids(tiny)
    before_logits = _logits(tiny, ids)
    base = _site_inputs(tiny, ids)
    got = _edited(tiny, ids, intervene(tiny.model, NEURONS, mode, value))
    idx = torch.tensor(NEURONS[1])
    rest = torch.ones(neuron_width(tiny.model), dtype=torch.bool)
    rest[idx] = False
    assert torch.equal(base[0], got[0])  # earlier layer untouched
    assert torch.allclose(got[1][..., idx], expect(base[1][..., idx], value), atol=1e-6)
    assert torch.equal(base[1][..., rest], got[1][..., rest])  # other neurons of the layer unchanged
    assert torch.equal(before_logits, _logits(tiny, ids))  # bit-exact restore
    assert _no_hooks(tiny.model)


def test_per_neuron_and_per_prompt_values(tiny_llama):
    lm = tiny_llama
    width = neuron_width(lm.model)
    ids = _ids(lm, [TEXT, "Le conseil municipal a annoncé lundi."])
    per_neuron = {1: torch.arange(width, dtype=torch.float32)}
    got = _edited(lm, ids, intervene(lm.model, NEURONS, "set", per_neuron))
    assert torch.equal(got[1][..., NEURONS[1]], torch.tensor([0.0, 4.0, 7.0]).expand(2, ids.shape[1], 3))
    rows = {1: torch.stack([torch.full((width,), 1.0), torch.full((width,), -2.0)])}  # (batch=2, width)
    base = _site_inputs(lm, ids)
    got = _edited(lm, ids, intervene(lm.model, NEURONS, "add", rows))
    diff = got[1][..., NEURONS[1]] - base[1][..., NEURONS[1]]  # (2, tokens, 3)
    assert torch.allclose(diff[0], torch.ones_like(diff[0])) and torch.allclose(diff[1], -2 * torch.ones_like(diff[1]))
    with pytest.raises(ValueError, match="per-prompt value has 2 rows"):
        with intervene(lm.model, NEURONS, "set", rows):
            _logits(lm, ids[:1])
    assert _no_hooks(lm.model)


def test_zero_mode_equals_deactivate(tiny):
    ids = _ids(tiny)
    with deactivate(tiny.model, NEURONS):
        want = _logits(tiny, ids)
    with intervene(tiny.model, NEURONS, "zero"):
        assert torch.equal(want, _logits(tiny, ids))
    with intervene(tiny.model, NEURONS, "scale", 0.0):
        assert torch.equal(want, _logits(tiny, ids))


def test_inside_generate_and_restored(tiny_llama):
    lm = tiny_llama
    ids = _ids(lm)
    plain = lm.model.generate(input_ids=ids, max_new_tokens=6, do_sample=False, pad_token_id=0)
    with intervene(lm.model, {0: list(range(20)), 1: list(range(20))}, "set", 30.0):
        steered = lm.model.generate(input_ids=ids, max_new_tokens=6, do_sample=False, pad_token_id=0)
    assert not torch.equal(plain, steered)
    assert torch.equal(plain, lm.model.generate(input_ids=ids, max_new_tokens=6, do_sample=False, pad_token_id=0))
    assert _no_hooks(lm.model)


def test_nested_with_deactivate(tiny_llama):
    lm, ids = tiny_llama, _ids(tiny_llama)
    base = _site_inputs(lm, ids)
    with deactivate(lm.model, {1: [0, 1]}):
        with intervene(lm.model, {1: [1, 2]}, "add", 5.0):
            got = _site_inputs(lm, ids)
    assert torch.count_nonzero(got[1][..., 0]) == 0
    assert torch.allclose(got[1][..., 1], torch.full_like(got[1][..., 1], 5.0))  # zeroed first, then added
    assert torch.allclose(got[1][..., 2], base[1][..., 2] + 5.0, atol=1e-6)
    assert _no_hooks(lm.model)


def test_a_stop_passes_through_an_edit_block(tiny_llama):
    """The StopForward of an outer stopping block ends the forward pass and the outer block's body: an edit block
    in between lets it through (it once swallowed it, so the outer body went on as if the pass had finished)."""
    lm, ids, after = tiny_llama, _ids(tiny_llama), []
    site = neuron_sites(lm.model)[0]
    with hooks.input_hooks(lm.model, {site: lambda x: None}, stop=site):
        with deactivate(lm.model, {0: [1]}):
            _logits(lm, ids)
        after.append(True)
    assert after == [] and _no_hooks(lm.model)


@pytest.mark.parametrize("mode, value, message", [
    ("boost", 1.0, r"unknown mode 'boost'"),
    ("zero", 1.0, r"mode 'zero' takes no value"),
    ("set", None, r"mode 'set' needs a value"),
    ("scale", float("nan"), r"not finite"),
    ("set", {2: torch.zeros(48)}, r"no entry for layer 1"),
    ("set", {1: torch.zeros(5)}, r"value shape \(5,\), expected \(48,\)"),
    ("scale", {1: torch.zeros(2, 48)}, r"one factor row per prompt is not supported"),
    ("add", {1: torch.full((48,), float("inf"))}, r"layer 1: the value is not finite"),
])
def test_bad_values_raise_before_any_hook(tiny_llama, mode, value, message):
    with pytest.raises(ValueError, match=message):
        with intervene(tiny_llama.model, NEURONS, mode, value):
            pass
    assert _no_hooks(tiny_llama.model)


def test_offloaded_model(tiny_tokenizer):
    from accelerate import cpu_offload

    from conftest import make_tiny
    from lfcore.models import from_objects

    plain = from_objects(make_tiny("llama"), tiny_tokenizer, "plain")
    split = from_objects(make_tiny("llama"), tiny_tokenizer, "split")
    cpu_offload(split.model, execution_device=torch.device("cpu"))
    ids = _ids(plain)
    value = {1: torch.linspace(-1, 1, 48), 2: torch.ones(48)}
    with intervene(plain.model, {1: [0, 5], 2: [3]}, "add", value):
        want = _logits(plain, ids)
    before = _logits(split, ids)
    with intervene(split.model, {1: [0, 5], 2: [3]}, "add", value):
        assert torch.allclose(want, _logits(split, ids), atol=1e-6)
    assert torch.equal(before, _logits(split, ids))


def test_values_from_activations_select_by_label():
    values = torch.arange(2 * 3 * 2 * 4, dtype=torch.float32).reshape(6, 2, 4)  # (rows, layers, width)
    acts = Activations(values, ["a", "b", "c", "a", "b", "c"], ["en"] * 3 + ["fr"] * 3, [0, 3],
                       torch.ones(6))
    means = language_means(acts, "fr")
    assert torch.equal(means[3], values[3:, 1].mean(0))
    rows = patch_values(acts, "fr", ["c", "a"])  # prompt order, not the activations' order
    assert torch.equal(rows[0], values[[5, 3], 0]) and torch.equal(rows[3], values[[5, 3], 1])
    with pytest.raises(ValueError, match=r"sentence id\(s\) \['z'\]"):
        patch_values(acts, "fr", ["z"])


def test_inside_lm_eval(tiny_llama):
    from lfcore.evaluate import crosslingual_accuracy

    lm = tiny_llama
    full = crosslingual_accuracy(lm, ["zh"], limit=2)
    block = intervene(lm.model, {1: list(range(24))}, "scale", 5.0)
    steered = crosslingual_accuracy(lm, ["zh"], limit=2, neurons=block)
    assert steered.attrs["n_neurons"] == 24 and _no_hooks(lm.model)
    a, b = full.attrs["loglikelihoods"]["zh"], steered.attrs["loglikelihoods"]["zh"]
    assert all(s["loglikelihoods"] != t["loglikelihoods"] for s, t in zip(a, b))  # the edit is live in the harness
