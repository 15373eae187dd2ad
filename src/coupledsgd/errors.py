"""The errors a user can cause: each names the config key or the file at fault, in one line."""

import os
import sys


class UserError(Exception):
    """Bad input: the message alone tells the user what to fix, no traceback needed."""


class ConfigError(UserError, ValueError):
    """A config value is missing, of the wrong type, or impossible; the message names the key."""


class DataError(UserError, RuntimeError):
    """A dataset is missing or malformed; the message names the file or folder."""


class ArtifactError(UserError, RuntimeError):
    """A checkpoint or Parquet file is truncated, foreign or malformed; the message names the file."""


class TrainingDiverged(UserError, RuntimeError):
    """A run's training loss became non-finite; the message names the run, the step and the rate."""


class Interrupted(UserError, RuntimeError):
    """A job was asked to stop (SIGTERM, SIGINT) and saved its in-job checkpoint first."""


def run_stage(stage, *args, exit_when_done: bool = True):
    """Call `stage(*args)` (its last argument is its log file); a UserError ends the job with its
    one-line message on stderr and in the log, and exit status 1.

    On success the process ends at once: every output is already complete on disk (written
    atomically and closed), and tearing torch down at interpreter exit costs 0.7-1.4 s per job.
    """
    try:
        stage(*args)
    except UserError as e:
        line = f"{type(e).__name__}: {e}"
        if args and args[-1]:
            with open(args[-1], "a") as log:
                log.write(line + "\n")
        sys.exit(line)
    if exit_when_done:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
