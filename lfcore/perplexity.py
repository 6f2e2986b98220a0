"""Windowed perplexity with a chunked loss: ``perplexity(model, tokenizer, texts, seqlen=2048)``.

Windows are "overlapping" (lfcore's default: a start token per window, every token scored once) or "disjoint" (the
authors' lib/eval.py). The LM head runs on chunks of the scored positions only, the cross-entropy summed in fp32:
no vocabulary logits for a whole batch. Table 1 is ``evaluate.deactivation_table``.
"""
from __future__ import annotations

import itertools
import math
from typing import Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from .fastattn import fused_attention
from .hooks import module_device
from .models import position_limit

IGNORE = -100  # label of an unscored position
OVERFLOW_FIX = ("the model overflows its dtype (float16 does in e.g. Gemma 3). "
                "Load it with dtype='bfloat16' or 'float32'.")

# Vocabulary entries per block of CPU logits, in one reused buffer: (positions, vocab) is never allocated (Gemma:
# 262k entries); Gemma's head on 2 cores: 0.57 s per 252 positions against 0.95 s for whole logits.
CPU_VOCAB_BLOCK = 2048


def _token_ids(tokenizer, texts: str | Sequence[str], add_special_tokens: bool = False) -> list[int]:
    """Non-blank documents joined by a blank line, tokenized once."""
    texts = [t for t in ([texts] if isinstance(texts, str) else texts) if t and t.strip()]
    if not texts:
        raise ValueError("no text to evaluate: pass a non-empty string or list of strings")
    return tokenizer("\n\n".join(texts), add_special_tokens=add_special_tokens)["input_ids"]


def _windows(ids: list[int], seqlen: int, stride: int | None, bos: int | None):
    """Sliding windows of at most ``seqlen`` tokens, each labelling what no earlier one scored: (windows, stride)."""
    span = seqlen - (bos is not None)
    if span < 2:
        raise ValueError(f"seqlen={seqlen} is too short: a window needs at least 2 text tokens")
    longest = span if bos is not None else span - 1  # without BOS a window's first token is context only
    stride = longest if stride is None else stride
    if not 1 <= stride <= longest:
        why = ("seqlen minus the BOS token" if bos is not None else
               "seqlen minus 1: without a BOS token each window re-reads the last token before it as context")
        raise ValueError(f"stride={stride} must be between 1 and {longest} ({why})")
    if len(ids) < (1 if bos is not None else 2):
        raise ValueError(f"the text has {len(ids)} tokens; too few to score")
    start = [] if bos is None else [bos]
    windows, scored_to = [], 1 - len(start)  # text tokens before scored_to are scored (or unscorable)
    for begin in range(0, len(ids), stride):
        end = min(begin + span, len(ids))
        assert end > scored_to >= begin + (bos is None), "every window scores at least one new token"
        x = torch.tensor(start + ids[begin:end], dtype=torch.long)  # (tokens,)
        labels = x.clone()
        labels[: len(start) + scored_to - begin] = IGNORE  # the start token; context scored earlier (or unscorable)
        windows.append((x, labels))
        scored_to = end
        if end == len(ids):
            break
    return windows, stride


def _disjoint_windows(ids: list[int], seqlen: int):
    """Back-to-back windows of ``seqlen`` tokens, tail dropped, each first token only read (lib/eval.py)."""
    if seqlen < 2:
        raise ValueError(f"seqlen={seqlen} is too short: a window needs at least 2 tokens")
    if len(ids) < seqlen:
        raise ValueError(f"the text has {len(ids)} tokens, fewer than one disjoint window of seqlen={seqlen} "
                         f"(disjoint windows drop the tail): give more text or a smaller seqlen")
    x = torch.tensor(ids[:len(ids) // seqlen * seqlen], dtype=torch.long).view(-1, seqlen)  # (windows, seqlen)
    labels = x.clone()
    labels[:, 0] = IGNORE  # no context before it
    return list(zip(x, labels))


def start_token(tokenizer, add_bos: bool | None = None) -> int | None:
    """The token id that starts every overlapping perplexity window, or None. ``add_bos=None``: the special token
    the tokenizer puts before a text itself (Gemma's ``<bos>``, LLaMA's ``<s>``; none for BLOOM, or SmolLM2, whose
    ``bos_token`` ``<|im_start|>`` is never added to plain text); ``True``: ``tokenizer.bos_token``; ``False``: none.
    """
    if add_bos is False:
        return None
    if add_bos:
        if tokenizer.bos_token_id is None:
            raise ValueError(f"{type(tokenizer).__name__} has no bos_token; pass add_bos=False or None")
        return tokenizer.bos_token_id
    first = tokenizer("x")["input_ids"][:1]  # what the tokenizer itself puts before a text
    return first[0] if first and first[0] in tokenizer.all_special_ids else None


def text_windows(tokenizer, texts: str | Sequence[str], seqlen: int, stride: int | None = None,
                 add_bos: bool | None = None, windows: str = "overlapping") -> tuple[list, dict]:
    """``texts`` (joined by "\\n\\n", tokenized once) cut into scoring windows of ``seqlen`` tokens:
    ``wins, info = text_windows(tok, ["doc 1", "doc 2"], 2048)``, each window a pair (input ids, labels), (tokens,).

    "overlapping": each window starts with ``start_token(tokenizer, add_bos)``, ``stride`` sets the overlap.
    "disjoint": the text tokenized with the tokenizer's own special tokens, back-to-back windows, the tail dropped
    (``stride`` None or ``seqlen``). ``info``: ``seqlen``, ``stride`` used, ``bos_token_id`` (or None), ``windows``.
    """
    if windows == "overlapping":
        bos = start_token(tokenizer, add_bos)
        cut, stride = _windows(_token_ids(tokenizer, texts), seqlen, stride, bos)
    elif windows != "disjoint":
        raise ValueError(f"windows={windows!r} is not one of 'overlapping', 'disjoint'")
    elif add_bos:
        raise ValueError("add_bos=True with windows='disjoint': disjoint windows have no start token of their "
                         "own; pass add_bos=None or windows='overlapping'")
    elif stride not in (None, seqlen):
        raise ValueError(f"stride={stride} with windows='disjoint' must be None or seqlen ({seqlen})")
    else:
        bos, stride = None, seqlen
        cut = _disjoint_windows(_token_ids(tokenizer, texts, add_special_tokens=True), seqlen)
    return cut, {"seqlen": seqlen, "stride": stride, "bos_token_id": bos, "windows": windows}


def check_seqlen(model: nn.Module, seqlen: int) -> None:
    """Raise ``ValueError`` if a window of ``seqlen`` tokens exceeds the model's position limit."""
    limit = position_limit(model)
    if limit is not None and seqlen > limit:
        raise ValueError(f"seqlen={seqlen} exceeds the {limit} positions of {type(model).__name__} "
                         f"(max_position_embeddings); use perplexity.seqlen <= {limit}")


def dtype_name(model: nn.Module) -> str:
    """The dtype of the model's (first) weights, e.g. "float16", for error messages."""
    return str(next(model.parameters()).dtype).removeprefix("torch.")


def _softcap(logits: torch.Tensor, cap: float | None) -> torch.Tensor:
    """Gemma 2's final logit soft-cap, cap * tanh(logits / cap); unchanged when ``cap`` is None."""
    return logits if cap is None else torch.tanh(logits / cap) * cap


def _nll(head: nn.Module, cap: float | None, h: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """fp32 NLL (positions,) of ``targets`` after hidden states ``h`` (positions, width); CPU: vocabulary blocks."""
    weight = getattr(head, "weight", None)
    if not (h.device.type == "cpu" and type(head) is nn.Linear and not hasattr(head, "_hf_hook")
            and weight.device == h.device and weight.shape[0] > CPU_VOCAB_BLOCK):
        logits = _softcap(head(h).float(), cap)  # (positions, vocab) fp32
        return torch.logsumexp(logits, 1) - logits.gather(1, targets[:, None].to(logits.device))[:, 0]
    vocab = weight.shape[0]
    buf = torch.empty(len(h), CPU_VOCAB_BLOCK, dtype=h.dtype)  # (positions, block), reused
    lse = torch.full((len(h),), float("-inf"))
    target_logit = torch.empty(len(h))
    for s in range(0, vocab, CPU_VOCAB_BLOCK):
        e = min(vocab, s + CPU_VOCAB_BLOCK)
        logits = torch.mm(h, weight[s:e].t(), out=buf[:, :e - s])
        if head.bias is not None:
            logits += head.bias[s:e]
        logits = _softcap(logits.float(), cap)
        lse = torch.logaddexp(lse, torch.logsumexp(logits, 1))
        rows = ((targets >= s) & (targets < e)).nonzero()[:, 0]
        target_logit[rows] = logits[rows, targets[rows] - s]
    return lse - target_logit


def _check_head(model: nn.Module, base: nn.Module, head: nn.Module, cap: float | None, ids: torch.Tensor) -> None:
    """Check on a few tokens that base + head (+ soft-cap) gives the model's own logits."""
    ids = ids[:8].unsqueeze(0).to(module_device(model.get_input_embeddings()))
    want = model(input_ids=ids, use_cache=False).logits.float()
    if not torch.isfinite(want).all():
        raise ValueError(f"{type(model).__name__} in {dtype_name(model)} gives inf or nan logits on the first "
                         f"tokens of the text: {OVERFLOW_FIX}")
    got = _softcap(head(base(input_ids=ids, use_cache=False).last_hidden_state).float(), cap)
    want = want.to(got.device)
    if not torch.allclose(got, want, rtol=1e-2, atol=1e-2 * float(want.abs().max().clamp(min=1.0))):
        raise ValueError(f"{type(model).__name__}: base model + LM head does not reproduce the model's logits "
                         f"(max diff {float((got - want).abs().max()):.3g}); the model may scale "
                         f"its logits in a way lfcore's chunked loss does not know")


@torch.inference_mode()
def score(model: nn.Module, windows, batch_size: int, chunk_tokens: int = 512, progress: bool = False,
          check: bool = True, where: str = "") -> dict:
    """Perplexity of ``windows`` (``text_windows``): ``ppl``, ``nll`` (mean over scored tokens), ``n_tokens``,
    ``n_windows``, per-window ``window_nll`` (mean) and ``window_tokens``. ``check``: first verify base + head
    against the model's logits. An inf or nan loss raises naming the dtype, window and ``where`` (e.g. "language
    'zh', condition 'Full'")."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    base, head = model.base_model, model.get_output_embeddings()  # final hidden states, LM head
    if base is model or head is None:
        raise ValueError(f"{type(model).__name__} has no separate base model and LM head; chunked loss needs both")
    cap = getattr(model.config, "final_logit_softcapping", None)
    device = module_device(model.get_input_embeddings())
    if check:
        _check_head(model, base, head, cap, windows[0][0])
    batches = []  # runs of equal-length windows, batched without padding (only the last window can be shorter)
    for _, run in itertools.groupby(windows, lambda w: len(w[0])):
        run = list(run)
        batches += [run[s:s + batch_size] for s in range(0, len(run), batch_size)]
    sums, counts = [], []
    for batch in tqdm(batches, desc="perplexity", disable=not progress, leave=False):
        ids = torch.stack([x for x, _ in batch]).to(device)  # (batch, tokens)
        labels = torch.stack([y for _, y in batch])[:, 1:]  # (batch, tokens-1): next-token targets
        with fused_attention(model):  # BLOOM: SDPA with the ALiBi bias; other models: unchanged
            hidden = base(input_ids=ids, use_cache=False).last_hidden_state[:, :-1]  # (batch, tokens-1, width)
        scored = labels != IGNORE
        h = hidden[scored.to(hidden.device)]  # (positions, width): only the scored positions
        targets, rows = labels[scored], scored.nonzero()[:, 0]  # (positions,), window row of each position
        nll = torch.empty(len(targets), dtype=torch.float32)
        for s in range(0, len(targets), chunk_tokens):
            nll[s:s + chunk_tokens] = _nll(head, cap, h[s:s + chunk_tokens], targets[s:s + chunk_tokens]).cpu()
        per_window = torch.zeros(len(batch), dtype=torch.float64).index_add_(0, rows, nll.double())
        if not torch.isfinite(per_window).all():
            i = len(sums) + int((~torch.isfinite(per_window)).nonzero()[0])
            raise ValueError(f"{type(model).__name__} in {dtype_name(model)}: inf or nan loss in window {i} of "
                             f"{len(windows)}{' (' + where + ')' if where else ''}: {OVERFLOW_FIX}")
        sums += per_window.tolist()
        counts += scored.sum(1).tolist()
    nll = sum(sums) / sum(counts)
    return {"ppl": math.exp(nll), "nll": nll, "n_tokens": sum(counts), "n_windows": len(sums),
            "window_nll": [s / c for s, c in zip(sums, counts)], "window_tokens": counts}


def perplexity(model: nn.Module, tokenizer, texts: str | Sequence[str], seqlen: int = 2048, stride: int | None = None,
               batch_size: int = 4, add_bos: bool | None = None, chunk_tokens: int = 512,
               progress: bool = False, windows: str = "overlapping") -> dict:
    """Perplexity of ``texts`` (joined by "\\n\\n", tokenized once) over windows of ``seqlen`` tokens.

    ``windows="overlapping"`` (default): every window starts with ``start_token(tokenizer, add_bos)``, counted in
    ``seqlen``; with ``stride`` below the window's text length windows overlap and each scores only the tokens no
    earlier window scored. ``windows="disjoint"``: the authors' scheme (``text_windows``). Returns the keys of
    ``score`` (``ppl``, ``nll``, ``n_tokens``, ..., ``window_tokens``) and ``seqlen``, ``stride``, ``bos_token_id``,
    ``windows``.
    """
    check_seqlen(model, seqlen)
    cut, info = text_windows(tokenizer, texts, seqlen, stride, add_bos, windows)
    return {**score(model, cut, batch_size, chunk_tokens, progress), **info}
