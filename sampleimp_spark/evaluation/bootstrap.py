"""Paired Poisson bootstrap over users: replicate estimates, differences, p-values, Holm, MDE.

Contract. The resampling unit is the user. :func:`multiplicities` draws one Poisson(1) multiplicity
per (replicate, user) from ``np.random.default_rng(seed)`` over the *sorted* distinct user ids, so
the draws depend only on the set of users and the seed. The same matrix must be used for every
arm, origin, seed and metric of a run: that sharing is what pairs the replicates of two arms. All
of a user's rows get the user's multiplicity (a cluster bootstrap by user).
:func:`weighted_mean_replicates` turns per-row values into a point estimate and ``B`` replicate
estimates (optionally self-normalised importance-weighted); :func:`compare` reduces two arms'
paired replicates to the difference, its percentile interval, bootstrap SE, a z-test p-value
with that SE and the minimum detectable effect; :func:`holm` adjusts a family of p-values.
Pure numpy/scipy, deterministic, vectorised over replicates in memory-bounded chunks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

__all__ = [
    "Comparison",
    "compare",
    "holm",
    "marginal_interval",
    "minimum_detectable_effect",
    "multiplicities",
    "weighted_mean_replicates",
]

#: Upper bound of the float64 temporaries of one chunk of replicates.
CHUNK_BYTES = 200 * 2**20

#: dtype of the multiplicity matrix: signed, so ``mult - 1`` cannot wrap around; a Poisson(1)
#: draw above 127 has probability below 1e-200.
MULT_DTYPE = np.int8


def _chunk_rows(bytes_per_row: int, n_rows: int) -> int:
    """Rows per chunk so that one chunk's float64 temporaries stay under :data:`CHUNK_BYTES`."""
    return max(1, min(n_rows, CHUNK_BYTES // max(1, bytes_per_row)))


def multiplicities(units: Sequence[str], n_boot: int, seed: int) -> tuple[np.ndarray, dict[str, int]]:
    """Poisson(1) bootstrap multiplicities of the distinct units.

    The generator is ``np.random.default_rng(seed)`` (PCG64); the matrix is filled replicate by
    replicate (row-major) over the distinct unit ids in sorted order. Hence the draws depend only on
    the set of units, ``seed`` and the replicate index (never on the input order or duplicates), and
    the first ``k`` replicates do not depend on ``n_boot``.

    Args:
        units: unit (user) ids; duplicates and order are irrelevant.
        n_boot: number of replicates ``B`` (>= 1).
        seed: seed of ``np.random.default_rng``.

    Returns:
        ``(mult, index)``: ``mult`` of shape ``(n_boot, n_units)`` and dtype :data:`MULT_DTYPE`,
        ``mult[b, j]`` the multiplicity of unit ``j`` in replicate ``b``; ``index`` maps each unit id
        to its column ``j``.
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    ids = sorted(set(units))
    index = {u: j for j, u in enumerate(ids)}
    rng = np.random.default_rng(seed)
    mult = np.empty((n_boot, len(ids)), dtype=MULT_DTYPE)
    step = _chunk_rows(8 * len(ids), n_boot)
    for b0 in range(0, n_boot, step):
        b1 = min(n_boot, b0 + step)
        draws = rng.poisson(1.0, size=(b1 - b0, len(ids)))
        if draws.size and draws.max() > np.iinfo(MULT_DTYPE).max:  # pragma: no cover - p < 1e-200
            raise OverflowError("Poisson(1) draw does not fit the multiplicity dtype")
        mult[b0:b1] = draws
    return mult, index


@dataclass(frozen=True)
class Comparison:
    """Paired bootstrap comparison of arm A (``estimate``) with arm B (``reference``).

    Attributes:
        estimate: arm A's point estimate (e.g. the weighted variant).
        reference: arm B's point estimate (e.g. unweighted).
        delta: ``estimate - reference``.
        rel_delta: ``delta / reference``; None when ``reference == 0``.
        ci_low: lower bound of the percentile interval of the per-replicate differences.
        ci_high: upper bound of that interval.
        se: bootstrap standard deviation (``ddof=1``) of the per-replicate differences.
        p_value: two-sided z-test p-value of ``H0: delta = 0`` with the bootstrap ``se``.
        mde: minimum detectable ``|delta|`` at the requested power (normal approximation).
        rel_mde: ``mde / |reference|``; None when ``reference == 0``.
        n_boot: replicates used (those where both arms are finite).
    """

    estimate: float
    reference: float
    delta: float
    rel_delta: float | None
    ci_low: float
    ci_high: float
    se: float
    p_value: float
    mde: float
    rel_mde: float | None
    n_boot: int

    def delta_columns(self) -> dict[str, float | None]:
        """The comparison as the ``delta*``, ``p_value`` and ``mde`` columns of a results table."""
        return {
            "delta": self.delta,
            "rel_delta": self.rel_delta,
            "delta_ci_low": self.ci_low,
            "delta_ci_high": self.ci_high,
            "p_value": self.p_value,
            "mde": self.mde,
            "rel_mde": self.rel_mde,
        }


def _check_alpha_power(alpha: float, power: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if not 0.0 < power < 1.0:
        raise ValueError(f"power must be in (0, 1), got {power}")


def minimum_detectable_effect(se: float, *, alpha: float = 0.05, power: float = 0.8) -> float:
    """Minimum detectable ``|delta|`` of a two-sided level-``alpha`` test with the given power.

    Normal approximation: the estimated difference is ``N(delta, se²)``; a two-sided test at level
    ``alpha`` rejects when ``|delta_hat| > z_{1-alpha/2} se``, which happens with probability
    ``power`` (neglecting the far tail) when ``|delta| = (z_{1-alpha/2} + z_{power}) se``. With paired
    replicates ``se`` is the SE of the *difference*, so the MDE already benefits from the pairing.
    For ``alpha = 0.05``, ``power = 0.8``: ``(1.959964 + 0.841621) se = 2.801585 se``.

    Args:
        se: standard error of the estimated difference.
        alpha: two-sided significance level.
        power: desired power.

    Returns:
        The MDE (NaN when ``se`` is NaN).
    """
    _check_alpha_power(alpha, power)
    return float((norm.ppf(1.0 - alpha / 2.0) + norm.ppf(power)) * se)


def _percentile_interval(x: np.ndarray, alpha: float) -> tuple[float, float]:
    if x.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(x, [alpha / 2.0, 1.0 - alpha / 2.0], method="linear")
    return float(lo), float(hi)


def marginal_interval(reps: np.ndarray, *, alpha: float = 0.05) -> tuple[float, float]:
    """Percentile interval of one arm's replicates (non-finite replicates left out).

    Uses ``np.quantile(..., method="linear")`` at ``alpha/2`` and ``1 - alpha/2``.

    Args:
        reps: replicate estimates, shape ``(B,)``.
        alpha: 1 - coverage.

    Returns:
        ``(low, high)``; NaNs when no replicate is finite.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    r = np.asarray(reps, dtype=np.float64).ravel()
    return _percentile_interval(r[np.isfinite(r)], alpha)


def compare(
    point_a: float,
    point_b: float,
    reps_a: np.ndarray,
    reps_b: np.ndarray,
    *,
    alpha: float = 0.05,
    power: float = 0.8,
) -> Comparison:
    """Paired comparison of arm A with arm B from replicates drawn with the same multiplicities.

    With ``d_b = reps_a[b] - reps_b[b]`` over the replicates where both are finite (``B`` of them):

    * interval: the ``[alpha/2, 1 - alpha/2]`` percentile interval of the ``d_b``
      (``np.quantile``, linear interpolation). This is the interval of the *paired* differences,
      not the difference of the marginal intervals, which ignores the correlation of the arms and
      is far too wide when they share user effects;
    * ``se``: standard deviation of the ``d_b`` (``ddof=1``);
    * p-value of ``H0: delta = 0``: the two-sided z-test with the bootstrap SE,
      ``2 Φ(-|delta| / se)`` (1 when ``delta = 0``; 0 when ``se = 0 < |delta|``). It is the test
      whose power :func:`minimum_detectable_effect` states, and unlike a Monte-Carlo count
      (at least ``1 / (B + 1)``) its resolution does not depend on ``B``: Holm over ``m``
      comparisons can reject even when ``m > alpha · (B + 1)``;
    * ``mde``: :func:`minimum_detectable_effect` of ``se``.

    Args:
        point_a: arm A's point estimate.
        point_b: arm B's point estimate.
        reps_a: arm A's replicate estimates, shape ``(B,)``.
        reps_b: arm B's replicate estimates with the same multiplicities, shape ``(B,)``.
        alpha: 1 - interval coverage, and the test level of the MDE.
        power: power of the MDE.

    Returns:
        The :class:`Comparison`. Interval, SE, p-value and MDE are NaN with fewer than 2 usable
        replicates.
    """
    _check_alpha_power(alpha, power)
    a = np.asarray(reps_a, dtype=np.float64).ravel()
    b = np.asarray(reps_b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"reps_a and reps_b differ in length: {a.size} vs {b.size}")
    ok = np.isfinite(a) & np.isfinite(b)
    d = a[ok] - b[ok]
    n = int(d.size)
    estimate, reference = float(point_a), float(point_b)
    delta = estimate - reference
    nan = float("nan")
    if n >= 2:
        ci_low, ci_high = _percentile_interval(d, alpha)
        se = float(np.std(d, ddof=1))
        p_value = _z_test(delta, se)
    else:
        ci_low = ci_high = se = p_value = nan
    mde = minimum_detectable_effect(se, alpha=alpha, power=power)
    return Comparison(
        estimate=estimate,
        reference=reference,
        delta=delta,
        rel_delta=None if reference == 0 else delta / reference,
        ci_low=ci_low,
        ci_high=ci_high,
        se=se,
        p_value=p_value,
        mde=mde,
        rel_mde=None if reference == 0 else mde / abs(reference),
        n_boot=n,
    )


def _z_test(delta: float, se: float) -> float:
    """Two-sided p-value of ``delta`` against ``N(0, se²)``; NaN when either is not finite."""
    if not (np.isfinite(delta) and np.isfinite(se)):
        return float("nan")
    if delta == 0.0:
        return 1.0
    if se == 0.0:
        return 0.0
    return float(2.0 * norm.sf(abs(delta) / se))


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm–Bonferroni step-down adjusted p-values.

    With the ``m`` non-NaN p-values sorted ascending, ``p_(1) <= ... <= p_(m)``:
    ``adj_(i) = max_{j <= i} min(1, (m - j + 1) p_(j))``. Rejecting ``adj <= alpha`` controls the
    family-wise error rate at ``alpha`` (Holm 1979). Tied p-values get the same adjusted value.

    Args:
        p_values: raw p-values in ``[0, 1]``; NaN entries are skipped (not counted in ``m``).

    Returns:
        Adjusted p-values in the input order (NaN where the input is NaN).
    """
    p = np.asarray(p_values, dtype=np.float64).ravel()
    out = np.full(p.shape, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    if valid.size == 0:
        return out
    pv = p[valid]
    if np.any((pv < 0) | (pv > 1)):
        raise ValueError("p-values must lie in [0, 1]")
    m = pv.size
    order = np.argsort(pv, kind="stable")
    scaled = np.minimum(1.0, (m - np.arange(m)) * pv[order])
    out[valid[order]] = np.maximum.accumulate(scaled)
    return out


def weighted_mean_replicates(
    values: np.ndarray,
    unit_index: np.ndarray,
    mult: np.ndarray,
    weights: np.ndarray | None = None,
) -> tuple[float, np.ndarray]:
    """Point estimate and bootstrap replicates of a (self-normalised weighted) mean of per-row values.

    Row ``r`` (one per (origin, seed, user), already reduced by the caller) has value ``v_r``, unit
    ``u_r = unit_index[r]`` and weight ``w_r`` (1 without ``weights``). The point estimate is
    ``Σ w_r v_r / Σ w_r``; replicate ``b`` is ``Σ m[b,u_r] w_r v_r / Σ m[b,u_r] w_r`` (NaN when the
    denominator is 0). Rows are first summed per unit (``Σ w v`` and ``Σ w``), so each replicate is a
    ``(B × U) @ (U × 2)`` product, done in chunks of replicates.

    Args:
        values: per-row values, shape ``(R,)``; must be finite.
        unit_index: per-row column of the row's unit in ``mult``, integers in ``[0, U)``.
        mult: multiplicities, shape ``(B, U)`` (from :func:`multiplicities`).
        weights: optional per-row non-negative finite weights (self-normalised importance weights).

    Returns:
        ``(point, reps)`` with ``reps`` of shape ``(B,)``; the point is NaN when ``Σ w = 0``.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    idx = np.asarray(unit_index).ravel()
    m = np.asarray(mult)
    if m.ndim != 2:
        raise ValueError(f"mult must be 2-D (B, U), got shape {m.shape}")
    if idx.shape != v.shape:
        raise ValueError(f"values and unit_index differ in length: {v.size} vs {idx.size}")
    if not np.issubdtype(idx.dtype, np.integer):
        raise TypeError(f"unit_index must hold integers, got {idx.dtype}")
    n_boot, n_units = m.shape
    if idx.size and (idx.min() < 0 or idx.max() >= n_units):
        raise ValueError(f"unit_index out of range [0, {n_units})")
    if not np.all(np.isfinite(v)):
        raise ValueError("values must be finite (drop undefined rows before bootstrapping)")
    if weights is None:
        w = np.ones_like(v)
    else:
        w = np.asarray(weights, dtype=np.float64).ravel()
        if w.shape != v.shape:
            raise ValueError(f"weights and values differ in length: {w.size} vs {v.size}")
        if not np.all(np.isfinite(w)) or np.any(w < 0):
            raise ValueError("weights must be finite and non-negative")
    per_unit = np.empty((n_units, 2))
    per_unit[:, 0] = np.bincount(idx, weights=w * v, minlength=n_units)
    per_unit[:, 1] = np.bincount(idx, weights=w, minlength=n_units)
    total_wv, total_w = float(np.sum(w * v)), float(np.sum(w))
    point = total_wv / total_w if total_w > 0 else float("nan")
    sums = np.empty((n_boot, 2))
    step = _chunk_rows(8 * n_units, n_boot)
    for b0 in range(0, n_boot, step):
        b1 = min(n_boot, b0 + step)
        sums[b0:b1] = m[b0:b1].astype(np.float64) @ per_unit
    num, den = sums[:, 0], sums[:, 1]
    reps = np.full(n_boot, np.nan)
    np.divide(num, den, out=reps, where=den > 0)
    return point, reps
