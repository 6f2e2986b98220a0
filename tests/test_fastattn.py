"""The BLOOM kernel swap (lfcore.fastattn) equals the eager path and always restores the model."""
from __future__ import annotations

import pytest
import torch

from conftest import make_tiny
from lfcore.fastattn import fused_attention


def _sharp_bloom():
    """Tiny BLOOM with query/key weights scaled up, so attention is far from uniform and ALiBi matters."""
    model = make_tiny("bloom", seed=3)
    with torch.no_grad():
        for block in model.transformer.h:
            block.self_attention.query_key_value.weight.mul_(8.0)
    return model


@pytest.fixture(scope="module")
def bloom():
    return _sharp_bloom()


def _batch(pad_side: str):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 512, (3, 11), generator=g)  # (batch, tokens)
    mask = torch.ones_like(ids)
    for row, n_pad in ((1, 4), (2, 9)):
        if pad_side == "right":
            mask[row, ids.shape[1] - n_pad:] = 0
        else:
            mask[row, :n_pad] = 0
    ids = ids.masked_fill(mask == 0, 0)
    return ids, mask


def _attention_forwards(model):
    return [m.__dict__.get("forward") for m in model.modules() if type(m).__name__ == "BloomAttention"]


@pytest.mark.parametrize("pad_side", ["right", "left", "none"])
def test_fused_logits_equal_eager(bloom, pad_side):
    ids, mask = _batch("right" if pad_side == "none" else pad_side)
    kwargs = dict(input_ids=ids, use_cache=False)
    if pad_side != "none":
        kwargs["attention_mask"] = mask
    with torch.inference_mode():
        eager = bloom(**kwargs).logits  # (batch, tokens, vocab)
        with fused_attention(bloom) as fa:
            assert fa.n_swapped == bloom.config.n_layer
            fused = bloom(**kwargs).logits
    real = (mask == 1) if pad_side != "none" else torch.ones_like(mask, dtype=torch.bool)
    torch.testing.assert_close(fused[real], eager[real], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fused, eager, rtol=1e-5, atol=1e-5)  # padded positions too


def test_fused_generate_with_cache_equal_eager(bloom):
    ids, mask = _batch("left")
    kw = dict(input_ids=ids, attention_mask=mask, max_new_tokens=5, do_sample=False, pad_token_id=0,
              output_scores=True, return_dict_in_generate=True)
    with torch.inference_mode():
        eager = bloom.generate(**kw)
        with fused_attention(bloom):
            fused = bloom.generate(**kw)
    assert torch.equal(eager.sequences, fused.sequences)
    for a, b in zip(eager.scores, fused.scores):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_switched_off_is_the_eager_path(bloom, monkeypatch):
    ids, mask = _batch("right")
    with torch.inference_mode():
        eager = bloom(input_ids=ids, attention_mask=mask).logits
        with fused_attention(bloom, enabled=False) as fa:
            assert fa.n_swapped == 0
            assert all(f is None for f in _attention_forwards(bloom))
            off = bloom(input_ids=ids, attention_mask=mask).logits
        monkeypatch.setenv("LFCORE_FUSED_ATTENTION", "0")
        with fused_attention(bloom) as fa:
            assert fa.n_swapped == 0
    assert torch.equal(off, eager)


def test_restored_after_exit_and_exception(bloom):
    ids, _ = _batch("right")
    with torch.inference_mode():
        before = bloom(input_ids=ids).logits
    with pytest.raises(KeyError):
        with fused_attention(bloom):
            raise KeyError("boom")
    assert all(f is None for f in _attention_forwards(bloom))
    assert not any(hasattr(m, "_lfcore_fused") for m in bloom.modules())
    with torch.inference_mode():
        assert torch.equal(bloom(input_ids=ids).logits, before)


def test_nested_blocks_and_output_attentions_fallback(bloom):
    ids, mask = _batch("right")
    with torch.inference_mode():
        eager = bloom(input_ids=ids, attention_mask=mask, output_attentions=True)
        with fused_attention(bloom) as outer:
            with fused_attention(bloom) as inner:
                assert inner.n_swapped == 0  # the outer block owns the swap
                out = bloom(input_ids=ids, attention_mask=mask, output_attentions=True)
            assert outer.n_swapped == bloom.config.n_layer
    # output_attentions needs the probabilities: the eager forward runs and returns them
    assert all(a is not None for a in out.attentions)
    torch.testing.assert_close(out.logits, eager.logits, rtol=0, atol=0)


def test_outer_disabled_block_keeps_inner_default_blocks_eager(bloom):
    with fused_attention(bloom, enabled=False) as outer:
        with fused_attention(bloom) as inner:  # as perplexity opens one itself
            assert outer.n_swapped == inner.n_swapped == 0
            assert all(m.forward.__func__ is type(m).forward for m in bloom.modules() if hasattr(m, "_lfcore_fused"))
    assert not any(hasattr(m, "_lfcore_fused") for m in bloom.modules())


def test_other_models_are_untouched():
    llama = make_tiny("llama")
    with fused_attention(llama) as fa:
        assert fa.n_swapped == 0


def test_fused_bf16_close_to_eager(bloom):
    model = _sharp_bloom().to(torch.bfloat16)
    ids, mask = _batch("right")
    with torch.inference_mode():
        eager = model(input_ids=ids, attention_mask=mask).logits.float()
        with fused_attention(model):
            fused = model(input_ids=ids, attention_mask=mask).logits.float()
    real = mask == 1
    torch.testing.assert_close(fused[real], eager[real], rtol=2e-2, atol=2e-2)


def test_perplexity_same_numbers(bloom, tiny_tokenizer, monkeypatch):
    import lfcore.fastattn as fa
    from lfcore.perplexity import perplexity

    calls = []
    get = fa._SharedBias.get
    monkeypatch.setattr(fa._SharedBias, "get", lambda self, *a, **k: calls.append(1) or get(self, *a, **k))
    text = "The quick brown fox jumps over the lazy dog. " * 30
    with fused_attention(bloom, enabled=False):  # the outermost block decides: perplexity's own block stays eager
        eager = perplexity(bloom, tiny_tokenizer, text, seqlen=64, batch_size=3)
    assert not calls
    fused = perplexity(bloom, tiny_tokenizer, text, seqlen=64, batch_size=3)  # perplexity swaps the kernel itself
    assert calls
    assert fused["n_tokens"] == eager["n_tokens"]
    assert fused["ppl"] == pytest.approx(eager["ppl"], rel=1e-5)


def test_fused_under_accelerate_hooks(tiny_tokenizer, tmp_path):
    """With accelerate hooks on the attention modules (device_map), the wrapped ``_old_forward`` is swapped."""
    from accelerate import cpu_offload
    from accelerate.hooks import ModelHook, add_hook_to_module

    model = _sharp_bloom()
    ids, mask = _batch("right")
    with torch.inference_mode():
        eager = model(input_ids=ids, attention_mask=mask).logits
    cpu_offload(model, execution_device=torch.device("cpu"))
    attns = [m for m in model.modules() if type(m).__name__ == "BloomAttention"]
    for m in attns:
        add_hook_to_module(m, ModelHook())
    wrapped = [m.forward for m in attns]
    with torch.inference_mode():
        with fused_attention(model) as fa:
            assert fa.n_swapped == len(attns)
            assert [m.forward for m in attns] == wrapped  # accelerate's wrapper stays in place
            fused = model(input_ids=ids, attention_mask=mask).logits
    assert [m.forward for m in attns] == wrapped
    torch.testing.assert_close(fused, eager, rtol=1e-5, atol=1e-5)
