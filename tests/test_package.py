"""The package as a user installs it: a wheel in a fresh virtual environment, with no checkout and no
editable install on its path, runs the `coupledsgd` command and the workflow.

The environment is made without the system's site-packages and given back the runtime dependencies
(pyproject.toml's `dependencies` and what they require, no extras) as a plain path (a .pth line) to a
folder of links to their files: the environment `pip install .` makes, not the test extras' (pytest,
which needs pygments, once hid that `snakemake --report` needs it). The .pth files of that folder are
not processed, and an editable install of the project is not in it, so nothing shadows the wheel.
"""

import importlib.metadata as metadata
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

import pytest
import yaml
from fixtures import copy_workflow

ROOT = Path(__file__).resolve().parents[1]
SMOKE = yaml.safe_load((ROOT / "configs/smoke.yaml").read_text())
# The fewest jobs: one parent with one child (a degenerate grid: no pairs), one condition, one spawn step.
TINY = {**SMOKE, "experiment": "tiny", "data": {**SMOKE["data"], "n_train": 64},
        "training": {**SMOKE["training"], "steps": 8, "batch_size": 16}, "ensemble": {"parents": 1, "children": 1},
        "spawn_steps": [4], "conditions": ["coupled-to-t"]}


def _build_wheel(tmp: Path) -> Path:
    # From a copy: pip builds in the source tree (build/, *.egg-info), which must stay untouched.
    source = tmp / "source"
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                    "-w", str(tmp / "dist"), str(source)], check=True, capture_output=True)
    (wheel,) = (tmp / "dist").glob("coupledsgd-*.whl")
    return wheel


def _name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def runtime_distributions() -> set[str]:
    """The distributions the project's runtime dependencies bring in, transitively (no extras)."""
    wanted = [Requirement(r) for r in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]]
    found: set[str] = set()
    while wanted:
        req = wanted.pop()
        if _name(req.name) in found or (req.marker and not req.marker.evaluate({"extra": ""})):
            continue
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            continue  # not installed: pip would not have installed it either on this platform
        found.add(_name(req.name))
        wanted += [Requirement(r) for r in dist.requires or []]
    return found


def _runtime_packages(folder: Path) -> Path:
    """`folder` holding links to the files of the runtime distributions only (their modules and
    metadata, so that Snakemake's plugin discovery sees only those too)."""
    folder.mkdir()
    for name in runtime_distributions():
        dist = metadata.distribution(name)
        for top in {Path(str(f)).parts[0] for f in dist.files or []} - {".."}:
            source, link = Path(dist.locate_file(top)), folder / top
            if source.exists() and not link.exists():
                link.symlink_to(source)
    return folder


def _environment(tmp: Path, wheel: Path) -> dict:
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    packages = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                   check=True, capture_output=True, text=True).stdout.strip())
    (packages / "dependencies.pth").write_text(f"{_runtime_packages(tmp / 'runtime')}\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                    "--quiet", str(wheel)], check=True, capture_output=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    return {**env, "PATH": f"{venv / 'bin'}{os.pathsep}{env['PATH']}", "VIRTUAL_ENV": str(venv)}


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("package")
    env = _environment(tmp, _build_wheel(tmp))
    outside = tmp / "elsewhere"
    outside.mkdir()
    (outside / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    return env, outside


def run(command, env, cwd):
    return subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)


def test_the_installed_package_is_the_wheel_with_its_schema(installed):
    env, outside = installed
    out = run(["python", "-c", "import coupledsgd.core.config as c; print(c.__file__); print(c.SCHEMA.is_file())"],
              env, outside)
    where, schema = out.stdout.split()
    assert Path(where).is_relative_to(Path(env["VIRTUAL_ENV"])), where
    assert schema == "True"


def test_the_command_runs_from_outside_the_checkout(installed):
    env, outside = installed
    status = run(["coupledsgd", "status", "--configfile", "tiny.yaml"], env, outside)
    assert status.returncode == 0, status.stderr
    assert "of 1 members" in status.stdout
    cost = run(["coupledsgd", "cost", "tiny.yaml"], env, outside)
    assert cost.returncode == 0, cost.stderr
    assert "trainings: 2 (1 members + 1 parent states)" in cost.stdout


def test_the_workflow_runs_on_the_installed_package(installed, tmp_path):
    env, outside = installed
    workdir = copy_workflow(tmp_path / "workflow")  # the workflow's files only: no src/ beside them
    (workdir / "configs/tiny.yaml").write_text(yaml.safe_dump(TINY))
    # `python -m snakemake`: the environment's interpreter, which the jobs' scripts run with too. Every
    # kind of job up to the metric tables, and one figure: the twelve figure jobs would add a minute.
    targets = ["results/tiny/metrics/members.parquet", "results/tiny/figures/fig1e_kl_same_parent.png"]
    out = run(["python", "-m", "snakemake", *targets, "--cores", "2", "--configfile", "configs/tiny.yaml"],
              env, workdir)
    assert out.returncode == 0, out.stderr[-3000:]
    assert all((workdir / target).is_file() for target in targets)
    assert len(list((workdir / "results/tiny/predictions").rglob("*.parquet"))) == 1
    # One child per parent: the same-parent figure says the grid has no pairs (not a missing condition).
    log = (workdir / "logs/tiny/figures/fig1e_kl_same_parent.log").read_text()
    assert "NO DATA (no data: ensembles of one child have no pairs of children\n(ensemble.children: 1))" in log
    # The README's report command, in the environment `pip install .` makes (pygments is the report's).
    # (of the files made: the report of a whole run is the same command without targets)
    report = run(["python", "-m", "snakemake", *targets, "--configfile", "configs/tiny.yaml", "--report",
                  "results/tiny/report.html"], env, workdir)
    assert report.returncode == 0, report.stderr[-3000:]
    assert "fig1e_kl_same_parent" in (workdir / "results/tiny/report.html").read_text()


def test_the_environment_holds_the_runtime_dependencies_only(installed):
    env, outside = installed
    out = run(["python", "-c", "import pygments, snakemake, torch, seaborn\ntry:\n import pytest\nexcept ImportError:"
               "\n print('no pytest')"], env, outside)
    assert out.returncode == 0 and out.stdout.strip() == "no pytest", out.stderr
