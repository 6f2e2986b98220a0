"""deactivate(): zeroes exactly its neurons, composes, validates, and always leaves the model as it was."""
from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest
import torch

from lfcore import hooks
from lfcore.core import count_neurons, validate_neurons
from lfcore.deactivate import deactivate
from lfcore.models import neuron_sites, neuron_width

TEXT = "The city council announced on Monday that the bridge will reopen."


def _ids(lm):
    return lm.tokenizer(TEXT, return_tensors="pt")["input_ids"]


def _logits(lm, ids):
    with torch.inference_mode():
        return lm.model(input_ids=ids).logits


def _no_hooks(model):
    return all(not m._forward_pre_hooks and not m._forward_hooks for m in model.modules())


def _capture(lm, ids):
    """The site input of every layer, (tokens, neurons) each, read with a second set of pre-hooks."""
    seen = {}
    names = neuron_sites(lm.model)

    def keep(i):
        def fn(x):
            seen[i] = x[0].detach().clone()
        return fn

    with hooks.input_hooks(lm.model, {name: keep(i) for i, name in enumerate(names)}):
        _logits(lm, ids)
    return seen


def test_restores_bit_exact(tiny):
    ids = _ids(tiny)
    before = _logits(tiny, ids)
    with deactivate(tiny.model, {0: [1, 2, 3], 2: torch.tensor([0, 5])}) as block:
        during = _logits(tiny, ids)
        assert not _no_hooks(tiny.model)
    assert block.n_neurons == 5
    assert not torch.equal(before, during)
    assert torch.equal(before, _logits(tiny, ids))
    assert _no_hooks(tiny.model)


def test_restores_after_exception(tiny):
    ids = _ids(tiny)
    before = _logits(tiny, ids)
    with pytest.raises(RuntimeError, match="boom"):
        with deactivate(tiny.model, {1: list(range(10))}):
            _logits(tiny, ids)
            raise RuntimeError("boom")
    assert _no_hooks(tiny.model)
    assert torch.equal(before, _logits(tiny, ids))


def test_zeroed_neurons_read_back_as_zeros(tiny):
    ids = _ids(tiny)
    zeroed = [0, 4, 7, neuron_width(tiny.model) - 1]
    base = _capture(tiny, ids)
    with deactivate(tiny.model, {1: zeroed}):
        got = _capture(tiny, ids)
    keep = torch.ones(neuron_width(tiny.model), dtype=torch.bool)
    keep[zeroed] = False
    assert torch.equal(base[0], got[0])  # earlier layer untouched
    assert torch.count_nonzero(got[1][:, ~keep]) == 0  # exact zeros for every token
    assert torch.count_nonzero(base[1][:, ~keep]) > 0  # ... which were not zero before
    assert torch.equal(base[1][:, keep], got[1][:, keep])  # the rest of the layer is unchanged
    assert not torch.equal(base[2], got[2])  # the edit propagates


def test_empty_set_is_bit_identical(tiny):
    ids = _ids(tiny)
    before = _logits(tiny, ids)
    for empty in [{}, {0: []}, {0: [], 2: torch.tensor([], dtype=torch.long)}, None]:
        with deactivate(tiny.model, empty) as block:
            assert _no_hooks(tiny.model)  # nothing registered at all
            assert torch.equal(before, _logits(tiny, ids))
        assert block.n_neurons == 0


def test_nested_blocks_compose(tiny_llama):
    lm, ids = tiny_llama, _ids(tiny_llama)
    a, b = {1: [2, 3]}, {1: [10], 2: [0]}
    before = _logits(lm, ids)
    with deactivate(lm.model, {1: [2, 3, 10], 2: [0]}):
        union = _logits(lm, ids)
    with deactivate(lm.model, a):
        only_a = _logits(lm, ids)
        with deactivate(lm.model, b):
            assert torch.equal(_logits(lm, ids), union)
            seen = _capture(lm, ids)
            assert torch.count_nonzero(seen[1][:, [2, 3, 10]]) == 0
            assert torch.count_nonzero(seen[2][:, 0]) == 0
        assert torch.equal(_logits(lm, ids), only_a)
    assert torch.equal(_logits(lm, ids), before)
    assert _no_hooks(lm.model)


def test_block_cannot_be_entered_twice(tiny_llama):
    block = deactivate(tiny_llama.model, {0: [1]})
    with block:
        with pytest.raises(RuntimeError, match="already active"):
            block.__enter__()
    assert _no_hooks(tiny_llama.model)
    with block:  # reusable after exit
        pass


@pytest.mark.parametrize("bad, message", [
    ({3: [0]}, r"layer 3 is out of range: the model has 3 layers \(0\.\.2\)"),
    ({-1: [0]}, r"layer -1 is out of range"),
    ({0: [48]}, r"layer 0: neuron index 48 is out of range: each layer has 48 neurons \(0\.\.47\)"),
    ({1: [3, -2]}, r"layer 1: neuron index -2 is out of range"),
    ({0: [0.5]}, r"must be integers"),
    ({0: torch.ones(48, dtype=torch.bool)}, r"boolean mask"),
    ({"0": [1]}, r"layer keys must be integers"),
    ([[0, 1]], r"must be a mapping"),
])
def test_bad_sets_raise_before_any_hook(tiny_llama, bad, message):
    with pytest.raises(ValueError, match=message):
        with deactivate(tiny_llama.model, bad):
            pass
    assert _no_hooks(tiny_llama.model)


def test_index_types_and_counting(tiny_llama):
    assert count_neurons({0: [1, 1, 2], 1: torch.tensor([0])}) == 3
    got = validate_neurons({np.int64(0): np.array([3, 1, 3]), 2: torch.tensor([5]), 1: range(2)}, 3, 48)
    assert {k: v.tolist() for k, v in got.items()} == {0: [1, 3], 2: [5], 1: [0, 1]}
    with deactivate(tiny_llama.model, {0: [3, 1, 3]}) as block:
        assert block.n_neurons == 2


def test_device_map_split_on_cpu(tiny_tokenizer):
    """Accelerate-dispatched model (weights offloaded, moved in by hooks): same result as the plain model."""
    from accelerate import cpu_offload

    from conftest import make_tiny
    from lfcore.models import from_objects

    plain = from_objects(make_tiny("llama"), tiny_tokenizer, "plain")
    split = from_objects(make_tiny("llama"), tiny_tokenizer, "split")
    cpu_offload(split.model, execution_device=torch.device("cpu"))
    site = hooks.get_module(split.model, neuron_sites(split.model)[1])
    assert site.weight.device.type == "meta"  # weights live elsewhere until the forward pass
    ids, neurons = _ids(plain), {1: [0, 5, 9], 2: [1]}
    with deactivate(plain.model, neurons):
        want = _logits(plain, ids)
    before = _logits(split, ids)
    with deactivate(split.model, neurons):
        got = _logits(split, ids)
    assert torch.allclose(want, got, atol=1e-6)
    assert torch.equal(before, _logits(split, ids))


def test_no_reference_kept_after_exit(tiny_llama):
    block = deactivate(tiny_llama.model, {0: [1, 2]})
    with block:
        pass
    ref = weakref.ref(next(iter(block.fns.values())))
    del block
    gc.collect()
    assert ref() is None
