"""The GPU pool (coupledsgd.jobs.devices) with a faked device list: real processes claim slots, and a killed
holder's slot is free again at once."""

import os
import signal
import subprocess
import sys

from coupledsgd.jobs import devices

HOLD = ("import sys, time; from pathlib import Path; from coupledsgd.jobs.devices import claim; "
        "got = claim(int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])); "
        "print(got[0] if got else 'none', flush=True); time.sleep(60)")


def holder(tmp_path, count, slots=1):
    job = subprocess.Popen([sys.executable, "-c", HOLD, str(count), str(slots), str(tmp_path)],
                           stdout=subprocess.PIPE, text=True)
    return job, job.stdout.readline().strip()


def test_jobs_get_different_gpus_and_a_killed_job_frees_its_own(tmp_path):
    jobs = [holder(tmp_path, 3) for _ in range(3)]
    try:
        assert sorted(index for _, index in jobs) == ["0", "1", "2"]
        extra, got = holder(tmp_path, 3)
        extra.kill()
        assert got == "none"  # every GPU taken
        victim, index = jobs[1]
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
        again, got = holder(tmp_path, 3)
        again.kill()
        assert got == index
    finally:
        for job, _ in jobs:
            job.kill()


def test_two_jobs_per_gpu_fill_every_gpu_before_doubling_up(tmp_path):
    jobs = [holder(tmp_path, 2, slots=2) for _ in range(4)]
    try:
        assert [index for _, index in jobs] == ["0", "1", "0", "1"]
    finally:
        for job, _ in jobs:
            job.kill()


def test_processes_that_see_other_gpus_do_not_share_locks(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    first = devices.claim(1, 1, tmp_path)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4")
    second = devices.claim(1, 1, tmp_path)
    assert first[0] == second[0] == 0
    first[1].close(), second[1].close()
