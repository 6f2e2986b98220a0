import pytest
import torch

from lfcore import diagnostics, metrics
from lfcore.core import Activations
from synthetic import planted, shuffled


def _with_spike(acts, layer=1, neuron=3, size=200.0):
    """The same activations plus one massive neuron, equal in every sentence (an attention-sink-like outlier)."""
    values = acts.values.clone()
    values[:, layer, neuron] += size
    return Activations(values, acts.sentence_ids, acts.langs, acts.layers, acts.token_counts, acts.meta)


@pytest.fixture(scope="module")
def clean():
    return planted(n_ids=10, langs=("en", "zh", "fr"), n_layers=3, width=40)


def test_dominant_layer_is_flagged_and_explained(clean):
    spiked = _with_spike(clean)
    dom = diagnostics.dominance(spiked, ks=(1, 5))
    assert list(dom.dominant) == [False, True, False]
    assert dom.loc[1, "top1_share"] > 0.95 and dom.loc[1, "mean_cosine"] > 0.99
    assert dom.loc[0, "top5_share"] < 0.5 and dom.loc[1, "top1_share"] <= dom.loc[1, "top5_share"] <= 1
    assert 3 in dom.attrs["neurons"][1]
    before = metrics.layerwise(spiked).set_index("layer")
    assert abs(before.loc[1, "lrds"]) < 0.01 and abs(before.loc[1, "sads"]) < 0.01  # meaningless scores


def test_excluding_the_planted_neuron_restores_the_planted_scores(clean):
    spiked = _with_spike(clean)
    assert diagnostics.dominant_neurons(spiked, k=1)[1].tolist() == [3]
    fixed = diagnostics.exclude_dominant(spiked, k=1, layers=[1])
    assert fixed.meta["excluded_neurons"] == {1: [3]}
    assert fixed.sentence_ids == spiked.sentence_ids and fixed.langs == spiked.langs
    assert torch.equal(fixed.values[:, [0, 2]], spiked.values[:, [0, 2]])  # other layers untouched
    zeroed = clean.values.clone()
    zeroed[:, 1, 3] = 0.0
    ref = metrics.layerwise(Activations(zeroed, clean.sentence_ids, clean.langs, clean.layers, clean.token_counts))
    got = metrics.layerwise(fixed)
    torch.testing.assert_close(torch.tensor(got.lrds.values), torch.tensor(ref.lrds.values), atol=1e-6, rtol=0)
    planted_scores = metrics.layerwise(clean).set_index("layer").loc[1]
    after = got.set_index("layer").loc[1]
    assert after.lrds == pytest.approx(planted_scores.lrds, rel=0.2)  # one of 40 neurons gone
    assert after.sads == pytest.approx(planted_scores.sads, rel=0.2)


def test_exclusion_table(clean):
    table = diagnostics.exclusion_table(_with_spike(clean), k=5)
    assert list(table.columns) == ["layer", "top5_share", "mean_cosine", "dominant", "lrds", "sads",
                                   "mean_cosine_excluded", "lrds_excluded", "sads_excluded"]
    row = table.set_index("layer").loc[1]
    assert row.dominant and row.lrds < 0.01 < row.lrds_excluded and row.mean_cosine_excluded < row.mean_cosine
    assert table.attrs["flag_k"] == 5


def test_label_not_order_and_full_share(clean):
    spiked = _with_spike(clean)
    a, b = diagnostics.dominance(spiked), diagnostics.dominance(shuffled(spiked))
    torch.testing.assert_close(torch.tensor(a.drop(columns="dominant").to_numpy()),
                               torch.tensor(b.drop(columns="dominant").to_numpy()))
    torch.testing.assert_close(diagnostics.topk_share(clean, clean.width), torch.ones(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="k must be in 1..40"):
        diagnostics.topk_share(clean, 0)
    with pytest.raises(ValueError, match=r"layer\(s\) \[7\]"):
        diagnostics.dominant_neurons(clean, 1, layers=[7])


def test_compare_pooling(clean):
    spiked = _with_spike(clean)
    table = diagnostics.compare_pooling(spiked, shuffled(clean), names=("first", "skip"))
    assert list(table.columns) == ["layer", "lrds_first", "sads_first", "mean_cosine_first", "top5_share_first",
                                   "lrds_skip", "sads_skip", "mean_cosine_skip", "top5_share_skip"]
    ref = metrics.layerwise(clean)
    torch.testing.assert_close(torch.tensor(table.lrds_skip.values), torch.tensor(ref.lrds.values))
    assert table.mean_cosine_first[1] > 0.99 > table.mean_cosine_skip[1]
    with pytest.raises(ValueError, match="same"):
        diagnostics.compare_pooling(clean, clean.select(langs=["en", "zh"]))
    with pytest.raises(ValueError, match="two different"):
        diagnostics.compare_pooling(clean, clean, names=("a", "a"))


def _share_of(acts, layer, neurons):
    """Mean over sentences of the squared-norm share that ``neurons`` hold in ``layer``, from the raw values."""
    sq = acts.values[:, acts.layers.index(layer)].double() ** 2
    return float((sq[:, neurons].sum(1) / sq.sum(1)).mean())


def test_flag_measures_the_set_that_exclusion_zeroes(clean):
    """Each sentence has its own huge neuron (30 different ones): every sentence's own top 5 holds most of its
    norm, but no 5-neuron set dominates every vector, and zeroing the 5 dominant neurons changes little."""
    values = clean.values.clone()
    for r in range(values.shape[0]):
        values[r, 0, r % 30] += 40.0
    acts = Activations(values, clean.sentence_ids, clean.langs, clean.layers, clean.token_counts)
    table = diagnostics.exclusion_table(acts, k=5)
    neurons = diagnostics.dominant_neurons(acts, k=5)
    for _, row in table.iterrows():
        layer = int(row.layer)
        assert row.top5_share == pytest.approx(_share_of(acts, layer, neurons[layer]), rel=1e-12)
        assert row.dominant == (row.top5_share > diagnostics.DEFAULT_SHARE)
    assert not table.dominant.any() and table.top5_share[0] < 0.5
    spiked = _with_spike(clean, size=200.0)  # one neuron in every vector: flagged, and its set is the one zeroed
    dom = diagnostics.dominance(spiked, ks=(5,))
    assert dom.dominant[1] and dom.attrs["neurons"][1] == diagnostics.exclude_dominant(spiked).meta["excluded_neurons"][1]
    assert dom.top5_share[1] == pytest.approx(_share_of(spiked, 1, dom.attrs["neurons"][1]), rel=1e-12)
