"""The per-member Parquet files (test-set logits, correctness trajectories) and the provenance every
file carries, written atomically (`files.atomic_path`): a file appears under its name only complete.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .. import __version__
from .files import atomic_path

KEY_COLUMNS = ("condition", "t", "parent", "child")
# The experiment and config hash of the job that wrote a predictions or trajectories file, as columns
# after the keys (each repeats its `coupledsgd.<name>` schema metadata), so that one read of a whole
# results folder can keep the current config's files and drop those other configs left behind.
ORIGIN_COLUMNS = ("experiment", "config_hash")
# Schema metadata every member file carries, read back by coupledsgd.analysis.read.
SEEDS_KEY = "coupledsgd.seeds"
STEPS_PER_EPOCH_KEY = "coupledsgd.steps_per_epoch"
CONFIG_HASH_KEY = "coupledsgd.config_hash"
REINIT_PERCENT_KEY = "coupledsgd.reinit_percent"
# A member whose training loss became non-finite: {"step": ..., "lr": ...} (JSON). Its predictions and
# trajectories files hold this key and no rows, so they can never be read as a result.
DIVERGED_KEY = "coupledsgd.diverged"
# A member whose finite training loss rose above its bound (`engine.training.loss_bound`): {"step",
# "loss", "bound"} (JSON), on a predictions file that holds its result; the tables flag it `diverged`.
BLEW_UP_KEY = "coupledsgd.blew_up"
# A trajectory file's learning curve (the training log's numbers at each progress report), as JSON
# columns: step, lr, train_loss, train_accuracy (`analysis.curves` makes the curves table of them).
CURVE_KEY = "coupledsgd.curve"
# The members left out of the metric tables because their training loss became non-finite (each one's
# key, step and learning rate, JSON), in the schema metadata of every metric table.
NONFINITE_KEY = "coupledsgd.nonfinite"


@functools.cache
def git_commit() -> str:
    """The commit of the package's checkout (with -dirty for local changes), or "unknown"."""
    try:
        out = subprocess.run(
            ["git", "-C", str(Path(__file__).parent), "describe", "--always", "--dirty", "--abbrev=12"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def provenance(params: dict, device: str) -> dict[str, str]:
    """What produced a file: the job's settings (with the config hash and seeds), the software and
    the device it ran on."""
    meta = {
        "coupledsgd.params": json.dumps(params, sort_keys=True, default=str),
        "coupledsgd.version": __version__,
        "coupledsgd.git_commit": git_commit(),
        "device": str(device),
    }
    torch = sys.modules.get("torch")  # the engine's jobs run with it; the core never imports it
    if torch is not None:
        meta["torch.version"] = str(torch.__version__)
    for name in ORIGIN_COLUMNS:
        if name in params:
            meta[f"coupledsgd.{name}"] = str(params[name])
    return meta


def repeated(value: str, n: int) -> pa.DictionaryArray:
    """A dictionary-encoded column of `value` n times (the key columns of every table)."""
    # Built from numpy: pa.array on a Python list of dictionary type would import pandas (0.4 s).
    return pa.DictionaryArray.from_arrays(np.zeros(n, dtype=np.int8), pa.array([value]))


def _keys(key: dict, n: int, metadata: dict) -> dict[str, pa.Array]:
    """The key columns, then the origin columns whose values the metadata holds."""
    ints = {"t": np.int32, "parent": np.int16, "child": np.int16}
    origin = {
        name: repeated(metadata[f"coupledsgd.{name}"], n) for name in ORIGIN_COLUMNS if f"coupledsgd.{name}" in metadata
    }
    return {
        "condition": repeated(key["condition"], n),
        **{k: pa.array(np.full(n, key[k], dtype=t)) for k, t in ints.items()},
        **origin,
    }


def write_parquet(table: pa.Table, path: str | Path, metadata: dict, dictionary: list[str]) -> None:
    """`table` with `metadata` as its schema metadata, written atomically (zstd), dictionary-encoding
    only the `dictionary` columns."""
    with atomic_path(path) as tmp:
        pq.write_table(table.replace_schema_metadata(metadata), tmp, compression="zstd", use_dictionary=dictionary)


def write_table(columns: dict[str, pa.Array], path: str | Path, metadata: dict[str, str]) -> None:
    # Dictionary encoding only pays for the repeated key and origin columns; it bloats and slows float
    # logits. A column of one repeated string costs a few dozen bytes per row group this way.
    write_parquet(pa.table(columns), path, metadata, [c for c in (*KEY_COLUMNS, *ORIGIN_COLUMNS) if c in columns])


def write_predictions(path: str | Path, key: dict, labels: np.ndarray, logits: np.ndarray, metadata: dict) -> None:
    """Test-set logits of one member: key columns, experiment and config_hash (where the metadata
    holds them), example_id, label, logit_0..logit_{C-1}."""
    n = len(labels)
    cols = {
        **_keys(key, n, metadata),
        "example_id": pa.array(np.arange(n, dtype=np.int32)),
        "label": pa.array(labels.astype(np.int16)),
    }
    logits = np.asarray(logits, dtype=np.float32)
    cols.update({f"logit_{j}": pa.array(logits[:, j]) for j in range(logits.shape[1])})
    write_table(cols, path, metadata)


def write_trajectory(path: str | Path, key: dict, steps: list[int], correct: np.ndarray, metadata: dict) -> None:
    """Per-example test correctness at each evaluation point: key columns, experiment and config_hash
    (where the metadata holds them), step, example_id, correct."""
    e, n = correct.shape
    cols = {
        **_keys(key, e * n, metadata),
        "step": pa.array(np.repeat(np.asarray(steps, dtype=np.int32), n)),
        "example_id": pa.array(np.tile(np.arange(n, dtype=np.int32), e)),
        "correct": pa.array(correct.reshape(-1)),
    }
    write_table(cols, path, metadata)


def write_diverged(path: str | Path, key: dict, record: dict, metadata: dict) -> None:
    """The predictions or trajectories file of a member whose training loss became non-finite, or whose
    parent's did (`parent_diverged` in the record): its key and origin columns with no rows, and its key
    with `record` (the step and learning rate) under DIVERGED_KEY."""
    record = {**key, **record}
    write_table(_keys(key, 0, metadata), path, {**metadata, DIVERGED_KEY: json.dumps(record, sort_keys=True)})
