"""Fan the expensive steps of a params file out as jobs (SLURM, or local worker processes, through submitit), so
that the notebooks then read every result from the step cache.

``plan(p)`` derives the jobs: one per model and step kind (``capture``: the activations and what the notebooks
compute from them; ``deactivation``: Table 1/4 and the generations; ``accuracy``: the lm-eval task). A job
(``run_step``) calls the ``lfcore.steps`` functions the notebooks call, with the same arguments, so it fills exactly
the keys they ask for; two jobs needing one key meet at its lock (``Cache.lock``). Each finished job writes a record,
``<cache>/jobs/<step id>.json``; a rerun submits only the steps without one. ``estimate`` scales recorded costs.
"""
from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import submitit
import torch

from .cache import Cache, atomic_write, code_digest, make_key
from .diagnostics import exclusion_table
from .regions import key_regions
from .specs import ModelSpec, Params, ResourceSpec
from .steps import (activations, first_token_effect, generations, held_out_prompts, intervals, key_region_sets, label,
                    lape_comparison, load, patching_generations, perplexity_table, perplexity_texts, sentences,
                    steering_generations, steering_perplexity, task_accuracy, without_dominant)

# What each notebook asks of the cache: the params section naming its models, the parts every model needs per
# step kind, and the parts only its first model needs (tests/test_jobs.py finds no cache miss after the jobs).
NEEDS = {
    "obs1": ("model", {"capture": ("intervals", "intervals_clean", "first_token")}, {}),
    "obs2": ("model", {"capture": ("lape",), "deactivation": ("table", "generations")}, {}),
    "obs3": ("checkpoints", {"capture": ("series_intervals",)}, {}),
    "obs4": ("checkpoints", {"capture": ("series_intervals",), "accuracy": ("accuracy",)}, {}),
    "obs5": ("sizes", {"capture": ("series_intervals",), "accuracy": ("accuracy",)}, {}),
    "obs6": ("model", {"capture": ("steering",)}, {}),
    "appendix": ("family", {"capture": ("series_intervals",), "accuracy": ("accuracy",)},
                 {"capture": ("intervals",), "deactivation": ("table",)}),
}
# the params sections a step kind reads
READS = {"capture": ("languages", "corpus", "capture", "regions", "uncertainty", "diagnostics", "robustness",
                     "perplexity", "steering"),
         "deactivation": ("languages", "corpus", "capture", "regions", "perplexity", "generation"),
         "accuracy": ("accuracy",)}
TASK_DOCS = {"xcopa_xl": 500, "xstorycloze_xl": 1511}  # documents per language when accuracy.limit is null


@dataclass
class Step:
    """One job: a step ``kind`` ("capture", "deactivation" or "accuracy") of one model, the ``parts`` it computes
    beyond the kind's main result, the notebooks that read it, its resources and its content ``id``."""

    kind: str
    model: ModelSpec
    parts: tuple[str, ...]
    notebooks: tuple[str, ...]
    resources: ResourceSpec
    id: str = ""

    @property
    def name(self) -> str:
        return f"{self.kind} of {label(self.model)}"


def _identity(m: ModelSpec) -> tuple:
    """What decides the weights a job loads (a label or plot position does not)."""
    return m.spec, m.revision, m.dtype, m.device_map


def plan(p: Params, notebooks: list[str] | None = None) -> list[Step]:
    """The jobs that fill every cache entry the notebooks (default: ``p.notebooks``) ask for: one per model and
    step kind, a model shared by notebooks counted once. A step's ``id`` hashes its kind, model, parts, the
    params sections it reads (``READS``) and lfcore's code.
    Usage: ``for s in plan(load_params("params/smoke.yaml")): print(s.name, s.parts)``."""
    steps: dict[tuple, Step] = {}
    for nb in notebooks or p.notebooks:
        section, every, first = NEEDS[nb]
        models = [p.model] if section == "model" else getattr(p, section).models
        for i, m in enumerate(models):
            for kind, parts in [*every.items(), *(first.items() if i == 0 else [])]:
                s = steps.setdefault((kind, _identity(m)), Step(kind, m, (), (), m.resources or p.resources))
                s.parts = tuple(sorted({*s.parts, *parts}))
                s.notebooks = tuple(dict.fromkeys([*s.notebooks, nb]))
                if m.resources and s.resources is p.resources:
                    s.resources = m.resources
    for s in steps.values():
        s.id = make_key(kind=s.kind, model=_identity(s.model), parts=s.parts, code=code_digest("."),
                        **p.model_dump(include=set(READS[s.kind])))
    return list(steps.values())


def record_path(cache: str | Path, step_id: str) -> Path:
    return Path(cache) / "jobs" / f"{step_id}.json"


def work_units(kind: str, p: Params) -> float:
    """The size of a step's work from the params alone, what ``estimate`` scales its cost by: capture: sentences x
    languages x max_length; deactivation: languages x (languages + 2) conditions x tokens; accuracy: languages x
    documents."""
    langs = len(p.languages)
    if kind == "capture":
        return p.corpus.n * langs * p.capture.max_length
    if kind == "deactivation":
        tokens = p.perplexity.max_tokens or p.perplexity.documents * p.perplexity.seqlen
        return langs * (langs + 2) * tokens
    return len(p.accuracy.languages) * (p.accuracy.limit or TASK_DOCS[p.accuracy.task])


def run_step(step: Step, p: Params, cache: str) -> dict:
    """Compute one planned step into the result cache folder ``cache`` and write its record (returned): the
    function every job runs. Usage: ``run_step(plan(p)[0], p, "reports/smoke/cache")``."""
    start = time.time()
    print(f"[lfcore] job {step.id}: {step.name} ({', '.join(step.parts) or 'main result'}) for "
          f"{', '.join(step.notebooks)}", flush=True)
    rc = Cache(cache)
    lm = load(step.model)
    loaded = time.time()
    if step.kind != "accuracy":  # key regions and intervals come from the activations; accuracy needs none
        corpus = sentences(p.corpus, p.languages)
        acts = activations(lm, corpus, p.capture, rc)
    if step.kind == "capture":
        if "intervals" in step.parts:
            intervals(acts, p.uncertainty, rc)
        if "series_intervals" in step.parts:
            intervals(acts, p.uncertainty, rc, per_layer=False)
        if "intervals_clean" in step.parts:
            dominance = exclusion_table(acts, p.diagnostics.k, p.diagnostics.share)
            intervals(without_dominant(acts, dominance, p.diagnostics.k), p.uncertainty, rc, per_layer=False)
        if "first_token" in step.parts:
            first_token_effect(lm, corpus, acts, p.capture, p.diagnostics.first_token_sentences, rc)
        if "lape" in step.parts:
            lape_comparison(lm, corpus, key_regions(acts, p.regions.threshold, p.regions.epsilon), p.robustness,
                            p.capture, rc)
        if "steering" in step.parts:  # obs6: the steering and patching generations, the steered perplexity
            key = key_regions(acts, p.regions.threshold, p.regions.epsilon)
            prompts = held_out_prompts(p.corpus, p.languages, corpus, p.steering.prompts_per_language,
                                       p.steering.seed)
            steering_generations(lm, key, acts, prompts, p.steering, rc)
            patching_generations(lm, key, activations(lm, prompts, p.capture, rc), prompts, p.steering, rc)
            steering_perplexity(lm, key, acts, p.perplexity, p.steering, rc)
    elif step.kind == "deactivation":
        sets = key_region_sets(key_regions(acts, p.regions.threshold, p.regions.epsilon), p.perplexity)
        perplexity_table(lm, perplexity_texts(p.perplexity, p.languages, lm.tokenizer), sets, p.perplexity, rc)
        if "generations" in step.parts:
            generations(lm, p.generation, sets, rc)
    else:
        task_accuracy(lm, p.accuracy, rc)
    record = {"id": step.id, "kind": step.kind, "model": label(step.model), "spec": step.model.spec,
              "revision": step.model.revision, "parts": list(step.parts), "notebooks": list(step.notebooks),
              "seconds": round(time.time() - start, 3), "load_seconds": round(loaded - start, 3),
              "gpus": torch.cuda.device_count(),
              "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
              "n_params": sum(x.numel() for x in lm.model.parameters()), "work": work_units(step.kind, p),
              "cache": rc.summary(), "host": socket.gethostname(), "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
    atomic_write(record_path(cache, step.id), json.dumps(record, indent=1))
    print(f"[lfcore] job {step.id}: done in {record['seconds']:.1f} s; cache {record['cache']}", flush=True)
    return record


class JobsFailed(RuntimeError):
    """One or more jobs failed after their retries; the message names each one's model, step and log."""


def _parameters(s: Step, cluster: str) -> dict:
    """submitit ``update_parameters`` for a step (the partition only on SLURM): one array per kind and resources."""
    r = s.resources
    params = dict(name=f"lfcore-{s.kind}", nodes=1, tasks_per_node=1, gpus_per_node=r.gpus,
                  cpus_per_task=r.cpus, mem_gb=r.mem_gb, timeout_min=r.time_min)
    if r.partition and cluster == "slurm":
        params["slurm_partition"] = r.partition
    return params


def _failure(s: Step, job, err: Exception, attempts: int) -> str:
    lines = [line for line in str(err).strip().splitlines() if line.strip()]
    return (f"{s.name} failed after {attempts} attempt(s) (job {job.job_id}): "
            f"{lines[-1] if lines else type(err).__name__}\n  log: {job.paths.stderr} (and {job.paths.stdout})")


def run_jobs(p: Params, cache: str | Path, folder: str | Path, cluster: str = "slurm",
             notebooks: list[str] | None = None, retries: int = 1, max_jobs: int | None = None,
             poll_s: float | None = None, log=print) -> list[dict]:
    """Submit every planned step without a record in ``cache`` as a job (``cluster``: "slurm" or "local"), at most
    ``max_jobs`` at a time (None: all at once), log progress until all end, resubmit a failed job up to ``retries``
    times, and return the new records; raise ``JobsFailed`` naming each failed job's model, step and log files.
    Usage: ``run_jobs(p, "reports/x/cache", "reports/x/jobs", "slurm")``.

    ``folder`` keeps submitit's pickles and logs; on SLURM it and ``cache`` must be on a filesystem the compute
    nodes share. ``poll_s``: seconds between state checks (default 2 locally, 30 on SLURM, to spare its accounting).
    """
    poll_s = poll_s or (2.0 if cluster == "local" else 30.0)
    steps = plan(p, notebooks)
    todo = [s for s in steps if not record_path(cache, s.id).exists()]
    log(f"[lfcore] jobs: {len(steps)} planned, {len(steps) - len(todo)} already recorded in {Path(cache) / 'jobs'}"
        f", {len(todo)} to submit ({cluster})")
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    live, waiting, attempts = {}, list(todo), {s.id: 1 for s in todo}
    records, failures, last = [], [], None
    while live or waiting:
        for sid, (s, job) in list(live.items()):
            if not job.done():
                continue
            del live[sid]
            if (err := job.exception()) is None:
                records.append(job.result())
            elif attempts[sid] <= retries:
                attempts[sid] += 1
                log(f"[lfcore] {s.name} failed (job {job.job_id}, log {job.paths.stderr}); resubmitting "
                    f"(attempt {attempts[sid]} of {retries + 1})")
                waiting.insert(0, s)
            else:
                failures.append(_failure(s, job, err, attempts[sid]))
        free = len(waiting) if max_jobs is None else max(0, max_jobs - len(live))
        groups: dict[str, list[Step]] = {}
        for s in waiting[:free]:  # one array job per step kind and set of resources
            groups.setdefault(json.dumps(_parameters(s, cluster), sort_keys=True), []).append(s)
        for group in groups.values():
            executor.update_parameters(**_parameters(group[0], cluster))
            with executor.batch():
                jobs = [executor.submit(run_step, s, p, str(cache)) for s in group]
            live.update({s.id: (s, job) for s, job in zip(group, jobs)})
        waiting = waiting[free:]
        states = [job.state for _, job in live.values()]
        pending = sum(st in ("PENDING", "REQUEUED", "READY", "CONFIGURING") for st in states) + len(waiting)
        now = (len(records), len(states) - pending + len(waiting), pending, len(failures))
        if now != last:
            log(f"[lfcore] jobs: {now[0]} done, {now[1]} running, {now[2]} pending, {now[3]} failed (of {len(todo)})")
            last = now
        if live:
            time.sleep(poll_s)
    if failures:
        raise JobsFailed(f"{len(failures)} of {len(todo)} jobs failed; the notebooks were not executed. A rerun "
                         f"submits only the steps not yet recorded.\n" + "\n".join(failures))
    return records


def read_records(cache: str | Path) -> list[dict]:
    """Every job record in the result cache folder ``cache``."""
    return [json.loads(f.read_text()) for f in sorted((Path(cache) / "jobs").glob("*.json"))]


def estimate(p: Params, records: list[dict], notebooks: list[str] | None = None) -> pd.DataFrame:
    """GPU-hours of every planned step of ``p``, scaled from measured job ``records`` (``read_records``): one row
    per step, with how many records its rates come from.

    Per step kind, the median load rate (wall seconds per parameter) and compute rate (the rest, per parameter per
    ``work_units``); a step's estimate is (load rate + compute rate x work) x its model's parameter count
    (``ModelSpec.params``, else a record of the model) x its GPUs (``device_map`` holds them all for the whole
    job). Linear: an order of magnitude, only as good as the records match the target (GPU type, full batches)."""
    rates: dict[str, list[tuple[float, float]]] = {}
    sizes: dict[tuple, int] = {}
    for r in records:
        rates.setdefault(r["kind"], []).append((r["load_seconds"] / r["n_params"],
                                                (r["seconds"] - r["load_seconds"]) / (r["n_params"] * r["work"])))
        sizes[(r["spec"], r["revision"])] = r["n_params"]
    rows = []
    for s in plan(p, notebooks):
        n = s.model.params or sizes.get((s.model.spec, s.model.revision))
        load_rate, rate = pd.DataFrame(rates.get(s.kind, [(float("nan"),) * 2])).median()
        seconds = (load_rate + rate * work_units(s.kind, p)) * n if n else float("nan")
        hours = seconds * max(s.resources.gpus, 1) / 3600
        rows.append({"kind": s.kind, "model": label(s.model), "gpus": s.resources.gpus, "n_params": n,
                     "work": work_units(s.kind, p), "gpu_hours": hours, "records": len(rates.get(s.kind, []))})
    return pd.DataFrame(rows)
