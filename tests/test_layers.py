"""The architecture holds: each package imports only the layers below it (docs/design.md, "Layers"),
and planning an experiment (`snakemake -n`) never imports torch."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures import copy_workflow

PACKAGE = Path(__file__).resolve().parents[1] / "src/coupledsgd"
# package -> what no module of it may import (anywhere in the module, lazily included)
FORBIDDEN = {
    "core": {"torch", "torchvision", "pandas", "coupledsgd.engine", "coupledsgd.analysis", "coupledsgd.jobs"},
    "analysis": {"torch", "torchvision", "coupledsgd.engine", "coupledsgd.jobs"},
    "engine": {"coupledsgd.analysis", "coupledsgd.jobs"},
    "jobs": set(),
}


def imports(path: Path, package: str) -> set[str]:
    """Absolute names of everything `path` imports (relative imports resolved)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = ["coupledsgd", package][: 3 - node.level] if package else ["coupledsgd"]
                base = ".".join(parts + ([base] if base else []))
            out |= {base} | {f"{base}.{alias.name}" for alias in node.names}
    return out


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_each_package_imports_only_the_layers_below_it(package):
    for path in sorted((PACKAGE / package).glob("*.py")):
        found = imports(path, package)
        bad = {name for name in found for f in FORBIDDEN[package] if name == f or name.startswith(f + ".")}
        assert not bad, f"{path.relative_to(PACKAGE)} imports {sorted(bad)}"


def test_planning_the_default_experiment_never_imports_torch(tmp_path):
    workdir = copy_workflow(tmp_path / "wf")
    poison = tmp_path / "poison"
    for name in ("torch", "torchvision"):
        (poison / name).mkdir(parents=True)
        (poison / name / "__init__.py").write_text(f"raise ImportError('{name} imported while planning')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(poison), *sys.path])}
    result = subprocess.run(["snakemake", "-n", "--cores", "1", "--quiet"], cwd=workdir, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "imported while planning" not in result.stderr


def test_the_analysis_jobs_never_import_torch():
    """The metrics, claims, barriers-table and figure jobs start without torch (3-4 s and ~600 MB each)."""
    code = "import sys, coupledsgd.jobs.analysis; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0
