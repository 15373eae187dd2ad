"""A member whose training loss becomes non-finite costs only itself, through the `snakemake` command as
a user runs it: the other members of its job finish and are written, the diverged one is recorded
(step, learning rate) in files that hold no result, the analysis leaves it out and counts it, and the
run succeeds with a warning naming it (docs/troubleshooting.md, "Messages").

The reproducer: MNIST-1D, cnn1d, 1 parent x 6 children trained as one network at a constant learning
rate of 120: child 5's loss is non-finite by step 24, the others blow up but stay finite.
"""

import subprocess

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from fixtures import copy_workflow

from coupledsgd.analysis.read import diverged_record, read_predictions
from coupledsgd.core.errors import ArtifactError
from coupledsgd.core.layout import Layout

CONFIG = {"experiment": "blowup", "seed": 0, "device": "cpu", "threads": 1,
          "data": {"name": "mnist1d", "n_train": 256, "augment": False}, "model": {"name": "cnn1d"},
          "training": {"steps": 48, "batch_size": 32, "lr": 120.0, "schedule": "constant", "momentum": 0.9},
          "ensemble": {"parents": 1, "children": 6}, "spawn_steps": [0], "conditions": ["no-coupling"],
          "metrics": {"bootstrap": 50}}


def run(workdir, config, target):
    (workdir / "configs" / f"{config['experiment']}.yaml").write_text(yaml.safe_dump(config))
    return subprocess.run(["snakemake", "--cores", "2", f"--configfile=configs/{config['experiment']}.yaml",
                           target], cwd=workdir, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def blown(tmp_path_factory):
    workdir = copy_workflow(tmp_path_factory.mktemp("divergence"))
    # up to the claims (the figures read the same tables); and the same members but child 5, trained
    # as a job of five
    five = {**CONFIG, "experiment": "five", "ensemble": {"parents": 1, "children": 5}}
    return (workdir, run(workdir, CONFIG, Layout("blowup").claims),
            run(workdir, five, Layout("five").predictions("no-coupling", 0, 0, 0)))


def test_the_run_succeeds_and_warns_naming_the_diverged_member(blown):
    _, result, _ = blown
    assert result.returncode == 0, result.stderr[-3000:]
    warnings = [line for line in result.stderr.splitlines() if "became non-finite" in line]
    assert len(warnings) == 1 and "1 member(s) left out" in warnings[0], result.stderr[-3000:]
    assert "no-coupling t=0 p0c5 at step 24" in warnings[0]


def test_the_diverged_member_is_recorded_in_files_that_hold_no_result(blown):
    workdir, _, _ = blown
    L = Layout("blowup", results=str(workdir / "results"))
    path = L.predictions("no-coupling", 0, 0, 5)
    record = diverged_record(path)
    assert record == {"condition": "no-coupling", "t": 0, "parent": 0, "child": 5, "step": 24, "lr": 120.0}
    assert pq.read_metadata(path).num_rows == 0
    assert diverged_record(L.trajectory("no-coupling", 0, 0, 5)) == record
    with pytest.raises(ArtifactError, match="p0/c5.parquet: holds no result, it records a member whose training diverged"):
        read_predictions(path)
    final = torch.load(L.final("no-coupling", 0, 0, 5), weights_only=False)
    assert final["diverged"] == {"step": 24, "lr": 120.0} and "model" not in final


def test_the_other_members_are_those_of_a_job_without_it(blown):
    workdir, _, five = blown
    assert five.returncode == 0, five.stderr[-3000:]
    for c in range(5):
        a = read_predictions(Layout("blowup", results=str(workdir / "results")).predictions("no-coupling", 0, 0, c))
        b = read_predictions(Layout("five", results=str(workdir / "results")).predictions("no-coupling", 0, 0, c))
        assert np.isfinite(a.log_probs).all()
        # a network of six members against one of five: the same arithmetic per member up to float32
        # rounding (the logits have blown up to ~1e15)
        np.testing.assert_allclose(a.log_probs, b.log_probs, rtol=1e-5)


def test_the_metrics_leave_it_out_and_count_it(blown):
    workdir, _, _ = blown
    L = Layout("blowup", results=str(workdir / "results"))
    members = pd.read_parquet(L.table("members"))
    assert sorted(members["child"]) == [0, 1, 2, 3, 4]
    summary = pd.read_csv(L.table("summary"))
    assert summary[["n_members", "n_nonfinite"]].values.tolist() == [[5, 1]]
    claims = pd.read_csv(L.claims)
    assert len(claims) and set(claims["verdict"]) <= {"supported", "refuted", "inconclusive"}


def test_claims_and_figures_say_how_many_were_left_out(blown):
    import matplotlib.text

    from coupledsgd.analysis.figures import fig2_member_accuracy
    from coupledsgd.analysis.read import read_table

    workdir, _, _ = blown
    members = read_table(Layout("blowup", results=str(workdir / "results")).table("members"))
    assert members.attrs["nonfinite"] == 1
    texts = [t.get_text() for t in fig2_member_accuracy(members).findobj(matplotlib.text.Text)]
    assert any("1 member(s) left out: training loss non-finite" in t for t in texts), texts
    assert "1 member(s) left out of the tables" in (workdir / "logs/blowup/claims.log").read_text()
