"""Ranking and classification metrics, unweighted and importance-weighted, with bootstrap CIs.

Everything is computed in Spark: per-user values stay in DataFrames, and only a handful of
aggregates (one row per metric family) come back to the driver, whatever the number of users.

Ranking (:func:`ranking_metrics`) — from recommendations ``(user, item, rank | score)`` and
ground truth ``(user, item[, relevance])``:

* ``precision_at_k`` = hits in the top ``k`` / ``k`` (also when fewer than ``k`` items were
  recommended: missing slots count as misses, as in Spark's ``RankingMetrics.precisionAt``).
* ``recall_at_k`` = hits in the top ``k`` / number of relevant items.
* ``ndcg_at_k`` = DCG@k / IDCG@k with discount ``1 / log2(position + 1)`` and gain
  ``2^rel - 1`` (``ndcg_gain="exp2"``, Järvelin & Kekäläinen, as Spark) or ``rel``
  (``"linear"``); binary relevance (1 for every ground-truth pair) makes both gains 1. IDCG is
  the DCG of the ideal list: the user's relevant items sorted by relevance, truncated at ``k``
  — so a user with fewer than ``k`` relevant items can still reach NDCG 1.
* ``map_at_k`` = Σ over hit positions i ≤ k of precision@i, divided by
  ``min(k, number of relevant items)`` (the common normalisation; Spark's
  ``meanAveragePrecisionAt(k)`` uses the same).
* ``hit_rate_at_k`` = 1 if at least one hit in the top ``k``, else 0.
* ``catalog_coverage_at_k`` = distinct items in anyone's top ``k`` / catalog size (not a
  per-user mean: reported unweighted and without a bootstrap interval).

An item is relevant when its relevance is > 0 (every ground-truth pair without a relevance
column). Duplicate recommendations of the same (user, item) keep the best rank; duplicate
ground-truth pairs keep the highest relevance. The evaluated users are the distinct users of
the ground truth; users with recommendations but no ground truth are ignored. Two edge cases
are explicit parameters:

* ``missing_recs`` — users in the ground truth without any recommendation: ``"zero"``
  (default: they count, with every metric 0) or ``"exclude"``.
* ``no_relevant`` — users whose ground truth has no relevant item (all relevance ≤ 0), for
  whom recall, NDCG and AP are 0/0: ``"exclude"`` (default: they carry no information) or
  ``"zero"`` (Spark's ``RankingEvaluator`` convention: counted with 0 for every metric).

Importance weighting (ranking): given a weight ``w_u ≥ 0`` per user, typically the user's mean
density-ratio weight ``w_u ≈ p_target(u) / p_eval(u)`` (:func:`user_mean_weights`), each
per-user metric ``m_u`` is averaged three ways over the ``n`` evaluated users:

* ``unweighted``: ``Σ m_u / n`` — the mean over the users as sampled;
* ``self_normalized`` (SNIPS): ``Σ w_u m_u / Σ w_u``;
* ``ips`` (unnormalised IPS): ``Σ w_u m_u / n``.

Both weighted estimators target ``E_{u ~ target}[m_u]``, the expected per-user metric under the
target user distribution. IPS is unbiased when ``w`` is the exact density ratio (then
``E_eval[w] = 1``) but depends on the weights' scale and has higher variance; SNIPS is
scale-invariant, stays within the range of the ``m_u``, and is consistent with an O(1/n) bias.
With weights normalised to mean 1 over the evaluated users the two coincide. A missing,
negative or non-finite weight for an evaluated user is an error, and so is an all-zero weight
vector (the weighted mean is undefined).

Classification (:func:`classification_metrics`) — from ``(label, probability[, weight])``:
ROC-AUC and PR-AUC through Spark's :class:`BinaryClassificationEvaluator` (``weightCol`` for the
weighted variant), log-loss, and precision / recall / F1 at a threshold. Weighted variants
replace counts by sums of row weights (a self-normalised estimate of the target-population
value). See :func:`classification_metrics` for the exact conventions.

Bootstrap: a Poisson bootstrap over users. Replicate ``b`` gives user ``u`` the multiplicity
``poisson1(seed, u, b)`` (a hash, so replicates do not depend on partitioning), every statistic
is recomputed with each unit's contribution multiplied by it, and the interval is the
``[alpha/2, 1 - alpha/2]`` percentile interval of the ``B`` replicate values (Spark's exact
``percentile``, linear interpolation). The same multiplicities are used for every metric and
estimator, and for every model evaluated with the same seed, so comparisons are paired.
Replicates where a statistic is undefined (no resampled user, zero total weight, a single
class) are left out of its interval.

Results come back as :class:`MetricValue` records (rows of ``gold.metrics``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pyspark.ml.evaluation import BinaryClassificationEvaluator, RankingEvaluator
from pyspark.ml.functions import vector_to_array
from pyspark.ml.linalg import VectorUDT
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from sampleimp_spark import hashing
from sampleimp_spark import schema as S
from sampleimp_spark.frames import checkpoint, release
from sampleimp_spark.schema import ITEM_ID, LABEL_PURCHASE, USER_ID, WEIGHT

# --- metric names --------------------------------------------------------------------------
PRECISION_AT_K = "precision_at_k"
RECALL_AT_K = "recall_at_k"
NDCG_AT_K = "ndcg_at_k"
MAP_AT_K = "map_at_k"
HIT_RATE_AT_K = "hit_rate_at_k"
CATALOG_COVERAGE_AT_K = "catalog_coverage_at_k"
RANKING_METRICS: tuple[str, ...] = (PRECISION_AT_K, RECALL_AT_K, NDCG_AT_K, MAP_AT_K, HIT_RATE_AT_K)

ROC_AUC = "roc_auc"
PR_AUC = "pr_auc"
LOG_LOSS = "log_loss"
PRECISION = "precision"
RECALL = "recall"
F1 = "f1"
CLASSIFICATION_METRICS: tuple[str, ...] = (ROC_AUC, PR_AUC, LOG_LOSS, PRECISION, RECALL, F1)

#: Per-user columns of :func:`per_user_ranking_metrics` besides the metrics.
N_RELEVANT = "n_relevant"
N_RECOMMENDED = "n_recommended"
HITS = "hits"

UNWEIGHTED = "unweighted"
SELF_NORMALIZED = "self_normalized"
IPS = "ips"
Estimator = Literal["unweighted", "self_normalized", "ips"]
Policy = Literal["zero", "exclude"]
Gain = Literal["exp2", "linear"]

#: Probabilities are clipped to ``[LOG_LOSS_EPS, 1 - LOG_LOSS_EPS]`` before the log-loss, so a
#: confident wrong prediction costs at most ``-ln(1e-15) ≈ 34.5`` instead of infinity
#: (scikit-learn's long-standing default).
LOG_LOSS_EPS = 1e-15

BOOTSTRAP_SALT = "user_bootstrap"
RANK_TIE_SALT = "rank_ties"

_REP = "_replicate"  # -1 = the full sample, 0..B-1 = bootstrap replicates
_MULT = "_multiplicity"
_W = "_w"
_REL = "_rel"
_EST = "_estimator"
_Y = "_y"
_P = "_p"
_UNIT = "_unit"
_POS = "_pos"  # a curve point's weight of positives
_NEG = "_neg"  # ... and of negatives
_KEY = "_curve_key"


@dataclass(frozen=True)
class MetricValue:
    """One metric value, ready to be written as a row of ``gold.metrics``.

    Attributes:
        metric: metric name (one of the ``*_AT_K`` or classification names of this module).
        estimator: ``unweighted``, ``self_normalized`` (weights, normalised by their sum) or
            ``ips`` (weights, divided by the number of users).
        value: the estimate on the full sample; ``None`` when undefined (e.g. no users,
            precision with no predicted positive, AUC with a single class).
        ci_low: lower end of the bootstrap percentile interval, ``None`` without bootstrap.
        ci_high: upper end of the bootstrap percentile interval, ``None`` without bootstrap.
        n_users: number of evaluated users (the bootstrap units); ``None`` when unknown.
        k: the cut-off of ranking metrics, ``None`` for classification.
        threshold: the decision threshold of precision / recall / F1, else ``None``.
        n_boot: number of bootstrap replicates (0 = none).
    """

    metric: str
    estimator: Estimator
    value: float | None
    ci_low: float | None = None
    ci_high: float | None = None
    n_users: int | None = None
    k: int | None = None
    threshold: float | None = None
    n_boot: int = 0

    @property
    def weighted(self) -> bool:
        """True for the importance-weighted estimators."""
        return self.estimator != UNWEIGHTED

    def as_record(self) -> dict[str, Any]:
        """The value as a dict of ``gold.metrics`` columns."""
        return {
            "metric": self.metric,
            "k": self.k,
            "threshold": self.threshold,
            "estimator": self.estimator,
            "weighted": self.weighted,
            "value": self.value,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "n_users": self.n_users,
            "n_boot": self.n_boot,
        }


# --- shared checks -------------------------------------------------------------------------


def _check_common(*, n_boot: int, alpha: float) -> None:
    if n_boot < 0:
        raise ValueError(f"n_boot must be >= 0, got {n_boot}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")


def _check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")


def _check_policy(name: str, value: str) -> None:
    if value not in ("zero", "exclude"):
        raise ValueError(f"{name} must be 'zero' or 'exclude', got {value!r}")


def _finite(c: Column) -> Column:
    return ~F.isnan(c) & (F.abs(c) != float("inf"))


def _replicates(n_boot: int) -> Column:
    """Replicate ids: -1 (the full sample) followed by 0 .. n_boot - 1."""
    return F.explode(F.sequence(F.lit(-1), F.lit(n_boot - 1)))


def _multiplicity(seed: int, unit: Column) -> Column:
    """1 for the full sample, a hash-based Poisson(1) draw per (replicate, unit) otherwise."""
    return F.when(F.col(_REP) < 0, F.lit(1)).otherwise(hashing.poisson1(seed, unit, F.col(_REP), salt=BOOTSTRAP_SALT))


def _point_and_interval(estimate: Column, alpha: float) -> tuple[Column, Column]:
    """Aggregates over the replicate rows: the full-sample value and the percentile interval."""
    point = F.max(F.when(F.col(_REP) < 0, estimate))
    interval = F.percentile(F.when(F.col(_REP) >= 0, estimate), [alpha / 2.0, 1.0 - alpha / 2.0])
    return point, interval


def _ci(interval: list[float] | None) -> tuple[float | None, float | None]:
    if not interval:
        return None, None
    return interval[0], interval[1]


# --- ranking -------------------------------------------------------------------------------

_TOP = "_top"  # a user's ranked list: array<struct<k: sort key, t: tie draw, item>>, best first
_TRUTH = "_truth"  # a user's ground truth: array<struct<rel, item>>, one entry per item


def _ranked_lists(
    recommendations: DataFrame,
    *,
    k: int,
    rank_col: str | None,
    score_col: str | None,
    tie_seed: int,
    user_col: str,
    item_col: str,
    dedupe: bool = True,
) -> DataFrame:
    """``(user_col, _TOP)``: each user's first ``k`` recommendations as a sorted array.

    One shuffle: rows are hash-partitioned by user once, and the per-(user, item) de-duplication
    and the per-user list both run on that partitioning. A user's candidates are held as one
    array before the cut at ``k``, so the input should have a bounded number of rows per user
    (as ``ALSModel.recommendForAllUsers`` output has).
    """
    _check_k(k)
    if (rank_col is None) == (score_col is None):
        raise ValueError("give exactly one of rank_col and score_col (set rank_col=None to rank by score)")
    by_rank = rank_col is not None
    key = F.col(rank_col if by_rank else score_col).cast("double")  # type: ignore[arg-type]
    rows = recommendations.where(key.isNotNull() & ~F.isnan(key)).select(user_col, item_col, key.alias("_key"))
    rows = rows.repartition(user_col)
    if dedupe:
        best = F.min("_key") if by_rank else F.max("_key")
        rows = rows.groupBy(user_col, item_col).agg(best.alias("_key"))
    # Sorting structs compares their fields in order: key, then the tie draw, then the item.
    sort_key = F.col("_key") if by_rank else -F.col("_key")
    tie = hashing.uniform(tie_seed, F.col(user_col), F.col(item_col), salt=RANK_TIE_SALT)
    entry = F.struct(sort_key.alias("k"), tie.alias("t"), F.col(item_col).alias("item"))
    return rows.groupBy(user_col).agg(F.slice(F.array_sort(F.collect_list(entry)), 1, k).alias(_TOP))


def top_k(
    recommendations: DataFrame,
    *,
    k: int,
    rank_col: str | None = S.RANK,
    score_col: str | None = None,
    tie_seed: int = 0,
    position_col: str = S.POSITION,
    user_col: str = USER_ID,
    item_col: str = ITEM_ID,
) -> DataFrame:
    """Each user's first ``k`` distinct recommended items with their 1-based position.

    Items are ordered by ``rank_col`` ascending or, when ``rank_col`` is None, by ``score_col``
    descending. A (user, item) recommended more than once keeps its best rank (score). Ties
    (equal ranks or scores) are broken by ``hashing.uniform(tie_seed, user, item)`` — arbitrary
    but reproducible and not correlated with item ids — so positions are always 1, 2, 3, ...
    without gaps. Rows with a null (or NaN) rank or score are ignored.

    Args:
        recommendations: one row per recommended (user, item).
        k: list length to keep; at least 1.
        rank_col: column with the rank (1 = best); set to None to order by ``score_col``.
        score_col: column with a score (larger = better), used when ``rank_col`` is None.
        tie_seed: seed of the tie-breaking hash.
        position_col: name of the position column added.
        user_col: user id column.
        item_col: item id column.

    Returns:
        ``(user_col, item_col, position_col)`` with ``position_col`` in ``1..k``.
    """
    lists = _ranked_lists(
        recommendations,
        k=k,
        rank_col=rank_col,
        score_col=score_col,
        tie_seed=tie_seed,
        user_col=user_col,
        item_col=item_col,
    )
    return lists.select(user_col, F.posexplode(_TOP).alias("_i", "_e")).select(
        user_col, F.col("_e.item").alias(item_col), (F.col("_i") + 1).alias(position_col)
    )


def _gain(rel: Column, ndcg_gain: Gain) -> Column:
    if ndcg_gain == "exp2":
        return F.pow(F.lit(2.0), rel) - F.lit(1.0)
    if ndcg_gain == "linear":
        return rel
    raise ValueError(f"ndcg_gain must be 'exp2' or 'linear', got {ndcg_gain!r}")


def _discount(index: Column) -> Column:
    """``1 / log2(position + 1)`` for a 0-based array index (position = index + 1)."""
    return F.lit(1.0) / F.log2(index.cast("double") + F.lit(2.0))


def _array_sum(values: Column) -> Column:
    return F.aggregate(values, F.lit(0.0), lambda acc, x: acc + x)


def per_user_ranking_metrics(
    recommendations: DataFrame,
    ground_truth: DataFrame,
    *,
    k: int,
    relevance_col: str | None = None,
    rank_col: str | None = S.RANK,
    score_col: str | None = None,
    tie_seed: int = 0,
    missing_recs: Policy = "zero",
    no_relevant: Policy = "exclude",
    ndcg_gain: Gain = "exp2",
    user_col: str = USER_ID,
    item_col: str = ITEM_ID,
) -> DataFrame:
    """Ranking metrics at ``k`` for each evaluated user (see the module docstring).

    Each side is shuffled once by user into one array per user (the top-k list, the ground
    truth); the two are joined on the user without a further shuffle and every metric is a
    higher-order-function expression over the two arrays.

    Args:
        recommendations: one row per recommended (user, item) with a rank or score.
        ground_truth: the evaluation interactions, one row per (user, item) (duplicates allowed).
        k: cut-off; at least 1.
        relevance_col: graded relevance in ``ground_truth``; None = binary (all pairs relevant).
        rank_col: rank column of ``recommendations`` (1 = best); None to use ``score_col``.
        score_col: score column of ``recommendations`` (larger = better).
        tie_seed: seed that breaks ties in rank or score (:func:`top_k`).
        missing_recs: ``"zero"`` or ``"exclude"`` for users without recommendations.
        no_relevant: ``"zero"`` or ``"exclude"`` for users without a relevant item.
        ndcg_gain: ``"exp2"`` (``2^rel - 1``) or ``"linear"`` (``rel``).
        user_col: user id column (both frames).
        item_col: item id column (both frames).

    Returns:
        One row per evaluated user: ``user_col``, ``n_relevant``, ``n_recommended`` (in the top
        k), ``hits`` and the doubles of :data:`RANKING_METRICS`, never null.
    """
    _check_k(k)
    _check_policy("missing_recs", missing_recs)
    _check_policy("no_relevant", no_relevant)
    _gain(F.lit(1.0), ndcg_gain)  # validate before any Spark work

    rel = F.col(relevance_col).cast("double") if relevance_col is not None else F.lit(1.0)
    truth = (
        ground_truth.select(user_col, item_col, rel.alias(_REL))
        .repartition(user_col)
        .groupBy(user_col, item_col)
        .agg(F.coalesce(F.max(_REL), F.lit(0.0)).alias(_REL))
        .groupBy(user_col)
        .agg(F.collect_list(F.struct(F.col(_REL).alias("rel"), F.col(item_col).alias("item"))).alias(_TRUTH))
    )
    lists = _ranked_lists(
        recommendations,
        k=k,
        rank_col=rank_col,
        score_col=score_col,
        tie_seed=tie_seed,
        user_col=user_col,
        item_col=item_col,
    )
    users = truth.join(lists, user_col, "left")
    if missing_recs == "exclude":
        users = users.where(F.col(_TOP).isNotNull())

    # Relevance of each recommended item, in list order (0 when not in the ground truth).
    rel_of = F.map_from_entries(F.transform(_TRUTH, lambda t: F.struct(t["item"], t["rel"])))
    rec_rels = F.transform(F.col(_TOP), lambda e: F.coalesce(F.try_element_at(rel_of, e["item"]), F.lit(0.0)))
    relevant = F.filter(F.transform(_TRUTH, lambda t: t["rel"]), lambda r: r > 0)
    ideal = F.slice(F.sort_array(relevant, asc=False), 1, k)

    def dcg(rels: Column) -> Column:
        return _array_sum(
            F.transform(rels, lambda r, i: F.when(r > 0, _gain(r, ndcg_gain) * _discount(i)).otherwise(0.0))
        )

    # Average precision: precision at each hit position i (hits among the first i + 1 / (i + 1)).
    precisions_at_hits = F.transform(
        "_rels",
        lambda r, i: F.when(r > 0, F.size(F.filter(F.slice("_rels", 1, i + 1), lambda z: z > 0)) / (i + 1)).otherwise(
            0.0
        ),
    )
    users = users.select(
        user_col,
        F.size(relevant).cast("long").alias(N_RELEVANT),
        F.coalesce(F.size(_TOP), F.lit(0)).cast("long").alias(N_RECOMMENDED),
        rec_rels.alias("_rels"),
        dcg(ideal).alias("_idcg"),
    ).select(
        "*",
        F.coalesce(F.size(F.filter("_rels", lambda r: r > 0)), F.lit(0)).cast("long").alias(HITS),
        F.coalesce(dcg(F.col("_rels")), F.lit(0.0)).alias("_dcg"),
        F.coalesce(_array_sum(precisions_at_hits), F.lit(0.0)).alias("_ap_sum"),
    )
    if no_relevant == "exclude":
        users = users.where(F.col(N_RELEVANT) > 0)
    hits = F.col(HITS)
    n_rel = F.col(N_RELEVANT)

    def per_relevant(num: Column, den: Column) -> Column:
        # 0/0 only for users without relevant items; they are excluded or count as 0.
        return F.coalesce(F.try_divide(num, den), F.lit(0.0))

    return users.select(
        user_col,
        N_RELEVANT,
        N_RECOMMENDED,
        HITS,
        (hits / F.lit(float(k))).alias(PRECISION_AT_K),
        per_relevant(hits.cast("double"), n_rel.cast("double")).alias(RECALL_AT_K),
        per_relevant(F.col("_dcg"), F.col("_idcg")).alias(NDCG_AT_K),
        per_relevant(F.col("_ap_sum"), F.least(F.lit(k), n_rel).cast("double")).alias(MAP_AT_K),
        F.when(hits > 0, 1.0).otherwise(0.0).alias(HIT_RATE_AT_K),
    )


def user_mean_weights(
    samples: DataFrame,
    *,
    weight_col: str = WEIGHT,
    user_col: str = USER_ID,
) -> DataFrame:
    """Each user's mean sample weight: the per-user importance weight of the ranking metrics.

    With ``weight`` the density-ratio weight of a user's samples (mean 1 per shard), the mean
    over the user's samples estimates how over- or under-represented the user is relative to
    the target population.

    Returns:
        ``(user_col, weight_col)``, one row per user (weights are not re-normalised).
    """
    return samples.groupBy(user_col).agg(F.avg(F.col(weight_col).cast("double")).alias(weight_col))


def summarize_user_metrics(
    per_user: DataFrame,
    *,
    metrics: Sequence[str],
    k: int | None = None,
    user_weights: DataFrame | None = None,
    n_boot: int = 0,
    seed: int = 0,
    alpha: float = 0.05,
    user_col: str = USER_ID,
    weight_col: str = WEIGHT,
) -> list[MetricValue]:
    """Average per-user metric columns over users, optionally weighted, with bootstrap CIs.

    One Spark job computes the full-sample means and every replicate's means (aggregated per
    replicate), and then the percentile interval per metric and estimator; one row of results
    comes back to the driver.

    Args:
        per_user: one row per user with a non-null double column per metric.
        metrics: names of the per-user metric columns to average.
        k: recorded in the results.
        user_weights: ``(user_col, weight_col)``, one row per user; adds the
            ``self_normalized`` and ``ips`` estimators. Every user of ``per_user`` needs exactly
            one finite weight ≥ 0; users of ``user_weights`` not in ``per_user`` are ignored.
        n_boot: number of Poisson bootstrap replicates (0 = no interval).
        seed: bootstrap seed.
        alpha: the interval covers ``1 - alpha``.
        user_col: user id column.
        weight_col: weight column of ``user_weights``.

    Returns:
        One :class:`MetricValue` per metric and estimator.

    Raises:
        ValueError: a user lacks a weight or has several, a weight is negative or not finite,
            or all weights are zero (the weighted means are undefined).
    """
    _check_common(n_boot=n_boot, alpha=alpha)
    if not metrics:
        raise ValueError("metrics must name at least one per-user column")
    weighted = user_weights is not None
    frame = per_user.select(user_col, *metrics)
    if user_weights is not None:
        # Aggregated per user so that a duplicated user cannot duplicate metric rows; the
        # duplicate is reported instead.
        w_df = user_weights.groupBy(user_col).agg(
            F.max(F.col(weight_col).cast("double")).alias(_W), F.count(F.lit(1)).alias("_w_rows")
        )
        frame = frame.join(w_df, user_col, "left")
    else:
        frame = frame.withColumn(_W, F.lit(1.0)).withColumn("_w_rows", F.lit(1))
    w = F.col(_W)
    boot = (
        frame.withColumn(_REP, _replicates(n_boot))
        .withColumn(_MULT, _multiplicity(seed, F.col(user_col)).cast("double"))
        .where(F.col(_MULT) > 0)
    )
    c = F.col(_MULT)
    usable_w = F.when(w.isNotNull() & _finite(w) & (w >= 0), w)
    sums = [F.sum(c).alias("_n"), F.sum(c * usable_w).alias("_sw")]
    sums += [
        F.count_if(w.isNull()).alias("_w_missing"),
        F.count_if(usable_w.isNull() & w.isNotNull()).alias("_w_bad"),
        F.count_if(F.col("_w_rows") > 1).alias("_w_dup"),
    ]
    for m in metrics:
        sums.append(F.sum(c * F.col(m)).alias(f"_s_{m}"))
        sums.append(F.sum(c * usable_w * F.col(m)).alias(f"_sw_{m}"))
    per_rep = boot.groupBy(_REP).agg(*sums)

    estimators: list[Estimator] = [UNWEIGHTED, SELF_NORMALIZED, IPS] if weighted else [UNWEIGHTED]
    outs = [
        F.max(F.when(F.col(_REP) < 0, F.col("_n"))).alias("n"),
        F.max(F.when(F.col(_REP) < 0, F.col("_sw"))).alias("sw"),
        F.max(F.when(F.col(_REP) < 0, F.col("_w_missing"))).alias("w_missing"),
        F.max(F.when(F.col(_REP) < 0, F.col("_w_bad"))).alias("w_bad"),
        F.max(F.when(F.col(_REP) < 0, F.col("_w_dup"))).alias("w_dup"),
    ]
    for m in metrics:
        for est in estimators:
            if est == UNWEIGHTED:
                e = F.try_divide(F.col(f"_s_{m}"), F.col("_n"))
            elif est == SELF_NORMALIZED:
                e = F.try_divide(F.col(f"_sw_{m}"), F.col("_sw"))
            else:
                e = F.try_divide(F.col(f"_sw_{m}"), F.col("_n"))
            point, interval = _point_and_interval(e, alpha)
            outs += [point.alias(f"{m}|{est}|v"), interval.alias(f"{m}|{est}|ci")]
    row = per_rep.agg(*outs).first()
    assert row is not None  # a global aggregate always returns one row

    n = int(row["n"] or 0)
    if weighted and n > 0:
        if row["w_missing"]:
            raise ValueError(f"{row['w_missing']} evaluated user(s) have no weight in user_weights")
        if row["w_dup"]:
            raise ValueError(f"{row['w_dup']} evaluated user(s) have more than one row in user_weights")
        if row["w_bad"]:
            raise ValueError(f"{row['w_bad']} user weight(s) are negative, NaN or infinite")
        if not row["sw"]:
            raise ValueError("all user weights are zero: the weighted means are undefined")
    results = []
    for m in metrics:
        for est in estimators:
            lo, hi = _ci(row[f"{m}|{est}|ci"]) if n_boot else (None, None)
            results.append(MetricValue(m, est, row[f"{m}|{est}|v"], lo, hi, n_users=n, k=k, n_boot=n_boot))
    return results


def catalog_coverage(
    recommendations: DataFrame,
    *,
    k: int,
    catalog: DataFrame | int,
    rank_col: str | None = S.RANK,
    score_col: str | None = None,
    tie_seed: int = 0,
    user_col: str = USER_ID,
    item_col: str = ITEM_ID,
) -> float:
    """Share of the catalog that appears in at least one user's top ``k``.

    All users of ``recommendations`` count (not only the evaluated ones): coverage describes
    the recommender's output, not the users.

    Args:
        recommendations: one row per recommended (user, item).
        k: cut-off; at least 1.
        catalog: the catalog as a DataFrame with ``item_col`` (recommended items outside it
            are not counted, so coverage ≤ 1), or its size.
        rank_col: rank column (1 = best); None to use ``score_col``.
        score_col: score column (larger = better).
        tie_seed: seed that breaks rank/score ties (:func:`top_k`).
        user_col: user id column.
        item_col: item id column.

    Raises:
        ValueError: the catalog is empty.
    """
    recs = top_k(
        recommendations,
        k=k,
        rank_col=rank_col,
        score_col=score_col,
        tie_seed=tie_seed,
        user_col=user_col,
        item_col=item_col,
    )
    rec_items = recs.select(item_col).distinct()
    if isinstance(catalog, int):
        if catalog < 1:
            raise ValueError(f"catalog size must be at least 1, got {catalog}")
        return rec_items.count() / catalog
    items = catalog.select(item_col).distinct()
    row = (
        items.join(rec_items.withColumn("_rec", F.lit(True)), item_col, "left")
        .agg(F.count(F.lit(1)).alias("size"), F.count("_rec").alias("covered"))
        .first()
    )
    assert row is not None
    if not row["size"]:
        raise ValueError("the catalog is empty")
    return row["covered"] / row["size"]


def ranking_metrics(
    recommendations: DataFrame,
    ground_truth: DataFrame,
    *,
    k: int,
    user_weights: DataFrame | None = None,
    catalog: DataFrame | int | None = None,
    n_boot: int = 0,
    seed: int = 0,
    alpha: float = 0.05,
    relevance_col: str | None = None,
    rank_col: str | None = S.RANK,
    score_col: str | None = None,
    tie_seed: int = 0,
    missing_recs: Policy = "zero",
    no_relevant: Policy = "exclude",
    ndcg_gain: Gain = "exp2",
    user_col: str = USER_ID,
    item_col: str = ITEM_ID,
    weight_col: str = WEIGHT,
) -> list[MetricValue]:
    """Precision, recall, NDCG, MAP and hit rate at ``k`` (and catalog coverage), with CIs.

    Conventions are in the module docstring. Without ``user_weights`` only the ``unweighted``
    estimator is reported; with them also ``self_normalized`` and ``ips``.

    Args:
        recommendations: one row per recommended (user, item) with a rank or a score.
        ground_truth: evaluation interactions ``(user, item[, relevance])``.
        k: cut-off; at least 1.
        user_weights: ``(user_col, weight_col)``, e.g. from :func:`user_mean_weights`.
        catalog: catalog DataFrame or size; adds ``catalog_coverage_at_k`` when given.
        n_boot: Poisson bootstrap replicates over users (0 = no interval).
        seed: bootstrap seed.
        alpha: intervals cover ``1 - alpha``.
        relevance_col: graded relevance column of ``ground_truth`` (None = binary).
        rank_col: rank column (1 = best); None to rank by ``score_col``.
        score_col: score column (larger = better).
        tie_seed: seed that breaks rank/score ties.
        missing_recs: ``"zero"`` or ``"exclude"`` for users without recommendations.
        no_relevant: ``"zero"`` or ``"exclude"`` for users without a relevant item.
        ndcg_gain: ``"exp2"`` or ``"linear"``.
        user_col: user id column of all frames.
        item_col: item id column of all frames.
        weight_col: weight column of ``user_weights``.

    Returns:
        :class:`MetricValue` records: each ranking metric per estimator, then coverage.
    """
    # With a catalog the lists are read twice (metrics, coverage): compute them once.
    recommendations = checkpoint(recommendations) if catalog is not None else recommendations
    per_user = per_user_ranking_metrics(
        recommendations,
        ground_truth,
        k=k,
        relevance_col=relevance_col,
        rank_col=rank_col,
        score_col=score_col,
        tie_seed=tie_seed,
        missing_recs=missing_recs,
        no_relevant=no_relevant,
        ndcg_gain=ndcg_gain,
        user_col=user_col,
        item_col=item_col,
    )
    results = summarize_user_metrics(
        per_user,
        metrics=RANKING_METRICS,
        k=k,
        user_weights=user_weights,
        n_boot=n_boot,
        seed=seed,
        alpha=alpha,
        user_col=user_col,
        weight_col=weight_col,
    )
    if catalog is not None:
        coverage = catalog_coverage(
            recommendations,
            k=k,
            catalog=catalog,
            rank_col=rank_col,
            score_col=score_col,
            tie_seed=tie_seed,
            user_col=user_col,
            item_col=item_col,
        )
        results.append(MetricValue(CATALOG_COVERAGE_AT_K, UNWEIGHTED, coverage, k=k))
        release(recommendations)
    return results


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
    metrics: Sequence[str] = (PRECISION_AT_K, RECALL_AT_K, NDCG_AT_K, MAP_AT_K),
    user_col: str = USER_ID,
    item_col: str = ITEM_ID,
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


# --- classification ------------------------------------------------------------------------


def curve_areas(
    scored: DataFrame,
    *,
    group_cols: Sequence[str] = (),
    score_col: str = S.PROBABILITY,
    label_col: str = LABEL_PURCHASE,
    weight_col: str | None = None,
) -> DataFrame:
    """ROC-AUC and PR-AUC per group, with the conventions of Spark's evaluator, in SQL.

    The curve has one point per distinct score (ties are one threshold), from the highest
    score down. ROC-AUC is the trapezoidal area under ``(FPR, TPR)`` from ``(0, 0)``; PR-AUC is
    the trapezoidal area under ``(recall, precision)`` with ``(0, precision of the first
    point)`` prepended — exactly what ``BinaryClassificationEvaluator(numBins=0)`` returns.
    Linear interpolation in PR space is optimistic compared with average precision (a step
    function, scikit-learn's ``average_precision_score``); values are not interchangeable.
    Rows of weight ≤ 0 or with a null score are ignored. Used for the bootstrap, where
    replicates are groups; without ``group_cols`` the curve is sorted in a single partition.

    Args:
        scored: rows with a score, a 0/1 label and optionally a weight.
        group_cols: the curves are computed per distinct value of these columns.
        score_col: score column (larger = more likely positive), a double.
        label_col: 0/1 label column.
        weight_col: row weight column; None = 1.

    Returns:
        ``(*group_cols, roc_auc, pr_auc)``; null where a group has a single class.
    """
    w = F.col(weight_col).cast("double") if weight_col is not None else F.lit(1.0)
    y = F.col(label_col).cast("double")
    points = (
        scored.where((w > 0) & F.col(score_col).isNotNull())
        .groupBy(*group_cols, score_col)
        .agg(F.sum(w * y).alias(_POS), F.sum(w * (F.lit(1.0) - y)).alias(_NEG))
    )
    return _areas(points, group_cols=group_cols, order=F.col(score_col).desc())


def _areas(points: DataFrame, *, group_cols: Sequence[str], order: Column) -> DataFrame:
    """ROC-AUC and PR-AUC per group from curve points ``(*group_cols, _pos, _neg)``.

    ``order`` sorts a group's points from the highest threshold down; see :func:`curve_areas`.
    """
    down = Window.partitionBy(*group_cols).orderBy(order)
    cumulative = down.rowsBetween(Window.unboundedPreceding, Window.currentRow)
    pos, neg = F.col(_POS), F.col(_NEG)
    points = (
        points.withColumn("_tp", F.sum(pos).over(cumulative))
        .withColumn("_fp", F.sum(neg).over(cumulative))
        .withColumn("_prec", F.try_divide(F.col("_tp"), F.col("_tp") + F.col("_fp")))
        .withColumn("_prev_prec", F.coalesce(F.lag("_prec").over(down), F.col("_prec")))
    )
    return points.groupBy(*group_cols).agg(
        F.try_divide(F.sum(neg * (F.col("_tp") - pos / 2.0)), F.sum(pos) * F.sum(neg)).alias(ROC_AUC),
        F.when(
            F.sum(neg) > 0,
            F.try_divide(F.sum(pos * (F.col("_prec") + F.col("_prev_prec")) / 2.0), F.sum(pos)),
        ).alias(PR_AUC),
    )


def _curve_keys(base: DataFrame) -> DataFrame:
    """``base`` with ``_KEY``: the point of every bootstrap curve a row belongs to, ascending = score descending.

    Both areas see the negatives only through how much negative weight lies above each
    positive's score and ties with it: ROC sums ``neg · (TP above − pos / 2)``, which is
    constant for the negatives between two consecutive positive scores, and PR's terms are
    zero at points without positives, whose only role is the precision of the next point —
    the cumulative counts, the same however the negatives before it are split. So the
    negatives strictly between two consecutive distinct scores held by a positive (of any
    weight, so in every replicate's curve a subset of these scores) form one point, and the
    areas are unchanged, exactly. A well-ranked model on rare positives has few such scores:
    each curve has at most ``2·(distinct positive scores) + 1`` points instead of one per
    distinct score.

    Key: ``2·g`` for a score a positive holds, ``2·g + 1`` otherwise, where ``g`` counts the
    distinct positive scores ≥ the row's. The count runs over the distinct scores in one
    partition (one sorted pass, against one per replicate and estimator for the curves).
    """
    scores = base.groupBy(_P).agg(F.max(F.col(_Y)).cast("long").alias("_has_pos"))
    above = Window.orderBy(F.col(_P).desc()).rowsBetween(Window.unboundedPreceding, Window.currentRow)
    keys = scores.select(_P, (2 * F.sum("_has_pos").over(above) + 1 - F.col("_has_pos")).alias(_KEY))
    return base.join(keys, _P)


def _row_terms(*, threshold: float, eps: float) -> dict[str, Column]:
    """Per-row terms whose weighted sums give every metric (a row's weight = ``_pos + _neg``)."""
    y, p = F.col(_Y), F.col(_P)
    clipped = F.least(F.greatest(p, F.lit(eps)), F.lit(1.0 - eps))
    loss = -(y * F.log(clipped) + (F.lit(1.0) - y) * F.log(F.lit(1.0) - clipped))
    predicted = (p > threshold).cast("double")  # Spark's rule: positive when P(1) > threshold
    return {
        _POS: y,
        _NEG: F.lit(1.0) - y,
        "_loss": loss,
        "_tp": y * predicted,
        "_fp": (F.lit(1.0) - y) * predicted,
        "_fn": y * (F.lit(1.0) - predicted),
    }


def _threshold_and_loss_sums(v: Column, *, threshold: float, eps: float) -> list[Column]:
    """Weighted sums behind log-loss and precision / recall / F1 (``v`` = row weight)."""
    terms = _row_terms(threshold=threshold, eps=eps)
    return [F.sum(v).alias("_sv"), *(F.sum(v * terms[t]).alias(t) for t in ("_loss", "_tp", "_fp", "_fn"))]


def _from_sums() -> dict[str, Column]:
    tp, fp, fn = F.col("_tp"), F.col("_fp"), F.col("_fn")
    return {
        LOG_LOSS: F.try_divide(F.col("_loss"), F.col("_sv")),
        PRECISION: F.try_divide(tp, tp + fp),
        RECALL: F.try_divide(tp, tp + fn),
        F1: F.try_divide(2.0 * tp, 2.0 * tp + fp + fn),
    }


def classification_metrics(
    predictions: DataFrame,
    *,
    threshold: float = 0.5,
    weight_col: str | None = None,
    label_col: str = LABEL_PURCHASE,
    probability_col: str = S.PROBABILITY,
    user_col: str | None = USER_ID,
    n_boot: int = 0,
    seed: int = 0,
    alpha: float = 0.05,
    eps: float = LOG_LOSS_EPS,
    num_bins: int = 0,
) -> list[MetricValue]:
    """ROC-AUC, PR-AUC, log-loss and precision / recall / F1 at a threshold, with CIs.

    Conventions:

    * ROC-AUC and PR-AUC come from Spark's ``BinaryClassificationEvaluator`` (``weightCol`` for
      the weighted variant: every count of the curves becomes a sum of weights; Spark rejects
      negative weights). Ties in probability form one threshold (ROC credits them 1/2).
      PR-AUC is Spark's trapezoidal area with ``(0, precision at the highest threshold)``
      prepended — not average precision (see :func:`curve_areas`). ``num_bins=0`` keeps every
      distinct score (exact); Spark's default 1000 down-samples large curves.
    * log-loss = ``Σ v·−(y ln p̃ + (1−y) ln(1−p̃)) / Σ v`` with ``p̃`` clipped to
      ``[eps, 1 − eps]`` (:data:`LOG_LOSS_EPS`) and ``v`` = 1 or the row weight.
    * a row is predicted positive when ``probability > threshold`` (strictly, as Spark's
      classifiers apply ``threshold``, so a model's ``prediction`` column agrees);
      precision = TP/(TP+FP), recall = TP/(TP+FN), F1 = 2TP/(2TP+FP+FN), with weighted counts
      in the weighted variant.
      Precision is ``None`` without predicted positives and recall without positives; F1 is
      ``None`` only when both are.
    * AUCs are ``None`` when the (weighted) data has a single class.
    * weighted values are ratios of weighted sums: self-normalised estimates of the metric on
      the target population the weights (e.g. density ratios) describe; the estimator is
      reported as ``self_normalized``.

    The bootstrap resamples users (all rows of a user share the multiplicity), so rows of one
    user are not treated as independent. In one Spark job, each user's rows are summed per
    point of the curves (:func:`_curve_keys`: the negatives between two consecutive positive
    scores share a point, which leaves both areas unchanged), these sums are replicated
    ``n_boot`` times, and the areas per replicate are computed as :func:`curve_areas` does, which
    matches the evaluator exactly (tested). The intervals equal those of the rows themselves
    replicated with their users' multiplicities (tested).

    Args:
        predictions: one row per scored sample.
        threshold: decision threshold of precision / recall / F1.
        weight_col: row weight column; None = unweighted only.
        label_col: 0/1 label column (numeric or boolean).
        probability_col: P(label = 1) as a double, or Spark ML's probability vector (its
            element 1 is used).
        user_col: user column, the bootstrap unit; None (only with ``n_boot=0``) to skip.
        n_boot: Poisson bootstrap replicates over users (0 = no interval).
        seed: bootstrap seed.
        alpha: intervals cover ``1 - alpha``.
        eps: log-loss clipping; in (0, 0.5).
        num_bins: ``numBins`` of ``BinaryClassificationEvaluator`` (0 = exact).

    Returns:
        One :class:`MetricValue` per metric (:data:`CLASSIFICATION_METRICS`) and estimator.

    Raises:
        ValueError: a label is not 0/1, a probability is outside [0, 1] or missing, a weight is
            negative, missing or not finite, or all weights are zero.
    """
    _check_common(n_boot=n_boot, alpha=alpha)
    if not 0.0 < eps < 0.5:
        raise ValueError(f"eps must be in (0, 0.5), got {eps}")
    if n_boot and user_col is None:
        raise ValueError("the bootstrap resamples users: give user_col")
    prob_type = predictions.schema[probability_col].dataType
    prob = F.col(probability_col)
    p = vector_to_array(prob)[1] if isinstance(prob_type, VectorUDT) else prob.cast("double")
    w = F.col(weight_col).cast("double") if weight_col is not None else F.lit(1.0)
    unit = F.col(user_col) if user_col is not None else F.lit(None).cast("string")
    base = predictions.select(unit.alias(_UNIT), F.col(label_col).cast("double").alias(_Y), p.alias(_P), w.alias(_W))
    estimators: list[tuple[Estimator, Column]] = [(UNWEIGHTED, F.lit(1.0))]
    if weight_col is not None:
        estimators.append((SELF_NORMALIZED, F.col(_W)))

    # Full-sample pass: validation, counts and the threshold / log-loss metrics.
    y, pc, wc = F.col(_Y), F.col(_P), F.col(_W)
    checks = [
        F.count(F.lit(1)).alias("rows"),
        F.count_distinct(_UNIT).alias("users"),
        F.count_if(y.isNull() | ~y.isin(0.0, 1.0)).alias("bad_label"),
        F.count_if(pc.isNull() | F.isnan(pc) | (pc < 0) | (pc > 1)).alias("bad_prob"),
        F.count_if(wc.isNull() | ~_finite(wc) | (wc < 0)).alias("bad_weight"),
    ]
    per_est = []
    for name, ew in estimators:
        per_est += [
            F.struct(*_threshold_and_loss_sums(ew, threshold=threshold, eps=eps)).alias(f"{name}|sums"),
            F.sum(ew * y).alias(f"{name}|pos"),
            F.sum(ew * (F.lit(1.0) - y)).alias(f"{name}|neg"),
        ]
    full = base.agg(*checks, *per_est).first()
    assert full is not None
    for key, what in (
        ("bad_label", "label(s) are not 0/1"),
        ("bad_prob", "probabilities are missing or outside [0, 1]"),
        ("bad_weight", "weight(s) are missing, negative or not finite"),
    ):
        if full[key]:
            raise ValueError(f"{full[key]} {what}")
    if weight_col is not None and full["rows"] and not full[f"{SELF_NORMALIZED}|sums"]["_sv"]:
        raise ValueError("all weights are zero: the weighted metrics are undefined")
    n_users = int(full["users"]) if user_col is not None else None

    values: dict[tuple[str, str], float | None] = {}
    for name, _ in estimators:
        sums = full[f"{name}|sums"].asDict()
        tp, fp, fn, sv = sums["_tp"] or 0.0, sums["_fp"] or 0.0, sums["_fn"] or 0.0, sums["_sv"] or 0.0
        values[(LOG_LOSS, name)] = sums["_loss"] / sv if sv else None
        values[(PRECISION, name)] = tp / (tp + fp) if tp + fp else None
        values[(RECALL, name)] = tp / (tp + fn) if tp + fn else None
        values[(F1, name)] = 2 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn else None
        both_classes = bool(full[f"{name}|pos"]) and bool(full[f"{name}|neg"])
        scored = base.select(_P, _Y, _W)
        evaluator = BinaryClassificationEvaluator(rawPredictionCol=_P, labelCol=_Y, numBins=num_bins)
        if name != UNWEIGHTED:
            scored = scored.where(F.col(_W) > 0)
            evaluator.setWeightCol(_W)
        for metric, spark_name in ((ROC_AUC, "areaUnderROC"), (PR_AUC, "areaUnderPR")):
            values[(metric, name)] = (
                evaluator.evaluate(scored, {evaluator.metricName: spark_name}) if both_classes else None
            )

    intervals: dict[tuple[str, str], tuple[float | None, float | None]] = {}
    if n_boot:
        intervals = _classification_intervals(
            base, estimators=estimators, n_boot=n_boot, seed=seed, alpha=alpha, threshold=threshold, eps=eps
        )
    return [
        MetricValue(
            metric,
            name,
            values[(metric, name)],
            *intervals.get((metric, name), (None, None)),
            n_users=n_users,
            threshold=threshold if metric in (PRECISION, RECALL, F1) else None,
            n_boot=n_boot,
        )
        for metric in CLASSIFICATION_METRICS
        for name, _ in estimators
    ]


def _classification_intervals(
    base: DataFrame,
    *,
    estimators: Sequence[tuple[Estimator, Column]],
    n_boot: int,
    seed: int,
    alpha: float,
    threshold: float,
    eps: float,
) -> dict[tuple[str, str], tuple[float | None, float | None]]:
    """Bootstrap percentile intervals of every classification metric, in one Spark job."""
    per_rep = _replicate_metrics(base, estimators=estimators, n_boot=n_boot, seed=seed, threshold=threshold, eps=eps)
    quantiles = [alpha / 2.0, 1.0 - alpha / 2.0]
    out = per_rep.groupBy(_EST).agg(*(F.percentile(m, quantiles).alias(m) for m in CLASSIFICATION_METRICS))
    result: dict[tuple[str, str], tuple[float | None, float | None]] = {}
    for row in out.collect():  # one row per estimator
        for m in CLASSIFICATION_METRICS:
            result[(m, row[_EST])] = _ci(row[m])
    return result


def _replicate_metrics(
    base: DataFrame,
    *,
    estimators: Sequence[tuple[Estimator, Column]],
    n_boot: int,
    seed: int,
    threshold: float,
    eps: float,
) -> DataFrame:
    """Every classification metric per bootstrap replicate and estimator: ``(_REP, _EST, *metrics)``.

    Every quantity is a sum of row terms times the row's multiplicity, and all rows of a unit
    share it, so the rows are summed per (unit, curve point) first (:func:`_curve_keys`) and
    only those sums are replicated ``n_boot`` times. The result is what the rows themselves,
    each weighted by its multiplicity, give (tested), with far fewer rows to replicate and
    curves of far fewer points to sort.
    """
    terms = _row_terms(threshold=threshold, eps=eps)
    cols = [f"{t}{i}" for i in range(len(estimators)) for t in terms]
    sums = (
        _curve_keys(base)
        .groupBy(_UNIT, _KEY)
        .agg(*(F.sum(ew * term).alias(f"{t}{i}") for i, (_, ew) in enumerate(estimators) for t, term in terms.items()))
    )
    replicated = (
        sums.withColumn(_REP, F.explode(F.sequence(F.lit(0), F.lit(n_boot - 1))))
        .withColumn(_MULT, _multiplicity(seed, F.col(_UNIT)).cast("double"))
        .where(F.col(_MULT) > 0)
        .groupBy(_REP, _KEY)
        .agg(*(F.sum(F.col(_MULT) * F.col(c)).alias(c) for c in cols))
    )
    per_est = replicated.select(
        _REP,
        _KEY,
        F.explode(
            F.array(
                *(
                    F.struct(F.lit(name).alias(_EST), *(F.col(f"{t}{i}").alias(t) for t in terms))
                    for i, (name, _) in enumerate(estimators)
                )
            )
        ).alias("_e"),
    ).select(_REP, _KEY, "_e.*")
    keys = [_REP, _EST]
    stats = (
        per_est.groupBy(*keys)
        .agg(
            F.sum(F.col(_POS) + F.col(_NEG)).alias("_sv"),
            *(F.sum(t).alias(t) for t in ("_loss", "_tp", "_fp", "_fn")),
        )
        .select(*keys, *(e.alias(m) for m, e in _from_sums().items()))
    )
    # Points of zero weight (all their rows weigh 0 for this estimator) are not on the curve.
    points = per_est.where(F.col(_POS) + F.col(_NEG) > 0)
    areas = _areas(points, group_cols=keys, order=F.col(_KEY).asc())
    return stats.join(areas, keys, "full")


__all__ = [
    "BOOTSTRAP_SALT",
    "CATALOG_COVERAGE_AT_K",
    "CLASSIFICATION_METRICS",
    "F1",
    "HITS",
    "HIT_RATE_AT_K",
    "IPS",
    "LOG_LOSS",
    "MAP_AT_K",
    "NDCG_AT_K",
    "N_RECOMMENDED",
    "N_RELEVANT",
    "PRECISION",
    "PRECISION_AT_K",
    "PR_AUC",
    "RANKING_METRICS",
    "RANK_TIE_SALT",
    "RECALL",
    "RECALL_AT_K",
    "ROC_AUC",
    "SELF_NORMALIZED",
    "UNWEIGHTED",
    "Estimator",
    "MetricValue",
    "catalog_coverage",
    "classification_metrics",
    "curve_areas",
    "per_user_ranking_metrics",
    "ranking_metrics",
    "spark_reference_ranking_metrics",
    "summarize_user_metrics",
    "top_k",
    "user_mean_weights",
]
