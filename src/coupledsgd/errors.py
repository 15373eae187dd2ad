"""The errors a user can cause: each names the config key or the file at fault."""


class ConfigError(ValueError):
    """A config value is missing, of the wrong type, or impossible; the message names the key."""


class DataError(RuntimeError):
    """A dataset is missing or malformed; the message names the file or folder."""


class ArtifactError(RuntimeError):
    """A checkpoint or Parquet file is truncated, foreign or malformed; the message names the file."""
