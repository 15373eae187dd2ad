"""Accuracy, calibration and diversity metrics for single networks and ensembles.

Pure numpy, float64 throughout. Probabilities are always derived from logits through a
stable log_softmax, never clipped, so a probability of exactly 0 stays -inf in log space.
Arrays: logits/log_probs are (N, C), member arrays (M, N, C), labels are int (N,).

The bootstrap: percentile intervals (`bootstrap_ci`, `percentile_ci`), and the
resamples of a whole test set at once as a matrix of draw counts (`bootstrap_weights`), under which the
accuracy gain is one matrix product and MACE a few (`mace_bootstrap`).
"""

from collections.abc import Callable

import math

import numpy as np
import numpy.typing as npt

BOOTSTRAP_SEED = 0
LEVEL = 0.95


def _logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
    m = np.max(x, axis=axis, keepdims=True)
    # A slice that is all -inf would give -inf - -inf = nan; shifting by 0 keeps it -inf.
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):  # log(0) = -inf is the right answer there
        return np.squeeze(m, axis) + np.log(np.sum(np.exp(x - m), axis=axis))


def log_softmax(logits: npt.ArrayLike) -> np.ndarray:
    """log p_j = z_j - log sum_k exp(z_k) over the last axis, as float64."""
    z = np.asarray(logits, dtype=np.float64)
    return z - _logsumexp(z, axis=-1)[..., None]


def ensemble_log_probs(member_logits: npt.ArrayLike) -> np.ndarray:
    """log((1/M) sum_m softmax(z_m)): log of the members' mean probability, (M, N, C) -> (N, C)."""
    lp = log_softmax(member_logits)
    return _logsumexp(lp, axis=0) - np.log(lp.shape[0])


def correct(log_probs: npt.ArrayLike, labels: npt.ArrayLike) -> np.ndarray:
    """(N,) bool: argmax_j log p_j == y (ties go to the lowest class index)."""
    return np.argmax(log_probs, axis=-1) == np.asarray(labels)


def accuracy(log_probs: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """Fraction of examples whose argmax equals the label."""
    return float(np.mean(correct(log_probs, labels)))


def nll(log_probs: np.ndarray, labels: np.ndarray) -> float:
    """-(1/N) sum_i log p_{i, y_i}."""
    lp = np.asarray(log_probs, dtype=np.float64)
    return float(-np.mean(lp[np.arange(lp.shape[0]), labels]))


def brier(log_probs: np.ndarray, labels: np.ndarray) -> float:
    """(1/N) sum_i sum_j (p_ij - 1[y_i = j])^2."""
    p = np.exp(np.asarray(log_probs, dtype=np.float64))
    p[np.arange(p.shape[0]), labels] -= 1.0
    return float(np.mean(np.sum(p**2, axis=-1)))


def ece(log_probs: np.ndarray, labels: npt.ArrayLike, n_bins: int = 15) -> float:
    """Top-label ECE: sum_b (n_b/N) |acc_b - conf_b| over non-empty bins.

    conf = max_j p_j; bin b covers (b/n, (b+1)/n] with boundaries np.linspace(0, 1, n+1), and
    conf = 0 joins bin 0 (the Guo et al. 2017 convention). torchmetrics >= 1.x bins
    [b/n, (b+1)/n) instead and gives conf == 1 a bin of its own; the two agree unless a
    confidence sits exactly on a boundary.
    """
    lp = np.asarray(log_probs, dtype=np.float64)
    conf = np.exp(np.max(lp, axis=-1))
    hit = correct(lp, labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    b = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(b, minlength=n_bins)
    full = count > 0
    acc_b = np.bincount(b, weights=hit, minlength=n_bins)[full] / count[full]
    conf_b = np.bincount(b, weights=conf, minlength=n_bins)[full] / count[full]
    return float(np.sum(count[full] / conf.size * np.abs(acc_b - conf_b)))


def _sizes(n: int, k: int) -> list[int]:
    """The sizes of np.array_split(range(n), k): the first n % k parts one larger."""
    return [n // k + (b < n % k) for b in range(k)]


def _class_bins(p: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each class's equal-mass bins: (order, bins), order[:, j] the stable ascending sort of p[:, j]
    and bins[i, j] the bin of example i in class j (np.array_split of that order into k parts)."""
    n, c = p.shape
    order = np.argsort(p, axis=0, kind="stable")
    bins = np.empty((n, c), dtype=np.intp)
    np.put_along_axis(bins, order, np.repeat(np.arange(k), _sizes(n, k))[:, None], axis=0)
    return order, bins


def _bin_means(sorted_rows: np.ndarray, k: int) -> np.ndarray:
    """(C, k) means of the k np.array_split parts of each row of a (C, N) array.

    Each part is reduced along its own contiguous stretch of the row, so its sum is the one
    np.mean of that part alone gives (numpy's pairwise summation), bit for bit."""
    c, n = sorted_rows.shape
    q, r = divmod(n, k)
    big = sorted_rows[:, : r * (q + 1)].reshape(c, r, q + 1).mean(axis=-1)
    small = sorted_rows[:, r * (q + 1) :].reshape(c, k - r, q).mean(axis=-1)
    return np.concatenate([big, small], axis=1)


def _mace_of_sorted(p: np.ndarray, labels: np.ndarray, order: np.ndarray, k: int) -> float:
    p_sorted = np.ascontiguousarray(np.take_along_axis(p, order, axis=0).T)
    hit_sorted = np.ascontiguousarray((np.asarray(labels)[order] == np.arange(p.shape[1])).T)
    gaps = np.abs(_bin_means(hit_sorted, k) - _bin_means(p_sorted, k))
    return float(np.mean(gaps.mean(axis=1)))


def mace(log_probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """Classwise adaptive calibration error (ACE, Nixon et al. 2019).

    For each class j: sort examples by p_j ascending (stable), split that order into
    k = min(n_bins, N) equal-mass bins with np.array_split (so the larger bins come first),
    take |mean_b 1[y = j] - mean_b p_j| per bin and average over the k bins; then average
    over the C classes. All classes at once: one sort per class, no loop over bins.
    """
    p = np.exp(np.asarray(log_probs, dtype=np.float64))
    k = min(n_bins, p.shape[0])
    order, _ = _class_bins(p, k)
    return _mace_of_sorted(p, labels, order, k)


def symmetric_kl_per_example(log_p: np.ndarray, log_q: np.ndarray) -> np.ndarray:
    """(N,) KL(p||q) + KL(q||p) = sum_j (p_j - q_j)(log p_j - log q_j)."""
    lp, lq = np.asarray(log_p, dtype=np.float64), np.asarray(log_q, dtype=np.float64)
    # Where both probabilities are 0 the term is 0, not 0 * (-inf - -inf) = nan.
    with np.errstate(invalid="ignore"):
        terms = np.where(lp == lq, 0.0, (np.exp(lp) - np.exp(lq)) * (lp - lq))
    return np.sum(terms, axis=-1)


def symmetric_kl(log_p: np.ndarray, log_q: np.ndarray) -> float:
    """Mean over examples of KL(p||q) + KL(q||p)."""
    return float(np.mean(symmetric_kl_per_example(log_p, log_q)))


def disagreement(log_p: np.ndarray, log_q: np.ndarray) -> float:
    """Fraction of examples on which the two argmax predictions differ."""
    return float(np.mean(np.argmax(log_p, axis=-1) != np.argmax(log_q, axis=-1)))


def forgetting_events(correct: npt.ArrayLike) -> np.ndarray:
    """(E,) int: entry e >= 1 counts examples correct at point e-1 and wrong at e; entry 0 is 0."""
    c = np.asarray(correct, dtype=bool)
    out = np.zeros(c.shape[0], dtype=np.int64)
    out[1:] = np.sum(c[:-1] & ~c[1:], axis=1)
    return out


def bootstrap_ci(
    stat_fn: Callable[[np.ndarray], float],
    n_examples: int,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap over examples.

    Draws n_boot index vectors of length n_examples with replacement from
    np.random.default_rng(seed), calls stat_fn(idx) on each, and returns the
    ((1-level)/2, (1+level)/2) percentiles. stat_fn should index precomputed per-example
    arrays (e.g. correct[idx].mean()) so each call is cheap.
    """
    rng = np.random.default_rng(seed)
    stats = [stat_fn(rng.integers(0, n_examples, size=n_examples)) for _ in range(n_boot)]
    lo, hi = np.percentile(stats, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def accuracy_gain(member_logits: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """Ensemble accuracy minus mean member accuracy.

    member_logits is (M, N, C) logits; log-probabilities are valid logits too. The ensemble
    predicts the argmax of the members' mean probability (ensemble_log_probs).
    """
    lp = log_softmax(member_logits)
    members = np.mean([accuracy(m, labels) for m in lp])
    return accuracy(ensemble_log_probs(lp), labels) - float(members)


def gain_by_size(member_logits: npt.ArrayLike, labels: npt.ArrayLike) -> np.ndarray:
    """(M,) float: entry m-1 is accuracy_gain of the ensemble of members 0..m-1, in the given order.

    Entry 0 is always 0. The value depends on member order; average over permutations for
    an order-free curve.
    """
    lp = log_softmax(member_logits)
    m = np.arange(1, lp.shape[0] + 1)
    # Running log-mean-exp over members: prefix ensembles in one pass.
    prefix = np.logaddexp.accumulate(lp, axis=0) - np.log(m)[:, None, None]
    ens = np.array([accuracy(e, labels) for e in prefix])
    member = np.cumsum([accuracy(x, labels) for x in lp]) / m
    return ens - member


def ranks(x: npt.ArrayLike) -> np.ndarray:
    """(N,) float64 ranks 1..N of x, ties given the mean of the ranks they span."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="stable")
    r = np.empty(x.size, dtype=np.float64)
    r[order] = np.arange(1, x.size + 1)
    _, tie, counts = np.unique(x, return_inverse=True, return_counts=True)
    return (np.bincount(tie, weights=r) / counts)[tie]


def spearman(x: npt.ArrayLike, y: npt.ArrayLike) -> float:
    """Spearman's rank correlation of x and y (Pearson's of their tie-averaged ranks); 0 where either is
    constant (no monotone association to speak of), nan for fewer than 2 points."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.size < 2:
        return float("nan")
    rx, ry = ranks(x) - (x.size + 1) / 2, ranks(y) - (y.size + 1) / 2
    den = math.sqrt(float(np.sum(rx**2) * np.sum(ry**2)))
    return float(np.sum(rx * ry) / den) if den > 0 else 0.0


def bootstrap_weights(n: int, n_boot: int, seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """(n_boot, n) float64: how often each example is drawn in each resample.

    Row b counts the b-th index vector rng.integers(0, n, size=n) of np.random.default_rng(seed):
    the resamples bootstrap_ci(stat, n, n_boot, seed) draws.
    """
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    counts = np.bincount((idx + n * np.arange(n_boot)[:, None]).ravel(), minlength=n_boot * n)
    return counts.reshape(n_boot, n).astype(np.float64)


def percentile_ci(stats: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The percentile interval of bootstrap statistics, as bootstrap_ci computes it."""
    lo, hi = np.percentile(stats, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def draw_counts(weights: npt.ArrayLike) -> np.ndarray:
    """`weights` as float32, the exact type for summing draw counts (`mace_bootstrap`): integers
    whose sums stay below 2^24 are exact in float32. Other weights stay float64."""
    weights = np.asarray(weights, dtype=np.float64)
    counts = weights.astype(np.float32)
    exact = (
        np.array_equal(counts, weights)
        and np.array_equal(counts, np.floor(counts))
        and np.abs(weights).sum(axis=1).max(initial=0) < 1 << 24
    )
    return counts if exact else weights


def mace_bootstrap(
    log_probs: npt.ArrayLike,
    labels: np.ndarray,
    weights: npt.ArrayLike,
    n_bins: int = 15,
    counts: np.ndarray | None = None,
) -> np.ndarray:
    """(B,) MACE of each resample, the resamples given as (B, N) draw counts (`bootstrap_weights`).

    The simplification: the equal-mass bins are those of the full test set (exactly as in
    `mace`: stable sort by p_j, np.array_split into min(n_bins, N) bins) and are held fixed;
    a resample only reweights the examples inside them, so the gap of bin b of class j is
    |sum_i w_i (1[y_i = j] - p_ij)| / sum_i w_i over the examples i of the bin, bins a resample
    leaves empty are dropped, and gaps are averaged over bins, then classes. With all weights 1
    this is `mace` exactly. Re-sorting every resample instead would re-form the bins with
    exactly equal mass; the two differ only by the bins' random mass, which the percentile
    interval barely sees, and the fixed bins turn all B resamples of all classes into matrix
    products W @ D, D the (N, C x bins) matrix of each example's residual in its bin: ~100x faster
    than B x C sorts. `counts`: `draw_counts(weights)`, passed by callers that reuse it.
    """
    return mace_and_bootstrap(log_probs, labels, weights, n_bins, counts)[1]


def mace_and_bootstrap(
    log_probs: npt.ArrayLike,
    labels: np.ndarray,
    weights: npt.ArrayLike,
    n_bins: int = 15,
    counts: np.ndarray | None = None,
) -> tuple[float, np.ndarray]:
    """`mace` and `mace_bootstrap` of one network from one sort of each class's probabilities."""
    p = np.exp(np.asarray(log_probs, dtype=np.float64))
    k = min(n_bins, p.shape[0])
    order, bins = _class_bins(p, k)
    weights = np.asarray(weights, dtype=np.float64)
    counts = draw_counts(weights) if counts is None else counts
    return _mace_of_sorted(p, labels, order, k), _mace_resamples(p, labels, bins, weights, counts, k)


def _mace_resamples(
    p: np.ndarray, labels: npt.ArrayLike, bins: np.ndarray, weights: np.ndarray, counts: np.ndarray, k: int
) -> np.ndarray:
    """The cost is B x N x C x k multiply-adds, in two products per block of classes: the residuals
    in float64, the bins' draw counts in `counts`' type (float32: exact, twice as fast)."""
    n, c = p.shape
    resid = (np.asarray(labels)[:, None] == np.arange(c)) - p
    rows = np.arange(n)[:, None]
    total = np.zeros(weights.shape[0])
    chunk = max(1, (1 << 22) // (n * 2 * k))  # classes per product: the designs stay under 32 MiB
    for j0 in range(0, c, chunk):
        js = np.arange(j0, min(c, j0 + chunk))
        at = (rows, np.arange(len(js))[None, :], bins[:, js])
        design = np.zeros((n, len(js), k))
        design[at] = resid[:, js]
        member = np.zeros((n, len(js), k), dtype=counts.dtype)
        member[at] = 1
        num = (weights @ design.reshape(n, -1)).reshape(-1, len(js), k)
        den = (counts @ member.reshape(n, -1)).reshape(-1, len(js), k).astype(np.float64)
        full = den > 0
        gaps = np.abs(num) / np.where(full, den, 1.0) * full
        total += np.sum(gaps.sum(-1) / full.sum(-1), axis=1)
    return total / c
