"""A training job killed with SIGKILL at random points and restarted ends bit-for-bit where an
uninterrupted job ends."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from coupledsgd.core.files import remove_finished_checkpoints
from coupledsgd.engine.resume import Resume
from coupledsgd.jobs.stages import parent_state, train_members
from coupledsgd.engine.training import Hparams, Run, Trajectory

PARAMS = {"seed": 0, "device": "cpu", "augment": True, "model": {"name": "cnn1d"},
          "training": {"steps": 240, "batch_size": 32, "lr": 0.1}, "config_hash": "test",
          "condition": "coupled-to-t-reset", "t": 8, "parent": 0, "members": [[0, 1]], "threads": 1,
          "jobs_per_device": 1, "checkpoint": {"every_steps": 5, "every_seconds": None}}


def outputs(folder):
    return {"final": str(folder / "final.pt"), "predictions": str(folder / "pred.parquet"),
            "trajectory": str(folder / "traj.parquet")}


@pytest.fixture(scope="module")
def reference(mnist1d_path, tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    parent = root / "parent.pt"
    parent_state(str(mnist1d_path), str(parent), {**PARAMS, "t": 8})
    ref = root / "reference"
    train_members(str(mnist1d_path), {0: str(parent)}, [outputs(ref)], PARAMS)
    return root, parent, ref


def start_job(data, parent, folder, log):
    code = ("import json, sys; from coupledsgd.jobs.runtime import run_stage; from coupledsgd.jobs.stages import train_members; "
            "data, parent, out, params, log = json.loads(sys.argv[1]); "
            "run_stage(train_members, data, {0: parent}, out, params, log)")
    args = json.dumps([str(data), str(parent), [outputs(folder)], PARAMS, str(log)])
    return subprocess.Popen([sys.executable, "-c", code, args])


def test_sigkill_at_random_points_then_restart_gives_the_uninterrupted_result(mnist1d_path, reference):
    root, parent, ref = reference
    rng = random.Random(0)
    kills = 0
    for trial in range(12):
        folder = root / f"trial{trial}"
        resume_file = folder / "final.resume.pt"
        job = start_job(mnist1d_path, parent, folder, folder.with_suffix(".log"))
        deadline = time.monotonic() + 60
        while not resume_file.exists() and job.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0, 0.8))
        if job.poll() is None:
            os.kill(job.pid, signal.SIGKILL)
            kills += 1
        job.wait(timeout=60)
        assert not (folder / "final.pt").exists() or job.returncode == 0
        again = start_job(mnist1d_path, parent, folder, folder.with_suffix(".log"))
        assert again.wait(timeout=120) == 0
        for name in ("pred.parquet", "traj.parquet"):
            assert (folder / name).read_bytes() == (ref / name).read_bytes(), (trial, name)
        a, b = (torch.load(f / "final.pt", weights_only=True) for f in (folder, ref))
        assert all(torch.equal(a["model"][k], b["model"][k]) for k in b["model"])
        assert all(torch.equal(x, y) for x, y in zip(a["optimizer"]["momentum_buffers"],
                                                     b["optimizer"]["momentum_buffers"]))
        # Kept at the last step (a rerun only evaluates), until the workflow's success removes it.
        assert torch.load(resume_file, weights_only=True)["runs"][0]["step"] == 248
        assert remove_finished_checkpoints(folder) == 1 and not resume_file.exists()
    assert kills >= 10
    logs = [(root / f"trial{t}.log").read_text() for t in range(12)]
    assert sum("resumed from" in log for log in logs) >= 8


def test_a_resume_file_of_other_settings_is_ignored(mnist1d_path, reference):
    root, parent, ref = reference
    folder = root / "stale"
    folder.mkdir()
    other = {**PARAMS, "training": {**PARAMS["training"], "lr": 0.05}}
    run = Run.fresh("cnn1d", (1, 40), 10, Hparams.from_config(other["training"]), {"init": 1, "order": 2, "aug": 3})
    stale = Resume(folder / "final.resume.pt", other, every_steps=1)
    stale.save([run], [Trajectory()])
    assert (folder / "final.resume.pt").exists()
    log = folder / "job.log"
    train_members(str(mnist1d_path), {0: str(parent)}, [outputs(folder)], PARAMS, str(log))
    assert "ignoring" in log.read_text() and "other settings" in log.read_text()
    assert (folder / "pred.parquet").read_bytes() == (ref / "pred.parquet").read_bytes()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_saves_the_checkpoint_and_the_next_run_continues_it(mnist1d_path, reference, signum):
    root, parent, ref = reference
    folder = root / f"signal{signum}"
    log = folder.with_suffix(".log")
    job = start_job(mnist1d_path, parent, folder, log)
    deadline = time.monotonic() + 60
    while "step 16/" not in (log.read_text() if log.exists() else "") and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(job.pid, signum)
    assert job.wait(timeout=10) != 0
    line = log.read_text().strip().splitlines()[-1]
    assert f"stopped by {signal.Signals(signum).name} at step" in line and "final.resume.pt" in line
    step = int(line.split(" at step ")[1].split(";")[0])
    assert step >= 16 and not (folder / "final.pt").exists()
    assert torch.load(folder / "final.resume.pt", weights_only=True)["runs"][0]["step"] == step
    before = log.read_text()
    log.unlink()  # Snakemake deletes a job's log before it runs the job again
    again = start_job(mnist1d_path, parent, folder, log)
    assert again.wait(timeout=120) == 0
    # the resumed job's log: the stopped job's lines, then its own
    assert log.read_text().startswith(before)
    assert f"resumed from {folder / 'final.resume.pt'} at step {step}" in log.read_text()[len(before):]
    for name in ("pred.parquet", "traj.parquet"):
        assert (folder / name).read_bytes() == (ref / name).read_bytes(), name


def test_a_finished_job_run_again_writes_the_same_outputs_from_its_last_checkpoint(mnist1d_path, reference):
    """What happens when Snakemake, stopped while a job ran, reruns the job after it finished."""
    root, parent, ref = reference
    folder = root / "again"
    log = root / "again.log"
    assert start_job(mnist1d_path, parent, folder, log).wait(timeout=120) == 0
    for name in ("final.pt", "pred.parquet", "traj.parquet"):
        (folder / name).unlink()  # Snakemake deletes a job's outputs before it runs the job again
    lines = len(log.read_text().splitlines())
    assert start_job(mnist1d_path, parent, folder, log).wait(timeout=120) == 0
    second = log.read_text().splitlines()[lines:]
    assert any("at step 248" in line and "resumed from" in line for line in second)
    # nothing trained again: the only progress line is the last report, made from the sums the
    # checkpoint kept (it completes the learning curve as the first run did)
    progress = [line for line in second if " step " in line and "examples/s" in line]
    assert len(progress) == 1 and " step 248/248 " in progress[0]
    for name in ("pred.parquet", "traj.parquet"):
        assert (folder / name).read_bytes() == (ref / name).read_bytes(), name
