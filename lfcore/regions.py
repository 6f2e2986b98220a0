"""Key linguistic regions (paper section 3.3): contribution scores, z-scores, thresholds, SKLR.

The contribution of neuron k to the mean same-language similarity of language l (eq. 11) is
sum_{i<j} a_i[k] a_j[k] over that language's normalised vectors, computed in closed form as
((sum_i a_i[k])^2 - sum_i a_i[k]^2) / 2: O(n K) instead of O(n^2 K).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Sequence

import pandas as pd
import torch

from .core import Activations, NeuronSet, mask_to_set


def contribution_scores(acts: Activations, chunk_elements: int = 1 << 19,
                        epsilon: float = 0.0) -> tuple[torch.Tensor, list[str]]:
    """Eq. 11 for every language and neuron of the normalised concatenation.

    Usage: ``scores, langs = contribution_scores(acts)``. Returns (scores (n_langs, n_layers*width) float64,
    languages in row order). ``epsilon`` is added to every normalised value a_i[k] first (the authors' code,
    run.py ``find_max_average_neurons``, adds 1e-5; the exactness below then holds up to that addition).

    Column blocks of about ``chunk_elements`` values are normalised in fp32 (the entries a_i[k] of ``vectors()``)
    into a float64 buffer, where each language's s1 = sum_i a_i[k] and s2 = sum_i a_i[k]^2 are taken (an fp32
    value squared is exact). The only error left is float64 rounding (about 1e-16 of s1^2), far below the
    zero-variance guard of ``zscores``: languages holding the same values get the same scores, and a neuron that
    fires in one sentence per language scores exactly 0. No (n, n_layers*width) copy is made.
    """
    x = acts.values.flatten(1)  # (n, K) view, fp32
    norms = x.norm(dim=1)  # (n,)
    acts.check_nonzero(norms)
    langs = acts.languages
    (n, K), n_langs = x.shape, len(langs)
    lang_of = torch.tensor([langs.index(l) for l in acts.langs])
    counts = torch.bincount(lang_of, minlength=n_langs)
    per = n // n_langs
    layout = None  # a layout the language sums can read as a view: (lang, sentence) blocks or (sentence, lang)
    if bool((counts == per).all()):
        if bool((lang_of == torch.arange(n) // per).all()):
            layout = ((n_langs, per), 1)  # unflatten rows to (lang, sentence), sum over dim 1
        elif bool((lang_of == torch.arange(n) % n_langs).all()):
            layout = ((per, n_langs), 0)  # (sentence, lang), sum over dim 0
    order = torch.argsort(lang_of, stable=True)  # otherwise: gather rows into language blocks
    norm_col = (norms if layout else norms[order])[:, None]  # (n, 1), rows in the order the block is read

    def language_sums(t: torch.Tensor, out: torch.Tensor) -> None:  # (n, w) -> out (n_langs, w)
        if layout:
            torch.sum(t.unflatten(0, layout[0]), layout[1], out=out)
        else:
            for k, rows in enumerate(t.split(counts.tolist())):
                torch.sum(rows, 0, out=out[k])

    step = min(K, max(64, chunk_elements // max(n, 1)))
    a_buf = torch.empty(n, step, dtype=torch.float64)
    rows_buf = None if layout else torch.empty(n, step, dtype=x.dtype)
    s1_buf, s2_buf = torch.empty(2, n_langs, step, dtype=torch.float64)
    out = torch.empty(n_langs, K, dtype=torch.float64)
    for start in range(0, K, step):
        w = min(step, K - start)
        a, s1, s2 = a_buf[:, :w], s1_buf[:, :w], s2_buf[:, :w]  # (n, w), (n_langs, w), (n_langs, w)
        block = x[:, start:start + w]  # (n, w) fp32
        if not layout:
            block = torch.index_select(block, 0, order, out=rows_buf[:, :w])
        torch.div(block, norm_col, out=a)  # a_i[k]: divided in fp32 as in vectors(), held exactly in float64
        if epsilon:
            a.add_(epsilon)
        language_sums(a, s1)  # sum_i a_i[k]
        language_sums(a.mul_(a), s2)  # sum_i a_i[k]^2
        torch.mul(s1, s1, out=out[:, start:start + w]).sub_(s2).mul_(0.5)  # (s1^2 - s2) / 2
    return out, langs


def zscores(scores: torch.Tensor, rel_tol: float = 1e-9) -> tuple[torch.Tensor, torch.Tensor]:
    """Standard scores across languages (eqs. 12-14, population std).

    scores: (n_langs, K). Returns (z (n_langs, K), valid (K,) bool). A neuron whose scores do not vary
    across languages (std <= rel_tol * max |score|, e.g. a dead neuron) gets z = 0 and valid = False:
    it can never be a key neuron. ``contribution_scores`` sums in float64, so equal scores differ by
    about 1e-16 at most, well below the default ``rel_tol``.
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
        return replace(self, threshold=threshold)

    def neurons(self, lang: str) -> NeuronSet:
        """The key region of ``lang`` as {model layer: neuron indices}, layers without key neurons omitted."""
        if lang not in self.langs:
            raise ValueError(f"no key region for language {lang!r}; languages: {self.langs}")
        return mask_to_set(self.mask[self.langs.index(lang)], self.layers)

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


def max_zscore(n_langs: int) -> float:
    """The largest z-score (population std) any neuron can reach with ``n_langs`` languages: sqrt(L - 1).

    Proof: the L z-scores sum to 0 and their squares to L, so the other L-1 sum to -z_1 and, by Cauchy-Schwarz,
    their squares are at least z_1^2 / (L-1); hence z_1^2 (1 + 1/(L-1)) <= L, i.e. z_1 <= sqrt(L - 1).
    """
    return math.sqrt(n_langs - 1)


def check_threshold(threshold: float, n_langs: int, where: str = "threshold") -> None:
    """Raise ``ValueError`` unless some z-score can exceed ``threshold`` with ``n_langs`` languages
    (``max_zscore``); a threshold at or above it gives empty key regions that look like a finding.
    ``where`` names the parameter in the message. Usage: ``check_threshold(2.0, len(langs))``."""
    if not math.isfinite(threshold):
        raise ValueError(f"{where}: {threshold!r} is not a finite number; the paper uses 2.0")
    top = max_zscore(n_langs)
    if threshold >= top:
        raise ValueError(f"{where}: {threshold:g} can never be exceeded with {n_langs} languages: the largest "
                         f"z-score (population std) is sqrt({n_langs} - 1) = {top:.3f}, so every key region would "
                         f"be empty. Use a threshold below {top:.3f}, e.g. {math.floor(7.5 * top) / 10:g}, "
                         f"or more languages (the paper's 2.0 needs at least 6).")


def key_regions(acts: Activations, threshold: float = 2.0, epsilon: float = 0.0) -> KeyRegions:
    """Each language's key region: neurons whose contribution z-score exceeds ``threshold`` (paper: 2).

    Usage: ``key_regions(acts, 2.0).neurons("en")``. ``epsilon``: added to every normalised value first
    (``contribution_scores``; the authors' code: 1e-5). Raises ``ValueError`` for a threshold no z-score can
    exceed with L languages (sqrt(L - 1), ``check_threshold``) and for a language with fewer than 2 sentences
    (eq. 11 sums over pairs of a language's sentences, so one sentence scores 0 everywhere).
    """
    if len(acts.languages) < 2:
        raise ValueError("key regions need at least 2 languages")
    check_threshold(threshold, len(acts.languages))
    single = [lang for lang in acts.languages if acts.langs.count(lang) < 2]
    if single:
        raise ValueError(f"key regions need at least 2 sentences per language (eq. 11 sums over pairs of a "
                         f"language's sentences); {single} have 1. Select more sentences (corpus.select(langs, n))")
    if epsilon < 0:
        raise ValueError(f"epsilon={epsilon} must be >= 0 (the authors' code adds 1e-5; lfcore's default is 0)")
    scores, langs = contribution_scores(acts, epsilon=epsilon)
    z, valid = zscores(scores)
    shape = (len(acts.layers), acts.width)
    return KeyRegions(z.float().reshape(len(langs), *shape), valid.reshape(shape), langs, list(acts.layers),
                      threshold, {**acts.meta, "epsilon": epsilon})


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

