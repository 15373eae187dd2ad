"""The config check that needs torch: a model given by import path, or a built-in one on arrays data,
is built and run on one batch on the CPU before any job starts (the workflow calls `check_model`
after `core.config.validate`, and only for such configs, so planning a built-in experiment never
imports torch).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..core.conditions import REINIT_FAMILIES
from ..core.config import job_shape
from ..core.errors import ConfigError, described
from ..core.registry import dataset
from .models import build_model, parameter_owners, parameter_units

BATCH = 4  # inputs of the check's batch: BatchNorm needs more than one in training mode


def check_model(config: dict) -> None:
    """Build the configured model and run it on one batch: a ConfigError naming model.name where it
    cannot be imported or built, fails on the inputs, returns logits of another shape, draws random
    numbers in its forward pass, cannot be walked for re-initialisation (where the experiment
    re-initialises), or fails as stacked members (where a job trains several)."""
    name, kwargs = config["model"]["name"], config["model"].get("kwargs", {})
    facts = dataset(config["data"])
    model = build_model(name, facts.shape, facts.classes, 0, kwargs)
    x = torch.randn(BATCH, *facts.shape, generator=torch.Generator().manual_seed(0))
    what = f"a batch of {BATCH} inputs of shape {facts.shape}"
    order = _forward(model, x, facts.classes, what)
    if any(c in REINIT_FAMILIES for c in config["conditions"]):
        _check_walk(model, order)
    if job_shape(config) != "member":
        _check_members(model, x, facts.classes, config["job_shape"], what)


def _forward(model: nn.Module, x: torch.Tensor, classes: int, what: str) -> list[str]:
    """Run `model` on x in training mode (on a copy: its BatchNorm statistics move); the names of the
    modules owning parameters in the order the forward pass first calls them."""
    model = copy.deepcopy(model).train()
    owners = dict.fromkeys(parameter_owners(model))
    modules = dict(model.named_modules())
    seen: dict[str, None] = {}
    hooks = [modules[n].register_forward_pre_hook(lambda _m, _a, n=n: seen.setdefault(n)) for n in owners]
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as e:
        raise ConfigError(f"model.name: the model fails on {what}: {described(e)}") from None
    finally:
        for h in hooks:
            h.remove()
    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    if shape != (len(x), classes):
        raise ConfigError(f"model.name: the model maps {what} to {shape}; expected logits of shape "
                          f"{(len(x), classes)} ({classes} classes)")
    _check_deterministic(model, x)
    return list(seen)


def _check_deterministic(model: nn.Module, x: torch.Tensor) -> None:
    """Every random draw of a run comes from its seeded streams (init, order, aug, reinit); a forward
    pass that draws from torch's global generator (dropout, noise layers) would make runs depend on
    what else ran in the process, and children of one parent differ before their spawn step."""
    outs = []
    for seed in (1, 2):
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(seed)
            outs.append(model(x))
    if not torch.equal(*outs):
        raise ConfigError("model.name: the model's training-mode forward pass is random (dropout or another "
                          "draw from torch's global generator): runs here draw only from their seeded "
                          "streams; set its dropout to 0")


def _check_walk(model: nn.Module, order: list[str]) -> None:
    """Re-initialisation takes units from the input or the output end in registration order: it must
    be forward order, with every parameter in a module the forward pass calls, or the model states
    its units."""
    if callable(getattr(model, "reinit_units", None)):
        parameter_units(model)  # checks what the model states
        return
    owners = parameter_owners(model)
    provide = ("; give the model a method reinit_units() returning its parameter-owning modules' names in "
               "forward order, grouped into units (a layer with the normalisation that belongs to it)")
    unused = [n for n in owners if n not in order]
    if unused:
        raise ConfigError(f"model.name: re-initialisation cannot place module {unused[0]!r} in forward order "
                          f"(it owns parameters but its forward is never called){provide}")
    if order != owners:
        i = next(i for i, (a, b) in enumerate(zip(order, owners)) if a != b)
        raise ConfigError(f"model.name: re-initialisation walks modules in registration order, but forward "
                          f"calls {order[i]!r} where {owners[i]!r} is registered{provide}")


def _check_members(model: nn.Module, x: torch.Tensor, classes: int, shape: str, what: str) -> None:
    from .members import Vmapped

    net = Vmapped(model, 2)
    try:
        with torch.no_grad():
            out = net(torch.cat([x, x], 1))
    except Exception as e:
        raise ConfigError(f"job_shape: {shape} trains members as one network under torch.func.vmap, and the "
                          f"model fails there on {what}: {described(e)}; "
                          "use job_shape: member") from None
    if tuple(out.shape) != (len(x), 2 * classes):
        raise ConfigError(f"job_shape: {shape}: the model's members under vmap give {tuple(out.shape)}; "
                          "use job_shape: member")
