import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from coupledsgd.analysis import metrics as M
from coupledsgd.analysis import tables as T
from coupledsgd.jobs.analysis import SUMMARY_CSV_COLUMNS, metric_tables
from coupledsgd.core.parquet import BLEW_UP_KEY, write_predictions, write_trajectory
from coupledsgd.core.errors import ArtifactError

# Hand-checkable experiment: one group (coupled-to-t, t=8), 2 parents x 2 children, 4 test examples,
# 3 classes, 8 steps per epoch. Rows are probabilities; the stored logits are their logs.
Y = np.array([0, 1, 2, 1])
P0C0 = np.array([[.8, .1, .1], [.6, .3, .1], [.1, .1, .8], [.1, .8, .1]])  # right, wrong, right, right
P0C1 = np.array([[.3, .6, .1], [.1, .8, .1], [.1, .1, .8], [.1, .8, .1]])  # wrong, right, right, right
# Parent 0's ensemble: mean [.55 .35 .1], [.35 .55 .1], ... -> right on all 4: gain 1 - 3/4 = 1/4.
# Sym. KL between its children: examples 0 and 1 give .5 ln 6 + .5 ln(8/3) = 2 ln 2, the rest 0: ln 2.
# Parent 1's children are both P0C0: gain 0, KL 0, disagreement 0.
PROBS = {(0, 0): P0C0, (0, 1): P0C1, (1, 0): P0C0, (1, 1): P0C0}
SPE = 8
COND, T8 = "coupled-to-t", 8
STEPS = [8, 16, 24]
# Correctness at the 3 points: events 0, 1 (example 0), 2 (examples 1 and 2).
CORRECT = np.array([[1, 1, 0, 0], [0, 1, 1, 0], [1, 0, 0, 0]], dtype=bool)
SETTINGS = {"bootstrap": 200, "ece_bins": 15, "mace_bins": 15, "forgetting_epochs": None}


def _meta(spe=SPE):
    return {"coupledsgd.steps_per_epoch": str(spe), "coupledsgd.params": "{}", "coupledsgd.config_hash": "abc"}


# The one member whose training loss rose above its bound (engine.training.loss_bound) while training
BLOWN = (1, 1)


def _write_member(root, cond, t, p, c, probs, labels, correct=CORRECT, steps=STEPS, spe=SPE):
    key = {"condition": cond, "t": t, "parent": p, "child": c}
    pred = root / "predictions" / cond / f"t{t}" / f"p{p}" / f"c{c}.parquet"
    traj = root / "trajectories" / cond / f"t{t}" / f"p{p}" / f"c{c}.parquet"
    blown = {BLEW_UP_KEY: '{"bound": 23.0, "loss": 1e6, "step": 16}'} if (p, c) == BLOWN else {}
    write_predictions(pred, key, np.asarray(labels), np.log(probs), {**_meta(spe), **blown})
    write_trajectory(traj, key, steps, correct, _meta(spe))
    return str(pred), str(traj)


def _write_experiment(root, probs=PROBS, labels=Y, cond=COND, t=T8):
    preds, trajs = [], []
    for (p, c), pr in probs.items():
        a, b = _write_member(root, cond, t, p, c, pr, labels)
        preds.append(a)
        trajs.append(b)
    return preds, trajs


def _outputs(root):
    out = {k: str(root / "metrics" / f"{k}.parquet") for k in ("members", "ensembles", "pairs", "forgetting")}
    out["summary"] = str(root / "metrics" / "summary.csv")
    return out


def _run(root, preds, trajs, settings=SETTINGS):
    out = _outputs(root)
    metric_tables(preds, trajs, out, settings, str(root / "metrics.log"))
    return {k: (pd.read_csv(v) if v.endswith(".csv") else pd.read_parquet(v)) for k, v in out.items()}, out


@pytest.fixture
def hand(tmp_path):
    preds, trajs = _write_experiment(tmp_path)
    return _run(tmp_path, preds, trajs)


def test_written_schemas_are_the_documented_ones(hand):
    _, out = hand
    for name, schema in T.SCHEMAS.items():
        written = pq.read_schema(out[name])
        assert written.remove_metadata().equals(schema), name
        assert written.names[:2] == ["condition", "t"]
        assert written.metadata[b"coupledsgd.steps_per_epoch"] == b"8"
    assert list(pd.read_csv(out["summary"]).columns) == SUMMARY_CSV_COLUMNS


def test_members_table_by_hand_and_by_metrics(hand):
    tables, _ = hand
    m = tables["members"]
    assert list(zip(m.parent, m.child)) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert (m.condition == COND).all() and (m.t == 8).all() and (m.t_epoch == 1.0).all()
    np.testing.assert_allclose(m.accuracy, [.75] * 4)
    for row in m.itertuples():
        lp = M.log_softmax(np.log(PROBS[(row.parent, row.child)]))
        assert row.nll == pytest.approx(M.nll(lp, Y))
        assert row.brier == pytest.approx(M.brier(lp, Y))
        assert row.ece == pytest.approx(M.ece(lp, Y, 15))
        assert row.mace == pytest.approx(M.mace(lp, Y, 15))
    # P0C0: -(ln .8 + ln .3 + ln .8 + ln .8) / 4
    assert m.nll[0] == pytest.approx(-(3 * math.log(.8) + math.log(.3)) / 4)
    # Diverged: the member whose training loss rose above its bound, not those near chance (3 of 4 right
    # with 3 classes is within 3 standard errors of chance: low accuracy is no divergence).
    assert m.diverged.tolist() == [(p, c) == BLOWN for p, c in zip(m.parent, m.child)] and m.diverged.sum() == 1


def test_ensembles_table_by_hand(hand):
    e = hand[0]["ensembles"]
    assert e.parent.tolist() == [0, 1] and e.k.tolist() == [2, 2] and (e.t_epoch == 1.0).all()
    np.testing.assert_allclose(e.ensemble_accuracy, [1.0, .75])
    np.testing.assert_allclose(e.mean_member_accuracy, [.75, .75])
    np.testing.assert_allclose(e.gain, [.25, 0.0], atol=1e-15)
    np.testing.assert_allclose(e.sym_kl, [math.log(2), 0.0], atol=1e-12)
    np.testing.assert_allclose(e.disagreement, [.5, 0.0])
    np.testing.assert_allclose(np.stack(e.gain_by_size), [[0.0, .25], [0.0, 0.0]], atol=1e-15)
    ens0 = M.log_softmax(np.log((P0C0 + P0C1) / 2))
    assert e.ensemble_nll[0] == pytest.approx(M.nll(ens0, Y))
    assert e.ensemble_ece[0] == pytest.approx(M.ece(ens0, Y, 15))
    assert e.ensemble_mace[0] == pytest.approx(M.mace(ens0, Y, 15))
    member_mace = np.mean([M.mace(np.log(P0C0), Y), M.mace(np.log(P0C1), Y)])
    assert e.mean_member_mace[0] == pytest.approx(member_mace)
    assert e.mace_improvement[0] == pytest.approx(member_mace - M.mace(ens0, Y))
    # Parent 1's members are identical, so is its ensemble: no gain, no MACE change, in every resample.
    assert e.mace_improvement[1] == pytest.approx(0.0, abs=1e-12)
    assert e.mace_improvement_ci_low[1] == pytest.approx(0.0, abs=1e-12)
    assert e.mace_improvement_ci_high[1] == pytest.approx(0.0, abs=1e-12)
    assert (e.gain_ci_low[1], e.gain_ci_high[1]) == (0.0, 0.0)
    # Per-example gains of parent 0 are (.5, .5, 0, 0): resampled gains lie in [0, .5].
    assert 0.0 <= e.gain_ci_low[0] <= .25 <= e.gain_ci_high[0] <= .5
    assert e.gain_ci_low[0] < e.gain_ci_high[0]


def test_gain_interval_is_metrics_bootstrap_ci_over_per_example_gains(hand):
    e = hand[0]["ensembles"]
    d = np.array([.5, .5, 0.0, 0.0])
    lo, hi = M.bootstrap_ci(lambda idx: d[idx].mean(), len(d), n_boot=200, seed=M.BOOTSTRAP_SEED)
    assert (e.gain_ci_low[0], e.gain_ci_high[0]) == pytest.approx((lo, hi))


def test_pairs_table_by_hand(hand):
    pairs = hand[0]["pairs"]
    same = pairs[pairs.kind == "same-parent"]
    assert same[["parent_a", "child_a", "parent_b", "child_b"]].values.tolist() == [[0, 0, 0, 1], [1, 0, 1, 1]]
    np.testing.assert_allclose(same.sym_kl, [math.log(2), 0.0], atol=1e-12)
    between = pairs[pairs.kind == "between-parents"]
    assert between[["parent_a", "child_a", "parent_b", "child_b"]].values.tolist() == [[0, -1, 1, -1]]
    # Parent 0's mean vs parent 1's (= P0C0): examples 0 and 1 differ, by the same amounts swapped.
    mean0 = (P0C0 + P0C1) / 2
    kl = np.sum((mean0 - P0C0) * np.log(mean0 / P0C0), axis=1)
    expected = .25 * (math.log(.8 / .55) + math.log(.35 / .1))
    assert kl[0] == pytest.approx(expected)
    assert between.sym_kl.iloc[0] == pytest.approx(kl.mean())
    assert between.sym_kl.iloc[0] == pytest.approx(M.symmetric_kl(np.log(mean0), np.log(P0C0)))
    # Parent 0's ensemble argmax: 0, 1, 2, 1; P0C0's: 0, 0, 2, 1.
    assert between.disagreement.iloc[0] == pytest.approx(.25)


def test_forgetting_table_by_hand(hand):
    f = hand[0]["forgetting"]
    one = f[(f.parent == 0) & (f.child == 0)]
    assert one.step.tolist() == STEPS
    assert one.epoch.tolist() == [0.0, 1.0, 2.0]
    assert one.accuracy.tolist() == [.5, .5, .25]
    assert one.events.tolist() == [0, 1, 2]
    assert one.cumulative_events.tolist() == [0, 1, 3]
    assert len(f) == 4 * 3


def test_summary_by_hand(hand):
    s = hand[0]["summary"]
    assert len(s) == 1
    r = s.iloc[0]
    assert (r.condition, r.t, r.t_epoch, r.n_parents, r.n_members) == (COND, 8, 1.0, 2, 4)
    assert r.ensemble_accuracy == pytest.approx(.875)
    assert r.gain == pytest.approx(.125)
    assert r.gain_std == pytest.approx(.25 / math.sqrt(2))  # sample std of (.25, 0)
    # The parent-averaged per-example gain is (.25, .25, 0, 0): resampled means lie in [0, .25].
    d = np.array([.25, .25, 0.0, 0.0])
    lo, hi = M.bootstrap_ci(lambda idx: d[idx].mean(), 4, n_boot=200, seed=M.BOOTSTRAP_SEED)
    assert (r.gain_ci_low, r.gain_ci_high) == pytest.approx((lo, hi))
    assert r.gain_ci_low <= r.gain <= r.gain_ci_high
    assert r.sym_kl_same_parent == pytest.approx(math.log(2) / 2)
    assert r.disagreement == pytest.approx(.25)
    assert r.disagreement_between_parents == pytest.approx(.25)
    assert r.forgetting_events == pytest.approx(3.0)  # every member has the same trajectory
    assert r.forgetting_events_std == pytest.approx(0.0)
    assert r.n_diverged == 1


def test_forgetting_epochs_limits_the_summary_count(tmp_path):
    preds, trajs = _write_experiment(tmp_path)
    tables, _ = _run(tmp_path, preds, trajs, {**SETTINGS, "forgetting_epochs": 1})
    assert tables["summary"].forgetting_events.iloc[0] == pytest.approx(1.0)
    assert len(tables["forgetting"]) == 12  # the table itself keeps every point


def test_summary_forgetting_counts_every_member_over_the_same_span():
    # an independent run of 4 epochs and a child coupled to t of 2: both counted over the first 2
    f = pd.DataFrame({"condition": ["a"] * 5 + ["b"] * 3, "t": [0] * 5 + [8] * 3, "parent": 0, "child": 0,
                      "epoch": [0.0, 1, 2, 3, 4, 0, 1, 2], "events": [0, 5, 4, 3, 2, 0, 6, 1]})
    assert T._forgetting_per_member(f, None)["events"].tolist() == [9, 7]
    assert T._forgetting_per_member(f, 1)["events"].tolist() == [5, 6]


def test_groups_keep_input_order_and_t_epoch(tmp_path):
    preds, trajs = _write_experiment(tmp_path)
    for (p, c), pr in PROBS.items():
        a, b = _write_member(tmp_path, "no-coupling", 0, p, c, pr, Y, steps=[0, 8, 16])
        preds.insert(0, a)
        trajs.insert(0, b)
    tables, _ = _run(tmp_path, preds, trajs)
    assert tables["summary"][["condition", "t", "t_epoch"]].values.tolist() == [
        ["no-coupling", 0, 0.0], [COND, 8, 1.0]]
    assert tables["members"].groupby("condition").size().to_dict() == {"no-coupling": 4, COND: 4}
    f = tables["forgetting"]
    assert f[f.condition == "no-coupling"].epoch.unique().tolist() == [0.0, 1.0, 2.0]


def _random_members(rng, n, c, k, parents=2):
    """Members that agree with a shared signal plus noise: ensembles gain and calibrate better."""
    y = rng.integers(0, c, n)
    signal = 2.0 * (y[:, None] == np.arange(c))
    probs = {}
    for p in range(parents):
        for ch in range(k):
            z = 3.0 * (signal + rng.normal(0, 1.5, (n, c)))  # overconfident, as deep nets are
            e = np.exp(z - z.max(1, keepdims=True))
            probs[(p, ch)] = e / e.sum(1, keepdims=True)
    return probs, y


def test_intervals_bracket_estimates_on_a_larger_ensemble(tmp_path):
    probs, y = _random_members(np.random.default_rng(1), 400, 5, 4)
    preds, trajs = [], []
    for (p, c), pr in probs.items():
        a, b = _write_member(tmp_path, COND, 8, p, c, pr, y, correct=np.ones((3, 400), bool))
        preds.append(a)
        trajs.append(b)
    tables, _ = _run(tmp_path, preds, trajs)
    e = tables["ensembles"]
    assert (e.gain > 0).all() and (e.mace_improvement > 0).all()
    for t in (e, tables["summary"]):
        assert (t.gain_ci_low < t.gain).all() and (t.gain < t.gain_ci_high).all()
        assert (t.mace_improvement_ci_low < t.mace_improvement).all()
        assert (t.mace_improvement < t.mace_improvement_ci_high).all()
    # gain_by_size ends at the gain of the whole ensemble and agrees with metrics.gain_by_size.
    lp = np.log(np.stack([probs[(0, c)] for c in range(4)]))
    np.testing.assert_allclose(e.gain_by_size[0], M.gain_by_size(lp, y))
    assert e.gain_by_size[0][-1] == pytest.approx(e.gain[0])
    # The summary's interval is that of the parent mean, narrower than the mean of per-parent ones.
    s = tables["summary"].iloc[0]
    assert s.gain_ci_high - s.gain_ci_low < np.mean(e.gain_ci_high - e.gain_ci_low)


def test_the_tables_do_not_depend_on_the_jobs_threads(tmp_path):
    """Networks computed side by side, each product on one core: the same tables, bit for bit."""
    probs, y = _random_members(np.random.default_rng(2), 300, 12, 3, parents=3)
    written = [_write_member(tmp_path, cond, 8, p, c, pr, y) for cond in (COND, "coupled-to-t-reset")
               for (p, c), pr in probs.items()]
    preds, trajs = [a for a, _ in written], [b for _, b in written]
    tables = []
    for threads in (1, 2):
        out = _outputs(tmp_path / f"threads{threads}")
        metric_tables(preds, trajs, out, SETTINGS, None, threads=threads)
        tables.append({k: pd.read_csv(v) if v.endswith(".csv") else pd.read_parquet(v) for k, v in out.items()})
    for name in tables[0]:
        pd.testing.assert_frame_equal(tables[0][name], tables[1][name], check_exact=True)
    assert len(tables[0]["summary"]) == 2 and len(tables[0]["members"]) == 18


def test_mace_bootstrap_with_unit_weights_is_metrics_mace():
    rng = np.random.default_rng(0)
    for n, c, bins in ((7, 3, 15), (100, 4, 15), (101, 10, 7)):
        lp = M.log_softmax(rng.normal(0, 2, (n, c)))
        y = rng.integers(0, c, n)
        got = M.mace_bootstrap(lp, y, np.ones((1, n)), bins)
        assert got[0] == pytest.approx(M.mace(lp, y, bins), rel=1e-12)


def test_mace_bootstrap_is_close_to_resorting_every_resample():
    """The fixed-bin shortcut against the exact resample (metrics.mace of the resampled arrays)."""
    rng = np.random.default_rng(3)
    n, c = 500, 4
    lp = M.log_softmax(rng.normal(0, 2, (n, c)))
    y = rng.integers(0, c, n)
    w = M.bootstrap_weights(n, 300)
    idx = np.random.default_rng(M.BOOTSTRAP_SEED).integers(0, n, size=(300, n))
    np.testing.assert_array_equal(w[5], np.bincount(idx[5], minlength=n))
    exact = np.array([M.mace(lp[i], y[i]) for i in idx])
    fast = M.mace_bootstrap(lp, y, w)
    assert np.corrcoef(exact, fast)[0, 1] > 0.8
    assert np.mean(fast) == pytest.approx(np.mean(exact), rel=0.05)
    assert M.percentile_ci(fast) == pytest.approx(M.percentile_ci(exact), rel=0.1)


# --- errors ------------------------------------------------------------------------------------


def _rewrite(path, fn):
    table = pq.read_table(path)
    pq.write_table(fn(table), path)


def test_missing_logit_column_names_the_file(tmp_path):
    preds, trajs = _write_experiment(tmp_path)
    _rewrite(preds[1], lambda t: t.drop_columns(["logit_1"]))
    with pytest.raises(ArtifactError, match=rf"{preds[1]}: missing column\(s\) logit_1"):
        _run(tmp_path, preds, trajs)


def test_missing_label_column_names_the_file(tmp_path):
    preds, trajs = _write_experiment(tmp_path)
    _rewrite(preds[2], lambda t: t.drop_columns(["label"]))
    with pytest.raises(ArtifactError, match=rf"{preds[2]}: missing column\(s\) label"):
        _run(tmp_path, preds, trajs)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_logits_name_the_file(tmp_path, bad):
    preds, trajs = _write_experiment(tmp_path)

    def poison(t):
        x = t.column("logit_2").to_numpy().copy()
        x[3] = bad
        return t.set_column(t.schema.get_field_index("logit_2"), "logit_2", pa.array(x))

    _rewrite(preds[0], poison)
    with pytest.raises(ArtifactError, match=rf"{preds[0]}: 1 non-finite logit.*example_id 3, column logit_2"):
        _run(tmp_path, preds, trajs)


def test_members_with_different_labels_name_the_file(tmp_path):
    preds, trajs = _write_experiment(tmp_path)
    _write_member(tmp_path, COND, T8, 0, 1, P0C1, [0, 1, 2, 2])
    with pytest.raises(ArtifactError, match=rf"{preds[1]}: labels differ on 1 examples from {preds[0]}"):
        _run(tmp_path, preds, trajs)


def test_missing_steps_per_epoch_and_mixed_experiments_are_errors(tmp_path):
    preds, trajs = _write_experiment(tmp_path)
    _rewrite(preds[3], lambda t: t.replace_schema_metadata({}))
    with pytest.raises(ArtifactError, match=rf"{preds[3]}: schema metadata lacks coupledsgd.steps_per_epoch"):
        _run(tmp_path, preds, trajs)
    _write_member(tmp_path, COND, T8, 1, 1, P0C0, Y, spe=5)
    with pytest.raises(ArtifactError, match=rf"{preds[3]}: steps per epoch 5, but {preds[0]} has 8"):
        _run(tmp_path, preds, trajs)


def test_duplicate_member_and_unreadable_file_are_errors(tmp_path):
    preds, trajs = _write_experiment(tmp_path)
    with pytest.raises(ArtifactError, match="is also in"):
        _run(tmp_path, preds + preds[:1], trajs)
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(ArtifactError, match="junk.parquet: not a readable Parquet file"):
        _run(tmp_path, preds + [str(tmp_path / "junk.parquet")], trajs)


def test_bad_trajectory_names_the_file(tmp_path):
    preds, trajs = _write_experiment(tmp_path)
    _rewrite(trajs[2], lambda t: t.slice(0, t.num_rows - 1))
    with pytest.raises(ArtifactError, match=rf"{trajs[2]}: evaluation points must each hold the same examples"):
        _run(tmp_path, preds, trajs)


def test_failed_run_leaves_no_outputs(tmp_path):
    preds, trajs = _write_experiment(tmp_path)
    _rewrite(preds[0], lambda t: t.drop_columns(["example_id"]))
    with pytest.raises(ArtifactError):
        _run(tmp_path, preds, trajs)
    assert not (tmp_path / "metrics").exists() or not any((tmp_path / "metrics").iterdir())


def test_one_parent_one_child_and_no_trajectories(tmp_path):
    preds, _ = _write_experiment(tmp_path, probs={(0, 0): P0C0})
    tables, out = _run(tmp_path, preds, [])
    e, s = tables["ensembles"], tables["summary"].iloc[0]
    assert e.gain.tolist() == [0.0] and np.isnan(e.sym_kl[0]) and list(e.gain_by_size[0]) == [0.0]
    assert len(tables["pairs"]) == 0 and len(tables["forgetting"]) == 0
    assert pq.read_schema(out["pairs"]).remove_metadata().equals(T.PAIRS_SCHEMA)
    assert pq.read_schema(out["forgetting"]).remove_metadata().equals(T.FORGETTING_SCHEMA)
    assert s.n_parents == 1 and np.isnan(s.gain_std) and np.isnan(s.sym_kl_between_parents)
    assert np.isnan(s.forgetting_events)


def test_realised_reinit_percent_flows_from_the_predictions_into_members_and_ensembles(tmp_path):
    preds = []
    for (p, c), pr in PROBS.items():
        key = {"condition": "reinit-high-25", "t": T8, "parent": p, "child": c}
        path = tmp_path / f"p{p}c{c}.parquet"
        write_predictions(path, key, Y, np.log(pr), {**_meta(), "coupledsgd.reinit_percent": repr(24.998 + c)})
        preds.append(str(path))
    preds.append(_write_member(tmp_path, COND, T8, 0, 0, P0C0, Y)[0])  # no re-initialisation: no value
    tables, _ = _run(tmp_path, preds, [])
    m, e = tables["members"], tables["ensembles"]
    assert m[m.condition == "reinit-high-25"].reinit_percent.tolist() == [24.998, 25.998, 24.998, 25.998]
    assert e[e.condition == "reinit-high-25"].reinit_percent.tolist() == pytest.approx([25.498, 25.498])
    assert m[m.condition == COND].reinit_percent.isna().all() and e[e.condition == COND].reinit_percent.isna().all()
