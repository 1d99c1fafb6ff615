"""Test oracles: plain numpy / Python mirrors of what the package computes in Spark."""

from __future__ import annotations

import math

import numpy as np
from pyspark.ml.evaluation import RankingEvaluator
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from sampleimp_spark import schema as S
from sampleimp_spark.evaluation.names import MAP_AT_K, NDCG_AT_K, PRECISION_AT_K, RECALL_AT_K
from sampleimp_spark.evaluation.ranking import _TOP, _ranked_lists
from sampleimp_spark.weighting import kernels
from sampleimp_spark.weighting.density_ratio import ShardFit, standardize


def score_shard(fit: ShardFit, x: np.ndarray, *, z_clip: float, max_ratio: float, alpha: float = 0.0) -> np.ndarray:
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
    r = np.maximum(kernels.kernel_ratio(z, np.asarray(fit.centers), fit.sigma, np.asarray(fit.alphas)), 0.0)
    if fit.method == "rulsif":  # the relative ratio r_α back to the ratio
        room = 1.0 - alpha * r
        with np.errstate(divide="ignore"):
            return np.where(
                room > 0, np.minimum((1.0 - alpha) * r / np.where(room > 0, room, 1.0), max_ratio), max_ratio
            )
    return np.minimum(r, max_ratio)


def _item_code(item: Column) -> Column:
    # 53 bits of a 64-bit hash: exact as a double; a collision needs ~1e8 distinct items.
    return F.shiftrightunsigned(F.xxhash64(item), 11).cast("double")


def spark_reference_ranking_metrics(
    recommendations: DataFrame,
    ground_truth: DataFrame,
    *,
    k: int,
    relevance_col: str | None = None,
    rank_col: str | None = S.RANK,
    score_col: str | None = None,
    tie_seed: int = 0,
    dedupe: bool = True,
    metrics: tuple[str, ...] | list[str] = (PRECISION_AT_K, RECALL_AT_K, NDCG_AT_K, MAP_AT_K),
    user_col: str = S.USER_ID,
    item_col: str = S.ITEM_ID,
) -> dict[str, float]:
    """The unweighted means of Spark's own ``RankingEvaluator``, as a cross-check.

    Builds Spark's input (one row per ground-truth user: the top-k item list and the relevant
    item set, item ids hashed to doubles because ``RankingEvaluator`` only takes
    ``array<double>``) and evaluates ``precisionAtK``, ``recallAtK``, ``ndcgAtK`` and
    ``meanAveragePrecisionAtK``. With ``dedupe=True`` the lists are those of :func:`top_k`, and
    the means equal :func:`ranking_metrics` with ``missing_recs="zero"``,
    ``no_relevant="zero"`` and binary relevance. Differences of Spark's evaluator:

    * it has no relevance input (``ml.evaluation.RankingEvaluator`` is binary; graded NDCG
      exists only in ``mllib``'s ``RankingMetrics``, whose IDCG takes the labels in the given
      order instead of sorting them by relevance);
    * a user without relevant items counts as 0 for every metric (our ``no_relevant="zero"``);
    * a repeated item in a prediction list is a hit each time (``dedupe=False`` shows it:
      recall, NDCG and MAP can then exceed 1);
    * it has no hit rate, coverage, weights or per-user values (needed for the bootstrap).

    ``recallAtK`` is hits / |relevant| and ``meanAveragePrecisionAtK`` divides by
    ``min(k, |relevant|)``, as here; ``precisionAtK`` divides by ``k`` even for shorter lists.
    """
    lists = _ranked_lists(
        recommendations,
        k=k,
        rank_col=rank_col,
        score_col=score_col,
        tie_seed=tie_seed,
        user_col=user_col,
        item_col=item_col,
        dedupe=dedupe,
    )
    pred = lists.select(user_col, F.transform(_TOP, lambda e: _item_code(e["item"])).alias("prediction"))
    rel = F.col(relevance_col).cast("double") if relevance_col is not None else F.lit(1.0)
    label = ground_truth.groupBy(user_col).agg(
        F.collect_set(F.when(rel > 0, _item_code(F.col(item_col)))).alias("label")
    )
    data = label.join(pred, user_col, "left").select(
        F.coalesce(F.col("prediction"), F.array().cast("array<double>")).alias("prediction"), "label"
    )
    names = {
        PRECISION_AT_K: "precisionAtK",
        RECALL_AT_K: "recallAtK",
        NDCG_AT_K: "ndcgAtK",
        MAP_AT_K: "meanAveragePrecisionAtK",
    }
    unknown = set(metrics) - names.keys()
    if unknown:
        raise ValueError(f"RankingEvaluator has no equivalent of {sorted(unknown)}")
    data = data.cache()
    try:
        return {
            m: RankingEvaluator(metricName=names[m], k=k).evaluate(data)  # type: ignore[arg-type]
            for m in metrics
        }
    finally:
        data.unpersist()
