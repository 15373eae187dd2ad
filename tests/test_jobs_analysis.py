"""The analysis jobs: the experiment's one barriers table from the per-parent ones."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from coupledsgd.analysis.read import BARRIER_SCHEMA
from coupledsgd.core.errors import ArtifactError
from coupledsgd.jobs.analysis import concat_barriers


def _barrier_table(path, condition, points=4):
    n = points
    cols = {"condition": pa.DictionaryArray.from_arrays(np.zeros(n, dtype=np.int8), pa.array([condition])),
            "t": pa.array(np.full(n, 8, dtype=np.int32)), "parent": pa.array(np.zeros(n, dtype=np.int16)),
            "child_a": pa.array(np.zeros(n, dtype=np.int16)), "child_b": pa.array(np.ones(n, dtype=np.int16)),
            "alpha": pa.array(np.linspace(0, 1, n)), "error": pa.array(np.full(n, 0.1)),
            "barrier": pa.array(np.full(n, 0.0))}
    pq.write_table(pa.table(cols, schema=BARRIER_SCHEMA), path)
    return str(path)


def test_concat_barriers(tmp_path):
    outs = [_barrier_table(tmp_path / f"{c}.parquet", c) for c in ("coupled-to-t-reset", "reinit-high-25")]
    out = tmp_path / "metrics" / "barriers.parquet"
    concat_barriers(outs, str(out), {"seed": 0, "device": "cpu"}, str(tmp_path / "barriers.log"))
    table = pq.read_table(out)
    assert table.schema.equals(BARRIER_SCHEMA, check_metadata=False)
    assert table.num_rows == 2 * 4
    assert table.column("condition").to_pylist() == ["coupled-to-t-reset"] * 4 + ["reinit-high-25"] * 4
    assert "2 barrier tables, 8 rows" in (tmp_path / "barriers.log").read_text()
    # An empty barrier set still gives a table with the schema.
    concat_barriers([], str(out))
    assert pq.read_table(out).schema.equals(BARRIER_SCHEMA, check_metadata=False)
    # A foreign file is named.
    pq.write_table(pa.table({"x": [1]}), tmp_path / "foreign.parquet")
    with pytest.raises(ArtifactError, match="foreign.parquet"):
        concat_barriers([str(tmp_path / "foreign.parquet")], str(out))
