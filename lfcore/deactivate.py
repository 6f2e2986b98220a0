"""Zero a set of MLP neurons for the lifetime of a ``with`` block: the ``"zero"`` case of ``intervene``.

A *neuron set* maps a layer index to the neuron indices of that layer, e.g. ``{3: [5, 17], 10: tensor([2])}``
(``KeyRegions.neurons(lang)`` and ``random_neurons(...)`` in ``regions.py`` produce them). The neurons are
zeroed at the neuron site, the input of each layer's down projection (``models.neuron_sites``), for every
token, through one generic forward pre-hook per layer (``hooks.input_hooks``). The model itself is never
edited, so leaving the block restores it bit for bit.

>>> with deactivate(lm.model, {3: [5, 17]}):
...     ppl = perplexity(lm.model, lm.tokenizer, text)
"""
from __future__ import annotations

from torch import nn

from .core import NeuronSet
from .intervene import intervene


class deactivate(intervene):
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
        super().__init__(model, neurons, "zero", site=site)
