"""A model of the user's own (model.name "package.module:callable") and data from arrays (data.name
arrays): reading and normalising the arrays, building and checking the model, re-initialisation
units, and members trained as one network under torch.func.vmap equal to members alone."""

import copy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from coupledsgd.core.arrays import read_arrays
from coupledsgd.core.conditions import parse_condition
from coupledsgd.core.config import SCHEMA, validate
from coupledsgd.core.errors import ConfigError
from coupledsgd.core.seeds import member_seeds, parent_seeds
from coupledsgd.engine import data as D
from coupledsgd.engine.check import check_model
from coupledsgd.engine.members import Vmapped
from coupledsgd.engine.models import build_model
from coupledsgd.engine.units import parameter_units
from coupledsgd.engine.spawn import spawn
from coupledsgd.engine.training import SGD, Hparams, Run, predict, train

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
from make_arrays import make  # noqa: E402



def write_arrays(path, n_train=96, n_test=32, **change):
    rng = np.random.default_rng(0)
    x_train, y_train = make(n_train, 4, 16, 1.0, rng)
    x_test, y_test = make(n_test, 4, 16, 1.0, rng)
    arrays = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test, **change}
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


@pytest.fixture
def in_repo(monkeypatch):
    """The repository root as working directory: `examples.models` imports from it, as in a run."""
    monkeypatch.chdir(ROOT)


# --- arrays -------------------------------------------------------------------------------------------

def test_arrays_are_normalised_per_channel_from_the_training_split(tmp_path):
    x_train = np.stack([np.arange(24.0).reshape(4, 6)[:, None].repeat(2, 1)[:, :, :, None].repeat(2, 3)
                        [:, 0], np.full((4, 6, 2), 7.0)], 1).astype(np.float32)  # (4, 2, 6, 2)
    x_train[:, 1] += np.arange(4.0)[:, None, None]  # channel 1: 7, 8, 9, 10 by example
    y = np.array([0, 1, 2, 1])
    np.savez(tmp_path / "a.npz", x_train=x_train, y_train=y, x_test=x_train[:2] * 2, y_test=y[:2])
    D.prepare("arrays", tmp_path / "a.pt", arrays=tmp_path / "a.npz", crop_pad=1, flip=True)
    data = D.load(tmp_path / "a.pt")
    assert data.num_classes == 3 and data.in_shape == (2, 6, 2) and (data.crop_pad, data.flip) == (1, True)
    # channel 1 holds 7 + i in all 12 entries of example i: mean 8.5, sample std over the 48 entries
    values = np.repeat(np.arange(7.0, 11.0), 12)
    expected = (x_train[:, 1] - 8.5) / values.std(ddof=1)
    assert np.allclose(data.x_train[:, 1].numpy(), expected, atol=1e-6)
    for c in range(2):
        assert abs(data.x_train[:, c].mean().item()) < 1e-6
        assert abs(data.x_train[:, c].double().std().item() - 1) < 1e-6
    assert not D.load(tmp_path / "a.pt", augment=False).flip


def test_uint8_arrays_stay_uint8_until_loaded_and_a_constant_channel_is_only_centred(tmp_path):
    x = np.zeros((5, 2, 3), dtype=np.uint8)
    x[:, 0] = np.arange(5)[:, None]
    np.savez(tmp_path / "a.npz", x_train=x, y_train=np.arange(5) % 2, x_test=x, y_test=np.zeros(5, int))
    cache = D.prepare("arrays", tmp_path / "a.pt", arrays=tmp_path / "a.npz")
    assert cache["x_train"].dtype == torch.uint8 and cache["augment"] == (0, False)
    data = D.load(tmp_path / "a.pt")
    assert torch.equal(data.x_train[:, 1], torch.zeros(5, 3)) and torch.isfinite(data.x_train).all()


BAD_ARRAYS = [
    ({"y_test": None}, "has no y_test"),
    ({"y_train": np.zeros(95, dtype=np.int64)}, "x_train holds 96 examples but y_train 95 labels"),
    ({"y_test": np.full(32, 4)}, "y_test holds label 4, outside 0..3"),
    ({"y_train": np.r_[-1, np.zeros(95, dtype=np.int64)]}, "y_train holds label -1"),
    ({"y_train": np.zeros(96)}, "y_train is float64"),
    ({"x_train": np.r_[np.zeros((3, 1, 16)), np.full((1, 1, 16), np.nan), np.zeros((92, 1, 16))]},
     "x_train holds non-finite values (example 3 first)"),
    ({"x_test": np.zeros((32, 1, 15), dtype=np.float32)}, "test inputs are (1, 15), training inputs (1, 16)"),
    ({"x_train": np.zeros(96, dtype=np.float32)}, "x_train has shape (96,)"),
    ({"x_train": np.zeros((96, 1, 16), dtype=np.int32)}, "x_train is int32"),
]


@pytest.mark.parametrize("change,message", BAD_ARRAYS)
def test_malformed_arrays_are_refused_naming_data_path(tmp_path, change, message):
    path = write_arrays(tmp_path / "bad.npz", **change)
    with pytest.raises(ConfigError) as error:
        read_arrays(path)
    assert str(error.value).startswith(f"data.path: {path}: ") and message in str(error.value)
    assert "\n" not in str(error.value)


def test_a_missing_or_foreign_file_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        read_arrays(tmp_path / "none.npz")
    np.save(tmp_path / "one.npy", np.zeros(3))
    with pytest.raises(ConfigError, match="not a readable .npz file"):
        read_arrays(tmp_path / "one.npy")


# --- models by import path ----------------------------------------------------------------------------

def test_a_model_by_import_path_takes_its_kwargs_and_the_seed(in_repo):
    a = build_model("examples.models:mlp", (1, 16), 4, seed=3, kwargs={"width": 8, "depth": 3})
    b = build_model("examples.models:mlp", (1, 16), 4, seed=3, kwargs={"width": 8, "depth": 3})
    c = build_model("examples.models:mlp", (1, 16), 4, seed=4, kwargs={"width": 8, "depth": 3})
    assert [tuple(p.shape) for p in a.parameters()][:2] == [(8, 16), (8,)]
    assert sum(isinstance(m, nn.LayerNorm) for m in a.modules()) == 3
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a[1].weight, c[1].weight)


def write_module(folder: Path, name: str, source: str, monkeypatch) -> str:
    """A module of the test's own, in the working directory; forgotten by the import system afterwards."""
    (folder / f"{name}.py").write_text(source)
    monkeypatch.delitem(sys.modules, name, raising=False)  # restored (absent) when the test ends
    return name


MODULE_CASES = [
    ("raise ImportError('needs package foo')", "m0:make", "cannot import 'm0': ImportError: needs package foo"),
    ("x = 1", "m1:make", "module 'm1' has no callable 'make'"),
    ("def make(s, n): return 3", "m2:make", "m2:make((1, 16), 4) returned int, not a torch.nn.Module"),
    ("def make(s, n, width): return None", "m3:make", "m3:make((1, 16), 4) failed: TypeError"),
    ("import torch\ndef make(s, n): return torch.nn.Linear(15, n)", "m4:make",
     "fails on a batch of 4 inputs of shape (1, 16): RuntimeError"),
    ("import torch\ndef make(s, n): return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))",
     "m5:make", "maps a batch of 4 inputs of shape (1, 16) to (4, 3); expected logits of shape (4, 4)"),
    ("import numpy, torch\nclass Noisy(torch.nn.Module):\n    def forward(self, x):\n"
     "        return x + torch.from_numpy(numpy.random.rand(*x.shape)).float()\n"
     "def make(s, n):\n    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, n), Noisy())",
     "m6:make", "the training-mode forward pass is random beyond torch's seeded generator (module '2' gives"),
]


@pytest.mark.parametrize("source,name,message", MODULE_CASES)
def test_a_bad_model_is_refused_at_config_time_naming_model_name(tmp_path, monkeypatch, source, name, message):
    monkeypatch.chdir(tmp_path)
    write_module(tmp_path, name.split(":")[0], source, monkeypatch)
    write_arrays(tmp_path / "a.npz")
    config = validate({"experiment": "x", "data": {"name": "arrays", "path": "a.npz"}, "model": {"name": name},
                       "training": {"steps": 8, "batch_size": 16, "lr": 0.1},
                       "ensemble": {"parents": 1, "children": 2}, "reinit": {"steps": [4]}}, SCHEMA)
    with pytest.raises(ConfigError) as error:
        check_model(config)
    assert str(error.value).startswith("model.name: ") and message in str(error.value)
    assert "\n" not in str(error.value)


UNORDERED = '''
import torch
from torch import nn

class Net(nn.Module):
    def __init__(self, s, n):
        super().__init__()
        self.head = nn.Linear(8, n)
        self.body = nn.Linear(16, 8)
    def forward(self, x):
        return self.head(self.body(x.flatten(1)).relu())

class Stated(Net):
    def reinit_units(self):
        return [["body"], ["head"]]

def make(s, n):
    return Net(s, n)

def stated(s, n):
    return Stated(s, n)
'''


def test_units_follow_the_forward_pass_not_registration_and_a_model_may_state_them(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_module(tmp_path, "unordered", UNORDERED, monkeypatch)
    write_arrays(tmp_path / "a.npz")
    base = {"experiment": "x", "data": {"name": "arrays", "path": "a.npz"},
            "training": {"steps": 8, "batch_size": 16, "lr": 0.1}, "ensemble": {"parents": 1, "children": 2},
            "reinit": {"steps": [4]}}
    check_model(validate({**base, "model": {"name": "unordered:make"}}, SCHEMA))
    model = build_model("unordered:make", (1, 16), 4, 0)
    assert parameter_units(model, torch.randn(2, 1, 16)) == [["body"], ["head"]]  # registered head first
    check_model(validate({**base, "model": {"name": "unordered:stated"}}, SCHEMA))
    assert parameter_units(build_model("unordered:stated", (1, 16), 4, 0)) == [["body"], ["head"]]


# --- re-initialisation and members as one network -----------------------------------------------------

EXAMPLES = [("examples.models:mlp", {"width": 16, "depth": 2}), ("examples.models:cnn", {"channels": 4})]


@pytest.fixture(scope="module")
def signals(tmp_path_factory):
    folder = tmp_path_factory.mktemp("signals")
    D.prepare("arrays", folder / "s.pt", arrays=write_arrays(folder / "s.npz"))
    data = D.load(folder / "s.pt")
    return D.DeviceData(data.x_train.double(), data.y_train, data.x_test.double(), data.y_test,
                        data.num_classes, 0, False)


def test_the_examples_units_follow_forward_order_with_their_normalisation(in_repo):
    mlp = build_model(*EXAMPLES[0][:1], (1, 16), 4, 0, EXAMPLES[0][1])
    assert parameter_units(mlp) == [["1", "2"], ["4", "5"], ["7"]]
    cnn = build_model(EXAMPLES[1][0], (1, 16), 4, 0, EXAMPLES[1][1])
    assert parameter_units(cnn) == [["conv1", "bn1"], ["conv2", "bn2"], ["fc"]]


def start(data, name, kwargs, condition, k=2, t=2, h=Hparams(steps=8, batch_size=16, lr=0.05)):
    """k float64 members of `condition`, spawned from a parent trained to t where they have one."""
    def fresh(seeds):
        run = Run.fresh(name, data.in_shape, data.num_classes, h, seeds, model_kwargs=kwargs)
        run.model.double()
        run.optimizer = SGD(run.model, h)
        return run

    cond = parse_condition(condition)
    if not cond.has_parent:
        return [fresh(member_seeds(0, cond, 0, c)) for c in range(k)]
    parent = fresh(parent_seeds(0, 0))
    train([parent], data, t)
    return [spawn(copy.deepcopy(parent), cond, member_seeds(0, cond, 0, c)) for c in range(k)]


@pytest.mark.parametrize("name,kwargs,condition", [(*EXAMPLES[0], "no-coupling"), (*EXAMPLES[1], "reinit-low-25")])
def test_example_members_under_vmap_equal_members_alone_in_float64(in_repo, signals, name, kwargs, condition):
    runs = start(signals, name, kwargs, condition)
    solo = copy.deepcopy(runs)
    solo_traj = [train([r], signals, evaluate=True)[0] for r in solo]
    traj = train(runs, signals, evaluate=True)
    for s, f, ts, tf in zip(solo, runs, solo_traj, traj):
        a, b = s.model.state_dict(), f.model.state_dict()
        assert any(key.endswith("running_mean") for key in a) == ("cnn" in name)
        for key in a:  # BatchNorm running statistics and step counters included
            scale = max(1.0, a[key].double().abs().max().item())
            assert (a[key].double() - b[key].double()).abs().max().item() <= 1e-12 * scale, key
        for p, q in zip(s.optimizer.buffers, f.optimizer.buffers):
            assert (p - q).abs().max().item() <= 1e-12 * max(1.0, p.abs().max().item())
        assert ts.steps == tf.steps and (ts.as_array() == tf.as_array()).all()
    if "cnn" in name:  # the running statistics moved from their initial values
        assert not torch.equal(runs[0].model.bn1.running_mean, torch.zeros(4))


@pytest.mark.parametrize("name,kwargs", EXAMPLES)
@pytest.mark.parametrize("side", ["low", "high"])
def test_reinitialisation_redraws_the_requested_share_of_an_example(in_repo, signals, name, kwargs, side):
    parent = start(signals, name, kwargs, "no-coupling", k=1)[0]
    with torch.no_grad():
        for p in parent.model.parameters():
            p.fill_(1234.5)  # a value no initialiser draws: every other value was re-drawn
    condition = parse_condition(f"reinit-{side}-25")
    child = spawn(parent, condition, member_seeds(0, condition, 0, 0))
    redrawn = sum(int((p != 1234.5).sum()) for p in child.model.parameters())
    total = sum(p.numel() for p in child.model.parameters())
    assert child.info["reinit_percent"] == pytest.approx(100 * redrawn / total)
    # one output channel: a weight row, its bias and its two normalisation parameters at most
    channel = max(p[0].numel() + 3 for p in child.model.parameters() if p.dim() > 1)
    assert abs(child.info["reinit_percent"] - 25) <= 100 * channel / total
