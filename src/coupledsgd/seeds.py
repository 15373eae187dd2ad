"""Seeds: every random stream of a run derives from the experiment seed and a named role.

A run has three independent streams, `init`, `order` and `aug` (DESIGN.md section 2), plus `reinit`
for re-drawn parameters. Each is a 63-bit integer hashed from (experiment seed, role, parent,
child), so streams never collide and adding runs never shifts another run's seeds.
"""

from __future__ import annotations

import hashlib

import torch

ROLES = ("init", "order", "aug", "reinit")


def derive(seed: int, role: str, parent: int, child: int | None = None) -> int:
    """The seed of one stream; `child=None` is the stream shared by all members of a parent."""
    if role not in ROLES:
        raise ValueError(f"unknown seed role {role!r}")
    key = f"{seed}/{role}/p{parent}/" + ("shared" if child is None else f"c{child}")
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little") >> 1


def step_generator(seed: int, step: int) -> torch.Generator:
    """A CPU generator for the draws of one step (or epoch) of one stream: a pure function of both."""
    key = f"{seed}/{step}".encode()
    return torch.Generator().manual_seed(int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 1)
