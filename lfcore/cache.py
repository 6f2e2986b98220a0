"""Content-keyed result store: safetensors + JSON, atomic writes, verified reads; tables as CSV + JSON.

A key hashes everything that determines a result (model identity, data digests, options, the code's
``code_key``, ``FORMAT``). An entry is ``<key>.safetensors`` plus ``<key>.json``, written last as the commit
marker, with the SHA-256 of the tensors and of its labels (``meta``), both checked on every read: a corrupt
entry raises ``CacheError`` naming the file. An unwritable folder is found before the expensive step; a write
that fails anyway only warns. ``Cache.lock`` lets one process compute a key while others wait and read it.
"""
from __future__ import annotations

import ast
import contextlib
import functools
import hashlib
import io
import json
import os
import sys
import tempfile
import warnings
from collections import Counter
from pathlib import Path

import filelock
import numpy as np
import pandas as pd
import torch
from safetensors.torch import load, save

PACKAGE = Path(__file__).resolve().parent
FORMAT = 2  # bump when the layout of any cached result changes (2: the JSON labels carry their own digest)


class CacheError(RuntimeError):
    """A cache entry exists but cannot be trusted (digest mismatch, truncated or unreadable file)."""


def make_key(**parts) -> str:
    """A stable hex key of JSON-able parts: ``make_key(model=lm.meta(), sets={"en": {3: tensor([5, 17])}})``.
    Dict order does not matter; a tensor counts by its bytes, dtype and shape, anything else by ``tolist()``
    or ``str()``."""
    def default(o):
        if isinstance(o, torch.Tensor):
            a = o.detach().cpu().contiguous().numpy()
            return [hashlib.sha256(a.tobytes()).hexdigest(), str(a.dtype), list(a.shape)]
        return o.tolist() if hasattr(o, "tolist") else str(o)
    blob = json.dumps({"format": FORMAT, **parts}, sort_keys=True, default=default)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def atomic_write(path: str | Path, data: bytes | str) -> Path:
    """Write ``data`` (text is UTF-8) to ``path`` through a temp file and ``os.replace``: a reader sees the old
    file or the whole new one, never a part. Permissions are the usual 0666 less umask."""
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
    """``stem.json`` and ``stem.safetensors``, appended: a dot in the name ("qwen2.5-0.5b") stays."""
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
    atomic_write(meta_path, json.dumps(record, indent=1))


def read_entry(stem: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Read and verify an entry written by ``write_entry``; raise ``CacheError`` if it is damaged."""
    meta_path, data_path = _paths(stem)
    try:
        record = json.loads(meta_path.read_text(encoding="utf-8"))
        blob = data_path.read_bytes()
    except (OSError, ValueError) as e:  # ValueError: bad JSON or bad UTF-8
        raise CacheError(f"cannot read result {stem}: {e}. Delete {meta_path} to recompute.") from e
    if (got := record.get("format") if isinstance(record, dict) else None) != FORMAT:
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


def save_table(df: pd.DataFrame, path: str | os.PathLike, index: bool = True) -> tuple[Path, Path | None]:
    """Write ``df`` as CSV at ``path`` and its ``attrs`` (if any) as JSON next to it (same name, ``.json``).
    ``save_table(table, "tables/table1.csv")`` -> (CSV path, JSON path or None without attrs)."""
    path = Path(path)
    if path.suffix == ".json":
        raise ValueError(f"{path}: give the CSV path; the JSON sidecar gets the same name with .json")
    atomic_write(path, df.to_csv(index=index))
    attrs = json.dumps(df.attrs, indent=1, ensure_ascii=False, default=str)
    return path, (atomic_write(path.with_suffix(".json"), attrs) if df.attrs else None)


def load_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a table written by ``save_table``, attrs included."""
    df = pd.read_csv(path, index_col=0)
    if (sidecar := Path(path).with_suffix(".json")).exists():
        df.attrs.update(json.loads(sidecar.read_text(encoding="utf-8")))
    return df


@functools.lru_cache(maxsize=None)
def code_digest(*paths: str) -> str:
    """A short hash of package files: ``code_digest("capture.py", "tasks")``; paths are relative to lfcore's
    folder, a folder meaning every file under it (``"."``: the whole package)."""
    h = hashlib.sha256()
    for rel in paths:
        path = PACKAGE / rel
        files = sorted(f for f in path.rglob("*") if f.is_file()) if path.is_dir() else [path]
        for f in files:
            if "__pycache__" not in f.parts:
                h.update(str(f.relative_to(PACKAGE)).encode())
                h.update(f.read_bytes())
    return h.hexdigest()[:16]


def _lfcore_imports(rel: str) -> set[str]:
    """Package files that the module at ``rel`` imports (lfcore imports itself only relatively: test_layers)."""
    found, folder = set(), Path(rel).parent
    for node in ast.walk(ast.parse((PACKAGE / rel).read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = folder.parents[node.level - 2] if node.level > 1 else folder
            stem = base.joinpath(*(node.module or "").split("."))
            for name in [stem, *(stem / a.name for a in node.names)]:
                found |= {str(f) for f in (Path(f"{name}.py"), name / "__init__.py") if (PACKAGE / f).is_file()}
    return found


def code_key(*functions, data: tuple[str, ...] = ()) -> str:
    """A short hash of the code a result depends on: ``code_key(evaluate.deactivation_table)``: the modules
    defining ``functions``, every lfcore module they import (transitively, read from the sources) and the
    package ``data`` files or folders the code reads (e.g. ``"tasks"``)."""
    todo = [str(Path(sys.modules[f.__module__].__file__).resolve().relative_to(PACKAGE)) for f in functions]
    seen: set[str] = set()
    while todo:
        if (rel := todo.pop()) not in seen:
            seen.add(rel)
            todo.extend(_lfcore_imports(rel))
    return code_digest(*sorted(seen), *data)


class Cache:
    """A folder of content-keyed results (``root``; None caches nothing) that counts hits and misses per kind.

    >>> cache = Cache("reports/cache")
    >>> table = cache.frame("deactivation", {"model": lm.meta(), "code": code_key(fn)}, lambda: fn(...))
    """

    def __init__(self, root: str | Path | None):
        self.root = Path(root) if root else None
        self.hits, self.misses = Counter(), Counter()

    def get(self, kind: str, key: str) -> tuple[dict[str, torch.Tensor], dict] | None:
        """The entry, or None if absent (or no root). A damaged entry raises ``CacheError``."""
        if self.root is None or not _paths(self.root / kind / key)[0].exists():
            return None
        return read_entry(self.root / kind / key)

    def check_writable(self, kind: str) -> None:
        """Raise ``CacheError`` unless an entry of ``kind`` can be written here (read-only folder, a file in the
        way): ``cache.check_writable("activations")`` before the work, as ``result`` does on a miss."""
        if self.root is None:
            return
        folder = self.root / kind
        try:
            folder.mkdir(parents=True, exist_ok=True)
            tempfile.TemporaryFile(dir=folder).close()  # a probe file, gone when closed
        except OSError as e:
            raise CacheError(f"the result cache {folder} cannot be written ({type(e).__name__}: {e}); fix its "
                             f"permissions, remove what is in the way, or choose another cache folder "
                             f"(--cache-dir, $LFCORE_CACHE) or none (cache=None)") from None

    def put(self, kind: str, key: str, tensors: dict[str, torch.Tensor], meta: dict) -> bool:
        """Write an entry; True if written, False without a root. A write that fails (disk full, folder made
        read-only meanwhile) warns and returns False: the caller keeps its result, only the entry is lost."""
        if self.root is None:
            return False
        try:
            write_entry(self.root / kind / key, tensors, meta)
        except OSError as e:
            warnings.warn(f"could not write cache entry {self.root / kind / key} ({type(e).__name__}: {e}); the "
                          f"result is returned but not cached", stacklevel=3)
            return False
        return True

    @contextlib.contextmanager
    def lock(self, kind: str, key: str):
        """Hold the ``filelock`` ``<root>/<kind>/.<key>.lock`` for a block: another process asking for the key
        waits; an OS lock, so a killed holder never blocks the next. ``with cache.lock(kind, key): ...``."""
        (self.root / kind).mkdir(parents=True, exist_ok=True)
        with filelock.FileLock(self.root / kind / f".{key}.lock"):
            yield

    def result(self, kind: str, parts: dict, compute, encode, decode):
        """``compute()`` unless a result with the same ``parts`` is cached; counted as a hit or a miss.
        ``cache.result("activations", meta, run, Activations.entry, Activations.from_entry)``.

        ``encode(result)`` gives (tensors, JSON-able meta) to store, ``decode(tensors, meta)`` the result back.
        A miss checks the folder writable, then computes under the key's ``lock``: a job computing the same key
        meanwhile is waited for and read.
        """
        if self.root is None:
            self.misses[kind] += 1
            return compute()
        key = make_key(kind=kind, **parts)
        if (hit := self.get(kind, key)) is None:
            self.check_writable(kind)  # before the work, not after it
            with self.lock(kind, key):
                if (hit := self.get(kind, key)) is None:  # else another job wrote it while this one waited
                    self.misses[kind] += 1
                    result = compute()
                    self.put(kind, key, *encode(result))
                    return result
        self.hits[kind] += 1
        return decode(*hit)

    def frame(self, kind: str, parts: dict, compute) -> pd.DataFrame:
        """``compute()`` (a DataFrame) unless a frame with the same ``parts`` is cached. A hit equals the computed
        frame exactly: float columns are stored as tensors (JSON would round them), the rest as pandas' table
        JSON, ``attrs`` as JSON (Python's float repr is exact)."""
        return self.result(kind, parts, compute, _encode_frame, _decode_frame)

    def summary(self) -> dict:
        """{"hits": {kind: n}, "misses": {kind: n}}."""
        return {"hits": dict(self.hits), "misses": dict(self.misses)}


def _encode_frame(df: pd.DataFrame) -> tuple[dict[str, torch.Tensor], dict]:
    columns = {str(i): torch.from_numpy(df.iloc[:, i].to_numpy(copy=True))  # (rows,)
               for i, dtype in enumerate(df.dtypes) if isinstance(dtype, np.dtype) and dtype.kind == "f"}
    return columns, {"frame": df.to_json(orient="table", force_ascii=False), "attrs": df.attrs}


def _decode_frame(columns: dict[str, torch.Tensor], meta: dict) -> pd.DataFrame:
    df = pd.read_json(io.StringIO(meta["frame"]), orient="table")
    for i, values in columns.items():  # exact float columns, by position
        df.isetitem(int(i), values.numpy())
    df.attrs.update(meta["attrs"])
    return df
