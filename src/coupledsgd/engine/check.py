"""The config check that needs torch: a model given by import path, or a built-in one on arrays data,
is built and run on one batch on the CPU before any job starts (the workflow calls `check_model`
after `core.config.validate`, and only for such configs, so planning a built-in experiment never
imports torch).
"""

from __future__ import annotations

import copy
import sys

import torch
from torch import nn

from ..core.conditions import REINIT_FAMILIES
from ..core.config import job_shape
from ..core.errors import ConfigError, described
from ..core.registry import dataset, is_custom_model
from .models import build_model, call_text

BATCH = 4  # inputs of the check's batch: BatchNorm needs more than one in training mode


def check_model(config: dict, log=None) -> None:
    """Build the configured model and run it on one batch: a ConfigError naming model.name where it
    cannot be imported or built, fails on the inputs, returns logits of another shape, draws random
    numbers that its seeded streams do not fix, cannot be split into the requested re-initialisation
    shares (where the experiment re-initialises), or fails as stacked members (where a job trains
    several). `log` (default: standard error) hears how `job_shape: auto` was resolved."""
    name, kwargs = config["model"]["name"], config["model"].get("kwargs", {})
    facts = dataset(config["data"])
    model = build_model(name, facts.shape, facts.classes, 0, kwargs)
    x = torch.randn(BATCH, *facts.shape, generator=torch.Generator().manual_seed(0))
    what = f"a batch of {BATCH} inputs of shape {facts.shape}"
    call = call_text(name, facts.shape, facts.classes, kwargs) if is_custom_model(name) else "the model"
    _forward(model, x, facts.classes, what, call)
    sides = [c.removeprefix("reinit-") for c in config["conditions"] if c in REINIT_FAMILIES]
    if sides:
        # the registry's models are walked in registration order at spawn time, so here too
        check_shares(model, x if is_custom_model(name) else None, sides, config["reinit"]["percents"])
    if not is_custom_model(name):
        return  # the registry's models have networks of their own for k members (`members`)
    if config["job_shape"] == "auto":
        _say_auto(model, x, facts.classes, log or (lambda line: print(line, file=sys.stderr)))
    elif job_shape(config) != "member":
        _check_members(model, x, facts.classes, config["job_shape"], what)


def _forward(model: nn.Module, x: torch.Tensor, classes: int, what: str, call: str = "the model") -> None:
    """Run `model` on x in training mode (on a copy: its BatchNorm statistics move)."""
    model = copy.deepcopy(model).train()
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            out = model(x)
    except Exception as e:
        raise ConfigError(f"model.name: {call} fails on {what}: {described(e)}") from None
    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    if shape != (len(x), classes):
        raise ConfigError(
            f"model.name: the model maps {what} to {shape}; expected logits of shape "
            f"{(len(x), classes)} ({classes} classes)"
        )
    _check_deterministic(model, x)


def _check_deterministic(model: nn.Module, x: torch.Tensor) -> None:
    """Every random draw of a run comes from its seeded streams: a training step draws its dropout
    masks (and any other draw from torch's generator) after seeding it from the member's stream and the
    step (`training.noise_seed`). A forward pass that still differs under one seed draws from
    elsewhere (numpy, Python's random, a generator of its own): refused, naming the first module
    whose output differs."""
    outs = []
    for _ in range(2):
        seen: list[tuple[str, object]] = []
        hooks = [
            m.register_forward_hook(lambda _m, _a, out, n=n, seen=seen: seen.append((n, out)))
            for n, m in model.named_modules()
            if n
        ]
        try:
            with torch.random.fork_rng(devices=[]), torch.no_grad():
                torch.manual_seed(1)
                seen.append(("", model(x)))
        finally:
            for h in hooks:
                h.remove()
        outs.append(seen)
    for (n, a), (_, b) in zip(*outs):
        if not _equal(a, b):
            where = f"module {n!r}" if n else "the model's own forward"
            raise ConfigError(
                f"model.name: the training-mode forward pass is random beyond torch's seeded "
                f"generator ({where} gives other outputs under one seed: numpy, Python's random or "
                "a generator of its own); runs here draw only from their seeded streams"
            )


def _equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(map(_equal, a, b))
    return True


def check_shares(model: nn.Module, x: torch.Tensor | None, sides: list[str], percents: list[float]) -> None:
    """Every requested re-initialisation share is realised to within one output channel: of the unit
    at the boundary, or, where that unit cannot be split, of the largest channel of any unit that can.
    Otherwise a ConfigError naming the unit and the share it would give."""
    from .spawn import share_plan

    for side in sides:
        for percent in percents:
            plan = share_plan(model, side, percent, x)
            total, got = sum(plan.sizes), plan.percent()
            i = plan.steps[-1][0] if plan.steps else (0 if side == "low" else len(plan.units) - 1)
            splittable = [plan.channel(j) for j in range(len(plan.units)) if plan.splits[j] is not None]
            channel = plan.channel(i) if plan.splits[i] is not None else max(splittable, default=0)
            if abs(got - percent) * total / 100 > channel + 1e-9:
                unit = ", ".join(plan.units[i])
                raise ConfigError(
                    f"model.name: re-initialisation cannot split {unit!r} ({plan.sizes[i]:,} of {total:,} "
                    f"parameters): reinit-{side}-{percent:g} would re-draw {got:.1f} % of the parameters; its "
                    "channels are not a block of rows of every tensor (give the model reinit_units(), or ask "
                    "for other reinit.percents)"
                )


def _say_auto(model: nn.Module, x: torch.Tensor, classes: int, log) -> None:
    """`job_shape: auto` trains a model given by import path one member per job (`config.job_shape`,
    measured in bench/bench_custom.py); the log says so, and says when vmap could not batch it at all."""
    failure = _vmap_failure(model, x, classes)
    why = (
        f"torch.func.vmap cannot batch its members ({failure})"
        if failure
        else "its members as one network under torch.func.vmap were measured no faster (bench/bench_custom.py)"
    )
    log(f"job_shape: auto trains {type(model).__name__} one member per job: {why}")


def _vmap_failure(model: nn.Module, x: torch.Tensor, classes: int) -> str | None:
    """Why two members of the model cannot run as one network under torch.func.vmap, or None."""
    from .members import Vmapped

    net = Vmapped(model, 2)
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            out = net(torch.cat([x, x], 1))
    except Exception as e:
        return described(e)
    if tuple(out.shape) != (len(x), 2 * classes):
        return f"its members under vmap give {tuple(out.shape)}"
    return None


def _check_members(model: nn.Module, x: torch.Tensor, classes: int, shape: str, what: str) -> None:
    failure = _vmap_failure(model, x, classes)
    if failure:
        raise ConfigError(
            f"job_shape: {shape} trains members as one network under torch.func.vmap, and the "
            f"model fails there on {what}: {failure}; use job_shape: member"
        )
