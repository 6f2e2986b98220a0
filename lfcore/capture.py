"""Record MLP neurons over a parallel corpus and mean-pool them per sentence (paper eq. 5).

Length-sorted right-padded batches (a real token never sees padding, so batch size does not change the result) run
only up to the last requested site (no LM head); a forward pre-hook on each site takes the masked token sum of its
input in fp32, so the (tokens x neurons) tensor never leaves the hook. Means are checked for inf/nan on the host.
"""
from __future__ import annotations

import hashlib
import json
import warnings
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Sequence

import torch
from tqdm.auto import tqdm

from .cache import Cache, code_key
from .core import ActivationProbs, Activations, check_finite, layer_index
from .hooks import input_hooks, module_device
from .models import SITE_NAME, LoadedModel, firing_sites, max_tokens, neuron_sites, neuron_width


def tokenize(tok, records, max_length: int, pool_special_tokens: bool, skip_first: bool,
             add_special_tokens: bool = True):
    """Token ids and pooling weights (1.0 = pooled) of every record, one batched tokenizer call.

    Usage: ``encoded, weights = tokenize(tok, records, 512, False, False)``, two lists of per-record lists. Added
    special tokens (e.g. BOS; none with ``add_special_tokens=False``, the authors' protocol) are fed but weigh 0
    unless ``pool_special_tokens``; ``skip_first`` also zeroes the first pooled token. Raises ``ValueError`` on an
    empty corpus or a record with nothing left to pool; warns naming per language the sentences cut at ``max_length``.
    """
    if not records:
        raise ValueError("the corpus is empty")
    special = set(tok.all_special_ids)
    encoded = tok([r.text for r in records], truncation=True, max_length=max_length,
                  add_special_tokens=add_special_tokens)["input_ids"]
    full = [i for i, e in enumerate(encoded) if len(e) >= max_length]  # only these can have been cut
    whole = tok([records[i].text for i in full], add_special_tokens=add_special_tokens)["input_ids"] if full else []
    cut = Counter(records[i].lang for i, e in zip(full, whole) if len(e) > max_length)
    if cut:
        warnings.warn(f"{sum(cut.values())} sentence(s) were cut at max_length={max_length} tokens ("
                      f"{', '.join(f'{lang}: {k}' for lang, k in cut.items())}): their means cover only their first "
                      f"{max_length} tokens; raise capture.max_length (up to the model's position limit) to pool "
                      f"whole sentences", stacklevel=3)
    weights = []
    for r, ids in zip(records, encoded):
        w = [1.0 if pool_special_tokens or t not in special else 0.0 for t in ids]
        if skip_first and any(w):
            w[w.index(1.0)] = 0.0
        if not any(w):
            raise ValueError(f"sentence {r.sentence_id!r} ({r.lang}) has no token to pool after removing "
                             f"special tokens{' and the first token' if skip_first else ''}: {r.text!r}")
        weights.append(w)
    return encoded, weights


def padded_batches(encoded: list[list[int]], weights: list[list[float]], batch_size: int, pad: int | None):
    """Length-sorted (longest first: fail fast on memory), right-padded batches of (rows: indices into ``encoded``,
    ids, attention mask, pooling weights), each tensor (batch, tokens)."""
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
    for batch in _length_batches(order, [len(e) for e in encoded], batch_size):
        t = len(encoded[batch[0]])  # the longest: sorted
        ids = torch.tensor([encoded[i] + [pad or 0] * (t - len(encoded[i])) for i in batch])  # (batch, tokens)
        mask = torch.tensor([[1] * len(encoded[i]) + [0] * (t - len(encoded[i])) for i in batch])
        w = torch.tensor([weights[i] + [0.0] * (t - len(weights[i])) for i in batch])  # right-padded
        yield batch, ids, mask, w


def _length_batches(order: list[int], lengths: list[int], batch_size: int,
                    max_padding: float = 0.25) -> list[list[int]]:
    """Rows sorted longest first, cut into batches of at most ``batch_size`` that pad at most ``max_padding``
    of their tokens (a long tail of lengths gets smaller batches instead of mostly padding)."""
    batches: list[list[int]] = []
    for i in order:
        if batches:  # extend the last batch if it stays within both limits
            rows = batches[-1] + [i]
            n, longest = len(rows), lengths[rows[0]]
            if n <= batch_size and n * longest - sum(lengths[j] for j in rows) <= max_padding * n * longest:
                batches[-1] = rows
                continue
        batches.append([i])
    return batches


def _to(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host tensor to ``device``; to CUDA from pinned memory, so the host does not wait for the queued batch."""
    return t.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else t.to(device)


def select_sites(lm: LoadedModel, layers: Sequence[int] | None, site: str | None,
                 table=neuron_sites) -> tuple[list[int], list[str], int]:
    """The layers to hook (default: all; sorted Python ints from any integer type, checked; [] raises), their module
    paths from ``table`` (``models.neuron_sites`` or ``models.firing_sites``) and the neuron width."""
    names = table(lm.model, site)
    if layers is None:
        layers = range(len(names))
    elif len(layers) == 0:
        raise ValueError("layers=[] selects no layer: pass None for all layers or a list of layer indices")
    layers = sorted({layer_index(l) for l in layers})
    if bad := [l for l in layers if not 0 <= l < len(names)]:
        raise ValueError(f"layers {bad} out of range: {lm.name} has {len(names)} layers (0..{len(names) - 1})")
    return layers, [names[l] for l in layers], neuron_width(lm.model, site)


def stream(lm: LoadedModel, sites: list[str], width: int, encoded: list[list[int]], weights: list[list[float]],
           batch_size: int, reducer, desc: str, progress: bool = True) -> None:
    """Run every tokenised record through the model once, handing each site's input to ``reducer``.

    >>> stream(lm, sites, width, encoded, weights, 16, MeanPool(values, check), "capture")

    Batches come from ``padded_batches``; the forward pass stops after the last site. Per batch and site j,
    ``reducer.add(j, x, w, rows)`` gets the site input x (batch, tokens, width), the pooling weights w (batch, tokens)
    on x's device and the batch's record indices ``rows`` (batch,) long on the CPU; after the forward pass
    ``reducer.end(rows)``. A site whose input is not ``width`` wide, or whose hook never ran, raises.
    """
    model = lm.model
    device = module_device(model.get_input_embeddings())

    def hook(j: int, name: str, x: torch.Tensor) -> None:  # x: (batch, tokens, width), or (batch*tokens, width) (OPT)
        if x.shape[-1] != width:
            raise ValueError(f"{name} input has {x.shape[-1]} features, config says {width}: "
                             f"check the site for model_type {model.config.model_type!r}")
        if x.device not in weights_on:  # device_map: a layer on another device
            weights_on[x.device] = weights_on[device].to(x.device)
        w = weights_on[x.device]  # (batch, tokens)
        reducer.add(j, x.view(*w.shape, width) if x.dim() == 2 else x, w, rows)
        seen.add(j)

    hooks = input_hooks(model, {n: partial(hook, j, n) for j, n in enumerate(sites)}, stop=sites[-1])
    with (tqdm(total=len(encoded), desc=f"{desc} {lm.name}", disable=not progress, unit="sent") as bar,
          torch.inference_mode()):
        for batch, ids, mask, w in padded_batches(encoded, weights, batch_size, lm.tokenizer.pad_token_id):
            rows = torch.tensor(batch, dtype=torch.long)  # read by the hooks, as are the next two
            weights_on = {device: _to(w, device)}  # pooling weights (batch, tokens) per device
            seen = set()  # the sites whose hook ran
            with hooks:
                model(input_ids=_to(ids, device), attention_mask=_to(mask, device), use_cache=False)
            if missed := [n for j, n in enumerate(sites) if j not in seen]:
                raise RuntimeError(f"the hook on {missed[0]!r} never ran: this "
                                   f"{model.config.model_type!r} model computes that layer without calling the "
                                   f"module, so its input cannot be read there; pass site= naming a module it calls")
            reducer.end(batch)
            bar.update(len(batch))


class MeanPool:
    """Reducer for ``stream``: each record's masked token mean per site, written into ``out`` (n, L, width).

    >>> stream(lm, sites, width, encoded, weights, 16, MeanPool(out, check), "capture")

    ``check(rows)`` runs on the rows just written to ``out``; a block from CUDA is written (and checked) one batch
    late, so its copy to the host overlaps the next batch's forward pass.
    """

    def __init__(self, out: torch.Tensor, check):
        self.out, self.check = out, check
        self.pooled: list[torch.Tensor | None] = [None] * out.shape[1]  # this batch's (batch, width) fp32 sums
        self.counts: torch.Tensor | None = None  # this batch's pooled tokens per row
        self.pending: tuple | None = None  # (rows, host block, CUDA event or None) of the block not yet written
        self.queued = 0  # rows handed over

    def add(self, j: int, x: torch.Tensor, w: torch.Tensor, rows: torch.Tensor) -> None:
        """Weighted token sum in fp32 (batch, width); in half precision ``x * w`` is exact (0/1 weights). x is not
        masked first, so an inf or nan at an unpooled position reaches the sum (and the finite check)."""
        if x.dtype == torch.float32:
            self.pooled[j] = torch.bmm(w.unsqueeze(1), x).squeeze(1)  # (batch, 1, tokens) @ (batch, tokens, width)
        else:
            self.pooled[j] = (x * w.to(x.dtype).unsqueeze(-1)).sum(1, dtype=torch.float32)
        if j == 0:
            self.counts = w.sum(1)  # (batch,)

    def end(self, rows: list[int]) -> None:
        if len({p.device for p in self.pooled}) > 1:  # device_map over several devices
            self.pooled = [p.cpu() for p in self.pooled]
        block = torch.stack(self.pooled, dim=1)  # (batch, L, width) fp32 sums
        block.div_(self.counts.to(block.device)[:, None, None])  # means
        self.pooled = [None] * len(self.pooled)
        host = block.to("cpu", non_blocking=block.is_cuda)  # from CUDA: pinned memory, complete once ``done`` passed
        done = torch.cuda.current_stream(block.device).record_event() if block.is_cuda else None
        self._write_pending()
        self.pending = (rows, host, done)
        self.queued += len(rows)
        if done is None or self.queued == len(self.out):  # a CPU block at once, a CUDA one a batch late (but the last)
            self._write_pending()

    def _write_pending(self) -> None:
        """Write the pending block, if any, to ``out`` and check its rows."""
        if self.pending is not None:
            rows, host, done = self.pending
            if done is not None:
                done.synchronize()
            self.out.index_copy_(0, torch.tensor(rows), host)
            self.pending = None
            self.check(rows)


class FiringCounts:
    """Reducer for ``stream``: per language, the counted tokens on which each site input is > 0.

    >>> stream(lm, sites, width, encoded, weights, 16, FiringCounts(lang_of, n_langs, n_sites, width), "LAPE")

    lang_of: (n_records,) each record's language index; ``counts[j]``: (n_langs, width) float64.
    """

    def __init__(self, lang_of: torch.Tensor, n_langs: int, n_sites: int, width: int):
        self.lang_of, self.shape = lang_of, (n_langs, width)
        self.counts: list[torch.Tensor | None] = [None] * n_sites

    def add(self, j: int, x: torch.Tensor, w: torch.Tensor, rows: torch.Tensor) -> None:
        if self.counts[j] is None:
            self.counts[j] = torch.zeros(self.shape, dtype=torch.float64, device=x.device)
        positive = torch.einsum("btn,bt->bn", (x > 0).float(), w)  # (batch, width) counted tokens with x > 0
        self.counts[j].index_add_(0, self.lang_of[rows].to(x.device), positive.double())

    def end(self, rows: list[int]) -> None:
        pass


def capture(lm: LoadedModel, corpus, *, layers: Sequence[int] | None = None, batch_size: int = 16,
            pool_special_tokens: bool = False, skip_first: bool = False, max_length: int = 512,
            site: str | None = None, progress: bool = True, add_special_tokens: bool = True,
            cache: Cache | str | Path | None = None) -> Activations:
    """Mean-pooled neuron activations of every record of ``corpus`` (a ``ParallelCorpus``).

    >>> acts = capture(lm, corpus, cache="cache")  # acts.values (n_records, n_layers, n_neurons) fp32

    Token selection as in ``tokenize`` (``skip_first`` drops the attention sink that often carries "massive
    activations"), truncated to ``max_length`` or the model's position limit (``models.max_tokens``), whichever is
    smaller (``meta["options"]["max_length"]``). ``cache`` (a ``cache.Cache`` or folder) reuses an identical run,
    keyed by model (with dtype), token ids, pooling weights, options and code (``cache.code_key``); it refuses a
    model already carrying hooks (e.g. inside ``deactivate``). Raises ``ValueError`` on an inf or nan mean.
    """
    model, tok = lm.model, lm.tokenizer
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    site = site or lm.site
    layers, site_modules, width = select_sites(lm, layers, site)
    records = list(corpus)
    cache = Cache(cache) if isinstance(cache, (str, Path)) else cache
    hooked = [n or "<model>" for n, m in model.named_modules() if m._forward_hooks or m._forward_pre_hooks]
    if cache is not None and hooked:
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
    sentence_ids, langs = [r.sentence_id for r in records], [r.lang for r in records]

    def run() -> Activations:  # the MeanPool of every record
        values = torch.empty(len(records), len(layers), width)  # (n, L, width) fp32 means, filled batch by batch

        def check(rows: list[int]) -> None:  # rows just written to the host
            check_finite(values[torch.tensor(rows, dtype=torch.long)], [sentence_ids[r] for r in rows],
                         [langs[r] for r in rows], layers, meta)

        stream(lm, site_modules, width, encoded, weights, batch_size, MeanPool(values, check), "capture", progress)
        counts = torch.tensor([sum(w) for w in weights], dtype=torch.float32).to(torch.int64)  # tokens pooled
        return Activations(values, sentence_ids, langs, layers, counts, meta)

    return run() if cache is None else cache.result("activations", {**meta, "code": code_key(capture)}, run,
                                                    Activations.entry, Activations.from_entry)


def activation_probabilities(lm: LoadedModel, corpus, *, layers: Sequence[int] | None = None, batch_size: int = 16,
                             pool_special_tokens: bool = False, max_length: int = 512, site: str | None = None,
                             progress: bool = True) -> ActivationProbs:
    """Fraction of each language's tokens on which each neuron fires, as Tang et al. count it (LAPE's input).

    >>> probs = activation_probabilities(lm, corpus)  # probs.probs (n_langs, n_layers, width)

    A neuron fires where its activation is > 0: where the gate pre-activation is > 0 in gated MLPs (LLaMA, Gemma),
    where the down projection's input GeLU(h) is > 0 in BLOOM-style MLPs (``models.firing_sites``; the hooked inputs
    are in ``meta["firing_sites"]``). Batching, padding and token selection are those of ``capture``.
    """
    model, tok = lm.model, lm.tokenizer
    site = site or lm.site
    layers, fire, width = select_sites(lm, layers, site, firing_sites)  # one firing site per layer, in order
    records = list(corpus)
    langs = list(dict.fromkeys(r.lang for r in records))
    lang_of = torch.tensor([langs.index(r.lang) for r in records])  # (n_records,)
    encoded, weights = tokenize(tok, records, max_tokens(model, max_length), pool_special_tokens, skip_first=False)
    counts = FiringCounts(lang_of, len(langs), len(fire), width)
    stream(lm, fire, width, encoded, weights, batch_size, counts, "LAPE", progress)
    tokens = torch.zeros(len(langs), dtype=torch.float64).index_add_(
        0, lang_of, torch.tensor([sum(w) for w in weights], dtype=torch.float64))
    probs = torch.stack([c.cpu() for c in counts.counts], dim=1) / tokens[:, None, None]  # (langs, L, width)
    return ActivationProbs(probs.float(), langs, layers, tokens,
                           {**lm.meta(), "site": site or SITE_NAME, "firing_sites": [f"{n}:input" for n in fire]})
