"""Perplexity: BLOOM eager vs fused attention (lfcore.fastattn), LLaMA unchanged, chunked vs full-logits loss.

Throughput is scored tokens per second of ``lfcore.perplexity.perplexity``; "same numbers" is the relative
difference of the perplexities. The full-logits reference is the textbook loss (``model(ids).logits`` for
the whole batch, then cross-entropy in fp32) on the same windows, for its peak memory.
"""
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F

from benchmarks.common import PeakMemory, paired, sync
from lfcore.fastattn import fused_attention
from lfcore.perplexity import IGNORE, _windows, perplexity, start_token


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


def paired_perplexity(model, tokenizer, text: str, seqlen: int, batch_size: int, device: str, repeats: int,
                      setting):
    """lfcore's perplexity of ``text`` under ``setting(False)`` and ``setting(True)`` (context managers), runs
    alternated after a short warm-up of each.

    Returns (Timing off, Timing on, median off/on ratio, result off, result on).
    """
    results = {}

    def run(on: bool, text: str = text, batch_size: int = batch_size):
        with setting(on):
            results[on] = perplexity(model, tokenizer, text, seqlen=seqlen, batch_size=batch_size)

    short = tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"][:seqlen - 1])
    t_off, t_on, ratio = paired(lambda: run(False), lambda: run(True), device, repeats,
                                warmup=lambda: (run(False, short, 1), run(True, short, 1)))
    return t_off, t_on, ratio, results[False], results[True]


def throughput_pair(model, tokenizer, text: str, seqlen: int, batch_size: int, device: str, repeats: int):
    """Tokens per second of lfcore's perplexity without and with the fused swap, runs alternated.

    Returns (eager tok/s, fused tok/s, eager result, fused result); the fused rate is eager's times the
    median per-pair speedup, so a busy machine affects both alike.
    """
    t_eager, _, slowdown, eager, fused = paired_perplexity(
        model, tokenizer, text, seqlen, batch_size, device, repeats, lambda on: fused_attention(model, enabled=on))
    eager_tps = eager["n_tokens"] / t_eager.median
    return eager_tps, eager_tps * slowdown, eager, fused


@contextlib.contextmanager
def vocabulary_blocks(on: bool):
    """lfcore's loss over the vocabulary in CPU blocks (``on``, the default) or whole logits at once."""
    import lfcore.perplexity as pp

    default = pp.CPU_VOCAB_BLOCK
    pp.CPU_VOCAB_BLOCK = default if on else 1 << 62  # a block larger than any vocabulary: whole logits
    try:
        yield
    finally:
        pp.CPU_VOCAB_BLOCK = default


def full_logits_loss(model, tokenizer, text: str, seqlen: int, batch_size: int) -> float:
    """Perplexity the textbook way: whole-batch logits (batch, tokens, vocab), then fp32 cross-entropy."""
    bos = start_token(tokenizer)  # the windows lfcore's perplexity scores
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
