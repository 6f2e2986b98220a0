"""One capture by one tool in a fresh process: time, peak memory and the pooled values.

``python -m benchmarks.tools --tool nnsight --model smollm2-135m --out result.json`` runs the same
capture as ``lfcore.capture`` (the same sentences, the same length-sorted right-padded batches, the mean
over non-special tokens of every layer's down-projection input, pooled inside the forward pass and
stopped after the last layer) with ``lfcore``, ``nnsight`` or ``transformer_lens``, and writes a JSON
line with the median time, the peak memory above the loaded model, and a safetensors file of the values
so the caller can check that all tools computed the same thing. A fresh process per tool keeps the peak
memory of one from hiding in another's, and lets nnsight and TransformerLens live in their own
virtualenv (``.venv-bench``). A tool that cannot be imported or cannot handle the model reports
``{"error": ...}`` instead.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import traceback
import warnings

import torch

from benchmarks.common import PeakMemory, build, make_batches, sync, timed


def _envoy(root, path: str):
    for part in path.split("."):
        root = root[int(part)] if part.isdigit() else getattr(root, part)
    return root


def _lfcore_runner(lm, records, batches, args):
    from lfcore.capture import capture
    from lfcore.corpus import ParallelCorpus

    def run(todo_records, todo_batches):
        corpus = ParallelCorpus(todo_records, name="bench")
        return capture(lm, corpus, batch_size=args.batch_size, max_length=args.max_length, progress=False).values

    return run


def _nnsight_runner(lm, records, batches, args, tuned: bool = True):
    """nnsight. ``tuned``: lfcore's design written in nnsight (pool inside the trace, ``tracer.stop()`` after the
    last layer); else as its tutorials write it (``.save()`` each layer's whole activation, the full forward pass
    with the LM head, pool afterwards)."""
    from nnsight import TransformersModel

    from lfcore.models import neuron_sites, neuron_width

    sites, width = neuron_sites(lm.model), neuron_width(lm.model)
    nn_model = TransformersModel(lm.model, tokenizer=lm.tokenizer)
    device = lm.model.get_input_embeddings().weight.device

    def run(todo_records, todo_batches):
        sums = [torch.zeros(len(todo_records), width, device=device) for _ in sites]
        for b in todo_batches:
            w = b.weights.to(device).unsqueeze(-1)  # (batch, tokens, 1)
            inputs = {"input_ids": b.ids.to(device), "attention_mask": b.mask.to(device)}
            if tuned:
                outs = []
                with nn_model.trace(inputs) as tracer:
                    for name in sites:
                        x = _envoy(nn_model, name).input  # (batch, tokens, width)
                        outs.append((x * w.to(x.dtype)).sum(1, dtype=torch.float32).save())
                    tracer.stop()
            else:
                saved = []
                with nn_model.trace(inputs):
                    for name in sites:
                        saved.append(_envoy(nn_model, name).input.save())  # (batch, tokens, width)
                outs = [(x.float() * w).sum(1) for x in saved]
            rows = torch.tensor(b.rows, device=device)
            for s, o in zip(sums, outs):
                s.index_add_(0, rows, o)
        return torch.stack(sums, 1).cpu()

    return run


def _tlens_runner(lm, records, batches, args):
    from transformer_lens import TransformerBridge

    from lfcore.models import neuron_width

    n_layers, width = lm.model.config.num_hidden_layers, neuron_width(lm.model)
    device = lm.model.get_input_embeddings().weight.device
    bridge = TransformerBridge.boot_transformers(lm.name, hf_model=lm.model, tokenizer=lm.tokenizer,
                                                 dtype=lm.model.dtype, device=str(device))

    def run(todo_records, todo_batches):
        sums = [torch.zeros(len(todo_records), width, device=device) for _ in range(n_layers)]
        state = {}

        def hook(layer):
            def fn(x, hook):  # x: (batch, tokens, width), the down projection's input
                pooled = (x * state["w"].to(x.dtype).unsqueeze(-1)).sum(1, dtype=torch.float32)
                sums[layer].index_add_(0, state["rows"], pooled)
            return fn

        hooks = [(f"blocks.{layer}.mlp.out.hook_in", hook(layer)) for layer in range(n_layers)]
        with torch.inference_mode():
            for b in todo_batches:
                state.update(w=b.weights.to(device), rows=torch.tensor(b.rows, device=device))
                bridge.run_with_hooks(b.ids.to(device), fwd_hooks=hooks, attention_mask=b.mask.to(device),
                                      return_type=None, stop_at_layer=n_layers)
        return torch.stack(sums, 1).cpu()

    return run


RUNNERS = {"lfcore": _lfcore_runner, "nnsight": _nnsight_runner,
           "nnsight_saved": functools.partial(_nnsight_runner, tuned=False), "transformer_lens": _tlens_runner}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tool", choices=sorted(RUNNERS), required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--device", default="cpu")
    p.add_argument("--per-lang", type=int, required=True)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--tiny", action=argparse.BooleanOptionalAction, default=False)
    p.add_argument("--values", help="write the pooled values (n, layers, width) here (safetensors)")
    p.add_argument("--out", required=True, help="JSON result file")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    if os.environ.get("LFCORE_BENCH_THREADS"):
        torch.set_num_threads(int(os.environ["LFCORE_BENCH_THREADS"]))
    result = {"tool": args.tool, "model": args.model}
    try:
        from lfcore.corpus import bundled_ntrex

        records = list(bundled_ntrex().select(None, n=args.per_lang, seed=0))
        lm = build(args.model, args.device, args.tiny)
        batches = make_batches(lm, records, args.batch_size, args.max_length)
        run = RUNNERS[args.tool](lm, records, batches, args)
        warm = [records[i] for i in batches[0].rows[:2]]  # two of the longest sentences
        warm_batches = make_batches(lm, warm, args.batch_size, args.max_length)
        with torch.inference_mode():
            run(warm, warm_batches)  # warm-up
            sync(args.device)
            with PeakMemory(args.device) as mem:
                t = timed(lambda: result.__setitem__("_values", run(records, batches)), args.device, args.repeats,
                          warmup=lambda: None)
        values = result.pop("_values")
        counts = torch.zeros(len(records))
        for b in batches:
            counts[b.rows] = b.weights.sum(1)  # pooled tokens per sentence
        if args.tool != "lfcore":  # lfcore returns means already
            values = values / counts[:, None, None]
        if args.values:
            from safetensors.torch import save_file

            save_file({"values": values.contiguous()}, args.values)
        result.update(seconds=t.median, runs=t.runs, peak_bytes=mem.peak, peak_exact=mem.exact,
                      n_sentences=len(records))
    except Exception as e:  # reported as "n/a (reason)" in the table
        result["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
        result["traceback"] = traceback.format_exc(limit=6)
    with open(args.out, "w") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
