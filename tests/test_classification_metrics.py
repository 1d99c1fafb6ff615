"""Weighted classification metrics (sampleimp_spark.evaluation.classification).

Hand-computed cases first, then cross-checks against scikit-learn and brute force. No Spark.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from scipy.special import expit
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.metrics import log_loss as sk_log_loss

from sampleimp_spark.evaluation.bootstrap import multiplicities
from sampleimp_spark.evaluation.classification import (
    PrecisionRecall,
    average_precision,
    best_f1_threshold,
    f1_score,
    log_loss,
    over_replicates,
    precision_recall_at_threshold,
    precision_recall_at_top,
    prior_corrected,
    replicate_row_weights,
    roc_auc,
    training_priors,
)

# ----------------------------------------------------------------------------- hand-computed cases

Y4 = np.array([1, 0, 1, 0])
S4 = np.array([0.9, 0.8, 0.8, 0.1])


def test_roc_auc_and_average_precision_by_hand() -> None:
    # AUC: (pos, neg) pairs (0.9, 0.8) = 1, (0.9, 0.1) = 1, (0.8, 0.8) tie = 1/2, (0.8, 0.1) = 1 -> 3.5 / 4.
    assert roc_auc(Y4, S4) == pytest.approx(0.875)
    # AP, thresholds high to low: 0.9 -> TP 1, PP 1: P = 1, R = 1/2; 0.8 -> TP 2, PP 3: P = 2/3, R = 1;
    # 0.1 adds no recall. AP = (1/2)·1 + (1/2)·(2/3) = 5/6.
    assert average_precision(Y4, S4) == pytest.approx(5 / 6)


def test_weighted_roc_auc_and_average_precision_by_hand() -> None:
    w = np.array([1.0, 2.0, 1.0, 1.0])  # the negative tied at 0.8 weighs 2
    # AUC: W+ = 2, W- = 3. Pairs: 0.9 vs 0.8 (w 2): 2; 0.9 vs 0.1: 1; 0.8 vs 0.8 tie: 2·1/2 = 1;
    # 0.8 vs 0.1: 1 -> 5 / 6.
    assert roc_auc(Y4, S4, w) == pytest.approx(5 / 6)
    # AP: 0.9 -> P = 1, R = 1/2; 0.8 -> TP 2, PP 4: P = 1/2, R = 1 -> (1/2)·1 + (1/2)·(1/2) = 3/4.
    assert average_precision(Y4, S4, w) == pytest.approx(0.75)


def test_all_scores_tied_gives_auc_one_half() -> None:
    assert roc_auc([1, 0, 0, 1, 0], [0.3] * 5, [1.0, 2.0, 3.0, 4.0, 5.0]) == pytest.approx(0.5)
    # one threshold: precision = W+ / W = 5 / 15 at recall 1.
    assert average_precision([1, 0, 0, 1, 0], [0.3] * 5, [1.0, 2.0, 3.0, 4.0, 5.0]) == pytest.approx(1 / 3)


def test_undefined_metrics_are_nan() -> None:
    assert math.isnan(roc_auc([0, 0, 0], [0.1, 0.2, 0.3]))
    assert math.isnan(roc_auc([1, 1], [0.1, 0.2]))
    assert math.isnan(roc_auc([1, 0], [0.1, 0.2], [0.0, 1.0]))  # the positive has zero weight
    assert math.isnan(average_precision([0, 0], [0.1, 0.2]))
    assert average_precision([1, 1], [0.1, 0.2]) == 1.0
    assert math.isnan(log_loss([1, 0], [0.5, 0.5], [0.0, 0.0]))


def test_log_loss_by_hand() -> None:
    # -(ln 0.8 + ln(1 - 0.4)) weighted 1 and 3: (−ln 0.8 − 3 ln 0.6) / 4
    assert log_loss([1, 0], [0.8, 0.4], [1.0, 3.0]) == pytest.approx((-math.log(0.8) - 3 * math.log(0.6)) / 4)
    # clipping: p = 0 for a positive costs -ln(eps)
    assert log_loss([1], [0.0]) == pytest.approx(-math.log(1e-15))
    assert log_loss([1], [0.0], eps=1e-3) == pytest.approx(-math.log(1e-3))


def test_precision_recall_at_top_with_a_tie_at_the_cut() -> None:
    y = [1, 0, 1, 0, 1]
    s = [0.9, 0.8, 0.8, 0.5, 0.1]
    # fraction 0.4 of 5 rows: T = 2. Cumulative weight by score group: 0.9 -> 1, 0.8 -> 3 (a tie of a
    # negative and a positive). The cut falls in the 0.8 group: share (2 - 1) / 2 = 1/2 of each row.
    # TP = 1 + 1/2 · 1 = 1.5: precision 1.5 / 2 = 0.75, recall 1.5 / 3 = 0.5.
    pr = precision_recall_at_top(y, s, fraction=0.4)
    assert isinstance(pr, PrecisionRecall)
    assert pr.precision == pytest.approx(0.75)
    assert pr.recall == pytest.approx(0.5)
    # fraction 0.2: T = 1, exactly the top row.
    assert precision_recall_at_top(y, s, fraction=0.2) == pytest.approx((1.0, 1 / 3))
    # fraction 1: every row.
    assert precision_recall_at_top(y, s, fraction=1.0) == pytest.approx((0.6, 1.0))


def test_weighted_precision_recall_at_top_with_a_tie_at_the_cut() -> None:
    # W = 6, fraction 1/2: T = 3. Groups: 0.9 (pos, w 1) -> 1; 0.5 (neg w 1 + pos w 3) -> 5; 0.1 -> 6.
    # Share of the 0.5 group: (3 - 1) / 4 = 1/2 -> TP = 1 + 3/2 = 2.5; precision 2.5/3, recall 2.5/4.
    pr = precision_recall_at_top([1, 0, 1, 0], [0.9, 0.5, 0.5, 0.1], [1.0, 1.0, 3.0, 1.0], fraction=0.5)
    assert pr == pytest.approx((2.5 / 3, 2.5 / 4))
    # nothing predicted: precision undefined, recall 0
    p0, r0 = precision_recall_at_top([1, 0], [0.9, 0.1], fraction=0.0)
    assert math.isnan(p0) and r0 == 0.0


def test_precision_recall_at_threshold_by_hand() -> None:
    # s >= 0.8 -> rows 0, 1, 2: TP 2, PP 3 -> precision 2/3, recall 2/2.
    assert precision_recall_at_threshold(Y4, S4, threshold=0.8) == pytest.approx((2 / 3, 1.0))
    # strictly above 0.8 -> row 0 only.
    assert precision_recall_at_threshold(Y4, S4, threshold=0.8, strict=True) == pytest.approx((1.0, 0.5))
    # weighted: w = [1, 2, 1, 1] -> TP 2, PP 4, W+ 2.
    assert precision_recall_at_threshold(Y4, S4, [1.0, 2.0, 1.0, 1.0], threshold=0.8) == pytest.approx((0.5, 1.0))
    p, r = precision_recall_at_threshold(Y4, S4, threshold=0.95)
    assert math.isnan(p) and r == 0.0


def test_f1_score() -> None:
    assert f1_score(0.5, 1.0) == pytest.approx(2 / 3)
    assert f1_score(0.0, 0.0) == 0.0
    # 2 TP / (2 TP + FP + FN): nothing predicted positive (precision NaN) with positives left,
    # or predictions without any positive (recall NaN), is 0; neither (0 / 0) is NaN.
    assert f1_score(float("nan"), 0.0) == 0.0
    assert f1_score(0.0, float("nan")) == 0.0
    assert math.isnan(f1_score(float("nan"), float("nan")))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = f1_score(np.array([1.0, 0.0, np.nan, np.nan]), np.array([1.0, 0.0, 0.0, np.nan]))
    np.testing.assert_array_equal(out, [1.0, 0.0, 0.0, np.nan])
    # At a threshold above every score: no prediction, recall 0, F1 0 (not NaN).
    p, r = precision_recall_at_threshold(Y4, S4, threshold=0.95)
    assert f1_score(p, r) == 0.0


def test_best_f1_threshold_by_hand() -> None:
    # W+ = 3; F1(t) = 2 TP / (PP + 3): 0.9 -> 2/4, 0.8 -> 4/5, 0.7 -> 4/6, 0.6 -> 6/7 (best), 0.5 -> 6/8, 0.4 -> 6/9.
    assert best_f1_threshold([1, 1, 0, 1, 0, 0], [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]) == 0.6
    # A tie: W+ = 2; 0.9 -> 2/3, 0.8 -> 2/4, 0.7 -> 2/5, 0.6 -> 4/6 = 2/3: the higher threshold wins.
    assert best_f1_threshold([1, 0, 0, 1], [0.9, 0.8, 0.7, 0.6]) == 0.9
    # Weighted: w = [1, 1, 1, 3], W+ = 4: 0.9 -> 2/5, 0.6 -> 8/10 (best).
    assert best_f1_threshold([1, 0, 0, 1], [0.9, 0.8, 0.7, 0.6], [1.0, 1.0, 1.0, 3.0]) == 0.6
    # Tied scores are one threshold: y = [1, 0, 1], s = [0.5, 0.5, 0.2]: 0.5 -> 2/(2+2), 0.2 -> 4/(3+2).
    assert best_f1_threshold([1, 0, 1], [0.5, 0.5, 0.2]) == 0.2
    with pytest.raises(ValueError, match="no positive"):
        best_f1_threshold([0, 0], [0.1, 0.2])


def test_training_priors_by_hand() -> None:
    # mean(y) = 1/4; weighted: (3·1) / (3 + 1 + 1 + 1) = 1/2
    assert training_priors([1, 0, 0, 0], [3.0, 1.0, 1.0, 1.0]) == pytest.approx((0.25, 0.5))
    assert training_priors([1, 0, 0, 0], None) == pytest.approx((0.25, 0.25))


def test_prior_corrected_by_hand_and_identity() -> None:
    p = np.array([0.0, 0.1, 0.5, 0.9, 1.0])
    np.testing.assert_array_equal(prior_corrected(p, sample_prior=0.3, weighted_prior=0.3), p)
    # weighted prior 1/2 (odds 1) to sample prior 1/5 (odds 1/4): odds of p = 1/2 become 1/4 -> 0.2.
    out = prior_corrected(p, sample_prior=0.2, weighted_prior=0.5)
    assert out[2] == pytest.approx(0.2)
    assert out[3] == pytest.approx((9 / 4) / (1 + 9 / 4))
    assert (out[0], out[4]) == (0.0, 1.0)
    with pytest.raises(ValueError):
        prior_corrected(p, sample_prior=0.0, weighted_prior=0.5)


def test_input_validation() -> None:
    with pytest.raises(ValueError, match="0 and 1"):
        roc_auc([2, 0], [0.1, 0.2])
    with pytest.raises(ValueError, match="finite"):
        roc_auc([1, 0], [np.nan, 0.2])
    with pytest.raises(ValueError, match="non-negative"):
        roc_auc([1, 0], [0.1, 0.2], [1.0, -1.0])
    with pytest.raises(ValueError, match="shape"):
        roc_auc([1, 0], [0.1, 0.2], np.ones((2, 3)))
    with pytest.raises(ValueError, match="fraction"):
        precision_recall_at_top([1, 0], [0.1, 0.2], fraction=1.5)


# ----------------------------------------------------------------------------- cross-checks


def _random_case(seed: int, n: int = 400) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    s = np.round(rng.normal(y * 0.7, 1.0), 1)  # rounding makes many ties, across classes too
    w = rng.exponential(1.0, n) * (rng.random(n) < 0.9)  # some zero weights
    return y, s, w


@pytest.mark.parametrize("seed", range(5))
def test_roc_auc_and_average_precision_equal_sklearn(seed: int) -> None:
    y, s, w = _random_case(seed)
    assert roc_auc(y, s, w) == pytest.approx(roc_auc_score(y, s, sample_weight=w), rel=1e-12)
    assert average_precision(y, s, w) == pytest.approx(average_precision_score(y, s, sample_weight=w), rel=1e-12)
    assert roc_auc(y, s) == pytest.approx(roc_auc_score(y, s), rel=1e-12)
    assert average_precision(y, s) == pytest.approx(average_precision_score(y, s), rel=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_roc_auc_equals_brute_force_mann_whitney(seed: int) -> None:
    y, s, w = _random_case(seed, n=150)
    pos, neg = y == 1, y == 0
    diff = s[pos][:, None] - s[neg][None, :]
    kernel = (diff > 0) + 0.5 * (diff == 0)
    expected = w[pos] @ kernel @ w[neg] / (w[pos].sum() * w[neg].sum())
    assert roc_auc(y, s, w) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_log_loss_equals_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 300)
    p = rng.uniform(0.01, 0.99, 300)
    w = rng.exponential(1.0, 300)
    assert log_loss(y, p, w) == pytest.approx(sk_log_loss(y, p, sample_weight=w), rel=1e-12)
    assert log_loss(y, p) == pytest.approx(sk_log_loss(y, p), rel=1e-12)


METRICS: list[tuple[Callable[..., Any], dict[str, Any]]] = [
    (roc_auc, {}),
    (average_precision, {}),
    (log_loss, {}),
    (precision_recall_at_top, {"fraction": 0.3}),
    (precision_recall_at_threshold, {"threshold": 0.35}),
]
METRIC_IDS = [m.__name__ for m, _ in METRICS]


def _scores_for(metric: Callable[..., Any], s: np.ndarray) -> np.ndarray:
    return expit(s) if metric is log_loss else s  # log_loss takes probabilities


@pytest.mark.parametrize(("metric", "kw"), METRICS, ids=METRIC_IDS)
def test_each_row_of_a_weight_matrix_equals_the_1d_call(metric: Callable[..., Any], kw: dict[str, Any]) -> None:
    y, s, w = _random_case(11, n=200)
    s = _scores_for(metric, s)
    rng = np.random.default_rng(3)
    weights = rng.poisson(1.0, (6, y.size)) * w
    weights[0] = 0.0  # an empty replicate: NaN, like the 1-D call
    batch = np.asarray(metric(y, s, weights, **kw))
    assert batch.shape[-1] == 6
    for b in range(6):
        np.testing.assert_allclose(batch[..., b], np.asarray(metric(y, s, weights[b], **kw)), rtol=1e-12)


def _replicate_setup(
    n: int = 600, n_users: int = 80, n_boot: int = 23
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    y, s, w = _random_case(21, n=n)
    rng = np.random.default_rng(4)
    unit_index = rng.integers(0, n_users, n)  # users with several rows
    mult, _ = multiplicities([f"u{i:03d}" for i in range(n_users)], n_boot, seed=5)
    return y, s, w, unit_index, mult


def test_replicate_row_weights_chunks() -> None:
    _, _, w, unit_index, mult = _replicate_setup()
    chunks = list(replicate_row_weights(mult, unit_index, w, chunk=10))
    assert [c.shape[0] for c in chunks] == [10, 10, 3]
    np.testing.assert_array_equal(np.vstack(chunks), mult[:, unit_index] * w)
    with pytest.raises(ValueError, match="out of range"):
        next(replicate_row_weights(mult, unit_index + 1000, chunk=4))


@pytest.mark.parametrize(("metric", "kw"), METRICS, ids=METRIC_IDS)
@pytest.mark.parametrize("chunk", [None, 1, 7])
def test_over_replicates_equals_the_unchunked_computation(
    metric: Callable[..., Any], kw: dict[str, Any], chunk: int | None
) -> None:
    y, s, w, unit_index, mult = _replicate_setup()
    s = _scores_for(metric, s)
    full = np.asarray(metric(y, s, mult[:, unit_index] * w, **kw))  # (B, n) at once
    fast = over_replicates(metric, y, s, mult, unit_index, w, chunk=chunk, **kw)
    assert fast.shape == full.shape
    np.testing.assert_allclose(fast, full, rtol=1e-11, atol=1e-14)

    # Any other callable takes the generic path over replicate_row_weights.
    def wrapped(y_: np.ndarray, s_: np.ndarray, w_: np.ndarray, **k: Any) -> Any:
        return metric(y_, s_, w_, **k)

    generic = over_replicates(wrapped, y, s, mult, unit_index, w, chunk=chunk, **kw)
    np.testing.assert_allclose(generic, full, rtol=1e-11, atol=1e-14)


def test_over_replicates_without_base_weights() -> None:
    y, s, _, unit_index, mult = _replicate_setup()
    np.testing.assert_allclose(
        over_replicates(roc_auc, y, s, mult, unit_index), roc_auc(y, s, mult[:, unit_index]), rtol=1e-12
    )
    prec, rec = over_replicates(precision_recall_at_top, y, s, mult, unit_index, fraction=0.1)
    assert prec.shape == rec.shape == (mult.shape[0],)


# ----------------------------------------------------------------------------- prior correction


def _population(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = rng.normal(0.0, 1.0, n)
    p_true = expit(-4.0 + 1.5 * x)  # rare positives: prior about 4%
    y = (rng.random(n) < p_true).astype(int)
    return x, y, p_true


def _fit(x: np.ndarray, y: np.ndarray, w: np.ndarray | None = None) -> LogisticRegression:
    return LogisticRegression(C=1e6, max_iter=1000).fit(x[:, None], y, sample_weight=w)


def test_prior_correction_recovers_probabilities_after_down_sampling_negatives() -> None:
    rng = np.random.default_rng(0)
    x, y, _ = _population(rng, 300_000)
    keep = (y == 1) | (rng.random(y.size) < 0.1)  # negatives down-sampled 10x
    model = _fit(x[keep], y[keep])
    grid = np.linspace(-2.0, 3.0, 51)
    truth = expit(-4.0 + 1.5 * grid)
    raw = model.predict_proba(grid[:, None])[:, 1]
    assert np.max(np.abs(raw - truth)) > 0.2  # fitted at the down-sampled prior: far too high
    # The model saw the positive share mean(y[keep]); the population's is mean(y).
    corrected = prior_corrected(raw, sample_prior=float(y.mean()), weighted_prior=float(y[keep].mean()))
    assert np.max(np.abs(corrected - truth)) < 0.02
    # Re-weighting the kept negatives by 10 instead gives calibrated probabilities directly.
    w_back = np.where(y[keep] == 1, 1.0, 10.0)
    reweighted = _fit(x[keep], y[keep], w_back).predict_proba(grid[:, None])[:, 1]
    assert np.max(np.abs(reweighted - truth)) < 0.02


def test_prior_correction_undoes_class_weights_with_training_priors() -> None:
    rng = np.random.default_rng(1)
    x, y, _ = _population(rng, 200_000)
    w = np.where(y == 1, 1.0, 0.1)  # class-balance weights: negatives weigh 1/10
    model = _fit(x, y, w)
    sample_prior, weighted_prior = training_priors(y, w)
    assert weighted_prior > 5 * sample_prior
    x_new, y_new, p_new = _population(rng, 200_000)  # fresh data for the calibration check
    raw = model.predict_proba(x_new[:, None])[:, 1]
    corrected = prior_corrected(raw, sample_prior=sample_prior, weighted_prior=weighted_prior)
    np.testing.assert_allclose(corrected, p_new, atol=0.02)
    # calibration by decile of the corrected probability
    bins = np.quantile(corrected, np.linspace(0, 1, 11))
    which = np.clip(np.searchsorted(bins, corrected, side="right") - 1, 0, 9)
    for d in range(10):
        sel = which == d
        assert corrected[sel].mean() == pytest.approx(y_new[sel].mean(), abs=0.01 + 0.1 * y_new[sel].mean())
