"""The training engine: one loop for a set of k >= 1 runs, SGD with a learning-rate schedule,
checkpoints that continue bit-for-bit.

A run is a model, its optimizer and four numbers: the current `step`, the `schedule_start` (the step
at which the learning-rate schedule is at position 0), and its `order` and `aug` seeds. It trains
until `schedule_start + steps`. The minibatch and augmentation at global step `s` depend only on the
seeds and `s` (see `data`), so a run continued from a checkpoint retraces the uninterrupted run.

`train` takes k runs that share model, hparams and step range and trains them as one network
(`members`): a solo run is k = 1 and trains its own model. The step loop never waits for the device:
minibatch permutations and augmentation draws are made once per epoch and copied in one go, losses
and accuracies are summed on the device and read at report points only, and on CUDA the whole step
can be captured once as a CUDA graph (`Accel.graphs`).
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..core.errors import TrainingDiverged
from .data import DeviceData, MemberBatches, stack_channels, steps_per_epoch
from .members import Vmapped, member_network, named_tensors, stack_members, unstack_member
from .models import build_model
from .optim import SGD, Hparams, learning_rate
from .steps import EagerStep, GraphedStep

__all__ = [
    "SGD",
    "Accel",
    "Hparams",
    "Members",
    "Run",
    "Trajectory",
    "describe",
    "evaluation_steps",
    "learning_rate",
    "loss_bound",
    "predict",
    "train",
]

# A run's training loss diverged when it is non-finite, or above LOSS_BOUND times the larger of the
# loss over its lineage's first steps (up to its first progress line) and ln(classes), the loss of a
# uniform guess. The floor keeps a child spawned late, whose loss starts near 0, from being called
# diverged for a loss that is still below chance level; a member at chance (loss ln(classes)) is never
# diverged. A network that blew up without overflowing has a loss orders of magnitude above either.
LOSS_BOUND = 10.0


def loss_bound(first_loss: float, num_classes: int) -> float:
    """The training loss above which a run has diverged (LOSS_BOUND)."""
    return LOSS_BOUND * max(first_loss, math.log(num_classes))


@dataclass
class Run:
    """A model being trained, with everything a checkpoint must hold to continue it exactly."""

    model_name: str
    in_shape: tuple[int, ...]
    num_classes: int
    model: nn.Module
    optimizer: SGD
    hparams: Hparams
    seeds: dict[str, int]  # init, order, aug (and reinit where used)
    step: int = 0
    schedule_start: int = 0
    start: int = 0  # the step this run began at: 0, or its spawn step
    info: dict = field(default_factory=dict)
    model_kwargs: dict = field(default_factory=dict)  # model.kwargs of a model given by import path

    @property
    def end(self) -> int:
        return self.schedule_start + self.hparams.steps

    @classmethod
    def fresh(
        cls,
        model_name,
        in_shape,
        num_classes,
        hparams: Hparams,
        seeds: dict,
        device="cpu",
        model_kwargs: dict | None = None,
    ) -> "Run":
        model = build_model(model_name, in_shape, num_classes, seeds["init"], model_kwargs).to(device)
        return cls(
            model_name,
            tuple(in_shape),
            num_classes,
            model,
            SGD(model, hparams),
            hparams,
            dict(seeds),
            model_kwargs=dict(model_kwargs or {}),
        )

    def state_dict(self) -> dict:
        return {
            "model_name": self.model_name,
            "in_shape": list(self.in_shape),
            "num_classes": self.num_classes,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "schedule_start": self.schedule_start,
            "start": self.start,
            "seeds": dict(self.seeds),
            "info": dict(self.info),
            "model_kwargs": dict(self.model_kwargs),
        }

    @classmethod
    def from_state(cls, state: dict, hparams: Hparams, device="cpu") -> "Run":
        kwargs = state.get("model_kwargs", {})
        model = build_model(state["model_name"], state["in_shape"], state["num_classes"], 0, kwargs)
        model.load_state_dict(state["model"])
        model.to(device)
        optimizer = SGD(model, hparams)
        optimizer.load_state_dict(state["optimizer"])
        return cls(
            state["model_name"],
            tuple(state["in_shape"]),
            state["num_classes"],
            model,
            optimizer,
            hparams,
            dict(state["seeds"]),
            state["step"],
            state["schedule_start"],
            state["start"],
            dict(state["info"]),
            dict(kwargs),
        )


@dataclass(frozen=True)
class Accel:
    """The GPU path: bf16 autocast of forward passes, channels-last images, torch.compile, CUDA graphs.

    All off on the CPU (`for_device`), where float32 keeps runs bit-for-bit reproducible; the tests
    switch them on by hand to run the same code on the CPU.
    """

    bf16: bool = False
    channels_last: bool = False
    compile: bool = False
    graphs: bool = False

    @classmethod
    def for_device(cls, device, settings: dict | None) -> "Accel":
        return cls(**(settings or {})) if torch.device(device).type == "cuda" else cls()

    def autocast(self, x: torch.Tensor):
        # Autocast's cast cache would hold tensors from outside a captured graph.
        return torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.bf16, cache_enabled=not self.graphs)

    def forward_of(self, model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        # Stacked members under vmap hold 5-d convolution weights, which have no channels-last layout.
        if self.channels_last and not isinstance(model, Vmapped):
            model.to(memory_format=torch.channels_last)
        return torch.compile(model) if self.compile else model

    def batch(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x

    def output(self, out: torch.Tensor) -> torch.Tensor:
        """bf16 logits back to float32 for the loss; any other dtype (float64 in tests) untouched."""
        return out.float() if self.bf16 else out


@torch.no_grad()
def predict(
    model: nn.Module, x: torch.Tensor, batch_size: int = 1000, accel: Accel = Accel(), members: int = 1
) -> torch.Tensor:
    """Logits on `x` in eval mode (running BatchNorm statistics); the model's mode is restored.

    For a network of k `members` every member sees `x`: the result is (N, k x classes), in chunks of
    batch_size // k examples, so the activations of a chunk are those of one member's batch.
    """
    was_training = model.training
    model.eval()
    size, repeat = max(1, batch_size // members), (1, members) + (1,) * (x.dim() - 2)
    with accel.autocast(x):
        out = torch.cat(
            [
                accel.output(model(accel.batch(x[i : i + size] if members == 1 else x[i : i + size].repeat(repeat))))
                for i in range(0, len(x), size)
            ]
        )
    model.train(was_training)
    return out


def evaluation_steps(start: int, end: int, every: int) -> list[int]:
    """Evaluation points of a run from `start` to `end`: its first step, every `every` steps, its end."""
    return sorted(set(range(start, end, every)) | {end})


@dataclass
class Trajectory:
    steps: list[int] = field(default_factory=list)
    correct: list[np.ndarray] = field(default_factory=list)
    final_logits: torch.Tensor | None = None  # test-set logits at the run's end, kept to save a pass
    # the learning curve: at each progress report, the step, the learning rate of its last step and the
    # running means of the training loss and accuracy since the previous report (the log's numbers)
    curve: list[dict] = field(default_factory=list)
    # the running sums since the last report as of an in-job checkpoint (loss_sum, hits, seen), so that a
    # resumed job's next report, and its curve, are those of the uninterrupted job
    pending: dict | None = None

    def as_array(self) -> np.ndarray:
        return np.stack(self.correct) if self.correct else np.zeros((0, 0), dtype=bool)


def describe(run: Run) -> str:
    """Which member (or parent) a run is, for log lines and errors."""
    info = run.info
    if "condition" not in info:
        return f"parent {info.get('parent')}"
    return f"{info['condition']} t={info.get('spawned_at', 0)} parent {info.get('parent')} child {info.get('child')}"


class Members:
    """k runs bound to one network (`members`) and one optimizer over its tensors.

    For k = 1 the network is the run's own model and the optimizer the run's own. For k > 1 the runs'
    models and momentum buffers hold their values as of the last `write_back`.
    """

    def __init__(self, runs: list[Run]):
        self.runs, self.k = runs, len(runs)
        r0 = runs[0]
        self.shared: dict = {}
        if self.k == 1:
            self.net, self.optimizer = r0.model, r0.optimizer
            return
        like = next(r0.model.parameters())
        net = member_network(r0.model_name, r0.in_shape, r0.num_classes, self.k, r0.model).to_empty(device=like.device)
        net.to(like.dtype)
        self.shared = stack_members(net, [named_tensors(r.model) for r in runs])
        tensors = named_tensors(net)
        params = [tensors[n] for n, _ in r0.model.named_parameters()]
        buffers = [torch.stack([r.optimizer.buffers[j] for r in runs]).view_as(p) for j, p in enumerate(params)]
        self.net, self.optimizer = net, SGD(params, r0.hparams, r0.optimizer.decay, buffers)

    def bind(self, accel: "Accel") -> Callable[[torch.Tensor], torch.Tensor]:
        """The network's forward under `accel` (channels-last, compiled), with the momentum buffers
        in the layout `accel` gave the parameters."""
        forward = accel.forward_of(self.net)
        self.optimizer.follow_layouts()
        return forward

    def state_tensors(self) -> list[torch.Tensor]:
        """Every tensor a training step changes: parameters, buffers, momentum."""
        return [*named_tensors(self.net).values(), *self.optimizer.buffers]

    def write_back(self, step: int) -> None:
        for i, run in enumerate(self.runs):
            run.step = step
            if self.k > 1:
                unstack_member(self.net, i, self.k, named_tensors(run.model), self.shared)
                with torch.no_grad():
                    for b, fb in zip(run.optimizer.buffers, self.optimizer.buffers):
                        b.copy_(fb.view(self.k, *b.shape)[i])


def _check_runs(runs: list[Run]) -> None:
    r0 = runs[0]
    for r in runs[1:]:
        if (r.hparams, r.model_name, r.in_shape, r.num_classes, r.model_kwargs) != (
            r0.hparams,
            r0.model_name,
            r0.in_shape,
            r0.num_classes,
            r0.model_kwargs,
        ):
            raise ValueError("runs trained together must share hparams and model")
        if (r.step, r.schedule_start, r.start) != (r0.step, r0.schedule_start, r0.start):
            raise ValueError("runs trained together must share start step, current step and schedule")
    if len({id(r.model) for r in runs}) != len(runs):
        raise ValueError("runs trained together must not share a model")


def train(
    runs: list[Run],
    data: DeviceData,
    until: int | None = None,
    evaluate: bool = False,
    log: Callable[[str], None] = lambda line: None,
    trajectories: list[Trajectory] | None = None,
    checkpoint=None,
    accel: Accel = Accel(),
    on_divergence: str = "stop",
) -> list[Trajectory]:
    """Train `runs` in place, as one network, from their common step to `until` (default: their end),
    evaluating on the test set if asked.

    Evaluation points are fixed by the runs' start and end, not by where this call begins, so runs
    continued with the `trajectories` recorded so far yield the uninterrupted runs' trajectories.
    `checkpoint` (a `resume.Resume`) is asked before every step whether a save is due, and saves at
    `until` in any case. Progress (step, each member's loss, train and test accuracy, examples per
    second, elapsed time and ETA) is logged at least once per epoch. A run whose training loss is
    non-finite at a report stops training there (`TrainingDiverged`) with `on_divergence="stop"`; with
    "skip" it is marked (`run.info["diverged"]`: step and learning rate) and the others go on: each
    member has its own loss term, parameters and momentum, so its non-finite values reach no other
    member. Training ends early once every run is marked. A finite loss above `loss_bound` is marked
    too (`run.info["blew_up"]`: step, loss and bound), and the run trains on; the loss over a run's
    first steps is kept in `run.info["first_loss"]`, and a child inherits its parent's.
    Returns each run's test-set correctness at its evaluation points (empty if `evaluate` is False).
    """
    _check_runs(runs)
    r0, k = runs[0], len(runs)
    h, until = r0.hparams, r0.end if until is None else until
    report_at, eval_at = _report_and_eval_steps(r0, until, data.n_train, evaluate)
    trajectories = trajectories if trajectories is not None else [Trajectory() for _ in runs]
    members = Members(runs)
    forward = members.bind(accel)
    members.net.train()
    batches = MemberBatches(data, [r.seeds["order"] for r in runs], [r.seeds["aug"] for r in runs], h.batch_size)
    step_fn, step = None, r0.step
    progress = _Progress(k, data.x_train.device, step)
    progress.restore(trajectories)
    # Each step seeds torch's generator (`noise_seed`); the caller's generator state is restored after.
    device = data.x_train.device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else [], device_type=device.type):
        try:
            while True:
                # The last save, at `until`, comes before the last evaluation: a job rerun after it has
                # written its outputs (Snakemake marks them incomplete when stopped) only evaluates again.
                if checkpoint is not None and (checkpoint.due(step) if step < until else not checkpoint.saved_at(step)):
                    members.write_back(step)
                    progress.keep(trajectories)
                    checkpoint.save(runs, trajectories)
                if step in eval_at:
                    _evaluate(forward, data, h, accel, k, step, r0.end, trajectories)
                if step in report_at and step > 0 and progress.seen:
                    losses = progress.report(
                        log, runs, step, until, trajectories if step in eval_at else None, trajectories
                    )
                    _mark_blown_up(runs, losses, step, log)
                    bad = [i for i, v in enumerate(losses) if not math.isfinite(v)]
                    if _mark_diverged(runs, bad, step, on_divergence, log):
                        return trajectories
                if step >= until:
                    return trajectories
                x, y = batches(step)
                x = stack_channels(x)
                lr = learning_rate(h, step - r0.schedule_start)
                if step_fn is None:
                    step_fn = _step_function(forward, members, accel, x, y, log)
                torch.manual_seed(noise_seed([r.seeds["aug"] for r in runs], step))
                losses, correct = step_fn(x, y, lr)
                progress.add(losses, correct, y.shape[1])
                step += 1
        finally:
            members.write_back(step)


def noise_seed(aug_seeds: list[int], step: int) -> int:
    """The seed of torch's generator for the training step `step` of the members with these `aug`
    streams: a model's dropout masks (and any other draw of its forward pass) are a pure function of
    the member's stream and the step, the same in a resumed or spawned run. A member's own masks
    alone; members trained as one network draw theirs together under vmap (randomness="different"):
    each member its own masks, independent and equal in distribution to its solo masks, not equal to
    them bit for bit."""
    key = "noise/" + ",".join(map(str, aug_seeds)) + f"/{step}"
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little") >> 1


def _mark_diverged(runs: list[Run], bad: list[int], step: int, on_divergence: str, log) -> bool:
    """Stop on (`TrainingDiverged`) or mark the runs `bad` newly found non-finite at `step`; True when
    every run is marked."""
    r0 = runs[0]
    lr = learning_rate(r0.hparams, step - 1 - r0.schedule_start)
    for i in bad:
        if "diverged" in runs[i].info:
            continue
        message = f"{describe(runs[i])}: the training loss became non-finite by step {step} (learning rate {lr:.4g})"
        if on_divergence == "stop":
            raise TrainingDiverged(f"{message}; lower training.lr or add warm-up steps")
        runs[i].info["diverged"] = {"step": step, "lr": lr}
        log(f"WARNING: {message}; it is recorded as diverged and the other members go on")
    return all("diverged" in r.info for r in runs)


def _mark_blown_up(runs: list[Run], losses: list[float], step: int, log) -> None:
    """Keep each run's first reported loss, and mark the runs whose finite loss at `step` is above
    their `loss_bound` (once: the first step it was)."""
    for run, loss in zip(runs, losses):
        if not math.isfinite(loss) or "diverged" in run.info:
            continue
        if "first_loss" not in run.info:
            run.info["first_loss"] = loss
            continue
        bound = loss_bound(run.info["first_loss"], run.num_classes)
        if loss > bound and "blew_up" not in run.info:
            run.info["blew_up"] = {"step": step, "loss": loss, "bound": bound}
            log(
                f"WARNING: {describe(run)}: the training loss {loss:.4g} at step {step} is above {bound:.4g} "
                f"({LOSS_BOUND:g} x the larger of its first steps' loss and ln(classes)): it diverged; it "
                "trains on, and is flagged in the tables"
            )


def _report_and_eval_steps(r0: Run, until: int, n_train: int, evaluate: bool) -> tuple[set[int], set[int]]:
    """The steps at which `train` logs progress (at least once per epoch) and evaluates on the test set."""
    spe = steps_per_epoch(n_train, r0.hparams.batch_size)
    every = r0.hparams.eval_every or spe
    report_at = set(evaluation_steps(r0.start, until, min(every, spe)))
    eval_at = set(evaluation_steps(r0.start, r0.end, every)) if evaluate else set()
    return report_at, eval_at


def _step_function(forward, members: Members, accel: Accel, x: torch.Tensor, y: torch.Tensor, log):
    """The step `train` runs: captured once as a CUDA graph (`Accel.graphs`) on the first batch, or eager."""
    step_fn = (
        GraphedStep(forward, members.optimizer, accel, members.state_tensors(), x, y)
        if accel.graphs
        else EagerStep(forward, members.optimizer, accel)
    )
    if getattr(step_fn, "failure", None):
        log(f"cuda.graphs: the step could not be captured ({step_fn.failure}); it runs uncaptured")
    return step_fn


class _Progress:
    """Each member's training loss and hits summed on the device since the last report, read at report
    points only (the step loop never waits for the device)."""

    def __init__(self, k: int, device, step: int):
        self.loss_sum = torch.zeros(k, device=device)
        self.hits = torch.zeros(k, dtype=torch.int64, device=device)
        self.first, self.seen = step, 0
        self.began = self.clock = time.perf_counter()

    def keep(self, trajectories: list[Trajectory]) -> None:
        """Each run's running sums into its trajectory (`Trajectory.pending`), for an in-job checkpoint."""
        for i, t in enumerate(trajectories):
            t.pending = {"loss_sum": float(self.loss_sum[i]), "hits": int(self.hits[i]), "seen": self.seen}

    def restore(self, trajectories: list[Trajectory]) -> None:
        """The running sums a checkpoint kept (`keep`), if every trajectory holds them."""
        if trajectories and all(t.pending is not None for t in trajectories):
            self.loss_sum.copy_(torch.tensor([t.pending["loss_sum"] for t in trajectories], dtype=self.loss_sum.dtype))
            self.hits.copy_(torch.tensor([t.pending["hits"] for t in trajectories], dtype=self.hits.dtype))
            self.seen = trajectories[0].pending["seen"]

    def add(self, losses: torch.Tensor, correct: torch.Tensor, n: int) -> None:
        self.loss_sum += losses * n
        self.hits += correct
        self.seen += n

    def report(
        self,
        log,
        runs: list[Run],
        step: int,
        until: int,
        trajectories: list[Trajectory] | None,
        curves: list[Trajectory] = (),
    ) -> list[float]:
        """Log the members' progress at `step` (test accuracies from `trajectories`, evaluated at `step`)
        and append it to each run's learning curve (`curves`); returns each run's mean training loss
        since the last report."""
        r0 = runs[0]
        now = time.perf_counter()
        lr = learning_rate(r0.hparams, step - 1 - r0.schedule_start)
        losses = (self.loss_sum / self.seen).tolist()
        accuracies = (self.hits / self.seen).tolist()
        for curve, loss, accuracy in zip(curves, losses, accuracies):
            curve.curve.append({"step": step, "lr": lr, "train_loss": loss, "train_accuracy": accuracy})
        # a resumed job can report at its first step, with the sums its checkpoint kept
        eta = (now - self.began) / max(1, step - self.first) * (until - step)
        _report(
            log,
            step,
            r0.end,
            lr,
            losses,
            accuracies,
            [t.correct[-1].mean() for t in trajectories] if trajectories is not None else None,
            len(runs) * self.seen / (now - self.clock),
            now - self.began,
            eta,
        )
        self.loss_sum.zero_(), self.hits.zero_()
        self.seen, self.clock = 0, time.perf_counter()
        return losses


def _evaluate(
    forward, data: DeviceData, h: Hparams, accel: Accel, k: int, step: int, end: int, trajectories: list[Trajectory]
) -> None:
    logits = predict(forward, data.x_test, h.eval_batch_size, accel, k).view(len(data.x_test), k, -1)
    correct = logits.argmax(2).eq(data.y_test[:, None]).t().cpu().numpy()
    for i, t in enumerate(trajectories):
        t.steps.append(step)
        t.correct.append(correct[i])
        if step == end:
            t.final_logits = logits[:, i].contiguous()


def _report(log, step, end, lr, losses, accuracies, test, rate, elapsed, eta) -> None:
    fmt = lambda values: " ".join(f"{v:.4f}" for v in values)
    test = f" test_acc {fmt(test)}" if test is not None else ""
    log(
        f"step {step}/{end} lr {lr:.5f} loss {fmt(losses)} train_acc {fmt(accuracies)}{test} "
        f"examples/s {rate:.0f} elapsed {elapsed:.0f}s eta {eta:.0f}s"
    )
