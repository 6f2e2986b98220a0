"""The ``lfcore`` command line: ``lfcore reproduce PARAMS [--only obs1,obs2] [--executor local]`` (the papermill
runner, ``lfcore.runner``), ``render NOTEBOOK.ipynb``, ``scores MODEL``, ``estimate PARAMS``, ``revisions REPO_ID``.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from .cache import Cache, CacheError
from .convert import cache_root
from .corpus import load_corpus
from .jobs import JobsFailed, estimate, read_records
from .lock import FolderBusy
from .metrics import layerwise, scores
from .params import ParamsError, load_params
from .regions import check_threshold, key_regions
from .report import render_html
from .runner import rehearse, reproduce
from .specs import LANGS9, NOTEBOOKS, CaptureSpec, ModelSpec
from .steps import activations, load


def _scores(args) -> int:
    if len(set(args.langs)) < 2 or len(set(args.langs)) != len(args.langs):
        raise ParamsError(f"--langs: need at least 2 distinct languages, got {args.langs}")
    check_threshold(args.threshold, len(args.langs), "--threshold")  # before the model loads, not after capture
    corpus = load_corpus(args.corpus).select(args.langs, args.n, args.seed)
    m = ModelSpec(spec=args.model, revision=args.revision, dtype=args.dtype, site=args.site, tokenizer=args.tokenizer)
    lm = load(m)
    cache = Cache((args.cache_dir or cache_root() / "results") if args.cache else None)
    acts = activations(lm, corpus, CaptureSpec(batch_size=args.batch_size), cache)
    s = scores(acts)
    regions = key_regions(acts, args.threshold)
    print(f"{lm.name} (revision {lm.revision or 'main'}, fingerprint {lm.fingerprint}); {args.corpus}: "
          f"{len(acts.ids)} sentences x {len(acts.languages)} languages")
    print(f"LRDS {s['lrds']:.4f}   SADS {s['sads']:.4f}\n")
    print(layerwise(acts).to_string(index=False, float_format=lambda v: f"{v:.4f}"), "\n")
    print(f"key regions (z > {args.threshold:g}):")
    print(regions.summary().to_string(float_format=lambda v: f"{v:.2f}"))
    return 0


def _render(args) -> int:
    ipynb = Path(args.notebook)
    if ipynb.suffix != ".ipynb" or not ipynb.is_file():
        raise ParamsError(f"render: {ipynb} is not an .ipynb file (execute a notebook first, e.g. with papermill)")
    print(render_html(ipynb, Path(args.output or ipynb.with_suffix(".html")), args.title or ipynb.stem))
    return 0


def _at_least(low: int):
    """An argparse type: an integer of at least ``low``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} must be at least {low}")
        return value
    return parse


def _natural(name: str) -> list:
    """Sort key that orders digits by value: global_step1000 before global_step10000."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def revisions(repo_id: str, repo_type: str = "model") -> list[tuple[str, str, str]]:
    """The branches, tags and conversions of a hub repository as (kind, name, commit), branches in natural order:
    ``revisions("bigscience/bloom-7b1-intermediate")``. Needs the network; raises ``ValueError`` with one line
    when the hub cannot be reached (``HF_HUB_OFFLINE``, no network) or the repository is unknown or gated."""
    import httpx2
    from huggingface_hub import list_repo_refs
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    try:
        refs = list_repo_refs(repo_id, repo_type=repo_type)
    except OfflineModeIsEnabled:
        raise ValueError(f"cannot list the revisions of {repo_id}: HF_HUB_OFFLINE is set; unset it on a machine "
                         f"with network") from None
    except HfHubHTTPError as e:  # an httpx2.HTTPError too: caught first
        raise ValueError(f"cannot list the revisions of {repo_id} ({repo_type}): "
                         f"{str(e).splitlines()[0]}") from None
    except (httpx2.HTTPError, OSError) as e:  # huggingface_hub talks through httpx2
        raise ValueError(f"cannot list the revisions of {repo_id}: the hub is unreachable "
                         f"({type(e).__name__}); run this on a machine with network") from None
    rows = [("branch", r.name, r.target_commit) for r in sorted(refs.branches, key=lambda r: _natural(r.name))]
    rows += [("tag", r.name, r.target_commit) for r in sorted(refs.tags, key=lambda r: _natural(r.name))]
    return rows + [("convert", r.ref, r.target_commit) for r in refs.converts]


def _revisions(args) -> int:
    for kind, name, commit in revisions(args.repo, args.repo_type):
        print(f"{kind:8} {name:40} {commit}")
    return 0


def _estimate(args) -> int:
    records = read_records(args.cache_dir)
    if not records:
        raise ParamsError(f"no job records in {Path(args.cache_dir) / 'jobs'}: run lfcore reproduce PARAMS "
                          f"--executor local|slurm with this cache first")
    table = estimate(load_params(args.params, check=False), records)
    print(f"Based on {len(records)} job records in {args.cache_dir} (measured on "
          f"{', '.join(sorted({r['device'] for r in records}))}): per step kind, the median load seconds per "
          f"parameter and compute seconds per parameter per work unit, scaled linearly to each model's parameter "
          f"count (ModelSpec.params or a record of the model) and work units, times the GPUs the job asks for. "
          f"Rates measured on one device type hold for that type only.")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    print(f"total: {table.gpu_hours.sum():.3g} GPU-hours" + (" (rows without a parameter count or a record of "
          "their kind are left out: NaN)" if table.gpu_hours.isna().any() else ""))
    return 0


def _reproduce(args) -> int:
    stems = {v[0]: k for k, v in NOTEBOOKS.items()}
    only = [stems.get(k.strip(), k.strip()) for k in args.only.split(",")] if args.only else None
    if args.rehearse:
        runs = rehearse(args.params, only=only, out=args.out, threads=args.threads)
    else:
        runs = reproduce(args.params, only=only, out=args.out, cache=args.cache_dir, threads=args.threads,
                         force=args.force, executor=args.executor, retries=args.retries, max_jobs=args.max_jobs)
    failed = [r for r in runs if r.status != "ok"]
    for r in failed:
        print(f"lfcore: {r.error}", file=sys.stderr)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    """The ``lfcore`` console script."""
    parser = argparse.ArgumentParser(prog="lfcore", description="Linguistic regions and semantic alignment "
                                     "in multilingual LLMs (Zeng et al., COLING 2025): reports and scores.")
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("reproduce", help="execute the notebooks of a params file and render HTML reports")
    r.add_argument("params", help="params YAML file, e.g. params/default.yaml")
    r.add_argument("--only", help=f"comma-separated notebooks to run ({','.join(NOTEBOOKS)})")
    r.add_argument("--out", help="output folder (default: reports/<params file stem>)")
    r.add_argument("--cache-dir", help="result cache (default: $LFCORE_CACHE/results, else <out>/cache)")
    r.add_argument("--force", action="store_true", help="execute notebooks whose inputs are unchanged since their "
                   "last successful run (default: keep that run)")
    r.add_argument("--rehearse", action="store_true", help="run against a local offline hub of tiny random models and "
                   "datasets under the ids and revisions the file names (reports in reports/<stem>-rehearsal)")
    r.add_argument("--threads", type=_at_least(1), help="CPU threads per notebook kernel (default: torch's choice; "
                   "1 on a CPU shared with other busy processes)")
    r.add_argument("--executor", choices=["sequential", "local", "slurm"], default="sequential",
                   help="sequential (default): the notebooks compute every step; local or slurm: first run each model's "
                   "expensive steps as jobs (worker processes, or SLURM jobs with the params' resources)")
    r.add_argument("--retries", type=_at_least(0), default=1, help="resubmit a failed job this many times (default 1)")
    r.add_argument("--max-jobs", type=_at_least(1), help="at most this many jobs submitted at a time (default: all; "
                   "with --executor local, the worker processes this machine's memory and GPUs can hold)")
    h = sub.add_parser("render", help="an executed notebook as a self-contained offline HTML page (plotly.js "
                       "embedded once, no external requests)")
    h.add_argument("notebook", help="executed .ipynb, e.g. from papermill")
    h.add_argument("-o", "--output", help="HTML file (default: the notebook's path with .html)")
    h.add_argument("--title", default="", help="title shown in the page's top bar")
    e = sub.add_parser("estimate", help="GPU-hours of the jobs of a params file, scaled from the job records "
                       "(measured wall times) in a result cache")
    e.add_argument("params", help="params YAML file to estimate, e.g. params/paper_bloom_checkpoints.yaml")
    e.add_argument("--cache-dir", required=True, help="result cache holding job records (<cache>/jobs/*.json), "
                   "e.g. reports/smoke/cache after lfcore reproduce params/smoke.yaml --executor local")
    s = sub.add_parser("scores", help="print LRDS/SADS (overall and per layer) and key-region sizes of a model")
    s.add_argument("model", help="bundled key (gemma-3-270m, smollm2-135m), tiny:<family>-<hidden>, folder or hub id")
    s.add_argument("--revision")
    s.add_argument("--tokenizer", help="tokenizer hub id or folder, for a model without one (checkpoint branches)")
    s.add_argument("--dtype", choices=["float32", "bfloat16", "float16", "auto"], default="float32")
    s.add_argument("--langs", nargs="+", default=LANGS9, help="language codes (default: the paper's nine)")
    s.add_argument("--n", type=_at_least(2), default=100, help="sentences per language (default 100)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--corpus", default="ntrex128", help="corpus spec (default: bundled NTREX-128)")
    s.add_argument("--threshold", type=float, default=2.0, help="z threshold for key regions (default 2)")
    s.add_argument("--batch-size", type=_at_least(1), default=16)
    s.add_argument("--site", help="neuron-site template for a model type outside lfcore's table, e.g. "
                   "'model.language_model.layers.{layer}.mlp.down_proj' (default: the table's)")
    s.add_argument("--cache", action=argparse.BooleanOptionalAction, default=True, help="reuse cached activations")
    s.add_argument("--cache-dir", help="cache folder (default: $LFCORE_CACHE/results or ~/.cache/lfcore/results)")
    v = sub.add_parser("revisions", help="list a hub repository's branches and tags (needs network), e.g. "
                       "lfcore revisions bigscience/bloom-7b1-intermediate")
    v.add_argument("repo", help="hub repository id")
    v.add_argument("--repo-type", choices=["model", "dataset"], default="model")
    for p in (r, s, h, v, e):
        p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    args = parser.parse_args(argv)
    commands = {"reproduce": _reproduce, "render": _render, "scores": _scores, "estimate": _estimate,
                "revisions": _revisions}
    try:
        return commands[args.command](args)
    except (ValueError, OSError, LookupError, CacheError, FolderBusy, KeyboardInterrupt) as e:
        if args.debug:
            raise
        if isinstance(e, KeyboardInterrupt):
            print("lfcore: interrupted", file=sys.stderr)
            return 130
        what = "" if isinstance(e, ParamsError) else f"{type(e).__name__}: "
        print(f"lfcore: {what}{' '.join(str(e).split())} (--debug shows the traceback)", file=sys.stderr)
        return 2
    except JobsFailed as e:
        print(f"lfcore: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
