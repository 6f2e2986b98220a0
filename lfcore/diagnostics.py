"""Dominant-neuron layers ("massive activations", Sun et al. 2024) and what LRDS/SADS look like without them.

When the same few neurons hold a share s of every sentence vector of a layer, each cosine is about
s + (1 - s) * (cosine of the rest): the layer's map is near 1 and its LRDS and SADS shrink by about (1 - s).
``dominance`` flags such layers, ``exclude_dominant`` zeroes their dominant neurons, and ``exclusion_table`` and
``compare_pooling`` put the layer-wise scores side by side.
"""
from __future__ import annotations

from typing import Sequence

import pandas as pd
import torch

from .core import Activations
from .metrics import layer_maps, layerwise

DEFAULT_K = 5
DEFAULT_SHARE = 0.5  # a layer is dominated when its top-5 neurons hold > 50% of the squared norm


def _top(acts: Activations, block: int, k: int):
    """topk of one layer block's neurons by their share of a sentence's squared norm, averaged over sentences."""
    if not 1 <= k <= acts.width:
        raise ValueError(f"k must be in 1..{acts.width}, got {k}")
    sq = acts.values[:, block].double() ** 2  # (n, width); one layer at a time keeps big models in memory
    return (sq / sq.sum(1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)).mean(0).topk(k)


def topk_share(acts: Activations, k: int) -> torch.Tensor:
    """Share of the squared norm held by each layer's k dominant neurons (``dominant_neurons``), averaged over
    sentences: (n_layers,) fp64. This is the share that ``exclude_dominant(acts, k)`` removes."""
    return torch.stack([_top(acts, b, k).values.sum() for b in range(len(acts.layers))])


def mean_cosine(acts: Activations) -> torch.Tensor:
    """Mean off-diagonal cosine of each layer's own map: (n_layers,)."""
    maps = layer_maps(acts)  # (L, n, n) float64
    n = maps.shape[1]
    return (maps.sum((1, 2)) - torch.diagonal(maps, dim1=1, dim2=2).sum(1)) / (n * (n - 1))


def dominance(acts: Activations, ks: Sequence[int] = (1, DEFAULT_K), threshold: float = DEFAULT_SHARE,
              flag_k: int = DEFAULT_K) -> pd.DataFrame:
    """Per layer: squared-norm shares of the dominant neurons, mean off-diagonal cosine, and a dominance flag.

    Columns: layer, ``top{k}_share`` for each k in ``ks`` and ``flag_k``, mean_cosine, dominant (top-``flag_k``
    share > ``threshold``: the set ``exclude_dominant`` zeroes, so a layer where each sentence has its own large
    neuron is not flagged). ``attrs["neurons"]``: ``dominant_neurons(acts, flag_k)``.
    """
    df = pd.DataFrame({"layer": acts.layers})
    for k in sorted(set(ks) | {flag_k}):
        df[f"top{k}_share"] = topk_share(acts, k).numpy()
    df["mean_cosine"] = mean_cosine(acts).numpy()
    df["dominant"] = df[f"top{flag_k}_share"] > threshold
    df.attrs.update({"threshold": threshold, "flag_k": flag_k,
                     "neurons": {l: v.tolist() for l, v in dominant_neurons(acts, flag_k).items()}})
    return df


def dominant_neurons(acts: Activations, k: int = DEFAULT_K, layers: Sequence[int] | None = None
                     ) -> dict[int, torch.Tensor]:
    """The k neurons of each layer with the largest mean squared-norm share: {layer: LongTensor (k,)}, a neuron
    set as ``deactivate`` and ``regions`` take; ``layers`` limits it (default: all)."""
    layers = list(acts.layers if layers is None else layers)
    missing = [l for l in layers if l not in acts.layers]
    if missing:
        raise ValueError(f"layer(s) {missing} not in these activations (have {acts.layers})")
    return {l: _top(acts, acts.layers.index(l), k).indices.sort().values for l in layers}


def exclude_dominant(acts: Activations, k: int = DEFAULT_K, layers: Sequence[int] | None = None) -> Activations:
    """A copy of ``acts`` with each layer's ``k`` dominant neurons zeroed (``layers``: which, default all).
    Shapes and labels are unchanged; ``meta["excluded_neurons"]`` records {layer: [indices]}."""
    neurons = dominant_neurons(acts, k, layers)
    values = acts.values.clone()
    for layer, idx in neurons.items():
        values[:, acts.layers.index(layer), idx] = 0.0
    meta = {**acts.meta, "excluded_neurons": {l: v.tolist() for l, v in neurons.items()}}
    return Activations(values, list(acts.sentence_ids), list(acts.langs), list(acts.layers),
                       acts.token_counts.clone(), meta)


def exclusion_table(acts: Activations, k: int = DEFAULT_K, threshold: float = DEFAULT_SHARE) -> pd.DataFrame:
    """Layer-wise LRDS/SADS with all neurons and with each layer's ``k`` dominant neurons zeroed.

    Columns: layer, ``top{k}_share``, mean_cosine, dominant (share > ``threshold``), lrds, sads,
    mean_cosine_excluded, lrds_excluded, sads_excluded.
    """
    excluded = exclude_dominant(acts, k)
    dom = dominance(acts, ks=(k,), threshold=threshold, flag_k=k)
    df = dom.merge(layerwise(acts), on="layer")
    df["mean_cosine_excluded"] = mean_cosine(excluded).numpy()
    df = df.merge(layerwise(excluded).rename(columns={"lrds": "lrds_excluded", "sads": "sads_excluded"}), on="layer")
    df.attrs.update(dom.attrs)
    return df


def compare_pooling(a: Activations, b: Activations, names: Sequence[str] = ("all_tokens", "skip_first"),
                    k: int = DEFAULT_K) -> pd.DataFrame:
    """Layer-wise LRDS, SADS, mean cosine and top-k share of two poolings of one corpus, side by side.

    ``a``, ``b``: captures of the same sentences and layers, e.g. ``capture(...)`` and ``capture(...,
    skip_first=True)``; rows are matched by label. Columns: layer, then ``{metric}_{name}`` per metric and name.
    """
    if len(names) != 2 or names[0] == names[1]:
        raise ValueError(f"names must be two different strings, got {names!r}")
    if set(zip(a.sentence_ids, a.langs)) != set(zip(b.sentence_ids, b.langs)) or a.layers != b.layers:
        raise ValueError("the two captures must cover the same (sentence id, language) rows and the same layers")
    frames = []
    for acts, name in zip((a, b), names):
        df = layerwise(acts)
        df["mean_cosine"] = mean_cosine(acts).numpy()
        df[f"top{k}_share"] = topk_share(acts, k).numpy()
        frames.append(df.rename(columns={c: f"{c}_{name}" for c in df.columns if c != "layer"}))
    return frames[0].merge(frames[1], on="layer")
