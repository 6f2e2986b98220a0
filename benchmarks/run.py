"""lfcore benchmarks: one command, one table of side-by-side ratios. Nothing here is asserted.

    python -m benchmarks.run                 # CPU: real SmolLM2-135M and Gemma-3-270M, bundled NTREX
    python -m benchmarks.run --quick         # the same, smaller (a few minutes on 2 cores)
    python -m benchmarks.run --device cuda   # GPU: random-weight BLOOM-7b1 and LLaMA2-7b (paper configs), bf16
    python -m benchmarks.run --device cuda --tiny --quick   # the GPU code path at toy size, runnable on a CPU

Rows: the paper's one-sentence-at-a-time capture (generate + hooks), lfcore's batched capture, the bare
forward pass on the same batches and capture's overhead over it, nnsight and TransformerLens doing the
same capture (fresh process each, from ``--bench-python``, default ``.venv-bench/bin/python``), BLOOM
perplexity eager vs fused attention, LLaMA perplexity, chunked vs full-logits loss memory, and key-region
scoring on BLOOM-7b1 shapes.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import capture_bench, ppl_bench, scoring_bench  # noqa: E402
from benchmarks.common import (CPU_BLOOM, CPU_MODELS, PAPER_CONFIGS, TINY_CONFIGS, build, environment,  # noqa: E402
                               make_batches, mib, paired, paper_tokenizer, random_model, sync, timed, token_count)


@dataclass
class Sizes:
    per_lang: int  # sentences per language (9 languages) for capture
    baseline_per_lang: int  # sentences per language for the one-at-a-time baseline (its rate is compared)
    batch_size: int
    max_length: int
    repeats: int
    ppl_seqlen: int
    ppl_windows: int
    ppl_batch: int
    scoring_repeats: int
    scoring_reference: bool
    ppl_seqlen_bloom: int = 0  # BLOOM's attention rows (0: ppl_seqlen); the paper's windows are 2048


def sizes_for(device: str, quick: bool, tiny: bool) -> Sizes:
    if device == "cuda" and not tiny:
        # ~4 minutes on one H200: 900 sentences as in the anchor, windows of 2048 at batch 8
        return Sizes(100, 20, 64, 80, 3, 2048, 16, 8, 3, False) if not quick else \
            Sizes(50, 10, 64, 80, 2, 2048, 8, 8, 1, False)
    if tiny:
        return Sizes(2, 1, 8, 80, 1, 128, 4, 2, 1, False)
    # CPU: batches of 8 (a CPU is compute-bound: padding costs and a larger batch buys little)
    return Sizes(2, 2, 8, 512, 1, 256, 2, 2, 1, False, 1024) if quick else \
        Sizes(3, 3, 8, 512, 5, 512, 4, 2, 3, True, 2048)


class Table:
    def __init__(self):
        self.rows: list[tuple[str, str, str, str, str]] = []

    def add(self, section: str, model: str, what: str, value: str, ratio: str = "") -> None:
        self.rows.append((section, model, what, value, ratio))
        print(f"  [{section}] {model}: {what} = {value}  {ratio}", file=sys.stderr, flush=True)

    def render(self) -> str:
        head = ("section", "model", "measurement", "value", "ratio / note")
        widths = [max(len(r[i]) for r in [head, *self.rows]) for i in range(5)]
        line = "  ".join("-" * w for w in widths)
        out = ["  ".join(h.ljust(w) for h, w in zip(head, widths)), line]
        last = None
        for r in self.rows:
            if last is not None and r[0] != last:
                out.append("")
            out.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
            last = r[0]
        return "\n".join(out)


def faster(ratio: float, digits: int = 1) -> str:
    """``ratio`` (time of the other / time of this) as "N.Nx faster", or "N.Nx slower" below 1."""
    return f"{ratio:.{digits}f}x faster" if ratio >= 1 else f"{1 / ratio:.{digits}f}x slower"


def free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------------------------- capture


def bench_capture(table: Table, spec: str, device: str, sz: Sizes, tiny: bool, bench_python: str | None) -> None:
    from lfcore.corpus import bundled_ntrex

    lm = build(spec, device, tiny)
    name = lm.name
    records = list(bundled_ntrex().select(None, n=sz.per_lang, seed=0))
    batches = make_batches(lm, records, sz.batch_size, sz.max_length)
    n_tok = token_count(batches)
    table.add("capture", name, "sentences / tokens / batches",
              f"{len(records)} / {n_tok} / {len(batches)}", f"batch {sz.batch_size}, {lm.model.dtype}")

    # the paper's code: one sentence at a time, generate(max_new_tokens=1) + hooks copying everything out
    per_lang_ids = {}
    for i, r in enumerate(records):
        per_lang_ids.setdefault(r.lang, []).append(i)
    base_rows = sorted(i for ids in per_lang_ids.values() for i in ids[:sz.baseline_per_lang])
    base_records = [records[i] for i in base_rows]
    capture_bench.one_at_a_time(lm, base_records[:1], sz.max_length)  # warm-up
    sync(device)
    t0 = time.perf_counter()
    base_values = capture_bench.one_at_a_time(lm, base_records, sz.max_length)
    sync(device)
    base_rate = len(base_records) / (time.perf_counter() - t0)  # sentences per second

    # lfcore's batched capture and the bare forward on the same batches, alternated
    warm = [records[i] for i in batches[0].rows[:2]]
    values = {}

    def warmup():
        capture_bench.lfcore_capture(lm, warm, sz.batch_size, sz.max_length)
        capture_bench.bare_forward(lm, make_batches(lm, warm, sz.batch_size, sz.max_length))

    t_cap, t_bare, overhead = paired(
        lambda: values.__setitem__("v", capture_bench.lfcore_capture(lm, records, sz.batch_size, sz.max_length)),
        lambda: capture_bench.bare_forward(lm, batches), device, sz.repeats, warmup=warmup)
    cap_rate = len(records) / t_cap.median
    est = "" if len(base_records) == len(records) else f" (rate on {len(base_records)} sentences)"
    table.add("capture", name, "one-at-a-time generate+hooks (paper code)",
              f"{len(records) / base_rate:.2f} s", f"{base_rate:.1f} sent/s{est}")
    table.add("capture", name, "lfcore capture (batched)", f"{t_cap.median:.2f} s",
              f"{faster(cap_rate / base_rate)} than one-at-a-time")
    table.add("capture", name, "bare forward, same batches, no hook", f"{t_bare.median:.2f} s",
              f"{n_tok / t_bare.median:,.0f} tok/s")
    table.add("capture", name, "capture overhead over bare forward",
              f"{100 * (overhead - 1):+.1f} %", f"median of {len(t_cap.runs)} alternated pairs; target <= +5 %")
    diff = (values["v"][base_rows] - base_values).abs().max().item()
    table.add("capture", name, "max |lfcore - one-at-a-time|", f"{diff:.2e}",
              f"values up to {base_values.abs().max().item():.3g}")
    lf_values = values["v"]
    lm = values = None  # noqa: F841  (free the model before the tool processes start)
    free()

    # the same capture with each tool, one fresh process each (peak memory of that process alone)
    results = {}
    tools = {"lfcore": "lfcore capture", "nnsight": "nnsight, the same pooled early-stopped capture",
             "nnsight_saved": "nnsight as its tutorials write it (.save() per layer, full forward, pool after)",
             "transformer_lens": "TransformerLens, the same pooled early-stopped capture"}
    for tool in tools:
        results[tool] = run_tool(tool, spec, device, sz, tiny, bench_python, lf_values)
    lf = results["lfcore"]
    for tool, label in tools.items():
        r = results[tool]
        what = f"{label} (own process)"
        if "error" in r:
            table.add("tools", name, what, "n/a", f"({r['error']})")
            continue
        mem = f"peak +{mib(r['peak_bytes'])}"
        if tool == "lfcore" or "error" in lf:
            table.add("tools", name, what, f"{r['seconds']:.2f} s", mem)
        else:
            table.add("tools", name, what, f"{r['seconds']:.2f} s",
                      f"lfcore {faster(r['seconds'] / lf['seconds'])}; {mem} "
                      f"({r['peak_bytes'] / max(lf['peak_bytes'], 1):.1f}x lfcore's); "
                      f"max |diff| {r.get('max_diff', float('nan')):.1e}")


def run_tool(tool: str, spec: str, device: str, sz: Sizes, tiny: bool, bench_python: str | None,
             reference: torch.Tensor) -> dict:
    # every tool from the same interpreter: .venv-bench when it exists (nnsight, transformer-lens), else this one
    python = bench_python if bench_python and Path(bench_python).exists() else sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        out, vals = os.path.join(tmp, "r.json"), os.path.join(tmp, "v.safetensors")
        cmd = [python, "-m", "benchmarks.tools", "--tool", tool, "--model", spec, "--device", device,
               "--per-lang", str(sz.per_lang), "--batch-size", str(sz.batch_size), "--max-length",
               str(sz.max_length), "--repeats", "1", "--out", out, "--values", vals]
        if tiny:
            cmd.append("--tiny")
        try:
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800)
        except subprocess.TimeoutExpired:
            return {"error": "worker timed out after 30 min"}
        if not os.path.exists(out):
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            return {"error": f"worker failed: {tail[0][:160]}"}
        result = json.loads(Path(out).read_text())
        if "error" not in result and os.path.exists(vals):
            from safetensors.torch import load_file

            v = load_file(vals)["values"]
            result["max_diff"] = (v - reference).abs().max().item() if v.shape == reference.shape else float("nan")
        return result


# ------------------------------------------------------------------------------------------ perplexity


def bench_ppl(table: Table, device: str, sz: Sizes, tiny: bool) -> None:
    if device == "cuda" and not tiny:
        models = list(PAPER_CONFIGS)
    elif tiny:
        models = list(TINY_CONFIGS)
    else:  # a reduced random BLOOM for the attention rows; the real models for LLaMA and the loss memory
        models = ["bloom-reduced", *CPU_MODELS]
    for spec in models:
        if spec == "bloom-reduced":
            model = random_model(*CPU_BLOOM, torch.float32, device)
            kw = CPU_BLOOM[1]
            tok = paper_tokenizer()
            name = f"bloom (random, hidden {kw['hidden_size']}, {kw['n_layer']} layers, vocab {kw['vocab_size']})"
        else:
            lm = build(spec, device, tiny)
            model, tok, name = lm.model, lm.tokenizer, lm.name
            del lm
        model_type = model.config.model_type
        seqlen = sz.ppl_seqlen_bloom if model_type == "bloom" and sz.ppl_seqlen_bloom else sz.ppl_seqlen
        text = ppl_bench.text_for(tok, seqlen * sz.ppl_windows)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        text = tok.decode(ids[: (seqlen - 1) * sz.ppl_windows])  # ppl_windows full windows
        one_batch = tok.decode(ids[: (seqlen - 1) * sz.ppl_batch])  # the memory peak is per batch
        if model_type in ("bloom", "llama"):  # speed rows: BLOOM eager vs fused; LLaMA with the swap (a no-op)
            eager_tps, fused_tps, eager, fused = ppl_bench.throughput_pair(
                model, tok, text, seqlen, sz.ppl_batch, device, sz.repeats)
            rel = abs(fused["ppl"] / eager["ppl"] - 1)
            where = (f"{eager['n_tokens']} tokens, windows {seqlen} x batch {sz.ppl_batch}, "
                     f"{sz.repeats} alternated pair(s)")
            if model_type == "bloom":
                table.add("perplexity", name, "eager attention (transformers)", f"{eager_tps:,.0f} tok/s", where)
                table.add("perplexity", name, "fused attention (lfcore.fastattn: SDPA, ALiBi in the mask)",
                          f"{fused_tps:,.0f} tok/s",
                          f"{fused_tps / eager_tps:.2f}x eager; ppl {fused['ppl']:.6g} vs {eager['ppl']:.6g} "
                          f"(rel diff {rel:.1e}); target >= 1.5x")
            else:
                table.add("perplexity", name, f"default attention ({model.config._attn_implementation})",
                          f"{eager_tps:,.0f} tok/s", where)
                table.add("perplexity", name, "inside fused_attention (a no-op for LLaMA)",
                          f"{fused_tps:,.0f} tok/s", f"{fused_tps / eager_tps:.2f}x; ppl rel diff {rel:.1e}")
        # chunked loss (lfcore) vs whole-batch logits: peak memory over the weights, one batch of windows
        with fused_attention_ctx(model, model_type == "bloom"):
            box = {}
            chunked = ppl_bench.peak_memory(lambda: box.__setitem__("chunked", ppl_bench.perplexity(
                model, tok, one_batch, seqlen=seqlen, batch_size=sz.ppl_batch)["ppl"]), device)
            full = ppl_bench.peak_memory(lambda: box.__setitem__("full", ppl_bench.full_logits_loss(
                model, tok, one_batch, seqlen, sz.ppl_batch)), device)
        same = abs(box["full"] / box["chunked"] - 1)
        table.add("perplexity", name, "peak memory: chunked loss (lfcore) vs full logits",
                  f"+{mib(chunked)} vs +{mib(full)}",
                  (f"{full / chunked:.1f}x less" if chunked >= 2**20 else "lfcore's peak under 1 MiB")
                  + f"; {sz.ppl_batch} x {seqlen} tokens, vocab "
                  f"{model.config.vocab_size:,}; ppl rel diff {same:.1e}")
        if device == "cpu" and spec in CPU_MODELS:  # the CPU loss path: vocabulary in blocks vs whole logits
            whole, blocked, ratio, r_whole, r_blocked = ppl_bench.paired_perplexity(
                model, tok, one_batch, seqlen, sz.ppl_batch, device, min(sz.repeats, 3), ppl_bench.vocabulary_blocks)
            rel = abs(r_blocked["ppl"] / r_whole["ppl"] - 1)
            table.add("perplexity", name, "loss over the vocabulary in blocks (lfcore on CPU) vs whole logits",
                      f"{blocked.median:.2f} s vs {whole.median:.2f} s",
                      f"{faster(ratio, 2)}; {sz.ppl_batch} x {seqlen} tokens, {len(blocked.runs)} alternated "
                      f"pair(s); ppl rel diff {rel:.1e}")
        model = tok = None  # noqa: F841
        free()


def fused_attention_ctx(model, enabled: bool):
    from lfcore.fastattn import fused_attention

    return fused_attention(model, enabled=enabled)


# --------------------------------------------------------------------------------------------- scoring


def bench_scoring(table: Table, sz: Sizes) -> None:
    from lfcore.regions import contribution_scores, key_regions

    acts = scoring_bench.synthetic()
    shape = f"{len(acts.langs)} x {acts.values.shape[1] * acts.values.shape[2]:,}"
    box = {}
    t_scores = timed(lambda: box.__setitem__("s", contribution_scores(acts)[0]), "cpu", sz.scoring_repeats)
    t_keys = timed(lambda: key_regions(acts), "cpu", sz.scoring_repeats)
    table.add("scoring", "BLOOM-7b1 shapes (synthetic)", f"contribution_scores ({shape})", f"{t_scores.median:.2f} s",
              "target < 1 s")
    table.add("scoring", "BLOOM-7b1 shapes (synthetic)", "key_regions (scores + z + threshold)",
              f"{t_keys.median:.2f} s", "target < 1 s")
    if sz.scoring_reference:
        t0 = time.perf_counter()
        ref = scoring_bench.reference_scores(acts)
        t_ref = time.perf_counter() - t0
        diff = (ref - box["s"]).abs().max().item()
        table.add("scoring", "BLOOM-7b1 shapes (synthetic)", "reference: normalised copy + float64 sums",
                  f"{t_ref:.2f} s", f"{t_ref / t_scores.median:.1f}x slower; max |diff| {diff:.1e}")
    acts = box = None  # noqa: F841
    free()


# ------------------------------------------------------------------------------------------------ main


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="lfcore benchmarks: one table of side-by-side ratios")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--quick", action=argparse.BooleanOptionalAction, default=False, help="smaller sizes")
    p.add_argument("--tiny", action=argparse.BooleanOptionalAction, default=False, help=argparse.SUPPRESS)
    p.add_argument("--only", nargs="+", choices=["capture", "perplexity", "scoring"],
                   default=["capture", "perplexity", "scoring"], help="sections to run")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads here and in the tool processes (default: torch's choice). On a CPU "
                        "shared with other busy processes, 1 avoids OpenMP barrier stalls that swamp small ops")
    p.add_argument("--bench-python", default=str(ROOT / ".venv-bench" / "bin" / "python"),
                   help="interpreter with nnsight and transformer-lens installed (default: .venv-bench)")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.threads:
        torch.set_num_threads(args.threads)
        os.environ["LFCORE_BENCH_THREADS"] = str(args.threads)  # read by the tool processes
    device = args.device
    if device == "cuda" and not args.tiny and not torch.cuda.is_available():
        p.error("--device cuda needs a CUDA GPU (use --tiny to run the GPU code path at toy size on the CPU)")
    run_device = "cpu" if args.tiny else device
    sz = sizes_for(device, args.quick, args.tiny)
    print("environment", file=sys.stderr)
    env = environment(run_device)
    for k, v in env:
        print(f"  {k}: {v}", file=sys.stderr)
    table = Table()
    started = time.perf_counter()
    specs = list(TINY_CONFIGS if args.tiny else PAPER_CONFIGS if device == "cuda" else CPU_MODELS)
    if "capture" in args.only:
        for spec in specs:
            bench_capture(table, spec, run_device, sz, args.tiny, args.bench_python)
    if "perplexity" in args.only:
        bench_ppl(table, run_device, sz, args.tiny)
    if "scoring" in args.only:
        bench_scoring(table, sz)
    mode = f"{device}{' --tiny' if args.tiny else ''}{' --quick' if args.quick else ''}"
    print(f"\nlfcore benchmarks ({mode}), {time.perf_counter() - started:.0f} s")
    for k, v in env:
        print(f"  {k}: {v}")
    print()
    print(table.render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
