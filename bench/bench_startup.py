"""Per-job overhead: process start to the first training step, against a bare `import torch`.

Variants, each a fresh subprocess, run in rotating order, median of N (default 5):
  torch   python -c "import torch"                                         (the reference)
  direct  python -c: import coupledsgd.jobs.stages, D.load(<prepared data>), Hparams, Run.fresh, then
          stop at the entry of `train` (time to first step); also the whole train_members job
  script  the exact script Snakemake's `script:` directive runs for one train_members job (its pickled
          preamble + workflow/scripts/train_members.py), in a throw-away copy of the workflow, with
          coupledsgd.jobs.stages.train wrapped to note the time at its entry.
Also `snakemake --cores 1 -f <one train_members target>` against `snakemake -n` of the same (what
Snakemake adds per job), and `python -X importtime` of coupledsgd.jobs.stages: heaviest imports beyond torch.

Target: first-step time of a job <= 1.3 x `import torch`.
Usage: python bench/bench_startup.py [--reps N]
Nothing outside bench/ and a temp folder is written.
"""

from __future__ import annotations

import glob

import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, median, save  # noqa: E402

REPS = int(sys.argv[sys.argv.index("--reps") + 1]) if "--reps" in sys.argv else 5
PY = sys.executable
TARGET = "results/smoke/predictions/no-coupling/t0/p0/c0.parquet"

DIRECT = r"""
import sys, time
T0 = float(sys.argv[1]); FULL = sys.argv[3] == "full"
import torch
import coupledsgd.jobs.stages  # everything a training job imports
from coupledsgd.engine import data as D
from coupledsgd.engine.training import Hparams, Run, train
t_import = time.time() - T0
torch.set_num_threads(1)
data = D.load(sys.argv[2], "cpu", False)
h = Hparams.from_config({"steps": 24, "batch_size": 32, "lr": 0.1, "schedule": "cosine"})
run = Run.fresh("cnn1d", data.in_shape, data.num_classes, h, {"init": 1, "order": 2, "aug": 3})
print(f"FIRST_STEP {time.time() - T0:.4f} IMPORTS {t_import:.4f}", flush=True)
if FULL:
    train([run], data, run.end, evaluate=True)
print(f"END {time.time() - T0:.4f}", flush=True)
"""

TORCH = r"""
import sys, time
T0 = float(sys.argv[1])
import torch
print(f"FIRST_STEP {time.time() - T0:.4f}", flush=True)
"""

WRAP = r"""
import sys, time, runpy
T0 = float(sys.argv[1])
import coupledsgd.jobs.stages as S
orig = S.train
def first_step(*a, **k):
    print(f"FIRST_STEP {time.time() - T0:.4f}", flush=True)
    return orig(*a, **k)
S.train = first_step
sys.argv = [sys.argv[2]]
runpy.run_path(sys.argv[0], run_name="__main__")
print(f"END {time.time() - T0:.4f}", flush=True)
"""


def timed(cmd, cwd=None) -> tuple[float, dict]:
    t0 = time.time()
    p = subprocess.run([c.replace("@T0@", repr(t0)) for c in cmd], cwd=cwd, capture_output=True, text=True)
    wall = time.time() - t0
    if p.returncode:
        raise RuntimeError(f"{cmd[:3]} failed:\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}")
    marks = {k: float(v) for k, v in re.findall(r"(FIRST_STEP|IMPORTS|END) ([0-9.]+)", p.stdout)}
    return wall, marks


def setup_workflow() -> tuple[Path, str]:
    """A throw-away copy of the workflow; prepare smoke data and keep one generated train_members script."""
    tmp = Path(tempfile.mkdtemp(prefix="bench_startup."))
    for name in ("Snakefile", "config.yaml", "configs", "workflow", "envs"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp / name)
    smk = [PY, "-m", "snakemake", "--cores", "1", "--configfile=configs/smoke.yaml"]
    subprocess.run(smk + [TARGET], cwd=tmp, check=True, capture_output=True)
    subprocess.run(smk + ["-f", "--skip-script-cleanup", TARGET], cwd=tmp, check=True, capture_output=True)
    script = glob.glob(str(tmp / ".snakemake" / "scripts" / "*train_members.py"))[0]
    return tmp, script


def importtime(module: str, owner: str = "coupledsgd") -> list[tuple[str, float]]:
    """Imports made directly by `owner`'s modules (excluding its own submodules and torch), with
    their cumulative time in s, heaviest first. What torch pulls in itself is not counted."""
    p = subprocess.run([PY, "-X", "importtime", "-c", f"import {module}"], capture_output=True, text=True)
    pending, found = [], {}
    for line in p.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( +)(\S+)", line)
        if not m:
            continue
        name, cum, depth = m.group(4), int(m.group(2)) / 1e6, (len(m.group(3)) - 1) // 2
        children = [c for c in pending if c[2] > depth]
        pending = [c for c in pending if c[2] <= depth] + [(name, cum, depth)]
        if name.split(".")[0] == owner:
            for c in children:
                if c[2] == depth + 1 and c[0].split(".")[0] not in (owner, "torch"):
                    found[c[0]] = max(found.get(c[0], 0.0), c[1])
    return sorted(found.items(), key=lambda kv: -kv[1])[:12]


def main():
    tmp, script = setup_workflow()
    data = str(tmp / "results/smoke/data.pt")
    out = tempfile.mkdtemp(prefix="bench_startup_out.")
    variants = {
        "torch": ([PY, "-c", TORCH, "@T0@"], None),
        "direct_first_step": ([PY, "-c", DIRECT, "@T0@", data, "first", out], None),
        "direct_full_job": ([PY, "-c", DIRECT, "@T0@", data, "full", out], None),
        "snakemake_script": ([PY, "-c", WRAP, "@T0@", script], tmp),
        # The same bare import, leaving with os._exit(0): what interpreter teardown of torch costs.
        "torch_os_exit": ([PY, "-c", TORCH + "import os; os._exit(0)\n", "@T0@"], None),
    }
    walls = {k: [] for k in variants}
    first = {k: [] for k in variants}
    imports = []
    names = list(variants)
    timed(*variants["torch"])  # warm the page cache
    for r in range(REPS):
        for k in names[r % len(names):] + names[:r % len(names)]:
            wall, marks = timed(*variants[k])
            walls[k].append(wall)
            if "FIRST_STEP" in marks:
                first[k].append(marks["FIRST_STEP"])
            if "IMPORTS" in marks:
                imports.append(marks["IMPORTS"])
    torch_s = median(walls["torch"])          # whole process, exit included
    torch_ready = median(first["torch"])      # process start to `import torch` done
    res = {"reps": REPS, "import_torch_s": torch_s, "import_torch_all": walls["torch"],
           "import_torch_done_s": torch_ready, "import_torch_done_all": first["torch"]}
    for k in names[1:]:
        res[k] = {"wall_s": median(walls[k]), "wall_all": walls[k],
                  "first_step_s": median(first[k]) if first[k] else None, "first_step_all": first[k]}
    res["direct_imports_s"] = median(imports)
    # Primary: first step vs the same point of the bare process (import done); secondary: whole-process
    # walls (the direct_first_step process exits right after the mark, so its wall = first step + exit).
    res["ratio_direct_first_step"] = res["direct_first_step"]["first_step_s"] / torch_ready
    res["ratio_snakemake_script_first_step"] = res["snakemake_script"]["first_step_s"] / torch_ready
    res["ratio_direct_first_step_wall"] = res["direct_first_step"]["wall_s"] / torch_s
    res["process_exit_s"] = torch_s - torch_ready
    res["process_exit_with_os_exit_s"] = res["torch_os_exit"]["wall_s"] - res["torch_os_exit"]["first_step_s"]
    res["target"] = "<= 1.3"
    res["met"] = max(res["ratio_direct_first_step"], res["ratio_snakemake_script_first_step"]) <= 1.3

    # What Snakemake itself adds around one job: -f run minus dry run (same target), alternating.
    smk = [PY, "-m", "snakemake", "--cores", "1", "--configfile=configs/smoke.yaml", "-f", TARGET]
    runs, dries = [], []
    for r in range(3):
        for dry in ((False, True) if r % 2 == 0 else (True, False)):
            wall, _ = timed(smk + (["-n"] if dry else []), cwd=tmp)
            (dries if dry else runs).append(wall)
    res["snakemake_one_job_s"] = median(runs)
    res["snakemake_dry_run_s"] = median(dries)
    res["snakemake_job_minus_dag_s"] = median(runs) - median(dries)
    res["snakemake_job_minus_dag_over_torch"] = res["snakemake_job_minus_dag_s"] / torch_s
    res["snakemake_job_minus_dag_minus_script_s"] = res["snakemake_job_minus_dag_s"] - res["snakemake_script"]["wall_s"]

    res["importtime_coupledsgd_stages_beyond_torch_s"] = importtime("coupledsgd.jobs.stages")
    res["importtime_snakemake_preamble_s"] = importtime("snakemake.iocontainers", owner="snakemake")

    print(f"import torch: done at {torch_ready:.2f} s, process wall {torch_s:.2f} s (median of {REPS}; "
          f"exit takes {torch_s - torch_ready:.2f} s)")
    for k in names[1:]:
        fs = res[k]["first_step_s"]
        print(f"{k}: wall {res[k]['wall_s']:.2f} s, first step at {fs:.2f} s ({fs / torch_ready:.2f}x import torch)")
    print(f"exit after import torch: {res['process_exit_s']:.2f} s normally, "
          f"{res['process_exit_with_os_exit_s']:.2f} s with os._exit(0)")
    print(f"direct: imports done at {res['direct_imports_s']:.2f} s")
    print(f"snakemake -f one job {res['snakemake_one_job_s']:.2f} s, dry run {res['snakemake_dry_run_s']:.2f} s, "
          f"difference {res['snakemake_job_minus_dag_s']:.2f} s ({res['snakemake_job_minus_dag_over_torch']:.2f}x torch)")
    print("heaviest imports of coupledsgd.jobs.stages beyond torch (s):",
          [(n, round(s, 3)) for n, s in res["importtime_coupledsgd_stages_beyond_torch_s"]])
    print("snakemake preamble (snakemake.iocontainers) imports (s):",
          [(n, round(s, 3)) for n, s in res["importtime_snakemake_preamble_s"][:5]])
    save("bench_startup", res)
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
