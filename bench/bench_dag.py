"""Planning time (`snakemake -n` wall seconds and peak memory) against the number of members.

Series, each at about 1,000 / 5,000 / 20,000 members, growing the number of parents (so the members
of a job grow with the grid where jobs are per (condition, t)):
- default: config.yaml (MNIST-1D, cnn1d) with 20 children and 20 spawn steps (48 (condition, t) x 20
  children per parent), `job_shape: auto` (cnn1d: one job per (condition, t));
- cifar10: configs/cifar10-resnet20.yaml (28 (condition, t) x 5 children per parent) on `device: cuda`
  (`auto`: one job per (condition, t), as the paper grid runs on GPUs);
- cifar10-member: the same grid with one member per job (`auto` on the CPU), the most jobs.
A dry run reads no data (data.root is a dummy folder). Runs in a throw-away copy of the workflow, so no
.snakemake/ or results/ appears in the repository. Target: 20,000 members in < 60 s on 2 cores.
Usage: python bench/bench_dag.py [--reps N] [--sizes 1000,5000,20000]
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, median, save  # noqa: E402

REPS = int(sys.argv[sys.argv.index("--reps") + 1]) if "--reps" in sys.argv else 1
SIZES = ([int(s) for s in sys.argv[sys.argv.index("--sizes") + 1].split(",")] if "--sizes" in sys.argv
         else [1000, 5000, 20000])
# default: the sweep of the config.yaml otherwise, 20 children x 20 spawn steps (0, 6, ..., 114).
SERIES = {"default": ("config.yaml", {"ensemble": {"children": 20}, "spawn_steps": list(range(0, 120, 6))}),
          "cifar10": ("configs/cifar10-resnet20.yaml", {"data": {"root": "/nonexistent"}}),
          "cifar10-member": ("configs/cifar10-resnet20.yaml",
                             {"data": {"root": "/nonexistent"}, "job_shape": "member"})}
# Runs snakemake and prints its peak resident memory (KB) last on stderr.
PEAK = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]).returncode; "
        "print('peak_kb', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
        "sys.exit(r)")


def grid_config(tmp: Path, base: str, overrides: dict, members: int) -> tuple[Path, int]:
    """The base config with as many parents as give about `members` members; returns (path, members)."""
    sys.path.insert(0, str(ROOT / "src"))
    from coupledsgd.core.config import SCHEMA, validate
    from coupledsgd.core.grid import members as grid_members

    cfg = yaml.safe_load((ROOT / base).read_text())
    for key, value in overrides.items():
        cfg[key] = {**cfg[key], **value} if isinstance(value, dict) else value
    per_parent = len(grid_members(validate({**cfg, "ensemble": {**cfg["ensemble"], "parents": 1}}, SCHEMA)))
    cfg["ensemble"]["parents"] = max(1, round(members / per_parent))
    path = tmp / f"grid-{members}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path, per_parent * cfg["ensemble"]["parents"]


def dry_run(tmp: Path, cfg: Path) -> dict:
    cmd = [sys.executable, "-c", PEAK, sys.executable, "-m", "snakemake", "-n", "--cores", "2",
           f"--configfile={cfg}"]
    walls, out = [], ""
    for _ in range(REPS):
        t0 = time.perf_counter()
        p = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True)
        walls.append(time.perf_counter() - t0)
        out = p.stdout + p.stderr
        if p.returncode:
            raise RuntimeError(out[-3000:])
    jobs = int(re.search(r"^total\s+(\d+)", out, re.M).group(1))
    peak_mb = int(re.search(r"^peak_kb (\d+)", out, re.M).group(1)) / 1024
    return {"jobs": jobs, "dry_run_s": median(walls), "all_s": walls, "peak_mb": round(peak_mb)}


def main():
    tmp = Path(tempfile.mkdtemp(prefix="bench_dag."))
    rows = []
    try:
        for name in ("Snakefile", "config.yaml", "configs", "workflow", "envs", "profiles"):
            src = ROOT / name
            if src.is_dir():
                shutil.copytree(src, tmp / name, symlinks=True)
            elif src.exists():
                shutil.copy(src, tmp / name)
        for series, (base, overrides) in SERIES.items():
            for size in SIZES:
                cfg, members = grid_config(tmp, base, overrides, size)
                row = {"series": series, "config": base, "members": members, **dry_run(tmp, cfg)}
                row["ms_per_member"] = 1e3 * row["dry_run_s"] / members
                rows.append(row)
                print(f"{series}: {members} members, {row['jobs']} jobs, {row['dry_run_s']:.1f} s, "
                      f"{row['peak_mb']} MB", flush=True)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "snakemake", "--version"], capture_output=True)
        largest = [r for r in rows if r["members"] >= 20000]
        save("bench_dag", {"rows": rows, "reps": REPS, "snakemake_version_s": time.perf_counter() - t0,
                           "target": "20,000 members < 60 s",
                           "met": bool(largest) and all(r["dry_run_s"] < 60 for r in largest)})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
