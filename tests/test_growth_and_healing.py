"""The workflow's promises on a finished experiment, through the `snakemake` command:

- Growth equivalence: adding a parent, a child, a spawn step, a condition and a re-initialisation
  percent to a finished experiment and running the same command gives exactly the files of a fresh
  run of the grown config, byte for byte, running only the training jobs whose members changed,
  under each `job_shape`.
- Healing: a member file or parent state deleted is remade by the plain command, identical to the
  original; one cut short or overwritten stops the run before any job with one line naming it and
  the command that remakes it; forcing a stage while a member file is missing stops before the
  stage's finished outputs are deleted.

Every run leaves the figures out (`--omit-from figure`: twelve jobs, a minute on 2 cores, which read
only the tables compared here); the `all` rule, which asks for the missing files, still runs.
"""

import hashlib
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from fixtures import copy_workflow
from test_cli_failures import one_line
from test_package import TINY

from coupledsgd.core.config import validate
from coupledsgd.core.grid import parent_states, training_jobs

BASE = {**TINY, "experiment": "grow", "ensemble": {"parents": 1, "children": 1},
        "conditions": ["coupled-to-t", "reinit-low"], "spawn_steps": [4], "reinit": {"percents": [25], "steps": [4]}}
# one more parent, child, spawn step, condition and re-initialisation percent
GROWN = {**BASE, "ensemble": {"parents": 2, "children": 2}, "conditions": ["no-coupling", "coupled-to-t", "reinit-low"],
         "spawn_steps": [2, 4], "reinit": {"percents": [25, 50], "steps": [4]}}
EXP = "results/grow"


def shaped(config: dict, shape: str) -> dict:
    """`config` under `shape`. The instability analysis's barrier jobs grow with the grid under the
    default shape (condition) only: they are the same per-(condition, t, parent) jobs as figure 3's,
    which every shape runs, and leaving them out of the other two keeps the suite's time."""
    off = {} if shape == "condition" else {"barrier": {**config.get("barrier", {}), "spawn_steps": "none"}}
    return {**config, "job_shape": shape, **off}


def snakemake(workdir: Path, config: dict, *args: str):
    (workdir / "configs/run.yaml").write_text(yaml.safe_dump(config))
    return subprocess.run(["snakemake", "--cores", "1", "--omit-from", "figure", *args, "--configfile",
                           "configs/run.yaml"], cwd=workdir, capture_output=True, text=True, timeout=600)


def results(workdir: Path) -> dict:
    """sha256 of every result file (benchmark files hold timings; in-job checkpoints are caches)."""
    return {str(p.relative_to(workdir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((workdir / EXP).rglob("*"))
            if p.is_file() and "benchmarks" not in p.parts and not p.name.endswith(".resume.pt")}


def job_counts(output: str) -> dict:
    """The run's first "Job stats" table: jobs by rule."""
    table = output.split("Job stats:", 1)[1].split("total", 1)[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def changed_jobs(shape: str) -> tuple[int, int]:
    """(training jobs, parent states) of the grown grid that the finished one lacks."""
    def grid(config):
        config = validate(shaped(config, shape))
        return ({frozenset(m.key for m in job) for job in training_jobs(config)}, set(parent_states(config)))

    (jobs, parents), (grown_jobs, grown_parents) = grid(BASE), grid(GROWN)
    return len(grown_jobs - jobs), len(grown_parents - parents)


@pytest.fixture(scope="module", params=["member", "children", "condition"])
def grown(request, tmp_path_factory):
    """(workdir of the grown experiment, the files of a fresh run of the grown config, growth run)."""
    shape = request.param
    base, fresh = (copy_workflow(tmp_path_factory.mktemp(f"{name}-{shape}")) for name in ("grown", "fresh"))
    with ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(lambda args: snakemake(*args), [(base, shaped(BASE, shape)),
                                                               (fresh, shaped(GROWN, shape))]))
    for run in runs:
        assert run.returncode == 0, run.stderr[-3000:]
    growth = snakemake(base, shaped(GROWN, shape))
    assert growth.returncode == 0, growth.stderr[-3000:]
    return shape, base, results(fresh), growth


def test_a_grown_experiment_is_a_fresh_run_of_the_grown_config(grown):
    shape, workdir, fresh, growth = grown
    assert results(workdir) == fresh
    jobs, parents = changed_jobs(shape)
    counts = job_counts(growth.stdout + growth.stderr)
    assert counts.get("train_members", 0) == jobs, counts
    assert counts.get("parent_state", 0) == parents, counts
    again = snakemake(workdir, shaped(GROWN, shape), "-n")
    assert "Nothing to be done" in again.stdout + again.stderr


def _files(shape: str) -> list[str]:
    """A file of each kind that is not its training job's first (p1/c1 of the spawn point), and a
    parent state."""
    member = "coupled-to-t/t4/p1/c1"
    return [f"{EXP}/predictions/{member}.parquet", f"{EXP}/trajectories/{member}.parquet",
            f"{EXP}/children/{member}/final.pt", f"{EXP}/parents/p1/step2.pt"]


def test_deleted_files_are_remade_identical_by_the_plain_command(grown):
    shape, workdir, fresh, _ = grown
    if shape != "condition":
        pytest.skip("one job shape suffices: the grown fixture of the others is not damaged")
    before = results(workdir)
    for name in _files(shape):
        (workdir / name).unlink()
    healed = snakemake(workdir, shaped(GROWN, shape))
    assert healed.returncode == 0, healed.stderr[-3000:]
    assert results(workdir) == before
    again = snakemake(workdir, shaped(GROWN, shape), "-n")
    assert "Nothing to be done" in again.stdout + again.stderr


def test_damaged_files_stop_the_run_before_any_job(grown):
    shape, workdir, fresh, _ = grown
    if shape != "condition":
        pytest.skip("one job shape suffices")
    before = results(workdir)
    for name, damage in zip(_files(shape), [lambda b: b[: len(b) // 2], lambda b: b"garbage", lambda b: b[:-10],
                                            lambda b: b[: len(b) // 3]]):
        path = workdir / name
        original = path.read_bytes()
        path.write_bytes(damage(original))
        stopped = snakemake(workdir, shaped(GROWN, shape))
        assert one_line(stopped, "Error:") == (f"Error: {name} is damaged (cut short or overwritten); delete it and "
                                               f"run the same command again, which remakes it: rm {name}"), name
        assert "rule train_members" not in stopped.stdout + stopped.stderr
        path.write_bytes(original)
    assert results(workdir) == before


def test_forcing_a_stage_while_a_member_file_is_missing_keeps_its_outputs(grown):
    shape, workdir, fresh, _ = grown
    if shape != "condition":
        pytest.skip("one job shape suffices")
    before = results(workdir)
    name = _files(shape)[0]
    (workdir / name).unlink()
    forced = snakemake(workdir, shaped(GROWN, shape), f"{EXP}/metrics/members.parquet", "-R", "metrics")
    assert one_line(forced, "Error:") == (
        f"Error: {name} is missing; run the plain command first, which remakes it (snakemake --cores all, "
        "with the same --configfile and --config), then force the stage")
    assert results(workdir) == {k: v for k, v in before.items() if k != name}
    healed = snakemake(workdir, shaped(GROWN, shape))
    assert healed.returncode == 0, healed.stderr[-3000:]
    assert results(workdir) == before
