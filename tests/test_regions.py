import itertools
import math

import pytest
import torch

from lfcore import regions
from lfcore.core import Activations
from synthetic import planted, shuffled


def test_closed_form_equals_pairwise_sum():
    acts = planted(n_ids=6, langs=("en", "zh", "fr"))
    scores, langs = regions.contribution_scores(acts)
    a = acts.vectors().double()
    for k, lang in enumerate(langs):
        rows = [r for r, l in enumerate(acts.langs) if l == lang]
        ref = sum(a[i] * a[j] for i, j in itertools.combinations(rows, 2))  # eq. 11
        torch.testing.assert_close(scores[k], ref, atol=1e-6, rtol=1e-6)


def test_planted_key_neurons_are_found_and_order_free():
    planted_sets = {"zh": [3, 25, 41], "ar": [7, 50]}
    acts = planted(key_neurons=planted_sets, noise=0.2)
    kr = regions.key_regions(acts, threshold=1.5)
    for lang, flat in planted_sets.items():
        found = {layer * acts.width + int(n) for layer, idx in kr.neurons(lang).items() for n in idx}
        assert set(flat) <= found
    kr2 = regions.key_regions(shuffled(acts), threshold=1.5)
    for lang in kr.langs:
        assert {k: v.tolist() for k, v in kr.neurons(lang).items()} == {k: v.tolist() for k, v in kr2.neurons(lang).items()}


def test_zero_variance_never_key_and_z_bound():
    acts = planted()
    acts.values[:, 1, 4] = 0.0  # a dead neuron
    kr = regions.key_regions(acts, threshold=-10.0)  # even a threshold below every z
    assert not kr.mask[:, 1, 4].any() and not kr.valid[1, 4]
    bound = math.sqrt(len(acts.languages) - 1)
    assert float(kr.z.max()) <= bound + 1e-5


def test_sizes_per_layer_and_sklr():
    acts = planted(key_neurons={"zh": [3, 25, 41]})
    kr = regions.key_regions(acts, threshold=1.5)  # 4 languages: z <= sqrt(3)
    assert kr.sklr > 0
    assert kr.sizes().sum() == kr.sklr == kr.per_layer().to_numpy().sum()
    assert list(kr.per_layer().columns) == kr.langs and list(kr.per_layer().index) == acts.layers
    assert kr.summary().loc["SKLR", "key_neurons"] == kr.sklr
    assert kr.with_threshold(1.0).sklr >= kr.sklr >= kr.with_threshold(1.7).sklr >= kr.with_threshold(2.0).sklr == 0
    with pytest.raises(ValueError, match="no key region for language 'xx'"):
        kr.neurons("xx")


def test_random_neurons():
    a = regions.random_neurons([0, 1, 2], width=10, size=7, seed=3)
    again = regions.random_neurons([0, 1, 2], 10, 7, seed=3)
    assert sum(len(set(v.tolist())) for v in a.values()) == 7
    assert a.keys() == again.keys() and all(torch.equal(a[k], again[k]) for k in a)
    per = regions.random_neurons([0, 1, 2], width=10, size=[2, 0, 5], seed=0)
    assert {k: len(v) for k, v in per.items()} == {0: 2, 2: 5}
    assert all(len(set(v.tolist())) == len(v) and int(v.max()) < 10 for v in per.values())
    with pytest.raises(ValueError, match="cannot draw"):
        regions.random_neurons([0], 10, 11)


LANGS9 = ["ar", "en", "es", "fr", "hi", "id", "pt", "vi", "zh"]  # 9 languages as in the paper: z <= 2.83


def test_same_values_in_every_language_give_no_valid_neuron():
    """Every language holds the same 40 vectors (skewed like GeLU means), in its own row order: every score is equal
    across languages, so no neuron may pass the zero-variance guard (fp32 sums left ~1e-7 of noise that did)."""
    g = torch.Generator().manual_seed(0)
    base = torch.rand(40, 2, 512, generator=g) ** 4 * 3  # (sentences, layers, width)
    values, ids, langs = [], [], []
    for lang in LANGS9:
        perm = torch.randperm(40, generator=g)
        values.append(base[perm])
        ids += [f"s{int(p):03d}" for p in perm]
        langs += [lang] * 40
    acts = Activations(torch.cat(values), ids, langs, [0, 1], torch.ones(len(langs)))
    scores, _ = regions.contribution_scores(acts)
    assert (scores.std(0) <= 1e-15 * scores.abs().amax(0)).all()
    kr = regions.key_regions(acts, threshold=0.0)
    assert not kr.valid.any() and kr.sklr == 0


def test_single_firing_neuron_scores_exactly_zero():
    """Neuron 0 is non-zero in one sentence per language: it pairs with nothing, so S_l = 0 exactly in every
    language (eq. 11), and it is not a key neuron."""
    g = torch.Generator().manual_seed(1)
    values = torch.rand(len(LANGS9) * 20, 1, 8, generator=g) + 0.1
    values[:, 0, 0] = 0.0
    for k in range(len(LANGS9)):
        values[k * 20 + 3, 0, 0] = 0.3 + float(torch.rand(1, generator=g))
    ids = [f"s{i:03d}" for _ in LANGS9 for i in range(20)]
    langs = [lang for lang in LANGS9 for _ in range(20)]
    acts = Activations(values, ids, langs, [0], torch.ones(len(langs)))
    for a in (acts, shuffled(acts)):  # the layout fast path and the gathered path
        scores, _ = regions.contribution_scores(a)
        assert (scores[:, 0] == 0).all()
        kr = regions.key_regions(a, threshold=-10.0)
        assert not kr.valid[0, 0] and not kr.mask[:, 0, 0].any() and (kr.z[:, 0, 0] == 0).all()
