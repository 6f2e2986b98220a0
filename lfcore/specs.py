"""The params schema: one pydantic model per section of a params file (``Params``), with its defaults, and the
notebook table (``NOTEBOOKS``, read from ``notebooks/``) whose keys are the default notebook list. Loading and
checking a file against it is ``lfcore.params``. Usage: ``CaptureSpec(batch_size=8)``.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from .languages import check_language

ROOT = Path(__file__).resolve().parent.parent  # the repository checkout (notebooks/, params/, reports/)
LANGS9 = ["ar", "zh", "en", "fr", "hi", "id", "pt", "es", "vi"]


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


def _rule(test, message: str) -> AfterValidator:
    """A check that a value ``v``, unless None, passes ``test``; else ``ValueError(message.format(v=v))``."""
    def check(v):
        if v is not None and not test(v):
            raise ValueError(message.format(v=v))
        return v
    return AfterValidator(check)


Lang = Annotated[str, AfterValidator(check_language)]  # an ISO 639-1 code, optionally suffixed: "zh-CN"
_KNOWN = ", ".join(NOTEBOOKS)
_Notebook = Annotated[str, _rule(lambda v: v in NOTEBOOKS, "unknown notebook {v!r} (known: " + _KNOWN + ")")]
_ANY_NOTEBOOK = _rule(lambda v: len(v) > 0, f"the list is empty, so nothing would run; list some of {_KNOWN} or "
                                            "leave the key out for all")


class _Spec(BaseModel):
    """A params section: unknown keys, wrong types (no coercion of "16" to 16 or 1 to True) and inf/nan are errors."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class ResourceSpec(_Spec):
    """What one job asks the scheduler for under ``lfcore reproduce --executor slurm|local`` (``lfcore.jobs``):
    GPUs, CPU cores and memory on one node, a time limit and, on SLURM, a partition. The params file's
    ``resources`` section holds the default; a model's own ``resources`` replaces it for that model's jobs."""

    gpus: int = Field(1, ge=0)
    cpus: int = Field(8, ge=1)
    mem_gb: float = Field(64.0, gt=0)
    time_min: int = Field(240, ge=1)
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
    step: int | None = Field(None, ge=0)
    params: float | None = Field(None, gt=0)
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
    n: int = Field(100, ge=2)  # sentences per language
    seed: int = 0


class CaptureSpec(_Spec):
    batch_size: int = Field(16, ge=1)
    max_length: int = Field(512, ge=1)
    pool_special_tokens: bool = False
    skip_first: bool = False
    # feed the special tokens the tokenizer adds (e.g. BOS, then not pooled); false: the text's tokens only
    add_special_tokens: bool = True


class RegionSpec(_Spec):
    threshold: float = 2.0
    sweep: list[float] = Field([1.0, 1.5, 2.0, 2.5], min_length=1)
    epsilon: float = Field(0.0, ge=0.0)  # added to every normalised value before the contribution scores


class PerplexitySpec(_Spec):
    """Text for Table 1: ``ntrex128-passages`` (bundled) or ``hf:csebuetnlp/xlsum`` with ``hf_configs``. The
    defaults keep the costliest step small (the paper: 50+ XL-Sum documents, windows of 2048)."""

    source: str = "ntrex128-passages"
    hf_configs: dict[str, str] | None = None
    revision: str | None = None  # of an hf: dataset: XL-Sum is a loading script, so refs/convert/parquet
    split: str = "test"
    text_column: str = "text"
    documents: int = Field(2, ge=1)
    max_tokens: int | None = Field(256, ge=1)  # cut each language's text to this many tokens (equal cost)
    seqlen: int = Field(64, ge=3)  # tokens per window, start token included
    # overlapping: a start token per window, every token scored once; disjoint: the text tokenised once, cut into
    # windows of seqlen, the tail dropped
    windows: Literal["overlapping", "disjoint"] = "overlapping"
    # overlapping: at most seqlen - 1 (None: overlap as little as possible); disjoint: None or seqlen
    stride: int | None = Field(None, ge=1)
    batch_size: int = Field(8, ge=1)
    # % of all neurons in the random set; None: just above the largest key region (the paper's Table 4)
    random_percent: Annotated[float | None, _rule(lambda v: 0 < v <= 100, "{v!r} must be in (0, 100]")] = 10.0
    seed: int = 0
    # each window's start token: None follows the tokenizer (perplexity.start_token), true its bos_token, false none
    add_bos: bool | None = None


class AccuracySpec(_Spec):
    task: Literal["xcopa_xl", "xstorycloze_xl"] = "xcopa_xl"
    languages: list[Lang] = Field(["en", "id", "vi", "zh"], min_length=1)
    limit: int | None = Field(40, ge=1)
    batch_size: int = Field(16, ge=1)


class GenerationSpec(_Spec):
    languages: list[Lang] = Field(["en", "zh", "fr"], min_length=1)  # a subset of Params.languages
    prompts: dict[str, list[str]] | None = None  # None: evaluate.DEFAULT_PROMPTS
    prompts_per_language: int = Field(2, ge=1)
    max_new_tokens: int = Field(24, ge=1)


class UncertaintySpec(_Spec):
    n_boot: int = Field(1000, ge=1)
    n_perm: int = Field(1000, ge=0)  # 0: no permutation p-values
    level: Annotated[float, _rule(lambda v: 0 < v < 1, "{v!r} must be in (0, 1), e.g. 0.95")] = 0.95
    seed: int = 0


class DiagnosticsSpec(_Spec):
    k: int = Field(5, ge=1)  # dominant neurons per layer
    # a layer is flagged when its top-k neurons hold more than this share of the squared norm
    share: Annotated[float, _rule(lambda v: 0 < v <= 1, "{v!r} must be in (0, 1]")] = 0.5
    first_token_sentences: int = Field(20, ge=1)  # sentence ids recaptured without their first token


class RobustnessSpec(_Spec):
    seeds: list[int] = Field([0, 1, 2], min_length=1)  # random disjoint halves
    lape: bool = False  # also select neurons by LAPE and compare (one more pass: about a minute offline)


class SteeringSpec(_Spec):
    """Beyond the paper (obs6): steer and patch a language through its key region, against a size-matched random
    set. Prompts are corpus sentences outside the sample the regions are found on."""

    prompts_per_language: int = Field(2, ge=2)
    max_new_tokens: int = Field(10, ge=1)
    # "set": the region's neurons are set to strength x the target language's mean activation (LAPE's
    # "activate" at strength 1); "add": that vector is added to them
    mode: Literal["set", "add"] = "set"
    strengths: list[Annotated[float, Field(gt=0)]] = Field([1.0, 4.0], min_length=1)
    # targets of per-layer patching (a subset of Params.languages); None: the first 3 of `languages`
    patch_languages: list[Lang] | None = ["zh", "hi"]
    layer_bands: int = Field(3, ge=1)  # patching: each region cut into bands of consecutive layers
    perplexity_strength: float = Field(1.0, gt=0)
    perplexity_tokens: int = Field(96, ge=2)  # per language, scored in windows of perplexity.seqlen
    seed: int = 0  # random control sets


class MapSpec(_Spec):
    sentences: int = Field(100, ge=1)  # sentence ids per language in the similarity map (Figure 2)
    layer_sentences: int = Field(12, ge=1)  # ... in the per-layer slider (one map per layer in the HTML)
    family_sentences: int = Field(40, ge=1)  # ... in each map of the side-by-side family figure (Figure 8)


class SeriesSpec(_Spec):
    models: list[ModelSpec] = Field([ModelSpec()], min_length=1)
    note: str = ""


class Params(_Spec):
    title: str = "lfcore report"
    protocol: Literal["lfcore", "paper"] = "lfcore"  # the preset of PROTOCOLS this file's items start from
    notebooks: Annotated[list[_Notebook], _ANY_NOTEBOOK] = list(NOTEBOOKS)
    languages: Annotated[list[Lang], _rule(lambda v: len(v) >= 2 and len(set(v)) == len(v),
                                           "need at least 2 distinct languages, got {v}")] = LANGS9
    model: ModelSpec = ModelSpec()
    corpus: CorpusSpec = CorpusSpec()
    capture: CaptureSpec = CaptureSpec()
    regions: RegionSpec = RegionSpec()
    perplexity: PerplexitySpec = PerplexitySpec()
    accuracy: AccuracySpec = AccuracySpec()
    generation: GenerationSpec = GenerationSpec()
    uncertainty: UncertaintySpec = UncertaintySpec()
    diagnostics: DiagnosticsSpec = DiagnosticsSpec()
    robustness: RobustnessSpec = RobustnessSpec()
    steering: SteeringSpec = SteeringSpec()
    maps: MapSpec = MapSpec()
    checkpoints: SeriesSpec = SeriesSpec(
        models=[ModelSpec(label="Gemma 3 270M (base, GGUF Q4_K_M), final")],
        note="Offline there is no checkpoint series: this runs the single final checkpoint, so no trend can be "
             "read. The paper's series: lfcore reproduce params/paper_bloom_checkpoints.yaml (network and a GPU).")
    sizes: SeriesSpec = SeriesSpec(
        models=[ModelSpec(spec="smollm2-135m", label="SmolLM2 135M Instruct (GGUF Q4_1)"),
                ModelSpec(label="Gemma 3 270M (base, GGUF Q4_K_M)")],
        note="Caveat: SmolLM2-135M and Gemma 3 270M are different families (data, tokenizer, recipe), so the "
             "comparison mixes size with everything else. The paper's series: lfcore reproduce "
             "params/paper_bloom_sizes.yaml.")
    family: SeriesSpec = SeriesSpec(
        models=[ModelSpec(spec="smollm2-135m", label="SmolLM2 135M Instruct (GGUF Q4_1)"),
                ModelSpec(label="Gemma 3 270M (base, GGUF Q4_K_M)")],
        note="Offline stand-in for the LLaMA2 family: the English-centric SmolLM2-135M (analysed in detail) beside "
             "the multilingual Gemma 3 270M. The paper's run: lfcore reproduce params/paper_llama2.yaml.")
    resources: ResourceSpec = ResourceSpec()  # per job, unless a model has its own
