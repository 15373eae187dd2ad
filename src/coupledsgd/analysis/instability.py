"""Instability analysis (Frankle et al. 2020; docs/design.md, "Error barriers"): the error barrier between
the children of one parent against the spawn step t, and each parent's onset step, the first spawn
step from which that barrier stays below a threshold (linear mode connectivity). Pure pandas.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa

from ..core.grid import INSTABILITY

ONSET_SCHEMA = pa.schema(
    [
        ("condition", pa.string()),
        ("parent", pa.int16()),
        ("onset", pa.float64()),
        ("threshold", pa.float64()),
        ("n_steps", pa.int32()),
    ]
)


def barrier_per_parent(barriers: pd.DataFrame) -> pd.DataFrame:
    """condition, t, parent, barrier: each pair's barrier (repeated on its path's rows) averaged over
    the parent's pairs."""
    per_pair = barriers.groupby(["condition", "t", "parent", "child_a", "child_b"], observed=True, as_index=False)[
        "barrier"
    ].first()
    return per_pair.groupby(["condition", "t", "parent"], observed=True, as_index=False)["barrier"].mean()


def onset_step(ts: npt.ArrayLike, values: npt.ArrayLike, threshold: float) -> float:
    """The first t from which every value (ordered by t) is below `threshold`; nan if the last is not."""
    order = np.argsort(np.asarray(ts))
    ts, below = np.asarray(ts, dtype=float)[order], np.asarray(values, dtype=float)[order] < threshold
    if len(ts) == 0 or not below[-1]:
        return float("nan")
    above = np.flatnonzero(~below)
    return float(ts[above[-1] + 1] if len(above) else ts[0])


def onset_table(barriers: pd.DataFrame, threshold: float, conditions: Sequence[str] = INSTABILITY) -> pd.DataFrame:
    """One row per (condition, parent) of `conditions`: its onset step (nan: the barrier is not below
    `threshold` at the last spawn step measured), the threshold and how many spawn steps it rests on."""
    per_parent = barrier_per_parent(barriers)
    rows = []
    for (condition, parent), g in per_parent[per_parent["condition"].isin(conditions)].groupby(
        ["condition", "parent"], observed=True
    ):
        rows.append(
            {
                "condition": str(condition),
                "parent": int(parent),
                "onset": onset_step(g["t"], g["barrier"], threshold),
                "threshold": float(threshold),
                "n_steps": len(g),
            }
        )
    df = pd.DataFrame(rows, columns=ONSET_SCHEMA.names)
    return df.astype({"parent": "int16", "n_steps": "int32", "onset": "float64", "threshold": "float64"})
