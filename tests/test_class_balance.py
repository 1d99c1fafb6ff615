"""Class-balance weights: each method and scope against hand-computed numbers on tiny tables."""

from __future__ import annotations

import pytest
from chispa import assert_approx_df_equality
from pydantic import ValidationError

from sampleimp_spark import schema as S
from sampleimp_spark.config import ClassBalanceConfig
from sampleimp_spark.weighting.class_balance import class_weights, with_class_weight

WEIGHTS_SCHEMA = "shard string, class string, w_class double"


@pytest.fixture(scope="module")
def freqs(spark):
    """Shard A: 90 × "0", 10 × "1"; shard B: 5 × "0" and a zero count of "1"; overall 95 / 10.
    Plus intent rows and an older window that filters must drop."""
    rows = [
        ("w1", "gen", "A", "purchase", "0", 90),
        ("w1", "gen", "A", "purchase", "1", 10),
        ("w1", "gen", "B", "purchase", "0", 5),
        ("w1", "gen", "B", "purchase", "1", 0),
        ("w1", "gen", "_all", "purchase", "0", 95),
        ("w1", "gen", "_all", "purchase", "1", 10),
        ("w1", "gen", "A", "intent", "none", 6),
        ("w1", "gen", "A", "intent", "cart", 2),
        ("w1", "gen", "A", "intent", "purchase", 0),
        ("w0", "gen", "A", "purchase", "0", 10),
        ("w0", "gen", "A", "purchase", "1", 10),
    ]
    total = {}
    for w, _, s, k, _, n in rows:
        total[(w, s, k)] = total.get((w, s, k), 0) + n
    data = [(*r, r[5] / total[(r[0], r[2], r[3])] if total[(r[0], r[2], r[3])] else 0.0) for r in rows]
    return spark.createDataFrame(data, S.CLASS_FREQUENCIES_SCHEMA)


def _check(spark, got, expected_rows):
    expected = spark.createDataFrame(expected_rows, WEIGHTS_SCHEMA)
    assert_approx_df_equality(got, expected, 1e-9, ignore_row_order=True, ignore_nullable=True)


def test_balanced_per_shard(spark, freqs):
    got = class_weights(freqs, method="balanced", window_id="w1")
    # A: n = 100, C = 2 -> 100 / (2·90), 100 / (2·10). B: one non-zero class -> 1; no row for "1".
    _check(spark, got, [("A", "0", 100 / 180), ("A", "1", 5.0), ("B", "0", 1.0)])


def test_sqrt_per_shard(spark, freqs):
    got = class_weights(freqs, method="sqrt", window_id="w1")
    # r = sqrt(5/9), sqrt(5); Σ n_c r_c = 30√5 + 10√5 = 40√5 -> w = r · 100 / (40√5) = 5/6, 5/2.
    _check(spark, got, [("A", "0", 5 / 6), ("A", "1", 2.5), ("B", "0", 1.0)])


def test_effective_number_per_shard(spark, freqs):
    got = class_weights(freqs, method="effective_number", beta=0.9, window_id="w1")
    r0, r1 = 0.1 / (1 - 0.9**90), 0.1 / (1 - 0.9**10)  # 0.1000076..., 0.1535338...
    z = 90 * r0 + 10 * r1
    _check(spark, got, [("A", "0", r0 * 100 / z), ("A", "1", r1 * 100 / z), ("B", "0", 1.0)])
    # β -> 0 makes every class weigh (1-β)/1: the normalized weights all tend to 1.
    flat = class_weights(freqs, method="effective_number", beta=1e-9, window_id="w1")
    _check(spark, flat, [("A", "0", 1.0), ("A", "1", 1.0), ("B", "0", 1.0)])


def test_none_is_all_ones(spark, freqs):
    got = class_weights(freqs, method="none", window_id="w1")
    _check(spark, got, [("A", "0", 1.0), ("A", "1", 1.0), ("B", "0", 1.0)])


def test_global_scope_uses_the_overall_rows(spark, freqs):
    got = class_weights(freqs, method="balanced", scope="global", window_id="w1")
    _check(spark, got, [("_all", "0", 105 / 190), ("_all", "1", 105 / 20)])
    got = class_weights(freqs, method="sqrt", scope="global", window_id="w1")
    r0, r1 = (105 / 190) ** 0.5, (105 / 20) ** 0.5
    z = 95 * r0 + 10 * r1
    _check(spark, got, [("_all", "0", r0 * 105 / z), ("_all", "1", r1 * 105 / z)])


def test_intent_label_and_window_filters(spark, freqs):
    got = class_weights(freqs, method="balanced", label="intent")
    _check(spark, got, [("A", "none", 8 / 12), ("A", "cart", 2.0)])
    # Without a window filter the two windows' counts are summed: A = 100 × "0", 20 × "1".
    got = class_weights(freqs, method="balanced", source="gen")
    _check(spark, got, [("A", "0", 120 / 200), ("A", "1", 3.0), ("B", "0", 1.0)])


SAMPLES = [("A", "u1", 0), ("A", "u2", 1), ("B", "u3", 0), ("B", "u4", 1), ("Z", "u5", 0)]


def test_with_class_weight_per_shard(spark, freqs):
    samples = spark.createDataFrame(SAMPLES, "shard string, user_id string, label_purchase int")
    got = with_class_weight(
        samples, class_weights(freqs, method="balanced", window_id="w1"), label_col=S.LABEL_PURCHASE, scope="shard"
    )
    expected = spark.createDataFrame(
        # B's class 1 has a zero count and shard Z no frequencies: both get the neutral 1.
        [("A", "u1", 0, 100 / 180), ("A", "u2", 1, 5.0), ("B", "u3", 0, 1.0), ("B", "u4", 1, 1.0), ("Z", "u5", 0, 1.0)],
        "shard string, user_id string, label_purchase int, w_class double",
    )
    assert_approx_df_equality(got, expected, 1e-9, ignore_row_order=True, ignore_nullable=True)


def test_with_class_weight_global_and_custom_columns(spark, freqs):
    samples = spark.createDataFrame(SAMPLES, "cat string, user_id string, y int")
    got = with_class_weight(
        samples,
        class_weights(freqs, method="balanced", scope="global", window_id="w1"),
        label_col="y",
        scope="global",
        shard_col="cat",
        weight_col="w",
    )
    w0, w1 = 105 / 190, 105 / 20
    expected = spark.createDataFrame(
        [("A", "u1", 0, w0), ("A", "u2", 1, w1), ("B", "u3", 0, w0), ("B", "u4", 1, w1), ("Z", "u5", 0, w0)],
        "cat string, user_id string, y int, w double",
    )
    assert_approx_df_equality(got, expected, 1e-9, ignore_row_order=True, ignore_nullable=True)


def test_config_is_strict():
    assert ClassBalanceConfig() == ClassBalanceConfig(method="balanced", beta=0.999, scope="global", label="purchase")
    for bad in ({"beta": 0.0}, {"beta": 1.0}, {"method": "focal"}, {"scope": "item"}, {"label": "x"}, {"alpha": 1}):
        with pytest.raises(ValidationError):
            ClassBalanceConfig(**bad)
