"""The smoke config through a real one-node SLURM (Debian's slurmctld, slurmd and munge) and the
SLURM profile; tests/slurm/run_slurm_test.sh does the work and bounds every wait."""

import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent / "slurm/run_slurm_test.sh"


def test_smoke_config_through_a_real_slurm():
    result = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=1200)
    output = result.stdout + result.stderr
    if result.returncode == 0 and "SKIPPED" in output:
        pytest.skip(next(line for line in output.splitlines() if "SKIPPED" in line))
    assert result.returncode == 0, output[-4000:]
