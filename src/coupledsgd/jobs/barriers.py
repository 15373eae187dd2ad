"""The barrier job: error paths and barriers of every pair of children of one (condition, t, parent)
(docs/design.md, "Error barriers"), and their weight-space distances (`engine.barriers.weight_distances`)
from the same final states in the same pass; the experiment's barriers, weights and onset tables are
`jobs.analysis.concat_barriers`.
"""

from __future__ import annotations

import time
from itertools import combinations
from typing import Sequence

import numpy as np
import pyarrow as pa

from ..analysis.read import BARRIER_SCHEMA, WEIGHTS_SCHEMA
from ..core.errors import ArtifactError
from ..core.parquet import provenance, repeated, write_parquet
from ..engine import data as D
from ..engine.barriers import (
    barrier,
    bn_seed,
    error_path,
    flat_weights,
    parameter_names,
    start_weights,
    weight_distances,
)
from ..engine.checkpoints import load_torch
from .runtime import logger, setup

SCHEMA = BARRIER_SCHEMA  # one row per pair and point alpha (analysis.read, the table's reader)


def _columns(condition: str, t: int, parent: int, rows: dict[str, list]) -> dict[str, pa.Array]:
    n = len(rows["alpha"])
    return {
        "condition": repeated(condition, n),
        "t": pa.array(np.full(n, t, dtype=np.int32)),
        "parent": pa.array(np.full(n, parent, dtype=np.int16)),
        "child_a": pa.array(np.asarray(rows["child_a"], dtype=np.int16)),
        "child_b": pa.array(np.asarray(rows["child_b"], dtype=np.int16)),
        **{k: pa.array(np.asarray(rows[k], dtype=np.float64)) for k in ("alpha", "error", "barrier")},
    }


def _load_child(path, params: dict, child: int) -> dict:
    state = load_torch(path, what="child state")
    info = state.get("info", {})
    expected = {"condition": params["condition"], "parent": params["parent"], "child": child}
    found = {k: info.get(k) for k in expected}
    if found != expected or ("model" not in state and "diverged" not in state):
        raise ArtifactError(f"{path}: holds the final state of {found}, expected {expected}")
    return state


def weight_rows(
    states: dict[int, dict], parent_state: dict | None, condition: str, t: int, parent: int
) -> dict[str, list]:
    """One row per pair of children (a < b): the keys of pairs.parquet (kind same-parent) and
    `weight_distances` of their final weights, from the spawn state (`parent_state`) or, without a
    parent, from each run's own initialisation."""
    rows = {k: [] for k in WEIGHTS_SCHEMA.names}
    if len(states) < 2:
        return rows
    names = parameter_names(next(iter(states.values())))
    final = {c: flat_weights(s["model"], names) for c, s in states.items()}
    start = {c: start_weights(s, names, parent_state) for c, s in states.items()}
    for a, b in combinations(sorted(states), 2):
        values = {
            "condition": condition,
            "t": t,
            "kind": "same-parent",
            "parent_a": parent,
            "child_a": a,
            "parent_b": parent,
            "child_b": b,
            **weight_distances(final[a], final[b], start[a], start[b]),
        }
        for k, v in values.items():
            rows[k].append(v)
    return rows


def barrier_table(
    data_path: str,
    final_paths: Sequence[str],
    output_path: str,
    params: dict,
    log_path: str | None = None,
    weights_path: str | None = None,
    parent_path: str | None = None,
) -> None:
    """Error paths and barriers of every pair of children (a < b) of one (condition, t, parent), and
    their weight-space distances.

    `final_paths[c]` is child c's final.pt; `parent_path` the parent_state file the children were
    spawned from (None for a condition without a parent). `params`: barrier (points, recompute_bn,
    bn_batches), seed, batch_size, eval_batch_size, device, threads, jobs_per_device, condition, t,
    parent. Writes a Parquet file with the columns of `SCHEMA`, one row per pair and alpha, and (if
    `weights_path`) one with those of `WEIGHTS_SCHEMA`, one row per pair.
    """
    log = logger(log_path)
    device = setup(params["threads"], params["device"], params["jobs_per_device"], log)
    settings = params["barrier"]
    data = D.load(data_path, device, augment=False)
    states = {c: _load_child(path, params, c) for c, path in enumerate(final_paths)}
    # a child whose training diverged has no weights: the pairs are those of the others
    diverged = [c for c, state in states.items() if "diverged" in state]
    if diverged:
        log(
            f"{params['condition']} t={params['t']} parent {params['parent']}: child(ren) "
            f"{', '.join(map(str, diverged))} diverged in training, left out"
        )
    states = {c: state for c, state in states.items() if c not in diverged}
    rows = {k: [] for k in ("child_a", "child_b", "alpha", "error", "barrier")}
    for a, b in combinations(sorted(states), 2):
        clock = time.perf_counter()
        alphas, errors = error_path(
            states[a],
            states[b],
            data,
            settings["points"],
            settings["recompute_bn"],
            settings["bn_batches"],
            params["batch_size"],
            params["seed"],
            params["eval_batch_size"],
        )
        value = barrier(errors)
        n = len(alphas)
        rows["child_a"] += [a] * n
        rows["child_b"] += [b] * n
        rows["alpha"] += alphas.tolist()
        rows["error"] += errors.tolist()
        rows["barrier"] += [value] * n
        log(
            f"{params['condition']} t={params['t']} parent {params['parent']} children {a}-{b}: "
            f"barrier {value:.4f}, errors {' '.join(f'{e:.4f}' for e in errors)} "
            f"({time.perf_counter() - clock:.2f} s)"
        )
    table = pa.table(_columns(params["condition"], params["t"], params["parent"], rows), schema=SCHEMA)
    meta = {**provenance(params, device), "coupledsgd.bn_seed": str(bn_seed(params["seed"]))}
    write_parquet(table, output_path, meta, ["condition"])
    log(f"{len(states) * (len(states) - 1) // 2} pairs written to {output_path}")
    if weights_path is not None:
        clock = time.perf_counter()
        parent = load_torch(parent_path, what="parent state") if parent_path else None
        rows = weight_rows(states, parent, params["condition"], params["t"], params["parent"])
        write_parquet(pa.Table.from_pydict(rows, schema=WEIGHTS_SCHEMA), weights_path, meta, ["condition", "kind"])
        log(
            f"weight-space distances of {len(rows['distance'])} pairs written to {weights_path} "
            f"({time.perf_counter() - clock:.2f} s)"
        )
