"""What every job of the workflow shares: its log stream, its threads and device, and the one-line
exit on a user error (`run_stage`). The workflow scripts call stages through `run_stage`.
"""

from __future__ import annotations

import errno
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.errors import ConfigError, UserError
from ..core.files import refused
from . import devices

if TYPE_CHECKING:
    import torch


# The file system's refusals a user fixes (space, permissions, the folder tree), not the code.
_REFUSALS = {
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EACCES,
    errno.EPERM,
    errno.EROFS,
    errno.ENOTDIR,
    errno.EISDIR,
    errno.EEXIST,
}


def logger(path: str | Path | None):
    """A line logger that writes (and flushes) to the job's log file, so a long run is seen moving."""
    stream = open(path, "a", buffering=1) if path else sys.stderr

    def log(line: str) -> None:
        try:
            stream.write(f"{time.strftime('%H:%M:%S')} {line}\n")
        except OSError as e:
            raise refused(e, path or "<stderr>") from e

    return log


# The cuBLAS workspace settings under which torch's deterministic mode allows cuBLAS (torch's
# Context::checkCuBLASConfigDeterministic accepts exactly these two); the first is set where none is.
CUBLAS_KEY = "CUBLAS_WORKSPACE_CONFIG"
DETERMINISTIC_CUBLAS = (":4096:8", ":16:8")


def cublas_workspace(environ, strict: bool) -> tuple[str, str | None]:
    """The cuBLAS workspace setting a CUDA job runs with, and a line for its log where it keeps a value
    the environment set that is not deterministic. Unset (or empty): `:4096:8`. A deterministic value
    already set (`:16:8` uses less memory): kept. Any other value: a strict job (a parent state, whose
    bits must not depend on the run) stops with a ConfigError before it trains; a warn-only job keeps
    it, as the user asked, and says that its cuBLAS products may differ from run to run."""
    value = environ.get(CUBLAS_KEY, "")
    if not value:
        return DETERMINISTIC_CUBLAS[0], None
    if value in DETERMINISTIC_CUBLAS:
        return value, None
    accepted = " or ".join(repr(v) for v in DETERMINISTIC_CUBLAS)
    if strict:
        raise ConfigError(
            f"{CUBLAS_KEY}={value!r} in the environment: parent-state jobs run strictly "
            f"deterministic kernels, which need {accepted}; unset it (the job then sets "
            f"{DETERMINISTIC_CUBLAS[0]!r}) or set one of these"
        )
    return value, (
        f"WARNING: {CUBLAS_KEY}={value!r} from the environment is kept; cuBLAS is deterministic "
        f"only with {accepted}, so this job's results may differ from run to run"
    )


# The lock on this job's GPU slot (`devices`): held, open, for as long as the process lives.
_DEVICE_LOCK: list = []


def setup(threads: int, device: str, jobs_per_device: int, log=lambda line: None, strict: bool = False) -> torch.device:
    """The job's threads and device. On CUDA, deterministic kernels wherever torch has them, and with
    `strict` (the parent jobs) only those: an operation without one is an error, not a warning. Each
    parent state (p, t) is its own job from step 0, so parent p's states at two spawn steps lie on one
    trajectory only if every run of it computes the same bits. The cuBLAS workspace is set here
    (`cublas_workspace`): a strict job stops before it trains on a conflicting value."""
    # Imported here, not above: the analysis jobs log and exit through this module without torch
    # (its import costs them 3-4 s and 600 MB each).
    import torch

    torch.set_num_threads(threads)
    if device != "cuda":
        return torch.device(device)
    if not torch.cuda.is_available():
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        raise ConfigError(
            "device: cuda, but this job sees no CUDA device"
            + (f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else "")
            + "; run it on a GPU node or set device: cpu"
        )
    # CPU kernels are deterministic already; on the CPU this call would only add 1.5 s of
    # imports (torch._inductor) to every job. cuBLAS is deterministic only with a fixed workspace,
    # set before its first handle is made (here: no CUDA work has run yet).
    os.environ[CUBLAS_KEY], warning = cublas_workspace(os.environ, strict)
    if warning:
        log(warning)
    torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True, warn_only=not strict)
    count = torch.cuda.device_count()
    if count == 1:
        return torch.device("cuda", 0)
    claimed = devices.claim(count, jobs_per_device)
    if claimed is None:
        log(f"every slot of the {count} GPUs is taken ({jobs_per_device} job(s) each): waiting for one")
        claimed = devices.claim(count, jobs_per_device, wait=True)
    index, lock = claimed
    _DEVICE_LOCK.append(lock)
    torch.cuda.set_device(index)
    log(f"training on cuda:{index} of {count} visible GPUs")
    return torch.device("cuda", index)


def run_stage(stage, *args, exit_when_done: bool = True):
    """Call `stage(*args)` (its last argument is its log file); a UserError, or the file system's
    refusal of a write (`_REFUSALS`), ends the job with its one-line message on stderr and in the
    log (where the log can still be written), and exit status 1.

    On success the process ends at once: every output is already complete on disk (written
    atomically and closed), and tearing torch down at interpreter exit costs 0.7-1.4 s per job.
    """
    try:
        stage(*args)
    except (UserError, OSError) as e:
        if not isinstance(e, UserError):
            if e.errno not in _REFUSALS:
                raise
            e = refused(e, e.filename, "cannot access") if e.filename is not None else e
        line = f"{type(e).__name__}: {e}"
        if args and args[-1]:
            try:
                with open(args[-1], "a") as log:
                    log.write(line + "\n")
            except OSError:
                pass  # the log's own disk refused it: the console line remains
        sys.exit(line)
    if exit_when_done:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
