"""What an experiment costs: before it runs (trainings, SGD steps, images, GPU-hours) and, once
jobs have finished, what they spent and what the rest of the grid will take at the measured rates.

    coupledsgd cost --configfile configs/cifar10-resnet20.yaml [--images-per-second N]
    python -m coupledsgd.cost configs/cifar10-resnet20.yaml        (the same)

Spent and projected (`run_cost`, from `coupledsgd.work`): every training and barrier job writes a
benchmark file of its wall-clock seconds; per job kind, the measured rate is images / seconds over its
finished jobs (start-up included, so it fits jobs of the same size), and the jobs whose outputs are
not there yet are projected at that rate; a kind with no finished job is projected at the assumed
rate below and the report says so. Device-hours: one GPU per job (`device: cuda`), or `threads`
CPUs per job (`device: cpu`), for the job's wall time.

Counted from the config alone (the same grid the workflow builds, `core.grid.members`):

- parent states: one job per (parent, spawn step t), trained from step 0 to t: t SGD steps;
- members: `no-coupling` and `coupled-order` train from 0 to T; a `coupled-to-t` child continues its
  parent from t to T (T steps in all, the first t its parent's: T - t of its own); a
  `coupled-to-t-reset` or re-initialised child trains from t to t + T (t + T in all: T of its own).
  The steps counted are the steps each job runs, so the parent's t steps count once per (parent, t);
- training images = SGD steps x batch size;
- forward-only images: each member's test-set evaluations (its first step, every `eval_every` steps
  (default one epoch) after it, and its last step), and each barrier job's `points` interpolated
  networks per child pair, each pass over `bn_batches` training batches (to recompute BatchNorm
  statistics) and the test set. A forward pass costs about a third of a training step (forward and
  backward), so these count at a third of a training image;
- hours = (training images + forward-only images / 3) / images per second, for one device, each job
  kind at its own rate: members at the rate of their jobs (k members a job), parent states and
  barrier jobs (one network a job) at the rate of one member a job. `coupledsgd.work` counts each
  job's work the same way, so the estimate before a run and the projection of a run that has not
  started ("left: ... in all") are one number;
- disk: every member's final state and every parent state hold the weights and the momentum buffers
  in float32, about 8 bytes per parameter each (Parquet outputs are small beside them).

The images per second are member training images per second on one device (GPU for `device:
cuda`), for jobs of the configured `job_shape`. The training logs print it (`examples/s` on every
progress line, logs/{exp}/children/...), or pass it with --images-per-second. Otherwise, for `device:
cuda`, the GPU rows of bench/results/bench_gpu.json (`bench/bench_gpu.py` on a GPU; --bench) give the
rate of the loop at the job's k members (the nearest k measured, eager or graphs as `cuda.graphs`
says), and failing those the defaults in `IMAGES_PER_SECOND`. The report says which it used and
whether that rate was measured or assumed.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from .core.config import SCHEMA, validate
from .core.errors import ConfigError
from .core.grid import barrier_set, members, parent_states, training_jobs
from .core.layout import Layout
from .core.registry import dataset
from .work import benchmark_seconds  # noqa: F401 (part of this module's interface: tests, bench)
from .work import FORWARD_COST, evaluation_points  # noqa: F401 (part of this module's interface)
from .work import (
    KINDS,
    KindCost,
    barrier_images,
    barrier_jobs,
    device_hours,
    kind_cost,
    member_evaluation_images,
    member_jobs,
    member_span,
)

# (device, model) -> (training images per second of one job, where the figure comes from).
# Measured: on the 2-core CPU machine this project was built on, 1 torch thread per job, quiet machine.
# Assumed: no GPU was available to measure; order-of-magnitude guesses for one A100/H100-class GPU in
# float32 (TF32 convolutions, PyTorch's default) at batch size 128. Measure yours (see module doc).
IMAGES_PER_SECOND = {
    ("cpu", "cnn1d"): (13000, "measured: MNIST-1D, batch 64, 1 CPU thread (the default experiment's logs)"),
    ("cpu", "resnet8"): (7000, "measured: 8x8 digits, batch 64, 1 CPU thread"),
    ("cpu", "resnet20"): (157, "measured: 32x32, batch 128, 1 CPU thread"),
    ("cpu", "resnet50"): (2, "measured: 64x64, batch 32, 1 CPU thread"),
    ("cpu", "vit"): (50, "measured: 64x64, batch 128, 1 CPU thread"),
    ("cuda", "cnn1d"): (100000, "assumed: one GPU, launch-bound small model"),
    ("cuda", "resnet8"): (40000, "assumed: one GPU, launch-bound small model"),
    ("cuda", "resnet20"): (
        11560,
        "measured: one H200, one member per job through the training loop of "
        "commit 5832250, bf16 + channels-last, batch 128",
    ),
    ("cuda", "resnet50"): (3715, "measured: one H200, one member, 64x64, bf16 + channels-last, batch 128"),
    ("cuda", "vit"): (10911, "measured: one H200, one member, 64x64, float32, batch 128"),
}
BENCH = Path("bench/results/bench_gpu.json")


@dataclass(frozen=True)
class Estimate:
    members: int  # member trainings (in train_members jobs)
    parent_states: int  # parent-state trainings (parent_state jobs)
    barrier_jobs: int
    member_steps: int  # SGD steps the member jobs run
    parent_steps: int  # SGD steps the parent-state jobs run
    train_images: int  # SGD steps x batch size
    eval_images: int  # test-set images the members evaluate
    barrier_images: int  # images the barrier jobs pass forward
    images_per_second: float  # the member jobs' rate
    rate_source: str
    parameters: int = 0  # of the model, for this dataset's input shape and classes
    seconds: float = 0.0  # on one device, every job kind at its own rate
    solo_rate: float = 0.0  # parent-state and barrier jobs' rate (one network a job)

    @property
    def checkpoint_bytes(self) -> int:
        """Final member states and parent states: weights and momentum, float32."""
        return self.trainings * 8 * self.parameters

    @property
    def trainings(self) -> int:
        return self.members + self.parent_states

    @property
    def steps(self) -> int:
        return self.member_steps + self.parent_steps

    @property
    def forward_images(self) -> int:
        return self.eval_images + self.barrier_images

    @property
    def images(self) -> int:
        return self.train_images + self.forward_images

    @property
    def hours(self) -> float:
        return self.seconds / 3600


def parameter_count(config: dict) -> int:
    from .engine.models import build_model

    d, model = dataset(config["data"]), config["model"]
    return sum(p.numel() for p in build_model(model["name"], d.shape, d.classes, 0, model.get("kwargs")).parameters())


def bench_rate(config: dict, bench: Path, k: int | None = None) -> tuple[float, str] | None:
    """The member images/s that bench_gpu.py measured on a GPU for this model and `k` members a job
    (default: the config's training jobs), if any."""
    import json

    if config["device"] != "cuda" or not bench.is_file():
        return None
    result = json.loads(bench.read_text())
    if result.get("device") != "cuda" or not result.get("full_size"):
        return None
    k = k or max(len(job) for job in training_jobs(config))
    mode = "graphs" if config["cuda"]["graphs"] else "eager"
    rows = [
        r
        for r in result["rows"]
        if r["model"] == config["model"]["name"] and r["mode"] == mode and "member_images_per_s" in r
    ]  # rows of a failed mode hold an error instead
    if not rows:
        return None
    row = min(rows, key=lambda r: (abs(r["k"] - k), -r["k"]))
    return row["member_images_per_s"], (
        f"measured: {bench}, {result.get('gpu')}, loop k={row['k']} {mode} "
        f"(jobs here train {k} member{'s' if k > 1 else ''})"
    )


def default_rate(config: dict, bench: Path = BENCH, k: int | None = None) -> tuple[float, str]:
    measured = bench_rate(config, bench, k)
    if measured:
        return measured
    key = (config["device"], config["model"]["name"])
    if key not in IMAGES_PER_SECOND:
        raise ConfigError(
            f"model.name: no default images per second for {key[1]!r} on {key[0]}; pass --images-per-second"
        )
    rate, source = IMAGES_PER_SECOND[key]
    k = max(len(job) for job in training_jobs(config))
    if config["device"] == "cuda" and k > 1:
        source += (
            f"; jobs here train {k} members as one network, faster per member than this: "
            f"run bench/bench_gpu.py on your GPU for their rate"
        )
    return rate, source


def rates(config: dict, images_per_second: float | None = None, bench: Path = BENCH) -> dict[str, tuple[float, str]]:
    """Each job kind's rate in training images per second (forward-only images at FORWARD_COST) and
    where it comes from: members at their jobs' k, parent states and barriers (one network a job) at
    k = 1; a given rate for all."""
    if images_per_second is not None:
        if images_per_second <= 0:
            raise ValueError(f"images per second must be positive, got {images_per_second}")
        given = (float(images_per_second), "given")
        return dict.fromkeys(KINDS, given)
    solo = default_rate(config, bench, k=1)
    return {"train_members": default_rate(config, bench), "parent_state": solo, "barrier": solo}


def estimate(config: dict, images_per_second: float | None = None, bench: Path = BENCH) -> Estimate:
    """The cost of a validated config (defaults filled in, as `config.validate` returns it)."""
    batch = config["training"]["batch_size"]
    grid = members(config)
    member_steps = eval_images = 0
    for m in grid:
        start, end = member_span(config, m.condition, m.t)
        member_steps += end - start
        eval_images += member_evaluation_images(config, m.condition, m.t)
    states = parent_states(config)
    parent_steps = sum(t for _, t in states)
    barriers = len(barrier_set(config)) * barrier_images(config)
    rate = rates(config, images_per_second, bench)
    seconds = (
        (member_steps * batch + FORWARD_COST * eval_images) / rate["train_members"][0]
        + parent_steps * batch / rate["parent_state"][0]
        + FORWARD_COST * barriers / rate["barrier"][0]
    )
    return Estimate(
        members=len(grid),
        parent_states=len(states),
        barrier_jobs=len(barrier_set(config)),
        member_steps=member_steps,
        parent_steps=parent_steps,
        train_images=(member_steps + parent_steps) * batch,
        eval_images=eval_images,
        barrier_images=barriers,
        images_per_second=rate["train_members"][0],
        rate_source=rate["train_members"][1],
        parameters=parameter_count(config),
        seconds=seconds,
        solo_rate=rate["parent_state"][0],
    )


def report(config: dict, e: Estimate) -> str:
    device = "GPU" if config["device"] == "cuda" else "CPU"
    solo = (
        f"; parent states and barrier jobs (one network a job) at {e.solo_rate:,.0f}"
        if e.solo_rate != e.images_per_second
        else ""
    )
    return "\n".join(
        [
            f"experiment {config['experiment']}: {config['model']['name']} on {config['data']['name']}, "
            f"device {config['device']}, T = {config['training']['steps']:,} steps, batch {config['training']['batch_size']}",
            f"trainings: {e.trainings:,} ({e.members:,} members + {e.parent_states:,} parent states), "
            f"and {e.barrier_jobs:,} barrier jobs",
            f"SGD steps: {e.steps:,} (members {e.member_steps:,}, parent states {e.parent_steps:,})",
            f"images: {e.images:,} ({e.train_images:,} trained on; forward only: {e.eval_images:,} in "
            f"test-set evaluations, {e.barrier_images:,} in barrier jobs)",
            f"{device}-hours: {_hours(device_hours(config, e.seconds))} at {e.images_per_second:,.0f} member "
            f"training images/s ({e.rate_source}){solo}; forward-only images count 1/3",
            f"disk: about {_size(e.checkpoint_bytes)} of checkpoints ({e.trainings:,} states of "
            f"{e.parameters:,} parameters and their momentum, float32)",
        ]
    )


def _size(n: int) -> str:
    return f"{n / 1e9:,.1f} GB" if n >= 1e9 else f"{n / 1e6:,.1f} MB"


# ---- what a run spent and what is left, at the measured rates (coupledsgd.work) --------------------


def run_cost(
    config: dict, results: str | Path = "results", images_per_second: float | None = None, bench: Path = BENCH
) -> list[KindCost]:
    """Spent and projected cost of each job kind of the experiment under `results`."""
    layout = Layout(config["experiment"], results=str(results))
    assumed = rates(config, images_per_second, bench)
    jobs = member_jobs(config, layout) + barrier_jobs(config, layout)
    return [kind_cost(kind, [j for j in jobs if j.kind == kind], assumed[kind]) for kind in KINDS]


def run_report(config: dict, costs: list[KindCost], results: str | Path = "results") -> str:
    unit = "GPU-hours" if config["device"] == "cuda" else "CPU-hours"
    spent = sum(c.seconds for c in costs)
    left = sum(c.left_seconds for c in costs)
    where = Layout(config["experiment"], results=str(results)).benchmarks
    lines = [
        f"spent so far ({where}): {_hours(device_hours(config, spent))} {unit}, "
        f"{sum(c.measured for c in costs):,} jobs measured"
    ]
    for c in costs:
        work = c.images + FORWARD_COST * c.forward
        rate = f"{work / c.seconds:,.0f} images/s" if work and c.seconds else "no images"
        lines.append(
            f"  {c.kind}: {c.done:,} of {c.jobs:,} jobs done, {c.measured:,} measured: "
            f"{c.seconds:,.1f} s, {_images(c.images, c.forward)}, {rate}"
        )
    lines.append(
        f"left: {sum(c.left_jobs for c in costs):,} jobs, about "
        f"{_hours(device_hours(config, left))} {unit} more, {_hours(device_hours(config, spent + left))} in all"
    )
    for c in costs:
        at = f"{c.rate:,.0f} images/s" if c.rate else "per job"
        lines.append(
            f"  {c.kind}: {c.left_jobs:,} jobs, {_images(c.left_images, c.left_forward)}, "
            f"{_hours(device_hours(config, c.left_seconds))} {unit} at {at} ({c.rate_source})"
        )
    lines.append("  (images/s: training images per second, a forward-only image counting 1/3)")
    return "\n".join(lines)


def _images(trained: int, forward: int) -> str:
    return f"{trained + forward:,} images ({forward:,} forward only)"


def _hours(h: float) -> str:
    return f"{h:,.1f}" if h >= 10 else f"{h:.3g}"


def schema_path(given: str | None):
    """The --schema given, or the package's (`coupledsgd.core.config.SCHEMA`)."""
    if given is None:
        return SCHEMA
    if not Path(given).is_file():
        raise FileNotFoundError(f"config schema {given} not found")
    return Path(given)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="coupledsgd cost",
        description=__doc__.split("\n\n")[0],
        epilog="examples:\n" + __doc__.split("\n\n")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "config",
        nargs="?",
        default=None,
        help="experiment config (YAML), e.g. configs/cifar10-resnet20.yaml; default config.yaml",
    )
    parser.add_argument("--configfile", default=None, help="the same as the positional config (as for snakemake)")
    parser.add_argument("--results", default="results", help="folder of the runs' results (default: results)")
    parser.add_argument(
        "--images-per-second",
        type=float,
        default=None,
        help="training images per second of one job on one device (the `examples/s` of a "
        "training log); default: IMAGES_PER_SECOND for the config's model and device",
    )
    parser.add_argument("--schema", default=None, help="config schema (default: the package's own)")
    parser.add_argument("--bench", default=str(BENCH), help=f"bench_gpu.py results (default: {BENCH})")
    args = parser.parse_args(argv)
    try:
        path = Path(args.configfile or args.config or "config.yaml")
        config = validate(yaml.safe_load(path.read_text()) or {}, schema_path(args.schema))
        print(report(config, estimate(config, args.images_per_second, Path(args.bench))))
        print(
            run_report(config, run_cost(config, args.results, args.images_per_second, Path(args.bench)), args.results)
        )
    except ConfigError as e:
        print(f"Error in config {path}: {e}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError) as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
