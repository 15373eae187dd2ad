"""Writing files atomically (no torch here: the figure jobs use it too).

Every file appears under its final name only when complete (written to a temporary file in the same
folder, then renamed), so an interrupted job never leaves a truncated file that looks finished, and
it gets the mode an ordinary open() would give it under the user's umask.
"""

from __future__ import annotations

import functools
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .layout import RESUME_SUFFIX, resumed_output


@functools.cache
def _file_mode() -> int:
    """The mode open() gives a new file under this process's umask (mkstemp's own is 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def remove_finished_checkpoints(folder: str | Path) -> int:
    """Delete the in-job checkpoints (`X.resume.pt`) under `folder` whose job has finished: its output
    `X.pt`, written after the job's last save, is there and no older. Returns how many."""
    removed = 0
    for resume in Path(folder).rglob(f"*{RESUME_SUFFIX}"):
        output = Path(resumed_output(resume))
        try:
            finished = output.stat().st_mtime_ns >= resume.stat().st_mtime_ns
        except FileNotFoundError:
            continue
        if finished:
            resume.unlink(missing_ok=True)
            removed += 1
    return removed
