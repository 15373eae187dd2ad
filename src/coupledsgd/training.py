"""The training engine: SGD with a learning-rate schedule, checkpoints that continue bit-for-bit.

A run is a model, its optimizer and four numbers: the current `step`, the `schedule_start` (the step
at which the learning-rate schedule is at position 0), and its `order` and `aug` seeds. It trains
until `schedule_start + steps`. The minibatch and augmentation at global step `s` depend only on the
seeds and `s` (see `data`), so a run continued from a checkpoint retraces the uninterrupted run.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data import DeviceData, augment, batch_indices, steps_per_epoch
from .models import build_model


@dataclass(frozen=True)
class Hparams:
    """The optimisation settings of config.yaml's `training` section."""

    steps: int
    batch_size: int
    lr: float
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    schedule: str = "cosine"          # cosine | step | constant
    milestones: tuple[int, ...] = ()  # steps at which `step` multiplies the rate by gamma
    gamma: float = 0.1
    warmup_steps: int = 0
    eval_every: int | None = None     # steps between evaluations; None = once per epoch
    eval_batch_size: int = 1000

    @classmethod
    def from_config(cls, section: dict) -> "Hparams":
        known = {k: v for k, v in section.items() if k in cls.__dataclass_fields__}
        known["milestones"] = tuple(known.get("milestones", ()))
        return cls(**known)


def learning_rate(h: Hparams, position: int) -> float:
    """Learning rate at `position` steps into the schedule (linear warm-up, then cosine or steps)."""
    if position < h.warmup_steps:
        return h.lr * (position + 1) / h.warmup_steps
    if h.schedule == "cosine":
        progress = (position - h.warmup_steps) / max(1, h.steps - h.warmup_steps)
        return h.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    if h.schedule == "step":
        return h.lr * h.gamma ** sum(position >= m for m in h.milestones)
    return h.lr


class SGD:
    """SGD with momentum, Nesterov and weight decay (not on BatchNorm parameters and biases), as torch.optim.SGD
    computes it (dampening 0), with the momentum buffers as plain tensors in parameter order.

    torch.optim's constructor imports torch._dynamo (1.5 s per job here); this is the same
    update without it. Buffers start at zero, which is what `coupled-to-t-reset` resets them to.
    """

    def __init__(self, model: nn.Module, h: Hparams):
        self.params = [p for p in model.parameters()]
        # No weight decay on BatchNorm parameters and biases (every tensor of dimension <= 1).
        self.decay = [h.weight_decay if p.dim() > 1 else 0.0 for p in self.params]
        self.momentum, self.nesterov = h.momentum, h.nesterov and h.momentum > 0
        self.buffers = [torch.zeros_like(p) for p in self.params]

    @torch.no_grad()
    def step(self, lr: float) -> None:
        for p, buf, wd in zip(self.params, self.buffers, self.decay):
            d = p.grad.add(p, alpha=wd) if wd else p.grad
            if self.momentum:
                buf.mul_(self.momentum).add_(d)
                d = d.add(buf, alpha=self.momentum) if self.nesterov else buf
            p.sub_(d, alpha=lr)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def reset(self) -> None:
        for buf in self.buffers:
            buf.zero_()

    def state_dict(self) -> dict:
        return {"momentum_buffers": [b.clone() for b in self.buffers]}

    def load_state_dict(self, state: dict) -> None:
        buffers = state["momentum_buffers"]
        if len(buffers) != len(self.buffers) or any(a.shape != b.shape for a, b in zip(buffers, self.buffers)):
            raise ValueError("optimizer state does not match the model's parameters")
        for dst, src in zip(self.buffers, buffers):
            dst.copy_(src)


@dataclass
class Run:
    """A model being trained, with everything a checkpoint must hold to continue it exactly."""

    model_name: str
    in_shape: tuple[int, ...]
    num_classes: int
    model: nn.Module
    optimizer: SGD
    hparams: Hparams
    seeds: dict[str, int]             # init, order, aug (and reinit where used)
    step: int = 0
    schedule_start: int = 0
    start: int = 0                    # the step this run began at: 0, or its spawn step
    info: dict = field(default_factory=dict)

    @property
    def end(self) -> int:
        return self.schedule_start + self.hparams.steps

    @classmethod
    def fresh(cls, model_name, in_shape, num_classes, hparams: Hparams, seeds: dict, device="cpu") -> "Run":
        model = build_model(model_name, in_shape, num_classes, seeds["init"]).to(device)
        return cls(model_name, tuple(in_shape), num_classes, model, SGD(model, hparams),
                   hparams, dict(seeds))

    def state_dict(self) -> dict:
        return {"model_name": self.model_name, "in_shape": list(self.in_shape),
                "num_classes": self.num_classes, "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "step": self.step,
                "schedule_start": self.schedule_start, "start": self.start, "seeds": dict(self.seeds),
                "info": dict(self.info)}

    @classmethod
    def from_state(cls, state: dict, hparams: Hparams, device="cpu") -> "Run":
        model = build_model(state["model_name"], state["in_shape"], state["num_classes"], 0)
        model.load_state_dict(state["model"])
        model.to(device)
        optimizer = SGD(model, hparams)
        optimizer.load_state_dict(state["optimizer"])
        return cls(state["model_name"], tuple(state["in_shape"]), state["num_classes"], model, optimizer,
                   hparams, dict(state["seeds"]), state["step"], state["schedule_start"], state["start"],
                   dict(state["info"]))


@dataclass(frozen=True)
class Accel:
    """The GPU path: bf16 autocast of forward passes, channels-last images, torch.compile.

    All off on the CPU (`for_device`), where float32 keeps runs bit-for-bit reproducible.
    """

    bf16: bool = False
    channels_last: bool = False
    compile: bool = False

    @classmethod
    def for_device(cls, device, settings: dict | None) -> "Accel":
        return cls(**(settings or {})) if torch.device(device).type == "cuda" else cls()

    def autocast(self, x: torch.Tensor):
        return torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def forward_of(self, model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        return torch.compile(model) if self.compile else model

    def batch(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x

    def output(self, out: torch.Tensor) -> torch.Tensor:
        """bf16 logits back to float32 for the loss; any other dtype (float64 in tests) untouched."""
        return out.float() if self.bf16 else out


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1000, accel: Accel = Accel()) -> torch.Tensor:
    """Logits on `x` in eval mode (running BatchNorm statistics); the model's mode is restored."""
    was_training = model.training
    model.eval()
    with accel.autocast(x):
        out = torch.cat([accel.output(model(accel.batch(x[i:i + batch_size]))) for i in range(0, len(x), batch_size)])
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

    def as_array(self) -> np.ndarray:
        return np.stack(self.correct) if self.correct else np.zeros((0, 0), dtype=bool)


def train(run: Run, data: DeviceData, until: int, evaluate: bool = False,
          log: Callable[[str], None] = lambda line: None, trajectory: Trajectory | None = None,
          checkpoint: Callable[[Run, Trajectory], None] | None = None, accel: Accel = Accel()) -> Trajectory:
    """Train `run` in place from its current step to `until`, evaluating on the test set if asked.

    Evaluation points are fixed by the run's start and end, not by where this call begins, so a run
    continued with the `trajectory` recorded so far yields the uninterrupted run's trajectory.
    `checkpoint(run, trajectory)` is offered the state before every step; it decides whether to save.
    Progress (step, loss, train and test accuracy, examples per second) is logged at least once per
    epoch. Returns the test-set correctness at each evaluation point (empty if `evaluate` is False).
    """
    h, model, opt = run.hparams, run.model, run.optimizer
    spe = steps_per_epoch(data.n_train, h.batch_size)
    every = h.eval_every or spe
    report_at = set(evaluation_steps(run.start, until, min(every, spe)))
    eval_at = set(evaluation_steps(run.start, run.end, every)) if evaluate else set()
    trajectory = trajectory if trajectory is not None else Trajectory()
    forward = accel.forward_of(model)
    model.train()
    loss_sum = torch.zeros((), device=data.x_train.device)
    hits = torch.zeros((), dtype=torch.int64, device=data.x_train.device)
    seen, clock = 0, time.perf_counter()
    while True:
        if checkpoint is not None and run.step < until:
            checkpoint(run, trajectory)
        if run.step in eval_at:
            logits = predict(forward, data.x_test, h.eval_batch_size, accel)
            correct = logits.argmax(1).eq(data.y_test)
            if run.step == run.end:
                trajectory.final_logits = logits
            trajectory.steps.append(run.step)
            trajectory.correct.append(correct.cpu().numpy())
        if run.step in report_at and run.step > 0 and seen:
            rate = seen / (time.perf_counter() - clock)
            test = f" test_acc {trajectory.correct[-1].mean():.4f}" if run.step in eval_at else ""
            log(f"step {run.step}/{run.end} lr {learning_rate(h, run.step - 1 - run.schedule_start):.5f} "
                f"loss {loss_sum.item() / seen:.4f} train_acc {hits.item() / seen:.4f}{test} "
                f"examples/s {rate:.0f}")
            loss_sum.zero_(), hits.zero_()
            seen, clock = 0, time.perf_counter()
        if run.step >= until:
            return trajectory
        idx = batch_indices(run.seeds["order"], run.step, data.n_train, h.batch_size).to(data.x_train.device)
        x = augment(data.x_train[idx], run.seeds["aug"], run.step, data.crop_pad, data.flip)
        y = data.y_train[idx]
        with accel.autocast(x):
            out = accel.output(forward(accel.batch(x)))
        loss = F.cross_entropy(out, y)
        opt.zero_grad()
        loss.backward()
        opt.step(learning_rate(h, run.step - run.schedule_start))
        loss_sum += loss.detach() * len(y)
        hits += out.argmax(1).eq(y).sum()
        seen += len(y)
        run.step += 1
