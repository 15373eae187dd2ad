"""The optimisation of every run: its settings (`Hparams`, whose defaults are the schema's), the
learning-rate schedule, and SGD with momentum as multi-tensor updates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import nn

from ..core.config import defaults

# Marks a field left to the schema's default, read when an Hparams is made (never at import: the
# schema is package data, and importing the engine must not depend on reading it).
_SCHEMA: Any = object()


@dataclass(frozen=True)
class Hparams:
    """The optimisation settings of config.yaml's `training` section (defaults: the schema's)."""

    steps: int
    batch_size: int
    lr: float
    momentum: float = _SCHEMA
    nesterov: bool = _SCHEMA
    weight_decay: float = _SCHEMA
    schedule: str = _SCHEMA  # cosine | step | constant
    milestones: tuple[int, ...] = _SCHEMA  # steps at which `step` multiplies the rate by gamma
    gamma: float = _SCHEMA
    warmup_steps: int = _SCHEMA
    eval_every: int | None = _SCHEMA  # steps between evaluations; None = once per epoch
    eval_batch_size: int = _SCHEMA

    def __post_init__(self):
        training = None
        for f in fields(self):
            if getattr(self, f.name) is _SCHEMA:
                training = training or defaults()["training"]
                object.__setattr__(self, f.name, training[f.name])
        object.__setattr__(self, "milestones", tuple(self.milestones))

    @classmethod
    def from_config(cls, section: dict) -> "Hparams":
        return cls(**{k: v for k, v in section.items() if k in cls.__dataclass_fields__})


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


# Embeddings exempt from weight decay besides the 1-D tensors: the ViT's class token and position
# embedding, as the usual ViT recipes exempt them (they are learned inputs, not weights of a layer).
NO_DECAY = ("class_token", "pos_embedding")


def decays(model: nn.Module, weight_decay: float) -> list[float]:
    """Each parameter's weight decay, in parameter order: none on BatchNorm/LayerNorm parameters and
    biases (every tensor of dimension <= 1) and on the embeddings NO_DECAY names."""
    return [
        weight_decay if p.dim() > 1 and name.rsplit(".", 1)[-1] not in NO_DECAY else 0.0
        for name, p in model.named_parameters()
    ]


class SGD:
    """SGD with momentum, Nesterov and weight decay (not on normalisation parameters, biases and
    embeddings: `decays`), as torch.optim.SGD
    computes it (dampening 0), with the momentum buffers as plain tensors in parameter order.

    Every update is a handful of multi-tensor (`torch._foreach_*`) operations, elementwise the
    arithmetic of torch.optim.SGD's per-tensor loop (on the CPU they run that loop). torch.optim's
    constructor imports torch._dynamo (1.5 s per job here). Buffers start at zero, which is what
    `coupled-to-t-reset` resets them to.
    """

    def __init__(self, params, h: Hparams, decay: list[float] | None = None, buffers: list[torch.Tensor] | None = None):
        self.params = list(params.parameters() if isinstance(params, nn.Module) else params)
        if decay is None:  # bare tensors have no names: decay every one of dimension > 1
            decay = (
                decays(params, h.weight_decay)
                if isinstance(params, nn.Module)
                else [h.weight_decay if p.dim() > 1 else 0.0 for p in self.params]
            )
        self.decay = decay
        self.momentum, self.nesterov = h.momentum, h.nesterov and h.momentum > 0
        self.buffers = buffers if buffers is not None else [torch.zeros_like(p) for p in self.params]
        self._decayed: dict[float, list[int]] = {}
        for i, wd in enumerate(self.decay):
            if wd:
                self._decayed.setdefault(wd, []).append(i)

    def _directions(self) -> list[torch.Tensor]:
        d = [p.grad for p in self.params]
        for wd, idx in self._decayed.items():
            decayed = torch._foreach_add([d[i] for i in idx], [self.params[i] for i in idx], alpha=wd)
            for i, t in zip(idx, decayed):
                d[i] = t
        if self.momentum:
            torch._foreach_mul_(self.buffers, self.momentum)
            torch._foreach_add_(self.buffers, d)
            d = torch._foreach_add(d, self.buffers, alpha=self.momentum) if self.nesterov else self.buffers
        return d

    @torch.no_grad()
    def step(self, lr: float) -> None:
        torch._foreach_sub_(self.params, self._directions(), alpha=lr)

    @torch.no_grad()
    def step_lr_tensor(self, lr: torch.Tensor) -> None:
        """The same update with the learning rate read from a device tensor (what a captured CUDA
        graph replays): p - lr * d rounded in two steps instead of one."""
        torch._foreach_sub_(self.params, torch._foreach_mul(self._directions(), lr))

    def follow_layouts(self) -> None:
        """Give each momentum buffer its parameter's memory format (channels-last where the parameter
        is): a multi-tensor update over tensors of mixed layouts leaves its fast path on CUDA."""
        for i, (p, buf) in enumerate(zip(self.params, self.buffers)):
            if buf.stride() != p.stride():
                self.buffers[i] = torch.empty_like(p).copy_(buf)

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
