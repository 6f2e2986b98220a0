"""Content-keyed result store: safetensors + JSON, atomic writes, verified reads.

Only named, expensive results are cached (pooled activations, perplexity tables). A key is the hash of
everything that determines the result (model id, revision, weight fingerprint and dtype, corpus and
token digests, options, ``FORMAT``). Each entry is ``<key>.safetensors`` plus ``<key>.json``; the JSON is
written last (it is the commit marker) and records the SHA-256 of the tensor file, checked on every read.
A corrupt entry raises ``CacheError`` naming the file: it is never silently reused. ``Store.lock`` serialises
the computation of one key between processes (jobs on a cluster sharing the folder): the second waits and reads.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load, save

FORMAT = 1  # bump when the layout of any cached result changes


class CacheError(RuntimeError):
    """A cache entry exists but cannot be trusted (digest mismatch, truncated or unreadable file)."""


def make_key(**parts) -> str:
    """A stable hex key from JSON-serialisable parts (dict order does not matter)."""
    blob = json.dumps({"format": FORMAT, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def atomic_write(path: str | Path, data: bytes | str) -> Path:
    """Write ``data`` (text is UTF-8) to ``path`` through a temp file and ``os.replace``: a reader sees the
    old file or the whole new one, never a part. The file gets the usual permissions (0666 less umask)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _paths(stem: str | Path) -> tuple[Path, Path]:
    """``stem.json`` and ``stem.safetensors``: suffixes appended, so a dot in the name ("qwen2.5-0.5b") stays."""
    stem = Path(stem)
    return stem.with_name(stem.name + ".json"), stem.with_name(stem.name + ".safetensors")


def write_entry(stem: str | Path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Write ``stem.safetensors`` and ``stem.json`` atomically; the JSON carries the tensor digest."""
    meta_path, data_path = _paths(stem)
    blob = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()})
    atomic_write(data_path, blob)
    record = {"format": FORMAT, "sha256": hashlib.sha256(blob).hexdigest(), "meta": meta}
    atomic_write(meta_path, json.dumps(record, indent=1, default=str).encode())


def read_entry(stem: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Read and verify an entry written by ``write_entry``; raise ``CacheError`` if it is damaged."""
    stem = Path(stem)
    meta_path, data_path = _paths(stem)
    try:
        record = json.loads(meta_path.read_text())
        blob = data_path.read_bytes()
    except (OSError, json.JSONDecodeError) as e:
        raise CacheError(f"cannot read result {stem}: {e}. Delete {meta_path} to recompute.") from e
    if record.get("format") != FORMAT:
        raise CacheError(f"{meta_path} has format {record.get('format')}, this lfcore writes {FORMAT}; recompute it")
    if hashlib.sha256(blob).hexdigest() != record["sha256"]:
        raise CacheError(f"{data_path} does not match the digest in {meta_path} (truncated or modified). "
                         f"Delete both files to recompute.")
    return load(blob), record["meta"]


class Store:
    """A folder of cache entries addressed by ``make_key`` keys."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def _stem(self, kind: str, key: str) -> Path:
        return self.root / kind / key

    def get(self, kind: str, key: str) -> tuple[dict[str, torch.Tensor], dict] | None:
        """The entry, or None if absent. A damaged entry raises ``CacheError``."""
        stem = self._stem(kind, key)
        if not _paths(stem)[0].exists():
            return None
        return read_entry(stem)

    def put(self, kind: str, key: str, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        write_entry(self._stem(kind, key), tensors, meta)

    @contextlib.contextmanager
    def lock(self, kind: str, key: str):
        """Hold an exclusive lock on ``kind/key`` for the length of a block; another process asking for the same
        key waits. Usage: ``with store.lock(kind, key): hit = store.get(kind, key) or compute-and-put``.

        An ``fcntl.flock`` on ``<root>/<kind>/.<key>.lock``: released by the kernel when the holder exits or is
        killed, so a dead job never blocks the next. (On NFS, Linux maps it to a POSIX lock the server holds.)
        """
        path = self.root / kind / f".{key}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
