"""What the figures show, as data: the selections and averages behind every figure of docs/design.md,
"Figures" (pandas only; drawing is `draw`, the registry `figures`).

A value is first averaged within a parent (over its children, or its pairs of children), then taken
as the mean over parents with its standard deviation (ddof 1, so one parent gives nan) and the count of
parents (`parent_stats`); the unit can also be a pair of parents or an independent run.

Every function takes and returns DataFrames and works through their methods: pandas itself is never
imported here at module level, so the figure registry that imports this module stays cheap to import.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from ..core.conditions import REFERENCE, REGISTRY, Condition, parse_condition
from ..core.errors import ArtifactError, ConfigError

if TYPE_CHECKING:
    import pandas as pd


def is_empty(df: pd.DataFrame | None) -> bool:
    return df is None or len(df) == 0


def require(df: pd.DataFrame, table: str, columns: Iterable[str]) -> pd.DataFrame:
    """`df` checked for `columns`, with categorical (Parquet dictionary) string columns made plain."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        where = df.attrs.get("source", f"{table} table")
        raise ArtifactError(f"{where}: missing column(s) {', '.join(missing)} (has: {', '.join(map(str, df.columns))})")
    cats = [c for c in ("condition", "kind") if c in df.columns and df[c].dtype.name == "category"]
    if cats:
        df = df.assign(**{c: df[c].astype(str) for c in cats})
    return df


def rows(df: pd.DataFrame, condition: str) -> pd.DataFrame:
    return df[df["condition"] == condition]


def largest_k(ensembles: pd.DataFrame) -> pd.DataFrame:
    """One row per (condition, t, parent): the full ensemble, should a table hold several sizes."""
    if "k" not in ensembles.columns or ensembles.empty:
        return ensembles
    top = ensembles.groupby(["condition", "t", "parent"], observed=True)["k"].transform("max")
    return ensembles[ensembles["k"] == top]


def ensemble_size(ensembles: pd.DataFrame) -> int | None:
    """The largest ensemble size of the table, None if it has no rows or no `k`."""
    return int(ensembles["k"].max()) if "k" in ensembles.columns and len(ensembles) else None


def parent_stats(df: pd.DataFrame, by: Sequence[str], value: str, unit: Sequence[str] = ("parent",)) -> pd.DataFrame:
    """Mean of `value` within each (by, unit), then mean, std (ddof 1) and count over units per `by`."""
    by, unit = list(by), list(unit)
    inner = df.groupby(by + unit, dropna=False, observed=True)[value].mean().reset_index()
    out = inner.groupby(by, dropna=False, observed=True)[value].agg(mean="mean", std="std", n="count")
    return out.reset_index()


def overall_stats(df: pd.DataFrame, value: str, unit: Sequence[str] = ("parent",)) -> tuple[float, float, int]:
    """(mean, std, n) of `value` over units, each unit's rows averaged first: a reference level."""
    s = parent_stats(df.assign(_all=0), ["_all"], value, unit).iloc[0]
    return float(s["mean"]), float(s["std"]), int(s["n"])


def reinit_condition(condition: str) -> Condition | None:
    """The registry's condition for a re-initialisation name, None for any other name."""
    try:
        c = parse_condition(condition)
    except ConfigError:
        return None
    return c if c.reinit else None


def reinit_rows(df: pd.DataFrame, realised: pd.DataFrame | None = None) -> pd.DataFrame:
    """The re-initialisation rows, with `side` (low/high) and `requested` percent parsed from the
    condition, and `percent` the share really re-drawn: the mean over the condition's members of the
    `reinit_percent` column of `df` (or of `realised`, a table that has it), the request where neither
    has it (tables written before it was recorded)."""
    parsed = [reinit_condition(c) for c in df["condition"]]
    keep = [c is not None for c in parsed]
    out = df.loc[keep].copy()
    out["side"] = [c.side for c in parsed if c is not None]
    out["requested"] = [float(c.percent) for c in parsed if c is not None]
    out["requested"] = out["requested"].astype(float)
    out["percent"] = out["requested"]
    source = df if "reinit_percent" in df.columns else realised
    if source is not None and "reinit_percent" in source.columns and not out.empty:
        got = out["condition"].map(source.groupby("condition")["reinit_percent"].mean())
        out["percent"] = got.where(got.notna(), out["requested"]).astype(float)
    return out


def family(condition: str) -> str:
    """What a figure colours by: the condition without its percent."""
    c = reinit_condition(condition)
    return c.family if c is not None else condition


def condition_order(condition: str) -> tuple[int, float, str]:
    """Sort key: the registry's conditions in its order, then reinit-low, reinit-high by percent."""
    base = list(REGISTRY)
    c = reinit_condition(condition)
    if c is not None:
        return (len(base) + (c.side == "high"), c.percent, condition)
    return (base.index(condition) if condition in base else len(base) + 2, 0.0, condition)


def epoch_map(*frames: pd.DataFrame | None) -> dict[int, float]:
    """t -> t_epoch from any frame that has both columns."""
    out: dict[int, float] = {}
    for df in frames:
        if df is None or is_empty(df) or "t" not in df.columns or "t_epoch" not in df.columns:
            continue
        for t, e in df.groupby("t")["t_epoch"].first().items():
            out.setdefault(int(t), float(e))
    return out


def fmt_epoch(e: float) -> str:
    return f"{e:.3g}"


def t_label(t: int, epochs: dict[int, float], sep: str = "\n") -> str:
    """'180\\n(12 ep)'; '0\\n(init)'; the step alone when the epoch is unknown."""
    t = int(t)
    if t == 0:
        return f"0{sep}(init)"
    e = epochs.get(t)
    if e is None or e != e:
        return str(t)
    return f"{t}{sep}({fmt_epoch(e)} ep)"


def cumulative_forgetting(
    forgetting: pd.DataFrame, conditions: Iterable[str], epochs: float | None = None
) -> tuple[pd.DataFrame, float | None]:
    """Per member of `conditions`: its cumulative forgetting events at the last evaluation point with
    epoch <= E (epochs since the member's first evaluation point, i.e. since the spawn). E defaults to the
    largest epoch every one of these members reached. Returns (frame of condition, t, parent, child,
    cumulative_events, epoch), E)."""
    keys = ["condition", "t", "parent", "child"]
    rows_ = forgetting[forgetting["condition"].isin(list(conditions))]
    if rows_.empty:
        return rows_[keys + ["cumulative_events", "epoch"]], epochs
    if epochs is None:
        epochs = float(rows_.groupby(keys, observed=True)["epoch"].max().min())
    within = rows_[rows_["epoch"] <= epochs + 1e-9]
    last = within.sort_values(keys + ["epoch"]).groupby(keys, observed=True).tail(1)
    return last[keys + ["cumulative_events", "epoch"]].reset_index(drop=True), epochs


def forgetting_per_epoch(forgetting: pd.DataFrame, condition: str = REFERENCE) -> pd.DataFrame | None:
    """Forgetting events of `condition` by epoch, mean/std/n over independent runs (parent, child); the
    first point (epoch 0) left out, since no event can happen there."""
    rows_ = rows(forgetting, condition)
    rows_ = rows_[rows_["epoch"] > 0]
    if rows_.empty:
        return None
    return parent_stats(rows_, ["epoch"], "events", unit=("parent", "child")).sort_values("epoch")


def barrier_per_pair(barriers: pd.DataFrame) -> pd.DataFrame:
    """One row per pair of children: the pair's barrier (the table repeats it on every point alpha)."""
    keys = ["condition", "t", "parent", "child_a", "child_b"]
    return barriers.groupby(keys, as_index=False, observed=True)["barrier"].mean()


def member_groups(members: pd.DataFrame) -> tuple[list[str], list[str], pd.DataFrame]:
    """The (condition, t) groups of the members in figure order, and each row's group and family.

    Returns (order: the group labels, in order; families: the groups' families, each once, in that
    order; data: members with `group` and `family` columns)."""
    epochs = epoch_map(members)
    groups = sorted(
        {(c, int(t)) for c, t in zip(members["condition"], members["t"])},
        key=lambda ct: (condition_order(ct[0]), ct[1]),
    )

    def label(c: str, t: int) -> str:
        spawned = c not in REGISTRY or REGISTRY[c].has_parent  # no spawn step: no-coupling, coupled-order
        return f"{c}, t = {t_label(t, epochs, sep=' ')}" if spawned else c

    names = {g: label(*g) for g in groups}
    data = members.assign(
        group=[names[(c, int(t))] for c, t in zip(members["condition"], members["t"])],
        family=[family(c) for c in members["condition"]],
    )
    families = list(dict.fromkeys(family(c) for c, _ in groups))
    return [names[g] for g in groups], families, data
