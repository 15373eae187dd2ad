"""Metric tables: from the members' test-set predictions and correctness trajectories to the tables
the figures and claims read (docs/design.md, "Measurements"). Table assembly only: the files are read
by `read`, every number comes from the pure functions of `metrics` (float64, log_softmax of the stored
logits), and the job that writes the tables is `jobs.analysis.metric_tables`.

Memory. The members arrive as `read.MemberFile`s (key and provenance, no logits) and the trajectories
one at a time: the logits of one (condition, t) group are read, turned into float64 log-probabilities,
used and dropped before the next group's, so the peak is one group's, whatever the grid.

Settings are the validated config's `metrics` section (bootstrap, ece_bins, mace_bins,
forgetting_epochs), every key filled from the config schema: this module has no defaults of its own.

Groups. Members sharing (condition, t) form one group (all their files must hold the same test set:
example ids and labels); within it, the members of one parent, in child order, form one ensemble.

Bootstrap. The 95% intervals are percentile intervals over test examples. One set of resamples
(`metrics.bootstrap_weights`, drawn from np.random.default_rng(metrics.BOOTSTRAP_SEED): the very index vectors
`metrics.bootstrap_ci` draws with that seed) serves every ensemble of the experiment, and within a
resample the members and their ensemble see the same examples. Sharing the resamples across parents
is what lets the summary bootstrap the parent-averaged gain and MACE improvement: their interval is
the percentile interval of the per-resample mean over parents. How each statistic is resampled fast:

- accuracy gain is a mean over examples of d_i = 1[ensemble right on i] - mean_m 1[member m right on
  i], so the gain of every resample at once is W @ d / N, W the (B, N) matrix of draw counts;
- MACE: see `metrics.mace_bootstrap` (bins fixed by the full test set, all resamples in a few matrix
  products; the draw counts as float32, `metrics.draw_counts`, converted once for the experiment).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from typing import Any, cast
from itertools import combinations

import numpy as np
import pandas as pd
import pyarrow as pa

from . import metrics as M
from ..core.errors import ArtifactError
from .read import MemberFile, MemberTrajectory, Predictions, read_predictions

_f64, _i16, _i32 = pa.float64(), pa.int16(), pa.int32()


def _schema(*fields: tuple[str, pa.DataType]) -> pa.Schema:
    return pa.schema([pa.field(name, typ) for name, typ in fields])


# Key columns first. `condition` and `kind` are plain strings (dictionary-encoded on disk only), so
# pandas reads them as strings, not categoricals.
MEMBERS_SCHEMA = _schema(
    ("condition", pa.string()),
    ("t", _i32),
    ("parent", _i16),
    ("child", _i16),
    ("t_epoch", _f64),
    ("accuracy", _f64),
    ("nll", _f64),
    ("brier", _f64),
    ("ece", _f64),
    ("mace", _f64),
    ("diverged", pa.bool_()),
    ("reinit_percent", _f64),
)
ENSEMBLES_SCHEMA = _schema(
    ("condition", pa.string()),
    ("t", _i32),
    ("parent", _i16),
    ("k", _i16),
    ("t_epoch", _f64),
    ("ensemble_accuracy", _f64),
    ("mean_member_accuracy", _f64),
    ("gain", _f64),
    ("gain_ci_low", _f64),
    ("gain_ci_high", _f64),
    ("ensemble_ece", _f64),
    ("ensemble_mace", _f64),
    ("mean_member_mace", _f64),
    ("mace_improvement", _f64),
    ("mace_improvement_ci_low", _f64),
    ("mace_improvement_ci_high", _f64),
    ("ensemble_nll", _f64),
    ("sym_kl", _f64),
    ("disagreement", _f64),
    ("mean_member_ece", _f64),
    ("mean_member_nll", _f64),
    ("ensemble_brier", _f64),
    ("mean_member_brier", _f64),
    ("gain_by_size", pa.list_(_f64)),
    ("reinit_percent", _f64),
)
PAIRS_SCHEMA = _schema(
    ("condition", pa.string()),
    ("t", _i32),
    ("kind", pa.string()),
    ("parent_a", _i16),
    ("child_a", _i16),
    ("parent_b", _i16),
    ("child_b", _i16),
    ("sym_kl", _f64),
    ("disagreement", _f64),
)
FORGETTING_SCHEMA = _schema(
    ("condition", pa.string()),
    ("t", _i32),
    ("parent", _i16),
    ("child", _i16),
    ("step", _i32),
    ("epoch", _f64),
    ("accuracy", _f64),
    ("events", _i32),
    ("cumulative_events", _i32),
)
SUMMARY_COLUMNS = [
    "condition",
    "t",
    "t_epoch",
    "n_parents",
    "n_members",
    "ensemble_accuracy",
    "mean_member_accuracy",
    "gain",
    "gain_std",
    "gain_ci_low",
    "gain_ci_high",
    "mace_improvement",
    "mace_improvement_std",
    "mace_improvement_ci_low",
    "mace_improvement_ci_high",
    "sym_kl_same_parent",
    "sym_kl_between_parents",
    "disagreement",
    "disagreement_between_parents",
    "forgetting_events",
    "forgetting_events_std",
    "n_diverged",
]
SCHEMAS = {
    "members": MEMBERS_SCHEMA,
    "ensembles": ENSEMBLES_SCHEMA,
    "pairs": PAIRS_SCHEMA,
    "forgetting": FORGETTING_SCHEMA,
}


# ---------------------------------------------------------------------------------------------------
# Groups


def _agreed(items: Sequence[MemberFile], attr: str, what: str) -> Any:
    """The value of `attr` that every file shares; files of different configs never mix."""
    first = items[0]
    other = next((x for x in items if getattr(x, attr) != getattr(first, attr)), None)
    if other is not None:
        raise ArtifactError(
            f"{other.path}: {what} {getattr(other, attr)}, but {first.path} has "
            f"{getattr(first, attr)} (files of different configs; rerun the stale jobs)"
        )
    return getattr(first, attr)


def steps_per_epoch(items: Sequence[MemberFile]) -> int:
    """The steps per epoch every file shares (they must share their config hash too)."""
    _agreed(items, "config_hash", "config hash")
    return _agreed(items, "steps_per_epoch", "steps per epoch")


def _unique_members(items: Iterable[MemberFile]) -> None:
    seen: dict[tuple[str, int, int, int], str] = {}
    for x in items:
        if x.key in seen:
            raise ArtifactError(f"{x.path}: member {x.key} is also in {seen[x.key]}")
        seen[x.key] = x.path


def group_members(members: list[MemberFile]) -> dict[tuple[str, int], dict[int, list[MemberFile]]]:
    """{(condition, t): {parent: members in child order}}, groups in order of first appearance."""
    _unique_members(members)
    groups: dict = {}
    for m in members:
        groups.setdefault((m.condition, m.t), {}).setdefault(m.parent, []).append(m)
    return {
        key: {q: sorted(parents[q], key=lambda m: m.child) for q in sorted(parents)} for key, parents in groups.items()
    }


def read_group(condition: str, t: int, parents: dict[int, list[MemberFile]]) -> dict[int, list[Predictions]]:
    """The predictions of one group's members, {parent: in child order}.

    Every member of a (condition, t) group must hold the same test set as the group's first member
    (same example ids, labels and number of classes), since ensembles and between-parent pairs
    compare them example by example.
    """
    group = {q: [read_predictions(m.path) for m in ms] for q, ms in parents.items()}
    ref = next(iter(group.values()))[0]
    for m in (m for members in group.values() for m in members):
        what = None
        if m.log_probs.shape[1] != ref.log_probs.shape[1]:
            what = f"{m.log_probs.shape[1]} classes, not {ref.log_probs.shape[1]}"
        elif not np.array_equal(m.example_id, ref.example_id):
            what = "example ids differ"
        elif not np.array_equal(m.labels, ref.labels):
            what = f"labels differ on {int(np.sum(m.labels != ref.labels))} examples"
        if what:
            raise ArtifactError(
                f"{m.path}: {what} from {ref.path} (every member of {condition} t={t} "
                "must be evaluated on the same test set)"
            )
    return group


# ---------------------------------------------------------------------------------------------------
# Rows


def member_metrics(
    m: Predictions, settings: dict, weights: np.ndarray | None = None, counts: np.ndarray | None = None
) -> dict[str, float] | tuple[dict[str, float], np.ndarray]:
    """accuracy, nll, brier, ece, mace of one member (settings: the config's `metrics`); with the
    (B, N) resample `weights`, also its MACE under each resample: (row, (B,) array)."""
    s = settings
    lp, y = m.log_probs, m.labels
    row = {
        "accuracy": M.accuracy(lp, y),
        "nll": M.nll(lp, y),
        "brier": M.brier(lp, y),
        "ece": M.ece(lp, y, s["ece_bins"]),
    }
    if weights is None:
        return {**row, "mace": M.mace(lp, y, s["mace_bins"])}
    row["mace"], boot = M.mace_and_bootstrap(lp, y, weights, s["mace_bins"], counts)
    return row, boot


def _pair(lp_a: np.ndarray, lp_b: np.ndarray) -> dict:
    return {"sym_kl": M.symmetric_kl(lp_a, lp_b), "disagreement": M.disagreement(lp_a, lp_b)}


def ensemble_metrics(
    members: list[Predictions],
    member_rows: list[dict],
    weights: np.ndarray,
    settings: dict,
    member_boots: list[np.ndarray] | None = None,
    counts: np.ndarray | None = None,
) -> tuple[dict, dict[str, np.ndarray], dict[tuple[int, int], dict], np.ndarray]:
    """One ensemble's row (without keys), its bootstrap statistics {"gain": (B,), "mace_improvement": (B,)}
    and the pairs of its members {(a, b): {"sym_kl", "disagreement"}} (a < b, positions in `members`).

    member_rows are member_metrics of the members; weights the (B, N) draw counts; member_boots the
    members' MACE under each resample, if already computed (`member_metrics` with weights).
    """
    s = settings
    lp = np.stack([m.log_probs for m in members])
    y = members[0].labels
    ens = M.ensemble_log_probs(lp)
    mean = {k: float(np.mean([r[k] for r in member_rows])) for k in ("accuracy", "ece", "mace", "nll", "brier")}
    row = {"ensemble_accuracy": M.accuracy(ens, y), "mean_member_accuracy": mean["accuracy"]}
    row["gain"] = row["ensemble_accuracy"] - mean["accuracy"]
    # Per-example gain: ensemble right minus the fraction of members right; its mean is the gain.
    d = M.correct(ens, y) - np.mean([M.correct(x, y) for x in lp], axis=0)
    boot_gain = weights @ d / len(y)
    row["gain_ci_low"], row["gain_ci_high"] = M.percentile_ci(boot_gain)
    row["ensemble_ece"] = M.ece(ens, y, s["ece_bins"])
    row["ensemble_mace"], ens_boot = M.mace_and_bootstrap(ens, y, weights, s["mace_bins"], counts)
    row["mean_member_mace"] = mean["mace"]
    row["mace_improvement"] = mean["mace"] - row["ensemble_mace"]
    if member_boots is None:
        member_boots = [M.mace_bootstrap(x, y, weights, s["mace_bins"], counts) for x in lp]
    boot_mace = np.mean(member_boots, axis=0) - ens_boot
    row["mace_improvement_ci_low"], row["mace_improvement_ci_high"] = M.percentile_ci(boot_mace)
    row["ensemble_nll"] = M.nll(ens, y)
    pairs = {(a, b): _pair(lp[a], lp[b]) for a, b in combinations(range(len(lp)), 2)}
    row["sym_kl"] = float(np.mean([q["sym_kl"] for q in pairs.values()])) if pairs else float("nan")
    row["disagreement"] = float(np.mean([q["disagreement"] for q in pairs.values()])) if pairs else float("nan")
    row.update(
        mean_member_ece=mean["ece"],
        mean_member_nll=mean["nll"],
        ensemble_brier=M.brier(ens, y),
        mean_member_brier=mean["brier"],
        gain_by_size=M.gain_by_size(lp, y).tolist(),
    )
    return row, {"gain": boot_gain, "mace_improvement": boot_mace}, pairs, ens


def forgetting_rows(tr: MemberTrajectory) -> pd.DataFrame:
    """One member's rows: one per evaluation point; epoch counts from the member's first point."""
    events = M.forgetting_events(tr.correct)
    e = len(tr.steps)
    return pd.DataFrame(
        {
            "condition": [tr.condition] * e,
            "t": tr.t,
            "parent": tr.parent,
            "child": tr.child,
            "step": tr.steps,
            "epoch": (tr.steps - tr.steps[0]) / tr.steps_per_epoch,
            "accuracy": tr.correct.mean(axis=1),
            "events": events,
            "cumulative_events": np.cumsum(events),
        }
    )


def forgetting_table(trajectories: Iterable[MemberTrajectory]) -> tuple[pd.DataFrame, list[MemberFile]]:
    """The forgetting table of the trajectories (any iterable: each is used once and dropped), and each
    one's member and provenance."""
    parts: list[pd.DataFrame] = []
    seen: list[MemberFile] = []
    paths: dict[tuple[str, int, int, int], str] = {}
    for tr in trajectories:
        if tr.key in paths:
            raise ArtifactError(f"{tr.path}: member {tr.key} is also in {paths[tr.key]}")
        paths[tr.key] = tr.path
        seen.append(MemberFile(tr.path, tr.condition, tr.t, tr.parent, tr.child, tr.steps_per_epoch, tr.config_hash))
        parts.append(forgetting_rows(tr))
    if not parts:
        return _empty(FORGETTING_SCHEMA), seen
    return _typed(pd.concat(parts, ignore_index=True), FORGETTING_SCHEMA), seen


def _empty(schema: pa.Schema) -> pd.DataFrame:
    return schema.empty_table().to_pandas()


def _typed(df: pd.DataFrame, schema: pa.Schema) -> pd.DataFrame:
    """df with exactly the schema's columns, in its order, with its integer widths."""
    df = df[schema.names].copy()
    for f in schema:
        if pa.types.is_integer(f.type):
            df[f.name] = df[f.name].astype(f.type.to_pandas_dtype())
    return df


def _forgetting_per_member(forgetting: pd.DataFrame, epochs: float | None) -> pd.DataFrame:
    """Cumulative events over the first `epochs` epochs of each member's span. None: the longest span
    every member of the experiment has, so that every row counts events over the same span (a child
    coupled to t trains T - t steps, fewer than an independent run; its whole span would count fewer
    events by construction)."""
    if epochs is None and not forgetting.empty:
        epochs = float(forgetting.groupby(["condition", "t", "parent", "child"], observed=True)["epoch"].max().min())
    f = forgetting if epochs is None else forgetting[forgetting["epoch"] <= epochs + 1e-9]
    return f.groupby(["condition", "t", "parent", "child"], sort=False)["events"].sum().reset_index()


# ---------------------------------------------------------------------------------------------------
# All tables


def _group_rows(
    condition: str,
    t: int,
    spe: int,
    parents: dict[int, list[Predictions]],
    weights: dict[int, tuple[np.ndarray, np.ndarray]],
    settings: dict,
    out: dict[str, list[dict]],
) -> None:
    """Append the member, ensemble, pair and summary rows of one (condition, t) group to `out`.
    weights: (B, N) draw counts and `metrics.draw_counts` of them, by N (made at first need)."""
    base = {"condition": condition, "t": t}
    n = len(next(iter(parents.values()))[0].labels)
    if n not in weights:
        w = M.bootstrap_weights(n, settings["bootstrap"])
        weights[n] = (w, M.draw_counts(w))
    w, counts = weights[n]
    member_rows: dict[int, list[dict]] = {}  # by parent, in child order
    member_boots: dict[int, list[np.ndarray]] = {}
    for q, ms in parents.items():
        # with resample weights, member_metrics returns (row, bootstrap)
        got = [cast(tuple[dict, np.ndarray], member_metrics(m, settings, w, counts)) for m in ms]
        member_rows[q], member_boots[q] = [r for r, _ in got], [b for _, b in got]
    ensembles = [ensemble_metrics(parents[q], member_rows[q], w, settings, member_boots[q], counts) for q in parents]
    ens_lp, group_rows, boots = {}, [], []
    for (parent, ms), (row, boot, pairs, ens_lp[parent]) in zip(parents.items(), ensembles):
        out["members"] += [
            {**base, "parent": parent, "child": m.child, "t_epoch": t / spe, **r, "reinit_percent": m.reinit_percent}
            for m, r in zip(ms, member_rows[parent])
        ]
        group_rows.append(row)
        boots.append(boot)
        out["ensembles"].append(
            {
                **base,
                "parent": parent,
                "k": len(ms),
                "t_epoch": t / spe,
                **row,
                "reinit_percent": float(np.mean([m.reinit_percent for m in ms])),
            }
        )
        for (a, b), pair in pairs.items():
            out["pairs"].append(
                {
                    **base,
                    "kind": "same-parent",
                    "parent_a": parent,
                    "child_a": ms[a].child,
                    "parent_b": parent,
                    "child_b": ms[b].child,
                    **pair,
                }
            )
    between = [
        {
            **base,
            "kind": "between-parents",
            "parent_a": a,
            "child_a": -1,
            "parent_b": b,
            "child_b": -1,
            **_pair(ens_lp[a], ens_lp[b]),
        }
        for a, b in combinations(ens_lp, 2)
    ]
    out["pairs"] += between
    out["summary"].append(_summary_row(condition, t, spe, parents, group_rows, boots, between))


# One set of resamples per test-set size, made at a process's first need and kept for its other groups.
_WEIGHTS: dict[int, tuple] = {}


_LIMITS: list[object] = []  # the worker's BLAS limit, held for its life


def _one_process() -> None:
    """A worker process: BLAS on one thread, for the process's life (as `group_pool` holds the job's):
    a multi-threaded product splits its sums differently and moved MACE intervals by up to 1e-13."""
    from threadpoolctl import threadpool_limits

    _LIMITS.append(threadpool_limits(limits=1, user_api="blas"))


def group_tables(
    condition: str, t: int, spe: int, parents: dict[int, list[MemberFile]], settings: dict
) -> tuple[dict[str, list[dict]], float]:
    """Read one (condition, t) group's logits and compute its rows: ({"members", "ensembles", "pairs",
    "summary"}: rows, seconds). Runs in the job's process or in a
    worker process (`group_pool`); either way on one core, so the rows are the same bit for bit."""
    tick = time.perf_counter()
    group = read_group(condition, t, parents)
    out: dict[str, list[dict]] = {"members": [], "ensembles": [], "pairs": [], "summary": []}
    _group_rows(condition, t, spe, group, _WEIGHTS, settings, out)
    return out, time.perf_counter() - tick


def _group_task(args: tuple) -> tuple[dict[str, list[dict]], float]:
    return group_tables(*args)


@contextmanager
def group_pool(workers: int) -> Iterator[Callable[..., Iterator]]:
    """A map over `workers` processes (the builtin map for one) for `group_tables`: the MACE bootstrap
    holds the GIL in its indexing, so threads of one process did not overlap; processes do. Each worker
    holds one group's logits at a time (and the resamples of each test-set size)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        if workers <= 1:
            yield map
            return
        import multiprocessing

        # spawn, not fork: a forked copy of a process that runs BLAS or reader threads can deadlock
        with ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context("spawn"), initializer=_one_process
        ) as pool:
            yield pool.map


def _flag_diverged(rows: list[dict], members: list[MemberFile]) -> None:
    """Each member row's `diverged`: its finite training loss rose above its bound
    (`engine.training.loss_bound`; the member file's `blew_up`). Low accuracy is not divergence."""
    blew_up = {m.key for m in members if getattr(m, "blew_up", None) is not None}
    for row in rows:
        row["diverged"] = (row["condition"], row["t"], row["parent"], row["child"]) in blew_up


def _summary(rows: list[dict], members: list[dict], forgetting: pd.DataFrame, epochs: float | None) -> pd.DataFrame:
    """The summary rows with the forgetting events and the count of diverged members added."""
    summary = pd.DataFrame(rows)
    flagged = (
        pd.DataFrame(members, columns=["condition", "t", "diverged"]).groupby(["condition", "t"])["diverged"].sum()
    )
    per_member = _forgetting_per_member(forgetting, epochs)
    per_parent = per_member.groupby(["condition", "t", "parent"], sort=False)["events"].mean()
    fe = per_member.groupby(["condition", "t"])["events"].mean()
    fs = per_parent.groupby(level=["condition", "t"]).std()
    index = pd.MultiIndex.from_frame(summary[["condition", "t"]])
    summary["forgetting_events"] = fe.reindex(index).to_numpy()
    summary["forgetting_events_std"] = fs.reindex(index).to_numpy()
    summary["n_diverged"] = flagged.reindex(index).fillna(0).astype(int).to_numpy()
    return summary[SUMMARY_COLUMNS]


def compute_tables(
    members: list[MemberFile],
    trajectories: Iterable[MemberTrajectory],
    settings: dict,
    log: Callable[[str], None] | None = None,
    threads: int = 1,
) -> dict[str, pd.DataFrame]:
    """All metric tables: {"members", "ensembles", "pairs", "forgetting", "summary"} as DataFrames.

    members: the predictions files (`read.read_member_file`), whose logits are read group by group;
    trajectories: any iterable of `MemberTrajectory`, used once each; threads: the worker processes
    that compute the groups (`group_pool`), while this process reads the trajectories.
    settings: the config's `metrics` section (bootstrap, ece_bins, mace_bins, forgetting_epochs)."""
    log = log or (lambda line: None)
    if not members:
        raise ArtifactError("no prediction files given")
    spe = steps_per_epoch(list(members))
    groups = group_members(members)
    out: dict[str, list[dict]] = {"members": [], "ensembles": [], "pairs": [], "summary": []}
    with group_pool(threads) as pmap:
        results = pmap(_group_task, [(c, t, spe, parents, settings) for (c, t), parents in groups.items()])
        # workers compute while this process reads the trajectories (the builtin map waits for them)
        forgetting, seen = forgetting_table(trajectories)
        for ((condition, t), parents), (rows, seconds) in zip(groups.items(), results):
            for name in out:
                out[name] += rows[name]
            log(
                f"{condition} t={t}: {len(parents)} parents, {sum(map(len, parents.values()))} members, {seconds:.2f} s"
            )
    steps_per_epoch(list(members) + seen)
    rows, pairs = out["members"], out["pairs"]
    _flag_diverged(rows, members)
    return {
        "members": _typed(pd.DataFrame(rows), MEMBERS_SCHEMA) if rows else _empty(MEMBERS_SCHEMA),
        "ensembles": _typed(pd.DataFrame(out["ensembles"]), ENSEMBLES_SCHEMA),
        "pairs": _typed(pd.DataFrame(pairs), PAIRS_SCHEMA) if pairs else _empty(PAIRS_SCHEMA),
        "forgetting": forgetting,
        "summary": _summary(out["summary"], rows, forgetting, settings["forgetting_epochs"]),
    }


def _summary_row(
    condition: str,
    t: int,
    spe: int,
    parents: dict[int, list[Predictions]],
    rows: list[dict],
    boots: list[dict[str, np.ndarray]],
    between: list[dict],
) -> dict:
    """One (condition, t): means over parents; std over parents (ddof=1, nan for one parent); the
    intervals bootstrap the parent-averaged statistic (the same resamples for every parent)."""

    def mean(key: str) -> float:
        return float(np.mean([r[key] for r in rows]))

    def std(key: str) -> float:
        return float(np.std([r[key] for r in rows], ddof=1)) if len(rows) > 1 else float("nan")

    out = {
        "condition": condition,
        "t": t,
        "t_epoch": t / spe,
        "n_parents": len(parents),
        "n_members": sum(map(len, parents.values())),
        "ensemble_accuracy": mean("ensemble_accuracy"),
        "mean_member_accuracy": mean("mean_member_accuracy"),
    }
    for key in ("gain", "mace_improvement"):
        lo, hi = M.percentile_ci(np.mean([b[key] for b in boots], axis=0))
        out.update({key: mean(key), f"{key}_std": std(key), f"{key}_ci_low": lo, f"{key}_ci_high": hi})
    out["sym_kl_same_parent"] = mean("sym_kl")
    out["sym_kl_between_parents"] = float(np.mean([b["sym_kl"] for b in between])) if between else float("nan")
    out["disagreement"] = mean("disagreement")
    out["disagreement_between_parents"] = (
        float(np.mean([b["disagreement"] for b in between])) if between else float("nan")
    )
    return out
