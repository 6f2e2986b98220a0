"""The papermill runner: ``reproduce(params_file)`` executes each notebook's jupytext source with papermill,
injecting its sections of the params file, and writes the executed ``.ipynb``, an offline HTML report and
``index.html`` linking every report, table and figure. With ``executor`` "local" or "slurm" the expensive steps
first run as jobs (``lfcore.jobs``). The command line is ``lfcore.cli``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import html
import json
import os
import re
import resource
import tempfile
import time
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import torch
from jupyter_client.manager import AsyncKernelManager

from . import __version__
from .cache import Cache, atomic_write, code_digest, make_key
from .jobs import run_jobs
from .lock import hold_folder
from .models import BUNDLED
from .params import ParamsError, load_params, sections_for
from .rehearse import prepare
from .report import RUNNER_ENV, number, render_html
from .specs import NOTEBOOK_DIR, NOTEBOOKS, ROOT, Params
from .steps import cache_dir


@dataclass
class NotebookRun:
    key: str
    stem: str
    title: str
    status: str  # "ok" | "failed"
    seconds: float  # wall time
    ipynb: Path
    html: Path | None
    error: str | None = None
    summary: dict = field(default_factory=dict)
    cpu_seconds: float | None = None  # CPU time of the kernel (user + system), independent of machine load
    inputs: str | None = None  # ``inputs_digest`` of the execution (None: an input can change unseen)
    finished: str = ""  # when the notebook was executed (local time)
    reused: bool = False  # this call found the same inputs already executed and kept that run


def _fixed(path: str, revision: str | None) -> bool:
    """A local path, or a hub id pinned to a commit (40 hex digits)."""
    return Path(path).is_absolute() or bool(re.fullmatch(r"[0-9a-f]{40}", revision or ""))


def inputs_digest(notebook_source: str, parameters: dict) -> str | None:
    """A digest of everything an executed notebook depends on: its source, its parameters, lfcore's files, the
    versions of the libraries that compute, and the size and time of every local file the parameters name. None
    when an input can change unseen (a hub model or tokenizer without a pinned 40-hex revision, a hub dataset):
    such notebooks always execute (their steps still use the cache)."""
    files, hub = [], []

    def walk(v):
        if isinstance(v, dict) and "spec" in v and "revision" in v:  # a ModelSpec
            if not (v["spec"] in BUNDLED or v["spec"].startswith("tiny:") or _fixed(v["spec"], v["revision"])):
                hub.append(v["spec"])
            if v.get("tokenizer") and not _fixed(v["tokenizer"], v.get("tokenizer_revision")):
                hub.append(v["tokenizer"])
        if isinstance(v, (dict, list)):
            for x in v.values() if isinstance(v, dict) else v:
                walk(x)
        elif isinstance(v, str) and v.startswith("hf:"):
            hub.append(v)
        elif isinstance(v, str) and Path(v).is_absolute() and Path(v).exists():
            found = sorted(f for f in Path(v).rglob("*") if f.is_file()) if Path(v).is_dir() else [Path(v)]
            files.extend([str(f), f.stat().st_size, f.stat().st_mtime_ns] for f in found)

    sections = {k: v for k, v in parameters.items() if k not in ("out_dir", "cache_dir")}  # where, not what
    walk(sections)
    if hub:
        return None
    libs = {lib: version(lib) for lib in ("torch", "transformers", "lm_eval", "numpy", "pandas", "plotly")}
    return make_key(source=notebook_source, parameters=sections, out_dir=parameters.get("out_dir"),
                    lfcore=code_digest("."), libs=libs, files=files)


def _portable(v):
    """Parameters with every absolute path made relative to the repository root (``params.repo_path`` resolves
    them back), so an executed notebook carries no absolute path of the machine that made it."""
    if isinstance(v, dict):
        return {k: _portable(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_portable(x) for x in v]
    return os.path.relpath(v, ROOT) if isinstance(v, str) and Path(v).is_absolute() else v


def _name_paths(ipynb: Path, stem: str) -> None:
    """Make papermill's input and output record, and every repository path in the outputs, relative."""
    if not ipynb.exists():
        return
    nb = json.loads(ipynb.read_text(encoding="utf-8").replace(str(ROOT) + os.sep, ""))
    if "papermill" in nb.get("metadata", {}):
        nb["metadata"]["papermill"].update(input_path=f"notebooks/{stem}.py", output_path=ipynb.name)
    atomic_write(ipynb, json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n")


class _IPCKernelManager(AsyncKernelManager):
    """Kernels on local IPC sockets (files private to this user), not TCP ports any local user could reach."""

    def __init__(self, **kw):
        super().__init__(transport="ipc", **kw)


def _failure(stem: str, err: Exception, ipynb: Path, html_path: Path) -> str:
    """Which notebook and cell failed, what it raised, and where the traceback is."""
    where = ""
    if hasattr(err, "cell_index"):
        first = next((line for line in (err.source or "").splitlines() if line.strip()), "")
        where = f" in cell {err.cell_index} (In [{err.exec_count}], starting {first.strip()!r})"
    what = f"{err.ename}: {err.evalue}" if hasattr(err, "ename") else f"{type(err).__name__}: {err}"
    what = what if len(what) < 600 else what[:600] + " [...]"
    return (f"notebook {stem} failed{where}: {what}\n  executed notebook with the traceback: {ipynb}"
            f"\n  rendered: {html_path}")


@contextlib.contextmanager
def _environ(values: dict[str, str]):
    """Set environment variables (the kernels and job processes inherit them) for a block, then restore just
    those: what other code sets meanwhile stays."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _children_cpu() -> float:
    """CPU seconds (user + system) used so far by finished child processes, e.g. notebook kernels."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def reproduce(params_file: str | Path, only: list[str] | None = None, out: str | Path | None = None,
              cache: str | Path | None = None, kernel: str = "python3", threads: int | None = None,
              force: bool = False, executor: str = "sequential", retries: int = 1, max_jobs: int | None = None,
              log=print) -> list[NotebookRun]:
    """Execute the notebooks of a params file with papermill and render their HTML reports and the index.

    ``only`` restricts to notebook keys (default: the file's ``notebooks``); ``out`` defaults to
    ``reports/<params stem>``; ``cache`` to ``cache_dir(out)``; ``threads`` caps the CPU threads of each kernel
    (``OMP_NUM_THREADS``; 1 avoids stalls on a busy shared CPU). A failing notebook does not stop the others; its
    ``NotebookRun.error`` says which cell failed and where the executed notebook is.

    A notebook whose inputs (``inputs_digest``) match its last successful run in ``out`` is kept (``force``
    re-executes). ``<out>/runs.json`` and the index drop a notebook's record as it starts and add it as it
    finishes, so an interrupted call never leaves a record describing other files; ``<stem>/params.yaml`` is the
    params file it was executed with. Before the first notebook the cache is checked writable (``CacheError``) and
    ``out`` held (``lock.hold_folder``: a second call into it raises ``FolderBusy``).

    ``executor`` "local" (worker processes) or "slurm" first runs the expensive steps of every model as jobs
    (``jobs.run_jobs``: at most ``max_jobs`` at a time, logs in ``<out>/jobs``, a failed job retried ``retries``
    times, then ``JobsFailed`` raised before any notebook executes); "sequential" computes them in the notebooks.
    """
    if executor not in ("sequential", "local", "slurm"):
        raise ParamsError(f"executor {executor!r}: use 'sequential', 'local' or 'slurm'")
    params_file = Path(params_file)
    if not NOTEBOOK_DIR.is_dir():
        raise ParamsError(f"the notebooks folder is not at {NOTEBOOK_DIR}: lfcore reproduce runs the notebooks of a "
                          "checkout of the repository, with lfcore installed from it (pip install -e .)")
    p = load_params(params_file)
    keys = list(only or p.notebooks)
    if unknown := [k for k in keys if k not in NOTEBOOKS]:
        raise ParamsError(f"unknown notebook(s) {unknown}; known: {', '.join(NOTEBOOKS)}")
    out = Path(out or Path("reports") / params_file.stem).resolve()
    cache = Path(cache or cache_dir(out)).resolve()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ParamsError(f"--out {out}: cannot create the output folder ({type(e).__name__}: {e})") from None
    Cache(cache).check_writable("activations")  # a cache that cannot take results stops the run before it starts
    env = {RUNNER_ENV: "1", "TQDM_DISABLE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}  # the kernels inherit these
    if threads is not None:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    with _environ(env), hold_folder(out):
        atomic_write(out / "params.yaml", params_file.read_text(encoding="utf-8"))
        if executor != "sequential":
            run_jobs(p, cache, out / "jobs", executor, keys, retries, max_jobs, log=log)
        return _execute(p, params_file, keys, out, cache, kernel, force, log)


def rehearse(params_file: str | Path, only: list[str] | None = None, out: str | Path | None = None,
             threads: int | None = None, log=print) -> list[NotebookRun]:
    """``reproduce`` a params file unchanged against a local, offline stand-in for the hub (``lfcore.rehearse``) in
    a temporary folder; reports go to ``out`` (default ``reports/<stem>-rehearsal``). CLI: ``lfcore reproduce
    params/paper_llama2.yaml --rehearse``."""
    params_file = Path(params_file)
    out = Path(out or Path("reports") / f"{params_file.stem}-rehearsal")
    with tempfile.TemporaryDirectory(prefix="lfcore-rehearse-") as tmp:
        log(f"[lfcore] rehearsal: building a local hub for {params_file} in {tmp} ...")
        copy, env = prepare(params_file, tmp)
        with _environ(env):
            return reproduce(copy, only=only, out=out, cache=Path(tmp) / "results", threads=threads, log=log)


def _execute(p, params_file, keys, out, cache, kernel, force, log) -> list[NotebookRun]:
    """``reproduce``'s notebooks, once ``out`` is held."""
    import jupytext
    import papermill

    params_text = (out / "params.yaml").read_text(encoding="utf-8")
    runs, known = [], _previous_runs(out)
    for key in keys:
        stem, title, _ = NOTEBOOKS[key]
        work, ipynb, html_path = out / stem, out / f"{stem}.ipynb", out / f"{stem}.html"
        source = (NOTEBOOK_DIR / f"{stem}.py").read_text(encoding="utf-8")
        parameters = {**sections_for(p, key), "title": p.title, "out_dir": str(work), "cache_dir": str(cache)}
        inputs, last = inputs_digest(source, parameters), known.get(key)
        if (not force and inputs and last and last.status == "ok" and last.inputs == inputs and ipynb.exists()
                and last.html and last.html.exists() and (work / "summary.json").exists()):
            known[key] = dataclasses.replace(last, reused=True)
            runs.append(known[key])
            log(f"[lfcore] {stem}: inputs unchanged since {last.finished}: kept that run ({last.seconds:.0f} s); "
                f"--force executes it again")
            continue
        known.pop(key, None)  # its files are about to change: no record may vouch for them until it finishes
        _record(out, p, params_file, known, cache)
        work.mkdir(exist_ok=True)
        (work / "summary.json").unlink(missing_ok=True)
        atomic_write(work / "params.yaml", params_text)
        log(f"[lfcore] {stem}: running ...")
        start, cpu_start, error = time.time(), _children_cpu(), None
        try:
            papermill.execute_notebook(jupytext.reads(source, fmt="py:percent"), str(ipynb),
                                       parameters=_portable(parameters), kernel_name=kernel, language="python",
                                       progress_bar=False, cwd=str(work), kernel_manager_class=_IPCKernelManager)
        except Exception as e:  # papermill saved the notebook with the traceback; report and go on
            error = _failure(stem, e, ipynb, html_path)
        seconds, cpu = time.time() - start, _children_cpu() - cpu_start
        _name_paths(ipynb, stem)
        try:
            render_html(ipynb, html_path, f"{title} ({params_file.name})")
        except Exception as e:
            html_path = None
            error = (error or "") + f"\n  HTML rendering failed: {type(e).__name__}: {e}"
        summary = json.loads((work / "summary.json").read_text()) if (work / "summary.json").exists() else {}
        known[key] = NotebookRun(key, stem, title, "failed" if error else "ok", seconds, ipynb, html_path, error,
                                 summary, cpu, inputs, time.strftime("%Y-%m-%d %H:%M"))
        runs.append(known[key])
        _record(out, p, params_file, known, cache)
        log(f"[lfcore] {stem}: {'FAILED' if error else 'ok'} in {seconds:.0f} s ({cpu:.0f} s CPU) -> {html_path}")
        for w in summary.get("warnings", []):
            log(f"[lfcore] warning ({stem}): {w}")
        if error:
            log(f"[lfcore] {error}")
    _record(out, p, params_file, known, cache)
    ran = [r for r in runs if not r.reused]
    failed = sum(r.status != "ok" for r in ran)
    log(f"[lfcore] {len(ran)} executed in {sum(r.seconds for r in ran):.0f} s"
        + (f" ({failed} failed)" if failed else "") + f", {len(runs) - len(ran)} kept; index: {out / 'index.html'}")
    return runs


def _previous_runs(out: Path) -> dict[str, NotebookRun]:
    """The last recorded run of each notebook in ``<out>/runs.json`` (empty if none or unreadable)."""
    path = out / "runs.json"
    try:
        known = json.loads(path.read_text()) if path.exists() else {}
        names = {f.name for f in dataclasses.fields(NotebookRun)}
        return {key: NotebookRun(**{**{k: v for k, v in r.items() if k in names}, "ipynb": out / r["ipynb"],
                                    "html": out / r["html"] if r["html"] else None}) for key, r in known.items()}
    except (ValueError, TypeError, KeyError):  # a runs.json from another lfcore version: execute again
        return {}


def _record(out: Path, p: Params, params_file: Path, known: dict[str, NotebookRun], cache: Path) -> None:
    """Write ``<out>/runs.json`` (every recorded run, this call's and earlier ones, so that ``--only`` keeps the
    other notebooks' reports) and ``index.html``: every report, executed notebook, table (CSV) and figure (JSON),
    with headline numbers."""
    atomic_write(out / "runs.json", json.dumps(
        {k: {**dataclasses.asdict(r), "ipynb": r.ipynb.name, "html": r.html.name if r.html else None, "reused": False}
         for k, r in known.items()}, indent=1, default=str))
    e, params_text = html.escape, (out / "params.yaml").read_text(encoding="utf-8")
    cards = "".join(_card(known[key], params_text) for key in NOTEBOOKS if key in known)
    atomic_write(out / "index.html", (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{e(p.title)}</title>"
        f"<style>{_INDEX_CSS}</style></head><body><h1>{e(p.title)}</h1>"
        f"<p>params of the latest call: <a href='params.yaml'>{e(params_file.name)}</a> (each notebook links "
        f"the params it was executed with) &middot; generated {time.strftime('%Y-%m-%d %H:%M')} &middot; lfcore "
        f"{__version__}, torch {torch.__version__} &middot; cache (from here): "
        f"<code>{e(os.path.relpath(cache, out))}</code></p>{cards}"
        f"<h2>Parameters of the latest call</h2><pre>{e(params_text)}</pre></body></html>"))


def _fmt(v) -> str:
    """A headline value for the index page (estimates with intervals, nested mappings, numbers)."""
    if isinstance(v, dict) and {"estimate", "ci"} <= set(v):
        return (f"{_fmt(v['estimate'])} [{_fmt(v['ci'][0])}, {_fmt(v['ci'][1])}]"
                + (f", p = {v['p']:.3g}" if "p" in v else ""))
    if isinstance(v, dict) and set(v) == {"estimate"}:
        return _fmt(v["estimate"])
    if isinstance(v, dict):
        return " &middot; ".join(f"{html.escape(str(k))} {_fmt(x)}" for k, x in v.items())
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return number(v)
    if isinstance(v, list) and all(isinstance(x, (int, float)) for x in v):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    return html.escape(str(v))


def _label(key: str) -> str:
    """A headline key as a reader's label: ``SKLR_percent_of_neurons`` -> ``SKLR, % of neurons``."""
    return key.replace("_percent_", ", % ").replace("_", " ")


_INDEX_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1000px; margin: 2em auto; color: #222; }
.card { border: 1px solid #ccd; border-radius: 6px; padding: 0 1em 1em; margin: 1em 0; }
.card.failed { border-color: #c33; background: #fff6f6; } .status { text-transform: uppercase; }
.card.ok .status { color: #282; } .card.failed .status { color: #c33; }
.warn { background: #fff4d6; padding: .4em; } .err { white-space: pre-wrap; color: #900; }
.nums th { text-align: left; padding-right: 1em; font-weight: normal; color: #555; }
pre { background: #f6f6f8; padding: 1em; }
"""


def _card(r: NotebookRun, params_text: str) -> str:
    """One notebook on the index page: status, timing, links (its params marked if not ``params_text``), numbers."""
    e, s = html.escape, r.summary
    links = ([f"<a href='{e(r.html.name)}'>report (HTML)</a>"] if r.html else []) + \
        [f"<a href='{e(r.ipynb.name)}'>executed notebook</a>"]
    used = r.ipynb.parent / r.stem / "params.yaml"
    if used.exists():
        other = used.read_text(encoding="utf-8") != params_text
        links.append(f"<a href='{e(r.stem)}/params.yaml'>params</a>"
                     + (" <b class='warn'>(not the latest call's: executed with other params)</b>" if other else ""))
    cpu = f" ({r.cpu_seconds:.0f} s CPU)" if r.cpu_seconds else ""
    cpu += f", executed {r.finished}" + (" (inputs unchanged since)" if r.reused else "") if r.finished else ""
    hits = _fmt(s.get("cache", {}).get("hits", {})) or "none"
    head = "".join(f"<tr><th>{e(_label(k))}</th><td>{_fmt(v)}</td></tr>" for k, v in s.get("headline", {}).items())
    files = "".join(f"<li><a href='{e(r.stem)}/{e(f)}'>{e(f)}</a></li>"
                    for f in s.get("tables", []) + s.get("figures", []))
    warn = "".join(f"<p class='warn'>warning: {e(w)}</p>" for w in s.get("warnings", []))
    err = f"<pre class='err'>{e(r.error)}</pre>" if r.error else ""
    return (f"<section class='card {r.status}'><h2>{e(r.title)}</h2>"
            f"<p><b class='status'>{r.status}</b> &middot; {r.seconds:.0f} s{cpu} &middot; {' &middot; '.join(links)}"
            f" &middot; <small>cache hits: {hits}</small></p>{err}{warn}<table class='nums'>{head}</table>"
            f"<details><summary>tables (CSV) and figures (JSON)</summary><ul>{files}</ul></details></section>")
