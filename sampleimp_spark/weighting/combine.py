"""Combine the weight components, clip within each class, self-normalize per shard, and describe.

:func:`combine_weights` adds ``w_raw = w_class^a · (w_dr · w_shard)^b · w_ig^c · w_time^d ·
w_resample`` (a missing component counts as 1; ``w_resample`` always enters with exponent 1, as it
compensates sampling), ``w_clipped`` (above the ``clip_quantile`` of ``w_raw`` among the rows of the
same shard *and class*: a cap never crosses classes, so a rare class's weight is not cut to a common
class's level) and ``weight``: the clipped product divided by its shard mean, times ``w_shard^b``
(the density ratio's shard marginal, constant in a shard), so a shard's weights average
``w_shard^b``: 1 without the density ratio. :func:`weight_diagnostics` gives per shard the rows, effective sample size
``(Σw)² / Σw²`` and its ratio to rows, min / median / max weight and the fraction clipped.
Per-group statistics come from small aggregates joined back; no window function moves a whole
shard into one task. Details: ``docs/weighting.md``.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from sampleimp_spark import schema as S


def combine_weights(
    samples: DataFrame,
    *,
    a: float = 1.0,
    b: float = 1.0,
    c: float = 1.0,
    d: float = 0.0,
    clip_quantile: float | None = 0.99,
    shard_col: str = S.SHARD,
    label_col: str = S.LABEL_PURCHASE,
    components: tuple[str, ...] = (S.W_CLASS, S.W_DR, S.W_IG, S.W_TIME, S.W_RESAMPLE, S.W_SHARD),
    weight_col: str = S.WEIGHT,
) -> DataFrame:
    """Add ``w_raw`` (the product), ``w_clipped`` (bool) and ``weight`` (clipped, mean
    ``w_shard^b`` per shard).

    Missing component columns count as 1 (so does a missing ``label_col``: one class). Every
    component must be finite and ≥ 0, ``w_shard`` constant in a shard. ``components`` names
    ``w_class, w_dr, w_ig, w_time, w_resample, w_shard`` in that order.
    """
    w_class, w_dr, w_ig, w_time, w_resample, w_shard = (
        F.col(c) if c in samples.columns else F.lit(1.0) for c in components
    )
    scale = F.pow(F.coalesce(w_shard.cast("double"), F.lit(1.0)), b)
    raw = F.pow(w_class, a) * F.pow(w_dr, b) * scale * F.pow(w_ig, c) * F.pow(w_time, d) * w_resample
    df = samples.withColumn(S.RAW_WEIGHT, raw.cast("double"))
    if clip_quantile is not None and clip_quantile < 1:
        groups = [shard_col, label_col] if label_col in samples.columns else [shard_col]
        caps = df.groupBy(*groups).agg(F.percentile_approx(S.RAW_WEIGHT, clip_quantile, 10_000).alias("_cap"))
        df = df.join(F.broadcast(caps), groups)
        df = (
            df.withColumn(S.CLIPPED, F.col(S.RAW_WEIGHT) > F.col("_cap"))
            .withColumn("_w", F.least(F.col(S.RAW_WEIGHT), F.col("_cap")))
            .drop("_cap")
        )
    else:
        df = df.withColumns({S.CLIPPED: F.lit(False), "_w": F.col(S.RAW_WEIGHT)})
    means = df.groupBy(shard_col).agg(F.avg("_w").alias("_mean"))
    # A shard whose weights are all 0 (e.g. every density ratio clipped at 0) falls back to 1.
    weight = F.when(F.col("_mean") > 0, F.col("_w") / F.col("_mean")).otherwise(F.lit(1.0)) * scale
    return df.join(F.broadcast(means), shard_col).withColumn(weight_col, weight).drop("_w", "_mean")


def weight_diagnostics(weighted: DataFrame, *, shard_col: str = S.SHARD, weight_col: str = S.WEIGHT) -> DataFrame:
    """Per shard: rows, effective sample size ``(Σw)²/Σw²`` and its ratio to rows, min / median /
    max weight, and the fraction of rows clipped."""
    w = F.col(weight_col)
    agg = weighted.groupBy(shard_col).agg(
        F.count(F.lit(1)).alias("rows"),
        F.sum(w).alias("_sw"),
        F.sum(w * w).alias("_sw2"),
        F.min(w).alias("w_min"),
        F.percentile_approx(w, 0.5, 10_000).alias("w_median"),
        F.max(w).alias("w_max"),
        F.avg(F.col(S.CLIPPED).cast("double")).alias("clipped_fraction"),
    )
    ess = F.when(F.col("_sw2") > 0, F.col("_sw") * F.col("_sw") / F.col("_sw2")).otherwise(F.lit(0.0))
    return agg.select(
        shard_col,
        "rows",
        ess.alias("ess"),
        (ess / F.col("rows")).alias("ess_ratio"),
        "w_min",
        "w_median",
        "w_max",
        "clipped_fraction",
    )
