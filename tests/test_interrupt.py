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

from coupledsgd.config import training_jobs, validate

ROOT = Path(__file__).resolve().parents[1]


def test_a_killed_run_resumes_with_only_the_unfinished_jobs(tmp_path):
    copy_workflow(tmp_path)
    config = validate(yaml.safe_load((tmp_path / "configs/smoke.yaml").read_text()),
                      tmp_path / "workflow/schemas/config.schema.yaml")
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

    # A killed snakemake leaves its lock behind: the README says to unlock, then rerun.
    assert subprocess.run(command + ["--unlock"], cwd=tmp_path, capture_output=True).returncode == 0
    again = subprocess.run(command + ["--rerun-incomplete"], cwd=tmp_path, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    rerun = {m for m, t in stamps.items() if (predictions / f"{m.key}.parquet").stat().st_mtime_ns != t}
    job_of = {m: i for i, j in enumerate(jobs) for m in j}
    assert len({job_of[m] for m in rerun}) <= counts["train_members"] - redo  # finished work kept
    assert len(list(predictions.rglob("*.parquet"))) == total
