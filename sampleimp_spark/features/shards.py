"""Category shards: each category is its own shard unless it is small.

:func:`shard_map` maps every category of a window's samples to a shard: itself when it has at
least ``min_shard_rows`` samples, else the nearest ancestor in the source's taxonomy
(``category_path``) whose pooled small categories reach the minimum, else ``_other``. The map
(``category_id, shard, rule, samples, shard_samples``) is computed over the small per-category
table, one taxonomy level at a time, and is written as ``silver.shard_map``. Every category gets
exactly one shard. Rules and examples: ``docs/features.md``.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from sampleimp_spark import schema as S
from sampleimp_spark.frames import checkpoint, one_row, release

RULE_OWN = "own"
RULE_PARENT = "parent"
RULE_OTHER = "other"
POOL_PREFIX = "pool:"


def _common_prefix(a: Column, b: Column) -> Column:
    """Segment-wise longest common prefix of two arrays."""
    same = F.zip_with(a, b, lambda x, y: F.coalesce(x == y, F.lit(False)))
    first_diff = F.array_position(same, False)
    length = F.when(first_diff > 0, first_diff - 1).otherwise(F.least(F.size(a), F.size(b)))
    return F.slice(a, 1, length)


def category_table(samples: DataFrame) -> DataFrame:
    """``(window_id, category_id, samples, path)``: sample count and own taxonomy path (array) per
    window and category."""
    segments = F.split(F.col(S.CATEGORY_PATH), S.CATEGORY_PATH_SEP.strip().join(["\\s*", "\\s*"]))
    with_path = samples.select(
        S.WINDOW_ID, S.CATEGORY_ID, F.when(F.col(S.CATEGORY_PATH).isNotNull(), segments).alias("_seg")
    )
    agg = with_path.groupBy(S.WINDOW_ID, S.CATEGORY_ID).agg(
        F.count(F.lit(1)).alias("samples"), F.min("_seg").alias("_lo"), F.max("_seg").alias("_hi")
    )
    path = F.when(F.col("_lo").isNotNull(), _common_prefix(F.col("_lo"), F.col("_hi")))
    return agg.select(
        S.WINDOW_ID, S.CATEGORY_ID, "samples", F.coalesce(path, F.array().cast("array<string>")).alias("path")
    )


def shard_map(samples: DataFrame, *, min_shard_rows: int, max_depth: int = 8) -> DataFrame:
    """``(window_id, category_id, shard, rule, samples, shard_samples)`` for every category of every
    window of ``samples`` (each window is sharded on its own).

    Args:
        samples: rows with ``window_id``, ``category_id`` and ``category_path`` (nullable).
        min_shard_rows: categories with fewer samples are pooled.
        max_depth: deepest taxonomy level considered for pooling.

    Returns:
        A checkpoint (one row per window and category): :func:`~sampleimp_spark.frames.release`
        it when done.
    """
    w, cat = S.WINDOW_ID, S.CATEGORY_ID
    # The per-category table is small (one row per category); cutting its lineage keeps the
    # plans of the level-by-level loop below small.
    cats = checkpoint(category_table(samples))
    held = [cats]
    own = cats.where(F.col("samples") >= min_shard_rows).select(
        w, cat, F.col(cat).alias(S.SHARD), F.lit(RULE_OWN).alias(S.SHARD_RULE), "samples"
    )
    assigned = [own]
    small = cats.where(F.col("samples") < min_shard_rows)
    deepest = one_row(small.agg(F.max(F.size("path"))))[0] or 0
    # Walk up the taxonomy: at depth d, small categories whose path is deeper than d pool by
    # their d-segment prefix; a pool that reaches the minimum becomes a shard.
    for depth in range(min(deepest - 1, max_depth), 0, -1):
        candidates = small.where(F.size("path") > depth).withColumn("_key", F.slice("path", 1, depth))
        sizes = candidates.groupBy(w, "_key").agg(F.sum("samples").alias("_pool"))
        pooled = checkpoint(
            candidates.join(sizes.where(F.col("_pool") >= min_shard_rows), [w, "_key"], "left_semi").select(
                w,
                cat,
                F.concat(F.lit(POOL_PREFIX), F.array_join("_key", S.CATEGORY_PATH_SEP)).alias(S.SHARD),
                F.lit(RULE_PARENT).alias(S.SHARD_RULE),
                "samples",
            )
        )
        assigned.append(pooled)
        small = checkpoint(small.join(pooled.select(w, cat), [w, cat], "left_anti"))
        held += [pooled, small]
    assigned.append(
        small.select(w, cat, F.lit(S.OTHER_SHARD).alias(S.SHARD), F.lit(RULE_OTHER).alias(S.SHARD_RULE), "samples")
    )
    mapping = assigned[0]
    for part in assigned[1:]:
        mapping = mapping.unionByName(part)
    sizes = mapping.groupBy(w, S.SHARD).agg(F.sum("samples").alias("shard_samples"))
    mapping = checkpoint(
        mapping.join(sizes, [w, S.SHARD]).select(w, cat, S.SHARD, S.SHARD_RULE, "samples", "shard_samples")
    )
    release(*held)
    return mapping
