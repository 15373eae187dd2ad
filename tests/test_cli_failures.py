"""Bad input through the `snakemake` command, as a user runs it: one line naming the key or file, a
non-zero exit status, and every finished output byte-for-byte as it was, except the outputs of the
job that failed, which Snakemake deletes before it runs a job (docs/troubleshooting.md, "Messages").

Three kinds of case: configs refused before any job (run two at a time), a finished experiment with one
of its files broken and the job that reads it made to run again, and fresh experiments whose first
jobs find the problem. tests/test_bad_inputs.py has the cases that the stage functions alone can show
(malformed dataset files, foreign checkpoints and tables handed to a stage).
"""

import hashlib
import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from fixtures import copy_workflow, write_fake_cifar10

ROOT = Path(__file__).resolve().parents[1]
SMOKE = yaml.safe_load((ROOT / "configs/smoke.yaml").read_text())
# The smoke config on one parent and one spawn step: every stage, 1 + 3 x 2 members.
CLI = {**SMOKE, "experiment": "cli", "ensemble": {"parents": 1, "children": 2}, "spawn_steps": [8],
       "conditions": ["no-coupling", "coupled-to-t-reset", "reinit-high"]}
EXP = "results/cli"


def snakemake(workdir, config: dict | None = None, name="run.yaml", *args):
    if config is not None:
        (workdir / "configs" / name).write_text(yaml.safe_dump(config))
    return subprocess.run(["snakemake", "--cores", "1", *args, "--configfile", f"configs/{name}"], cwd=workdir,
                          capture_output=True, text=True, timeout=600)


def snapshot(workdir) -> dict:
    results = workdir / "results"
    return {str(p.relative_to(workdir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(results.rglob("*")) if p.is_file() and not p.name.endswith(".resume.pt")}


def one_line(result, text: str) -> str:
    """The single line of the run's output holding `text`, after a non-zero exit."""
    assert result.returncode != 0, result.stdout[-2000:]
    output = result.stdout + result.stderr
    lines = {line.strip() for line in output.splitlines() if text in line}
    assert len(lines) == 1, (text, output[-3000:])
    return lines.pop()


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("cli")
    copy_workflow(workdir)
    result = snakemake(workdir, CLI, "cli.yaml")
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


# --- configs refused before any job -------------------------------------------------------------------

def changed(path: str, value):
    config = yaml.safe_load(yaml.safe_dump(CLI))
    *parents, last = path.split(".")
    node = config
    for key in parents:
        node = node.setdefault(key, {})
    if value is None:
        del node[last]
    else:
        node[last] = value
    return config


CONFIG_CASES = [
    ("epochs", 3, "epochs"),                                # unknown key
    ("training.epochs", 40, "training.epochs"),             # unknown nested key
    ("training.lr", "fast", "training.lr"),                 # wrong type
    ("training.batch_size", 0, "training.batch_size"),      # zero size
    ("ensemble.parents", -1, "ensemble.parents"),           # negative size
    ("spawn_steps", [0, 24], "spawn_steps"),                # spawn step at the end of training
    ("spawn_steps", [8, 8], "spawn_steps"),                 # duplicate spawn steps
    ("data.name", "imagenet", "data.name"),                 # unknown dataset
    ("model.name", "resnet18", "model.name"),               # unknown model
    ("conditions", ["coupled-to-t", "decoupled"], "conditions"),  # unknown condition
    ("reinit.percents", [120], "reinit.percents"),          # percent outside 0-100
    ("threads", 1000, "threads"),                           # more threads than cores
    ("data.n_train", 16, "data.n_train"),                   # fewer examples than one batch
    ("experiment", ".", "experiment"),                      # would write into results/ itself
    ("experiment", "..", "experiment"),                     # ... or into the repository
    ("experiment", "a/b", "experiment"),
    ("experiment", "x" * 65, "experiment"),
    ("model.name", "resnet20", "model.name"),               # an image model on MNIST-1D signals
    ("data", {"name": "digits"}, "model.name"),             # the signal model on images
    ("model.name", "vit", "model.name"),
    ("training.batch_size", 5000, "data.n_train"),          # a batch larger than n_train
    ("data", {"name": "mnist1d", "n_train": None, "augment": False}, "training.batch_size"),  # with the 5000 below
    ("cuda", {"graphs": True, "compile": True}, "cuda.graphs"),
    ("job_shape", "pairs", "job_shape"),
    ("device", "tpu", "device"),
    ("reinit.steps", [30], "reinit.steps"),                 # past training.steps, and reinit runs
    ("training", None, "training"),                         # a missing section
    ("training.schedule", "linear", "training.schedule"),
    ("training.warmup_steps", 24, "training.warmup_steps"),
    ("training.milestones", [30], "training.milestones"),
    ("spawn_steps", [-1], "spawn_steps"),
    ("reinit.percents", [0], "reinit.percents"),
    ("metrics.bootstrap", 0, "metrics.bootstrap"),
    ("barrier.points", 1, "barrier.points"),
    ("checkpoint.every_seconds", -5, "checkpoint.every_seconds"),
    ("data", {"name": "cifar10"}, "data.root"),             # a dataset that needs its folder
    ("data.n_train", 5000, "data.n_train"),                 # more examples than MNIST-1D has (4,000)
]


def _config_case(workdir, i, path, value):
    config = changed(path, value)
    if path == "data" and value.get("n_train", 1) is None:
        config["training"]["batch_size"] = 5000
    return snakemake(workdir, config, f"bad{i}.yaml")


def test_configs_are_refused_before_any_job(finished):
    before = snapshot(finished)
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda a: _config_case(finished, *a),
                                [(i, path, value) for i, (path, value, _) in enumerate(CONFIG_CASES)]))
    for (path, value, key), result in zip(CONFIG_CASES, results):
        line = one_line(result, "Error in config:")
        assert line.startswith(f"Error in config: {key}"), (path, value, line)
    assert snapshot(finished) == before
    assert not (finished / "results/x").exists() and not (finished / "results/data.pt").exists()


# --- a finished experiment with one file broken ----------------------------------------------------------

def keep_mtime(path: Path, write):
    """Change a file's bytes but not its modification time: the file looks as old as before, so only the
    job made to run reads it."""
    st = path.stat()
    write(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def truncate(path: Path):
    keep_mtime(path, lambda p: p.write_bytes(p.read_bytes()[:300]))


def edit_state(change):
    def edit(path: Path):
        state = torch.load(path, weights_only=True)
        change(state)
        keep_mtime(path, lambda p: torch.save(state, p))
    return edit


def edit_table(change):
    def edit(path: Path):
        table = pq.read_table(path)
        keep_mtime(path, lambda p: pq.write_table(change(table), p))
    return edit


def nan_at(column, example):
    def change(table):
        values = table.column(column).to_numpy().copy()
        values[example] = np.nan
        return table.set_column(table.column_names.index(column), column, pa.array(values))
    return change


RESET = f"{EXP}/predictions/coupled-to-t-reset/t8/p0/c0.parquet"
RESET_JOB = [f"{EXP}/{kind}/coupled-to-t-reset/t8/p0/c{c}{ext}"
             for kind, ext in (("predictions", ".parquet"), ("trajectories", ".parquet"), ("children", "/final.pt"))
             for c in (0, 1)]
NOCOUPLING_JOB = [p.replace("coupled-to-t-reset/t8", "no-coupling/t0") for p in RESET_JOB]
METRICS = [f"{EXP}/metrics/{name}" for name in
           ("members.parquet", "ensembles.parquet", "pairs.parquet", "forgetting.parquet", "summary.csv")]

# the outputs of the job that concatenates the barrier jobs' tables
BARRIER_TABLES = [f"{EXP}/metrics/{name}.parquet" for name in ("barriers", "weights", "onset")]


def damaged(path: str) -> str:
    """The line of a member file or parent state cut short: the run stops before any job."""
    return f"Error: {path} is damaged (cut short or overwritten); delete it and run the same command again, which " \
           f"remakes it: rm {path}"


# (file broken, how, output(s) deleted to make its reader run, that job's outputs, text of the one line)
JOB_CASES = [
    (f"{EXP}/parents/p0/step8.pt", truncate, RESET, RESET_JOB, damaged(f"{EXP}/parents/p0/step8.pt")),
    (f"{EXP}/parents/p0/step8.pt", edit_state(lambda s: s.update(model_name="resnet20")), RESET, RESET_JOB,
     "holds model 'resnet20'"),
    (f"{EXP}/parents/p0/step8.pt", edit_state(lambda s: s["info"].update(config_hash="other")), RESET, RESET_JOB,
     "of config 'other'"),
    (f"{EXP}/parents/p0/step8.pt", edit_state(lambda s: s.update(step=4)), RESET, RESET_JOB, "at step 4 of config"),
    (f"{EXP}/data.pt", truncate, NOCOUPLING_JOB[0], NOCOUPLING_JOB,
     f"ArtifactError: {EXP}/data.pt: not a readable prepared dataset"),
    (f"{EXP}/predictions/no-coupling/t0/p0/c1.parquet", truncate, METRICS[-1], METRICS,
     damaged(f"{EXP}/predictions/no-coupling/t0/p0/c1.parquet")),
    (f"{EXP}/predictions/no-coupling/t0/p0/c1.parquet", edit_table(nan_at("logit_5", 7)), METRICS[-1], METRICS,
     "non-finite logit(s), the first nan at example_id 7, column logit_5"),
    (f"{EXP}/predictions/no-coupling/t0/p0/c1.parquet", edit_table(lambda t: t.drop_columns(["logit_3"])),
     METRICS[-1], METRICS, "missing column(s) logit_3"),
    (f"{EXP}/trajectories/no-coupling/t0/p0/c1.parquet", truncate, METRICS[-1], METRICS,
     damaged(f"{EXP}/trajectories/no-coupling/t0/p0/c1.parquet")),
    # A barrier table is no target of `all`: without its concatenation Snakemake would not remake it.
    (f"{EXP}/children/coupled-to-t-reset/t8/p0/c1/final.pt", truncate,
     [f"{EXP}/barriers/coupled-to-t-reset/t8/p0.parquet", f"{EXP}/metrics/barriers.parquet"],
     [f"{EXP}/barriers/coupled-to-t-reset/t8/p0.parquet", f"{EXP}/barriers/coupled-to-t-reset/t8/p0.weights.parquet",
      *BARRIER_TABLES],
     damaged(f"{EXP}/children/coupled-to-t-reset/t8/p0/c1/final.pt")),
    (f"{EXP}/metrics/ensembles.parquet", truncate, f"{EXP}/figures/fig1b_accuracy_gain_reset.png",
     [f"{EXP}/figures/fig1b_accuracy_gain_reset.png", f"{EXP}/figures/fig1b_accuracy_gain_reset.pdf"],
     f"ArtifactError: {EXP}/metrics/ensembles.parquet: not a readable"),
    (f"{EXP}/barriers/reinit-high-25/t8/p0.parquet", truncate, [f"{EXP}/metrics/barriers.parquet"],
     BARRIER_TABLES, f"ArtifactError: {EXP}/barriers/reinit-high-25/t8/p0.parquet: not a readable"),
]


def _job_case(finished, case_dir, broken, how, trigger, job_outputs):
    shutil.copytree(finished, case_dir, symlinks=True)
    how(case_dir / broken)
    before = snapshot(case_dir)
    for path in [trigger] if isinstance(trigger, str) else trigger:
        (case_dir / path).unlink()
    return before, snakemake(case_dir, None, "cli.yaml")


def test_a_broken_file_stops_the_job_that_reads_it_and_nothing_else_changes(finished, tmp_path):
    with ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(lambda a: _job_case(finished, tmp_path / f"case{a[0]}", *a[1][:4]), enumerate(JOB_CASES)))
    for i, ((broken, _, trigger, job_outputs, text), (before, result)) in enumerate(zip(JOB_CASES, runs)):
        assert result.returncode != 0, (i, broken, trigger, result.stderr[-1500:])
        one_line(result, text)
        after = snapshot(tmp_path / f"case{i}")
        deleted = set(before) - set(after)
        triggers = {trigger} if isinstance(trigger, str) else set(trigger)
        assert deleted <= set(job_outputs) | triggers, (i, sorted(deleted))  # the failed job's own outputs
        assert all(after[p] == h for p, h in before.items() if p in after), i  # everything else as it was
        assert set(after) <= set(before), (i, sorted(set(after) - set(before)))


# --- fresh experiments whose first jobs find the problem ----------------------------------------------------

def fresh(name, **changes):
    config = yaml.safe_load(yaml.safe_dump(CLI))
    config["experiment"] = name
    for path, value in changes.items():
        *parents, last = path.split("__")
        node = config
        for key in parents:
            node = node[key]
        node[last] = value
    return config


FRESH_CASES = [
    (fresh("gpu", device="cuda"), "ConfigError: device: cuda, but this job sees no CUDA device"),
    # on_divergence: stop, the whole-run stop (tests/test_divergence.py has the default, skip)
    (fresh("diverges", training__lr=1000.0, on_divergence="stop"), "the training loss became non-finite by step"),
    (fresh("fakecifar", data={"name": "cifar10", "root": "fake-cifar"}, model={"name": "resnet8"}),
     "DataError: "),  # files in CIFAR-10's layout whose checksums are not CIFAR-10's
    (fresh("nocifar", data={"name": "cifar10", "root": "no/such/folder"}, model={"name": "resnet8"}),
     "DataError: no/such/folder"),
    (fresh("notiny", data={"name": "tinyimagenet", "root": "no/such/folder"}, model={"name": "resnet8"}),
     "DataError: no/such/folder"),
]


@pytest.mark.skipif(torch.cuda.is_available(), reason="the device case needs a machine without a GPU")
def test_fresh_experiments_stop_at_their_first_bad_job(finished):
    write_fake_cifar10(finished / "fake-cifar", n_train=20, n_test=10)
    before = snapshot(finished)
    # One after another: these runs take Snakemake's lock and exit within seconds, and Snakemake reads
    # the lock folder without guarding against another instance deleting its lock file meanwhile
    # (FileNotFoundError on .snakemake/locks/N.input.lock when one exits as the next starts).
    results = [snakemake(finished, config, f"fresh{i}.yaml") for i, (config, _) in enumerate(FRESH_CASES)]
    for (config, text), result in zip(FRESH_CASES, results):
        line = one_line(result, text)
        if config["experiment"] == "diverges":
            assert line.startswith("TrainingDiverged: ") and "(learning rate " in line
            # whichever job diverges first names its member (condition, t, parent, child) or its parent
            assert re.search(r"TrainingDiverged: (\S+ t=\d+ parent \d+ child \d+|parent \d+): the training loss", line), line
    assert {p: h for p, h in snapshot(finished).items() if p.startswith(EXP + "/")} == before
