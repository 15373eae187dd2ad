"""Divergence, defined and contained.

A run diverged when its training loss is non-finite, or above `engine.training.loss_bound` (10 x the
larger of its first steps' loss and ln(classes)); never because its accuracy is low. A member whose
loss becomes non-finite costs only itself, and a parent whose loss does costs only its own children:
through the `snakemake` command as a user runs it, the other members of the job finish and are
written, the diverged ones are recorded (step, learning rate) in files that hold no result, the
analysis leaves them out, counts them and names them, and the run succeeds with a warning naming them
(docs/troubleshooting.md, "Messages").

Every failure here is made by construction, not by the rounding of one machine: the model of one's own
`poisoned_net:Net` multiplies the logits of chosen members and parents (by their initialisation seeds)
by NaN, from their first step, or by 0 (at chance, with a finite loss). So the steps at which they are
found are the first progress line, whatever the machine.
"""

import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from fixtures import copy_workflow

from coupledsgd.analysis.read import diverged_record, read_predictions
from coupledsgd.core.conditions import parse_condition
from coupledsgd.core.errors import ArtifactError
from coupledsgd.core.layout import Layout
from coupledsgd.core.seeds import member_seeds, parent_seeds
from coupledsgd.engine import data as D
from coupledsgd.engine.training import LOSS_BOUND, Hparams, Run, loss_bound, train

HERE = Path(__file__).resolve().parent
NO = "no-coupling"
COUPLED = "coupled-to-t"
RESET = "coupled-to-t-reset"
REINIT = "reinit-low-50"
NAN_MEMBER = member_seeds(0, parse_condition(NO), 0, 2)["init"]    # no-coupling p0c2: NaN logits
ZERO_MEMBER = member_seeds(0, parse_condition(NO), 0, 1)["init"]   # no-coupling p0c1: at chance
NAN_PARENT = parent_seeds(0, 1)["init"]                            # parent 1: NaN logits
MODEL = {"name": "poisoned_net:Net", "kwargs": {"nan_seeds": [NAN_MEMBER, NAN_PARENT], "zero_seeds": [ZERO_MEMBER]}}
# 256 examples in batches of 32: 8 steps an epoch, a progress line at steps 8, 16 and 24
CONFIG = {"experiment": "blowup", "seed": 0, "device": "cpu", "threads": 1, "job_shape": "condition",
          "data": {"name": "mnist1d", "n_train": 256, "augment": False}, "model": MODEL,
          "training": {"steps": 24, "batch_size": 32, "lr": 0.05, "schedule": "constant", "momentum": 0.9},
          "ensemble": {"parents": 2, "children": 3}, "spawn_steps": [8, 16], "conditions": [NO, COUPLED, RESET, "reinit-low"],
          "reinit": {"percents": [50], "steps": [8]}, "barrier": {"points": 3},
          "metrics": {"bootstrap": 50}}


# ---- the definition, on the training loop ----------------------------------------------------------

def test_the_bound_is_ten_times_the_larger_of_the_first_loss_and_chance():
    assert LOSS_BOUND == 10
    assert loss_bound(50.0, 10) == 500.0
    assert loss_bound(2.0, 10) == pytest.approx(10 * math.log(10))   # below chance's ln 10 = 2.303
    assert loss_bound(0.01, 200) == pytest.approx(10 * math.log(200))  # a child spawned late


def _data():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(96, 1, 8, generator=g), torch.randint(0, 10, (96,), generator=g)
    return D.DeviceData(x[:64], y[:64], x[64:], y[64:], 10, crop_pad=0, flip=False)


def _run(seed, **kwargs):
    # lr 0: the weights never move, so each loss is fixed by the model as built (and its gain)
    h = Hparams(steps=32, batch_size=16, lr=0.0, momentum=0.0, weight_decay=0.0, schedule="constant")
    run = Run.fresh("poisoned_net:Net", (1, 8), 10, h, {"init": seed, "order": 1, "aug": 2}, model_kwargs=kwargs)
    run.info = {"parent": 0, "condition": NO, "child": 0}
    return run


def test_a_member_at_chance_with_a_finite_loss_has_not_diverged():
    run = _run(5, zero_seeds=[5])
    lines = []
    train([run], _data(), log=lines.append)
    # logits 0: the loss is ln 10 at every step, at chance, finite
    assert run.info["first_loss"] == pytest.approx(math.log(10))
    assert "blew_up" not in run.info and "diverged" not in run.info
    assert not any("WARNING" in line for line in lines)


def test_a_finite_loss_above_the_bound_is_divergence():
    data, run = _data(), _run(5)
    train([run], data, until=8)          # 2 progress lines at 16 a batch and 4 steps an epoch
    first = run.info["first_loss"]
    assert first < 2 * math.log(10) and "blew_up" not in run.info
    run.model.gain.fill_(1e4)            # the logits 10,000 times larger: a loss thousands of times larger
    lines = []
    train([run], data, log=lines.append)
    record = run.info["blew_up"]
    assert record["bound"] == pytest.approx(loss_bound(first, 10)) and math.isfinite(record["loss"])
    assert record["loss"] > 100 * record["bound"] and "diverged" not in run.info  # it trains on
    assert sum("it diverged; it trains on" in line for line in lines) == 1


def test_a_non_finite_loss_is_found_at_the_first_progress_line():
    run = _run(7, nan_seeds=[7])
    train([run], _data(), on_divergence="skip")
    assert run.info["diverged"] == {"step": 4, "lr": 0.0} and run.step == 4  # 4 steps an epoch


# ---- through the workflow --------------------------------------------------------------------------

def run(workdir, config, target):
    (workdir / "configs" / f"{config['experiment']}.yaml").write_text(yaml.safe_dump(config))
    return subprocess.run(["snakemake", "--cores", "2", f"--configfile=configs/{config['experiment']}.yaml",
                           target], cwd=workdir, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def blown(tmp_path_factory):
    workdir = copy_workflow(tmp_path_factory.mktemp("divergence"))
    shutil.copy(HERE / "poisoned_net.py", workdir)
    # up to the claims and figure 2; and the same members but p0c2, as a job of two children a parent
    two = {**CONFIG, "experiment": "two", "ensemble": {"parents": 2, "children": 2}}
    return (workdir, run(workdir, CONFIG, Layout("blowup").claims),
            run(workdir, CONFIG, Layout("blowup").figure("fig2_member_accuracy", "png")),
            run(workdir, two, Layout("two").predictions(NO, 0, 0, 0)))


def _layout(workdir, exp="blowup"):
    return Layout(exp, results=str(workdir / "results"))


def test_the_run_succeeds_and_warns_naming_the_diverged_member_and_parent(blown):
    _, result, figure, _ = blown
    assert result.returncode == 0, result.stderr[-3000:]
    assert figure.returncode == 0, figure.stderr[-3000:]
    warnings = [line for line in result.stderr.splitlines() if "became non-finite" in line]
    # p0c2 of no-coupling, and the 3 children of parent 1 at each of 2 steps of 2 conditions and at 8
    # re-initialised
    assert len(warnings) == 1 and "16 member(s) left out" in warnings[0], result.stderr[-3000:]
    assert f"{NO} t=0 p0c2 (step 8)" in warnings[0] and f"{REINIT} t=8 p1 c0,1,2 (their parent diverged)" in warnings[0]
    for condition in (COUPLED, RESET):
        for t in (8, 16):
            assert f"{condition} t={t} p1 c0,1,2 (their parent diverged)" in warnings[0]
    # p0c1 is at chance with a finite loss: no divergence, no warning
    assert "member(s) diverged" not in result.stderr


def test_the_diverged_member_is_recorded_in_files_that_hold_no_result(blown):
    workdir = blown[0]
    L = _layout(workdir)
    path = L.predictions(NO, 0, 0, 2)
    record = diverged_record(path)
    # NaN from the first step: found at the first progress line (step 8), at the constant rate 0.05
    assert record == {"condition": NO, "t": 0, "parent": 0, "child": 2, "step": 8, "lr": 0.05}
    assert pq.read_metadata(path).num_rows == 0
    assert diverged_record(L.trajectory(NO, 0, 0, 2)) == record
    with pytest.raises(ArtifactError, match="p0/c2.parquet: holds no result, it records a member whose training diverged"):
        read_predictions(path)
    final = torch.load(L.final(NO, 0, 0, 2), weights_only=False)
    assert final["diverged"] == {"step": 8, "lr": 0.05} and "model" not in final


def test_a_diverged_parent_costs_only_its_own_children(blown):
    workdir = blown[0]
    L = _layout(workdir)
    for t in (8, 16):
        state = torch.load(L.parent_state(1, t), weights_only=False)
        assert state["diverged"] == {"step": 8, "lr": 0.05} and state["step"] == t and "model" not in state
        for condition in (COUPLED, RESET):
            for c in range(3):
                record = diverged_record(L.predictions(condition, t, 1, c))
                assert record == {"condition": condition, "t": t, "parent": 1, "child": c, "step": 8,
                                  "lr": 0.05, "parent_diverged": True}
                assert "model" not in torch.load(L.final(condition, t, 1, c), weights_only=False)
            # parent 0's children train and are written
            assert np.isfinite(read_predictions(L.predictions(condition, t, 0, 2)).log_probs).all()
        assert "model" in torch.load(L.parent_state(0, t), weights_only=False)
    assert diverged_record(L.predictions(REINIT, 8, 1, 0))["parent_diverged"]
    # the barriers of parent 0's children only among the coupled ones: parent 1's barrier jobs have no
    # pair to interpolate; the independent runs' pairs leave out only no-coupling p0c2, whose loss is NaN
    barriers = pd.read_parquet(L.table("barriers")).astype({"condition": str})
    pairs = barriers[["condition", "t", "parent", "child_a", "child_b"]].drop_duplicates().values.tolist()
    every = ((0, 1), (0, 2), (1, 2))
    coupled = {(c, t) for c in (COUPLED, RESET) for t in (8, 16)} | {(REINIT, 8)}
    expected = [(c, t, 0, a, b) for c, t in coupled for a, b in every]
    expected += [(NO, 0, 0, 0, 1)] + [(NO, 0, 1, a, b) for a, b in every]
    assert sorted(map(tuple, pairs)) == sorted(expected)


def test_the_other_members_are_those_of_a_job_without_it(blown):
    workdir, _, _, two = blown
    assert two.returncode == 0, two.stderr[-3000:]
    for c in range(2):
        a = read_predictions(_layout(workdir).predictions(NO, 0, 0, c))
        b = read_predictions(_layout(workdir, "two").predictions(NO, 0, 0, c))
        assert np.isfinite(a.log_probs).all()
        # a network of six members against one of four: the same arithmetic per member up to float32
        # rounding
        np.testing.assert_allclose(a.log_probs, b.log_probs, rtol=1e-5, atol=1e-6)


def test_the_metrics_leave_them_out_count_them_and_do_not_call_chance_divergence(blown):
    workdir = blown[0]
    L = _layout(workdir)
    members = pd.read_parquet(L.table("members"))
    kept = members[["condition", "t", "parent", "child"]].astype({"condition": str}).values.tolist()
    assert sorted(map(tuple, kept)) == sorted(
        [(NO, 0, p, c) for p in (0, 1) for c in range(3) if (p, c) != (0, 2)]
        + [(cond, t, 0, c) for cond in (COUPLED, RESET) for t in (8, 16) for c in range(3)]
        + [(REINIT, 8, 0, c) for c in range(3)])
    assert not members["diverged"].any()
    at_chance = members[(members["condition"] == NO) & (members["parent"] == 0) & (members["child"] == 1)]
    assert at_chance["accuracy"].iloc[0] < 0.2  # MNIST-1D's 10 classes: at chance, and not diverged
    summary = pd.read_csv(L.table("summary")).set_index(["condition", "t"])
    assert summary.loc[(NO, 0), ["n_members", "n_nonfinite", "n_diverged"]].tolist() == [5, 1, 0]
    for condition in (COUPLED, RESET):
        for t in (8, 16):
            assert summary.loc[(condition, t), ["n_parents", "n_members", "n_nonfinite"]].tolist() == [1, 3, 3]
    assert summary.loc[(REINIT, 8), ["n_parents", "n_members", "n_nonfinite"]].tolist() == [1, 3, 3]
    claims = pd.read_csv(L.claims)
    assert len(claims) and set(claims["verdict"]) <= {"supported", "not supported", "inconclusive"}


def test_claims_and_figures_say_which_were_left_out(blown):
    import matplotlib.text

    from coupledsgd.analysis.figures import fig2_member_accuracy
    from coupledsgd.analysis.read import read_table

    workdir = blown[0]
    members = read_table(_layout(workdir).table("members"))
    assert members.attrs["nonfinite"] == 16
    texts = " ".join(t.get_text() for t in fig2_member_accuracy(members).findobj(matplotlib.text.Text))
    # the note names the first 4 of the 6 items (one member, five (condition, t)'s of parent 1's
    # children) and counts the rest
    assert "16 member(s) left out: training loss non-finite" in texts and "and 2 more" in texts
    assert texts.count("(their parent diverged)") + texts.count("p0c2 (step 8)") == 4
    log = (workdir / "logs/blowup/claims.log").read_text()
    assert "16 member(s) left out of the tables" in log and f"{NO} t=0 p0c2 (step 8)" in log
    assert log.count("(their parent diverged)") == 5
