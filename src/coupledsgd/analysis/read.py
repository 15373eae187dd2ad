"""The one Parquet reader of the analysis, with its checks: every file the analysis reads goes through
`open_parquet`, and an unreadable, missing or malformed file is an `ArtifactError` naming it.

- member files (docs/design.md, "Measurements"): `read_predictions`, `read_trajectory`, each one
  member's (condition, t, parent, child) as `core.parquet.KEY_COLUMNS`, with the steps per epoch and
  config hash of the config that wrote it; `read_member_file`, the same for a predictions file without
  its logits (what grouping the members needs, so that the analysis reads one group's logits at a time);
- barrier tables (docs/design.md, "Error barriers"): `read_barriers`, checked against `BARRIER_SCHEMA`,
  whose rows are keyed by `BARRIER_KEYS` (a pair of children of one parent);
- metric tables (docs/design.md, "Results layout"): `read_table`, a DataFrame that remembers its file.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..core.errors import ArtifactError
from ..core.parquet import (
    BLEW_UP_KEY,
    CONFIG_HASH_KEY,
    DIVERGED_KEY,
    KEY_COLUMNS,
    NONFINITE_KEY,
    ORIGIN_COLUMNS,
    REINIT_PERCENT_KEY,
    STEPS_PER_EPOCH_KEY,
)
from .metrics import log_softmax

if TYPE_CHECKING:
    import pandas as pd

PathLike = str | Path

SPE_KEY = STEPS_PER_EPOCH_KEY.encode()
HASH_KEY = CONFIG_HASH_KEY.encode()
REINIT_KEY = REINIT_PERCENT_KEY.encode()
PREDICTION_COLUMNS = (*KEY_COLUMNS, "example_id", "label")
TRAJECTORY_COLUMNS = (*KEY_COLUMNS, "step", "example_id", "correct")

# The barrier table: key columns first (one row per pair and point alpha); `barrier` repeats the pair's
# barrier on each row.
BARRIER_SCHEMA = pa.schema(
    [
        ("condition", pa.dictionary(pa.int8(), pa.string())),
        ("t", pa.int32()),
        ("parent", pa.int16()),
        ("child_a", pa.int16()),
        ("child_b", pa.int16()),
        ("alpha", pa.float64()),
        ("error", pa.float64()),
        ("barrier", pa.float64()),
    ]
)
BARRIER_KEYS = ("condition", "t", "parent", "child_a", "child_b")

# The weight-space table: the keys of pairs.parquet (one row per pair of children of one parent), the
# normalised distance between their final weights, the cosine between their displacements from the
# spawn state and each one's distance travelled (`engine.barriers.weight_distances`).
WEIGHTS_SCHEMA = pa.schema(
    [
        ("condition", pa.string()),
        ("t", pa.int32()),
        ("kind", pa.string()),
        ("parent_a", pa.int16()),
        ("child_a", pa.int16()),
        ("parent_b", pa.int16()),
        ("child_b", pa.int16()),
        ("distance", pa.float64()),
        ("cosine", pa.float64()),
        ("travelled_a", pa.float64()),
        ("travelled_b", pa.float64()),
    ]
)

# What each kind of file is called in the errors: (when missing, when unreadable).
_KINDS = {"member": ("file", "file"), "barriers": ("barrier table", "file"), "metrics": ("metric table", "table")}


@dataclass(frozen=True, eq=False)
class Predictions:
    """One member's test-set predictions, rows sorted by example_id."""

    path: str
    condition: str
    t: int
    parent: int
    child: int
    example_id: np.ndarray  # (N,) int64, ascending
    labels: np.ndarray  # (N,) int64
    log_probs: np.ndarray  # (N, C) float64
    steps_per_epoch: int
    config_hash: str
    reinit_percent: float = float("nan")  # the share of parameters re-drawn at t (re-initialisation only)

    @property
    def key(self) -> tuple[str, int, int, int]:
        return self.condition, self.t, self.parent, self.child


@dataclass(frozen=True, eq=False)
class MemberFile:
    """A predictions file's member and provenance, read without its logits (`read_member_file`)."""

    path: str
    condition: str
    t: int
    parent: int
    child: int
    steps_per_epoch: int
    config_hash: str
    reinit_percent: float = float("nan")
    blew_up: dict | None = None  # its finite training loss rose above its bound: step, loss, bound

    @property
    def key(self) -> tuple[str, int, int, int]:
        return self.condition, self.t, self.parent, self.child


@dataclass(frozen=True, eq=False)
class MemberTrajectory:
    """One member's test-set correctness at its evaluation points, as read back from its file."""

    path: str
    condition: str
    t: int
    parent: int
    child: int
    steps: np.ndarray  # (E,) int64, ascending global SGD steps
    correct: np.ndarray  # (E, N) bool, columns in example_id order
    steps_per_epoch: int
    config_hash: str

    @property
    def key(self) -> tuple[str, int, int, int]:
        return self.condition, self.t, self.parent, self.child


def open_parquet(path: PathLike, kind: str = "member", reader: Callable[[PathLike], Any] = pq.read_table) -> Any:
    """`reader(path)`, its failures as ArtifactErrors naming the file. kind: member, barriers, metrics."""
    missing, noun = _KINDS[kind]
    try:
        return reader(path)
    except FileNotFoundError:
        raise ArtifactError(f"{path}: {missing} not found") from None
    except Exception as e:  # pyarrow raises several types for truncated or foreign files
        raise ArtifactError(f"{path}: not a readable Parquet {noun} ({type(e).__name__}: {e})") from None


def _one_key(table: pa.Table, path: PathLike, constants: dict) -> dict:
    key: dict[str, str | int] = {}
    for c in KEY_COLUMNS:
        if c in constants:
            values = [constants[c]]
        else:
            values = table.column(c).unique().to_pylist()
        if len(values) != 1 or values[0] is None:
            raise ArtifactError(f"{path}: column {c} must hold one value, holds {values[:5]}")
        key[c] = values[0] if c == "condition" else int(values[0])
    return key


def _constant(f: pq.ParquetFile, name: str) -> Any:
    """The one value of column `name` when every row group's statistics show it (min = max, no nulls),
    else None: then the column is read and checked. Jobs' files carry statistics, so a trajectory's
    key columns (millions of rows) are never decoded."""
    index, values = f.schema_arrow.get_field_index(name), set()
    for g in range(f.metadata.num_row_groups):
        st = f.metadata.row_group(g).column(index).statistics
        if st is None or not st.has_min_max or not st.has_null_count or st.null_count or st.min != st.max:
            return None
        values.add(st.min.decode() if isinstance(st.min, bytes) else st.min)
    return values.pop() if len(values) == 1 else None


def _metadata(table: pa.Table, path: PathLike, key: bytes) -> bytes:
    raw = (table.schema.metadata or {}).get(key)
    if raw is None:
        raise ArtifactError(
            f"{path}: schema metadata lacks {key.decode()} (written by an older version? rerun the job that wrote it)"
        )
    return raw


def _steps_per_epoch(table: pa.Table, path: PathLike) -> int:
    raw = _metadata(table, path, SPE_KEY)
    try:
        spe = int(raw)
    except ValueError:
        spe = 0
    if spe < 1:
        raise ArtifactError(f"{path}: {SPE_KEY.decode()} = {raw!r} is not a positive integer")
    return spe


def _check_origin(table: pa.Table, path: PathLike, constants: dict) -> None:
    """The origin columns are optional (files of older versions lack them), but must not disagree."""
    for name in ORIGIN_COLUMNS:
        meta = (table.schema.metadata or {}).get(f"coupledsgd.{name}".encode())
        if name in table.column_names or name in constants:
            values = [constants[name]] if name in constants else table.column(name).unique().to_pylist()
            if values != [meta.decode() if meta is not None else None]:
                raise ArtifactError(
                    f"{path}: column {name} holds {values[:5]}, but the schema metadata "
                    f"says {meta.decode() if meta is not None else None!r}"
                )


def diverged_record(path: PathLike) -> dict | None:
    """The record of a member file written for a member whose training diverged (its key, step and
    learning rate; `core.parquet.write_diverged`), or None for a member file holding a result. Reads
    the footer only."""
    raw = (open_parquet(path, "member", pq.read_schema).metadata or {}).get(DIVERGED_KEY.encode())
    return json.loads(raw) if raw is not None else None


def read_member_table(
    path: PathLike, required: Sequence[str], columns: Sequence[str] | None = None
) -> tuple[pa.Table, dict, int, str]:
    """A member file (only `columns` of it, if given): the table, its key (condition, t, parent, child:
    one value each), its steps per epoch and the hash of the config that produced it. Key and origin
    columns that the statistics show to hold one value are not read (`_constant`)."""
    table, constants, rows = open_parquet(path, "member", reader=lambda p: _read_member(p, columns))
    diverged = (table.schema.metadata or {}).get(DIVERGED_KEY.encode())
    if diverged is not None:
        raise ArtifactError(
            f"{path}: holds no result, it records a member whose training diverged ({diverged.decode()})"
        )
    missing = [c for c in required if c not in table.column_names and c not in constants]
    if missing:
        raise ArtifactError(f"{path}: missing column(s) {', '.join(missing)}")
    if rows == 0:
        raise ArtifactError(f"{path}: no rows")
    key = _one_key(table, path, constants)
    spe = _steps_per_epoch(table, path)
    config_hash = _metadata(table, path, HASH_KEY).decode()
    _check_origin(table, path, constants)
    return table, key, spe, config_hash


def _read_member(path: PathLike, columns: Sequence[str] | None) -> tuple[pa.Table, dict, int]:
    """The file's `columns` (all if None) it has, less the constant key and origin columns (`_constant`),
    those constants, and the number of rows."""
    f = pq.ParquetFile(path)
    names = f.schema_arrow.names
    constants = {c: v for c in (*KEY_COLUMNS, *ORIGIN_COLUMNS) if c in names and (v := _constant(f, c)) is not None}
    wanted = [c for c in (columns or names) if c in names and c not in constants]
    return f.read(columns=wanted), constants, f.metadata.num_rows


def _reinit_percent(table: pa.Table) -> float:
    raw = (table.schema.metadata or {}).get(REINIT_KEY)
    return float(raw) if raw is not None else float("nan")


def read_member_file(path: PathLike) -> MemberFile:
    """A predictions file's member, steps per epoch, config hash and re-initialised share, checked as
    `read_predictions` checks them, without reading its logits."""
    table, key, spe, config_hash = read_member_table(path, KEY_COLUMNS, (*KEY_COLUMNS, *ORIGIN_COLUMNS))
    blew_up = (table.schema.metadata or {}).get(BLEW_UP_KEY.encode())
    return MemberFile(
        str(path),
        key["condition"],
        key["t"],
        key["parent"],
        key["child"],
        spe,
        config_hash,
        _reinit_percent(table),
        json.loads(blew_up) if blew_up is not None else None,
    )


def _int_column(table: pa.Table, name: str, path: PathLike, dtype: type | None = np.int64) -> np.ndarray:
    """The column as integers of `dtype` (None: as stored, no copy for a trajectory's millions of rows)."""
    col = table.column(name)
    if col.null_count or not pa.types.is_integer(col.type):
        raise ArtifactError(
            f"{path}: column {name} must be integers without nulls (is {col.type}, {col.null_count} nulls)"
        )
    values = col.to_numpy()
    return values if dtype is None else values.astype(dtype)


def _logits(table: pa.Table, path: PathLike, ids: np.ndarray) -> np.ndarray:
    """(N, C) float64 from the columns logit_0..logit_{C-1}: all there, floating point and finite."""
    found = {int(c[6:]) for c in table.column_names if c.startswith("logit_") and c[6:].isdigit()}
    n_classes = max(found, default=0) + 1
    missing = [f"logit_{j}" for j in range(n_classes) if j not in found]
    if missing:
        raise ArtifactError(f"{path}: missing column(s) {', '.join(missing)}")
    logits = np.empty((table.num_rows, n_classes), dtype=np.float64)
    for j in range(n_classes):
        col = table.column(f"logit_{j}")
        if not pa.types.is_floating(col.type):
            raise ArtifactError(f"{path}: column logit_{j} is {col.type}, not floating point")
        logits[:, j] = col.to_numpy()  # nulls come out as nan and fail the check below
    bad = ~np.isfinite(logits)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise ArtifactError(
            f"{path}: {int(bad.sum())} non-finite logit(s), the first {logits[i, j]} "
            f"at example_id {ids[i]}, column logit_{j}"
        )
    return logits


def read_predictions(path: PathLike) -> Predictions:
    """Read and check one predictions file: the columns, finite logits, labels in range, unique ids."""
    table, key, spe, config_hash = read_member_table(path, PREDICTION_COLUMNS)
    ids = _int_column(table, "example_id", path)
    labels = _int_column(table, "label", path)
    logits = _logits(table, path, ids)
    n_classes = logits.shape[1]
    if labels.min() < 0 or labels.max() >= n_classes:
        raise ArtifactError(
            f"{path}: labels must lie in 0..{n_classes - 1} (the logit columns), found {labels.min()}..{labels.max()}"
        )
    order = np.argsort(ids, kind="stable")
    ids = ids[order]
    if np.any(ids[1:] == ids[:-1]):
        raise ArtifactError(f"{path}: example_id {ids[1:][ids[1:] == ids[:-1]][0]} appears twice")
    return Predictions(
        str(path),
        key["condition"],
        key["t"],
        key["parent"],
        key["child"],
        ids,
        labels[order],
        log_softmax(logits[order]),
        spe,
        config_hash,
        _reinit_percent(table),
    )


def read_trajectory(path: PathLike) -> MemberTrajectory:
    """Read and check one trajectory file: every evaluation point holds the same examples once."""
    table, key, spe, config_hash = read_member_table(path, TRAJECTORY_COLUMNS)
    steps = _int_column(table, "step", path, None)
    ids = _int_column(table, "example_id", path, None)
    col = table.column("correct")
    if col.null_count or not pa.types.is_boolean(col.type):
        raise ArtifactError(
            f"{path}: column correct must be bool without nulls (is {col.type}, {col.null_count} nulls)"
        )
    correct = col.to_numpy()
    if not _in_point_order(steps, ids):  # jobs write points in order, examples in order within each
        order = np.lexsort((ids, steps))
        steps, ids, correct = steps[order], ids[order], correct[order]
    starts = np.flatnonzero(np.r_[True, steps[1:] != steps[:-1]])
    points, counts = steps[starts], np.diff(np.r_[starts, len(steps)])
    n = table.num_rows // len(points)
    if np.any(counts != n) or np.any(ids.reshape(len(points), n) != ids[:n]) or np.any(ids[1:n] == ids[: n - 1]):
        raise ArtifactError(
            f"{path}: evaluation points must each hold the same examples once "
            f"({len(points)} points, rows per point {sorted(set(counts.tolist()))})"
        )
    return MemberTrajectory(
        str(path),
        key["condition"],
        key["t"],
        key["parent"],
        key["child"],
        points.astype(np.int64),
        correct.reshape(len(points), n),
        spe,
        config_hash,
    )


def _in_point_order(steps: np.ndarray, ids: np.ndarray) -> bool:
    """Rows sorted by step, and by example id (strictly) within a step."""
    later = steps[1:] > steps[:-1]
    return bool(np.all(later | (steps[1:] == steps[:-1]) & (ids[1:] > ids[:-1])))


def read_barriers(path: PathLike) -> pa.Table:
    """A per-(condition, t, parent) barrier table, checked against `BARRIER_SCHEMA`."""
    table = open_parquet(path, "barriers")
    if not table.schema.equals(BARRIER_SCHEMA, check_metadata=False):
        raise ArtifactError(
            f"{path}: not a barrier table (columns {table.schema.names}, "
            f"expected {BARRIER_SCHEMA.names} with their types)"
        )
    return table


def read_weights(path: PathLike) -> pa.Table:
    """A per-(condition, t, parent) weight-space table, checked against `WEIGHTS_SCHEMA`."""
    table = open_parquet(path, "barriers")
    if table.schema.names != WEIGHTS_SCHEMA.names:
        raise ArtifactError(
            f"{path}: not a weight-space table (columns {table.schema.names}, expected {WEIGHTS_SCHEMA.names})"
        )
    return table.cast(WEIGHTS_SCHEMA)


def read_table(path: PathLike) -> pd.DataFrame:
    """A metric table as a DataFrame that remembers its file (for error messages) and the members the
    metrics left out because their training loss, or their parent's, became non-finite (attrs
    "left_out": their records; "nonfinite": how many)."""
    import pandas as pd

    df = open_parquet(path, "metrics", pd.read_parquet)
    df.attrs["source"] = str(path)
    left_out = (pq.read_schema(path).metadata or {}).get(NONFINITE_KEY.encode())
    df.attrs["left_out"] = json.loads(left_out) if left_out else []
    df.attrs["nonfinite"] = len(df.attrs["left_out"])
    return df


def left_out_names(records: list[dict], limit: int = 8) -> str:
    """Which members were left out and why, shortly: each member that diverged itself with its step;
    the children of a parent that diverged as one item per (condition, t, parent)."""
    items: dict = {}
    for r in records:
        if r.get("parent_diverged"):
            key = (r["condition"], r["t"], r["parent"])
            items.setdefault(key, []).append(r["child"])
        else:
            items[(r["condition"], r["t"], r["parent"], r["child"])] = r["step"]
    names = []
    for key, value in items.items():
        if len(key) == 3:
            names.append(f"{key[0]} t={key[1]} p{key[2]} c{','.join(map(str, sorted(value)))} (their parent diverged)")
        else:
            names.append(f"{key[0]} t={key[1]} p{key[2]}c{key[3]} (step {value})")
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")
