"""Parameter sets: a YAML file checked against ``Params`` (nested dataclasses), and the notebook table.

An unknown key, a wrong type, a missing file or an unknown language raises ``ParamsError`` naming the key
path and the file. Paths are relative to the params file and are stored resolved. ``NOTEBOOKS`` lists each
notebook with the sections of the params file injected into its papermill ``parameters`` cell.
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

LANGS9 = ["ar", "zh", "en", "fr", "hi", "id", "pt", "es", "vi"]
BUNDLED_CORPORA = ("ntrex128", "ntrex128-passages")





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
    revision: str | None = None  # of an hf: dataset, e.g. refs/convert/parquet for one that is a loading script
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
    revision: str | None = None  # of an hf: dataset: XL-Sum is a loading script, so refs/convert/parquet
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
