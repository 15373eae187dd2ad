"""In-job checkpoints: a killed training job restarts where it stopped, bit-for-bit.

A job saves its runs (and the test-set trajectories recorded so far) beside its outputs every
`every_steps` steps or `every_seconds` seconds of work, on SIGTERM or SIGINT, and at its last step,
atomically. A restarted job with the same settings continues from that file; one left by a job with
other settings is ignored and replaced. The file outlives the job: Snakemake marks a finished job's
outputs incomplete when it is stopped while the job runs, and the rerun then only evaluates and
writes. The workflow deletes those of finished jobs once a run of it succeeds
(`coupledsgd.core.files.remove_finished_checkpoints`).
Minibatches and augmentation are pure functions of (seed, step), so the continued run is the
uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import signal
import time
from pathlib import Path

import torch

from ..core.errors import ArtifactError, Interrupted
from .checkpoints import load_torch, save_torch
from .training import Hparams, Run, Trajectory


def settings_hash(params: dict) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Resume:
    """The in-job checkpoint of a job's runs (one or several trained together) and their trajectories.

    `catch_signals()` turns SIGTERM (SLURM at a time limit or on preemption) and SIGINT into a save at
    the next step boundary followed by `Interrupted`, so a stopped job loses no finished step.
    """

    FORMAT = 2  # runs and trajectories as lists; a file of another format is ignored

    def __init__(
        self,
        path: str | Path,
        params: dict,
        every_steps: int | None = None,
        every_seconds: float | None = None,
        log=lambda line: None,
        log_path: str | Path | None = None,
    ):
        self.path, self.key = Path(path), settings_hash({**params, "resume_format": self.FORMAT})
        # The job's log travels in the checkpoint: Snakemake deletes a job's log before it runs the
        # job again, and the resumed job puts the lines from before the stop back in front of its own.
        self.log_path = Path(log_path) if log_path else None
        self.every_steps, self.every_seconds, self.log = every_steps, every_seconds, log
        self._last_step, self._last_time = None, time.perf_counter()
        self.signal: int | None = None

    def catch_signals(self) -> None:
        def note(signum, frame):
            self.signal = signum

        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, note)

    def load(self, hparams: Hparams, device) -> tuple[list[Run], list[Trajectory]] | None:
        """The saved runs and trajectories, or None if there are none for these settings."""
        if not self.path.exists():
            return None
        try:
            state = load_torch(self.path, what="in-job checkpoint")
        except ArtifactError as e:  # a resume file is a cache: never let a bad one stop the job
            self.log(f"ignoring {e}")
            return None
        if state.get("settings") != self.key:
            self.log(f"ignoring {self.path}: written by a job with other settings")
            return None
        runs = [Run.from_state(r, hparams, device) for r in state["runs"]]
        trajectories = [
            Trajectory(
                list(t["steps"]),
                [c.numpy() for c in t["correct"]],
                curve=list(t.get("curve", [])),
                pending=t.get("pending"),
            )
            for t in state["trajectories"]
        ]
        self._last_step = runs[0].step
        self._restore_log(state.get("log", ""))
        self.log(f"resumed from {self.path} at step {runs[0].step}")
        return runs, trajectories

    def due(self, step: int) -> bool:
        """Whether a save is due before `step` (asked by `training.train` before each step)."""
        if self.signal is not None:
            return True
        if self._last_step is None:
            self._last_step = step
        due_steps = self.every_steps and step - self._last_step >= self.every_steps
        due_time = self.every_seconds and time.perf_counter() - self._last_time >= self.every_seconds
        return bool(due_steps or due_time)

    def _log_text(self) -> str:
        try:
            return self.log_path.read_text() if self.log_path else ""
        except OSError:
            return ""

    def _restore_log(self, before: str) -> None:
        """The log of the stopped job, then this job's lines so far. The logger appends (O_APPEND), so
        the lines it writes next land after both."""
        if self.log_path and before and not self._log_text().startswith(before):
            self.log_path.write_text(before + self._log_text())

    def save(self, runs: list[Run], trajectories: list[Trajectory]) -> None:
        stop = (
            (
                f"stopped by {signal.Signals(self.signal).name} at step {runs[0].step}; "
                f"its in-job checkpoint {self.path} continues it on the next run"
            )
            if self.signal is not None
            else None
        )
        log = self._log_text() + (f"{Interrupted.__name__}: {stop}\n" if stop else "")
        save_torch(
            {
                "settings": self.key,
                "runs": [r.state_dict() for r in runs],
                "trajectories": [
                    {
                        "steps": list(t.steps),
                        "correct": [torch.from_numpy(c) for c in t.correct],
                        "curve": list(t.curve),
                        "pending": t.pending,
                    }
                    for t in trajectories
                ],
                "log": log,
            },
            self.path,
        )
        self._last_step, self._last_time = runs[0].step, time.perf_counter()
        if stop:
            raise Interrupted(stop)

    def saved_at(self, step: int) -> bool:
        """Whether the file holds the runs at `step` (saved, or loaded, there)."""
        return self._last_step == step and self.path.exists()
