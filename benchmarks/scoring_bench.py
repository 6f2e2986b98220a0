"""Key-region scoring on BLOOM-7b1 shapes: 9 languages x 100 sentences x (30 x 16,384 = 491,520) neurons.

The activations are synthetic (a language-specific shift on Gaussian noise, fp32, 1.77 GB); the cost of
``regions.contribution_scores`` and ``regions.key_regions`` depends only on the shapes.
"""
from __future__ import annotations

import torch

from lfcore.core import Activations

LANGS = ["en", "zh", "fr", "es", "pt", "ar", "vi", "hi", "id"]


def synthetic(per_lang: int = 100, layers: int = 30, width: int = 16384, seed: int = 0) -> Activations:
    """Rows in corpus order (sentence-major, as ``capture`` returns them); values (n, layers, width) fp32."""
    g = torch.Generator().manual_seed(seed)
    n = per_lang * len(LANGS)
    values = torch.empty(n, layers, width)
    shift = torch.randn(len(LANGS), layers, width, generator=g) * 0.3
    for r in range(n):
        values[r].normal_(generator=g).add_(shift[r % len(LANGS)]).add_(0.2)
    ids = [f"s{r // len(LANGS)}" for r in range(n)]
    langs = [LANGS[r % len(LANGS)] for r in range(n)]
    return Activations(values, ids, langs, list(range(layers)), torch.full((n,), 30), {"model": "synthetic"})


def reference_scores(acts: Activations) -> torch.Tensor:
    """The straightforward closed form: a normalised copy of everything, float64 sums per language."""
    a = acts.vectors()  # (n, K)
    langs = acts.languages
    lang_of = torch.tensor([langs.index(l) for l in acts.langs])
    out = torch.empty(len(langs), a.shape[1], dtype=torch.float64)
    for k in range(len(langs)):
        rows = a[lang_of == k]
        total, squares = rows.sum(0, dtype=torch.float64), (rows * rows).sum(0, dtype=torch.float64)
        out[k] = (total * total - squares) / 2
    return out
