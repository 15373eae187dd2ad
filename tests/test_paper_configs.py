"""The paper-scale configs (configs/cifar10-resnet20.yaml, configs/tinyimagenet-{resnet50,vit}.yaml):
each plans its whole grid in a dry run, and each runs end to end, for a handful of steps on the CPU,
on a fake dataset in the real on-disk layout (tests/fixtures.py).

CIFAR-10: torchvision checks the md5 of every file against its table of the real files, which no fake
can match, and a monkeypatch (fixtures.trust_fake_cifar10) reaches only this process, not the
`snakemake` subprocess. So the CIFAR-10 run decodes the fake data here, in-process, with the
library's own stage (coupledsgd.jobs.stages.prepare_data, the md5 check live against the fakes' md5s),
into the workflow's results/{exp}/data.pt; Snakemake then runs everything after it (and is checked
not to plan prepare_data again). The library keeps no test hook. Tiny ImageNet has no checksums: its
runs go through Snakemake from the raw JPEG folder.
"""

from __future__ import annotations

import copy
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from coupledsgd.core.grid import barrier_set
from coupledsgd.core.grid import members, parent_states, training_jobs
from coupledsgd.core.config import SCHEMA, validate

from fixtures import copy_workflow, trust_fake_cifar10, write_fake_cifar10, write_fake_tinyimagenet

ROOT = Path(__file__).resolve().parents[1]
PAPER = ["cifar10-resnet20", "tinyimagenet-resnet50", "tinyimagenet-vit"]
ALL_CONDITIONS = ["no-coupling", "coupled-order", "coupled-to-t", "coupled-to-t-reset", "reinit-low", "reinit-high"]


def load(name: str) -> dict:
    return yaml.safe_load((ROOT / f"configs/{name}.yaml").read_text())


def snakemake(workdir: Path, *args: str, configfile: str, check: bool = True):
    # --configfile takes every following word as a file: targets go before it
    result = subprocess.run(["snakemake", "--cores", "2", *args, "--configfile", configfile],
                            cwd=workdir, capture_output=True, text=True, timeout=900)
    if check and result.returncode != 0:
        raise AssertionError(result.stdout[-3000:] + result.stderr[-3000:])
    return result


def planned(workdir: Path, *args: str, configfile: str) -> dict[str, int]:
    out = snakemake(workdir, "-n", *args, configfile=configfile).stdout
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", out, re.M)
            if m.group(1) != "total"}


@pytest.fixture(scope="module")
def workflow(tmp_path_factory):
    return copy_workflow(tmp_path_factory.mktemp("paper"))


# ---- the configs as written ----------------------------------------------------------------------------

def test_cifar10_resnet20_is_the_papers_recipe():
    c = validate(load("cifar10-resnet20"), SCHEMA)
    assert (c["model"]["name"], c["data"]["name"], c["data"]["root"], c["device"]) == (
        "resnet20", "cifar10", "data/cifar10", "cuda")
    t = c["training"]
    assert (t["lr"], t["momentum"], t["weight_decay"], t["batch_size"], t["steps"]) == (0.1, 0.9, 1e-4, 128, 64000)
    assert (t["schedule"], t["milestones"], t["gamma"]) == ("step", [32000, 48000], 0.1)
    assert c["data"]["augment"] is True
    assert c["spawn_steps"] == [0, 431, 878, 1254, 1791, 2558, 3654]
    assert c["ensemble"] == {"children": 5, "parents": 3}
    assert c["conditions"] == ALL_CONDITIONS
    assert c["reinit"] == {"percents": [5, 10, 20, 30, 40, 50], "steps": [1791]}


@pytest.mark.parametrize("name, model", [("tinyimagenet-resnet50", "resnet50"), ("tinyimagenet-vit", "vit")])
def test_tinyimagenet_configs(name, model):
    c = validate(load(name), SCHEMA)
    assert (c["model"]["name"], c["data"]["name"], c["device"]) == (model, "tinyimagenet", "cuda")
    assert c["data"]["root"] and c["data"]["augment"] is True
    steps_per_epoch = 100000 // c["training"]["batch_size"]
    # the spawn steps of the CIFAR-10 config, at the same epochs
    cifar = load("cifar10-resnet20")["spawn_steps"]
    assert c["spawn_steps"] == [round(t / (50000 // 128) * steps_per_epoch) for t in cifar]
    assert c["reinit"]["steps"] == [c["spawn_steps"][4]] and c["conditions"] == ALL_CONDITIONS


def key_paths(node: dict, prefix: str = "") -> set[str]:
    return {path for k, v in node.items()
            for path in ([f"{prefix}{k}"] + (sorted(key_paths(v, f"{prefix}{k}.")) if isinstance(v, dict) else []))}


@pytest.mark.parametrize("name", PAPER)
def test_sets_every_key_of_the_default_config(name):
    # A --configfile replaces config.yaml (the Snakefile reads config.yaml only without one): a key a
    # paper config leaves out takes the schema's default. Each paper config spells out every key of the
    # default config all the same, so that it reads complete on its own.
    default = yaml.safe_load((ROOT / "config.yaml").read_text())
    missing = key_paths(default) - key_paths(load(name))
    assert not missing, f"configs/{name}.yaml leaves {sorted(missing)} to the schema's defaults"
    assert load(name)["data"]["n_train"] is None


@pytest.mark.parametrize("name", PAPER)
def test_dry_run_plans_every_training(workflow, name):
    config = validate(load(name), SCHEMA)
    jobs = planned(workflow, configfile=f"configs/{name}.yaml")
    parents, children = config["ensemble"]["parents"], config["ensemble"]["children"]
    steps, reinit_steps = len(config["spawn_steps"]), len(config["reinit"]["steps"])
    percents = len(config["reinit"]["percents"])
    # parents x children x (no-coupling + coupled-order + (coupled-to-t + reset) at each spawn step
    # + (low + high) at each percent and re-initialisation step)
    conditions_x_steps = 1 + 1 + 2 * steps + 2 * percents * reinit_steps
    assert len(members(config)) == parents * children * conditions_x_steps == 3 * 5 * (2 + 2 * 7 + 2 * 6 * 1) == 420
    # On a GPU one job trains every ResNet-20 of a (condition, t) as one network; the ResNet-50s
    # (slower grouped) and the ViTs (not measured grouped on a GPU yet) train one a job.
    per_job = 15 if config["model"]["name"] == "resnet20" else 1
    assert jobs["train_members"] == len(training_jobs(config)) == 420 // per_job
    if name == PAPER[0]:  # the other shapes, once: a dry run of the paper grid takes ~8 s
        alone = planned(workflow, "--config", "job_shape=member", configfile=f"configs/{name}.yaml")
        assert alone["train_members"] == 420
        by_parent = planned(workflow, "--config", "job_shape=children", configfile=f"configs/{name}.yaml")
        assert by_parent["train_members"] == 3 * 28
    assert jobs["parent_state"] == len(parent_states(config)) == 3 * 7   # the re-init step is a spawn step
    # reset and each re-init at the re-init step; no-coupling and coupled-to-t(-reset) at each spawn step
    # (the reset at the re-init step once); each parent
    assert jobs["barrier"] == len(barrier_set(config)) == 3 * (1 + 2 * 6 + 1 + 2 * 7 - 1)
    assert jobs["prepare_data"] == jobs["metrics"] == jobs["barriers"] == jobs["claims"] == jobs["all"] == 1
    assert jobs["curves"] == 1
    assert jobs["figure"] == 15


@pytest.mark.parametrize("device, gpus", [("cuda", "1"), ("cpu", "0")])
def test_slurm_profile_requests_a_gpu_only_for_cuda(workflow, device, gpus):
    pytest.importorskip("snakemake_executor_plugin_slurm")
    out = snakemake(workflow, "-n", "--workflow-profile", "workflow/profiles/slurm",
                    "results/cifar10-resnet20/predictions/no-coupling/t0/p0/c0.parquet",
                    "results/cifar10-resnet20/parents/p0/step431.pt", "--config", f"device={device}",
                    configfile="configs/cifar10-resnet20.yaml").stdout
    blocks = {m.group(1): m.group(2) for m in re.finditer(r"^rule (\w+):\n(.*?)(?=^\S|\Z)", out, re.M | re.S)}
    for rule in ("train_members", "parent_state"):
        resources = re.search(r"resources: (.*)", blocks[rule]).group(1)
        assert f"gpu={gpus}" in resources, (rule, resources)
        assert re.search(r"mem_mb=(8000|16000)", resources) and "runtime=" in resources
    resources = re.search(r"resources: (.*)", blocks["prepare_data"]).group(1)
    assert "gpu=" not in resources


# ---- each config, end to end on a fake dataset -------------------------------------------------------

def tiny(config: dict, root: Path) -> dict:
    """The config with its grid, steps and batches cut to what 2 CPU cores run in about a minute (a
    ResNet-50 step on 64x64 images runs at 2 images/s on one core): 2 SGD steps of 2 images, one
    parent, two children, one spawn step, one condition of each kind (independent, spawned and reset,
    re-initialised: every rule runs; tests/test_workflow.py runs every condition)."""
    c = copy.deepcopy(config)
    c["device"], c["threads"] = "cpu", 1
    c["data"]["root"] = str(root)
    t = c["training"]
    t.update(steps=2, batch_size=2, lr=0.01, eval_batch_size=16)  # 0.1 on 2 images diverges
    if t.get("milestones"):
        t["milestones"] = [1]
    if t.get("warmup_steps"):
        t["warmup_steps"] = 1
    c["ensemble"] = {"parents": 1, "children": 2}
    c["spawn_steps"] = [1]
    c["conditions"] = ["no-coupling", "coupled-to-t-reset", "reinit-high"]
    c["reinit"] = {"percents": [c["reinit"]["percents"][-1]], "steps": [1]}
    c["barrier"] = {"points": 3, "bn_batches": 1}
    c["metrics"] = {"bootstrap": 10}
    return c


TARGETS = ["metrics/summary.csv", "metrics/barriers.parquet"]


@pytest.mark.parametrize("name", PAPER)
def test_runs_end_to_end_on_a_fake_dataset(tmp_path, monkeypatch, name):
    import pyarrow.parquet as pq

    from coupledsgd.jobs.stages import prepare_data

    workdir = copy_workflow(tmp_path / "wf")
    config = tiny(load(name), tmp_path / "data")
    exp = config["experiment"]
    if config["data"]["name"] == "cifar10":
        fake = write_fake_cifar10(tmp_path / "data", n_train=40, n_test=10)
        trust_fake_cifar10(monkeypatch, fake["md5"])
        checked = validate(config, SCHEMA)
        prepare_data({k: v for k, v in checked["data"].items() if k != "augment"},
                     str(workdir / f"results/{exp}/data.pt"))
        n_test, classes = 10, 10
    else:
        write_fake_tinyimagenet(tmp_path / "data", n_classes=200, n_train_per_class=1, n_val=10)
        n_test, classes = 10, 200
    (workdir / "configs/tiny.yaml").write_text(yaml.safe_dump(config))
    targets = [f"results/{exp}/{t}" for t in TARGETS]
    jobs = planned(workdir, *targets, configfile="configs/tiny.yaml")
    grid = members(validate(config, SCHEMA))
    assert len(grid) == 6   # 3 conditions x 1 parent x 2 children
    assert jobs["train_members"] == len(training_jobs(validate(config, SCHEMA)))
    assert ("prepare_data" in jobs) == (config["data"]["name"] != "cifar10")

    snakemake(workdir, *targets, configfile="configs/tiny.yaml")
    for m in grid:
        table = pq.read_table(workdir / f"results/{exp}/predictions/{m.key}.parquet")
        assert table.num_rows == n_test
        assert table.column_names[-1] == f"logit_{classes - 1}"
        logits = np.stack([table.column(f"logit_{j}").to_numpy() for j in range(classes)], 1)
        assert np.isfinite(logits).all(), m.key
    summary = (workdir / f"results/{exp}/metrics/summary.csv").read_text()
    assert "reinit-high-50" in summary and "coupled-to-t-reset" in summary
    # every ensemble of the barrier set (figure 3 and the instability analysis) x 1 pair x 3 points
    ensembles = barrier_set(validate(config, SCHEMA))
    assert {c for c, _, _ in ensembles} >= {"coupled-to-t-reset", "reinit-high-50"}
    assert pq.read_table(workdir / f"results/{exp}/metrics/barriers.parquet").num_rows == len(ensembles) * 3
