"""Parameter sets: a YAML file checked against ``Params`` (nested dataclasses), and the notebook table.

An unknown key, a wrong type, a value out of its field's range (``_ranged``), a missing file or an unknown
language raises ``ParamsError`` naming the key path and the file. ``protocol`` (``PROTOCOLS``) resolves at load
time to concrete per-item values: a preset fills each of its items the file does not set itself. Paths are
relative to the params file and are stored resolved. ``NOTEBOOKS`` lists each notebook with the sections of the
params file injected into its papermill ``parameters`` cell.
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

ROOT = Path(__file__).resolve().parent.parent  # the repository checkout (notebooks/, params/, reports/)
LANGS9 = ["ar", "zh", "en", "fr", "hi", "id", "pt", "es", "vi"]
BUNDLED_CORPORA = ("ntrex128", "ntrex128-passages")


def _ranged(default, test, rule: str):
    """A dataclass field whose value, unless None, must pass ``test``; ``rule`` completes the error message
    ("<key>: <value> <rule>"). ``default`` is a value, or a zero-argument factory for a list."""
    kind = "default_factory" if callable(default) else "default"
    return field(**{kind: default}, metadata={"test": test, "rule": rule})


def _at_least(low, default):
    return _ranged(default, lambda v: v >= low, f"must be at least {low}")


def _non_empty(factory):
    return _ranged(factory, lambda v: len(v) > 0, "must not be empty")


@dataclass
class ResourceSpec:
    """What one job asks the scheduler for under ``lfcore reproduce --executor slurm|local`` (``lfcore.jobs``):
    GPUs, CPU cores and memory on one node, a time limit and, on SLURM, a partition. The params file's
    ``resources`` section holds the default; a model's own ``resources`` replaces it for that model's jobs."""

    gpus: int = _at_least(0, 1)
    cpus: int = _at_least(1, 8)
    mem_gb: float = _ranged(64.0, lambda v: v > 0, "must be > 0")
    time_min: int = _at_least(1, 240)
    partition: str | None = None


@dataclass
class ModelSpec:
    """One model: a bundled key, ``tiny:<family>-<hidden>``, a folder or .gguf file (relative to the params
    file), or a hub id with ``revision``. ``tokenizer`` (hub id or folder, with ``tokenizer_revision``) names a
    tokenizer for a model without one (checkpoint branches). ``label``, ``step`` and ``params`` (parameter count)
    name it in plots.;
    ``resources`` (optional) is what each of its jobs asks a cluster for (``lfcore.jobs``)."""

    spec: str = "gemma-3-270m"
    revision: str | None = None
    tokenizer: str | None = None
    tokenizer_revision: str | None = None
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = "float32"
    device_map: str | None = None
    label: str | None = None
    # the neuron-site template for a model_type outside lfcore's table (models.neuron_sites), e.g.
    # "model.language_model.layers.{layer}.mlp.down_proj"; None: the table's site
    site: str | None = None
    step: int | None = _at_least(0, None)
    params: float | None = _ranged(None, lambda v: v > 0, "must be > 0")
    resources: ResourceSpec | None = None


@dataclass
class CorpusSpec:
    """Parallel sentences for the similarity map: ``ntrex128`` (bundled), a .jsonl/.tsv file, ``bible``
    (Christodoulopoulos & Steedman XML, one file per language in ``files``) or ``hf:<dataset id>``."""

    source: str = "ntrex128"
    files: dict[str, str] | None = None
    books: list[str] | None = None
    hf_config: str | None = None
    revision: str | None = None  # of an hf: dataset, e.g. refs/convert/parquet for one that is a loading script
    split: str = "train"
    id_column: str | None = None
    text_columns: dict[str, str] | None = None
    n: int = _at_least(2, 100)  # sentences per language
    seed: int = 0


@dataclass
class CaptureSpec:
    batch_size: int = _at_least(1, 16)
    max_length: int = _at_least(1, 512)
    pool_special_tokens: bool = False
    skip_first: bool = False
    # feed the special tokens the tokenizer adds (e.g. BOS, then not pooled); false: the text's tokens only
    add_special_tokens: bool = True


@dataclass
class RegionSpec:
    threshold: float = 2.0
    sweep: list[float] = _non_empty(lambda: [1.0, 1.5, 2.0, 2.5])
    epsilon: float = _at_least(0.0, 0.0)  # added to every normalised value before the contribution scores


@dataclass
class PerplexitySpec:
    """Text for Table 1: ``ntrex128-passages`` (bundled) or ``hf:csebuetnlp/xlsum`` with ``hf_configs``."""

    source: str = "ntrex128-passages"
    hf_configs: dict[str, str] | None = None
    revision: str | None = None  # of an hf: dataset: XL-Sum is a loading script, so refs/convert/parquet
    split: str = "test"
    text_column: str = "text"
    documents: int = _at_least(1, 3)
    max_tokens: int | None = _at_least(1, None)  # cut each language's text to this many tokens (equal cost)
    seqlen: int = _at_least(3, 256)  # tokens per window, start token included
    # overlapping: a start token per window, every token scored once; disjoint: the text tokenised as the
    # tokenizer does (its own special tokens once), cut into windows of seqlen, the tail dropped
    windows: Literal["overlapping", "disjoint"] = "overlapping"
    stride: int | None = _at_least(1, None)  # overlapping: at most seqlen - 1 (None: overlap as little as
    # possible); disjoint: None or seqlen
    batch_size: int = _at_least(1, 4)
    # % of all neurons in the random set; None: just above the largest key region (the paper's Table 4)
    random_percent: float | None = _ranged(10.0, lambda v: 0 < v <= 100, "must be in (0, 100]")
    seed: int = 0
    # each window's start token: None follows the tokenizer (evaluate.start_token), true its bos_token, false none
    add_bos: bool | None = None


@dataclass
class AccuracySpec:
    task: Literal["xcopa_xl", "xstorycloze_xl"] = "xcopa_xl"
    languages: list[str] = _non_empty(lambda: ["en", "id", "vi", "zh"])
    limit: int | None = _at_least(1, 50)
    batch_size: int = _at_least(1, 8)


@dataclass
class GenerationSpec:
    languages: list[str] = _non_empty(lambda: ["en", "zh", "fr"])  # a subset of Params.languages
    prompts: dict[str, list[str]] | None = None  # None: evaluate.DEFAULT_PROMPTS
    prompts_per_language: int = _at_least(1, 3)
    max_new_tokens: int = _at_least(1, 32)


@dataclass
class UncertaintySpec:
    n_boot: int = _at_least(1, 1000)
    n_perm: int = _at_least(0, 1000)  # 0: no permutation p-values
    level: float = _ranged(0.95, lambda v: 0 < v < 1, "must be in (0, 1), e.g. 0.95")
    seed: int = 0


@dataclass
class DiagnosticsSpec:
    k: int = _at_least(1, 5)  # dominant neurons per layer
    # a layer is flagged when its top-k neurons hold more than this share of the squared norm
    share: float = _ranged(0.5, lambda v: 0 < v <= 1, "must be in (0, 1]")
    first_token_sentences: int = _at_least(1, 30)  # sentence ids recaptured without their first token


@dataclass
class RobustnessSpec:
    seeds: list[int] = _non_empty(lambda: [0, 1, 2])  # random splits into disjoint halves
    lape: bool = True  # also select neurons by LAPE (one more pass over the sentences) and compare


@dataclass
class SteeringSpec:
    """Beyond the paper (obs6): steer and patch a language through its key region. Prompts are corpus sentences
    outside the sample the regions are found on; every prompt language meets every target language."""

    prompts_per_language: int = _at_least(2, 2)
    max_new_tokens: int = _at_least(1, 10)
    # "set": the region's neurons are set to strength x the target language's mean activation (LAPE's
    # "activate" at strength 1); "add": that vector is added to them
    mode: Literal["set", "add"] = "set"
    strengths: list[float] = _ranged(lambda: [1.0, 4.0], lambda v: len(v) > 0 and all(s > 0 for s in v),
                                     "must be a non-empty list of positive factors")
    patch_languages: list[str] | None = None  # targets of per-layer patching; None: the first 3 of `languages`
    layer_bands: int = _at_least(1, 3)  # patching: each region cut into this many bands of consecutive layers
    perplexity_strength: float = _ranged(1.0, lambda v: v > 0, "must be > 0")
    perplexity_tokens: int = _at_least(2, 96)  # per language, scored in windows of perplexity.seqlen
    seed: int = 0  # random control sets


@dataclass
class MapSpec:
    sentences: int = _at_least(1, 100)  # sentence ids per language in the similarity map (Figure 2)
    layer_sentences: int = _at_least(1, 12)  # ... in the per-layer slider (one map per layer goes into the HTML)
    family_sentences: int = _at_least(1, 40)  # ... in each map of the side-by-side family figure (Figure 8)


@dataclass
class SeriesSpec:
    models: list[ModelSpec] = _non_empty(lambda: [ModelSpec()])
    note: str = ""


@dataclass
class Params:
    title: str = "lfcore report"
    protocol: Literal["lfcore", "paper"] = "lfcore"  # the preset of PROTOCOLS this file's items start from
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
    steering: SteeringSpec = field(default_factory=SteeringSpec)
    maps: MapSpec = field(default_factory=MapSpec)
    checkpoints: SeriesSpec = field(default_factory=SeriesSpec)
    sizes: SeriesSpec = field(default_factory=SeriesSpec)
    family: SeriesSpec = field(default_factory=SeriesSpec)
    resources: ResourceSpec = field(default_factory=ResourceSpec)  # per job, unless a model has its own


# Protocol presets: section -> {item: value}, filled in where a params file does not set the item itself.
# "lfcore" is the dataclass defaults. "paper" follows the authors' released code (X-LANCE/LinguaFranca):
# capture without special tokens (run.py generate_hidden_states_*: add_special_tokens=False, every token pooled);
# XL-Sum validation[:500] joined by "\n\n", tokenised once, disjoint windows, tail dropped (lib/data.py get_xlsum,
# lib/eval.py eval_ppl_wikitext); 1e-5 added to normalised values (run.py find_max_average_neurons: + 10e-6);
# 50 sentences per language in each map of Fig 8 (read from the figure). Model dtype: PAPER_DTYPE.
PROTOCOLS: dict[str, dict[str, dict]] = {
    "lfcore": {},
    "paper": {"capture": {"add_special_tokens": False},
              "perplexity": {"windows": "disjoint", "split": "validation", "documents": 500},
              "regions": {"epsilon": 1e-5},
              "maps": {"family_sentences": 50}},
}
# run.py loads a final model without torch_dtype (float32) and an intermediate checkpoint (a revision) "auto"
PAPER_DTYPE = {False: "float32", True: "auto"}  # keyed by: the model spec names a revision


def resolve_protocol(data: dict) -> dict:
    """A params mapping with its ``protocol`` preset filled in: each preset item the mapping does not set.

    Usage: ``resolve_protocol({"protocol": "paper", "regions": {"threshold": 2.5}})`` gives
    ``regions: {threshold: 2.5, epsilon: 1e-5}`` and the paper's other items. Under ``paper`` every model
    spec without a ``dtype`` gets ``PAPER_DTYPE``'s. Unknown protocols are left to the type check.
    """
    name = data.get("protocol", "lfcore")
    if not isinstance(name, str) or name not in PROTOCOLS:
        return data
    out = dict(data)
    for section, items in PROTOCOLS[name].items():
        given = out.get(section) or {}
        if isinstance(given, dict):
            out[section] = {**items, **given}
    if name == "paper":
        def dtype(m):
            return {"dtype": PAPER_DTYPE[bool(m.get("revision"))], **m} if isinstance(m, dict) else m
        out["model"] = dtype(out.get("model") or {})
        for series in ("checkpoints", "sizes", "family"):
            if isinstance(out.get(series), dict) and isinstance(out[series].get("models"), list):
                out[series] = {**out[series], "models": [dtype(m) for m in out[series]["models"]]}
    return out


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
                 ("languages", "family", "corpus", "capture", "regions", "perplexity", "accuracy", "generation",
                  "uncertainty", "diagnostics", "maps")),
    "obs6": ("obs6_steering", "Beyond the paper: steering and patching a language through its key region",
             ("languages", "model", "corpus", "capture", "regions", "perplexity", "uncertainty", "steering")),
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
    if tp is float and isinstance(value, float) and not math.isfinite(value):
        raise ParamsError(f"{where}: {value!r} is not a finite number")
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
    values = {k: _coerce(v, hints[k], path(k)) for k, v in data.items()}
    for f in dataclasses.fields(cls):
        if "test" in f.metadata and values.get(f.name) is not None and not f.metadata["test"](values[f.name]):
            raise ParamsError(f"{path(f.name)}: {values[f.name]!r} {f.metadata['rule']}")
    return cls(**values)


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
def _corpus(source: str):
    """A bundled corpus or a local corpus file (read once)."""
    from .corpus import load_corpus

    try:
        return load_corpus(source)
    except ValueError as e:
        raise ParamsError(f"cannot read corpus {source}: {e}") from None


def _languages_of(source: str) -> list[str]:
    return _corpus(source).languages


def _model_path(m: ModelSpec, base: Path, where: str) -> None:
    """Resolve a folder or .gguf spec (and a tokenizer folder) relative to the params file; leave keys and hub
    ids alone."""
    from .models import BUNDLED, check_spec

    if m.tokenizer is not None and (m.tokenizer.startswith((".", "/", "~")) or (base / m.tokenizer).exists()):
        m.tokenizer = _resolve(m.tokenizer, base, f"{where}.tokenizer")
    if m.spec in BUNDLED or m.spec.startswith("tiny:"):
        return
    parts = Path(m.spec).parts
    if len(parts) > 1 and (base / parts[0]).is_dir() and not (base / m.spec).exists():
        raise ParamsError(f"{where}.spec: {m.spec!r}: no such local path {base / m.spec} (paths are relative to the "
                          f"params file's folder), and it is not a hub id; check the path")
    try:
        check_spec(m.spec)
    except ValueError as e:
        raise ParamsError(f"{where}.spec: {e}") from None
    if m.spec.startswith((".", "/", "~")) or m.spec.endswith(".gguf") or (base / m.spec).exists():
        m.spec = _resolve(m.spec, base, f"{where}.spec")


def _check(p: Params, base: Path, present: set[str], whole: bool = True) -> None:
    """Cross-field checks: files exist, languages and sentences exist in the corpus, windows, task and prompts,
    thresholds are reachable (when ``regions`` is given, or ``whole`` file runs a notebook that uses it)."""
    from .evaluate import DEFAULT_PROMPTS, tasks_dir

    if "notebooks" in present:
        if not p.notebooks:
            raise ParamsError(f"notebooks: the list is empty, so nothing would run; list some of {', '.join(NOTEBOOKS)}"
                              f" or leave the key out for all")
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
    if c.source in BUNDLED_CORPORA or Path(c.source).is_file():
        complete = len(_corpus(c.source).select(p.languages).ids)
        if c.n > complete:
            raise ParamsError(f"corpus.n: {c.n} sentences per language asked, but corpus {c.source} has only "
                              f"{complete} sentence ids in every one of languages {p.languages}")
    pp = p.perplexity
    if pp.windows == "disjoint" and pp.stride not in (None, pp.seqlen):
        raise ParamsError(f"perplexity.stride: {pp.stride} with perplexity.windows: disjoint must be null or "
                          f"perplexity.seqlen ({pp.seqlen}): disjoint windows follow one another")
    if pp.windows == "overlapping" and pp.stride is not None and pp.stride >= pp.seqlen:
        raise ParamsError(f"perplexity.stride: {pp.stride} must be below perplexity.seqlen ({pp.seqlen}): "
                          f"each window re-reads at least one token as context (windows that do not overlap: "
                          f"perplexity.windows: disjoint)")
    if pp.windows == "disjoint" and pp.add_bos:
        raise ParamsError("perplexity.add_bos: true with perplexity.windows: disjoint: disjoint windows carry no "
                          "start token of their own (the text is tokenised once, as the tokenizer does); set "
                          "add_bos to null or windows to overlapping")
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
    for i, lang in enumerate(p.generation.languages if {"obs2", "appendix"} & set(p.notebooks) else []):
        if lang not in p.languages:
            raise ParamsError(f"generation.languages[{i}]: {lang!r} is not in languages {p.languages}: obs2 and the "
                              f"appendix switch "
                              f"off each generation language's key region, and key regions are found for `languages` "
                              f"only; add {lang!r} to languages or remove it from generation.languages")
    for i, lang in enumerate((p.steering.patch_languages or []) if "obs6" in p.notebooks else []):
        if lang not in p.languages:
            raise ParamsError(f"steering.patch_languages[{i}]: {lang!r} is not in languages {p.languages}: key "
                              f"regions are found for `languages` only")
    _model_path(p.model, base, "model")
    for name in ("checkpoints", "sizes", "family"):
        for i, m in enumerate(getattr(p, name).models):
            _model_path(m, base, f"{name}.models[{i}]")
    if "regions" in present or (whole and any("regions" in NOTEBOOKS[nb][2] for nb in p.notebooks)):
        _check_thresholds(p)


def _check_thresholds(p: Params) -> None:
    """``regions.threshold`` and every ``regions.sweep`` value must be reachable with ``languages``."""
    from .regions import check_threshold

    named = [("regions.threshold", p.regions.threshold)] + [(f"regions.sweep[{i}]", t)
                                                           for i, t in enumerate(p.regions.sweep)]
    for where, t in named:
        try:
            check_threshold(t, len(p.languages), where)
        except ValueError as e:
            raise ParamsError(f"{e} (languages: {p.languages})") from None


def params_from_dict(data: dict, base: str | Path = ".", source: str = "params", whole: bool = True,
                     check: bool = True) -> Params:
    """Validate a parsed params mapping; errors are prefixed with ``source`` (the file name). ``whole``: the
    mapping is a whole params file (False: a notebook's sections, whose other sections go unused).
    ``check=False`` checks keys, types and ranges only, no file, corpus or language looked up: what a params file
    asks for before the files it names exist (``lfcore.rehearse`` builds them), or to plan and estimate jobs."""
    try:
        p = _build(resolve_protocol(data or {}), Params, "")
        if check:
            _check(p, Path(base).resolve(), set(data or {}), whole)
    except ParamsError as e:
        raise ParamsError(f"{source}: {e}") from None
    return p


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that rejects a mapping with the same key twice (PyYAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise ParamsError(f"{key_node.start_mark.name}:{line}: key {key!r} appears twice in one mapping "
                                  f"(first at line {seen[key]}); keep one")
            seen[key] = line
        return super().construct_mapping(node, deep)


def load_params(path: str | Path, check: bool = True) -> Params:
    """Read and validate a params YAML file (see ``Params``); raise ``ParamsError`` naming key and file.
    ``check=False``: keys, types and ranges only (see ``params_from_dict``).

    Usage: ``p = load_params("params/default.yaml")``. A file that is empty (or only comments), not UTF-8, not
    valid YAML, or has a key twice in one mapping is an error: none of them starts a run.
    """
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"params file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ParamsError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason}); save it as UTF-8") from None
    try:
        loader = _UniqueKeyLoader(text)
        loader.name = str(path)
        try:
            data = loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML: {e}") from None
    if data is None:
        raise ParamsError(f"{path}: the params file is empty; write at least one key (e.g. title: my run), "
                          f"or copy params/default.yaml to run the defaults")
    return params_from_dict(data, path.parent, str(path), check=check)


def repo_path(path: str | Path) -> Path:
    """``path`` resolved against the repository root, so a notebook parameter means the same file from any
    working directory (plain papermill, JupyterLab, the runner): ``repo_path("reports/x") == ROOT / "reports/x"``;
    an absolute path stays as it is."""
    return (ROOT / Path(path).expanduser()).resolve()


def notebook_params(base_dir: str | Path = ROOT, **sections) -> Params:
    """Validate a notebook's parameters cell (the sections it uses); other sections keep their defaults.
    Relative paths in it resolve against ``base_dir``, the repository root (see ``repo_path``)."""
    return params_from_dict(sections, base_dir, "notebook parameters", whole=False)


def sections_for(p: Params, notebook: str) -> dict:
    """The params sections a notebook takes, as plain literals for papermill."""
    return {name: dataclasses.asdict(getattr(p, name)) if dataclasses.is_dataclass(getattr(p, name))
            else getattr(p, name) for name in NOTEBOOKS[notebook][2]}
