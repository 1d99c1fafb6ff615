"""Weighted binary-classification metrics, vectorised over bootstrap replicates.

Contract. Every metric takes labels ``y`` (0/1), scores ``s`` (larger = more likely positive) and
row weights ``w`` of shape ``(n,)`` (gives a float; ``None`` means unit weights) or ``(B, n)`` (gives
an array of shape ``(B,)``, one value per bootstrap replicate: a row's weight is its user's
multiplicity, possibly times an importance weight). Every metric is a nonlinear function of a few
*linear* statistics of the row weights, ``Z = w @ D``: the positive and negative weight of each
distinct-score group (rows sorted by score once; tied scores form one threshold, so ties are exact:
ROC-AUC credits them 1/2, average precision steps over distinct thresholds), or per-row loss and
confusion indicators. :func:`over_replicates` uses that: it sums ``D`` per user once, so replicate
``b`` costs one sparse product of its multiplicities, chunked over replicates; any other metric gets
the ``(b, n)`` row weights of :func:`replicate_row_weights`. Undefined values are NaN. Pure
numpy/scipy; the results equal scikit-learn's with ``sample_weight``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
from scipy import sparse
from scipy.special import expit, logit

from sampleimp_spark.evaluation.bootstrap import CHUNK_BYTES

__all__ = [
    "PrecisionRecall",
    "average_precision",
    "best_f1_threshold",
    "f1_score",
    "log_loss",
    "over_replicates",
    "precision_recall_at_threshold",
    "precision_recall_at_top",
    "prior_corrected",
    "replicate_row_weights",
    "roc_auc",
    "training_priors",
]

FloatOrArray = float | np.ndarray
Finish = Callable[[np.ndarray], "np.ndarray | tuple[np.ndarray, np.ndarray]"]

#: float64 arrays of shape (chunk, n or k) alive at once in one chunk (statistics and temporaries).
_ARRAYS_PER_REPLICATE = 8


class PrecisionRecall(NamedTuple):
    """Precision and recall: floats for 1-D weights, arrays of shape ``(B,)`` for ``(B, n)`` weights."""

    precision: FloatOrArray
    recall: FloatOrArray


# ----------------------------------------------------------------------------- input handling


def _labels(y: npt.ArrayLike) -> np.ndarray:
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"y must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError("no rows")
    if arr.dtype != np.bool_ and not np.all((arr == 0) | (arr == 1)):
        raise ValueError("y must hold only 0 and 1")
    return arr.astype(np.float64)


def _scores(s: npt.ArrayLike, n: int, name: str = "s") -> np.ndarray:
    arr = np.asarray(s, dtype=np.float64)
    if arr.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite")
    return arr


def _weights(w: npt.ArrayLike | None, n: int) -> tuple[np.ndarray, bool]:
    """Weights as a 2-D ``(B, n)`` array, and whether the input was 1-D (or None)."""
    if w is None:
        return np.ones((1, n)), True
    arr = np.asarray(w, dtype=np.float64)
    one_d = arr.ndim == 1
    if one_d:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != n:
        raise ValueError(f"w must have shape ({n},) or (B, {n}), got {np.shape(w)}")
    if arr.size and not (arr.min() >= 0 and np.isfinite(arr.max())):
        raise ValueError("weights must be finite and non-negative")
    return arr, one_d


def _out(x: np.ndarray, one_d: bool) -> FloatOrArray:
    return float(x[0]) if one_d else x


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` with NaN where ``den`` is not positive (no warnings)."""
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


# ----------------------------------------------------------------------------- linear statistics


@dataclass(frozen=True)
class _Linear:
    """A metric as ``finish(w @ design)``: ``design`` is ``(n, k)``, ``finish`` maps ``(b, k)`` to ``(b,)`` arrays."""

    design: np.ndarray | sparse.csr_array
    finish: Finish


def _project(w2: np.ndarray, design: np.ndarray | sparse.csr_array) -> np.ndarray:
    """``w2 @ design`` as a dense ``(b, k)`` array."""
    if isinstance(design, np.ndarray):
        return w2 @ design
    return np.asarray(design.T @ w2.T).T


def _evaluate(form: _Linear, w: npt.ArrayLike | None, n: int) -> tuple[Any, bool]:
    w2, one_d = _weights(w, n)
    return form.finish(_project(w2, form.design)), one_d


@dataclass(frozen=True)
class _Segments:
    """Rows grouped for the rank metrics (one sort by score), into only the columns the metrics need.

    Let ``g_1 > ... > g_K`` be the distinct scores held by at least one positive row (``g_0 = +inf``,
    ``g_{K+1} = -inf``). Row ``r`` falls in column ``column[r]``: the ``K`` columns ``P_k`` (positives
    scoring ``g_k``), then the ``n_tie`` columns ``T_k`` for the ``g_k`` also held by negatives
    (``tie_groups``), then the ``n_run`` columns ``S_j`` for the nonempty runs of negatives scoring
    strictly between ``g_j`` and ``g_{j+1}`` (``run_slots``). Negative-only scores are merged into
    their run: no rank metric here needs to split them. ``runs_above[k]`` counts the nonempty runs
    scoring above ``g_{k+1}`` (0-based ``k``).
    """

    column: np.ndarray
    thresholds: np.ndarray  # g_1..g_K
    tie_groups: np.ndarray  # 0-based k with a T column, ascending
    run_slots: np.ndarray  # j in 0..K of each nonempty run, ascending
    runs_above: np.ndarray  # (K,)

    @property
    def k(self) -> int:
        return int(self.thresholds.size)

    def design(self) -> sparse.csr_array:
        n = self.column.size
        n_cols = self.k + self.tie_groups.size + self.run_slots.size
        return sparse.csr_array((np.ones(n), self.column, np.arange(n + 1)), shape=(n, n_cols))


def _segments(y: np.ndarray, s: np.ndarray) -> _Segments:
    uniq, inv = np.unique(s, return_inverse=True)  # the one sort, ascending
    n_groups = uniq.size
    group = (n_groups - 1) - inv.ravel()  # index of the row's distinct score, highest first
    pos = y == 1
    has_pos = np.zeros(n_groups, dtype=bool)
    has_pos[group[pos]] = True
    has_neg = np.zeros(n_groups, dtype=bool)
    has_neg[group[~pos]] = True
    above = np.cumsum(has_pos)  # positive groups at or above each group
    k = int(above[-1])
    tie = has_neg[has_pos]  # (K,)
    tie_rank = np.cumsum(tie) - 1
    run_nonempty = np.zeros(k + 1, dtype=bool)
    run_nonempty[above[has_neg & ~has_pos]] = True  # a negative-only group below g_j lies in run j
    run_count = np.cumsum(run_nonempty)
    n_tie = int(tie.sum())
    c = above[group]
    tie_column = k + tie_rank[np.maximum(c - 1, 0)] if k else c  # (only read where the row is a tied negative)
    column = np.where(pos, c - 1, np.where(has_pos[group], tie_column, k + n_tie + run_count[c] - 1))
    return _Segments(
        column=column.astype(np.int64),
        thresholds=uniq[::-1][has_pos],
        tie_groups=np.flatnonzero(tie),
        run_slots=np.flatnonzero(run_nonempty),
        runs_above=run_count[:k],
    )


class _Parts(NamedTuple):
    p: np.ndarray  # (b, K) positive weight at g_k
    t: np.ndarray | None  # (b, K) negative weight tied at g_k (None: no ties)
    cn: np.ndarray  # (b, K) negative weight scoring >= g_k
    w_pos: np.ndarray  # (b,)
    w_neg: np.ndarray  # (b,)


def _parts(z: np.ndarray, seg: _Segments) -> _Parts:
    """Per positive score group, from the statistics ``z`` (``(b, columns)``) of :meth:`_Segments.design`."""
    k, n_tie = seg.k, seg.tie_groups.size
    b = z.shape[0]
    p, tz, sz = z[:, :k], z[:, k : k + n_tie], z[:, k + n_tie :]
    w_pos = p.sum(axis=1)
    w_neg = tz.sum(axis=1) + sz.sum(axis=1)
    cum_runs = np.zeros((b, sz.shape[1] + 1))
    np.cumsum(sz, axis=1, out=cum_runs[:, 1:])
    cn = cum_runs[:, seg.runs_above]
    t = None
    if n_tie:
        t = np.zeros((b, k))
        t[:, seg.tie_groups] = tz
        cn += np.cumsum(t, axis=1)
    return _Parts(p, t, cn, w_pos, w_neg)


def _auc_finish(seg: _Segments) -> Finish:
    def finish(z: np.ndarray) -> np.ndarray:
        p, t, cn, w_pos, w_neg = _parts(z, seg)
        # negative weight strictly below g_k, plus half the ties: W- - CN_k + T_k / 2
        np.subtract(w_neg[:, None], cn, out=cn)
        if t is not None:
            cn += 0.5 * t
        return _ratio(np.einsum("bk,bk->b", p, cn), w_pos * w_neg)

    return finish


def _ap_finish(seg: _Segments) -> Finish:
    def finish(z: np.ndarray) -> np.ndarray:
        p, _, cn, w_pos, _ = _parts(z, seg)
        cp = np.cumsum(p, axis=1)
        cn += cp  # predicted-positive weight at threshold g_k
        prec = np.zeros_like(cp)
        np.divide(cp, cn, out=prec, where=cn > 0)  # where it is 0, so is P_k
        return _ratio(np.einsum("bk,bk->b", p, prec), w_pos)

    return finish


def _top_finish(seg: _Segments, fraction: float) -> Finish:
    k, n_tie = seg.k, seg.tie_groups.size

    def finish(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        b = z.shape[0]
        p = z[:, :k]
        # blocks in score order: run 0, group g_1 (P + T), run 1, ..., g_K, run K
        blocks = np.zeros((b, 2 * k + 1))
        blocks[:, 2 * seg.run_slots] = z[:, k + n_tie :]
        blocks[:, 1::2] = p
        blocks[:, 2 * seg.tie_groups + 1] += z[:, k : k + n_tie]
        pos_blocks = np.zeros((b, 2 * k + 1))
        pos_blocks[:, 1::2] = p
        cw = np.cumsum(blocks, axis=1)
        cp = np.cumsum(pos_blocks, axis=1)
        target = fraction * cw[:, -1]
        j = np.minimum(np.count_nonzero(cw < target[:, None], axis=1), 2 * k)  # the block holding the cut
        rows = np.arange(b)
        cw_prev = np.where(j > 0, cw[rows, j - 1], 0.0)
        cp_prev = np.where(j > 0, cp[rows, j - 1], 0.0)
        share = np.nan_to_num(np.clip(_ratio(target - cw_prev, cw[rows, j] - cw_prev), 0.0, 1.0))
        tp = cp_prev + share * (cp[rows, j] - cp_prev)
        return _ratio(tp, target), _ratio(tp, cp[:, -1])

    return finish


def _rank_form(y: np.ndarray, s: np.ndarray, make: Callable[[_Segments], Finish]) -> _Linear:
    seg = _segments(y, s)
    return _Linear(design=seg.design(), finish=make(seg))


def _roc_auc_form(y: np.ndarray, s: np.ndarray) -> _Linear:
    return _rank_form(y, s, _auc_finish)


def _average_precision_form(y: np.ndarray, s: np.ndarray) -> _Linear:
    return _rank_form(y, s, _ap_finish)


def _top_form(y: np.ndarray, s: np.ndarray, *, fraction: float) -> _Linear:
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    return _rank_form(y, s, lambda seg: _top_finish(seg, fraction))


def _threshold_form(y: np.ndarray, s: np.ndarray, *, threshold: float, strict: bool = False) -> _Linear:
    pred = (s > threshold) if strict else (s >= threshold)
    design = np.column_stack([y * pred, pred, y]).astype(np.float64)

    def finish(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return _ratio(z[:, 0], z[:, 1]), _ratio(z[:, 0], z[:, 2])

    return _Linear(design=design, finish=finish)


def _log_loss_form(y: np.ndarray, p: np.ndarray, *, eps: float = 1e-15) -> _Linear:
    pp = np.clip(p, eps, 1.0 - eps)
    loss = -(y * np.log(pp) + (1.0 - y) * np.log1p(-pp))
    design = np.column_stack([loss, np.ones_like(loss)])

    def finish(z: np.ndarray) -> np.ndarray:
        return _ratio(z[:, 0], z[:, 1])

    return _Linear(design=design, finish=finish)


# ----------------------------------------------------------------------------- rank metrics


def roc_auc(y: npt.ArrayLike, s: npt.ArrayLike, w: npt.ArrayLike | None = None) -> FloatOrArray:
    """Weighted ROC-AUC (Mann–Whitney): ``Σ_{i pos, j neg} w_i w_j ([s_i > s_j] + ½[s_i = s_j]) / (W+ W-)``.

    Equal to the trapezoidal area under the weighted ROC curve over distinct thresholds
    (scikit-learn's ``roc_auc_score`` with ``sample_weight``).

    Args:
        y: labels 0/1, shape ``(n,)``.
        s: scores, shape ``(n,)``.
        w: weights ``(n,)`` or ``(B, n)``; None for unit weights.

    Returns:
        A float, or shape ``(B,)``; NaN where one class has zero weight.
    """
    yy = _labels(y)
    res, one_d = _evaluate(_roc_auc_form(yy, _scores(s, yy.size)), w, yy.size)
    return _out(res, one_d)


def average_precision(y: npt.ArrayLike, s: npt.ArrayLike, w: npt.ArrayLike | None = None) -> FloatOrArray:
    """Weighted average precision, scikit-learn's definition: ``Σ_t (R_t - R_{t-1}) P_t``.

    ``P_t`` and ``R_t`` are the precision and recall when the rows scoring at least the ``t``-th
    distinct score (highest first) are predicted positive; no interpolation between operating
    points. (The trapezoidal PR-AUC interpolates linearly in PR space, which overstates the area:
    Davis & Goadrich 2006, *The relationship between Precision-Recall and ROC curves*.)

    Args:
        y: labels 0/1, shape ``(n,)``.
        s: scores, shape ``(n,)``.
        w: weights ``(n,)`` or ``(B, n)``; None for unit weights.

    Returns:
        A float, or shape ``(B,)``; NaN where the positives have zero weight.
    """
    yy = _labels(y)
    res, one_d = _evaluate(_average_precision_form(yy, _scores(s, yy.size)), w, yy.size)
    return _out(res, one_d)


def precision_recall_at_top(
    y: npt.ArrayLike, s: npt.ArrayLike, w: npt.ArrayLike | None = None, *, fraction: float
) -> PrecisionRecall:
    """Precision and recall when the top ``fraction`` of the weight, by score, is predicted positive.

    The cut is at ``T = fraction · Σ w``. The score group straddling it enters with the share
    ``(T - weight scoring above it) / its weight`` of each of its rows (positives and negatives alike),
    so the predicted weight is exactly ``T`` whatever the ties.

    Args:
        y: labels 0/1, shape ``(n,)``.
        s: scores, shape ``(n,)``.
        w: weights ``(n,)`` or ``(B, n)``; None for unit weights.
        fraction: share of the weight predicted positive, in ``[0, 1]``.

    Returns:
        :class:`PrecisionRecall`; precision NaN when ``T = 0``, recall NaN without positive weight.
    """
    yy = _labels(y)
    (prec, rec), one_d = _evaluate(_top_form(yy, _scores(s, yy.size), fraction=fraction), w, yy.size)
    return PrecisionRecall(_out(prec, one_d), _out(rec, one_d))


def best_f1_threshold(y: npt.ArrayLike, s: npt.ArrayLike, w: npt.ArrayLike | None = None) -> float:
    """The score threshold maximising the (weighted) F1 of ``s >= threshold``, e.g. on validation data.

    F1 at threshold ``t`` is ``2 TP_t / (PP_t + W+)``. Lowering the threshold through scores without
    positives only adds false positives, so the best threshold is one of the scores held by a
    positive; among thresholds whose F1 equals the best (relative tolerance 1e-12) the highest wins.

    Args:
        y: labels 0/1, shape ``(n,)``.
        s: scores, shape ``(n,)``.
        w: optional weights, shape ``(n,)`` (not replicates).

    Returns:
        The threshold (one of the scores).

    Raises:
        ValueError: when the positives have zero weight (F1 is 0 at every threshold).
    """
    if w is not None and np.ndim(w) != 1:
        raise ValueError("best_f1_threshold takes 1-D weights")
    yy = _labels(y)
    seg = _segments(yy, _scores(s, yy.size))
    w2, _ = _weights(w, yy.size)
    p, _, cn, w_pos, _ = _parts(_project(w2, seg.design()), seg)
    if not w_pos[0] > 0:
        raise ValueError("no positive weight: every threshold has F1 = 0")
    cp = np.cumsum(p[0])
    f1 = 2.0 * cp / (cp + cn[0] + w_pos[0])
    best = f1.max()
    return float(seg.thresholds[np.flatnonzero(f1 >= best * (1.0 - 1e-12))[0]])


# ----------------------------------------------------------------------------- threshold metrics


def precision_recall_at_threshold(
    y: npt.ArrayLike,
    s: npt.ArrayLike,
    w: npt.ArrayLike | None = None,
    *,
    threshold: float,
    strict: bool = False,
) -> PrecisionRecall:
    """Precision and recall when rows with ``s >= threshold`` are predicted positive.

    Args:
        y: labels 0/1, shape ``(n,)``.
        s: scores, shape ``(n,)``.
        w: weights ``(n,)`` or ``(B, n)``; None for unit weights.
        threshold: the cut.
        strict: predict positive only when ``s > threshold`` (the convention of Spark's classifiers).

    Returns:
        :class:`PrecisionRecall`; precision NaN when nothing is predicted positive, recall NaN
        without positive weight.
    """
    yy = _labels(y)
    form = _threshold_form(yy, _scores(s, yy.size), threshold=threshold, strict=strict)
    (prec, rec), one_d = _evaluate(form, w, yy.size)
    return PrecisionRecall(_out(prec, one_d), _out(rec, one_d))


def f1_score(precision: FloatOrArray, recall: FloatOrArray) -> FloatOrArray:
    """Harmonic mean ``2PR / (P + R)``, i.e. ``2TP / (2TP + FP + FN)`` (no warnings).

    0 when both are 0, and 0 when only one is NaN: precision is NaN when nothing is predicted
    positive (then TP = 0 and F1 = 0 / FN = 0 if there are positives), recall is NaN when there
    are no positives (then F1 = 0 / FP = 0). NaN only when both are NaN (no positive and none
    predicted: 0 / 0).

    Args:
        precision: a float or an array.
        recall: a float or an array of the same shape.

    Returns:
        A float for scalar inputs, else an array.
    """
    p = np.asarray(precision, dtype=np.float64)
    r = np.asarray(recall, dtype=np.float64)
    den = p + r
    f = np.zeros(np.broadcast(p, r).shape)
    np.divide(2.0 * p * r, den, out=f, where=den > 0)
    f[np.isnan(p) & np.isnan(r)] = np.nan
    return float(f) if f.ndim == 0 else f


# ----------------------------------------------------------------------------- probability metrics


def log_loss(y: npt.ArrayLike, p: npt.ArrayLike, w: npt.ArrayLike | None = None, *, eps: float = 1e-15) -> FloatOrArray:
    """Weighted mean log-loss ``Σ w · -(y ln p̃ + (1-y) ln(1-p̃)) / Σ w``, ``p̃`` = ``p`` clipped to ``[eps, 1-eps]``.

    Args:
        y: labels 0/1, shape ``(n,)``.
        p: predicted probabilities of the positive class, shape ``(n,)``.
        w: weights ``(n,)`` or ``(B, n)``; None for unit weights.
        eps: clipping bound.

    Returns:
        A float, or shape ``(B,)``; NaN where the total weight is 0.
    """
    yy = _labels(y)
    res, one_d = _evaluate(_log_loss_form(yy, _scores(p, yy.size, "p"), eps=eps), w, yy.size)
    return _out(res, one_d)


def training_priors(y: npt.ArrayLike, w: npt.ArrayLike | None) -> tuple[float, float]:
    """Positive share of a training table, unweighted and weighted.

    Args:
        y: training labels 0/1.
        w: training weights, shape ``(n,)`` (None: unit weights).

    Returns:
        ``(sample_prior, weighted_prior) = (mean(y), Σ w y / Σ w)``, the inputs of :func:`prior_corrected`.
    """
    yy = _labels(y)
    if w is not None and np.ndim(w) != 1:
        raise ValueError("training_priors takes 1-D weights")
    w2, _ = _weights(w, yy.size)
    total = float(w2[0].sum())
    if not total > 0:
        raise ValueError("the weights sum to 0")
    return float(yy.mean()), float(w2[0] @ yy) / total


def prior_corrected(p: npt.ArrayLike, *, sample_prior: float, weighted_prior: float) -> np.ndarray:
    """Map probabilities of a model fitted at one positive prior to another (prior correction).

    A model fitted on data whose (weighted) positive share was ``weighted_prior`` estimates
    probabilities for that prior. When the weighting changes only the class balance (class-dependent
    weights, down-sampled negatives) the log-odds differ by a constant (King & Zeng 2001, *Logistic
    Regression in Rare Events Data*, Political Analysis 9(2), §4.1 "prior correction"):
    ``logit(p_corrected) = logit(p) - logit(weighted_prior) + logit(sample_prior)``.
    An exact copy of ``p`` when the two priors are equal.

    Args:
        p: probabilities in ``[0, 1]``.
        sample_prior: the positive share to correct to (e.g. the unweighted training share).
        weighted_prior: the positive share the model was fitted at.

    Returns:
        The corrected probabilities, same shape as ``p`` (0 and 1 stay 0 and 1).
    """
    for name, prior in (("sample_prior", sample_prior), ("weighted_prior", weighted_prior)):
        if not 0.0 < prior < 1.0:
            raise ValueError(f"{name} must be in (0, 1), got {prior}")
    arr = np.asarray(p, dtype=np.float64)
    if not np.all((arr >= 0) & (arr <= 1)):
        raise ValueError("p must lie in [0, 1]")
    if sample_prior == weighted_prior:
        return arr.copy()
    with np.errstate(divide="ignore"):
        shifted = logit(arr) - logit(weighted_prior) + logit(sample_prior)
    return np.asarray(expit(shifted), dtype=np.float64)


# ----------------------------------------------------------------------------- replicates


def replicate_row_weights(
    mult: np.ndarray, unit_index: np.ndarray, base: np.ndarray | None = None, *, chunk: int
) -> Iterator[np.ndarray]:
    """Row weights of the bootstrap replicates, ``chunk`` replicates at a time.

    Row ``r`` of replicate ``b`` weighs ``mult[b, unit_index[r]] · base[r]``.

    Args:
        mult: multiplicities, shape ``(B, U)``.
        unit_index: per-row column of the row's unit in ``mult``, shape ``(n,)``.
        base: optional per-row base weights (importance weights), shape ``(n,)``.
        chunk: replicates per yielded array (>= 1).

    Yields:
        float64 arrays of shape ``(b, n)``, ``b <= chunk``, replicates in order.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be at least 1, got {chunk}")
    m, idx, bw = _check_replicate_inputs(mult, unit_index, base)
    for b0 in range(0, m.shape[0], chunk):
        rows = np.take(m[b0 : b0 + chunk].astype(np.float64), idx, axis=1)
        if bw is not None:
            rows *= bw
        yield rows


def replicate_metric(
    fn: Callable[..., Any], y: np.ndarray, s: np.ndarray, mult: np.ndarray, units: np.ndarray, base: np.ndarray
) -> Any:
    """``fn(y, s, W)`` over every bootstrap replicate (row weights = unit multiplicity × ``base``),
    computed in chunks of :func:`replicate_row_weights`; tuple results are concatenated element-wise."""
    out: list[Any] = []
    for w in replicate_row_weights(mult, units, base, chunk=max(1, 2_000_000 // max(len(y), 1))):
        out.append(fn(y, s, w))
    if isinstance(out[0], tuple):
        return tuple(np.concatenate([o[i] for o in out]) for i in range(len(out[0])))
    return np.concatenate(out)


def _check_replicate_inputs(
    mult: np.ndarray, unit_index: np.ndarray, base: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    m = np.asarray(mult)
    idx = np.asarray(unit_index)
    if m.ndim != 2:
        raise ValueError(f"mult must be 2-D (B, U), got shape {m.shape}")
    if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
        raise ValueError("unit_index must be a 1-D integer array")
    if idx.size and (idx.min() < 0 or idx.max() >= m.shape[1]):
        raise ValueError(f"unit_index out of range [0, {m.shape[1]})")
    if base is None:
        return m, idx, None
    bw = np.asarray(base, dtype=np.float64)
    if bw.shape != idx.shape:
        raise ValueError(f"base weights must have shape {idx.shape}, got {bw.shape}")
    if bw.size and not (bw.min() >= 0 and np.isfinite(bw.max())):
        raise ValueError("base weights must be finite and non-negative")
    return m, idx, bw


#: The metrics of this module as linear forms, for the fast path of :func:`over_replicates`.
_FORMS: dict[Callable[..., Any], Callable[..., _Linear]] = {
    roc_auc: _roc_auc_form,
    average_precision: _average_precision_form,
    precision_recall_at_top: _top_form,
    precision_recall_at_threshold: _threshold_form,
    log_loss: _log_loss_form,
}


def over_replicates(
    metric: Callable[..., Any],
    y: npt.ArrayLike,
    s: npt.ArrayLike,
    mult: np.ndarray,
    unit_index: np.ndarray,
    base_weights: np.ndarray | None = None,
    *,
    chunk: int | None = None,
    **kw: Any,
) -> np.ndarray:
    """A metric over every bootstrap replicate, in chunks of replicates.

    For the metrics of this module the rows are sorted by score once and summarised into the
    metric's linear statistics ``D`` (``n × k``, see the module docstring), summed per user with the
    base weights into ``A = Σ_rows base · D`` (``U × k``, sparse); replicate ``b``'s statistics are
    ``mult[b] @ A``, so no ``(B, n)`` array is formed. Any other ``metric`` is called as
    ``metric(y, s, w, **kw)`` on the chunks of :func:`replicate_row_weights` (rows pre-sorted by
    score, so a metric sorting by score finds them in order). Either way the chunk size keeps the
    float64 temporaries of one chunk near 200 MB.

    Args:
        metric: e.g. :func:`roc_auc`, :func:`average_precision`, :func:`log_loss` (``s`` = the
            probabilities), :func:`precision_recall_at_top` (``fraction=`` in ``kw``) or
            :func:`precision_recall_at_threshold` (``threshold=``); or any
            ``metric(y, s, w (b, n), **kw)`` returning ``(b,)`` arrays.
        y: labels 0/1, shape ``(n,)``.
        s: scores, shape ``(n,)``.
        mult: multiplicities, shape ``(B, U)``.
        unit_index: per-row column of the row's unit in ``mult``, shape ``(n,)``.
        base_weights: optional per-row importance weights, shape ``(n,)``.
        chunk: replicates per chunk (default: from the memory budget).
        **kw: keyword arguments of ``metric``.

    Returns:
        Shape ``(B,)`` for a metric returning one array, ``(k, B)`` for one returning ``k`` of them
        (``precision, recall = over_replicates(precision_recall_at_top, ..., fraction=0.1)``).
    """
    yy = _labels(y)
    ss = _scores(s, yy.size)
    if chunk is not None and chunk < 1:
        raise ValueError(f"chunk must be at least 1, got {chunk}")
    m, idx, bw = _check_replicate_inputs(mult, unit_index, base_weights)
    if idx.shape != yy.shape:
        raise ValueError(f"unit_index must have shape {yy.shape}, got {idx.shape}")
    n_boot, n_units = m.shape
    builder = _FORMS.get(metric)
    parts: list[np.ndarray] = []
    if builder is None:
        order = np.argsort(-ss, kind="stable")
        step = chunk or max(1, CHUNK_BYTES // (8 * _ARRAYS_PER_REPLICATE * yy.size))
        rows = replicate_row_weights(m, idx[order], None if bw is None else bw[order], chunk=step)
        parts = [np.asarray(metric(yy[order], ss[order], w, **kw)) for w in rows]
        return np.concatenate(parts, axis=-1)
    form = builder(yy, ss, **kw)
    weights = np.ones(yy.size) if bw is None else bw
    by_unit = sparse.csr_array((weights, (idx, np.arange(yy.size))), shape=(n_units, yy.size))
    per_unit = by_unit @ form.design  # (U, k)
    k = per_unit.shape[1]
    step = chunk or max(1, CHUNK_BYTES // (8 * (n_units + _ARRAYS_PER_REPLICATE * k)))
    if isinstance(per_unit, np.ndarray):
        for b0 in range(0, n_boot, step):
            parts.append(np.asarray(form.finish(m[b0 : b0 + step].astype(np.float64) @ per_unit)))
    else:
        per_unit_t = sparse.csr_array(per_unit.T)  # (k, U)
        for b0 in range(0, n_boot, step):
            mt = np.ascontiguousarray(m[b0 : b0 + step].T, dtype=np.float64)  # (U, b)
            parts.append(np.asarray(form.finish((per_unit_t @ mt).T)))
    return np.concatenate(parts, axis=-1)
