"""The project's own checks: ruff (lint and format) and mypy on src/, the version that pyproject.toml,
the package and CHANGELOG.md agree on, lower bounds on every dependency, the lock file of the tested
environment, and the pre-commit configuration that runs these checks before a commit."""

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _tool(name: str) -> str:
    return shutil.which(name) or pytest.fail(f"{name} not installed (pip install -e '.[test]')")


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True)


def test_ruff_finds_nothing_in_src():
    result = _run(_tool("ruff"), "check", "--no-cache", "src")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_src_is_formatted_by_ruff():
    result = _run(_tool("ruff"), "format", "--check", "--no-cache", "src")
    assert result.returncode == 0, "ruff would reformat (run `ruff format src`):\n" + result.stdout[-4000:]


def test_mypy_finds_nothing_and_core_and_analysis_are_fully_typed():
    overrides = PYPROJECT["tool"]["mypy"]["overrides"]
    strict = [o for o in overrides if o.get("disallow_untyped_defs")]
    assert any({"coupledsgd.core.*", "coupledsgd.analysis.*"} <= set(o["module"]) for o in strict)
    result = _run(sys.executable, "-m", "mypy")  # files and settings from pyproject.toml
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


def _changelog_versions() -> list[str]:
    return re.findall(r"^## \[?(\d+\.\d+\.\d+)\]?", (ROOT / "CHANGELOG.md").read_text(), re.M)


def test_the_version_follows_the_changelog():
    import coupledsgd

    versions = _changelog_versions()
    assert versions, "CHANGELOG.md has no release heading (## X.Y.Z)"
    assert versions == sorted(versions, key=Version, reverse=True), "CHANGELOG.md: newest release first"
    assert PYPROJECT["project"]["version"] == versions[0] == coupledsgd.__version__


def _requirements() -> list[Requirement]:
    project = PYPROJECT["project"]
    extras = [r for group in project["optional-dependencies"].values() for r in group]
    return [Requirement(r) for r in project["dependencies"] + extras]


def test_every_dependency_has_a_lower_bound():
    unbounded = [str(r) for r in _requirements() if not any(s.operator in (">=", "==", "~=") for s in r.specifier)]
    assert not unbounded, f"pyproject.toml: no lower bound on {', '.join(unbounded)}"


def _locked() -> dict[str, str]:
    lines = (ROOT / "requirements-lock.txt").read_text().splitlines()
    pins = [line.split("==") for line in lines if line and not line.startswith("#")]
    assert all(len(p) == 2 for p in pins), "requirements-lock.txt: every line pins one version (name==version)"
    return {re.sub(r"[-_.]+", "-", name).lower(): version for name, version in pins}


def test_the_lock_file_pins_every_dependency_within_its_bounds():
    locked = _locked()
    assert "coupledsgd" not in locked, "the lock file is the environment, not the project"
    for r in _requirements():
        name = re.sub(r"[-_.]+", "-", r.name).lower()
        assert name in locked, f"requirements-lock.txt: {r.name} not pinned"
        assert r.specifier.contains(locked[name], prereleases=True), f"{r.name}=={locked[name]} outside {r}"
    assert "pip install -r requirements-lock.txt" in (ROOT / "requirements-lock.txt").read_text()


def test_pre_commit_runs_ruff_mypy_snakefmt_and_the_fast_tests():
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    hooks = {h["id"]: h for repo in config["repos"] for h in repo["hooks"]}
    assert {"ruff", "ruff-format", "mypy", "snakefmt", "fast-tests"} <= set(hooks)
    tests = [word for word in hooks["fast-tests"]["entry"].split() if word.startswith("tests/")]
    assert tests and all((ROOT / t).is_file() for t in tests)
    result = _run(_tool("pre-commit"), "validate-config", ".pre-commit-config.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
