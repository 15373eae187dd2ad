"""How a child starts from its parent's state at the spawn step t (docs/design.md, "Conditions"):
optimizer kept or reset, and for the re-initialisation conditions the re-drawn share of the weights.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..core.conditions import Condition
from .models import build_model, input_norms, parameter_units
from .training import Run

# How a module's own tensors split into output channels: (number of channels, {tensor name: (dim,
# rows)}) where rows(a, b) are the indices along `dim` that hold channels a..b-1. Tensors without a
# channel axis (BatchNorm's num_batches_tracked) are absent and only re-drawn with their whole unit.
Channels = tuple[int, dict[str, tuple[int, Callable[[int, int], torch.Tensor]]]]
_ROWS_BY_OUTPUT = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def _rows(a: int, b: int) -> torch.Tensor:
    return torch.arange(a, b)


def module_channels(module: nn.Module) -> Channels:
    """The output channels of one module: filters of a convolution, rows of a linear layer (Head
    included), features of a normalisation or an embedding (class token, position embedding)."""
    tensors = {n: t for n, t in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]
               if t.dim() > 0}
    if isinstance(module, _ROWS_BY_OUTPUT):
        return tensors["weight"].shape[0], dict.fromkeys(tensors, (0, _rows))
    if isinstance(module, nn.MultiheadAttention):
        # Channel j is feature j of the query, key and value together (rows j, D + j, 2D + j of the
        # fused projection), not row j of it: a split of the fused rows would re-draw every query before
        # any key or value, i.e. change what each head attends to without changing what it reads out.
        # Heads are contiguous blocks of D / heads features, so the leading channels re-draw one head
        # (its queries, keys and values) completely before the next.
        d = module.embed_dim
        qkv = lambda a, b: torch.cat([_rows(a, b) + i * d for i in range(3)])
        out = {}
        for n, t in tensors.items():
            if n.startswith("in_proj"):
                out[n] = (0, qkv)
            elif n in ("q_proj_weight", "k_proj_weight", "v_proj_weight"):
                out[n] = (0, _rows)
            else:  # bias_k, bias_v: (1, 1, D)
                out[n] = (t.dim() - 1, _rows)
        return d, out
    # Normalisations and embeddings: one feature per index of the last dimension.
    sizes = {t.shape[-1] for t in tensors.values()}
    if len(sizes) != 1:
        return 1, {}
    return sizes.pop(), {n: (t.dim() - 1, _rows) for n, t in tensors.items()}


def unit_channels(modules: dict[str, nn.Module], unit: list[str], inputs: set[str] = frozenset()) -> Channels | None:
    """The channels of a unit, or None where its modules disagree on the channel count (then the unit
    is only ever re-drawn whole). The normalisation after a layer normalises that layer's channels; one
    before it (`inputs`, see models.input_norms) its input features, which are not its channels: such a norm is re-drawn
    with the whole unit only."""
    parts = {name: module_channels(modules[name]) for name in unit
             if name not in inputs}
    counts = {n for n, _ in parts.values()}
    if len(counts) != 1 or 1 in counts:
        return None
    return counts.pop(), {f"{name}.{t}": rows for name, (_, tensors) in parts.items() for t, rows in tensors.items()}


def reinit_plan(sizes: list[int], channels: list[int], side: str, percent: float,
                split: list[int] | None = None) -> list[tuple[int, int, int]]:
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


def reinit_modules(units: list[list[str]], sizes: list[int], side: str, percent: float,
                   channels: list[int] | None = None) -> list[str]:
    """The module names re-drawn, whole or in part, for `percent`% from `side` (see `reinit_plan`;
    without `channels`, every unit counts as one channel)."""
    plan = reinit_plan(sizes, channels or [1] * len(units), side, percent)
    return [m for i, _, _ in plan for m in units[i]]


@dataclass(frozen=True)
class Reinitialised:
    modules: list[str]                     # the modules re-drawn, whole or in part, in the order taken
    channels: dict[str, list[int]]         # module -> [first, end] channel, for a unit re-drawn in part
    percent: float                         # the share of all parameters re-drawn, in percent

    def info(self) -> dict:
        return {"reinitialised": list(self.modules), "reinit_channels": dict(self.channels),
                "reinit_percent": self.percent}


def redraw(model: nn.Module, fresh: nn.Module, side: str, percent: float) -> Reinitialised:
    """Copy `percent`% of the parameters from `fresh` (the same architecture) into `model`, in place,
    as `reinit_plan` picks them: whole units with every parameter and buffer of their modules, and for
    a unit taken in part the rows of its chosen channels in every tensor that has them (weight, bias,
    normalisation affine parameters and running statistics). Everything else is left bit-identical."""
    modules, fresh_modules = dict(model.named_modules()), dict(fresh.named_modules())
    units = parameter_units(model)
    sizes = [sum(p.numel() for m in u for p in modules[m].parameters(recurse=False)) for u in units]
    inputs = input_norms(model)
    splits = [unit_channels(modules, u, inputs) for u in units]
    held = [sum(p.numel() for m in u if m not in inputs
                for p in modules[m].parameters(recurse=False)) for u in units]
    plan = reinit_plan(sizes, [s[0] if s else 1 for s in splits], side, percent, held)
    done, channels = 0, {}
    with torch.no_grad():
        for i, a, b in plan:
            whole = splits[i] is None or (a, b) == (0, splits[i][0])
            for name in units[i]:
                src = dict([*fresh_modules[name].named_parameters(recurse=False),
                            *fresh_modules[name].named_buffers(recurse=False)])
                for t, dst in [*modules[name].named_parameters(recurse=False),
                               *modules[name].named_buffers(recurse=False)]:
                    if whole:
                        dst.copy_(src[t])
                    elif f"{name}.{t}" in splits[i][1]:
                        dim, rows = splits[i][1][f"{name}.{t}"]
                        idx = rows(a, b)
                        values = src[t].index_select(dim, idx).to(dst.device, dst.dtype)
                        dst.index_copy_(dim, idx.to(dst.device), values)
                if not whole and any(k.startswith(f"{name}.") for k in splits[i][1]):
                    channels[name] = [a, b]
            # in part: the channels' share of the unit's own layers; an input norm stays the parent's
            done += sizes[i] if whole else held[i] * (b - a) // splits[i][0]
    return Reinitialised([m for i, _, _ in plan for m in units[i]], channels, 100 * done / sum(sizes))


def reinitialise(model: nn.Module, model_name: str, num_classes: int, in_shape, seed: int,
                 side: str, percent: float, model_kwargs: dict | None = None) -> Reinitialised:
    """Re-draw `percent`% of the parameters (see `redraw`) with the model's own initialiser: the
    values of a fresh model built from `seed`."""
    return redraw(model, build_model(model_name, in_shape, num_classes, seed, model_kwargs), side, percent)


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
        child.info.update(reinitialise(child.model, child.model_name, child.num_classes, child.in_shape,
                                       seeds["reinit"], condition.side, condition.percent,
                                       child.model_kwargs).info())
    return child
