"""How often the claims' tests say `supported` when the truth is known: synthetic per-unit values drawn
under a null (no trend, no difference, a difference exactly at a margin) or under an effect of the
default run's size, pushed through the same `estimates` functions and rules the claims table uses
(docs/design.md, "Claims"). tests/test_claims_calibration.py asserts the rates;
bench/bench_claims_calibration.py prints them for docs/claims.md and bench/RESULTS.md.

Each scenario returns, over its repetitions, the share called `supported` and, where the test has a
95% interval, the share of intervals that cover the true value. Seeded: the same numbers every run.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from . import estimates as E

# Effects of the default run's size, measured on its metric tables (results/mnist1d-cnn1d/metrics;
# docs/claims.md's findings): mean curves over t and the spread of the per-parent values, in the tables' units
# (fractions). A curve's noise is the residual sd of a parent's value at one t after the parent's and
# the step's means.
SPAWN_STEPS = np.array([0, 6, 30, 60, 180], dtype=float)
GAIN_CURVE = np.array([0.0256, 0.0186, 0.0133, 0.0079, 0.0003])  # coupled-to-t-reset's gain
GAIN_NOISE = 0.0027
KL_CURVE = np.array([0.248, 0.285, 0.369, 0.437, 0.568])  # between-parent KL, coupled-to-t-reset
KL_NOISE = 0.011  # per parent and t; a pair's value carries both parents' and its own (residual sd 0.017)
REINIT_DIFF, REINIT_SD = 0.0150, 0.0039  # reinit-low minus reinit-high gain, per parent
ORDER_DIFF, ORDER_SD = -0.0060, 0.0018  # coupled-order minus no-coupling ensemble accuracy, per parent
MEMBERS_DIFF, COUPLED_SD, INDEPENDENT_SD = 0.0026, 0.0050, 0.0073  # member accuracy by parent
MARGIN = 0.01  # claims.ACCURACY_MARGIN
# The instability analysis's claims. Not yet measured on the default run: assumed sizes, to be replaced by
# its barriers.parquet and onset.parquet (a barrier falling from 8 to 0.5 error points over the spawn
# steps; the gain past the onset step that of GAIN_CURVE at its last two steps; re-initialising opening
# a barrier of 5 error points).
BARRIER_CURVE = np.array([0.08, 0.05, 0.02, 0.01, 0.005])  # coupled-to-t's barrier (assumed)
BARRIER_NOISE = 0.01
PAST_ONSET_GAIN, PAST_ONSET_SD = float(GAIN_CURVE[-2:].mean()), GAIN_NOISE  # mean gain past the onset, per parent
REINIT_BARRIER_DIFF, REINIT_BARRIER_SD = 0.05, 0.03  # reinit minus coupled-to-t-reset barrier (assumed)


@dataclass(frozen=True)
class Scenario:
    name: str
    claim: str  # the claim whose test it runs
    truth: str  # "null" (supported must stay at or below 5%) or "effect" (the rate is power)
    draw: Draw
    kind: str
    sign: int = 0
    margin: float = 0.0
    permutation: bool = False  # a permutation test: dearer, and no interval


Draw = Callable[[np.random.Generator, int], tuple[E.Estimate, float]]  # (rng, n_parents) -> (estimate, truth or nan)


def _curves(values: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(values, columns=SPAWN_STEPS)


def _trend(curve: np.ndarray, noise: float, n_perm: int) -> Draw:
    """Parents' curves: the curve, a parent offset and independent noise at each t."""

    def draw(rng: np.random.Generator, n: int) -> tuple[E.Estimate, float]:
        v = curve + rng.normal(0, noise, (n, 1)) + rng.normal(0, noise, (n, len(curve)))
        return E.trend(_curves(v), "parents", n_perm, seed=int(rng.integers(2**31))), np.nan

    return draw


def _between(curve: np.ndarray, noise: float, n_perm: int) -> Draw:
    """Pairs of parents: the curve plus each parent's own offset curve (so pairs sharing a parent are
    correlated) and the pair's noise."""

    def draw(rng: np.random.Generator, n: int) -> tuple[E.Estimate, float]:
        own = rng.normal(0, noise, (n, len(curve)))
        pairs = [(a, b) for a in range(n) for b in range(a + 1, n)]
        v = np.array([curve + own[a] + own[b] + rng.normal(0, noise / 2, len(curve)) for a, b in pairs])
        return E.joint_trend(_curves(v), n, n_perm, seed=int(rng.integers(2**31))), np.nan

    return draw


def _paired(mean: float, sd: float) -> Draw:
    def draw(rng: np.random.Generator, n: int) -> tuple[E.Estimate, float]:
        return E.one_sample(rng.normal(mean, sd, n), "parents", "paired t over parents"), mean

    return draw


def _one_sample(mean: float, sd: float) -> Draw:
    """A per-parent statistic (the mean gain over the spawn steps past the parent's onset)."""

    def draw(rng: np.random.Generator, n: int) -> tuple[E.Estimate, float]:
        return E.one_sample(rng.normal(mean, sd, n), "parents"), mean

    return draw


def _welch(mean: float, sd_a: float, sd_b: float) -> Draw:
    """Two independent groups of parents with unequal spreads."""

    def draw(rng: np.random.Generator, n: int) -> tuple[E.Estimate, float]:
        return E.welch(rng.normal(mean, sd_a, n), rng.normal(0, sd_b, n), "parents"), mean

    return draw


def scenarios(n_perm: int) -> list[Scenario]:
    flat = np.zeros(len(SPAWN_STEPS))
    return [
        Scenario("no trend", "gain-falls", "null", _trend(flat, GAIN_NOISE, n_perm), "direction", -1, permutation=True),
        Scenario(
            "gain falls as in the default run",
            "gain-falls",
            "effect",
            _trend(GAIN_CURVE, GAIN_NOISE, n_perm),
            "direction",
            -1,
            permutation=True,
        ),
        Scenario(
            "no trend, pairs of parents",
            "kl-between-parents-rises",
            "null",
            _between(flat, KL_NOISE, n_perm),
            "direction",
            +1,
            permutation=True,
        ),
        Scenario(
            "between-parent KL rises as in the default run",
            "kl-between-parents-rises",
            "effect",
            _between(KL_CURVE, KL_NOISE, n_perm),
            "direction",
            +1,
            permutation=True,
        ),
        Scenario("no difference (paired)", "reinit-low-beats-high", "null", _paired(0.0, REINIT_SD), "direction", +1),
        Scenario(
            "difference of the default run's size (paired)",
            "reinit-low-beats-high",
            "effect",
            _paired(REINIT_DIFF, REINIT_SD),
            "direction",
            +1,
        ),
        Scenario(
            "no trend in the barrier",
            "barrier-falls",
            "null",
            _trend(flat, BARRIER_NOISE, n_perm),
            "direction",
            -1,
            permutation=True,
        ),
        Scenario(
            "barrier falls as assumed for the default run",
            "barrier-falls",
            "effect",
            _trend(BARRIER_CURVE, BARRIER_NOISE, n_perm),
            "direction",
            -1,
            permutation=True,
        ),
        Scenario(
            "gain past the onset at the margin (TOST)",
            "gain-zero-past-onset",
            "null",
            _one_sample(MARGIN, PAST_ONSET_SD),
            "equivalence",
            margin=MARGIN,
        ),
        Scenario(
            "gain past the onset of the default run's size (TOST)",
            "gain-zero-past-onset",
            "effect",
            _one_sample(PAST_ONSET_GAIN, PAST_ONSET_SD),
            "equivalence",
            margin=MARGIN,
        ),
        Scenario(
            "no barrier opened (paired)",
            "reinit-opens-barrier",
            "null",
            _paired(0.0, REINIT_BARRIER_SD),
            "direction",
            +1,
        ),
        Scenario(
            "barrier opened as assumed for the default run (paired)",
            "reinit-opens-barrier",
            "effect",
            _paired(REINIT_BARRIER_DIFF, REINIT_BARRIER_SD),
            "direction",
            +1,
        ),
        Scenario(
            "difference at the margin (TOST)",
            "order-same-accuracy",
            "null",
            _paired(MARGIN, ORDER_SD),
            "equivalence",
            margin=MARGIN,
        ),
        Scenario(
            "equivalent, a difference of the default run's size (TOST)",
            "order-same-accuracy",
            "effect",
            _paired(ORDER_DIFF, ORDER_SD),
            "equivalence",
            margin=MARGIN,
        ),
        Scenario(
            "difference at -margin (non-inferiority, Welch)",
            "members-not-worse",
            "null",
            _welch(-MARGIN, COUPLED_SD, INDEPENDENT_SD),
            "noninferiority",
            margin=MARGIN,
        ),
        Scenario(
            "not worse, as in the default run (non-inferiority, Welch)",
            "members-not-worse",
            "effect",
            _welch(MEMBERS_DIFF, COUPLED_SD, INDEPENDENT_SD),
            "noninferiority",
            margin=MARGIN,
        ),
    ]


def rates(scenario: Scenario, n_parents: int, reps: int, seed: int = 0) -> dict:
    """The share of `reps` draws called supported, and the coverage of the 95% intervals (nan where the
    test has none)."""
    rng = np.random.default_rng([seed, n_parents, zlib.crc32(scenario.name.encode())])
    supported, covered = 0, []
    for _ in range(reps):
        est, truth = scenario.draw(rng, n_parents)
        E.decide(est, scenario.kind, scenario.sign, scenario.margin)
        supported += est.verdict == E.SUPPORTED
        if np.isfinite(truth) and np.isfinite(est.ci_low):
            covered.append(est.ci_low <= truth <= est.ci_high)
    return {
        "scenario": scenario.name,
        "claim": scenario.claim,
        "truth": scenario.truth,
        "parents": n_parents,
        "reps": reps,
        "supported": supported / reps,
        "coverage": float(np.mean(covered)) if covered else float("nan"),
    }


def table(
    parents: tuple[int, ...] = (3, 4, 10), reps: int = 1000, perm_reps: int = 300, n_perm: int = 999, seed: int = 0
) -> pd.DataFrame:
    """Every scenario at every number of parents: `reps` draws of a t-test (cheap; enough to tell a
    coverage of 93% from 95%), `perm_reps` of a permutation test of n_perm arrangements."""
    return pd.DataFrame(
        [rates(s, n, perm_reps if s.permutation else reps, seed) for s in scenarios(n_perm) for n in parents]
    )
