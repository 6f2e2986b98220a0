"""Key linguistic regions (paper section 3.3): contribution scores, z-scores, thresholds, SKLR.

The contribution of neuron k to the mean same-language similarity of language l (eq. 11) is
sum_{i<j} a_i[k] a_j[k] over that language's normalised vectors, computed in closed form as
((sum_i a_i[k])^2 - sum_i a_i[k]^2) / 2: O(n K) instead of O(n^2 K).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import pandas as pd
import torch

from .capture import Activations

NeuronSet = dict[int, torch.Tensor]  # model layer -> neuron indices (long) in that layer


def contribution_scores(acts: Activations) -> tuple[torch.Tensor, list[str]]:
    """Eq. 11 for every language and neuron of the normalised concatenation.

    Returns (scores (n_langs, n_layers*width) float64, languages in row order).
    """
    a = acts.vectors()  # (n, K), unit rows
    langs = acts.languages
    lang_of = torch.tensor([langs.index(l) for l in acts.langs])
    out = torch.empty(len(langs), a.shape[1], dtype=torch.float64)
    for k in range(len(langs)):
        rows = a[lang_of == k]  # (n_l, K)
        total = rows.sum(0, dtype=torch.float64)
        squares = (rows * rows).sum(0, dtype=torch.float64)
        out[k] = (total * total - squares) / 2
    return out, langs


def zscores(scores: torch.Tensor, rel_tol: float = 1e-9) -> tuple[torch.Tensor, torch.Tensor]:
    """Standard scores across languages (eqs. 12-14, population std).

    scores: (n_langs, K). Returns (z (n_langs, K), valid (K,) bool). A neuron whose scores do not vary
    across languages (std <= rel_tol * max |score|, e.g. a dead neuron) gets z = 0 and valid = False:
    it can never be a key neuron.
    """
    mu = scores.mean(0)  # (K,)
    sigma = scores.std(0, unbiased=False)
    valid = sigma > rel_tol * scores.abs().amax(0)
    z = torch.where(valid, (scores - mu) / torch.where(valid, sigma, 1.0), 0.0)
    return z, valid


@dataclass
class KeyRegions:
    """Per-language key neurons. z: (n_langs, n_layers, width); valid: (n_layers, width)."""

    z: torch.Tensor
    valid: torch.Tensor
    langs: list[str]
    layers: list[int]
    threshold: float = 2.0
    meta: dict = field(default_factory=dict)

    @property
    def mask(self) -> torch.Tensor:
        """(n_langs, n_layers, width) bool: neuron is in the language's key region."""
        return (self.z > self.threshold) & self.valid

    @property
    def width(self) -> int:
        return self.z.shape[2]

    @property
    def total_neurons(self) -> int:
        return len(self.layers) * self.width

    def with_threshold(self, threshold: float) -> "KeyRegions":
        return KeyRegions(self.z, self.valid, self.langs, self.layers, threshold, self.meta)

    def _lang(self, lang: str) -> int:
        if lang not in self.langs:
            raise ValueError(f"no key region for language {lang!r}; languages: {self.langs}")
        return self.langs.index(lang)

    def neurons(self, lang: str) -> NeuronSet:
        """The key region of ``lang`` as {model layer: neuron indices}, layers without key neurons omitted."""
        m = self.mask[self._lang(lang)]
        return {layer: m[b].nonzero()[:, 0] for b, layer in enumerate(self.layers) if m[b].any()}

    def sizes(self) -> pd.Series:
        """Key neurons per language (index: language)."""
        return pd.Series(self.mask.sum((1, 2)).tolist(), index=self.langs, name="key_neurons")

    def per_layer(self) -> pd.DataFrame:
        """Key neurons per model layer (rows) and language (columns)."""
        counts = self.mask.sum(2).T  # (n_layers, n_langs)
        return pd.DataFrame(counts.numpy(), index=pd.Index(self.layers, name="layer"), columns=self.langs)

    @property
    def sklr(self) -> int:
        """Size of key linguistic regions: the sum of every language's key-region size."""
        return int(self.mask.sum())

    def summary(self) -> pd.DataFrame:
        """Sizes per language with their share of all neurons, plus an SKLR row."""
        sizes = self.sizes()
        df = pd.DataFrame({"key_neurons": sizes, "percent": 100 * sizes / self.total_neurons})
        df.loc["SKLR"] = [self.sklr, 100 * self.sklr / self.total_neurons]
        return df


def key_regions(acts: Activations, threshold: float = 2.0) -> KeyRegions:
    """Each language's key region: neurons whose contribution z-score exceeds ``threshold`` (paper: 2).

    With L languages and the population std, no z-score can exceed sqrt(L - 1).
    """
    if len(acts.languages) < 2:
        raise ValueError("key regions need at least 2 languages")
    scores, langs = contribution_scores(acts)
    z, valid = zscores(scores)
    n_layers, width = len(acts.layers), acts.width
    return KeyRegions(z.float().reshape(len(langs), n_layers, width), valid.reshape(n_layers, width), langs,
                      list(acts.layers), threshold, dict(acts.meta))


def random_neurons(layers: Sequence[int], width: int, size: int | Sequence[int], seed: int = 0) -> NeuronSet:
    """A random neuron set: ``size`` neurons drawn uniformly over all layers, or, with one size per layer
    (e.g. a key region's per-layer counts), exactly that many in each layer. Seeded and reproducible.
    """
    g = torch.Generator().manual_seed(seed)
    layers = list(layers)
    if isinstance(size, int):
        total = len(layers) * width
        if not 0 <= size <= total:
            raise ValueError(f"cannot draw {size} of {total} neurons")
        flat = torch.randperm(total, generator=g)[:size].sort().values
        per = {layer: flat[(flat // width) == b] % width for b, layer in enumerate(layers)}
    else:
        if len(size) != len(layers) or any(not 0 <= s <= width for s in size):
            raise ValueError(f"need one size in 0..{width} per layer ({len(layers)} layers), got {list(size)}")
        per = {layer: torch.randperm(width, generator=g)[:s].sort().values for layer, s in zip(layers, size)}
    return {layer: idx for layer, idx in per.items() if len(idx)}


def set_size(neurons: NeuronSet) -> int:
    return sum(len(v) for v in neurons.values())
