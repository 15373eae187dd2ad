"""What the figures show, on small hand-made frames with values computed by hand."""

import math

import pandas as pd
import pytest

from coupledsgd.analysis import aggregate as A
from coupledsgd.core.errors import ArtifactError


def test_parent_stats_averages_within_a_parent_first():
    # Parent 0: children 1 and 3 -> 2; parent 1: 6. Mean over parents 4, sd sqrt(((2-4)^2 + (6-4)^2) / 1).
    df = pd.DataFrame({"t": [5, 5, 5], "parent": [0, 0, 1], "v": [1.0, 3.0, 6.0]})
    s = A.parent_stats(df, ["t"], "v").iloc[0]
    assert (s["mean"], s["n"]) == (4.0, 2) and s["std"] == pytest.approx(math.sqrt(8))
    assert A.overall_stats(df, "v") == (4.0, pytest.approx(math.sqrt(8)), 2)
    one = A.parent_stats(df[df["parent"] == 1], ["t"], "v").iloc[0]
    assert one["mean"] == 6.0 and math.isnan(one["std"]) and one["n"] == 1


def test_largest_k_keeps_the_full_ensemble():
    e = pd.DataFrame({"condition": ["c"] * 3, "t": [1] * 3, "parent": [0, 0, 1], "k": [2, 4, 4],
                      "gain": [0.1, 0.2, 0.3]})
    assert A.largest_k(e)["gain"].tolist() == [0.2, 0.3]
    assert A.ensemble_size(e) == 4 and A.ensemble_size(e.iloc[:0]) is None


def test_reinit_rows_parse_the_condition_and_take_the_realised_share():
    df = pd.DataFrame({"condition": ["no-coupling", "reinit-low-25", "reinit-low-25", "reinit-high-50"],
                       "t": [0, 8, 8, 8], "reinit_percent": [float("nan"), 24.0, 25.0, float("nan")]})
    r = A.reinit_rows(df)
    assert r["side"].tolist() == ["low", "low", "high"]
    assert r["requested"].tolist() == [25.0, 25.0, 50.0]
    assert r["percent"].tolist() == [24.5, 24.5, 50.0]  # the mean over the condition; the request if unknown
    assert A.reinit_rows(df.iloc[:1]).empty


def test_family_and_condition_order():
    assert A.family("reinit-high-10") == "reinit-high" and A.family("coupled-to-t") == "coupled-to-t"
    names = ["reinit-high-5", "coupled-to-t-reset", "reinit-low-50", "no-coupling", "reinit-low-5"]
    assert sorted(names, key=A.condition_order) == ["no-coupling", "coupled-to-t-reset", "reinit-low-5",
                                                    "reinit-low-50", "reinit-high-5"]


def test_epoch_labels():
    assert A.epoch_map(pd.DataFrame({"t": [6, 6, 12], "t_epoch": [0.5, 0.5, 1.0]})) == {6: 0.5, 12: 1.0}
    assert A.t_label(0, {}) == "0\n(init)"
    assert A.t_label(12, {12: 1.0}, sep=" ") == "12 (1 ep)"
    assert A.t_label(7, {}) == "7"


def test_cumulative_forgetting_stops_at_the_epoch_every_member_reached():
    # Member c0 reaches epoch 2, c1 epoch 1: E = 1, so each member's count at its last point <= 1.
    f = pd.DataFrame({"condition": ["r"] * 5, "t": [8] * 5, "parent": [0] * 5, "child": [0, 0, 0, 1, 1],
                      "epoch": [0.0, 1.0, 2.0, 0.0, 1.0], "cumulative_events": [0, 3, 7, 0, 2]})
    last, E = A.cumulative_forgetting(f, ["r"])
    assert E == 1.0 and last["cumulative_events"].tolist() == [3, 2]
    last, E = A.cumulative_forgetting(f, ["r"], epochs=2.0)
    assert last["cumulative_events"].tolist() == [7, 2]


def test_forgetting_per_epoch_over_runs_without_the_first_point():
    # Runs (0, 0), (0, 1), (1, 0) at epoch 1: 2, 4, 6 events -> mean 4, sd 2; epoch 0 left out.
    f = pd.DataFrame({"condition": ["no-coupling"] * 6, "parent": [0, 0, 1, 0, 0, 1],
                      "child": [0, 1, 0, 0, 1, 0], "epoch": [0.0] * 3 + [1.0] * 3, "events": [0, 0, 0, 2, 4, 6]})
    s = A.forgetting_per_epoch(f)
    assert s["epoch"].tolist() == [1.0] and s["mean"].tolist() == [4.0] and s["std"].tolist() == [2.0]
    assert A.forgetting_per_epoch(f, "coupled-to-t") is None


def test_barrier_per_pair_and_member_groups():
    b = pd.DataFrame({"condition": ["r"] * 4, "t": [8] * 4, "parent": [0] * 4, "child_a": [0, 0, 0, 0],
                      "child_b": [1, 1, 2, 2], "barrier": [0.2, 0.2, 0.4, 0.4]})
    assert A.barrier_per_pair(b)["barrier"].tolist() == [0.2, 0.4]
    m = pd.DataFrame({"condition": ["reinit-low-5", "no-coupling", "coupled-to-t"], "t": [8, 0, 8],
                      "t_epoch": [1.0, 0.0, 1.0], "accuracy": [0.5, 0.6, 0.7]})
    order, families, data = A.member_groups(m)
    assert order == ["no-coupling", "coupled-to-t, t = 8 (1 ep)", "reinit-low-5, t = 8 (1 ep)"]
    assert families == ["no-coupling", "coupled-to-t", "reinit-low"]
    assert data["group"].tolist() == [order[2], order[0], order[1]]


def test_require_names_the_file_and_makes_categories_plain():
    df = pd.DataFrame({"condition": pd.Categorical(["a"]), "t": [1]})
    df.attrs["source"] = "x/ensembles.parquet"
    assert A.require(df, "ensembles", ["condition"])["condition"].dtype.name != "category"
    with pytest.raises(ArtifactError, match=r"x/ensembles\.parquet: missing column\(s\) gain"):
        A.require(df, "ensembles", ["gain"])
