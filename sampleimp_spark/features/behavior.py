"""Behavior features of users, items, categories and (user, item) pairs over the feature window.

:func:`prepare_events` keeps the feature window's events and adds their local date, 4-hour bucket,
day of week and session; :func:`entity_aggregates` sums them per entity and :func:`entity_columns`
turns the sums into features (columns ``user_*``, ``item_*``, ``cat_*``, ``pair_*``): counts per
behavior, conversion ratios, recencies, active days, hour and day-of-week shares and sessions;
:func:`price_features` the price levels. Native Spark
functions only, everything relative to ``t1``; no label-window event is read.

Guarantee: every feature is a non-null double. An undefined value takes one neutral value
(:func:`neutral_value`): a ratio with a zero denominator is 0, the recency of a behavior that never
happened is the feature window's length in days, a share over no events is 0, and a relative
price without prices is 1. Definitions: ``docs/features.md``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from zoneinfo import ZoneInfo

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from sampleimp_spark import schema as S
from sampleimp_spark.windows import Windows

HOUR_BUCKETS = S.HOUR_BUCKETS
COUNTED_BEHAVIORS: tuple[str, ...] = S.ALL_BEHAVIORS
RATIOS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "cart_per_view": (("cart",), ("view", "click")),
    "fav_per_view": (("fav",), ("view", "click")),
    "purchase_per_view": (("purchase",), ("view", "click")),
    "purchase_per_cart": (("purchase",), ("cart",)),
}
ENTITY_PREFIXES = ("user", "item", "cat", "pair")
#: Entities whose features many samples share (every sample of a user has the user's features);
#: a pair's features are its one sample's own.
SHARED_ENTITIES = ("user", "item", "cat")

# Columns prepare_events adds (internal to the features stage).
LOCAL_DATE = "_local_date"
HOUR_BUCKET = "_hour_bucket"
DOW = "_dow"
SESSION = "_session"
SESSION_MICROS = "_session_micros"  # the session's length, first to last event
DAY = "_day"  # local days since the local date of t0 (0, 1, ...)
T1 = "_t1"  # the end of the event's feature window (an event belongs to every window it falls in)
T0_DATE = "_t0_date"  # the local date of the window's t0

_DAY_BITS = 63  # days per word of the active-day masks (bit 63 stays clear: masks stay positive)


def _day_words(feature_days: float) -> int:
    """Words of the active-day mask: the feature window spans at most ``ceil(days) + 2`` local dates."""
    return -(-(math.ceil(feature_days) + 2) // _DAY_BITS)


def window_table(spark: SparkSession, windows: Sequence[Windows], *, tz: str) -> DataFrame:
    """One small row per window: ``window_id``, its bounds and the local date of ``t0``."""
    rows = [(w.window_id, w.t0, w.t1, w.t2, w.t0.astimezone(ZoneInfo(tz)).date()) for w in windows]
    schema = f"{S.WINDOW_ID} string, _t0 timestamp, {T1} timestamp, _t2 timestamp, {T0_DATE} date"
    return spark.createDataFrame(rows, schema)


def equal_feature_days(windows: Sequence[Windows]) -> float:
    """The feature-window length shared by ``windows``.

    Raises:
        ValueError: the windows have different feature-window lengths.
    """
    days = {round(w.feature_days, 9) for w in windows}
    if len(days) != 1:
        raise ValueError(f"windows built together need equal feature-window lengths, got {sorted(days)} days")
    return windows[0].feature_days


def window_events(events: DataFrame, windows: Sequence[Windows], *, tz: str = "UTC") -> DataFrame:
    """Feature-window events of every window: an event once per window it falls in, with its
    ``window_id``, ``_t1`` and the local date of the window's ``t0``."""
    table = window_table(events.sparkSession, windows, tz=tz)
    inside = (F.col(S.TS) >= F.col("_t0")) & (F.col(S.TS) < F.col(T1))
    return events.join(F.broadcast(table), inside).drop("_t0", "_t2")


def prepare_events(events: DataFrame, *, windows: Sequence[Windows], tz: str, session_gap_minutes: float) -> DataFrame:
    """:func:`window_events` with local date (and day number), hour bucket, day of week, a session
    key and the session's length in microseconds."""
    fe = window_events(events, windows, tz=tz)
    local = F.from_utc_timestamp(F.col(S.TS), tz)
    fe = fe.withColumns(
        {
            LOCAL_DATE: F.to_date(local),
            HOUR_BUCKET: F.floor(F.hour(local) / (24 // HOUR_BUCKETS)).cast("int"),
            DOW: F.dayofweek(local),
        }
    )
    fe = fe.withColumn(DAY, F.datediff(F.col(LOCAL_DATE), F.col(T0_DATE)))
    # Gap sessions: a user's events in time order; a gap over the limit starts a new session.
    order = Window.partitionBy(S.WINDOW_ID, S.USER_ID).orderBy(S.TS, S.ITEM_ID, S.BEHAVIOR)
    gap = F.unix_seconds(F.col(S.TS)) - F.unix_seconds(F.lag(S.TS).over(order))
    new_session = (gap.isNull() | (gap > session_gap_minutes * 60)).cast("int")
    index = F.sum(new_session).over(order.rowsBetween(Window.unboundedPreceding, Window.currentRow))
    fe = fe.withColumn("_gap_session", F.concat(F.col(S.USER_ID), F.lit("#"), index.cast("string")))
    own = F.concat(F.lit("s:"), F.col(S.SESSION_ID))
    fe = fe.withColumn(SESSION, F.coalesce(own, F.col("_gap_session"))).drop("_gap_session")
    # Every event carries its session's length (first to last event), for the session features.
    span = Window.partitionBy(S.WINDOW_ID, SESSION)
    micros = F.unix_micros(F.max(S.TS).over(span)) - F.unix_micros(F.min(S.TS).over(span))
    return fe.withColumn(SESSION_MICROS, micros)


def _safe_ratio(num: Column, den: Column) -> Column:
    return F.when(den > 0, num / den).otherwise(F.lit(0.0))


def _days_before(t1: Column, ts: Column, default: float) -> Column:
    days = (F.unix_micros(t1) - F.unix_micros(ts)) / 86_400_000_000.0
    return F.coalesce(days, F.lit(float(default)))


def event_counts() -> dict[str, Column]:
    """The per-event conditions counted per entity: behaviors, hour buckets, days of week."""
    b = F.col(S.BEHAVIOR)
    counts: dict[str, Column] = {f"n_{name}": b == name for name in COUNTED_BEHAVIORS}
    counts |= {f"_hour_{h}": F.col(HOUR_BUCKET) == h for h in range(HOUR_BUCKETS)}
    counts |= {f"_dow_{d}": F.col(DOW) == d for d in range(1, 8)}
    assert tuple(counts) == S.ENTITY_COUNT_COLUMNS
    return counts


def event_lasts() -> dict[str, Column]:
    """The per-event times whose maximum per entity gives the recencies."""
    b = F.col(S.BEHAVIOR)
    lasts: dict[str, Column] = {"_last_any": F.col(S.TS)}
    lasts |= {f"_last_{name}": F.when(b == name, F.col(S.TS)) for name in COUNTED_BEHAVIORS}
    assert tuple(lasts) == S.ENTITY_LAST_COLUMNS
    return lasts


def entity_aggregates(fe: DataFrame, keys: Sequence[str], *, feature_days: float) -> DataFrame:
    """Per window and ``keys``: ``_t1``, ``n_events``, the :func:`event_counts`, the
    :func:`event_lasts`, ``_active_days``, ``_sessions`` and ``_session_minutes`` (the mean length
    of the sessions touching the entity).

    Two aggregations, no join: per (``keys``, session), then per ``keys``. The second counts the
    sessions touching the entity and averages their lengths on the way, and the active days are
    the set bits of a per-entity mask of local days (``bit_or``), so neither needs a
    count-distinct (Spark plans each as an extra aggregation and shuffle).
    """
    counts, lasts = event_counts(), event_lasts()
    keys = [S.WINDOW_ID, *keys]
    bit = F.expr(f"shiftleft(1L, pmod({DAY}, {_DAY_BITS}))")
    masks = {f"_days_{w}": F.when(F.floor(F.col(DAY) / _DAY_BITS) == w, bit) for w in range(_day_words(feature_days))}
    per_session = fe.groupBy(*keys, SESSION).agg(
        F.max(T1).alias(T1),
        F.count(F.lit(1)).alias("n_events"),
        *(F.count_if(c).alias(k) for k, c in counts.items()),
        *(F.max(c).alias(k) for k, c in lasts.items()),
        *(F.bit_or(c).alias(k) for k, c in masks.items()),
        F.max(SESSION_MICROS).alias("_micros"),
    )
    agg = per_session.groupBy(*keys).agg(
        F.max(T1).alias(T1),
        *(F.sum(k).alias(k) for k in ("n_events", *counts)),
        *(F.max(k).alias(k) for k in lasts),
        *(F.bit_or(k).alias(k) for k in masks),
        F.count(F.lit(1)).alias("_sessions"),
        F.sum("_micros").alias("_micros"),
    )
    agg = agg.withColumn("_session_minutes", mean_minutes(F.col("_micros"), F.col("_sessions"))).drop("_micros")
    active_days = sum((F.bit_count(F.coalesce(F.col(k), F.lit(0).cast("long"))) for k in masks), F.lit(0))
    return agg.withColumn("_active_days", active_days).drop(*masks)


def mean_minutes(micros: Column, sessions: Column) -> Column:
    """The mean session length in minutes from the sessions' total microseconds (a long: exact in
    any order of summation, so every way of computing it gives the same double)."""
    return micros / 60_000_000.0 / sessions


def entity_columns(agg: DataFrame, keys: Sequence[str], prefix: str, *, feature_days: float) -> DataFrame:
    """The ``prefix_*`` feature columns of :func:`entity_aggregates` (or of the same aggregates
    assembled from per-day partials)."""
    keys = [S.WINDOW_ID, *keys]
    t1 = F.col(T1)
    n = F.col("n_events")
    out: list[Column] = [F.col(k) for k in keys]
    out.append(n.cast("double").alias(f"{prefix}_n_events"))
    out += [F.col(f"n_{name}").cast("double").alias(f"{prefix}_n_{name}") for name in COUNTED_BEHAVIORS]
    for ratio, (nums, dens) in RATIOS.items():
        num = sum((F.col(f"n_{x}") for x in nums), F.lit(0))
        den = sum((F.col(f"n_{x}") for x in dens), F.lit(0))
        out.append(_safe_ratio(num.cast("double"), den.cast("double")).alias(f"{prefix}_{ratio}"))
    out.append(_days_before(t1, F.col("_last_any"), feature_days).alias(f"{prefix}_recency_any"))
    out += [
        _days_before(t1, F.col(f"_last_{name}"), feature_days).alias(f"{prefix}_recency_{name}") for name in S.BEHAVIORS
    ]
    out.append(F.col("_active_days").cast("double").alias(f"{prefix}_active_days"))
    out += [_safe_ratio(F.col(f"_hour_{h}"), n).alias(f"{prefix}_hour_{h}") for h in range(HOUR_BUCKETS)]
    out += [_safe_ratio(F.col(f"_dow_{d}"), n).alias(f"{prefix}_dow_{d}") for d in range(1, 8)]
    out.append(F.col("_sessions").cast("double").alias(f"{prefix}_sessions"))
    out.append(F.col("_session_minutes").alias(f"{prefix}_session_minutes"))
    return agg.select(*out)


def category_counts(fe: DataFrame) -> DataFrame:
    """``(window_id, item_id, category_id, n, category_path)``: events per item and category."""
    return fe.groupBy(S.WINDOW_ID, S.ITEM_ID, S.CATEGORY_ID).agg(
        F.count(F.lit(1)).alias("n"), F.max(S.CATEGORY_PATH).alias(S.CATEGORY_PATH)
    )


def item_categories(counts: DataFrame) -> DataFrame:
    """``(window_id, item_id, category_id, category_path)``: each item's most frequent category in
    the window, from :func:`category_counts`.

    Items normally have one category; where the log disagrees with itself, the most frequent
    category wins and ties go to the larger id, so the choice is deterministic.
    """
    best = counts.groupBy(S.WINDOW_ID, S.ITEM_ID).agg(F.max(F.struct("n", S.CATEGORY_ID, S.CATEGORY_PATH)).alias("b"))
    return best.select(
        S.WINDOW_ID,
        S.ITEM_ID,
        F.col(f"b.{S.CATEGORY_ID}").alias(S.CATEGORY_ID),
        F.col(f"b.{S.CATEGORY_PATH}").alias(S.CATEGORY_PATH),
    )


#: Prices are summed as decimals: exact in any order, so an item's mean price is the same double
#: however its events are grouped (by window, or by day and then window).
PRICE_SUM_TYPE = "decimal(38,9)"


def price_sums(fe: DataFrame) -> DataFrame:
    """``(window_id, item_id, price_sum, price_n)`` over the events that carry a price."""
    priced = fe.where(F.col(S.PRICE).isNotNull())
    return priced.groupBy(S.WINDOW_ID, S.ITEM_ID).agg(
        F.sum(F.col(S.PRICE).cast(PRICE_SUM_TYPE)).alias("price_sum"), F.count(F.lit(1)).alias("price_n")
    )


def price_features(
    items: DataFrame, prices: DataFrame, pair_events: DataFrame
) -> tuple[DataFrame, DataFrame, DataFrame]:
    """Item, user and category price levels per window (see the module docstring for the null rule).

    Args:
        items: :func:`item_categories`.
        prices: :func:`price_sums`.
        pair_events: ``(window_id, user_id, item_id, n_events)``: a user's price level is the mean
            relative price of the items of her events.

    Returns:
        ``(item_prices, user_prices, category_prices)`` keyed by window and item, user, category.
    """
    w, item, user, cat = S.WINDOW_ID, S.ITEM_ID, S.USER_ID, S.CATEGORY_ID
    item_price = prices.select(w, item, (F.col("price_sum").cast("double") / F.col("price_n")).alias("item_price"))
    priced = items.join(item_price, [w, item])
    medians = priced.groupBy(w, cat).agg(F.percentile_approx("item_price", 0.5).alias("cat_median_price"))
    item_rel = priced.join(medians, [w, cat]).select(
        w, item, "item_price", _safe_ratio(F.col("item_price"), F.col("cat_median_price")).alias("item_price_rel")
    )
    items_out = (
        items.select(w, item)
        .join(item_rel, [w, item], "left")
        .select(
            w,
            item,
            F.coalesce("item_price", F.lit(0.0)).alias("item_price"),
            F.coalesce(F.when(F.col("item_price") > 0, F.col("item_price_rel")), F.lit(1.0)).alias("item_price_rel"),
            F.col("item_price").isNotNull().cast("double").alias("item_has_price"),
        )
    )
    n = F.col("n_events")
    user_rel = (
        pair_events.join(item_rel, [w, item])
        .groupBy(w, user)
        .agg((F.sum(n * F.col("item_price_rel")) / F.sum(n)).alias("user_price_rel"))
    )
    users_out = pair_events.select(w, user).distinct().join(user_rel, [w, user], "left").fillna(1.0, ["user_price_rel"])
    cats_out = items.select(w, cat).distinct().join(medians, [w, cat], "left").fillna(0.0, ["cat_median_price"])
    return items_out, users_out, cats_out


def neutral_value(feature: str, *, feature_days: float) -> float:
    """The value a feature takes when it is undefined (the module docstring's one rule).

    For an entity with no events: ``*_recency_*`` is the feature window's length in days, a
    relative price (``*_price_rel``) is 1, and everything else (counts, ratios, shares, active
    days, sessions, session minutes, ``item_price``, ``cat_median_price``, ``item_has_price``)
    is 0.
    """
    if "_recency_" in feature:
        return float(feature_days)
    if feature.endswith("_price_rel"):
        return 1.0
    return 0.0


def shared_feature_groups(features: Sequence[str]) -> list[list[str]]:
    """``features`` grouped by the shared entity they describe (:data:`SHARED_ENTITIES`), in their
    order; features of no shared entity (``pair_*``, or unprefixed) are left out. The information
    gain counts each group once per distinct tuple of its values (``information_gain(groups=...)``),
    which is exact for any grouping and cheap for these: a shard has far fewer distinct users,
    items and categories than samples."""
    groups: dict[str, list[str]] = {e: [] for e in SHARED_ENTITIES}
    for f in features:
        entity = f.split("_", 1)[0]
        if entity in groups:
            groups[entity].append(f)
    return [g for g in groups.values() if g]


def feature_columns(df: DataFrame) -> list[str]:
    """The numeric feature columns of a samples frame (``user_*``, ``item_*``, ``cat_*``, ``pair_*``)."""
    numeric = {"double", "float", "int", "bigint"}
    return [
        f.name
        for f in df.schema.fields
        if f.name.split("_", 1)[0] in ENTITY_PREFIXES
        and f.dataType.simpleString() in numeric
        and f.name not in (S.USER_ID, S.ITEM_ID)
    ]
