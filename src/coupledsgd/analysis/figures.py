"""The figures of DESIGN.md section 4, drawn from the metric tables (results/{exp}/metrics/).

Each figure function takes the DataFrames it needs, as keyword arguments named after the tables, and
returns a matplotlib Figure; `save` writes it as PNG and PDF, each atomically. `FIGURES` maps every figure
file name to its function and the tables it reads, which is all the workflow needs for one job per figure;
`run_figure` is that job.

Conventions shared by every figure:

- A value is first averaged within a parent (over its children, or its pairs of children), then shown as
  the mean over parents with a band of +-1 standard deviation over parents (ddof 1, so one parent draws no
  band). Between-parent KL (1f) uses pairs of parents as the unit; forgetting per epoch (1g) uses the
  independent runs, since no-coupling members share nothing.
- Spawn steps sit at evenly spaced positions (they are roughly geometric) labelled with the step and, from
  the tables' `t_epoch`, the epoch on a second line ("180", "(12 ep)"; t = 0 is "(init)").
- The no-coupling level is a dashed horizontal line with a grey +-1 sd band where the paper has one.
- Data a figure needs that the experiment does not have (a condition not in the config) gives a figure
  that says so ("no data: condition X not in this experiment") instead of an error; a table that lacks a
  column a figure reads is an error that names the file.

Nothing here imports matplotlib, seaborn or pandas at module level, so the workflow can read `FIGURES`
when it parses the rules at no cost. Figures are bare `matplotlib.figure.Figure` objects (no pyplot), so
nothing accumulates in pyplot's figure registry and no interactive backend is ever touched.
"""

from __future__ import annotations

import functools
import re
import sys
import time
import warnings
from pathlib import Path

from ..core.errors import ArtifactError
from ..core.files import atomic_path

TABLES = ("members", "ensembles", "pairs", "forgetting", "barriers")

BASE_CONDITIONS = ("no-coupling", "coupled-order", "coupled-to-t", "coupled-to-t-reset")
REFERENCE = "no-coupling"
RESET = "coupled-to-t-reset"
_REINIT = r"^reinit-(low|high)-(\d+(?:\.\d+)?)$"

LINE_SIZE = (5.6, 4.4)
DPI = 150
SIDE_COLOR = {"low": "C0", "high": "C1"}            # the paper: low blue, high orange
FAMILY_COLOR = {"no-coupling": "0.55", "coupled-order": "C4", "coupled-to-t": "C2",
                "coupled-to-t-reset": "C0", "reinit-low": "C9", "reinit-high": "C1"}
MAIN_COLOR = "C0"
REF_COLOR = "0.25"
NO_REINIT_COLOR = "0.1"
T_STYLES = ("-", "--", ":", "-.")


def table_path(exp_dir: str | Path, table: str) -> str:
    """Where the metrics stage writes `table` for the experiment folder `exp_dir` (results/{exp})."""
    if table not in TABLES:
        raise ValueError(f"unknown metric table {table!r}; known: {', '.join(TABLES)}")
    return f"{exp_dir}/metrics/{table}.parquet"


# ---------------------------------------------------------------------------------------------------
# plotting infrastructure


def _mpl():
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:  # never switch a backend someone else is using
        matplotlib.use("Agg")
    import seaborn as sns
    from matplotlib.figure import Figure

    return Figure, sns


def _styled(fn):
    """Draw under seaborn's whitegrid style and paper context without changing global rcParams."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        _, sns = _mpl()
        with sns.axes_style("whitegrid"), sns.plotting_context("paper", font_scale=1.1):
            return fn(*args, **kwargs)

    return wrapper


def _new(figsize=LINE_SIZE):
    Figure, _ = _mpl()
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.subplots()


def _note(fig, notes: list[str]) -> None:
    """Small grey lines under the axes (kept clear of them by the constrained layout)."""
    if notes:
        fig.supxlabel("\n".join(notes), fontsize=7, color="0.35", x=0.01, ha="left")


def _legend(fig, ax, notes=(), title=None) -> None:
    """The legend below the axes, where it can hide neither data nor reference bands, then the notes."""
    from matplotlib.lines import Line2D

    handles, labels = ax.get_legend_handles_labels()
    notes = list(notes)
    handles += [Line2D([], [], ls="none") for _ in notes]  # a note is an entry without a symbol
    legend = fig.legend(handles, labels + notes, loc="outside lower center", fontsize=7.5, title=title,
                        title_fontsize=7.5, frameon=False, handlelength=2.5)
    for text in legend.get_texts()[len(labels):]:
        text.set_color("0.35")
        text.set_fontstyle("italic")


def no_data_figure(title: str, message: str, figsize=LINE_SIZE):
    """A valid figure that says why there is nothing to plot."""
    fig, ax = _new(figsize)
    ax.set_axis_off()
    ax.set_title(title)
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True, fontsize=11, transform=ax.transAxes,
            bbox={"boxstyle": "round", "facecolor": "0.95", "edgecolor": "0.6"})
    fig.coupledsgd_no_data = message
    return fig


def save(fig, png_path: str | Path, pdf_path: str | Path, dpi: int = DPI) -> None:
    """Write `fig` as PNG and PDF; each appears under its final name only once complete."""
    for path, fmt, metadata in ((png_path, "png", {"Software": None}),
                                (pdf_path, "pdf", {"Creator": None, "Producer": None, "CreationDate": None})):
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi, metadata=metadata)


# ---------------------------------------------------------------------------------------------------
# data helpers (pure pandas)


def _empty(df) -> bool:
    return df is None or len(df) == 0


def _require(df, table: str, columns):
    """`df` checked for `columns`, with categorical (Parquet dictionary) string columns made plain."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        where = df.attrs.get("source", f"{table} table")
        raise ArtifactError(f"{where}: missing column(s) {', '.join(missing)} (has: "
                            f"{', '.join(map(str, df.columns))})")
    cats = [c for c in ("condition", "kind") if c in df.columns and df[c].dtype.name == "category"]
    if cats:
        df = df.assign(**{c: df[c].astype(str) for c in cats})
    return df


def _rows(df, condition: str):
    return df[df["condition"] == condition]


def _largest_k(ensembles):
    """One row per (condition, t, parent): the full ensemble, should a table hold several sizes."""
    if "k" not in ensembles.columns or ensembles.empty:
        return ensembles
    top = ensembles.groupby(["condition", "t", "parent"], observed=True)["k"].transform("max")
    return ensembles[ensembles["k"] == top]


def parent_stats(df, by, value: str, unit=("parent",)):
    """Mean of `value` within each (by, unit), then mean, std (ddof 1) and count over units per `by`."""
    by, unit = list(by), list(unit)
    inner = df.groupby(by + unit, dropna=False, observed=True)[value].mean().reset_index()
    out = inner.groupby(by, dropna=False, observed=True)[value].agg(mean="mean", std="std", n="count")
    return out.reset_index()


def reinit_rows(df, realised=None):
    """The re-initialisation rows, with `side` (low/high) and `requested` percent parsed from the
    condition, and `percent` the share really re-drawn: the mean over the condition's members of the
    `reinit_percent` column of `df` (or of `realised`, a table that has it), the request where neither
    has it (tables written before it was recorded)."""
    parsed = df["condition"].str.extract(_REINIT)
    keep = parsed[0].notna()
    out = df[keep].copy()
    out["side"] = parsed.loc[keep, 0].to_numpy()
    out["requested"] = parsed.loc[keep, 1].astype(float).to_numpy()
    out["percent"] = out["requested"]
    source = df if "reinit_percent" in df.columns else realised
    if source is not None and "reinit_percent" in source.columns and not out.empty:
        got = out["condition"].map(source.groupby("condition")["reinit_percent"].mean())
        out["percent"] = got.where(got.notna(), out["requested"]).astype(float)
    return out


def epoch_map(*frames) -> dict[int, float]:
    """t -> t_epoch from any frame that has both columns."""
    out: dict[int, float] = {}
    for df in frames:
        if _empty(df) or "t" not in df.columns or "t_epoch" not in df.columns:
            continue
        for t, e in df.groupby("t")["t_epoch"].first().items():
            out.setdefault(int(t), float(e))
    return out


def _fmt_epoch(e: float) -> str:
    return f"{e:.3g}"


def t_label(t: int, epochs: dict[int, float], sep: str = "\n") -> str:
    """'180\\n(12 ep)'; '0\\n(init)'; the step alone when the epoch is unknown."""
    t = int(t)
    if t == 0:
        return f"0{sep}(init)"
    e = epochs.get(t)
    if e is None or e != e:
        return str(t)
    return f"{t}{sep}({_fmt_epoch(e)} ep)"


def cumulative_forgetting(forgetting, conditions, epochs: float | None = None):
    """Per member of `conditions`: its cumulative forgetting events at the last evaluation point with
    epoch <= E (epochs since the member's first evaluation point, i.e. since the spawn). E defaults to the
    largest epoch every one of these members reached. Returns (frame of condition, t, parent, child,
    cumulative_events, epoch), E)."""
    keys = ["condition", "t", "parent", "child"]
    rows = forgetting[forgetting["condition"].isin(list(conditions))]
    if rows.empty:
        return rows[keys + ["cumulative_events", "epoch"]], epochs
    if epochs is None:
        epochs = float(rows.groupby(keys, observed=True)["epoch"].max().min())
    within = rows[rows["epoch"] <= epochs + 1e-9]
    last = within.sort_values(keys + ["epoch"]).groupby(keys, observed=True).tail(1)
    return last[keys + ["cumulative_events", "epoch"]].reset_index(drop=True), epochs


# ---------------------------------------------------------------------------------------------------
# drawing helpers


def _band_line(ax, x, stats, label, color, marker="o", ls="-"):
    import numpy as np

    x = np.asarray(list(x), dtype=float)
    mean = stats["mean"].to_numpy(float)
    std = stats["std"].to_numpy(float)
    ax.plot(x, mean, marker=marker, ls=ls, color=color, label=label, markersize=4.5, lw=1.6)
    if not np.isfinite(std).any():
        return
    if len(x) == 1:  # a band of zero width would not show: an error bar instead
        ax.errorbar(x, mean, yerr=std, fmt="none", ecolor=color, capsize=4, lw=1.2)
    else:
        ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.2, linewidth=0)


def _unit_word(unit, n: int) -> str:
    word = "parent pair" if len(unit) == 2 else ("run" if "child" in unit else "parent")
    return f"{n} {word}" + ("" if n == 1 else "s")


def _reference(ax, df, value, unit=("parent",), orientation="h", label=REFERENCE) -> bool:
    """The no-coupling level (mean over units) as a dashed line with a +-1 sd band; False if absent."""
    import numpy as np

    if _empty(df):
        return False
    s = parent_stats(df.assign(_all=0), ["_all"], value, unit).iloc[0]
    m, sd = float(s["mean"]), float(s["std"])
    line, span = (ax.axhline, ax.axhspan) if orientation == "h" else (ax.axvline, ax.axvspan)
    line(m, color=REF_COLOR, ls="--", lw=1.2, label=f"{label} (mean ± sd over {_unit_word(unit, int(s['n']))})")
    if np.isfinite(sd) and sd > 0:
        span(m - sd, m + sd, color="0.5", alpha=0.15, linewidth=0)
    return True


def _spawn_axis(ax, ts, epochs):
    ax.set_xticks(range(len(ts)))
    ax.set_xticklabels([t_label(t, epochs) for t in ts])
    ax.set_xlabel("spawn step t (steps; epochs)")
    ax.set_xlim(-0.4, len(ts) - 0.6)


def _missing(condition: str) -> str:
    return f"no data: condition {condition} not in this experiment"


def _spawn_figure(df, *, condition, value, unit, ylabel, title, epochs, reference=True,
                  what=None, why_empty=None):
    """`value` of `condition` vs spawn step, mean +-1 sd over `unit`, with the no-coupling level.
    `why_empty` says why a table with no rows at all is empty (the grid has no pairs, say)."""
    if df.empty and why_empty:
        return no_data_figure(title, why_empty)
    rows = _rows(df, condition)
    if rows.empty:
        return no_data_figure(title, _missing(condition))
    stats = parent_stats(rows, ["t"], value, unit).sort_values("t")
    ts = [int(t) for t in stats["t"]]
    fig, ax = _new()
    n = int(stats["n"].max())
    _band_line(ax, range(len(ts)), stats, f"{what or condition} (mean ± sd over {_unit_word(unit, n)})",
               MAIN_COLOR)
    notes = []
    if reference and not _reference(ax, _rows(df, REFERENCE), value, unit):
        notes.append(f"{REFERENCE} not in this experiment: no reference line")
    _spawn_axis(ax, ts, epochs)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    _legend(fig, ax, notes)
    return fig


def _percent_figure(df, *, value, unit, ylabel, title, epochs, reference: bool, realised=None):
    """`value` vs percent re-initialised (the share really re-drawn, see `reinit_rows`; ticks at the
    requested percents), one line per side (and per re-init step), the coupled-to-t-reset members at the
    same steps as the "no re-init" marker at 0%, and optionally the no-coupling level."""
    rows = reinit_rows(df, realised)
    if rows.empty:
        return no_data_figure(title, "no data: conditions reinit-low-<pct> and reinit-high-<pct>\n"
                                     "not in this experiment")
    steps = sorted(int(t) for t in rows["t"].unique())
    at = ", ".join(t_label(t, epochs, sep=" ") for t in steps)
    fig, ax = _new()
    notes, n = [], 0
    for side in ("low", "high"):
        for i, t in enumerate(steps):
            sel = rows[(rows["side"] == side) & (rows["t"] == t)]
            if sel.empty:
                continue
            stats = parent_stats(sel, ["percent"], value, unit).sort_values("percent")
            label = f"{side} layers" + (f", t = {t}" if len(steps) > 1 else "")
            n = max(n, int(stats["n"].max()))
            _band_line(ax, stats["percent"].to_numpy(float), stats, label, SIDE_COLOR[side],
                       ls=T_STYLES[i % len(T_STYLES)])
        if not (rows["side"] == side).any():
            notes.append(f"reinit-{side}-<pct> not in this experiment")
    base = _rows(df, RESET)
    for i, t in enumerate(steps):
        sel = base[base["t"] == t]
        if sel.empty:
            notes.append(f"{RESET} not run at t = {t}: no 'no re-init' marker")
            continue
        s = parent_stats(sel, ["t"], value, unit).iloc[0]
        ax.errorbar([0.0], [s["mean"]], yerr=[0.0 if s["std"] != s["std"] else s["std"]], fmt="D",
                    color=NO_REINIT_COLOR, markersize=6, capsize=4, zorder=5,
                    label=f"no re-init ({RESET}" + (f", t = {t})" if len(steps) > 1 else ")"))
    if reference and not _reference(ax, _rows(df, REFERENCE), value, unit):
        notes.append(f"{REFERENCE} not in this experiment: no reference line")
    percents = sorted(set(rows["requested"].tolist()) | {0.0})
    ax.set_xticks(percents)
    ax.set_xticklabels([f"{p:g}" for p in percents])
    ax.set_xlabel("parameters re-initialised (%)")
    ax.margins(x=0.08)
    ax.set_ylabel(ylabel)
    ax.set_title(f"{title}\nat spawn step t = {at}")
    _legend(fig, ax, notes, title=f"mean ± sd over {_unit_word(unit, n)}")
    return fig


# ---------------------------------------------------------------------------------------------------
# the figures

_ENS = ["condition", "t", "t_epoch", "parent"]


def _k(ensembles) -> str:
    return f"{int(ensembles['k'].max())}-" if "k" in ensembles.columns and len(ensembles) else ""


@_styled
def fig1a_accuracy_gain(ensembles):
    """Accuracy gain (ensemble minus mean member accuracy) vs t, coupled-to-t, with no-coupling."""
    ensembles = _require(ensembles, "ensembles", _ENS + ["gain"])
    e = _largest_k(ensembles)
    return _spawn_figure(e, condition="coupled-to-t", value="gain", unit=("parent",),
                         ylabel=f"{_k(e)}ensemble accuracy gain\nover mean of members",
                         title="(a) Accuracy gain", epochs=epoch_map(e))


@_styled
def fig1b_accuracy_gain_reset(ensembles):
    """As 1a for coupled-to-t-reset (extended training)."""
    ensembles = _require(ensembles, "ensembles", _ENS + ["gain"])
    e = _largest_k(ensembles)
    return _spawn_figure(e, condition=RESET, value="gain", unit=("parent",),
                         ylabel=f"{_k(e)}ensemble accuracy gain\nover mean of members",
                         title="(b) Accuracy gain (extended training)", epochs=epoch_map(e))


@_styled
def fig1c_mace_improvement(ensembles):
    """MACE improvement (mean member MACE minus ensemble MACE) vs t, coupled-to-t."""
    ensembles = _require(ensembles, "ensembles", _ENS + ["mace_improvement"])
    e = _largest_k(ensembles)
    return _spawn_figure(e, condition="coupled-to-t", value="mace_improvement",
                         unit=("parent",), ylabel="MACE improvement\n(mean member − ensemble)",
                         title="(c) MACE improvement", epochs=epoch_map(e))


@_styled
def fig1d_mace_improvement_reset(ensembles):
    """As 1c for coupled-to-t-reset."""
    ensembles = _require(ensembles, "ensembles", _ENS + ["mace_improvement"])
    e = _largest_k(ensembles)
    return _spawn_figure(e, condition=RESET, value="mace_improvement",
                         unit=("parent",), ylabel="MACE improvement\n(mean member − ensemble)",
                         title="(d) MACE improvement (extended training)", epochs=epoch_map(e))


_PAIRS = ["condition", "t", "kind", "parent_a", "parent_b", "sym_kl"]


@_styled
def fig1e_kl_same_parent(pairs, ensembles=None):
    """Symmetric KL between two children of one parent (all pairs averaged within the parent) vs t,
    coupled-to-t-reset; the no-coupling level is the same quantity between members of one group.
    `ensembles` only supplies the epoch of each spawn step."""
    pairs = _require(pairs, "pairs", _PAIRS)
    same = pairs[pairs["kind"] == "same-parent"]
    return _spawn_figure(same, condition=RESET, value="sym_kl", unit=("parent_a",),
                         ylabel="symmetric KL between children\n(test-set mean)",
                         title="(e) Symmetric KL, same parent", epochs=epoch_map(ensembles),
                         what=f"{RESET}, children of one parent",
                         why_empty="no data: ensembles of one child have no pairs of children\n"
                                   "(ensemble.children: 1)")


@_styled
def fig1f_kl_between_parents(pairs, ensembles=None):
    """Symmetric KL between the mean predictions of two ensembles with different parents vs t,
    coupled-to-t-reset; mean +-1 sd over pairs of parents."""
    pairs = _require(pairs, "pairs", _PAIRS)
    between = pairs[pairs["kind"] == "between-parents"]
    return _spawn_figure(between, condition=RESET, value="sym_kl", unit=("parent_a", "parent_b"),
                         ylabel="symmetric KL between ensembles\nof different parents",
                         title="(f) Symmetric KL, between parents", epochs=epoch_map(ensembles),
                         what=f"{RESET} ensembles",
                         why_empty="no data: one parent, no pairs of ensembles\n(ensemble.parents: 1)")


_FORGET = ["condition", "t", "parent", "child", "epoch", "events", "cumulative_events"]


@_styled
def fig1g_forgetting_per_epoch(forgetting):
    """Test-set forgetting events at each evaluation point (default: each epoch) of the no-coupling
    runs, mean +-1 sd over runs. The first point (epoch 0) is left out: no event can happen there."""
    forgetting = _require(forgetting, "forgetting", _FORGET)
    title = "(g) Mean forgetting events by epoch"
    rows = _rows(forgetting, REFERENCE)
    rows = rows[rows["epoch"] > 0]
    if rows.empty:
        return no_data_figure(title, _missing(REFERENCE))
    stats = parent_stats(rows, ["epoch"], "events", unit=("parent", "child")).sort_values("epoch")
    fig, ax = _new()
    runs = _unit_word(("parent", "child"), int(stats["n"].max()))
    _band_line(ax, stats["epoch"].to_numpy(float), stats, f"{REFERENCE} (mean ± sd over {runs})", MAIN_COLOR,
               marker=".")
    ax.set_xlabel("epoch")
    if (stats["epoch"] % 1 == 0).all():
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("forgetting events on the test set\n(per evaluation)")
    ax.set_title(title)
    ax.set_ylim(bottom=0)
    _legend(fig, ax)
    return fig


@_styled
def fig1h_cumulative_forgetting(forgetting, ensembles=None, epochs: float | None = None):
    """Cumulative test-set forgetting events over the first E epochs after the spawn, per child of
    coupled-to-t-reset (averaged over children, then over parents) vs t; no-coupling over its first E
    epochs as the reference. E defaults to the largest epoch all these members reached."""
    forgetting = _require(forgetting, "forgetting", _FORGET)
    title = "(h) Cumulative forgetting events by spawn time"
    if _rows(forgetting, RESET).empty:
        return no_data_figure(title, _missing(RESET))
    last, E = cumulative_forgetting(forgetting, [RESET, REFERENCE], epochs)
    fig = _spawn_figure(last, condition=RESET, value="cumulative_events", unit=("parent",),
                        ylabel="cumulative forgetting events\n(test set, mean over children)",
                        title=f"{title}\n(first {_fmt_epoch(E)} epochs after the spawn)",
                        epochs=epoch_map(ensembles))
    return fig


@_styled
def fig1i_accuracy_gain_reinit(ensembles):
    """Accuracy gain vs percent of parameters re-initialised, low and high layers, with the
    coupled-to-t-reset members at the re-init step as "no re-init" and the no-coupling level."""
    ensembles = _require(ensembles, "ensembles", _ENS + ["gain"])
    e = _largest_k(ensembles)
    return _percent_figure(e, value="gain", unit=("parent",),
                           ylabel=f"{_k(e)}ensemble accuracy gain\nover mean of members",
                           title="(i) Accuracy gain, re-initialising", epochs=epoch_map(e), reference=True)


@_styled
def fig1j_mace_reinit(ensembles):
    """Ensemble MACE vs percent re-initialised, low and high layers (lower is better)."""
    ensembles = _require(ensembles, "ensembles", _ENS + ["ensemble_mace"])
    e = _largest_k(ensembles)
    return _percent_figure(e, value="ensemble_mace", unit=("parent",),
                           ylabel=f"{_k(e)}ensemble MACE (lower is better)",
                           title="(j) MACE, re-initialising", epochs=epoch_map(e), reference=True)


def _family(condition: str) -> str:
    m = re.match(_REINIT, condition)
    return f"reinit-{m.group(1)}" if m else condition


def _condition_order(condition: str):
    m = re.match(_REINIT, condition)
    if m:
        return (len(BASE_CONDITIONS) + (m.group(1) == "high"), float(m.group(2)), condition)
    base = BASE_CONDITIONS.index(condition) if condition in BASE_CONDITIONS else len(BASE_CONDITIONS) + 2
    return (base, 0.0, condition)


@_styled
def fig2_member_accuracy(members):
    """Test accuracy of every member, one box (with the members as dots) per condition and spawn step."""
    members = _require(members, "members", ["condition", "t", "t_epoch", "parent", "child", "accuracy"])
    title = "Individual accuracy of all members"
    if members.empty:
        return no_data_figure(title, "no data: no members in this experiment")
    epochs = epoch_map(members)
    groups = sorted({(c, int(t)) for c, t in zip(members["condition"], members["t"])},
                    key=lambda ct: (_condition_order(ct[0]), ct[1]))

    def label(c, t):
        return c if c in ("no-coupling", "coupled-order") else f"{c}, t = {t_label(t, epochs, sep=' ')}"

    names = {g: label(*g) for g in groups}
    data = members.assign(group=[names[(c, int(t))] for c, t in zip(members["condition"], members["t"])],
                          family=[_family(c) for c in members["condition"]])
    order = [names[g] for g in groups]
    families = list(dict.fromkeys(_family(c) for c, _ in groups))
    palette = {f: FAMILY_COLOR.get(f, "C4") for f in families}
    _, sns = _mpl()
    fig, ax = _new((7.0, 1.6 + 0.32 * len(order)))
    with warnings.catch_warnings():  # seaborn 0.13 passes boxplot's `vert`, deprecated in matplotlib 3.11
        warnings.simplefilter("ignore", DeprecationWarning)
        sns.boxplot(data=data, x="accuracy", y="group", order=order, hue="family", hue_order=families,
                    palette=palette, dodge=False, showfliers=False, width=0.6, linewidth=0.8, ax=ax,
                    legend=False)
    sns.stripplot(data=data, x="accuracy", y="group", order=order, color="0.15", size=3, jitter=0.15,
                  ax=ax, legend=False)
    notes = []
    if "diverged" in data.columns and data["diverged"].any():
        bad = data[data["diverged"].astype(bool)]
        ax.scatter(bad["accuracy"], [order.index(g) for g in bad["group"]], marker="x", s=40, color="red",
                   zorder=6, label="diverged member")
        notes.append(f"{len(bad)} diverged member(s) marked x (members.parquet, column diverged)")
    ref = _rows(members, REFERENCE)
    if not ref.empty:
        ax.axvline(float(ref["accuracy"].mean()), color=REF_COLOR, ls="--", lw=1.0,
                   label=f"{REFERENCE} mean")
    else:
        notes.append(f"{REFERENCE} not in this experiment: no reference line")
    ax.set_xlabel("member test accuracy")
    ax.set_ylabel("condition, spawn step t")
    ax.set_title(title)
    if not ref.empty or any("diverged" in n for n in notes):
        ax.legend(fontsize=7.5, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _note(fig, notes)
    return fig


@_styled
def fig3_error_barrier(barriers, ensembles=None):
    """Error barrier on the linear path between two children vs percent re-initialised (low, high);
    the coupled-to-t-reset children at the re-init step are the "no re-init" marker at 0%. Each pair's
    barrier is averaged within its parent, then mean +-1 sd over parents."""
    barriers = _require(barriers, "barriers", ["condition", "t", "parent", "child_a", "child_b", "barrier"])
    keys = ["condition", "t", "parent", "child_a", "child_b"]
    per_pair = barriers.groupby(keys, as_index=False, observed=True)["barrier"].mean()
    return _percent_figure(per_pair, value="barrier", unit=("parent",),
                           ylabel="error barrier between two children\n(max over path − mean of ends)",
                           title="Error barrier, re-initialising", epochs=epoch_map(ensembles),
                           reference=False, realised=ensembles)


FIGURES = {
    "fig1a_accuracy_gain": (fig1a_accuracy_gain, ["ensembles"]),
    "fig1b_accuracy_gain_reset": (fig1b_accuracy_gain_reset, ["ensembles"]),
    "fig1c_mace_improvement": (fig1c_mace_improvement, ["ensembles"]),
    "fig1d_mace_improvement_reset": (fig1d_mace_improvement_reset, ["ensembles"]),
    "fig1e_kl_same_parent": (fig1e_kl_same_parent, ["pairs", "ensembles"]),
    "fig1f_kl_between_parents": (fig1f_kl_between_parents, ["pairs", "ensembles"]),
    "fig1g_forgetting_per_epoch": (fig1g_forgetting_per_epoch, ["forgetting"]),
    "fig1h_cumulative_forgetting": (fig1h_cumulative_forgetting, ["forgetting", "ensembles"]),
    "fig1i_accuracy_gain_reinit": (fig1i_accuracy_gain_reinit, ["ensembles"]),
    "fig1j_mace_reinit": (fig1j_mace_reinit, ["ensembles"]),
    "fig2_member_accuracy": (fig2_member_accuracy, ["members"]),
    "fig3_error_barrier": (fig3_error_barrier, ["barriers", "ensembles"]),
}


# ---------------------------------------------------------------------------------------------------
# the workflow stage


def read_table(path: str | Path):
    """A metric table as a DataFrame that remembers its file (for error messages)."""
    import pandas as pd

    try:
        df = pd.read_parquet(path)
    except FileNotFoundError:
        raise ArtifactError(f"{path}: metric table not found") from None
    except Exception as e:  # pyarrow raises several types for truncated or foreign files
        raise ArtifactError(f"{path}: not a readable Parquet table ({type(e).__name__}: {e})") from None
    df.attrs["source"] = str(path)
    return df


def run_figure(name: str, inputs: dict[str, str], png: str, pdf: str, log_path: str | None = None) -> None:
    """Read the tables figure `name` needs (`inputs`: table name -> path), draw it and save it."""
    if name not in FIGURES:
        raise ValueError(f"unknown figure {name!r}; known: {', '.join(FIGURES)}")
    fn, tables = FIGURES[name]
    missing = [t for t in tables if t not in inputs]
    if missing:
        raise ValueError(f"figure {name}: no input for table(s) {', '.join(missing)}")
    start = time.perf_counter()
    frames = {t: read_table(inputs[t]) for t in tables}
    fig = fn(**frames)
    save(fig, png, pdf)
    what = f"NO DATA ({fig.coupledsgd_no_data})" if hasattr(fig, "coupledsgd_no_data") else "drawn"
    line = (f"{name}: {what} from {', '.join(f'{t} ({len(frames[t])} rows)' for t in tables)} in "
            f"{time.perf_counter() - start:.2f} s -> {png}, {pdf}\n")
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "a") as f:
            f.write(line)
    else:
        sys.stderr.write(line)
