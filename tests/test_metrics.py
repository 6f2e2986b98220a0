import itertools

import pytest
import torch

from lfcore import metrics
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
    x = acts.values.flatten(1)
    ref = torch.nn.functional.cosine_similarity(x[:, None], x[None, :], dim=2)
    torch.testing.assert_close(s, ref, atol=1e-6, rtol=0)
    assert torch.allclose(s.diagonal(), torch.ones(len(s)))


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
