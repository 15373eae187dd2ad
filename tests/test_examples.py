"""The examples (examples/: an MLP with LayerNorm and a 1-D CNN with BatchNorm, given by import path,
on arrays that examples/make_arrays.py writes) through the `snakemake` command as a user runs them:
every stage to the claims table and a figure, the realised re-initialisation shares against the hand
count, the members trained as one network (job_shape: condition) against members alone, and bad
models and arrays refused before any job."""

import copy
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from fixtures import copy_workflow

from coupledsgd.analysis.claims import CLAIMS
from coupledsgd.core.conditions import parse_condition
from coupledsgd.core.parquet import REINIT_PERCENT_KEY
from coupledsgd.core.seeds import member_seeds
from coupledsgd.engine import data as D
from coupledsgd.engine.checkpoints import load_torch
from coupledsgd.engine.spawn import spawn
from coupledsgd.engine.training import SGD, Hparams, Run, train

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = {"mlp": "example-mlp", "cnn": "example-cnn"}


def snakemake(workdir, config: str, *targets, dry=False):
    return subprocess.run(["snakemake", "--cores", "1", *(["-n"] if dry else []), *targets, "--configfile", config],
                          cwd=workdir, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Both examples run side by side as docs/own-model.md says, to the claims table and the barrier figure."""
    workdir = copy_workflow(tmp_path_factory.mktemp("examples"))
    shutil.copytree(ROOT / "examples", workdir / "examples")
    subprocess.run([sys.executable, "examples/make_arrays.py", "examples/signals.npz"], cwd=workdir, check=True)
    targets = lambda exp: [f"results/{exp}/claims.csv", f"results/{exp}/figures/fig3_error_barrier.png"]
    with ThreadPoolExecutor(2) as pool:
        done = list(pool.map(lambda n: snakemake(workdir, f"examples/{n}.yaml", *targets(EXAMPLES[n])), EXAMPLES))
    for result in done:
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return workdir


def reinit_percent(workdir, exp, condition):
    table = pq.read_table(workdir / f"results/{exp}/predictions/{condition}/t4/p0/c0.parquet")
    return float(table.schema.metadata[REINIT_PERCENT_KEY.encode()])


def test_the_realised_reinitialisation_shares_are_the_hand_counted_ones(runs):
    # MLP, width 32, on (1, 32) signals, 4 classes: units [Linear 32x32 + bias, LayerNorm] 1,120,
    # the same again 1,120, [Linear 32 -> 4] 132; 2,372 parameters, 25% = 593.
    # low: 17 of the first unit's 32 channels (35 parameters each; 593 / 35 = 16.9) = 595.
    # high: the head (132), then 13 channels of the second unit (461 / 35 = 13.2) = 132 + 455 = 587.
    assert reinit_percent(runs, "example-mlp", "reinit-low-25") == pytest.approx(100 * 595 / 2372, abs=1e-12)
    assert reinit_percent(runs, "example-mlp", "reinit-high-25") == pytest.approx(100 * 587 / 2372, abs=1e-12)
    # CNN, 8 channels: [conv1 8x1x5, bn1 2x8] 56, [conv2 16x8x3, bn2 2x16] 416 (26 a channel),
    # [fc 4x16 + 4] 68; 540 parameters, 25% = 135.
    # low: conv1 unit (56), then 3 channels of the second (79 / 26 = 3.04) = 134.
    # high: fc (68), then 3 channels of the second (67 / 26 = 2.6) = 146.
    assert reinit_percent(runs, "example-cnn", "reinit-low-25") == pytest.approx(100 * 134 / 540, abs=1e-12)
    assert reinit_percent(runs, "example-cnn", "reinit-high-25") == pytest.approx(100 * 146 / 540, abs=1e-12)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_the_claims_table_judges_every_claim(runs, name):
    claims = pd.read_csv(runs / f"results/{EXAMPLES[name]}/claims.csv")
    assert claims.claim.tolist() == [c.id for c in CLAIMS]
    assert set(claims.verdict) <= {"supported", "not supported", "inconclusive"}
    # the claims this grid (one spawn step, reinit and reset) has the data for carry a number
    measured = claims.set_index("claim").loc[["members-not-worse", "reinit-low-beats-high", "reinit-opens-barrier"]]
    assert np.isfinite(measured[["value", "ci_low", "ci_high"]].to_numpy()).all()
    assert (measured.ci_low <= measured.value).all() and (measured.value <= measured.ci_high).all()
    assert (runs / f"results/{EXAMPLES[name]}/figures/fig3_error_barrier.png").stat().st_size > 0


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_members_trained_as_one_network_equal_members_alone(runs, name, monkeypatch):
    """The workflow trained each condition's four members as one network under vmap (float32); one of
    them retrained alone from the same parent state agrees to float32 rounding, and the members of
    that parent trained together and alone in float64 agree to 1e-12."""
    monkeypatch.chdir(runs)  # the model imports from the working directory, as in the run
    exp, cond = EXAMPLES[name], parse_condition("reinit-low-25")
    config = yaml.safe_load((runs / f"examples/{name}.yaml").read_text())
    h = Hparams.from_config(config["training"])
    data = D.load(runs / f"results/{exp}/data.pt", augment=False)
    parent = load_torch(runs / f"results/{exp}/parents/p0/step4.pt")

    def child(c, dtype):  # re-initialisation resets the optimizer: a fresh one of the dtype's tensors
        run = Run.from_state(parent, h)
        run.model.to(dtype)
        run.optimizer = SGD(run.model, h)
        return spawn(run, cond, member_seeds(0, cond, 0, c))

    alone = child(0, torch.float32)
    train([alone], data)
    fused = load_torch(runs / f"results/{exp}/children/{cond.name}/t4/p0/c0/final.pt")["model"]
    for key, value in alone.model.state_dict().items():
        assert torch.allclose(value.double(), fused[key].double(), rtol=0, atol=1e-4 * max(1, value.abs().max())), key

    data64 = D.DeviceData(data.x_train.double(), data.y_train, data.x_test.double(), data.y_test,
                          data.num_classes, 0, False)
    together = [child(c, torch.float64) for c in range(2)]
    solo = copy.deepcopy(together)
    train(together, data64)
    for s, f in zip(solo, together):
        train([s], data64)
        for (key, a), b in zip(s.model.state_dict().items(), f.model.state_dict().values()):
            assert (a.double() - b.double()).abs().max() <= 1e-12 * max(1.0, a.double().abs().max()), key


def planned(result) -> dict[str, int]:
    assert result.returncode == 0, result.stderr[-2000:]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", result.stdout, re.M)
            if m.group(1) != "total"}


def test_changing_the_model_kwargs_or_the_arrays_reruns_what_depends_on_them(runs):
    config = yaml.safe_load((runs / "examples/mlp.yaml").read_text())
    config["model"]["kwargs"]["width"] = 24
    (runs / "examples/wider.yaml").write_text(yaml.safe_dump(config))
    jobs = planned(snakemake(runs, "examples/wider.yaml", "results/example-mlp/claims.csv", dry=True))
    assert jobs["parent_state"] == 2 and jobs["train_members"] == 5 and "prepare_data" not in jobs
    # New arrays (another seed): Snakemake reruns on a changed input, not on a touched one.
    arrays = runs / "examples/signals.npz"
    content, before = arrays.read_bytes(), arrays.stat().st_mtime_ns
    try:
        subprocess.run([sys.executable, "examples/make_arrays.py", "examples/signals.npz", "--seed", "1"],
                       cwd=runs, check=True, capture_output=True)
        jobs = planned(snakemake(runs, "examples/mlp.yaml", "results/example-mlp/claims.csv", dry=True))
    finally:
        arrays.write_bytes(content)
        os.utime(arrays, ns=(before, before))
    assert jobs["prepare_data"] == 1 and jobs["train_members"] == 5


BAD_MODULES = {
    "broken": "raise ImportError('this model needs the package foo')\n",
    "wrong": "import torch\n\ndef make(in_shape, num_classes):\n"
             "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(32, num_classes + 1))\n",
}


def bad_arrays(path, change):
    """The example's arrays with one `change`, written to `path`."""
    with np.load(path.parent / "signals.npz") as npz:
        arrays = dict(npz)
    change(arrays)
    np.savez(path, **arrays)


CLI_CASES = [
    ({"model": {"name": "broken:make"}}, None,
     "model.name: cannot import 'broken': ImportError: this model needs the package foo"),
    ({"model": {"name": "wrong:make"}}, None,
     "model.name: the model maps a batch of 4 inputs of shape (1, 32) to (4, 5); expected logits of shape (4, 4)"),
    ({"model": {"name": "examples.models:mlp", "kwargs": {"widht": 8}}}, None,
     "model.name: examples.models:mlp((1, 32), 4, widht=8) failed: TypeError"),
    ({}, lambda a: a["y_test"].__setitem__(0, 9), "data.path: examples/bad.npz: y_test holds label 9, outside 0..3"),
    ({}, lambda a: a.update(x_test=a["x_test"][:, :, :16]),
     "data.path: examples/bad.npz: test inputs are (1, 16), training inputs (1, 32)"),
]


def test_bad_models_and_arrays_stop_snakemake_before_any_job_in_one_line(runs):
    for name, source in BAD_MODULES.items():
        (runs / f"{name}.py").write_text(source)
    base = yaml.safe_load((runs / "examples/mlp.yaml").read_text())

    def case(i):
        change, arrays, _ = CLI_CASES[i]
        config = {**base, "experiment": f"bad{i}", **change}
        if arrays:
            bad_arrays(runs / f"examples/bad{i}.npz", arrays)
            config["data"] = {**base["data"], "path": f"examples/bad{i}.npz"}
        (runs / f"examples/bad{i}.yaml").write_text(yaml.safe_dump(config))
        return snakemake(runs, f"examples/bad{i}.yaml")

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(case, range(len(CLI_CASES))))
    for i, ((_, _, message), result) in enumerate(zip(CLI_CASES, results)):
        assert result.returncode != 0
        lines = [line for line in (result.stdout + result.stderr).splitlines() if "Error in config:" in line]
        expected = message.replace("examples/bad.npz", f"examples/bad{i}.npz")
        assert len(lines) == 1 and lines[0].startswith(f"Error in config: {expected}"), (i, lines,
                                                                                         result.stderr[-1500:])
        assert not (runs / f"results/bad{i}").exists() and not (runs / f"logs/bad{i}").exists()
