"""Record MLP neurons over a parallel corpus and mean-pool them per sentence (paper eq. 5).

Sentences are tokenised one by one, sorted by length and run in right-padded batches, so a real token
never sees padding (causal attention) and the batch size does not change the result. A forward pre-hook
on each layer's neuron site adds the masked token sum of its input to an fp32 buffer on the model's
device; the full (tokens x neurons) tensor never leaves the hook. The forward pass stops after the last
requested layer's site: no later layer and no LM head (vocabularies of 250k+) is ever computed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import torch
from tqdm.auto import tqdm

from . import cache as cache_mod
from .hooks import input_hooks
from .models import SITE_NAME, LoadedModel, neuron_sites, neuron_width


@dataclass
class Activations:
    """Pooled neuron activations with their labels.

    values: (n_sentences, n_layers, n_neurons) float32, row r is sentence ``sentence_ids[r]`` in
    language ``langs[r]``; block b is model layer ``layers[b]``. token_counts: (n_sentences,) tokens
    pooled per row. meta: model identity, corpus, options. Select rows by label, never by position.
    """

    values: torch.Tensor
    sentence_ids: list[str]
    langs: list[str]
    layers: list[int]
    token_counts: torch.Tensor
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        n, n_layers, _ = self.values.shape
        assert len(self.sentence_ids) == len(self.langs) == len(self.token_counts) == n
        assert len(self.layers) == n_layers
        pairs = list(zip(self.sentence_ids, self.langs))
        if len(set(pairs)) != len(pairs):
            seen, dup = set(), None
            for p in pairs:
                if p in seen:
                    dup = p
                    break
                seen.add(p)
            raise ValueError(f"sentence {dup[0]!r} appears twice in language {dup[1]!r}")

    @property
    def languages(self) -> list[str]:
        """Languages in order of first appearance."""
        return list(dict.fromkeys(self.langs))

    @property
    def ids(self) -> list[str]:
        """Sentence ids in order of first appearance."""
        return list(dict.fromkeys(self.sentence_ids))

    @property
    def width(self) -> int:
        return self.values.shape[2]

    def select(self, langs: Sequence[str] | None = None, ids: Iterable[str] | None = None,
               layers: Sequence[int] | None = None) -> "Activations":
        """A subset by labels: rows whose language is in ``langs`` and id in ``ids``; blocks in ``layers``."""
        for name, wanted, have in (("language", langs, self.languages), ("layer", layers, self.layers)):
            missing = [w for w in (wanted or []) if w not in have]
            if missing:
                raise ValueError(f"{name}(s) {missing} not in these activations (have {have})")
        keep_ids = None if ids is None else set(ids)
        rows = [r for r, (i, l) in enumerate(zip(self.sentence_ids, self.langs))
                if (langs is None or l in langs) and (keep_ids is None or i in keep_ids)]
        blocks = list(range(len(self.layers))) if layers is None else [self.layers.index(l) for l in layers]
        rows_t = torch.tensor(rows, dtype=torch.long)
        return Activations(self.values[rows_t][:, blocks], [self.sentence_ids[r] for r in rows],
                           [self.langs[r] for r in rows], [self.layers[b] for b in blocks],
                           self.token_counts[rows_t], dict(self.meta))

    def vectors(self, layers: Sequence[int] | None = None) -> torch.Tensor:
        """Unit-norm concatenation of the chosen layers' pooled vectors (paper eq. 6): (n, n_layers*width)."""
        x = (self.values if layers is None else self.select(layers=layers).values).flatten(1)  # (n, L*w)
        norms = x.norm(dim=1, keepdim=True)
        if (norms == 0).any():
            r = int((norms[:, 0] == 0).nonzero()[0])
            raise ValueError(f"sentence {self.sentence_ids[r]!r} ({self.langs[r]}) has an all-zero activation vector")
        return x / norms

    def save(self, path: str | Path) -> None:
        """Write ``path.safetensors`` + ``path.json`` atomically (no pickle)."""
        cache_mod.write_entry(path, {"values": self.values, "token_counts": self.token_counts},
                              {**self._labels(), "meta": self.meta})

    @classmethod
    def load(cls, path: str | Path) -> "Activations":
        """Read and verify a saved result."""
        tensors, meta = cache_mod.read_entry(path)
        return cls._from(tensors, meta)

    def _labels(self) -> dict:
        return {"sentence_ids": self.sentence_ids, "langs": self.langs, "layers": self.layers}

    @classmethod
    def _from(cls, tensors: dict, meta: dict) -> "Activations":
        return cls(tensors["values"], meta["sentence_ids"], meta["langs"], meta["layers"],
                   tensors["token_counts"], meta["meta"])


def _pool_weights(ids: list[int], special: set[int], pool_special_tokens: bool, skip_first: bool) -> list[float]:
    w = [1.0 if (pool_special_tokens or t not in special) else 0.0 for t in ids]
    if skip_first:
        first = next((i for i, v in enumerate(w) if v), None)
        if first is not None:
            w[first] = 0.0
    return w


def capture(lm: LoadedModel, corpus, *, layers: Sequence[int] | None = None, batch_size: int = 16,
            pool_special_tokens: bool = False, skip_first: bool = False, max_length: int = 512,
            site: str | None = None, progress: bool = True,
            cache: cache_mod.Store | str | Path | None = None) -> Activations:
    """Mean-pooled neuron activations of every record of ``corpus`` (a ``ParallelCorpus``).

    Special tokens the tokenizer adds (e.g. BOS) are fed to the model but, unless
    ``pool_special_tokens``, are not pooled; ``skip_first`` also drops the first pooled token (the
    attention-sink position that often carries "massive activations"). Sentences longer than
    ``max_length`` tokens are truncated. ``cache`` (a ``Store`` or folder) reuses an identical earlier run.

    Returns ``Activations`` with values (n_records, n_layers, n_neurons) in fp32.
    """
    model, tok = lm.model, lm.tokenizer
    names = neuron_sites(model, site)
    layers = list(range(len(names))) if layers is None else sorted(set(layers))
    bad = [l for l in layers if not 0 <= l < len(names)]
    if bad:
        raise ValueError(f"layers {bad} out of range: {lm.name} has {len(names)} layers (0..{len(names) - 1})")
    width = neuron_width(model, site)
    records = list(corpus)
    if not records:
        raise ValueError("the corpus is empty")
    options = dict(layers=layers, pool_special_tokens=pool_special_tokens, skip_first=skip_first,
                   max_length=max_length, site=site or SITE_NAME, dtype=str(next(model.parameters()).dtype))
    meta = {**lm.meta(), "corpus": getattr(corpus, "name", "corpus"), "corpus_fingerprint": corpus.fingerprint(),
            "options": options}
    store = cache_mod.Store(cache) if isinstance(cache, (str, Path)) else cache
    key = cache_mod.make_key(kind="activations", **meta)
    if store is not None and (hit := store.get("activations", key)) is not None:
        return Activations._from(*hit)

    special = set(tok.all_special_ids)
    encoded = [tok(r.text, truncation=True, max_length=max_length)["input_ids"] for r in records]
    weights = [_pool_weights(ids, special, pool_special_tokens, skip_first) for ids in encoded]
    for r, w in zip(records, weights):
        if not any(w):
            raise ValueError(f"sentence {r.sentence_id!r} ({r.lang}) has no token to pool after removing "
                             f"special tokens{' and the first token' if skip_first else ''}: {r.text!r}")
    order = sorted(range(len(records)), key=lambda i: -len(encoded[i]))  # longest first: fail fast on memory

    device = model.get_input_embeddings().weight.device
    site_modules = [names[l] for l in layers]
    sums = {}  # site name -> (n_records, width) fp32 on that module's device
    state = {}  # rows and pooling weights of the current batch, read by the hooks

    def make_hook(name):
        def hook(x):  # x: (batch, tokens, width)
            if name not in sums:
                if x.shape[-1] != width:
                    raise ValueError(f"{name} input has {x.shape[-1]} features, config says {width}: "
                                     f"check the site for model_type {model.config.model_type!r}")
                sums[name] = torch.zeros(len(records), width, dtype=torch.float32, device=x.device)
            w = state["w"].to(x.device)  # (batch, tokens)
            pooled = torch.einsum("btn,bt->bn", x.float(), w)  # (batch, width)
            sums[name].index_add_(0, state["rows"].to(x.device), pooled)
        return hook

    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    bar = tqdm(total=len(records), desc=f"capture {lm.name}", disable=not progress, unit="sent")
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            t = max(len(encoded[i]) for i in batch)
            ids = torch.full((len(batch), t), pad, dtype=torch.long)  # (batch, tokens), right-padded
            mask = torch.zeros(len(batch), t, dtype=torch.long)
            w = torch.zeros(len(batch), t, dtype=torch.float32)
            for b, i in enumerate(batch):
                ids[b, :len(encoded[i])] = torch.tensor(encoded[i])
                mask[b, :len(encoded[i])] = 1
                w[b, :len(encoded[i])] = torch.tensor(weights[i])
            state.update(rows=torch.tensor(batch), w=w)
            with input_hooks(model, {n: make_hook(n) for n in site_modules}, stop=site_modules[-1]):
                model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False)
            bar.update(len(batch))
    bar.close()

    counts = torch.tensor([sum(w) for w in weights], dtype=torch.float32)
    values = torch.stack([sums[n].cpu() for n in site_modules], dim=1) / counts[:, None, None]  # (n, L, width)
    acts = Activations(values, [r.sentence_id for r in records], [r.lang for r in records], layers,
                       counts.to(torch.int64), meta)
    if store is not None:
        store.put("activations", key, {"values": acts.values, "token_counts": acts.token_counts},
                  {**acts._labels(), "meta": meta})
    return acts
