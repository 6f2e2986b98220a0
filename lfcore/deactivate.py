"""Zero a set of MLP neurons for the lifetime of a ``with`` block: the ``"zero"`` case of ``intervene``.

>>> with deactivate(lm.model, {3: [5, 17]}):  # {layer: neuron indices}, e.g. KeyRegions.neurons(lang)
...     ppl = perplexity(lm.model, lm.tokenizer, text)
"""
from __future__ import annotations

from torch import nn

from .core import NeuronSet
from .intervene import intervene


class deactivate(intervene):
    """Context manager zeroing a neuron set at the neuron site of every layer named in it (see ``intervene``).

    ``neurons`` is ``{layer: neuron indices}``; ``site`` overrides the site template (``models.neuron_sites``). An
    empty set is bit-identical to the plain model; inside nested blocks inner and outer sets are both zeroed.
    """

    def __init__(self, model: nn.Module, neurons: NeuronSet | None, site: str | None = None):
        super().__init__(model, neurons, "zero", site=site)
