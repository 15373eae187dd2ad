"""Writing files atomically (no torch here: the figure jobs use it too).

Every file appears under its final name only when complete (written to a temporary file in the same
folder, then renamed), so an interrupted job never leaves a truncated file that looks finished, and
it gets the mode an ordinary open() would give it under the user's umask.
"""

from __future__ import annotations

import errno
import functools
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import StorageError
from .layout import RESUME_SUFFIX, resumed_output


@functools.cache
def _file_mode() -> int:
    """The mode open() gives a new file under this process's umask (mkstemp's own is 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def refused(error: OSError, path: str | Path, doing: str = "cannot write") -> StorageError:
    """`error`, raised on `path`, as one line naming the path (writers such as pyarrow's do not) and,
    for a file where a folder should be, that file."""
    path = Path(path)
    reason = os.strerror(error.errno) if error.errno else str(error)
    if error.errno == errno.ENOTDIR:
        blocking = next((p for p in reversed([path, *path.parents]) if p.exists() and not p.is_dir()), None)
        reason = f"{blocking} is a file, not a folder" if blocking else reason
    return StorageError(f"{doing} {path}: {reason}")


def unwritable(folders: Iterable[str | Path]) -> str | None:
    """Why a file could not be written under one of `folders`, in one line, or None: a file where a
    folder (or one above it) should be, or a nearest existing folder on a read-only file system or
    without write permission. Snakemake creates its jobs' folders itself, before any job runs, and
    ends in a traceback when it cannot; the workflow asks this first."""
    for folder in map(Path, folders):
        chain = [folder, *folder.parents]
        blocking = next((p for p in reversed(chain) if p.exists() and not p.is_dir()), None)
        if blocking is not None:
            return f"cannot write {folder}: {blocking} is a file, not a folder"
        existing = next(p for p in chain if p.exists())
        if not os.access(existing, os.W_OK | os.X_OK):
            why = (
                "on a read-only file system"
                if os.statvfs(existing).f_flag & os.ST_RDONLY
                else "not writable (permission denied)"
            )
            return f"cannot write {folder}: {existing} is {why}"
    return None


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds. The file
    system's refusals (a full disk, a read-only one, ...) end as a `StorageError` naming `path`."""
    path, tmp = Path(path), None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        yield Path(tmp)
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    except StorageError:
        raise
    except OSError as e:
        raise refused(e, path) from e
    finally:
        if tmp is not None and os.path.exists(tmp):
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
