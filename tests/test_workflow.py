"""The whole workflow on the smoke config, through the `snakemake` command."""

import re
import subprocess
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from fixtures import copy_workflow

from coupledsgd.core.config import config_hash, validate
from coupledsgd.core.grid import members, training_jobs

ROOT = Path(__file__).resolve().parents[1]


def snakemake(workdir, *args, check=True):
    result = subprocess.run(["snakemake", "--cores", "2", *args, "--configfile", "configs/smoke.yaml"],
                            cwd=workdir, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(result.stdout[-3000:] + result.stderr[-3000:])
    return result


def planned(workdir, *args):
    """Jobs per rule that a dry run would execute."""
    out = snakemake(workdir, "-n", *args).stdout
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", out, re.M)
            if m.group(1) != "total"}


def edit_smoke(workdir, change):
    path = workdir / "configs/smoke.yaml"
    config = yaml.safe_load(path.read_text())
    change(config)
    path.write_text(yaml.safe_dump(config))


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("workflow")
    copy_workflow(workdir)
    snakemake(workdir)
    config = validate(yaml.safe_load((workdir / "configs/smoke.yaml").read_text()))
    return workdir, config


def test_every_member_leaves_predictions_with_the_documented_schema(smoke):
    workdir, config = smoke
    grid = members(config)
    files = sorted((workdir / "results/smoke/predictions").rglob("*.parquet"))
    assert len(files) == len(grid) == 32
    for m in grid:
        table = pq.read_table(workdir / f"results/smoke/predictions/{m.key}.parquet")
        assert table.column_names == ["condition", "t", "parent", "child", "experiment", "config_hash",
                                      "example_id", "label"] + [f"logit_{j}" for j in range(10)]
        assert table.num_rows == 1000
        assert str(table.schema.field("logit_0").type) == "float"
        assert table.column("condition")[0].as_py() == m.condition and table.column("t")[0].as_py() == m.t
        origin = {name: table.column(name).unique().to_pylist() for name in ("experiment", "config_hash")}
        assert origin == {"experiment": ["smoke"], "config_hash": [config_hash(config)]}
        logits = np.stack([table.column(f"logit_{j}").to_numpy() for j in range(10)], 1)
        assert np.isfinite(logits).all()
        assert table.column("example_id").to_pylist() == list(range(1000))


def test_coupled_children_differ_and_their_trajectories_start_at_the_spawn(smoke):
    workdir, _ = smoke
    base = workdir / "results/smoke"
    for cond in ("coupled-to-t", "coupled-to-t-reset", "reinit-low-25"):
        a, b = (pq.read_table(base / f"predictions/{cond}/t8/p0/c{c}.parquet").column("logit_3").to_numpy()
                for c in (0, 1))
        assert not np.array_equal(a, b), cond
    traj = pq.read_table(base / "trajectories/coupled-to-t-reset/t8/p0/c0.parquet").to_pandas()
    assert sorted(traj.step.unique()) == [8, 16, 24, 32]  # spawn, each epoch after it, end (t + T)
    assert set(traj.experiment) == {"smoke"} and traj.config_hash.nunique() == 1
    assert len(traj) == 4 * 1000 and traj.correct.dtype == bool
    traj = pq.read_table(base / "trajectories/coupled-to-t/t8/p0/c0.parquet").to_pandas()
    assert sorted(traj.step.unique()) == [8, 16, 24]  # coupled-to-t stops at T in total
    final = pq.read_table(base / "predictions/coupled-to-t/t8/p0/c0.parquet").to_pandas()
    logits = final[[f"logit_{j}" for j in range(10)]].to_numpy()
    last = traj[traj.step == 24].sort_values("example_id").correct.to_numpy()
    assert np.array_equal(logits.argmax(1) == final.label.to_numpy(), last)


def test_training_logs_report_progress(smoke):
    workdir, _ = smoke
    log = (workdir / "logs/smoke/children/no-coupling/t0/members.log").read_text()  # job_shape auto: condition
    assert len(re.findall(r"step \d+/24 .*loss .*train_acc .*test_acc .*examples/s", log)) == 3


def test_a_second_run_has_nothing_to_do(smoke):
    workdir, _ = smoke
    assert "Nothing to be done" in snakemake(workdir, "-n").stdout


def test_adding_a_spawn_step_runs_only_its_jobs(smoke):
    workdir, _ = smoke
    edit_smoke(workdir, lambda c: c.update(spawn_steps=[0, 8, 16]))
    jobs = planned(workdir)
    edit_smoke(workdir, lambda c: c.update(spawn_steps=[0, 8]))
    # 2 parents at step 16; coupled-to-t and its reset, each one job of 2 parents x 2 children
    assert jobs["parent_state"] == 2 and jobs["train_members"] == 2
    assert "prepare_data" not in jobs


def test_changing_the_learning_rate_reruns_every_training_job(smoke):
    workdir, config = smoke
    edit_smoke(workdir, lambda c: c["training"].update(lr=0.05))
    jobs = planned(workdir)
    edit_smoke(workdir, lambda c: c["training"].update(lr=0.1))
    assert jobs["parent_state"] == 4 and jobs["train_members"] == len(training_jobs(config)) == 8
    assert "prepare_data" not in jobs


def test_a_bad_config_stops_before_any_job_naming_the_key(smoke):
    workdir, _ = smoke
    edit_smoke(workdir, lambda c: c.update(spawn_steps=[0, 99]))
    result = snakemake(workdir, check=False)
    edit_smoke(workdir, lambda c: c.update(spawn_steps=[0, 8]))
    assert result.returncode != 0
    assert "spawn_steps: spawn step 99 is not before the end of training" in result.stdout + result.stderr


def test_the_onset_threshold_reruns_the_tables_not_the_barrier_jobs(smoke):
    workdir, _ = smoke
    edit_smoke(workdir, lambda c: c.update(barrier={"onset_threshold": 0.05}))
    jobs = planned(workdir)
    edit_smoke(workdir, lambda c: c.pop("barrier"))
    assert "barrier" not in jobs and "train_members" not in jobs
    assert jobs["barriers"] == jobs["claims"] == 1 and jobs["figure"] >= 1


def test_a_barrier_step_not_in_spawn_steps_is_an_error_naming_the_key(smoke):
    workdir, _ = smoke
    edit_smoke(workdir, lambda c: c.update(barrier={"spawn_steps": [8, 16]}))
    result = snakemake(workdir, "-n", check=False)
    edit_smoke(workdir, lambda c: c.pop("barrier"))
    assert result.returncode != 0
    assert "barrier.spawn_steps: 16 is not one of spawn_steps [0, 8]" in result.stdout + result.stderr


def test_reordering_config_keys_reruns_nothing(smoke):
    workdir, _ = smoke
    path = workdir / "configs/smoke.yaml"
    text = path.read_text()
    path.write_text(yaml.safe_dump(yaml.safe_load(text), sort_keys=True))  # every key now in another order
    result = snakemake(workdir, "-n")
    path.write_text(text)
    assert "Nothing to be done" in result.stdout


def test_metric_tables_have_their_schemas_and_values_in_range(smoke):
    import pandas as pd

    from coupledsgd.analysis.tables import SCHEMAS
    from coupledsgd.jobs.analysis import SUMMARY_CSV_COLUMNS

    workdir, config = smoke
    base = workdir / "results/smoke/metrics"
    for name, schema in SCHEMAS.items():
        assert pq.read_schema(base / f"{name}.parquet").remove_metadata().equals(schema), name
    members_t = pd.read_parquet(base / "members.parquet")
    ens = pd.read_parquet(base / "ensembles.parquet")
    assert len(members_t) == len(members(config)) and len(ens) == len(members(config)) // 2
    assert members_t.accuracy.between(0, 1).all() and (members_t.nll > 0).all()
    assert members_t.ece.between(0, 1).all() and members_t.mace.between(0, 1).all()
    assert ens.ensemble_accuracy.between(0, 1).all() and ens.gain.between(-1, 1).all()
    assert (ens.gain_ci_low <= ens.gain).all() and (ens.gain <= ens.gain_ci_high).all()
    assert (ens.sym_kl >= 0).all() and ens.gain_by_size.map(len).eq(2).all()
    pairs = pd.read_parquet(base / "pairs.parquet")
    assert set(pairs.kind) == {"same-parent", "between-parents"} and (pairs.sym_kl >= 0).all()
    forgetting = pd.read_parquet(base / "forgetting.parquet")
    assert (forgetting.events >= 0).all() and forgetting.accuracy.between(0, 1).all()
    barriers = pd.read_parquet(base / "barriers.parquet")
    assert set(barriers.condition) == {"no-coupling", "coupled-to-t", "coupled-to-t-reset", "reinit-low-25",
                                       "reinit-high-25"}
    # the reinit step and its reset reference, the instability analysis at both spawn steps (the reset
    # at t = 8 once), no-coupling: 1 pair per parent, 11 points
    keys = barriers[["condition", "t"]].drop_duplicates()
    assert len(keys) == 3 + 1 + 2 * 2 - 1 and set(barriers.t[barriers.condition == "coupled-to-t"]) == {0, 8}
    assert barriers.error.between(0, 1).all() and len(barriers) == len(keys) * 2 * 11
    summary = pd.read_csv(base / "summary.csv")
    assert list(summary.columns) == SUMMARY_CSV_COLUMNS and len(summary) == 8


def test_instability_weight_space_and_curve_tables_have_their_schemas(smoke):
    import pandas as pd

    from coupledsgd.analysis.curves import CURVES_SCHEMA
    from coupledsgd.analysis.instability import ONSET_SCHEMA
    from coupledsgd.analysis.read import WEIGHTS_SCHEMA
    from coupledsgd.analysis.tables import PAIRS_SCHEMA

    workdir, config = smoke
    base = workdir / "results/smoke/metrics"
    for name, schema in (("weights", WEIGHTS_SCHEMA), ("onset", ONSET_SCHEMA), ("curves", CURVES_SCHEMA)):
        got = pq.read_schema(base / f"{name}.parquet").remove_metadata()
        assert got.names == schema.names and [f.type for f in got] == [f.type for f in schema], name
    weights = pd.read_parquet(base / "weights.parquet")
    # the keys of pairs.parquet: every row is a same-parent pair there
    keys = [f for f in PAIRS_SCHEMA.names if f in WEIGHTS_SCHEMA.names]
    assert keys == ["condition", "t", "kind", "parent_a", "child_a", "parent_b", "child_b"]
    pairs = pd.read_parquet(base / "pairs.parquet")
    assert len(weights.merge(pairs, on=keys)) == len(weights) == 7 * 2
    assert (weights.distance > 0).all() and weights.cosine.between(-1, 1).all() and (weights.travelled_a > 0).all()
    onset = pd.read_parquet(base / "onset.parquet")
    assert sorted(map(tuple, onset[["condition", "parent"]].values)) == [
        ("coupled-to-t", 0), ("coupled-to-t", 1), ("coupled-to-t-reset", 0), ("coupled-to-t-reset", 1)]
    assert onset.onset.dropna().isin([0, 8]).all() and (onset.threshold == 0.02).all() and (onset.n_steps == 2).all()
    curves = pd.read_parquet(base / "curves.parquet")
    forgetting = pd.read_parquet(base / "forgetting.parquet")
    assert len(curves[["condition", "t", "parent", "child"]].drop_duplicates()) == len(members(config))
    # every evaluation point's test accuracy; a training value at every report (each epoch after the start)
    assert curves.test_accuracy.notna().sum() == len(forgetting)
    trained = curves.dropna(subset=["train_loss"])
    assert (trained.train_loss > 0).all() and trained.train_accuracy.between(0, 1).all() and (trained.lr >= 0).all()
    log = (workdir / "logs/smoke/children/no-coupling/t0/members.log").read_text()
    last = [line for line in log.splitlines() if "step 24/24" in line][0].split()
    member = trained[(trained.condition == "no-coupling") & (trained.step == 24)].sort_values(["parent", "child"])
    logged = [float(v) for v in last[last.index("loss") + 1:last.index("train_acc")]]
    np.testing.assert_allclose(member.train_loss, logged, atol=5e-5)


def test_every_figure_is_a_nonempty_image_and_the_report_builds(smoke):
    import matplotlib.image
    import pandas as pd

    from coupledsgd.analysis.figures import FIGURES

    workdir, _ = smoke
    for name in FIGURES:
        png = workdir / f"results/smoke/figures/{name}.png"
        pdf = workdir / f"results/smoke/figures/{name}.pdf"
        image = matplotlib.image.imread(png)
        assert image.shape[0] > 200 and image.shape[1] > 200 and image.std() > 0, name
        assert pdf.read_bytes().startswith(b"%PDF") and pdf.stat().st_size > 1000, name
    # docs/concepts.md's command for a config other than the default: the report goes into its experiment's folder.
    snakemake(workdir, "--report", "results/smoke/report.html")
    html = (workdir / "results/smoke/report.html").read_text()
    assert all(name in html for name in FIGURES) and "summary.csv" in html and "claims.csv" in html
    assert "results/smoke/figures/" in html and "results/mnist1d-cnn1d" not in html
    assert not (workdir / "results/report.html").exists()
    # The claims and summary tables are shown in the report as HTML tables, one row each, verdicts first.
    claims = pd.read_csv(workdir / "results/smoke/claims.csv", keep_default_na=False)
    page = _embedded(html, "claims.html")
    rows = re.findall(r'<tr id="claim-([\w-]+)"><td><span class="verdict"[^>]*>. ([a-z ]+)</span>', page)
    assert rows == list(zip(claims["claim"], claims["verdict"]))
    summary = pd.read_csv(workdir / "results/smoke/metrics/summary.csv")
    page = _embedded(html, "summary.html")
    rows = re.findall(r'<tr id="summary-([\w-]+)-t(\d+)">', page)
    assert rows == [(c, str(t)) for c, t in zip(summary["condition"], summary["t"])]


def _embedded(report: str, filename: str) -> str:
    """The file `filename` as the self-contained report carries it (a base64 data URI)."""
    import base64

    found = re.findall(rf"data:text/html;charset=[\w-]+;filename={re.escape(filename)};base64,([A-Za-z0-9+/=]+)",
                       report)
    assert len(found) == 1, f"{filename}: {len(found)} embedded copies"
    return base64.b64decode(found[0]).decode()


def test_claims_table_names_every_claim_with_a_rule_and_a_verdict(smoke):
    import pandas as pd

    from coupledsgd.analysis.claims import CLAIM_IDS, COLUMNS, VERDICTS

    workdir, _ = smoke
    claims = pd.read_csv(workdir / "results/smoke/claims.csv", keep_default_na=False)
    assert list(claims.columns) == COLUMNS and claims["claim"].tolist() == CLAIM_IDS
    assert claims["verdict"].isin(VERDICTS).all() and (claims["rule"] != "").all()
    # Two spawn steps decide no trend over t: inconclusive, saying why; a difference of conditions has
    # its interval over the 2 parents.
    trend = claims.set_index("claim").loc["gain-falls"]
    assert trend["verdict"] == "inconclusive" and "spawn step" in trend["reason"]
    assert "spawn step" in claims.set_index("claim").loc["barrier-falls", "reason"]
    onset = claims.set_index("claim").loc["gain-zero-past-onset"]
    assert onset["test"].startswith("one-sample t over parents") or "no onset" in onset["reason"]
    barrier = claims.set_index("claim").loc["reinit-opens-barrier"]
    assert barrier["n_units"] == 2 and float(barrier["ci_low"]) <= float(barrier["value"]) <= float(barrier["ci_high"])


def test_two_runs_from_scratch_give_byte_identical_predictions(smoke, tmp_path):
    workdir, _ = smoke
    copy_workflow(tmp_path, workdir)
    snakemake(tmp_path, "--until", "train_members")
    for kind in ("predictions", "trajectories"):
        first = sorted((workdir / "results/smoke" / kind).rglob("*.parquet"))
        second = sorted((tmp_path / "results/smoke" / kind).rglob("*.parquet"))
        assert [p.relative_to(workdir) for p in first] == [p.relative_to(tmp_path) for p in second]
        for a, b in zip(first, second):
            assert a.read_bytes() == b.read_bytes(), a


# --- the manual's recipes, run as written against the smoke results ---------------------------------

RECIPE = re.compile(r"<!-- recipe: (\S+) -->\n```python\n(.*?)```", re.S)
DOCS_RESULTS = '"results/mnist1d-cnn1d"'
KEYS = ["condition", "t", "parent", "child"]
ARTIFACTS = ROOT / "docs/artifacts.md"


def recipes(page: Path) -> dict[str, str]:
    """The recipes of a page, by name, extracted from its text."""
    return dict(RECIPE.findall(page.read_text()))


def test_the_artifacts_page_has_a_recipe_for_each_reader():
    assert list(recipes(ARTIFACTS)) == ["pandas", "pyarrow", "duckdb", "polars", "instability"]
    assert list(recipes(ROOT / "README.md")) == ["gain"]


def _exec_recipe(page: Path, name: str, results: Path) -> dict:
    code = recipes(page)[name]
    assert code.count(DOCS_RESULTS) == 1, f"the {name} recipe must name the results folder once, as {DOCS_RESULTS}"
    namespace = {}
    exec(compile(code.replace(DOCS_RESULTS, repr(str(results))), f"{page.name} ({name} recipe)", "exec"), namespace)
    return namespace


def _rewrite(source, target, change):
    table = change(pq.read_table(source))
    target.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, target)


@pytest.fixture(scope="module")
def stale_results(smoke, tmp_path_factory):
    """The smoke run's tables and member files, plus files a current config does not make: a member
    dropped from the grid (spawn step 16, the current hash) and a member rewritten under another config
    hash (its predictions and trajectory changed, so counting it changes the numbers)."""
    import shutil

    import pyarrow as pa

    workdir, _ = smoke
    exp = tmp_path_factory.mktemp("recipes") / "results/smoke"
    for kind in ("predictions", "trajectories", "metrics"):
        shutil.copytree(workdir / "results/smoke" / kind, exp / kind)

    def set_column(name, values):
        return lambda table: table.set_column(table.column_names.index(name), name, values(table))

    dropped = set_column("t", lambda table: pa.array(np.full(table.num_rows, 16, dtype=np.int32)))
    other = set_column("config_hash", lambda table: pa.array(["0123456789abcdef"] * table.num_rows).dictionary_encode())
    flipped = set_column("correct", lambda table: pa.array(~table.column("correct").to_numpy(zero_copy_only=False)))
    for kind in ("predictions", "trajectories"):
        _rewrite(exp / kind / "coupled-to-t/t8/p0/c0.parquet", exp / kind / "coupled-to-t/t16/p0/c0.parquet", dropped)
    _rewrite(exp / "predictions/no-coupling/t0/p0/c0.parquet", exp / "predictions/no-coupling/old/c0.parquet", other)
    _rewrite(exp / "trajectories/no-coupling/t0/p0/c0.parquet", exp / "trajectories/no-coupling/old/c0.parquet",
             lambda table: flipped(other(table)))
    return exp


def _frame(result):
    """A recipe's result as a pandas DataFrame (pandas, pyarrow, DuckDB and polars results)."""
    import pandas as pd

    if isinstance(result, pd.DataFrame):
        return result
    return result.to_pandas() if hasattr(result, "to_pandas") else result.df()


@pytest.mark.parametrize("name", ["pandas", "pyarrow", "duckdb", "polars"])
def test_a_docs_recipe_gives_each_current_members_final_accuracy(stale_results, name):
    import pandas as pd

    if name in ("duckdb", "polars"):
        pytest.importorskip(name, reason=f"{name} runs the {name} recipe of docs/artifacts.md: pip install -e '.[test]'")
    namespace = _exec_recipe(ARTIFACTS, name, stale_results)
    members_t = pd.read_parquet(stale_results / "metrics/members.parquet")
    found = _frame(namespace["accuracy"])
    assert list(found.columns) == [*KEYS, "accuracy"]
    both = members_t.merge(found, on=KEYS, how="outer", suffixes=("", "_recipe"), indicator=True)
    assert (both["_merge"] == "both").all(), both[both["_merge"] != "both"][KEYS]
    np.testing.assert_allclose(both.accuracy_recipe, both.accuracy, rtol=0, atol=1e-12)
    summary = pd.read_csv(stale_results / "metrics/summary.csv").set_index(["condition", "t"])
    if name == "pandas":
        reset = summary.loc["coupled-to-t-reset"]
        np.testing.assert_allclose(namespace["gain"].gain.to_numpy(), reset.gain.to_numpy(), atol=1e-12)
        assert len(namespace["preds"]) == len(members_t) * 1000 and namespace["logits"].shape == (32000, 10)
    if name == "duckdb":
        gain = namespace["gain"].df().set_index(["condition", "t"]).gain
        np.testing.assert_allclose(gain.to_numpy(), summary.gain.loc[gain.index].to_numpy(), atol=1e-12)


def test_the_instability_recipe_joins_weights_curves_and_onsets(stale_results):
    import pandas as pd

    found = _exec_recipe(ARTIFACTS, "instability", stale_results)
    metrics = stale_results / "metrics"
    weights, curves = pd.read_parquet(metrics / "weights.parquet"), pd.read_parquet(metrics / "curves.parquet")
    # Every weight-space pair finds its function-space pair, once.
    assert len(weights) > 0 and len(found["both"]) == len(weights) and found["both"].sym_kl.notna().all()
    reset = curves[curves.condition == "coupled-to-t-reset"]
    assert found["loss"].columns.tolist() == sorted(reset.t.unique())
    assert found["loss"].index.tolist() == sorted(reset.step.unique())
    onset = pd.read_parquet(metrics / "onset.parquet")
    assert found["spread"]["count"].to_dict() == onset.groupby("condition").onset.count().to_dict()


def test_the_readmes_recipe_gives_the_gain_of_summary_csv(stale_results):
    import pandas as pd

    gain = _exec_recipe(ROOT / "README.md", "gain", stale_results)["gain"]
    reset = pd.read_csv(stale_results / "metrics/summary.csv").set_index(["condition", "t"]).loc["coupled-to-t-reset"]
    assert gain.index.tolist() == reset.index.tolist()
    np.testing.assert_allclose(gain.gain.to_numpy(), reset.gain.to_numpy(), atol=1e-12)
