"""Per-day partial aggregates of the behavior features, and a window's aggregates assembled from them.

:func:`day_partials` reduces each local day's events to one row per entity and day
(``entities``: the sums of :func:`~sampleimp_spark.features.behavior.entity_aggregates`, the
item-category counts, the price sums, and the sessions that lie inside the day) and keeps the
sessions that may cross a midnight piecewise (``pieces``, and ``touches``: the entities each
piece reaches). :func:`window_aggregates` sums a window's days back into the aggregates
computed from events and joins the pieces of sessions that cross midnight, so the features equal
a full recomputation: counts, sums and times exactly, ratios and means to rounding. Windows must
start at a local midnight and span whole days. Derivation: ``docs/features.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from sampleimp_spark import schema as S
from sampleimp_spark.features.assemble import ENTITY_KEYS, EntityAggregates
from sampleimp_spark.features.behavior import (
    DOW,
    HOUR_BUCKET,
    HOUR_BUCKETS,
    PRICE_SUM_TYPE,
    T1,
    equal_feature_days,
    event_counts,
    event_lasts,
    mean_minutes,
)
from sampleimp_spark.windows import Windows

ENTITY = S.ENTITY
ITEM_CATEGORY = "item_cat"  # rows of ``entities`` holding an item's events per category
SESSION_KEY = S.SESSION_KEY
#: Sums per entity and day; ``sessions`` and ``session_micros`` count the sessions inside the day.
SUMS = ("n_events", *S.ENTITY_COUNT_COLUMNS, "price_sum", "price_n", "sessions", "session_micros")
LASTS = S.ENTITY_LAST_COLUMNS
_ID_COLUMNS = (S.USER_ID, S.ITEM_ID, S.CATEGORY_ID)


@dataclass
class DayPartials:
    """``entities``: a row per day and entity (``entity`` in user, item, cat, pair, item_cat);
    ``pieces``: a row per day and session piece that may belong to a session crossing midnight;
    ``touches``: the entities each such piece reaches."""

    entities: DataFrame
    pieces: DataFrame
    touches: DataFrame


def _day_table(events: DataFrame, days: Sequence[date], tz: str, tail: timedelta) -> DataFrame:
    """``(day, _from, _start, _end)``: each local day's bounds as UTC instants, and ``tail`` before it."""
    zone = ZoneInfo(tz)
    rows = []
    for d in days:
        start = datetime(d.year, d.month, d.day, tzinfo=zone)
        end = start + timedelta(days=1)
        rows.append((d, (start - tail).astimezone(UTC), start.astimezone(UTC), end.astimezone(UTC)))
    return events.sparkSession.createDataFrame(rows, f"{S.DAY} date, _from timestamp, _start timestamp, _end timestamp")


def day_partials(events: DataFrame, *, days: Sequence[date], tz: str, session_gap_minutes: float) -> DayPartials:
    """The partials of ``days`` (local days of ``tz``) from canonical events of one source:
    :func:`partials_of` :func:`day_events` (materialize the latter when the partials are written)."""
    return partials_of(day_events(events, days=days, tz=tz, session_gap_minutes=session_gap_minutes))


def day_events(events: DataFrame, *, days: Sequence[date], tz: str, session_gap_minutes: float) -> DataFrame:
    """The events of ``days`` with their day, hour bucket, day of week, session key, whether
    their session piece may cross a midnight, and its length.

    Reads each day's events and the last ``session_gap_minutes`` before it (to know whether the
    day's first session continues one of the day before). A day without events has no rows.

    Raises:
        ValueError: ``session_gap_minutes`` is a day or more (a session could skip a whole day).
    """
    if session_gap_minutes >= 24 * 60:
        raise ValueError(f"per-day partials need session_gap_minutes below one day, got {session_gap_minutes}")
    gap_s = session_gap_minutes * 60
    bounds = F.broadcast(_day_table(events, days, tz, timedelta(minutes=session_gap_minutes)))
    span = (F.col(S.TS) >= F.col("_from")) & (F.col(S.TS) < F.col("_end"))
    # An event joins its own day and, in its day's last minutes, the next day as a tail event.
    ev = events.join(bounds, span).withColumn("_in", F.col(S.TS) >= F.col("_start"))
    local = F.from_utc_timestamp(F.col(S.TS), tz)
    ev = ev.withColumns(
        {HOUR_BUCKET: F.floor(F.hour(local) / (24 // HOUR_BUCKETS)).cast("int"), DOW: F.dayofweek(local)}
    )
    order = Window.partitionBy(S.DAY, S.USER_ID).orderBy(S.TS, S.ITEM_ID, S.BEHAVIOR)
    gap = F.unix_seconds(F.col(S.TS)) - F.unix_seconds(F.lag(S.TS).over(order))
    first_in = F.col("_in") & ~F.coalesce(F.lag("_in").over(order), F.lit(False))
    close = gap.isNotNull() & (gap <= gap_s)
    ev = ev.withColumns({"_new": (first_in | ~close).cast("int"), "_continues": first_in & close})
    ev = ev.withColumn("_piece", F.sum("_new").over(order.rowsBetween(Window.unboundedPreceding, Window.currentRow)))
    ev = ev.where("_in").drop("_in")
    # A piece may cross a midnight when it continues the day before or ends within a gap of the
    # day's end. Pieces are a user's: their window needs no shuffle after the one by user.
    piece = Window.partitionBy(S.DAY, S.USER_ID, "_piece")
    own = F.col(S.SESSION_ID).isNotNull()
    gap_ts = F.when(~own, F.col(S.TS))
    ev = ev.withColumns(
        {
            "_may_cross": F.max("_continues").over(piece)
            | (F.unix_seconds(F.max(S.TS).over(piece)) >= F.unix_seconds(F.col("_end")) - gap_s),
            "_micros": F.unix_micros(F.max(gap_ts).over(piece)) - F.unix_micros(F.min(gap_ts).over(piece)),
        }
    )
    piece_key = F.concat(F.lit("g:"), F.col(S.USER_ID), F.lit("#"), F.col("_piece").cast("string"))
    ev = ev.withColumns({"_piece": piece_key, SESSION_KEY: F.coalesce(F.concat(F.lit("s:"), S.SESSION_ID), piece_key)})
    # Sessions with their own id span users and are joined by id across days: all may cross, and
    # only their events need the shuffle by session id for their day's length.
    key = Window.partitionBy(S.DAY, SESSION_KEY)
    own_rows = ev.where(own).withColumn(
        "_micros", F.unix_micros(F.max(S.TS).over(key)) - F.unix_micros(F.min(S.TS).over(key))
    )
    ev = ev.where(~own).unionByName(own_rows)
    return ev.withColumn("_crossing", own | F.col("_may_cross"))


def partials_of(ev: DataFrame) -> DayPartials:
    """The partials of :func:`day_events`."""
    return DayPartials(_entities(ev), _pieces(ev), _touches(ev))


def _entities(ev: DataFrame) -> DataFrame:
    counts, lasts = event_counts(), event_lasts()
    price = F.col(S.PRICE)
    frames = []
    for entity, keys in ENTITY_KEYS.items():
        per_key = ev.groupBy(S.DAY, *keys, SESSION_KEY).agg(
            F.count(F.lit(1)).alias("n_events"),
            *(F.count_if(c).alias(k) for k, c in counts.items()),
            *(F.max(c).alias(k) for k, c in lasts.items()),
            F.sum(price.cast(PRICE_SUM_TYPE)).alias("price_sum"),
            F.count(price).alias("price_n"),
            F.max("_crossing").alias("_crossing"),
            F.max("_micros").alias("_micros"),
        )
        agg = per_key.groupBy(S.DAY, *keys).agg(
            *(F.sum(k).alias(k) for k in ("n_events", *counts, "price_sum", "price_n")),
            *(F.max(k).alias(k) for k in lasts),
            F.count_if(~F.col("_crossing")).alias("sessions"),
            F.coalesce(F.sum(F.when(~F.col("_crossing"), F.col("_micros"))), F.lit(0)).alias("session_micros"),
        )
        frames.append(_with_ids(agg, entity))
    cats = ev.groupBy(S.DAY, S.ITEM_ID, S.CATEGORY_ID).agg(
        F.count(F.lit(1)).alias("n_events"), F.max(S.CATEGORY_PATH).alias(S.CATEGORY_PATH)
    )
    frames.append(_with_ids(cats, ITEM_CATEGORY))
    out = frames[0]
    for f in frames[1:]:
        out = out.unionByName(f, allowMissingColumns=True)
    return out.select(S.DAY, ENTITY, *_ID_COLUMNS, S.CATEGORY_PATH, *SUMS, *LASTS)


def _with_ids(df: DataFrame, entity: str) -> DataFrame:
    missing = {c: F.lit(None).cast("string") for c in (*_ID_COLUMNS, S.CATEGORY_PATH) if c not in df.columns}
    return df.withColumns({ENTITY: F.lit(entity), **missing})


def _pieces(ev: DataFrame) -> DataFrame:
    """Crossing candidates: per day and piece (or own session id), its first and last event with
    that session key, whether it continues the day before, and its order among the user's pieces."""
    own = F.col(S.SESSION_ID).isNotNull()
    gap_pieces = (
        ev.where("_may_cross")
        .groupBy(S.DAY, "_piece")
        .agg(
            F.first(S.USER_ID).alias(S.USER_ID),
            F.min(S.TS).alias("_order"),
            F.min(F.when(~own, F.col(S.TS))).alias("_first_ts"),
            F.max(F.when(~own, F.col(S.TS))).alias("_last_ts"),
            F.max("_continues").alias("_continues"),
        )
        .withColumnRenamed("_piece", SESSION_KEY)
    )
    own_pieces = (
        ev.where(own)
        .groupBy(S.DAY, SESSION_KEY)
        .agg(F.min(S.TS).alias("_first_ts"), F.max(S.TS).alias("_last_ts"))
        .withColumns(
            {S.USER_ID: F.lit(None).cast("string"), "_order": F.lit(None).cast("timestamp"), "_continues": F.lit(False)}
        )
    )
    return gap_pieces.unionByName(own_pieces)


def _touches(ev: DataFrame) -> DataFrame:
    crossing = ev.where("_crossing")
    frames = [
        _with_ids(crossing.select(S.DAY, SESSION_KEY, *keys).distinct(), entity) for entity, keys in ENTITY_KEYS.items()
    ]
    out = frames[0]
    for f in frames[1:]:
        out = out.unionByName(f)
    return out.select(S.DAY, SESSION_KEY, ENTITY, *_ID_COLUMNS)


def feature_days_of(window: Windows, tz: str) -> list[date]:
    """The local days of ``window``'s feature window.

    Raises:
        ValueError: the feature window does not start at a local midnight or spans no whole days.
    """
    zone = ZoneInfo(tz)
    start = window.t0.astimezone(zone)
    n = window.feature_days
    if start.time() != datetime.min.time() or n != int(n):
        raise ValueError(f"per-day partials need a feature window of whole local days, got {window.describe()}")
    first = start.date()
    out = [first + timedelta(days=i) for i in range(int(n))]
    end = datetime(out[-1].year, out[-1].month, out[-1].day, tzinfo=zone) + timedelta(days=1)
    if end.astimezone(UTC) != window.t1.astimezone(UTC):
        raise ValueError(f"per-day partials need a feature window of whole local days, got {window.describe()}")
    return out


def window_aggregates(partials: DayPartials, *, windows: Sequence[Windows], tz: str) -> EntityAggregates:
    """The aggregates of ``windows`` (equal lengths, whole local days) from their days' partials."""
    equal_feature_days(windows)
    spark = partials.entities.sparkSession
    rows = []
    for w in windows:
        days = feature_days_of(w, tz)
        rows.append((w.window_id, days[0], days[-1], w.t1))
    table = F.broadcast(
        spark.createDataFrame(rows, f"{S.WINDOW_ID} string, _first_day date, _last_day date, {T1} timestamp")
    )
    inside = (F.col(S.DAY) >= F.col("_first_day")) & (F.col(S.DAY) <= F.col("_last_day"))
    ent = partials.entities.join(table, inside)
    sessions = _crossing_sessions(partials, table, inside)
    out: dict[str, DataFrame] = {}
    for entity, keys in ENTITY_KEYS.items():
        k = [S.WINDOW_ID, *keys]
        agg = (
            ent.where(F.col(ENTITY) == entity)
            .groupBy(*k)
            .agg(
                F.max(T1).alias(T1),
                *(F.sum(c).alias(c) for c in SUMS if not c.startswith("price")),
                *(F.max(c).alias(c) for c in LASTS),
                F.count(F.lit(1)).alias("_active_days"),
            )
        )
        crossing = (
            sessions.where(F.col(ENTITY) == entity)
            .groupBy(*k)
            .agg(F.count(F.lit(1)).alias("_x_sessions"), F.sum("_x_micros").alias("_x_micros"))
        )
        agg = agg.join(crossing, k, "left")
        n_sessions = F.col("sessions") + F.coalesce(F.col("_x_sessions"), F.lit(0))
        micros = F.col("session_micros") + F.coalesce(F.col("_x_micros"), F.lit(0))
        agg = agg.withColumns({"_sessions": n_sessions, "_session_minutes": mean_minutes(micros, n_sessions)})
        out[entity] = agg.drop("sessions", "session_micros", "_x_sessions", "_x_micros")
    items = ent.where(F.col(ENTITY) == "item")
    prices = (
        items.where(F.col("price_n") > 0)
        .groupBy(S.WINDOW_ID, S.ITEM_ID)
        .agg(F.sum("price_sum").alias("price_sum"), F.sum("price_n").alias("price_n"))
    )
    cats = (
        ent.where(F.col(ENTITY) == ITEM_CATEGORY)
        .groupBy(S.WINDOW_ID, S.ITEM_ID, S.CATEGORY_ID)
        .agg(F.sum("n_events").alias("n"), F.max(S.CATEGORY_PATH).alias(S.CATEGORY_PATH))
    )
    return EntityAggregates(out, cats, prices)


def _crossing_sessions(partials: DayPartials, table: DataFrame, inside: Column) -> DataFrame:
    """``(window_id, entity, ids, _x_micros)``: each session in the window made of crossing
    candidates, once per entity it touches, with its length inside the window.

    A piece starts a new session unless it continues the user's piece before it in the window
    (the last one of the day before); pieces with their own session id are joined by id.
    """
    pieces = partials.pieces.join(table, inside)
    order = Window.partitionBy(S.WINDOW_ID, S.USER_ID).orderBy("_order")
    # A continuing piece on the window's first day has no predecessor in the window: it starts
    # its own session anyway.
    new = (~F.col("_continues")).cast("int")
    index = F.sum(new).over(order.rowsBetween(Window.unboundedPreceding, Window.currentRow))
    gap_pieces = pieces.where(F.col("_order").isNotNull()).withColumn(
        "_session", F.concat(F.lit("g:"), F.col(S.USER_ID), F.lit("#"), index.cast("string"))
    )
    own_pieces = pieces.where(F.col("_order").isNull()).withColumn("_session", F.col(SESSION_KEY))
    mapped = gap_pieces.unionByName(own_pieces).select(
        S.WINDOW_ID, S.DAY, SESSION_KEY, "_session", "_first_ts", "_last_ts"
    )
    lengths = mapped.groupBy(S.WINDOW_ID, "_session").agg(
        (F.unix_micros(F.max("_last_ts")) - F.unix_micros(F.min("_first_ts"))).alias("_x_micros")
    )
    touched = (
        partials.touches.join(mapped.select(S.WINDOW_ID, S.DAY, SESSION_KEY, "_session"), [S.DAY, SESSION_KEY])
        .select(S.WINDOW_ID, ENTITY, *_ID_COLUMNS, "_session")
        .distinct()
    )
    return touched.join(lengths, [S.WINDOW_ID, "_session"]).drop("_session")
