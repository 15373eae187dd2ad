"""The instability analysis: onset steps by hand, its two claims on hand-made tables, and learning curves
that hold the training log's numbers."""

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from coupledsgd.analysis import claims as C
from coupledsgd.analysis import curves as CV
from coupledsgd.analysis import instability as I
from coupledsgd.core.parquet import CURVE_KEY, write_trajectory
from coupledsgd.core.seeds import parent_seeds
from coupledsgd.engine import data as D
from coupledsgd.engine.training import Hparams, Run, train

TS = [0, 6, 30, 60, 180]
N_PERM = 500


def test_onset_is_the_first_step_from_which_the_barrier_stays_below():
    assert I.onset_step(TS, [0.3, 0.01, 0.05, 0.01, 0.0], 0.02) == 60  # dips at 6, back up at 30
    assert I.onset_step(TS, [0.01] * 5, 0.02) == 0
    assert np.isnan(I.onset_step(TS, [0.3, 0.2, 0.1, 0.01, 0.03], 0.02))  # above at the last step
    assert I.onset_step(TS[::-1], [0.0, 0.01, 0.05, 0.01, 0.3], 0.02) == 60  # any row order
    assert I.onset_step(TS, [0.3, 0.02, 0.01, 0.01, 0.01], 0.02) == 30  # at the threshold is not below


def _barriers(curve, conditions=("coupled-to-t",), parents=3, points=(0.0, 0.5, 1.0)):
    """Rows of a barriers table: two pairs per parent, barrier curve(t, parent) +- 0.001."""
    return pd.DataFrame([{"condition": c, "t": t, "parent": p, "child_a": a, "child_b": b, "alpha": x,
                          "error": 0.1, "barrier": curve(t, p) + (0.001 if a else -0.001)}
                         for c in conditions for t in TS for p in range(parents)
                         for a, b in ((0, 1), (1, 2)) for x in points])


def test_onset_table_averages_the_pairs_of_each_parent():
    falling = lambda t, p: 0.3 if t < 30 + 30 * p else 0.005
    onset = I.onset_table(_barriers(falling, ("coupled-to-t", "coupled-to-t-reset", "reinit-low-25")), 0.02)
    assert onset.columns.tolist() == I.ONSET_SCHEMA.names
    assert set(onset.condition) == {"coupled-to-t", "coupled-to-t-reset"}
    to_t = onset[onset.condition == "coupled-to-t"].set_index("parent")
    assert to_t.onset.tolist() == [30.0, 60.0, 180.0] and (to_t.n_steps == 5).all() and (to_t.threshold == 0.02).all()


def _gains(values, parents=3):
    return pd.DataFrame([{"condition": "coupled-to-t", "t": t, "parent": p, "gain": values(t, p)}
                         for t in TS for p in range(parents)])


def _claim(claim_id, tables):
    return C.claims_table(tables, N_PERM).set_index("claim").loc[claim_id]


def test_barrier_falling_with_t_is_supported_and_rising_is_not():
    falling = _barriers(lambda t, p: 0.3 / (1 + t) + 0.001 * p, parents=4)
    assert _claim("barrier-falls", {"barriers": falling}).verdict == "supported"
    rising = _barriers(lambda t, p: 0.001 * t + 0.001 * p, parents=4)
    assert _claim("barrier-falls", {"barriers": rising}).verdict == "not supported"
    none = _claim("barrier-falls", {"barriers": _barriers(lambda t, p: 0.1, ("reinit-low-25",))})
    assert none.verdict == "inconclusive" and "barrier.spawn_steps" in none.reason


def test_gain_past_the_onset_is_equivalent_to_zero_only_when_it_vanishes():
    barriers = _barriers(lambda t, p: 0.3 if t < 30 else 0.005, parents=4)
    onset = I.onset_table(barriers, 0.02)
    vanishing = _gains(lambda t, p: 0.05 if t < 30 else 0.001 * ((-1) ** p), parents=4)
    row = _claim("gain-zero-past-onset", {"onset": onset, "ensembles": vanishing})
    assert row.verdict == "supported" and row.n_units == 4 and abs(row.value) < 0.001
    staying = _gains(lambda t, p: 0.05 + 0.001 * p, parents=4)
    assert _claim("gain-zero-past-onset", {"onset": onset, "ensembles": staying}).verdict == "not supported"
    never = I.onset_table(_barriers(lambda t, p: 0.3, parents=4), 0.02)
    row = _claim("gain-zero-past-onset", {"onset": never, "ensembles": vanishing})
    assert row.verdict == "inconclusive" and "no onset" in row.reason


def test_learning_curves_are_the_training_log_numbers(mnist1d_path, tmp_path):
    data = D.load(mnist1d_path)
    h = Hparams(steps=24, batch_size=32, lr=0.1)
    run, lines = Run.fresh("cnn1d", data.in_shape, data.num_classes, h, parent_seeds(0, 0)), []
    [trajectory] = train([run], data, run.end, evaluate=True, log=lines.append)
    logged = [line.split() for line in lines]
    field = lambda words, name: float(words[words.index(name) + 1])
    assert [p["step"] for p in trajectory.curve] == [int(w[1].split("/")[0]) for w in logged] == [8, 16, 24]
    for point, words in zip(trajectory.curve, logged):
        assert point["train_loss"] == pytest.approx(field(words, "loss"), abs=5e-5)
        assert point["train_accuracy"] == pytest.approx(field(words, "train_acc"), abs=5e-5)
        assert point["lr"] == pytest.approx(field(words, "lr"), abs=5e-6)
    # the table joins them with the test accuracy at each evaluation point
    key = {"condition": "no-coupling", "t": 0, "parent": 0, "child": 0}
    curve = {k: [p[k] for p in trajectory.curve] for k in CV.TRAINING}
    path = tmp_path / "c0.parquet"
    write_trajectory(path, key, trajectory.steps, trajectory.as_array(),
                     {CURVE_KEY: json.dumps(curve), "coupledsgd.steps_per_epoch": "8", "coupledsgd.config_hash": "x"})
    forgetting = pd.DataFrame({**{k: [v] * 4 for k, v in key.items()}, "step": trajectory.steps,
                               "accuracy": trajectory.as_array().mean(axis=1)})
    table = CV.curves_table([path], forgetting)
    assert table.columns.tolist() == CV.CURVES_SCHEMA.names and table.step.tolist() == [0, 8, 16, 24]
    assert np.isnan(table.train_loss.iloc[0]) and table.epoch.tolist() == [0, 1, 2, 3]
    assert table.train_loss.iloc[1:].tolist() == curve["train_loss"]
    assert table.test_accuracy.iloc[-1] == pytest.approx(field(logged[-1], "test_acc"), abs=5e-5)
