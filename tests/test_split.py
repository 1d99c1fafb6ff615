"""Splits: no evaluation event in training, hand-computed cases with ties, partition independence."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError
from pyspark.sql import functions as F

from sampleimp_spark import hashing
from sampleimp_spark.schema import BEHAVIOR, ITEM_ID, TS, USER_ID
from sampleimp_spark.training.split import (
    TIE_SALT,
    SplitConfig,
    chronological_split,
    leave_last_k_split,
    mark_leave_last_k,
    split_events,
)

T0 = datetime(2024, 3, 1, tzinfo=UTC)
COLS = [USER_ID, ITEM_ID, BEHAVIOR, TS]


def _t(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def _events(spark, rows):
    return spark.createDataFrame(rows, f"{USER_ID} string, {ITEM_ID} string, {BEHAVIOR} string, {TS} timestamp")


def _rows(df) -> list[tuple]:
    # timestamps as epoch seconds: independent of the driver's local time zone
    return sorted(tuple(r) for r in df.select(USER_ID, ITEM_ID, BEHAVIOR, F.col(TS).cast("long")).collect())


def _expected(rows) -> list[tuple]:
    return sorted((u, i, b, int(t.timestamp())) for u, i, b, t in rows)


@pytest.fixture(scope="module")
def generated(spark):
    """600 events of 40 users on 6 distinct hours: many ties in time, several per user."""
    return spark.range(600).select(
        F.concat(F.lit("u"), (F.col("id") % 40).cast("string")).alias(USER_ID),
        F.concat(F.lit("i"), ((F.col("id") * 7) % 23).cast("string")).alias(ITEM_ID),
        F.element_at(
            F.array(*(F.lit(b) for b in ("view", "cart", "fav", "purchase"))), (F.col("id") % 4 + 1).cast("int")
        ).alias(BEHAVIOR),
        F.timestamp_seconds(F.lit(int(T0.timestamp())) + (F.col("id") % 6) * 3600).alias(TS),
    )


def test_chronological_split_hand_case(spark):
    rows = [
        ("u1", "a", "view", _t(-1)),  # before t0: in neither
        ("u1", "b", "view", _t(0)),  # exactly t0: train
        ("u1", "c", "cart", _t(5)),  # train
        ("u2", "a", "view", _t(10)),  # exactly t1: evaluation
        ("u2", "d", "purchase", _t(15)),  # evaluation
        ("u3", "e", "view", _t(20)),  # exactly t2: in neither
    ]
    events = _events(spark, rows)
    train, evaluation = chronological_split(events, t0=_t(0), t1=_t(10), t2=_t(20))
    assert _rows(train) == _expected([rows[1], rows[2]])
    assert _rows(evaluation) == _expected([rows[3], rows[4]])


def test_chronological_split_rejects_bad_bounds(spark):
    events = _events(spark, [("u1", "a", "view", _t(0))])
    with pytest.raises(ValueError, match="UTC offset"):
        chronological_split(events, t0=datetime(2024, 3, 1), t1=_t(1), t2=_t(2))
    with pytest.raises(ValueError, match="t0 < t1 < t2"):
        chronological_split(events, t0=_t(0), t1=_t(2), t2=_t(1))


def test_chronological_split_no_leakage(generated):
    t0, t1, t2 = _t(1), _t(3), _t(5)
    train, evaluation = chronological_split(generated, t0=t0, t1=t1, t2=t2)
    stats = (
        train.select(F.lit("train").alias("side"), TS)
        .unionByName(evaluation.select(F.lit("eval").alias("side"), TS))
        .groupBy("side")
        .agg(
            F.min(F.col(TS).cast("long")).alias("lo"),
            F.max(F.col(TS).cast("long")).alias("hi"),
            F.count(F.lit(1)).alias("n"),
        )
        .collect()
    )
    by_side = {r["side"]: r for r in stats}
    utc = {"t0": int(t0.timestamp()), "t1": int(t1.timestamp()), "t2": int(t2.timestamp())}
    # hours 1, 2 are training, 3, 4 evaluation, each hour holds 100 events
    assert by_side["train"]["lo"] == utc["t0"] and by_side["train"]["hi"] < utc["t1"]
    assert by_side["eval"]["lo"] == utc["t1"] and by_side["eval"]["hi"] < utc["t2"]
    # disjoint by the bounds above; together exactly the events of [t0, t2)
    assert (by_side["train"]["n"], by_side["eval"]["n"]) == (200, 200)


def test_leave_last_k_hand_case_with_ties(spark):
    seed = 7
    rows = [
        # u1: 4 distinct times, k=2 -> the two newest go to evaluation
        ("u1", "a", "view", _t(1)),
        ("u1", "b", "view", _t(2)),
        ("u1", "c", "cart", _t(3)),
        ("u1", "d", "purchase", _t(4)),
        # u2: exactly k events -> all stay in training
        ("u2", "a", "view", _t(1)),
        ("u2", "b", "view", _t(2)),
        # u3: a tie *inside* the held-out block: both tied events go to evaluation
        ("u3", "a", "view", _t(1)),
        ("u3", "b", "view", _t(5)),
        ("u3", "c", "view", _t(5)),
        # u4: a tie *across* the cut (newest is d, then b and c tied): the hash decides
        ("u4", "a", "view", _t(1)),
        ("u4", "b", "view", _t(5)),
        ("u4", "c", "cart", _t(5)),
        ("u4", "d", "view", _t(6)),
        # u5: an exact duplicate row is one event: both copies land in evaluation together
        ("u5", "a", "view", _t(1)),
        ("u5", "b", "view", _t(2)),
        ("u5", "c", "view", _t(3)),
        ("u5", "c", "view", _t(3)),
    ]
    events = _events(spark, rows)
    train, evaluation = leave_last_k_split(events, k=2, seed=seed)

    # The documented rule for u4: of the tied (b, c) the larger hash draw counts as newer.
    draws = dict(
        events.where(F.col(USER_ID) == "u4")
        .select(ITEM_ID, hashing.uniform(seed, *(F.col(c) for c in COLS), salt=TIE_SALT).alias("u"))
        .collect()
    )
    newer_of_tie = "b" if draws["b"] > draws["c"] else "c"
    u4_eval = {"d", newer_of_tie}

    expected_eval = [r for r in rows if (r[0], r[1]) in {("u1", "c"), ("u1", "d"), ("u3", "b"), ("u3", "c")}]
    expected_eval += [r for r in rows if r[0] == "u4" and r[1] in u4_eval]
    expected_eval += [r for r in rows if r[0] == "u5" and r[1] in {"b", "c"}]
    expected_train = [r for r in rows if r not in expected_eval]
    assert _rows(evaluation) == _expected(expected_eval)
    assert _rows(train) == _expected(expected_train)


def test_leave_last_k_rejects_bad_k(spark):
    events = _events(spark, [("u1", "a", "view", _t(0))])
    with pytest.raises(ValueError, match="at least 1"):
        leave_last_k_split(events, k=0, seed=1)


def _tagged(df, *, k: int, seed: int):
    train, evaluation = leave_last_k_split(df, k=k, seed=seed)
    return train.withColumn("side", F.lit("train")).unionByName(evaluation.withColumn("side", F.lit("eval")))


def test_leave_last_k_invariants(generated):
    k = 3
    tagged = _tagged(generated, k=k, seed=11)
    per_user = (
        tagged.groupBy(USER_ID)
        .agg(
            F.count_if(F.col("side") == "eval").alias("n_eval"),
            F.count(F.lit(1)).alias("n"),
            F.max(F.when(F.col("side") == "train", F.col(TS))).alias("newest_train"),
            F.min(F.when(F.col("side") == "eval", F.col(TS))).alias("oldest_eval"),
        )
        .collect()
    )
    assert len(per_user) == 40
    for r in per_user:
        # every user here has 15 distinct events (> k): exactly k held out
        assert r["n"] == 15 and r["n_eval"] == k
        # no held-out event is older than a training event of the same user (ties may be equal)
        assert r["newest_train"] <= r["oldest_eval"]
    # The two sides together are the input as a multiset; the input has no duplicate rows, so
    # no event is on both sides.
    both = tagged.drop("side")
    assert both.exceptAll(generated).unionByName(generated.exceptAll(both)).count() == 0


def test_leave_last_k_independent_of_partitioning(generated):
    def split_rows(df, seed):
        return sorted(tuple(r) for r in _tagged(df, k=2, seed=seed).select("side", *COLS).collect())

    reference = split_rows(generated, 3)
    assert split_rows(generated.repartition(7, ITEM_ID), 3) == reference
    assert split_rows(generated.coalesce(1).orderBy(F.col(TS).desc(), F.col(ITEM_ID).desc()), 3) == reference
    # ties across the cut are common here, so another seed breaks some of them differently
    assert split_rows(generated, 4) != reference


def test_mark_leave_last_k_flag(spark):
    events = _events(spark, [("u1", "a", "view", _t(1)), ("u1", "b", "view", _t(2)), ("u2", "a", "view", _t(1))])
    flags = {
        (r[USER_ID], r[ITEM_ID]): r["held_out"]
        for r in mark_leave_last_k(events, k=1, seed=0, flag_col="held_out").collect()
    }
    assert flags == {("u1", "a"): False, ("u1", "b"): True, ("u2", "a"): False}


def test_split_events_dispatch_and_config(spark):
    rows = [
        ("u1", "a", "view", _t(-1)),  # before t0: dropped by both methods
        ("u1", "b", "view", _t(1)),
        ("u1", "c", "cart", _t(2)),
        ("u1", "d", "view", _t(12)),
    ]
    events = _events(spark, rows)
    bounds = {"t0": _t(0), "t1": _t(10), "t2": _t(20)}
    train, evaluation = split_events(events, cfg=SplitConfig(), **bounds)
    assert (_rows(train), _rows(evaluation)) == (_expected(rows[1:3]), _expected(rows[3:]))
    train, evaluation = split_events(events, cfg=SplitConfig(method="leave_last_k", k=2), **bounds)
    assert (_rows(train), _rows(evaluation)) == (_expected(rows[1:2]), _expected(rows[2:]))
    with pytest.raises(ValidationError):
        SplitConfig(method="random")
    with pytest.raises(ValidationError):
        SplitConfig(k=0)
