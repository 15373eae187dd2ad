"""Wall time of the whole default experiment (`snakemake --cores 2`, config.yaml, figures included)
from nothing, in a throw-away copy of the workflow, for each job shape given.

    python bench/bench_default.py [--shapes auto member] [--cores 2] [--keep DIR]

Writes bench/results/bench_default.json: per shape, the wall time, the jobs run and their count per rule.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from _common import ROOT, save

FILES = ["Snakefile", "config.yaml", "configs", "workflow", "envs", "profiles"]


def run(shape: str, cores: int, keep: Path | None = None) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bench_default."))
    try:
        for name in FILES:
            src = ROOT / name
            if src.is_symlink():
                (tmp / name).symlink_to(src.readlink())
            else:
                (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp / name)
        command = ["snakemake", "--cores", str(cores), "--config", f"job_shape={shape}"]
        start = time.perf_counter()
        out = subprocess.run(command, cwd=tmp, capture_output=True, text=True, check=True)
        wall = time.perf_counter() - start
        counts = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", out.stdout + out.stderr, re.M)
                  if m.group(1) != "total"}
        if keep is not None:  # the run's tables, claims and figures, e.g. to refresh docs/
            shutil.copytree(tmp / "results", keep / shape, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("*.pt", "predictions", "trajectories", "children"))
        return {"shape": shape, "wall_s": wall, "jobs": counts}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", nargs="+", default=["auto", "member"])
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--keep", type=Path, default=None, help="copy each run's results (tables, figures) here")
    args = ap.parse_args()
    rows = []
    for shape in args.shapes:
        rows.append(run(shape, args.cores, args.keep))
        print(f"job_shape {shape}: {rows[-1]['wall_s']:.1f} s, jobs {rows[-1]['jobs']}", flush=True)
    save("bench_default", {"cores": args.cores, "runs": rows})


if __name__ == "__main__":
    main()
