"""The training jobs on a CUDA device, run as the workflow runs them (stages.parent_state and
stages.train_members): reproducible to the bit, the coupling exact, and k members in one job equal to
the same members alone up to bf16 rounding. Skipped without a GPU; the same code paths run on the CPU
in test_members, test_spawn and test_resume.
"""

import pandas as pd
import pytest
import torch

from coupledsgd.engine import data as D
from coupledsgd.engine.checkpoints import load_torch
from coupledsgd.jobs.stages import parent_state, train_members

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

PARAMS = {"seed": 0, "device": "cuda", "augment": True, "model": {"name": "resnet8"},
          "training": {"steps": 120, "batch_size": 64, "lr": 0.1}, "config_hash": "cuda-test",
          "condition": "coupled-to-t", "t": 16, "parent": 0, "threads": 1, "jobs_per_device": 1,
          "checkpoint": {"every_steps": None, "every_seconds": None},
          "cuda": {"bf16": True, "channels_last": True, "graphs": False, "compile": False}}


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "digits.pt"
    D.prepare("digits", path)
    return path


def job(digits, root, members, **changes):
    params = {**PARAMS, **changes, "members": members}
    parent = root / "parent.pt"
    if not parent.exists():
        parent_state(str(digits), str(parent), params)
    outs = [{"final": str(root / f"c{c}.pt"), "predictions": str(root / f"c{c}.parquet"),
             "trajectory": str(root / f"c{c}.traj.parquet")} for _, c in members]
    train_members(str(digits), {0: str(parent)}, outs, params)
    return {c: pd.read_parquet(root / f"c{c}.parquet") for _, c in members}, parent


@pytest.mark.parametrize("graphs", [False, True])
def test_cuda_jobs_are_reproducible_to_the_bit(digits, tmp_path, graphs):
    cuda = {**PARAMS["cuda"], "graphs": graphs}
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    a, _ = job(digits, tmp_path / "a", [[0, 0], [0, 1]], cuda=cuda)
    b, _ = job(digits, tmp_path / "b", [[0, 0], [0, 1]], cuda=cuda)
    for c in a:
        pd.testing.assert_frame_equal(a[c], b[c], check_exact=True)
    assert not a[0].equals(a[1])  # children draw their own order after t


def test_cuda_child_state_at_t_is_its_parent_state(digits, tmp_path):
    # coupled-to-t with T = t: the child trains no step, so its final state is its state at t
    _, parent = job(digits, tmp_path, [[0, 0]], training={**PARAMS["training"], "steps": 16})
    parent, child = load_torch(parent, what="parent state"), load_torch(tmp_path / "c0.pt", what="member state")
    assert parent["step"] == child["step"] == 16 and child["info"]["spawned_at"] == 16
    for name, tensor in parent["model"].items():
        assert torch.equal(tensor, child["model"][name]), name


def test_cuda_members_together_equal_members_alone_up_to_bf16(digits, tmp_path):
    for d in ("together", "alone0", "alone1"):
        (tmp_path / d).mkdir()
    together, _ = job(digits, tmp_path / "together", [[0, 0], [0, 1]])
    for c in (0, 1):
        (tmp_path / f"alone{c}" / "parent.pt").hardlink_to(tmp_path / "together" / "parent.pt")
        alone, _ = job(digits, tmp_path / f"alone{c}", [[0, c]])
        la = alone[c].filter(like="logit").to_numpy()
        lt = together[c].filter(like="logit").to_numpy()
        assert la.shape == lt.shape and la.size
        assert (la.argmax(1) == lt.argmax(1)).mean() > 0.9


class _At:
    """A checkpoint stand-in for engine.training.train: keeps a copy of the state at one step."""

    def __init__(self, step):
        self.step, self.state = step, None

    def due(self, step):
        return step == self.step

    def saved_at(self, step):
        return self.state is not None and step == self.step

    def save(self, runs, trajectories):
        if runs[0].step == self.step:
            self.state = {k: v.detach().clone() for k, v in runs[0].model.state_dict().items()}


@pytest.mark.parametrize("name, shape", [("cnn1d", (1, 40)), ("resnet8", (3, 16, 16)), ("resnet20", (3, 16, 16)),
                                         ("resnet50", (3, 16, 16)), ("vit", (3, 16, 16))])
def test_a_parents_state_at_t1_is_the_first_t1_steps_of_its_run_to_t2(name, shape):
    # Each parent state is its own job from step 0 (stages.parent_state); with the parent jobs' strict
    # determinism, the run to t1 = 12 and the run to t2 = 30 agree to the bit at t1.
    from coupledsgd.core.seeds import parent_seeds
    from coupledsgd.engine.training import Accel, Hparams, Run, train
    from coupledsgd.jobs.runtime import setup

    device = setup(1, "cuda", 1, strict=True)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(512, *shape, generator=g), torch.randint(0, 10, (512,), generator=g)
    data = D.DeviceData(x[:384].to(device), y[:384].to(device), x[384:].to(device), y[384:].to(device), 10,
                        crop_pad=2, flip=len(shape) == 3)
    h = Hparams(steps=40, batch_size=32, lr=0.05)
    accel = Accel.for_device(device, PARAMS["cuda"])
    states = []
    for until in (12, 30):
        run = Run.fresh(name, shape, 10, h, parent_seeds(0, 0), device)
        at = _At(12)
        train([run], data, until, checkpoint=at, accel=accel)
        states.append(at.state)
    assert states[0].keys() == states[1].keys()
    for k in states[0]:
        assert torch.equal(states[0][k], states[1][k]), (name, k)
