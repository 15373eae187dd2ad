"""The paper's claims, each checked on an experiment's metric tables with a stated rule (docs/design.md,
"Claims").

One row per claim (CLAIMS): the figure it belongs to, the claim in words, the statistic, its value on
the experiment, its 95% interval and how it is made, the test, the number of independent units, the
test's p-value, the rule that turns it into a verdict (`supported`, `not supported` or `inconclusive`)
and, where the experiment cannot decide, the reason. The tests and the rules are those of `estimates`;
this module holds which claim reads which table, with which test.

The unit of every test is the independent training unit, never the test example: parents (an ensemble
is one parent's children) and independent runs (parent, child) for the no-coupling forgetting curve
(as fig1g). A trend over t within parents is the mean over parents of each parent's own Spearman rho
between t and its curve, tested by permuting the spawn steps within each parent (Page's L test, parents
as blocks); the between-parent KL, whose pairs of parents share parents, is the rho of the mean curve
over pairs, its spawn steps permuted alike for every pair. A difference of conditions is
paired by parent where both come from the same parents or the same seeds (re-initialisation against
coupled-to-t-reset; coupled-order against no-coupling, whose members start from the same
initialisations), Welch's t over independent groups otherwise (coupled members against no-coupling).

Margins of the equivalence and non-inferiority rules: ACCURACY_MARGIN (1 accuracy point, a third of the
default experiment's no-coupling ensemble gain) and MACE_MARGIN (0.1 MACE points, a third of its
no-coupling MACE improvement).

A claim whose inputs the experiment lacks (a condition not run, one parent, fewer than 3 spawn steps, no
barrier table rows) is `inconclusive` with the reason, never an error. Every function here is pure pandas
and numpy over the tables of the metrics and barriers stages; the job is `jobs.analysis.check_claims`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..core.conditions import BARRIER_REFERENCE, REFERENCE
from .aggregate import cumulative_forgetting, reinit_condition
from .instability import barrier_per_parent
from .estimates import VERDICTS  # noqa: F401 (the claims table's verdicts, for its readers)
from .estimates import (
    INCONCLUSIVE,
    N_PERMUTATIONS,
    NOT_SUPPORTED,
    SUPPORTED,
    Estimate,
    decide,
    direction_rule,
    early_excess,
    equivalence_rule,
    joint_trend,
    lacking,
    noninferiority_rule,
    one_sample,
    paired,
    trend,
    unit_curves,
    welch,
)

ACCURACY_MARGIN = 0.01
MACE_MARGIN = 0.001
EARLY_FRACTION = 0.25  # fig1g: the first quarter of training against the rest

NO_COUPLING, ORDER, TO_T, RESET = REFERENCE, "coupled-order", "coupled-to-t", BARRIER_REFERENCE

Tables = dict[str, pd.DataFrame]
Check = Callable[[Tables, int], Estimate]  # (tables, n_perm) -> Estimate

COLUMNS = [
    "claim",
    "figure",
    "text",
    "statistic",
    "value",
    "ci_low",
    "ci_high",
    "interval",
    "test",
    "n_units",
    "p_value",
    "rule",
    "verdict",
    "reason",
]


# ---------------------------------------------------------------------------------------------------
# Selections


def _of(df: pd.DataFrame, condition: str) -> pd.DataFrame:
    return df[df["condition"] == condition]


def reinit_conditions(df: pd.DataFrame) -> pd.DataFrame:
    """condition, side, percent, t of the re-initialisation conditions in df."""
    keys = df[["condition", "t"]].drop_duplicates()
    parsed = [reinit_condition(c) for c in keys["condition"]]
    out = keys.loc[[c is not None for c in parsed]].copy()
    out["side"] = [c.side for c in parsed if c is not None]
    out["percent"] = pd.Series([c.percent for c in parsed if c is not None], index=out.index, dtype=float)
    return out.reset_index(drop=True)


def _per_parent(df: pd.DataFrame, condition: str, t: int, value: str) -> pd.Series:
    rows = df[(df["condition"] == condition) & (df["t"] == t)]
    return rows.groupby("parent", observed=True)[value].mean()


def _missing(*conditions: str) -> str:
    return f"no {' / '.join(conditions)} rows in this experiment"


def _cumulative_forgetting(forgetting: pd.DataFrame) -> pd.DataFrame:
    return cumulative_forgetting(forgetting, [RESET])[0]


# ---------------------------------------------------------------------------------------------------
# The claims


def _gain_falls(condition: str) -> Check:
    def check(tables: Tables, n_perm: int) -> Estimate:
        rows = _of(tables["ensembles"], condition)
        if rows.empty:
            return lacking(_missing(condition))
        return trend(unit_curves(rows, "gain", "parent"), "parents", n_perm)

    return check


def _order_equivalent(value: str) -> Check:
    def check(tables: Tables, n_perm: int) -> Estimate:
        e = tables["ensembles"]
        a, b = _of(e, ORDER), _of(e, NO_COUPLING)
        if a.empty or b.empty:
            return lacking(_missing(ORDER, NO_COUPLING))
        # member (p, c) of both conditions starts from the same initialisation: paired by parent
        return paired(a.groupby("parent")[value].mean(), b.groupby("parent")[value].mean(), "parents")

    return check


def _members_not_worse(tables: Tables, n_perm: int) -> Estimate:
    m = tables["members"]
    coupled = m[m["condition"].isin([TO_T, RESET])]
    ref = _of(m, NO_COUPLING)
    if coupled.empty or ref.empty:
        return lacking(_missing(f"{TO_T} and {RESET}", NO_COUPLING))
    return welch(coupled.groupby("parent")["accuracy"].mean(), ref.groupby("parent")["accuracy"].mean(), "parents")


def _kl_trend(curves: pd.DataFrame, n_perm: int) -> Estimate:
    return trend(curves, "parents", n_perm)


def _kl_early_excess(curves: pd.DataFrame, n_perm: int) -> Estimate:
    return early_excess(curves, "parents")


def _same_parent_kl(statistic: Callable[[pd.DataFrame, int], Estimate]) -> Check:
    def check(tables: Tables, n_perm: int) -> Estimate:
        p = tables["pairs"]
        rows = _of(p[p["kind"] == "same-parent"], RESET)
        if rows.empty:
            return lacking(_missing(RESET) + " with two children or more")
        return statistic(unit_curves(rows, "sym_kl", "parent_a"), n_perm)

    return check


def _between_parent_kl(tables: Tables, n_perm: int) -> Estimate:
    p = tables["pairs"]
    rows = _of(p[p["kind"] == "between-parents"], RESET)
    if rows.empty:
        return lacking(_missing(RESET) + " with two parents or more")
    curves = unit_curves(rows, "sym_kl", ["parent_a", "parent_b"])
    parents = set(curves.index.get_level_values(0)) | set(curves.index.get_level_values(1))
    return joint_trend(curves, len(parents), n_perm)


def _forgetting_early(tables: Tables, n_perm: int) -> Estimate:
    f = _of(tables["forgetting"], NO_COUPLING)
    f = f[f["epoch"] > 0]  # no event can happen at the first evaluation point
    if f.empty:
        return lacking(_missing(NO_COUPLING))
    curves = unit_curves(f, "events", ["parent", "child"], x="epoch")
    epochs = curves.columns.to_numpy(dtype=float)
    early = epochs <= EARLY_FRACTION * epochs.max()
    if early.sum() < 1 or (~early).sum() < 1:
        return lacking(f"{len(epochs)} evaluation point(s) after the first: too few to split", len(curves))
    values = curves.to_numpy(dtype=float)
    # no-coupling runs share no stream, so each run is an independent unit
    return one_sample(values[:, early].mean(axis=1) - values[:, ~early].mean(axis=1), "runs")


def _cumulative_forgetting_falls(tables: Tables, n_perm: int) -> Estimate:
    f = tables["forgetting"]
    if _of(f, RESET).empty:
        return lacking(_missing(RESET))
    return trend(unit_curves(_cumulative_forgetting(f), "cumulative_events", "parent"), "parents", n_perm)


def _reinit_low_beats_high(tables: Tables, n_perm: int) -> Estimate:
    e = tables["ensembles"]
    r = reinit_conditions(e)
    low, high = r[r["side"] == "low"], r[r["side"] == "high"]
    both = low.merge(high, on=["t", "percent"], suffixes=("_low", "_high"))
    if both.empty:
        return lacking("no percent and step run both as reinit-low and reinit-high")
    diffs = [
        _per_parent(e, row.condition_low, row.t, "gain") - _per_parent(e, row.condition_high, row.t, "gain")
        for row in both.itertuples()
    ]
    per_parent = pd.concat(diffs, axis=1).mean(axis=1, skipna=False)
    return one_sample(per_parent, "parents", "paired t over parents")


def _against_reset(df: pd.DataFrame, value: str) -> dict[str, Estimate]:
    """Each re-initialisation condition minus coupled-to-t-reset at its step, paired by parent."""
    out = {}
    for row in reinit_conditions(df).itertuples():
        out[row.condition] = paired(
            _per_parent(df, row.condition, row.t, value), _per_parent(df, RESET, row.t, value), "parents"
        )
    return out


def _reinit_calibration_small(tables: Tables, n_perm: int) -> Estimate:
    e = tables["ensembles"]
    if reinit_conditions(e).empty or _of(e, RESET).empty:
        return lacking(_missing("reinit-low/high", RESET))
    each = {c: decide(x, "equivalence", margin=MACE_MARGIN) for c, x in _against_reset(e, "ensemble_mace").items()}
    return every_condition(each, "equivalent")


def every_condition(each: dict[str, Estimate], what: str) -> Estimate:
    """A claim about every condition of `each` (each one's decided estimate), as an intersection-union
    test: supported only when every condition is tested and supported (at ALPHA with the largest p, no
    correction), not supported when any tested one is not, else inconclusive. A condition that could
    not be tested (its estimate has a reason) is named: without it "every" is not shown."""
    usable = {c: x for c, x in each.items() if not x.reason}
    untested = {c: x.reason for c, x in each.items() if x.reason}
    if not usable:
        return lacking(
            "no condition could be tested: " + "; ".join(f"{c}: {r}" for c, r in untested.items()),
            max(x.n_units for x in each.values()),
            next(iter(each.values())).test,
        )
    worst = max(usable, key=lambda c: abs(usable[c].value))
    out = Estimate(**vars(usable[worst]))
    verdicts = {x.verdict for x in usable.values()}
    out.reason = f"largest difference: {worst}; per condition: " + ", ".join(
        f"{c} {x.verdict} (p {x.p_value:.2g})" for c, x in usable.items()
    )
    out.p_value = max(x.p_value for x in usable.values())
    if untested:
        out.reason += "; untested: " + "; ".join(f"{c} ({r})" for c, r in untested.items())
    if NOT_SUPPORTED in verdicts:
        out.verdict = NOT_SUPPORTED
    elif untested:
        # the tested ones cannot speak for the rest: no verdict, and no p-value, on "every"
        out.verdict, out.p_value = INCONCLUSIVE, float("nan")
        out.reason = (
            f"{len(untested)} of {len(each)} conditions untested ({', '.join(untested)}), so it is not "
            f"shown that every one is {what}; " + out.reason
        )
    else:
        out.verdict = SUPPORTED if verdicts == {SUPPORTED} else INCONCLUSIVE
    return out


def _reinit_barrier(tables: Tables, n_perm: int) -> Estimate:
    b = tables["barriers"]
    if b.empty or reinit_conditions(b).empty or _of(b, RESET).empty:
        return lacking("no error barriers of re-initialised and coupled-to-t-reset children")
    per_pair = b.groupby(["condition", "t", "parent", "child_a", "child_b"], as_index=False, observed=True)[
        "barrier"
    ].mean()
    r = reinit_conditions(per_pair)
    diffs = [
        _per_parent(per_pair, row.condition, row.t, "barrier") - _per_parent(per_pair, RESET, row.t, "barrier")
        for row in r.itertuples()
    ]
    per_parent = pd.concat(diffs, axis=1).mean(axis=1, skipna=False)
    return one_sample(per_parent, "parents", "paired t over parents")


def _barrier_falls(tables: Tables, n_perm: int) -> Estimate:
    rows = _of(tables["barriers"], TO_T)
    if rows.empty:
        return lacking(f"no error barriers of {TO_T} children (barrier.spawn_steps: none, or one child)")
    return trend(unit_curves(barrier_per_parent(rows), "barrier", "parent"), "parents", n_perm)


def _gain_past_onset(tables: Tables, n_perm: int) -> Estimate:
    onset = _of(tables["onset"], TO_T)
    gains = _of(tables["ensembles"], TO_T)
    if onset.empty or gains.empty:
        return lacking(_missing(TO_T) + " with barriers and ensembles")
    reached = onset[np.isfinite(onset["onset"].to_numpy(dtype=float))]
    if reached.empty:
        threshold = float(onset["threshold"].iloc[0])
        return lacking(
            f"no parent's barrier stays below {threshold:g} up to the last spawn step: no onset step, nothing past it",
            len(onset),
        )
    past = gains.merge(reached[["parent", "onset"]], on="parent")
    past = past[past["t"] >= past["onset"]]
    # each parent's mean gain over its spawn steps past its own onset: one value per parent
    return one_sample(past.groupby("parent")["gain"].mean(), "parents")


@dataclass(frozen=True)
class Claim:
    id: str
    figure: str
    text: str
    statistic: str
    check: Check
    kind: str  # direction, equivalence or noninferiority
    sign: int = 0
    margin: float = 0.0
    unit: str = ""

    def rule(self) -> str:
        if self.kind == "direction":
            return direction_rule(self.sign)
        if self.kind == "equivalence":
            return equivalence_rule(self.margin, self.unit)
        return noninferiority_rule(self.margin, self.unit)

    def decide(self, est: Estimate) -> Estimate:
        return decide(est, self.kind, self.sign, self.margin)


_RHO = "mean over parents of Spearman rho(t, parent's {} curve)"
_RHO_MEAN = "Spearman rho(t, {} averaged over {})"
CLAIMS = [
    Claim(
        "gain-falls",
        "1a",
        "The ensemble's accuracy gain falls as the coupling time t grows (coupled-to-t).",
        _RHO.format("accuracy gain"),
        _gain_falls(TO_T),
        "direction",
        sign=-1,
    ),
    Claim(
        "gain-falls-reset",
        "1b",
        "The accuracy gain falls with t also with the optimizer reset and T further steps (coupled-to-t-reset).",
        _RHO.format("accuracy gain"),
        _gain_falls(RESET),
        "direction",
        sign=-1,
    ),
    Claim(
        "order-same-accuracy",
        "1a-1d",
        "Sharing the minibatch order (coupled-order) gives ensembles as accurate as independent runs (no-coupling).",
        "ensemble accuracy, coupled-order minus no-coupling (mean over parents)",
        _order_equivalent("ensemble_accuracy"),
        "equivalence",
        margin=ACCURACY_MARGIN,
        unit="accuracy points",
    ),
    Claim(
        "order-same-mace",
        "1a-1d",
        "Sharing the minibatch order gives ensembles as well calibrated as independent runs.",
        "ensemble MACE, coupled-order minus no-coupling (mean over parents)",
        _order_equivalent("ensemble_mace"),
        "equivalence",
        margin=MACE_MARGIN,
        unit="MACE points",
    ),
    Claim(
        "members-not-worse",
        "2",
        "Members of the coupled conditions (coupled-to-t, coupled-to-t-reset, every "
        "t) are not less accurate than independently trained ones.",
        "member accuracy, coupled minus no-coupling (mean over parents)",
        _members_not_worse,
        "noninferiority",
        margin=ACCURACY_MARGIN,
        unit="accuracy points",
    ),
    Claim(
        "kl-same-parent-falls",
        "1e",
        "The symmetric KL between children of one parent falls with t (coupled-to-t-reset).",
        _RHO.format("same-parent KL"),
        _same_parent_kl(_kl_trend),
        "direction",
        sign=-1,
    ),
    Claim(
        "kl-same-parent-falls-early",
        "1e",
        "That KL falls fastest early: more before the middle spawn step than a fall linear in t.",
        "KL fall before the middle spawn step minus its linear-in-t share",
        _same_parent_kl(_kl_early_excess),
        "direction",
        sign=+1,
    ),
    Claim(
        "kl-between-parents-rises",
        "1f",
        "The symmetric KL between ensembles of different parents rises with t (coupled-to-t-reset).",
        _RHO_MEAN.format("between-parent KL", "pairs of parents"),
        _between_parent_kl,
        "direction",
        sign=+1,
    ),
    Claim(
        "forgetting-falls-early",
        "1g",
        "Forgetting events per epoch (no-coupling) are more frequent early in training than later.",
        "events per evaluation, first quarter of training minus the rest (mean over runs)",
        _forgetting_early,
        "direction",
        sign=+1,
    ),
    Claim(
        "cumulative-forgetting-falls",
        "1h",
        "Cumulative forgetting events after the spawn fall with t (coupled-to-t-reset).",
        _RHO.format("cumulative forgetting events"),
        _cumulative_forgetting_falls,
        "direction",
        sign=-1,
    ),
    Claim(
        "reinit-low-beats-high",
        "1i",
        "Re-initialising low layers restores more accuracy gain than re-initialising high layers.",
        "accuracy gain, reinit-low minus reinit-high (mean over percents, paired by parent)",
        _reinit_low_beats_high,
        "direction",
        sign=+1,
    ),
    Claim(
        "reinit-calibration-small",
        "1j",
        "Re-initialising changes ensemble calibration little: every "
        "reinit condition's ensemble MACE is within the margin of coupled-to-t-reset's.",
        "ensemble MACE, reinit minus coupled-to-t-reset (the condition farthest from 0, paired by parent)",
        _reinit_calibration_small,
        "equivalence",
        margin=MACE_MARGIN,
        unit="MACE points",
    ),
    Claim(
        "reinit-opens-barrier",
        "3",
        "Re-initialising opens an error barrier between children that coupled-to-t-reset children do not have.",
        "error barrier, reinit minus coupled-to-t-reset (mean over reinit conditions, paired by parent)",
        _reinit_barrier,
        "direction",
        sign=+1,
    ),
    Claim(
        "barrier-falls",
        "4",
        "The error barrier between two children of one parent falls as the coupling "
        "time t grows (coupled-to-t; instability analysis).",
        _RHO.format("error barrier"),
        _barrier_falls,
        "direction",
        sign=-1,
    ),
    Claim(
        "gain-zero-past-onset",
        "4",
        "Past the onset step (the barrier stays below the threshold) the "
        "ensemble gain is within the accuracy margin of 0 (coupled-to-t).",
        "accuracy gain at the spawn steps from each parent's onset on (mean over them, then over parents)",
        _gain_past_onset,
        "equivalence",
        margin=ACCURACY_MARGIN,
        unit="accuracy points",
    ),
]
CLAIM_IDS = [c.id for c in CLAIMS]


def claims_table(tables: dict[str, pd.DataFrame], n_perm: int = N_PERMUTATIONS) -> pd.DataFrame:
    """One row per claim of CLAIMS. tables: members, ensembles, pairs, forgetting (metrics stage) and
    barriers (barriers stage) as DataFrames; a missing one counts as empty. n_perm: the random
    arrangements of a permutation test too large to enumerate."""
    rows = []
    for claim in CLAIMS:
        est = claim.decide(claim.check({k: _plain(tables.get(k), k) for k in TABLE_COLUMNS}, n_perm))
        rows.append(
            {
                "claim": claim.id,
                "figure": claim.figure,
                "text": claim.text,
                "statistic": claim.statistic,
                "value": est.value,
                "ci_low": est.ci_low,
                "ci_high": est.ci_high,
                "interval": est.interval,
                "test": est.test,
                "n_units": est.n_units,
                "p_value": est.p_value,
                "rule": claim.rule(),
                "verdict": est.verdict,
                "reason": est.reason,
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)


# The columns each check reads, by table; a table (or column) that is absent reads as empty (NaN).
TABLE_COLUMNS = {
    "members": ["condition", "t", "parent", "child", "accuracy"],
    "ensembles": ["condition", "t", "parent", "gain", "ensemble_accuracy", "ensemble_mace"],
    "pairs": ["condition", "t", "kind", "parent_a", "parent_b", "sym_kl"],
    "forgetting": ["condition", "t", "parent", "child", "epoch", "events", "cumulative_events"],
    "barriers": ["condition", "t", "parent", "child_a", "child_b", "barrier"],
    "onset": ["condition", "parent", "onset", "threshold"],
}


def _plain(df: pd.DataFrame | None, name: str) -> pd.DataFrame:
    """df with categorical string columns made plain and the columns it lacks added as NaN."""
    if df is None:
        df = pd.DataFrame(
            {c: pd.Series(dtype=str if c in ("condition", "kind") else float) for c in TABLE_COLUMNS[name]}
        )
    cats = [c for c in ("condition", "kind") if c in df.columns and df[c].dtype.name == "category"]
    missing = [c for c in TABLE_COLUMNS[name] if c not in df.columns]
    return df.assign(**{c: df[c].astype(str) for c in cats}, **dict.fromkeys(missing, np.nan))


def markdown(table: pd.DataFrame) -> str:
    """The claims as a Markdown table (docs/claims.md's findings quote it; tests/test_docs.py checks)."""

    def num(x: float) -> str:
        return "" if pd.isna(x) else f"{x:.3g}"

    lines = [
        "| claim | fig. | statistic | value | 95% interval | test | units | p | verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in table.itertuples():
        interval = f"[{num(r.ci_low)}, {num(r.ci_high)}]" if pd.notna(r.ci_low) else ""
        verdict = r.verdict + (
            f" ({r.reason})" if r.verdict == INCONCLUSIVE and r.reason and pd.isna(r.p_value) else ""
        )
        lines.append(
            f"| {r.text} | {r.figure} | {r.statistic} | {num(r.value)} | {interval} | {r.test} | "
            f"{r.n_units} | {num(r.p_value)} | {verdict} |"
        )
    return "\n".join(lines) + "\n"
