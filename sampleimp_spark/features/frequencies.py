"""Class frequencies per shard and overall: the input of class balancing (``silver.class_frequencies``).

:func:`class_frequencies` counts three kinds of classes per shard and overall (shard ``_all``):
``behavior`` (feature-window events per behavior), ``purchase`` (samples per ``label_purchase``)
and ``intent`` (samples per ``label_intent``). Every class is listed, with count 0 where it does not
occur, and shares sum to 1 within (shard, kind). The output is small: shards × classes rows.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from sampleimp_spark import schema as S

CLASSES: dict[str, tuple[str, ...]] = {
    "behavior": S.ALL_BEHAVIORS,
    "purchase": ("0", "1"),
    "intent": (S.INTENT_NONE, *S.BEHAVIORS),
}


#: An optional column of the ``events`` argument: how many events a row stands for.
EVENT_COUNT = "n_events"


def _counts(df: DataFrame, kind: str, class_col: str, count_col: str | None = None) -> DataFrame:
    n = F.sum(count_col) if count_col else F.count(F.lit(1))
    per_shard = df.groupBy(S.WINDOW_ID, S.SHARD, F.col(class_col).cast("string").alias(S.FREQ_CLASS)).agg(
        n.cast("long").alias(S.FREQ_COUNT)
    )
    overall = per_shard.groupBy(S.WINDOW_ID, S.FREQ_CLASS).agg(F.sum(S.FREQ_COUNT).alias(S.FREQ_COUNT))
    both = per_shard.unionByName(overall.withColumn(S.SHARD, F.lit(S.ALL_SHARDS)))
    return both.withColumn(S.FREQ_KIND, F.lit(kind))


def class_frequencies(samples: DataFrame, events: DataFrame, *, source: str) -> DataFrame:
    """The class-frequency table (schema ``S.CLASS_FREQUENCIES_SCHEMA``), per window.

    Args:
        samples: samples with ``window_id``, ``shard``, ``label_purchase`` and ``label_intent``.
        events: feature-window events with ``window_id``, ``shard`` (their item's shard) and
            ``behavior``, one row per event, or with a column ``n_events``: the number of events
            the row stands for (the features stage passes its samples' per-pair behavior counts).
        source: the events' source.
    """
    spark: SparkSession = samples.sparkSession
    counts = (
        _counts(events, "behavior", S.BEHAVIOR, EVENT_COUNT if EVENT_COUNT in events.columns else None)
        .unionByName(_counts(samples, "purchase", S.LABEL_PURCHASE))
        .unionByName(_counts(samples, "intent", S.LABEL_INTENT))
    )
    classes = spark.createDataFrame(
        [(kind, c) for kind, values in CLASSES.items() for c in values], f"{S.FREQ_KIND} string, {S.FREQ_CLASS} string"
    )
    shards = samples.select(S.WINDOW_ID, S.SHARD).distinct()
    shards = shards.unionByName(shards.select(S.WINDOW_ID).distinct().withColumn(S.SHARD, F.lit(S.ALL_SHARDS)))
    grid = shards.crossJoin(F.broadcast(classes))
    keys = [S.WINDOW_ID, S.SHARD, S.FREQ_KIND, S.FREQ_CLASS]
    full = grid.join(counts, keys, "left").fillna(0, [S.FREQ_COUNT])
    total = F.sum(S.FREQ_COUNT).over(Window.partitionBy(S.WINDOW_ID, S.SHARD, S.FREQ_KIND))
    share = F.coalesce(F.try_divide(F.col(S.FREQ_COUNT).cast("double"), total.cast("double")), F.lit(0.0))
    return full.select(
        S.WINDOW_ID,
        F.lit(source).alias(S.SOURCE),
        S.SHARD,
        S.FREQ_KIND,
        S.FREQ_CLASS,
        F.col(S.FREQ_COUNT).cast("long").alias(S.FREQ_COUNT),
        share.alias(S.FREQ_SHARE),
    )
