"""Capture: the paper's one-sentence-at-a-time code, lfcore's batched capture, and the bare forward pass.

- ``one_at_a_time``: what the published code does: per sentence, ``model.generate(max_new_tokens=1)``
  with a hook on every layer that copies the full (tokens x neurons) activation to the host, then a
  mean per layer.
- ``lfcore.capture``: length-sorted right-padded batches, pooled inside a pre-hook, stopped after the
  last layer's site, no LM head.
- ``bare_forward``: the base model (no LM head, no hook) on exactly the batches capture runs: the floor
  that capture's overhead is measured against.
"""
from __future__ import annotations

import torch

from benchmarks.common import Batch, sync
from lfcore.capture import capture
from lfcore.corpus import ParallelCorpus
from lfcore.hooks import get_module
from lfcore.models import neuron_sites


def one_at_a_time(lm, records, max_length: int) -> torch.Tensor:
    """Pooled (n, layers, width) values, computed the way the paper's released code does."""
    model, tok = lm.model, lm.tokenizer
    device = model.get_input_embeddings().weight.device
    sites = neuron_sites(model)
    store: dict[str, torch.Tensor] = {}
    special = set(tok.all_special_ids)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    def keep(name):
        def pre_hook(module, args):
            store[name] = args[0][0].detach().cpu()  # (tokens, width): the whole activation to the host
        return pre_hook

    handles = [get_module(model, n).register_forward_pre_hook(keep(n)) for n in sites]
    out = []
    try:
        with torch.no_grad():
            for r in records:
                enc = tok(r.text, return_tensors="pt", truncation=True, max_length=max_length).to(device)
                store.clear()
                model.generate(**enc, max_new_tokens=1, do_sample=False, pad_token_id=pad)
                pooled = torch.tensor([t not in special for t in enc["input_ids"][0].tolist()])
                out.append(torch.stack([store[n][pooled].float().mean(0) for n in sites]))  # (layers, width)
    finally:
        for h in handles:
            h.remove()
    return torch.stack(out)  # (n, layers, width)


def lfcore_capture(lm, records, batch_size: int, max_length: int) -> torch.Tensor:
    corpus = ParallelCorpus(records, name="bench")
    return capture(lm, corpus, batch_size=batch_size, max_length=max_length, progress=False).values


def bare_forward(lm, batches: list[Batch]) -> None:
    """The base model on the same batches, nothing captured (inputs already tokenised)."""
    base = lm.model.base_model
    device = lm.model.get_input_embeddings().weight.device
    with torch.inference_mode():
        for b in batches:
            base(input_ids=b.ids.to(device), attention_mask=b.mask.to(device), use_cache=False)
    sync(device)
