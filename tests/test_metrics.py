import math

import numpy as np
import pytest

from coupledsgd.analysis import metrics as M


def _log(p):
    with np.errstate(divide="ignore"):  # several cases hold exact zeros
        return np.log(p)


# Three examples, three classes. Logits are log-probabilities, so softmax returns them exactly.
P3 = np.array(
    [
        [0.70, 0.20, 0.10],  # y=0, argmax 0: right, conf 0.70
        [0.10, 0.50, 0.40],  # y=2, argmax 1: wrong, conf 0.50
        [0.18, 0.10, 0.72],  # y=0, argmax 2: wrong, conf 0.72
    ]
)
Y3 = np.array([0, 2, 0])
LP3 = M.log_softmax(np.log(P3))


def test_log_softmax_is_stable_and_normalised():
    lp = M.log_softmax(np.array([[1000.0, 1000.0], [0.0, -np.inf]]))
    np.testing.assert_allclose(lp, [[-math.log(2), -math.log(2)], [0.0, -np.inf]])
    assert lp.dtype == np.float64
    np.testing.assert_allclose(LP3, np.log(P3), atol=1e-15)


def test_accuracy_nll_brier_by_hand():
    assert M.correct(LP3, Y3).tolist() == [True, False, False]
    assert M.accuracy(LP3, Y3) == pytest.approx(1 / 3)
    assert M.nll(LP3, Y3) == pytest.approx(-(math.log(0.7) + math.log(0.4) + math.log(0.18)) / 3)
    # (.3²+.2²+.1²) + (.1²+.5²+.6²) + (.82²+.1²+.72²) = .14 + .62 + 1.2008 = 1.9608
    assert M.brier(LP3, Y3) == pytest.approx(1.9608 / 3)


def test_ece_by_hand():
    # Bins are (b/15, (b+1)/15]. Conf 0.70 and 0.72 share bin 10 = (0.667, 0.733]:
    #   acc 1/2, mean conf 0.71, weight 2/3 -> 2/3 * 0.21 = 0.14.
    # Conf 0.50 is alone in bin 7 = (0.467, 0.533]: acc 0, weight 1/3 -> 0.5/3.
    assert M.ece(LP3, Y3) == pytest.approx(0.14 + 0.5 / 3)


def test_ece_confidence_one_shares_the_last_bin():
    # conf 1.0 (wrong) and 0.95 (right) both fall in (14/15, 1]: acc 1/2, conf 0.975 -> 0.475.
    # torchmetrics 1.9 puts conf == 1 in a bin of its own and reports 0.525 here.
    lp = M.log_softmax(_log([[1.0, 0.0], [0.95, 0.05]]))
    assert M.ece(lp, [1, 0]) == pytest.approx(0.475)


def test_mace_by_hand():
    # N=3 < 15 bins, so each bin holds one example and MACE = mean_ij |1[y_i=j] - p_ij|:
    # rows .3+.2+.1=.6, .1+.5+.6=1.2, .82+.1+.72=1.64 -> 3.44 / 9.
    assert M.mace(LP3, Y3) == pytest.approx(3.44 / 9)
    # Two bins: each class's ascending order splits 2 + 1.
    #   class 0: {.10 (y0), .18 (y1)} |.5-.14|=.36, {.70 (y1)} .30  -> .33
    #   class 1: {.10, .20} (no y)    |0-.15|=.15, {.50}        .50  -> .325
    #   class 2: {.10 (n), .40 (y)}   |.5-.25|=.25, {.72 (n)}   .72  -> .485
    assert M.mace(LP3, Y3, n_bins=2) == pytest.approx((0.33 + 0.325 + 0.485) / 3)


def test_ece_matches_torchmetrics():
    torch = pytest.importorskip("torch")
    tm = pytest.importorskip("torchmetrics.classification")
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=3.0, size=(500, 10))
    labels = rng.integers(0, 10, size=500)
    ref = tm.MulticlassCalibrationError(num_classes=10, n_bins=15, norm="l1")(
        torch.from_numpy(logits), torch.from_numpy(labels)
    )
    # torchmetrics bins float32 confidences, so agreement is to float32 precision.
    assert M.ece(M.log_softmax(logits), labels) == pytest.approx(float(ref), abs=1e-6)


@pytest.mark.parametrize("a,b", [(0.9, 0.6), (0.3, 0.7), (0.01, 0.5)])
def test_symmetric_kl_bernoulli_closed_form(a, b):
    expected = (a - b) * (math.log(a / b) - math.log((1 - a) / (1 - b)))
    lp = M.log_softmax(np.log([[a, 1 - a], [b, 1 - b]]))
    lq = M.log_softmax(np.log([[b, 1 - b], [b, 1 - b]]))
    np.testing.assert_allclose(M.symmetric_kl_per_example(lp, lq), [expected, 0.0], atol=1e-12)
    assert M.symmetric_kl(lp, lq) == pytest.approx(expected / 2)
    assert M.symmetric_kl(lq, lp) == pytest.approx(expected / 2)


def test_symmetric_kl_shared_zero_is_finite():
    lp = M.log_softmax(_log([[0.5, 0.5, 0.0]]))
    assert M.symmetric_kl(lp, lp) == 0.0


def test_disagreement():
    lq = M.log_softmax(np.log([[0.6, 0.3, 0.1], [0.2, 0.3, 0.5], [0.1, 0.1, 0.8]]))
    # argmaxes: LP3 (0, 1, 2) vs (0, 2, 2): one of three differs.
    assert M.disagreement(LP3, lq) == pytest.approx(1 / 3)


def test_forgetting_events():
    c = np.array(
        [  # rows: evaluation points; columns: examples
            [1, 0, 1],
            [0, 1, 1],  # ex0 forgotten
            [1, 1, 1],
            [0, 0, 1],  # ex0 and ex1 forgotten
            [1, 0, 1],
        ],
        dtype=bool,
    )
    out = M.forgetting_events(c)
    assert out.tolist() == [0, 1, 0, 2, 0]
    assert out.sum() == 3


def test_ensemble_log_probs_is_log_mean_prob():
    rng = np.random.default_rng(1)
    z = rng.normal(scale=5.0, size=(4, 7, 5))
    p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    np.testing.assert_allclose(M.ensemble_log_probs(z), np.log(p.mean(0)), rtol=1e-12)
    # Members with hard zeros: a class no member supports stays exactly -inf, not nan.
    hard = _log([[[1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]]])
    np.testing.assert_allclose(M.ensemble_log_probs(hard), _log([[0.5, 0.5, 0.0]]))


def test_accuracy_gain_two_half_right_members():
    y = np.array([0, 1])
    a = np.log([[0.9, 0.1], [0.6, 0.4]])  # right on ex0, wrong on ex1
    b = np.log([[0.4, 0.6], [0.1, 0.9]])  # wrong on ex0, right on ex1
    # Mean probs (.65, .35) and (.35, .65): both right, so gain = 1 - 0.5.
    assert M.accuracy_gain(np.stack([a, b]), y) == pytest.approx(0.5)
    # A third member right on neither: members average 1/3; ensemble means
    # (1.4/3, 1.6/3) on ex0 (wrong) and (1.25/3, 1.75/3) on ex1 (right) -> accuracy 1/2.
    c = np.log([[0.1, 0.9], [0.55, 0.45]])
    gains = M.gain_by_size(np.stack([a, b, c]), y)
    np.testing.assert_allclose(gains, [0.0, 0.5, 0.5 - 1 / 3])
    assert gains[-1] == pytest.approx(M.accuracy_gain(np.stack([a, b, c]), y))


def test_bootstrap_ci_contains_estimate_and_narrows():
    rng = np.random.default_rng(2)
    widths = []
    for n in (100, 10_000):
        hits = rng.random(n) < 0.7
        lo, hi = M.bootstrap_ci(lambda idx: hits[idx].mean(), n, n_boot=500, seed=3)
        assert lo <= hits.mean() <= hi
        widths.append(hi - lo)
    # The width scales as 1/sqrt(n): 100x the examples, about a tenth of the width.
    assert widths[1] < widths[0] / 5
    # Same seed, same interval.
    f = lambda idx: float(np.mean(idx))  # noqa: E731
    assert M.bootstrap_ci(f, 50, seed=7) == M.bootstrap_ci(f, 50, seed=7)


def _mace_by_loops(p, y, n_bins):
    """MACE as its definition reads: per class, per np.array_split bin of the stable sort."""
    per_class = []
    for j in range(p.shape[1]):
        order = np.argsort(p[:, j], kind="stable")
        per_class.append(np.mean([abs((y[i] == j).mean() - p[i, j].mean())
                                  for i in np.array_split(order, min(n_bins, len(y)))]))
    return float(np.mean(per_class))


def test_mace_and_its_bootstrap_equal_the_loop_over_bins_bit_for_bit():
    rng = np.random.default_rng(5)
    for n, c, bins in ((7, 3, 15), (301, 4, 15), (1000, 10, 15)):
        p = rng.dirichlet(np.full(c, 0.3), size=n)
        p[: n // 3] = p[0]  # ties: the stable sort keeps them in example order
        y = rng.integers(0, c, n)
        lp = np.log(p)
        assert M.mace(lp, y, bins) == _mace_by_loops(np.exp(lp), y, bins)
        w = M.bootstrap_weights(n, 40)
        # The draw counts summed in float32 (exact for integers) give what float64 gives.
        point, boot = M.mace_and_bootstrap(lp, y, w, bins)
        assert M.draw_counts(w).dtype == np.float32 and point == M.mace(lp, y, bins)
        np.testing.assert_array_equal(boot, M.mace_bootstrap(lp, y, w, bins, counts=w))
    assert M.draw_counts(np.full((2, 3), 0.5)).dtype == np.float64  # not counts: no float32 shortcut
