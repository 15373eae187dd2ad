"""Static checks: `snakemake --lint`, `snakefmt --check` on the workflow files, and CI running the README's test command."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from fixtures import copy_workflow

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("configfile", [None, "configs/smoke.yaml"])
def test_snakemake_lint_finds_nothing(tmp_path, configfile):
    copy_workflow(tmp_path)  # --lint leaves a .snakemake folder where it runs
    args = ["snakemake", "--lint"] + (["--configfile", configfile] if configfile else [])
    result = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_the_snakemake_files_are_formatted_by_snakefmt():
    snakefmt = shutil.which("snakefmt") or pytest.fail("snakefmt not installed (pip install -e '.[test]')")
    files = [ROOT / "Snakefile", *sorted((ROOT / "workflow").rglob("*.smk"))]
    result = subprocess.run([snakefmt, "--check", "--diff", *map(str, files)], capture_output=True, text=True)
    assert result.returncode == 0, ("snakefmt would reformat (run `snakefmt Snakefile workflow`):\n"
                                    + result.stdout[-4000:] + result.stderr[-2000:])


def test_ci_runs_exactly_the_readmes_test_command():
    command = re.search(r"^Run the tests:\n\n {4}(.+)$", (ROOT / "README.md").read_text(), re.M).group(1)
    lines = [line for line in (ROOT / ".ci/run").read_text().splitlines() if line and not line.startswith("#")]
    assert lines[-1] == command, f".ci/run ends with {lines[-1]!r}, the README says {command!r}"
