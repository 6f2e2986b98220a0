"""How robust are key regions? Threshold sweeps, sample stability, and a second selection method (LAPE).

``threshold_sweep`` moves the z cut; ``stability_halves`` compares regions found on disjoint halves of the ids,
``stability_subsets`` on random subsets of a chosen size, one per seed (``intersection`` keeps the neurons found
every time); ``lape`` (Tang et al. 2024, "Language-Specific Neurons") selects neurons by activation-probability
entropy and ``lape_overlap`` compares them with the key regions.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from .core import ActivationProbs, Activations, NeuronSet, mask_to_set
from .regions import KeyRegions, key_regions


def threshold_sweep(kr: KeyRegions, thresholds: Sequence[float] | None = None, n: int = 21) -> pd.DataFrame:
    """Key-region sizes as the z threshold grows (same z-scores, only the cut moves).

    ``thresholds`` default: ``n`` evenly spaced values from 1 to sqrt(L - 1), the largest z-score L languages allow
    (population std). One row per threshold and language: threshold, lang, key_neurons, percent (of all neurons),
    sklr (sum over languages at that threshold).
    """
    if thresholds is None:
        top = math.sqrt(len(kr.langs) - 1)
        thresholds = np.linspace(1.0, top, n) if top > 1 else np.array([1.0])
    thresholds = np.sort(np.asarray(thresholds, dtype=np.float64))  # reported as given
    t = torch.as_tensor(thresholds, dtype=kr.z.dtype)  # compared as KeyRegions.mask compares (z > threshold)
    z = torch.where(kr.valid, kr.z, -torch.inf).flatten(1)  # (n_langs, K); invalid neurons are never key
    counts = (z[None] > t[:, None, None]).sum(2).numpy()  # (T, n_langs)
    return pd.DataFrame({"threshold": thresholds.repeat(len(kr.langs)), "lang": kr.langs * len(t),
                         "key_neurons": counts.ravel(), "percent": 100.0 * counts.ravel() / kr.total_neurons,
                         "sklr": counts.sum(1).repeat(len(kr.langs))})


def jaccard(a: torch.Tensor | NeuronSet, b: torch.Tensor | NeuronSet) -> float:
    """|a & b| / |a | b| of two boolean masks of one shape or two neuron sets; 1.0 when both are empty."""
    if isinstance(a, Mapping):
        sa = {(l, int(i)) for l, idx in a.items() for i in torch.as_tensor(idx).reshape(-1)}
        sb = {(l, int(i)) for l, idx in b.items() for i in torch.as_tensor(idx).reshape(-1)}
        inter, union = len(sa & sb), len(sa | sb)
    else:
        if a.shape != b.shape:
            raise ValueError(f"masks of different shapes {tuple(a.shape)} and {tuple(b.shape)}")
        inter, union = int((a & b).sum()), int((a | b).sum())
    return 1.0 if union == 0 else inter / union


def _check_same_grid(a, b) -> None:
    if list(a.layers) != list(b.layers) or a.width != b.width:
        raise ValueError(f"the two region sets cover different neurons (layers {a.layers} x {a.width} vs "
                         f"{b.layers} x {b.width})")


def region_jaccard(a: KeyRegions, b: KeyRegions) -> pd.DataFrame:
    """Per language in both (``a``'s order): lang, jaccard, size_a, size_b, shared. Either may be ``LapeRegions``."""
    _check_same_grid(a, b)
    rows = []
    for lang in [l for l in a.langs if l in b.langs]:
        ma, mb = a.mask[a.langs.index(lang)], b.mask[b.langs.index(lang)]
        rows.append({"lang": lang, "jaccard": jaccard(ma, mb), "size_a": int(ma.sum()), "size_b": int(mb.sum()),
                     "shared": int((ma & mb).sum())})
    return pd.DataFrame(rows, columns=["lang", "jaccard", "size_a", "size_b", "shared"])


def split_ids(ids: Sequence[str], seed: int = 0) -> tuple[list[str], list[str]]:
    """Two disjoint halves of ``ids`` (sizes floor(n/2) and the rest), drawn with ``seed``."""
    ids = sorted(set(ids))
    order = np.random.default_rng(seed).permutation(len(ids))
    half = len(ids) // 2
    return sorted(ids[i] for i in order[:half]), sorted(ids[i] for i in order[half:])


def stability_halves(acts: Activations, threshold: float = 2.0, seeds: Sequence[int] = (0, 1, 2, 3, 4),
                     epsilon: float = 0.0) -> tuple[pd.DataFrame, list[KeyRegions]]:
    """Key regions (``regions.key_regions`` with ``threshold``, ``epsilon``) on two disjoint halves of the
    sentence ids, for each seed's random split.

    Returns (table, regions): one row per seed and language (seed, lang, jaccard, size_a, size_b, shared) and
    the 2 * len(seeds) ``KeyRegions`` (half a and b of each seed, in order), e.g. for ``intersection``.
    """
    if len(acts.ids) < 4:
        raise ValueError(f"need at least 4 sentence ids to split in halves, have {len(acts.ids)}")
    tables, regions = [], []
    for seed in seeds:
        half_a, half_b = split_ids(acts.ids, seed)
        ka = key_regions(acts.select(ids=half_a), threshold, epsilon)
        kb = key_regions(acts.select(ids=half_b), threshold, epsilon)
        regions += [ka, kb]
        tables.append(region_jaccard(ka, kb).assign(seed=seed))
    df = pd.concat(tables, ignore_index=True)
    return df[["seed", "lang", "jaccard", "size_a", "size_b", "shared"]], regions


def stability_subsets(acts: Activations, threshold: float = 2.0, size: int | None = None,
                      seeds: Sequence[int] = (0, 1, 2)) -> tuple[pd.DataFrame, list[KeyRegions]]:
    """Key regions on random id subsets of ``size`` (default half) drawn with each seed; every pair compared.

    Returns (table, regions): one row per seed pair and language (seed_a, seed_b, lang, jaccard,
    size_a, size_b, shared, shared_ids) and one ``KeyRegions`` per seed.
    """
    ids = sorted(acts.ids)
    size = len(ids) // 2 if size is None else size
    if not 2 <= size <= len(ids):
        raise ValueError(f"subset size must be in 2..{len(ids)}, got {size}")
    subsets = [sorted(np.random.default_rng(s).choice(ids, size, replace=False).tolist()) for s in seeds]
    regions = [key_regions(acts.select(ids=sub), threshold) for sub in subsets]
    tables = []
    for (i, a), (j, b) in itertools.combinations(enumerate(seeds), 2):
        tables.append(region_jaccard(regions[i], regions[j]).assign(
            seed_a=a, seed_b=b, shared_ids=len(set(subsets[i]) & set(subsets[j]))))
    df = pd.concat(tables, ignore_index=True)
    return df[["seed_a", "seed_b", "lang", "jaccard", "size_a", "size_b", "shared", "shared_ids"]], regions


def intersection(regions: Sequence[KeyRegions]) -> dict[str, NeuronSet]:
    """For each language present in every region set, the neurons found in all of them: {lang: NeuronSet}."""
    if not regions:
        raise ValueError("no region sets to intersect")
    for r in regions[1:]:
        _check_same_grid(regions[0], r)
    out = {}
    for lang in [l for l in regions[0].langs if all(l in r.langs for r in regions)]:
        mask = torch.stack([r.mask[r.langs.index(lang)] for r in regions]).all(0)  # (n_layers, width)
        out[lang] = mask_to_set(mask, regions[0].layers)
    return out


@dataclass
class LapeRegions:
    """Language-specific neurons by LAPE. mask: (n_langs, n_layers, width); entropy: (n_layers, width)."""

    mask: torch.Tensor
    langs: list[str]
    layers: list[int]
    entropy: torch.Tensor
    prob_threshold: float
    entropy_quantile: float

    @property
    def width(self) -> int:
        return self.mask.shape[2]

    def neurons(self, lang: str) -> NeuronSet:
        if lang not in self.langs:
            raise ValueError(f"no LAPE neurons for language {lang!r}; languages: {self.langs}")
        return mask_to_set(self.mask[self.langs.index(lang)], self.layers)

    def sizes(self) -> pd.Series:
        return pd.Series(self.mask.sum((1, 2)).tolist(), index=self.langs, name="lape_neurons")


def lape(probs: ActivationProbs, entropy_quantile: float = 0.01, prob_quantile: float = 0.95) -> LapeRegions:
    """Language activation probability entropy (Tang et al. 2024, their ``identify.py``).

    p: (L, K) activation probabilities (``capture.activation_probabilities``: per language, the fraction of tokens
    on which a neuron fires). q = p / sum_l p per neuron; entropy H = -sum_l q log q. tau is the round(prob_quantile
    * L * K)-th smallest probability. Of the neurons with some language above tau, the round(K * entropy_quantile)
    with the lowest entropy are language-specific, each assigned to every language whose p exceeds tau.
    """
    p = probs.probs.double().flatten(1)  # (L, K)
    total = p.sum(0, keepdim=True)
    q = torch.where(total > 0, p / total.clamp_min(1e-300), 0.0)
    entropy = -(q * torch.where(q > 0, q.log(), 0.0)).sum(0)  # (K,)
    k = min(max(1, round(p.numel() * prob_quantile)), p.numel())
    tau = float(p.flatten().kthvalue(k).values)  # the k-th smallest, as Tang et al.
    eligible = (p > tau).any(0)
    ranked = torch.where(eligible, entropy, torch.inf)
    n_keep = min(round(p.shape[1] * entropy_quantile), int(eligible.sum()))
    chosen = torch.zeros(p.shape[1], dtype=torch.bool)
    chosen[ranked.argsort(stable=True)[:n_keep]] = True
    mask = (p > tau) & chosen  # (L, K)
    shape = (len(probs.langs), len(probs.layers), -1)
    return LapeRegions(mask.reshape(shape), list(probs.langs), list(probs.layers),
                       entropy.float().reshape(shape[1:]), tau, entropy_quantile)


def lape_overlap(lape_regions: LapeRegions, kr: KeyRegions) -> pd.DataFrame:
    """Per language in both: lang, lape_neurons, key_neurons, shared, jaccard (LAPE vs z-score key region)."""
    df = region_jaccard(kr, lape_regions).rename(columns={"size_a": "key_neurons", "size_b": "lape_neurons"})
    return df[["lang", "lape_neurons", "key_neurons", "shared", "jaccard"]]
