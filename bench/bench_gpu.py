"""Member images per second of the training loop as the jobs run it, for k members as one network.

    python bench/bench_gpu.py                        # CUDA: the paper configs' models at full size
    python bench/bench_gpu.py --device cpu --tiny    # seconds: the same logic at tiny sizes (the tests run it)

Every measurement runs under the jobs' own settings: `jobs.runtime.setup` (one thread; on CUDA
deterministic algorithms, cuDNN benchmark off) and the `cuda:` section of the model's paper config
(configs/cifar10-resnet20.yaml, configs/tinyimagenet-{resnet50,vit}.yaml: bf16 autocast,
channels-last), with that config's batch size, augmentation, evaluation cadence and evaluation batch,
on synthetic data of its dataset's shape. Rows, for each model:

- `bare`: one member, a fixed batch already on the device, forward + backward + torch.optim.SGD (fused
  on CUDA), no batch selection, augmentation or schedule: the ceiling of a one-member job;
- `eager` / `graphs` at k = 1, 5, 15 (the job shapes member, children and condition of 3 parents x 5
  children): `training.train` over k runs, eager or with the step captured as a CUDA graph. A capture
  that falls back to the uncaptured step, or memory that runs out, makes the row an error;
- `compile` (k = 1, CUDA only): the step's network under torch.compile (`cuda.compile`);
- `jobs=N` (k = 1): N one-member jobs side by side on the device (`cuda.jobs_per_device`), each its
  own process, the member images/s summed over the processes (`--mps` marks the rows of a run under
  the CUDA MPS daemon, which bench/gpu_check.sh starts where it is installed).

A loop rate is the difference of two calls of `train` (S1 and S2 steps), so the fixed costs of a call
(binding the members, the first epoch's plan, the graph capture) cancel out. Each row also gives one
test-set evaluation of its k members (`eval_s`, timed on part of the test set and scaled to all of
it) and `job_images_per_s`, the training rate with that evaluation every `eval_every` steps, as a job
spends its time. `coupledsgd cost` reads `member_images_per_s` of the CUDA eager/graphs rows and counts
the evaluations itself. Writes bench/results/bench_gpu.json (or --out) after every row.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, machine, save  # noqa: E402

from coupledsgd.core.config import defaults  # noqa: E402
from coupledsgd.core.registry import DATASETS  # noqa: E402
from coupledsgd.core.seeds import parent_seeds  # noqa: E402
from coupledsgd.engine import data as D  # noqa: E402
from coupledsgd.engine.training import Accel, Hparams, Members, Run, predict, train  # noqa: E402
from coupledsgd.jobs.runtime import setup  # noqa: E402

CONFIGS = {"resnet20": "configs/cifar10-resnet20.yaml", "resnet50": "configs/tinyimagenet-resnet50.yaml",
           "vit": "configs/tinyimagenet-vit.yaml"}
ACCEL_KEYS = ("bf16", "channels_last", "compile", "graphs")


@dataclasses.dataclass(frozen=True)
class Plan:
    model: str
    in_shape: tuple[int, ...]
    classes: int
    batch: int
    n_train: int            # synthetic training examples on the device
    n_test: int             # synthetic test examples timed for eval_s
    full_test: int          # the dataset's test set, which eval_s is scaled to
    crop_pad: int
    flip: bool
    eval_every: int         # steps between evaluations in the config (one epoch when null)
    eval_batch: int
    ks: tuple[int, ...]
    steps: int
    accel: Accel            # the config's cuda: section (off on the CPU, as in the jobs)


def plan_for(model: str, device: torch.device, tiny: bool) -> Plan:
    """The model's paper config at full size on CUDA, or shrunk to seconds on the CPU (`tiny`)."""
    config = yaml.safe_load((ROOT / CONFIGS[model]).read_text())
    training = {**defaults()["training"], **config["training"]}
    cuda = {**defaults()["cuda"], **config.get("cuda", {})}
    dataset = DATASETS[config["data"]["name"]]
    batch, n_train = training["batch_size"], dataset.n_train
    accel = Accel.for_device(device, {k: cuda[k] for k in ACCEL_KEYS})
    # 20,000 synthetic training examples: the batches' plan is the jobs', and every jobs=N worker
    # makes its own copy in seconds.
    plan = Plan(model, dataset.shape, dataset.classes, batch, min(n_train, 20000),
                2000, dataset.n_test, dataset.crop_pad if config["data"].get("augment", True) else 0,
                dataset.flip and config["data"].get("augment", True),
                training["eval_every"] or D.steps_per_epoch(n_train, batch), training["eval_batch_size"],
                (1, 5, 15), 60 if model == "resnet20" else 30, accel)
    if not tiny:
        return plan
    return dataclasses.replace(plan, in_shape=(dataset.shape[0], 16, 16), batch=8, n_train=64, n_test=16,
                               full_test=32, crop_pad=min(plan.crop_pad, 2), eval_every=8, eval_batch=16,
                               ks=(1, 2), steps=3)


def synthetic(plan: Plan, device) -> D.DeviceData:
    g = torch.Generator().manual_seed(0)
    make = lambda n: torch.randn(n, *plan.in_shape, generator=g).to(device)
    labels = lambda n: torch.randint(0, plan.classes, (n,), generator=g).to(device)
    return D.DeviceData(make(plan.n_train), labels(plan.n_train), make(plan.n_test), labels(plan.n_test),
                        plan.classes, crop_pad=plan.crop_pad, flip=plan.flip)


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bare_rate(plan: Plan, data, device) -> float:
    model = Run.fresh(plan.model, data.in_shape, plan.classes, Hparams(steps=1, batch_size=plan.batch, lr=0.05),
                      parent_seeds(0, 0), device).model
    accel = plan.accel
    forward = accel.forward_of(model)
    fused = {"fused": True} if device.type == "cuda" else {}
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4, **fused)
    x, y = accel.batch(data.x_train[:plan.batch]), data.y_train[:plan.batch]

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
    for _ in range(plan.steps):
        step()
    sync(device)
    return plan.batch * plan.steps / (time.perf_counter() - start)


def fresh_runs(plan: Plan, data, k: int, device) -> list[Run]:
    h = Hparams(steps=10 ** 6, batch_size=plan.batch, lr=0.05)
    return [Run.fresh(plan.model, data.in_shape, plan.classes, h, parent_seeds(0, p), device) for p in range(k)]


def loop_rate(plan: Plan, data, runs: list[Run], accel: Accel, device, ready=lambda: None) -> float:
    """Member images/s of `train` over the runs, (S2 - S1) steps from the difference of two calls.
    A capture that falls back to the uncaptured step raises: a rate of mixed calls means nothing."""
    refused = []
    note = lambda line: refused.append(line) if "cuda.graphs" in line else None
    train(runs, data, runs[0].step + 2, accel=accel, log=note)  # kernels chosen, first allocations
    ready()
    times, s1 = [], max(1, plan.steps // 3)
    for n in (s1, plan.steps):
        sync(device)
        start = time.perf_counter()
        train(runs, data, runs[0].step + n, accel=accel, log=note)
        sync(device)
        times.append(time.perf_counter() - start)
    if refused:
        raise RuntimeError(f"{len(refused)} of 3 calls could not capture the step: {refused[0]}")
    return len(runs) * plan.batch * (plan.steps - s1) / max(times[1] - times[0], 1e-9)


def eval_seconds(plan: Plan, data, runs: list[Run], accel: Accel, device) -> float:
    """One test-set evaluation of the runs as `train` makes it (the members' network, the config's
    evaluation batch), timed on the synthetic test set and scaled to the dataset's."""
    forward = Members(runs).bind(dataclasses.replace(accel, graphs=False))
    times = []
    for _ in range(2):  # the first pass allocates
        sync(device)
        start = time.perf_counter()
        predict(forward, data.x_test, plan.eval_batch, accel, len(runs))
        sync(device)
        times.append(time.perf_counter() - start)
    return times[-1] * plan.full_test / plan.n_test


def measure(plan: Plan, data, k: int, mode: str, device) -> dict:
    """One row: the loop rate of k members in `mode` (eager, graphs, compile), its evaluation time,
    the job's rate with evaluations at the config's cadence, and the device memory it reserved."""
    accel = dataclasses.replace(plan.accel, graphs=mode == "graphs", compile=mode == "compile")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    runs = fresh_runs(plan, data, k, device)
    rate = loop_rate(plan, data, runs, accel, device)
    eval_s = eval_seconds(plan, data, runs, accel, device)
    trained = k * plan.batch * plan.eval_every
    row = {"member_images_per_s": rate, "eval_s": eval_s, "eval_every": plan.eval_every,
           "job_images_per_s": trained / (trained / rate + eval_s)}
    if device.type == "cuda":
        row["max_reserved_gib"] = torch.cuda.max_memory_reserved(device) / 2 ** 30
    return row


def worker(args) -> int:
    """One job of the `jobs=N` route: a one-member loop whose timed calls start once all N workers are
    warm (a file each in --sync), so that their timed windows overlap. Prints its rate as JSON."""
    device = setup(1, args.device, args.workers)
    plan = plan_for(args.models[0], device, args.tiny)
    data = synthetic(plan, device)
    folder = Path(args.sync)

    def ready():
        (folder / f"{args.worker}.ready").touch()
        start = time.perf_counter()
        while len(list(folder.glob("*.ready"))) < args.workers:
            if time.perf_counter() - start > 120:  # a sibling died: do not hold the device
                raise SystemExit(f"worker {args.worker}: the other jobs never became ready")
            time.sleep(0.05)

    rate = loop_rate(plan, data, fresh_runs(plan, data, 1, device), plan.accel, device, ready)
    print(json.dumps({"member_images_per_s": rate}))
    return 0


def jobs_rate(args, model: str, n: int) -> float:
    """Member images/s of n one-member jobs on one device, summed over their processes."""
    with tempfile.TemporaryDirectory() as folder:
        command = [sys.executable, __file__, "--device", args.device, "--models", model, "--workers", str(n),
                   "--sync", folder] + (["--tiny"] if args.tiny else [])
        procs = [subprocess.Popen(command + ["--worker", str(i)], stdout=subprocess.PIPE, text=True)
                 for i in range(n)]
        outs = [p.communicate()[0] for p in procs]
    if any(p.returncode for p in procs):
        raise RuntimeError(f"a job of {n} side by side failed (exit {[p.returncode for p in procs]})")
    return sum(json.loads(out.strip().splitlines()[-1])["member_images_per_s"] for out in outs)


def routes(plan: Plan, device, jobs: tuple[int, ...], jobs_only: bool) -> list[tuple[int, str]]:
    """(k, mode) of every row after the bare step, in the order they run (compile last: its
    compilation is the longest wait, and a time limit then costs no other row)."""
    out = [] if jobs_only else [(k, mode) for k in plan.ks for mode in ("eager", "graphs")]  # CPU: uncaptured
    out += [(1, f"jobs={n}") for n in jobs]
    return out + ([(1, "compile")] if device.type == "cuda" and not jobs_only else [])


def merge(paths: list[str], out: str) -> None:
    """One result file of the rows of several (one process per model, as bench/gpu_check.sh runs them)."""
    results = [json.loads(Path(p).read_text()) for p in paths if Path(p).is_file()]
    if not results:
        raise SystemExit(f"bench_gpu.py --merge: none of {', '.join(paths)} exists")
    merged = {**results[0], "rows": [row for r in results for row in r["rows"]]}
    Path(out).write_text(json.dumps(merged, indent=2) + "\n")


def run_model(args, model: str, device, rows: list, write) -> None:
    plan = plan_for(model, device, args.tiny)
    data = synthetic(plan, device)
    size = "x".join(map(str, plan.in_shape[1:]))
    base = {"model": model, "input": size, "batch": plan.batch, **({"mps": True} if args.mps else {})}
    bare = bare_rate(plan, data, device)
    rows.append({**base, "k": 1, "mode": "bare", "member_images_per_s": bare, "of_bare": 1.0})
    print(f"{model} {size} batch {plan.batch}: bare step {bare:,.0f} img/s", flush=True)
    write()
    for k, mode in routes(plan, device, tuple(args.jobs) if model in args.jobs_models else (), args.jobs_only):
        row = {**base, "k": k, "mode": mode}
        try:
            found = ({"member_images_per_s": jobs_rate(args, model, int(mode[5:]))} if mode.startswith("jobs")
                     else measure(plan, data, k, mode, device))
        except RuntimeError as e:  # out of memory, a refused capture: the row says so, the others run
            rows.append({**row, "error": str(e).splitlines()[0][:300]})
            print(f"{model}: k={k} {mode}: FAILED {rows[-1]['error']}", flush=True)
        else:
            rows.append({**row, **found, "of_bare": found["member_images_per_s"] / bare})
            print(f"{model}: k={k} {mode}: {found['member_images_per_s']:,.0f} member img/s "
                  f"({rows[-1]['of_bare']:.2f} of bare)"
                  + (f", {found['job_images_per_s']:,.0f} with evaluation" if "job_images_per_s" in found else ""),
                  flush=True)
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        write()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", "--quick", action="store_true", help="tiny sizes: checks the logic in seconds")
    parser.add_argument("--out", default=None, help="result file (default bench/results/bench_gpu.json)")
    parser.add_argument("--models", nargs="*", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--jobs", nargs="*", type=int, default=[2, 3], help="jobs=N rows: N jobs side by side")
    parser.add_argument("--jobs-models", nargs="*", default=["resnet50"], help="models that get jobs=N rows")
    parser.add_argument("--jobs-only", action="store_true", help="the bare step and the jobs=N rows only")
    parser.add_argument("--mps", action="store_true", help="mark the jobs=N rows as run under the MPS daemon")
    parser.add_argument("--merge", nargs="*", default=None, help="write the rows of these result files to --out")
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--sync", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.merge is not None:
        merge(args.merge, args.out or "bench/results/bench_gpu.json")
        return 0
    if args.worker is not None:
        return worker(args)
    device = setup(1, args.device, 1)  # what every job does first
    rows: list[dict] = []
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "none"

    def write():
        payload = {"device": device.type, "gpu": gpu, "torch": torch.__version__,
                   "full_size": device.type == "cuda" and not args.tiny, "rows": rows}
        if args.out:
            Path(args.out).write_text(json.dumps({**payload, "machine": machine()}, indent=2) + "\n")
        else:
            save("bench_gpu", payload)

    for model in args.models:
        run_model(args, model, device, rows, write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
