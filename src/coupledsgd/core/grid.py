"""The grid an experiment config describes (docs/design.md, "The grid"): its members, the jobs that
train them, the parent states they spawn from and the ensembles whose error barriers are measured.
"""

from __future__ import annotations

from dataclasses import dataclass

from .conditions import BARRIER_REFERENCE, REFERENCE, expand, parse_condition
from .config import job_shape
from .layout import member_key


def conditions(config: dict) -> list[str]:
    """The experiment's condition names, each re-initialisation family expanded to one per percent."""
    return expand(config["conditions"], config["reinit"]["percents"])


@dataclass(frozen=True)
class Member:
    condition: str
    t: int
    parent: int
    child: int

    @property
    def key(self) -> str:
        return member_key(self.condition, self.t, self.parent, self.child)


def spawn_steps_of(config: dict, condition: str) -> list[int]:
    """The spawn steps a condition is run at; conditions without a parent are stored under t0."""
    c = parse_condition(condition)
    if not c.has_parent:
        return [0]
    return list(config["reinit"]["steps"]) if c.reinit else list(config["spawn_steps"])


def members(config: dict) -> list[Member]:
    ens = config["ensemble"]
    return [
        Member(cond, t, p, c)
        for cond in conditions(config)
        for t in spawn_steps_of(config, cond)
        for p in range(ens["parents"])
        for c in range(ens["children"])
    ]


def training_jobs(config: dict) -> list[list[Member]]:
    """The members of each training job, by `job_shape`."""
    key = {
        "member": lambda m: m,
        "children": lambda m: (m.condition, m.t, m.parent),
        "condition": lambda m: (m.condition, m.t),
    }[job_shape(config)]
    jobs: dict = {}
    for m in members(config):
        jobs.setdefault(key(m), []).append(m)
    return list(jobs.values())


def job_head(config: dict, member: Member) -> Member:
    """The first member of the training job that trains `member` (the job's members in
    `training_jobs` order: parents, then children, from 0)."""
    shape = job_shape(config)
    return Member(
        member.condition,
        member.t,
        member.parent if shape != "condition" else 0,
        member.child if shape == "member" else 0,
    )


def parent_states(config: dict) -> list[tuple[int, int]]:
    """(parent, step) of every parent state some condition spawns from."""
    steps = sorted(
        {t for cond in conditions(config) if parse_condition(cond).has_parent for t in spawn_steps_of(config, cond)}
    )
    return [(p, t) for p in range(config["ensemble"]["parents"]) for t in steps]


INSTABILITY = ("coupled-to-t", BARRIER_REFERENCE)  # the conditions of the instability analysis


def instability_steps(config: dict) -> list[int]:
    """The spawn steps of the instability analysis (`barrier.spawn_steps`): all, none, or a list."""
    chosen = config["barrier"]["spawn_steps"]
    if chosen == "all":
        return list(config["spawn_steps"])
    return [] if chosen == "none" else [t for t in config["spawn_steps"] if t in chosen]


def barrier_set(config: dict) -> list[tuple[str, int, int]]:
    """(condition, t, parent) of every ensemble whose children's barriers are measured, each once:

    - figure 3: each re-initialisation condition, and coupled-to-t-reset (the "no re-initialisation"
      reference: the same optimizer reset, nothing re-drawn), at every spawn step of reinit.steps; none
      without a re-initialisation condition. The reference is taken at the reinit steps even where
      spawn_steps lacks them (its children are then trained for this alone);
    - the instability analysis (figure 4, `barrier.spawn_steps`): coupled-to-t and coupled-to-t-reset at
      each of its spawn steps, and no-coupling (pairs of independent runs, stored under t = 0) as the
      reference level.

    Every parent; only the conditions that config["conditions"] holds."""
    names = conditions(config)
    parents = range(config["ensemble"]["parents"])
    reinit = [c for c in names if parse_condition(c).reinit]
    chosen = ([c for c in names if c == BARRIER_REFERENCE] + reinit) if reinit else []
    keys = [(c, t) for c in chosen for t in config["reinit"]["steps"]]
    steps = instability_steps(config)
    if steps:
        keys += [(REFERENCE, 0)] if REFERENCE in names else []
        keys += [(c, t) for c in INSTABILITY if c in names for t in steps]
    return [(c, t, p) for c, t in dict.fromkeys(keys) for p in parents]
