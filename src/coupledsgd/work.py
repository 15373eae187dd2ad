"""The work of an experiment's jobs and what the finished ones spent on it (no torch here: `coupledsgd
cost` and `coupledsgd status` use it).

Every training and barrier job writes a benchmark file (Layout's `job_benchmark`, `parent_benchmark`,
`barrier_benchmark`) whose column `s` is the job's wall-clock seconds. A job's work is counted from
the config: a training job trains its members x their steps x batch size (train_members) or t x
batch size (parent_state) and its members evaluate the test set at their evaluation points
(forward-only images); a barrier job passes its interpolated networks forward (forward-only images).
A forward-only image costs FORWARD_COST of a training image, so a job's `work` is its training images
plus FORWARD_COST x its forward-only images, in training images. Per job kind, the measured rate is
work / seconds over its finished jobs, and the jobs whose outputs are not there yet are projected at
that rate (`kind_cost`): the same count as `coupledsgd cost`'s estimate before a run, so the two agree
on a run that has not started.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from .core.conditions import parse_condition
from .core.config import job_shape
from .core.grid import barrier_set, parent_states, training_jobs
from .core.layout import Layout
from .core.registry import dataset

KINDS = ("train_members", "parent_state", "barrier")
# A forward pass costs about a third of a training step (forward and backward).
FORWARD_COST = 1 / 3


def member_span(config: dict, condition: str, t: int) -> tuple[int, int]:
    """(first step, last step) of a member: (0, T) without a parent, (t, T) for coupled-to-t,
    (t, t + T) where the optimizer is reset at the spawn."""
    T = config["training"]["steps"]
    c = parse_condition(condition)
    if not c.has_parent:
        return 0, T
    return t, (t + T if c.resets else T)


def evaluation_points(start: int, end: int, every: int) -> int:
    """How many test-set evaluations a member makes: its first step, every `every` steps, its end
    (coupledsgd.engine.training.evaluation_steps)."""
    return len(set(range(start, end, every)) | {end})


def member_evaluation_images(config: dict, condition: str, t: int) -> int:
    """The test-set images one member passes forward at its evaluation points (every `eval_every`
    steps, default one epoch)."""
    d, training = dataset(config["data"]), config["training"]
    n_train = min(d.n_train, config["data"]["n_train"] or d.n_train)
    every = training["eval_every"] or max(1, n_train // training["batch_size"])
    return evaluation_points(*member_span(config, condition, t), every) * d.n_test


def barrier_images(config: dict) -> int:
    """Forward-only images of one barrier job: `points` networks per child pair, each passing
    `bn_batches` training batches (to recompute BatchNorm statistics) and the test set."""
    b, n_test = config["barrier"], dataset(config["data"]).n_test
    per_point = (b["bn_batches"] * config["training"]["batch_size"] if b["recompute_bn"] else 0) + n_test
    return math.comb(config["ensemble"]["children"], 2) * b["points"] * per_point


# Resident memory of a training job on the CPU before its data: Python, torch and the model (650 MB
# measured for a ResNet-20 job on synthetic CIFAR-10 shapes, 64 examples), with room to spare.
JOB_BASE_MB = 1000


def job_memory_mb(config: dict) -> int:
    """The memory (MB) a training or barrier job asks for (`resources: mem_mb`): its base, the
    prepared dataset (uint8 images or float32 signals) and its normalised float32 copy, which stays in
    host memory on the CPU (on a GPU the copy is on the device, so this overestimates)."""
    d = dataset(config["data"])
    n_train = min(d.n_train, config["data"]["n_train"] or d.n_train)
    elements = (n_train + d.n_test) * math.prod(d.shape)
    cache = elements * (1 if d.kind == "image" else 4)
    return JOB_BASE_MB + math.ceil((cache + 4 * elements) / 2**20)


@dataclass(frozen=True)
class Job:
    kind: str  # the rule
    benchmark: Path  # its benchmark file (there once the job has succeeded)
    outputs: tuple  # files that exist once it is done
    images: int  # training images
    member_steps: int = 0
    forward: int = 0  # forward-only images: test-set evaluations, a barrier job's networks

    @property
    def work(self) -> float:
        """In training images."""
        return self.images + FORWARD_COST * self.forward

    @property
    def done(self) -> bool:
        return all(Path(o).exists() for o in self.outputs)


def benchmark_seconds(path: str | Path) -> float | None:
    """Wall-clock seconds of a Snakemake benchmark file (column `s`; the mean over repeats), or None
    where the file is missing or holds no row."""
    try:
        lines = Path(path).read_text().splitlines()
    except FileNotFoundError:
        return None
    if len(lines) < 2:
        return None
    column = lines[0].split("\t").index("s")
    values = [float(line.split("\t")[column]) for line in lines[1:] if line.strip()]
    return sum(values) / len(values) if values else None


def training_job_file(layout: Layout, job: list, shape: str) -> Path:
    """The benchmark file of the train_members job of these members."""
    m = job[0]
    return Path(layout.job_benchmark(shape, m.condition, m.t, m.parent, m.child))


def member_jobs(config: dict, layout: Layout) -> list[Job]:
    """The train_members and parent_state jobs of the grid."""
    batch, shape = config["training"]["batch_size"], job_shape(config)
    jobs = []
    for job in training_jobs(config):
        steps = sum(end - start for start, end in (member_span(config, m.condition, m.t) for m in job))
        outputs = tuple(Path(layout.predictions(m.condition, m.t, m.parent, m.child)) for m in job)
        evaluations = sum(member_evaluation_images(config, m.condition, m.t) for m in job)
        jobs.append(
            Job("train_members", training_job_file(layout, job, shape), outputs, steps * batch, steps, evaluations)
        )
    for p, t in parent_states(config):
        jobs.append(
            Job("parent_state", Path(layout.parent_benchmark(p, t)), (Path(layout.parent_state(p, t)),), t * batch, t)
        )
    return jobs


def barrier_jobs(config: dict, layout: Layout) -> list[Job]:
    images = barrier_images(config)
    return [
        Job("barrier", Path(layout.barrier_benchmark(c, t, p)), (Path(layout.barrier(c, t, p)),), 0, forward=images)
        for c, t, p in barrier_set(config)
    ]


@dataclass(frozen=True)
class KindCost:
    kind: str
    jobs: int
    done: int
    measured: int  # finished jobs with a benchmark file
    seconds: float  # their wall-clock seconds
    images: int  # their training images
    left_jobs: int
    left_images: int  # training images of the jobs left
    rate: float | None  # work (training images, forward-only at FORWARD_COST) per second
    rate_source: str
    left_seconds: float
    forward: int = 0  # forward-only images of the measured jobs
    left_forward: int = 0  # forward-only images of the jobs left


def kind_cost(kind: str, jobs: list[Job], assumed: tuple[float, str]) -> KindCost:
    measured = [(j, s) for j in jobs if j.done and (s := benchmark_seconds(j.benchmark)) is not None]
    seconds = sum(s for _, s in measured)
    work = sum(j.work for j, _ in measured)
    left = [j for j in jobs if not j.done]
    left_work = sum(j.work for j in left)
    if work and seconds:
        rate, source = work / seconds, f"measured: {len(measured)} finished job(s) of this run"
        left_seconds = left_work / rate
    elif measured:
        # finished jobs that train nothing (parent states at t = 0): their start-up is their cost
        rate, source = None, f"measured: {seconds / len(measured):.1f} s per job, {len(measured)} job(s)"
        left_seconds = seconds / len(measured) * len(left)
    else:
        rate, source = assumed
        source = f"assumed, no finished job yet: the default rate, {source.split(';')[0]}"
        left_seconds = left_work / rate
    return KindCost(
        kind,
        len(jobs),
        sum(j.done for j in jobs),
        len(measured),
        seconds,
        sum(j.images for j, _ in measured),
        len(left),
        sum(j.images for j in left),
        rate,
        source,
        left_seconds,
        sum(j.forward for j, _ in measured),
        sum(j.forward for j in left),
    )


def device_hours(config: dict, seconds: float) -> float:
    """One GPU per job on `device: cuda`; `threads` CPU cores per job on `device: cpu`."""
    return seconds / 3600 * (1 if config["device"] == "cuda" else config["threads"])
