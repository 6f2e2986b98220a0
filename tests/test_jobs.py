"""jobs: the plan follows the params; two processes computing one key compute it once; submitit's local executor
runs real worker processes that fill exactly the keys the notebooks read (the report equals the sequential one,
a rerun submits and recomputes nothing); a killed worker is retried, then reported with model, step and log;
the GPU-hour estimate scales the recorded costs."""
from __future__ import annotations

import json
import multiprocessing
import os
import signal
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import submitit
import yaml

import lfcore.cli
import lfcore.jobs
import lfcore.runner
from lfcore.cache import Cache
from lfcore.params import load_params
from lfcore.specs import ResourceSpec
from lfcore.series import run_series
from lfcore.steps import sentences

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT / "params" / "smoke.yaml"


def _smoke(tmp_path: Path, name: str = "smoke.yaml", **changes) -> Path:
    """smoke.yaml with top-level keys replaced, written next to the test's files."""
    data = {**yaml.safe_load(SMOKE.read_text()), **changes}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def test_plan_follows_the_params(tmp_path):
    p = load_params(SMOKE)
    steps = lfcore.jobs.plan(p)
    names = [s.name for s in steps]
    assert len(names) == len(set(names)) == 15  # 7 distinct models: 7 captures, 7 accuracies, 1 deactivation
    main = next(s for s in steps if s.name == "capture of tiny:llama-32@step-1")
    # the main model is also the first checkpoint and the first of the family: one job serves them all
    assert main.notebooks == ("obs1", "obs2", "obs3", "obs4", "obs6", "appendix")
    assert set(main.parts) == {"intervals", "intervals_clean", "first_token", "lape", "series_intervals", "steering"}
    assert [s.name for s in lfcore.jobs.plan(p, ["obs3"])] == [f"capture of tiny:llama-32@step-{i}" for i in (1, 2, 3)]
    # a model's own resources replace the default; LLaMA-2-70b asks for its GPUs as one job
    llama = lfcore.jobs.plan(load_params(ROOT / "params" / "paper_llama2.yaml", check=False))
    big = [s for s in llama if s.model.label == "LLaMA2-70b"]
    assert big and all(s.resources.gpus == 8 and s.model.device_map == "auto" for s in big)
    assert all(s.resources.gpus == 1 for s in llama if s.model.label == "LLaMA2-7b")
    # a changed section a step reads changes its id; one it does not read leaves it
    other = load_params(_smoke(tmp_path, accuracy={**yaml.safe_load(SMOKE.read_text())["accuracy"], "limit": 3}))
    ids = {s.name: s.id for s in steps}
    changed = {s.name for s in lfcore.jobs.plan(other) if ids[s.name] != s.id}
    assert changed == {s.name for s in steps if s.kind == "accuracy"}


def _compute_once(root: str, log: str, out: str) -> None:
    """In a child process: a cached frame whose computation takes a while and leaves a mark."""
    def compute():
        with open(log, "a") as f:
            f.write("computed\n")
        time.sleep(1.0)
        return pd.DataFrame({"x": [0.1, 0.2]})

    df = Cache(root).frame("slow", {"a": 1}, compute)
    df.to_csv(out)


def test_two_processes_computing_one_key_compute_it_once(tmp_path):
    ctx = multiprocessing.get_context("fork")
    args = [(str(tmp_path / "c"), str(tmp_path / "log"), str(tmp_path / f"{i}")) for i in range(2)]
    procs = [ctx.Process(target=_compute_once, args=a) for a in args]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(30)
    assert [proc.exitcode for proc in procs] == [0, 0]
    assert (tmp_path / "log").read_text() == "computed\n"  # the second waited for the lock and read the entry
    assert (tmp_path / "0").read_text() == (tmp_path / "1").read_text()
    assert not list((tmp_path / "c" / "slow").glob(".*.json.*"))  # no temp file left behind


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """obs2 (the notebook with the most cached steps) executed sequentially, and through local worker processes
    twice. (Each worker imports torch and transformers: seconds each, more on a busy machine.)"""
    tmp = tmp_path_factory.mktemp("jobs")
    params = _smoke(tmp, notebooks=["obs2"])
    quiet = lambda *a: None  # noqa: E731
    sequential = lfcore.runner.reproduce(params, out=tmp / "sequential", threads=1, log=quiet)
    logs = [[], []]
    local = lfcore.runner.reproduce(params, out=tmp / "local", threads=1, executor="local", log=logs[0].append)
    cache = tmp / "local" / "cache"
    written = {f: f.stat().st_mtime_ns for f in cache.rglob("*.json")}
    again = lfcore.runner.reproduce(params, out=tmp / "local", threads=1, executor="local", log=logs[1].append)
    return tmp, sequential, local, again, logs, written


def test_local_jobs_fill_what_the_notebooks_read(runs):
    tmp, sequential, local, _, logs, _ = runs
    assert all(r.status == "ok" for r in sequential + local), [r.error for r in sequential + local]
    assert "2 planned, 0 already recorded" in logs[0][0]
    assert any("2 done, 0 running, 0 pending, 0 failed (of 2)" in line for line in logs[0])
    for r in local:
        assert r.summary["cache"]["misses"] == {}, (r.stem, r.summary["cache"])  # the jobs computed every step
    records = lfcore.jobs.read_records(tmp / "local" / "cache")
    assert sorted(r["kind"] for r in records) == ["capture", "deactivation"]
    assert all(r["seconds"] > 0 and r["n_params"] > 0 and r["work"] > 0 for r in records)
    # the report is the sequential one: every table byte for byte, every headline number
    for seq, job in zip(sequential, local):
        assert seq.summary["headline"] == job.summary["headline"], seq.stem
        assert seq.summary["tables"] == job.summary["tables"]
        for rel in seq.summary["tables"]:
            a, b = tmp / "sequential" / seq.stem / rel, tmp / "local" / job.stem / rel
            assert a.read_bytes() == b.read_bytes(), rel


def test_second_run_submits_and_recomputes_nothing(runs):
    tmp, _, _, again, logs, written = runs
    assert "2 planned, 2 already recorded" in logs[1][0] and "0 to submit" in logs[1][0]
    assert all(r.reused and r.status == "ok" for r in again)
    cache = tmp / "local" / "cache"
    assert {f: f.stat().st_mtime_ns for f in cache.rglob("*.json")} == written


def test_series_steps_fill_what_the_series_reads(tmp_path):
    """The series notebooks (obs3-5, the appendix's family) read captures, whole-model intervals and accuracy
    through ``series.run_series``: after the planned steps (here in this process) it computes nothing."""
    smoke = yaml.safe_load(SMOKE.read_text())
    two = {**smoke["checkpoints"], "models": smoke["checkpoints"]["models"][:2]}
    p = load_params(_smoke(tmp_path, checkpoints=two))
    steps = lfcore.jobs.plan(p, ["obs4"])
    assert sorted(s.kind for s in steps) == ["accuracy", "accuracy", "capture", "capture"]
    for s in steps:
        lfcore.jobs.run_step(s, p, str(tmp_path / "cache"))
    cache = Cache(tmp_path / "cache")
    run_series(p.checkpoints.models, sentences(p.corpus, p.languages), p.capture, p.regions.threshold, cache,
               accuracy_cfg=p.accuracy, uncertainty=p.uncertainty)
    assert cache.summary() == {"hits": {"activations": 2, "accuracy": 2, "intervals": 2}, "misses": {}}


def _kill_workers(folder: Path, stop: threading.Event, killed: list) -> None:
    """Kill (SIGKILL) the worker process of every local job as soon as it starts: the controller's child."""
    while not stop.is_set():
        for log in folder.glob("*_0_log.out") if folder.exists() else []:
            controller = log.name.split("_")[0]
            if controller in killed:
                continue
            try:
                children = Path(f"/proc/{controller}/task/{controller}/children").read_text().split()
            except OSError:
                continue
            if children:
                os.kill(int(children[0]), signal.SIGKILL)
                killed.append(controller)
        time.sleep(0.05)


def test_killed_worker_is_retried_then_reported(tmp_path, monkeypatch):
    # submitit waits 15 s for the result file of a job that ended without one (a slow network filesystem may not
    # show it yet); this folder is local
    monkeypatch.setattr(submitit.core.core.Job, "_results_timeout_s", 0)
    smoke = yaml.safe_load(SMOKE.read_text())
    p = load_params(_smoke(tmp_path, notebooks=["obs3"],
                           checkpoints={**smoke["checkpoints"], "models": smoke["checkpoints"]["models"][:1]}))
    folder, stop, killed, logged = tmp_path / "jobs", threading.Event(), [], []
    killer = threading.Thread(target=_kill_workers, args=(folder, stop, killed))
    killer.start()
    try:
        with pytest.raises(lfcore.jobs.JobsFailed) as e:
            lfcore.jobs.run_jobs(p, tmp_path / "cache", folder, "local", retries=1, max_jobs=1, poll_s=0.2,
                                 log=logged.append)
    finally:
        stop.set()
        killer.join()
    assert len(killed) == 2  # the first attempt and its retry
    assert any("resubmitting (attempt 2 of 2)" in line for line in logged)
    message = str(e.value)
    assert "capture of tiny:llama-32@step-1 failed after 2 attempt(s)" in message
    assert f"log: {folder}/{killed[1]}_0_log.err" in message
    assert not lfcore.jobs.read_records(tmp_path / "cache")  # nothing recorded: a rerun submits it again


def test_estimate_scales_recorded_costs():
    p = load_params(ROOT / "params" / "paper_bloom_checkpoints.yaml", check=False)
    work = {k: lfcore.jobs.work_units(k, p) for k in ("capture", "accuracy")}
    records = [{"kind": k, "spec": "x", "revision": None, "seconds": 12.0, "load_seconds": 2.0, "gpus": 1,
                "n_params": 1e6, "work": work[k] / 100, "device": "cpu"} for k in work]
    table = lfcore.jobs.estimate(p, records)
    assert len(table) == 2 * len(p.checkpoints.models)
    # 1e6 parameters: 2 s to load, 10 s for 1/100 of the work; x 7.07e9 / 1e6 parameters, x 100 work, 1 GPU
    assert table.gpu_hours.tolist() == pytest.approx([(2 + 10 * 100) * 7069016064 / 1e6 / 3600] * len(table))
    assert ResourceSpec().gpus == 1 and (table.records == 1).all()


def test_cli_estimate(runs, capsys):
    tmp = runs[0]
    assert lfcore.cli.main(["estimate", str(ROOT / "params" / "paper_llama2.yaml"),
                               "--cache-dir", str(tmp / "local" / "cache")]) == 0
    out = capsys.readouterr().out
    assert "Based on 2 job records" in out and "LLaMA2-70b" in out and "total:" in out
    assert lfcore.cli.main(["estimate", str(SMOKE), "--cache-dir", str(tmp / "nothing")]) == 2
    assert "no job records" in capsys.readouterr().err
