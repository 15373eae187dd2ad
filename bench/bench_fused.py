"""Fused children: k = 4 cnn1d members of one spawn point, one after another vs one fused job.

(1) compute only, in this process: 4 x training.train vs one fused.train_fused (median of `--reps`);
(2) end to end with process start: 4 `python -c` jobs one after another (import, load the data file,
    train one member, predict) vs one `python -c` job training the 4 fused (median of `--e2e-reps`).
Default config hyperparameters: batch 64, 600 steps, 1,000 MNIST-1D training examples, evaluation
each epoch, one thread (the rules' `threads`). Writes bench/results/bench_fused.json.

    PYTHONPATH=src python bench/bench_fused.py
"""

from __future__ import annotations

import argparse
import copy
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, median, save

SETUP = """
import sys, time, torch
torch.set_num_threads(1)
from coupledsgd import data as D
from coupledsgd.spawn import member_seeds, parse_condition
from coupledsgd.training import Hparams, Run, predict, train
h = Hparams(steps={steps}, batch_size=64, lr=0.1)
data = D.load({path!r}, 'cpu', True)
cond = parse_condition('coupled-to-t')
runs = [Run.fresh('cnn1d', data.in_shape, data.num_classes, h, member_seeds(0, cond, 0, c)) for c in {members}]
"""
SOLO = SETUP + """
run = runs[0]
train(run, data, run.end, evaluate=True)
logits = predict(run.model, data.x_test, h.eval_batch_size)
"""
FUSED = SETUP + """
from coupledsgd.fused import train_fused
train_fused(runs, data, evaluate=True)
logits = [predict(r.model, data.x_test, h.eval_batch_size) for r in runs]
"""


def python(code: str) -> float:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--e2e-reps", type=int, default=3)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    import torch

    torch.set_num_threads(1)
    from coupledsgd import data as D
    from coupledsgd.fused import train_fused
    from coupledsgd.spawn import member_seeds, parse_condition
    from coupledsgd.training import Hparams, Run, train

    tmp = Path(tempfile.mkdtemp())
    path = tmp / "mnist1d.pt"
    D.prepare("mnist1d", path, n_train=1000)
    data = D.load(path, "cpu", True)
    h = Hparams(steps=args.steps, batch_size=64, lr=0.1)
    cond = parse_condition("coupled-to-t")
    runs = [Run.fresh("cnn1d", data.in_shape, data.num_classes, h, member_seeds(0, cond, 0, c))
            for c in range(args.k)]

    seq, fused = [], []
    for rep in range(args.reps):
        rs = copy.deepcopy(runs)
        t = time.perf_counter()
        for r in rs:
            train(r, data, r.end, evaluate=True)
        seq.append(time.perf_counter() - t)
        rf = copy.deepcopy(runs)
        t = time.perf_counter()
        train_fused(rf, data, evaluate=True)
        fused.append(time.perf_counter() - t)
        diff = max((a - b).abs().max().item() for x, y in zip(rs, rf)
                   for a, b in zip(x.model.state_dict().values(), y.model.state_dict().values())
                   if a.is_floating_point())
        print(f"compute rep {rep}: {args.k} one after another {seq[-1]:.2f} s, fused {fused[-1]:.2f} s "
              f"(x{seq[-1] / fused[-1]:.2f}); max |weight difference| {diff:.2e}", flush=True)

    e2e_seq, e2e_fused, start_only = [], [], []
    for rep in range(args.e2e_reps):
        start_only.append(python("import torch"))
        e2e_seq.append(sum(python(SOLO.format(steps=args.steps, path=str(path), members=f"[{c}]"))
                           for c in range(args.k)))
        e2e_fused.append(python(FUSED.format(steps=args.steps, path=str(path), members=f"range({args.k})")))
        print(f"end-to-end rep {rep}: {args.k} processes {e2e_seq[-1]:.2f} s, one fused process "
              f"{e2e_fused[-1]:.2f} s (x{e2e_seq[-1] / e2e_fused[-1]:.2f}); `import torch` alone "
              f"{start_only[-1]:.2f} s", flush=True)

    result = {
        "k": args.k, "model": "cnn1d", "data": "mnist1d, 1,000 training examples", "steps": args.steps,
        "batch_size": 64, "threads": 1, "evaluate": "each epoch", "torch": torch.__version__,
        "compute_s": {"one_after_another": seq, "fused": fused},
        "compute_speedup": median(seq) / median(fused),
        "end_to_end_s": {"separate_processes": e2e_seq, "one_fused_process": e2e_fused,
                         "import_torch": start_only},
        "end_to_end_speedup": median(e2e_seq) / median(e2e_fused) if e2e_seq else None,
    }
    print(f"compute: x{result['compute_speedup']:.2f} (median {median(seq):.2f} s vs {median(fused):.2f} s)")
    if e2e_seq:
        print(f"end to end: x{result['end_to_end_speedup']:.2f} "
              f"(median {median(e2e_seq):.2f} s vs {median(e2e_fused):.2f} s)")
    save("bench_fused", result)


if __name__ == "__main__":
    main()
