"""The non-learned baselines on literal events, scored by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sampleimp_spark import schema as S
from sampleimp_spark.config import DEFAULT_STRENGTHS
from sampleimp_spark.training import baselines
from sampleimp_spark.weighting.time_decay import decay, time_weights

T1 = datetime(2024, 3, 5, tzinfo=UTC)
DDL = f"{S.USER_ID} string, {S.ITEM_ID} string, {S.CATEGORY_ID} string, {S.BEHAVIOR} string, {S.TS} timestamp"


def _events(spark, rows):
    return spark.createDataFrame([(u, i, c, b, T1 - timedelta(days=d)) for u, i, c, b, d in rows], DDL)


def _scores(df) -> dict:
    return {(r[S.USER_ID], r[S.ITEM_ID]): r[S.SCORE] for r in df.collect()}


@pytest.fixture(scope="module")
def events(spark):
    return _events(
        spark,
        [
            # u1: a viewed twice (1 and 3 days ago), b bought 4 days ago, c carted 0.5 days ago
            ("u1", "a", "x", "view", 1.0),
            ("u1", "a", "x", "view", 3.0),
            ("u1", "b", "y", "purchase", 4.0),
            ("u1", "c", "x", "cart", 0.5),
            # u2: b viewed, d faved
            ("u2", "b", "y", "view", 2.0),
            ("u2", "d", "y", "fav", 1.0),
            # u3: a viewed, remove_from_cart of e (strength 0: not a candidate)
            ("u3", "a", "x", "view", 1.0),
            ("u3", "e", "x", "remove_from_cart", 1.0),
        ],
    )


def test_history_with_and_without_decay(spark, events):
    users = spark.createDataFrame([("u1",), ("u3",)], f"{S.USER_ID} string")
    plain = _scores(
        baselines.history_scores(events, users, t1=T1, half_life_days=None, strengths=DEFAULT_STRENGTHS, n=10)
    )
    # strengths: view 1, cart 3, purchase 4; u2 is not asked for; u3's remove_from_cart scores 0
    assert plain == {("u1", "a"): 2.0, ("u1", "b"): 4.0, ("u1", "c"): 3.0, ("u3", "a"): 1.0}
    decayed = _scores(
        baselines.history_scores(events, users, t1=T1, half_life_days=1.0, strengths=DEFAULT_STRENGTHS, n=10)
    )
    expected = {
        ("u1", "a"): 2**-1 + 2**-3,
        ("u1", "b"): 4 * 2**-4,
        ("u1", "c"): 3 * 2**-0.5,
        ("u3", "a"): 2**-1,
    }
    assert decayed.keys() == expected.keys()
    for key, value in expected.items():
        assert decayed[key] == pytest.approx(value, rel=1e-12), key
    top1 = baselines.history_scores(events, users, t1=T1, half_life_days=1.0, strengths=DEFAULT_STRENGTHS, n=1)
    assert _scores(top1).keys() == {("u1", "c"), ("u3", "a")}  # the decay lets the recent cart win
    with pytest.raises(ValueError, match="half_life_days"):
        decay(S.TS, t1=T1, half_life_days=0.0)


def test_popularity_is_the_same_list_for_everyone(spark, events):
    users = spark.createDataFrame([("u1",), ("u9",)], f"{S.USER_ID} string")
    got = _scores(baselines.popularity_scores(events, users, n=2))
    # distinct users: a 2 (u1, u3), b 2 (u1, u2), c 1, d 1, e 1 -> a and b (ties by item id)
    assert got == {("u1", "a"): 2.0, ("u1", "b"): 2.0, ("u9", "a"): 2.0, ("u9", "b"): 2.0}


def test_category_popularity_weighs_the_users_categories(spark, events):
    users = spark.createDataFrame([("u2",)], f"{S.USER_ID} string")
    got = _scores(baselines.category_popularity_scores(events, users, n=2))
    # u2's events: both in y -> share(y) = 1. Popular items of y: b (2 users), d (1 user).
    assert got == {("u2", "b"): 2.0, ("u2", "d"): 1.0}
    users = spark.createDataFrame([("u1",)], f"{S.USER_ID} string")
    got = _scores(baselines.category_popularity_scores(events, users, n=1))
    # u1: 3 events in x, 1 in y -> shares 0.75 and 0.25; top of x: a (2 users); top of y: b (2)
    assert got == {("u1", "a"): 0.75 * 2}


def test_time_weights_of_samples(spark):
    samples = spark.createDataFrame([("a", 0.0), ("b", 2.0), ("c", 6.0)], "item_id string, pair_recency_any double")
    got = {r[0]: r[1] for r in time_weights(samples, half_life_days=2.0).select("item_id", S.W_TIME).collect()}
    assert got == pytest.approx({"a": 1.0, "b": 0.5, "c": 0.125}, rel=1e-12)
    flat = {r[0] for r in time_weights(samples, half_life_days=None).select(S.W_TIME).collect()}
    assert flat == {1.0}
    with pytest.raises(ValueError, match="half_life_days must be > 0"):
        time_weights(samples, half_life_days=-1.0)
