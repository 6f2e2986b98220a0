"""Synthetic labelled activations with planted language and meaning structure (no model needed)."""
from __future__ import annotations

import torch

from lfcore.core import Activations


def planted(n_ids=12, langs=("en", "zh", "fr", "ar"), n_layers=3, width=20, lang_scale=1.0, sem_scale=1.0,
            noise=0.5, seed=0, key_neurons: dict | None = None) -> Activations:
    """Rows = language component + meaning component + noise (non-negative, like GeLU outputs).

    ``key_neurons`` maps a language to flat neuron indices that fire strongly only in that language.
    """
    g = torch.Generator().manual_seed(seed)
    k = n_layers * width
    lang_vec = {l: torch.rand(k, generator=g) for l in langs}
    sem_vec = {i: torch.rand(k, generator=g) for i in range(n_ids)}
    rows, ids, labels = [], [], []
    for l in langs:
        for i in range(n_ids):
            v = lang_scale * lang_vec[l] + sem_scale * sem_vec[i] + noise * torch.rand(k, generator=g)
            for idx in (key_neurons or {}).get(l, []):
                v[idx] += 5.0 + torch.rand(1, generator=g).item()
            rows.append(v)
            ids.append(f"s{i:03d}")
            labels.append(l)
    values = torch.stack(rows).reshape(len(rows), n_layers, width)
    return Activations(values, ids, labels, list(range(n_layers)), torch.full((len(rows),), 10), {"model": "synthetic"})


def shuffled(acts: Activations, seed: int = 1) -> Activations:
    perm = torch.randperm(len(acts.langs), generator=torch.Generator().manual_seed(seed))
    return Activations(acts.values[perm], [acts.sentence_ids[p] for p in perm], [acts.langs[p] for p in perm],
                       acts.layers, acts.token_counts[perm], acts.meta)
