"""The claims' tests and rules on small hand-made tables: p-values and intervals against hand-computed
values, a clear effect in the claimed direction supported, no effect inconclusive, the opposite effect not
supported; a test the units cannot make significant, and missing inputs, inconclusive with a reason."""

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from coupledsgd.analysis import claims as C
from coupledsgd.analysis import estimates as E
from coupledsgd.analysis import metrics as M

TS = [0, 6, 12, 30, 60, 180]
N_PERM = 500


def _ensembles(values, condition="coupled-to-t", column="gain", parents=4, ts=TS):
    """values(t, parent) -> the column's value, one row per (condition, t, parent)."""
    return pd.DataFrame([{"condition": condition, "t": t, "parent": p, column: values(t, p)}
                         for t in ts for p in range(parents)])


def _noise(t, p):
    """Seed noise without a trend: each parent's curve rises or falls at random."""
    return float(np.random.default_rng(1000 * p + t).normal(0, 0.01))


def _row(table, claim):
    return table.set_index("claim").loc[claim]


def _check(claim_id, tables):
    return _row(C.claims_table(tables, N_PERM), claim_id)


def test_spearman_and_ranks_match_hand_values():
    assert M.ranks([3, 1, 2, 2]).tolist() == [4.0, 1.0, 2.5, 2.5]
    assert M.spearman([0, 6, 12, 30], [3, 2, 2.5, 1]) == pytest.approx(-0.8)
    assert M.spearman([1, 2, 3], [5, 5, 5]) == 0.0
    assert M.spearman([1, 2, 3], [1, 4, 9]) == pytest.approx(1.0)


def test_spearman_of_many_rows_is_that_of_each_row_ties_included():
    rng = np.random.default_rng(0)
    rows = rng.integers(0, 3, size=(50, 5)).astype(float)  # many ties, some constant rows
    t = np.array([0, 6, 30, 60, 180.0])
    assert E.spearman_rows(t, rows) == pytest.approx([M.spearman(t, r) for r in rows])


def test_paired_t_matches_the_hand_computed_interval_and_p_value():
    # d = 1, 2, 3: mean 2, sd 1, se 1/sqrt(3), t = 2 sqrt(3) on 2 degrees of freedom, whose upper tail is
    # (1 - t / sqrt(t^2 + 2)) / 2; the 97.5% quantile of t(2) is 4.3027
    est = E.paired(pd.Series([2.0, 4, 6]), pd.Series([1.0, 2, 3]), "parents")
    t = 2 * math.sqrt(3)
    assert est.value == 2 and est.n_units == 3 and est.test == "paired t over parents"
    assert (est.ci_low, est.ci_high) == pytest.approx((2 - 4.302653 / math.sqrt(3), 2 + 4.302653 / math.sqrt(3)))
    assert est.p_above(0) == pytest.approx((1 - t / math.sqrt(t * t + 2)) / 2) == pytest.approx(0.037090, abs=1e-6)
    # one-sided p 0.037 > 0.025: a rise of 2 over 3 parents is not yet supported; the interval holds 0
    assert E.decide(est, "direction", sign=+1).verdict == "inconclusive" and est.ci_low < 0


def test_welch_uses_the_satterthwaite_degrees_of_freedom():
    # variances 1 and 4 over 3 units each: se^2 = 1/3 + 4/3, df = (5/3)^2 / ((1/3)^2/2 + (4/3)^2/2) = 50/17
    est = E.welch([4.0, 6, 8], [1.0, 2, 3], "parents")
    se, df = math.sqrt(5 / 3), 50 / 17
    assert est.value == 4 and est.n_units == 6
    assert est.p_above(0) == pytest.approx(float(E.S.t.sf(4 / se, df)))
    assert est.ci_high - est.value == pytest.approx(float(E.S.t.ppf(0.975, df)) * se)


def test_equivalence_and_noninferiority_rules_read_the_95_percent_interval():
    def est(mean, se):
        return E._t_estimate(mean, se, 10, 11, "units", "t", "95% t")

    q = float(E.S.t.ppf(0.975, 10))
    inside, straddle, outside = est(0.0, 0.009 / q), est(0.0, 0.011 / q), est(0.03, 0.019 / q)
    assert [E.decide(x, "equivalence", margin=0.01).verdict for x in (inside, straddle, outside)] == [
        "supported", "inconclusive", "not supported"]
    assert inside.p_value < 0.025 < straddle.p_value  # TOST: the larger of the two one-sided p's
    above, across, below = est(0.0, 0.009 / q), est(0.0, 0.011 / q), est(-0.03, 0.019 / q)
    assert [E.decide(x, "noninferiority", margin=0.01).verdict for x in (above, across, below)] == [
        "supported", "inconclusive", "not supported"]


def test_permutation_p_value_is_exact_when_the_arrangements_are_few():
    # 3 parents x 3 spawn steps: all 6^3 = 216 arrangements, checked against a loop over them
    rng = np.random.default_rng(4)
    values = rng.normal(size=(3, 3)) - np.array([0.0, 0.5, 1.0])
    t = np.array([0.0, 10, 20])
    est = E.trend(pd.DataFrame(values, columns=t), "parents")
    obs = np.mean([M.spearman(t, v) for v in values])  # the mean of the parents' own rhos
    null = [np.mean([M.spearman(t, values[i][list(p)]) for i, p in enumerate(ps)])
            for ps in itertools.product(itertools.permutations(range(3)), repeat=3)]
    assert est.value == pytest.approx(obs) and "all 216 arrangements" in est.test
    assert est.p_below(0) == pytest.approx(np.mean(np.array(null) <= obs + 1e-12))
    assert np.isnan(est.ci_low) and est.interval.startswith("none")


def test_within_parent_trend_is_the_mean_of_the_parents_rhos_with_a_hand_counted_p_value():
    # 3 steps: the 6 orders of one parent give rho 1, 0.5, 0.5, -0.5, -0.5, -1. Two parents fall
    # (rho -1), one falls but for a swap (rho -0.5): mean -5/6. Of the 216 arrangements, a mean <= -5/6
    # (rho sum <= -2.5) comes from all three at -1 (1) or two at -1 and one at -0.5 (3 x 2 = 6): p 7/216
    values = pd.DataFrame([[3.0, 2, 1], [5.0, 4, 0], [2.0, 3, 1]], columns=[0, 6, 30])
    est = E.decide(E.trend(values, "parents"), "direction", sign=-1)
    assert est.value == pytest.approx(-5 / 6) and est.p_value == pytest.approx(7 / 216)
    assert est.verdict == "inconclusive" and "Page-type test" in est.test
    # every parent falls: 1/216 < 0.025, supported (the rho of the mean curve, the statistic before, has
    # p 31/216 on these values: about 1/3!, the joint reorderings of the parents mostly giving a falling mean)
    every = E.decide(E.trend(values.iloc[[0, 1, 1]], "parents"), "direction", sign=-1)
    assert every.value == -1 and every.p_value == pytest.approx(1 / 216) and every.verdict == "supported"


def test_within_parent_trend_p_value_falls_below_one_over_m_factorial_with_more_parents():
    # 4 parents x 5 steps, each falling: 120^4 arrangements, more than n_perm, so n_perm seeded draws
    # and the observed one; no draw reaches rho -1 for every parent, so p = 1 / (n_perm + 1) < 1/120
    values = pd.DataFrame([[5.0, 4, 3, 2, 1]] * 4, columns=[0, 6, 30, 60, 180]) + np.arange(4)[:, None]
    est = E.trend(values, "parents", n_perm=999)
    assert est.value == -1 and est.p_below(0) == pytest.approx(1 / 1000) and "999 seeded draws" in est.test


def test_between_parent_trend_permutes_t_alike_for_every_pair():
    # a strictly rising mean curve over 5 steps: only the identity of the 5! = 120 orders reaches rho 1
    pairs = pd.DataFrame([[0.2, 0.3, 0.35, 0.5, 0.6], [0.1, 0.45, 0.42, 0.6, 0.7]], columns=[0, 6, 30, 60, 180])
    est = E.joint_trend(pairs, n_parents=3)
    assert est.value == 1 and est.p_above(0) == pytest.approx(1 / 120) and est.n_units == 3
    assert E.decide(est, "direction", sign=+1).verdict == "supported"
    # 4 steps: 24 orders, the smallest p 1/24 > 0.025, so the test cannot support any rise
    short = E.decide(E.joint_trend(pairs.iloc[:, :4], n_parents=3), "direction", sign=+1)
    assert short.verdict == "inconclusive" and "1/24" in short.reason


def test_two_parents_over_three_steps_cannot_reach_the_level():
    est = E.decide(E.trend(pd.DataFrame([[3.0, 2, 1], [3.0, 2, 1]], columns=[0, 6, 30]), "parents"),
                   "direction", sign=-1)
    assert est.verdict == "inconclusive" and "36 arrangements" in est.reason


@pytest.mark.parametrize("values, verdict", [
    (lambda t, p: 0.03 - 0.0001 * t + _noise(t, p) / 10, "supported"),
    (_noise, "inconclusive"),
    (lambda t, p: 0.01 + 0.0001 * t + _noise(t, p) / 10, "not supported"),
])
def test_gain_falling_with_t_is_supported_flat_inconclusive_rising_not(values, verdict):
    row = _check("gain-falls", {"ensembles": _ensembles(values)})
    assert row.verdict == verdict, row.to_dict()
    assert row.n_units == 4 and "within each of the parents" in row.test and np.isnan(row.ci_low)
    assert (row.p_value < 0.025) == (verdict == "supported")


def test_between_parent_kl_rising_is_supported_with_the_parents_as_units():
    pairs = pd.DataFrame([{"condition": "coupled-to-t-reset", "t": t, "kind": "between-parents", "parent_a": a,
                           "parent_b": b, "sym_kl": 0.2 + 0.002 * t + 0.01 * a} for t in TS
                          for a in range(4) for b in range(a + 1, 4)])
    row = _row(C.claims_table({"pairs": pairs}, n_perm=1000), "kl-between-parents-rises")
    # 6 pairs of 4 parents: 4 units; 6 steps, all 720 orders (at most n_perm), only the identity reaching rho 1
    assert row.verdict == "supported" and row.n_units == 4 and row.value == 1.0
    assert row.p_value == pytest.approx(1 / 720) and "the same for every pair" in row.test


def test_same_parent_kl_falling_fastest_early_is_supported_and_linear_fall_is_not():
    def pairs(kl):
        return pd.DataFrame([{"condition": "coupled-to-t-reset", "t": t, "kind": "same-parent", "parent_a": p,
                              "parent_b": p, "sym_kl": kl(t) * (1 + 0.1 * p)} for t in TS for p in range(4)])

    early = C.claims_table({"pairs": pairs(lambda t: 0.7 * np.exp(-t / 20))}, N_PERM).set_index("claim")
    assert early.loc["kl-same-parent-falls", "verdict"] == "supported"
    assert early.loc["kl-same-parent-falls-early", "verdict"] == "supported"
    late = C.claims_table({"pairs": pairs(lambda t: 0.7 - 0.003 * t ** 1.2)}, N_PERM).set_index("claim")
    assert late.loc["kl-same-parent-falls", "verdict"] == "supported"
    assert late.loc["kl-same-parent-falls-early", "verdict"] == "not supported"


def test_coupled_order_equivalence_uses_the_margin():
    # paired by parent: the differences are shift +- noise, parent by parent
    def both(shift, noise):
        return pd.concat([_ensembles(lambda t, p: 0.9 + 0.01 * p, "no-coupling", "ensemble_accuracy", ts=[0]),
                          _ensembles(lambda t, p: 0.9 + 0.01 * p + shift + noise * (-1) ** p, "coupled-order",
                                     "ensemble_accuracy", ts=[0])])
    row = _check("order-same-accuracy", {"ensembles": both(0.001, 0.001)})
    assert row.verdict == "supported" and row.test == "paired t over parents" and row.n_units == 4
    assert _check("order-same-accuracy", {"ensembles": both(0.05, 0.001)}).verdict == "not supported"
    assert _check("order-same-accuracy", {"ensembles": both(0.0, 0.02)}).verdict == "inconclusive"


def test_members_not_worse_is_a_noninferiority_rule():
    def members(coupled):
        return pd.DataFrame([{"condition": c, "t": 0, "parent": p, "child": k,
                              "accuracy": (0.88 if c == "no-coupling" else coupled) + 0.001 * k + 0.0005 * p}
                             for c in ("no-coupling", "coupled-to-t") for p in range(4) for k in range(4)])
    assert _check("members-not-worse", {"members": members(0.885)}).verdict == "supported"
    assert _check("members-not-worse", {"members": members(0.80)}).verdict == "not supported"


def _reinit(low, high, reset, column):
    rows = [{"condition": c, "t": 30, "parent": p, column: v(p)}
            for c, v in (("coupled-to-t-reset", reset),) for p in range(4)]
    for pct in (10, 25):
        rows += [{"condition": f"reinit-{side}-{pct}", "t": 30, "parent": p, column: v(p)}
                 for side, v in (("low", low), ("high", high)) for p in range(4)]
    return pd.DataFrame(rows)


def test_reinit_low_beats_high_in_both_directions():
    up = _reinit(lambda p: 0.03 + 0.001 * p, lambda p: 0.015 + 0.001 * p, lambda p: 0.01, "gain")
    assert _check("reinit-low-beats-high", {"ensembles": up}).verdict == "supported"
    down = _reinit(lambda p: 0.01 + 0.001 * p, lambda p: 0.03 + 0.001 * p, lambda p: 0.01, "gain")
    assert _check("reinit-low-beats-high", {"ensembles": down}).verdict == "not supported"


def test_reinit_calibration_small_needs_every_condition_inside_the_margin():
    small = _reinit(lambda p: 0.02 + 1e-5 * p, lambda p: 0.02 - 1e-5 * p, lambda p: 0.02, "ensemble_mace")
    assert _check("reinit-calibration-small", {"ensembles": small}).verdict == "supported"
    large = _reinit(lambda p: 0.03 + 1e-5 * p, lambda p: 0.02, lambda p: 0.02, "ensemble_mace")
    row = _check("reinit-calibration-small", {"ensembles": large})
    assert row.verdict == "not supported" and "reinit-low" in row.reason


def test_reinit_calibration_small_is_inconclusive_when_a_condition_is_untested_naming_it():
    small = _reinit(lambda p: 0.02 + 1e-5 * p, lambda p: 0.02 - 1e-5 * p, lambda p: 0.02, "ensemble_mace")
    # reinit-high-25 has one parent in common with coupled-to-t-reset: too few units to test it
    lone = small[~((small["condition"] == "reinit-high-25") & (small["parent"] > 0))]
    row = _check("reinit-calibration-small", {"ensembles": lone})
    assert row.verdict == "inconclusive" and math.isnan(row.p_value)
    assert "1 of 4 conditions untested (reinit-high-25)" in row.reason
    assert "reinit-high-25 (1 parents: a test over parents needs 2 or more)" in row.reason
    # one tested condition outside the margin refutes "every" whatever the untested ones would show
    large = _reinit(lambda p: 0.03 + 1e-5 * p, lambda p: 0.02 - 1e-5 * p, lambda p: 0.02, "ensemble_mace")
    lone = large[~((large["condition"] == "reinit-high-25") & (large["parent"] > 0))]
    row = _check("reinit-calibration-small", {"ensembles": lone})
    assert row.verdict == "not supported" and "untested: reinit-high-25" in row.reason


def test_units_with_no_spread_give_no_p_value_and_say_what_they_show():
    est = E.one_sample([0.002, 0.002], "parents")
    assert est.value == 0.002 and est.p_above is None and math.isnan(est.ci_low)
    assert est.reason.startswith("no spread: the 2 parents all give 0.002")
    assert "cannot say how far the true value may lie from it" in est.reason
    decided = E.decide(est, "direction", sign=+1)
    assert decided.verdict == "inconclusive" and math.isnan(decided.p_value)
    assert E.welch([0.5, 0.5], [0.25, 0.25], "parents").reason.startswith("no spread: the 4 parents all give 0.25")
    # through a claim: every parent's barrier difference the same
    barriers = pd.DataFrame([{"condition": c, "t": 30, "parent": p, "child_a": 0, "child_b": 1, "alpha": 0.5,
                              "error": 0.1, "barrier": 0.002 if c.startswith("reinit") else 0.0}
                             for c in ("coupled-to-t-reset", "reinit-low-25") for p in range(2)])
    row = _check("reinit-opens-barrier", {"barriers": barriers})
    assert row.verdict == "inconclusive" and math.isnan(row.p_value) and row.reason.startswith("no spread")


def test_reinit_barrier_and_forgetting():
    barriers = pd.DataFrame([{"condition": c, "t": 30, "parent": p, "child_a": 0, "child_b": 1, "alpha": a,
                              "error": 0.1, "barrier": (0.4 if c.startswith("reinit") else 0.01) + 0.01 * p}
                             for c in ("coupled-to-t-reset", "reinit-low-25", "reinit-high-25")
                             for p in range(3) for a in (0.0, 0.5, 1.0)])
    assert _check("reinit-opens-barrier", {"barriers": barriers}).verdict == "supported"
    forgetting = pd.DataFrame([{"condition": "no-coupling", "t": 0, "parent": p, "child": k, "epoch": e,
                                "events": int(200 * (1 + 0.1 * (2 * p + k)) / (1 + e)), "cumulative_events": 0}
                               for p in range(2) for k in range(2) for e in range(11)])
    assert _check("forgetting-falls-early", {"forgetting": forgetting}).verdict == "supported"


def test_missing_inputs_are_inconclusive_with_a_reason_never_an_error():
    table = C.claims_table({}, N_PERM)
    assert table["claim"].tolist() == C.CLAIM_IDS
    assert (table["verdict"] == "inconclusive").all() and table["reason"].str.len().gt(0).all()
    one_parent = C.claims_table({"ensembles": _ensembles(lambda t, p: 0.03 - 0.0001 * t, parents=1)}, N_PERM)
    assert "1 parents" in _row(one_parent, "gain-falls").reason
    two_steps = _check("gain-falls", {"ensembles": _ensembles(lambda t, p: 0.03 - 0.0001 * t, ts=[0, 8])})
    assert two_steps.verdict == "inconclusive" and "spawn step" in two_steps.reason


def test_the_table_is_deterministic_and_renders_as_markdown():
    tables = {"ensembles": _ensembles(lambda t, p: 0.03 - 0.0001 * t + _noise(t, p))}
    a, b = C.claims_table(tables, N_PERM), C.claims_table(tables, N_PERM)
    pd.testing.assert_frame_equal(a, b)
    md = C.markdown(a)
    assert md.count("\n") == len(C.CLAIMS) + 2 and "| 1a |" in md
