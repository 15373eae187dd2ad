"""Tests over independent training units, valid with the few units an experiment has (3 or 4 parents),
and the rules that turn their p-values into verdicts (docs/design.md, "Claims"): pure numpy, pandas and
scipy's t distribution.

The unit is the independent training unit, never the test example: parents, or independent runs. Every
verdict is a test at the two-sided 5% level, one-sided 2.5% on the claimed side (ALPHA), so it can be
read off the row's 95% interval wherever the row has one.

- trend over t within units (`trend`): the mean over units of each unit's own Spearman rho between t
  and its curve (tie-averaged ranks), Page's L test for ordered alternatives with the units as blocks;
  its p-value permutes the spawn steps within each unit (each unit's whole curve), exact when the
  (m!)^n arrangements are at most N_PERMUTATIONS, else N_PERMUTATIONS seeded draws. So its p-value
  shrinks with the number of units when each unit's curve falls: under the null the mean curve's
  about m! orders are equally likely, so the rho of the mean curve, which it replaces, could not go
  much below p = 1/m! (1/120 with 5 spawn steps) however many units agree. Between-parent statistics
  (`joint_trend`): Spearman's rho between t and the mean curve over pairs of parents, the spawn steps
  permuted alike for every pair: pairs share parents, so they are not independent and are never
  permuted on their own. No interval: the statistics are rank correlations, whose "true value" no
  interval covers.
- a mean over units (`one_sample`: a per-unit statistic; `paired`: a difference of two conditions run
  from the same units), or a difference of two independent groups of units (`welch`): Student's /
  Welch's t, with its 95% t-interval.

Rules (`verdict`, one per kind of claim), with p(H) the one-sided p-value of the test against H:

- direction ("falls", "rises", "more"): p(no effect or the other way) < ALPHA -> supported; the same
  test the other way < ALPHA -> not supported; else inconclusive.
- equivalence ("as accurate", "little"): TOST, both p(d <= -margin) and p(d >= margin) < ALPHA (the 95%
  interval inside +-margin) -> supported; p(d inside the margins) < ALPHA on either side (the interval
  wholly outside) -> not supported; else inconclusive.
- non-inferiority ("not worse"): p(d <= -margin) < ALPHA (the interval above -margin) -> supported;
  p(d >= -margin) < ALPHA -> not supported; else inconclusive.

A test the units at hand cannot make significant (a permutation test with fewer than 1/ALPHA
arrangements), an estimate the data cannot give (too few units or steps), or a t-test over units with no
spread (`no_spread`: they agree exactly, which measures no error) is inconclusive with the reason, never
an error and never p = 0.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import stats as S

from . import metrics as M

ALPHA = 0.025  # one-sided, on the claimed side: a two-sided 5% test, the 95% interval
LEVEL = 1 - 2 * ALPHA
PERMUTATION_SEED = 0
N_PERMUTATIONS = 10_000
MIN_UNITS = 2
MIN_STEPS = 3

SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = "supported", "not supported", "inconclusive"
VERDICTS = (SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE)
NO_INTERVAL = "none (a permutation test gives a p-value only)"


@dataclass
class Estimate:
    """A statistic, its 95% interval (nan where the test has none), and `p_above(x)` / `p_below(x)`:
    the one-sided p-values against "the true value is <= x" / ">= x" (None: no test could be made)."""

    value: float = float("nan")
    ci_low: float = float("nan")
    ci_high: float = float("nan")
    n_units: int = 0
    test: str = ""
    interval: str = ""
    reason: str = ""
    p_above: Callable[[float], float] | None = field(default=None, repr=False)
    p_below: Callable[[float], float] | None = field(default=None, repr=False)
    p_value: float = float("nan")  # set by `decide`: the p-value the verdict rests on
    verdict: str | None = None  # set by `decide`, or by a check that combines several estimates


def lacking(reason: str, n_units: int = 0, test: str = "") -> Estimate:
    return Estimate(n_units=n_units, reason=reason, test=test)


def too_few_units(n: int, what: str) -> str | None:
    return f"{n} {what}: a test over {what} needs {MIN_UNITS} or more" if n < MIN_UNITS else None


def unit_curves(df: pd.DataFrame, value: str, unit: str | list[str], x: str = "t") -> pd.DataFrame:
    """Units x values of `x`: the mean of `value` within each (unit, x); units lacking an x dropped."""
    unit = [unit] if isinstance(unit, str) else list(unit)
    curves = df.groupby(unit + [x], observed=True)[value].mean().unstack(x)
    return curves.dropna().sort_index(axis=1)


# ---------------------------------------------------------------------------------------------------
# Rules


def direction_rule(sign: int) -> str:
    side, other = ("above", "below") if sign > 0 else ("below", "above")
    return (
        f"supported if the one-sided p that it is not {side} 0 is < {ALPHA}, not supported if the "
        f"same test finds it {other} 0, else inconclusive"
    )


def equivalence_rule(margin: float, unit: str) -> str:
    return (
        f"TOST: supported if both one-sided p < {ALPHA} (the 95% interval within +-{margin * 100:g} "
        f"{unit}), not supported if the interval lies wholly outside, else inconclusive"
    )


def noninferiority_rule(margin: float, unit: str) -> str:
    return (
        f"supported if the one-sided p that it is at or below -{margin * 100:g} {unit} is < {ALPHA} "
        "(the 95% interval above it), not supported if the interval lies wholly below, else inconclusive"
    )


def decide(est: Estimate, kind: str, sign: int = 0, margin: float = 0.0) -> Estimate:
    """est with its verdict and the p-value it rests on, by the rule of `kind` (module docstring)."""
    if est.verdict is not None:
        return est
    if est.reason or est.p_above is None or est.p_below is None:
        est.verdict = INCONCLUSIVE
        return est
    if kind == "direction":
        claim, other = (est.p_above, est.p_below) if sign > 0 else (est.p_below, est.p_above)
        est.p_value, p_other = claim(0.0), other(0.0)
    elif kind == "equivalence":
        est.p_value = max(est.p_above(-margin), est.p_below(margin))
        p_other = min(est.p_above(margin), est.p_below(-margin))
    else:
        est.p_value, p_other = est.p_above(-margin), est.p_below(-margin)
    est.verdict = SUPPORTED if est.p_value < ALPHA else NOT_SUPPORTED if p_other < ALPHA else INCONCLUSIVE
    return est


# ---------------------------------------------------------------------------------------------------
# t-based: a mean over units, a paired difference, a difference of independent groups


def _t_estimate(mean: float, se: float, df: float, n: int, what: str, test: str, interval: str) -> Estimate:
    """The 95% t-interval mean +- q se and the one-sided p-values of (mean - x) / se on df degrees of
    freedom. Units with no spread (se 0) give no test: t would be infinite and every p 0 or 1, a
    certainty that n agreeing units do not give. The estimate keeps their common value and says so."""
    if not se > 0:
        return Estimate(float(mean), n_units=n, test=test, reason=no_spread(n, what, mean))
    q = float(S.t.ppf(1 - ALPHA, df))

    def p_above(x: float) -> float:
        return float(S.t.sf((mean - x) / se, df))

    def p_below(x: float) -> float:
        return float(S.t.cdf((mean - x) / se, df))

    return Estimate(
        float(mean), float(mean - q * se), float(mean + q * se), n, test, interval, p_above=p_above, p_below=p_below
    )


def no_spread(n: int, what: str, value: float) -> str:
    """What units that all agree can and cannot conclude."""
    return (
        f"no spread: the {n} {what} all give {value:.3g}, so the estimate is {value:.3g} but a t-test has "
        f"no variation to weigh it against and cannot say how far the true value may lie from it "
        f"(no p-value, no interval); more {what}, or a finer statistic, would"
    )


def t_summary(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Mean, standard error and degrees of freedom of the units along the last axis (batched for the
    calibration, bench/bench_claims_calibration.py)."""
    n = x.shape[-1]
    return x.mean(axis=-1), x.std(axis=-1, ddof=1) / math.sqrt(n), n - 1


def welch_summary(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """mean(a) - mean(b), its standard error and the Welch-Satterthwaite degrees of freedom, along the
    last axis."""
    va, vb = a.var(axis=-1, ddof=1) / a.shape[-1], b.var(axis=-1, ddof=1) / b.shape[-1]
    se2 = va + vb
    with np.errstate(invalid="ignore", divide="ignore"):
        df = se2**2 / (va**2 / (a.shape[-1] - 1) + vb**2 / (b.shape[-1] - 1))
    df = np.where(se2 > 0, df, a.shape[-1] + b.shape[-1] - 2)
    return a.mean(axis=-1) - b.mean(axis=-1), np.sqrt(se2), df


def one_sample(x: npt.ArrayLike, what: str, test: str | None = None) -> Estimate:
    """The mean over units of a per-unit statistic, Student's t over the units."""
    values = np.asarray(x, dtype=float)
    values = values[np.isfinite(values)]
    test = test or f"one-sample t over {what}"
    if (reason := too_few_units(len(values), what)) is not None:
        return lacking(reason, len(values), test)
    mean, se, df = t_summary(values)
    return _t_estimate(float(mean), float(se), float(df), len(values), what, test, f"95% t-interval over {what}")


def paired(a: pd.Series, b: pd.Series, what: str) -> Estimate:
    """Mean over the units both series hold (their index) of a - b, the paired t-test over them."""
    return one_sample((a - b).dropna(), what, f"paired t over {what}")


def welch(a: npt.ArrayLike, b: npt.ArrayLike, what: str) -> Estimate:
    """mean(a) - mean(b) of two independent groups of units, Welch's t."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    n = min(len(a), len(b))
    test = f"Welch t, two independent groups of {what}"
    if (reason := too_few_units(n, what)) is not None:
        return lacking(reason, n, test)
    d, se, df = welch_summary(a, b)
    return _t_estimate(float(d), float(se), float(df), len(a) + len(b), what, test, f"95% Welch t-interval over {what}")


# ---------------------------------------------------------------------------------------------------
# Permutation tests of a trend over t


def spearman_rows(t: np.ndarray, curves: np.ndarray) -> np.ndarray:
    """Spearman's rho between t and each row of curves (..., m), tie-averaged ranks, 0 for a constant
    row (as metrics.spearman)."""
    rt = M.ranks(t) - (len(t) + 1) / 2
    less = (curves[..., :, None] > curves[..., None, :]).sum(axis=-1)
    ties = (curves[..., :, None] == curves[..., None, :]).sum(axis=-1)
    rc = less + (ties + 1) / 2 - (len(t) + 1) / 2
    den = np.sqrt((rt**2).sum() * (rc**2).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (rc * rt).sum(axis=-1) / np.where(den > 0, den, 1), 0.0)


def _arrangements(m: int, n: int, n_perm: int, seed: int) -> tuple[np.ndarray, bool]:
    """(K, n, m) orders of the m spawn steps for each of n blocks, the identity first: all (m!)^n
    when that is at most n_perm (exact), else the identity and n_perm seeded random ones."""
    if math.factorial(m) ** n <= n_perm:
        perms = np.array(list(itertools.permutations(range(m))))
        grid = np.array(list(itertools.product(range(len(perms)), repeat=n)))
        return perms[grid], True
    rng = np.random.default_rng(seed)
    drawn = np.argsort(rng.random((n_perm, n, m)), axis=-1)
    return np.concatenate([np.broadcast_to(np.arange(m), (1, n, m)), drawn]), False


def _permutation_estimate(
    t: np.ndarray,
    values: np.ndarray,
    n_blocks: int,
    n_units: int,
    what: str,
    test: str,
    n_perm: int,
    seed: int,
    per_row: bool = False,
) -> Estimate:
    """The statistic and its permutation p-values: the mean over values' rows of each row's rho(t, row)
    (per_row), else rho(t, mean of values over rows). The steps of values' rows are permuted together
    in n_blocks blocks (each row its own block, or one block for all rows)."""
    m = len(t)
    if m < MIN_STEPS:
        return lacking(f"{m} spawn step(s) with data: a trend needs {MIN_STEPS} or more", n_units, test)
    if (reason := too_few_units(n_units, what)) is not None:
        return lacking(reason, n_units, test)
    total = math.factorial(m) ** n_blocks
    if total * ALPHA < 1:
        return lacking(
            f"{m} spawn steps and {n_blocks} independent block(s): {total} arrangements, the "
            f"smallest p is 1/{total} = {1 / total:.3g}, not below {ALPHA}",
            n_units,
            test,
        )
    order, exact = _arrangements(m, n_blocks, n_perm, seed)
    rows = np.arange(len(values)) % n_blocks
    arranged = np.take_along_axis(values[None], order[:, rows], axis=-1)  # (K, rows, m)
    if per_row:  # each row's own rho, then their mean: Page's L up to a linear map (untied rows)
        null = spearman_rows(t, arranged).mean(axis=1)
    else:  # the rho of the mean curve
        null = spearman_rows(t, arranged.mean(axis=1))
    obs = float(null[0])  # the first arrangement is the observed one
    tol = 1e-12
    p_up, p_down = float(np.mean(null >= obs - tol)), float(np.mean(null <= obs + tol))
    draws = f"all {len(order)} arrangements" if exact else f"{n_perm} seeded draws"
    return Estimate(
        obs,
        n_units=n_units,
        test=f"{test} ({draws})",
        interval=NO_INTERVAL,
        p_above=_at_zero(p_up),
        p_below=_at_zero(p_down),
    )


def _at_zero(p: float) -> Callable[[float], float]:
    """A permutation test's p-value answers "no trend" (rho 0) only."""

    def f(x: float) -> float:
        if x != 0:
            raise ValueError("a permutation test of a trend tests rho = 0 only")
        return p

    return f


def trend(curves: pd.DataFrame, what: str, n_perm: int = N_PERMUTATIONS, seed: int = PERMUTATION_SEED) -> Estimate:
    """The mean over units of each unit's own Spearman rho between t and its curve (rows: units,
    columns: t; tie-averaged ranks), its p-value from permuting the spawn steps within each unit: Page's
    L test for ordered alternatives with the units as blocks (L is a linear function of the mean rho
    where no curve has ties). Unlike the rho of the mean curve, whose p cannot go much below 1/m!, it
    tells apart the (m!)^n arrangements, so its p-value falls with the number of units when every
    unit's curve moves alike."""
    t, values = curves.columns.to_numpy(dtype=float), curves.to_numpy(dtype=float)
    return _permutation_estimate(
        t,
        values,
        len(values),
        len(values),
        what,
        f"Page-type test: permutation of t within each of the {what}",
        n_perm,
        seed,
        per_row=True,
    )


def joint_trend(
    curves: pd.DataFrame, n_parents: int, n_perm: int = N_PERMUTATIONS, seed: int = PERMUTATION_SEED
) -> Estimate:
    """Spearman's rho between t and the mean curve over pairs of parents (rows: pairs), its p-value
    from permuting the spawn steps alike for every pair, since pairs share parents (one block: at most
    m! arrangements); n_units is the number of parents."""
    t, values = curves.columns.to_numpy(dtype=float), curves.to_numpy(dtype=float)
    return _permutation_estimate(
        t, values, 1, n_parents, "parents", "permutation of t, the same for every pair of parents", n_perm, seed
    )


def early_excess_per_unit(curves: pd.DataFrame) -> pd.Series:
    """How much more each unit's curve falls before the middle spawn step t_m than a fall linear in t
    would: (v(t_0) - v(t_m)) - (t_m - t_0) / (t_max - t_0) * (v(t_0) - v(t_max)); t_m the median spawn
    step (the upper one of an even count). Positive: the fall is fastest early. Linear in v, so the
    mean over units is the statistic of the mean curve."""
    t = curves.columns.to_numpy(dtype=float)
    v = curves.to_numpy(dtype=float)
    m = len(t) // 2
    excess = (v[:, 0] - v[:, m]) - (t[m] - t[0]) / (t[-1] - t[0]) * (v[:, 0] - v[:, -1])
    return pd.Series(excess, index=curves.index)


def early_excess(curves: pd.DataFrame, what: str) -> Estimate:
    """The mean early excess over units, Student's t over the units' own excesses."""
    if curves.shape[1] < MIN_STEPS:
        return lacking(
            f"{curves.shape[1]} spawn step(s) with data: a trend needs {MIN_STEPS} or more",
            len(curves),
            f"one-sample t over {what}",
        )
    return one_sample(early_excess_per_unit(curves), what)
