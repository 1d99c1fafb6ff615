"""Resampling: hand-computed rates, reproducibility under repartitioning, and the inverse-rate
weights preserving each class's total (exactly in expectation, within a binomial bound per draw)."""

from __future__ import annotations

import math

import pytest
from chispa import assert_approx_df_equality, assert_df_equality
from pydantic import ValidationError
from pyspark.sql import functions as F

from sampleimp_spark import schema as S
from sampleimp_spark.config import ResampleConfig
from sampleimp_spark.weighting.resample import class_counts, expand_copies, resample, resample_rates

RATES_SCHEMA = "shard string, class string, count long, rate double"


@pytest.fixture(scope="module")
def counts(spark):
    rows = [
        ("A", "0", 1000),
        ("A", "1", 10),
        ("B", "0", 50),
        ("B", "1", 20),
        ("B", "2", 0),  # zero count: no rate row
        ("C", "0", 7),  # a shard with one class
        ("_all", "0", 1057),  # overall row: ignored
    ]
    return spark.createDataFrame(rows, "shard string, class string, count long")


def test_down_sampling_rates_by_hand(spark, counts):
    got = resample_rates(counts, majority_ratio=5.0)
    # A: cap 5·10 = 50 -> 50/1000; B: cap 100 is above both classes; C: one class -> 1.
    expected = [
        ("A", "0", 1000, 0.05),
        ("A", "1", 10, 1.0),
        ("B", "0", 50, 1.0),
        ("B", "1", 20, 1.0),
        ("C", "0", 7, 1.0),
    ]
    assert_approx_df_equality(
        got, spark.createDataFrame(expected, RATES_SCHEMA), 1e-12, ignore_row_order=True, ignore_nullable=True
    )
    # Never above 1 without over-sampling, whatever the ratio (below 1 even the minority is cut).
    small = resample_rates(counts, majority_ratio=0.5).collect()
    assert {(r.shard, r["class"]): r.rate for r in small} == pytest.approx(
        {("A", "0"): 0.005, ("A", "1"): 0.5, ("B", "0"): 0.2, ("B", "1"): 0.5, ("C", "0"): 0.5}, abs=1e-12
    )


def test_over_sampling_rates_by_hand(spark, counts):
    got = resample_rates(counts, majority_ratio=5.0, oversample_minority=True, max_oversample=3.0)
    # A: the majority is cut to 50, the minority moves toward 50 (5×) but is capped at 3×.
    # B: nothing above the cap; the minority moves toward the majority's 50 (2.5×). C: 1.
    expected = [
        ("A", "0", 1000, 0.05),
        ("A", "1", 10, 3.0),
        ("B", "0", 50, 1.0),
        ("B", "1", 20, 2.5),
        ("C", "0", 7, 1.0),
    ]
    assert_approx_df_equality(
        got, spark.createDataFrame(expected, RATES_SCHEMA), 1e-12, ignore_row_order=True, ignore_nullable=True
    )


def _population(spark, n_partitions: int):
    """4200 samples: shard A 2850 × 0 / 150 × 1, shard B 750 × 0 / 250 × 1, shard C 200 × 0 only."""
    ids = spark.range(4200)
    shard = F.when(F.col("id") < 3000, "A").when(F.col("id") < 4000, "B").otherwise("C")
    label = (
        F.when(F.col("id") < 3000, (F.col("id") % 20 == 0).cast("int"))
        .when(F.col("id") < 4000, (F.col("id") % 4 == 0).cast("int"))
        .otherwise(F.lit(0))
    )
    return ids.select(
        F.concat(F.lit("u"), F.col("id").cast("string")).alias(S.USER_ID),
        F.concat(F.lit("i"), (F.col("id") % 37).cast("string")).alias(S.ITEM_ID),
        shard.alias(S.SHARD),
        label.alias(S.LABEL_PURCHASE),
    ).repartition(n_partitions)


#: The rate settings of the population tests, and the seed of their draws.
RATES = {"majority_ratio": 5.0, "oversample_minority": True, "max_oversample": 3.5}
SEED = 7


def test_same_seed_same_rows_whatever_the_partitioning(spark):
    one = resample(_population(spark, 1), seed=SEED, **RATES, copy_col="copy")
    seven = resample(_population(spark, 7), seed=SEED, **RATES, copy_col="copy")
    assert_df_equality(one, seven, ignore_row_order=True)
    other_seed = resample(_population(spark, 1), seed=SEED + 1, **RATES, copy_col="copy")
    assert one.exceptAll(other_seed).count() > 0  # the seed matters


def test_weighted_class_totals_are_preserved(spark):
    samples = _population(spark, 3)
    rates = resample_rates(class_counts(samples), **RATES)
    rate = {(r.shard, r["class"]): (r["count"], r.rate) for r in rates.collect()}
    # A: cap 750 -> 0: 750/2850; 1: 5× capped at 3.5. B: 0 below the cap; 1: 750/250 = 3. C: 1.
    assert {k: v[1] for k, v in rate.items()} == pytest.approx(
        {("A", "0"): 750 / 2850, ("A", "1"): 3.5, ("B", "0"): 1.0, ("B", "1"): 3.0, ("C", "0"): 1.0}, abs=1e-12
    )
    # Exact expectation: Σ over candidate copies of P(keep) · 1/rate = n_c for every class.
    expanded = expand_copies(samples, rates, label_col=S.LABEL_PURCHASE, shard_col=S.SHARD)
    expected = expanded.groupBy(S.SHARD, F.col(S.LABEL_PURCHASE).cast("string").alias("class")).agg(
        F.sum(F.col("__rs_p_keep") / F.col("__rs_rate")).alias("total")
    )
    assert {(r.shard, r["class"]): r.total for r in expected.collect()} == pytest.approx(
        {k: float(v[0]) for k, v in rate.items()}, abs=1e-9
    )
    # One draw: Σ w = (1/rate) · (floor(rate) · n_c + Binomial(n_c, frac)) for rate > 1, and
    # (1/rate) · Binomial(n_c, rate) for rate ≤ 1; its standard deviation is
    # sqrt(n_c · q · (1 - q)) / rate with q the Bernoulli probability. Allowing 4 sd keeps the
    # chance of a false failure below 1e-4 per class (normal approximation; the draw is fixed
    # by the seed, so the test is deterministic), while a wrong weight (e.g. 1 instead of 1/rate,
    # off by >= 12 sd for A/0) or a wrong copy count fails it.
    out = resample(samples, seed=SEED, **RATES)
    got = out.groupBy(S.SHARD, F.col(S.LABEL_PURCHASE).cast("string").alias("class")).agg(
        F.sum(S.W_RESAMPLE).alias("total"), F.count(F.lit(1)).alias("rows")
    )
    for r in got.collect():
        n_c, rt = rate[(r.shard, r["class"])]
        q = rt if rt <= 1 else rt - math.floor(rt)
        sd = math.sqrt(n_c * q * (1 - q)) / rt
        assert abs(r.total - n_c) <= 4 * sd + 1e-9, (r.shard, r["class"], r.total, n_c, sd)
        if q in (0.0, 1.0):  # integral rates are exact: every row gets exactly `rate` copies
            assert r.rows == n_c * rt


def test_single_class_shard(spark):
    rows = [("u1", "i1", "C", 0), ("u2", "i2", "C", 0), ("u3", "i3", "C", 0)]
    samples = spark.createDataFrame(rows, "user_id string, item_id string, shard string, label_purchase int")
    expected = spark.createDataFrame(
        [(*r, 1.0) for r in rows], "user_id string, item_id string, shard string, label_purchase int, w_resample double"
    )
    # (The "disabled: unchanged with w_resample = 1" case moved with the `enabled` switch to the weights stage.)
    got = resample(samples, seed=42, majority_ratio=1.0, oversample_minority=True)
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)


def test_config_is_strict():
    assert ResampleConfig().enabled is False
    for bad in ({"majority_ratio": 0.0}, {"max_oversample": 0.5}, {"ratio": 2}, {"seed": "x"}):
        with pytest.raises(ValidationError):
            ResampleConfig(**bad)
