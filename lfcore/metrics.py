"""Cosine similarity map, LRDS and SADS (paper eqs. 7-9), overall and per layer, all by label.

Every pair selection comes from the row labels (language, sentence id), never from row positions:
shuffling the rows of an ``Activations`` leaves every score unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from .capture import Activations


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


def codes(labels: Sequence[str]) -> torch.Tensor:
    """Integer codes of string labels, (n,) long; equal labels get equal codes."""
    _, inverse = np.unique(np.asarray(labels), return_inverse=True)
    return torch.from_numpy(inverse.astype(np.int64))


@dataclass
class PairMasks:
    """Boolean (n, n) masks of the pair classes used by eqs. 8-9 (the diagonal is in none of them)."""

    same_lang_diff_sem: torch.Tensor
    diff_lang_diff_sem: torch.Tensor
    same_sem_diff_lang: torch.Tensor

    @classmethod
    def of(cls, acts: Activations) -> "PairMasks":
        lang, sem = codes(acts.langs), codes(acts.sentence_ids)
        same_lang = lang[:, None] == lang[None, :]  # (n, n)
        same_sem = sem[:, None] == sem[None, :]
        return cls(same_lang & ~same_sem, ~same_lang & ~same_sem, same_sem & ~same_lang)


def similarity(acts: Activations, layers: Sequence[int] | None = None) -> torch.Tensor:
    """Cosine similarity map S (n, n) of the normalised layer concatenation (eq. 7), rows as in ``acts``."""
    a = acts.vectors(layers)  # (n, L*width), unit rows
    return a @ a.T


def scores_from_map(s: torch.Tensor, masks: PairMasks) -> dict[str, float]:
    """LRDS (eq. 8) and SADS (eq. 9) from a similarity map and its pair masks."""
    s = s.double()
    diff_diff = s[masks.diff_lang_diff_sem].mean()
    return {"lrds": float(s[masks.same_lang_diff_sem].mean() - diff_diff),
            "sads": float(s[masks.same_sem_diff_lang].mean() - diff_diff)}


def scores(acts: Activations, layers: Sequence[int] | None = None) -> dict[str, float]:
    """LRDS and SADS over the concatenation of ``layers`` (all by default)."""
    check_parallel(acts)
    return scores_from_map(similarity(acts, layers), PairMasks.of(acts))


def layer_maps(acts: Activations) -> torch.Tensor:
    """Per-layer similarity maps (n_layers, n, n): each layer's block normalised on its own."""
    x = acts.values.transpose(0, 1)  # (L, n, width)
    norms = x.norm(dim=2, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
    x = x / norms
    return x @ x.transpose(1, 2)  # (L, n, n)


def layerwise(acts: Activations) -> pd.DataFrame:
    """Layer-wise LRDS and SADS (Figure 3): one row per model layer, each layer's block alone."""
    check_parallel(acts)
    masks = PairMasks.of(acts)
    rows = [{"layer": layer, **scores_from_map(s, masks)} for layer, s in zip(acts.layers, layer_maps(acts))]
    return pd.DataFrame(rows)


def ordered(acts: Activations, langs: Sequence[str] | None = None) -> Activations:
    """Rows sorted language-major (in ``langs`` order) and by sentence id within: the paper's map layout."""
    langs = list(langs or acts.languages)
    rank = {l: k for k, l in enumerate(langs)}
    ids = sorted(acts.ids)
    id_rank = {i: k for k, i in enumerate(ids)}
    sub = acts.select(langs=langs)
    order = sorted(range(len(sub.langs)), key=lambda r: (rank[sub.langs[r]], id_rank[sub.sentence_ids[r]]))
    idx = torch.tensor(order, dtype=torch.long)
    return Activations(sub.values[idx], [sub.sentence_ids[r] for r in order], [sub.langs[r] for r in order],
                       sub.layers, sub.token_counts[idx], sub.meta)
