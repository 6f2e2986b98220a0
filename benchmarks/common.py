"""Shared pieces of the benchmarks: environment, timing, peak memory, models and batches.

Nothing here asserts anything: the benchmarks measure and print. Timings use ``time.perf_counter`` around
code that ends with a device synchronisation, after a warm-up, and report the median of the repeats.
"""
from __future__ import annotations

import gc
import os
import platform
import statistics
import threading
import time
from dataclasses import dataclass
from typing import Callable

import torch

from lfcore.capture import _length_batches

# ------------------------------------------------------------------------------------------ environment


def environment(device: str) -> list[tuple[str, str]]:
    """(name, value) lines describing where the numbers come from."""
    import transformers

    rows = [("python", platform.python_version()), ("torch", torch.__version__),
            ("transformers", transformers.__version__), ("threads", str(torch.get_num_threads())),
            ("cpu cores", str(os.cpu_count()))]
    if hasattr(os, "getloadavg"):
        load, cores = os.getloadavg()[0], os.cpu_count() or 1
        note = f"(>{cores}: other processes share the CPU)"
        if load > cores and torch.get_num_threads() > 1 and device == "cpu":
            note += "; busy CPU: timings will swing, rerun with --threads 1"
        rows.append(("load average (1 min)", f"{load:.2f}  {note}"))
    if device == "cuda" and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        rows += [("device", f"{props.name}, {props.total_memory / 2**30:.0f} GiB"), ("cuda", str(torch.version.cuda))]
    else:
        rows.append(("device", f"cpu ({platform.processor() or platform.machine()})"))
    return rows


# ---------------------------------------------------------------------------------------------- timing


def sync(device: str | torch.device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


@dataclass
class Timing:
    median: float
    runs: list[float]

    def __str__(self) -> str:
        return f"{self.median:.3f} s"


def _once(fn: Callable[[], object], device: str) -> float:
    """Wall seconds of one call of ``fn``, after a garbage collection, synchronised on ``device``."""
    gc.collect()
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def timed(fn: Callable[[], object], device: str, repeats: int = 3, warmup: Callable[[], object] | None = None) -> Timing:
    """Median wall time of ``fn`` over ``repeats`` runs, after one call of ``warmup`` (default: ``fn``)."""
    (warmup or fn)()
    sync(device)
    runs = [_once(fn, device) for _ in range(max(1, repeats))]
    return Timing(statistics.median(runs), runs)


def paired(fn_a: Callable[[], object], fn_b: Callable[[], object], device: str, repeats: int,
           warmup: Callable[[], object] | None = None) -> tuple[Timing, Timing, float]:
    """Time ``fn_a`` and ``fn_b`` alternately (a, b, a, b, ...) so both see the same machine load.

    Returns both timings and the median of the per-pair ratios a/b (robust when other processes come
    and go on a shared CPU).
    """
    if warmup is not None:
        warmup()
    a_runs, b_runs = [], []
    for _ in range(max(1, repeats)):
        a_runs.append(_once(fn_a, device))
        b_runs.append(_once(fn_b, device))
    ratio = statistics.median(a / b for a, b in zip(a_runs, b_runs))
    return Timing(statistics.median(a_runs), a_runs), Timing(statistics.median(b_runs), b_runs), ratio


# -------------------------------------------------------------------------------------------- memory


class PeakMemory:
    """Peak memory above the level at entry, in bytes (``.peak``), for the code inside the block.

    CUDA: ``torch.cuda.max_memory_allocated`` after a reset. CPU: the process RSS sampled every
    millisecond by a thread (torch's CPU allocator returns large blocks to the OS, so the RSS follows
    tensor allocations); without psutil, the RSS high-water mark from ``resource`` (``exact=False``).
    On glibc, freed heap memory is first handed back to the OS (``malloc_trim``): memory freed earlier
    (a model load's buffers) would otherwise be reused without raising the RSS, hiding part of the peak.
    """

    def __init__(self, device: str):
        self.cuda = torch.device(device).type == "cuda"
        self.peak = 0
        self.exact = True

    def __enter__(self) -> "PeakMemory":
        gc.collect()
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
            return self
        _trim_heap()
        try:
            import psutil
        except ImportError:
            import resource

            self.exact = False
            self.base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            self._thread = None
            return self
        proc = psutil.Process()
        self.base = proc.memory_info().rss
        self._max = self.base
        self._stop = threading.Event()

        def sample():
            while not self._stop.is_set():
                self._max = max(self._max, proc.memory_info().rss)
                time.sleep(0.001)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> bool:
        if self.cuda:
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self.base
        elif self._thread is None:
            import resource

            self.peak = max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - self.base)
        else:
            self._stop.set()
            self._thread.join()
            self.peak = self._max - self.base
        return False


def _trim_heap() -> None:
    """Return free heap memory to the OS where the C library can (glibc's ``malloc_trim``); else nothing."""
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl): RSS follows frees less closely there
        pass


def mib(n_bytes: float) -> str:
    m = n_bytes / 2**20
    return f"{m:,.0f} MiB" if m >= 10 else f"{m:.1f} MiB"


# -------------------------------------------------------------------------------------------- models

# The paper's architectures (random weights: speed and memory do not depend on the values).
PAPER_CONFIGS = {
    "bloom-7b1": ("bloom", dict(hidden_size=4096, n_layer=30, n_head=32, vocab_size=250880)),
    "llama2-7b": ("llama", dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                                num_attention_heads=32, num_key_value_heads=32, vocab_size=32000,
                                max_position_embeddings=4096)),
}
# The same code path at toy size, to exercise the GPU mode on a CPU (--tiny).
TINY_CONFIGS = {
    "bloom-7b1": ("bloom", dict(hidden_size=64, n_layer=3, n_head=4, vocab_size=1000)),
    "llama2-7b": ("llama", dict(hidden_size=64, intermediate_size=172, num_hidden_layers=3, num_attention_heads=4,
                                num_key_value_heads=4, vocab_size=1000, max_position_embeddings=4096)),
}
CPU_MODELS = ("smollm2-135m", "gemma-3-270m")
# For the CPU perplexity rows: a reduced random BLOOM (ALiBi attention). A 250k vocabulary would make the
# LM head most of the CPU time and hide the attention; the real models show the large-vocabulary memory.
CPU_BLOOM = ("bloom", dict(hidden_size=512, n_layer=6, n_head=8, vocab_size=32000))


def random_model(family: str, kw: dict, dtype: torch.dtype, device: str, seed: int = 0):
    """A randomly initialised causal LM built directly on ``device``; eval mode, no grad."""
    from transformers import AutoModelForCausalLM, BloomConfig, LlamaConfig

    torch.manual_seed(seed)
    config = (BloomConfig if family == "bloom" else LlamaConfig)(pad_token_id=0, bos_token_id=1, eos_token_id=2, **kw)
    config.architectures = ["BloomForCausalLM" if family == "bloom" else "LlamaForCausalLM"]
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.eval().requires_grad_(False)


def paper_tokenizer():
    """A real multilingual byte-level BPE (lfcore.tiny, vocab 512): its ids fit every vocabulary here.

    Saved to and reloaded from a folder, so tools that reload a tokenizer by its path (TransformerLens)
    can.
    """
    import tempfile

    from transformers import AutoTokenizer

    from lfcore import tiny

    folder = os.path.join(tempfile.gettempdir(), "lfcore-bench-tokenizer")
    if not os.path.exists(os.path.join(folder, "tokenizer.json")):
        tiny.tokenizer().save_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder)


def build(spec: str, device: str, tiny: bool):
    """A ``LoadedModel`` for a bundled key (real weights, fp32, CPU) or a paper config name (random, bf16)."""
    from lfcore.models import from_objects, load_model

    if spec in CPU_MODELS:
        lm = load_model(spec)
        return lm if device == "cpu" else from_objects(lm.model.to(device), lm.tokenizer, spec)
    family, kw = (TINY_CONFIGS if tiny else PAPER_CONFIGS)[spec]
    model = random_model(family, kw, torch.bfloat16, device)
    return from_objects(model, paper_tokenizer(), f"{spec} (random{', tiny' if tiny else ''})")


# ------------------------------------------------------------------------------------------- batches


@dataclass
class Batch:
    rows: list[int]  # record indices
    ids: torch.Tensor  # (batch, tokens) right-padded
    mask: torch.Tensor  # (batch, tokens) 1 = real token
    weights: torch.Tensor  # (batch, tokens) 1 = pooled (not special, not padding)


def make_batches(lm, records, batch_size: int, max_length: int) -> list[Batch]:
    """The batches ``lfcore.capture`` runs: tokenised once, longest first, right-padded, specials not pooled."""
    tok = lm.tokenizer
    encoded = tok([r.text for r in records], truncation=True, max_length=max_length)["input_ids"]
    special = set(tok.all_special_ids)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    order = sorted(range(len(records)), key=lambda i: -len(encoded[i]))
    batches = []
    for rows in _length_batches(order, [len(e) for e in encoded], batch_size):  # capture's own batching
        t = len(encoded[rows[0]])
        ids = torch.tensor([encoded[i] + [pad] * (t - len(encoded[i])) for i in rows])
        mask = torch.tensor([[1] * len(encoded[i]) + [0] * (t - len(encoded[i])) for i in rows])
        w = torch.tensor([[float(x not in special) for x in encoded[i]] + [0.0] * (t - len(encoded[i])) for i in rows])
        batches.append(Batch(rows, ids, mask, w))
    return batches


def token_count(batches: list[Batch]) -> int:
    return int(sum(int(b.mask.sum()) for b in batches))
