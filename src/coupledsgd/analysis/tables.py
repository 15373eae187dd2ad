"""Metric tables: from the members' test-set predictions and correctness trajectories to the tables
the figures read (DESIGN.md sections 3-4).

Every number comes from the functions in `metrics` (float64, log_softmax of the stored logits);
this module only reads the files, groups members into ensembles and lays the results out.

Groups. Members sharing (condition, t) form one group (all their files must hold the same test set:
example ids and labels); within it, the members of one parent, in child order, form one ensemble.

Bootstrap. The 95% intervals are percentile intervals over test examples. One set of resamples
(`bootstrap_weights`, drawn from np.random.default_rng(BOOTSTRAP_SEED): the very index vectors
`metrics.bootstrap_ci` draws with that seed) serves every ensemble of the experiment, and within a
resample the members and their ensemble see the same examples. Sharing the resamples across parents
is what lets the summary bootstrap the parent-averaged gain and MACE improvement: their interval is
the percentile interval of the per-resample mean over parents. How each statistic is resampled fast:

- accuracy gain is a mean over examples of d_i = 1[ensemble right on i] - mean_m 1[member m right on
  i], so the gain of every resample at once is W @ d / N, W the (B, N) matrix of draw counts;
- MACE: see `mace_bootstrap` (bins fixed by the full test set, all resamples in one matrix product).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .. import __version__
from . import metrics as M
from ..core.parquet import KEY_COLUMNS, ORIGIN_COLUMNS
from ..core.files import atomic_path
from ..core.errors import ArtifactError

BOOTSTRAP_SEED = 0
LEVEL = 0.95
SPE_KEY = b"coupledsgd.steps_per_epoch"
HASH_KEY = b"coupledsgd.config_hash"
REINIT_KEY = b"coupledsgd.reinit_percent"
PREDICTION_COLUMNS = (*KEY_COLUMNS, "example_id", "label")
TRAJECTORY_COLUMNS = (*KEY_COLUMNS, "step", "example_id", "correct")
DEFAULTS = {"bootstrap": 1000, "ece_bins": 15, "mace_bins": 15, "forgetting_epochs": None}

_f64, _i16, _i32 = pa.float64(), pa.int16(), pa.int32()


def _schema(*fields) -> pa.Schema:
    return pa.schema([pa.field(name, typ) for name, typ in fields])


# Key columns first. `condition` and `kind` are plain strings (dictionary-encoded on disk only), so
# pandas reads them as strings, not categoricals.
MEMBERS_SCHEMA = _schema(
    ("condition", pa.string()), ("t", _i32), ("parent", _i16), ("child", _i16), ("t_epoch", _f64),
    ("accuracy", _f64), ("nll", _f64), ("brier", _f64), ("ece", _f64), ("mace", _f64), ("diverged", pa.bool_()),
    ("reinit_percent", _f64))
ENSEMBLES_SCHEMA = _schema(
    ("condition", pa.string()), ("t", _i32), ("parent", _i16), ("k", _i16), ("t_epoch", _f64),
    ("ensemble_accuracy", _f64), ("mean_member_accuracy", _f64),
    ("gain", _f64), ("gain_ci_low", _f64), ("gain_ci_high", _f64),
    ("ensemble_ece", _f64), ("ensemble_mace", _f64), ("mean_member_mace", _f64),
    ("mace_improvement", _f64), ("mace_improvement_ci_low", _f64), ("mace_improvement_ci_high", _f64),
    ("ensemble_nll", _f64), ("sym_kl", _f64), ("disagreement", _f64),
    ("mean_member_ece", _f64), ("mean_member_nll", _f64), ("ensemble_brier", _f64),
    ("mean_member_brier", _f64), ("gain_by_size", pa.list_(_f64)), ("reinit_percent", _f64))
PAIRS_SCHEMA = _schema(
    ("condition", pa.string()), ("t", _i32), ("kind", pa.string()), ("parent_a", _i16), ("child_a", _i16),
    ("parent_b", _i16), ("child_b", _i16), ("sym_kl", _f64), ("disagreement", _f64))
FORGETTING_SCHEMA = _schema(
    ("condition", pa.string()), ("t", _i32), ("parent", _i16), ("child", _i16), ("step", _i32),
    ("epoch", _f64), ("accuracy", _f64), ("events", _i32), ("cumulative_events", _i32))
SUMMARY_COLUMNS = [
    "condition", "t", "t_epoch", "n_parents", "n_members",
    "ensemble_accuracy", "mean_member_accuracy",
    "gain", "gain_std", "gain_ci_low", "gain_ci_high",
    "mace_improvement", "mace_improvement_std", "mace_improvement_ci_low", "mace_improvement_ci_high",
    "sym_kl_same_parent", "sym_kl_between_parents", "disagreement", "disagreement_between_parents",
    "forgetting_events", "forgetting_events_std", "n_diverged"]
SCHEMAS = {"members": MEMBERS_SCHEMA, "ensembles": ENSEMBLES_SCHEMA, "pairs": PAIRS_SCHEMA,
           "forgetting": FORGETTING_SCHEMA}


# ---------------------------------------------------------------------------------------------------
# Reading


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
class Trajectory:
    """One member's test-set correctness at its evaluation points."""

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


def _read_table(path, required) -> tuple[pa.Table, dict, int, str]:
    """The table, its key (condition, t, parent, child: one value each), its steps per epoch and the
    hash of the config that produced it."""
    try:
        table = pq.read_table(path)
    except FileNotFoundError:
        raise ArtifactError(f"{path}: file not found") from None
    except (pa.ArrowException, OSError) as e:
        raise ArtifactError(f"{path}: not a readable Parquet file ({type(e).__name__}: {e})") from None
    missing = [c for c in required if c not in table.column_names]
    if missing:
        raise ArtifactError(f"{path}: missing column(s) {', '.join(missing)}")
    if table.num_rows == 0:
        raise ArtifactError(f"{path}: no rows")
    key = {}
    for c in KEY_COLUMNS:
        values = table.column(c).unique().to_pylist()
        if len(values) != 1 or values[0] is None:
            raise ArtifactError(f"{path}: column {c} must hold one value, holds {values[:5]}")
        key[c] = values[0] if c == "condition" else int(values[0])
    raw = (table.schema.metadata or {}).get(SPE_KEY)
    if raw is None:
        raise ArtifactError(f"{path}: schema metadata lacks {SPE_KEY.decode()} (written by an older "
                            "version? rerun the job that wrote it)")
    try:
        spe = int(raw)
    except ValueError:
        spe = 0
    if spe < 1:
        raise ArtifactError(f"{path}: {SPE_KEY.decode()} = {raw!r} is not a positive integer")
    config_hash = (table.schema.metadata or {}).get(HASH_KEY)
    if config_hash is None:
        raise ArtifactError(f"{path}: schema metadata lacks {HASH_KEY.decode()} (written by an older "
                            "version? rerun the job that wrote it)")
    config_hash = config_hash.decode()
    for name in ORIGIN_COLUMNS:  # optional (files of older versions lack them), but must not disagree
        meta = (table.schema.metadata or {}).get(f"coupledsgd.{name}".encode())
        if name in table.column_names:
            values = table.column(name).unique().to_pylist()
            if values != [meta.decode() if meta is not None else None]:
                raise ArtifactError(f"{path}: column {name} holds {values[:5]}, but the schema metadata "
                                    f"says {meta.decode() if meta is not None else None!r}")
    return table, key, spe, config_hash


def _int_column(table, name, path) -> np.ndarray:
    col = table.column(name)
    if col.null_count or not pa.types.is_integer(col.type):
        raise ArtifactError(f"{path}: column {name} must be integers without nulls (is {col.type}, "
                            f"{col.null_count} nulls)")
    return col.to_numpy().astype(np.int64)


def read_predictions(path) -> Predictions:
    """Read and check one predictions file: the columns, finite logits, labels in range, unique ids."""
    table, key, spe, config_hash = _read_table(path, PREDICTION_COLUMNS)
    found = {int(c[6:]) for c in table.column_names if c.startswith("logit_") and c[6:].isdigit()}
    n_classes = max(found, default=0) + 1
    missing = [f"logit_{j}" for j in range(n_classes) if j not in found]
    if missing:
        raise ArtifactError(f"{path}: missing column(s) {', '.join(missing)}")
    ids = _int_column(table, "example_id", path)
    labels = _int_column(table, "label", path)
    logits = np.empty((table.num_rows, n_classes), dtype=np.float64)
    for j in range(n_classes):
        col = table.column(f"logit_{j}")
        if not pa.types.is_floating(col.type):
            raise ArtifactError(f"{path}: column logit_{j} is {col.type}, not floating point")
        logits[:, j] = col.to_numpy()  # nulls come out as nan and fail the check below
    bad = ~np.isfinite(logits)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise ArtifactError(f"{path}: {int(bad.sum())} non-finite logit(s), the first {logits[i, j]} "
                            f"at example_id {ids[i]}, column logit_{j}")
    if labels.min() < 0 or labels.max() >= n_classes:
        raise ArtifactError(f"{path}: labels must lie in 0..{n_classes - 1} (the logit columns), "
                            f"found {labels.min()}..{labels.max()}")
    order = np.argsort(ids, kind="stable")
    ids = ids[order]
    if np.any(ids[1:] == ids[:-1]):
        raise ArtifactError(f"{path}: example_id {ids[1:][ids[1:] == ids[:-1]][0]} appears twice")
    reinit = (table.schema.metadata or {}).get(REINIT_KEY)
    return Predictions(str(path), key["condition"], key["t"], key["parent"], key["child"], ids,
                       labels[order], M.log_softmax(logits[order]), spe, config_hash,
                       float(reinit) if reinit is not None else float("nan"))


def read_trajectory(path) -> Trajectory:
    """Read and check one trajectory file: every evaluation point holds the same examples once."""
    table, key, spe, config_hash = _read_table(path, TRAJECTORY_COLUMNS)
    steps = _int_column(table, "step", path)
    ids = _int_column(table, "example_id", path)
    col = table.column("correct")
    if col.null_count or not pa.types.is_boolean(col.type):
        raise ArtifactError(f"{path}: column correct must be bool without nulls (is {col.type}, "
                            f"{col.null_count} nulls)")
    correct = col.to_numpy()
    order = np.lexsort((ids, steps))
    points, counts = np.unique(steps, return_counts=True)
    n = table.num_rows // len(points)
    ids = ids[order].reshape(-1)
    if np.any(counts != n) or np.any(ids.reshape(len(points), n) != ids[:n]) or np.any(ids[1:n] == ids[:n - 1]):
        raise ArtifactError(f"{path}: evaluation points must each hold the same examples once "
                            f"({len(points)} points, rows per point {sorted(set(counts.tolist()))})")
    return Trajectory(str(path), key["condition"], key["t"], key["parent"], key["child"], points,
                      correct[order].reshape(len(points), n), spe, config_hash)


def _agreed(items, attr: str, what: str):
    """The value of `attr` that every file shares; files of different configs never mix."""
    first = items[0]
    other = next((x for x in items if getattr(x, attr) != getattr(first, attr)), None)
    if other is not None:
        raise ArtifactError(f"{other.path}: {what} {getattr(other, attr)}, but {first.path} has "
                            f"{getattr(first, attr)} (files of different configs; rerun the stale jobs)")
    return getattr(first, attr)


def _steps_per_epoch(items) -> int:
    _agreed(items, "config_hash", "config hash")
    return _agreed(items, "steps_per_epoch", "steps per epoch")


def _unique_members(items) -> None:
    seen = {}
    for x in items:
        if x.key in seen:
            raise ArtifactError(f"{x.path}: member {x.key} is also in {seen[x.key]}")
        seen[x.key] = x.path


def group_predictions(predictions: list[Predictions]) -> dict[tuple[str, int], dict[int, list[Predictions]]]:
    """{(condition, t): {parent: members in child order}}, groups in order of first appearance.

    Every member of a (condition, t) group must hold the same test set as the group's first member
    (same example ids, labels and number of classes), since ensembles and between-parent pairs
    compare them example by example.
    """
    _unique_members(predictions)
    groups: dict = {}
    for p in predictions:
        groups.setdefault((p.condition, p.t), {}).setdefault(p.parent, []).append(p)
    for (condition, t), parents in groups.items():
        groups[(condition, t)] = parents = {q: sorted(parents[q], key=lambda m: m.child) for q in sorted(parents)}
        ref = next(iter(parents.values()))[0]
        for m in (m for members in parents.values() for m in members):
            what = None
            if m.log_probs.shape[1] != ref.log_probs.shape[1]:
                what = f"{m.log_probs.shape[1]} classes, not {ref.log_probs.shape[1]}"
            elif not np.array_equal(m.example_id, ref.example_id):
                what = "example ids differ"
            elif not np.array_equal(m.labels, ref.labels):
                what = f"labels differ on {int(np.sum(m.labels != ref.labels))} examples"
            if what:
                raise ArtifactError(f"{m.path}: {what} from {ref.path} (every member of {condition} t={t} "
                                    "must be evaluated on the same test set)")
    return groups


# ---------------------------------------------------------------------------------------------------
# Bootstrap


def bootstrap_weights(n: int, n_boot: int, seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """(n_boot, n) float64: how often each example is drawn in each resample.

    Row b counts the b-th index vector rng.integers(0, n, size=n) of np.random.default_rng(seed):
    the resamples metrics.bootstrap_ci(stat, n, n_boot, seed) draws.
    """
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    counts = np.bincount((idx + n * np.arange(n_boot)[:, None]).ravel(), minlength=n_boot * n)
    return counts.reshape(n_boot, n).astype(np.float64)


def percentile_ci(stats, level: float = LEVEL) -> tuple[float, float]:
    """The percentile interval of bootstrap statistics, as metrics.bootstrap_ci computes it."""
    lo, hi = np.percentile(stats, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def mace_bootstrap(log_probs, labels, weights, n_bins: int = 15) -> np.ndarray:
    """(B,) MACE of each resample, the resamples given as (B, N) draw counts (`bootstrap_weights`).

    The simplification: the equal-mass bins are those of the full test set (exactly as in
    metrics.mace: stable sort by p_j, np.array_split into min(n_bins, N) bins) and are held fixed;
    a resample only reweights the examples inside them, so the gap of bin b of class j is
    |sum_i w_i (1[y_i = j] - p_ij)| / sum_i w_i over the examples i of the bin, bins a resample
    leaves empty are dropped, and gaps are averaged over bins, then classes. With all weights 1
    this is metrics.mace exactly. Re-sorting every resample instead would re-form the bins with
    exactly equal mass; the two differ only by the bins' random mass, which the percentile
    interval barely sees, and the fixed bins turn all B resamples of all classes into one matrix
    product W @ D, D the (N, C x bins x 2) indicator matrix of (residual, count) per bin: ~100x
    faster than B x C sorts.
    """
    p = np.exp(np.asarray(log_probs, dtype=np.float64))
    n, c = p.shape
    weights = np.asarray(weights, dtype=np.float64)
    k = min(n_bins, n)
    bin_of_rank = np.repeat(np.arange(k), [n // k + (b < n % k) for b in range(k)])
    resid = (np.asarray(labels)[:, None] == np.arange(c)) - p
    rows = np.arange(n)
    total = np.zeros(weights.shape[0])
    chunk = max(1, (1 << 22) // (n * 2 * k))  # classes per product: D stays under 32 MiB
    for j0 in range(0, c, chunk):
        js = range(j0, min(c, j0 + chunk))
        design = np.zeros((n, len(js), 2, k))
        for jj, j in enumerate(js):
            b = np.empty(n, dtype=np.int64)
            b[np.argsort(p[:, j], kind="stable")] = bin_of_rank
            design[rows, jj, 0, b] = resid[:, j]
            design[rows, jj, 1, b] = 1.0
        out = (weights @ design.reshape(n, -1)).reshape(-1, len(js), 2, k)
        num, den = out[:, :, 0], out[:, :, 1]
        full = den > 0
        gaps = np.abs(num) / np.where(full, den, 1.0) * full
        total += np.sum(gaps.sum(-1) / full.sum(-1), axis=1)
    return total / c


# ---------------------------------------------------------------------------------------------------
# Tables


def _settings(settings: dict | None) -> dict:
    return {**DEFAULTS, **(settings or {})}


def member_metrics(m: Predictions, settings: dict | None = None) -> dict:
    s = _settings(settings)
    lp, y = m.log_probs, m.labels
    return {"accuracy": M.accuracy(lp, y), "nll": M.nll(lp, y), "brier": M.brier(lp, y),
            "ece": M.ece(lp, y, s["ece_bins"]), "mace": M.mace(lp, y, s["mace_bins"])}


def _pair(lp_a, lp_b) -> dict:
    return {"sym_kl": M.symmetric_kl(lp_a, lp_b), "disagreement": M.disagreement(lp_a, lp_b)}


def ensemble_metrics(members: list[Predictions], member_rows: list[dict], weights, settings=None):
    """One ensemble's row (without keys) and its bootstrap statistics {"gain": (B,), "mace_improvement": (B,)}.

    member_rows are member_metrics of the members; weights the (B, N) draw counts.
    """
    s = _settings(settings)
    lp = np.stack([m.log_probs for m in members])
    y = members[0].labels
    ens = M.ensemble_log_probs(lp)
    mean = {k: float(np.mean([r[k] for r in member_rows])) for k in ("accuracy", "ece", "mace", "nll", "brier")}
    row = {"ensemble_accuracy": M.accuracy(ens, y), "mean_member_accuracy": mean["accuracy"]}
    row["gain"] = row["ensemble_accuracy"] - mean["accuracy"]
    # Per-example gain: ensemble right minus the fraction of members right; its mean is the gain.
    d = M.correct(ens, y) - np.mean([M.correct(x, y) for x in lp], axis=0)
    boot_gain = weights @ d / len(y)
    row["gain_ci_low"], row["gain_ci_high"] = percentile_ci(boot_gain)
    row["ensemble_ece"] = M.ece(ens, y, s["ece_bins"])
    row["ensemble_mace"] = M.mace(ens, y, s["mace_bins"])
    row["mean_member_mace"] = mean["mace"]
    row["mace_improvement"] = mean["mace"] - row["ensemble_mace"]
    boot_mace = np.mean([mace_bootstrap(x, y, weights, s["mace_bins"]) for x in lp], axis=0) \
        - mace_bootstrap(ens, y, weights, s["mace_bins"])
    row["mace_improvement_ci_low"], row["mace_improvement_ci_high"] = percentile_ci(boot_mace)
    row["ensemble_nll"] = M.nll(ens, y)
    pairs = [_pair(lp[a], lp[b]) for a, b in combinations(range(len(lp)), 2)]
    row["sym_kl"] = float(np.mean([q["sym_kl"] for q in pairs])) if pairs else float("nan")
    row["disagreement"] = float(np.mean([q["disagreement"] for q in pairs])) if pairs else float("nan")
    row.update(mean_member_ece=mean["ece"], mean_member_nll=mean["nll"], ensemble_brier=M.brier(ens, y),
               mean_member_brier=mean["brier"], gain_by_size=M.gain_by_size(lp, y).tolist())
    return row, {"gain": boot_gain, "mace_improvement": boot_mace}


def forgetting_table(trajectories: list[Trajectory]) -> pd.DataFrame:
    """One row per member and evaluation point; epoch counts from the member's first point."""
    _unique_members(trajectories)
    parts = []
    for tr in trajectories:
        events = M.forgetting_events(tr.correct)
        e = len(tr.steps)
        parts.append(pd.DataFrame({
            "condition": [tr.condition] * e, "t": tr.t, "parent": tr.parent, "child": tr.child,
            "step": tr.steps, "epoch": (tr.steps - tr.steps[0]) / tr.steps_per_epoch,
            "accuracy": tr.correct.mean(axis=1), "events": events, "cumulative_events": np.cumsum(events)}))
    if not parts:
        return _empty(FORGETTING_SCHEMA)
    return _typed(pd.concat(parts, ignore_index=True), FORGETTING_SCHEMA)


def _empty(schema: pa.Schema) -> pd.DataFrame:
    return schema.empty_table().to_pandas()


def _typed(df: pd.DataFrame, schema: pa.Schema) -> pd.DataFrame:
    """df with exactly the schema's columns, in its order, with its integer widths."""
    df = df[schema.names].copy()
    for f in schema:
        if pa.types.is_integer(f.type):
            df[f.name] = df[f.name].astype(f.type.to_pandas_dtype())
    return df


def _forgetting_per_member(forgetting: pd.DataFrame, epochs) -> pd.DataFrame:
    """Cumulative events over the first `epochs` epochs (all if None) of each member."""
    f = forgetting if epochs is None else forgetting[forgetting["epoch"] <= epochs + 1e-9]
    return f.groupby(["condition", "t", "parent", "child"], sort=False)["events"].sum().reset_index()


def compute_tables(predictions: list[Predictions], trajectories: list[Trajectory],
                   settings: dict | None = None, log=None) -> dict[str, pd.DataFrame]:
    """All metric tables: {"members", "ensembles", "pairs", "forgetting", "summary"} as DataFrames."""
    s = _settings(settings)
    log = log or (lambda line: None)
    if not predictions:
        raise ArtifactError("no prediction files given")
    spe = _steps_per_epoch(list(predictions) + list(trajectories))
    groups = group_predictions(predictions)
    weights: dict[int, np.ndarray] = {}
    members, ensembles, pairs, summary = [], [], [], []
    boots: dict[tuple[str, int], list[dict]] = {}
    for (condition, t), parents in groups.items():
        tick = time.perf_counter()
        base = {"condition": condition, "t": t}
        ens_lp, group_rows = {}, []
        for parent, ms in parents.items():
            rows = [member_metrics(m, s) for m in ms]
            members += [{**base, "parent": parent, "child": m.child, "t_epoch": t / spe, **r,
                         "reinit_percent": m.reinit_percent} for m, r in zip(ms, rows)]
            n = len(ms[0].labels)
            if n not in weights:
                weights[n] = bootstrap_weights(n, s["bootstrap"])
            row, boot = ensemble_metrics(ms, rows, weights[n], s)
            group_rows.append(row)
            boots.setdefault((condition, t), []).append(boot)
            ensembles.append({**base, "parent": parent, "k": len(ms), "t_epoch": t / spe, **row,
                              "reinit_percent": float(np.mean([m.reinit_percent for m in ms]))})
            for a, b in combinations(ms, 2):
                pairs.append({**base, "kind": "same-parent", "parent_a": parent, "child_a": a.child,
                              "parent_b": parent, "child_b": b.child, **_pair(a.log_probs, b.log_probs)})
            ens_lp[parent] = M.ensemble_log_probs(np.stack([m.log_probs for m in ms]))
        between = [{**base, "kind": "between-parents", "parent_a": a, "child_a": -1, "parent_b": b, "child_b": -1,
                    **_pair(ens_lp[a], ens_lp[b])} for a, b in combinations(ens_lp, 2)]
        pairs += between
        summary.append(_summary_row(condition, t, spe, parents, group_rows, boots[(condition, t)], between))
        log(f"{condition} t={t}: {len(parents)} parents, {sum(map(len, parents.values()))} members, "
            f"{time.perf_counter() - tick:.2f} s")

    forgetting = forgetting_table(trajectories)
    first = {tr.key: float(tr.correct[0].mean()) for tr in trajectories if len(tr.steps)}
    n, classes = predictions[0].log_probs.shape
    for row in members:
        key = (row["condition"], row["t"], row["parent"], row["child"])
        row["diverged"] = M.diverged(row["accuracy"], first.get(key, 1.0 / classes), n, classes)
    summary = pd.DataFrame(summary)
    flagged = pd.DataFrame(members, columns=["condition", "t", "diverged"]).groupby(["condition", "t"])["diverged"].sum()
    per_member = _forgetting_per_member(forgetting, s["forgetting_epochs"])
    per_parent = per_member.groupby(["condition", "t", "parent"], sort=False)["events"].mean()
    fe = per_member.groupby(["condition", "t"])["events"].mean()
    fs = per_parent.groupby(level=["condition", "t"]).std()
    index = pd.MultiIndex.from_frame(summary[["condition", "t"]])
    summary["forgetting_events"] = fe.reindex(index).to_numpy()
    summary["forgetting_events_std"] = fs.reindex(index).to_numpy()
    summary["n_diverged"] = flagged.reindex(index).fillna(0).astype(int).to_numpy()
    return {
        "members": _typed(pd.DataFrame(members), MEMBERS_SCHEMA) if members else _empty(MEMBERS_SCHEMA),
        "ensembles": _typed(pd.DataFrame(ensembles), ENSEMBLES_SCHEMA),
        "pairs": _typed(pd.DataFrame(pairs), PAIRS_SCHEMA) if pairs else _empty(PAIRS_SCHEMA),
        "forgetting": forgetting,
        "summary": summary[SUMMARY_COLUMNS],
    }


def _summary_row(condition, t, spe, parents, rows, boots, between) -> dict:
    """One (condition, t): means over parents; std over parents (ddof=1, nan for one parent); the
    intervals bootstrap the parent-averaged statistic (the same resamples for every parent)."""
    def mean(key):
        return float(np.mean([r[key] for r in rows]))

    def std(key):
        return float(np.std([r[key] for r in rows], ddof=1)) if len(rows) > 1 else float("nan")

    out = {"condition": condition, "t": t, "t_epoch": t / spe, "n_parents": len(parents),
           "n_members": sum(map(len, parents.values())),
           "ensemble_accuracy": mean("ensemble_accuracy"), "mean_member_accuracy": mean("mean_member_accuracy")}
    for key in ("gain", "mace_improvement"):
        lo, hi = percentile_ci(np.mean([b[key] for b in boots], axis=0))
        out.update({key: mean(key), f"{key}_std": std(key), f"{key}_ci_low": lo, f"{key}_ci_high": hi})
    out["sym_kl_same_parent"] = mean("sym_kl")
    out["sym_kl_between_parents"] = float(np.mean([b["sym_kl"] for b in between])) if between else float("nan")
    out["disagreement"] = mean("disagreement")
    out["disagreement_between_parents"] = (float(np.mean([b["disagreement"] for b in between]))
                                           if between else float("nan"))
    return out


# ---------------------------------------------------------------------------------------------------
# The stage


def _write_parquet(df: pd.DataFrame, schema: pa.Schema, path, metadata: dict[str, str]) -> None:
    table = pa.Table.from_pandas(df, schema=schema, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                           **{k.encode(): v.encode() for k, v in metadata.items()}})
    strings = [f.name for f in schema if pa.types.is_string(f.type)]
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd", use_dictionary=strings)


def _write_csv(df: pd.DataFrame, path) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def metric_tables(prediction_paths, trajectory_paths, output_paths: dict, settings: dict,
                  log_path: str | None = None) -> None:
    """Read every member's predictions and trajectory, compute the metric tables, and write them.

    output_paths: {"members", "ensembles", "pairs", "forgetting"} -> .parquet, {"summary"} -> .csv;
    each written atomically.
    """
    from ..jobs.runtime import logger

    log = logger(log_path)
    s = _settings(settings)
    tick = time.perf_counter()
    predictions = [read_predictions(p) for p in prediction_paths]
    trajectories = [read_trajectory(p) for p in trajectory_paths]
    log(f"read {len(predictions)} prediction and {len(trajectories)} trajectory files in "
        f"{time.perf_counter() - tick:.2f} s")
    tables = compute_tables(predictions, trajectories, s, log)
    spe = _steps_per_epoch(predictions)
    # The config hash of the members' files, so that a reader of the prediction files can keep those
    # of the config these tables were computed from (README, "Inspecting the artifacts").
    metadata = {"coupledsgd.params": json.dumps({**s, "bootstrap_seed": BOOTSTRAP_SEED, "level": LEVEL},
                                                sort_keys=True),
                "coupledsgd.version": __version__, SPE_KEY.decode(): str(spe),
                HASH_KEY.decode(): predictions[0].config_hash}
    for name, schema in SCHEMAS.items():
        _write_parquet(tables[name], schema, output_paths[name], metadata)
    _write_csv(tables["summary"], output_paths["summary"])
    bad = tables["members"][tables["members"]["diverged"]]
    if len(bad):
        log(f"WARNING: {len(bad)} member(s) diverged (at chance, or ending below where they started): "
            + ", ".join(f"{r.condition} t={r.t} p{r.parent}c{r.child} ({r.accuracy:.3f})" for r in bad.itertuples()))
    log(f"wrote {', '.join(str(Path(output_paths[k]).name) for k in (*SCHEMAS, 'summary'))} "
        f"in {time.perf_counter() - tick:.2f} s in all")
