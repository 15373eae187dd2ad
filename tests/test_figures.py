"""The figures: every one draws from small synthetic metric tables (the schemas of the metrics stage),
saves a decodable PNG and a PDF, and says "no data" instead of failing when a condition is absent."""

import itertools
import time

import matplotlib.image as mpimg
import matplotlib.text
import numpy as np
import pandas as pd
import pytest

from coupledsgd.analysis import aggregate as A
from coupledsgd.analysis import draw as D
from coupledsgd.analysis import figures as F
from coupledsgd.jobs.analysis import run_figure
from coupledsgd.core.errors import ArtifactError

PARENTS, CHILDREN, STEPS, PERCENTS, REINIT_STEPS = 2, 2, [0, 8], [25], [8]
STEPS_PER_EPOCH, EPOCHS = 8, 3
ALL = ["no-coupling", "coupled-order", "coupled-to-t", "coupled-to-t-reset"] + [
    f"reinit-{side}-{p}" for side in ("low", "high") for p in PERCENTS]
SECTION_4 = ["1a", "1b", "1c", "1d", "1e", "1f", "1g", "1h", "1i", "1j", "2", "3", "4", "5", "6"]


def _steps(cond, steps=STEPS, reinit_steps=REINIT_STEPS):
    if cond in ("no-coupling", "coupled-order"):
        return [0]
    return reinit_steps if cond.startswith("reinit") else steps


def synthetic_tables(conditions=ALL, seed=0, parents=PARENTS, children=CHILDREN, steps=STEPS,
                     reinit_steps=REINIT_STEPS):
    """All five metric tables with the metrics stage's schemas, filled with plausible random values."""
    rng = np.random.default_rng(seed)
    members, ensembles, pairs, forgetting, barriers = [], [], [], [], []
    for cond in conditions:
        for t in _steps(cond, steps, reinit_steps):
            te = t / STEPS_PER_EPOCH
            for p in range(parents):
                acc = 0.85 + 0.02 * rng.standard_normal(children)
                for c in range(children):
                    members.append(dict(condition=cond, t=t, t_epoch=te, parent=p, child=c, accuracy=acc[c],
                                        nll=0.4 + 0.05 * rng.random(), brier=0.2 + 0.02 * rng.random(),
                                        ece=0.03 * rng.random(), mace=0.01 * rng.random()))
                    # evaluation points: the spawn (epoch 0) and each epoch end
                    events = np.r_[0, rng.integers(0, 40, EPOCHS)]
                    for e in range(EPOCHS + 1):
                        forgetting.append(dict(condition=cond, t=t, parent=p, child=c,
                                               step=t + e * STEPS_PER_EPOCH, epoch=float(e),
                                               events=int(events[e]), cumulative_events=int(events[:e + 1].sum())))
                gain = 0.03 * rng.random()
                mm = 0.01 * rng.random()
                ensembles.append(dict(
                    condition=cond, t=t, t_epoch=te, parent=p, k=children, ensemble_accuracy=acc.mean() + gain,
                    mean_member_accuracy=acc.mean(), gain=gain, gain_ci_low=gain - 0.01, gain_ci_high=gain + 0.01,
                    ensemble_ece=0.02, ensemble_mace=mm, mean_member_mace=mm + 0.002, mace_improvement=0.002,
                    mace_improvement_ci_low=0.0, mace_improvement_ci_high=0.004, ensemble_nll=0.35,
                    sym_kl=0.1 * rng.random(), disagreement=0.1 * rng.random(),
                    gain_by_size=[0.0] + [gain] * (children - 1)))
                for a, b in itertools.combinations(range(children), 2):
                    pairs.append(dict(condition=cond, t=t, kind="same-parent", parent_a=p, child_a=a,
                                      parent_b=p, child_b=b, sym_kl=0.2 * rng.random(),
                                      disagreement=0.1 * rng.random()))
                    if cond not in ("no-coupling", "coupled-order"):
                        alphas = np.linspace(0, 1, 11)
                        err = 0.15 + 0.1 * np.sin(np.pi * alphas) * rng.random()
                        for al, er in zip(alphas, err):
                            barriers.append(dict(condition=cond, t=t, parent=p, child_a=a, child_b=b, alpha=al,
                                                 error=er, barrier=err.max() - (err[0] + err[-1]) / 2))
            for pa, pb in itertools.combinations(range(parents), 2):
                pairs.append(dict(condition=cond, t=t, kind="between-parents", parent_a=pa, child_a=None,
                                  parent_b=pb, child_b=None, sym_kl=0.3 * rng.random(),
                                  disagreement=0.1 * rng.random()))
    frames = dict(members=members, ensembles=ensembles, pairs=pairs, forgetting=forgetting, barriers=barriers)
    cols = dict(
        members=["condition", "t", "t_epoch", "parent", "child", "accuracy", "nll", "brier", "ece", "mace"],
        pairs=["condition", "t", "kind", "parent_a", "child_a", "parent_b", "child_b", "sym_kl", "disagreement"],
        forgetting=["condition", "t", "parent", "child", "step", "epoch", "events", "cumulative_events"],
        barriers=["condition", "t", "parent", "child_a", "child_b", "alpha", "error", "barrier"],
        ensembles=["condition", "t", "t_epoch", "parent", "k", "ensemble_accuracy", "mean_member_accuracy",
                   "gain", "gain_ci_low", "gain_ci_high", "ensemble_ece", "ensemble_mace", "mean_member_mace",
                   "mace_improvement", "mace_improvement_ci_low", "mace_improvement_ci_high", "ensemble_nll",
                   "sym_kl", "disagreement", "gain_by_size"])
    out = {name: pd.DataFrame(rows, columns=cols[name]) for name, rows in frames.items()}
    for name in ("child_a", "child_b"):
        out["pairs"][name] = out["pairs"][name].fillna(-1).astype("int16")
    # the barrier table stores `condition` dictionary-encoded: pandas reads it as a categorical
    out["barriers"]["condition"] = out["barriers"]["condition"].astype("category")
    out.update(_instability_tables(out, rng))
    return out


def _instability_tables(out, rng):
    """weights (same-parent pairs), onset (from the barriers) and curves (from forgetting) tables."""
    from coupledsgd.analysis.instability import onset_table

    same = out["pairs"][(out["pairs"]["kind"] == "same-parent")]
    weights = same[["condition", "t", "kind", "parent_a", "child_a", "parent_b", "child_b"]].assign(
        distance=rng.random(len(same)), cosine=rng.random(len(same)), travelled_a=rng.random(len(same)),
        travelled_b=rng.random(len(same)))
    f = out["forgetting"]
    curves = f[["condition", "t", "parent", "child", "step", "epoch"]].assign(
        lr=0.1, train_loss=2 * rng.random(len(f)), train_accuracy=rng.random(len(f)), test_accuracy=rng.random(len(f)))
    return {"weights": weights, "onset": onset_table(out["barriers"], 0.02), "curves": curves}


@pytest.fixture(scope="module")
def tables():
    return synthetic_tables()


def _texts(fig):
    return [t.get_text() for t in fig.findobj(matplotlib.text.Text)]


def _legend_texts(fig):
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    return [t.get_text() for legend in legends for t in legend.get_texts()]


def _check_files(png, pdf):
    assert png.stat().st_size > 1000 and pdf.stat().st_size > 1000
    assert pdf.read_bytes().startswith(b"%PDF")
    img = mpimg.imread(png)
    h, w = img.shape[:2]
    assert 300 <= w <= 3000 and 300 <= h <= 3000, img.shape
    assert img.std() > 0.01  # not a blank canvas
    assert not [p for p in png.parent.iterdir() if p.name.endswith(".tmp")]


def test_every_section_4_figure_is_registered_with_its_tables():
    assert [name.split("_")[0].removeprefix("fig") for name in F.FIGURES] == SECTION_4
    for name, (fn, tables, columns) in F.FIGURES.items():
        assert callable(fn) and tables and set(tables) <= set(F.TABLES), name
        assert columns and set(columns) <= set(tables), name
        assert fn.__name__ == name


@pytest.mark.parametrize("name", list(F.FIGURES))
def test_figure_draws_and_saves(name, tables, tmp_path):
    fn, needed, _ = F.FIGURES[name]
    start = time.perf_counter()
    fig = fn(**{t: tables[t] for t in needed})
    png, pdf = tmp_path / f"{name}.png", tmp_path / f"{name}.pdf"
    D.save(fig, png, pdf)
    assert time.perf_counter() - start < 5
    assert not hasattr(fig, "coupledsgd_no_data"), fig.coupledsgd_no_data
    _check_files(png, pdf)
    ax = fig.axes[0]
    assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title()
    assert _legend_texts(fig)
    assert not any("no data" in t for t in _texts(fig))


@pytest.mark.parametrize("name", [n for n in F.FIGURES if not n.startswith(("fig1g", "fig2"))])
def test_spawn_and_percent_figures_have_a_no_coupling_or_no_reinit_reference(name, tables):
    fn, needed, _ = F.FIGURES[name]
    legend = _legend_texts(fn(**{t: tables[t] for t in needed}))
    if name.startswith("fig3"):
        assert any(t.startswith("no re-init") for t in legend), legend
    else:
        assert any(t.startswith("no-coupling") for t in legend), legend


def test_spawn_axis_shows_steps_and_epochs(tables):
    fig = F.fig1b_accuracy_gain_reset(tables["ensembles"])
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels == ["0\n(init)", "8\n(1 ep)"]
    fig = F.fig1e_kl_same_parent(tables["pairs"], tables["ensembles"])  # epochs from the ensembles table
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["0\n(init)", "8\n(1 ep)"]
    fig = F.fig1e_kl_same_parent(tables["pairs"])  # no epochs known: steps alone
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["0\n(init)", "8"]
    assert A.t_label(6, {6: 0.4}) == "6\n(0.4 ep)"


def test_mean_and_band_are_over_parents(tables):
    e = tables["ensembles"]
    fig = F.fig1a_accuracy_gain(e)
    line = fig.axes[0].get_lines()[0]
    sel = e[e.condition == "coupled-to-t"]
    expect = sel.groupby("t")["gain"].mean().to_numpy()
    np.testing.assert_allclose(line.get_ydata(), expect)
    band = fig.axes[0].collections[0].get_paths()[0].vertices[:, 1]
    sd = sel.groupby("t")["gain"].std().to_numpy()
    assert band.max() == pytest.approx((expect + sd).max())
    assert band.min() == pytest.approx((expect - sd).min())


def test_parent_stats_average_children_first():
    df = pd.DataFrame(dict(t=[0, 0, 0, 0], parent=[0, 0, 0, 1], v=[1.0, 2.0, 3.0, 6.0]))
    s = A.parent_stats(df, ["t"], "v").iloc[0]
    assert (s["mean"], s["n"]) == (4.0, 2)          # parent 0: 2, parent 1: 6
    assert s["std"] == pytest.approx(np.std([2, 6], ddof=1))


def test_cumulative_forgetting_takes_the_last_point_within_E():
    rows = []
    for child, last_epoch in ((0, 3), (1, 2)):
        cum = 0
        for e in range(last_epoch + 1):
            cum += 10 * e
            rows.append(dict(condition="coupled-to-t-reset", t=8, parent=0, child=child, step=8 + 8 * e,
                             epoch=float(e), events=10 * e, cumulative_events=cum))
    f = pd.DataFrame(rows)
    last, E = A.cumulative_forgetting(f, ["coupled-to-t-reset"])
    assert E == 2.0  # the largest epoch both members reached
    assert last["cumulative_events"].tolist() == [30, 30]
    last, E = A.cumulative_forgetting(f, ["coupled-to-t-reset"], epochs=1.5)
    assert E == 1.5 and last["cumulative_events"].tolist() == [10, 10]


def test_fig1h_uses_a_common_horizon(tables):
    fig = F.fig1h_cumulative_forgetting(tables["forgetting"], tables["ensembles"])
    assert f"first {EPOCHS} epochs" in fig.axes[0].get_title()
    f = tables["forgetting"]
    sel = f[(f.condition == "coupled-to-t-reset") & (f.epoch == EPOCHS)]
    expect = sel.groupby("t")["cumulative_events"].mean().to_numpy()
    np.testing.assert_allclose(fig.axes[0].get_lines()[0].get_ydata(), expect)


def test_percent_figures_put_no_reinit_at_zero(tables):
    fig = F.fig3_error_barrier(tables["barriers"], tables["ensembles"])
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "25"]
    assert "t = 8 (1 ep)" in ax.get_title()
    lines = {l.get_label(): l for l in ax.get_lines()}
    assert lines["low layers"].get_xdata().tolist() == [25.0]
    b = tables["barriers"]
    reset = b[(b.condition == "coupled-to-t-reset") & (b.t == 8)]
    expect = reset.groupby("parent")["barrier"].mean().mean()
    marker = [l for l in ax.get_lines() if list(l.get_xdata()) == [0.0]]
    assert marker and marker[0].get_ydata()[0] == pytest.approx(expect)


def test_member_accuracy_has_one_box_per_condition_and_step(tables):
    fig = F.fig2_member_accuracy(tables["members"])
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels == ["no-coupling", "coupled-order", "coupled-to-t, t = 0 (init)", "coupled-to-t, t = 8 (1 ep)",
                      "coupled-to-t-reset, t = 0 (init)", "coupled-to-t-reset, t = 8 (1 ep)",
                      "reinit-low-25, t = 8 (1 ep)", "reinit-high-25, t = 8 (1 ep)"]


@pytest.mark.parametrize("name,absent", [
    ("fig1a_accuracy_gain", "coupled-to-t"), ("fig1b_accuracy_gain_reset", "coupled-to-t-reset"),
    ("fig1c_mace_improvement", "coupled-to-t"), ("fig1d_mace_improvement_reset", "coupled-to-t-reset"),
    ("fig1e_kl_same_parent", "coupled-to-t-reset"), ("fig1f_kl_between_parents", "coupled-to-t-reset"),
    ("fig1g_forgetting_per_epoch", "no-coupling"), ("fig1h_cumulative_forgetting", "coupled-to-t-reset"),
])
def test_missing_condition_gives_a_no_data_figure(name, absent, tmp_path):
    tables = synthetic_tables([c for c in ALL if c != absent])
    fn, needed, _ = F.FIGURES[name]
    fig = fn(**{t: tables[t] for t in needed})
    message = f"no data: condition {absent} not in this experiment"
    assert fig.coupledsgd_no_data == message and message in _texts(fig)
    D.save(fig, tmp_path / "f.png", tmp_path / "f.pdf")
    _check_files(tmp_path / "f.png", tmp_path / "f.pdf")


@pytest.mark.parametrize("name", ["fig1i_accuracy_gain_reinit", "fig1j_mace_reinit", "fig3_error_barrier"])
def test_no_reinit_conditions_give_a_no_data_figure(name, tmp_path):
    tables = synthetic_tables([c for c in ALL if not c.startswith("reinit")])
    fn, needed, _ = F.FIGURES[name]
    fig = fn(**{t: tables[t] for t in needed})
    assert "reinit-low-<pct>" in fig.coupledsgd_no_data
    D.save(fig, tmp_path / "f.png", tmp_path / "f.pdf")
    _check_files(tmp_path / "f.png", tmp_path / "f.pdf")


def test_empty_tables_give_no_data_figures(tables, tmp_path):
    for name, (fn, needed, _) in F.FIGURES.items():
        fig = fn(**{t: tables[t].iloc[:0] for t in needed})
        assert fig.coupledsgd_no_data.startswith("no data"), name
        D.save(fig, tmp_path / f"{name}.png", tmp_path / f"{name}.pdf")
        _check_files(tmp_path / f"{name}.png", tmp_path / f"{name}.pdf")


def test_missing_reference_is_noted_not_fatal(tables):
    t = synthetic_tables([c for c in ALL if c != "no-coupling"])
    fig = F.fig1a_accuracy_gain(t["ensembles"])
    assert not hasattr(fig, "coupledsgd_no_data")
    assert any("no-coupling not in this experiment: no reference line" in s for s in _texts(fig))
    fig = F.fig3_error_barrier(t["barriers"].query("condition != 'coupled-to-t-reset'"), t["ensembles"])
    assert any("no 'no re-init' marker" in s for s in _texts(fig))


def test_only_one_side_reinitialised(tables):
    t = synthetic_tables([c for c in ALL if not c.startswith("reinit-high")])
    fig = F.fig1i_accuracy_gain_reinit(t["ensembles"])
    legend = _legend_texts(fig)
    assert "low layers" in legend and "high layers" not in legend
    assert any("reinit-high-<pct> not in this experiment" in s for s in _texts(fig))


def test_a_missing_column_names_the_file(tables, tmp_path):
    path = tmp_path / "ensembles.parquet"
    tables["ensembles"].drop(columns=["gain"]).to_parquet(path)
    with pytest.raises(ArtifactError, match=r"ensembles\.parquet: missing column\(s\) gain"):
        run_figure("fig1a_accuracy_gain", {"ensembles": str(path)}, str(tmp_path / "a.png"),
                   str(tmp_path / "a.pdf"))
    assert not (tmp_path / "a.png").exists()


def test_run_figure_reads_parquet_and_logs(tables, tmp_path):
    paths = {}
    for name, df in tables.items():
        paths[name] = str(tmp_path / "metrics" / f"{name}.parquet")
        (tmp_path / "metrics").mkdir(exist_ok=True)
        df.to_parquet(paths[name])
    for name, (_, needed, _) in F.FIGURES.items():
        out = tmp_path / "figures"
        run_figure(name, {t: paths[t] for t in needed}, str(out / f"{name}.png"), str(out / f"{name}.pdf"),
                     str(tmp_path / "logs" / f"{name}.log"))
        _check_files(out / f"{name}.png", out / f"{name}.pdf")
        assert f"{name}: drawn" in (tmp_path / "logs" / f"{name}.log").read_text()


def test_save_is_deterministic_and_replaces(tables, tmp_path):
    fig = F.fig1i_accuracy_gain_reinit(tables["ensembles"])
    D.save(fig, tmp_path / "a.png", tmp_path / "a.pdf")
    first = ((tmp_path / "a.png").read_bytes(), (tmp_path / "a.pdf").read_bytes())
    D.save(fig, tmp_path / "a.png", tmp_path / "a.pdf")
    assert ((tmp_path / "a.png").read_bytes(), (tmp_path / "a.pdf").read_bytes()) == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pdf", "a.png"]


def test_table_path():
    assert F.table_path("results/smoke", "pairs") == "results/smoke/metrics/pairs.parquet"
    with pytest.raises(ValueError, match="unknown metric table"):
        F.table_path("results/smoke", "nope")


def test_importing_the_registry_is_cheap():
    """The workflow imports FIGURES while it parses the rules: no plotting or data library may load."""
    import subprocess
    import sys

    code = ("import sys, coupledsgd.analysis.figures as F; assert F.FIGURES; "
            "print(sorted(m for m in ('matplotlib', 'seaborn', 'pandas', 'numpy', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_every_figure_has_a_caption():
    from pathlib import Path

    report = Path(__file__).resolve().parents[1] / "workflow" / "report"
    for name in F.FIGURES:
        text = (report / f"{name}.rst").read_text()
        assert "standard deviation" in text or "quartiles" in text, name
    assert (report / "figure.rst").read_text().strip() == "{{ snakemake.params.caption }}"
    assert (report / "workflow.rst").exists()


def test_kl_figures_say_the_grid_has_no_pairs_rather_than_no_condition(tables):
    """ensemble.children: 1 leaves no same-parent pairs, ensemble.parents: 1 no between-parent pairs:
    every condition is in the experiment, so the figure says what is missing."""
    no_pairs = tables["pairs"].iloc[:0]
    same = F.fig1e_kl_same_parent(no_pairs, tables["ensembles"])
    assert "ensembles of one child have no pairs" in same.coupledsgd_no_data and "children: 1" in same.coupledsgd_no_data
    between = F.fig1f_kl_between_parents(no_pairs, tables["ensembles"])
    assert "one parent" in between.coupledsgd_no_data and "parents: 1" in between.coupledsgd_no_data


def test_diverged_members_are_marked_in_fig2(tables):
    members = tables["members"].assign(diverged=False)
    members.loc[members.index[0], "diverged"] = True
    fig = F.fig2_member_accuracy(members)
    assert any("1 diverged member(s) marked x" in t for t in _texts(fig))
    assert "diverged member" in _legend_texts(fig)
    plain = F.fig2_member_accuracy(members.assign(diverged=False))
    assert not any("diverged" in t for t in _texts(plain))


def test_percent_figures_plot_the_realised_share(tables):
    """x is the share really re-drawn (the tables' reinit_percent, mean over the condition), ticks the
    requested percents; tables without the column fall back to the request."""
    e = tables["ensembles"].copy()
    e["reinit_percent"] = e["condition"].map({"reinit-low-25": 24.9, "reinit-high-25": 25.3})
    for fig in (F.fig1i_accuracy_gain_reinit(e), F.fig3_error_barrier(tables["barriers"], e)):
        ax = fig.axes[0]
        lines = {l.get_label(): l for l in ax.get_lines()}
        assert lines["low layers"].get_xdata().tolist() == [24.9]
        assert lines["high layers"].get_xdata().tolist() == [25.3]
        assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "25"]


def _draw_all(tables) -> dict:
    return {name.split("_")[0]: fn(**{t: tables[t] for t in needed}) for name, (fn, needed, _) in F.FIGURES.items()}


def _legend_title(fig) -> str:
    return fig.legends[0].get_title().get_text()


def _no_data(fig) -> str | None:
    return getattr(fig, "coupledsgd_no_data", None)


def test_one_parent_one_child_one_spawn_step_figures_say_what_the_grid_lacks():
    figs = _draw_all(synthetic_tables(parents=1, children=1, steps=[8]))
    # Every condition ran: the barrier, same-parent and between-parent figures lack pairs, not conditions.
    assert _no_data(figs["fig3"]) == _no_data(figs["fig1e"]) == D.NO_PAIRS_OF_CHILDREN
    assert "(ensemble.parents: 1)" in _no_data(figs["fig1f"])
    # One unit has no sd: no legend claims a band over it, and runs are counted as runs.
    assert "no-coupling (1 run, no sd)" in _legend_texts(figs["fig1g"])
    assert {"coupled-to-t (1 parent, no sd)", "no-coupling (1 parent, no sd)"} <= set(_legend_texts(figs["fig1a"]))
    assert _legend_title(figs["fig1i"]) == "1 parent, no sd"
    assert [t.get_text() for t in figs["fig1a"].axes[0].get_xticklabels()] == ["8\n(1 ep)"]
    for name, fig in figs.items():
        assert not any("over 1 " in t or "parent pair" in t for t in _texts(fig)), (name, _texts(fig))
        bands = [c for ax in fig.axes for c in ax.collections if "PolyCollection" in type(c).__name__]
        assert not bands, name  # no band over one unit


def test_one_parent_many_children_and_many_parents_one_child():
    one_parent = _draw_all(synthetic_tables(parents=1, children=3))
    assert "no-coupling (mean ± sd over 3 runs)" in _legend_texts(one_parent["fig1g"])
    assert _no_data(one_parent["fig3"]) is None and _legend_title(one_parent["fig3"]) == "1 parent, no sd"
    assert "(ensemble.parents: 1)" in _no_data(one_parent["fig1f"])
    one_child = _draw_all(synthetic_tables(parents=3, children=1))
    assert _no_data(one_child["fig3"]) == _no_data(one_child["fig1e"]) == D.NO_PAIRS_OF_CHILDREN
    assert "coupled-to-t-reset ensembles (mean ± sd over 3 parent pairs)" in _legend_texts(one_child["fig1f"])
    assert "no-coupling (mean ± sd over 3 runs)" in _legend_texts(one_child["fig1g"])


def _tick_x(fig) -> np.ndarray:
    """Where the x ticks sit on the canvas, in pixels."""
    fig.draw_without_rendering()
    ax = fig.axes[0]
    ticks = ax.get_xticks()
    return ax.transData.transform(np.c_[ticks, np.zeros(len(ticks))])[:, 0]


def test_spawn_scale_is_linear_unless_the_steps_span_more_than_a_factor_of_ten():
    assert D.spawn_scale([0, 8]) == ("linear", None)
    assert D.spawn_scale([8]) == ("linear", None)
    assert D.spawn_scale([0, 431, 878, 1254, 1791, 2558, 3654]) == ("linear", None)  # a factor of 8.5
    assert D.spawn_scale([0, 6, 30, 60, 180]) == ("symlog", 6.0)  # the default config: a factor of 30


def test_spawn_steps_sit_at_their_true_values_on_a_linear_axis():
    tables = synthetic_tables(steps=[0, 8, 16, 40])
    fig = F.fig1b_accuracy_gain_reset(tables["ensembles"])
    ax = fig.axes[0]
    assert ax.get_xscale() == "linear" and "linear scale" in ax.get_xlabel()
    assert ax.get_xticks().tolist() == [0, 8, 16, 40]
    assert ax.get_lines()[0].get_xdata().tolist() == [0, 8, 16, 40]
    x = _tick_x(fig)
    np.testing.assert_allclose((x - x[0]) / (x[-1] - x[0]), [0, 0.2, 0.4, 1.0], atol=1e-9)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0\n(init)", "8\n(1 ep)", "16\n(2 ep)", "40\n(5 ep)"]


@pytest.mark.parametrize("name", ["fig1a_accuracy_gain", "fig1e_kl_same_parent", "fig1h_cumulative_forgetting"])
def test_spawn_steps_spanning_decades_sit_on_a_symmetric_log_axis(name):
    tables = synthetic_tables(steps=[0, 6, 30, 60, 180])
    fn, needed, _ = F.FIGURES[name]
    fig = fn(**{t: tables[t] for t in needed})
    ax = fig.axes[0]
    assert ax.get_xscale() == "symlog" and "symmetric-log scale, linear below 6" in ax.get_xlabel()
    assert ax.get_xticks().tolist() == [0, 6, 30, 60, 180]
    x = _tick_x(fig)
    gaps = np.diff(x)
    assert (gaps > 0).all() and gaps.max() / gaps.min() > 1.5  # not evenly spaced
    # above the threshold the distance is logarithmic: 30 -> 60 against 60 -> 180
    assert (x[3] - x[2]) / (x[4] - x[3]) == pytest.approx(np.log(2) / np.log(3), rel=1e-6)
    assert (x[2] - x[1]) / (x[3] - x[2]) == pytest.approx(np.log(5) / np.log(2), rel=1e-6)


@pytest.mark.parametrize("name", ["fig1i_accuracy_gain_reinit", "fig1j_mace_reinit", "fig3_error_barrier"])
def test_low_and_high_points_at_one_percent_are_dodged_apart(name, tables):
    fn, needed, _ = F.FIGURES[name]
    fig = fn(**{t: tables[t] for t in needed})
    fig.draw_without_rendering()
    lines = {l.get_label(): l for l in fig.axes[0].get_lines()}
    low, high = lines["low layers"], lines["high layers"]
    assert low.get_xdata().tolist() == high.get_xdata().tolist() == [25.0]  # the data keep their x
    drawn = [l.get_transform().transform([[25.0, 0.0]])[0, 0] for l in (low, high)]
    assert drawn[1] - drawn[0] == pytest.approx(D.DODGE_PT * fig.dpi / 72)


def test_two_reinit_steps_give_four_distinct_offsets_and_two_no_reinit_markers_apart():
    tables = synthetic_tables(steps=[0, 8, 16], reinit_steps=[8, 16])
    fig = F.fig1i_accuracy_gain_reinit(tables["ensembles"])
    fig.draw_without_rendering()
    ax = fig.axes[0]
    lines = [l for l in ax.get_lines() if l.get_label().endswith(("t = 8", "t = 16"))]
    assert len(lines) == 4
    assert len({round(l.get_transform().transform([[25.0, 0.0]])[0, 0], 6) for l in lines}) == 4
    markers = [l for l in ax.get_lines() if list(l.get_xdata()) == [0.0]]
    assert len({round(l.get_transform().transform([[0.0, 0.0]])[0, 0], 6) for l in markers}) == 2


def _boxes_drawn(fig) -> int:
    return sum(type(p).__name__ == "PathPatch" for p in fig.axes[0].patches)


def test_fig2_draws_points_and_means_for_small_groups_and_boxes_from_ten_members():
    small = synthetic_tables(parents=2, children=2)["members"]  # 4 members a group
    fig = F.fig2_member_accuracy(small)
    assert _boxes_drawn(fig) == 0
    assert any(t.startswith(f"mean of a group of < {D.MIN_BOX_MEMBERS} members") for t in _legend_texts(fig))
    large = synthetic_tables(parents=2, children=5)["members"]  # 10 members a group
    fig = F.fig2_member_accuracy(large)
    assert _boxes_drawn(fig) == len(fig.axes[0].get_yticklabels()) == 8
    assert not any(t.startswith("mean of a group") for t in _legend_texts(fig))


def test_every_caption_says_what_its_band_is_over_and_how_its_x_axis_is_scaled():
    from pathlib import Path

    report = Path(__file__).resolve().parents[1] / "workflow" / "report"
    over = ("standard deviation over parents", "standard deviation over pairs of parents",
            "standard deviation over runs")
    for name in F.FIGURES:
        text = " ".join((report / f"{name}.rst").read_text().split())
        if name.startswith("fig2"):
            assert "no band" in text and f"{D.MIN_BOX_MEMBERS} members" in text, name
        elif name.startswith(("fig5", "fig6")):  # every pair shown / curves of members: no band, no t axis
            assert "no standard deviation" in text, name
            continue
        else:
            assert any(o in text for o in over), name
        if name.startswith(("fig1i", "fig1j", "fig3")):
            assert "apart sideways" in text, name
        elif not name.startswith(("fig1g", "fig2")):
            assert "symmetric-log" in text and "not evenly spaced" not in text, name
            assert "evenly spaced, not to scale" not in text, name
