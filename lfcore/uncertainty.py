"""Uncertainty of LRDS, SADS and perplexity increases: bootstrap intervals and permutation tests.

Sentence ids are the sampling unit: the corpus is a sample of meanings, each in every language. The similarity
maps are computed once; a bootstrap resample is a weighting of their id-by-id block sums (all resamples in one
matmul) and a permuted statistic a sum of gathered map entries, never a new map. Perplexity increases
(``perplexity_increase``, ``deactivation_intervals``) get a paired bootstrap over evaluation windows.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from .core import Activations
from .metrics import check_parallel, layer_maps, similarity

_TIE = 1e-9  # permuted statistics within this of the observed one count as ties (>=)
_GATHER = 4_000_000  # map entries gathered per chunk of permutations (32 MB of indices)


def id_grid(acts: Activations) -> tuple[np.ndarray, list[str], list[str]]:
    """Row of every (sentence id, language), found by label: (grid (n_ids, n_langs) int64, ids, langs), ids and
    languages sorted so that resamples and permutations do not depend on the row order."""
    check_parallel(acts)
    ids, langs = sorted(acts.ids), sorted(acts.languages)
    row = {(i, l): r for r, (i, l) in enumerate(zip(acts.sentence_ids, acts.langs))}
    return np.array([[row[i, l] for l in langs] for i in ids], dtype=np.int64), ids, langs


def block_sums(maps: np.ndarray, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Id-by-id sums of a stack of maps, split by language relation.

    maps: (m, n, n); grid: (I, L) rows of each (id, language). Returns float64 (same, diff), each (m, I, I):
    same[a, b] = sum_l S[(a,l), (b,l)] and diff[a, b] = sum_{l != m} S[(a,l), (b,m)].
    """
    n_ids, n_langs = grid.shape
    flat = grid.reshape(-1)  # id-major rows
    same = np.empty((len(maps), n_ids, n_ids))
    diff = np.empty_like(same)
    for k, s in enumerate(maps):  # one map at a time: the reordered copy stays small
        g = np.asarray(s, dtype=np.float64)[np.ix_(flat, flat)].reshape(n_ids, n_langs, n_ids, n_langs)
        same[k] = np.einsum("albl->ab", g)
        diff[k] = g.sum((1, 3)) - same[k]
    return same, diff


def bootstrap_weights(n_ids: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """How often each id is drawn in each resample: (n_boot, n_ids) float64 counts summing to n_ids."""
    return rng.multinomial(n_ids, np.full(n_ids, 1.0 / n_ids), size=n_boot).astype(np.float64)


def weighted_scores(same: np.ndarray, diff: np.ndarray, w: np.ndarray, n_langs: int) -> dict[str, np.ndarray]:
    """LRDS and SADS of id-weighted data, for a stack of maps and a batch of weights.

    same, diff: (m, I, I) from ``block_sums``; w: (B, I) id counts. Returns {"lrds", "sads"}: (m, B).

    A resample holding id a w_a times: different-meaning pairs (eqs. 8-9) are the pairs of copies of two
    *different* ids, weight w_a w_b for a != b (two copies of one id are the same sentence); same-meaning pairs
    are the pairs inside each copy, weight w_a. Hence, with c = (sum w)^2 - sum w^2:
        same-lang/diff-sem mean = (w'Sw - sum_a w_a^2 S_aa) / (L c)           (S = same)
        diff-lang/diff-sem mean = (w'Dw - sum_a w_a^2 D_aa) / (L (L-1) c)     (D = diff)
        same-sem/diff-lang mean = sum_a w_a D_aa / (L (L-1) sum w)
    With w = 1 these are exactly eqs. 8-9. A resample with a single distinct id gives NaN (no such pair).
    """
    def quad(a):  # (m, I, I) -> (m, B): w_b' A w_b minus the a == b terms
        full = ((a @ w.T) * w.T).sum(1)  # (m, B)
        return full - np.diagonal(a, axis1=1, axis2=2) @ (w * w).T

    pairs = w.sum(1) ** 2 - (w * w).sum(1)  # (B,) weighted count of id pairs a != b
    pairs = np.where(pairs > 0, pairs, np.nan)
    sl = quad(same) / (n_langs * pairs)
    dd = quad(diff) / (n_langs * (n_langs - 1) * pairs)
    ss = (np.diagonal(diff, axis1=1, axis2=2) @ w.T) / (n_langs * (n_langs - 1) * w.sum(1))
    return {"lrds": sl - dd, "sads": ss - dd}


def permuted_scores(flat_maps: np.ndarray, grid: np.ndarray, n_perm: int, rng: np.random.Generator) -> np.ndarray:
    """LRDS with the languages permuted within each id, (m, n_perm); on ``grid.T``: SADS with the ids permuted
    within each language.

    flat_maps: (m, n*n) float64 symmetric maps, each flattened row-major (row r, column c at r*n + c); grid:
    (I, L) row of each (id, language). For LRDS the different-meaning pairs are fixed by the ids; a permutation
    only decides which of them share a language. So LRDS = SL/c_SL - (T - SL)/c_DD, with T the fixed sum over
    different-id pairs and SL = 2 sum_l sum_{a<b} S[(a, s_a(l)), (b, s_b(l))]: O(L I^2) gathered entries per
    permutation. SADS swaps the roles: T sums the different-language pairs, and SS = 2 sum_k sum_{l<m}
    S[(p_l(k), l), (p_m(k), m)] the pairs that a permutation gives the same meaning.
    """
    n = grid.size
    n_a, n_b = grid.shape  # (ids, langs) for LRDS, (langs, ids) for SADS: b is permuted within each a
    own = (grid[:, :, None] * n + grid[:, None, :]).reshape(-1)  # ordered pairs inside each a, diagonal too
    total = flat_maps.sum(1) - flat_maps[:, own].sum(1)  # (m,) pairs of different a
    c_same, c_dd = n_a * (n_a - 1) * n_b, n_a * (n_a - 1) * n_b * (n_b - 1)
    i, j = np.triu_indices(n_a, 1)
    size = max(1, _GATHER // max(1, n_b * n_a * (n_a - 1) // 2))
    out = []
    for start in range(0, n_perm, size):
        perm = rng.permuted(np.broadcast_to(np.arange(n_b), (min(size, n_perm - start), n_a, n_b)), axis=2)
        rows = np.take_along_axis(np.broadcast_to(grid, perm.shape), perm, 2)  # (B, a, b): a's row for label b
        by_slot = np.sort(rows, axis=1).transpose(1, 0, 2).copy()  # (a, B, b), sorted: nearby reads in memory
        idx = by_slot[i] * n  # (P, B, b): whole-block copies along axis 0 are fast
        idx += by_slot[j]
        idx = idx.transpose(1, 2, 0).reshape(len(rows), -1)  # (B, b*P), each label's pairs contiguous
        same = 2 * np.stack([f[idx].sum(1) for f in flat_maps])  # (m, B); one map at a time stays in cache
        out.append(same / c_same - (total[:, None] - same) / c_dd)
    return np.concatenate(out, 1)


def p_values(observed: np.ndarray, permuted: np.ndarray) -> np.ndarray:
    """One-sided permutation p-values (1 + #{perm >= observed}) / (1 + B); observed (m,), permuted (m, B).

    NaN where the observed statistic or any permuted one is not finite: no comparison is meaningful there.
    """
    hits = (permuted >= observed[:, None] - _TIE).sum(1)
    defined = np.isfinite(observed) & np.isfinite(permuted).all(1)
    return np.where(defined, (1 + hits) / (1 + permuted.shape[1]), np.nan)


def score_intervals(acts: Activations, *, per_layer: bool = True, n_boot: int = 1000, n_perm: int = 1000,
                    level: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """LRDS and SADS with bootstrap intervals and permutation p-values, overall and per layer.

    The estimate is eqs. 8-9 on the full data (the overall map is that of ``metrics.scores``, each layer's
    that of ``metrics.layerwise``); the interval, the percentile interval of ``n_boot`` id-level resamples
    (``weighted_scores``); the p-value, (1 + #{perm >= observed}) / (1 + n_perm) for "> 0 beyond chance":
    LRDS against languages permuted within each id, SADS against ids permuted within each language.
    Resamples and permutations are shared by all maps and drawn from ``seed``.

    Returns one row per metric and map: metric ("lrds"/"sads"), layer ("all" or the model layer),
    estimate, ci_low, ci_high, p_value, n_boot, n_perm, seed; ``attrs`` holds level and counts.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_boot < 1 or n_perm < 0:
        raise ValueError(f"need n_boot >= 1 and n_perm >= 0 (got {n_boot}, {n_perm})")
    grid, ids, langs = id_grid(acts)
    maps = similarity(acts)[None]  # (1, n, n)
    if per_layer:
        maps = torch.cat([maps, layer_maps(acts)])  # (1 + n_layers, n, n)
    maps = maps.numpy()  # float64
    maps = (maps + maps.transpose(0, 2, 1)) / 2  # exactly symmetric, so a<b pairs count twice
    flat = maps.reshape(len(maps), -1)  # (m, n*n)
    rng_boot, rng_lrds, rng_sads = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))
    same, diff = block_sums(maps, grid)
    observed = weighted_scores(same, diff, np.ones((1, len(ids))), len(langs))
    boot = weighted_scores(same, diff, bootstrap_weights(len(ids), n_boot, rng_boot), len(langs))
    parts = []
    for metric, groups, rng in (("lrds", grid, rng_lrds), ("sads", grid.T, rng_sads)):
        est = observed[metric][:, 0]
        with np.errstate(all="ignore"):
            lo, hi = np.nanquantile(boot[metric], [(1 - level) / 2, (1 + level) / 2], axis=1)
        p = p_values(est, permuted_scores(flat, groups, n_perm, rng)) if n_perm else np.full(len(est), np.nan)
        parts.append(pd.DataFrame({"metric": metric, "layer": ["all", *(acts.layers if per_layer else [])],
                                   "estimate": est, "ci_low": lo, "ci_high": hi, "p_value": p, "n_boot": n_boot,
                                   "n_perm": n_perm, "seed": seed}))
    df = pd.concat(parts, ignore_index=True)
    df.attrs.update({"level": level, "n_ids": len(ids), "n_langs": len(langs),
                     "bootstrap_failures": int(np.isnan(boot["lrds"][0]).sum()),
                     "method": "id-level percentile bootstrap; within-id language / within-language id permutation"})
    return df


def perplexity_increase(full_nll: Sequence[float], cond_nll: Sequence[float], tokens: Sequence[float] | None = None,
                        *, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> dict:
    """% perplexity increase of a condition over the full model, with a paired window bootstrap interval.

    full_nll, cond_nll: mean NLL per evaluation window (nats/token), the same windows in the same order for both;
    tokens: scored tokens per window (weights; default equal). Perplexity is exp of the token-weighted mean NLL,
    the increase 100 * (ppl_cond / ppl_full - 1). A resample draws windows with replacement for both conditions
    at once, so window difficulty cancels. Windows are treated as independent: with long documents spanning many
    windows the interval is somewhat too narrow.

    Returns {"increase", "ci_low", "ci_high", "ppl_full", "ppl", "n_windows", "n_boot", "level", "seed"}.
    """
    f, c = np.asarray(full_nll, dtype=np.float64), np.asarray(cond_nll, dtype=np.float64)
    t = np.ones_like(f) if tokens is None else np.asarray(tokens, dtype=np.float64)
    if f.ndim != 1 or f.shape != c.shape or f.shape != t.shape or len(f) == 0:
        raise ValueError(f"full_nll, cond_nll and tokens must be 1-d and of one non-zero length "
                         f"(got {f.shape}, {c.shape}, {t.shape}): one value per evaluation window")
    if (t < 0).any() or t.sum() <= 0:
        raise ValueError("tokens must be non-negative with a positive sum")
    if n_boot < 1 or not 0 < level < 1:
        raise ValueError(f"need n_boot >= 1 and 0 < level < 1 (got {n_boot}, {level})")
    w = bootstrap_weights(len(f), n_boot, np.random.default_rng(seed)) * t  # (B, W)
    with np.errstate(invalid="ignore", divide="ignore"):
        delta = (w @ (c - f)) / w.sum(1)  # (B,) mean NLL difference: log(ppl_cond / ppl_full)
    lo, hi = np.nanquantile(100 * np.expm1(delta), [(1 - level) / 2, (1 + level) / 2])
    nll_f, nll_c = (t @ f) / t.sum(), (t @ c) / t.sum()
    return {"increase": float(100 * np.expm1(nll_c - nll_f)), "ci_low": float(lo), "ci_high": float(hi),
            "ppl_full": float(np.exp(nll_f)), "ppl": float(np.exp(nll_c)), "n_windows": len(f), "n_boot": n_boot,
            "level": level, "seed": seed}


def deactivation_intervals(window_nll: Mapping[str, Mapping[str, Sequence[float]]],
                           window_tokens: Mapping[str, Sequence[float]], *, baseline: str = "Full model",
                           n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Intervals for every cell of a deactivation table (Table 1).

    window_nll: {lang: {condition: per-window mean NLL}} with the ``baseline`` condition among them; window_tokens:
    {lang: scored tokens per window} (both in ``evaluate.deactivation_table(...).attrs``). Returns one row per
    (lang, condition): lang, condition, increase, ci_low, ci_high, ppl_full, ppl, n_windows.
    """
    rows = []
    for lang, by_cond in window_nll.items():
        if baseline not in by_cond:
            raise ValueError(f"{lang!r} has no {baseline!r} windows (conditions: {list(by_cond)})")
        for cond, nll in by_cond.items():
            if cond != baseline:
                r = perplexity_increase(by_cond[baseline], nll, window_tokens[lang], n_boot=n_boot, level=level,
                                        seed=seed)
                rows.append({"lang": lang, "condition": cond, **{k: r[k] for k in
                             ("increase", "ci_low", "ci_high", "ppl_full", "ppl", "n_windows")}})
    df = pd.DataFrame(rows)
    df.attrs.update({"level": level, "n_boot": n_boot, "seed": seed})
    return df


def share_intervals(hits: pd.DataFrame, by: Sequence[str], *, unit: Sequence[str] = ("lang", "id"), n_boot: int = 1000,
                    level: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Share of hits per group, with a percentile bootstrap interval over prompts.

    hits: one row per prompt and condition, with the ``by`` columns, the prompt's label columns ``unit`` and a boolean
    ``hit`` (e.g. "the continuation is detected as the steered language"). Every group resamples its prompts,
    sorted by ``unit``, with the same seed: groups with the same prompts are resampled alike (paired: a region
    and its random control see the same draws). Returns one row per group: the ``by`` columns, share, ci_low,
    ci_high, n (prompts).

    >>> share_intervals(df.assign(hit=df.detected == df.target), ["condition", "lang"])
    """
    unit = list(unit)
    missing = [c for c in [*by, *unit, "hit"] if c not in hits.columns]
    if missing:
        raise ValueError(f"share_intervals: columns {missing} missing (have {list(hits.columns)})")
    if n_boot < 1 or not 0 < level < 1:
        raise ValueError(f"need n_boot >= 1 and 0 < level < 1 (got {n_boot}, {level})")
    rows = []
    for key, group in hits.groupby(list(by), sort=False):
        group = group.sort_values(unit)
        dup = group.duplicated(unit)
        if dup.any():
            raise ValueError(f"group {key}: prompt {tuple(group[unit][dup].iloc[0])} appears twice; "
                             f"add the column that tells the rows apart to `by`")
        h = group.hit.to_numpy(dtype=np.float64)  # (n,)
        w = bootstrap_weights(len(h), n_boot, np.random.default_rng(seed))  # (B, n)
        lo, hi = np.quantile(w @ h / len(h), [(1 - level) / 2, (1 + level) / 2])
        rows.append({**dict(zip(by, key if isinstance(key, tuple) else (key,))), "share": float(h.mean()),
                     "ci_low": float(lo), "ci_high": float(hi), "n": len(h)})
    df = pd.DataFrame(rows)
    df.attrs.update({"level": level, "n_boot": n_boot, "seed": seed, "unit": unit})
    return df
