"""Parameter sets: a YAML file checked against ``Params`` (nested pydantic models), and the notebook table.

An unknown key, a wrong type, a value out of its field's range (``_rule``), a missing file or an unknown
language raises ``ParamsError`` naming the key path and the file. ``protocol`` (``PROTOCOLS``) resolves at load
time to concrete per-item values: a preset fills each of its items the file does not set itself. Paths are
relative to the params file and are stored resolved. ``NOTEBOOKS`` lists each notebook of ``notebooks/`` with
the sections of the params file injected into its papermill ``parameters`` cell, read from that cell: a new
notebook needs no edit here.
"""
from __future__ import annotations

import ast
import difflib
import functools
import typing
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from .corpus import check_language, load_corpus
from .evaluate import DEFAULT_PROMPTS, tasks_dir
from .models import BUNDLED, check_spec
from .regions import check_threshold

ROOT = Path(__file__).resolve().parent.parent  # the repository checkout (notebooks/, params/, reports/)
LANGS9 = ["ar", "zh", "en", "fr", "hi", "id", "pt", "es", "vi"]
BUNDLED_CORPORA = ("ntrex128", "ntrex128-passages")


def _rule(test, rule: str) -> AfterValidator:
    """A check that a value, unless None, passes ``test``; ``rule`` completes the message "<value> <rule>"."""
    def check(v):
        if v is not None and not test(v):
            raise ValueError(f"{v!r} {rule}")
        return v
    return AfterValidator(check)


def _at_least(low) -> AfterValidator:
    return _rule(lambda v: v >= low, f"must be at least {low}")


_NON_EMPTY = _rule(lambda v: len(v) > 0, "must not be empty")


class _Spec(BaseModel):
    """A params section: unknown keys, wrong types (no coercion of "16" to 16 or 1 to True) and inf/nan are errors."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class ResourceSpec(_Spec):
    """What one job asks the scheduler for under ``lfcore reproduce --executor slurm|local`` (``lfcore.jobs``):
    GPUs, CPU cores and memory on one node, a time limit and, on SLURM, a partition. The params file's
    ``resources`` section holds the default; a model's own ``resources`` replaces it for that model's jobs."""

    gpus: Annotated[int, _at_least(0)] = 1
    cpus: Annotated[int, _at_least(1)] = 8
    mem_gb: Annotated[float, _rule(lambda v: v > 0, "must be > 0")] = 64.0
    time_min: Annotated[int, _at_least(1)] = 240
    partition: str | None = None


class ModelSpec(_Spec):
    """One model: a bundled key, ``tiny:<family>-<hidden>``, a folder or .gguf file (relative to the params
    file), or a hub id with ``revision``. ``tokenizer`` (hub id or folder, with ``tokenizer_revision``) names a
    tokenizer for a model without one (checkpoint branches). ``label``, ``step`` and ``params`` (parameter count)
    name it in plots; ``resources`` (optional) is what each of its jobs asks a cluster for (``lfcore.jobs``)."""

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
    step: Annotated[int | None, _at_least(0)] = None
    params: Annotated[float | None, _rule(lambda v: v > 0, "must be > 0")] = None
    resources: ResourceSpec | None = None


class CorpusSpec(_Spec):
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
    n: Annotated[int, _at_least(2)] = 100  # sentences per language
    seed: int = 0


class CaptureSpec(_Spec):
    batch_size: Annotated[int, _at_least(1)] = 16
    max_length: Annotated[int, _at_least(1)] = 512
    pool_special_tokens: bool = False
    skip_first: bool = False
    # feed the special tokens the tokenizer adds (e.g. BOS, then not pooled); false: the text's tokens only
    add_special_tokens: bool = True


class RegionSpec(_Spec):
    threshold: float = 2.0
    sweep: Annotated[list[float], _NON_EMPTY] = Field(default_factory=lambda: [1.0, 1.5, 2.0, 2.5])
    epsilon: Annotated[float, _at_least(0.0)] = 0.0  # added to every normalised value before the contribution scores


class PerplexitySpec(_Spec):
    """Text for Table 1: ``ntrex128-passages`` (bundled) or ``hf:csebuetnlp/xlsum`` with ``hf_configs``.

    Table 1 is the costliest step (11 conditions x 9 languages, each token through Gemma's 262k-word LM head):
    by default the first 256 tokens of 2 passages per language, in 4 windows of 64 tokens. The paper: 50+
    XL-Sum documents, windows of 2048.
    """

    source: str = "ntrex128-passages"
    hf_configs: dict[str, str] | None = None
    revision: str | None = None  # of an hf: dataset: XL-Sum is a loading script, so refs/convert/parquet
    split: str = "test"
    text_column: str = "text"
    documents: Annotated[int, _at_least(1)] = 2
    max_tokens: Annotated[int | None, _at_least(1)] = 256  # cut each language's text to this many tokens (equal cost)
    seqlen: Annotated[int, _at_least(3)] = 64  # tokens per window, start token included
    # overlapping: a start token per window, every token scored once; disjoint: the text tokenised as the
    # tokenizer does (its own special tokens once), cut into windows of seqlen, the tail dropped
    windows: Literal["overlapping", "disjoint"] = "overlapping"
    # overlapping: at most seqlen - 1 (None: overlap as little as possible); disjoint: None or seqlen
    stride: Annotated[int | None, _at_least(1)] = None
    batch_size: Annotated[int, _at_least(1)] = 8
    # % of all neurons in the random set; None: just above the largest key region (the paper's Table 4)
    random_percent: Annotated[float | None, _rule(lambda v: 0 < v <= 100, "must be in (0, 100]")] = 10.0
    seed: int = 0
    # each window's start token: None follows the tokenizer (perplexity.start_token), true its bos_token, false none
    add_bos: bool | None = None


class AccuracySpec(_Spec):
    task: Literal["xcopa_xl", "xstorycloze_xl"] = "xcopa_xl"
    languages: Annotated[list[str], _NON_EMPTY] = Field(default_factory=lambda: ["en", "id", "vi", "zh"])
    limit: Annotated[int | None, _at_least(1)] = 40
    batch_size: Annotated[int, _at_least(1)] = 16


class GenerationSpec(_Spec):
    # a subset of Params.languages
    languages: Annotated[list[str], _NON_EMPTY] = Field(default_factory=lambda: ["en", "zh", "fr"])
    prompts: dict[str, list[str]] | None = None  # None: evaluate.DEFAULT_PROMPTS
    prompts_per_language: Annotated[int, _at_least(1)] = 2
    max_new_tokens: Annotated[int, _at_least(1)] = 24


class UncertaintySpec(_Spec):
    n_boot: Annotated[int, _at_least(1)] = 1000
    n_perm: Annotated[int, _at_least(0)] = 1000  # 0: no permutation p-values
    level: Annotated[float, _rule(lambda v: 0 < v < 1, "must be in (0, 1), e.g. 0.95")] = 0.95
    seed: int = 0


class DiagnosticsSpec(_Spec):
    k: Annotated[int, _at_least(1)] = 5  # dominant neurons per layer
    # a layer is flagged when its top-k neurons hold more than this share of the squared norm
    share: Annotated[float, _rule(lambda v: 0 < v <= 1, "must be in (0, 1]")] = 0.5
    first_token_sentences: Annotated[int, _at_least(1)] = 20  # sentence ids recaptured without their first token


class RobustnessSpec(_Spec):
    seeds: Annotated[list[int], _NON_EMPTY] = Field(default_factory=lambda: [0, 1, 2])  # random disjoint halves
    lape: bool = False  # also select neurons by LAPE and compare (one more pass: about a minute offline)


class SteeringSpec(_Spec):
    """Beyond the paper (obs6): steer and patch a language through its key region. Prompts are corpus sentences
    outside the sample the regions are found on; every prompt language meets every target language. The offline
    default: 2 held-out prompts per language, 10 new tokens, every region at 2 strengths against a size-matched
    random set, per-layer patching for zh and hi, perplexity with each region steered."""

    prompts_per_language: Annotated[int, _at_least(2)] = 2
    max_new_tokens: Annotated[int, _at_least(1)] = 10
    # "set": the region's neurons are set to strength x the target language's mean activation (LAPE's
    # "activate" at strength 1); "add": that vector is added to them
    mode: Literal["set", "add"] = "set"
    strengths: Annotated[list[float], _rule(lambda v: len(v) > 0 and all(s > 0 for s in v),
                                            "must be a non-empty list of positive factors")] = Field(
        default_factory=lambda: [1.0, 4.0])
    # targets of per-layer patching (a subset of Params.languages); None: the first 3 of `languages`
    patch_languages: list[str] | None = Field(default_factory=lambda: ["zh", "hi"])
    layer_bands: Annotated[int, _at_least(1)] = 3  # patching: each region cut into bands of consecutive layers
    perplexity_strength: Annotated[float, _rule(lambda v: v > 0, "must be > 0")] = 1.0
    perplexity_tokens: Annotated[int, _at_least(2)] = 96  # per language, scored in windows of perplexity.seqlen
    seed: int = 0  # random control sets


class MapSpec(_Spec):
    sentences: Annotated[int, _at_least(1)] = 100  # sentence ids per language in the similarity map (Figure 2)
    layer_sentences: Annotated[int, _at_least(1)] = 12  # ... in the per-layer slider (one map per layer in the HTML)
    family_sentences: Annotated[int, _at_least(1)] = 40  # ... in each map of the side-by-side family figure (Figure 8)


class SeriesSpec(_Spec):
    models: Annotated[list[ModelSpec], _NON_EMPTY] = Field(default_factory=lambda: [ModelSpec()])
    note: str = ""


class Params(_Spec):
    title: str = "lfcore report"
    protocol: Literal["lfcore", "paper"] = "lfcore"  # the preset of PROTOCOLS this file's items start from
    notebooks: list[str] = Field(default_factory=lambda: list(NOTEBOOKS))
    languages: list[str] = Field(default_factory=lambda: list(LANGS9))
    model: ModelSpec = Field(default_factory=ModelSpec)
    corpus: CorpusSpec = Field(default_factory=CorpusSpec)
    capture: CaptureSpec = Field(default_factory=CaptureSpec)
    regions: RegionSpec = Field(default_factory=RegionSpec)
    perplexity: PerplexitySpec = Field(default_factory=PerplexitySpec)
    accuracy: AccuracySpec = Field(default_factory=AccuracySpec)
    generation: GenerationSpec = Field(default_factory=GenerationSpec)
    uncertainty: UncertaintySpec = Field(default_factory=UncertaintySpec)
    diagnostics: DiagnosticsSpec = Field(default_factory=DiagnosticsSpec)
    robustness: RobustnessSpec = Field(default_factory=RobustnessSpec)
    steering: SteeringSpec = Field(default_factory=SteeringSpec)
    maps: MapSpec = Field(default_factory=MapSpec)
    checkpoints: SeriesSpec = Field(default_factory=lambda: SeriesSpec(
        models=[ModelSpec(label="Gemma 3 270M (base, GGUF Q4_K_M), final")],
        note="Offline there is no checkpoint series: this runs the single final checkpoint, so no trend can be "
             "read. The paper's series: lfcore reproduce params/paper_bloom_checkpoints.yaml (network and a GPU)."))
    sizes: SeriesSpec = Field(default_factory=lambda: SeriesSpec(
        models=[ModelSpec(spec="smollm2-135m", label="SmolLM2 135M Instruct (GGUF Q4_1)"),
                ModelSpec(label="Gemma 3 270M (base, GGUF Q4_K_M)")],
        note="Caveat: SmolLM2-135M and Gemma 3 270M are different families (data, tokenizer, recipe), so the "
             "comparison mixes size with everything else. The paper's series: lfcore reproduce "
             "params/paper_bloom_sizes.yaml."))
    family: SeriesSpec = Field(default_factory=lambda: SeriesSpec(
        models=[ModelSpec(spec="smollm2-135m", label="SmolLM2 135M Instruct (GGUF Q4_1)"),
                ModelSpec(label="Gemma 3 270M (base, GGUF Q4_K_M)")],
        note="Offline stand-in for the LLaMA2 family: the English-centric SmolLM2-135M (analysed in detail) beside "
             "the multilingual Gemma 3 270M. The paper's run: lfcore reproduce params/paper_llama2.yaml."))
    resources: ResourceSpec = Field(default_factory=ResourceSpec)  # per job, unless a model has its own


# Protocol presets: section -> {item: value}, filled in where a params file does not set the item itself.
# "lfcore" is the defaults of the models above. "paper" follows the authors' released code (X-LANCE/LinguaFranca):
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
    name = data.get("protocol", "lfcore") if isinstance(data, dict) else None
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


def _notebook(path: Path) -> tuple[str, str, tuple[str, ...]]:
    """(stem, title, params sections) of a jupytext notebook: its first heading, the names of its parameters cell
    other than those the runner sets (title, out_dir, cache_dir)."""
    text = path.read_text(encoding="utf-8")
    cell = text.split('# %% tags=["parameters"]\n', 1)[1].split("\n# %%", 1)[0]
    names = [stmt.targets[0].id for stmt in ast.parse(cell).body]
    title = next(line[4:] for line in text.splitlines() if line.startswith("# # "))
    return path.stem, title, tuple(n for n in names if n not in ("title", "out_dir", "cache_dir"))


# notebook key (its file name up to the first "_") -> (jupytext source stem, title, params sections injected into
# it), read from the notebooks: observations first, then the appendices
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    path.stem.split("_")[0]: _notebook(path)
    for path in sorted(NOTEBOOK_DIR.glob("*.py"), key=lambda f: (not f.stem.startswith("obs"), f.stem))}


class ParamsError(ValueError):
    """A params file (or a notebook's parameters) does not match ``Params``; the message names key and file."""


_EXPECTED = {"int_type": "int", "float_type": "float", "bool_type": "bool", "string_type": "str",
             "list_type": "a list", "dict_type": "a mapping"}


def _where(loc: tuple) -> str:
    """A pydantic error location as a key path: ("checkpoints", "models", 0, "spec") -> checkpoints.models[0].spec."""
    return "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in loc).lstrip(".")


def _section(loc: tuple) -> type[BaseModel]:
    """The section class at a key path: ("checkpoints", "models", 0) -> ModelSpec (list items and None skipped)."""
    section = Params
    for k in loc:
        if isinstance(k, str):
            todo, tp = [section.model_fields[k].annotation], None
            while todo:  # the section class inside list[...] or ... | None
                tp = todo.pop()
                if isinstance(tp, type) and issubclass(tp, BaseModel):
                    break
                todo.extend(typing.get_args(tp))
            section = tp
    return section


def _message(e: dict) -> str:
    """One pydantic error in lfcore's words: the key path, what was expected, the value given."""
    where, kind, value = _where(e["loc"]), e["type"], e.get("input")
    if kind == "extra_forbidden":
        known = list(_section(e["loc"][:-1]).model_fields)
        close = difflib.get_close_matches(str(e["loc"][-1]), known, n=1)
        hint = f"did you mean {_where((*e['loc'][:-1], close[0]))!r}? " if close else ""
        return f"unknown key {where!r} ({hint}known keys here: {', '.join(known)})"
    if kind == "literal_error":
        return f"{where}: {value!r} is not one of {e['ctx']['expected'].replace(' or ', ', ')}"
    if kind == "finite_number":
        return f"{where}: {value!r} is not a finite number"
    if kind == "value_error":
        return f"{where}: {e['ctx']['error']}"
    if kind in ("model_type", "model_attributes_type"):
        return f"{where or 'top level'}: expected a mapping of keys, got {value!r}"
    if kind in _EXPECTED:
        return f"{where}: expected {_EXPECTED[kind]}, got {type(value).__name__} ({value!r})"
    return f"{where}: {e['msg']}"


def _resolve(path: str, base: Path, where: str) -> str:
    p = (base / Path(path).expanduser()).resolve()
    if not p.exists():
        raise ParamsError(f"{where}: file not found: {p} (paths are relative to the params file's folder {base})")
    return str(p)


def _check_languages(langs: list[str], where: str, available=None, what: str = "") -> None:
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
    try:
        return load_corpus(source)
    except ValueError as e:
        raise ParamsError(f"cannot read corpus {source}: {e}") from None


def _model_path(m: ModelSpec, base: Path, where: str) -> None:
    """Resolve a folder or .gguf spec (and a tokenizer folder) relative to the params file; leave keys and hub
    ids alone."""
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
    thresholds are reachable and patch languages have regions (when ``regions`` / ``steering`` is given, or a
    ``whole`` file runs a notebook that uses it)."""
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
        _check_languages(p.languages, "languages", _corpus(c.source).languages, f"the bundled corpus {c.source!r}")
    elif c.source == "bible":
        if not c.files:
            raise ParamsError("corpus.files: source 'bible' needs files: {lang: path to the XML file}")
        c.files = {lang: _resolve(f, base, f"corpus.files.{lang}") for lang, f in c.files.items()}
        _check_languages(p.languages, "languages", c.files, "corpus.files")
    elif not c.source.startswith("hf:"):
        c.source = _resolve(c.source, base, "corpus.source")
        _check_languages(p.languages, "languages", _corpus(c.source).languages, f"corpus.source {c.source}")
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
        _check_languages(p.languages, "languages", _corpus(p.perplexity.source).languages,
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
    _model_path(p.model, base, "model")
    for name in ("checkpoints", "sizes", "family"):
        for i, m in enumerate(getattr(p, name).models):
            _model_path(m, base, f"{name}.models[{i}]")
    if "regions" in present or (whole and any("regions" in NOTEBOOKS[nb][2] for nb in p.notebooks)):
        _check_thresholds(p)
    if "steering" in present or (whole and "obs6" in p.notebooks):
        for i, lang in enumerate(p.steering.patch_languages or []):
            if lang not in p.languages:
                raise ParamsError(f"steering.patch_languages[{i}]: {lang!r} is not in languages {p.languages}: key "
                                  f"regions are found for `languages` only; set steering.patch_languages to some of "
                                  f"them (null: the first three)")


def _check_thresholds(p: Params) -> None:
    """``regions.threshold`` and every ``regions.sweep`` value must be reachable with ``languages``."""
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
        p = Params.model_validate(resolve_protocol(data or {}))
        if check:
            _check(p, Path(base).resolve(), set(data or {}), whole)
    except ValidationError as e:
        raise ParamsError(f"{source}: {_message(e.errors()[0])}") from None
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
    return {name: getattr(p, name).model_dump() if isinstance(getattr(p, name), BaseModel) else getattr(p, name)
            for name in NOTEBOOKS[notebook][2]}
