"""Windowed perplexity with a chunked loss: ``perplexity(model, tokenizer, texts, seqlen=2048)``.

Documents are joined by "\\n\\n", tokenized once, cut into windows of ``seqlen`` tokens. Two schemes
(``windows``): "overlapping" (lfcore's default: a start token per window, overlapping windows score only their
new tokens, so every token is scored once) and "disjoint" (the authors' code, lib/eval.py: the text tokenized as
the tokenizer does, back-to-back windows without a start token, the tail dropped). The loss never builds
vocabulary logits for a whole batch: the base model gives final hidden states and the LM head runs on chunks of
the scored positions, with the cross-entropy summed in fp32. Table 1 (perplexity per deactivated set) is
``evaluate.deactivation_table``.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from .fastattn import fused_attention
from .hooks import module_device
from .models import position_limit

IGNORE = -100  # label of an unscored position

# ------------------------------------------------------------------------------------------- perplexity


def _token_ids(tokenizer, texts: str | Sequence[str], add_special_tokens: bool = False) -> list[int]:
    """Join documents with a blank line and tokenize once, without special tokens unless ``add_special_tokens``
    (then as the tokenizer does by itself, e.g. one BOS before the whole text)."""
    if isinstance(texts, str):
        texts = [texts]
    texts = [t for t in texts if t and t.strip()]
    if not texts:
        raise ValueError("no text to evaluate: pass a non-empty string or list of strings")
    return tokenizer("\n\n".join(texts), add_special_tokens=add_special_tokens)["input_ids"]


def _windows(ids: list[int], seqlen: int, stride: int | None, bos: int | None):
    """Cut token ids into model inputs of at most ``seqlen`` tokens (BOS included) with their labels.

    Window i covers text tokens [i*stride, i*stride + L) with L = seqlen - (BOS ? 1 : 0); only tokens not
    scored by an earlier window are labelled (the Hugging Face perplexity guide's sliding window). With a BOS
    token every text token is scored exactly once (default stride L). Without one, a window's first token has
    no context and is only read, so windows overlap by at least one token (stride at most L - 1, the default)
    and every token after the text's first is scored exactly once. Returns ``(windows, stride)``, each window a
    pair of LongTensors (input ids, labels with -100), shape (tokens,).
    """
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
    windows, scored_to = [], 0 if bos is not None else 1  # text tokens before scored_to are scored (or unscorable)
    for begin in range(0, len(ids), stride):
        end = min(begin + span, len(ids))
        assert end > scored_to >= begin + (bos is None), "every window scores at least one new token"
        x = torch.tensor(ids[begin:end], dtype=torch.long)  # (tokens,)
        labels = x.clone()
        labels[: scored_to - begin] = IGNORE  # context: scored by an earlier window, or the text's first token
        if bos is not None:
            x = torch.cat([torch.tensor([bos]), x])
            labels = torch.cat([torch.tensor([IGNORE]), labels])
        windows.append((x, labels))
        scored_to = end
        if end == len(ids):
            break
    return windows, stride


def _disjoint_windows(ids: list[int], seqlen: int):
    """Cut token ids into back-to-back windows of exactly ``seqlen`` tokens, dropping the tail (the authors'
    lib/eval.py). A window's first token is only read (no context before it), the others are scored once.
    Returns a list of pairs of LongTensors (input ids, labels with -100), shape (seqlen,).
    """
    if seqlen < 2:
        raise ValueError(f"seqlen={seqlen} is too short: a window needs at least 2 tokens")
    if len(ids) < seqlen:
        raise ValueError(f"the text has {len(ids)} tokens, fewer than one disjoint window of seqlen={seqlen} "
                         f"(disjoint windows drop the tail): give more text or a smaller seqlen")
    windows = []
    for begin in range(0, len(ids) - seqlen + 1, seqlen):
        x = torch.tensor(ids[begin:begin + seqlen], dtype=torch.long)  # (seqlen,)
        labels = x.clone()
        labels[0] = IGNORE  # no context before it
        windows.append((x, labels))
    return windows


def text_windows(tokenizer, texts: str | Sequence[str], seqlen: int, stride: int | None = None,
                 add_bos: bool | None = None, windows: str = "overlapping"):
    """``texts`` (joined by "\\n\\n", tokenized once) cut into scoring windows of ``seqlen`` tokens.

    Usage: ``wins, stride, bos = text_windows(tok, ["doc 1", "doc 2"], 2048)``. ``windows="overlapping"``:
    each window starts with ``start_token(tokenizer, add_bos)`` and ``stride`` sets the overlap (``_windows``);
    ``"disjoint"``: the text tokenized with the tokenizer's own special tokens, back-to-back windows of
    ``seqlen`` without a start token, the tail dropped (``stride`` must be None or ``seqlen``; ``add_bos`` must
    not be True). Returns (windows: list of (input ids (tokens,), labels (tokens,)), stride used, start token
    id or None).
    """
    if windows == "overlapping":
        bos = start_token(tokenizer, add_bos)
        cut, stride = _windows(_token_ids(tokenizer, texts), seqlen, stride, bos)
        return cut, stride, bos
    if windows != "disjoint":
        raise ValueError(f"windows={windows!r} is not one of 'overlapping', 'disjoint'")
    if add_bos:
        raise ValueError("add_bos=True with windows='disjoint': disjoint windows have no start token of their "
                         "own; pass add_bos=None or windows='overlapping'")
    if stride not in (None, seqlen):
        raise ValueError(f"stride={stride} with windows='disjoint' must be None or seqlen ({seqlen})")
    return _disjoint_windows(_token_ids(tokenizer, texts, add_special_tokens=True), seqlen), seqlen, None


def _head(model: nn.Module):
    """The base model (final hidden states), the LM head and the logit soft-cap of a causal LM."""
    base, head = model.base_model, model.get_output_embeddings()
    if base is model or head is None:
        raise ValueError(f"{type(model).__name__} has no separate base model and LM head; chunked loss needs both")
    return base, head, getattr(model.config, "final_logit_softcapping", None)


def _softcap(logits: torch.Tensor, cap: float | None) -> torch.Tensor:
    """Gemma 2's final logit soft-cap, cap * tanh(logits / cap); unchanged when ``cap`` is None."""
    return logits if cap is None else torch.tanh(logits / cap) * cap


def _logits(head: nn.Module, cap: float | None, h: torch.Tensor) -> torch.Tensor:
    return _softcap(head(h).float(), cap)  # (positions, vocab) fp32


# Logits per position are computed this many vocabulary entries at a time on a CPU, into one reused buffer: the
# (positions, vocab) tensor is never allocated (Gemma: 262k entries, 1 MiB per position). Measured on 2 cores for
# Gemma's head: 0.57 s per 252 positions against 0.95 s for whole-vocabulary logits + cross-entropy.
CPU_VOCAB_BLOCK = 2048


def _nll(head: nn.Module, cap: float | None, h: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Next-token NLL (fp32, (positions,)) of ``targets`` given final hidden states ``h`` (positions, width).

    log-sum-exp over the vocabulary minus the target's logit. On a CPU, with a plain ``nn.Linear`` head, the
    logits come ``CPU_VOCAB_BLOCK`` columns at a time from slices of its weight; otherwise from ``head`` whole.
    """
    weight = getattr(head, "weight", None)
    blocked = (h.device.type == "cpu" and type(head) is nn.Linear and not hasattr(head, "_hf_hook")
               and weight.device == h.device and weight.shape[0] > CPU_VOCAB_BLOCK)
    if not blocked:
        logits = _logits(head, cap, h)  # (positions, vocab) fp32
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


def _check_head(model: nn.Module, ids: torch.Tensor) -> None:
    """Check on a few tokens that base + head (+ soft-cap) reproduces the model's own logits."""
    base, head, cap = _head(model)
    ids = ids[:8].unsqueeze(0).to(module_device(model.get_input_embeddings()))
    want = model(input_ids=ids, use_cache=False).logits.float()
    if not torch.isfinite(want).all():
        raise ValueError(f"{type(model).__name__} in {_dtype_of(model)} gives inf or nan logits on the first "
                         f"tokens of the text: the model overflows its dtype (float16 does in e.g. Gemma 3). "
                         f"Load it with dtype='bfloat16' or 'float32'.")
    got = _logits(head, cap, base(input_ids=ids, use_cache=False).last_hidden_state)
    scale = want.abs().max().clamp(min=1.0)
    if not torch.allclose(got, want.to(got.device), rtol=1e-2, atol=1e-2 * float(scale)):
        raise ValueError(f"{type(model).__name__}: base model + LM head does not reproduce the model's logits "
                         f"(max diff {float((got - want.to(got.device)).abs().max()):.3g}); the model may scale "
                         f"its logits in a way lfcore's chunked loss does not know")


def _check_seqlen(model: nn.Module, seqlen: int) -> None:
    """Raise ``ValueError`` if a window of ``seqlen`` tokens exceeds the model's position limit (learned
    positions would index past their table; rotary ones would score text beyond the trained context)."""
    limit = position_limit(model)
    if limit is not None and seqlen > limit:
        raise ValueError(f"seqlen={seqlen} exceeds the {limit} positions of {type(model).__name__} "
                         f"(max_position_embeddings); use perplexity.seqlen <= {limit}")


def _dtype_of(model: nn.Module) -> str:
    return str(next(model.parameters()).dtype).removeprefix("torch.")


@torch.inference_mode()
def _score(model: nn.Module, windows, batch_size: int, chunk_tokens: int = 512, progress: bool = False,
           check: bool = True, where: str = ""):
    """Summed fp32 NLL and scored-token count per window: two lists in window order. ``check``: first verify
    that base model + head reproduce the model's logits (``_check_head``). An inf or nan loss raises
    ``ValueError`` naming the model dtype, the window and ``where`` (e.g. "language 'zh', condition 'Full'"):
    a nan never reaches a table or the cache."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    base, head, cap = _head(model)
    device = module_device(model.get_input_embeddings())
    if check:
        _check_head(model, windows[0][0])
    sums, counts = [0.0] * len(windows), [0] * len(windows)
    by_length: dict[int, list[int]] = {}
    for i, (x, _) in enumerate(windows):  # equal lengths batch without padding (only the last can be shorter)
        by_length.setdefault(len(x), []).append(i)
    batches = [idx[s:s + batch_size] for idx in by_length.values() for s in range(0, len(idx), batch_size)]
    for batch in tqdm(batches, desc="perplexity", disable=not progress, leave=False):
        ids = torch.stack([windows[i][0] for i in batch]).to(device)  # (batch, tokens)
        labels = torch.stack([windows[i][1] for i in batch])[:, 1:]  # (batch, tokens-1): next-token targets
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
            j = int((~torch.isfinite(per_window)).nonzero()[0])
            raise ValueError(f"{type(model).__name__} in {_dtype_of(model)}: inf or nan loss in window {batch[j]} "
                             f"of {len(windows)}{' (' + where + ')' if where else ''}: the model overflows its "
                             f"dtype (float16 does in e.g. Gemma 3). Load it with dtype='bfloat16' or 'float32'.")
        for j, i in enumerate(batch):
            sums[i], counts[i] = float(per_window[j]), int(scored[j].sum())
    return sums, counts


def _summary(sums, counts, seqlen, stride, bos, windows) -> dict:
    n = sum(counts)
    nll = sum(sums) / n
    return {"ppl": math.exp(nll), "nll": nll, "n_tokens": n, "n_windows": len(sums), "seqlen": seqlen,
            "stride": stride, "bos_token_id": bos, "windows": windows, "window_nll": [s / c for s, c in zip(sums, counts)],
            "window_tokens": list(counts)}


def start_token(tokenizer, add_bos: bool | None = None) -> int | None:
    """The token id that starts every perplexity window, or None for none.

    ``add_bos=None`` (the default) follows the tokenizer: the special token it puts before a text by itself
    (the first id of ``tokenizer("x")`` if it is a special token: Gemma's ``<bos>``, LLaMA's ``<s>``), else none:
    SmolLM2's ``bos_token`` is the chat-turn opener ``<|im_start|>``, which its tokenizer never adds to plain
    text, and BLOOM's tokenizer adds nothing either. ``True`` forces ``tokenizer.bos_token`` and ``False``
    forces no start token (the explicit overrides).
    """
    if add_bos is False:
        return None
    if add_bos:
        if tokenizer.bos_token_id is None:
            raise ValueError(f"{type(tokenizer).__name__} has no bos_token; pass add_bos=False or None")
        return tokenizer.bos_token_id
    first = tokenizer("x")["input_ids"][:1]  # what the tokenizer itself puts before a text
    return first[0] if first and first[0] in tokenizer.all_special_ids else None


def perplexity(model: nn.Module, tokenizer, texts: str | Sequence[str], seqlen: int = 2048, stride: int | None = None,
               batch_size: int = 4, add_bos: bool | None = None, chunk_tokens: int = 512,
               progress: bool = False, windows: str = "overlapping") -> dict:
    """Perplexity of ``texts`` (joined by "\\n\\n", tokenized once) over windows of ``seqlen`` tokens.

    ``windows="overlapping"`` (default): every window starts with ``start_token(tokenizer, add_bos)`` (default:
    the token the tokenizer adds to a text itself, if any), counted in ``seqlen``. With ``stride`` below the
    window's text length, windows overlap and each scores only the tokens no earlier window scored; without a
    start token windows overlap by at least one token, so every token after the text's first is scored once.
    ``windows="disjoint"``: the authors' scheme (``text_windows``): back-to-back windows, tail dropped, each
    window's first token only read. Returns ``ppl``, ``nll`` (mean over scored tokens), ``n_tokens``,
    ``n_windows``, ``seqlen``, ``stride``, ``bos_token_id`` (the start token used, or None), ``windows``, and
    per-window ``window_nll`` (mean) and ``window_tokens`` (for resampling windows).
    """
    _check_seqlen(model, seqlen)
    cut, stride, bos = text_windows(tokenizer, texts, seqlen, stride, add_bos, windows)
    sums, counts = _score(model, cut, batch_size, chunk_tokens, progress)
    return _summary(sums, counts, seqlen, stride, bos, windows)
