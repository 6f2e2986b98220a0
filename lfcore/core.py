"""The model-free core: labelled activations, neuron sets and their conversions (a mask to a set, a language's
mean or per-sentence activations as ``intervene`` values), table labels. Imports nothing else from lfcore, so the
math modules build on it without the model stack (import-linter, tests/test_layers.py).

>>> acts = Activations(values, ids, langs, layers, token_counts)  # values (n, n_layers, width)
>>> neurons = mask_to_set(mask, acts.layers)  # mask (n_layers, width) -> {layer: LongTensor}
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import torch

NeuronSet = Mapping[int, "Sequence[int] | torch.Tensor"]  # model layer -> neuron indices in that layer

FULL_COLUMN = "Full model Perplexity"  # the deactivation table's column of the unedited model
KEY_NUMBER, KEY_PERCENT = "Key Neuron Number", "Key Neuron Percentage"  # its rows of set sizes


@dataclass
class Activations:
    """Pooled neuron activations with their labels.

    values: (n_sentences, n_layers, n_neurons) float32, row r is sentence ``sentence_ids[r]`` in
    language ``langs[r]``; block b is model layer ``layers[b]``. token_counts: (n_sentences,) tokens
    pooled per row. meta: model identity, corpus, options. Select rows by label, never by position.
    Values must be finite: inf or nan raises ``ValueError`` naming the sentence, language and layer.
    Cached through ``entry()`` and ``from_entry``.
    """

    values: torch.Tensor
    sentence_ids: list[str]
    langs: list[str]
    layers: list[int]
    token_counts: torch.Tensor
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.values.dim() != 3:
            raise ValueError(f"values must be (sentences, layers, neurons), got shape {tuple(self.values.shape)}")
        n, n_layers, _ = self.values.shape
        if not len(self.sentence_ids) == len(self.langs) == len(self.token_counts) == n:
            raise ValueError(f"{n} rows of values, but {len(self.sentence_ids)} sentence ids, {len(self.langs)} "
                             f"languages and {len(self.token_counts)} token counts: one label of each per row")
        if len(self.layers) != n_layers:
            raise ValueError(f"{n_layers} layer blocks of values, but {len(self.layers)} layer labels {self.layers}")
        pairs = list(zip(self.sentence_ids, self.langs))
        if len(set(pairs)) != len(pairs):
            dup = next(p for i, p in enumerate(pairs) if p in pairs[:i])  # quadratic, but only on the error path
            raise ValueError(f"sentence {dup[0]!r} appears twice in language {dup[1]!r}")
        check_finite(self.values, self.sentence_ids, self.langs, self.layers, self.meta)

    @property
    def languages(self) -> list[str]:
        """Languages in order of first appearance."""
        return list(dict.fromkeys(self.langs))

    @property
    def ids(self) -> list[str]:
        """Sentence ids in order of first appearance."""
        return list(dict.fromkeys(self.sentence_ids))

    @property
    def width(self) -> int:
        return self.values.shape[2]

    def select(self, langs: Sequence[str] | None = None, ids: Iterable[str] | None = None,
               layers: Sequence[int] | None = None) -> "Activations":
        """A subset by labels: rows whose language is in ``langs`` and id in ``ids``; blocks in ``layers``.

        A lone string for ``langs`` or ``ids`` is one label. An unknown label raises ``ValueError``.
        """
        langs = [langs] if isinstance(langs, str) else langs
        ids = [ids] if isinstance(ids, str) else None if ids is None else list(ids)
        for name, wanted, have in (("language", langs, self.languages), ("sentence id", ids, self.ids),
                                   ("layer", layers, self.layers)):
            known = set(have)
            missing = [w for w in (wanted or []) if w not in known]
            if missing:
                shown = have if len(have) <= 20 else [*have[:20], f"... {len(have)} in all"]
                raise ValueError(f"{name}(s) {missing[:20]} not in these activations (have {shown})")
        keep_ids = None if ids is None else set(ids)
        rows = [r for r, (i, l) in enumerate(zip(self.sentence_ids, self.langs))
                if (langs is None or l in langs) and (keep_ids is None or i in keep_ids)]
        blocks = list(range(len(self.layers))) if layers is None else [self.layers.index(l) for l in layers]
        rows_t = torch.tensor(rows, dtype=torch.long)
        return Activations(self.values[rows_t][:, blocks], [self.sentence_ids[r] for r in rows],
                           [self.langs[r] for r in rows], [self.layers[b] for b in blocks],
                           self.token_counts[rows_t], dict(self.meta))

    def vectors(self, layers: Sequence[int] | None = None) -> torch.Tensor:
        """Unit-norm concatenation of the chosen layers' pooled vectors (paper eq. 6): (n, n_layers*width)."""
        x = (self.values if layers is None else self.select(layers=layers).values).flatten(1)  # (n, L*w)
        norms = x.norm(dim=1, keepdim=True)  # (n, 1)
        self.check_nonzero(norms[:, 0])
        return x / norms

    def check_nonzero(self, norms: torch.Tensor) -> None:
        """Raise ``ValueError`` naming the first sentence whose norm is 0, inf or nan: norms (n,) of whole rows,
        or (n, n_layers) of each layer's block (the message then names the layer too). Metrics call it on the norms
        they compute anyway, so values edited after construction are caught at use."""
        for bad, problem in ((~torch.isfinite(norms), "has inf or nan activations{} (values changed after the "
                              "Activations was built, which checked them): no score is computed from them; "
                              "recapture, or fix the code that edited .values"),
                             (norms == 0, "has an all-zero activation vector{}")):
            if bad.any():
                r, *b = bad.nonzero()[0].tolist()
                where = f" in layer {self.layers[b[0]]}" if b else ""
                raise ValueError(f"sentence {self.sentence_ids[r]!r} ({self.langs[r]}) " + problem.format(where))

    def entry(self) -> tuple[dict[str, torch.Tensor], dict]:
        """(tensors, JSON-able labels) for a cache entry: ``cache.write_entry(path, *acts.entry())``."""
        return ({"values": self.values, "token_counts": self.token_counts},
                {"sentence_ids": self.sentence_ids, "langs": self.langs, "layers": self.layers, "meta": self.meta})

    @classmethod
    def from_entry(cls, tensors: dict, meta: dict) -> "Activations":
        """The activations of a cache entry: ``Activations.from_entry(*cache.read_entry(path))``."""
        return cls(tensors["values"], meta["sentence_ids"], meta["langs"], meta["layers"],
                   tensors["token_counts"], meta["meta"])


@dataclass
class ActivationProbs:
    """P(neuron fires) per language and neuron. probs: (n_langs, n_layers, width) fp32; tokens: (n_langs,)."""

    probs: torch.Tensor
    langs: list[str]
    layers: list[int]
    tokens: torch.Tensor
    meta: dict = field(default_factory=dict)


def check_finite(values: torch.Tensor, sentence_ids: list[str], langs: list[str], layers: list[int],
                 meta: dict) -> None:
    """Raise ``ValueError`` naming the first sentence, language and layer whose values are inf or nan.

    >>> check_finite(values, ids, langs, layers, lm.meta())  # values (n, n_layers, width)

    Row r is labelled ``sentence_ids[r]``/``langs[r]``, block b ``layers[b]``; meta: the model's identity
    (``LoadedModel.meta()``), named when present. Only a non-finite total is searched (an overflowed total passes).
    """
    if torch.isfinite(values.sum()):
        return
    bad = (~torch.isfinite(values)).any(dim=2).nonzero()  # (k, 2): row, block
    if len(bad) == 0:
        return
    r, b = bad[0].tolist()
    model = f"{meta['model']} ({meta.get('model_type')}, {meta.get('dtype')}): " if "model" in meta else ""
    raise ValueError(f"{model}sentence {sentence_ids[r]!r} ({langs[r]}) has inf or nan activations at layer "
                     f"{layers[b]}: the model overflowed its dtype (float16 does in e.g. Gemma 3). "
                     f"Load it with dtype='bfloat16' or 'float32'.")


def layer_index(layer) -> int:
    """A layer label as a Python int: ``layer_index(numpy.int64(3)) == 3``.

    Numpy and torch integers are accepted; a bool, a float or a string (e.g. a JSON key) raises ``ValueError``.
    """
    if isinstance(layer, bool) or getattr(layer, "dtype", None) == torch.bool:
        raise ValueError(f"layer {layer!r} is a bool, not a layer index (for a mask pass mask.nonzero().flatten())")
    try:
        return operator.index(layer)
    except TypeError:
        raise ValueError(f"layer {layer!r} ({type(layer).__name__}) is not an integer layer index: layer keys "
                         f"must be integers (convert JSON keys with int())") from None


def validate_neurons(neurons: NeuronSet, n_layers: int, width: int) -> dict[int, torch.Tensor]:
    """Check a neuron set against a model's shape; return ``{layer: sorted unique LongTensor}`` on CPU.

    >>> validate_neurons({3: [17, 5]}, n_layers=18, width=2048)  # {3: tensor([5, 17])}

    Raises ``ValueError`` naming the bad layer or index and the valid range. Layers with no neurons are
    kept (as empty tensors) so callers can still report them; ``deactivate`` hooks nothing there.
    """
    if not isinstance(neurons, Mapping):
        raise ValueError(f"a neuron set must be a mapping {{layer: neuron indices}}, got {type(neurons).__name__}")
    out: dict[int, torch.Tensor] = {}
    for key, idx in neurons.items():
        layer = layer_index(key)
        if not 0 <= layer < n_layers:
            raise ValueError(f"layer {layer} is out of range: the model has {n_layers} layers (0..{n_layers - 1})")
        t = torch.as_tensor(idx).reshape(-1)
        if t.numel() and (t.dtype == torch.bool or t.is_floating_point() or t.is_complex()):
            raise ValueError(f"layer {layer}: neuron indices must be integers, got dtype {t.dtype} "
                             f"(for a boolean mask pass mask.nonzero().flatten())")
        t = t.to("cpu", torch.long)
        if t.numel() and (t.min() < 0 or t.max() >= width):
            bad = int(t.min() if t.min() < 0 else t.max())
            raise ValueError(f"layer {layer}: neuron index {bad} is out of range: each layer has {width} neurons "
                             f"(0..{width - 1})")
        out[layer] = torch.unique(torch.cat([out[layer], t]) if layer in out else t)  # sorted; keys 3 and int64(3)
    return out


def count_neurons(neurons: NeuronSet) -> int:
    """Number of distinct (layer, neuron) pairs in a neuron set: ``count_neurons({0: [1, 1, 2]}) == 2``."""
    return sum(int(torch.unique(torch.as_tensor(v).reshape(-1)).numel()) for v in neurons.values())


def mask_to_set(mask: torch.Tensor, layers: Sequence[int]) -> dict[int, torch.Tensor]:
    """The neurons of a boolean mask as a neuron set, layers without neurons omitted.

    >>> mask_to_set(regions.mask[k], regions.layers)  # mask (n_layers, width) -> {layer: LongTensor}
    """
    return {layer: mask[b].nonzero()[:, 0] for b, layer in enumerate(layers) if mask[b].any()}


def language_means(acts: Activations, lang: str) -> dict[int, torch.Tensor]:
    """Mean pooled activation of ``lang``'s sentences: ``{layer: (width,)}``, an ``intervene`` "set" value
    ("activate")."""
    rows = acts.select(langs=lang)
    return {layer: rows.values[:, b].mean(0) for b, layer in enumerate(rows.layers)}


def patch_values(acts: Activations, lang: str, ids: Sequence[str]) -> dict[int, torch.Tensor]:
    """The pooled activations of sentences ``ids`` in language ``lang``, one row per id in the given order:
    ``{layer: (len(ids), width)}``, the per-prompt ``intervene`` "set" value that patches from ``lang``.

    >>> with intervene(lm.model, region, "set", patch_values(acts, "fr", ids_of_the_prompts)): ...
    """
    rows = acts.select(langs=lang, ids=ids)
    order = torch.tensor([rows.sentence_ids.index(sid) for sid in ids], dtype=torch.long)  # select kept acts' order
    return {layer: rows.values[order, b] for b, layer in enumerate(rows.layers)}
