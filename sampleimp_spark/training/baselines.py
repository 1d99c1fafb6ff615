"""Non-learned recommenders, evaluated exactly like the models.

* :func:`history_scores`: each user's own feature-window items, scored by time-decayed
  strength ``Σ strength(behavior) · 2^(-age/h)`` (age in days before ``t1``; ``h`` the
  half-life, chosen on validation; ``None`` = no decay).
* :func:`popularity_scores`: the items most users touched in the feature window, the same list
  for every user.
* :func:`category_popularity_scores`: the popular items of each category the user touched,
  scored by the user's share of events in the category times the item's popularity in it.

Each returns ``(user, item, score)`` candidate rows, at most ``n`` per user; cut them with
:func:`sampleimp_spark.evaluation.ranking.top_k`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from sampleimp_spark import schema as S
from sampleimp_spark.training.als import strength
from sampleimp_spark.weighting.time_decay import decay

_POP = "_pop"


def history_scores(
    events: DataFrame,
    users: DataFrame,
    *,
    t1: datetime,
    half_life_days: float | None,
    strengths: Mapping[str, float],
    n: int,
) -> DataFrame:
    """Each of ``users``' own feature-window items, scored by time-decayed strength (top ``n``).

    Args:
        events: feature-window events (``ts < t1``).
        users: one row per user to recommend for (``user_id``).
        t1: end of the feature window; ages are measured to it.
        half_life_days: half-life of the decay in days; ``None`` = plain sums.
        strengths: behavior -> strength of one event.
        n: candidates kept per user (ties broken later by :func:`top_k`).
    """
    scored = (
        events.join(users, S.USER_ID, "left_semi")
        .select(
            S.USER_ID,
            S.ITEM_ID,
            (strength(F.col(S.BEHAVIOR), strengths) * decay(S.TS, t1=t1, half_life_days=half_life_days)).alias("_s"),
            F.col(S.TS),
        )
        .groupBy(S.USER_ID, S.ITEM_ID)
        .agg(F.sum("_s").alias(S.SCORE), F.max(S.TS).alias("_last"))
        .where(F.col(S.SCORE) > 0)
    )
    # More recent last event first among equal scores.
    order = Window.partitionBy(S.USER_ID).orderBy(F.desc(S.SCORE), F.desc("_last"), S.ITEM_ID)
    return (
        scored.withColumn("_r", F.row_number().over(order))
        .where(F.col("_r") <= n)
        .select(S.USER_ID, S.ITEM_ID, S.SCORE)
    )


def popular_items(events: DataFrame, *, n: int, by: tuple[str, ...] = ()) -> DataFrame:
    """The ``n`` items with the most distinct users in ``events`` (per ``by`` group when given)."""
    counts = events.groupBy(*by, S.ITEM_ID).agg(F.countDistinct(S.USER_ID).cast("double").alias(_POP))
    if by:
        order = Window.partitionBy(*by).orderBy(F.desc(_POP), S.ITEM_ID)
        return counts.withColumn("_r", F.row_number().over(order)).where(F.col("_r") <= n).drop("_r")
    return counts.orderBy(F.desc(_POP), S.ITEM_ID).limit(n)


def popularity_scores(events: DataFrame, users: DataFrame, *, n: int) -> DataFrame:
    """The same ``n`` most popular feature-window items for every one of ``users``."""
    top = popular_items(events, n=n)
    return users.select(S.USER_ID).crossJoin(F.broadcast(top)).select(S.USER_ID, S.ITEM_ID, F.col(_POP).alias(S.SCORE))


def category_popularity_scores(events: DataFrame, users: DataFrame, *, n: int) -> DataFrame:
    """Popular items of the categories each user touched, scored ``share_u(c) · pop_c(i)``.

    ``share_u(c)`` is the user's share of feature-window events in category ``c``; ``pop_c(i)``
    the distinct users of item ``i`` in ``c``. Only the ``n`` most popular items of each category
    are candidates, so a user has at most ``n`` candidates per category.
    """
    mine = events.join(users, S.USER_ID, "left_semi")
    share = (
        mine.groupBy(S.USER_ID, S.CATEGORY_ID)
        .agg(F.count(F.lit(1)).alias("_n"))
        .withColumn("_share", F.col("_n") / F.sum("_n").over(Window.partitionBy(S.USER_ID)))
    )
    top = popular_items(events, n=n, by=(S.CATEGORY_ID,))
    scored = share.join(top, S.CATEGORY_ID).select(S.USER_ID, S.ITEM_ID, (F.col("_share") * F.col(_POP)).alias("_s"))
    best = scored.groupBy(S.USER_ID, S.ITEM_ID).agg(F.max("_s").alias(S.SCORE))
    order = Window.partitionBy(S.USER_ID).orderBy(F.desc(S.SCORE), S.ITEM_ID)
    return best.withColumn("_r", F.row_number().over(order)).where(F.col("_r") <= n).drop("_r")
