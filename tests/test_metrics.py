import itertools

import pytest
import torch

from lfcore import metrics
from lfcore.core import Activations
from synthetic import planted, shuffled


def _brute(acts):
    """Eqs. 8-9 written as literally as possible: loops over all ordered pairs i != j."""
    s = metrics.similarity(acts).double()
    buckets = {"sl_ds": [], "dl_ds": [], "ss_dl": []}
    for i, j in itertools.permutations(range(len(acts.langs)), 2):
        same_l = acts.langs[i] == acts.langs[j]
        same_s = acts.sentence_ids[i] == acts.sentence_ids[j]
        if same_l and not same_s:
            buckets["sl_ds"].append(s[i, j])
        if not same_l and not same_s:
            buckets["dl_ds"].append(s[i, j])
        if same_s and not same_l:
            buckets["ss_dl"].append(s[i, j])
    mean = {k: torch.stack(v).mean() for k, v in buckets.items()}
    return float(mean["sl_ds"] - mean["dl_ds"]), float(mean["ss_dl"] - mean["dl_ds"])


def test_scores_equal_literal_definition():
    acts = planted(n_ids=5, langs=("en", "zh", "fr"))
    got = metrics.scores(acts)
    lrds, sads = _brute(acts)
    assert got["lrds"] == pytest.approx(lrds, abs=1e-12) and got["sads"] == pytest.approx(sads, abs=1e-12)


def test_similarity_is_cosine_of_normalised_concatenation():
    acts = planted(n_ids=4)
    s = metrics.similarity(acts)
    x = acts.values.flatten(1).double()
    ref = torch.nn.functional.cosine_similarity(x[:, None], x[None, :], dim=2)
    assert s.dtype == torch.float64
    torch.testing.assert_close(s, ref, atol=1e-7, rtol=0)  # the fp32 part: products of the centred rows


def _dominated(seed=0):
    """Planted activations plus one massive neuron in every layer (about 2000, varying by 1%): every cosine is
    near 1 and LRDS/SADS are about 1e-4, where an fp32 product of fp32 unit vectors is off by about 1e-4 of them."""
    acts = planted(n_ids=6, langs=("en", "zh", "fr", "ar"), n_layers=8, width=8192, seed=seed)
    values = acts.values.clone()
    g = torch.Generator().manual_seed(seed + 1)
    values[:, :, 7] += 2000.0 * (1 + 0.01 * torch.rand(values.shape[0], values.shape[1], generator=g))
    return Activations(values, acts.sentence_ids, acts.langs, acts.layers, acts.token_counts)


def _float64_scores(x, masks):
    """LRDS/SADS of rows x (n, K) normalised and multiplied in float64."""
    a = x.double() / x.double().norm(dim=1, keepdim=True)
    return metrics.scores_from_map(a @ a.T, masks)


def test_dominated_scores_equal_float64_reference():
    acts = _dominated()
    masks = metrics.pair_masks(acts)
    ref = _float64_scores(acts.values.flatten(1), masks)
    assert 1e-5 < ref["lrds"] < 1e-3 and 1e-5 < ref["sads"] < 1e-3  # the regime where fp32 products fail
    got = metrics.scores(acts)
    for k in ("lrds", "sads"):
        assert got[k] == pytest.approx(ref[k], rel=1e-6)
    table = metrics.layerwise(acts)
    for b, layer in enumerate(acts.layers):
        one = _float64_scores(acts.values[:, b], masks)
        for k in ("lrds", "sads"):
            assert table[k][b] == pytest.approx(one[k], rel=1e-6), (layer, k)


def test_gram_blocks_and_batches_agree():
    x = _dominated().values.transpose(0, 1)[:3]  # (3 layers, n, 8192)
    whole = metrics.gram(x)
    assert whole.shape == (3, x.shape[1], x.shape[1]) and whole.dtype == torch.float64
    torch.testing.assert_close(metrics.gram(x, chunk_elements=1000), whole, atol=1e-8, rtol=0)
    torch.testing.assert_close(metrics.gram(x[1]), whole[1], atol=0, rtol=0)


def test_all_zero_layer_block_is_named():
    acts = planted(n_ids=4, n_layers=2)
    values = acts.values.clone()
    values[5, 1] = 0.0
    broken = Activations(values, acts.sentence_ids, acts.langs, acts.layers, acts.token_counts)
    message = f"sentence '{acts.sentence_ids[5]}' \\({acts.langs[5]}\\) has an all-zero activation vector in layer 1"
    with pytest.raises(ValueError, match=message):
        metrics.layer_maps(broken)
    with pytest.raises(ValueError, match=message):
        metrics.layerwise(broken)
    with pytest.raises(ValueError, match="has an all-zero activation vector$"):
        metrics.similarity(broken, layers=[1])
    assert torch.isfinite(metrics.similarity(broken)).all()  # the concatenation still has layer 0


def test_planted_structure_gives_expected_signs():
    lang_only = metrics.scores(planted(lang_scale=3.0, sem_scale=0.0))
    sem_only = metrics.scores(planted(lang_scale=0.0, sem_scale=3.0))
    assert lang_only["lrds"] > 0.05 and abs(lang_only["sads"]) < 0.02
    assert sem_only["sads"] > 0.05 and abs(sem_only["lrds"]) < 0.02


def test_row_order_does_not_matter():
    """Would catch the released code's SADS bug (meaning blocks paired by a stride over row positions)."""
    acts = planted()
    a, b = metrics.scores(acts), metrics.scores(shuffled(acts))
    assert a == pytest.approx(b, abs=1e-6)  # equal up to fp32 matmul rounding
    pd_a, pd_b = metrics.layerwise(acts), metrics.layerwise(shuffled(acts))
    assert (pd_a - pd_b).abs().to_numpy().max() < 1e-6


def test_layerwise_equals_single_layer_scores():
    acts = planted()
    table = metrics.layerwise(acts)
    assert list(table["layer"]) == acts.layers
    for _, row in table.iterrows():
        one = metrics.scores(acts, layers=[int(row["layer"])])
        assert row["lrds"] == pytest.approx(one["lrds"], abs=1e-9)
        assert row["sads"] == pytest.approx(one["sads"], abs=1e-9)


def test_missing_translation_is_named():
    acts = planted(n_ids=4)
    rows = [r for r in range(len(acts.langs)) if not (acts.langs[r] == "zh" and acts.sentence_ids[r] == "s002")]
    broken = type(acts)(acts.values[rows], [acts.sentence_ids[r] for r in rows], [acts.langs[r] for r in rows],
                        acts.layers, acts.token_counts[rows], acts.meta)
    with pytest.raises(ValueError, match="'s002' has no 'zh'"):
        metrics.scores(broken)


def test_ordered_layout_is_language_major():
    acts = shuffled(planted(n_ids=3, langs=("en", "zh")))
    o = metrics.ordered(acts, ["zh", "en"])
    assert o.langs == ["zh"] * 3 + ["en"] * 3 and o.sentence_ids == ["s000", "s001", "s002"] * 2
    assert metrics.scores(o) == pytest.approx(metrics.scores(acts), abs=1e-6)  # fp32 matmul rounding
