"""The conditions of an experiment (docs/design.md, "Conditions"): how the members of one ensemble
start, which random streams they share, and whether the optimizer restarts at the spawn step t.

For ensemble group `p` ("parent") and member `c`:

| condition            | init          | order/aug before t | order/aug from t | optimizer at t          |
|----------------------|---------------|--------------------|------------------|-------------------------|
| no-coupling          | own (p, c)    | own (p, c)         | own (p, c)       | -                       |
| coupled-order        | own (p, c)    | shared (p)         | shared (p)       | -                       |
| coupled-to-t         | shared (p)    | shared (p)         | own (p, c)       | copied from the parent  |
| coupled-to-t-reset   | shared (p)    | shared (p)         | own (p, c)       | momentum 0, schedule 0  |
| reinit-{low,high}-N  | shared (p), N% re-drawn from (p, c) | shared (p) | own (p, c) | as the reset      |

"Before t" is the parent's training: a member that starts from a parent inherits its streams up to t.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import ConfigError

ROLES = ("init", "order", "aug")


@dataclass(frozen=True)
class Condition:
    name: str
    family: str  # what figures colour by: the name without the percent
    has_parent: bool  # members start from a parent's state at a spawn step t
    resets: bool  # momentum zeroed and schedule restarted at t (training runs t + T)
    shared: tuple[str, ...]  # the streams (ROLES) its members take from the parent's
    side: str | None = None  # low | high: re-initialisation from the input or the output end
    percent: float = 0.0  # of all parameters re-drawn, with the member's own `reinit` stream

    @property
    def reinit(self) -> bool:
        return self.side is not None


REGISTRY = {
    c.name: c
    for c in (
        Condition("no-coupling", "no-coupling", has_parent=False, resets=False, shared=()),
        Condition("coupled-order", "coupled-order", has_parent=False, resets=False, shared=("order", "aug")),
        Condition("coupled-to-t", "coupled-to-t", has_parent=True, resets=False, shared=("init",)),
        Condition("coupled-to-t-reset", "coupled-to-t-reset", has_parent=True, resets=True, shared=("init",)),
    )
}
REFERENCE = "no-coupling"  # the uncoupled level every figure compares with
BARRIER_REFERENCE = "coupled-to-t-reset"  # "no re-initialisation": the same reset, nothing re-drawn
REINIT_FAMILIES = ("reinit-low", "reinit-high")
_REINIT = re.compile(r"reinit-(low|high)-(\d+(?:\.\d+)?)$")


def parse_condition(name: str) -> Condition:
    if name in REGISTRY:
        return REGISTRY[name]
    m = _REINIT.match(name)
    if m and 0 < float(m.group(2)) <= 100:
        return Condition(
            name,
            f"reinit-{m.group(1)}",
            has_parent=True,
            resets=True,
            shared=("init",),
            side=m.group(1),
            percent=float(m.group(2)),
        )
    raise ConfigError(
        f"conditions: unknown condition {name!r}; known: {', '.join(REGISTRY)}, "
        "reinit-low-<percent>, reinit-high-<percent> (0 < percent <= 100)"
    )


def expand(names: list[str], percents: list[float]) -> list[str]:
    """Condition names with each re-initialisation family expanded to one name per percent."""
    out = []
    for name in names:
        out += [f"{name}-{p:g}" for p in percents] if name in REINIT_FAMILIES else [name]
    return out
