"""Weighted implicit ALS: ratings by hand, the id index, and fitted models on tiny synthetic data."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from chispa import assert_approx_df_equality, assert_df_equality
from conftest import stored_rdds
from pydantic import ValidationError
from pyspark.errors import PySparkException
from pyspark.sql import functions as F

from sampleimp_spark import schema as S
from sampleimp_spark.config import ALSConfig
from sampleimp_spark.training import als as A

EVENTS_SCHEMA = "user_id string, item_id string, behavior string"
RATINGS_SCHEMA = "user_id string, item_id string, rating double"
WEIGHTS_SCHEMA = "user_id string, item_id string, weight double"
STRENGTHS = {"view": 1.0, "click": 1.0, "fav": 2.0, "cart": 3.0, "purchase": 4.0, "remove_from_cart": 0.0}


# --- config ------------------------------------------------------------------------------
def test_config_defaults_and_validation():
    cfg = ALSConfig()
    assert (cfg.rank, cfg.max_iter, cfg.candidates, cfg.num_blocks) == (32, 10, 50, None)
    assert not hasattr(cfg, "reg_param") and not hasattr(cfg, "alpha")  # tuned from the train grids
    assert cfg.strengths == STRENGTHS
    with pytest.raises(ValidationError, match="unknown behavior"):
        ALSConfig(strengths={"view": 1.0, "like": 2.0})
    with pytest.raises(ValidationError, match=">= 0"):
        ALSConfig(strengths={"view": 1.0, "cart": -1.0})
    with pytest.raises(ValidationError, match="positive strength"):
        ALSConfig(strengths={"view": 0.0})
    with pytest.raises(ValidationError):
        ALSConfig(ranks=3)


# --- implicit_ratings ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def events(spark):
    rows = [
        ("u1", "a", "view"),
        ("u1", "a", "view"),  # duplicate event: summed, 1 + 1
        ("u1", "a", "cart"),  # + 3
        ("u1", "b", "purchase"),  # 4
        ("u1", "c", "remove_from_cart"),  # strength 0 only: dropped
        ("u2", "a", "fav"),  # 2
        ("u2", "a", "remove_from_cart"),  # + 0
        ("u2", "b", "click"),  # 1
        ("u2", "d", "view"),  # 1, weight 0 in the weighted test: kept at the floor
        ("u3", "e", "unknown"),  # behavior not in the strengths: 0, dropped
        (None, "a", "view"),  # null id: ignored
    ]
    return spark.createDataFrame(rows, EVENTS_SCHEMA)


def test_implicit_ratings_unweighted(spark, events):
    got = A.implicit_ratings(events, strengths=STRENGTHS)
    expected = spark.createDataFrame(
        [("u1", "a", 5.0), ("u1", "b", 4.0), ("u2", "a", 2.0), ("u2", "b", 1.0), ("u2", "d", 1.0)], RATINGS_SCHEMA
    )
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)


def test_implicit_ratings_weighted(spark, events):
    weights = spark.createDataFrame(
        [
            ("u1", "a", 2.0),  # 5 × 2
            ("u2", "b", 0.5),  # 1 × 0.5
            ("u2", "d", 0.0),  # weight 0: the observed pair stays a positive, at the floor
            ("u1", "c", 7.0),  # zero strength stays zero
            ("u9", "z", 3.0),  # no events: no rating
        ],
        WEIGHTS_SCHEMA,
    )  # (u1, b) and (u2, a) are missing: weight 1
    got = A.implicit_ratings(events, weights, strengths=STRENGTHS)
    expected = spark.createDataFrame(
        [("u1", "a", 10.0), ("u1", "b", 4.0), ("u2", "a", 2.0), ("u2", "b", 0.5), ("u2", "d", A.MIN_PAIR_WEIGHT)],
        RATINGS_SCHEMA,
    )
    assert_approx_df_equality(got, expected, 1e-12, ignore_row_order=True, ignore_nullable=True)


def test_implicit_ratings_decay_each_event_by_its_age(spark):
    t1 = datetime(2017, 12, 3, tzinfo=UTC)
    events = spark.createDataFrame(
        [
            ("u", "a", "view", t1 - timedelta(days=2)),  # 1 * 2^(-2/2) = 0.5
            ("u", "a", "cart", t1 - timedelta(hours=12)),  # 3 * 2^(-0.25)
            ("u", "b", "purchase", t1 - timedelta(days=4)),  # 4 * 2^(-2) = 1
            ("u", "c", "view", t1 - timedelta(days=1)),  # weight 0 below: floored, stays a positive
        ],
        "user_id string, item_id string, behavior string, ts timestamp",
    )
    weights = spark.createDataFrame([("u", "c", 0.0)], WEIGHTS_SCHEMA)
    got = A.implicit_ratings(events, weights, strengths=STRENGTHS, half_life_days=2.0, t1=t1)
    expected = spark.createDataFrame(
        [("u", "a", 0.5 + 3 * 2**-0.25), ("u", "b", 1.0), ("u", "c", A.MIN_PAIR_WEIGHT * 2**-0.5)], RATINGS_SCHEMA
    )
    assert_approx_df_equality(got, expected, 1e-12, ignore_row_order=True, ignore_nullable=True)
    with pytest.raises(ValueError, match="needs t1"):
        A.implicit_ratings(events, strengths=STRENGTHS, half_life_days=2.0)
    for bad in (0.0, -1.0, float("inf")):
        with pytest.raises(ValueError, match="half_life_days must be > 0"):
            A.implicit_ratings(events, strengths=STRENGTHS, half_life_days=bad, t1=t1)


def test_implicit_ratings_custom_strengths_and_columns(spark):
    events = spark.createDataFrame([("u", "i", "view"), ("u", "i", "purchase")], "u string, i string, b string")
    weights = spark.createDataFrame([("u", "i", 3.0)], "u string, i string, w double")
    got = A.implicit_ratings(
        events,
        weights,
        strengths={"purchase": 10.0},
        weight_col="w",
        user_col="u",
        item_col="i",
        behavior_col="b",
        rating_col="r",
    )
    assert [tuple(r) for r in got.collect()] == [("u", "i", 30.0)]
    assert got.columns == ["u", "i", "r"]


def test_resampled_copies_add_their_weights_and_a_dropped_pair_stays_a_positive(spark, events):
    """Resampling keeps each copy with weight 1/rate: a pair's copies add up (Σ 1/rate), a pair
    resampling dropped gets weight 0 (floored), not the 1 of an ordinary observation, and a pair
    that is no sample of the window keeps 1."""
    weights = spark.createDataFrame(
        [
            ("u1", "a", 2.0),  # oversampled: two copies of weight 2 -> 5 × 4
            ("u1", "a", 2.0),
            ("u1", "b", 0.5),  # one copy -> 4 × 0.5
            ("u2", "a", 1.5),  # -> 2 × 1.5
        ],
        WEIGHTS_SCHEMA,
    )  # (u2, b) was dropped by resampling; (u2, d) is not a sample of the window at all
    samples = spark.createDataFrame(
        [("u1", "a"), ("u1", "b"), ("u2", "a"), ("u2", "b")], "user_id string, item_id string"
    )
    got = A.implicit_ratings(events, weights, strengths=STRENGTHS, copies=True, samples=samples)
    floor = A.MIN_PAIR_WEIGHT
    expected = spark.createDataFrame(
        [("u1", "a", 20.0), ("u1", "b", 2.0), ("u2", "a", 3.0), ("u2", "b", floor), ("u2", "d", 1.0)],
        RATINGS_SCHEMA,
    )
    assert_approx_df_equality(got, expected, 1e-12, ignore_row_order=True, ignore_nullable=True)
    # Read as ordinary weights, the copies are refused (they were, always: the pair-uniqueness check).
    with pytest.raises(PySparkException, match="several weight rows"):
        A.implicit_ratings(events, weights, strengths=STRENGTHS).collect()
    # A null copy is still refused, even beside a valid one.
    bad = weights.unionByName(spark.createDataFrame([("u1", "b", None)], WEIGHTS_SCHEMA))
    with pytest.raises(PySparkException, match=r"\(u1, b\) must be finite and >= 0, got null"):
        A.implicit_ratings(events, bad, strengths=STRENGTHS, copies=True, samples=samples).collect()
    # ... and a negative copy, even when the sum is positive.
    bad = weights.unionByName(spark.createDataFrame([("u1", "b", -0.2)], WEIGHTS_SCHEMA))
    with pytest.raises(PySparkException, match=r"\(u1, b\) must be finite and >= 0, got -0.2"):
        A.implicit_ratings(events, bad, strengths=STRENGTHS, copies=True, samples=samples).collect()
    with pytest.raises(ValueError, match="copies need the window's samples"):
        A.implicit_ratings(events, weights, strengths=STRENGTHS, copies=True)


def test_saturating_confidence_is_the_log_of_the_weighted_evidence(spark, events):
    weights = spark.createDataFrame([("u1", "a", 2.0), ("u2", "d", 0.0)], WEIGHTS_SCHEMA)
    got = A.implicit_ratings(events, weights, strengths=STRENGTHS, confidence="log", epsilon=0.5)
    # log(1 + w · Σ strength / ε): (u1, a) 2 × 5 / 0.5 = 20, (u1, b) 4 / 0.5 = 8, ...
    raw = {("u1", "a"): 10.0, ("u1", "b"): 4.0, ("u2", "a"): 2.0, ("u2", "b"): 1.0, ("u2", "d"): A.MIN_PAIR_WEIGHT}
    expected = spark.createDataFrame([(u, i, float(np.log1p(r / 0.5))) for (u, i), r in raw.items()], RATINGS_SCHEMA)
    assert_approx_df_equality(got, expected, 1e-12, ignore_row_order=True, ignore_nullable=True)
    unweighted = {
        (r[0], r[1]): r[2] for r in A.implicit_ratings(events, strengths=STRENGTHS, confidence="log").collect()
    }
    assert unweighted[("u1", "a")] == pytest.approx(np.log(6.0), abs=1e-12)  # ε = 1: log(1 + 5)
    with pytest.raises(ValueError, match="confidence must be one of"):
        A.implicit_ratings(events, strengths=STRENGTHS, confidence="sqrt")
    with pytest.raises(ValueError, match="epsilon must be finite and > 0"):
        A.implicit_ratings(events, strengths=STRENGTHS, confidence="log", epsilon=0.0)
    with pytest.raises(ValidationError, match="epsilon"):
        ALSConfig(epsilon=-1.0)
    with pytest.raises(ValidationError, match="confidence"):
        ALSConfig(confidence="sqrt")


@pytest.mark.parametrize(
    ("rows", "match"),
    [
        ([("u1", "a", 1.0), ("u1", "a", 2.0)], "several weight rows for pair \\(u1, a\\)"),
        ([("u1", "a", -1.0)], "must be finite and >= 0, got -1.0"),
        ([("u1", "a", float("nan"))], "must be finite and >= 0, got NaN"),
        ([("u1", "a", None)], "must be finite and >= 0, got null"),
    ],
)
def test_implicit_ratings_bad_weights_fail(spark, events, rows, match):
    weights = spark.createDataFrame(rows, WEIGHTS_SCHEMA)
    with pytest.raises(PySparkException, match=match):
        A.implicit_ratings(events, weights, strengths=STRENGTHS).collect()


def test_implicit_ratings_bad_strengths(events):
    with pytest.raises(ValueError, match=">= 0"):
        A.implicit_ratings(events, strengths={"view": -1.0})
    with pytest.raises(ValueError, match="positive strength"):
        A.implicit_ratings(events, strengths={"view": 0.0})


# --- index -----------------------------------------------------------------------------------
def test_index_is_contiguous_and_deterministic(spark):
    ids = [f"id{i:03d}" for i in range(60)]
    df = spark.createDataFrame([(i,) for i in ids + ids[:7]] + [(None,)], "user_id string")
    # The same ids in another order and partitioning, and with more partitions than rows.
    shuffled = spark.createDataFrame([(i,) for i in reversed(ids)], "user_id string").repartition(5)
    got = {r.user_id: r.ix for r in A.index_ids(df, id_col="user_id", index_col="ix", buckets=4).collect()}
    again = {r.user_id: r.ix for r in A.index_ids(shuffled, id_col="user_id", index_col="ix", buckets=4).collect()}
    assert set(got) == set(ids)
    assert sorted(got.values()) == list(range(60))
    assert again == got
    schema = A.index_ids(df, id_col="user_id", index_col="ix").schema
    assert schema["ix"].dataType.simpleString() == "int"
    # One bucket: plain id order.
    one = {r.user_id: r.ix for r in A.index_ids(df, id_col="user_id", index_col="ix", buckets=1).collect()}
    assert one == {i: n for n, i in enumerate(ids)}


def test_index_past_int_range_fails(spark):
    df = spark.range(1).select(A._int_index(F.lit(A.MAX_INDEX + 1).cast("bigint"), what="users").alias("ix"))
    with pytest.raises(PySparkException, match="distinct users: ALS ids must fit in a Java int"):
        df.collect()
    ok = spark.range(1).select(A._int_index(F.lit(A.MAX_INDEX).cast("bigint"), what="users").alias("ix"))
    assert ok.first().ix == A.MAX_INDEX


# --- fitted ALS ------------------------------------------------------------------------------
# Two clusters of 5 users and 5 items; user k of a cluster has viewed every item of its
# cluster except item k. A bridge item "x" is viewed by one user of cluster A and two of B.
# One ALS block keeps the tiny fits fast (fewer tasks).
CLUSTER_ALS = {"rank": 2, "max_iter": 6, "reg_param": 0.1, "alpha": 10.0, "num_blocks": 1}


def _cluster_events(spark):
    rows = [
        (f"{c}u{u}", f"{c}{i}", "view")
        for c in "ab"
        for u in range(5)
        for i in range(5)
        if i != u  # user k misses item k
    ]
    rows += [("au0", "x", "view"), ("bu0", "x", "view"), ("bu1", "x", "view")]
    return spark.createDataFrame(rows, EVENTS_SCHEMA)


@pytest.fixture(scope="module")
def cluster_events(spark):
    return _cluster_events(spark).cache()


@pytest.fixture(scope="module")
def cluster_model(cluster_events):
    model = A.fit_als(A.implicit_ratings(cluster_events, strengths=STRENGTHS), **CLUSTER_ALS, seed=3)
    yield model
    model.unpersist()


def _scores(model: A.FittedALS, pairs) -> dict[tuple[str, str], float]:
    """ALS scores ``x_u · y_i`` of the (user, item) pairs of ``pairs``, from the model's factors and
    indexes (in float64); pairs of a user or item the model does not know are left out."""
    user_f = {r.id: np.asarray(r.features, dtype=np.float64) for r in model.model.userFactors.collect()}
    item_f = {r.id: np.asarray(r.features, dtype=np.float64) for r in model.model.itemFactors.collect()}
    user_ix = {r[model.user_col]: r[A._USER_INDEX] for r in model.user_index.collect()}
    item_ix = {r[model.item_col]: r[A._ITEM_INDEX] for r in model.item_index.collect()}
    out = {}
    for user, item in pairs.select(model.user_col, model.item_col).collect():
        if user in user_ix and item in item_ix:
            out[(user, item)] = float(user_f[user_ix[user]] @ item_f[item_ix[item]])
    return out


def _lists(recs) -> dict[str, list[str]]:
    out: dict[str, list[tuple[int, str]]] = {}
    for r in recs.collect():
        out.setdefault(r.user_id, []).append((r.rank, r.item_id))
    return {u: [i for _, i in sorted(v)] for u, v in out.items()}


def test_recommends_in_cluster_items(spark, cluster_model, cluster_events):
    users = cluster_events.select(S.USER_ID).union(spark.createDataFrame([("stranger",)], "user_id string"))
    recs = A.recommend(cluster_model, users, 5, rank_col=S.ALS_RANK)
    assert recs.columns == [S.USER_ID, S.ITEM_ID, S.ALS_RANK]
    lists = _lists(recs.withColumnRenamed(S.ALS_RANK, "rank"))
    assert set(lists) == {f"{c}u{u}" for c in "ab" for u in range(5)}  # no row for the unknown user
    for user, items in lists.items():
        cluster = user[0]
        assert len(items) == 5
        if user in ("au0", "bu0", "bu1"):  # viewed the bridge item x too
            assert set(items) <= {f"{cluster}{i}" for i in range(5)} | {"x"}, (user, items)
        else:  # exactly the 5 items of the user's cluster, including the one never viewed
            assert set(items) == {f"{cluster}{i}" for i in range(5)}, (user, items)
    # The in-cluster item a user never viewed outscores every item of the other cluster.
    everything = cluster_events.select(S.USER_ID).distinct().crossJoin(cluster_events.select(S.ITEM_ID).distinct())
    scores = _scores(cluster_model, everything)
    assert len(scores) == 10 * 11  # every pair of the 10 users and 11 items is known
    for c, other in (("a", "b"), ("b", "a")):
        for u in range(5):
            unseen = scores[(f"{c}u{u}", f"{c}{u}")]
            assert unseen > max(scores[(f"{c}u{u}", f"{other}{i}")] for i in range(5)) + 0.3, (c, u)


@pytest.mark.slow
def test_same_seed_same_recommendations(spark, cluster_model, cluster_events):
    stored = stored_rdds(spark)
    again = A.fit_als(A.implicit_ratings(cluster_events, strengths=STRENGTHS), **CLUSTER_ALS, seed=3)
    try:
        users = cluster_events.select(S.USER_ID)
        assert _lists(A.recommend(again, users, 6)) == _lists(A.recommend(cluster_model, users, 6))
        pairs = cluster_events.select(S.USER_ID, S.ITEM_ID).distinct()
        scores, expected = _scores(again, pairs), _scores(cluster_model, pairs)
        assert len(expected) == pairs.count()
        assert scores == pytest.approx(expected, abs=1e-5)
        new = {v for k, v in stored_rdds(spark).items() if k not in stored}
        assert {"userFactors", "itemFactors"} <= new  # what Spark's ALS keeps for the model
    finally:
        again.unpersist()
    assert {k: v for k, v in stored_rdds(spark).items() if k not in stored} == {}  # indexes and factors freed


@pytest.mark.slow
def test_fits_of_ratings_indexed_once_equal_fits_of_the_ratings(spark, cluster_model, cluster_events):
    """A tuning grid indexes its ratings once: each fit equals the fit that indexes them itself,
    freeing one model leaves the indexes to the others, and releasing them frees everything."""
    stored = stored_rdds(spark)
    indexed = A.index_ratings(A.implicit_ratings(cluster_events, strengths=STRENGTHS))
    fitted: list[A.FittedALS] = []
    users = cluster_events.select(S.USER_ID)
    pairs = cluster_events.select(S.USER_ID, S.ITEM_ID).distinct()
    try:
        same = A.fit_als(indexed, **CLUSTER_ALS, seed=3)
        fitted.append(same)
        other = A.fit_als(indexed, **{**CLUSTER_ALS, "reg_param": CLUSTER_ALS["reg_param"] * 4}, seed=3)
        fitted.append(other)
        assert _scores(same, pairs) == pytest.approx(_scores(cluster_model, pairs), abs=1e-5)
        same.unpersist()
        assert _lists(A.recommend(other, users, 6)) != {}  # the shared indexes are still there
        assert _scores(other, pairs) != pytest.approx(_scores(cluster_model, pairs), abs=1e-5)
    finally:
        for model in fitted:
            model.unpersist()
        indexed.release()
    assert {k: v for k, v in stored_rdds(spark).items() if k not in stored} == {}


@pytest.mark.slow
def test_the_factors_depend_on_the_ratings_not_on_their_order(spark):
    """The same ratings in another order and partitioning fit the same factors to the last bit."""
    rng = np.random.default_rng(11)
    pairs = {(int(u), int(i)) for u, i in zip(rng.integers(0, 60, 900), rng.integers(0, 40, 900), strict=True)}
    rows = [
        (f"u{u}", f"i{i}", float(r)) for (u, i), r in zip(sorted(pairs), rng.lognormal(0, 1, len(pairs)), strict=True)
    ]
    frames = (
        spark.createDataFrame(rows, RATINGS_SCHEMA),
        spark.createDataFrame(rows[::-1], RATINGS_SCHEMA).repartition(3),
    )
    factors = []
    for ratings in frames:
        model = A.fit_als(ratings, rank=4, max_iter=4, num_blocks=3, seed=5)
        try:
            factors.append(
                [
                    {r.id: list(r.features) for r in f.collect()}
                    for f in (model.model.userFactors, model.model.itemFactors)
                ]
            )
        finally:
            model.unpersist()
    assert factors[0] == factors[1]  # exactly


@pytest.mark.slow
def test_top_of_a_longer_list_is_the_shorter_list(cluster_model, cluster_events):
    # The experiment computes each user's list once, at the candidate count, and evaluates its
    # top k as ALS's list: the same lists and ranks as asking for k.
    users = cluster_events.select(S.USER_ID)
    long = A.recommend(cluster_model, users, 11)
    for k in (1, 3, 6):
        short = _lists(A.recommend(cluster_model, users, k))
        assert all(len(v) == k for v in short.values())
        assert _lists(long.where(F.col("rank") <= k)) == short, k


def test_block_top_k_orders_by_score_then_item_and_breaks_ties_at_the_kth_place(monkeypatch):
    monkeypatch.setattr(A, "_SCORE_ROWS", 2)  # three chunks of users
    users = np.array([[1, 0], [0, 1], [1, 1], [2, 0], [0, 0]], dtype=np.float32)
    item_ids = np.array([7, 3, 5, 1, 9])
    items = np.array([[1, 0], [1, 0], [0.5, 0], [1, 0], [0, 2]], dtype=np.float32)
    got = A.block_top_k(np.array([10, 11, 12, 13, 14]), users, item_ids, items, 2)
    lists = got.groupby(A._USER_INDEX, sort=True)[A._ITEM_INDEX].apply(list).to_dict()
    # user 10 scores items 7, 3, 1 at 1.0 (a tie at 2nd place) and 5 at 0.5: by item id, 1 then 3.
    assert lists == {10: [1, 3], 11: [9, 1], 12: [9, 1], 13: [1, 3], 14: [1, 3]}
    assert got[A._SCORE].tolist()[:4] == [1.0, 1.0, 2.0, 0.0]
    # Scores float32 cannot tell apart are ranked by their float64 values: 1 + 2^-30 beats 1.
    close = np.array([[1, 0], [1, 2.0**-30]], dtype=np.float32)
    assert np.float32(1) + np.float32(2.0**-30) == np.float32(1)
    best = A.block_top_k(np.array([0]), np.array([[1, 1]], dtype=np.float32), np.array([2, 5]), close, 1)
    assert best[A._ITEM_INDEX].tolist() == [5]
    # A block with fewer items than k gives all of them.
    few = A.block_top_k(np.array([10]), users[:1], item_ids[:2], items[:2], 5)
    assert few[A._ITEM_INDEX].tolist() == [3, 7]


@pytest.mark.slow
def test_recommend_is_the_exact_top_k_whatever_the_blocks(spark):
    """Lists of many blocks merged equal the lists of one block and a brute-force ranking of every
    item by its float64 score (ties by item index), computed here from the model's factors."""
    rng = np.random.default_rng(5)
    pairs = {(int(u), int(i)) for u, i in zip(rng.integers(0, 30, 300), rng.integers(0, 25, 300), strict=True)}
    rows = [
        (f"u{u}", f"i{i}", float(r)) for (u, i), r in zip(sorted(pairs), rng.lognormal(0, 1, len(pairs)), strict=True)
    ]
    model = A.fit_als(spark.createDataFrame(rows, RATINGS_SCHEMA), rank=4, max_iter=3, num_blocks=2, seed=1)
    try:
        users = spark.createDataFrame([(f"u{u}",) for u in range(0, 30, 2)] + [("nobody",)], "user_id string")
        user_f = {r.id: np.array(r.features, dtype=np.float64) for r in model.model.userFactors.collect()}
        item_f = {r.id: np.array(r.features, dtype=np.float64) for r in model.model.itemFactors.collect()}
        user_ix = {r.user_id: r[A._USER_INDEX] for r in model.user_index.collect()}
        item_of = {r[A._ITEM_INDEX]: r.item_id for r in model.item_index.collect()}
        ranked = {}
        for u in range(0, 30, 2):
            x = user_f[user_ix[f"u{u}"]]
            ranked[f"u{u}"] = [item_of[i] for i in sorted(item_f, key=lambda i, x=x: (-float(x @ item_f[i]), i))]
        # k = 40: more than the 25 items
        for k, blocks in (
            (3, {}),
            (40, {}),
            (3, {"user_block": 4, "item_block": 6}),
            (40, {"user_block": 16, "item_block": 1}),
            (3, {"user_block": 1, "item_block": 25}),
        ):
            expected = {u: items[:k] for u, items in ranked.items()}
            assert _lists(A.recommend(model, users, k, **blocks)) == expected, (k, blocks)
        # Each pair of blocks is a partition (a task, an Arrow batch) of its own.
        n_users, n_items = model.user_index.count(), model.item_index.count()
        for user_block, item_block in ((4, 6), (16, 1)):
            per_partition = A._block_pairs(model, users, user_block, item_block).rdd.glom().map(len).collect()
            assert len(per_partition) == -(-n_users // user_block) * -(-n_items // item_block)
            assert max(per_partition) == 1
    finally:
        model.unpersist()


def test_weight_raises_confidence_of_the_pair(spark, cluster_events, cluster_model):
    """Weight 5 on (au0, x) multiplies that pair's extra confidence by 5 (c = 1 + 10·5 instead
    of 1 + 10·1): the fit must move au0 · x closer to the preference 1. Scores of the pairs
    nobody re-weighted stay where they were (within the model's own tolerance)."""
    weights = spark.createDataFrame([("au0", "x", 5.0)], WEIGHTS_SCHEMA)
    weighted = A.fit_als(A.implicit_ratings(cluster_events, weights, strengths=STRENGTHS), **CLUSTER_ALS, seed=3)
    try:
        pairs = cluster_events.select(S.USER_ID, S.ITEM_ID).distinct()
        before = _scores(cluster_model, pairs)
        after = _scores(weighted, pairs)
        assert len(before) == len(after) == pairs.count()
    finally:
        weighted.unpersist()
    assert before[("au0", "x")] < 0.95, before  # room to rise: the test could fail
    assert after[("au0", "x")] > before[("au0", "x")] + 0.05, (before[("au0", "x")], after[("au0", "x")])
    # Every other observed pair changes much less than the re-weighted one.
    others = max(abs(after[p] - before[p]) for p in before if p != ("au0", "x"))
    assert others < (after[("au0", "x")] - before[("au0", "x")]), others


def test_recommend_rejects_bad_k(cluster_model, cluster_events):
    with pytest.raises(ValueError, match="k must be at least 1"):
        A.recommend(cluster_model, cluster_events, 0)
    with pytest.raises(ValueError, match="block sizes must be at least 1"):
        A.recommend(cluster_model, cluster_events, 3, item_block=0)
