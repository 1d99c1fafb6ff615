"""Kernel density-ratio estimators in plain numpy: uLSIF, RuLSIF and KLIEP.

Each models ``r(x) = p_t(x) / p_s(x)`` (target over source) as ``Σ_l θ_l exp(-||x - c_l||² / (2σ²))``
with ``θ ≥ 0`` and centers ``c_l`` taken from target rows: uLSIF and RuLSIF (the relative ratio,
bounded by ``1/α``) by closed-form least squares, KLIEP by maximum likelihood under
``E_s[r] = 1`` (EM). :func:`fit_lsif` and :func:`fit_kliep` choose σ (and λ) by k-fold
cross-validation of the method's objective and return a :class:`KernelFit` whose ``quality`` is the
held-out gain over the constant ratio ``r ≡ 1`` (positive: better than constant). No Spark: a grouped
pandas UDF calls them on a bounded sample. Formulas: ``docs/weighting.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.spatial.distance import pdist

#: Multiples of the median pairwise distance tried when no σ grid is configured.
DEFAULT_SIGMA_MULTIPLES: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0, 2.0)
#: Ridge strengths tried by (R)uLSIF when no λ grid is configured.
DEFAULT_LAMBDA_GRID: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0)

_TINY = np.finfo(np.float64).tiny


@dataclass(frozen=True)
class KernelFit:
    """A fitted kernel density ratio ``r(x) = Σ_l theta_l · exp(-||x - c_l||² / (2 sigma²))``.

    Attributes:
        sigma: the chosen Gaussian bandwidth.
        lam: the chosen ridge strength (None for KLIEP, which has none).
        theta: the non-negative kernel weights, one per center.
        cv_score: the held-out objective of the chosen (sigma, lam), averaged over folds:
            the least-squares loss ``J`` for (R)uLSIF (lower is better, ``-½`` for ``r ≡ 1``),
            the mean held-out target ``log r`` for KLIEP (higher is better, ``0`` for ``r ≡ 1``).
        quality: a "gain over the constant ratio" on held-out rows, positive when the fit beats
            ``r ≡ 1``: ``-½ - J`` (a Pearson-divergence estimate) for (R)uLSIF, the KL-divergence
            estimate (= ``cv_score``) for KLIEP.
    """

    sigma: float
    lam: float | None
    theta: np.ndarray
    cv_score: float
    quality: float


def gaussian_kernel(x: np.ndarray, centers: np.ndarray, sigma: float) -> np.ndarray:
    """The design matrix ``Φ[i, l] = exp(-||x_i - c_l||² / (2σ²))``, shape ``(len(x), len(centers))``."""
    x = np.asarray(x, dtype=np.float64)
    centers = np.asarray(centers, dtype=np.float64)
    sq = (x * x).sum(axis=1)[:, None] - 2.0 * (x @ centers.T) + (centers * centers).sum(axis=1)[None, :]
    np.maximum(sq, 0.0, out=sq)  # the expansion can round a zero distance to a tiny negative
    return np.exp(-sq / (2.0 * sigma * sigma))


def kernel_ratio(x: np.ndarray, centers: np.ndarray, sigma: float, theta: np.ndarray) -> np.ndarray:
    """Evaluate ``r(x) = Σ_l θ_l K(x, c_l)`` at the rows of ``x``."""
    return gaussian_kernel(x, centers, sigma) @ theta


def median_distance(x: np.ndarray, max_points: int = 1000) -> float:
    """Median pairwise Euclidean distance over the first ``max_points`` rows (the bandwidth heuristic).

    Rows are expected in random order (the caller sorts by a hash), so the first rows are a
    random subset. Falls back to the mean distance, then to 1, when the median is zero.
    """
    pts = np.asarray(x, dtype=np.float64)[:max_points]
    if len(pts) < 2:
        return 1.0
    dist = pdist(pts)
    med = float(np.median(dist))
    if med > 0.0:
        return med
    mean = float(dist.mean())
    return mean if mean > 0.0 else 1.0


def default_sigma_grid(x: np.ndarray) -> list[float]:
    """``DEFAULT_SIGMA_MULTIPLES`` times the median pairwise distance of ``x``."""
    med = median_distance(x)
    return [m * med for m in DEFAULT_SIGMA_MULTIPLES]


def fold_ids(n: int, n_folds: int) -> np.ndarray:
    """Fold of each of ``n`` rows already in random order: ``i mod n_folds`` (balanced, deterministic)."""
    return np.arange(n) % n_folds


# --- (R)uLSIF ------------------------------------------------------------------------------


def lsif_theta(phi_s: np.ndarray, phi_t: np.ndarray, lam: float, alpha: float = 0.0) -> np.ndarray:
    """Closed-form (R)uLSIF weights ``θ = max(0, (Ĥ + λI)⁻¹ ĥ)``.

    Args:
        phi_s: kernel design matrix of the source (denominator) sample.
        phi_t: kernel design matrix of the target (numerator) sample.
        lam: ridge strength λ > 0.
        alpha: RuLSIF mixing α in [0, 1); 0 gives uLSIF.
    """
    h_mat = (1.0 - alpha) * (phi_s.T @ phi_s) / len(phi_s)
    if alpha > 0.0:
        h_mat = h_mat + alpha * (phi_t.T @ phi_t) / len(phi_t)
    h_vec = phi_t.mean(axis=0)
    theta = np.linalg.solve(h_mat + lam * np.eye(h_mat.shape[0]), h_vec)
    return np.maximum(theta, 0.0)


def _lsif_cv_scores(
    phi_s: np.ndarray,
    phi_t: np.ndarray,
    fold_s: np.ndarray,
    fold_t: np.ndarray,
    n_folds: int,
    alpha: float,
    lambdas: Sequence[float],
) -> np.ndarray:
    """Held-out loss ``J`` for each λ, averaged over folds (one eigendecomposition per fold).

    Fold statistics are kept as small ``b × b`` Gram matrices, so every (fold, λ) costs
    ``O(b³)`` and never touches the ``n`` rows again.
    """
    b = phi_s.shape[1]
    gs = np.zeros((n_folds, b, b))
    gt = np.zeros((n_folds, b, b))
    ht = np.zeros((n_folds, b))
    ns = np.zeros(n_folds)
    nt = np.zeros(n_folds)
    for k in range(n_folds):
        ps, pt = phi_s[fold_s == k], phi_t[fold_t == k]
        gs[k], gt[k], ht[k] = ps.T @ ps, pt.T @ pt, pt.sum(axis=0)
        ns[k], nt[k] = len(ps), len(pt)
    gs_all, gt_all, ht_all = gs.sum(axis=0), gt.sum(axis=0), ht.sum(axis=0)
    scores = np.zeros(len(lambdas))
    used = 0
    for k in range(n_folds):
        ns_tr, nt_tr = ns.sum() - ns[k], nt.sum() - nt[k]
        if ns[k] == 0 or nt[k] == 0 or ns_tr == 0 or nt_tr == 0:
            continue
        h_mat = (1.0 - alpha) * (gs_all - gs[k]) / ns_tr + alpha * (gt_all - gt[k]) / nt_tr
        h_vec = (ht_all - ht[k]) / nt_tr
        evals, evecs = np.linalg.eigh(h_mat)
        proj = evecs.T @ h_vec
        for i, lam in enumerate(lambdas):
            theta = np.maximum(evecs @ (proj / (evals + lam)), 0.0)
            j_loss = (
                alpha / 2.0 * (theta @ gt[k] @ theta) / nt[k]
                + (1.0 - alpha) / 2.0 * (theta @ gs[k] @ theta) / ns[k]
                - (ht[k] @ theta) / nt[k]
            )
            scores[i] += j_loss
        used += 1
    if used == 0:
        raise ValueError("cross-validation needs at least one row per side in each fold")
    return scores / used


def fit_lsif(
    z_source: np.ndarray,
    z_target: np.ndarray,
    centers: np.ndarray,
    *,
    alpha: float,
    sigmas: Sequence[float],
    lambdas: Sequence[float],
    n_folds: int,
) -> KernelFit:
    """Fit (R)uLSIF, choosing (σ, λ) on the grid by k-fold cross-validation of the loss ``J``.

    Args:
        z_source: source (denominator) rows, standardized, in random order.
        z_target: target (numerator) rows, standardized, in random order.
        centers: kernel centers (target rows).
        alpha: RuLSIF mixing α; 0 for uLSIF.
        sigmas: bandwidth grid.
        lambdas: ridge grid (each > 0).
        n_folds: number of folds (rows are assigned ``i mod n_folds``).
    """
    fold_s, fold_t = fold_ids(len(z_source), n_folds), fold_ids(len(z_target), n_folds)
    best: tuple[float, float, float] | None = None  # (score, sigma, lambda)
    for sigma in sigmas:
        phi_s = gaussian_kernel(z_source, centers, sigma)
        phi_t = gaussian_kernel(z_target, centers, sigma)
        scores = _lsif_cv_scores(phi_s, phi_t, fold_s, fold_t, n_folds, alpha, lambdas)
        i = int(np.argmin(scores))
        if best is None or scores[i] < best[0]:
            best = (float(scores[i]), float(sigma), float(lambdas[i]))
    assert best is not None  # the grids are non-empty
    score, sigma, lam = best
    theta = lsif_theta(gaussian_kernel(z_source, centers, sigma), gaussian_kernel(z_target, centers, sigma), lam, alpha)
    return KernelFit(sigma=sigma, lam=lam, theta=theta, cv_score=score, quality=-0.5 - score)


# --- KLIEP ---------------------------------------------------------------------------------


def kliep_theta(phi_t: np.ndarray, b: np.ndarray, *, max_iter: int = 1000, tol: float = 1e-6) -> np.ndarray:
    """KLIEP weights: maximise ``mean(log(Φ_t θ))`` s.t. ``b·θ = 1``, ``θ ≥ 0``, by EM.

    With ``β = θ ⊙ b`` the problem is the maximum-likelihood fit of mixture weights β (on the
    simplex) for fixed components ``Φ_t[:, l] / b_l``; the EM update
    ``β ← β ⊙ Aᵀ(1 / Aβ) / n`` increases the likelihood at every step and keeps β on the
    simplex. Centers with ``b_l = 0`` (no source mass near them) get ``θ_l = 0``.

    Args:
        phi_t: kernel design matrix of the target (numerator) rows.
        b: mean kernel vector of the source (denominator) rows, ``mean(Φ_s, axis=0)``.
        max_iter: iteration cap.
        tol: stop when the objective improves by less than ``tol · max(1, |objective|)``.
    """
    theta = np.zeros(len(b))
    keep = b > _TINY
    if not keep.any():
        return theta
    a = phi_t[:, keep] / b[keep]
    n, m = a.shape
    beta = np.full(m, 1.0 / m)
    r = a @ beta
    obj = float(np.mean(np.log(np.maximum(r, _TINY))))
    for _ in range(max_iter):
        beta = beta * (a.T @ (1.0 / np.maximum(r, _TINY))) / n
        beta /= beta.sum()  # guards the simplex against rows floored at _TINY
        r = a @ beta
        new = float(np.mean(np.log(np.maximum(r, _TINY))))
        done = new - obj < tol * max(1.0, abs(obj))
        obj = new
        if done:
            break
    theta[keep] = beta / b[keep]
    return theta


def kliep_objective(theta: np.ndarray, phi_t: np.ndarray) -> float:
    """Mean target ``log r`` (``0`` for ``r ≡ 1``); zeros are floored at the smallest double."""
    return float(np.mean(np.log(np.maximum(phi_t @ theta, _TINY))))


def fit_kliep(
    z_source: np.ndarray,
    z_target: np.ndarray,
    centers: np.ndarray,
    *,
    sigmas: Sequence[float],
    n_folds: int,
    max_iter: int = 1000,
    tol: float = 1e-6,
) -> KernelFit:
    """Fit KLIEP, choosing σ by k-fold cross-validation of the held-out mean target ``log r``.

    In each fold θ is fitted on the training rows of both samples (the constraint uses the
    training source rows) and scored on the held-out target rows.
    """
    fold_s, fold_t = fold_ids(len(z_source), n_folds), fold_ids(len(z_target), n_folds)
    best: tuple[float, float] | None = None  # (score, sigma)
    for sigma in sigmas:
        phi_s = gaussian_kernel(z_source, centers, sigma)
        phi_t = gaussian_kernel(z_target, centers, sigma)
        fold_scores = []
        for k in range(n_folds):
            s_tr, t_tr, t_ho = fold_s != k, fold_t != k, fold_t == k
            if not s_tr.any() or not t_tr.any() or not t_ho.any():
                continue
            theta = kliep_theta(phi_t[t_tr], phi_s[s_tr].mean(axis=0), max_iter=max_iter, tol=tol)
            fold_scores.append(kliep_objective(theta, phi_t[t_ho]))
        if not fold_scores:
            raise ValueError("cross-validation needs at least one row per side in each fold")
        score = float(np.mean(fold_scores))
        if best is None or score > best[0]:
            best = (score, float(sigma))
    assert best is not None  # the grid is non-empty
    score, sigma = best
    phi_s = gaussian_kernel(z_source, centers, sigma)
    theta = kliep_theta(gaussian_kernel(z_target, centers, sigma), phi_s.mean(axis=0), max_iter=max_iter, tol=tol)
    return KernelFit(sigma=sigma, lam=None, theta=theta, cv_score=score, quality=score)
