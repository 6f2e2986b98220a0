"""The cached steps the notebooks call: load a model, draw the sentences, run the deactivation table, accuracy,
generations, intervals, diagnostics and steering, and turn results into headline numbers. Every expensive step
goes through ``cache.Cache``, keyed by weights, texts, options and the ``cache.code_key`` of the code computing it.
"""
from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import sys
from importlib.metadata import version
from pathlib import Path

import pandas as pd

from .cache import Cache, code_key
from .capture import activation_probabilities, capture
from .core import FULL_COLUMN, Activations
from .corpus import ParallelCorpus, from_hf_dataset, load_corpus
from .diagnostics import compare_pooling, exclude_dominant
from .evaluate import DEFAULT_PROMPTS, FULL, crosslingual_accuracy, deactivation_table, generate
from .models import BUNDLED, load_model
from .perplexity import start_token
from .regions import random_neurons
from .robustness import lape, lape_overlap
from .specs import (AccuracySpec, CaptureSpec, CorpusSpec, GenerationSpec, ModelSpec, PerplexitySpec, RobustnessSpec,
                    SteeringSpec, UncertaintySpec)
from .steering import baseline, continuations, patch_conditions, perplexity_sets, steering_conditions
from .tasks.utils import XCOPA_FILE
from .uncertainty import score_intervals


def cache_dir(out: str | Path) -> Path:
    """Where results are cached: ``$LFCORE_CACHE/results`` if set, else ``<out>/cache``."""
    env = os.environ.get("LFCORE_CACHE")
    return Path(env) / "results" if env else Path(out) / "cache"


def activations(lm, corpus, cfg: CaptureSpec, cache: Cache) -> Activations:
    """``capture.capture`` of ``corpus`` with the ``CaptureSpec`` options (its fields are capture's keywords),
    through the cache."""
    return capture(lm, corpus, progress=False, cache=cache, **cfg.model_dump())


def load(m: ModelSpec):
    """``models.load_model`` for a ``ModelSpec``."""
    return load_model(m.spec, revision=m.revision, dtype=m.dtype, device_map=m.device_map, site=m.site,
                      tokenizer=m.tokenizer, tokenizer_revision=m.tokenizer_revision)


def label(m: ModelSpec) -> str:
    """How a model is named in tables and plots: its ``label``, what a bundled key is, or id@revision."""
    return m.label or BUNDLED.get(m.spec) or (f"{m.spec}@{m.revision}" if m.revision else Path(m.spec).name)


def full_corpus(c: CorpusSpec, langs: list[str]):
    """Every sentence of the corpus ``c`` names, in ``langs``, before the draw of ``sentences``."""
    if c.source == "bible":
        return load_corpus({lang: c.files[lang] for lang in langs}, books=c.books)
    if c.source.startswith("hf:"):
        return load_corpus(c.source, name=c.hf_config, split=c.split, langs=langs, id_column=c.id_column,
                           text_columns=c.text_columns, revision=c.revision)
    return load_corpus(c.source)


def sentences(c: CorpusSpec, langs: list[str]):
    """The parallel sample: ``c.n`` sentence ids present in every language of ``langs``, drawn with ``c.seed``."""
    return full_corpus(c, langs).select(langs, c.n, c.seed)


def perplexity_texts(cfg: PerplexitySpec, langs: list[str], tokenizer=None) -> dict[str, list[str]]:
    """``cfg.documents`` documents per language (bundled NTREX passages, a local corpus file, or XL-Sum),
    joined by a blank line and, with ``cfg.max_tokens``, cut after that many tokens of ``tokenizer``."""
    if cfg.source.startswith("hf:"):
        docs = {lang: [r.text for r in from_hf_dataset(cfg.source[3:], name=cfg.hf_configs[lang], split=cfg.split,
                                                       text_columns={lang: cfg.text_column}, revision=cfg.revision)
                       ][:cfg.documents] for lang in langs}
    else:
        full = load_corpus(cfg.source)
        docs = {lang: [r.text for r in full.records_for(lang)][:cfg.documents] for lang in langs}
    if cfg.max_tokens is None:
        return docs
    if tokenizer is None:
        raise ValueError("perplexity.max_tokens needs the tokenizer: perplexity_texts(cfg, langs, lm.tokenizer)")
    cut = {}
    for lang, texts in docs.items():
        text = "\n\n".join(texts)  # as lfcore.perplexity.perplexity joins documents
        ends = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        cut[lang] = [text[:ends[min(cfg.max_tokens, len(ends)) - 1][1]]]
    return cut


def key_region_sets(regions, cfg: PerplexitySpec) -> dict:
    """Neuron sets for Table 1: each language's key region, then a random set of ``random_percent`` of all
    neurons (None: the next whole percent above the largest key region, as in Table 4)."""
    sets = {lang: regions.neurons(lang) for lang in regions.langs}
    largest = 100 * max(regions.sizes()) / regions.total_neurons
    percent = cfg.random_percent if cfg.random_percent is not None else float(max(1, math.ceil(largest + 1e-9)))
    size = round(percent / 100 * regions.total_neurons)
    sets[f"Random {percent:g}%"] = random_neurons(regions.layers, regions.width, size, seed=cfg.seed)
    return sets


def perplexity_table(lm, texts: dict, sets: dict, cfg: PerplexitySpec, cache: Cache) -> pd.DataFrame:
    """``evaluate.deactivation_table`` through the cache."""
    bos = start_token(lm.tokenizer, cfg.add_bos) if cfg.windows == "overlapping" else None
    parts = dict(model=lm.meta(), texts=texts, sets=sets, seqlen=cfg.seqlen, stride=cfg.stride,
                 batch_size=cfg.batch_size, bos=bos, windows=cfg.windows, code=code_key(deactivation_table))
    return cache.frame("deactivation", parts, lambda: deactivation_table(
        lm, texts, sets, seqlen=cfg.seqlen, stride=cfg.stride, batch_size=cfg.batch_size, add_bos=cfg.add_bos,
        windows=cfg.windows, progress=False))


def task_accuracy(lm, cfg: AccuracySpec, cache: Cache, neurons=None) -> pd.DataFrame:
    """``evaluate.crosslingual_accuracy`` through the cache (the key covers the task files and their data)."""
    code = code_key(crosslingual_accuracy, data=("tasks", f"data/{XCOPA_FILE}"))
    parts = dict(model=lm.meta(), task=cfg.task, code=code, langs=cfg.languages, limit=cfg.limit,
                 neurons=neurons or {}, lm_eval=version("lm_eval"))
    def compute():
        with _quiet("lm_eval"):  # progress bars and per-task notices would fill the report
            return crosslingual_accuracy(lm, cfg.languages, task=cfg.task, limit=cfg.limit, neurons=neurons,
                                         batch_size=cfg.batch_size)

    return cache.frame("accuracy", parts, compute)


@contextlib.contextmanager
def _quiet(logger: str):
    """Silence stderr (child processes' too: lm-eval runs ``git describe``) and ``logger`` below ERROR in a block."""
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.ERROR)
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
        log.setLevel(level)


def generations(lm, cfg: GenerationSpec, sets: dict, cache: Cache) -> pd.DataFrame:
    """Greedy continuations (Appendix A) under the full model and each language's deactivated key region,
    as a wide table: one row per prompt, one column per condition."""
    prompts = {lang: (cfg.prompts or DEFAULT_PROMPTS)[lang][:cfg.prompts_per_language] for lang in cfg.languages}
    conditions = {FULL: None, **{f"×{lang}": sets[lang] for lang in cfg.languages}}
    parts = dict(model=lm.meta(), prompts=prompts, sets=conditions, max_new_tokens=cfg.max_new_tokens,
                 code=code_key(generate))
    long = cache.frame("generations", parts, lambda: generate(lm, prompts, conditions, cfg.max_new_tokens)
                       .drop(columns=["output_ids"]).rename(columns={"index": "number"}))
    wide = long.pivot(index=["lang", "number", "prompt"], columns="condition", values="output")
    return wide[list(conditions)].reset_index(level="number", drop=True)


def intervals(acts, cfg: UncertaintySpec, cache: Cache, per_layer: bool = True) -> pd.DataFrame:
    """``uncertainty.score_intervals`` (overall, and per layer unless ``per_layer`` is off) through the cache."""
    parts = dict(acts=acts.meta, rows=[acts.sentence_ids, acts.langs], per_layer=per_layer,
                 code=code_key(score_intervals), **cfg.model_dump())
    return cache.frame("intervals", parts, lambda: score_intervals(acts, per_layer=per_layer, **cfg.model_dump()))


def interval_numbers(intervals: pd.DataFrame, suffix: str = "") -> dict:
    """Headline LRDS and SADS (whole model) with interval and p-value, from ``score_intervals``."""
    overall = intervals[intervals.layer.astype(str) == "all"].set_index("metric")
    return {m.upper() + suffix: {"estimate": float(r.estimate), "ci": [float(r.ci_low), float(r.ci_high)],
                        "p": float(r.p_value)} for m, r in overall.iterrows()}


def table_numbers(table: pd.DataFrame, intervals: pd.DataFrame | None = None) -> dict:
    """Headline numbers of a deactivation table: each language's % increase when its own region is off (the
    diagonal, with its interval), the random set's increase, and the full-model perplexity."""
    langs = [c for c in table.columns if c in table.index]
    diagonal = {lang: {"estimate": round(float(table.loc[lang, lang]), 1)} for lang in langs}
    if intervals is not None:
        ci = intervals.set_index(["lang", "condition"])
        for lang in langs:
            diagonal[lang]["ci"] = [round(float(ci.loc[(lang, lang), k]), 1) for k in ("ci_low", "ci_high")]
    randoms = {f"{c} % increase": {lang: round(float(table.loc[lang, c]), 1) for lang in langs}
               for c in table.columns if str(c).startswith("Random")}
    return {"own-region % increase (diagonal)": diagonal, **randoms,
            "full-model perplexity": {lang: round(float(table.loc[lang, FULL_COLUMN]), 2) for lang in langs}}


def first_token_effect(lm, corpus, acts, cfg: CaptureSpec, n: int, cache: Cache) -> pd.DataFrame:
    """``diagnostics.compare_pooling`` of ``n`` sentence ids of ``acts`` and their recapture without the first token."""
    subset = corpus.select(corpus.languages, min(n, len(corpus.ids)), seed=0)
    skip = activations(lm, subset, cfg.model_copy(update={"skip_first": True}), cache)
    return compare_pooling(acts.select(ids=subset.ids), skip, names=("all_tokens", "skip_first"))


def flagged_layers(dominance: pd.DataFrame) -> list[int]:
    """Layers flagged as dominated in a ``diagnostics.dominance`` / ``exclusion_table`` frame."""
    return [int(l) for l in dominance.layer[dominance.dominant]]


def without_dominant(acts, dominance: pd.DataFrame, k: int):
    """``acts`` with the dominant neurons of the flagged layers zeroed (unchanged if none is flagged)."""
    return exclude_dominant(acts, k, layers=flagged_layers(dominance))


def stability_numbers(table: pd.DataFrame) -> dict:
    """Mean (min, max) Jaccard overlap per language from ``robustness.stability_halves``."""
    g = table.groupby("lang", sort=False).jaccard
    return {"key-region Jaccard between disjoint halves, mean [min, max]":
            {lang: {"estimate": round(float(m), 3), "ci": [round(float(lo), 3), round(float(hi), 3)]}
             for lang, m, lo, hi in zip(g.mean().index, g.mean(), g.min(), g.max())}}


def lape_comparison(lm, corpus, regions, cfg: RobustnessSpec, capture: CaptureSpec, cache: Cache) -> pd.DataFrame:
    """``robustness.lape_overlap`` of LAPE neurons (Tang et al. 2024) with the key regions, through the cache;
    an empty frame when ``cfg.lape`` is off."""
    if not cfg.lape:
        print("LAPE comparison off (robustness.lape: false)")
        return pd.DataFrame(columns=["lang", "lape_neurons", "key_neurons", "shared", "jaccard"])
    parts = dict(model=lm.meta(), corpus=corpus.fingerprint(), capture=capture.model_dump(), regions=regions.mask,
                 code=code_key(activation_probabilities, lape, lape_overlap))
    return cache.frame("lape", parts, lambda: lape_overlap(lape(activation_probabilities(
        lm, corpus, batch_size=capture.batch_size, max_length=capture.max_length,
        pool_special_tokens=capture.pool_special_tokens, progress=False)), regions))


def held_out_prompts(c: CorpusSpec, langs: list[str], sample, n: int, seed: int):
    """The steering prompts: ``n`` sentence ids in every language of ``langs`` and not in ``sample`` (the sentences
    the key regions are found on), as a ``ParallelCorpus``."""
    full = full_corpus(c, langs).select(langs)
    used = set(sample.ids)
    rest = ParallelCorpus([r for r in full.records if r.sentence_id not in used], name=full.name, meta=full.meta)
    if len(rest.ids) < n:
        raise ValueError(f"steering.prompts_per_language: {n} held-out sentence ids needed, but the corpus has only "
                         f"{len(rest.ids)} outside the sample of corpus.n = {len(used)}; lower one of them")
    return rest.select(langs, n, seed)


def _steering_parts(lm, regions, acts, prompts, cfg: SteeringSpec) -> dict:
    """Cache parts of every steering result: weights, regions, activations, prompts, options, detector, code."""
    return dict(model=lm.meta(), regions=regions.mask, acts=acts.meta, rows=[acts.sentence_ids, acts.langs],
                prompts=prompts.fingerprint(), max_new_tokens=cfg.max_new_tokens, seed=cfg.seed,
                py3langid=version("py3langid"), code=code_key(continuations, steering_conditions, patch_conditions))


def steering_generations(lm, regions, acts, prompts, cfg: SteeringSpec, cache: Cache) -> pd.DataFrame:
    """``steering.continuations`` with no intervention and with every language's region (and its random control)
    steered at each of ``cfg.strengths``, through the cache."""
    parts = dict(_steering_parts(lm, regions, acts, prompts, cfg), mode=cfg.mode, strengths=cfg.strengths)
    return cache.frame("steering", parts, lambda: continuations(
        lm, prompts, [baseline(), *steering_conditions(lm, regions, acts, cfg.strengths, cfg.mode, cfg.seed)],
        cfg.max_new_tokens))


def patching_generations(lm, regions, prompt_acts, prompts, cfg: SteeringSpec, cache: Cache) -> pd.DataFrame:
    """``steering.continuations`` with each of ``cfg.patch_languages`` (None: the regions' first three) patched
    in from ``prompt_acts`` (a capture of the prompts): whole region, random control, band by band; cached."""
    targets = cfg.patch_languages or list(regions.langs)[:3]
    parts = dict(_steering_parts(lm, regions, prompt_acts, prompts, cfg), targets=targets, bands=cfg.layer_bands)
    return cache.frame("patching", parts, lambda: continuations(
        lm, prompts, patch_conditions(lm, regions, prompt_acts, prompts, targets, cfg.layer_bands, cfg.seed),
        cfg.max_new_tokens))


def steering_perplexity(lm, regions, acts, ppl: PerplexitySpec, cfg: SteeringSpec, cache: Cache) -> pd.DataFrame:
    """A deactivation-style table (% change over the plain model) with each language's region (and its random
    control) steered at ``cfg.perplexity_strength``, on the first ``cfg.perplexity_tokens`` tokens of each
    language's ``ppl`` text, through the cache."""
    texts = perplexity_texts(ppl.model_copy(update={"max_tokens": cfg.perplexity_tokens}), list(regions.langs),
                             lm.tokenizer)
    parts = dict(model=lm.meta(), regions=regions.mask, acts=acts.meta, rows=[acts.sentence_ids, acts.langs],
                 texts=texts, mode=cfg.mode, strength=cfg.perplexity_strength, seed=cfg.seed, seqlen=ppl.seqlen,
                 batch_size=ppl.batch_size, bos=start_token(lm.tokenizer, ppl.add_bos),
                 code=code_key(deactivation_table, steering_conditions, perplexity_sets))
    return cache.frame("steering_perplexity", parts, lambda: deactivation_table(
        lm, texts, perplexity_sets(steering_conditions(lm, regions, acts, [cfg.perplexity_strength], cfg.mode,
                                                       cfg.seed)),
        seqlen=ppl.seqlen, batch_size=ppl.batch_size, add_bos=ppl.add_bos, progress=False))
