"""The claim rules on small hand-made tables: a clear effect in the claimed direction is supported, no
effect is inconclusive, the opposite effect is not supported; missing inputs are inconclusive with a reason."""

import numpy as np
import pandas as pd
import pytest

from coupledsgd.analysis import claims as C
from coupledsgd.analysis import metrics as M

TS = [0, 6, 12, 30, 60, 180]
N_BOOT = 200


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
    return _row(C.claims_table(tables, N_BOOT), claim_id)


def test_spearman_and_ranks_match_hand_values():
    assert M.ranks([3, 1, 2, 2]).tolist() == [4.0, 1.0, 2.5, 2.5]
    assert M.spearman([0, 6, 12, 30], [3, 2, 2.5, 1]) == pytest.approx(-0.8)
    assert M.spearman([1, 2, 3], [5, 5, 5]) == 0.0
    assert M.spearman([1, 2, 3], [1, 4, 9]) == pytest.approx(1.0)


def test_group_bootstrap_of_one_group_draws_the_resamples_of_bootstrap_ci():
    x = np.arange(7.0)
    assert M.bootstrap_ci_groups(lambda i: x[i].mean(), (7,), 100, 3) == M.bootstrap_ci(
        lambda i: x[i].mean(), 7, 100, 3)


@pytest.mark.parametrize("values, verdict", [
    (lambda t, p: 0.03 - 0.0001 * t + _noise(t, p) / 10, "supported"),
    (_noise, "inconclusive"),
    (lambda t, p: 0.01 + 0.0001 * t + _noise(t, p) / 10, "not supported"),
])
def test_gain_falling_with_t_is_supported_flat_inconclusive_rising_not(values, verdict):
    row = _check("gain-falls", {"ensembles": _ensembles(values)})
    assert row.verdict == verdict, row.to_dict()
    assert row.ci_low <= row.value <= row.ci_high and row.n_units == 4


def test_between_parent_kl_rising_is_supported_over_pairs_of_parents():
    pairs = pd.DataFrame([{"condition": "coupled-to-t-reset", "t": t, "kind": "between-parents", "parent_a": a,
                           "parent_b": b, "sym_kl": 0.2 + 0.002 * t + 0.01 * a} for t in TS
                          for a in range(4) for b in range(a + 1, 4)])
    row = _check("kl-between-parents-rises", {"pairs": pairs})
    assert row.verdict == "supported" and row.n_units == 6 and row.value == 1.0


def test_same_parent_kl_falling_fastest_early_is_supported_and_linear_fall_is_not():
    def pairs(kl):
        return pd.DataFrame([{"condition": "coupled-to-t-reset", "t": t, "kind": "same-parent", "parent_a": p,
                              "parent_b": p, "sym_kl": kl(t) + 0.01 * p} for t in TS for p in range(4)])

    early = C.claims_table({"pairs": pairs(lambda t: 0.7 * np.exp(-t / 20))}, N_BOOT).set_index("claim")
    assert early.loc["kl-same-parent-falls", "verdict"] == "supported"
    assert early.loc["kl-same-parent-falls-early", "verdict"] == "supported"
    late = C.claims_table({"pairs": pairs(lambda t: 0.7 - 0.003 * t ** 1.2)}, N_BOOT).set_index("claim")
    assert late.loc["kl-same-parent-falls", "verdict"] == "supported"
    assert late.loc["kl-same-parent-falls-early", "verdict"] == "not supported"


def test_coupled_order_equivalence_uses_the_margin():
    def both(shift, spread):
        return pd.concat([_ensembles(lambda t, p: 0.9 + spread * (p - 1.5), "no-coupling", "ensemble_accuracy", ts=[0]),
                          _ensembles(lambda t, p: 0.9 + shift + spread * (p - 1.5), "coupled-order",
                                     "ensemble_accuracy", ts=[0])])
    assert _check("order-same-accuracy", {"ensembles": both(0.001, 0.001)}).verdict == "supported"
    assert _check("order-same-accuracy", {"ensembles": both(0.05, 0.001)}).verdict == "not supported"
    assert _check("order-same-accuracy", {"ensembles": both(0.0, 0.02)}).verdict == "inconclusive"


def test_members_not_worse_is_a_noninferiority_rule():
    def members(coupled):
        return pd.DataFrame([{"condition": c, "t": 0, "parent": p, "child": k,
                              "accuracy": (0.88 if c == "no-coupling" else coupled) + 0.001 * k}
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


def test_reinit_barrier_and_forgetting():
    barriers = pd.DataFrame([{"condition": c, "t": 30, "parent": p, "child_a": 0, "child_b": 1, "alpha": a,
                              "error": 0.1, "barrier": (0.4 if c.startswith("reinit") else 0.01) + 0.01 * p}
                             for c in ("coupled-to-t-reset", "reinit-low-25", "reinit-high-25")
                             for p in range(3) for a in (0.0, 0.5, 1.0)])
    assert _check("reinit-opens-barrier", {"barriers": barriers}).verdict == "supported"
    forgetting = pd.DataFrame([{"condition": "no-coupling", "t": 0, "parent": p, "child": k, "epoch": e,
                                "events": int(200 / (1 + e)) + k, "cumulative_events": 0}
                               for p in range(2) for k in range(2) for e in range(11)])
    assert _check("forgetting-falls-early", {"forgetting": forgetting}).verdict == "supported"


def test_missing_inputs_are_inconclusive_with_a_reason_never_an_error():
    table = C.claims_table({}, N_BOOT)
    assert table["claim"].tolist() == C.CLAIM_IDS
    assert (table["verdict"] == "inconclusive").all() and table["reason"].str.len().gt(0).all()
    one_parent = C.claims_table({"ensembles": _ensembles(lambda t, p: 0.03 - 0.0001 * t, parents=1)}, N_BOOT)
    assert "1 parents" in _row(one_parent, "gain-falls").reason
    two_steps = _check("gain-falls", {"ensembles": _ensembles(lambda t, p: 0.03 - 0.0001 * t, ts=[0, 8])})
    assert two_steps.verdict == "inconclusive" and "spawn step" in two_steps.reason


def test_the_table_is_deterministic_and_renders_as_markdown():
    tables = {"ensembles": _ensembles(lambda t, p: 0.03 - 0.0001 * t + _noise(t, p))}
    a, b = C.claims_table(tables, N_BOOT), C.claims_table(tables, N_BOOT)
    pd.testing.assert_frame_equal(a, b)
    md = C.markdown(a)
    assert md.count("\n") == len(C.CLAIMS) + 2 and "| 1a |" in md
