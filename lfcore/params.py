"""Parameter sets: a YAML file checked against ``Params`` (nested pydantic models, ``lfcore.specs``).

Keys, types, ranges and language codes are the schema's; this module adds the ``protocol`` preset (``PROTOCOLS``)
and the checks against files, corpora, tasks and the other sections. Every error is a ``ParamsError`` naming the
key path and the file. Paths are relative to the params file and are stored resolved.
"""
from __future__ import annotations

import difflib
import functools
import inspect
import typing
from pathlib import Path

import yaml
from pydantic import BaseModel, ValidationError

from .corpus import load_corpus
from .evaluate import DEFAULT_PROMPTS, tasks_dir
from .models import BUNDLED, check_spec
from .regions import check_threshold
from .specs import NOTEBOOKS, ROOT, ModelSpec, Params

BUNDLED_CORPORA = ("ntrex128", "ntrex128-passages")

# Protocol presets: section -> {item: value}, filled in where a params file does not set the item itself.
# "lfcore": the defaults in lfcore.specs; "paper": the authors' released code (X-LANCE/LinguaFranca), item by item
# with its source in README, "The authors' protocol". Model dtype: PAPER_DTYPE.
PROTOCOLS: dict[str, dict[str, dict]] = {
    "lfcore": {},
    "paper": {"capture": {"add_special_tokens": False},
              "perplexity": {"windows": "disjoint", "split": "validation", "documents": 500},
              "regions": {"epsilon": 1e-5},
              "maps": {"family_sentences": 50}},
}
# run.py loads a final model without torch_dtype (float32) and an intermediate checkpoint (a revision) "auto"
PAPER_DTYPE = {False: "float32", True: "auto"}  # keyed by: the model spec names a revision


def _apply_protocol(p: Params) -> Params:
    """``p`` with each item of its protocol's preset that the file does not set; under ``paper`` each model spec
    without a ``dtype`` gets ``PAPER_DTYPE``'s."""
    for section, items in PROTOCOLS[p.protocol].items():
        spec = getattr(p, section)
        for key, value in items.items():
            if key not in spec.model_fields_set:
                setattr(spec, key, value)
    if p.protocol == "paper":
        for m in [p.model, *p.checkpoints.models, *p.sizes.models, *p.family.models]:
            if "dtype" not in m.model_fields_set:
                m.dtype = PAPER_DTYPE[bool(m.revision)]
    return p


class ParamsError(ValueError):
    """A params file (or a notebook's parameters) does not match ``Params``; the message names key and file."""


_WORDS = {  # a pydantic error type -> lfcore's words, given the value, its type and the error's context
    "literal_error": "{value!r} is not one of {expected}", "finite_number": "{value!r} is not a finite number",
    "value_error": "{error}", "greater_than_equal": "{value!r} must be at least {ge:g}",
    "greater_than": "{value!r} must be > {gt:g}", "too_short": "{value!r} must not be empty",
    "model_type": "expected a mapping of keys, got {value!r}",
    "model_attributes_type": "expected a mapping of keys, got {value!r}",
    "int_type": "expected int, got {type} ({value!r})", "float_type": "expected float, got {type} ({value!r})",
    "bool_type": "expected bool, got {type} ({value!r})", "string_type": "expected str, got {type} ({value!r})",
    "list_type": "expected a list, got {type} ({value!r})", "dict_type": "expected a mapping, got {type} ({value!r})"}


def _where(loc: tuple) -> str:
    """A pydantic error location as a key path: ("checkpoints", "models", 0, "spec") -> checkpoints.models[0].spec."""
    return "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in loc).lstrip(".")


def _section(loc: tuple) -> type[BaseModel]:
    """The section class at a key path: ("checkpoints", "models", 0) -> ModelSpec (list items and None skipped)."""
    section = Params
    for k in loc:
        if isinstance(k, str):
            tp = section.model_fields[k].annotation  # a section, list[section] or section | None
            section = next(t for t in (tp, *typing.get_args(tp)) if inspect.isclass(t) and issubclass(t, BaseModel))
    return section


def _message(e: dict) -> str:
    """One pydantic error in lfcore's words: the key path, what was expected, the value given."""
    where, kind, value = _where(e["loc"]), e["type"], e.get("input")
    if kind == "extra_forbidden":
        known = list(_section(e["loc"][:-1]).model_fields)
        close = difflib.get_close_matches(str(e["loc"][-1]), known, n=1)
        hint = f"did you mean {_where((*e['loc'][:-1], close[0]))!r}? " if close else ""
        return f"unknown key {where!r} ({hint}known keys here: {', '.join(known)})"
    ctx = {**e.get("ctx", {}), "value": value, "type": type(value).__name__}
    if kind == "literal_error":
        ctx["expected"] = ctx["expected"].replace(" or ", ", ")
    return f"{where or 'top level'}: " + _WORDS.get(kind, "{msg}").format(msg=e["msg"], **ctx)


def _resolve(path: str, base: Path, where: str) -> str:
    p = (base / Path(path).expanduser()).resolve()
    if not p.exists():
        raise ParamsError(f"{where}: file not found: {p} (paths are relative to the params file's folder {base})")
    return str(p)


def _available(langs: list[str], where: str, available, what: str) -> None:
    for i, lang in enumerate(langs):
        if lang not in available:
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
    """Resolve a folder or .gguf spec (and a tokenizer folder) against the params file; keys and hub ids stay."""
    if m.tokenizer is not None and (m.tokenizer.startswith((".", "/", "~")) or (base / m.tokenizer).exists()):
        m.tokenizer = _resolve(m.tokenizer, base, f"{where}.tokenizer")
    if m.spec in BUNDLED or m.spec.startswith("tiny:"):
        return
    try:
        check_spec(m.spec, base)  # relative paths are relative to the params file's folder
    except ValueError as e:
        raise ParamsError(f"{where}.spec: {e}") from None
    if m.spec.startswith((".", "/", "~")) or m.spec.endswith(".gguf") or (base / m.spec).exists():
        m.spec = _resolve(m.spec, base, f"{where}.spec")


def _check(p: Params, base: Path, present: set[str], whole: bool = True) -> None:
    """Checks beyond the schema: files exist, languages and sentences exist in the corpus, windows, task and
    prompts, thresholds are reachable and patch languages have regions (when ``regions`` / ``steering`` is given,
    or a ``whole`` file runs a notebook that uses it)."""
    c = p.corpus
    if c.source == "bible":
        if not c.files:
            raise ParamsError("corpus.files: source 'bible' needs files: {lang: path to the XML file}")
        c.files = {lang: _resolve(f, base, f"corpus.files.{lang}") for lang, f in c.files.items()}
        _available(p.languages, "languages", c.files, "corpus.files")
    elif not c.source.startswith("hf:"):
        bundled = c.source in BUNDLED_CORPORA
        if not bundled:
            c.source = _resolve(c.source, base, "corpus.source")
        corpus = _corpus(c.source)
        _available(p.languages, "languages", corpus.languages,
                   f"the bundled corpus {c.source!r}" if bundled else f"corpus.source {c.source}")
        complete = len(corpus.select(p.languages).ids)
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
    if pp.source.startswith("hf:"):
        _available(p.languages, "languages", pp.hf_configs or {}, "perplexity.hf_configs")
    else:
        if pp.source not in BUNDLED_CORPORA:
            pp.source = _resolve(pp.source, base, "perplexity.source")
        _available(p.languages, "languages", _corpus(pp.source).languages, f"perplexity.source {pp.source}")
    task_langs = {f.stem.removeprefix(f"{p.accuracy.task}_") for f in tasks_dir().glob(f"{p.accuracy.task}_*.yaml")}
    _available(p.accuracy.languages, "accuracy.languages", task_langs, f"task {p.accuracy.task!r}")
    _available(p.generation.languages, "generation.languages", p.generation.prompts or DEFAULT_PROMPTS,
               "generation.prompts")
    for i, lang in enumerate(p.generation.languages if {"obs2", "appendix"} & set(p.notebooks) else []):
        if lang not in p.languages:
            raise ParamsError(f"generation.languages[{i}]: {lang!r} is not in languages {p.languages}: obs2 and the "
                              f"appendix switch off each generation language's key region, and key regions are found "
                              f"for `languages` only; add {lang!r} to languages or remove it from generation.languages")
    _model_path(p.model, base, "model")
    for name in ("checkpoints", "sizes", "family"):
        for i, m in enumerate(getattr(p, name).models):
            _model_path(m, base, f"{name}.models[{i}]")
    if "regions" in present or (whole and any("regions" in NOTEBOOKS[nb][2] for nb in p.notebooks)):
        sweep = [(f"regions.sweep[{i}]", t) for i, t in enumerate(p.regions.sweep)]
        for where, t in [("regions.threshold", p.regions.threshold), *sweep]:
            try:
                check_threshold(t, len(p.languages), where)
            except ValueError as e:
                raise ParamsError(f"{e} (languages: {p.languages})") from None
    if "steering" in present or (whole and "obs6" in p.notebooks):
        for i, lang in enumerate(p.steering.patch_languages or []):
            if lang not in p.languages:
                raise ParamsError(f"steering.patch_languages[{i}]: {lang!r} is not in languages {p.languages}: key "
                                  f"regions are found for `languages` only; set steering.patch_languages to some of "
                                  f"them (null: the first three)")


def params_from_dict(data: dict, base: str | Path = ".", source: str = "params", whole: bool = True,
                     check: bool = True) -> Params:
    """Validate a parsed params mapping; errors are prefixed with ``source`` (the file name). ``whole``: the
    mapping is a whole params file (False: a notebook's sections, whose other sections go unused).
    ``check=False`` checks the schema only (keys, types, ranges, language codes, notebook names), no file, corpus
    or task looked up: what a params file asks for before the files it names exist (``lfcore.rehearse`` builds
    them), or to plan and estimate jobs."""
    try:
        p = _apply_protocol(Params.model_validate(data or {}))
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
            key, line = self.construct_object(key_node, deep=deep), key_node.start_mark.line + 1
            if key in seen:
                raise ParamsError(f"{key_node.start_mark.name}:{line}: key {key!r} appears twice in one mapping "
                                  f"(first at line {seen[key]}); keep one")
            seen[key] = line
        return super().construct_mapping(node, deep)


def load_params(path: str | Path, check: bool = True) -> Params:
    """Read and validate a params YAML file (see ``Params``); raise ``ParamsError`` naming key and file.
    Usage: ``p = load_params("params/default.yaml")``; ``check=False``: the schema only (see
    ``params_from_dict``). A file that is empty (or only comments), not UTF-8, not valid YAML, or has a key twice
    in one mapping is an error: none of them starts a run."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"params file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ParamsError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason}); save it as UTF-8") from None
    loader = _UniqueKeyLoader(text)
    loader.name = str(path)  # marks (and the duplicate-key error) name the file
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML: {e}") from None
    finally:
        loader.dispose()
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
    dumped = p.model_dump()
    return {name: dumped[name] for name in NOTEBOOKS[notebook][2]}
