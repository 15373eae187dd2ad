"""Dry-run (`snakemake -n`) wall time of the CIFAR-10 paper grid, and its job count.

Grid: resnet20 on cifar10, 3 parents x 5 children, spawn steps [0, 431, 878, 1254, 1791, 2558, 3654],
every condition, re-initialisation percents [5, 10, 20, 30, 40, 50] at one step (1791).
Uses configs/cifar10-resnet20.yaml if it exists, else writes an equivalent temp config (data.root is a
dummy folder: a dry run reads no data). Runs in a throw-away copy of the workflow, so no .snakemake/
or results/ appears in the repository. Note `--configfile` swallows positional arguments after it,
so it is passed as `--configfile=PATH`. Target: <= 15 s.
Usage: python bench/bench_dag.py [--reps N]
"""

from __future__ import annotations

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

REPS = int(sys.argv[sys.argv.index("--reps") + 1]) if "--reps" in sys.argv else 3

GRID = {
    "experiment": "cifar10-resnet20-bench",
    "seed": 0,
    "device": "cpu",
    "threads": 1,
    "data": {"name": "cifar10", "root": "/nonexistent/cifar10", "augment": True},
    "model": {"name": "resnet20"},
    "training": {"steps": 64000, "batch_size": 128, "lr": 0.1, "momentum": 0.9, "nesterov": True,
                 "weight_decay": 5.0e-4, "schedule": "step", "milestones": [32000, 48000]},
    "ensemble": {"parents": 3, "children": 5},
    "spawn_steps": [0, 431, 878, 1254, 1791, 2558, 3654],
    "conditions": ["no-coupling", "coupled-order", "coupled-to-t", "coupled-to-t-reset", "reinit-low",
                   "reinit-high"],
    "reinit": {"percents": [5, 10, 20, 30, 40, 50], "steps": [1791]},
}


def main():
    tmp = Path(tempfile.mkdtemp(prefix="bench_dag."))
    try:
        for name in ("Snakefile", "config.yaml", "configs", "workflow", "envs"):
            src = ROOT / name
            (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp / name)
        given = ROOT / "configs" / "cifar10-resnet20.yaml"
        if given.exists():
            cfg, origin = tmp / "configs" / "cifar10-resnet20.yaml", "configs/cifar10-resnet20.yaml"
        else:
            cfg, origin = tmp / "grid.yaml", "temp config (bench/bench_dag.py GRID)"
            cfg.write_text(yaml.safe_dump(GRID, sort_keys=False))
        cmd = [sys.executable, "-m", "snakemake", "-n", "--cores", "2", f"--configfile={cfg}"]
        walls, out = [], ""
        for r in range(REPS):
            t0 = time.perf_counter()
            p = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True)
            walls.append(time.perf_counter() - t0)
            out = p.stdout + p.stderr
            if p.returncode:
                raise RuntimeError(out[-3000:])
        # The job-stats table: "total   N" line.
        m = re.search(r"^total\s+(\d+)", out, re.M)
        jobs = int(m.group(1)) if m else None
        per_rule = dict(re.findall(r"^(\w+)\s+(\d+)$", out.split("Job stats:")[-1].split("\n\n")[0], re.M))
        per_rule = {k: int(v) for k, v in per_rule.items() if k not in ("job", "total")}
        wall = median(walls)
        res = {"config": origin, "jobs": jobs, "jobs_by_rule": per_rule, "dry_run_s": wall, "all_s": walls,
               "ms_per_job": 1e3 * wall / jobs if jobs else None, "target": "<= 15 s", "met": wall <= 15}
        # Startup part of it: snakemake -n on a target that exists in no DAG (parse + config only).
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "snakemake", "--version"], capture_output=True)
        res["snakemake_version_s"] = time.perf_counter() - t0
        print(f"{origin}: {jobs} jobs, snakemake -n {wall:.2f} s (median of {REPS}: "
              f"{[round(w, 2) for w in walls]}), {res['ms_per_job']:.2f} ms/job; by rule {per_rule}")
        save("bench_dag", res)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
