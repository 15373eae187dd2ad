"""Statistics over independent training units and the rules that turn their intervals into verdicts
(docs/design.md, "Claims"): pure numpy and pandas.

The unit of every bootstrap is the independent training unit, never the test example: parents, pairs of
parents or independent runs. Resamples come from np.random.default_rng(BOOTSTRAP_SEED) through
`metrics.bootstrap_ci` / `metrics.bootstrap_ci_groups`, so every estimate is the same on every run.

- trend over t (`trend`): Spearman's rank correlation between t and the mean over units of the value (the
  curve of the figure); a resample redraws the units and recomputes the curve and its correlation. Needs
  MIN_STEPS spawn steps or more.
- `early_excess`: how much more a curve falls before its middle step than a linear fall would.
- difference: the mean over units of a condition minus that of its reference, paired by unit
  (`paired_difference`) or from independent groups (`group_difference`).

Rules (`verdict_*`, one per kind of claim):

- a direction ("falls", "rises", "more"): the interval excludes 0 on the claimed side -> supported; it
  excludes 0 on the other side -> not supported; else inconclusive.
- equivalence ("indistinguishable", "small"): the interval lies inside [-margin, +margin] -> supported;
  it lies wholly outside it -> not supported; else inconclusive.
- non-inferiority ("not worse"): the lower end of the interval is above -margin -> supported; the upper
  end is below -margin -> not supported; else inconclusive.

An estimate the data cannot give (too few units or steps) carries the reason instead, never an error.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import metrics as M

BOOTSTRAP_SEED = 0
N_BOOT = 1000
MIN_UNITS = 2
MIN_STEPS = 3

SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = "supported", "not supported", "inconclusive"
VERDICTS = (SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE)


# ---------------------------------------------------------------------------------------------------
# Rules


def verdict_direction(lo: float, hi: float, sign: int) -> str:
    """sign +1: the claim is that the statistic is above 0; -1: below 0."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return INCONCLUSIVE
    lo, hi = (lo, hi) if sign > 0 else (-hi, -lo)
    return SUPPORTED if lo > 0 else NOT_SUPPORTED if hi < 0 else INCONCLUSIVE


def verdict_equivalence(lo: float, hi: float, margin: float) -> str:
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return INCONCLUSIVE
    if -margin <= lo and hi <= margin:
        return SUPPORTED
    return NOT_SUPPORTED if lo > margin or hi < -margin else INCONCLUSIVE


def verdict_noninferiority(lo: float, hi: float, margin: float) -> str:
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return INCONCLUSIVE
    return SUPPORTED if lo > -margin else NOT_SUPPORTED if hi < -margin else INCONCLUSIVE


def direction_rule(sign: int) -> str:
    side = "above" if sign > 0 else "below"
    other = "below" if sign > 0 else "above"
    return f"supported if the interval lies {side} 0, not supported if {other} 0, else inconclusive"


def equivalence_rule(margin: float, unit: str) -> str:
    return (f"supported if the interval lies within +-{margin * 100:g} {unit}, not supported if wholly "
            "outside it, else inconclusive")


def noninferiority_rule(margin: float, unit: str) -> str:
    return (f"supported if the interval lies above -{margin * 100:g} {unit}, not supported if wholly "
            "below it, else inconclusive")


# ---------------------------------------------------------------------------------------------------
# Statistics over units


@dataclass
class Estimate:
    value: float = float("nan")
    ci_low: float = float("nan")
    ci_high: float = float("nan")
    n_units: int = 0
    reason: str = ""
    verdict: str | None = None  # set by a check that applies its rule itself (several conditions)


def lacking(reason: str, n_units: int = 0) -> Estimate:
    return Estimate(n_units=n_units, reason=reason)


def unit_curves(df: pd.DataFrame, value: str, unit, x: str = "t") -> pd.DataFrame:
    """Units x values of `x`: the mean of `value` within each (unit, x); units lacking an x dropped."""
    unit = [unit] if isinstance(unit, str) else list(unit)
    curves = df.groupby(unit + [x], observed=True)[value].mean().unstack(x)
    return curves.dropna().sort_index(axis=1)


def too_few_units(n: int, what: str) -> str | None:
    return f"{n} {what}: a bootstrap over {what} needs {MIN_UNITS} or more" if n < MIN_UNITS else None


def _curve_estimate(curves: pd.DataFrame, what: str, stat, n_boot: int, seed: int) -> Estimate:
    """`stat(t, mean curve)` of the units' curves over t (rows: units, columns: t), with its interval
    over resampled units; lacking below MIN_STEPS spawn steps or MIN_UNITS units."""
    t = curves.columns.to_numpy(dtype=float)
    values = curves.to_numpy(dtype=float)
    n = len(values)
    if len(t) < MIN_STEPS:
        return lacking(f"{len(t)} spawn step(s) with data: a trend needs {MIN_STEPS} or more", n)
    if (reason := too_few_units(n, what)) is not None:
        return lacking(reason, n)
    lo, hi = M.bootstrap_ci(lambda idx: stat(t, values[idx].mean(axis=0)), n, n_boot, seed)
    return Estimate(stat(t, values.mean(axis=0)), lo, hi, n)


def trend(curves: pd.DataFrame, what: str, n_boot: int = N_BOOT, seed: int = BOOTSTRAP_SEED) -> Estimate:
    """Spearman's rho between t and the mean curve over units, with its interval over resampled units."""
    return _curve_estimate(curves, what, M.spearman, n_boot, seed)


def early_excess(curves: pd.DataFrame, what: str, n_boot: int = N_BOOT, seed: int = BOOTSTRAP_SEED) -> Estimate:
    """How much more the mean curve falls before the middle spawn step t_m than a fall linear in t would:
    (v(t_0) - v(t_m)) - (t_m - t_0) / (t_max - t_0) * (v(t_0) - v(t_max)); t_m the median spawn step
    (the upper one of an even count). Positive: the fall is fastest early."""
    def stat(t, v):
        m = len(t) // 2
        return float((v[0] - v[m]) - (t[m] - t[0]) / (t[-1] - t[0]) * (v[0] - v[-1]))

    return _curve_estimate(curves, what, stat, n_boot, seed)


def paired_difference(a: pd.Series, b: pd.Series, what: str, n_boot: int = N_BOOT,
                      seed: int = BOOTSTRAP_SEED) -> Estimate:
    """Mean over the units both series hold (their index) of a - b, with its interval over units."""
    d = (a - b).dropna().to_numpy(dtype=float)
    if (reason := too_few_units(len(d), what)) is not None:
        return lacking(reason, len(d))
    lo, hi = M.bootstrap_ci(lambda idx: float(d[idx].mean()), len(d), n_boot, seed)
    return Estimate(float(d.mean()), lo, hi, len(d))


def group_difference(a, b, what: str, n_boot: int = N_BOOT, seed: int = BOOTSTRAP_SEED) -> Estimate:
    """mean(a) - mean(b) of two independent groups of units, each resampled on its own."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    n = min(len(a), len(b))
    if (reason := too_few_units(n, what)) is not None:
        return lacking(reason, n)
    lo, hi = M.bootstrap_ci_groups(lambda i, j: float(a[i].mean() - b[j].mean()), (len(a), len(b)),
                                   n_boot, seed)
    return Estimate(float(a.mean() - b.mean()), lo, hi, n)
