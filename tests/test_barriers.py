
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from coupledsgd.core import grid
from coupledsgd.engine import barriers as B
from coupledsgd.jobs import barriers as J
from coupledsgd.engine.checkpoints import save_torch
from coupledsgd.engine.data import DeviceData, batch_indices
from coupledsgd.core.errors import ArtifactError
from coupledsgd.engine.models import build_model


IN_SHAPE, CLASSES = (1, 40), 10


def _data(n_train=96, n_test=50, seed=0) -> DeviceData:
    g = torch.Generator().manual_seed(seed)
    return DeviceData(torch.randn(n_train, *IN_SHAPE, generator=g), torch.randint(0, CLASSES, (n_train,), generator=g),
                      torch.randn(n_test, *IN_SHAPE, generator=g), torch.randint(0, CLASSES, (n_test,), generator=g),
                      CLASSES, crop_pad=0, flip=False)


def _model(seed):
    model = build_model("cnn1d", IN_SHAPE, CLASSES, seed)
    # Give the BatchNorm buffers non-trivial values, as after training.
    g = torch.Generator().manual_seed(1000 + seed)
    for name, buf in model.named_buffers():
        if name.endswith("running_mean"):
            buf.copy_(torch.randn(buf.shape, generator=g))
        elif name.endswith("running_var"):
            buf.copy_(torch.rand(buf.shape, generator=g) + 0.5)
        elif name.endswith("num_batches_tracked"):
            buf.fill_(7 + seed)
    return model


def _run_state(seed, condition="coupled-to-t-reset", parent=0, child=0) -> dict:
    """A child's final.pt as Run.state_dict() writes it (optimizer state left empty)."""
    return {"model_name": "cnn1d", "in_shape": list(IN_SHAPE), "num_classes": CLASSES,
            "model": _model(seed).state_dict(), "optimizer": {"momentum_buffers": []}, "step": 24,
            "schedule_start": 8, "seeds": {"init": 1, "order": 2, "aug": 3},
            "info": {"parent": parent, "condition": condition, "child": child, "spawned_at": 8}}


def test_interpolate_endpoints_exact_and_midpoint_mean():
    a, b = _model(0).state_dict(), _model(1).state_dict()
    at0, at1, mid = B.interpolate(a, b, 0.0), B.interpolate(a, b, 1.0), B.interpolate(a, b, 0.5)
    assert set(at0) == set(a)
    for name in a:
        assert torch.equal(at0[name], a[name]), name
        if a[name].is_floating_point():
            assert torch.equal(at1[name], b[name]), name
            torch.testing.assert_close(mid[name], (a[name] + b[name]) / 2, rtol=1e-6, atol=1e-7)
        else:  # num_batches_tracked: taken from a
            assert torch.equal(at1[name], a[name]) and torch.equal(mid[name], a[name]), name
    # Copies, not views: changing the result leaves the inputs alone.
    name = next(k for k in a if a[k].is_floating_point())
    at0[name].add_(1.0)
    assert not torch.equal(at0[name], a[name])


def test_interpolate_of_a_state_with_itself_is_itself():
    a = _model(0).state_dict()
    for alpha in np.linspace(0, 1, 11):
        out = B.interpolate(a, a, alpha)
        assert all(torch.equal(out[k], a[k]) for k in a)


def test_interpolate_rejects_mismatched_states():
    a = _model(0).state_dict()
    b = dict(a)
    b.pop(next(iter(b)))
    with pytest.raises(ValueError, match="different tensors"):
        B.interpolate(a, b, 0.5)


def test_bn_batches_are_fixed_full_batches_of_their_own_stream():
    first = B.bn_batch_indices(0, 96, 32, 4)
    again = B.bn_batch_indices(0, 96, 32, 4)
    assert len(first) == 4 and all(len(i) == 32 for i in first)
    assert all(torch.equal(x, y) for x, y in zip(first, again))
    # One epoch is 3 batches: the first three cover every example once.
    assert sorted(torch.cat(first[:3]).tolist()) == list(range(96))
    assert not torch.equal(B.bn_batch_indices(1, 96, 32, 1)[0], first[0])
    assert torch.equal(first[0], batch_indices(B.bn_seed(0), 0, 96, 32))


def test_recompute_batchnorm_is_the_average_of_batch_statistics():
    data, model = _data(), _model(0)
    batches = B.bn_batch_indices(0, data.n_train, 16, 5)
    bn = model.features[4]  # the second BatchNorm layer: its input depends on the first one's
    assert isinstance(bn, torch.nn.BatchNorm1d)
    seen = []
    hook = bn.register_forward_hook(lambda m, inputs, out: seen.append(inputs[0].detach().double().clone()))
    assert B.recompute_batchnorm(model, data, batches) == 4
    hook.remove()
    assert len(seen) == len(batches)
    dims = (0, 2)  # batch and length: per-channel statistics
    means = torch.stack([x.mean(dims) for x in seen])
    variances = torch.stack([x.var(dims, unbiased=True) for x in seen])
    torch.testing.assert_close(bn.running_mean.double(), means.mean(0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bn.running_var.double(), variances.mean(0), rtol=1e-5, atol=1e-6)
    # Equal batch sizes: the mean of the batch means is the mean over all examples of the batches.
    torch.testing.assert_close(bn.running_mean.double(), torch.cat(seen).mean(dims), rtol=1e-5, atol=1e-6)
    assert int(bn.num_batches_tracked) == len(batches)
    assert bn.momentum == 0.1 and not model.training and not bn.training


def test_recompute_batchnorm_forgets_the_old_statistics_and_is_deterministic():
    data = _data()
    batches = B.bn_batch_indices(3, data.n_train, 32, 2)
    m1, m2 = _model(0), _model(0)
    m2.load_state_dict({k: (v * 3 if v.is_floating_point() and "running" in k else v)
                        for k, v in m2.state_dict().items()})
    B.recompute_batchnorm(m1, data, batches)
    B.recompute_batchnorm(m2, data, batches)
    for (k, v1), v2 in zip(m1.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(v1, v2), k


def test_barrier_by_hand():
    assert B.barrier([0.1, 0.3, 0.2]) == pytest.approx(0.3 - 0.15)
    assert B.barrier([0.1, 0.05, 0.3]) == pytest.approx(0.3 - 0.2)  # the max can be an endpoint
    assert B.barrier([0.2, 0.1, 0.0]) == pytest.approx(0.1)
    assert B.barrier([0.4, 0.4]) == 0.0
    with pytest.raises(ValueError):
        B.barrier([0.5])


@pytest.mark.parametrize("recompute_bn", [True, False])
def test_error_path_of_a_model_with_itself_is_flat(recompute_bn):
    data, state = _data(), _run_state(0)
    alphas, errors = B.error_path(state, state, data, points=5, recompute_bn=recompute_bn, bn_batches=3,
                                  batch_size=16, seed=0)
    np.testing.assert_array_equal(alphas, [0, 0.25, 0.5, 0.75, 1])
    assert alphas.dtype == errors.dtype == np.float64
    assert np.all(errors == errors[0]) and 0 <= errors[0] <= 1
    assert B.barrier(errors) == 0.0


def test_error_path_endpoints_are_the_models_errors():
    data = _data()
    a, b = _run_state(0), _run_state(1)
    _, errors = B.error_path(a, b, data, points=3, recompute_bn=False)
    for state, err in ((a, errors[0]), (b, errors[-1])):
        model = _model(0)
        model.load_state_dict(state["model"])
        model.eval()
        with torch.no_grad():
            expected = model(data.x_test).argmax(1).ne(data.y_test).double().mean().item()
        assert err == pytest.approx(expected, abs=1e-12)


def _write_children(folder, k, condition="reinit-low-25", parent=1):
    paths = []
    for c in range(k):
        path = folder / f"c{c}" / "final.pt"
        save_torch(_run_state(10 + c, condition, parent, c), path)
        paths.append(str(path))
    return paths


def _save_data(path, data):
    # The prepared-dataset cache that data.load reads (identity normalisation).
    save_torch({"x_train": data.x_train, "y_train": data.y_train, "x_test": data.x_test, "y_test": data.y_test,
                "mean": torch.zeros(1), "std": torch.ones(1), "name": "mnist1d", "num_classes": CLASSES}, path)


PARAMS = {"barrier": {"points": 4, "recompute_bn": True, "bn_batches": 2}, "seed": 0, "batch_size": 16,
          "eval_batch_size": 1000, "device": "cpu", "threads": 1, "jobs_per_device": 1, "condition": "reinit-low-25",
          "t": 8, "parent": 1}


def test_barrier_table_writes_the_schema(tmp_path):
    data = _data()
    _save_data(tmp_path / "data.pt", data)
    paths = _write_children(tmp_path, 3)
    out = tmp_path / "barriers" / "p1.parquet"
    J.barrier_table(str(tmp_path / "data.pt"), paths, str(out), PARAMS, str(tmp_path / "log.txt"))
    table = pq.read_table(out)
    assert table.schema.equals(J.SCHEMA, check_metadata=False)
    assert table.schema.names == ["condition", "t", "parent", "child_a", "child_b", "alpha", "error", "barrier"]
    df = table.to_pandas()
    assert len(df) == 3 * 4  # pairs (0,1) (0,2) (1,2) x 4 points
    assert set(map(tuple, df[["child_a", "child_b"]].drop_duplicates().values)) == {(0, 1), (0, 2), (1, 2)}
    assert (df.condition == "reinit-low-25").all() and (df.t == 8).all() and (df.parent == 1).all()
    for _, pair in df.groupby(["child_a", "child_b"]):
        np.testing.assert_allclose(pair.alpha, np.linspace(0, 1, 4))
        assert pair.barrier.nunique() == 1
        assert pair.barrier.iloc[0] == pytest.approx(B.barrier(pair.error.values))
    # The same numbers as error_path on the pair.
    first = df[(df.child_a == 0) & (df.child_b == 1)]
    _, errors = B.error_path(torch.load(paths[0], weights_only=True), torch.load(paths[1], weights_only=True),
                             data, 4, True, 2, 16, 0)
    np.testing.assert_array_equal(first.error.values, errors)
    meta = table.schema.metadata
    assert b"coupledsgd.params" in meta and b"coupledsgd.version" in meta
    assert "barrier" in (tmp_path / "log.txt").read_text()
    assert [p.name for p in out.parent.iterdir()] == ["p1.parquet"]  # no temporary file left


def test_barrier_table_rejects_a_child_of_another_parent(tmp_path):
    _save_data(tmp_path / "data.pt", _data())
    paths = _write_children(tmp_path, 2, parent=0)
    out = tmp_path / "p1.parquet"
    with pytest.raises(ArtifactError, match="c0/final.pt"):
        J.barrier_table(str(tmp_path / "data.pt"), paths, str(out), PARAMS)
    assert not out.exists()


def test_barrier_set_is_reinit_conditions_and_their_reset_reference():
    config = {"conditions": ["no-coupling", "coupled-to-t", "coupled-to-t-reset", "reinit-high"],
              "reinit": {"percents": [10, 50], "steps": [30, 60]}, "ensemble": {"parents": 2},
              "spawn_steps": [0, 30], "barrier": {"spawn_steps": "none"}}
    got = grid.barrier_set(config)
    conds = ["coupled-to-t-reset", "reinit-high-10", "reinit-high-50"]
    assert got == [(c, t, p) for c in conds for t in (30, 60) for p in (0, 1)]
    assert grid.barrier_set({**config, "conditions": ["no-coupling", "coupled-to-t"]}) == []


def test_barrier_set_adds_the_instability_analysis_once():
    config = {"conditions": ["no-coupling", "coupled-to-t", "coupled-to-t-reset", "reinit-high"],
              "reinit": {"percents": [10], "steps": [30]}, "ensemble": {"parents": 2},
              "spawn_steps": [0, 30, 90], "barrier": {"spawn_steps": "all"}}
    got = grid.barrier_set(config)
    keys = list(dict.fromkeys((c, t) for c, t, _ in got))
    # the reset reference at the re-init step is measured once, for both analyses
    assert keys == [("coupled-to-t-reset", 30), ("reinit-high-10", 30), ("no-coupling", 0),
                    ("coupled-to-t", 0), ("coupled-to-t", 30), ("coupled-to-t", 90),
                    ("coupled-to-t-reset", 0), ("coupled-to-t-reset", 90)]
    assert len(got) == 2 * len(keys)
    subset = grid.barrier_set({**config, "barrier": {"spawn_steps": [90]}, "conditions": ["coupled-to-t"]})
    assert subset == [("coupled-to-t", 90, 0), ("coupled-to-t", 90, 1)]


def _identical_children(folder, k, condition, parent, t=8, seed=10, init=1):
    paths = []
    for c in range(k):
        state = _run_state(seed, condition, parent, c)
        state["seeds"] = {"init": init, "order": 2, "aug": 3}
        path = folder / f"c{c}" / "final.pt"
        save_torch(state, path)
        paths.append(str(path))
    return paths


def test_barrier_and_weight_distance_of_identical_children_are_zero(tmp_path):
    _save_data(tmp_path / "data.pt", _data())
    paths = _identical_children(tmp_path, 2, "coupled-to-t", 1)
    parent = tmp_path / "parent.pt"
    save_torch({**_run_state(3), "info": {"parent": 1}}, parent)
    out, weights = tmp_path / "p1.parquet", tmp_path / "p1.weights.parquet"
    params = {**PARAMS, "condition": "coupled-to-t"}
    J.barrier_table(str(tmp_path / "data.pt"), paths, str(out), params, None, str(weights), str(parent))
    assert (pq.read_table(out).column("barrier").to_numpy() == 0).all()
    w = pq.read_table(weights).to_pandas()
    assert w.columns.tolist() == ["condition", "t", "kind", "parent_a", "child_a", "parent_b", "child_b",
                                  "distance", "cosine", "travelled_a", "travelled_b"]
    assert len(w) == 1 and w.distance.iloc[0] == 0.0 and w.kind.iloc[0] == "same-parent"
    assert w.cosine.iloc[0] == pytest.approx(1.0) and w.travelled_a.iloc[0] == w.travelled_b.iloc[0] > 0


def test_children_spawned_at_step_0_measure_as_a_no_coupling_pair(tmp_path):
    """Two children spawned at step 0 from a parent whose state is the initialisation: their barrier and
    weight rows equal those of the same two networks measured as a pair of independent runs (whose
    start states are rebuilt from their init seeds)."""
    _save_data(tmp_path / "data.pt", _data())
    init = 5
    parent = tmp_path / "parent.pt"
    save_torch({**_run_state(0), "model": build_model("cnn1d", IN_SHAPE, CLASSES, init).state_dict()}, parent)
    tables = {}
    for condition, parent_path in (("coupled-to-t", str(parent)), ("no-coupling", None)):
        folder = tmp_path / condition
        paths = []
        for c in range(2):
            state = _run_state(20 + c, condition, 0, c)  # different final weights: different SGD noise
            state["seeds"] = {"init": init, "order": 2, "aug": 3}
            paths.append(str(folder / f"c{c}.pt"))
            save_torch(state, paths[-1])
        params = {**PARAMS, "condition": condition, "t": 0, "parent": 0}
        J.barrier_table(str(tmp_path / "data.pt"), paths, str(folder / "b.parquet"), params, None,
                        str(folder / "w.parquet"), parent_path)
        tables[condition] = (pq.read_table(folder / "b.parquet").to_pandas(), pq.read_table(folder / "w.parquet").to_pandas())
    (b_t, w_t), (b_n, w_n) = tables["coupled-to-t"], tables["no-coupling"]
    assert b_t.barrier.iloc[0] > 0
    np.testing.assert_array_equal(b_t.error.values, b_n.error.values)
    values = ["distance", "cosine", "travelled_a", "travelled_b"]
    np.testing.assert_array_equal(w_t[values].values, w_n[values].values)


def test_weight_distances_by_hand_on_a_two_layer_model():
    torch.manual_seed(0)
    net = lambda: torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    start, a, b = net(), net(), net()
    with torch.no_grad():
        for model, values in ((start, [[1, 0], [0, 1], [0, 0], [[1, 1]], [0]]),
                              (a, [[2, 0], [0, 1], [0, 0], [[1, 1]], [0]]),
                              (b, [[1, 0], [0, 1], [0, 2], [[1, 1]], [0]])):
            for p, v in zip(model.parameters(), [values[0:2], values[2], values[3], values[4]]):
                p.copy_(torch.tensor(v, dtype=torch.float32))
    names = [n for n, _ in start.named_parameters()]
    s, wa, wb = (B.flat_weights(m.state_dict(), names) for m in (start, a, b))
    np.testing.assert_array_equal(s, [1, 0, 0, 1, 0, 0, 1, 1, 0])
    got = B.weight_distances(wa, wb, s, s)
    # a moved the first weight by 1, b the second bias by 2: orthogonal displacements
    norm = np.sqrt(4)  # ||s|| = sqrt(1 + 1 + 1 + 1)
    assert got["distance"] == pytest.approx(np.sqrt(1 + 4) / norm)
    assert got["cosine"] == 0.0
    assert got["travelled_a"] == pytest.approx(1 / norm) and got["travelled_b"] == pytest.approx(2 / norm)
    same = B.weight_distances(wa, 2 * wa - s, s, s)  # b went twice as far the same way
    assert same["cosine"] == pytest.approx(1.0) and same["distance"] == pytest.approx(1 / norm)
