"""One run per output folder: a second ``lfcore reproduce`` into the same ``--out`` refuses to start, naming the
run that holds it, instead of the two overwriting each other's notebooks and kernel files."""
from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path

import filelock

from .cache import atomic_write


class FolderBusy(RuntimeError):
    """Another ``lfcore reproduce`` holds the output folder."""


@contextlib.contextmanager
def hold_folder(out: Path):
    """Hold ``out`` for this process for the length of a block, or raise ``FolderBusy`` naming the pid of the run
    that holds it: ``with hold_folder(Path("reports/default")): ...``. The OS releases the lock (``<out>/.lfcore.lock``,
    a filelock) when its process ends, so a killed run leaves none behind; ``<out>/.lfcore.lock.json`` says who holds
    it."""
    lock, who = filelock.FileLock(out / ".lfcore.lock"), out / ".lfcore.lock.json"
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        try:
            holder = json.loads(who.read_text())
            holder = f"pid {holder['pid']} on {holder['host']}, started {holder['started']}"
        except (OSError, ValueError, KeyError, TypeError):
            holder = "another process"
        raise FolderBusy(f"--out {out} is in use by another lfcore run ({holder}): two runs in one folder "
                         f"would overwrite each other's notebooks; wait for it to finish or pass another --out"
                         ) from None
    try:
        atomic_write(who, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                      "started": time.strftime("%Y-%m-%d %H:%M:%S")}))
        yield
    finally:
        who.unlink(missing_ok=True)
        lock.release()
