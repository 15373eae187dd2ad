"""The conditions of DESIGN.md section 2: which seeds each member uses and how a child starts.

For ensemble group `p` ("parent") and member `c`:

| condition            | init          | order/aug before t | order/aug from t | optimizer at t          |
|----------------------|---------------|--------------------|------------------|-------------------------|
| no-coupling          | own (p, c)    | own (p, c)         | own (p, c)       | -                       |
| coupled-order        | own (p, c)    | shared (p)         | shared (p)       | -                       |
| coupled-to-t         | shared (p)    | shared (p)         | own (p, c)       | copied from the parent  |
| coupled-to-t-reset   | shared (p)    | shared (p)         | own (p, c)       | momentum 0, schedule 0  |
| reinit-{low,high}-N  | shared (p), N% re-drawn from (p, c) | shared (p) | own (p, c) | as the reset      |
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from . import seeds as S
from .errors import ConfigError
from .models import build_model, parameter_units
from .training import Run

BASE_CONDITIONS = ("no-coupling", "coupled-order", "coupled-to-t", "coupled-to-t-reset")
_REINIT = re.compile(r"reinit-(low|high)-(\d+(?:\.\d+)?)$")


@dataclass(frozen=True)
class Condition:
    name: str
    side: str | None = None      # low | high, for re-initialisation
    percent: float = 0.0

    @property
    def has_parent(self) -> bool:
        """Whether members start from a parent's state at a spawn step t."""
        return self.name not in ("no-coupling", "coupled-order")

    @property
    def resets(self) -> bool:
        """Whether the optimizer is reset at t (momentum zeroed, schedule restarted: t + T steps)."""
        return self.name == "coupled-to-t-reset" or self.side is not None


def parse_condition(name: str) -> Condition:
    if name in BASE_CONDITIONS:
        return Condition(name)
    m = _REINIT.match(name)
    if m and 0 < float(m.group(2)) <= 100:
        return Condition(name, m.group(1), float(m.group(2)))
    raise ConfigError(f"conditions: unknown condition {name!r}; known: {', '.join(BASE_CONDITIONS)}, "
                      "reinit-low-<percent>, reinit-high-<percent> (0 < percent <= 100)")


def parent_seeds(seed: int, p: int) -> dict[str, int]:
    return {role: S.derive(seed, role, p) for role in ("init", "order", "aug")}


def member_seeds(seed: int, condition: Condition, p: int, c: int) -> dict[str, int]:
    """The seeds member (p, c) trains with from its start (step 0 or the spawn step)."""
    own = lambda role: S.derive(seed, role, p, c)
    shared = lambda role: S.derive(seed, role, p)
    if condition.name == "no-coupling":
        return {"init": own("init"), "order": own("order"), "aug": own("aug")}
    if condition.name == "coupled-order":
        return {"init": own("init"), "order": shared("order"), "aug": shared("aug")}
    out = {"init": shared("init"), "order": own("order"), "aug": own("aug")}
    if condition.side:
        out["reinit"] = own("reinit")
    return out


def reinit_modules(units: list[list[str]], sizes: list[int], side: str, percent: float) -> list[str]:
    """Whole units taken from the input (`low`) or the output (`high`) end until `percent`% of all
    parameters are covered; returns the module names to re-draw."""
    order = range(len(units)) if side == "low" else range(len(units) - 1, -1, -1)
    total, covered, chosen = sum(sizes), 0, []
    for i in order:
        if covered * 100 >= percent * total:
            break
        chosen += units[i]
        covered += sizes[i]
    return chosen


def reinitialise(model: torch.nn.Module, model_name: str, num_classes: int, in_shape, seed: int,
                 side: str, percent: float) -> list[str]:
    """Re-draw the chosen units with the model's own initialiser (a fresh model from `seed`), with
    the running statistics of their normalisation layers; returns the module names re-drawn."""
    fresh = build_model(model_name, in_shape, num_classes, seed)
    units = parameter_units(model)
    modules = dict(model.named_modules())
    sizes = [sum(p.numel() for m in u for p in modules[m].parameters(recurse=False)) for u in units]
    chosen = reinit_modules(units, sizes, side, percent)
    fresh_modules = dict(fresh.named_modules())
    with torch.no_grad():
        for name in chosen:
            src = fresh_modules[name]
            for (_, dst_t), (_, src_t) in zip(
                    [*modules[name].named_parameters(recurse=False), *modules[name].named_buffers(recurse=False)],
                    [*src.named_parameters(recurse=False), *src.named_buffers(recurse=False)]):
                dst_t.copy_(src_t)
    return chosen


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
        child.info["reinitialised"] = reinitialise(child.model, child.model_name, child.num_classes,
                                                   child.in_shape, seeds["reinit"], condition.side,
                                                   condition.percent)
    return child
