"""Density-ratio (covariate-shift) weights per shard: ``w_dr ≈ r(x) = p_target(x) / p_source(x)``.

:func:`fit_density_ratio` fits one small params row per shard (:func:`params_schema`) in a grouped
pandas UDF over a bounded, stratified sample drawn by a seeded hash (about ``max_fit_rows`` rows per
shard whatever its size; the fit uses at most that many): ``logistic`` (classification with a prior
correction), ``ulsif``, ``rulsif`` or ``kliep`` (:mod:`.kernels`). :func:`score_density_ratio` then
weights every row in native Spark from those params, clipped to ``[0, max_ratio]``. The target
population is the rows with ``is_target``; the source, by default, every row. Labels are never read.
Shards that cannot be fitted, or fit poorly, get ``w_dr = 1`` and a ``fallback_reason``.

Features are standardized per shard with the finite values of the fit sample: ``z = 0`` for null,
NaN or a constant feature, ``±z_clip`` for ``±inf``, else ``clamp((x - mean) · scale, ±z_clip)``.
Same seed and settings, same weights, however the input is partitioned. Details: ``docs/weighting.md``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T
from scipy import special, stats

from sampleimp_spark import hashing
from sampleimp_spark import schema as S
from sampleimp_spark.weighting import kernels

KERNEL_METHODS: tuple[str, ...] = ("ulsif", "rulsif", "kliep")

# --- fallback reasons ----------------------------------------------------------------------
EMPTY_TARGET = "empty_target"
EMPTY_SOURCE = "empty_source"
TARGET_EQUALS_SOURCE = "target_equals_source"
TOO_FEW_ROWS = "too_few_rows"
CONSTANT_FEATURES = "constant_features"
FIT_ERROR = "fit_error"
POOR_FIT = "poor_fit"
FALLBACK_REASONS: tuple[str, ...] = (
    EMPTY_TARGET,
    EMPTY_SOURCE,
    TARGET_EQUALS_SOURCE,
    TOO_FEW_ROWS,
    CONSTANT_FEATURES,
    FIT_ERROR,
    POOR_FIT,
)

# --- quality metrics -----------------------------------------------------------------------
HELDOUT_AUC = "heldout_auc"
HELDOUT_PE = "heldout_pe_divergence"
HELDOUT_KL = "heldout_kl_divergence"

# --- internal columns of the UDF input -----------------------------------------------------
SIDE = "_dr_side"  # -1 marker (counts only), 0 source, 1 target
HASH = "_dr_u"  # the row's uniform draw on its side; the UDF sorts by it
N_SOURCE_COL = "_dr_n_source"
N_TARGET_COL = "_dr_n_target"
_MARKER, _SOURCE, _TARGET = -1, 0, 1
_P = "_dr_p_"  # prefix of params columns while scoring
_Z = "_dr_z"


@dataclass(frozen=True)
class DensityRatioSettings:
    """How the per-shard density ratio is fitted and applied (``weights.density_ratio`` of the
    job config documents each field)."""

    method: str
    alpha: float
    max_fit_rows: int
    target_share: float
    source_includes_target: bool
    n_centers: int
    sigma_grid: Sequence[float] | None
    lambda_grid: Sequence[float] | None
    cv_folds: int
    min_rows: int
    min_auc: float
    max_p: float
    min_cv_gain: float
    logistic_c: float
    logistic_squares: bool
    kliep_max_iter: int
    kliep_tol: float
    z_clip: float
    max_ratio: float
    seed: int
    shard_smoothing: float | None = None


# --- sizes ---------------------------------------------------------------------------------


def fit_caps(n_source: int, n_target: int, settings: DensityRatioSettings) -> tuple[int, int]:
    """Fit-sample caps ``(cap_s, cap_t)`` of a shard; mirrors the Spark expression of :func:`fit_input`."""
    cap_t = min(n_target, math.floor(settings.max_fit_rows * settings.target_share))
    return settings.max_fit_rows - cap_t, cap_t


def _fittable(n_source: int, n_target: int, settings: DensityRatioSettings) -> str | None:
    """The fallback reason a shard's population counts alone imply, or None."""
    if n_target == 0:
        return EMPTY_TARGET
    if n_source == 0:
        return EMPTY_SOURCE
    if settings.source_includes_target and n_target >= n_source:
        return TARGET_EQUALS_SOURCE
    if min(n_source, n_target) < settings.min_rows:
        return TOO_FEW_ROWS
    return None


# --- the per-shard fit (pure numpy / pandas / scikit-learn) --------------------------------


@dataclass(frozen=True)
class ShardFit:
    """The fitted density ratio of one shard: the small params the UDF returns (one row).

    Fields mirror :func:`params_schema`; parameters are None on fallback shards whose fit did
    not run (a ``poor_fit`` shard keeps its fitted params, for inspection).
    """

    method: str
    n_source: int
    n_target: int
    n_input: int
    n_fit_source: int
    n_fit_target: int
    features: tuple[str, ...]
    fit_quality: float | None = None
    quality_metric: str | None = None
    fallback_reason: str | None = None
    fallback_detail: str | None = None
    feature_means: list[float] | None = None
    feature_scales: list[float] | None = None
    intercept: float | None = None
    coefficients: list[float] | None = None
    centers: list[list[float]] | None = None
    sigma: float | None = None
    reg_lambda: float | None = None
    alphas: list[float] | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> ShardFit:
        """Rebuild from a params row (e.g. ``params.collect()[i].asDict()``), to score in numpy."""
        kw: dict[str, Any] = {f: row[f] for f in cls.__dataclass_fields__ if f in row}
        kw["features"] = tuple(kw["features"])
        for name in ("feature_means", "feature_scales", "coefficients", "alphas"):
            if kw.get(name) is not None:
                kw[name] = [float(v) for v in kw[name]]
        if kw.get("centers") is not None:
            kw["centers"] = [[float(v) for v in c] for c in kw["centers"]]
        return cls(**kw)

    @property
    def n_fit(self) -> int:
        """Rows the fit used (source + target)."""
        return self.n_fit_source + self.n_fit_target

    def to_row(self) -> dict[str, object]:
        """The params row as plain Python values (the UDF's output)."""
        return {
            "method": self.method,
            "n_source": self.n_source,
            "n_target": self.n_target,
            "n_input": self.n_input,
            "n_fit": self.n_fit,
            "n_fit_source": self.n_fit_source,
            "n_fit_target": self.n_fit_target,
            "fit_quality": self.fit_quality,
            "quality_metric": self.quality_metric,
            "fallback_reason": self.fallback_reason,
            "fallback_detail": self.fallback_detail,
            "features": list(self.features),
            "feature_means": self.feature_means,
            "feature_scales": self.feature_scales,
            "intercept": self.intercept,
            "coefficients": self.coefficients,
            "centers": self.centers,
            "sigma": self.sigma,
            "reg_lambda": self.reg_lambda,
            "alphas": self.alphas,
        }


def standardization(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column ``(means, scales)`` from the finite values; ``scale = 1/std``, 0 for constant columns."""
    x = np.asarray(x, dtype=np.float64)
    finite = np.isfinite(x)
    count = finite.sum(axis=0)
    vals = np.where(finite, x, 0.0)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        means = np.where(count > 0, vals.sum(axis=0) / np.maximum(count, 1), 0.0)
        dev = np.where(finite, x - means, 0.0)
        std = np.sqrt((dev * dev).sum(axis=0) / np.maximum(count, 1))
    ok = (count > 0) & np.isfinite(std) & (std > 1e-12 * np.maximum(1.0, np.abs(means)))
    scales = np.where(ok, 1.0 / np.where(ok, std, 1.0), 0.0)
    return means, scales


def standardize(x: np.ndarray, means: np.ndarray, scales: np.ndarray, z_clip: float) -> np.ndarray:
    """Apply the module's standardization rule (see the module docstring); mirrors the Spark expression."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        z = np.clip((x - means) * scales, -z_clip, z_clip)
    z = np.where(np.isposinf(x), z_clip, z)
    z = np.where(np.isneginf(x), -z_clip, z)
    z = np.where(np.isnan(x), 0.0, z)
    return np.where(scales == 0.0, 0.0, z)


def logloss_gain_p(y: np.ndarray, score: np.ndarray, base: np.ndarray) -> float:
    """One-sided p-value that held-out log-loss with probabilities ``sigmoid(score)`` is lower than
    with the intercept-only probabilities ``base``: a z-test of the mean per-row difference."""
    eps = 1e-12
    p = np.clip(special.expit(score), eps, 1 - eps)
    b = np.clip(base, eps, 1 - eps)
    gain = (y * np.log(p / b)) + ((1 - y) * np.log((1 - p) / (1 - b)))  # loss(base) - loss(model)
    sd = float(gain.std(ddof=1)) if len(gain) > 1 else 0.0
    if sd == 0.0:
        return 0.0 if gain.mean() > 0 else 1.0
    return float(stats.norm.sf(gain.mean() / (sd / math.sqrt(len(gain)))))


def _fit_logistic(
    z_s: np.ndarray, z_t: np.ndarray, settings: DensityRatioSettings
) -> tuple[float, np.ndarray, float, float]:
    """Logistic target-vs-source fit: ``(intercept with prior correction, coefficients, out-of-fold
    AUC, p-value of its out-of-fold log-loss gain over the intercept-only model)``."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    x = np.vstack([z_s, z_t])
    if settings.logistic_squares:
        x = np.hstack([x, x * x])
    y = np.r_[np.zeros(len(z_s)), np.ones(len(z_t))]
    folds = np.r_[kernels.fold_ids(len(z_s), settings.cv_folds), kernels.fold_ids(len(z_t), settings.cv_folds)]

    def model() -> LogisticRegression:
        return LogisticRegression(C=settings.logistic_c, max_iter=1000)

    oof = np.empty(len(y))
    base = np.empty(len(y))  # the intercept-only model of each fold: its training rows' target share
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for k in range(settings.cv_folds):
            held = folds == k
            oof[held] = model().fit(x[~held], y[~held]).decision_function(x[held])
            base[held] = y[~held].mean()
        final = model().fit(x, y)
    auc = float(roc_auc_score(y, oof))
    intercept = float(final.intercept_[0]) + math.log(len(z_s) / len(z_t))
    return intercept, final.coef_[0].astype(np.float64), auc, logloss_gain_p(y, oof, base)


def fit_shard(
    x_source: np.ndarray,
    x_target: np.ndarray,
    *,
    settings: DensityRatioSettings,
    features: Sequence[str],
    n_source: int | None = None,
    n_target: int | None = None,
    n_input: int | None = None,
) -> ShardFit:
    """Fit one shard's density ratio from its (already sampled) source and target rows.

    Plain numpy / scikit-learn, testable without Spark. Rows must be in random order (the UDF
    sorts them by their hash): folds are ``i mod cv_folds`` and kernel centers are the first
    ``n_centers`` target rows.

    Args:
        x_source: source fit rows, shape ``(m_s, d)``; may hold NaN/inf.
        x_target: target fit rows, shape ``(m_t, d)``.
        settings: the density-ratio settings.
        features: the feature names (recorded in the params, checked when scoring).
        n_source: source population size of the shard. Without both counts, only the fit
            sample is checked (``too_few_rows``) and ``m_s`` / ``m_t`` are recorded.
        n_target: target population size of the shard.
        n_input: rows the UDF received (defaults to ``m_s + m_t``).

    Returns:
        The shard's params; on fallback, ``fallback_reason`` says why (weights will be 1).
    """
    d = len(features)
    x_source = np.asarray(x_source, dtype=np.float64).reshape(-1, d)
    x_target = np.asarray(x_target, dtype=np.float64).reshape(-1, d)
    m_s, m_t = len(x_source), len(x_target)
    base = ShardFit(
        method=settings.method,
        n_source=m_s if n_source is None else int(n_source),
        n_target=m_t if n_target is None else int(n_target),
        n_input=m_s + m_t if n_input is None else int(n_input),
        n_fit_source=m_s,
        n_fit_target=m_t,
        features=tuple(features),
    )

    def fallback(reason: str, detail: str, **kw: object) -> ShardFit:
        return ShardFit(**{**base.__dict__, "fallback_reason": reason, "fallback_detail": detail, **kw})

    # Population rules need the population counts; without them only the fit sample is judged.
    reason = None
    if n_source is not None and n_target is not None:
        reason = _fittable(int(n_source), int(n_target), settings)
    if reason is not None:
        detail = f"population: {base.n_source} source, {base.n_target} target rows (min_rows {settings.min_rows})"
        return fallback(reason, detail)
    if min(m_s, m_t) < settings.min_rows:
        return fallback(TOO_FEW_ROWS, f"fit sample: {m_s} source, {m_t} target rows (min_rows {settings.min_rows})")

    means, scales = standardization(np.vstack([x_source, x_target]))
    std_kw: dict[str, object] = {"feature_means": means.tolist(), "feature_scales": scales.tolist()}
    if not (scales > 0).any():
        return fallback(CONSTANT_FEATURES, "no feature varies (or has a finite value) in the fit sample", **std_kw)
    z_s = standardize(x_source, means, scales, settings.z_clip)
    z_t = standardize(x_target, means, scales, settings.z_clip)

    try:
        if settings.method == "logistic":
            intercept, coefs, auc, p_value = _fit_logistic(z_s, z_t, settings)
            fitted: dict[str, object] = {
                **std_kw,
                "intercept": intercept,
                "coefficients": coefs.tolist(),
                "fit_quality": auc,
                "quality_metric": HELDOUT_AUC,
            }
            poor = not (auc >= settings.min_auc and p_value <= settings.max_p)
            rule = (
                f"out-of-fold AUC {auc:.4f} (min_auc {settings.min_auc}); its log-loss gain over the "
                f"intercept-only model has p = {p_value:.3g} (max_p {settings.max_p})"
            )
        else:
            centers = z_t[: settings.n_centers]
            sigmas = settings.sigma_grid or kernels.default_sigma_grid(np.vstack([z_s, z_t]))
            if settings.method == "kliep":
                kfit = kernels.fit_kliep(
                    z_s,
                    z_t,
                    centers,
                    sigmas=sigmas,
                    n_folds=settings.cv_folds,
                    max_iter=settings.kliep_max_iter,
                    tol=settings.kliep_tol,
                )
                metric = HELDOUT_KL
            else:
                kfit = kernels.fit_lsif(
                    z_s,
                    z_t,
                    centers,
                    alpha=settings.alpha if settings.method == "rulsif" else 0.0,
                    sigmas=sigmas,
                    lambdas=settings.lambda_grid or kernels.DEFAULT_LAMBDA_GRID,
                    n_folds=settings.cv_folds,
                )
                metric = HELDOUT_PE
            fitted = {
                **std_kw,
                "centers": centers.tolist(),
                "sigma": kfit.sigma,
                "reg_lambda": kfit.lam,
                "alphas": kfit.theta.tolist(),
                "fit_quality": kfit.quality,
                "quality_metric": metric,
            }
            poor = not (kfit.quality > settings.min_cv_gain and np.any(kfit.theta > 0))
            rule = f"held-out {metric} {kfit.quality:.4g} <= min_cv_gain {settings.min_cv_gain} (or all weights 0)"
    except (np.linalg.LinAlgError, ValueError, FloatingPointError) as exc:
        return fallback(FIT_ERROR, f"{type(exc).__name__}: {exc}", **std_kw)
    if poor:
        return fallback(POOR_FIT, rule, **fitted)
    return ShardFit(**{**base.__dict__, **fitted})


# --- Spark: schema, fit input, UDF, fit, score ---------------------------------------------


def params_schema(shard_type: T.DataType | None = None, *, shard_col: str = S.SHARD) -> T.StructType:
    """Schema of the per-shard params returned by :func:`fit_density_ratio` (plain Spark types)."""
    dbl, lng, st = T.DoubleType(), T.LongType(), T.StringType()
    arr = T.ArrayType(dbl)
    return T.StructType(
        [
            T.StructField(shard_col, shard_type or st, True),
            T.StructField("method", st, False),
            T.StructField("n_source", lng, False),  # source population rows of the shard
            T.StructField("n_target", lng, False),  # target population rows of the shard
            T.StructField("n_input", lng, False),  # sampled rows the UDF received
            T.StructField("n_fit", lng, False),  # rows the fit used (≤ max_fit_rows)
            T.StructField("n_fit_source", lng, False),
            T.StructField("n_fit_target", lng, False),
            T.StructField("fit_quality", dbl, True),
            T.StructField("quality_metric", st, True),
            T.StructField("fallback_reason", st, True),
            T.StructField("fallback_detail", st, True),
            T.StructField("features", T.ArrayType(st), False),
            T.StructField("feature_means", arr, True),
            T.StructField("feature_scales", arr, True),
            T.StructField("intercept", dbl, True),  # logistic, prior correction included
            T.StructField("coefficients", arr, True),  # logistic: β (then γ of z² when squares)
            T.StructField("centers", T.ArrayType(arr), True),  # kernel: n_centers × d, standardized
            T.StructField("sigma", dbl, True),
            T.StructField("reg_lambda", dbl, True),
            T.StructField("alphas", arr, True),  # kernel weights θ ≥ 0
        ]
    )


def _check_features(features: Sequence[str]) -> tuple[str, ...]:
    feats = tuple(features)
    if not feats:
        raise ValueError("the density ratio needs at least one feature column")
    if len(set(feats)) != len(feats):
        raise ValueError(f"duplicate feature columns: {feats}")
    return feats


def fit_input(
    samples: DataFrame,
    features: Sequence[str],
    *,
    settings: DensityRatioSettings,
    shard_col: str = S.SHARD,
    target_col: str = S.IS_TARGET,
    key_cols: Sequence[str] = (S.USER_ID, S.ITEM_ID),
) -> DataFrame:
    """The bounded, stratified, seeded fit sample the UDF receives, plus one marker row per shard.

    Columns: ``shard_col``, :data:`SIDE` (0 source, 1 target, -1 marker), :data:`HASH`, the
    features (double), and on marker rows only :data:`N_SOURCE_COL` / :data:`N_TARGET_COL`
    (the shard's population counts). Shards whose counts already imply a fallback contribute
    only their marker.
    """
    feats = _check_features(features)
    is_t = F.coalesce(F.col(target_col).cast("boolean"), F.lit(False))
    # Rows without a shard are not fitted (they get w_dr = 1 when scored).
    base = samples.where(F.col(shard_col).isNotNull()).select(
        F.col(shard_col),
        is_t.alias("_dr_is_target"),
        *[F.col(k) for k in key_cols],
        *[F.col(f).cast("double").alias(f) for f in feats],
    )
    n_all = F.count(F.lit(1))
    n_t = F.sum(F.col("_dr_is_target").cast("long"))
    counts = base.groupBy(shard_col).agg(
        (n_all if settings.source_includes_target else n_all - n_t).alias(N_SOURCE_COL), n_t.alias(N_TARGET_COL)
    )
    ns, nt = F.col(N_SOURCE_COL), F.col(N_TARGET_COL)
    cap_t = F.least(nt, F.lit(math.floor(settings.max_fit_rows * settings.target_share)).cast("long"))
    cap_s = F.lit(settings.max_fit_rows).cast("long") - cap_t
    viable = (nt >= settings.min_rows) & (ns >= settings.min_rows)
    if settings.source_includes_target:
        viable = viable & (nt < ns)

    def keep_prob(cap: Column, n: Column) -> Column:
        return F.when(viable, F.least(F.lit(1.0), F.try_divide(cap.cast("double"), n.cast("double")))).otherwise(0.0)

    probs = counts.select(F.col(shard_col), keep_prob(cap_s, ns).alias("_dr_ps"), keep_prob(cap_t, nt).alias("_dr_pt"))
    keys = [F.col(k) for k in key_cols]
    u_s = hashing.uniform(settings.seed, *keys, salt="density_ratio/source")
    u_t = hashing.uniform(settings.seed, *keys, salt="density_ratio/target")
    in_source = F.lit(True) if settings.source_includes_target else ~F.col("_dr_is_target")
    take_s = in_source & (u_s < F.col("_dr_ps"))
    take_t = F.col("_dr_is_target") & (u_t < F.col("_dr_pt"))
    picks = F.filter(
        F.array(
            F.when(take_s, F.struct(F.lit(_SOURCE).alias("side"), u_s.alias("u"))),
            F.when(take_t, F.struct(F.lit(_TARGET).alias("side"), u_t.alias("u"))),
        ),
        lambda p: p.isNotNull(),
    )
    sampled = (
        base.join(F.broadcast(probs), on=shard_col)
        .where(take_s | take_t)
        .select(F.col(shard_col), F.explode(picks).alias("_dr_pick"), *feats)
        .select(
            F.col(shard_col),
            F.col("_dr_pick.side").alias(SIDE),
            F.col("_dr_pick.u").alias(HASH),
            *feats,
            F.lit(None).cast("long").alias(N_SOURCE_COL),
            F.lit(None).cast("long").alias(N_TARGET_COL),
        )
    )
    markers = counts.select(
        F.col(shard_col),
        F.lit(_MARKER).alias(SIDE),
        F.lit(None).cast("double").alias(HASH),
        *[F.lit(None).cast("double").alias(f) for f in feats],
        ns,
        nt,
    )
    return sampled.unionByName(markers)


def fit_shard_frame(
    pdf: pd.DataFrame, *, settings: DensityRatioSettings, features: Sequence[str], shard_col: str = S.SHARD
) -> pd.DataFrame:
    """The grouped-UDF body: one shard's :func:`fit_input` rows in, its one params row out.

    Sorts the rows by (side, hash, features) so the result does not depend on the order Spark
    delivers them in, truncates each side to its cap (the Bernoulli sample may overshoot), and
    calls :func:`fit_shard`.
    """
    feats = list(features)
    marker = pdf[pdf[SIDE] == _MARKER]
    n_source = int(marker[N_SOURCE_COL].iloc[0]) if len(marker) else 0
    n_target = int(marker[N_TARGET_COL].iloc[0]) if len(marker) else 0
    rows = pdf[pdf[SIDE] != _MARKER].sort_values([SIDE, HASH, *feats], kind="mergesort", na_position="last")
    cap_s, cap_t = fit_caps(n_source, n_target, settings)
    x_s = rows.loc[rows[SIDE] == _SOURCE, feats].to_numpy(dtype=np.float64)[:cap_s]
    x_t = rows.loc[rows[SIDE] == _TARGET, feats].to_numpy(dtype=np.float64)[:cap_t]
    fit = fit_shard(
        x_s, x_t, settings=settings, features=feats, n_source=n_source, n_target=n_target, n_input=len(rows)
    )
    return pd.DataFrame([{shard_col: pdf[shard_col].iloc[0], **fit.to_row()}])


def fit_density_ratio(
    samples: DataFrame,
    features: Sequence[str],
    *,
    settings: DensityRatioSettings,
    shard_col: str = S.SHARD,
    target_col: str = S.IS_TARGET,
    key_cols: Sequence[str] = (S.USER_ID, S.ITEM_ID),
) -> DataFrame:
    """Fit the density ratio per shard; one small params row per shard (see :func:`params_schema`).

    The fit runs in ``groupBy(shard).applyInPandas`` over :func:`fit_input`, so each group
    holds at most about ``max_fit_rows`` rows whatever the shard's size. The result is lazy:
    cache or write it when it is used twice (e.g. for scoring and for diagnostics), or the
    fit runs again (with the same result).

    Args:
        samples: one row per sample, with the shard, target flag, key and feature columns.
        features: numeric feature columns (cast to double; NaN/inf allowed).
        settings: the density-ratio settings.
        shard_col: the shard column.
        target_col: boolean, true for rows of the target population.
        key_cols: columns identifying a row, hashed with the seed for the sample.
    """
    feats = _check_features(features)
    shard_type = samples.schema[shard_col].dataType

    def fit_group(pdf: pd.DataFrame) -> pd.DataFrame:
        return fit_shard_frame(pdf, settings=settings, features=feats, shard_col=shard_col)

    inp = fit_input(samples, feats, settings=settings, shard_col=shard_col, target_col=target_col, key_cols=key_cols)
    return inp.groupBy(shard_col).applyInPandas(fit_group, schema=params_schema(shard_type, shard_col=shard_col))


def shard_marginal(
    params: DataFrame,
    *,
    smoothing: float,
    max_ratio: float,
    scope_col: str,
    shard_col: str = S.SHARD,
    out_col: str = S.W_SHARD,
) -> DataFrame:
    """The shard marginal of the ratio, ``p_target(s) / p_source(s)``, per (scope, shard) of
    :func:`fit_density_ratio`'s params (their ``n_source`` / ``n_target`` counts).

    The target share is smoothed toward the source share with ``smoothing`` pseudo-rows:
    ``((n_t(s) + m p_s(s)) / (N_t + m)) / p_s(s)``, ``p_s(s) = n_s(s) / N_s``, ``N_t`` counting
    only target rows of shards the source has. Over the source rows of a scope it averages exactly
    1 (before the ``max_ratio`` cap) and it is never 0; a scope without target rows gets 1. Shards
    without source rows get no row (nothing of theirs is weighted). Small: one row per shard.
    """
    if not smoothing > 0:
        raise ValueError(f"shard smoothing must be positive, got {smoothing}")
    src = params.where(F.col("n_source") > 0)
    totals = src.groupBy(scope_col).agg(
        F.sum("n_source").cast("double").alias("_n_s"), F.sum("n_target").cast("double").alias("_n_t")
    )
    p_s = F.col("n_source").cast("double") / F.col("_n_s")
    m = F.lit(float(smoothing))
    ratio = (F.col("n_target").cast("double") + m * p_s) / ((F.col("_n_t") + m) * p_s)
    return src.join(F.broadcast(totals), scope_col).select(
        scope_col, shard_col, F.least(ratio, F.lit(float(max_ratio))).alias(out_col)
    )


def _z_expr(x: Column, mean: Column, scale: Column, z_clip: float) -> Column:
    """The standardization rule of the module docstring, as a Spark expression."""
    return (
        F.when((scale == 0.0) | x.isNull() | F.isnan(x), F.lit(0.0))
        .when(x == F.lit(math.inf), F.lit(z_clip))
        .when(x == F.lit(-math.inf), F.lit(-z_clip))
        .otherwise(F.least(F.greatest((x - mean) * scale, F.lit(-z_clip)), F.lit(z_clip)))
    )


def _sum(values: Sequence[Column]) -> Column:
    out = values[0]
    for v in values[1:]:
        out = out + v
    return out


def score_density_ratio(
    samples: DataFrame,
    params: DataFrame,
    features: Sequence[str],
    *,
    settings: DensityRatioSettings,
    shard_col: str = S.SHARD,
    out_col: str = S.W_DR,
) -> DataFrame:
    """Add ``out_col`` (``w_dr``) to every sample from its shard's params, in native Spark.

    The params are broadcast-joined by shard; the logistic ratio is
    ``exp(min(intercept + Σ β_j z_j [+ Σ γ_j z_j²], log max_ratio))``, the kernel ratio is
    ``clip(Σ_l α_l exp(-||z - c_l||² / (2σ²)), 0, max_ratio)`` computed with ``zip_with`` and
    ``aggregate``; RuLSIF's relative ratio ``r_α`` is converted to the ratio,
    ``(1 - α) r_α / (1 - α r_α)`` (``max_ratio`` where ``α r_α ≥ 1``). Fallback shards and rows
    without params (e.g. a null shard) get 1. Fails (``raise_error``) when a shard's params were
    fitted on other features.

    Args:
        samples: the rows to weight (any columns; the features and ``shard_col`` needed).
        params: the output of :func:`fit_density_ratio`.
        features: the same feature columns, in the same order, as for the fit.
        settings: the density-ratio settings (``z_clip``, ``max_ratio`` and ``alpha`` are read).
        shard_col: the shard column.
        out_col: the weight column to add.
    """
    feats = _check_features(features)
    d = len(feats)
    names = ["method", "fallback_reason", "features", "feature_means", "feature_scales"]
    names += ["intercept", "coefficients", "centers", "sigma", "alphas"]
    p = params.select(F.col(shard_col), *[F.col(n).alias(_P + n) for n in names])
    joined = samples.join(F.broadcast(p), on=shard_col, how="left")

    def pc(name: str) -> Column:
        return F.col(_P + name)

    z = F.array(
        *[
            _z_expr(
                F.col(f).cast("double"), F.get(pc("feature_means"), j), F.get(pc("feature_scales"), j), settings.z_clip
            )
            for j, f in enumerate(feats)
        ]
    )
    joined = joined.withColumn(_Z, z)
    zj = [F.get(F.col(_Z), j) for j in range(d)]

    coefs = pc("coefficients")
    eta = pc("intercept") + _sum([F.get(coefs, j) * zj[j] for j in range(d)])
    eta = eta + _sum([F.coalesce(F.get(coefs, d + j), F.lit(0.0)) * zj[j] * zj[j] for j in range(d)])
    w_logistic = F.exp(F.least(eta, F.lit(math.log(settings.max_ratio))))

    def sq_dist(c: Column) -> Column:
        # Nested zip_with/aggregate, not indexing: about 2.5x faster in the interpreted lambda.
        diffs = F.zip_with(c, F.col(_Z), lambda cj, zj: (cj - zj) * (cj - zj))
        return F.aggregate(diffs, F.lit(0.0), lambda acc, v: acc + v)

    two_s2 = F.lit(2.0) * pc("sigma") * pc("sigma")
    ksum = F.aggregate(
        F.zip_with(pc("centers"), pc("alphas"), lambda c, a: a * F.exp(-F.try_divide(sq_dist(c), two_s2))),
        F.lit(0.0),
        lambda acc, v: acc + v,
    )
    w_kernel = F.least(F.greatest(ksum, F.lit(0.0)), F.lit(settings.max_ratio))
    # RuLSIF estimates the relative ratio r_α = r / (α r + 1 - α); back to the ratio:
    # r = (1 - α) r_α / (1 - α r_α), unbounded as α r_α reaches 1 (then max_ratio).
    alpha, relative = settings.alpha, F.greatest(ksum, F.lit(0.0))
    room = F.lit(1.0) - F.lit(alpha) * relative
    w_rulsif = F.when(room > 0, F.least(F.lit(1.0 - alpha) * relative / room, F.lit(settings.max_ratio))).otherwise(
        F.lit(settings.max_ratio)
    )

    mismatch = pc("method").isNotNull() & (pc("features") != F.array(*[F.lit(f) for f in feats]))
    w = (
        F.when(mismatch, F.raise_error(F.lit(f"density-ratio params were fitted on other features than {feats}")))
        .when(pc("method").isNull() | pc("fallback_reason").isNotNull(), F.lit(1.0))
        .when(pc("method") == "logistic", w_logistic)
        .when(pc("method") == "rulsif", w_rulsif)
        .when(pc("method").isin(*KERNEL_METHODS), w_kernel)
        .otherwise(F.lit(1.0))
    )
    keep = [c for c in samples.columns if c != out_col]
    return joined.select(*keep, F.coalesce(w.cast("double"), F.lit(1.0)).alias(out_col))
