"""`coupledsgd status` on a fabricated results tree: members done / running / left, time spent, ETA."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from coupledsgd import status
from coupledsgd.core.config import SCHEMA
from test_cost import bench_file, touch

ROOT = Path(__file__).resolve().parents[1]


def smoke():
    return status.load_config(ROOT / "configs/smoke.yaml", SCHEMA)


def fabricate(tmp_path):
    results, logs = tmp_path / "results", tmp_path / "logs"
    exp = results / "smoke"
    for p in (0, 1):
        for c in (0, 1):
            touch(exp / f"predictions/no-coupling/t0/p{p}/c{c}.parquet")
    bench_file(exp / "benchmarks/train_members/no-coupling/t0/members.tsv", 10)   # 4 x 24 member-steps
    bench_file(exp / "benchmarks/parent_state/p0/step8.tsv", 5)
    touch(logs / "smoke/children/coupled-order/t0/members.log")                  # written just now
    old = time.time() - 3600
    for path in (logs / "smoke/children/coupled-to-t/t8/members.log",
                 exp / "children/coupled-to-t/t8/p0/c0/final.resume.pt"):      # stopped an hour ago
        touch(path)
        os.utime(path, (old, old))
    return results, logs


def test_states_per_condition_and_t(tmp_path):
    results, logs = fabricate(tmp_path)
    states = status.member_states(smoke(), results, logs, active=600)
    by = lambda cond, t: sorted(s for m, s in states.items() if m.condition == cond and m.t == t)
    assert by("no-coupling", 0) == ["done"] * 4
    assert by("coupled-order", 0) == ["running"] * 4
    assert by("coupled-to-t", 8) == ["left"] * 4
    assert len(states) == 32 and list(states.values()).count("left") == 24


def test_report_spent_and_eta(tmp_path):
    results, logs = fabricate(tmp_path)
    text = status.report(smoke(), results, logs)
    rows = {tuple(line.split()[:2]): line.split()[2:] for line in text.splitlines()[2:]}
    assert rows[("no-coupling", "0")] == ["4", "0", "0"]
    assert rows[("coupled-order", "0")] == ["0", "4", "0"]
    assert rows[("reinit-high-25", "8")] == ["0", "0", "4"]
    assert "all 4 4 24 of 32 members" in " ".join(text.split())
    assert "time spent: 15 s of job wall-clock time in 2 finished jobs" in text
    # 96 member-steps in 10 s: 9.6 per second; 736 - 96 = 640 left: 66.7 s
    assert "ETA: 1.1 min for one job at a time (640 member-steps left at a measured 9.6 member-steps/s" in text


def test_command_line_without_torch(tmp_path):
    results, logs = fabricate(tmp_path)
    code = ("import sys; from coupledsgd.status import cli; rc = cli(sys.argv[1:]); "
            "assert 'torch' not in sys.modules; sys.exit(rc)")
    out = subprocess.run([sys.executable, "-c", code, "status", "--configfile", str(ROOT / "configs/smoke.yaml"),
                          "--results", str(results), "--logs", str(logs), "--schema", str(SCHEMA)],
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert out.returncode == 0, out.stderr
    assert "of 32 members" in out.stdout


def test_help_says_what_each_command_does_with_an_example(capsys):
    assert status.cli(["--help"]) == 0
    out = capsys.readouterr().out
    assert "\n  status   where a run stands" in out and "\n  cost     what an experiment costs" in out
    assert "\n  coupledsgd status --configfile " in out and "\n  coupledsgd cost configs/" in out
    for command in ("status", "cost"):
        with pytest.raises(SystemExit) as exited:
            status.cli([command, "--help"])
        assert exited.value.code == 0
        out = capsys.readouterr().out
        assert out.startswith(f"usage: coupledsgd {command} ")
        assert "example" in out and f"\n    coupledsgd {command} " in out
    assert status.cli(["stats"]) == 2
    assert "unknown command 'stats'" in capsys.readouterr().err


def test_status_refuses_an_experiment_name_the_config_refuses(tmp_path, capsys):
    config = tmp_path / "spaced.yaml"
    config.write_text((ROOT / "configs/smoke.yaml").read_text().replace("experiment: smoke", "experiment: my exp"))
    assert status.cli(["status", "--configfile", str(config)]) == 1
    assert capsys.readouterr().err.strip() == (f"Error in config {config}: experiment: 'my exp' does not match "
                                               "'^[A-Za-z0-9._-]+$'")
