"""Member images per second of the training loop for k members as one network, against a bare step.

    python bench/bench_gpu.py                 # CUDA if there is a GPU, else the CPU at small sizes
    python bench/bench_gpu.py --quick         # seconds: a smoke test of this script (the tests run it)

Rows, for each model:
- `bare`: one member, a fixed batch already on the device, eager forward + backward + torch.optim.SGD
  (fused on CUDA), no batch selection, augmentation or schedule: the ceiling of a solo job;
- `loop k=K eager` / `loop k=K graphs`: `training.train` over K runs (batch selection, augmentation,
  schedule, the multi-tensor SGD), eager or with the step captured as a CUDA graph (`cuda.graphs`).

A rate is member images per second: K x batch x steps / seconds. Every loop rate is the difference of
two calls of `train` (S1 and S2 steps), so the fixed costs of a call (binding the members, the first
epoch's batch plan, the graph capture) cancel out. On CUDA: bf16 autocast and channels-last (the
config's `cuda:` defaults), synthetic CIFAR-10-shaped data (50,000 / 10,000, crop 4 + flip) and, for
resnet50 and vit, 64x64 Tiny-ImageNet-shaped data. On the CPU: one thread, 16x16 images, batch 16, no
graphs (nothing to capture), and cnn1d on MNIST-1D-shaped signals (batch 64, k = 1, 4, 8), the default
experiment's model. Writes bench/results/bench_gpu.json (or --out); `python -m
coupledsgd.cost` reads the CUDA rows of that file.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, save  # noqa: E402

from coupledsgd.engine import data as D  # noqa: E402
from coupledsgd.core.seeds import parent_seeds  # noqa: E402
from coupledsgd.engine.training import Accel, Hparams, Run, train  # noqa: E402


def synthetic(n_train: int, n_test: int, in_shape: tuple, classes: int, device) -> D.DeviceData:
    """Random data on the device; images are cropped and flipped, signals (MNIST-1D's shape) are not."""
    g = torch.Generator().manual_seed(0)
    make = lambda n: torch.randn(n, *in_shape, generator=g).to(device)
    labels = lambda n: torch.randint(0, classes, (n,), generator=g).to(device)
    image = len(in_shape) == 3
    return D.DeviceData(make(n_train), labels(n_train), make(n_test), labels(n_test), classes,
                        crop_pad=4 if image else 0, flip=image)


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bare_rate(model_name, data, batch, steps, accel, device) -> float:
    run = Run.fresh(model_name, data.in_shape, data.num_classes, Hparams(steps=1, batch_size=batch, lr=0.05),
                    parent_seeds(0, 0), device)
    model = run.model
    forward = accel.forward_of(model)
    fused = {"fused": True} if device.type == "cuda" else {}
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4, **fused)
    x, y = accel.batch(data.x_train[:batch]), data.y_train[:batch]

    def step():
        with accel.autocast(x):
            loss = torch.nn.functional.cross_entropy(accel.output(forward(x)), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return batch * steps / (time.perf_counter() - start)


def loop_rate(model_name, data, batch, k, steps, accel, device) -> tuple[float, int]:
    """Member images/s of `train` over k runs: (S2 - S1) steps from the difference of two calls;
    and how many of the three calls ran their step uncaptured (a refused CUDA graph capture)."""
    h = Hparams(steps=10 ** 6, batch_size=batch, lr=0.05)
    runs = [Run.fresh(model_name, data.in_shape, data.num_classes, h, parent_seeds(0, p), device) for p in range(k)]
    refused = []
    note = lambda line: refused.append(line) if "cuda.graphs" in line else None
    train(runs, data, 2, accel=accel, log=note)  # compile kernels, first allocations
    times = []
    for n in (steps // 3, steps):
        sync(device)
        start = time.perf_counter()
        train(runs, data, runs[0].step + n, accel=accel, log=note)
        sync(device)
        times.append(time.perf_counter() - start)
    return k * batch * (steps - steps // 3) / max(times[1] - times[0], 1e-9), len(refused)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks that the script runs")
    parser.add_argument("--out", default=None, help="result file (default bench/results/bench_gpu.json)")
    parser.add_argument("--models", nargs="*", default=None, help="only these models (default: all)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
        plans = [("resnet20", (3, 32, 32), 10, 128, (1, 5, 15), 60), ("resnet50", (3, 64, 64), 200, 128, (1, 5), 30),
                 ("vit", (3, 64, 64), 200, 128, (1, 5), 30)]
        n_train, n_test = 50000, 10000
        accels = {"eager": Accel(bf16=True, channels_last=True), "graphs": Accel(bf16=True, channels_last=True,
                                                                                 graphs=True)}
    else:
        torch.set_num_threads(1)
        steps = 3 if args.quick else 12
        plans = [("resnet20", (3, 16, 16), 10, 4 if args.quick else 16, (1, 2) if args.quick else (1, 5, 15), steps),
                 ("cnn1d", (1, 40), 10, 64, (1, 2) if args.quick else (1, 4, 8), 5 * steps)]
        n_train, n_test = 256, 64
        accels = {"eager": Accel()}
    rows = []
    for name, in_shape, classes, batch, ks, steps in plans:
        if args.models and name not in args.models:
            continue
        data = synthetic(n_train, n_test, in_shape, classes, device)
        size = "x".join(map(str, in_shape[1:]))
        accel = accels["eager"]
        bare = bare_rate(name, data, batch, steps, accel, device)
        rows.append({"model": name, "input": size, "batch": batch, "k": 1, "mode": "bare",
                     "member_images_per_s": bare, "of_bare": 1.0})
        print(f"{name} {size} batch {batch}: bare step {bare:,.0f} img/s", flush=True)
        for k in ks:
            for mode, accel in accels.items():
                row = {"model": name, "input": size, "batch": batch, "k": k, "mode": mode}
                try:
                    rate, uncaptured = loop_rate(name, data, batch, k, steps, accel, device)
                except RuntimeError as e:  # one failing mode (a graph capture, say) leaves the others' rows
                    rows.append({**row, "error": str(e).splitlines()[0]})
                    print(f"{name}: loop k={k} {mode}: FAILED {rows[-1]['error']}", flush=True)
                    continue
                if uncaptured:  # a rate from captured and uncaptured calls mixed means nothing
                    rows.append({**row, "error": f"{uncaptured} of 3 calls could not capture the step"})
                    print(f"{name}: loop k={k} {mode}: {rows[-1]['error']}", flush=True)
                    continue
                rows.append({**row, "member_images_per_s": rate, "of_bare": rate / bare})
                print(f"{name}: loop k={k} {mode}: {rate:,.0f} member img/s ({rate / bare:.2f} of bare)", flush=True)
        del data
    gpu = torch.cuda.get_device_name(device) if cuda else "none"
    payload = {"device": device.type, "gpu": gpu, "torch": torch.__version__, "full_size": cuda, "rows": rows}
    if args.out:
        Path(args.out).write_text(json.dumps({**payload, "machine": machine()}, indent=2) + "\n")
    else:
        save("bench_gpu", payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
