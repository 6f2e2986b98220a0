"""Perplexity: BLOOM eager vs fused attention (lfcore.fastattn), LLaMA unchanged, chunked vs full-logits loss.

Throughput is scored tokens per second of ``lfcore.evaluate.perplexity``; "same numbers" is the relative
difference of the perplexities. The full-logits reference is the textbook loss (``model(ids).logits`` for
the whole batch, then cross-entropy in fp32) on the same windows, for its peak memory.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from benchmarks.common import PeakMemory, paired, sync
from lfcore.evaluate import IGNORE, _windows, perplexity
from lfcore.fastattn import fused_attention


def text_for(tokenizer, n_tokens: int) -> str:
    """Bundled NTREX passages joined until the tokenizer gives at least ``n_tokens`` tokens."""
    from lfcore.corpus import bundled_passages

    parts, have = [], 0
    for r in bundled_passages():
        parts.append(r.text)
        have += len(tokenizer(r.text, add_special_tokens=False)["input_ids"])
        if have >= n_tokens:
            break
    return "\n\n".join(parts)


def throughput_pair(model, tokenizer, text: str, seqlen: int, batch_size: int, device: str, repeats: int):
    """Tokens per second of lfcore's perplexity without and with the fused swap, runs alternated.

    Returns (eager tok/s, fused tok/s, eager result, fused result); the fused rate is eager's times the
    median per-pair speedup, so a busy machine affects both alike.
    """
    results = {}

    def run(fused: bool):
        with fused_attention(model, enabled=fused):
            results[fused] = perplexity(model, tokenizer, text, seqlen=seqlen, batch_size=batch_size)

    short = tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"][:seqlen - 1])

    def warm():
        for fused in (False, True):
            with fused_attention(model, enabled=fused):
                perplexity(model, tokenizer, short, seqlen=seqlen, batch_size=1)

    t_eager, _, slowdown = paired(lambda: run(False), lambda: run(True), device, repeats, warmup=warm)
    eager_tps = results[False]["n_tokens"] / t_eager.median
    return eager_tps, eager_tps * slowdown, results[False], results[True]


def vocab_block_pair(model, tokenizer, text: str, seqlen: int, batch_size: int, device: str, repeats: int):
    """Seconds of lfcore's perplexity with the loss over the vocabulary in CPU blocks (the default) and with
    the whole vocabulary's logits at once (what other devices do), runs alternated.

    Returns (blocked Timing, whole Timing, median whole/blocked ratio, relative difference of the perplexities).
    """
    import lfcore.evaluate as ev

    results = {}

    def run(blocked: bool):
        default = ev.CPU_VOCAB_BLOCK
        ev.CPU_VOCAB_BLOCK = default if blocked else 1 << 62  # a block larger than any vocabulary: whole logits
        try:
            results[blocked] = perplexity(model, tokenizer, text, seqlen=seqlen, batch_size=batch_size)["ppl"]
        finally:
            ev.CPU_VOCAB_BLOCK = default

    t_whole, t_blocked, ratio = paired(lambda: run(False), lambda: run(True), device, repeats,
                                       warmup=lambda: (run(False), run(True)))
    return t_blocked, t_whole, ratio, abs(results[True] / results[False] - 1)


def full_logits_loss(model, tokenizer, text: str, seqlen: int, batch_size: int) -> float:
    """Perplexity the textbook way: whole-batch logits (batch, tokens, vocab), then fp32 cross-entropy."""
    bos = tokenizer.bos_token_id
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    windows, _ = _windows(ids, seqlen, None, bos)
    device = model.get_input_embeddings().weight.device
    by_length: dict[int, list] = {}
    for w in windows:  # equal lengths batch without padding, as lfcore does
        by_length.setdefault(len(w[0]), []).append(w)
    batches = [ws[s:s + batch_size] for ws in by_length.values() for s in range(0, len(ws), batch_size)]
    total, count = 0.0, 0
    with torch.inference_mode():
        for chunk in batches:
            x = torch.stack([w[0] for w in chunk]).to(device)
            labels = torch.stack([w[1] for w in chunk])[:, 1:].to(device)
            logits = model(input_ids=x, use_cache=False).logits[:, :-1].float()  # (batch, tokens-1, vocab)
            nll = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE, reduction="sum")
            total += float(nll)
            count += int((labels != IGNORE).sum())
    return math.exp(total / count)


def peak_memory(fn, device: str) -> int:
    with PeakMemory(device) as mem:
        fn()
        sync(device)
    return mem.peak
