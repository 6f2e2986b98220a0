"""Regenerate the paper's tables and figures: typed params files, cached steps, the notebook runner, the CLI.

- Params: a YAML file is checked against ``Params`` (nested dataclasses). An unknown key, a wrong type, a
  missing file or an unknown language raises ``ParamsError`` naming the key path and the file. Paths are
  relative to the params file and are stored resolved.
- Notebook helpers: the notebooks in ``notebooks/`` call ``notebook_params`` to validate their parameters
  cell, ``Report`` to show and save figures (JSON) and tables (CSV), ``ResultCache`` for content-keyed
  caching of expensive steps, and ``run_series`` for checkpoint and size series.
- Runner: ``reproduce(params_file)`` executes each notebook's jupytext source with papermill, injecting
  its sections of the params file, and writes the executed ``.ipynb``, a self-contained offline HTML report
  (plotly.js embedded once, no CDN) and ``index.html`` linking every report, table and figure.
- CLI: ``lfcore reproduce PARAMS [--only obs1,obs2] [--out DIR]`` and ``lfcore scores MODEL``.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import functools
import gc
import hashlib
import html
import io
import json
import logging
import math
import os
import sys
import time
import types
import typing
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pandas as pd

from .cache import atomic_write

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
LANGS9 = ["ar", "zh", "en", "fr", "hi", "id", "pt", "es", "vi"]
BUNDLED_CORPORA = ("ntrex128", "ntrex128-passages")

# ------------------------------------------------------------------------------------------------ params


@dataclass
class ModelSpec:
    """One model: a bundled key, ``tiny:<family>-<hidden>``, a folder or .gguf file (relative to the params
    file), or a hub id with ``revision``. ``label``, ``step`` and ``params`` (parameter count) name it in plots."""

    spec: str = "gemma-3-270m"
    revision: str | None = None
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = "float32"
    device_map: str | None = None
    label: str | None = None
    step: int | None = None
    params: float | None = None


@dataclass
class CorpusSpec:
    """Parallel sentences for the similarity map: ``ntrex128`` (bundled), a .jsonl/.tsv file, ``bible``
    (Christodoulopoulos & Steedman XML, one file per language in ``files``) or ``hf:<dataset id>``."""

    source: str = "ntrex128"
    files: dict[str, str] | None = None
    books: list[str] | None = None
    hf_config: str | None = None
    split: str = "train"
    id_column: str | None = None
    text_columns: dict[str, str] | None = None
    n: int = 100
    seed: int = 0


@dataclass
class CaptureSpec:
    batch_size: int = 16
    max_length: int = 512
    pool_special_tokens: bool = False
    skip_first: bool = False


@dataclass
class RegionSpec:
    threshold: float = 2.0
    sweep: list[float] = field(default_factory=lambda: [1.0, 1.5, 2.0, 2.5])


@dataclass
class PerplexitySpec:
    """Text for Table 1: ``ntrex128-passages`` (bundled) or ``hf:csebuetnlp/xlsum`` with ``hf_configs``."""

    source: str = "ntrex128-passages"
    hf_configs: dict[str, str] | None = None
    split: str = "test"
    text_column: str = "text"
    documents: int = 3
    max_tokens: int | None = None  # cut each language's text to this many tokens (equal cost per language)
    seqlen: int = 256
    stride: int | None = None
    batch_size: int = 4
    random_percent: float | None = 10.0  # None: just above the largest key region (the paper's Table 4)
    seed: int = 0


@dataclass
class AccuracySpec:
    task: Literal["xcopa_xl", "xstorycloze_xl"] = "xcopa_xl"
    languages: list[str] = field(default_factory=lambda: ["en", "id", "vi", "zh"])
    limit: int | None = 50
    batch_size: int = 8


@dataclass
class GenerationSpec:
    languages: list[str] = field(default_factory=lambda: ["en", "zh", "fr"])
    prompts: dict[str, list[str]] | None = None  # None: evaluate.DEFAULT_PROMPTS
    prompts_per_language: int = 3
    max_new_tokens: int = 32


@dataclass
class UncertaintySpec:
    n_boot: int = 1000
    n_perm: int = 1000
    level: float = 0.95
    seed: int = 0


@dataclass
class DiagnosticsSpec:
    k: int = 5  # dominant neurons per layer
    share: float = 0.5  # a layer is flagged when its top-k neurons hold more than this share of the squared norm
    first_token_sentences: int = 30  # sentence ids recaptured without their first token


@dataclass
class RobustnessSpec:
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])  # random splits into disjoint halves
    lape: bool = True  # also select neurons by LAPE (one more pass over the sentences) and compare


@dataclass
class MapSpec:
    sentences: int = 100  # sentence ids per language in the similarity map (Figure 2)
    layer_sentences: int = 12  # ... in the per-layer slider (one map per layer goes into the HTML)
    family_sentences: int = 40  # ... in each map of the side-by-side family figure (Figure 8)


@dataclass
class SeriesSpec:
    models: list[ModelSpec] = field(default_factory=lambda: [ModelSpec()])
    note: str = ""


@dataclass
class Params:
    title: str = "lfcore report"
    notebooks: list[str] = field(default_factory=lambda: list(NOTEBOOKS))
    languages: list[str] = field(default_factory=lambda: list(LANGS9))
    model: ModelSpec = field(default_factory=ModelSpec)
    corpus: CorpusSpec = field(default_factory=CorpusSpec)
    capture: CaptureSpec = field(default_factory=CaptureSpec)
    regions: RegionSpec = field(default_factory=RegionSpec)
    perplexity: PerplexitySpec = field(default_factory=PerplexitySpec)
    accuracy: AccuracySpec = field(default_factory=AccuracySpec)
    generation: GenerationSpec = field(default_factory=GenerationSpec)
    uncertainty: UncertaintySpec = field(default_factory=UncertaintySpec)
    diagnostics: DiagnosticsSpec = field(default_factory=DiagnosticsSpec)
    robustness: RobustnessSpec = field(default_factory=RobustnessSpec)
    maps: MapSpec = field(default_factory=MapSpec)
    checkpoints: SeriesSpec = field(default_factory=SeriesSpec)
    sizes: SeriesSpec = field(default_factory=SeriesSpec)
    family: SeriesSpec = field(default_factory=SeriesSpec)


# notebook key -> (jupytext source stem, title, params sections injected into it)
NOTEBOOKS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "obs1": ("obs1_similarity", "Observation I: similarity map and layer-wise LRDS/SADS",
             ("languages", "model", "corpus", "capture", "uncertainty", "diagnostics", "maps")),
    "obs2": ("obs2_regions", "Observation II: key linguistic regions and deactivation",
             ("languages", "model", "corpus", "capture", "regions", "perplexity", "generation", "uncertainty",
              "diagnostics", "robustness")),
    "obs3": ("obs3_training", "Observation III: linguistic regions over training",
             ("languages", "checkpoints", "corpus", "capture", "regions", "uncertainty")),
    "obs4": ("obs4_alignment", "Observation IV: semantic alignment over training",
             ("languages", "checkpoints", "corpus", "capture", "regions", "accuracy", "uncertainty")),
    "obs5": ("obs5_scale", "Observation V: model scale",
             ("languages", "sizes", "corpus", "capture", "regions", "accuracy", "uncertainty")),
    "appendix": ("appendix_llama2", "Appendix C: an English-centric model family",
                 ("languages", "family", "corpus", "capture", "regions", "perplexity", "accuracy", "uncertainty",
                  "diagnostics", "maps")),
}


class ParamsError(ValueError):
    """A params file (or a notebook's parameters) does not match ``Params``; the message names key and file."""


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value, tp, where: str):
    """``value`` checked against type ``tp`` (dataclass, list, dict, Literal, Optional, scalar)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for a in options:
            try:
                return _coerce(value, a, where)
            except ParamsError as e:
                errors.append(e)
        raise errors[0]
    if origin is Literal:
        if value not in args:
            raise ParamsError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if dataclasses.is_dataclass(tp):
        return _build(value, tp, where)
    if origin is list:
        if not isinstance(value, list):
            raise ParamsError(f"{where}: expected a list, got {type(value).__name__} ({value!r})")
        return [_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ParamsError(f"{where}: expected a mapping, got {type(value).__name__} ({value!r})")
        return {_coerce(k, args[0], f"{where} key"): _coerce(v, args[1], f"{where}.{k}") for k, v in value.items()}
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool) and (type(value) is not tp):
        raise ParamsError(f"{where}: expected {_type_name(tp)}, got {type(value).__name__} ({value!r})")
    return value


def _build(data, cls, where: str):
    """A ``cls`` instance from a mapping, rejecting unknown keys (with a close-match hint)."""
    if not isinstance(data, dict):
        raise ParamsError(f"{where or 'top level'}: expected a mapping of {cls.__name__} keys, got {data!r}")
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    path = (lambda k: f"{where}.{k}") if where else str
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"did you mean {path(close[0])!r}? " if close else ""
            raise ParamsError(f"unknown key {path(key)!r} ({hint}known keys here: {', '.join(known)})")
    return cls(**{k: _coerce(v, hints[k], path(k)) for k, v in data.items()})


def _resolve(path: str, base: Path, where: str) -> str:
    p = (base / Path(path).expanduser()).resolve()
    if not p.exists():
        raise ParamsError(f"{where}: file not found: {p} (paths are relative to the params file's folder {base})")
    return str(p)


def _check_languages(langs: list[str], where: str, available=None, what: str = "") -> None:
    from .corpus import check_language

    for i, lang in enumerate(langs):
        try:
            check_language(lang)
        except ValueError as e:
            raise ParamsError(f"{where}[{i}]: {e}") from None
        if available is not None and lang not in available:
            raise ParamsError(f"{where}[{i}]: language {lang!r} is not available in {what} "
                              f"(available: {', '.join(sorted(available))})")


@functools.lru_cache(maxsize=8)
def _languages_of(source: str) -> tuple[str, ...]:
    """Languages of a bundled corpus or a local corpus file (read once)."""
    from .corpus import load_corpus

    try:
        return tuple(load_corpus(source).languages)
    except ValueError as e:
        raise ParamsError(f"cannot read corpus {source}: {e}") from None


def _model_path(m: ModelSpec, base: Path, where: str) -> None:
    """Resolve a folder or .gguf spec relative to the params file; leave keys and hub ids alone."""
    from .models import BUNDLED

    if m.spec in BUNDLED or m.spec.startswith("tiny:"):
        return
    if m.spec.startswith((".", "/", "~")) or m.spec.endswith(".gguf") or (base / m.spec).exists():
        m.spec = _resolve(m.spec, base, f"{where}.spec")


def _check(p: Params, base: Path, present: set[str]) -> None:
    """Cross-field checks: files exist, languages exist in the corpus, task and prompts."""
    from .evaluate import DEFAULT_PROMPTS, tasks_dir

    if "notebooks" in present:
        for i, nb in enumerate(p.notebooks):
            if nb not in NOTEBOOKS:
                raise ParamsError(f"notebooks[{i}]: unknown notebook {nb!r} (known: {', '.join(NOTEBOOKS)})")
    if len(p.languages) < 2 or len(set(p.languages)) != len(p.languages):
        raise ParamsError(f"languages: need at least 2 distinct languages, got {p.languages}")
    _check_languages(p.languages, "languages")
    c = p.corpus
    if c.source in BUNDLED_CORPORA:
        _check_languages(p.languages, "languages", _languages_of(c.source), f"the bundled corpus {c.source!r}")
    elif c.source == "bible":
        if not c.files:
            raise ParamsError("corpus.files: source 'bible' needs files: {lang: path to the XML file}")
        c.files = {lang: _resolve(f, base, f"corpus.files.{lang}") for lang, f in c.files.items()}
        _check_languages(p.languages, "languages", c.files, "corpus.files")
    elif not c.source.startswith("hf:"):
        c.source = _resolve(c.source, base, "corpus.source")
        _check_languages(p.languages, "languages", _languages_of(c.source), f"corpus.source {c.source}")
    if c.n < 2:
        raise ParamsError(f"corpus.n: need at least 2 sentences per language, got {c.n}")
    if p.perplexity.source.startswith("hf:"):
        _check_languages(p.languages, "languages", p.perplexity.hf_configs or {}, "perplexity.hf_configs")
    else:
        if p.perplexity.source not in BUNDLED_CORPORA:
            p.perplexity.source = _resolve(p.perplexity.source, base, "perplexity.source")
        _check_languages(p.languages, "languages", _languages_of(p.perplexity.source),
                         f"perplexity.source {p.perplexity.source}")
    task_langs = {f.stem.removeprefix(f"{p.accuracy.task}_") for f in tasks_dir().glob(f"{p.accuracy.task}_*.yaml")}
    _check_languages(p.accuracy.languages, "accuracy.languages", task_langs, f"task {p.accuracy.task!r}")
    prompts = p.generation.prompts or DEFAULT_PROMPTS
    _check_languages(p.generation.languages, "generation.languages", prompts, "generation.prompts")
    _model_path(p.model, base, "model")
    for name in ("checkpoints", "sizes", "family"):
        series = getattr(p, name)
        if not series.models:
            raise ParamsError(f"{name}.models: need at least one model")
        for i, m in enumerate(series.models):
            _model_path(m, base, f"{name}.models[{i}]")


def params_from_dict(data: dict, base: str | Path = ".", source: str = "params") -> Params:
    """Validate a parsed params mapping; errors are prefixed with ``source`` (the file name)."""
    try:
        p = _build(data or {}, Params, "")
        _check(p, Path(base).resolve(), set(data or {}))
    except ParamsError as e:
        raise ParamsError(f"{source}: {e}") from None
    return p


def load_params(path: str | Path) -> Params:
    """Read and validate a params YAML file (see ``Params``); raise ``ParamsError`` naming key and file."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"params file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML: {e}") from None
    return params_from_dict(data, path.parent, str(path))


def notebook_params(base_dir: str | Path = ".", **sections) -> Params:
    """Validate a notebook's parameters cell (the sections it uses); other sections keep their defaults."""
    return params_from_dict(sections, base_dir, "notebook parameters")


def sections_for(p: Params, notebook: str) -> dict:
    """The params sections a notebook takes, as plain literals for papermill."""
    return {name: dataclasses.asdict(getattr(p, name)) if dataclasses.is_dataclass(getattr(p, name))
            else getattr(p, name) for name in NOTEBOOKS[notebook][2]}


# ----------------------------------------------------------------------------------------- cached steps


def digest(obj) -> str:
    """A short content hash of a JSON-able object (tensors as lists)."""
    def default(o):
        if hasattr(o, "detach"):  # a tensor: its bytes, dtype and shape
            a = o.detach().cpu().contiguous().numpy()
            return [hashlib.sha256(a.tobytes()).hexdigest(), str(a.dtype), list(a.shape)]
        return o.tolist() if hasattr(o, "tolist") else str(o)
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=default).encode()).hexdigest()[:16]


def cache_dir(out: str | Path) -> Path:
    """Where results are cached: ``$LFCORE_CACHE/results`` if set, else ``<out>/cache``."""
    env = os.environ.get("LFCORE_CACHE")
    return Path(env) / "results" if env else Path(out) / "cache"


class ResultCache:
    """Content-keyed cache of expensive results (``lfcore.cache.Store``) that counts hits and misses."""

    def __init__(self, root: str | Path | None):
        from .cache import Store

        self.store = Store(root) if root else None
        self.hits, self.misses = Counter(), Counter()

    def frame(self, kind: str, parts: dict, compute) -> pd.DataFrame:
        """``compute()`` (a DataFrame) unless a frame with the same ``parts`` is cached."""
        import torch

        from .cache import make_key

        key = make_key(kind=kind, **parts)
        if self.store is not None and (hit := self.store.get(kind, key)) is not None:
            self.hits[kind] += 1
            meta = hit[1]
            df = pd.read_json(io.StringIO(meta["frame"]), orient="table")
            df.attrs.update(meta["attrs"])
            return df
        self.misses[kind] += 1
        df = compute()
        if self.store is not None:
            self.store.put(kind, key, {"none": torch.zeros(0)},
                           {"frame": df.to_json(orient="table", force_ascii=False), "attrs": df.attrs})
        return df

    def activations(self, lm, corpus, cfg: CaptureSpec):
        """``capture.capture`` with this cache; a new cache entry counts as a miss."""
        from .capture import capture

        folder = None if self.store is None else self.store.root / "activations"
        before = set(folder.glob("*.json")) if folder and folder.exists() else set()
        acts = capture(lm, corpus, batch_size=cfg.batch_size, max_length=cfg.max_length, progress=False,
                       pool_special_tokens=cfg.pool_special_tokens, skip_first=cfg.skip_first, cache=self.store)
        after = set(folder.glob("*.json")) if folder and folder.exists() else set()
        (self.misses if after - before or self.store is None else self.hits)["activations"] += 1
        return acts

    def summary(self) -> dict:
        return {"hits": dict(self.hits), "misses": dict(self.misses)}


def load(m: ModelSpec):
    """``models.load_model`` for a ``ModelSpec``."""
    from .models import load_model

    return load_model(m.spec, revision=m.revision, dtype=m.dtype, device_map=m.device_map)


def label(m: ModelSpec) -> str:
    return m.label or (f"{m.spec}@{m.revision}" if m.revision else Path(m.spec).name)


def sentences(c: CorpusSpec, langs: list[str]):
    """The parallel sample: ``c.n`` sentence ids present in every language of ``langs``, drawn with ``c.seed``."""
    from .corpus import load_corpus

    if c.source == "bible":
        full = load_corpus({lang: c.files[lang] for lang in langs}, books=c.books)
    elif c.source.startswith("hf:"):
        full = load_corpus(c.source, name=c.hf_config, split=c.split, langs=langs, id_column=c.id_column,
                           text_columns=c.text_columns)
    else:
        full = load_corpus(c.source)
    return full.select(langs, c.n, c.seed)


def perplexity_texts(cfg: PerplexitySpec, langs: list[str], tokenizer=None) -> dict[str, list[str]]:
    """``cfg.documents`` documents per language (bundled NTREX passages, a local corpus file, or XL-Sum),
    joined by a blank line and, with ``cfg.max_tokens``, cut after that many tokens of ``tokenizer``."""
    from .corpus import from_hf_dataset, load_corpus

    if cfg.source.startswith("hf:"):
        docs = {lang: [r.text for r in from_hf_dataset(cfg.source[3:], name=cfg.hf_configs[lang], split=cfg.split,
                                                       text_columns={lang: cfg.text_column})][:cfg.documents]
                for lang in langs}
    else:
        full = load_corpus(cfg.source)
        docs = {lang: [r.text for r in full.records_for(lang)][:cfg.documents] for lang in langs}
    if cfg.max_tokens is None:
        return docs
    if tokenizer is None:
        raise ValueError("perplexity.max_tokens needs the model's tokenizer: "
                         "perplexity_texts(cfg, langs, lm.tokenizer)")
    cut = {}
    for lang, texts in docs.items():
        text = "\n\n".join(texts)  # as evaluate.perplexity joins documents
        ends = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        cut[lang] = [text[:ends[min(cfg.max_tokens, len(ends)) - 1][1]]]
    return cut


def key_region_sets(regions, cfg: PerplexitySpec) -> dict:
    """Neuron sets for Table 1: each language's key region, then a random set of ``random_percent``
    of all neurons (None: the next whole percent above the largest key region, as in Table 4)."""
    from .regions import random_neurons

    sets = {lang: regions.neurons(lang) for lang in regions.langs}
    largest = 100 * max(regions.sizes()) / regions.total_neurons
    percent = cfg.random_percent if cfg.random_percent is not None else float(max(1, math.ceil(largest + 1e-9)))
    size = round(percent / 100 * regions.total_neurons)
    sets[f"Random {percent:g}%"] = random_neurons(regions.layers, regions.width, size, seed=cfg.seed)
    return sets


def deactivation_table(lm, texts: dict, sets: dict, cfg: PerplexitySpec, cache: ResultCache) -> pd.DataFrame:
    """``evaluate.deactivation_table`` through the cache (key: weights, texts, sets, window options)."""
    from .evaluate import deactivation_table as compute

    parts = dict(model=lm.meta(), texts=digest(texts), sets=digest(sets), seqlen=cfg.seqlen, stride=cfg.stride,
                 batch_size=cfg.batch_size)
    return cache.frame("deactivation", parts, lambda: compute(lm, texts, sets, seqlen=cfg.seqlen, stride=cfg.stride,
                                                              batch_size=cfg.batch_size, progress=False))


def accuracy(lm, cfg: AccuracySpec, cache: ResultCache, neurons=None) -> pd.DataFrame:
    """``evaluate.crosslingual_accuracy`` through the cache (key: weights, task files, languages, limit)."""
    from .evaluate import crosslingual_accuracy, tasks_dir

    from importlib.metadata import version

    task_files = digest({f.name: f.read_text() for f in sorted(tasks_dir().iterdir()) if f.is_file()})
    parts = dict(model=lm.meta(), task=cfg.task, task_files=task_files, langs=cfg.languages, limit=cfg.limit,
                 neurons=digest(neurons or {}), lm_eval=version("lm_eval"))
    def compute():
        with _quiet("lm_eval"):  # progress bars and per-task notices would fill the report
            return crosslingual_accuracy(lm, cfg.languages, task=cfg.task, limit=cfg.limit, neurons=neurons,
                                         batch_size=cfg.batch_size)

    return cache.frame("accuracy", parts, compute)


@contextlib.contextmanager
def _quiet(logger: str):
    """Silence stderr (progress bars) and a library's logger below ERROR for the length of a block."""
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        log.setLevel(level)


def generations(lm, cfg: GenerationSpec, sets: dict, cache: ResultCache) -> pd.DataFrame:
    """Greedy continuations (Appendix A) under the full model and each language's deactivated key region,
    as a wide table: one row per prompt, one column per condition."""
    from .evaluate import DEFAULT_PROMPTS, FULL, generate

    prompts = {lang: list((cfg.prompts or DEFAULT_PROMPTS)[lang])[:cfg.prompts_per_language] for lang in cfg.languages}
    conditions = {FULL: None, **{f"×{lang}": sets[lang] for lang in cfg.languages}}
    parts = dict(model=lm.meta(), prompts=prompts, sets=digest(conditions), max_new_tokens=cfg.max_new_tokens)
    long = cache.frame("generations", parts, lambda: generate(lm, prompts, conditions, cfg.max_new_tokens)
                       .drop(columns=["output_ids"]).rename(columns={"index": "number"}))
    wide = long.pivot(index=["lang", "number", "prompt"], columns="condition", values="output")
    return wide[list(conditions)].reset_index(level="number", drop=True)


def score_intervals(acts, cfg: UncertaintySpec, cache: ResultCache, per_layer: bool = True) -> pd.DataFrame:
    """``uncertainty.score_intervals`` (overall, and per layer unless ``per_layer`` is off) through the cache."""
    from .uncertainty import score_intervals as compute

    parts = dict(acts=acts.meta, rows=digest([acts.sentence_ids, acts.langs]), per_layer=per_layer,
                 **dataclasses.asdict(cfg))
    return cache.frame("intervals", parts, lambda: compute(acts, per_layer=per_layer, n_boot=cfg.n_boot,
                                                           n_perm=cfg.n_perm, level=cfg.level, seed=cfg.seed))


def interval_numbers(intervals: pd.DataFrame, suffix: str = "") -> dict:
    """Headline LRDS and SADS (whole model) with interval and p-value, from ``score_intervals``."""
    overall = intervals[intervals.layer.astype(str) == "all"].set_index("metric")
    return {m.upper() + suffix: {"estimate": float(r.estimate), "ci": [float(r.ci_low), float(r.ci_high)],
                        "p": float(r.p_value)} for m, r in overall.iterrows()}


def table_numbers(table: pd.DataFrame, intervals: pd.DataFrame | None = None) -> dict:
    """Headline numbers of a deactivation table: each language's % increase when its own region is off (the
    diagonal, with its interval), the random set's increase, and the full-model perplexity."""
    from .evaluate import FULL_COLUMN

    langs = [c for c in table.columns if c in table.index]
    ci = None if intervals is None else intervals.set_index(["lang", "condition"])
    diagonal = {}
    for lang in langs:
        diagonal[lang] = {"estimate": round(float(table.loc[lang, lang]), 1)}
        if ci is not None:
            diagonal[lang]["ci"] = [round(float(ci.loc[(lang, lang), k]), 1) for k in ("ci_low", "ci_high")]
    numbers = {"own-region % increase (diagonal)": diagonal}
    for c in [c for c in table.columns if str(c).startswith("Random")]:
        numbers[f"{c} % increase"] = {lang: round(float(table.loc[lang, c]), 1) for lang in langs}
    numbers["full-model perplexity"] = {lang: round(float(table.loc[lang, FULL_COLUMN]), 2) for lang in langs}
    return numbers


def first_token_effect(lm, corpus, acts, cfg: CaptureSpec, n: int, cache: ResultCache) -> pd.DataFrame:
    """``diagnostics.compare_pooling`` on ``n`` sentence ids of ``acts``: as captured, and recaptured without
    each sentence's first token."""
    from .diagnostics import compare_pooling

    subset = corpus.select(corpus.languages, min(n, len(corpus.ids)), seed=0)
    skip = cache.activations(lm, subset, dataclasses.replace(cfg, skip_first=True))
    return compare_pooling(acts.select(ids=subset.ids), skip, names=("all_tokens", "skip_first"))


def flagged_layers(dominance: pd.DataFrame) -> list[int]:
    """Layers flagged as dominated in a ``diagnostics.dominance`` / ``exclusion_table`` frame."""
    return [int(l) for l in dominance.layer[dominance.dominant]]


def without_dominant(acts, dominance: pd.DataFrame, k: int):
    """``acts`` with the dominant neurons of the flagged layers zeroed (unchanged if none is flagged)."""
    from .diagnostics import exclude_dominant

    return exclude_dominant(acts, k, layers=flagged_layers(dominance))


def stability_numbers(table: pd.DataFrame) -> dict:
    """Mean (min, max) Jaccard overlap per language from ``robustness.stability_halves``."""
    g = table.groupby("lang", sort=False).jaccard
    return {"key-region Jaccard between disjoint halves, mean [min, max]":
            {lang: {"estimate": round(float(m), 3), "ci": [round(float(lo), 3), round(float(hi), 3)]}
             for lang, m, lo, hi in zip(g.mean().index, g.mean(), g.min(), g.max())}}


def lape_comparison(lm, corpus, regions, cfg: RobustnessSpec, capture: CaptureSpec,
                    cache: ResultCache) -> pd.DataFrame:
    """``robustness.lape_overlap`` of LAPE neurons (Tang et al. 2024) with the key regions, through the cache;
    an empty frame when ``cfg.lape`` is off."""
    from .robustness import activation_probabilities, lape, lape_overlap

    if not cfg.lape:
        print("LAPE comparison off (robustness.lape: false)")
        return pd.DataFrame(columns=["lang", "lape_neurons", "key_neurons", "shared", "jaccard"])
    parts = dict(model=lm.meta(), corpus=corpus.fingerprint(), capture=dataclasses.asdict(capture),
                 regions=digest(regions.mask))
    return cache.frame("lape", parts, lambda: lape_overlap(lape(activation_probabilities(
        lm, corpus, batch_size=capture.batch_size, max_length=capture.max_length,
        pool_special_tokens=capture.pool_special_tokens, progress=False)), regions))


# ------------------------------------------------------------------------------------------------ series


class IdenticalCheckpointsWarning(UserWarning):
    """Two entries of a series have the same weight fingerprint."""


def check_fingerprints(metas: list[dict]) -> list[str]:
    """Messages for entries of a series whose weights are identical (same fingerprint)."""
    seen, messages = {}, []
    for m in metas:
        name = f"{m['model']}@{m['revision'] or 'main'}"
        if m["fingerprint"] in seen:
            messages.append(f"{seen[m['fingerprint']]} and {name} have identical weights (fingerprint "
                            f"{m['fingerprint']}): the series repeats a checkpoint")
        seen.setdefault(m["fingerprint"], name)
    return messages


@dataclass
class Rows:
    """Row labels of a similarity map (what ``plots`` needs of an ``Activations``)."""

    sentence_ids: list[str]
    langs: list[str]


@dataclass
class SeriesPoint:
    """Results for one model of a series (the model and its activations are released after measuring).
    ``map``/``map_rows``: the similarity map of the first ``map_sentences`` ids, language-major."""

    spec: ModelSpec
    meta: dict
    n_params: int
    scores: dict
    layerwise: pd.DataFrame
    regions: object  # KeyRegions
    accuracy: pd.DataFrame | None = None
    intervals: pd.DataFrame | None = None  # whole-model LRDS/SADS intervals (``score_intervals``)
    map: object = None  # (rows, rows) tensor
    map_rows: Rows | None = None


def run_series(models: list[ModelSpec], corpus, capture: CaptureSpec, threshold: float, cache: ResultCache,
               accuracy_cfg: AccuracySpec | None = None, report: "Report | None" = None,
               map_sentences: int = 0, uncertainty: UncertaintySpec | None = None) -> list[SeriesPoint]:
    """Load each model in turn, measure it (LRDS/SADS overall and per layer, key regions; optionally accuracy,
    whole-model score intervals and a small similarity map), release it, and warn if two entries have
    identical weights."""
    from .metrics import layerwise, ordered, scores, similarity
    from .regions import key_regions

    points = []
    for m in models:
        lm = load(m)
        if report is not None:
            report.model(lm.meta())
        acts = cache.activations(lm, corpus, capture)
        acc = accuracy(lm, accuracy_cfg, cache) if accuracy_cfg else None
        n_params = sum(p.numel() for p in lm.model.parameters())
        point = SeriesPoint(m, lm.meta(), int(m.params or n_params), scores(acts), layerwise(acts),
                            key_regions(acts, threshold), acc)
        if uncertainty is not None:
            point.intervals = score_intervals(acts, uncertainty, cache, per_layer=False)
        if map_sentences:
            shown = ordered(acts.select(ids=acts.ids[:map_sentences]))
            point.map, point.map_rows = similarity(shown), Rows(shown.sentence_ids, shown.langs)
        points.append(point)
        del lm, acts
        gc.collect()
    for msg in check_fingerprints([p.meta for p in points]):
        (report.warn if report is not None else warnings.warn)(msg, IdenticalCheckpointsWarning)
    return points


def series_table(points: list[SeriesPoint]) -> pd.DataFrame:
    """One row per model: label, step, params, revision, fingerprint, LRDS, SADS (with ``*_ci_low``/``*_ci_high``
    when measured with intervals), SKLR, and the mean accuracy over languages with its standard error
    (sqrt(sum se^2) / k, languages independent)."""
    rows = []
    for i, p in enumerate(points):
        row = {"label": label(p.spec), "step": p.spec.step if p.spec.step is not None else i, "params": p.n_params,
               "revision": p.meta["revision"], "fingerprint": p.meta["fingerprint"], **p.scores,
               "sklr": p.regions.sklr, "sklr_percent": 100 * p.regions.sklr / p.regions.total_neurons}
        if p.intervals is not None:
            for metric, r in p.intervals[p.intervals.layer.astype(str) == "all"].set_index("metric").iterrows():
                row.update({f"{metric}_ci_low": r.ci_low, f"{metric}_ci_high": r.ci_high, f"{metric}_p": r.p_value})
        if p.accuracy is not None:
            row["acc"] = float(p.accuracy.acc.mean())
            row["acc_stderr"] = float((p.accuracy.acc_stderr ** 2).sum() ** 0.5 / len(p.accuracy))
        rows.append(row)
    return pd.DataFrame(rows)


def series_numbers(table: pd.DataFrame, columns: list[str]) -> dict:
    """Headline numbers of a series table: {COLUMN: {model label: value}}, with the bootstrap interval where the
    table has one (``*_ci_low``/``*_ci_high``) and a normal 95% interval (±1.96 se) for the accuracy."""
    out = {}
    for c in columns:
        values = {}
        for _, row in table.iterrows():
            v = row[c].item() if hasattr(row[c], "item") else row[c]
            if f"{c}_ci_low" in table:
                v = {"estimate": v, "ci": [float(row[f"{c}_ci_low"]), float(row[f"{c}_ci_high"])]}
            elif f"{c}_stderr" in table:
                se = float(row[f"{c}_stderr"])
                v = {"estimate": v, "ci": [v - 1.96 * se, v + 1.96 * se]}
            values[row["label"]] = v
        out[c.upper()] = values
    return out


def series_per_layer(points: list[SeriesPoint]) -> pd.DataFrame:
    """Key neurons per layer (summed over languages): rows = layers, one column per model (Figure 5)."""
    return pd.DataFrame({label(p.spec): p.regions.per_layer().sum(axis=1) for p in points})


def series_layerwise(points: list[SeriesPoint], metric: str = "lrds") -> pd.DataFrame:
    """A layer-wise score (``"lrds"`` or ``"sads"``): rows = layers, one column per model."""
    return pd.DataFrame({label(p.spec): p.layerwise.set_index("layer")[metric] for p in points})


def series_maps(points: list[SeriesPoint]) -> tuple[list, list[Rows], list[str]]:
    """(maps, row labels, model labels) of a series run with ``map_sentences``: ``plots.similarity_maps`` input."""
    return [p.map for p in points], [p.map_rows for p in points], [label(p.spec) for p in points]


def series_sizes(points: list[SeriesPoint]) -> pd.DataFrame:
    """Key-region size per language: rows = languages, one column per model (Figures 6 and 11)."""
    return pd.DataFrame({label(p.spec): p.regions.sizes() for p in points})


def series_accuracy(points: list[SeriesPoint]) -> pd.DataFrame:
    """Accuracy rows of every model, with a ``model`` column."""
    return pd.concat([p.accuracy.assign(model=label(p.spec)) for p in points if p.accuracy is not None],
                     ignore_index=True)


# ------------------------------------------------------------------------------------------- widgets

RUNNER_ENV = "LFCORE_NOTEBOOK_RUNNER"  # set by ``reproduce`` for its kernels: no live frontend, no widgets


def _batch_note():
    """What a widget helper returns under the runner: a note (a widget there can hang nbclient, issue #312)."""
    from IPython.display import HTML

    return HTML(WIDGET_NOTE)


def explore_layers(acts, corpus=None):
    """An ipywidgets slider over layers; "draw" shows that layer's similarity map (needs a live kernel)."""
    if os.environ.get(RUNNER_ENV):
        return _batch_note()
    import ipywidgets
    from IPython.display import display

    from .metrics import similarity
    from .plots import mimebundle, similarity_map

    def show(layer: int):
        display(mimebundle(similarity_map(similarity(acts, [layer]), acts, corpus, f"Layer {layer}")), raw=True)

    return ipywidgets.interactive(show, {"manual": True, "manual_name": "draw"},
                                  layer=ipywidgets.SelectionSlider(options=acts.layers, description="layer"))


def explore_threshold(regions, thresholds: list[float]):
    """An ipywidgets slider over z thresholds showing key neurons per layer (needs a live kernel)."""
    if os.environ.get(RUNNER_ENV):
        return _batch_note()
    import ipywidgets
    from IPython.display import display

    from .plots import key_regions_per_layer, mimebundle

    def show(threshold: float):
        r = regions.with_threshold(threshold)
        display(mimebundle(key_regions_per_layer(r.per_layer(), f"z > {threshold:g}: SKLR {r.sklr}")), raw=True)

    return ipywidgets.interactive(show, threshold=ipywidgets.FloatSlider(
        value=regions.threshold, min=min(thresholds), max=max(thresholds), step=0.1, description="z threshold"))


# ------------------------------------------------------------------------------------------------ report


def _plain(obj):
    """numpy/torch scalars and arrays inside mappings and lists as plain Python numbers and lists."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj.tolist() if hasattr(obj, "tolist") else obj


class Report:
    """What a notebook shows and saves: figures (plotly JSON), tables (CSV), headline numbers, warnings.

    Files land under ``out_dir``: ``figures/<name>.json``, ``tables/<name>.csv`` (+ ``.json`` with the
    frame's ``attrs``) and ``summary.json``, rewritten after every change so a failed run still records
    what it reached. ``cache`` is the notebook's ``ResultCache``.
    """

    def __init__(self, out_dir: str | Path = ".", cache_dir: str | Path | None = None, notebook: str = ""):
        self.dir = Path(out_dir)
        self.cache = ResultCache(cache_dir)
        self.notebook = notebook
        self.headline: dict = {}
        self.warnings: list[str] = []
        self.models: list[dict] = []
        self.files: dict[str, list[str]] = {"tables": [], "figures": []}

    def _write(self, rel: str, text: str) -> Path:
        return atomic_write(self.dir / rel, text)

    def show(self, fig, name: str):
        """Save ``fig`` as ``figures/<name>.json`` and display it (interactive and static)."""
        from IPython.display import display

        from .plots import mimebundle

        self._write(f"figures/{name}.json", fig.to_json())
        self._add("figures", f"figures/{name}.json")
        display(mimebundle(fig), raw=True)

    def table(self, df: pd.DataFrame, name: str, shown: pd.DataFrame | None = None, index: bool = True,
              fold: int = 20):
        """Save ``df`` as ``tables/<name>.csv`` (its ``attrs`` as JSON beside it) and display ``shown`` or it;
        a table longer than ``fold`` rows is shown folded (click to open)."""
        from IPython.display import HTML, display

        self._write(f"tables/{name}.csv", df.to_csv(index=index))
        if df.attrs:
            self._write(f"tables/{name}.json", json.dumps(df.attrs, indent=1, ensure_ascii=False, default=str))
        self._add("tables", f"tables/{name}.csv")
        shown = df if shown is None else shown
        with pd.option_context("display.max_colwidth", None):  # show generated text in full
            if len(shown) <= fold:
                return display(shown)
            display(HTML(f"<details><summary>table <code>{html.escape(name)}</code>: {len(shown)} rows "
                         f"(click to show; CSV: tables/{html.escape(name)}.csv)</summary>"
                         f"{shown.to_html(index=index, float_format=lambda v: f'{v:.4g}')}</details>"))

    def numbers(self, **values) -> None:
        """Record headline numbers (shown on the index page and stored in summary.json)."""
        self.headline.update(_plain(values))
        self._save()

    def model(self, meta: dict) -> None:
        self.models.append(meta)
        self._save()

    def warn(self, message: str, category: type[Warning] = UserWarning) -> None:
        """Issue a warning and record it (summary.json, index page)."""
        warnings.warn(message, category, stacklevel=2)
        self.warnings.append(message)
        self._save()

    def _add(self, kind: str, rel: str) -> None:
        if rel not in self.files[kind]:
            self.files[kind].append(rel)
        self._save()

    def _save(self) -> None:
        summary = {"notebook": self.notebook, "headline": self.headline, "warnings": self.warnings,
                   "models": self.models, "cache": self.cache.summary(), **self.files}
        self._write("summary.json", json.dumps(summary, indent=1, ensure_ascii=False, default=str))


# ------------------------------------------------------------------------------------------------ runner

_TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- block html_head_js -%}<script type="text/javascript">{{ resources.plotly_js }}</script>{%- endblock html_head_js -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{% block jupyter_widgets %}{% endblock jupyter_widgets %}
{% block extra_css %}<style>
.lf-nav { font-family: sans-serif; padding: 8px 16px; background: #f4f6f8; border-bottom: 1px solid #dde; }
.lf-widget-note { color: #667; font-style: italic; }
</style>{% endblock extra_css %}
{%- block body_header -%}{{ super() }}<nav class="lf-nav"><a href="index.html">&larr; all reports</a>
&middot; {{ resources.lf_title }}</nav>{%- endblock body_header -%}
"""
WIDGET_NOTE = ("<p class='lf-widget-note'>[interactive control: open the .ipynb in JupyterLab to use it; "
               "the static figure next to it covers the same ground]</p>")


def render_html(ipynb: str | Path, html_path: str | Path, title: str = "") -> Path:
    """A self-contained, offline HTML report of an executed notebook: plotly.js embedded once, no CDN,
    ipywidgets replaced by a note (they need a live kernel)."""
    import jinja2
    import nbformat
    from nbconvert import HTMLExporter
    from plotly.offline import get_plotlyjs

    nb = nbformat.read(str(ipynb), as_version=4)
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if "application/vnd.jupyter.widget-view+json" in out.get("data", {}):
                out["data"] = {"text/html": WIDGET_NOTE}
    exporter = HTMLExporter(extra_loaders=[jinja2.DictLoader({"lfcore_report.html.j2": _TEMPLATE})],
                            template_file="lfcore_report.html.j2")
    body, _ = exporter.from_notebook_node(nb, resources={"plotly_js": get_plotlyjs(), "lf_title": html.escape(title),
                                                         "metadata": {"name": title or Path(ipynb).stem}})
    return atomic_write(Path(html_path), body)


@dataclass
class NotebookRun:
    key: str
    stem: str
    title: str
    status: str  # "ok" | "failed"
    seconds: float  # wall time
    ipynb: Path
    html: Path | None
    error: str | None = None
    summary: dict = field(default_factory=dict)
    cpu_seconds: float | None = None  # CPU time of the kernel (user + system), independent of machine load


def _failure(stem: str, err: Exception, ipynb: Path, html_path: Path) -> str:
    """Which notebook and cell failed, what it raised, and where the traceback is."""
    where = ""
    if hasattr(err, "cell_index"):
        first = next((line for line in (err.source or "").splitlines() if line.strip()), "")
        where = f" in cell {err.cell_index} (In [{err.exec_count}], starting {first.strip()!r})"
    what = f"{err.ename}: {err.evalue}" if hasattr(err, "ename") else f"{type(err).__name__}: {err}"
    what = what if len(what) < 600 else what[:600] + " [...]"
    return (f"notebook {stem} failed{where}: {what}\n  executed notebook with the traceback: {ipynb}"
            f"\n  rendered: {html_path}")


@contextlib.contextmanager
def _environ(**values):
    """Set environment variables (inherited by the kernels papermill starts) for the length of a block."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update({k: str(v) for k, v in values.items() if v is not None})
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def reproduce(params_file: str | Path, only: list[str] | None = None, out: str | Path | None = None,
              cache: str | Path | None = None, kernel: str = "python3", threads: int | None = None,
              log=print) -> list[NotebookRun]:
    """Execute the notebooks of a params file with papermill and render their HTML reports and the index.

    ``only`` restricts to notebook keys (default: the file's ``notebooks``); ``out`` defaults to
    ``reports/<params stem>``; ``cache`` to ``cache_dir(out)``; ``threads`` caps the CPU threads of each
    kernel (``OMP_NUM_THREADS``; 1 avoids stalls on a CPU shared with other busy processes). A failing
    notebook does not stop the others; its ``NotebookRun.error`` says which cell failed and where the
    executed notebook is.
    """
    threads_env = {} if threads is None else {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    with _environ(**{RUNNER_ENV: "1"}, **threads_env):
        return _run_notebooks(params_file, only, out, cache, kernel, log)


def _run_notebooks(params_file, only, out, cache, kernel, log) -> list[NotebookRun]:
    import jupytext
    import papermill

    params_file = Path(params_file)
    p = load_params(params_file)
    keys = list(only or p.notebooks)
    unknown = [k for k in keys if k not in NOTEBOOKS]
    if unknown:
        raise ParamsError(f"unknown notebook(s) {unknown}; known: {', '.join(NOTEBOOKS)}")
    out = Path(out or Path("reports") / params_file.stem).resolve()
    cache = Path(cache or cache_dir(out)).resolve()
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "params.yaml", params_file.read_text(encoding="utf-8"))
    runs = []
    for key in keys:
        stem, title, _ = NOTEBOOKS[key]
        work, ipynb, html_path = out / stem, out / f"{stem}.ipynb", out / f"{stem}.html"
        work.mkdir(exist_ok=True)
        (work / "summary.json").unlink(missing_ok=True)
        nb = jupytext.read(NOTEBOOK_DIR / f"{stem}.py")
        parameters = {**sections_for(p, key), "title": p.title, "out_dir": str(work), "cache_dir": str(cache)}
        log(f"[lfcore] {stem}: running ...")
        start, cpu_start, error = time.time(), _children_cpu(), None
        try:
            papermill.execute_notebook(nb, str(ipynb), parameters=parameters, kernel_name=kernel, language="python",
                                       progress_bar=False, cwd=str(work))
        except Exception as e:  # papermill saved the notebook with the traceback; report and go on
            error = _failure(stem, e, ipynb, html_path)
        seconds, cpu = time.time() - start, _children_cpu() - cpu_start
        try:
            render_html(ipynb, html_path, f"{title} ({params_file.name})")
        except Exception as e:
            html_path = None
            error = (error or "") + f"\n  HTML rendering failed: {type(e).__name__}: {e}"
        summary = json.loads((work / "summary.json").read_text()) if (work / "summary.json").exists() else {}
        runs.append(NotebookRun(key, stem, title, "failed" if error else "ok", seconds, ipynb, html_path, error,
                                summary, cpu))
        log(f"[lfcore] {stem}: {'FAILED' if error else 'ok'} in {seconds:.0f} s ({cpu:.0f} s CPU) -> {html_path}")
        for w in summary.get("warnings", []):
            log(f"[lfcore] warning ({stem}): {w}")
        if error:
            log(f"[lfcore] {error}")
    write_index(out, p, params_file, _record_runs(out, runs), cache)
    log(f"[lfcore] index: {out / 'index.html'}")
    return runs


def _children_cpu() -> float:
    """CPU seconds (user + system) used so far by finished child processes, e.g. notebook kernels."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _record_runs(out: Path, runs: list[NotebookRun]) -> list[NotebookRun]:
    """Merge this run into ``<out>/runs.json`` and return every notebook run so far, in notebook order,
    so that ``--only`` keeps the other notebooks' reports on the index page."""
    path = out / "runs.json"
    known = json.loads(path.read_text()) if path.exists() else {}
    for r in runs:
        known[r.key] = {**dataclasses.asdict(r), "ipynb": r.ipynb.name, "html": r.html.name if r.html else None}
    atomic_write(path, json.dumps(known, indent=1, default=str))
    merged = []
    for key in NOTEBOOKS:
        if key in known:
            k = known[key]
            paths = {"ipynb": out / k["ipynb"], "html": out / k["html"] if k["html"] else None}
            merged.append(NotebookRun(**{**k, **paths}))
    return merged


def _fmt(v) -> str:
    """A headline value for the index page (estimates with intervals, nested mappings, numbers)."""
    if isinstance(v, dict) and {"estimate", "ci"} <= set(v):
        return (f"{_fmt(v['estimate'])} [{_fmt(v['ci'][0])}, {_fmt(v['ci'][1])}]"
                + (f", p = {v['p']:.3g}" if "p" in v else ""))
    if isinstance(v, dict) and set(v) == {"estimate"}:
        return _fmt(v["estimate"])
    if isinstance(v, dict):
        return " &middot; ".join(f"{html.escape(str(k))} {_fmt(x)}" for k, x in v.items())
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return f"{v:,.0f}" if abs(v) >= 1e4 else f"{v:.4g}"
    if isinstance(v, list) and all(isinstance(x, (int, float)) for x in v):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    return html.escape(str(v))


_INDEX_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1000px; margin: 2em auto; color: #222; }
.card { border: 1px solid #ccd; border-radius: 6px; padding: 0 1em 1em; margin: 1em 0; }
.card.failed { border-color: #c33; background: #fff6f6; } .status { text-transform: uppercase; }
.card.ok .status { color: #282; } .card.failed .status { color: #c33; }
.warn { background: #fff4d6; padding: .4em; } .err { white-space: pre-wrap; color: #900; }
.nums th { text-align: left; padding-right: 1em; font-weight: normal; color: #555; }
pre { background: #f6f6f8; padding: 1em; }
"""


def _card(r: NotebookRun) -> str:
    """One notebook on the index page: status, timing, links, headline numbers, warnings, files."""
    e, s = html.escape, r.summary
    links = ([f"<a href='{e(r.html.name)}'>report (HTML)</a>"] if r.html else []) + \
        [f"<a href='{e(r.ipynb.name)}'>executed notebook</a>"]
    cpu = f" ({r.cpu_seconds:.0f} s CPU)" if r.cpu_seconds else ""
    hits = _fmt(s.get("cache", {}).get("hits", {})) or "none"
    head = "".join(f"<tr><th>{e(k)}</th><td>{_fmt(v)}</td></tr>" for k, v in s.get("headline", {}).items())
    files = "".join(f"<li><a href='{e(r.stem)}/{e(f)}'>{e(f)}</a></li>"
                    for f in s.get("tables", []) + s.get("figures", []))
    warn = "".join(f"<p class='warn'>warning: {e(w)}</p>" for w in s.get("warnings", []))
    err = f"<pre class='err'>{e(r.error)}</pre>" if r.error else ""
    return (f"<section class='card {r.status}'><h2>{e(r.title)}</h2>"
            f"<p><b class='status'>{r.status}</b> &middot; {r.seconds:.0f} s{cpu} &middot; {' &middot; '.join(links)}"
            f" &middot; <small>cache hits: {hits}</small></p>{err}{warn}<table class='nums'>{head}</table>"
            f"<details><summary>tables (CSV) and figures (JSON)</summary><ul>{files}</ul></details></section>")


def write_index(out: Path, p: Params, params_file: Path, runs: list[NotebookRun], cache: Path) -> Path:
    """``index.html``: every report, executed notebook, table (CSV) and figure (JSON), with headline numbers."""
    import torch

    from . import __version__

    e = html.escape
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{e(p.title)}</title>"
            f"<style>{_INDEX_CSS}</style></head><body><h1>{e(p.title)}</h1>"
            f"<p>params: <a href='params.yaml'>{e(params_file.name)}</a> &middot; generated "
            f"{time.strftime('%Y-%m-%d %H:%M')} &middot; lfcore {__version__}, torch {torch.__version__} &middot; "
            f"cache: <code>{e(str(cache))}</code></p>{''.join(_card(r) for r in runs)}"
            f"<h2>Parameters</h2><pre>{e((out / 'params.yaml').read_text(encoding='utf-8'))}</pre></body></html>")
    return atomic_write(out / "index.html", page)


# --------------------------------------------------------------------------------------------------- CLI


def _scores(args) -> int:
    from .corpus import load_corpus
    from .metrics import layerwise, scores
    from .models import cache_root
    from .regions import key_regions

    m = ModelSpec(spec=args.model, revision=args.revision, dtype=args.dtype)
    lm = load(m)
    corpus = load_corpus(args.corpus).select(args.langs, args.n, args.seed)
    cache = ResultCache((args.cache_dir or cache_root() / "results") if args.cache else None)
    acts = cache.activations(lm, corpus, CaptureSpec(batch_size=args.batch_size))
    s = scores(acts)
    regions = key_regions(acts, args.threshold)
    print(f"{lm.name} (revision {lm.revision or 'main'}, fingerprint {lm.fingerprint}); {args.corpus}: "
          f"{len(acts.ids)} sentences x {len(acts.languages)} languages")
    print(f"LRDS {s['lrds']:.4f}   SADS {s['sads']:.4f}\n")
    print(layerwise(acts).to_string(index=False, float_format=lambda v: f"{v:.4f}"), "\n")
    print(f"key regions (z > {args.threshold:g}):")
    print(regions.summary().to_string(float_format=lambda v: f"{v:.2f}"))
    return 0


def main(argv: list[str] | None = None) -> int:
    """The ``lfcore`` console script."""
    parser = argparse.ArgumentParser(prog="lfcore", description="Linguistic regions and semantic alignment "
                                     "in multilingual LLMs (Zeng et al., COLING 2025): reports and scores.")
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("reproduce", help="execute the notebooks of a params file and render HTML reports")
    r.add_argument("params", help="params YAML file, e.g. params/default.yaml")
    r.add_argument("--only", help=f"comma-separated notebooks to run ({','.join(NOTEBOOKS)})")
    r.add_argument("--out", help="output folder (default: reports/<params file stem>)")
    r.add_argument("--cache-dir", help="result cache (default: $LFCORE_CACHE/results, else <out>/cache)")
    r.add_argument("--threads", type=int, help="CPU threads per notebook kernel (default: torch's choice; "
                   "1 on a CPU shared with other busy processes)")
    s = sub.add_parser("scores", help="print LRDS/SADS (overall and per layer) and key-region sizes of a model")
    s.add_argument("model", help="bundled key (gemma-3-270m, smollm2-135m), tiny:<family>-<hidden>, folder or hub id")
    s.add_argument("--revision")
    s.add_argument("--dtype", choices=["float32", "bfloat16", "float16", "auto"], default="float32")
    s.add_argument("--langs", nargs="+", default=LANGS9, help="language codes (default: the paper's nine)")
    s.add_argument("--n", type=int, default=100, help="sentences per language (default 100)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--corpus", default="ntrex128", help="corpus spec (default: bundled NTREX-128)")
    s.add_argument("--threshold", type=float, default=2.0, help="z threshold for key regions (default 2)")
    s.add_argument("--batch-size", type=int, default=16)
    s.add_argument("--cache", action=argparse.BooleanOptionalAction, default=True, help="reuse cached activations")
    s.add_argument("--cache-dir", help="cache folder (default: $LFCORE_CACHE/results or ~/.cache/lfcore/results)")
    args = parser.parse_args(argv)
    try:
        if args.command == "scores":
            return _scores(args)
        stems = {v[0]: k for k, v in NOTEBOOKS.items()}
        only = [stems.get(k.strip(), k.strip()) for k in args.only.split(",")] if args.only else None
        runs = reproduce(args.params, only=only, out=args.out, cache=args.cache_dir, threads=args.threads)
    except ParamsError as e:
        print(f"lfcore: {e}", file=sys.stderr)
        return 2
    failed = [r for r in runs if r.status != "ok"]
    for r in failed:
        print(f"lfcore: {r.error}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
