"""The analysis jobs, the entry points the workflow scripts call: the metric tables (`metric_tables`),
the experiment's one barriers table (`concat_barriers`), one figure (`run_figure`), the claims table
(`check_claims`) and the HTML page of the claims or summary table for the report (`table_page`). Each reads its inputs through `analysis.read`, computes with `coupledsgd.analysis`,
writes every output atomically and logs through `runtime.logger`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence

import pyarrow as pa

from .. import __version__
from ..analysis import claims as C
from ..analysis import curves as CV
from ..analysis import draw as D
from ..analysis import figures as F
from ..analysis import metrics as M
from ..analysis import pages as P
from ..analysis import tables as T
from ..analysis import instability as I
from ..analysis.read import (
    BARRIER_SCHEMA,
    HASH_KEY,
    SPE_KEY,
    WEIGHTS_SCHEMA,
    diverged_record,
    left_out_names,
    read_barriers,
    read_member_file,
    read_table,
    read_trajectory,
    read_weights,
)
from ..core.errors import ArtifactError
from ..core.files import atomic_path
from ..core.parquet import NONFINITE_KEY, provenance, write_parquet
from .runtime import logger


def _write_parquet(df, schema: pa.Schema, path, metadata: dict[str, str]) -> None:
    table = pa.Table.from_pandas(df, schema=schema, preserve_index=False)
    write_parquet(
        table,
        path,
        {**(table.schema.metadata or {}), **{k.encode(): v.encode() for k, v in metadata.items()}},
        [f.name for f in schema if pa.types.is_string(f.type)],
    )


def _write_csv(df, path) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


# summary.csv: the summary table, then how many members of each (condition, t) were left out so
SUMMARY_CSV_COLUMNS = [*T.SUMMARY_COLUMNS, "n_nonfinite"]


def _finite_members(prediction_paths, trajectory_paths, log) -> tuple[list, list, list[dict]]:
    """The members' files without those of members whose training, or whose parent's, diverged, and
    those members' records (`core.parquet.write_diverged`)."""
    records = [diverged_record(p) for p in prediction_paths]
    nonfinite = [r for r in records if r is not None]
    if nonfinite:
        log(
            f"WARNING: {len(nonfinite)} member(s) left out, their training loss or their parent's became "
            f"non-finite: {left_out_names(nonfinite, limit=len(nonfinite))}"
        )
    kept = [i for i, r in enumerate(records) if r is None]
    if not kept:
        raise ArtifactError(
            f"the training of every one of the {len(records)} members diverged: no metrics "
            "to compute (lower training.lr or add warm-up steps)"
        )
    # each list filtered by its own files' records: the lists need not pair up one to one
    trajectories = [p for p in trajectory_paths if diverged_record(p) is None]
    return [prediction_paths[i] for i in kept], trajectories, nonfinite


def _counts(summary, nonfinite: list[dict]) -> list[int]:
    """How many members of each summary row's (condition, t) were left out as non-finite."""
    counts: dict = {}
    for r in nonfinite:
        counts[(r["condition"], r["t"])] = counts.get((r["condition"], r["t"]), 0) + 1
    return [counts.get((c, t), 0) for c, t in zip(summary["condition"], summary["t"])]


def metric_tables(
    prediction_paths,
    trajectory_paths,
    output_paths: dict,
    settings: dict,
    log_path: str | None = None,
    *,
    threads: int = 1,
) -> None:
    """Read every member's predictions and trajectory, compute the metric tables, and write them.

    The predictions files are read twice: their keys first, to group them, then one group's logits at a
    time (`tables.compute_tables`); the trajectories once each, one at a time.

    settings: the validated config's `metrics` section (every key filled from the schema).
    output_paths: {"members", "ensembles", "pairs", "forgetting"} -> .parquet, {"summary"} -> .csv;
    each written atomically. threads: the job's, the worker processes over which the (condition, t)
    groups are computed side by side (the tables do not depend on it: `tables.group_pool`).
    """
    log = logger(log_path)
    tick = time.perf_counter()
    prediction_paths, trajectory_paths, nonfinite = _finite_members(prediction_paths, trajectory_paths, log)
    predictions = [read_member_file(p) for p in prediction_paths]
    log(f"read the members of {len(predictions)} prediction files in {time.perf_counter() - tick:.2f} s")
    trajectories = (read_trajectory(p) for p in trajectory_paths)
    tables = T.compute_tables(predictions, trajectories, settings, log, threads)
    log(
        f"read {len(prediction_paths)} prediction and {len(trajectory_paths)} trajectory files and computed "
        f"the tables in {time.perf_counter() - tick:.2f} s"
    )
    spe = T.steps_per_epoch(predictions)
    # The config hash of the members' files, so that a reader of the prediction files can keep those
    # of the config these tables were computed from (docs/artifacts.md, "Files of other configs in one folder").
    metadata = {
        "coupledsgd.params": json.dumps(
            {**settings, "bootstrap_seed": M.BOOTSTRAP_SEED, "level": M.LEVEL}, sort_keys=True
        ),
        "coupledsgd.version": __version__,
        SPE_KEY.decode(): str(spe),
        HASH_KEY.decode(): predictions[0].config_hash,
        NONFINITE_KEY: json.dumps(nonfinite),
    }
    tables["summary"]["n_nonfinite"] = _counts(tables["summary"], nonfinite)
    for name, schema in T.SCHEMAS.items():
        _write_parquet(tables[name], schema, output_paths[name], metadata)
    _write_csv(tables["summary"], output_paths["summary"])
    bad = tables["members"][tables["members"]["diverged"]]
    if len(bad):
        log(
            f"WARNING: {len(bad)} member(s) diverged (training loss above {DIVERGED_RULE}): "
            + ", ".join(f"{r.condition} t={r.t} p{r.parent}c{r.child}" for r in bad.itertuples())
        )
    log(
        f"wrote {', '.join(str(Path(output_paths[k]).name) for k in (*T.SCHEMAS, 'summary'))} "
        f"in {time.perf_counter() - tick:.2f} s in all"
    )


# engine.training.loss_bound, in words (this module does not import torch)
DIVERGED_RULE = "10 x the larger of its first steps' loss and ln(classes)"


def _names(members: list[dict]) -> str:
    names = [f"{m['condition']} t={m['t']} p{m['parent']}c{m['child']}" for m in members]
    return ", ".join(names[:10]) + (" ..." if len(names) > 10 else "")


def run_warnings(members_table) -> list[str]:
    """The warnings a finished run ends with, from its members table: the members left out because
    their training loss, or their parent's, became non-finite (each named, with its step), and those
    flagged as diverged (a finite training loss above its bound)."""
    import pyarrow.parquet as pq

    table = pq.read_table(members_table, columns=["condition", "t", "parent", "child", "diverged"])
    lines = []
    nonfinite = json.loads((table.schema.metadata or {}).get(NONFINITE_KEY.encode(), b"[]"))
    if nonfinite:
        lines.append(
            f"WARNING: {len(nonfinite)} member(s) left out of the metrics, claims and figures: their "
            f"training loss or their parent's became non-finite ({members_table}, metadata "
            f"{NONFINITE_KEY}): {left_out_names(nonfinite, limit=len(nonfinite))}"
        )
    flagged = [row for row in table.to_pylist() if row["diverged"]]
    if flagged:
        lines.append(
            f"WARNING: {len(flagged)} member(s) diverged (training loss above {DIVERGED_RULE}; "
            f"{members_table}, column diverged): {_names(flagged)}"
        )
    return lines


def concat_barriers(
    paths: Sequence[str],
    output_path: str,
    params: dict | None = None,
    log_path: str | None = None,
    weight_paths: Sequence[str] = (),
    weights_output: str | None = None,
    onset_output: str | None = None,
) -> None:
    """Concatenate per-(condition, t, parent) barrier tables into one (the experiment's barriers.parquet),
    and their weight-space tables (weights.parquet); then each parent's onset step (onset.parquet,
    threshold `params["barrier"]["onset_threshold"]`)."""
    log = logger(log_path)
    params = params or {}
    tables = [read_barriers(p) for p in paths]
    table = pa.concat_tables(tables) if tables else BARRIER_SCHEMA.empty_table()
    table = table.unify_dictionaries().combine_chunks()
    meta = {**provenance(params, params.get("device", "cpu")), "coupledsgd.inputs": json.dumps([str(p) for p in paths])}
    write_parquet(table, output_path, meta, ["condition"])
    log(f"{len(paths)} barrier tables, {table.num_rows} rows written to {output_path}")
    if weights_output is not None:
        parts = [read_weights(p) for p in weight_paths]
        weights = pa.concat_tables(parts) if parts else WEIGHTS_SCHEMA.empty_table()
        write_parquet(weights.combine_chunks(), weights_output, meta, ["condition", "kind"])
        log(f"{len(parts)} weight-space tables, {weights.num_rows} pairs written to {weights_output}")
    if onset_output is not None:
        threshold = params["barrier"]["onset_threshold"]
        onset = I.onset_table(table.to_pandas(), threshold)
        _write_parquet(onset, I.ONSET_SCHEMA, onset_output, meta)
        for r in onset.itertuples():
            log(
                f"{r.condition} parent {r.parent}: onset step "
                + (f"{r.onset:g}" if r.onset == r.onset else f"not reached (barrier >= {threshold:g} at the last step)")
            )


def learning_curves(
    trajectory_paths: Sequence[str], forgetting_path: str, output_path: str, log_path: str | None = None
) -> None:
    """The curves table (`analysis.curves`): every member's training curve from its trajectory file's
    footer, with its test accuracy from the forgetting table."""
    log = logger(log_path)
    tick = time.perf_counter()
    forgetting = read_table(forgetting_path)
    table = CV.curves_table(trajectory_paths, forgetting)
    _write_parquet(table, CV.CURVES_SCHEMA, output_path, {"coupledsgd.version": __version__})
    log(
        f"{len(trajectory_paths)} trajectory files, {len(table)} curve points written to {output_path} "
        f"in {time.perf_counter() - tick:.2f} s"
    )


def run_figure(name: str, inputs: dict[str, str], png: str, pdf: str, log_path: str | None = None) -> None:
    """Read the tables figure `name` needs (`inputs`: table name -> path), draw it and save it."""
    if name not in F.FIGURES:
        raise ValueError(f"unknown figure {name!r}; known: {', '.join(F.FIGURES)}")
    tables = F.FIGURES[name].tables
    missing = [t for t in tables if t not in inputs]
    if missing:
        raise ValueError(f"figure {name}: no input for table(s) {', '.join(missing)}")
    start = time.perf_counter()
    frames = {t: read_table(inputs[t]) for t in tables}
    fig = F.FIGURES[name].draw(**frames)
    D.save(fig, png, pdf)
    what = f"NO DATA ({fig.coupledsgd_no_data})" if hasattr(fig, "coupledsgd_no_data") else "drawn"
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    logger(log_path)(
        f"{name}: {what} from {', '.join(f'{t} ({len(frames[t])} rows)' for t in tables)} in "
        f"{time.perf_counter() - start:.2f} s -> {png}, {pdf}"
    )


def check_claims(inputs: dict[str, str], output: str, log_path: str | None = None) -> None:
    """Read the metric tables (inputs: table name -> path), check every claim, write claims.csv. The
    tests take no setting: a permutation test too large to enumerate draws C.N_PERMUTATIONS seeded
    arrangements."""
    log = logger(log_path)
    tick = time.perf_counter()
    tables = {name: read_table(path) for name, path in inputs.items()}
    table = C.claims_table(tables)
    _write_csv(table, output)
    counts = table["verdict"].value_counts().to_dict()
    left_out = tables["members"].attrs["left_out"] if "members" in tables else []
    log(
        f"{len(table)} claims, {json.dumps(counts)}, {C.N_PERMUTATIONS} permutations where not exact, "
        f"{time.perf_counter() - tick:.2f} s"
        + (
            f"; {len(left_out)} member(s) left out of the tables, their training loss or their parent's "
            f"non-finite: {left_out_names(left_out, limit=len(left_out))}"
            if left_out
            else ""
        )
    )


def table_page(name: str, table: str, output: str, experiment: str, log_path: str | None = None) -> None:
    """Write the HTML page of table `name` (claims or summary, `analysis.pages.PAGES`) read from the CSV
    file `table`."""
    import pandas as pd

    if name not in P.PAGES:
        raise ValueError(f"unknown table page {name!r}; known: {', '.join(P.PAGES)}")
    df = pd.read_csv(table)
    with atomic_path(output) as tmp:
        Path(tmp).write_text(P.PAGES[name](df, experiment), encoding="utf-8")
    logger(log_path)(f"{name}: {len(df)} rows from {table} -> {output}")
