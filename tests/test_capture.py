import copy
import gc
import weakref

import numpy as np
import pytest
import torch

from lfcore import corpus as corpus_mod
from lfcore.capture import capture
from lfcore.cache import read_entry, write_entry
from lfcore.core import Activations
from lfcore.deactivate import deactivate
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
    calls, forward = [], tiny_llama.model.forward
    tiny_llama.model.forward = lambda *a, **k: (calls.append(1), forward(*a, **k))[1]  # counts, adds no hook
    try:
        first = capture(tiny_llama, small_corpus, cache=tmp_path, progress=False)
        n_first = len(calls)
        second = capture(tiny_llama, small_corpus, cache=tmp_path, progress=False)
    finally:
        del tiny_llama.model.forward
    assert n_first > 0 and len(calls) == n_first
    assert torch.equal(first.values, second.values) and second.langs == first.langs
    assert second.meta["model"] == "tiny-llama" and second.meta["dtype"] == "torch.float32"


def test_cache_key_sees_the_tokens(tiny_llama, small_corpus, tmp_path):
    """A tokenizer that feeds other ids (here: no <bos>) is a different result, not a cache hit."""
    from tokenizers import processors

    tok = copy.deepcopy(tiny_llama.tokenizer)
    tok._tokenizer.post_processor = processors.TemplateProcessing(single="$A")
    other = from_objects(tiny_llama.model, tok, tiny_llama.name)
    capture(tiny_llama, small_corpus, cache=tmp_path, progress=False)
    cached = capture(other, small_corpus, cache=tmp_path, progress=False)
    torch.testing.assert_close(cached.values, capture(other, small_corpus, progress=False).values, rtol=0, atol=0)
    assert len(list((tmp_path / "activations").glob("*.json"))) == 2


def test_cached_capture_refuses_hooks_already_on_the_model(tiny_llama, small_corpus, tmp_path):
    with deactivate(tiny_llama.model, {0: [1, 2]}):
        with pytest.raises(ValueError, match="already has forward hooks.*cache=None"):
            capture(tiny_llama, small_corpus, cache=tmp_path, progress=False)
        off = capture(tiny_llama, small_corpus, progress=False)
    assert torch.count_nonzero(off.values[:, 0, [1, 2]]) == 0
    assert not (tmp_path / "activations").exists()


def test_save_load_and_select_by_label(tiny_llama, small_corpus, tmp_path):
    acts = capture(tiny_llama, small_corpus, progress=False)
    write_entry(tmp_path / "acts", *acts.entry())
    back = Activations.from_entry(*read_entry(tmp_path / "acts"))
    assert torch.equal(back.values, acts.values) and back.sentence_ids == acts.sentence_ids
    zh = acts.select(langs=["zh"])
    assert set(zh.langs) == {"zh"} and len(zh.langs) == 6
    with pytest.raises(ValueError, match="not in these activations"):
        acts.select(langs=["fr"])
    assert acts.select(langs="zh").langs == zh.langs  # a lone string is one label
    one = acts.ids[0]
    assert acts.select(ids=one).sentence_ids == [one] * 3
    with pytest.raises(ValueError, match=r"sentence id\(s\) \['nope'\] not in these activations"):
        acts.select(ids=[one, "nope"])


def test_layer_labels_are_python_ints_and_bad_arguments_raise(tiny_llama, small_corpus, tmp_path):
    for layers in (np.array([2, 0]), torch.tensor([0, 2])):
        miss = capture(tiny_llama, small_corpus, layers=layers, cache=tmp_path, progress=False)
        hit = capture(tiny_llama, small_corpus, layers=layers, cache=tmp_path, progress=False)
        assert miss.layers == hit.layers == [0, 2] and all(type(l) is int for l in hit.layers)
        assert hit.select(layers=[2]).layers == [2]
    for layers, message in (([True], "is a bool"), ([1.0], "not an integer layer index"),
                            ([], "selects no layer"), (["1"], "not an integer")):
        with pytest.raises(ValueError, match=message):
            capture(tiny_llama, small_corpus, layers=layers, progress=False)
    with pytest.raises(ValueError, match="batch_size must be at least 1, got 0"):
        capture(tiny_llama, small_corpus, batch_size=0, progress=False)


def test_max_length_is_clamped_to_the_position_table(tiny_tokenizer):
    """GPT-2 has learned positions (n_positions=32): longer sentences are cut there, not fed past the table."""
    from transformers import AutoModelForCausalLM, GPT2Config

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(GPT2Config(vocab_size=512, n_embd=32, n_layer=2, n_head=4, n_positions=32))
    lm = from_objects(model, tiny_tokenizer, "tiny-gpt2")
    c = corpus_mod.ParallelCorpus([corpus_mod.Record("long", "en", " ".join(["The quick brown fox."] * 10)),
                                   corpus_mod.Record("short", "en", "Hello.")])
    acts = capture(lm, c, progress=False)
    assert acts.meta["options"]["max_length"] == 32 and acts.token_counts.tolist()[0] == 31  # minus <bos>
    assert capture(lm, c, max_length=8, progress=False).meta["options"]["max_length"] == 8


def test_hook_that_never_runs_is_named(tiny_tokenizer, small_corpus):
    """A layer that computes its down projection without calling the module (like BLOOM's slow_but_exact)."""
    from conftest import make_tiny

    model = make_tiny("llama")
    mlp = model.model.layers[1].mlp
    mlp.forward = lambda x: torch.nn.functional.linear(mlp.act_fn(mlp.gate_proj(x)) * mlp.up_proj(x),
                                                      mlp.down_proj.weight)
    with pytest.raises(RuntimeError, match="hook on 'model.layers.1.mlp.down_proj' never ran"):
        capture(from_objects(model, tiny_tokenizer, "tiny-bypass"), small_corpus, progress=False)


def _tiny_opt():
    from transformers import AutoModelForCausalLM, OPTConfig

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(OPTConfig(
        vocab_size=512, hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=4,
        word_embed_proj_dim=32, max_position_embeddings=512, pad_token_id=0, bos_token_id=1, eos_token_id=2))


def test_opt_flattened_site_input(tiny_tokenizer, small_corpus):
    """OPT hands fc2 a (batch*tokens, ffn_dim) input: captured values equal act(fc1(x)) recomputed, at any
    batch size, deactivation zeroes exactly its neurons, and LAPE's activation probabilities count it."""
    lm = from_objects(_tiny_opt(), tiny_tokenizer, "tiny-opt")
    one = capture(lm, small_corpus, batch_size=1, progress=False)
    many = capture(lm, small_corpus, batch_size=5, progress=False)
    torch.testing.assert_close(one.values, many.values, atol=1e-5, rtol=0)
    r = next(iter(small_corpus))
    enc = tiny_tokenizer(r.text, return_tensors="pt")
    for layer in (0, 1):
        block, seen = lm.model.model.decoder.layers[layer], {}
        handle = block.fc1.register_forward_pre_hook(lambda m, a: seen.__setitem__("x", a[0]))
        with torch.no_grad():
            lm.model(**enc)
            handle.remove()
            h = block.activation_fn(block.fc1(seen["x"]))  # (tokens, ffn_dim): batch 1 flattened
        torch.testing.assert_close(one.values[0, layer], h[1:].mean(0), atol=1e-5, rtol=1e-4)  # skip <bos>
    with deactivate(lm.model, {0: [1, 5]}):
        off = capture(lm, small_corpus, batch_size=5, progress=False)
    assert torch.count_nonzero(off.values[:, 0, [1, 5]]) == 0
    keep = [i for i in range(64) if i not in (1, 5)]
    torch.testing.assert_close(off.values[:, 0, keep], many.values[:, 0, keep], atol=0, rtol=0)
    assert not torch.equal(off.values[:, 1], many.values[:, 1])
    from lfcore.capture import activation_probabilities  # LAPE's counting hook reads the same input

    probs = activation_probabilities(lm, small_corpus, batch_size=5, progress=False).probs  # (langs, 2, 64)
    assert probs.shape[1:] == (2, 64) and 0 < float(probs.mean()) < 1


def test_nonfinite_activations_name_sentence_and_layer(tiny_tokenizer, small_corpus):
    """float16 overflow (as in Gemma 3) raises naming the sentence, language and layer, suggesting a dtype."""
    from conftest import make_tiny

    model = make_tiny("llama").to(torch.float16)
    with torch.no_grad():
        model.model.layers[0].mlp.up_proj.weight[:4] = 6e4  # float16 tops out at 65504
    lm = from_objects(model, tiny_tokenizer, "tiny-fp16")
    with pytest.raises(ValueError, match=r"tiny-fp16 \(llama, torch.float16\): sentence '.+' \((en|zh|ar)\) "
                                         r"has inf or nan activations at layer 0.*dtype='bfloat16' or 'float32'"):
        capture(lm, small_corpus, progress=False)
    values = torch.zeros(2, 2, 3)
    values[1, 1, 2] = float("nan")
    with pytest.raises(ValueError, match="sentence 'b' \\(fr\\) has inf or nan activations at layer 7"):
        Activations(values, ["a", "b"], ["en", "fr"], [3, 7], torch.ones(2))
    big = torch.full((2, 1, 1), 3e38)  # the total overflows, every value is finite: accepted
    assert Activations(big, ["a", "b"], ["en", "en"], [0], torch.ones(2)).values.shape == (2, 1, 1)


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
