"""Content-keyed result store: safetensors + JSON, atomic writes, verified reads.

Only named, expensive results are cached (pooled activations, perplexity tables). A key is the hash of
everything that determines the result (model id, revision, weight fingerprint and dtype, corpus and
token digests, options, ``FORMAT``). Each entry is ``<key>.safetensors`` plus ``<key>.json``; the JSON is
written last (it is the commit marker) and records the SHA-256 of the tensor file and of its own labels
(``meta``: sentence ids, languages, layers), both checked on every read. A corrupt entry raises
``CacheError`` naming the file: it is never silently reused. ``Store.check_writable`` lets a caller find an
unwritable cache folder before the expensive step; a write that fails anyway warns and loses nothing but the
cache entry (the caller still returns its result). ``Store.lock`` serialises
the computation of one key between processes (jobs on a cluster sharing the folder): the second waits and reads.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path

import torch
from safetensors.torch import load, save

FORMAT = 2  # bump when the layout of any cached result changes (2: the JSON labels carry their own digest)


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


def _meta_digest(meta) -> str:
    """SHA-256 of labels as they read back from JSON (key order aside)."""
    return hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()


def write_entry(stem: str | Path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Write ``stem.safetensors`` and ``stem.json`` atomically; the JSON carries the digests of the tensor file
    and of ``meta`` (the labels), so an edit to either is caught on read."""
    meta_path, data_path = _paths(stem)
    blob = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()})
    atomic_write(data_path, blob)
    meta = json.loads(json.dumps(meta, default=str))  # as it will read back
    record = {"format": FORMAT, "sha256": hashlib.sha256(blob).hexdigest(), "meta_sha256": _meta_digest(meta),
              "meta": meta}
    atomic_write(meta_path, json.dumps(record, indent=1, default=str).encode())


def read_entry(stem: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Read and verify an entry written by ``write_entry``; raise ``CacheError`` if it is damaged."""
    stem = Path(stem)
    meta_path, data_path = _paths(stem)
    try:
        record = json.loads(meta_path.read_text(encoding="utf-8"))
        blob = data_path.read_bytes()
    except (OSError, ValueError) as e:  # ValueError: bad JSON or bad UTF-8
        raise CacheError(f"cannot read result {stem}: {e}. Delete {meta_path} to recompute.") from e
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        got = record.get("format") if isinstance(record, dict) else None
        raise CacheError(f"{meta_path} has format {got}, this lfcore writes {FORMAT}; delete it to recompute")
    if hashlib.sha256(blob).hexdigest() != record.get("sha256"):
        raise CacheError(f"{data_path} does not match the digest in {meta_path} (truncated or modified). "
                         f"Delete both files to recompute.")
    if _meta_digest(record.get("meta")) != record.get("meta_sha256"):
        raise CacheError(f"the labels in {meta_path} do not match their digest (edited or damaged): they would "
                         f"relabel the cached values. Delete {meta_path} and {data_path} to recompute.")
    try:
        return load(blob), record["meta"]
    except Exception as e:  # a blob that matches its digest but safetensors cannot parse (written by another tool)
        raise CacheError(f"cannot parse {data_path}: {e}. Delete both files to recompute.") from e


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

    def check_writable(self, kind: str) -> None:
        """Raise ``CacheError`` unless an entry of ``kind`` can be written here: call it before computing
        what will be stored, so that a read-only folder, or a file where a folder should be, stops the run
        before the work instead of after it. Usage: ``store.check_writable("activations")``."""
        folder = self.root / kind
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=folder, prefix=".lfcore-write-test-")
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            raise CacheError(f"the result cache {folder} cannot be written ({type(e).__name__}: {e}); fix its "
                             f"permissions, remove what is in the way, or choose another cache folder "
                             f"(--cache-dir, $LFCORE_CACHE) or none (cache=None)") from None

    def put(self, kind: str, key: str, tensors: dict[str, torch.Tensor], meta: dict) -> bool:
        """Write an entry; True if written. A write that fails (disk full, folder made read-only meanwhile)
        warns and returns False: the caller keeps and returns its result, only the cache entry is lost."""
        try:
            write_entry(self._stem(kind, key), tensors, meta)
        except OSError as e:
            warnings.warn(f"could not write cache entry {self._stem(kind, key)} ({type(e).__name__}: {e}); the "
                          f"result is returned but not cached", stacklevel=2)
            return False
        return True

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
