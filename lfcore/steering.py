"""Beyond the paper: steer and patch a language through its key region, and read the language of what the model
then writes (``langid.detect``).

A *condition* is a labelled ``intervene`` block. Every region condition has a control of the same size: a random
set with as many neurons in each layer as the region (``regions.random_neurons`` with per-layer sizes), edited
the same way with the same values; and every target language meets every prompt language, so the other
languages' regions are controls too.

- **steering** (``steering_conditions``): the target language Y's region is set to ``strength`` times Y's mean
  activation over the sample sentences (``intervene.language_means``; strength 1 is LAPE's "activate"), or that
  vector is added to it (``mode="add"``), at every token of the prompt and of the continuation.
- **patching** (``patch_conditions``): Y's region, whole or one band of consecutive layers, is set to the pooled
  activation of *the same sentence* in Y (``intervene.patch_values``): one value row per prompt, held over the
  prompt and every generated token (the intervene module doc defines patch).

``continuations`` generates under each condition (greedy, all prompts of all languages in one batch) and
labels every continuation with the detected language and its confidence.

>>> conds = steering_conditions(lm, key, acts, strengths=[1, 4])
>>> df = continuations(lm, prompts, conds, max_new_tokens=12)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .core import language_means, patch_values
from .evaluate import generate
from .intervene import Mode, intervene
from .langid import detect
from .regions import KeyRegions, random_neurons

NONE = "no intervention"


@dataclass
class Condition:
    """One generation condition: ``block`` (None: the plain model) and its labels. ``kind`` is "none", "region"
    or "random" (the size-matched control); ``strength`` is NaN for a patch; ``band`` "all" or "layers a-b"."""

    name: str
    target: str | None
    kind: str
    strength: float
    band: str
    block: intervene | None

    def labels(self) -> dict:
        return {"condition": self.name, "target": self.target, "kind": self.kind, "strength": self.strength,
                "band": self.band}


def baseline() -> Condition:
    """The plain model, the reference row of every experiment."""
    return Condition(NONE, None, "none", 0.0, "all", None)


def size_matched_control(regions: KeyRegions, lang: str, seed: int = 0) -> dict:
    """A random neuron set with exactly as many neurons in each layer as ``lang``'s key region."""
    region = regions.neurons(lang)
    sizes = [len(region.get(layer, ())) for layer in regions.layers]
    return random_neurons(regions.layers, regions.width, sizes, seed=seed)


def steering_conditions(lm, regions: KeyRegions, acts, strengths, mode: Mode = "set", seed: int = 0) -> list[Condition]:
    """For each language Y of ``regions`` and each strength s: Y's region, and its size-matched random control,
    set to (or, ``mode="add"``, shifted by) s x Y's mean activation in ``acts``."""
    if mode not in ("set", "add"):
        raise ValueError(f"steering mode must be 'set' or 'add', got {mode!r}")
    out = []
    for lang in regions.langs:
        region, control = regions.neurons(lang), size_matched_control(regions, lang, seed)
        means = language_means(acts, lang)  # {layer: (width,)}
        for s in strengths:
            value = {layer: float(s) * v for layer, v in means.items()}
            out.append(Condition(f"{lang} region x{s:g}", lang, "region", float(s), "all",
                                 intervene(lm.model, region, mode, value, lm.site)))
            out.append(Condition(f"{lang} random x{s:g}", lang, "random", float(s), "all",
                                 intervene(lm.model, control, mode, value, lm.site)))
    return out


def layer_bands(layers, n: int) -> list[list[int]]:
    """``layers`` cut into ``n`` bands of consecutive layers (sizes differ by at most one)."""
    return [list(map(int, band)) for band in np.array_split(np.asarray(list(layers)), min(n, len(layers)))]


def prompt_order(prompts) -> list[tuple[str, str]]:
    """(language, sentence id) of each prompt in the order ``continuations`` batches them."""
    return [(r.lang, r.sentence_id) for lang in prompts.languages for r in prompts.records_for(lang)]


def patch_conditions(lm, regions: KeyRegions, prompt_acts, prompts, targets, bands: int,
                     seed: int = 0) -> list[Condition]:
    """For each target Y: Y's whole region, its size-matched random control, and each band of Y's region alone,
    patched from Y: set, for each prompt, to the pooled activation of the same sentence in Y (``prompt_acts``,
    a capture of the prompt sentences)."""
    ids = [sid for _, sid in prompt_order(prompts)]
    out = []
    for lang in targets:
        region, control = regions.neurons(lang), size_matched_control(regions, lang, seed)
        rows = patch_values(prompt_acts, lang, ids)  # {layer: (prompts, width)}
        out.append(Condition(f"{lang} region patched", lang, "region", float("nan"), "all",
                             intervene(lm.model, region, "set", rows, lm.site)))
        out.append(Condition(f"{lang} random patched", lang, "random", float("nan"), "all",
                             intervene(lm.model, control, "set", rows, lm.site)))
        for band in layer_bands(regions.layers, bands):
            part = {layer: idx for layer, idx in region.items() if layer in band}
            name = f"layers {band[0]}-{band[-1]}"
            out.append(Condition(f"{lang} region patched, {name}", lang, "region", float("nan"), name,
                                 intervene(lm.model, part, "set", {layer: rows[layer] for layer in band}, lm.site)))
    return out


def continuations(lm, prompts, conditions: list[Condition], max_new_tokens: int = 12) -> pd.DataFrame:
    """Greedy continuations of every prompt under every condition, with their detected language.

    ``prompts``: a ``ParallelCorpus`` (each record one prompt). Returns one row per condition and prompt: the
    condition's labels (condition, target, kind, strength, band), lang (the prompt's), id, prompt, output,
    detected, confidence.
    """
    names = [c.name for c in conditions]
    if len(set(names)) != len(names):
        raise ValueError(f"condition names must be unique, got {names}")
    order = prompt_order(prompts)
    texts = {lang: [r.text for r in prompts.records_for(lang)] for lang in prompts.languages}
    df = generate(lm, texts, {c.name: c.block for c in conditions}, max_new_tokens).drop(columns=["output_ids"])
    start = {lang: next(k for k, (l, _) in enumerate(order) if l == lang) for lang in texts}
    df["id"] = [order[start[lang] + i][1] for lang, i in zip(df.lang, df["index"])]
    df["detected"], df["confidence"] = map(list, zip(*detect(list(df.output))))
    labels = pd.DataFrame([c.labels() for c in conditions])
    return labels.merge(df.drop(columns=["index"]), on="condition", how="right")[
        ["condition", "target", "kind", "strength", "band", "lang", "id", "prompt", "output", "detected",
         "confidence"]]


def perplexity_sets(steer: list[Condition]) -> dict[str, intervene]:
    """The region and random-control blocks of ``steering_conditions`` (one strength), named for a perplexity
    table (``evaluate.deactivation_table`` takes ``intervene`` blocks as sets)."""
    return {c.name: c.block for c in steer if c.block is not None}
