"""Beyond the paper: steer and patch a language through its key region, and read the language of what the model
then writes (``langid.detect``).

A *condition* is a labelled ``intervene`` block; every region condition has a size-matched random control, edited
the same way with the same values. **Steering** sets target Y's region to ``strength`` x Y's mean activation
(strength 1 is LAPE's "activate") or adds that vector; **patching** sets it, whole or one band of layers, to the
pooled activation of the same sentence in Y, one row per prompt. Both hold at every token.

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

LABELS = ["condition", "target", "kind", "strength", "band"]  # a condition's columns in ``continuations``


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


def baseline() -> Condition:
    """The plain model, the reference row of every experiment."""
    return Condition("no intervention", None, "none", 0.0, "all", None)


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
        sets = {"region": regions.neurons(lang), "random": size_matched_control(regions, lang, seed)}
        means = language_means(acts, lang)  # {layer: (width,)}
        for s in strengths:
            value = {layer: float(s) * v for layer, v in means.items()}
            for kind, neurons in sets.items():
                out.append(Condition(f"{lang} {kind} x{s:g}", lang, kind, float(s), "all",
                                     intervene(lm.model, neurons, mode, value, lm.site)))
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
        sets = {"region": regions.neurons(lang), "random": size_matched_control(regions, lang, seed)}
        rows = patch_values(prompt_acts, lang, ids)  # {layer: (prompts, width)}
        for kind, neurons in sets.items():
            out.append(Condition(f"{lang} {kind} patched", lang, kind, float("nan"), "all",
                                 intervene(lm.model, neurons, "set", rows, lm.site)))
        for band in layer_bands(regions.layers, bands):
            part = {layer: idx for layer, idx in sets["region"].items() if layer in band}
            name = f"layers {band[0]}-{band[-1]}"
            out.append(Condition(f"{lang} region patched, {name}", lang, "region", float("nan"), name,
                                 intervene(lm.model, part, "set", {layer: rows[layer] for layer in band}, lm.site)))
    return out


def continuations(lm, prompts, conditions: list[Condition], max_new_tokens: int = 12) -> pd.DataFrame:
    """Greedy continuations of every prompt under every condition (all prompts in one batch), with their detected
    language. ``prompts``: a ``ParallelCorpus``, each record one prompt. One row per condition and prompt: the
    condition's labels (condition, target, kind, strength, band), lang (the prompt's), id, prompt, output,
    detected, confidence.
    """
    names = [c.name for c in conditions]
    if len(set(names)) != len(names):
        raise ValueError(f"condition names must be unique, got {names}")
    records = {lang: prompts.records_for(lang) for lang in prompts.languages}
    texts = {lang: [r.text for r in rs] for lang, rs in records.items()}
    df = generate(lm, texts, {c.name: c.block for c in conditions}, max_new_tokens).drop(columns=["output_ids"])
    df["id"] = [records[lang][i].sentence_id for lang, i in zip(df.lang, df["index"])]
    df["detected"], df["confidence"] = map(list, zip(*detect(list(df.output))))
    labels = pd.DataFrame([(c.name, c.target, c.kind, c.strength, c.band) for c in conditions], columns=LABELS)
    return labels.merge(df.drop(columns=["index"]), on="condition", how="right")[
        [*LABELS, "lang", "id", "prompt", "output", "detected", "confidence"]]


def perplexity_sets(steer: list[Condition]) -> dict[str, intervene]:
    """The region and random-control blocks of ``steering_conditions`` (one strength), named for a perplexity
    table (``evaluate.deactivation_table`` takes ``intervene`` blocks as sets)."""
    return {c.name: c.block for c in steer if c.block is not None}
