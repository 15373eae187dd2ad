"""Seeds: every random stream of a run derives from the experiment seed and a named role.

A run has three independent streams, `init`, `order` and `aug` (docs/design.md, "Conditions"), plus `reinit`
for re-drawn parameters. Each is a 63-bit integer hashed from (experiment seed, role, parent,
child), so streams never collide and adding runs never shifts another run's seeds.
"""

from __future__ import annotations

import hashlib

from .conditions import ROLES as STREAMS, Condition

ROLES = (*STREAMS, "reinit")  # the streams a member trains with, and its re-drawn parameters


def derive(seed: int, role: str, parent: int, child: int | None = None) -> int:
    """The seed of one stream; `child=None` is the stream shared by all members of a parent."""
    if role not in ROLES:
        raise ValueError(f"unknown seed role {role!r}")
    key = f"{seed}/{role}/p{parent}/" + ("shared" if child is None else f"c{child}")
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little") >> 1


def parent_seeds(seed: int, p: int) -> dict[str, int]:
    return {role: derive(seed, role, p) for role in STREAMS}


def member_seeds(seed: int, condition: Condition, p: int, c: int) -> dict[str, int]:
    """The seeds member (p, c) trains with from its start (step 0 or the spawn step): the streams
    its condition shares come from the parent's, the others are the member's own."""
    out = {role: derive(seed, role, p) if role in condition.shared else derive(seed, role, p, c) for role in STREAMS}
    if condition.reinit:
        out["reinit"] = derive(seed, "reinit", p, c)
    return out
