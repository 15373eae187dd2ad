"""The errors a user can cause: each names the config key or the file at fault, in one line."""


class UserError(Exception):
    """Bad input: the message alone tells the user what to fix, no traceback needed."""


class ConfigError(UserError, ValueError):
    """A config value is missing, of the wrong type, or impossible; the message names the key."""


class DataError(UserError, RuntimeError):
    """A dataset is missing or malformed; the message names the file or folder."""


class ArtifactError(UserError, RuntimeError):
    """A checkpoint or Parquet file is truncated, foreign or malformed; the message names the file."""


class StorageError(UserError, OSError):
    """The file system refused a write (no space left, permission denied, a file where a folder should
    be, read-only); the message names the path and the reason."""


class TrainingDiverged(UserError, RuntimeError):
    """A run's training loss became non-finite; the message names the run, the step and the rate."""


class Interrupted(UserError, RuntimeError):
    """A job was asked to stop (SIGTERM, SIGINT) and saved its in-job checkpoint first."""


def described(e: BaseException) -> str:
    """An exception as one line, "Type: message", for a UserError that reports a foreign failure."""
    return f"{type(e).__name__}: {' '.join(str(e).split())}"
