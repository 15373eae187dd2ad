"""How a child starts from its parent's state at the spawn step t (docs/design.md, "Conditions"):
optimizer kept or reset, and for the re-initialisation conditions the re-drawn share of the weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..core.conditions import Condition
from ..core.registry import is_custom_model
from .models import build_model
from .units import Channels, example_batch, input_norms, parameter_units, unit_channels, unit_entries
from .training import Run


def reinit_plan(
    sizes: list[int], channels: list[int], side: str, percent: float, split: list[int] | None = None
) -> list[tuple[int, int, int]]:
    """Which channels to re-draw so that `percent`% of all parameters are, as (unit, first channel, end
    channel): whole units from the input (`low`) or the output (`high`) end while they fit, then part
    of the next one, as many of its channels as brings the share nearest the request (at least one
    when nothing else is re-drawn). The share is then within one of that unit's channels of `percent`.

    `low` takes the leading channels of the boundary unit, `high` the trailing ones: the channels of a
    layer are interchangeable, and this way low p% and high q% never share a parameter when p + q <= 100.

    split[i]: the parameters of unit i that its channels hold (default: all); the rest (an input norm)
    is re-drawn with the whole unit only, so a part of the unit takes fewer than all its channels.
    """
    order = range(len(sizes)) if side == "low" else range(len(sizes) - 1, -1, -1)
    left, plan = percent * sum(sizes) / 100, []
    for i in order:
        if left <= 0:
            break
        n = channels[i]
        if sizes[i] <= left:
            plan.append((i, 0, n))
            left -= sizes[i]
            continue
        held = sizes[i] if split is None else split[i]
        m = min(n if held == sizes[i] else n - 1, int(left * n / held + 0.5)) or (0 if plan else 1)
        if m:
            plan.append((i, 0, m) if side == "low" else (i, n - m, n))
        break
    return plan


def reinit_modules(
    units: list[list[str]], sizes: list[int], side: str, percent: float, channels: list[int] | None = None
) -> list[str]:
    """The module names re-drawn, whole or in part, for `percent`% from `side` (see `reinit_plan`;
    without `channels`, every unit counts as one channel)."""
    plan = reinit_plan(sizes, channels or [1] * len(units), side, percent)
    return [m for i, _, _ in plan for m in units[i]]


@dataclass(frozen=True)
class Reinitialised:
    modules: list[str]  # the modules re-drawn, whole or in part, in the order taken
    channels: dict[str, list[int]]  # module -> [first, end] channel, for a unit re-drawn in part
    percent: float  # the share of all parameters re-drawn, in percent

    def info(self) -> dict:
        return {
            "reinitialised": list(self.modules),
            "reinit_channels": dict(self.channels),
            "reinit_percent": self.percent,
        }


def redraw(
    model: nn.Module, fresh: nn.Module, side: str, percent: float, example: torch.Tensor | None = None
) -> Reinitialised:
    """Copy `percent`% of the parameters from `fresh` (the same architecture) into `model`, in place,
    as `reinit_plan` picks them: whole units with every parameter and buffer of their entries, and for
    a unit taken in part the rows of its chosen channels in every tensor that has them (weight, bias,
    normalisation affine parameters and running statistics). Everything else is left bit-identical.
    `example`: a batch to trace the model's units on (`units.parameter_units`)."""
    plan = share_plan(model, side, percent, example)
    fresh_tensors = {**dict(fresh.named_parameters()), **dict(fresh.named_buffers())}
    done, channels = 0, {}
    with torch.no_grad():
        for i, a, b in plan.steps:
            split = plan.splits[i]
            whole = split is None or (a, b) == (0, split[0])
            for entry in plan.units[i]:
                for t, dst in plan.tensors[entry].items():
                    src = fresh_tensors[t]
                    if whole:
                        dst.copy_(src)
                    elif t in split[1]:
                        dim, rows = split[1][t]
                        idx = rows(a, b)
                        values = src.index_select(dim, idx).to(dst.device, dst.dtype)
                        dst.index_copy_(dim, idx.to(dst.device), values)
                if not whole and any(t in split[1] for t in plan.tensors[entry]):
                    channels[entry] = [a, b]
            done += plan.redrawn(i, a, b)
    return Reinitialised([e for i, _, _ in plan.steps for e in plan.units[i]], channels, 100 * done / sum(plan.sizes))


@dataclass(frozen=True)
class SharePlan:
    """What `redraw` takes for one request: the units, their sizes and channels, and the steps of
    `reinit_plan`."""

    units: list[list[str]]
    tensors: dict[str, dict[str, torch.Tensor]]  # entry -> its tensors by qualified name
    sizes: list[int]  # parameters of each unit
    held: list[int]  # of which its channels hold (all but an input norm)
    splits: list[Channels | None]
    steps: list[tuple[int, int, int]]

    def redrawn(self, i: int, a: int, b: int) -> int:
        """Parameters re-drawn by step (i, a, b): the unit, or its channels' share of its own layers
        (an input norm stays the parent's)."""
        split = self.splits[i]
        if split is None or (a, b) == (0, split[0]):
            return self.sizes[i]
        return self.held[i] * (b - a) // split[0]

    def percent(self) -> float:
        return 100 * sum(self.redrawn(*s) for s in self.steps) / sum(self.sizes)

    def channel(self, i: int) -> float:
        """The parameters of one output channel of unit i (the whole unit where it cannot be split)."""
        return self.sizes[i] if self.splits[i] is None else self.held[i] / self.splits[i][0]


def share_plan(model: nn.Module, side: str, percent: float, example: torch.Tensor | None = None) -> SharePlan:
    units = parameter_units(model, example)
    found = unit_entries(model)
    modules = dict(model.named_modules())
    params = {id(p) for p in model.parameters()}
    inputs = input_norms(model)
    size = lambda es: sum(t.numel() for e in es for t in found[e].values() if id(t) in params)
    sizes = [size(u) for u in units]
    held = [size([e for e in u if e not in inputs]) for u in units]
    splits = [unit_channels(modules, found, u, inputs) for u in units]
    steps = reinit_plan(sizes, [s[0] if s else 1 for s in splits], side, percent, held)
    return SharePlan(units, {e: found[e] for u in units for e in u}, sizes, held, splits, steps)


def reinitialise(
    model: nn.Module,
    model_name: str,
    num_classes: int,
    in_shape,
    seed: int,
    side: str,
    percent: float,
    model_kwargs: dict | None = None,
) -> Reinitialised:
    """Re-draw `percent`% of the parameters (see `redraw`) with the model's own initialiser: the
    values of a fresh model built from `seed`. A model given by import path is traced for its units."""
    example = example_batch(model, in_shape) if is_custom_model(model_name) else None
    fresh = build_model(model_name, in_shape, num_classes, seed, model_kwargs)
    return redraw(model, fresh, side, percent, example)


def spawn(parent: Run, condition: Condition, seeds: dict[str, int]) -> Run:
    """Turn a parent's state at step t into a child's starting state, in place.

    The child keeps weights, buffers, optimizer state and schedule position (`coupled-to-t`), or has
    its momentum cleared and schedule restarted at t (`coupled-to-t-reset`, re-initialisation).
    """
    child = parent
    child.seeds = dict(seeds)
    child.start = parent.step
    child.info = {**parent.info, "spawned_at": parent.step, "condition": condition.name}
    if condition.resets:
        child.optimizer.reset()
        child.schedule_start = parent.step
    if condition.side:
        child.info.update(
            reinitialise(
                child.model,
                child.model_name,
                child.num_classes,
                child.in_shape,
                seeds["reinit"],
                condition.side,
                condition.percent,
                child.model_kwargs,
            ).info()
        )
    return child
