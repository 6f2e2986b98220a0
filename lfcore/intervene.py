"""Edit a set of MLP neurons for the lifetime of a ``with`` block: zero, scale, set, add, or patch them.

A *neuron set* maps a layer index to its neuron indices, e.g. ``{3: [5, 17], 10: tensor([2])}`` (as from
``KeyRegions.neurons(lang)``). They are edited at every token at the neuron site, the input of each layer's down
projection (``models.neuron_sites``), by forward pre-hooks; the model itself is never edited.

Modes, with ``a`` a neuron's activation at one token and ``v`` its value:

- ``zero``: ``a -> 0`` (no value);
- ``scale``: ``a -> v * a``;
- ``set``: ``a -> v`` (LAPE's "activate" with ``v`` a language's mean activation, ``core.language_means``);
- ``add``: ``a -> a + v`` (a steering vector);
- **patch** is ``set`` with one value row per prompt (``core.patch_values``): the region's pooled activation of the
  *same sentence in another language* (no token alignment), written into every token, generated ones included.

``value`` is a number (the same for every neuron) or ``{layer: tensor}`` with a tensor of shape (width,) (one value
per neuron of the layer; only the set's neurons are read) or (batch, width) (one row per prompt, in batch order;
``set`` and ``add`` only).

>>> with intervene(lm.model, regions.neurons("fr"), "set", language_means(acts, "fr")):
...     out = lm.model.generate(**batch)
"""
from __future__ import annotations

import math
from typing import Literal, Mapping, get_args

import torch
from torch import nn

from . import hooks
from .core import NeuronSet, validate_neurons
from .models import neuron_sites, neuron_width

Mode = Literal["zero", "scale", "set", "add"]


def _layer_value(mode: str, value, layer: int, idx: torch.Tensor, width: int) -> torch.Tensor:
    """The value of one layer restricted to its neurons ``idx``, float32 on the CPU: shape (), (k,) or (batch, k)."""
    if not isinstance(value, Mapping):
        return torch.tensor(float(value))  # a number, checked finite by intervene
    if layer not in value:
        raise ValueError(f"mode {mode!r}: value has no entry for layer {layer} of the neuron set "
                         f"(value layers: {sorted(value)}); pass one tensor of shape (width,) per layer")
    v = torch.as_tensor(value[layer]).detach().to("cpu", torch.float32)
    if v.ndim not in (1, 2) or v.shape[-1] != width:
        raise ValueError(f"mode {mode!r}, layer {layer}: value shape {tuple(v.shape)}, expected ({width},) or "
                         f"(batch, {width})")
    if v.ndim == 2 and mode == "scale":
        raise ValueError(f"mode 'scale', layer {layer}: one factor row per prompt is not supported; "
                         f"pass shape ({width},) or a number")
    v = v[..., idx]  # (k,) or (batch, k): only the set's neurons are read
    if not torch.isfinite(v).all():
        raise ValueError(f"mode {mode!r}, layer {layer}: the value is not finite (inf or nan)")
    return v


def _edit_fn(mode: str, idx: torch.Tensor, v: torch.Tensor):
    """A pre-hook function editing the neurons ``idx`` (k,) of its input with ``v`` of shape (), (k,) or (batch, k)."""

    def fn(x: torch.Tensor) -> torch.Tensor:  # x: (batch, tokens, neurons), or (batch*tokens, neurons) (OPT)
        i, val = idx.to(x.device), v.to(x.device, x.dtype)  # .to: a no-op unless device_map moved the input
        if val.ndim == 2:  # one row per prompt: (batch, k) -> (batch, 1, k) over the tokens
            if x.ndim != 3 or x.shape[0] != val.shape[0]:
                raise ValueError(f"a per-prompt value has {val.shape[0]} rows but the batch has shape "
                                 f"{tuple(x.shape)}: pass one value row per prompt, in batch order")
            val = val[:, None, :]
        out = x.clone()
        out[..., i] = x[..., i] * val if mode == "scale" else x[..., i] + val if mode == "add" else val  # zero, set
        return out

    return fn


class intervene(hooks.input_hooks):
    """Context manager editing a neuron set at the neuron site of every layer named in it.

    ``neurons`` is ``{layer: neuron indices}``, ``mode`` zero, scale, set or add (module doc), ``value`` its factor
    or value, ``site`` a site template (``models.neuron_sites``). All is validated before any hook exists; layers
    without neurons get no hook (an empty set is bit-identical to the plain model); nested, the outer edit runs
    first. Attributes: ``model``, ``mode``, ``neurons`` ({layer: LongTensor}), ``n_neurons``, ``n_layers``, ``width``.
    """

    def __init__(self, model: nn.Module, neurons: NeuronSet | None, mode: Mode = "zero",
                 value: float | Mapping[int, torch.Tensor] | None = None, site: str | None = None):
        if mode not in get_args(Mode):
            raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(get_args(Mode))}")
        if (mode == "zero") != (value is None):
            raise ValueError("mode 'zero' takes no value" if mode == "zero" else
                             f"mode {mode!r} needs a value: a number or {{layer: tensor (width,)}}")
        if value is not None and not isinstance(value, Mapping) and not math.isfinite(float(value)):
            raise ValueError(f"mode {mode!r}: value {value!r} is not finite")
        self.mode = mode
        names = neuron_sites(model, site)
        self.n_layers, self.width = len(names), neuron_width(model, site)
        self.neurons = validate_neurons(neurons or {}, self.n_layers, self.width)
        self.n_neurons = sum(int(v.numel()) for v in self.neurons.values())
        fns = {}
        for layer, idx in sorted(self.neurons.items()):
            if idx.numel() == 0:
                continue
            device = hooks.module_device(hooks.get_module(model, names[layer]))  # built once, on the module's device
            v = torch.tensor(0.0) if mode == "zero" else _layer_value(mode, value, layer, idx, self.width)
            fns[names[layer]] = _edit_fn(mode, idx.to(device), v.to(device))
        super().__init__(model, fns)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.mode}: {self.n_neurons} neurons in "
                f"{sum(1 for v in self.neurons.values() if v.numel())} of {self.n_layers} layers x {self.width})")

