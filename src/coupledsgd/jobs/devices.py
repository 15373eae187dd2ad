"""Which GPU a job trains on, on a machine with several: a pool of lock files, one per device slot.

A job started with `device: cuda` claims the first free slot among the visible GPUs (`slots` jobs per
GPU, `cuda.jobs_per_device`) by taking an exclusive `flock` on that slot's file, and holds it until its
process ends. The kernel drops the lock when the process dies however it dies, so a killed job never
leaves a device taken. Snakemake's `--resources gpu=G` bounds how many jobs run at once; the pool
decides where each runs. On a cluster node SLURM gives each job its own `CUDA_VISIBLE_DEVICES`, one
GPU, and the pool has one slot to offer.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from pathlib import Path


def lock_folder() -> Path:
    """One folder per user and machine (the locks are about this machine's GPUs)."""
    folder = Path(
        os.environ.get("COUPLEDSGD_DEVICE_LOCKS") or Path(tempfile.gettempdir()) / f"coupledsgd-gpus-{os.getuid()}"
    )
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def visible_key() -> str:
    """The GPUs this process sees, as the driver names them to it; part of every lock's name, so jobs
    that see different sets of devices (CUDA_VISIBLE_DEVICES) do not block one another."""
    return os.environ.get("CUDA_VISIBLE_DEVICES", "all").replace(",", "-") or "none"


def claim(count: int, slots: int = 1, folder: Path | None = None, wait: bool = False) -> tuple[int, object] | None:
    """The index of a free device among `count` and the open lock file that holds it (keep it open for
    as long as the device is used), or None when every slot is taken. With `wait`, block on one slot
    (chosen by process id) until it is free instead."""
    folder = folder or lock_folder()
    if wait:
        index = os.getpid() % count
        handle = open(folder / f"{visible_key()}.gpu{index}.slot0.lock", "a")
        fcntl.flock(handle, fcntl.LOCK_EX)
        return index, handle
    for slot in range(slots):
        for index in range(count):
            handle = open(folder / f"{visible_key()}.gpu{index}.slot{slot}.lock", "a")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            return index, handle
    return None
