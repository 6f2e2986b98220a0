"""Zero a set of MLP neurons for the lifetime of a ``with`` block.

A *neuron set* maps a layer index to the neuron indices of that layer, e.g. ``{3: [5, 17], 10: tensor([2])}``
(``KeyRegions.neurons(lang)`` and ``random_neurons(...)`` in ``regions.py`` produce them). The neurons are
zeroed at the neuron site, the input of each layer's down projection (``models.neuron_sites``), for every
token, through one generic forward pre-hook per layer (``hooks.input_hooks``). The model itself is never
edited, so leaving the block restores it bit for bit.

>>> with deactivate(lm.model, {3: [5, 17]}):
...     ppl = perplexity(lm.model, lm.tokenizer, text)
"""
from __future__ import annotations

import torch
from torch import nn

from . import hooks
from .core import NeuronSet, count_neurons, validate_neurons
from .models import neuron_sites, neuron_width


def _zero_fn(keep: torch.Tensor):
    """A pre-hook function zeroing the neurons where ``keep`` is False; ``keep`` has shape (neurons,)."""
    drop = ~keep

    def fn(x: torch.Tensor) -> torch.Tensor:
        mask = drop if drop.device == x.device else drop.to(x.device)  # device_map: normally the same device
        return x.masked_fill(mask, 0)  # (batch, tokens, neurons), mask broadcasts over batch and tokens

    return fn


class deactivate:
    """Context manager zeroing a neuron set at the neuron site of every layer named in it.

    ``neurons`` is ``{layer: neuron indices}``; ``site`` overrides the site template (see
    ``models.neuron_sites``). Everything is validated and every module resolved in the constructor, before
    any hook exists; hooks are registered on ``__enter__`` and removed on ``__exit__``, exceptions included.
    Layers without neurons get no hook, so an empty set is bit-identical to the plain model. Blocks nest:
    inner and outer sets are both zeroed inside the inner block.

    Attributes after construction: ``neurons`` (validated ``{layer: LongTensor}``), ``n_neurons``,
    ``n_layers``, ``width``.
    """

    def __init__(self, model: nn.Module, neurons: NeuronSet | None, site: str | None = None):
        self.model = model
        names = neuron_sites(model, site)
        self.n_layers, self.width = len(names), neuron_width(model, site)
        self.neurons = validate_neurons(neurons or {}, self.n_layers, self.width)
        self.n_neurons = count_neurons(self.neurons)
        self.fns = {}
        for layer, idx in sorted(self.neurons.items()):
            if idx.numel() == 0:
                continue
            name = names[layer]
            keep = torch.ones(self.width, dtype=torch.bool)
            keep[idx] = False
            keep = keep.to(hooks.module_device(hooks.get_module(model, name)))  # built once, on the module's device
            self.fns[name] = _zero_fn(keep)
        self._hooks: hooks.input_hooks | None = None

    def __enter__(self) -> "deactivate":
        if self._hooks is not None:
            raise RuntimeError("this deactivate block is already active; create a new one to nest")
        self._hooks = hooks.input_hooks(self.model, self.fns)
        self._hooks.__enter__()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        hooks_, self._hooks = self._hooks, None
        if hooks_ is not None:
            hooks_.close()
        return False

    def __repr__(self) -> str:
        return (f"deactivate({self.n_neurons} neurons in {sum(1 for v in self.neurons.values() if v.numel())} "
                f"of {self.n_layers} layers x {self.width})")
