"""Test oracles: plain numpy / Python mirrors of what the package computes in Spark."""

from __future__ import annotations

import math

import numpy as np

from sampleimp_spark.weighting import kernels
from sampleimp_spark.weighting.density_ratio import ShardFit, standardize


def score_shard(fit: ShardFit, x: np.ndarray, *, z_clip: float, max_ratio: float) -> np.ndarray:
    """``w_dr`` of rows ``x`` of one shard in numpy: the exact mirror of :func:`score_density_ratio`."""
    x = np.asarray(x, dtype=np.float64).reshape(-1, len(fit.features))
    if fit.fallback_reason is not None:
        return np.ones(len(x))
    assert fit.feature_means is not None and fit.feature_scales is not None
    z = standardize(x, np.asarray(fit.feature_means), np.asarray(fit.feature_scales), z_clip)
    if fit.method == "logistic":
        assert fit.coefficients is not None and fit.intercept is not None
        coefs = np.asarray(fit.coefficients)
        d = z.shape[1]
        eta = fit.intercept + z @ coefs[:d]
        if len(coefs) > d:
            eta = eta + (z * z) @ coefs[d:]
        return np.exp(np.minimum(eta, math.log(max_ratio)))
    assert fit.centers is not None and fit.sigma is not None and fit.alphas is not None
    r = kernels.kernel_ratio(z, np.asarray(fit.centers), fit.sigma, np.asarray(fit.alphas))
    return np.clip(r, 0.0, max_ratio)
