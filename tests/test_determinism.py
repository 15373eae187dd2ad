"""Who sets the cuBLAS workspace that strict determinism needs (jobs.runtime.cublas_workspace and setup):
unset, the job sets `:4096:8`; a deterministic value from the environment is kept; a conflicting one
stops a parent-state job before it trains, with one line, and is kept with a warning by the others.
The decision and `setup` run on the CPU (CUDA faked as present: nothing touches a device); the cuBLAS
products themselves need a GPU (marked cuda)."""

import os
import subprocess
import sys

import pytest
import torch

from coupledsgd.core.errors import ConfigError
from coupledsgd.jobs import runtime
from coupledsgd.jobs.runtime import CUBLAS_KEY, cublas_workspace


def test_unset_or_empty_gets_the_deterministic_workspace():
    for environ in ({}, {CUBLAS_KEY: ""}):
        assert cublas_workspace(environ, strict=True) == (":4096:8", None)
        assert cublas_workspace(environ, strict=False) == (":4096:8", None)


def test_a_deterministic_value_from_the_environment_is_kept():
    for value in (":4096:8", ":16:8"):
        assert cublas_workspace({CUBLAS_KEY: value}, strict=True) == (value, None)
        assert cublas_workspace({CUBLAS_KEY: value}, strict=False) == (value, None)


def test_a_conflicting_value_stops_a_strict_job_and_is_kept_with_a_warning_by_the_others():
    with pytest.raises(ConfigError) as e:
        cublas_workspace({CUBLAS_KEY: ":0:0"}, strict=True)
    assert str(e.value).startswith("CUBLAS_WORKSPACE_CONFIG=':0:0' in the environment: parent-state jobs run "
                                   "strictly deterministic kernels, which need ':4096:8' or ':16:8'")
    assert "\n" not in str(e.value)
    value, warning = cublas_workspace({CUBLAS_KEY: ":0:0"}, strict=False)
    assert value == ":0:0" and warning.startswith("WARNING: CUBLAS_WORKSPACE_CONFIG=':0:0' from the environment")


@pytest.fixture
def fake_cuda(monkeypatch):
    """torch sees one CUDA device; torch's deterministic settings are restored afterwards."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.benchmark, torch.get_num_threads())
    yield
    torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
    torch.backends.cudnn.benchmark = saved[2]
    torch.set_num_threads(saved[3])


def test_setup_sets_the_workspace_for_a_strict_job_whatever_was_set_before(fake_cuda, monkeypatch):
    monkeypatch.delenv(CUBLAS_KEY, raising=False)
    assert runtime.setup(1, "cuda", 1, strict=True) == torch.device("cuda", 0)
    assert os.environ[CUBLAS_KEY] == ":4096:8"
    assert torch.are_deterministic_algorithms_enabled() and not torch.is_deterministic_algorithms_warn_only_enabled()


def test_setup_stops_a_strict_job_before_it_trains_on_a_conflicting_value(fake_cuda, monkeypatch):
    monkeypatch.setenv(CUBLAS_KEY, ":0:0")
    lines = []
    with pytest.raises(ConfigError, match="CUBLAS_WORKSPACE_CONFIG=':0:0'"):
        runtime.setup(1, "cuda", 1, lines.append, strict=True)
    monkeypatch.setenv(CUBLAS_KEY, ":0:0")
    runtime.setup(1, "cuda", 1, lines.append)
    assert os.environ[CUBLAS_KEY] == ":0:0" and len(lines) == 1 and "is kept" in lines[0]


PROBE = """
import torch
from coupledsgd.jobs.runtime import setup
device = setup(1, "cuda", 1, strict=True)
a = torch.randn(256, 256, device=device)
print(float((a @ a).sum()))
"""


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("environment", [None, ":16:8", ":0:0"])
def test_a_strict_job_runs_cublas_or_stops_with_one_line(environment):
    env = {k: v for k, v in os.environ.items() if k != CUBLAS_KEY}
    if environment is not None:
        env[CUBLAS_KEY] = environment
    result = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=300)
    if environment == ":0:0":
        assert result.returncode != 0 and "ConfigError: CUBLAS_WORKSPACE_CONFIG=':0:0'" in result.stderr
    else:
        assert result.returncode == 0, result.stderr[-2000:]
