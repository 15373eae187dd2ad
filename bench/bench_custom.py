"""Members of a model given by import path, trained as one network (the generic torch.func.vmap path,
`engine.members.Vmapped`) against the same members trained one after another.

`job_shape: auto` trains such a model one member per job: on the CPU, vmap over small networks was
measured no faster than one member after another, with dropout or without (bench/RESULTS.md). This script measures it for the
examples (or your own model), so a config can choose `job_shape: children` or `condition` where it pays.

Member examples/s of `training.train` for k members together vs k solo runs of the same steps, one
thread, the variants alternating, medians of the repetitions.

Usage, from the repository root:
  python bench/bench_custom.py                  # the examples, k = 4
  python bench/bench_custom.py --model mypkg.nets:build --kwargs '{"width": 128}' --shape 3 32 32 --classes 10
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time

import torch

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from _common import ROOT, median, save  # noqa: E402

from coupledsgd.engine.data import DeviceData  # noqa: E402
from coupledsgd.engine.training import Hparams, Run, train  # noqa: E402

# The examples at their configs' sizes, the CNN four times wider, and stock torch.nn models with
# dropout: a 2-layer pre-norm transformer on the signals and an image CNN with Dropout2d. (model,
# kwargs, one input's shape)
EXAMPLES = [("examples.models:mlp", {"width": 32, "depth": 2}, (1, 32)), ("examples.models:cnn", {"channels": 8}, (1, 32)),
            ("examples.models:cnn", {"channels": 32}, (1, 32)),
            ("examples.models:transformer", {"width": 32, "heads": 4, "layers": 2, "dropout": 0.1}, (1, 32)),
            ("examples.models:dropout_cnn", {"channels": 16}, (3, 16, 16))]


def random_data(shape, classes, n=2048) -> DeviceData:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, *shape, generator=g), torch.randint(0, classes, (n,), generator=g)
    return DeviceData(x, y, x[:256], y[:256], classes, crop_pad=0, flip=False)


def rate(runs: list[Run], data: DeviceData, steps: int, together: bool) -> float:
    """Member examples per second over `steps` steps from the runs' current step."""
    runs = copy.deepcopy(runs)
    until = runs[0].step + steps
    t0 = time.perf_counter()
    if together:
        train(runs, data, until)
    else:
        for r in runs:
            train([r], data, until)
    return len(runs) * steps * runs[0].hparams.batch_size / (time.perf_counter() - t0)


def measure(name, kwargs, shape, classes, k, batch, steps, reps) -> dict:
    data = random_data(shape, classes)
    h = Hparams(steps=10 * steps, batch_size=batch, lr=0.05)
    runs = [Run.fresh(name, shape, classes, h, {"init": i, "order": 100 + i, "aug": 200 + i}, model_kwargs=kwargs)
            for i in range(k)]
    rate(runs, data, 2, True), rate(runs, data, 2, False)  # warm-up: vmap's first trace, allocator
    solo, fused = [], []
    for rep in range(reps):
        for together in ((True, False) if rep % 2 else (False, True)):
            (fused if together else solo).append(rate(runs, data, steps, together))
    row = {"model": name, "kwargs": kwargs, "shape": list(shape), "k": k, "batch": batch, "steps": steps,
           "solo_member_examples_per_s": median(solo), "vmap_member_examples_per_s": median(fused)}
    row["vmap_over_solo"] = row["vmap_member_examples_per_s"] / row["solo_member_examples_per_s"]
    print(f"{name} {kwargs} k={k}: solo {row['solo_member_examples_per_s']:,.0f}, vmap "
          f"{row['vmap_member_examples_per_s']:,.0f} member examples/s: {row['vmap_over_solo']:.2f}x")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="package.module:callable (default: the two examples)")
    parser.add_argument("--kwargs", default="{}", help="model.kwargs as JSON")
    parser.add_argument("--shape", type=int, nargs="+", default=[1, 32], help="one input's shape, with --model (default 1 32)")
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--k", type=int, default=4, help="members a job")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    os.chdir(ROOT)  # the examples import from the repository root, as in a run
    models = [(args.model, json.loads(args.kwargs), tuple(args.shape))] if args.model else EXAMPLES
    rows = [measure(m, kw, shape, args.classes, args.k, args.batch, args.steps, args.reps)
            for m, kw, shape in models]
    save("bench_custom", {"threads": 1, "device": "cpu", "rows": rows})


if __name__ == "__main__":
    main()
