"""The one Parquet reader: every kind of file fails with an ArtifactError that names it."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from coupledsgd.analysis import read as R
from coupledsgd.core.errors import ArtifactError
from coupledsgd.core.parquet import write_predictions, write_trajectory

META = {"coupledsgd.steps_per_epoch": "8", "coupledsgd.params": "{}", "coupledsgd.config_hash": "abc"}
KEY = {"condition": "coupled-to-t", "t": 8, "parent": 1, "child": 0}


def test_an_unreadable_table_names_the_file(tmp_path):
    path = tmp_path / "ensembles.parquet"
    path.write_bytes(b"PAR1 truncated")
    with pytest.raises(ArtifactError, match="ensembles.parquet: not a readable Parquet table"):
        R.read_table(path)
    with pytest.raises(ArtifactError, match="nope.parquet: metric table not found"):
        R.read_table(tmp_path / "nope.parquet")
    with pytest.raises(ArtifactError, match="ensembles.parquet: not a readable Parquet file"):
        R.read_predictions(path)
    with pytest.raises(ArtifactError, match="nope.parquet: file not found"):
        R.read_trajectory(tmp_path / "nope.parquet")
    with pytest.raises(ArtifactError, match="nope.parquet: barrier table not found"):
        R.read_barriers(tmp_path / "nope.parquet")


def test_a_metric_table_remembers_its_file(tmp_path):
    path = tmp_path / "members.parquet"
    pd.DataFrame({"condition": ["a"], "t": [1]}).to_parquet(path)
    df = R.read_table(path)
    assert df.attrs["source"] == str(path) and df["t"].tolist() == [1]


def test_member_files_read_back_sorted_with_their_key(tmp_path):
    logits = np.log(np.array([[.7, .2, .1], [.1, .8, .1]]))
    write_predictions(tmp_path / "p.parquet", KEY, np.array([0, 1]), logits, META)
    p = R.read_predictions(tmp_path / "p.parquet")
    assert p.key == ("coupled-to-t", 8, 1, 0) and p.steps_per_epoch == 8 and p.config_hash == "abc"
    np.testing.assert_allclose(np.exp(p.log_probs), [[.7, .2, .1], [.1, .8, .1]], rtol=1e-6)
    correct = np.array([[True, False], [True, True]])
    write_trajectory(tmp_path / "t.parquet", KEY, [8, 16], correct, META)
    tr = R.read_trajectory(tmp_path / "t.parquet")
    assert isinstance(tr, R.MemberTrajectory) and tr.steps.tolist() == [8, 16]
    assert tr.correct.tolist() == correct.tolist()


def test_a_barrier_table_is_checked_against_its_schema(tmp_path):
    good = R.BARRIER_SCHEMA.empty_table()
    pq.write_table(good, tmp_path / "good.parquet")
    assert R.read_barriers(tmp_path / "good.parquet").schema.equals(R.BARRIER_SCHEMA)
    assert R.BARRIER_SCHEMA.names[:len(R.BARRIER_KEYS)] == list(R.BARRIER_KEYS)
    pq.write_table(pa.table({"x": [1]}), tmp_path / "foreign.parquet")
    with pytest.raises(ArtifactError, match="foreign.parquet: not a barrier table"):
        R.read_barriers(tmp_path / "foreign.parquet")


def test_a_trajectory_reads_the_same_shuffled_or_without_statistics(tmp_path):
    """Jobs write points in order, with column statistics; a file in another row order, or without
    statistics (its key columns then read and checked row by row), holds the same trajectory."""
    correct = np.random.default_rng(0).random((3, 5)) < 0.5
    write_trajectory(tmp_path / "t.parquet", KEY, [8, 16, 24], correct, META)
    table = pq.read_table(tmp_path / "t.parquet")
    shuffled = table.take(np.random.default_rng(1).permutation(table.num_rows))
    pq.write_table(shuffled, tmp_path / "s.parquet", write_statistics=False)
    for name in ("t.parquet", "s.parquet"):
        tr = R.read_trajectory(tmp_path / name)
        assert tr.key == ("coupled-to-t", 8, 1, 0) and tr.steps.tolist() == [8, 16, 24]
        assert tr.correct.tolist() == correct.tolist()
    assert R.read_member_file(tmp_path / "s.parquet").key == tr.key
    # One row of another parent: the statistics no longer show one value, so the column is read.
    parent = table.column("parent").to_numpy().copy()
    parent[4] = 2
    pq.write_table(table.set_column(2, "parent", pa.array(parent)), tmp_path / "m.parquet")
    with pytest.raises(ArtifactError, match=r"m.parquet: column parent must hold one value, holds \[1, 2\]"):
        R.read_trajectory(tmp_path / "m.parquet")
