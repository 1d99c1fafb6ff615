"""Ranking metrics in Spark: each user's top-k list against the items of the label period.

:func:`per_user_ranking_metrics` gives one row per evaluated user with precision, recall,
NDCG, MAP and hit rate at ``k`` (graded or binary relevance; ``docs/evaluation.md`` gives the
conventions); :func:`top_k` cuts ranked candidates to k with reproducible tie-breaking;
:func:`catalog_coverage` is the share of the catalog in anyone's top k. Everything stays in
DataFrames: the caller averages the per-user values and bootstraps them
(:mod:`sampleimp_spark.evaluation.bootstrap`).
"""

from __future__ import annotations

from typing import Literal

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from sampleimp_spark import hashing
from sampleimp_spark import schema as S
from sampleimp_spark.evaluation.names import (
    HIT_RATE_AT_K,
    HITS,
    MAP_AT_K,
    N_RECOMMENDED,
    N_RELEVANT,
    NDCG_AT_K,
    PRECISION_AT_K,
    RECALL_AT_K,
)
from sampleimp_spark.schema import ITEM_ID, USER_ID, WEIGHT

Policy = Literal["zero", "exclude"]
Gain = Literal["exp2", "linear"]

RANK_TIE_SALT = "rank_ties"
_REL = "_rel"


def _check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")


def _check_policy(name: str, value: str) -> None:
    if value not in ("zero", "exclude"):
        raise ValueError(f"{name} must be 'zero' or 'exclude', got {value!r}")


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
        k), ``hits`` and the doubles of ``names.RANKING_METRICS``, never null.
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

    With ``weight`` the density-ratio weight of a user's samples (``w_dr · w_shard``), the mean
    over the user's samples estimates how over- or under-represented the user is relative to
    the target population.

    Returns:
        ``(user_col, weight_col)``, one row per user (weights are not re-normalised).
    """
    return samples.groupBy(user_col).agg(F.avg(F.col(weight_col).cast("double")).alias(weight_col))


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
