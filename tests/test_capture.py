import gc
import weakref

import pytest
import torch

from lfcore import corpus as corpus_mod
from lfcore.capture import Activations, capture
from lfcore.hooks import get_module
from lfcore.models import from_objects, neuron_sites

LANGS = ["en", "zh", "ar"]


@pytest.fixture(scope="module")
def small_corpus():
    return corpus_mod.bundled_ntrex().select(LANGS, n=6, seed=1)


def _manual_pooled(lm, text, layer):
    """The paper's neuron vector recomputed from the layer's own MLP weights, mean over non-special tokens."""
    model = lm.model
    mlp = get_module(model, neuron_sites(model)[layer].rsplit(".", 1)[0])
    enc = lm.tokenizer(text, return_tensors="pt")
    seen = {}
    handle = mlp.register_forward_pre_hook(lambda m, args: seen.__setitem__("x", args[0]))
    try:
        with torch.no_grad():
            model(**enc)
    finally:
        handle.remove()
    x = seen["x"][0]  # (tokens, hidden): the MLP's input
    with torch.no_grad():
        if model.config.model_type == "bloom":
            h = mlp.gelu_impl(mlp.dense_h_to_4h(x))
        else:
            h = mlp.act_fn(mlp.gate_proj(x)) * mlp.up_proj(x)
    keep = torch.tensor([t not in set(lm.tokenizer.all_special_ids) for t in enc["input_ids"][0].tolist()])
    return h[keep].mean(0)


def test_capture_equals_manual_recomputation(tiny, small_corpus):
    acts = capture(tiny, small_corpus, batch_size=4, progress=False)
    assert acts.values.shape == (len(small_corpus), tiny.model.config.num_hidden_layers, acts.width)
    for r in list(small_corpus)[:3]:
        row = [k for k, (i, l) in enumerate(zip(acts.sentence_ids, acts.langs)) if (i, l) == (r.sentence_id, r.lang)][0]
        for layer in acts.layers:
            torch.testing.assert_close(acts.values[row, layer], _manual_pooled(tiny, r.text, layer), atol=1e-5, rtol=1e-4)


def test_batch_size_and_padding_side_do_not_matter(tiny, small_corpus):
    one = capture(tiny, small_corpus, batch_size=1, progress=False)
    many = capture(tiny, small_corpus, batch_size=32, progress=False)
    side = tiny.tokenizer.padding_side
    tiny.tokenizer.padding_side = "left" if side == "right" else "right"
    try:
        other_side = capture(tiny, small_corpus, batch_size=5, progress=False)
    finally:
        tiny.tokenizer.padding_side = side
    torch.testing.assert_close(one.values, many.values, atol=1e-4, rtol=0)
    torch.testing.assert_close(one.values, other_side.values, atol=1e-4, rtol=0)
    assert one.sentence_ids == [r.sentence_id for r in small_corpus]


def test_layers_subset_and_special_tokens(tiny_llama, small_corpus):
    full = capture(tiny_llama, small_corpus, progress=False)
    sub = capture(tiny_llama, small_corpus, layers=[1], progress=False)
    torch.testing.assert_close(sub.values[:, 0], full.values[:, 1])
    with_bos = capture(tiny_llama, small_corpus, pool_special_tokens=True, progress=False)
    assert torch.equal(with_bos.token_counts, full.token_counts + 1)  # the tiny tokenizer adds one <bos>
    skip = capture(tiny_llama, small_corpus, skip_first=True, progress=False)
    assert torch.equal(skip.token_counts, full.token_counts - 1)
    with pytest.raises(ValueError, match="out of range"):
        capture(tiny_llama, small_corpus, layers=[7], progress=False)


def test_cache_replays_without_forward_passes(tiny_llama, small_corpus, tmp_path):
    calls = []
    handle = tiny_llama.model.register_forward_pre_hook(lambda m, a: calls.append(1))
    try:
        first = capture(tiny_llama, small_corpus, cache=tmp_path, progress=False)
        n_first = len(calls)
        second = capture(tiny_llama, small_corpus, cache=tmp_path, progress=False)
    finally:
        handle.remove()
    assert n_first > 0 and len(calls) == n_first
    assert torch.equal(first.values, second.values) and second.langs == first.langs
    assert second.meta["model"] == "tiny-llama"


def test_save_load_and_select_by_label(tiny_llama, small_corpus, tmp_path):
    acts = capture(tiny_llama, small_corpus, progress=False)
    acts.save(tmp_path / "acts")
    back = Activations.load(tmp_path / "acts")
    assert torch.equal(back.values, acts.values) and back.sentence_ids == acts.sentence_ids
    zh = acts.select(langs=["zh"])
    assert set(zh.langs) == {"zh"} and len(zh.langs) == 6
    with pytest.raises(ValueError, match="not in these activations"):
        acts.select(langs=["fr"])


def test_bf16_outliers_match_fp64_reference(tiny_tokenizer, small_corpus):
    """Pooling sums in fp32 even when the model runs in bf16 with activations in the thousands."""
    from conftest import make_tiny

    model = make_tiny("llama").to(torch.bfloat16)
    with torch.no_grad():
        model.model.layers[0].mlp.up_proj.weight[:4] *= 3.0e5
    lm = from_objects(model, tiny_tokenizer, "tiny-bf16")
    acts = capture(lm, small_corpus, layers=[0], progress=False)
    site = neuron_sites(model)[0]
    r = next(iter(small_corpus))
    enc = tiny_tokenizer(r.text, return_tensors="pt")
    seen = {}
    handle = get_module(model, site).register_forward_pre_hook(lambda m, a: seen.__setitem__("x", a[0]))
    with torch.no_grad():
        model(**enc)
    handle.remove()
    ref = seen["x"][0, 1:].double().mean(0)  # skip <bos>
    assert ref.abs().max() > 100
    torch.testing.assert_close(acts.values[0, 0].double(), ref, rtol=1e-5, atol=1e-3)


def test_capture_frees_its_buffers(tiny_tokenizer, small_corpus):
    from conftest import make_tiny

    lm = from_objects(make_tiny("gemma3"), tiny_tokenizer, "tiny-gc")
    acts = capture(lm, small_corpus, progress=False)
    ref = weakref.ref(lm.model)
    del lm
    gc.collect()
    assert ref() is None and acts.values.shape[0] == len(small_corpus)


def test_empty_sentence_after_special_tokens(tiny_llama):
    c = corpus_mod.ParallelCorpus([corpus_mod.Record("s1", "en", "<bos>"), corpus_mod.Record("s1", "fr", "Bonjour")])
    with pytest.raises(ValueError, match="no token to pool"):
        capture(tiny_llama, c, progress=False)
