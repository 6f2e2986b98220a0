import math

import pytest
import torch

from lfcore import corpus as corpus_mod
from lfcore import capture as capture_mod
from lfcore import evaluate, regions, robustness
from lfcore.capture import capture
from lfcore.hooks import get_module
from lfcore.models import neuron_sites
from synthetic import planted

PLANTED = {"zh": [3, 25, 41], "ar": [7, 50]}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models and maps: thread hand-offs cost more than the arithmetic on a busy machine (restored after)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def acts():
    return planted(n_ids=16, key_neurons=PLANTED, noise=0.2)


def test_threshold_sweep_is_monotone_and_ends_empty(acts):
    kr = regions.key_regions(acts, threshold=1.5)  # 4 languages: z <= sqrt(3)
    df = robustness.threshold_sweep(kr, n=15)
    assert list(df.columns) == ["threshold", "lang", "key_neurons", "percent", "sklr"]
    assert df.threshold.min() == 1.0 and df.threshold.max() == pytest.approx(math.sqrt(len(kr.langs) - 1))
    for _, per_lang in df.groupby("lang"):
        assert per_lang.key_neurons.is_monotonic_decreasing
    sklr = df.groupby("threshold").sklr.first()
    assert sklr.is_monotonic_decreasing and sklr.iloc[0] > 0 and sklr.iloc[-1] == 0
    at_two = robustness.threshold_sweep(kr, thresholds=[1.5])
    assert at_two.set_index("lang").key_neurons.to_dict() == kr.with_threshold(1.5).sizes().to_dict()
    given = robustness.threshold_sweep(kr, thresholds=[1.3, 1.1])
    assert list(given.threshold.unique()) == [1.1, 1.3]  # as given (sorted), not rounded to fp32 (1.100000023)
    for t in (1.1, 1.3):
        assert given[given.threshold == t].set_index("lang").key_neurons.to_dict() == \
            kr.with_threshold(t).sizes().to_dict()


def test_jaccard_identical_and_disjoint(acts):
    kr = regions.key_regions(acts, threshold=1.5)
    same = robustness.region_jaccard(kr, regions.key_regions(acts, threshold=1.5))
    assert (same.jaccard == 1.0).all() and (same.size_a == same.size_b).all()
    assert robustness.jaccard({0: [1, 2]}, {0: torch.tensor([2, 3]), 1: [1]}) == pytest.approx(1 / 4)
    assert robustness.jaccard({}, {}) == 1.0
    assert robustness.jaccard(torch.zeros(3, dtype=torch.bool), torch.ones(3, dtype=torch.bool)) == 0.0
    with pytest.raises(ValueError, match="different shapes"):
        robustness.jaccard(torch.zeros(3, dtype=torch.bool), torch.zeros(4, dtype=torch.bool))


def test_stability_halves_and_subsets(acts):
    a, b = robustness.split_ids(acts.ids, seed=3)
    assert not set(a) & set(b) and set(a) | set(b) == set(acts.ids) and len(a) == len(b) == 8
    assert robustness.split_ids(acts.ids, seed=3) == (a, b)
    table, krs = robustness.stability_halves(acts, threshold=1.5, seeds=(0, 1))
    assert len(krs) == 4 and len(table) == 2 * len(acts.languages)
    assert table.jaccard.between(0, 1).all()
    for lang, flat in PLANTED.items():  # planted neurons are found on every half, so they survive intersection
        found = robustness.intersection(krs)[lang]
        assert set(flat) <= {layer * acts.width + int(n) for layer, idx in found.items() for n in idx}
    whole, _ = robustness.stability_subsets(acts, threshold=1.5, size=len(acts.ids), seeds=(0, 1))
    assert (whole.jaccard == 1.0).all() and (whole.shared_ids == len(acts.ids)).all()  # identical samples
    sub, krs = robustness.stability_subsets(acts, threshold=1.5, seeds=(0, 1, 2))
    assert len(sub) == 3 * len(acts.languages) and len(krs) == 3
    with pytest.raises(ValueError, match="subset size"):
        robustness.stability_subsets(acts, size=1)


def test_intersection_is_inside_every_set(acts):
    krs = [regions.key_regions(acts.select(ids=acts.ids[s:s + 8]), threshold=1.2) for s in (0, 4, 8)]
    inter = robustness.intersection(krs)
    for lang, neurons in inter.items():
        for kr in krs:
            own = kr.neurons(lang)
            assert all(set(idx.tolist()) <= set(own.get(layer, torch.tensor([])).tolist())
                       for layer, idx in neurons.items())


def _synthetic_probs(seed=0):
    g = torch.Generator().manual_seed(seed)
    langs, n_layers, width = ["en", "zh", "fr", "ar"], 3, 50
    probs = 0.3 + 0.3 * torch.rand(len(langs), n_layers, width, generator=g)  # shared, high entropy
    planted_sets = {"zh": [(0, 4), (2, 17), (1, 30)], "ar": [(1, 2), (2, 40)], "en": [(0, 9)]}
    for lang, cells in planted_sets.items():
        for layer, n in cells:
            probs[:, layer, n] = 0.02
            probs[langs.index(lang), layer, n] = 0.95
    return robustness.ActivationProbs(probs, langs, [0, 1, 2], torch.full((4,), 1000.0)), planted_sets


def test_lape_finds_planted_language_specific_neurons():
    probs, planted_sets = _synthetic_probs()
    found = robustness.lape(probs, entropy_quantile=6 / 150)  # exactly as many as planted
    for lang in probs.langs:
        got = {(layer, int(n)) for layer, idx in found.neurons(lang).items() for n in idx}
        assert got == set(planted_sets.get(lang, []))
    assert found.sizes().sum() == 6 and found.prob_threshold < 0.95
    wider = robustness.lape(probs, entropy_quantile=0.1)
    assert (wider.mask | found.mask).eq(wider.mask).all()  # a larger budget keeps the planted ones


def test_lape_overlap_with_key_regions(acts):
    kr = regions.key_regions(acts, threshold=1.5)
    probs = robustness.ActivationProbs(torch.rand(len(kr.langs), len(kr.layers), kr.width,
                                                  generator=torch.Generator().manual_seed(0)),
                                       kr.langs, kr.layers, torch.ones(len(kr.langs)))
    lp = robustness.lape(probs)
    table = robustness.lape_overlap(lp, kr)
    assert list(table.columns) == ["lang", "lape_neurons", "key_neurons", "shared", "jaccard"]
    assert (table.key_neurons.values == kr.sizes().values).all()
    same = robustness.LapeRegions(kr.mask, kr.langs, kr.layers, torch.zeros(len(kr.layers), kr.width), 0.5, 0.01)
    assert (robustness.lape_overlap(same, kr).jaccard == 1.0).all()


@pytest.fixture(scope="module")
def small_corpus():
    return corpus_mod.bundled_ntrex().select(["en", "zh", "ar"], n=4, seed=1)


def _manual_probs(lm, corpus, module_name, read):
    """P(x > 0) per language recomputed sentence by sentence with a plain forward hook on one module:
    ``read`` is "input" (its first positional input) or "output"."""
    module = get_module(lm.model, module_name)
    special = set(lm.tokenizer.all_special_ids)
    pos, tokens = {}, {}
    for r in corpus:
        seen = {}

        def hook(module, args, out, seen=seen):
            seen["x"] = args[0] if read == "input" else out

        handle = module.register_forward_hook(hook)
        enc = lm.tokenizer(r.text, return_tensors="pt")
        try:
            with torch.no_grad():
                lm.model(**enc)
        finally:
            handle.remove()
        keep = torch.tensor([t not in special for t in enc["input_ids"][0].tolist()])
        x = seen["x"][0][keep]  # (tokens, width)
        pos[r.lang] = pos.get(r.lang, 0) + (x > 0).double().sum(0)
        tokens[r.lang] = tokens.get(r.lang, 0) + int(keep.sum())
    return {lang: pos[lang] / tokens[lang] for lang in pos}


# where a neuron fires, recomputed by hand: gate_proj(x) > 0 in gated MLPs (act(g) > 0 exactly when g > 0), the
# GeLU output (the down projection's input) in BLOOM
FIRING = {"llama": ("model.layers.{layer}.mlp.gate_proj", "output"),
          "gemma3_text": ("model.layers.{layer}.mlp.gate_proj", "output"),
          "bloom": ("transformer.h.{layer}.mlp.dense_4h_to_h", "input")}


def test_activation_probabilities_count_firing_neurons(tiny, small_corpus):
    """Tang et al. count act_fn(gate) > 0 (not act(gate) * up > 0, the down projection's input) in gated MLPs."""
    kind = tiny.model.config.model_type
    probs = capture_mod.activation_probabilities(tiny, small_corpus, batch_size=4, progress=False)
    width = probs.probs.shape[2]
    assert probs.probs.shape == (3, 3, width) and sorted(probs.langs) == ["ar", "en", "zh"]
    assert probs.tokens.sum() == sum(len(tiny.tokenizer(r.text, add_special_tokens=False)["input_ids"])
                                     for r in small_corpus)
    assert ((probs.probs >= 0) & (probs.probs <= 1)).all()
    template, read = FIRING[kind]
    for layer in (0, 2):
        ref = _manual_probs(tiny, small_corpus, template.format(layer=layer), read)
        for k, lang in enumerate(probs.langs):
            torch.testing.assert_close(probs.probs[k, layer].double(), ref[lang], atol=1e-6, rtol=0)
    hooked = neuron_sites(tiny.model)[0] if kind == "bloom" else "model.layers.0.mlp.act_fn"
    assert probs.meta["firing_sites"][0] == f"{hooked}:input" and probs.meta["site"] == "down_proj:input"
    if kind != "bloom":  # the down projection's input, act(gate) * up, is positive elsewhere
        product = _manual_probs(tiny, small_corpus, neuron_sites(tiny.model)[2], "input")
        assert any(not torch.allclose(probs.probs[k, 2].double(), product[lang], atol=1e-3)
                   for k, lang in enumerate(probs.langs))


def test_activation_probabilities_stop_at_the_last_firing_site(tiny_llama, small_corpus):
    calls = []
    last_mlp = get_module(tiny_llama.model, "model.layers.2.mlp")
    handles = [last_mlp.up_proj.register_forward_pre_hook(lambda m, a: calls.append("up")),
               last_mlp.down_proj.register_forward_pre_hook(lambda m, a: calls.append("down"))]
    try:
        probs = capture_mod.activation_probabilities(tiny_llama, small_corpus, batch_size=4, progress=False)
    finally:
        for h in handles:
            h.remove()
    assert calls == [] and probs.probs[:, 2].sum() > 0  # layer 2 was counted, its up/down projections never ran
    one = capture_mod.activation_probabilities(tiny_llama, small_corpus, batch_size=1, layers=[1], progress=False)
    torch.testing.assert_close(one.probs[:, 0], probs.probs[:, 1])
    lp = robustness.lape(probs, entropy_quantile=0.05)
    kr = regions.key_regions(capture(tiny_llama, small_corpus, progress=False), threshold=1.0)
    table = robustness.lape_overlap(lp, kr)
    assert len(table) == 3 and table.jaccard.between(0, 1).all()


def test_intersection_effect_on_tiny_model(tiny_llama, small_corpus):
    from lfcore.perplexity import perplexity

    texts = {lang: [r.text for r in small_corpus.records_for(lang)] for lang in ("en", "zh")}
    acts = capture(tiny_llama, small_corpus, progress=False)
    _, krs = robustness.stability_halves(acts, threshold=1.0, seeds=(0,))
    sets = {"none": {}, "xzh": robustness.intersection(krs)["zh"], "layer0": {0: list(range(24))}}
    df = evaluate.intersection_effect(tiny_llama, texts, sets, seqlen=32, batch_size=2, n_boot=200)
    assert list(df.columns) == ["set", "lang", "n_neurons", "ppl_full", "ppl", "increase", "ci_low", "ci_high"]
    assert len(df) == 2 * len(sets)
    none = df[df.set == "none"]
    assert (none.increase == 0).all() and (none.ci_low == 0).all() and (none.ci_high == 0).all()
    full_en = perplexity(tiny_llama.model, tiny_llama.tokenizer, texts["en"], seqlen=32, batch_size=2)["ppl"]
    assert df[df.lang == "en"].ppl_full.eq(full_en).all()
    half = df[df.set == "layer0"]
    assert (half.n_neurons == 24).all() and (half.ppl != half.ppl_full).all()
    assert (df.ci_low <= df.ci_high).all()
