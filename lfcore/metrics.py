"""Cosine similarity map, LRDS and SADS (paper eqs. 7-9), overall and per layer, all by label.

Every pair selection comes from the row labels (language, sentence id), never from row positions:
shuffling the rows of an ``Activations`` leaves every score unchanged.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch

from .core import Activations


def check_parallel(acts: Activations) -> None:
    """Raise ``ValueError`` unless every sentence id occurs exactly once in every language."""
    langs, ids = acts.languages, acts.ids
    present = set(zip(acts.sentence_ids, acts.langs))
    missing = [(i, l) for i in ids for l in langs if (i, l) not in present]
    if missing:
        shown = ", ".join(f"{i!r} has no {l!r}" for i, l in missing[:5])
        raise ValueError(f"LRDS/SADS need every sentence in every language; {len(missing)} missing: {shown}"
                         f"{' ...' if len(missing) > 5 else ''}. Select complete ids with corpus.select(langs, n).")
    if len(langs) < 2 or len(ids) < 2:
        raise ValueError(f"LRDS/SADS need at least 2 languages and 2 sentences (have {len(langs)} and {len(ids)})")


def pair_masks(acts: Activations) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Boolean (n, n) masks of eqs. 8-9's pair classes, by label: (same language, different meaning),
    (different language, different meaning), (same meaning, different language); the diagonal is in none."""
    lang, sem = np.asarray(acts.langs), np.asarray(acts.sentence_ids)
    same_lang = torch.from_numpy(lang[:, None] == lang[None, :])  # (n, n)
    same_sem = torch.from_numpy(sem[:, None] == sem[None, :])
    return same_lang & ~same_sem, ~same_lang & ~same_sem, same_sem & ~same_lang


def gram(x: torch.Tensor, chunk_elements: int = 1 << 20) -> torch.Tensor:
    """Cosine similarity of every pair of rows, accurate where the rows are nearly parallel.

    x: (..., n, K) rows, none all zero (any float dtype). Returns (..., n, n) float64, one map per leading index.
    An fp32 product of unit vectors rounds each cosine by about 1e-7 times a factor growing with K: the size of
    LRDS and SADS when dominant neurons put every cosine near 1. So the unit rows a_i (normalised in float64) are
    centred on their mean row m, d_i = a_i - m, and S_ij = a_i.m + a_j.m - m.m + d_i.d_j: the first three terms
    in float64, d d^T as an fp32 product whose rounding scales with |d_i| |d_j| instead of 1. The columns go
    through reused buffers of about ``chunk_elements`` values: little extra memory, about the fp32 product's cost.
    """
    *batch, n, K = x.shape
    x = x.reshape(-1, n, K)  # (B, n, K)
    step = max(1, min(K, chunk_elements // n))
    cols = [(c, min(step, K - c)) for c in range(0, K, step)]
    a_buf, d_buf = torch.empty(n, step, dtype=torch.float64), torch.empty(n, step)
    out = torch.empty(x.shape[0], n, n, dtype=torch.float64)
    for rows, s in zip(x, out):  # rows (n, K) -> s (n, n)
        sq = torch.zeros(n, dtype=torch.float64)
        for c, w in cols:
            sq += a_buf[:, :w].copy_(rows[:, c:c + w]).square_().sum(1)
        norms = sq.sqrt_()[:, None]  # (n, 1)
        am = torch.zeros(n, 1, dtype=torch.float64)  # a_i . m
        mm = torch.zeros((), dtype=torch.float64)  # m . m
        dd = torch.zeros(n, n)  # fp32 d d^T
        for c, w in cols:
            a = a_buf[:, :w].copy_(rows[:, c:c + w]).div_(norms)  # (n, w) unit-row entries
            m = a.mean(0, keepdim=True)  # (1, w): this block of the mean row
            am += a @ m.T
            mm += (m * m).sum()
            d = d_buf[:, :w].copy_(a.sub_(m))  # (n, w) fp32
            dd.addmm_(d, d.T)
        torch.add(am, am.T, out=s).sub_(mm).add_(dd)
    return out.reshape(*batch, n, n)


def similarity(acts: Activations, layers: Sequence[int] | None = None) -> torch.Tensor:
    """Cosine similarity map S (n, n) float64 of the normalised layer concatenation (eq. 7), rows as in ``acts``.

    Raises ``ValueError`` naming a sentence whose activation vector over ``layers`` is all zero.
    """
    sub = acts if layers is None else acts.select(layers=layers)
    x = sub.values.flatten(1)  # (n, L*width)
    sub.check_nonzero(x.norm(dim=1))
    return gram(x)


def scores_from_map(s: torch.Tensor, masks: tuple[torch.Tensor, ...]) -> dict[str, float]:
    """LRDS (eq. 8) and SADS (eq. 9) from a similarity map and its ``pair_masks``."""
    s = s.double()
    same_lang, diff_diff, same_sem = (s[m].mean() for m in masks)
    return {"lrds": float(same_lang - diff_diff), "sads": float(same_sem - diff_diff)}


def scores(acts: Activations, layers: Sequence[int] | None = None) -> dict[str, float]:
    """LRDS and SADS over the concatenation of ``layers`` (all by default)."""
    check_parallel(acts)
    return scores_from_map(similarity(acts, layers), pair_masks(acts))


def layer_maps(acts: Activations) -> torch.Tensor:
    """Per-layer similarity maps (n_layers, n, n) float64: each layer's block normalised on its own.

    Raises ``ValueError`` naming a sentence and layer where the sentence's block is all zero.
    """
    acts.check_nonzero(acts.values.norm(dim=2))  # norms (n, n_layers)
    return gram(acts.values.transpose(0, 1))  # (L, n, width) -> (L, n, n)


def layerwise(acts: Activations) -> pd.DataFrame:
    """Layer-wise LRDS and SADS (Figure 3): one row per model layer, each layer's block alone."""
    check_parallel(acts)
    masks = pair_masks(acts)
    return pd.DataFrame([{"layer": l, **scores_from_map(s, masks)} for l, s in zip(acts.layers, layer_maps(acts))])


def ordered(acts: Activations, langs: Sequence[str] | None = None) -> Activations:
    """Rows sorted language-major (in ``langs`` order) and by sentence id within: the paper's map layout."""
    langs = list(langs or acts.languages)
    sub = acts.select(langs=langs)
    order = sorted(range(len(sub.langs)), key=lambda r: (langs.index(sub.langs[r]), sub.sentence_ids[r]))
    idx = torch.tensor(order, dtype=torch.long)
    return Activations(sub.values[idx], [sub.sentence_ids[r] for r in order], [sub.langs[r] for r in order],
                       sub.layers, sub.token_counts[idx], sub.meta)
