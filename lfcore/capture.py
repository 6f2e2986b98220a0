"""Record MLP neurons over a parallel corpus and mean-pool them per sentence (paper eq. 5).

Sentences are tokenised (each on its own, in one batched call), sorted by length and run in right-padded
batches (a batch ends early rather than be more than a quarter padding), so a real token never sees
padding (causal attention) and the batch size does not change the result. A forward pre-hook on each
layer's neuron site takes the masked token sum of its input in fp32 on that layer's device; the full
(tokens x neurons) tensor never leaves the hook. The forward pass stops after the last requested layer's
site: no later layer and no LM head (vocabularies of 250k+) is ever computed. Each batch's means go to
the host as one block; on CUDA that copy overlaps the next batch's forward pass. Every block is checked
for inf/nan there (a model overflowing its dtype, e.g. Gemma 3 in float16, fails fast).
"""
from __future__ import annotations

import hashlib
import json
import operator
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import torch
from tqdm.auto import tqdm

from . import cache as cache_mod
from .hooks import input_hooks, module_device
from .models import SITE_NAME, LoadedModel, max_tokens, neuron_sites, neuron_width


@dataclass
class Activations:
    """Pooled neuron activations with their labels.

    values: (n_sentences, n_layers, n_neurons) float32, row r is sentence ``sentence_ids[r]`` in
    language ``langs[r]``; block b is model layer ``layers[b]``. token_counts: (n_sentences,) tokens
    pooled per row. meta: model identity, corpus, options. Select rows by label, never by position.
    Values must be finite: inf or nan raises ``ValueError`` naming the sentence, language and layer.
    """

    values: torch.Tensor
    sentence_ids: list[str]
    langs: list[str]
    layers: list[int]
    token_counts: torch.Tensor
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.values.dim() != 3:
            raise ValueError(f"values must be (sentences, layers, neurons), got shape {tuple(self.values.shape)}")
        n, n_layers, _ = self.values.shape
        if not len(self.sentence_ids) == len(self.langs) == len(self.token_counts) == n:
            raise ValueError(f"{n} rows of values, but {len(self.sentence_ids)} sentence ids, {len(self.langs)} "
                             f"languages and {len(self.token_counts)} token counts: one label of each per row")
        if len(self.layers) != n_layers:
            raise ValueError(f"{n_layers} layer blocks of values, but {len(self.layers)} layer labels {self.layers}")
        pairs = list(zip(self.sentence_ids, self.langs))
        if len(set(pairs)) != len(pairs):
            seen, dup = set(), None
            for p in pairs:
                if p in seen:
                    dup = p
                    break
                seen.add(p)
            raise ValueError(f"sentence {dup[0]!r} appears twice in language {dup[1]!r}")
        _check_finite(self.values, self.sentence_ids, self.langs, self.layers, self.meta)

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
        """A subset by labels: rows whose language is in ``langs`` and id in ``ids``; blocks in ``layers``.

        A lone string for ``langs`` or ``ids`` is one label. An unknown label raises ``ValueError``.
        """
        langs = [langs] if isinstance(langs, str) else langs
        ids = [ids] if isinstance(ids, str) else None if ids is None else list(ids)
        for name, wanted, have in (("language", langs, self.languages), ("sentence id", ids, self.ids),
                                   ("layer", layers, self.layers)):
            known = set(have)
            missing = [w for w in (wanted or []) if w not in known]
            if missing:
                shown = have if len(have) <= 20 else [*have[:20], f"... {len(have)} in all"]
                raise ValueError(f"{name}(s) {missing[:20]} not in these activations (have {shown})")
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
        norms = x.norm(dim=1, keepdim=True)  # (n, 1)
        self.check_nonzero(norms[:, 0])
        return x / norms

    def check_nonzero(self, norms: torch.Tensor) -> None:
        """Raise ``ValueError`` naming the first sentence whose norm is 0, inf or nan: norms (n,) of whole rows,
        or (n, n_layers) of each layer's block (the message then names the layer too). Every metric calls
        this on the norms it needs anyway, so values edited after construction are checked at use for free."""
        bad = ~torch.isfinite(norms)
        if bad.any():
            r, *b = bad.nonzero()[0].tolist()
            where = f" in layer {self.layers[b[0]]}" if b else ""
            raise ValueError(f"sentence {self.sentence_ids[r]!r} ({self.langs[r]}) has inf or nan activations"
                             f"{where} (values changed after the Activations was built, which checked them): "
                             f"no score is computed from them; recapture, or fix the code that edited .values")
        if (norms == 0).any():
            r, *b = (norms == 0).nonzero()[0].tolist()
            where = f" in layer {self.layers[b[0]]}" if b else ""
            raise ValueError(f"sentence {self.sentence_ids[r]!r} ({self.langs[r]}) has an all-zero activation "
                             f"vector{where}")

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


def _check_finite(values: torch.Tensor, sentence_ids: list[str], langs: list[str], layers: list[int],
                 meta: dict) -> None:
    """Raise ``ValueError`` naming the first sentence, language and layer whose values are inf or nan.

    values: (n, n_layers, width), row r labelled ``sentence_ids[r]``/``langs[r]``, block b ``layers[b]``;
    meta: the model's identity (``LoadedModel.meta()``), named in the message when present. The total is
    checked first; the offender is located only when it is not finite (an overflowed total passes).
    """
    if torch.isfinite(values.sum()):
        return
    bad = (~torch.isfinite(values)).any(dim=2).nonzero()  # (k, 2): row, block
    if len(bad) == 0:
        return
    r, b = bad[0].tolist()
    model = f"{meta['model']} ({meta.get('model_type')}, {meta.get('dtype')}): " if "model" in meta else ""
    raise ValueError(f"{model}sentence {sentence_ids[r]!r} ({langs[r]}) has inf or nan activations at layer "
                     f"{layers[b]}: the model overflowed its dtype (float16 does in e.g. Gemma 3). "
                     f"Load it with dtype='bfloat16' or 'float32'.")


def _pool_weights(ids: list[int], special: set[int], pool_special_tokens: bool, skip_first: bool) -> list[float]:
    w = [1.0 if (pool_special_tokens or t not in special) else 0.0 for t in ids]
    if skip_first:
        first = next((i for i, v in enumerate(w) if v), None)
        if first is not None:
            w[first] = 0.0
    return w


def tokenize(tok, records, max_length: int, pool_special_tokens: bool, skip_first: bool,
             add_special_tokens: bool = True):
    """Token ids and pooling weights (1.0 = pooled) of every record, one batched tokenizer call.

    Usage: ``encoded, weights = tokenize(tok, records, 512, False, False)``: two lists of per-record lists.
    Special tokens the tokenizer adds (``add_special_tokens``, e.g. BOS) are fed but get weight 0 unless
    ``pool_special_tokens``; with ``add_special_tokens=False`` only the text's own tokens are fed (the
    authors' protocol) and the first of them is pooled. ``skip_first`` also zeroes the first pooled token.
    Raises ``ValueError`` naming a record that has nothing left to pool; warns naming how many sentences of
    which languages were cut at ``max_length`` (their means cover only the first tokens).
    """
    special = set(tok.all_special_ids)
    encoded = tok([r.text for r in records], truncation=True, max_length=max_length,
                  add_special_tokens=add_special_tokens)["input_ids"]
    full = [i for i, e in enumerate(encoded) if len(e) >= max_length]  # only these can have been cut
    if full:
        lengths = [len(e) for e in tok([records[i].text for i in full],
                                       add_special_tokens=add_special_tokens)["input_ids"]]
        cut = Counter(records[i].lang for i, n in zip(full, lengths) if n > max_length)
        if cut:
            warnings.warn(f"{sum(cut.values())} sentence(s) were cut at max_length={max_length} tokens ("
                          f"{', '.join(f'{lang}: {k}' for lang, k in cut.items())}): their means cover only their "
                          f"first {max_length} tokens; raise capture.max_length (up to the model's position limit) to "
                          f"pool whole sentences",
                          stacklevel=3)
    weights = [_pool_weights(ids, special, pool_special_tokens, skip_first) for ids in encoded]
    for r, w in zip(records, weights):
        if not any(w):
            raise ValueError(f"sentence {r.sentence_id!r} ({r.lang}) has no token to pool after removing "
                             f"special tokens{' and the first token' if skip_first else ''}: {r.text!r}")
    return encoded, weights


def padded_batches(encoded: list[list[int]], weights: list[list[float]], batch_size: int, pad: int | None):
    """Length-sorted (longest first: fail fast on memory), right-padded batches.

    Yields (rows, ids (batch, tokens), attention mask (batch, tokens), pooling weights (batch, tokens)),
    ``rows`` being the indices into ``encoded``. A real token never sees padding (causal attention).
    """
    pad = 0 if pad is None else pad
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
    for batch in _length_batches(order, [len(e) for e in encoded], batch_size):
        t = len(encoded[batch[0]])  # the longest: sorted
        ids = torch.tensor([encoded[i] + [pad] * (t - len(encoded[i])) for i in batch])  # (batch, tokens)
        mask = torch.tensor([[1] * len(encoded[i]) + [0] * (t - len(encoded[i])) for i in batch])
        w = torch.tensor([weights[i] + [0.0] * (t - len(weights[i])) for i in batch])  # right-padded
        yield batch, ids, mask, w


def _length_batches(order: list[int], lengths: list[int], batch_size: int, max_padding: float = 0.25) -> list[list[int]]:
    """Rows sorted longest first, cut into batches of at most ``batch_size`` that pad at most ``max_padding``
    of their tokens (a long tail of lengths gets smaller batches instead of mostly padding)."""
    batches, current, real = [], [], 0
    for i in order:
        if current:
            n, longest = len(current) + 1, lengths[current[0]]
            if n > batch_size or n * longest - (real + lengths[i]) > max_padding * n * longest:
                batches.append(current)
                current, real = [], 0
        current.append(i)
        real += lengths[i]
    if current:
        batches.append(current)
    return batches


def per_token(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """A site input as (batch, tokens, width): OPT's layers flatten it to (batch*tokens, width) first.
    w: the batch's (batch, tokens) pooling weights, whose shape it takes."""
    return x.view(*w.shape, x.shape[-1]) if x.dim() == 2 else x


def _pool(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Weighted token sum in fp32: x (batch, tokens, width), w (batch, tokens) of 0/1 -> (batch, width).

    fp32 input: one batched matrix product. Half precision: the 0/1 weights make ``x * w`` exact, and the
    sum accumulates in fp32 (on CUDA it reads bf16 directly, never materialising an fp32 copy of x).
    No copy of x is masked first (that would cost a pass over every layer's input): an inf or nan at an
    unpooled position still reaches the sum, and the finite check of the batch names the sentence. A model
    whose unpooled positions overflow (float16 at a BOS attention sink) has overflowed for the rest too.
    """
    if x.dtype == torch.float32:
        return torch.bmm(w.unsqueeze(1), x).squeeze(1)  # (batch, 1, tokens) @ (batch, tokens, width)
    return (x * w.to(x.dtype).unsqueeze(-1)).sum(1, dtype=torch.float32)


def _to(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host tensor to ``device``; to CUDA from pinned memory without blocking the host."""
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def _stack(pooled: list[torch.Tensor]) -> torch.Tensor:
    """Per-layer (batch, width) tensors -> (batch, L, width) on their common device, else on the CPU."""
    devices = {p.device for p in pooled}
    if len(devices) > 1:  # device_map over several devices
        pooled = [p.cpu() for p in pooled]
    return torch.stack(pooled, dim=1)


class _HostWriter:
    """Writes each batch's block of means (batch, L, width) into rows of the CPU result ``out``.

    A CPU block is copied at once. A CUDA block goes without blocking into one of two pinned staging
    buffers and is scattered into ``out`` at the next ``put`` (or ``flush``), so the transfer and the
    scatter overlap the next batch's forward pass instead of adding a copy of the whole result at the end.
    """

    def __init__(self, out: torch.Tensor, batch_size: int):
        self.out, self.batch_size = out, batch_size
        self.staging: list[torch.Tensor] = []
        self.pending: tuple | None = None
        self.count = 0

    def put(self, rows: list[int], block: torch.Tensor) -> list[int]:
        """Queue ``block`` for ``rows``; return the rows now written to ``out`` (on CUDA: the previous batch's)."""
        if block.device.type != "cuda":
            self.out.index_copy_(0, torch.tensor(rows), block)
            return rows
        if not self.staging:
            shape = (self.batch_size, *block.shape[1:])
            self.staging = [torch.empty(shape, pin_memory=True) for _ in range(2)]
        buf = self.staging[self.count % 2][:len(rows)]  # free: its previous batch was flushed at the last put
        self.count += 1
        buf.copy_(block, non_blocking=True)
        done = torch.cuda.Event()
        done.record(torch.cuda.current_stream(block.device))  # after the block was computed and copied
        written = self.flush()
        self.pending = (rows, buf, done)
        return written

    def flush(self) -> list[int]:
        """Write the pending block, if any, to ``out``; return its rows."""
        if self.pending is None:
            return []
        rows, buf, done = self.pending
        done.synchronize()
        self.out.index_copy_(0, torch.tensor(rows), buf)
        self.pending = None
        return rows


def select_sites(lm: LoadedModel, layers: Sequence[int] | None, site: str | None) -> tuple[list[int], list[str], int]:
    """The layers to hook (default: all; else sorted Python ints, checked in range), their site module paths
    and the neuron width. Numpy and torch integers are accepted; bools, floats and an empty list raise."""
    names = neuron_sites(lm.model, site)
    if layers is None:
        layers = range(len(names))
    elif len(layers) == 0:
        raise ValueError("layers=[] selects no layer: pass None for all layers or a list of layer indices")
    layers = sorted({_layer_index(l) for l in layers})
    bad = [l for l in layers if not 0 <= l < len(names)]
    if bad:
        raise ValueError(f"layers {bad} out of range: {lm.name} has {len(names)} layers (0..{len(names) - 1})")
    return layers, [names[l] for l in layers], neuron_width(lm.model, site)


def _layer_index(layer) -> int:
    if isinstance(layer, bool) or getattr(layer, "dtype", None) == torch.bool:
        raise ValueError(f"layer {layer!r} is a bool, not a layer index (for a mask pass mask.nonzero().flatten())")
    try:
        return operator.index(layer)
    except TypeError:
        raise ValueError(f"layer {layer!r} ({type(layer).__name__}) is not an integer layer index") from None


def _model_hooks(model) -> list[str]:
    """Dotted paths of the modules of ``model`` that have forward hooks or forward pre-hooks."""
    return [name or "<model>" for name, m in model.named_modules() if m._forward_hooks or m._forward_pre_hooks]


def capture(lm: LoadedModel, corpus, *, layers: Sequence[int] | None = None, batch_size: int = 16,
            pool_special_tokens: bool = False, skip_first: bool = False, max_length: int = 512,
            site: str | None = None, progress: bool = True, add_special_tokens: bool = True,
            cache: cache_mod.Store | str | Path | None = None) -> Activations:
    """Mean-pooled neuron activations of every record of ``corpus`` (a ``ParallelCorpus``).

    Special tokens the tokenizer adds (e.g. BOS) are fed to the model but, unless
    ``pool_special_tokens``, are not pooled; ``add_special_tokens=False`` feeds the text's tokens only and
    pools the first of them (the authors' protocol). ``skip_first`` also drops the first pooled token (the
    attention-sink position that often carries "massive activations"). Sentences are truncated to
    ``max_length`` tokens, or to the model's position limit (``models.max_tokens``) if that is smaller;
    ``meta["options"]["max_length"]`` records the value used. ``cache`` (a ``Store`` or folder) reuses an
    identical earlier run: the key covers the model (with dtype), the token ids and pooling weights, and the
    options. A cached capture refuses a model that already carries hooks (e.g. inside ``deactivate``).

    Returns ``Activations`` with values (n_records, n_layers, n_neurons) in fp32. Raises ``ValueError`` if
    any pooled value is inf or nan (the model overflowed its dtype).
    """
    model, tok = lm.model, lm.tokenizer
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    site = site or lm.site
    layers, site_modules, width = select_sites(lm, layers, site)
    records = list(corpus)
    if not records:
        raise ValueError("the corpus is empty")
    store = cache_mod.Store(cache) if isinstance(cache, (str, Path)) else cache
    if store is not None and (hooked := _model_hooks(model)):
        raise ValueError(f"capture(cache=...) of {lm.name}: module {hooked[0]!r} already has forward hooks (e.g. "
                         f"inside deactivate(...)), and a cached capture cannot describe hooks already on the "
                         f"model. Pass cache=None here.")
    max_length = max_tokens(model, max_length)
    encoded, weights = tokenize(tok, records, max_length, pool_special_tokens, skip_first, add_special_tokens)
    options = dict(layers=layers, pool_special_tokens=pool_special_tokens, skip_first=skip_first,
                   max_length=max_length, site=site or SITE_NAME, add_special_tokens=add_special_tokens)
    tokens = hashlib.sha256(json.dumps([encoded, weights]).encode()).hexdigest()[:24]  # exactly what is fed
    meta = {**lm.meta(), "corpus": getattr(corpus, "name", "corpus"), "corpus_fingerprint": corpus.fingerprint(),
            "tokens": tokens, "options": options}
    key = cache_mod.make_key(kind="activations", **meta)
    if store is not None and (hit := store.get("activations", key)) is not None:
        return Activations._from(*hit)
    if store is not None:
        store.check_writable("activations")  # before the forward passes, not after them

    device = module_device(model.get_input_embeddings())
    values = torch.empty(len(records), len(layers), width)  # (n, L, width) fp32 means, filled batch by batch
    writer = _HostWriter(values, batch_size)
    pooled: list[torch.Tensor | None] = [None] * len(layers)  # this batch's (batch, width) fp32 sums per layer
    weights_on: dict[torch.device, torch.Tensor] = {}  # this batch's pooling weights (batch, tokens) per device

    def make_hook(j, name):
        def hook(x):  # x: (batch, tokens, width), or (batch*tokens, width) where the layer flattens it (OPT)
            if x.shape[-1] != width:
                raise ValueError(f"{name} input has {x.shape[-1]} features, config says {width}: "
                                 f"check the site for model_type {model.config.model_type!r}")
            if x.device not in weights_on:  # device_map: a layer on another device
                weights_on[x.device] = next(iter(weights_on.values())).to(x.device)
            w = weights_on[x.device]  # (batch, tokens)
            pooled[j] = _pool(per_token(x, w), w)  # (batch, width) fp32
        return hook

    hooks = input_hooks(model, {n: make_hook(j, n) for j, n in enumerate(site_modules)}, stop=site_modules[-1])
    bar = tqdm(total=len(records), desc=f"capture {lm.name}", disable=not progress, unit="sent")
    sentence_ids, langs = [r.sentence_id for r in records], [r.lang for r in records]

    def check(rows: list[int]) -> None:  # rows just written to the host
        _check_finite(values[torch.tensor(rows, dtype=torch.long)], [sentence_ids[r] for r in rows],
                     [langs[r] for r in rows], layers, meta)

    with torch.inference_mode():
        for batch, ids, mask, w in padded_batches(encoded, weights, batch_size, tok.pad_token_id):
            weights_on.clear()
            weights_on[device] = _to(w, device)
            pooled[:] = [None] * len(layers)
            with hooks:
                model(input_ids=_to(ids, device), attention_mask=_to(mask, device), use_cache=False)
            missed = [n for n, p in zip(site_modules, pooled) if p is None]
            if missed:
                raise RuntimeError(f"the hook on {missed[0]!r} never ran: this "
                                   f"{model.config.model_type!r} model computes that layer without calling the "
                                   f"module, so its input cannot be read there; pass site= naming a module it calls")
            block = _stack(pooled)  # (batch, L, width) fp32 sums
            block.div_(weights_on[device].sum(1).to(block.device)[:, None, None])  # means
            check(writer.put(batch, block))  # on CUDA: copied to the host while the next batch runs
            bar.update(len(batch))
        check(writer.flush())
    bar.close()
    pooled.clear()
    weights_on.clear()

    counts = torch.tensor([sum(w) for w in weights], dtype=torch.float32)
    acts = Activations(values, sentence_ids, langs, layers, counts.to(torch.int64), meta)
    if store is not None:
        store.put("activations", key, {"values": acts.values, "token_counts": acts.token_counts},
                  {**acts._labels(), "meta": meta})
    return acts
