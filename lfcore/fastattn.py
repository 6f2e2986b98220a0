"""Fused attention for BLOOM: one kernel swap, switchable off, tested equal to the eager path.

transformers (5.x) has no SDPA path for BLOOM's ALiBi attention: its eager path writes (batch x heads, q, kv)
scores, a masked copy and an fp32 softmax, several GiB per layer at a 2048-token window. Inside the block,
``softmax(alibi + scale * q k^T + mask) v`` is computed as ``sdpa(q, k, v, attn_mask=alibi + mask, scale=scale)``
(the bias built once per forward pass); projections and cache stay the module's own. What SDPA does not cover
(``output_attentions``, training dropout, ``slow_but_exact``, a missing or boolean mask) runs the original forward.

>>> with fused_attention(lm.model):  # a no-op for models other than BLOOM; enabled=False keeps the eager path
...     ppl = perplexity(lm.model, lm.tokenizer, text)
"""
from __future__ import annotations

import os
import weakref
from contextlib import ExitStack

import torch
import torch.nn.functional as F
from torch import nn


class _SharedBias:
    """The bias ``alibi + mask`` of the current forward pass, keyed by weak references to both tensors and dtype."""

    key: tuple | None = None  # (weakref to alibi, weakref to mask, dtype) of ``bias``
    bias: torch.Tensor | None = None

    def get(self, alibi: torch.Tensor, mask: torch.Tensor, batch: int, heads: int, dtype: torch.dtype):
        if self.key is not None and self.key[0]() is alibi and self.key[1]() is mask and self.key[2] == dtype:
            return self.bias
        self.key, self.bias = None, None  # free the previous pass's bias before building the next
        a = alibi.view(batch, heads, 1, alibi.shape[-1])  # (batch, heads, 1, kv): slope * key position
        m = mask  # (batch, 1, q, kv): 0 or the dtype's min
        if batch > 1 and bool((a == a[:1]).all()) and bool((m == m[:1]).all()):
            a, m = a[:1], m[:1]  # no padding: one row serves the whole batch
        bias = (a + m.to(a.dtype)).to(dtype)  # (batch or 1, heads, q, kv)
        self.key, self.bias = (weakref.ref(alibi), weakref.ref(mask), dtype), bias
        return bias


def _fused_forward(module: nn.Module, original, shared: _SharedBias):
    """A drop-in ``BloomAttention.forward`` computing softmax(alibi + scale q k^T + mask) v with SDPA."""
    from transformers.models.bloom.modeling_bloom import dropout_add

    def forward(hidden_states, residual, alibi, attention_mask, layer_past=None, use_cache=False,
                output_attentions=False, **kwargs):
        if (output_attentions or attention_mask is None or not attention_mask.is_floating_point()
                or (module.training and module.attention_dropout.p > 0)
                or (module.pretraining_tp > 1 and module.slow_but_exact)):
            return original(hidden_states, residual, alibi=alibi, attention_mask=attention_mask,
                            layer_past=layer_past, use_cache=use_cache, output_attentions=output_attentions,
                            **kwargs)
        batch, q_len, _ = hidden_states.shape
        query, key, value = module._reshape(module.query_key_value(hidden_states))  # 3 x (batch, heads, q, head_dim)
        if layer_past is not None:
            key, value = layer_past.update(key, value, module.layer_idx)  # (batch, heads, kv, head_dim)
        bias = shared.get(alibi, attention_mask, batch, module.num_heads, query.dtype)  # (batch|1, heads, q, kv)
        context = F.scaled_dot_product_attention(query, key, value, attn_mask=bias, scale=module.inv_norm_factor)
        context = context.transpose(1, 2).reshape(batch, q_len, module.hidden_size)  # (batch, q, hidden)
        output = dropout_add(module.dense(context), residual, module.hidden_dropout, module.training)
        return output, None  # no attention probabilities: they are never materialised

    return forward


class fused_attention:
    """Context manager running BLOOM's attention through SDPA inside the block; a no-op for other models.

    ``enabled=None`` follows the environment (``LFCORE_FUSED_ATTENTION=0``, ``false``, ``off`` or ``no`` turns it
    off), ``False`` keeps the eager path. Blocks nest and the outermost decides, so ``perplexity`` (which opens a
    default block itself) runs eager inside ``fused_attention(model, enabled=False)``. Each ``BloomAttention``'s
    ``forward`` (under accelerate, its ``_old_forward``) is swapped and restored on exit; ``n_swapped`` counts them.
    """

    def __init__(self, model: nn.Module, enabled: bool | None = None):
        from transformers.models.bloom.modeling_bloom import BloomAttention  # heavy: imported on first use

        if enabled is None:
            enabled = os.environ.get("LFCORE_FUSED_ATTENTION", "1").strip().lower() not in ("0", "false", "off", "no")
        self.enabled = bool(enabled)
        self.modules = [m for m in model.modules() if isinstance(m, BloomAttention)]
        self.n_swapped = 0
        self._shared = _SharedBias()
        self._restore: ExitStack | None = None  # undoes every change of this block, last first

    def __enter__(self) -> "fused_attention":
        if self._restore is not None:
            raise RuntimeError("this fused_attention block is already active")
        self._restore = ExitStack()
        for module in self.modules:
            if hasattr(module, "_lfcore_fused"):  # an outer block already decided (swapped or kept eager)
                continue
            module._lfcore_fused = self.enabled
            self._restore.callback(delattr, module, "_lfcore_fused")
            if self.enabled:
                attr = "_old_forward" if "_old_forward" in module.__dict__ else "forward"  # accelerate wraps forward
                if attr in module.__dict__:
                    self._restore.callback(setattr, module, attr, module.__dict__[attr])
                else:  # the class's forward: delete the instance attribute again
                    self._restore.callback(delattr, module, attr)
                setattr(module, attr, _fused_forward(module, getattr(module, attr), self._shared))
                self.n_swapped += 1
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self._restore.close()
        self._restore, self.n_swapped = None, 0
        self._shared.key, self._shared.bias = None, None
        return False
