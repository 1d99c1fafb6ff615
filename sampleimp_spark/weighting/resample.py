"""Per (shard, class) resampling with inverse-rate weight compensation.

:func:`resample_rates` gives each (shard, class) a rate, the expected copies of a row: majority
classes are cut to at most ``majority_ratio`` times the shard's smallest class and, with
``oversample_minority``, smaller classes are replicated (at most ``max_oversample`` times).
:func:`resample` keeps each candidate copy by a hash of (seed, the row's keys, copy index) and adds
``w_resample = 1 / rate``, so the expected weighted count of every class equals its count. The draws
depend only on the seed and the keys, never on partitioning or order. Details: ``docs/weighting.md``.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from sampleimp_spark import hashing
from sampleimp_spark import schema as S

#: Columns of the rates table.
RATE = "rate"
_SALT = "resample"


def class_counts(samples: DataFrame, *, label_col: str = S.LABEL_PURCHASE, shard_col: str = S.SHARD) -> DataFrame:
    """Rows per (shard, class) of the samples: ``shard, class, count`` (native; small output).

    The same three columns are in ``silver.class_frequencies`` (filter it to one ``kind``, window and
    source), which can be passed to :func:`resample_rates` instead to save this pass.
    """
    return samples.groupBy(
        F.col(f"`{shard_col}`").alias(S.SHARD), F.col(f"`{label_col}`").cast("string").alias(S.FREQ_CLASS)
    ).agg(F.count(F.lit(1)).alias(S.FREQ_COUNT))


def resample_rates(
    counts: DataFrame, *, majority_ratio: float, oversample_minority: bool = False, max_oversample: float = 10.0
) -> DataFrame:
    """Expected copies per row for every (shard, class) with a non-zero count.

    Args:
        counts: ``shard, class, count`` (from :func:`class_counts` or class frequencies of one kind;
            rows of the ``_all`` shard and zero counts are ignored).
        majority_ratio: each class is cut to at most this many times the shard's smallest class.
        oversample_minority: also replicate the smaller classes.
        max_oversample: cap on a class's replication factor.

    Returns:
        ``shard, class, count, rate`` (``count`` long, ``rate`` double > 0; ``≤ 1`` unless
        ``oversample_minority``).
    """
    n_c = F.col(S.FREQ_COUNT).cast("double")
    c = counts.where((F.col(S.SHARD) != F.lit(S.ALL_SHARDS)) & (F.col(S.FREQ_COUNT) > 0)).select(
        S.SHARD, S.FREQ_CLASS, F.col(S.FREQ_COUNT).cast("long").alias(S.FREQ_COUNT)
    )
    shard = Window.partitionBy(S.SHARD)
    cap = F.lit(majority_ratio) * F.min(n_c).over(shard)
    if oversample_minority:
        target = F.max(F.least(n_c, cap)).over(shard)
        rate = F.least(target / n_c, F.lit(max_oversample))
    else:
        rate = F.least(F.lit(1.0), cap / n_c)
    return c.withColumn(RATE, rate)


def resample(
    samples: DataFrame,
    *,
    seed: int,
    majority_ratio: float = 10.0,
    oversample_minority: bool = False,
    max_oversample: float = 10.0,
    rates: DataFrame | None = None,
    label_col: str = S.LABEL_PURCHASE,
    shard_col: str = S.SHARD,
    key_cols: Sequence[str] = (S.USER_ID, S.ITEM_ID),
    weight_col: str = S.W_RESAMPLE,
    copy_col: str | None = None,
) -> DataFrame:
    """Down-sample majority classes (and optionally replicate minorities) per shard, reproducibly.

    Args:
        samples: one row per sample.
        seed: seed of the hash-based draws.
        majority_ratio, oversample_minority, max_oversample: see :func:`resample_rates`.
        rates: the output of :func:`resample_rates`; by default computed from ``samples`` with
            :func:`class_counts` (one extra small aggregation).
        label_col: the class column (compared as a string, as in the rates).
        shard_col: the shard column.
        key_cols: columns identifying a sample; with the copy index they key every draw.
        weight_col: output column ``1 / rate`` (double).
        copy_col: if given, keep the copy index (0 for the first copy) in this column, so that
            replicated rows can be told apart.

    Returns:
        The kept rows (a row replicated ``k`` times appears ``k`` times) with ``weight_col`` added.
    """
    if not key_cols:
        raise ValueError("resample needs at least one key column")
    if rates is None:
        rates = resample_rates(
            class_counts(samples, label_col=label_col, shard_col=shard_col),
            majority_ratio=majority_ratio,
            oversample_minority=oversample_minority,
            max_oversample=max_oversample,
        )
    expanded = expand_copies(samples, rates, label_col=label_col, shard_col=shard_col)
    keys = [F.col(f"`{k}`") for k in key_cols]
    u = hashing.uniform(seed, *keys, F.col("__rs_copy"), salt=_SALT)
    kept = expanded.where(u < F.col("__rs_p_keep"))
    out = kept.withColumn(weight_col, F.lit(1.0) / F.col("__rs_rate"))
    if copy_col:
        out = out.withColumn(copy_col, F.col("__rs_copy"))
    return out.drop("__rs_copy", "__rs_p_keep", "__rs_rate")


def expand_copies(samples: DataFrame, rates: DataFrame, *, label_col: str, shard_col: str) -> DataFrame:
    """Every candidate copy of every row before the draws, with its keep probability.

    Adds ``__rs_rate`` (the row's rate, 1 when it has none), ``__rs_copy`` (``0 .. ceil(rate)-1``) and
    ``__rs_p_keep = clip(rate - copy, 0, 1)``. ``Σ_copies p_keep = rate`` per row; exposed so tests
    can check that expectation exactly.
    """
    r = rates.select(
        F.col(S.SHARD).alias("__rs_shard"), F.col(S.FREQ_CLASS).alias("__rs_class"), F.col(RATE).alias("__rs_r")
    )
    cond = (F.col(f"`{shard_col}`") == F.col("__rs_shard")) & (
        F.col(f"`{label_col}`").cast("string") == F.col("__rs_class")
    )
    joined = samples.join(F.broadcast(r), cond, "left")
    rate = F.coalesce(F.col("__rs_r"), F.lit(1.0))
    n_copies = F.greatest(F.ceil(rate), F.lit(1)).cast("int")
    copy = F.explode(F.sequence(F.lit(0), n_copies - 1)).alias("__rs_copy")
    expanded = joined.select("*", rate.alias("__rs_rate"), copy).drop("__rs_shard", "__rs_class", "__rs_r")
    p_keep = F.least(F.lit(1.0), F.greatest(F.lit(0.0), F.col("__rs_rate") - F.col("__rs_copy")))
    return expanded.withColumn("__rs_p_keep", p_keep)
