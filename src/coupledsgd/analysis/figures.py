"""The figures of docs/design.md, "Figures", and their one registry: `FIGURES` maps every figure file name
to its draw function, the metric tables it reads (results/{exp}/metrics/) and the columns it needs of
each, which is all the workflow needs for one job per figure (`jobs.analysis.run_figure`).

Each figure function takes the DataFrames it reads, as arguments named after the tables, and returns a
matplotlib Figure: it selects and averages with `aggregate` (pandas only) and draws with `draw`
(matplotlib, seaborn). The registry checks the columns before the function runs: a table that lacks one
is an error that names its file. Data a figure needs that the experiment does not have (a condition not
in the config) gives a figure that says so ("no data: condition X not in this experiment").

A value is first averaged within a parent (over its children, or its pairs of children), then shown as
the mean over parents with a band of +-1 standard deviation over parents. Between-parent KL (1f) uses
pairs of parents as the unit; forgetting per epoch (1g) uses the independent runs, since no-coupling
members share nothing. Condition names and their parts come from `core.conditions`.

Importing this module loads no plotting or data library (matplotlib, seaborn, pandas, numpy): the
workflow reads `FIGURES` when it parses the rules.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, NamedTuple

from ..core.conditions import BARRIER_REFERENCE, REFERENCE
from ..core.layout import Layout
from . import aggregate as A
from . import draw as D

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure as MplFigure

Draw = Callable[..., "MplFigure"]  # (**tables) -> matplotlib Figure

TABLES = ("members", "ensembles", "pairs", "forgetting", "barriers", "weights", "onset", "curves")
TO_T = "coupled-to-t"
RESET = BARRIER_REFERENCE  # coupled-to-t-reset: extended training, and the "no re-init" of 1i, 1j, 3


class Figure(NamedTuple):
    draw: Draw
    tables: tuple[str, ...]  # the metric tables it reads, by name
    columns: dict[str, tuple[str, ...]]  # the columns it needs of each (others it reads only if there)


FIGURES: dict[str, Figure] = {}


def _figure(name: str, tables: Sequence[str], **columns: Sequence[str]) -> Callable[[Draw], Draw]:
    """Register `fn` as figure `name`, reading `tables` and needing `columns` (table -> columns)."""

    def register(fn: Draw) -> Draw:
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def checked(*args: Any, **kwargs: Any) -> MplFigure:
            bound = signature.bind(*args, **kwargs)
            for table, needed in columns.items():
                if bound.arguments.get(table) is not None:
                    bound.arguments[table] = A.require(bound.arguments[table], table, needed)
            return fn(*bound.args, **bound.kwargs)

        FIGURES[name] = Figure(checked, tuple(tables), {t: tuple(c) for t, c in columns.items()})
        return checked

    return register


def table_path(exp_dir: str | Path, table: str) -> str:
    """Where the metrics stage writes `table` for the experiment folder `exp_dir` (results/{exp}):
    `core.layout.Layout.table`."""
    if table not in TABLES:
        raise ValueError(f"unknown metric table {table!r}; known: {', '.join(TABLES)}")
    results, _, experiment = str(exp_dir).rpartition("/")
    return Layout(experiment, results or ".").table(table)


_ENS = ["condition", "t", "t_epoch", "parent"]
_PAIRS = ["condition", "t", "kind", "parent_a", "parent_b", "sym_kl"]
_FORGET = ["condition", "t", "parent", "child", "epoch", "events", "cumulative_events"]
_GAIN_LABEL = "ensemble accuracy gain\nover mean of members"
_MACE_LABEL = "MACE improvement\n(mean member − ensemble)"


def _k(ensembles: pd.DataFrame) -> str:
    k = A.ensemble_size(ensembles)
    return f"{k}-" if k is not None else ""


def _ensemble_figure(ensembles: pd.DataFrame, condition: str, value: str, ylabel: str, title: str) -> MplFigure:
    e = A.largest_k(ensembles)
    return D.spawn_figure(
        e, condition=condition, value=value, unit=("parent",), ylabel=ylabel, title=title, epochs=A.epoch_map(e)
    )


@_figure("fig1a_accuracy_gain", ["ensembles"], ensembles=_ENS + ["gain"])
@D.styled
def fig1a_accuracy_gain(ensembles: pd.DataFrame) -> MplFigure:
    """Accuracy gain (ensemble minus mean member accuracy) vs t, coupled-to-t, with no-coupling."""
    return _ensemble_figure(ensembles, TO_T, "gain", _k(A.largest_k(ensembles)) + _GAIN_LABEL, "(a) Accuracy gain")


@_figure("fig1b_accuracy_gain_reset", ["ensembles"], ensembles=_ENS + ["gain"])
@D.styled
def fig1b_accuracy_gain_reset(ensembles: pd.DataFrame) -> MplFigure:
    """As 1a for coupled-to-t-reset (extended training)."""
    return _ensemble_figure(
        ensembles, RESET, "gain", _k(A.largest_k(ensembles)) + _GAIN_LABEL, "(b) Accuracy gain (extended training)"
    )


@_figure("fig1c_mace_improvement", ["ensembles"], ensembles=_ENS + ["mace_improvement"])
@D.styled
def fig1c_mace_improvement(ensembles: pd.DataFrame) -> MplFigure:
    """MACE improvement (mean member MACE minus ensemble MACE) vs t, coupled-to-t."""
    return _ensemble_figure(ensembles, TO_T, "mace_improvement", _MACE_LABEL, "(c) MACE improvement")


@_figure("fig1d_mace_improvement_reset", ["ensembles"], ensembles=_ENS + ["mace_improvement"])
@D.styled
def fig1d_mace_improvement_reset(ensembles: pd.DataFrame) -> MplFigure:
    """As 1c for coupled-to-t-reset."""
    return _ensemble_figure(
        ensembles, RESET, "mace_improvement", _MACE_LABEL, "(d) MACE improvement (extended training)"
    )


@_figure("fig1e_kl_same_parent", ["pairs", "ensembles"], pairs=_PAIRS)
@D.styled
def fig1e_kl_same_parent(pairs: pd.DataFrame, ensembles: pd.DataFrame | None = None) -> MplFigure:
    """Symmetric KL between two children of one parent (all pairs averaged within the parent) vs t,
    coupled-to-t-reset; the no-coupling level is the same quantity between members of one group.
    `ensembles` only supplies the epoch of each spawn step."""
    same = pairs[pairs["kind"] == "same-parent"]
    return D.spawn_figure(
        same,
        condition=RESET,
        value="sym_kl",
        unit=("parent_a",),
        ylabel="symmetric KL between children\n(test-set mean)",
        title="(e) Symmetric KL, same parent",
        epochs=A.epoch_map(ensembles),
        what=f"{RESET}, children of one parent",
        why_empty=D.NO_PAIRS_OF_CHILDREN,
    )


@_figure("fig1f_kl_between_parents", ["pairs", "ensembles"], pairs=_PAIRS)
@D.styled
def fig1f_kl_between_parents(pairs: pd.DataFrame, ensembles: pd.DataFrame | None = None) -> MplFigure:
    """Symmetric KL between the mean predictions of two ensembles with different parents vs t,
    coupled-to-t-reset; mean +-1 sd over pairs of parents."""
    between = pairs[pairs["kind"] == "between-parents"]
    return D.spawn_figure(
        between,
        condition=RESET,
        value="sym_kl",
        unit=("parent_a", "parent_b"),
        ylabel="symmetric KL between ensembles\nof different parents",
        title="(f) Symmetric KL, between parents",
        epochs=A.epoch_map(ensembles),
        what=f"{RESET} ensembles",
        why_empty="no data: one parent, no pairs of ensembles\n(ensemble.parents: 1)",
    )


@_figure("fig1g_forgetting_per_epoch", ["forgetting"], forgetting=_FORGET)
@D.styled
def fig1g_forgetting_per_epoch(forgetting: pd.DataFrame) -> MplFigure:
    """Test-set forgetting events at each evaluation point (default: each epoch) of the no-coupling
    runs, mean +-1 sd over runs. The first point (epoch 0) is left out: no event can happen there."""
    title = "(g) Mean forgetting events by epoch"
    stats = A.forgetting_per_epoch(forgetting, REFERENCE)
    if stats is None:
        return D.no_data_figure(title, D.missing(REFERENCE))
    runs = D.spread(("parent", "child"), int(stats["n"].max()))
    return D.epoch_figure(
        stats, label=f"{REFERENCE} ({runs})", title=title, ylabel="forgetting events on the test set\n(per evaluation)"
    )


@_figure("fig1h_cumulative_forgetting", ["forgetting", "ensembles"], forgetting=_FORGET)
@D.styled
def fig1h_cumulative_forgetting(
    forgetting: pd.DataFrame, ensembles: pd.DataFrame | None = None, epochs: float | None = None
) -> MplFigure:
    """Cumulative test-set forgetting events over the first E epochs after the spawn, per child of
    coupled-to-t-reset (averaged over children, then over parents) vs t; no-coupling over its first E
    epochs as the reference. E defaults to the largest epoch all these members reached."""
    title = "(h) Cumulative forgetting events by spawn time"
    if A.rows(forgetting, RESET).empty:
        return D.no_data_figure(title, D.missing(RESET))
    last, E = A.cumulative_forgetting(forgetting, [RESET, REFERENCE], epochs)
    assert E is not None  # the reset condition has rows
    return D.spawn_figure(
        last,
        condition=RESET,
        value="cumulative_events",
        unit=("parent",),
        ylabel="cumulative forgetting events\n(test set, mean over children)",
        title=f"{title}\n(first {A.fmt_epoch(E)} epochs after the spawn)",
        epochs=A.epoch_map(ensembles),
    )


@_figure("fig1i_accuracy_gain_reinit", ["ensembles"], ensembles=_ENS + ["gain"])
@D.styled
def fig1i_accuracy_gain_reinit(ensembles: pd.DataFrame) -> MplFigure:
    """Accuracy gain vs percent of parameters re-initialised, low and high layers, with the
    coupled-to-t-reset members at the re-init step as "no re-init" and the no-coupling level."""
    e = A.largest_k(ensembles)
    return D.percent_figure(
        e,
        value="gain",
        unit=("parent",),
        ylabel=_k(e) + _GAIN_LABEL,
        title="(i) Accuracy gain, re-initialising",
        epochs=A.epoch_map(e),
        reference=True,
    )


@_figure("fig1j_mace_reinit", ["ensembles"], ensembles=_ENS + ["ensemble_mace"])
@D.styled
def fig1j_mace_reinit(ensembles: pd.DataFrame) -> MplFigure:
    """Ensemble MACE vs percent re-initialised, low and high layers (lower is better)."""
    e = A.largest_k(ensembles)
    return D.percent_figure(
        e,
        value="ensemble_mace",
        unit=("parent",),
        ylabel=f"{_k(e)}ensemble MACE (lower is better)",
        title="(j) MACE, re-initialising",
        epochs=A.epoch_map(e),
        reference=True,
    )


@_figure("fig2_member_accuracy", ["members"], members=["condition", "t", "t_epoch", "parent", "child", "accuracy"])
@D.styled
def fig2_member_accuracy(members: pd.DataFrame) -> MplFigure:
    """Test accuracy of every member as dots, one row per condition and spawn step, with a box where the
    row has at least `draw.MIN_BOX_MEMBERS` members and the mean as a bar where it has fewer."""
    from .read import left_out_names  # here: importing the figures' registry stays cheap

    title = "Individual accuracy of all members"
    if members.empty:
        return D.no_data_figure(title, "no data: no members in this experiment")
    order, families, data = A.member_groups(members)
    ref = A.rows(members, REFERENCE)
    return D.box_figure(
        data,
        order,
        families,
        title=title,
        reference_level=None if ref.empty else float(ref["accuracy"].mean()),
        left_out=members.attrs.get("nonfinite", 0),
        left_out_names=left_out_names(members.attrs.get("left_out", []), limit=4),
    )


@_figure(
    "fig3_error_barrier",
    ["barriers", "ensembles"],
    barriers=["condition", "t", "parent", "child_a", "child_b", "barrier"],
)
@D.styled
def fig3_error_barrier(barriers: pd.DataFrame, ensembles: pd.DataFrame | None = None) -> MplFigure:
    """Error barrier on the linear path between two children vs percent re-initialised (low, high);
    the coupled-to-t-reset children at the re-init step are the "no re-init" marker at 0%. Each pair's
    barrier is averaged within its parent, then mean +-1 sd over parents."""
    # One child per parent leaves no pairs; the grid's re-init conditions ran (else the usual note).
    one_child = ensembles is not None and A.ensemble_size(ensembles) == 1 and not A.reinit_rows(ensembles).empty
    return D.percent_figure(
        A.barrier_per_pair(barriers),
        value="barrier",
        unit=("parent",),
        ylabel="error barrier between two children\n(max over path − mean of ends)",
        title="Error barrier, re-initialising",
        epochs=A.epoch_map(ensembles),
        reference=False,
        realised=ensembles,
        why_empty=D.NO_PAIRS_OF_CHILDREN if one_child else None,
    )


# ---------------------------------------------------------------------------------------------------
# Instability analysis, weight space and learning curves

_INSTABILITY = (TO_T, RESET)


def _onset_notes(onset: pd.DataFrame) -> list[str]:
    """Per condition: the onset step's median and range over parents, and the parents without one."""
    import numpy as np

    notes = []
    for condition in _INSTABILITY:
        rows = A.rows(onset, condition) if onset is not None else onset
        if rows is None or rows.empty:
            continue
        values = rows["onset"].to_numpy(dtype=float)
        got = values[np.isfinite(values)]
        text = (
            f"onset ({condition}): median {np.median(got):g}, range {got.min():g}-{got.max():g} over "
            f"{len(got)} parent(s)"
            if len(got)
            else f"onset ({condition}): not reached"
        )
        if 0 < len(got) < len(values):
            text += f"; not reached by {len(values) - len(got)}"
        notes.append(text)
    return notes


@_figure(
    "fig4_instability",
    ["barriers", "onset", "ensembles"],
    barriers=["condition", "t", "parent", "child_a", "child_b", "barrier"],
    onset=["condition", "parent", "onset", "threshold"],
)
@D.styled
def fig4_instability(barriers: pd.DataFrame, onset: pd.DataFrame, ensembles: pd.DataFrame | None = None) -> MplFigure:
    """Instability analysis (Frankle et al. 2020): the error barrier between two children of one parent vs
    spawn step t, coupled-to-t and coupled-to-t-reset, each pair averaged within its parent, then mean
    +-1 sd over parents; the no-coupling pairs' level dashed, the onset threshold dotted, and each
    condition's onset step (the first t from which the barrier stays below it) in a note."""
    from .instability import barrier_per_parent

    title = "Instability: error barrier between children"
    if barriers.empty:
        return D.no_data_figure(title, "no data: no barriers measured\n(barrier.spawn_steps: none, or one child)")
    threshold = float(onset["threshold"].iloc[0]) if not onset.empty else float("nan")
    return D.instability_figure(
        barrier_per_parent(barriers),
        conditions=_INSTABILITY,
        threshold=threshold,
        onsets=_onset_notes(onset),
        unit=("parent",),
        ylabel="error barrier between two children\n(max over path − mean of ends)",
        title=title,
        epochs=A.epoch_map(ensembles),
    )


@_figure(
    "fig5_weight_space",
    ["pairs", "weights"],
    pairs=_PAIRS + ["child_a", "child_b"],
    weights=["condition", "t", "kind", "parent_a", "child_a", "parent_b", "child_b", "distance"],
)
@D.styled
def fig5_weight_space(pairs: pd.DataFrame, weights: pd.DataFrame) -> MplFigure:
    """Function space against weight space (Fort et al. 2019): the symmetric KL between two children of
    one parent against the L2 distance between their final weights (normalised by the spawn state's
    norm), one point per pair, coloured by spawn step t; no-coupling pairs as the independent level."""
    title = "Function space vs weight space, children of one parent"
    keys = ["condition", "t", "kind", "parent_a", "child_a", "parent_b", "child_b"]
    both = weights.merge(pairs[pairs["kind"] == "same-parent"], on=keys)
    if both.empty:
        return D.no_data_figure(
            title,
            "no data: no pairs of children with weight-space distances\n(barrier.spawn_steps: none, or one child)",
        )
    return D.weight_space_figure(
        both,
        x="distance",
        y="sym_kl",
        xlabel="‖w_a − w_b‖ / ‖spawn state‖ (final weights)",
        ylabel="symmetric KL between the children\n(test-set mean)",
        title=title,
    )


@_figure(
    "fig6_learning_curves",
    ["curves"],
    curves=["condition", "t", "parent", "child", "step", "train_loss", "test_accuracy"],
)
@D.styled
def fig6_learning_curves(curves: pd.DataFrame) -> MplFigure:
    """Training loss (the training log's running mean) and test accuracy vs SGD step, mean over members,
    no-coupling and coupled-to-t-reset at each spawn step."""
    title = "Learning curves"
    if A.rows(curves, REFERENCE).empty and A.rows(curves, RESET).empty:
        return D.no_data_figure(title, D.missing(f"{REFERENCE} / {RESET}"))
    return D.curves_figure(curves, conditions=[REFERENCE, RESET], title=title)
