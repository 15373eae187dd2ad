"""A workflow killed mid-run leaves no truncated file under a final name, and the next run redoes
only the unfinished jobs."""

import os
import signal
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
import torch
import yaml
from fixtures import copy_workflow

from coupledsgd.core.grid import training_jobs
from coupledsgd.core.config import validate

ROOT = Path(__file__).resolve().parents[1]


def test_a_killed_run_resumes_with_only_the_unfinished_jobs(tmp_path):
    copy_workflow(tmp_path)
    config = validate(yaml.safe_load((tmp_path / "configs/smoke.yaml").read_text()))
    jobs = training_jobs(config)  # each a list of members trained together
    total = sum(len(j) for j in jobs)
    # Only the training part of the DAG: enough to interrupt, and half the time of the whole run.
    command = ["snakemake", "--cores", "2", "--until", "train_members", "--configfile", "configs/smoke.yaml"]
    run = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)
    results = tmp_path / "results/smoke"
    predictions = results / "predictions"
    deadline = time.monotonic() + 300
    while len(list(predictions.rglob("*.parquet"))) < total // 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(run.pid, signal.SIGKILL)  # snakemake and every job it runs, mid-write
    run.wait(timeout=60)

    for path in results.rglob("*"):
        if path.suffix == ".parquet":
            pq.read_table(path)  # complete, or not there at all
        elif path.suffix == ".pt":
            torch.load(path, weights_only=True)
    done = lambda m: (results / "children" / m.key / "final.pt").exists() and (predictions / f"{m.key}.parquet").exists()
    finished = [j for j in jobs if all(done(m) for m in j)]
    stamps = {m: (predictions / f"{m.key}.parquet").stat().st_mtime_ns for j in finished for m in j}
    assert len(finished) >= 1

    plan = subprocess.run(command + ["-n", "--rerun-incomplete"], cwd=tmp_path, capture_output=True, text=True)
    assert plan.returncode == 0, plan.stderr[-2000:]
    counts = dict((m[0], int(m[1])) for m in (l.split() for l in plan.stdout.splitlines()) if len(m) == 2 and m[1].isdigit())
    # A job killed after its last write is not recorded as finished: at most the 2 running jobs redo.
    redo = len(jobs) - len(finished)
    assert redo <= counts["train_members"] <= redo + 2

    # A killed snakemake leaves its lock behind: docs/troubleshooting.md says to unlock, then rerun.
    assert subprocess.run(command + ["--unlock"], cwd=tmp_path, capture_output=True).returncode == 0
    again = subprocess.run(command + ["--rerun-incomplete"], cwd=tmp_path, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    rerun = {m for m, t in stamps.items() if (predictions / f"{m.key}.parquet").stat().st_mtime_ns != t}
    job_of = {m: i for i, j in enumerate(jobs) for m in j}
    assert len({job_of[m] for m in rerun}) <= counts["train_members"] - redo  # finished work kept
    assert len(list(predictions.rglob("*.parquet"))) == total


LONG = {"experiment": "long", "seed": 0, "device": "cpu", "threads": 1,
        "data": {"name": "mnist1d", "n_train": 256, "augment": False}, "model": {"name": "cnn1d"},
        "training": {"steps": 1200, "batch_size": 32, "lr": 0.1}, "ensemble": {"parents": 1, "children": 2},
        "spawn_steps": [0], "conditions": ["no-coupling"], "checkpoint": {"every_seconds": None}}
LONG_COMMAND = ["snakemake", "--cores", "1", "--until", "train_members", "--configfile", "configs/long.yaml"]
LONG_LOG = "logs/long/children/no-coupling/t0/members.log"


def start_long(workdir):
    (workdir / "configs/long.yaml").write_text(yaml.safe_dump(LONG))
    run = subprocess.Popen(LONG_COMMAND, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           start_new_session=True)
    log, deadline = workdir / LONG_LOG, time.monotonic() + 120
    while "step 200/" not in (log.read_text() if log.exists() else "") and time.monotonic() < deadline:
        time.sleep(0.05)
    return run


def test_ctrl_c_saves_the_running_job_and_the_same_command_continues_it(tmp_path):
    """Ctrl-C in a terminal sends SIGINT to Snakemake and to its jobs (one process group)."""
    copy_workflow(tmp_path)
    run = start_long(tmp_path)
    os.killpg(run.pid, signal.SIGINT)
    assert run.wait(timeout=60) != 0
    log = (tmp_path / LONG_LOG).read_text()
    stopped = [line for line in log.splitlines() if line.startswith("Interrupted: stopped by SIGINT at step")]
    assert len(stopped) == 1, log[-2000:]
    step = int(stopped[0].split(" at step ")[1].split(";")[0])
    assert 200 <= step < 1200
    again = subprocess.run(LONG_COMMAND, cwd=tmp_path, capture_output=True, text=True)  # the same command
    assert again.returncode == 0, again.stderr[-2000:]
    # Snakemake deletes the job's log before it runs it again; the continued job writes the stopped
    # job's lines back first (up to its stop), then says where it continued from.
    lines = (tmp_path / LONG_LOG).read_text().splitlines()
    assert lines[: lines.index(stopped[0]) + 1] == log.splitlines()[: log.splitlines().index(stopped[0]) + 1]
    assert any(line.endswith(f"final.resume.pt at step {step}") for line in lines[lines.index(stopped[0]):])
    predictions = sorted((tmp_path / "results/long/predictions").rglob("*.parquet"))
    assert len(predictions) == 2 and all(pq.read_table(p).num_rows == 1000 for p in predictions)
    assert not list((tmp_path / "results/long").rglob("*.resume.pt"))  # removed once the run succeeded


def test_sigint_to_snakemake_alone_costs_a_rerun_of_the_evaluation_only(tmp_path):
    """SIGINT to the Snakemake process alone (a multiplexer, a scheduler): Snakemake waits for its job,
    which finishes, yet marks its outputs incomplete; the same command reruns the job, which starts
    from its last checkpoint, at its last step, and writes the same files."""
    copy_workflow(tmp_path)
    run = start_long(tmp_path)
    os.kill(run.pid, signal.SIGINT)
    output = run.communicate(timeout=120)[0]
    assert run.returncode != 0, output[-2000:]
    predictions = sorted((tmp_path / "results/long/predictions").rglob("*.parquet"))
    first = {p: p.read_bytes() for p in predictions}
    assert len(first) == 2
    plan = subprocess.run(LONG_COMMAND + ["-n"], cwd=tmp_path, capture_output=True, text=True)
    assert plan.returncode == 0, plan.stderr[-2000:]
    again = subprocess.run(LONG_COMMAND, cwd=tmp_path, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    log = (tmp_path / LONG_LOG).read_text()
    assert "at step 1200" in log.split("resumed from")[-1].splitlines()[0]
    assert all(p.read_bytes() == data for p, data in first.items())
