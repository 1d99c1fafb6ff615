"""Features: hand-computed values on tiny literal events, windows, labels, leakage, shards."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from chispa import assert_approx_df_equality, assert_df_equality
from conftest import stored_rdds
from pyspark.sql import functions as F

from sampleimp_spark import schema as S
from sampleimp_spark.features.assemble import build_samples, build_window
from sampleimp_spark.features.behavior import shared_feature_groups
from sampleimp_spark.features.frequencies import class_frequencies
from sampleimp_spark.features.shards import shard_map
from sampleimp_spark.windows import Windows, resolve_windows

W = Windows(datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 3, 8, tzinfo=UTC), datetime(2024, 3, 10, tzinfo=UTC))
EVENT_DDL = "user_id string, item_id string, category_id string, behavior string, ts timestamp, price double"
FEATURE_EVENTS = [
    ("u1", "i1", "c1", "view", datetime(2024, 3, 1, 0, 0, 0), 10.0),  # exactly t0: inside
    ("u1", "i1", "c1", "view", datetime(2024, 3, 2, 10, 0, 0), 10.0),
    ("u1", "i1", "c1", "cart", datetime(2024, 3, 2, 10, 5, 0), 10.0),
    ("u1", "i1", "c1", "purchase", datetime(2024, 3, 7, 23, 59, 59), 10.0),
    ("u1", "i2", "c1", "view", datetime(2024, 3, 5, 12, 0, 0), 5.0),
    ("u2", "i3", "c2", "fav", datetime(2024, 3, 4, 8, 0, 0), None),  # a user with a single event
    ("u3", "i9", "c1", "view", datetime(2024, 2, 29, 23, 59, 59), 1.0),  # before t0: ignored
]
LABEL_EVENTS = [
    ("u2", "i1", "c1", "view", datetime(2024, 3, 8, 0, 0, 0), 10.0),  # exactly t1: label window only
    ("u1", "i1", "c1", "view", datetime(2024, 3, 8, 9, 0, 0), 10.0),
    ("u1", "i2", "c1", "purchase", datetime(2024, 3, 9, 10, 0, 0), 5.0),
    ("u1", "i1", "c1", "purchase", datetime(2024, 3, 10, 0, 0, 0), 10.0),  # exactly t2: outside
]


def _events(spark, rows):
    df = spark.createDataFrame(rows, EVENT_DDL)
    return df.withColumns({S.SESSION_ID: F.lit(None).cast("string"), S.CATEGORY_PATH: F.lit(None).cast("string")})


@pytest.fixture(scope="module")
def samples(spark):
    out, _ = build_samples(_events(spark, FEATURE_EVENTS + LABEL_EVENTS), windows=W, tz="UTC", session_gap_minutes=30.0)
    return out.localCheckpoint()


def test_samples_are_pairs_of_the_feature_window_with_labels(spark, samples):
    got = samples.select(S.USER_ID, S.ITEM_ID, S.CATEGORY_ID, S.LABEL_PURCHASE, S.LABEL_INTENT)
    expected = spark.createDataFrame(
        [("u1", "i1", "c1", 0, "view"), ("u1", "i2", "c1", 1, "purchase"), ("u2", "i3", "c2", 0, "none")],
        "user_id string, item_id string, category_id string, label_purchase int, label_intent string",
    )
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)


def test_pair_features_by_hand(spark, samples):
    cols = [
        "pair_n_events",
        "pair_n_view",
        "pair_n_cart",
        "pair_n_purchase",
        "pair_cart_per_view",
        "pair_purchase_per_view",
        "pair_purchase_per_cart",
        "pair_fav_per_view",
        "pair_recency_any",
        "pair_recency_view",
        "pair_recency_fav",
        "pair_active_days",
        "pair_hour_0",
        "pair_hour_2",
        "pair_hour_5",
        "pair_dow_5",
        "pair_dow_6",
        "pair_dow_7",
        "pair_sessions",
        "pair_session_minutes",
    ]
    got = samples.where("user_id = 'u1' AND item_id = 'i1'").select(*cols)
    # 2024-03-01 is a Friday (dayofweek 6), 03-02 a Saturday (7), 03-07 a Thursday (5).
    # u1's 30-minute sessions: [03-01 00:00], [03-02 10:00, 10:05], [03-05 12:00], [03-07 23:59:59];
    # the pair touches three of them, lasting 0, 5 and 0 minutes.
    expected = spark.createDataFrame(
        [
            (
                4.0,
                2.0,
                1.0,
                1.0,
                0.5,
                0.5,
                1.0,
                0.0,
                1 / 86400,
                5 + 14 / 24,
                7.0,
                3.0,
                0.25,
                0.5,
                0.25,
                0.25,
                0.25,
                0.5,
                3.0,
                5 / 3,
            )
        ],
        ", ".join(f"{c} double" for c in cols),
    )
    assert_approx_df_equality(got, expected, 1e-9, ignore_nullable=True)


def test_single_event_user_and_zero_denominators(spark, samples):
    cols = [
        "user_n_events",
        "user_n_fav",
        "user_cart_per_view",
        "user_purchase_per_cart",
        "user_recency_fav",
        "user_recency_view",
        "user_recency_purchase",
        "user_active_days",
        "user_sessions",
        "user_session_minutes",
        "user_hour_2",
        "item_n_purchase",
        "item_purchase_per_view",
    ]
    got = samples.where("user_id = 'u2'").select(*cols)
    expected = spark.createDataFrame(
        [(1.0, 1.0, 0.0, 0.0, 4 - 8 / 24, 7.0, 7.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0)],
        ", ".join(f"{c} double" for c in cols),
    )
    assert_approx_df_equality(got, expected, 1e-9, ignore_nullable=True)


def test_user_item_category_and_price_features(spark, samples):
    cols = [
        S.USER_ID,
        S.ITEM_ID,
        "user_n_events",
        "user_cart_per_view",
        "user_sessions",
        "user_session_minutes",
        "item_n_events",
        "cat_n_events",
        "cat_n_purchase",
        "item_price",
        "item_price_rel",
        "item_has_price",
        "user_price_rel",
        "cat_median_price",
        "pair_price_rel",
    ]
    got = samples.select(*cols)
    # c1's item prices are i1 = 10 and i2 = 5: percentile_approx's median of two values is the lower one.
    expected = spark.createDataFrame(
        [
            ("u1", "i1", 5.0, 1 / 3, 4.0, 1.25, 4.0, 5.0, 1.0, 10.0, 2.0, 1.0, 9 / 5, 5.0, 2.0),
            ("u1", "i2", 5.0, 1 / 3, 4.0, 1.25, 1.0, 5.0, 1.0, 5.0, 1.0, 1.0, 9 / 5, 5.0, 1.0),
            ("u2", "i3", 1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0),
        ],
        "user_id string, item_id string, " + ", ".join(f"{c} double" for c in cols[2:]),
    )
    assert_approx_df_equality(got, expected, 1e-9, ignore_row_order=True, ignore_nullable=True)


def test_no_feature_is_null(samples):
    assert samples.where(" OR ".join(f"`{c}` IS NULL" for c in samples.columns if c != S.CATEGORY_PATH)).count() == 0


def test_profiles_use_the_source_local_time(spark):
    # 2024-03-01 20:30 UTC is 04:30 on Saturday 03-02 in Shanghai.
    ev = _events(spark, [("u1", "i1", "c1", "view", datetime(2024, 3, 1, 20, 30), None)])
    got, _ = build_samples(ev, windows=W, tz="Asia/Shanghai", session_gap_minutes=30.0)
    row = got.select("pair_hour_1", "pair_dow_7", "pair_dow_6", "pair_active_days").first()
    assert tuple(row) == (1.0, 1.0, 0.0, 1.0)


@pytest.mark.slow
def test_no_leakage_label_window_events_change_no_feature(spark, samples):
    """Adding, removing or changing label-window events (incl. at t1) leaves every feature as it was."""
    changed = [
        ("u1", "i1", "c1", "purchase", datetime(2024, 3, 8, 0, 0, 0), 99.0),  # new, exactly at t1
        ("u2", "i3", "c2", "cart", datetime(2024, 3, 9, 1, 0, 0), -1.0),  # new
        ("u1", "i2", "c1", "view", datetime(2024, 3, 9, 10, 0, 0), 5.0),  # changed behavior
        ("u9", "i1", "c1", "view", datetime(2024, 3, 8, 12, 0, 0), 10.0),  # new user
    ]  # and LABEL_EVENTS' other rows are removed
    other, _ = build_samples(_events(spark, FEATURE_EVENTS + changed), windows=W, tz="UTC", session_gap_minutes=30.0)
    features = [c for c in samples.columns if c not in (S.LABEL_PURCHASE, S.LABEL_INTENT)]
    assert_df_equality(other.select(*features), samples.select(*features), ignore_row_order=True)
    labels = {
        (r[0], r[1]): (r[2], r[3])
        for r in other.select(S.USER_ID, S.ITEM_ID, S.LABEL_PURCHASE, S.LABEL_INTENT).collect()
    }
    assert labels == {("u1", "i1"): (1, "purchase"), ("u1", "i2"): (0, "view"), ("u2", "i3"): (0, "cart")}


def test_windows_are_derived_on_local_midnights(spark):
    ev = _events(
        spark,
        [
            ("u", "i", "c", "view", datetime(2017, 11, 24, 16, 0, 17), None),
            ("u", "i", "c", "view", datetime(2017, 12, 3, 15, 59, 23), None),
        ],
    )
    w = resolve_windows(ev, t0=None, t1=None, t2=None, label_days=2, feature_days=None, tz="Asia/Shanghai")
    # Shanghai midnights are 16:00 UTC the day before.
    assert (w.t0, w.t1, w.t2) == (
        datetime(2017, 11, 24, 16, tzinfo=UTC),
        datetime(2017, 12, 1, 16, tzinfo=UTC),
        datetime(2017, 12, 3, 16, tzinfo=UTC),
    )
    assert w.window_id == "20171124T160000Z_20171201T160000Z_20171203T160000Z"
    fixed = resolve_windows(ev, t0=None, t1=None, t2=None, label_days=1, feature_days=3, tz="UTC")
    assert (fixed.t1 - fixed.t0).days == 3 and (fixed.t2 - fixed.t1).days == 1


def test_small_categories_pool_into_their_parent_or_other(spark):
    rows = (
        [("big", "electronics > phone")] * 5
        + [("tv", "electronics > video > tv")] * 2
        + [("proj", "electronics > video > projector")] * 2
        + [("kettle", "appliances > kitchen > kettle")] * 1
        + [("loose", None)] * 3
        # Amazon-like: one category id whose items have different third levels
        + [("H&G", "Mag > H&G > Garden")] * 1
        + [("H&G", "Mag > H&G > Home")] * 1
        + [("Sci", "Mag > Sci > Space")] * 2
    )
    samples = spark.createDataFrame(rows, "category_id string, category_path string").withColumn(
        S.WINDOW_ID, F.lit("w")
    )
    got = shard_map(samples, min_shard_rows=4).select(S.CATEGORY_ID, S.SHARD, "rule", "samples", "shard_samples")
    expected = spark.createDataFrame(
        [
            ("big", "big", "own", 5, 5),
            ("tv", "pool:electronics > video", "parent", 2, 4),
            ("proj", "pool:electronics > video", "parent", 2, 4),
            ("H&G", "pool:Mag", "parent", 2, 4),
            ("Sci", "pool:Mag", "parent", 2, 4),
            ("kettle", "_other", "other", 1, 4),
            ("loose", "_other", "other", 3, 4),
        ],
        "category_id string, shard string, rule string, samples long, shard_samples long",
    )
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)


def test_class_frequencies_list_every_class_with_shares(spark):
    samples = spark.createDataFrame(
        [("a", 1, "purchase"), ("a", 0, "none"), ("a", 0, "view"), ("b", 0, "none")],
        "shard string, label_purchase int, label_intent string",
    ).withColumn(S.WINDOW_ID, F.lit("w"))
    events = spark.createDataFrame(
        [("a", "view"), ("a", "view"), ("a", "cart"), ("b", "view")], "shard string, behavior string"
    ).withColumn(S.WINDOW_ID, F.lit("w"))
    got = class_frequencies(samples, events, source="s").drop(S.WINDOW_ID, S.SOURCE)
    rows = {(r[0], r[1], r[2]): (r[3], r[4]) for r in got.collect()}
    assert len(rows) == 3 * (6 + 2 + 6)
    assert rows[("a", "purchase", "1")] == (1, pytest.approx(1 / 3))
    assert rows[("b", "purchase", "1")] == (0, 0.0)
    assert rows[("a", "behavior", "cart")] == (1, pytest.approx(1 / 3))
    assert rows[("_all", "behavior", "view")] == (3, pytest.approx(3 / 4))
    assert rows[("_all", "intent", "none")] == (2, pytest.approx(0.5))
    assert rows[("_all", "intent", "click")] == (0, 0.0)
    for shard, kind, total in got.groupBy(S.SHARD, S.FREQ_KIND).agg(F.sum(S.FREQ_SHARE)).collect():
        assert total == pytest.approx(1.0), (shard, kind)


def test_behavior_frequencies_count_every_feature_window_event_once(spark):
    """The behavior counts come from the samples' per-pair counts: each feature-window event once,
    the event before t0 and the label-window events not at all."""
    events = _events(spark, FEATURE_EVENTS + LABEL_EVENTS)
    before = stored_rdds(spark)
    window = build_window(events, windows=W, tz="UTC", source="s", session_gap_minutes=30.0, min_shard_rows=1)
    freqs = window.class_frequencies.where(F.col(S.FREQ_KIND) == "behavior")
    got = {(r[S.SHARD], r[S.FREQ_CLASS]): r[S.FREQ_COUNT] for r in freqs.collect()}
    window.release()
    assert stored_rdds(spark).keys() - before.keys() == set()  # the samples and the shard map
    assert {b: got[(S.ALL_SHARDS, b)] for b in S.ALL_BEHAVIORS} == {
        "view": 3,
        "click": 0,
        "fav": 1,
        "cart": 1,
        "purchase": 1,
        "remove_from_cart": 0,
    }
    assert got[("c1", "view")] == 3 and got[("c1", "purchase")] == 1 and got[("c2", "fav")] == 1
    assert got[("c2", "view")] == 0
    assert sum(got[(S.ALL_SHARDS, b)] for b in S.ALL_BEHAVIORS) == 6


def test_active_days_span_more_than_one_mask_word(spark):
    """Active days are bits of 63-day words: a 150-day window needs three; days on both sides of
    a word boundary, and one day twice, count once each."""
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    windows = Windows(t0, datetime(2024, 5, 30, tzinfo=UTC), datetime(2024, 6, 1, tzinfo=UTC))
    days = [0, 0, 62, 63, 125, 126, 149]
    rows = [("u1", "i1", "c1", "view", datetime(2024, 1, 1, 12) + timedelta(days=d), None) for d in days]
    out, _ = build_samples(_events(spark, rows), windows=windows, tz="UTC", session_gap_minutes=30.0)
    got = out.select("user_active_days", "pair_active_days", "pair_n_events", "pair_sessions").first()
    assert tuple(got) == (6.0, 6.0, 7.0, 6.0)


def test_shared_feature_groups_are_the_user_item_and_category_features_in_order():
    feats = ["pair_n_view", "user_n_view", "item_n_view", "user_sessions", "cat_n_view", "pair_sessions", "price"]
    assert shared_feature_groups(feats) == [["user_n_view", "user_sessions"], ["item_n_view"], ["cat_n_view"]]
    assert shared_feature_groups(["pair_n_view"]) == []


@pytest.mark.slow
def test_several_windows_in_one_pass_equal_each_window_alone(spark):
    """Windows built together (each event joins every window it falls in) give exactly the rows of
    each window built on its own: features, labels, shards and class frequencies."""
    day = timedelta(days=1)
    rows = [
        (
            f"u{u}",
            f"i{(u * 7 + d) % 5}",
            f"c{(u + d) % 3}",
            ["view", "cart", "purchase", "fav"][(u + d) % 4],
            datetime(2024, 3, 1, 9) + d * day + timedelta(minutes=13 * u),
            float(u + 1),
        )
        for u in range(8)
        for d in range(9)
    ]
    events = _events(spark, rows)
    first = Windows(
        datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 3, 5, tzinfo=UTC), datetime(2024, 3, 6, tzinfo=UTC)
    )
    wins = [first, first.shifted(day), first.shifted(2 * day)]
    kwargs = {"tz": "UTC", "source": "s", "session_gap_minutes": 30.0, "min_shard_rows": 10}
    together = build_window(events, windows=wins, **kwargs)
    alone = [build_window(events, windows=w, **kwargs) for w in wins]
    try:
        expected = alone[0].samples
        for part in alone[1:]:
            expected = expected.unionByName(part.samples)
        assert together.samples.count() > 60
        assert_df_equality(together.samples, expected, ignore_row_order=True, ignore_nullable=True)
        freqs = alone[0].class_frequencies
        for part in alone[1:]:
            freqs = freqs.unionByName(part.class_frequencies)
        assert_df_equality(together.class_frequencies, freqs, ignore_row_order=True, ignore_nullable=True)
    finally:
        together.release()
        for part in alone:
            part.release()
