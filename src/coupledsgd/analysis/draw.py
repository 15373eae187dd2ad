"""Drawing (matplotlib and seaborn): the figure templates every figure of docs/design.md, "Figures" is
drawn with, from data `aggregate` has prepared, and `save`.

Conventions shared by every figure:

- A value is shown as the mean over parents with a band of +-1 standard deviation over parents (one
  parent draws no band; a single x an error bar instead).
- The spawn step t is on a true scale (`spawn_axis`, the one axis every figure over t uses): linear, or
  symmetric-log when the non-zero steps span more than a factor of `SYMLOG_SPAN` (the steps are roughly
  geometric), as the axis label says. Ticks sit at the spawn steps, labelled with the step and, from the
  tables' `t_epoch`, the epoch on a second line ("180", "(12 ep)"; t = 0 is "(init)").
- Points of different series at the same x (low and high re-initialisation at one percent) are drawn a
  few points apart sideways (`dodge`); their data keep their x.
- The no-coupling level is a dashed horizontal line with a grey +-1 sd band where the paper has one.
- Data a figure needs that the experiment does not have gives a figure that says so (`no_data_figure`).

Nothing here imports matplotlib, seaborn, numpy or pandas at module level, so the workflow can read the
figure registry when it parses the rules at no cost. Figures are bare `matplotlib.figure.Figure` objects
(no pyplot), so nothing accumulates in pyplot's figure registry and no interactive backend is touched.
"""

from __future__ import annotations

import functools
import sys
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from ..core.conditions import BARRIER_REFERENCE, REFERENCE
from ..core.files import atomic_path
from . import aggregate as A

if TYPE_CHECKING:
    import numpy.typing as npt
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.transforms import Transform

P = ParamSpec("P")
R = TypeVar("R")

LINE_SIZE = (5.6, 4.4)
DPI = 150
SIDE_COLOR = {"low": "C0", "high": "C1"}  # the paper: low blue, high orange
FAMILY_COLOR = {
    "no-coupling": "0.55",
    "coupled-order": "C4",
    "coupled-to-t": "C2",
    "coupled-to-t-reset": "C0",
    "reinit-low": "C9",
    "reinit-high": "C1",
}
MAIN_COLOR = "C0"
REF_COLOR = "0.25"
NO_REINIT_COLOR = "0.1"
T_STYLES = ("-", "--", ":", "-.")
SYMLOG_SPAN = 10  # non-zero spawn steps spanning more than this factor go on a symmetric-log axis
DODGE_PT = 5.0  # sideways distance between series drawn at the same x, in points
MIN_BOX_MEMBERS = 10  # fewer members than this in a group of fig. 2: their points, no box
NO_PAIRS_OF_CHILDREN = "no data: ensembles of one child have no pairs of children\n(ensemble.children: 1)"


def _mpl() -> tuple[type[Figure], Any]:
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:  # never switch a backend someone else is using
        matplotlib.use("Agg")
    import seaborn as sns
    from matplotlib.figure import Figure

    return Figure, sns


def styled(fn: Callable[P, R]) -> Callable[P, R]:
    """Draw under seaborn's whitegrid style and paper context without changing global rcParams."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        _, sns = _mpl()
        with sns.axes_style("whitegrid"), sns.plotting_context("paper", font_scale=1.1):
            return fn(*args, **kwargs)

    return wrapper


def new(figsize: tuple[float, float] = LINE_SIZE) -> tuple[Figure, Axes]:
    Figure, _ = _mpl()
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.subplots()


def legend(fig: Figure, ax: Axes, notes: Iterable[str] = (), title: str | None = None) -> None:
    """The legend below the axes, where it can hide neither data nor reference bands, then the notes."""
    from matplotlib.lines import Line2D

    handles, labels = ax.get_legend_handles_labels()
    notes = list(notes)
    handles += [Line2D([], [], ls="none") for _ in notes]  # a note is an entry without a symbol
    lg = fig.legend(
        handles,
        labels + notes,
        loc="outside lower center",
        fontsize=7.5,
        title=title,
        title_fontsize=7.5,
        frameon=False,
        handlelength=2.5,
    )
    for text in lg.get_texts()[len(labels) :]:
        text.set_color("0.35")
        text.set_fontstyle("italic")


def no_data_figure(title: str, message: str, figsize: tuple[float, float] = LINE_SIZE) -> Figure:
    """A valid figure that says why there is nothing to plot."""
    fig, ax = new(figsize)
    ax.set_axis_off()
    ax.set_title(title)
    ax.text(
        0.5,
        0.5,
        message,
        ha="center",
        va="center",
        wrap=True,
        fontsize=11,
        transform=ax.transAxes,
        bbox={"boxstyle": "round", "facecolor": "0.95", "edgecolor": "0.6"},
    )
    fig.coupledsgd_no_data = message  # type: ignore[attr-defined]  # read by the tests and the job log
    return fig


def save(fig: Figure, png_path: str | Path, pdf_path: str | Path, dpi: int = DPI) -> None:
    """Write `fig` as PNG and PDF; each appears under its final name only once complete."""
    for path, fmt, metadata in (
        (png_path, "png", {"Software": None}),
        (pdf_path, "pdf", {"Creator": None, "Producer": None, "CreationDate": None}),
    ):
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi, metadata=metadata)


def missing(condition: str) -> str:
    return f"no data: condition {condition} not in this experiment"


def band_line(
    ax: Axes,
    x: Iterable[float],
    stats: pd.DataFrame,
    label: str,
    color: str,
    marker: str = "o",
    ls: str = "-",
    transform: Transform | None = None,
) -> None:
    import numpy as np

    x = np.asarray(list(x), dtype=float)
    mean = stats["mean"].to_numpy(float)
    std = stats["std"].to_numpy(float)
    where: dict[str, Any] = {} if transform is None else {"transform": transform}
    if transform is not None:
        _autoscale_to(ax, x, mean, std)
    ax.plot(x, mean, marker=marker, ls=ls, color=color, label=label, markersize=4.5, lw=1.6, **where)
    if not np.isfinite(std).any():
        return
    if len(x) == 1:  # a band of zero width would not show: an error bar instead
        ax.errorbar(x, mean, yerr=std, fmt="none", ecolor=color, capsize=4, lw=1.2, **where)
    else:
        ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.2, linewidth=0, **where)


def _autoscale_to(ax: Axes, x: npt.ArrayLike, mean: npt.ArrayLike, std: npt.ArrayLike) -> None:
    """Let the axes' limits take in points +-std: autoscaling skips artists drawn with a transform other
    than the data transform, as `dodge`'s are."""
    import numpy as np

    sd = np.nan_to_num(np.asarray(std, dtype=float))
    mean = np.asarray(mean, dtype=float)
    x = np.asarray(x, dtype=float)
    ax.update_datalim(np.c_[np.r_[x, x], np.r_[mean - sd, mean + sd]])
    ax.autoscale_view()


def dodge(ax: Axes, i: int, n: int, step_pt: float = DODGE_PT) -> Transform:
    """The data transform of series `i` of `n` drawn at the same x, shifted sideways by a fixed number
    of points (centred on the true x), so no series hides another; the data themselves keep their x."""
    from matplotlib.transforms import ScaledTranslation

    offset = (i - (n - 1) / 2) * step_pt / 72
    return ax.transData + ScaledTranslation(offset, 0, ax.figure.dpi_scale_trans)


def unit_word(unit: Sequence[str], n: int) -> str:
    """'3 parents', '1 parent pair', '4 runs': n of the unit a band is over (a run: a (parent, child))."""
    word = "run" if "child" in unit else ("parent pair" if len(unit) == 2 else "parent")
    return f"{n} {word}" + ("" if n == 1 else "s")


def spread(unit: Sequence[str], n: int) -> str:
    """What a point and its band are over: 'mean ± sd over 3 parents'; one unit has no sd, so no band."""
    return f"mean ± sd over {unit_word(unit, n)}" if n > 1 else f"{unit_word(unit, n)}, no sd"


def _reference(
    ax: Axes,
    df: pd.DataFrame,
    value: str,
    unit: Sequence[str] = ("parent",),
    orientation: str = "h",
    label: str = REFERENCE,
) -> bool:
    """The no-coupling level (mean over units) as a dashed line with a +-1 sd band; False if absent."""
    import numpy as np

    if A.is_empty(df):
        return False
    m, sd, n = A.overall_stats(df, value, unit)
    line, span = (ax.axhline, ax.axhspan) if orientation == "h" else (ax.axvline, ax.axvspan)
    line(m, color=REF_COLOR, ls="--", lw=1.2, label=f"{label} ({spread(unit, n)})")
    if np.isfinite(sd) and sd > 0:
        span(m - sd, m + sd, color="0.5", alpha=0.15, linewidth=0)
    return True


def spawn_scale(ts: Iterable[float]) -> tuple[str, float | None]:
    """How a spawn-step axis is scaled: ("linear", None), or ("symlog", threshold) when the non-zero steps
    span more than a factor of SYMLOG_SPAN; the axis is then linear from 0 to the threshold, the smallest
    non-zero step, and logarithmic above it."""
    nonzero = sorted({float(t) for t in ts if t > 0})
    if len(nonzero) >= 2 and nonzero[-1] > SYMLOG_SPAN * nonzero[0]:
        return "symlog", nonzero[0]
    return "linear", None


def spawn_axis(ax: Axes, ts: Iterable[int], epochs: dict[int, float]) -> str:
    """Put the spawn steps `ts` on the x axis at their true values (`spawn_scale`), one tick at each,
    labelled with the step and its epoch (`epochs`: t -> epoch); the label says the scale, which is
    returned. Draw the data at x = t."""
    from matplotlib.ticker import NullLocator

    ts = sorted({int(t) for t in ts})
    scale, threshold = spawn_scale(ts)
    if scale == "symlog":
        ax.set_xscale("symlog", linthresh=threshold, linscale=1.0)
        how = f"symmetric-log scale, linear below {threshold:g}"
    else:
        ax.set_xscale("linear")
        how = "linear scale"
    ax.set_xticks(ts)
    ax.set_xticklabels([A.t_label(t, epochs) for t in ts], fontsize=8)
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel(f"spawn step t ({how})")
    ax.margins(x=0.06)
    return scale


def spawn_figure(
    df: pd.DataFrame,
    *,
    condition: str,
    value: str,
    unit: Sequence[str],
    ylabel: str,
    title: str,
    epochs: dict[int, float],
    reference: bool = True,
    what: str | None = None,
    why_empty: str | None = None,
) -> Figure:
    """`value` of `condition` vs spawn step, mean +-1 sd over `unit`, with the no-coupling level.
    `why_empty` says why a table with no rows at all is empty (the grid has no pairs, say)."""
    if df.empty and why_empty:
        return no_data_figure(title, why_empty)
    rows = A.rows(df, condition)
    if rows.empty:
        return no_data_figure(title, missing(condition))
    stats = A.parent_stats(rows, ["t"], value, unit).sort_values("t")
    ts = [int(t) for t in stats["t"]]
    fig, ax = new()
    n = int(stats["n"].max())
    band_line(ax, ts, stats, f"{what or condition} ({spread(unit, n)})", MAIN_COLOR)
    notes = []
    if reference and not _reference(ax, A.rows(df, REFERENCE), value, unit):
        notes.append(f"{REFERENCE} not in this experiment: no reference line")
    spawn_axis(ax, ts, epochs)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    legend(fig, ax, notes)
    return fig


def _reinit_lines(
    ax: Axes, rows: pd.DataFrame, steps: list[int], value: str, unit: Sequence[str]
) -> tuple[list[str], int]:
    """One line per side and re-init step, each dodged sideways (`dodge`); the notes on sides not run,
    and the most units of a point."""
    series = [
        (side, i, t)
        for side in ("low", "high")
        for i, t in enumerate(steps)
        if ((rows["side"] == side) & (rows["t"] == t)).any()
    ]
    n = 0
    for k, (side, i, t) in enumerate(series):
        sel = rows[(rows["side"] == side) & (rows["t"] == t)]
        stats = A.parent_stats(sel, ["percent"], value, unit).sort_values("percent")
        label = f"{side} layers" + (f", t = {t}" if len(steps) > 1 else "")
        n = max(n, int(stats["n"].max()))
        band_line(
            ax,
            stats["percent"].to_numpy(float),
            stats,
            label,
            SIDE_COLOR[side],
            ls=T_STYLES[i % len(T_STYLES)],
            transform=dodge(ax, k, len(series)),
        )
    notes = [
        f"reinit-{side}-<pct> not in this experiment" for side in ("low", "high") if not (rows["side"] == side).any()
    ]
    return notes, n


def _no_reinit_markers(ax: Axes, df: pd.DataFrame, steps: list[int], value: str, unit: Sequence[str]) -> list[str]:
    """The coupled-to-t-reset members at each re-init step as the "no re-init" marker at 0%, dodged
    sideways when there are several steps."""
    notes = []
    base = A.rows(df, BARRIER_REFERENCE)
    for i, t in enumerate(steps):
        sel = base[base["t"] == t]
        if sel.empty:
            notes.append(f"{BARRIER_REFERENCE} not run at t = {t}: no 'no re-init' marker")
            continue
        s = A.parent_stats(sel, ["t"], value, unit).iloc[0]
        _autoscale_to(ax, [0.0], [s["mean"]], [s["std"]])
        ax.errorbar(
            [0.0],
            [s["mean"]],
            yerr=[0.0 if s["std"] != s["std"] else s["std"]],
            fmt="D",
            color=NO_REINIT_COLOR,
            markersize=6,
            capsize=4,
            zorder=5,
            transform=dodge(ax, i, len(steps)),
            label=f"no re-init ({BARRIER_REFERENCE}" + (f", t = {t})" if len(steps) > 1 else ")"),
        )
    return notes


def percent_figure(
    df: pd.DataFrame,
    *,
    value: str,
    unit: Sequence[str],
    ylabel: str,
    title: str,
    epochs: dict[int, float],
    reference: bool,
    realised: pd.DataFrame | None = None,
    why_empty: str | None = None,
) -> Figure:
    """`value` vs percent re-initialised (the share really re-drawn, see `aggregate.reinit_rows`; ticks
    at the requested percents), one line per side (and per re-init step), the coupled-to-t-reset members
    at the same steps as the "no re-init" marker at 0%, and optionally the no-coupling level.
    `why_empty` says why a table with no rows at all is empty (the grid has no pairs, say)."""
    if df.empty and why_empty:
        return no_data_figure(title, why_empty)
    rows = A.reinit_rows(df, realised)
    if rows.empty:
        return no_data_figure(
            title, "no data: conditions reinit-low-<pct> and reinit-high-<pct>\nnot in this experiment"
        )
    steps = sorted(int(t) for t in rows["t"].unique())
    at = ", ".join(A.t_label(t, epochs, sep=" ") for t in steps)
    fig, ax = new()
    notes, n = _reinit_lines(ax, rows, steps, value, unit)
    notes += _no_reinit_markers(ax, df, steps, value, unit)
    if reference and not _reference(ax, A.rows(df, REFERENCE), value, unit):
        notes.append(f"{REFERENCE} not in this experiment: no reference line")
    percents = sorted(set(rows["requested"].tolist()) | {0.0})
    ax.set_xticks(percents)
    ax.set_xticklabels([f"{p:g}" for p in percents])
    ax.set_xlabel("parameters re-initialised (%)")
    ax.margins(x=0.08)
    ax.set_ylabel(ylabel)
    ax.set_title(f"{title}\nat spawn step t = {at}")
    legend(fig, ax, notes, title=spread(unit, n))
    return fig


def epoch_figure(stats: pd.DataFrame, *, label: str, ylabel: str, title: str) -> Figure:
    """A curve over epochs (stats: epoch, mean, std, n), the y axis from 0."""
    fig, ax = new()
    band_line(ax, stats["epoch"].to_numpy(float), stats, label, MAIN_COLOR, marker=".")
    ax.set_xlabel("epoch")
    if (stats["epoch"] % 1 == 0).all():
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.set_ylim(bottom=0)
    legend(fig, ax)
    return fig


def _boxes(ax: Axes, data: pd.DataFrame, order: list[str], families: list[str]) -> None:
    """Every member as a dot; a box for each group of at least MIN_BOX_MEMBERS members, the mean as a
    bar for smaller groups (a box of a few points suggests a spread it does not show)."""
    _, sns = _mpl()
    counts = data["group"].value_counts()
    boxed = [g for g in order if counts.get(g, 0) >= MIN_BOX_MEMBERS]
    palette = {f: FAMILY_COLOR.get(f, "C4") for f in families}
    if boxed:
        with warnings.catch_warnings():  # seaborn 0.13 passes boxplot's `vert`, deprecated in matplotlib 3.11
            warnings.simplefilter("ignore", DeprecationWarning)
            sns.boxplot(
                data=data[data["group"].isin(boxed)],
                x="accuracy",
                y="group",
                order=order,
                hue="family",
                hue_order=families,
                palette=palette,
                dodge=False,
                showfliers=False,
                width=0.6,
                linewidth=0.8,
                ax=ax,
                legend=False,
            )
    # Dots dark over the coloured boxes; coloured by family where no group has a box.
    colour = {"color": "0.15"} if boxed else {"hue": "family", "hue_order": families, "palette": palette}
    sns.stripplot(
        data=data,
        x="accuracy",
        y="group",
        order=order,
        size=3 if boxed else 4,
        jitter=0.15,
        ax=ax,
        legend=False,
        **colour,
    )
    small = [g for g in order if 0 < counts.get(g, 0) < MIN_BOX_MEMBERS]
    if small:
        means = data[data["group"].isin(small)].groupby("group")["accuracy"].mean()
        ax.scatter(
            means[small],
            [order.index(g) for g in small],
            marker="|",
            s=260,
            linewidths=1.8,
            color="0.1",
            zorder=5,
            label=f"mean of a group of < {MIN_BOX_MEMBERS} members (no box)",
        )


def box_figure(
    data: pd.DataFrame,
    order: list[str],
    families: list[str],
    *,
    title: str,
    reference_level: float | None = None,
    left_out: int = 0,
    left_out_names: str = "",
) -> Figure:
    """Member accuracy, the members as dots per group of `order` with a box where the group is large
    enough (`_boxes`), coloured by family (data: accuracy, group, family, optionally diverged; see
    `aggregate.member_groups`), the diverged members marked and the no-coupling mean as a line;
    `left_out`: how many members are not in `data` because their training loss, or their parent's,
    became non-finite, and `left_out_names` which, said in a note."""
    fig, ax = new((7.0, 1.6 + 0.32 * len(order)))
    _boxes(ax, data, order, families)
    notes = (
        [
            f"{left_out} member(s) left out: training loss non-finite (members.parquet metadata "
            "coupledsgd.nonfinite)" + (f": {left_out_names}" if left_out_names else "")
        ]
        if left_out
        else []
    )
    if "diverged" in data.columns and data["diverged"].any():
        bad = data[data["diverged"].astype(bool)]
        ax.scatter(
            bad["accuracy"],
            [order.index(g) for g in bad["group"]],
            marker="x",
            s=40,
            color="red",
            zorder=6,
            label="diverged member",
        )
        notes.append(f"{len(bad)} diverged member(s) marked x (members.parquet, column diverged)")
    if reference_level is not None:
        ax.axvline(reference_level, color=REF_COLOR, ls="--", lw=1.0, label=f"{REFERENCE} mean")
    else:
        notes.append(f"{REFERENCE} not in this experiment: no reference line")
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel("member test accuracy")
    ax.xaxis.set_major_locator(MaxNLocator(5))
    ax.set_ylabel("condition, spawn step t")
    ax.set_title(title)
    legend(fig, ax, notes)
    return fig


# ---------------------------------------------------------------------------------------------------
# Instability analysis, weight space and learning curves


def instability_figure(
    df: pd.DataFrame,
    *,
    conditions: Sequence[str],
    threshold: float,
    onsets: Iterable[str],
    unit: Sequence[str],
    ylabel: str,
    title: str,
    epochs: dict[int, float],
) -> Figure:
    """`value` "barrier" of each of `conditions` vs spawn step (the spawn axis of fig. 1, `spawn_axis`),
    mean +-1 sd over `unit`, the conditions dodged sideways, the no-coupling level dashed and the onset
    threshold dotted; `onsets`: a note per condition on its onset step."""
    present = [c for c in conditions if not A.rows(df, c).empty]
    if not present:
        return no_data_figure(title, missing(" / ".join(conditions)))
    ts = sorted({int(t) for c in present for t in A.rows(df, c)["t"]})
    fig, ax = new()
    n = 0
    for i, condition in enumerate(present):
        stats = A.parent_stats(A.rows(df, condition), ["t"], "barrier", unit).sort_values("t")
        n = max(n, int(stats["n"].max()))
        band_line(
            ax,
            stats["t"].to_numpy(float),
            stats,
            condition,
            FAMILY_COLOR.get(condition, MAIN_COLOR),
            transform=dodge(ax, i, len(present)),
        )
    notes = list(onsets)
    if not _reference(ax, A.rows(df, REFERENCE), "barrier", unit, label=f"{REFERENCE} pairs"):
        notes.append(f"{REFERENCE} not in this experiment: no reference line")
    ax.axhline(threshold, color="0.4", ls=":", lw=1.0, label=f"onset threshold ({threshold:g})")
    spawn_axis(ax, ts, epochs)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    legend(fig, ax, notes, title=spread(unit, n))
    return fig


def weight_space_figure(df: pd.DataFrame, *, x: str, y: str, xlabel: str, ylabel: str, title: str) -> Figure:
    """One point per pair of children (x against y), coloured by spawn step t, one marker per condition."""
    import matplotlib
    import numpy as np

    fig, ax = new()
    markers = {"coupled-to-t": "o", "coupled-to-t-reset": "s", REFERENCE: "X"}
    ts = sorted(int(t) for t in df["t"].unique())
    cmap = matplotlib.colormaps["viridis"]
    norm = matplotlib.colors.Normalize(min(ts), max(max(ts), min(ts) + 1))
    for condition, rows in df.groupby("condition", sort=False):
        ax.scatter(
            rows[x],
            rows[y],
            c=[cmap(norm(t)) for t in rows["t"]],
            marker=markers.get(condition, "^"),
            s=22,
            edgecolors="0.2",
            linewidths=0.4,
            label=condition,
        )
    sm = matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap)
    fig.colorbar(sm, ax=ax, label="spawn step t")
    if np.all(df[y] > 0) and df[y].max() > 20 * df[y].min():
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    legend(fig, ax)
    return fig


def curves_figure(df: pd.DataFrame, *, conditions: Sequence[str], title: str) -> Figure:
    """Training loss (left) and test accuracy (right) vs global step: the mean over members of each
    condition and spawn step, one colour per condition, one line style per spawn step."""
    Figure, _ = _mpl()
    fig = Figure(figsize=(9.0, 4.2), layout="constrained")
    axes = fig.subplots(1, 2)
    for condition in conditions:
        rows = A.rows(df, condition)
        for i, (t, g) in enumerate(rows.groupby("t")):
            color = FAMILY_COLOR.get(condition, MAIN_COLOR)
            label = condition + (f", t = {int(t)}" if condition != REFERENCE else "")
            for ax, value in zip(axes, ("train_loss", "test_accuracy")):
                mean = g.dropna(subset=[value]).groupby("step")[value].mean()
                ax.plot(
                    mean.index,
                    mean.to_numpy(),
                    color=color,
                    ls=T_STYLES[i % len(T_STYLES)],
                    lw=1.2,
                    alpha=0.5 + 0.5 * (i + 1) / max(1, rows["t"].nunique()),
                    label=label if ax is axes[0] else None,
                )
    axes[0].set_ylabel("training loss (running mean)")
    axes[0].set_title("(a) training loss")
    axes[1].set_ylabel("test accuracy")
    axes[1].set_title("(b) test accuracy")
    for ax in axes:
        ax.set_xlabel("SGD step")
    fig.suptitle(title)
    legend(fig, axes[0], title="mean over members")
    return fig
