"""Rehearsal data (`data.name: synthetic`): a learnable task drawn from the seed at the shapes of the
dataset it is like, so a paper config runs, apart from its data section, before the real data is there.
"""

import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from fixtures import copy_workflow

from coupledsgd.core.config import SCHEMA, validate
from coupledsgd.cost import run_cost
from coupledsgd.core.errors import ConfigError
from coupledsgd.core.registry import DATASETS, dataset
from coupledsgd.engine import data as D

ROOT = Path(__file__).resolve().parents[1]


def test_synthetic_takes_the_shapes_of_the_dataset_it_is_like_unless_given():
    assert dataset({"name": "synthetic"}) == DATASETS["cifar10"]
    tiny = dataset({"name": "synthetic", "like": "tinyimagenet", "n_train": 500, "classes": 20})
    assert tiny == DATASETS["tinyimagenet"]._replace(n_train=500, classes=20)
    signal = dataset({"name": "synthetic", "like": "mnist1d", "shape": [2, 64], "n_test": 30})
    assert (signal.kind, signal.shape, signal.n_test, signal.n_train) == ("signal", (2, 64), 30, 4000)


def test_keys_of_synthetic_data_are_refused_elsewhere_and_shapes_must_match_their_rank():
    base = yaml.safe_load((ROOT / "configs/smoke.yaml").read_text())
    with pytest.raises(ConfigError, match="data.classes: only data.name: synthetic takes it"):
        validate({**base, "data": {**base["data"], "classes": 3}}, SCHEMA)
    with pytest.raises(ConfigError, match=r"data.shape: \[3, 32, 32\] is not of the rank of mnist1d's \[1, 40\]"):
        validate({**base, "data": {"name": "synthetic", "like": "mnist1d", "shape": [3, 32, 32]}}, SCHEMA)


def _class_mean_accuracy(raw, classes) -> float:
    """A classifier fitted in one pass: the nearest training-class mean."""
    x, y = raw["x_train"].float().flatten(1), raw["y_train"]
    means = torch.stack([x[y == c].mean(0) for c in range(classes)])
    return (torch.cdist(raw["x_test"].float().flatten(1), means).argmin(1) == raw["y_test"]).float().mean().item()


@pytest.mark.parametrize("like, classes", [("digits", 4), ("mnist1d", 10), ("cifar10", 10)])
def test_the_task_is_drawn_from_the_seed_and_learnable(like, classes):
    spec = dataset({"name": "synthetic", "like": like, "n_train": 400, "n_test": 200, "classes": classes})
    raw = D.synthetic_source(spec, seed=3)
    assert raw["x_train"].shape == (400, *spec.shape) and raw["x_test"].shape == (200, *spec.shape)
    assert raw["x_train"].dtype == (torch.float32 if spec.kind == "signal" else torch.uint8)
    assert torch.equal(D.synthetic_source(spec, seed=3)["x_test"], raw["x_test"])
    assert not torch.equal(D.synthetic_source(spec, seed=4)["x_test"], raw["x_test"])
    assert sorted(raw["y_train"].unique().tolist()) == list(range(classes))
    # far above chance (1 / classes), and not solved by the class means alone
    assert 0.6 < _class_mean_accuracy(raw, classes) < 1.0


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    """The CIFAR-10 paper config with synthetic data at smoke scale (and on the CPU): one member's job."""
    workdir = copy_workflow(tmp_path_factory.mktemp("synthetic"))
    config = yaml.safe_load((ROOT / "configs/cifar10-resnet20.yaml").read_text())
    config.update(experiment="rehearsal", device="cpu",
                  data={"name": "synthetic", "like": "cifar10", "n_train": 64, "n_test": 32})
    # smoke scale: 8 steps, the spawn and re-initialisation steps within them
    config["training"].update(steps=8, batch_size=16, milestones=[4, 6])
    config.update(spawn_steps=[0, 2, 4], reinit={**config["reinit"], "steps": [2]})
    (workdir / "configs/rehearsal.yaml").write_text(yaml.safe_dump(config))
    target = "results/rehearsal/predictions/no-coupling/t0/p0/c0.parquet"
    run = subprocess.run(["snakemake", "--cores", "1", "--configfile=configs/rehearsal.yaml", target],
                         cwd=workdir, capture_output=True, text=True, timeout=600)
    return workdir, run


def test_a_paper_config_trains_on_synthetic_data_through_the_workflow(rehearsal):
    workdir, run = rehearsal
    assert run.returncode == 0, run.stderr[-3000:]
    data = torch.load(workdir / "results/rehearsal/data.pt", weights_only=False)
    assert (data["name"], data["like"], data["num_classes"]) == ("synthetic", "cifar10", 10)
    assert data["x_train"].shape == (64, 3, 32, 32) and data["x_test"].shape == (32, 3, 32, 32)
    loaded = D.load(workdir / "results/rehearsal/data.pt", augment=True)
    assert (loaded.crop_pad, loaded.flip) == (4, True)  # CIFAR-10's augmentation


def test_cost_projects_from_the_rate_the_rehearsal_measured(rehearsal):
    workdir, run = rehearsal
    config = validate(yaml.safe_load((workdir / "configs/rehearsal.yaml").read_text()), SCHEMA)
    costs = {c.kind: c for c in run_cost(config, workdir / "results")}
    trained = costs["train_members"]
    # the one member job the rehearsal ran: 8 steps of 16 images in the seconds its benchmark file holds
    # and its 3 evaluations (steps 0, 4, 8) of the 32 test images, forward only (a third of a training image)
    assert (trained.done, trained.measured, trained.images, trained.forward) == (1, 1, 8 * 16, 3 * 32)
    assert trained.rate_source == "measured: 1 finished job(s) of this run"
    assert trained.rate == pytest.approx((128 + 32) / trained.seconds)
    assert trained.left_seconds == pytest.approx((trained.left_images + trained.left_forward / 3) / trained.rate)
