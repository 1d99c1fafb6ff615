"""Weighted GBT: weightCol wiring (weight 2 == a duplicated row), candidate features by hand, re-ranking."""

from __future__ import annotations

import numpy as np
import pytest
from chispa import assert_approx_df_equality
from pydantic import ValidationError
from pyspark.sql import functions as F

from sampleimp_spark import schema as S
from sampleimp_spark.config import GBTConfig
from sampleimp_spark.training import gbt as G

FEATURES = ["pair_n_view", "user_n_events"]
SCHEMA = "user_id string, item_id string, pair_n_view double, user_n_events double, label_purchase int, weight double"
#: GBT settings of the small fits (the rest at fit_gbt's defaults).
GBT = {"max_iter": 4, "max_depth": 3, "step_size": 0.5}

# (pair_n_view, user_n_events, label, weight). Mixed labels at (0, 1) and (8, 3): identical
# feature vectors no tree can separate, so their probability is the weighted share of
# positives there — raised at (0, 1) by a positive of weight 2, lowered at (8, 3) by a negative
# of weight 2. Elsewhere labels follow pair_n_view >= 5 with two exceptions.
ROWS = [
    (0.0, 1.0, 0, 1.0),
    (0.0, 1.0, 1, 2.0),
    (0.0, 1.0, 0, 1.0),
    (1.0, 3.0, 0, 1.0),
    (1.0, 2.0, 1, 1.0),
    (2.0, 0.0, 0, 1.0),
    (3.0, 5.0, 0, 2.0),
    (4.0, 1.0, 0, 1.0),
    (5.0, 2.0, 1, 1.0),
    (6.0, 4.0, 1, 2.0),
    (7.0, 0.0, 1, 1.0),
    (7.0, 5.0, 0, 1.0),
    (8.0, 3.0, 1, 1.0),
    (8.0, 3.0, 0, 2.0),
    (9.0, 1.0, 1, 1.0),
]


def _frame(spark, rows):
    return spark.createDataFrame([(f"u{i}", f"i{i}", x, z, y, w) for i, (x, z, y, w) in enumerate(rows)], SCHEMA)


@pytest.fixture(scope="module")
def train(spark):
    return _frame(spark, ROWS).cache()


@pytest.fixture(scope="module")
def grid(spark):
    """Every distinct feature vector of the training rows."""
    return spark.createDataFrame(sorted({(x, z) for x, z, _, _ in ROWS}), "pair_n_view double, user_n_events double")


@pytest.fixture(scope="module")
def weighted_model(train):
    return G.fit_gbt(train, FEATURES, **GBT, seed=5, weight_col=S.WEIGHT)


def _probs(model, grid) -> dict[tuple[float, float], float]:
    return {(r.pair_n_view, r.user_n_events): r.probability for r in G.predict_proba(model, grid).collect()}


# --- config ----------------------------------------------------------------------------------
def test_config_defaults_and_validation(train):
    cfg = GBTConfig()
    assert (cfg.max_iter, cfg.step_size, cfg.subsampling_rate, cfg.max_bins, cfg.negative_rate) == (
        20,
        0.1,
        1.0,
        32,
        0.1,
    )
    assert not hasattr(cfg, "max_depth")  # tuned from train.gbt_depth_grid
    assert cfg.features is None
    assert G.resolve_features(cfg.features, train) == FEATURES  # all numeric feature columns
    assert G.resolve_features(GBTConfig(features=["user_n_events"]).features, train) == ["user_n_events"]
    with pytest.raises(ValueError, match="not in the samples"):
        G.resolve_features(GBTConfig(features=["item_n_view"]).features, train)
    for bad in ({"features": []}, {"features": ["a", "a"]}, {"step_size": 0.0}, {"max_bins": 1}, {"depth": 3}):
        with pytest.raises(ValidationError):
            GBTConfig(**bad)


# --- weighted fit ------------------------------------------------------------------------------
def test_weight_two_equals_duplicated_row(spark, train, grid, weighted_model):
    """weightCol wiring: a row of weight 2 gives the same model as the row twice (weight 1)."""
    duplicated = _frame(spark, [(x, z, y, 1.0) for x, z, y, w in ROWS for _ in range(int(w))])
    dup_model = G.fit_gbt(duplicated, FEATURES, **GBT, seed=5)
    weighted, dup = _probs(weighted_model, grid), _probs(dup_model, grid)
    assert weighted.keys() == dup.keys()
    for key in weighted:
        assert weighted[key] == pytest.approx(dup[key], abs=1e-9), key


def test_weights_move_predictions_in_their_direction(train, grid, weighted_model):
    unweighted = _probs(G.fit_gbt(train, FEATURES, **GBT, seed=5), grid)
    weighted = _probs(weighted_model, grid)
    # (0, 1): positives 1 of 3 unweighted, 2 of 4 weighted -> up. (8, 3): 1 of 2 -> 1 of 3 -> down.
    assert weighted[(0.0, 1.0)] > unweighted[(0.0, 1.0)] + 0.05, (weighted, unweighted)
    assert weighted[(8.0, 3.0)] < unweighted[(8.0, 3.0)] - 0.05, (weighted, unweighted)


def test_fit_gbt_rejects_missing_columns(train):
    with pytest.raises(ValueError, match="item_n_view"):
        G.fit_gbt(train, ["item_n_view"], **GBT, seed=0)
    with pytest.raises(ValueError, match="w_dr"):
        G.fit_gbt(train, FEATURES, **GBT, seed=0, weight_col="w_dr")
    with pytest.raises(ValueError, match="at least one feature"):
        G.fit_gbt(train, [], **GBT, seed=0)


def _tree_text(model) -> str:
    """The fitted trees, every threshold and leaf value printed in full (without the uid line)."""
    return model.stages[-1].toDebugString.split("\n", 1)[1]


@pytest.mark.slow
def test_the_model_depends_on_the_rows_not_on_their_order(spark):
    """The same rows, given in another order and partitioning, fit the same trees to the last bit.

    Spark's tree code sums weights and gradients partition by partition, and floating-point sums
    depend on their order; a rerun whose upstream stages deliver the rows in another order would
    otherwise fit trees that differ in their last bits, and, where two splits tie, in a split.
    """
    x, z, y, w = _noisy_rows()
    rows = _rows(x, z, y, w)
    given = _frame(spark, rows)
    other = _frame(spark, rows[::-1]).repartition(3)  # reversed, round-robin into 3 partitions
    _assert_same_models(given, other)


@pytest.mark.slow
def test_a_last_bit_difference_in_a_weight_or_feature_fits_the_same_model(spark):
    """Inputs one ulp apart (an upstream sum added in another order) fit the same trees.

    The model reads features and weights rounded to float32; without that, the canonical layout
    (a hash of the values) and every sum after it would change.
    """
    x, z, y, w = _noisy_rows()
    up = np.arange(len(w)) % 2 == 0  # every other row one double ulp up, the others down
    w2 = np.where(up, np.nextafter(w, np.inf), np.nextafter(w, 0.0))
    z2 = np.where(up, np.nextafter(z, np.inf), np.nextafter(z, -np.inf))
    assert (w2 != w).all() and (z2 != z).all()
    _assert_same_models(_frame(spark, _rows(x, z, y, w)), _frame(spark, _rows(x, z2, y, w2)))


def _noisy_rows() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """600 rows: integer and two-decimal features, a noisy label, non-integer weights."""
    rng = np.random.default_rng(7)
    n = 600
    x = rng.integers(0, 10, n).astype(float)
    z = np.round(rng.gamma(2.0, 1.5, n), 2)
    y = (rng.random(n) < 1 / (1 + np.exp(4 - 0.5 * x - 0.3 * z))).astype(int)
    w = rng.lognormal(0.0, 0.7, n)  # non-integer weights: their sums are not exact
    return x, z, y, w


def _rows(x, z, y, w) -> list[tuple[float, float, int, float]]:
    """``(pair_n_view, user_n_events, label, weight)`` rows of :func:`_frame` from the columns."""
    return [(float(a), float(b), int(c), float(d)) for a, b, c, d in zip(x, z, y, w, strict=True)]


def _assert_same_models(given, other) -> None:
    """Weighted and unweighted: the same trees from both frames, and the same scores of ``given``."""
    for weight_col in (S.WEIGHT, None):
        a = G.fit_gbt(given, FEATURES, max_iter=6, max_depth=3, seed=3, weight_col=weight_col)
        b = G.fit_gbt(other, FEATURES, max_iter=6, max_depth=3, seed=3, weight_col=weight_col)
        assert _tree_text(a) == _tree_text(b), weight_col
        probs = [
            {r.user_id: r.probability for r in G.predict_proba(m, given).select("user_id", S.PROBABILITY).collect()}
            for m in (a, b)
        ]
        assert probs[0] == probs[1], weight_col  # exactly


def test_predict_proba_is_the_positive_class_probability(train, weighted_model):
    got = G.predict_proba(weighted_model, train.withColumn(S.PROBABILITY, F.lit("stale")))
    assert got.columns == [*train.columns, S.PROBABILITY]  # the stale column is replaced
    assert dict(got.dtypes)[S.PROBABILITY] == "double"
    vectors = weighted_model.transform(train).select("user_id", G._PROB_VECTOR).collect()
    expected = {r.user_id: float(r[G._PROB_VECTOR][1]) for r in vectors}
    rows = got.select("user_id", S.PROBABILITY).collect()
    assert {r.user_id: r.probability for r in rows} == pytest.approx(expected, abs=1e-12)
    assert all(0.0 < r.probability < 1.0 for r in rows)


# --- candidate features ------------------------------------------------------------------------
SAMPLE_FEATURES = [
    "user_n_events",
    "user_recency_any",
    "item_n_view",
    "item_price_rel",
    "cat_median_price",
    "pair_n_view",
    "pair_recency_cart",
    "pair_cart_per_view",
    "pair_hour_2",
    "pair_session_minutes",
    "pair_price_rel",
]
SAMPLES_SCHEMA = "user_id string, item_id string, category_id string, " + ", ".join(
    f"{f} double" for f in SAMPLE_FEATURES
)


@pytest.fixture(scope="module")
def samples(spark):
    #        user  item  cat   u_n  u_rec i_view i_rel c_med  p_view p_rec_cart p_cpv p_h2  p_min p_rel
    rows = [
        ("u1", "i1", "c1", 5.0, 0.5, 10.0, 1.5, 20.0, 3.0, 2.0, 0.33, 0.25, 12.0, 1.5),
        ("u1", "i2", "c2", 5.0, 0.5, 4.0, 0.8, 9.0, 1.0, 7.0, 0.0, 1.0, 3.0, 0.8),
        ("u2", "i1", "c1", 2.0, 3.0, 10.0, 1.5, 20.0, 2.0, 7.0, 0.0, 0.5, 0.0, 1.5),
    ]
    return spark.createDataFrame(rows, SAMPLES_SCHEMA)


def test_candidate_features_by_hand(spark, samples):
    candidates = spark.createDataFrame(
        [("u1", "i1", 1), ("u2", "i2", 1), ("u1", "i9", 2), ("u9", "i2", 1)],
        f"user_id string, item_id string, {S.ALS_RANK} int",
    )
    got = G.candidate_features(candidates, samples, SAMPLE_FEATURES, feature_days=7.0)
    assert got.columns == ["user_id", "item_id", S.ALS_RANK, *SAMPLE_FEATURES]
    expected = spark.createDataFrame(
        [
            # seen pair: every feature from its sample row
            ("u1", "i1", 1, 5.0, 0.5, 10.0, 1.5, 20.0, 3.0, 2.0, 0.33, 0.25, 12.0, 1.5),
            # unseen pair of a known user and item: user and item features from their rows, pair
            # features neutral (recency = feature_days), pair_price_rel = the item's price_rel
            ("u2", "i2", 1, 2.0, 3.0, 4.0, 0.8, 9.0, 0.0, 7.0, 0.0, 0.0, 0.0, 0.8),
            # unknown item: item and category features neutral too (price_rel 1)
            ("u1", "i9", 2, 5.0, 0.5, 0.0, 1.0, 0.0, 0.0, 7.0, 0.0, 0.0, 0.0, 1.0),
            # unknown user: user features neutral (recency = feature_days)
            ("u9", "i2", 1, 0.0, 7.0, 4.0, 0.8, 9.0, 0.0, 7.0, 0.0, 0.0, 0.0, 0.8),
        ],
        f"user_id string, item_id string, {S.ALS_RANK} int, " + ", ".join(f"{f} double" for f in SAMPLE_FEATURES),
    )
    assert_approx_df_equality(got, expected, 1e-12, ignore_row_order=True, ignore_nullable=True)


def test_candidate_features_checks_names(spark, samples):
    candidates = spark.createDataFrame([("u1", "i1", 1)], f"user_id string, item_id string, {S.ALS_RANK} int")
    with pytest.raises(ValueError, match="not in the samples"):
        G.candidate_features(candidates, samples, ["item_n_cart"], feature_days=7.0)
    with pytest.raises(ValueError, match="is not a user_/item_/cat_/pair_ feature"):
        G.candidate_features(candidates, samples, ["category_id"], feature_days=7.0)


def test_neutral_values():
    assert G.neutral_value("pair_recency_any", feature_days=3.5) == 3.5
    assert G.neutral_value("user_price_rel", feature_days=3.5) == 1.0
    for f in ("pair_n_cart", "item_purchase_per_cart", "user_dow_3", "pair_sessions", "cat_median_price"):
        assert G.neutral_value(f, feature_days=3.5) == 0.0


# --- re-ranking --------------------------------------------------------------------------------
def test_rerank_by_probability_with_deterministic_ties(spark, weighted_model):
    # Candidates of u1: b and d have the same features (so the same probability) and are
    # ordered by ALS rank; the ALS order itself is the reverse of the GBT order.
    rows = [
        ("u1", "a", 1, 0.0, 1.0),
        ("u1", "c", 2, 2.0, 0.0),
        ("u1", "d", 3, 9.0, 1.0),
        ("u1", "b", 4, 9.0, 1.0),
        ("u2", "e", 1, 2.0, 0.0),
        ("u2", "f", 2, 6.0, 4.0),
    ]
    candidates = spark.createDataFrame(
        rows, f"user_id string, item_id string, {S.ALS_RANK} int, pair_n_view double, user_n_events double"
    )
    probs = {r.item_id: r.probability for r in G.predict_proba(weighted_model, candidates).collect()}
    assert probs["b"] == probs["d"] > probs["a"] > probs["c"], probs
    assert probs["f"] > probs["e"], probs
    got = G.rerank(candidates, weighted_model, 3)
    assert got.columns == ["user_id", "item_id", "rank"]
    assert sorted((r.user_id, r.rank, r.item_id) for r in got.collect()) == [
        ("u1", 1, "d"),
        ("u1", 2, "b"),
        ("u1", 3, "a"),
        ("u2", 1, "f"),
        ("u2", 2, "e"),
    ]
    with pytest.raises(ValueError, match="k must be at least 1"):
        G.rerank(candidates, weighted_model, 0)
