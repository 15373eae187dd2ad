"""Which finished files of an experiment are missing or damaged, found at planning time.

Snakemake reruns a job when a file that another job (or the target) asks for is missing. The rules
that read member files ask for one file of each training job (`core.grid.job_head`): a job's other
files, deleted or never made because the job's member set grew (a parent or a child added), would go
unseen. `unfinished` names one missing file of each such job, for the `all` rule to ask for, so the
plain command reruns exactly those jobs; `damaged` finds files cut short or overwritten, which
Snakemake cannot tell from finished ones, by their last bytes (no torch, no pyarrow: a few bytes a file).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from .grid import Member, job_head, parent_states, training_jobs
from .layout import Layout

MEMBER_FILES = ("predictions", "trajectory", "final")
# A Parquet file starts and ends with its magic; torch.save writes a zip archive without a comment,
# which ends with the 22-byte end-of-central-directory record.
_PARQUET, _ZIP_END = b"PAR1", b"PK\x05\x06"


def whole(path: str | Path) -> bool:
    """Whether the Parquet (.parquet) or torch (.pt) file at `path` ends as a finished one does."""
    path = str(path)
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            if path.endswith(".parquet"):
                if size < 12:
                    return False
                f.seek(0)
                head = f.read(4)
                f.seek(size - 4)
                return head == _PARQUET and f.read(4) == _PARQUET
            if size < 22:
                return False
            f.seek(size - 22)
            return f.read(4) == _ZIP_END
    except OSError:
        return False


def member_files(layout: Layout, members: Iterable[Member]) -> list[str]:
    return [layout.member_file(kind, m.condition, m.t, m.parent, m.child) for m in members for kind in MEMBER_FILES]


def unfinished(config: dict, layout: Layout) -> list[str]:
    """One missing file of each training job whose first file is there (the job ran for fewer
    members, or a file was deleted since), and every missing parent state: the files that make the
    plain command rerun those jobs. A job whose first file is missing reruns without help."""
    found = []
    for job in training_jobs(config):
        head = job_head(config, job[0])
        if not os.path.exists(layout.predictions(head.condition, head.t, head.parent, head.child)):
            continue
        missing = next((f for f in member_files(layout, job) if not os.path.exists(f)), None)
        if missing:
            found.append(missing)
    return found + [
        layout.parent_state(p, t) for p, t in parent_states(config) if not os.path.exists(layout.parent_state(p, t))
    ]


def damaged(config: dict, layout: Layout) -> list[str]:
    """The member files and parent states that are there but cut short or overwritten."""
    from .grid import members

    files = member_files(layout, members(config)) + [layout.parent_state(p, t) for p, t in parent_states(config)]
    return [f for f in files if os.path.exists(f) and not whole(f)]
