"""Learning curves: each member's training loss and accuracy (the running means its training log
reports), learning rate and test accuracy at every evaluation point, as one table (curves.parquet).

The training values come from each trajectory file's footer (`core.parquet.CURVE_KEY`, read without its
rows); the test accuracy from the forgetting table (the share of test examples right at each
evaluation point). A step that has only one of them (the member's first evaluation, before any
training step) holds nan for the other.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..core.errors import ArtifactError
from ..core.parquet import CURVE_KEY, DIVERGED_KEY
from .read import PathLike, open_parquet, read_member_file

KEYS = ["condition", "t", "parent", "child"]
CURVES_SCHEMA = pa.schema(
    [
        ("condition", pa.string()),
        ("t", pa.int32()),
        ("parent", pa.int16()),
        ("child", pa.int16()),
        ("step", pa.int32()),
        ("epoch", pa.float64()),
        ("lr", pa.float64()),
        ("train_loss", pa.float64()),
        ("train_accuracy", pa.float64()),
        ("test_accuracy", pa.float64()),
    ]
)
TRAINING = ["step", "lr", "train_loss", "train_accuracy"]


def training_curve(path: PathLike) -> pd.DataFrame | None:
    """One member's training values (key columns, step, lr, train_loss, train_accuracy) from its
    trajectory file's footer; None for a member whose training diverged."""
    meta = open_parquet(path, "member", pq.read_schema).metadata or {}
    if DIVERGED_KEY.encode() in meta:
        return None
    raw = meta.get(CURVE_KEY.encode())
    if raw is None:
        raise ArtifactError(
            f"{path}: schema metadata lacks {CURVE_KEY} (written by an older version? rerun the job that wrote it)"
        )
    curve = json.loads(raw)
    member = read_member_file(path)
    df = pd.DataFrame({k: curve[k] for k in TRAINING})
    return df.assign(
        condition=member.condition,
        t=member.t,
        parent=member.parent,
        child=member.child,
        steps_per_epoch=member.steps_per_epoch,
    )


def curves_table(trajectory_paths: Iterable[PathLike], forgetting: pd.DataFrame) -> pd.DataFrame:
    """The curves table: the training curves of the members' trajectory files joined, by member and
    step, with their test accuracy (`forgetting`'s accuracy column)."""
    parts = [c for c in map(training_curve, trajectory_paths) if c is not None]
    train = (
        pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=[*KEYS, *TRAINING, "steps_per_epoch"])
    )
    test = forgetting[[*KEYS, "step", "accuracy"]].rename(columns={"accuracy": "test_accuracy"})
    test = test.assign(condition=test["condition"].astype(str))
    df = train.merge(test, on=[*KEYS, "step"], how="outer").sort_values([*KEYS, "step"], ignore_index=True)
    spe = df.groupby(KEYS, observed=True)["steps_per_epoch"].transform("first")
    spe = spe.fillna(train["steps_per_epoch"].iloc[0] if len(train) else float("nan"))
    first = df.groupby(KEYS, observed=True)["step"].transform("min")
    df["epoch"] = (df["step"] - first) / spe
    df = df[CURVES_SCHEMA.names]
    return df.astype({"t": "int32", "parent": "int16", "child": "int16", "step": "int32"})
