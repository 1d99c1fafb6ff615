"""Class-balance weights ``w_class`` from class frequencies.

:func:`class_weights` turns ``silver.class_frequencies`` rows into one weight per (shard, class)
with a non-zero count: ``balanced`` (``n / (C · n_c)``), ``sqrt``, ``effective_number``
(``(1 - β) / (1 - β^n_c)``, Cui et al. 2019) or ``none``, normalized so that the sample-weighted mean
weight is 1 within the scope (``shard``, or ``global`` from the ``_all`` rows).
:func:`with_class_weight` adds it to every sample by a broadcast join; a sample whose class has no
weight row gets 1. Small tables, native Spark. Formulas: ``docs/weighting.md``.
"""

from __future__ import annotations

import math

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from sampleimp_spark import schema as S


def _raw_weight(method: str, *, n: Column, n_classes: Column, n_c: Column, beta: float) -> Column:
    if method == "balanced":
        return n / (n_classes * n_c)
    if method == "sqrt":
        return F.sqrt(n / (n_classes * n_c))
    if method == "effective_number":
        return F.lit(1.0 - beta) / -F.expm1(n_c * F.lit(math.log(beta)))
    if method == "none":
        return F.lit(1.0)
    raise ValueError(f"unknown class-balance method {method!r}")


def class_weights(
    class_frequencies: DataFrame,
    *,
    method: str = "balanced",
    beta: float = 0.999,
    scope: str = "shard",
    label: str = "purchase",
    window_id: str | None = None,
    source: str | None = None,
) -> DataFrame:
    """Per (shard, class) weights from a class-frequency table (small; native Spark).

    Args:
        class_frequencies: rows of ``S.CLASS_FREQUENCIES_SCHEMA``.
        method: ``balanced``, ``sqrt``, ``effective_number`` or ``none``.
        beta: β of the effective number, ``0 < β < 1``.
        scope: ``shard`` or ``global``.
        label: which label kind's rows to balance (``purchase`` or ``intent``).
        window_id: keep only this window's rows; ``None`` keeps all. Counts of several windows or
            sources left in are *summed* per (shard, class).
        source: keep only this source's rows; ``None`` keeps all.

    Returns:
        ``shard, class, w_class`` (string, string, double), one row per class with a non-zero count
        in its scope. With ``scope="global"`` the rows have shard ``_all``.
    """
    freq = class_frequencies.where(F.col(S.FREQ_KIND) == F.lit(label))
    if window_id is not None:
        freq = freq.where(F.col(S.WINDOW_ID) == F.lit(window_id))
    if source is not None:
        freq = freq.where(F.col(S.SOURCE) == F.lit(source))
    in_scope = F.col(S.SHARD) == F.lit(S.ALL_SHARDS)
    freq = freq.where(in_scope if scope == "global" else ~in_scope)
    counts = (
        freq.groupBy(S.SHARD, S.FREQ_CLASS).agg(F.sum(S.FREQ_COUNT).cast("double").alias("n_c")).where(F.col("n_c") > 0)
    )
    per_shard = Window.partitionBy(S.SHARD)
    n = F.sum("n_c").over(per_shard)
    n_classes = F.count(F.lit(1)).over(per_shard).cast("double")
    raw = counts.withColumn("r_c", _raw_weight(method, n=n, n_classes=n_classes, n_c=F.col("n_c"), beta=beta))
    # Sample-weighted mean 1 in the scope: Σ n_c w_c = n. All n_c > 0 and r_c > 0, so z > 0.
    z = F.sum(F.col("n_c") * F.col("r_c")).over(per_shard)
    return raw.select(S.SHARD, S.FREQ_CLASS, (F.col("r_c") * n / z).alias(S.W_CLASS))


def with_class_weight(
    samples: DataFrame,
    weights: DataFrame,
    *,
    label_col: str,
    scope: str = "shard",
    shard_col: str = S.SHARD,
    weight_col: str = S.W_CLASS,
) -> DataFrame:
    """Add the class weight to every sample (a broadcast join of the small weight table).

    Args:
        samples: one row per sample.
        weights: the output of :func:`class_weights` for the same scope and label kind.
        label_col: the label column, compared as a string (``0``/``1`` for purchase), as in the
            class frequencies.
        scope: decides the join (``global``: by class only, from the ``_all`` rows; ``shard``: by
            shard and class).
        shard_col: the shard column.
        weight_col: output column (double, > 0); 1 where the sample's class has no weight row.

    Returns:
        ``samples`` with ``weight_col`` added (replaced if present).
    """
    cls = F.col(f"`{label_col}`").cast("string")
    w = weights.select(
        F.col(S.SHARD).alias("__cb_shard"), F.col(S.FREQ_CLASS).alias("__cb_class"), F.col(S.W_CLASS).alias("__cb_w")
    )
    if scope == "global":
        w = w.where(F.col("__cb_shard") == F.lit(S.ALL_SHARDS))
        cond = cls == F.col("__cb_class")
    else:
        cond = (F.col(f"`{shard_col}`") == F.col("__cb_shard")) & (cls == F.col("__cb_class"))
    joined = samples.join(F.broadcast(w), cond, "left")
    return joined.withColumn(weight_col, F.coalesce(F.col("__cb_w"), F.lit(1.0))).drop(
        "__cb_shard", "__cb_class", "__cb_w"
    )
