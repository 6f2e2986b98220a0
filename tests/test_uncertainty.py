import math

import numpy as np
import pytest
import torch

from lfcore import metrics, uncertainty
from lfcore.core import Activations
from synthetic import planted, shuffled


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Hundreds of tiny maps: thread hand-offs cost more than the arithmetic on a busy machine (restored after)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _relabelled(acts, ids=None, langs=None):
    return Activations(acts.values, ids or acts.sentence_ids, langs or acts.langs, acts.layers, acts.token_counts)


def test_estimates_equal_metrics_and_rows_order_free():
    acts = planted(n_ids=7, langs=("en", "zh", "fr"), n_layers=2, width=6)
    df = uncertainty.score_intervals(acts, n_boot=50, n_perm=20, seed=3)
    overall, per_layer = metrics.scores(acts), metrics.layerwise(acts)
    for metric in ("lrds", "sads"):
        rows = df[df.metric == metric].set_index("layer")
        assert rows.loc["all", "estimate"] == pytest.approx(overall[metric], abs=1e-9)
        for layer, value in zip(per_layer.layer, per_layer[metric]):
            assert rows.loc[layer, "estimate"] == pytest.approx(value, abs=1e-6)
    assert list(df.columns) == ["metric", "layer", "estimate", "ci_low", "ci_high", "p_value", "n_boot", "n_perm",
                                "seed"]
    assert (df.ci_low <= df.ci_high).all()
    again = uncertainty.score_intervals(shuffled(acts), n_boot=50, n_perm=20, seed=3)
    np.testing.assert_allclose(again[["estimate", "ci_low", "ci_high", "p_value"]].to_numpy(),
                               df[["estimate", "ci_low", "ci_high", "p_value"]].to_numpy(), atol=1e-9)


def test_weighted_scores_equal_brute_force_on_duplicated_ids():
    acts = shuffled(planted(n_ids=6, langs=("en", "zh", "fr"), n_layers=1, width=8))
    grid, ids, langs = uncertainty.id_grid(acts)
    s = metrics.similarity(acts).double()
    same, diff = uncertainty.block_sums(s[None].numpy(), grid)
    w = np.array([[2.0, 0, 1, 0, 3, 0]])
    got = uncertainty.weighted_scores(same, diff, w, len(langs))
    # the resample written out: copies of a different id pair as different meanings, a copy with itself as same
    copies = [(int(grid[a, l]), a, c, l) for a in range(len(ids)) for c in range(int(w[0, a])) for l in range(3)]
    sl, dd, ss = [], [], []
    for x, (r1, a1, c1, l1) in enumerate(copies):
        for y, (r2, a2, c2, l2) in enumerate(copies):
            if x != y and a1 != a2:
                (sl if l1 == l2 else dd).append(float(s[r1, r2]))
            elif a1 == a2 and c1 == c2 and l1 != l2:
                ss.append(float(s[r1, r2]))
    assert float(got["lrds"][0, 0]) == pytest.approx(np.mean(sl) - np.mean(dd), abs=1e-12)
    assert float(got["sads"][0, 0]) == pytest.approx(np.mean(ss) - np.mean(dd), abs=1e-12)


def test_permuted_statistics_equal_scores_of_relabelled_rows():
    acts = shuffled(planted(n_ids=6, langs=("en", "zh", "fr", "ar"), n_layers=1, width=8))
    grid, ids, langs = uncertainty.id_grid(acts)
    s = metrics.similarity(acts).double()
    flat = ((s + s.T) / 2).reshape(1, -1).numpy()
    n_ids, n_langs = grid.shape
    lrds = uncertainty.permuted_scores(flat, grid, 4, np.random.default_rng(7))
    sads = uncertainty.permuted_scores(flat, grid.T, 4, np.random.default_rng(7))
    rng_l, rng_s = np.random.default_rng(7), np.random.default_rng(7)
    for b in range(4):  # the same draws, applied to the labels and scored by metrics
        perm = rng_l.permuted(np.broadcast_to(np.arange(n_langs), (1, n_ids, n_langs)), axis=2)[0]
        new_lang = list(acts.langs)
        for a in range(n_ids):
            for l in range(n_langs):
                new_lang[int(grid[a, perm[a, l]])] = langs[l]
        ref = metrics.scores_from_map(s, metrics.pair_masks(_relabelled(acts, langs=new_lang)))["lrds"]
        assert lrds[0, b] == pytest.approx(ref, abs=1e-12)
        perm = rng_s.permuted(np.broadcast_to(np.arange(n_ids), (1, n_langs, n_ids)), axis=2)[0]
        new_id = list(acts.sentence_ids)
        for l in range(n_langs):
            for k in range(n_ids):
                new_id[int(grid[perm[l, k], l])] = f"m{k}"
        ref = metrics.scores_from_map(s, metrics.pair_masks(_relabelled(acts, ids=new_id)))["sads"]
        assert sads[0, b] == pytest.approx(ref, abs=1e-12)


LANG_VECS = torch.rand(3, 16, generator=torch.Generator().manual_seed(0))  # fixed: part of the population


def _draw(n_ids, seed, lang_scale=1.0, sem_scale=1.0, noise=1.0):
    """A sample of n_ids meanings in 3 languages: row = lang + meaning + noise; ids are the i.i.d. units."""
    g = torch.Generator().manual_seed(seed)
    sem = torch.rand(n_ids, 1, 16, generator=g)
    rows = lang_scale * LANG_VECS[None] + sem_scale * sem + noise * torch.rand(n_ids, 3, 16, generator=g)
    return rows  # (n_ids, 3, 16)


def _population(rows):
    """LRDS and SADS of a very large sample in closed form (sums of unit vectors, no n x n map)."""
    u = rows.double() / rows.double().norm(dim=2, keepdim=True)  # (I, L, K)
    n_ids, n_langs, _ = u.shape
    tot = u.sum(0)  # (L, K)
    gram = tot @ tot.T  # (L, L): sums over all id pairs, same id included
    paired = torch.einsum("alk,amk->lm", u, u)  # (L, L): same-id pairs
    off = ~torch.eye(n_langs, dtype=torch.bool)
    sl = (torch.diagonal(gram) - n_ids).sum() / (n_langs * n_ids * (n_ids - 1))
    dd = (gram - paired)[off].sum() / (n_langs * (n_langs - 1) * n_ids * (n_ids - 1))
    ss = paired[off].sum() / (n_langs * (n_langs - 1) * n_ids)
    return float(sl - dd), float(ss - dd)


def _acts(rows):
    n_ids = rows.shape[0]
    ids = [f"s{a}" for a in range(n_ids) for _ in range(3)]
    langs = ["en", "zh", "ar"] * n_ids
    return Activations(rows.reshape(n_ids * 3, 1, -1).float(), ids, langs, [0], torch.ones(n_ids * 3))


def test_bootstrap_intervals_cover_the_population_value():
    true_lrds, true_sads = _population(_draw(200_000, seed=10_000))
    hits = {"lrds": 0, "sads": 0}
    n_rep = 200
    for rep in range(n_rep):
        df = uncertainty.score_intervals(_acts(_draw(30, seed=rep)), per_layer=False, n_boot=300, n_perm=0, seed=rep)
        for metric, truth in (("lrds", true_lrds), ("sads", true_sads)):
            row = df[df.metric == metric].iloc[0]
            hits[metric] += row.ci_low <= truth <= row.ci_high
    for metric, h in hits.items():
        assert 0.85 <= h / n_rep <= 0.99, (metric, h / n_rep)


def _uniformity_gap(p, n_perm):
    """Largest gap between the empirical CDF of p-values and the discrete uniform on {1..B+1}/(B+1)."""
    grid = np.arange(1, n_perm + 2) / (n_perm + 1)
    return np.max(np.abs((p[:, None] <= grid[None] + 1e-12).mean(0) - grid))


def test_permutation_p_values_are_uniform_under_the_null():
    n_perm, p_lrds, p_sads = 19, [], []
    for rep in range(100):
        # LRDS null: meaning structure but no language structure; SADS null: the reverse
        df = uncertainty.score_intervals(_acts(_draw(8, seed=rep, lang_scale=0.0)), per_layer=False, n_boot=1,
                                         n_perm=n_perm, seed=rep)
        p_lrds.append(df.loc[df.metric == "lrds", "p_value"].item())
        df = uncertainty.score_intervals(_acts(_draw(8, seed=1000 + rep, sem_scale=0.0)), per_layer=False,
                                         n_boot=1, n_perm=n_perm, seed=rep)
        p_sads.append(df.loc[df.metric == "sads", "p_value"].item())
    for p in (np.array(p_lrds), np.array(p_sads)):
        assert _uniformity_gap(p, n_perm) < 0.17  # KS 1% critical value for 100 draws is about 0.16
        assert 0.4 < p.mean() < 0.65


def test_p_values_are_nan_where_a_statistic_is_not_finite():
    """A NaN observed statistic compares false with every permutation; it must not read as p = 1/(B+1)."""
    observed = np.array([0.5, np.nan, 0.1, np.inf])
    permuted = np.array([[0.1, 0.2, 0.6], [0.1, 0.2, 0.3], [0.0, np.nan, 0.2], [0.1, 0.2, 0.3]])
    p = uncertainty.p_values(observed, permuted)
    assert p[0] == 2 / 4 and np.isnan(p[1:]).all()


def test_planted_structure_gives_small_p_overall_and_per_layer():
    acts = planted(n_ids=10, langs=("en", "zh", "fr"), n_layers=3, width=20)
    df = uncertainty.score_intervals(acts, n_boot=200, n_perm=199, seed=0)
    assert (df.p_value == 1 / 200).all()
    assert (df.ci_low > 0).all()
    assert df.attrs["level"] == 0.95 and df.attrs["bootstrap_failures"] == 0


def test_bad_arguments_and_missing_translation():
    acts = planted(n_ids=4, langs=("en", "zh"))
    with pytest.raises(ValueError, match="level"):
        uncertainty.score_intervals(acts, level=95)
    with pytest.raises(ValueError, match="n_boot"):
        uncertainty.score_intervals(acts, n_boot=0)
    partial = acts.select(ids=["s000", "s001", "s002"])
    partial = Activations(torch.cat([partial.values, acts.select(ids=["s003"], langs=["en"]).values]),
                          partial.sentence_ids + ["s003"], partial.langs + ["en"], partial.layers,
                          torch.ones(len(partial.langs) + 1))
    with pytest.raises(ValueError, match="every sentence in every language"):
        uncertainty.score_intervals(partial)


def test_perplexity_increase_exact_and_paired():
    full = np.array([2.0, 3.0, 2.5, 4.0])
    tokens = np.array([10, 20, 5, 5])
    shifted = uncertainty.perplexity_increase(full, full + math.log(1.1), tokens, n_boot=200)
    assert shifted["increase"] == pytest.approx(10.0)
    assert shifted["ci_low"] == pytest.approx(10.0) and shifted["ci_high"] == pytest.approx(10.0)  # paired
    assert shifted["ppl_full"] == pytest.approx(math.exp((full * tokens).sum() / tokens.sum()))
    rng = np.random.default_rng(0)
    cond = full + rng.normal(0.2, 0.1, size=4)
    r = uncertainty.perplexity_increase(full, cond, tokens, n_boot=500, seed=1)
    assert r["ci_low"] <= r["increase"] <= r["ci_high"]
    assert r == uncertainty.perplexity_increase(full, cond, tokens, n_boot=500, seed=1)
    with pytest.raises(ValueError, match="one value per evaluation window"):
        uncertainty.perplexity_increase(full, cond[:3], tokens)


def test_deactivation_intervals_from_table_attrs():
    window_nll = {"en": {"Full model": [2.0, 2.2, 2.4], "x en": [2.5, 2.6, 2.9], "x zh": [2.0, 2.2, 2.4]},
                  "zh": {"Full model": [3.0, 3.1, 3.3], "x en": [3.0, 3.2, 3.3], "x zh": [3.9, 4.0, 4.3]}}
    tokens = {"en": [100, 100, 50], "zh": [120, 80, 60]}
    df = uncertainty.deactivation_intervals(window_nll, tokens, n_boot=100)
    assert len(df) == 4 and set(df.condition) == {"x en", "x zh"}
    unchanged = df[(df.lang == "en") & (df.condition == "x zh")].iloc[0]
    assert unchanged.increase == 0 and unchanged.ci_low == 0 and unchanged.ci_high == 0
    assert (df[df.condition != "x en"].query("lang == 'zh'").increase > 20).all()
    with pytest.raises(ValueError, match="no 'Full model' windows"):
        uncertainty.deactivation_intervals({"en": {"x en": [1.0]}}, {"en": [1]})


def test_intervals_from_a_real_deactivation_table(tiny_llama):
    from lfcore import corpus as corpus_mod
    from lfcore.evaluate import deactivation_table

    c = corpus_mod.bundled_ntrex().select(["en", "zh"], n=4, seed=2)
    texts = {lang: [r.text for r in c.records_for(lang)] for lang in ("en", "zh")}
    table = deactivation_table(tiny_llama, texts, {"layer0": {0: list(range(24))}, "none": {}}, seqlen=24,
                               batch_size=2, progress=False)
    df = uncertainty.deactivation_intervals(table.attrs["window_nll"], table.attrs["window_tokens"], n_boot=200)
    for _, row in df.iterrows():
        assert row.increase == pytest.approx(table.loc[row.lang, row.condition], rel=1e-6, abs=1e-9)
        assert row.ppl_full == pytest.approx(table.loc[row.lang, "Full model Perplexity"], rel=1e-9)
    assert (df[df.condition == "none"][["increase", "ci_low", "ci_high"]] == 0).all().all()
