"""Combination: product of components, clipping within (shard, class), mean w_shard^b per shard, diagnostics."""

from __future__ import annotations

import pytest
from chispa import assert_approx_df_equality
from pyspark.sql import functions as F

from sampleimp_spark import schema as S
from sampleimp_spark.weighting.combine import combine_weights, weight_diagnostics

DDL = "shard string, w_class double, w_dr double, w_ig double, w_resample double"


def test_product_with_exponents_then_mean_one(spark):
    df = spark.createDataFrame([("a", 2.0, 1.0, 1.0, 1.0), ("a", 1.0, 4.0, 1.0, 1.0), ("b", 1.0, 1.0, 3.0, 2.0)], DDL)
    got = combine_weights(df, a=1.0, b=0.5, c=1.0, clip_quantile=None)
    # raw: a -> 2*1, 1*sqrt(4) = 2, 2 -> mean 2 -> 1, 1; b -> 3*2 = 6 -> 1
    expected = spark.createDataFrame(
        [("a", 2.0, 1.0), ("a", 2.0, 1.0), ("b", 6.0, 1.0)], "shard string, w_raw double, weight double"
    )
    assert_approx_df_equality(
        got.select("shard", "w_raw", S.WEIGHT), expected, 1e-12, ignore_row_order=True, ignore_nullable=True
    )


def test_clipping_per_shard_and_diagnostics(spark):
    rows = [("big", 1.0, 1.0, 1.0, 1.0)] * 9 + [("big", 1.0, 100.0, 1.0, 1.0)] + [("small", 1.0, 3.0, 1.0, 1.0)]
    got = combine_weights(spark.createDataFrame(rows, DDL), clip_quantile=0.9)
    big = got.where("shard = 'big'")
    assert big.where(F.col("w_clipped")).count() == 1
    # the outlier is clipped to the shard's 90th percentile (1.0): all weights equal, mean 1
    assert {r[0] for r in big.select(S.WEIGHT).collect()} == {1.0}
    diag = {r["shard"]: r for r in weight_diagnostics(got).collect()}
    assert diag["big"]["rows"] == 10 and diag["big"]["clipped_fraction"] == pytest.approx(0.1)
    assert diag["big"]["ess"] == pytest.approx(10.0) and diag["small"]["ess_ratio"] == pytest.approx(1.0)


def test_ess_of_unequal_weights(spark):
    df = spark.createDataFrame([("s", 1.0, 3.0, 1.0, 1.0), ("s", 1.0, 1.0, 1.0, 1.0)], DDL)
    got = combine_weights(df, clip_quantile=None)
    d = weight_diagnostics(got).first()
    # weights 1.5 and 0.5: ESS = 2^2 / (2.25 + 0.25) = 1.6
    assert_approx_df_equality(
        spark.createDataFrame(
            [(d["ess"], d["ess_ratio"], d["w_min"], d["w_max"])], "a double, b double, c double, d double"
        ),
        spark.createDataFrame([(1.6, 0.8, 0.5, 1.5)], "a double, b double, c double, d double"),
        1e-12,
    )


def test_missing_components_count_as_one_and_zero_shard_falls_back(spark):
    df = spark.createDataFrame([("z", 0.0), ("z", 0.0), ("y", 2.0)], "shard string, w_dr double")
    got = {r["shard"]: r[S.WEIGHT] for r in combine_weights(df, clip_quantile=None).collect()}
    assert got == {"z": 1.0, "y": 1.0}


def test_clipping_never_crosses_classes(spark):
    """A shard with 1 % positives whose class weight is 50: the shard-wide 99 % quantile is a
    negative's weight, so a shard-wide clip would cut every positive down to it (the class weight
    erased). Clipped within its class, a positive keeps 50 times a negative's weight."""
    rows = [("s", 1, 50.0, 1.0)] * 2 + [("s", 0, 1.0, 1.0)] * 198 + [("s", 0, 1.0, 30.0)] * 1
    df = spark.createDataFrame(rows, "shard string, label_purchase int, w_class double, w_dr double")
    got = combine_weights(df, clip_quantile=0.99)
    by = {
        (r[0], r[1]): (r[2], r[3])
        for r in got.groupBy("label_purchase", "w_clipped").agg(F.max(S.WEIGHT), F.count(F.lit(1))).collect()
    }
    assert set(by) == {(1, False), (0, False), (0, True)}  # only the negatives' outlier is clipped
    positive, negative = by[(1, False)][0], by[(0, False)][0]
    assert positive == pytest.approx(50 * negative)
    # without a label column there is one class: the shard-wide cap (30) cuts both positives
    flat = combine_weights(df.drop("label_purchase"), clip_quantile=0.99)
    assert flat.where(F.col("w_clipped")).select("w_class").collect() == [(50.0,), (50.0,)]


def test_time_component_enters_with_its_exponent(spark):
    df = spark.createDataFrame([("s", 2.0, 0.25), ("s", 2.0, 1.0)], "shard string, w_class double, w_time double")
    raw = {r[0] for r in combine_weights(df, d=0.0, clip_quantile=None).select("w_raw").collect()}
    assert raw == {2.0}  # d = 0: w_time ignored (the default)
    got = sorted(r[0] for r in combine_weights(df, d=1.0, clip_quantile=None).select(S.WEIGHT).collect())
    assert got == pytest.approx([0.4, 1.6])  # 0.5 and 2, mean 1.25


def test_shard_marginal_sets_the_shard_mean(spark):
    """``w_shard`` (the density ratio's shard marginal) survives the per-shard normalisation with
    the density ratio's exponent: a shard's weights average ``w_shard^b``."""
    df = spark.createDataFrame(
        [("a", 1.0, 2.0, 0.5), ("a", 1.0, 6.0, 0.5), ("b", 1.0, 1.0, 1.5), ("b", 1.0, 3.0, 1.5)],
        "shard string, w_class double, w_dr double, w_shard double",
    )
    for b, expected in ((1.0, {"a": [0.25, 0.75], "b": [0.75, 2.25]}), (0.0, {"a": [1.0, 1.0], "b": [1.0, 1.0]})):
        got = combine_weights(df, b=b, clip_quantile=None).orderBy("shard", S.WEIGHT).collect()
        by_shard: dict[str, list[float]] = {}
        for r in got:
            by_shard.setdefault(r["shard"], []).append(r[S.WEIGHT])
        assert by_shard == {k: pytest.approx(v) for k, v in expected.items()}
