"""One window's samples: pairs, labels, every feature, shards and class frequencies.

:func:`build_samples` joins the user, item, category and pair features of the feature window
onto every ``(user, item)`` pair active in it, with its labels from the label window;
:func:`build_window` adds the shards and the class frequencies. The result is **one wide table**:
a row per sample with its keys, shard, labels and every feature as a non-null double, so readers
need no joins. Nothing is written here; the frames read checkpoints the caller releases once the
frames are written. Definitions: ``docs/features.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from sampleimp_spark import schema as S
from sampleimp_spark.features.behavior import (
    COUNTED_BEHAVIORS,
    category_counts,
    entity_aggregates,
    entity_columns,
    equal_feature_days,
    feature_columns,
    item_categories,
    neutral_value,
    prepare_events,
    price_features,
    price_sums,
)
from sampleimp_spark.features.frequencies import EVENT_COUNT, class_frequencies
from sampleimp_spark.features.samples import with_labels
from sampleimp_spark.features.shards import shard_map
from sampleimp_spark.frames import checkpoint, release
from sampleimp_spark.windows import Windows

KEY_COLUMNS = (S.WINDOW_ID, S.SOURCE, S.USER_ID, S.ITEM_ID, S.CATEGORY_ID, S.CATEGORY_PATH, S.SHARD)
LABEL_COLUMNS = (S.LABEL_PURCHASE, S.LABEL_INTENT)


def _as_list(windows: Windows | Sequence[Windows]) -> list[Windows]:
    return [windows] if isinstance(windows, Windows) else list(windows)


@dataclass
class EntityAggregates:
    """A window's behavior aggregates, from events (:func:`entity_aggregates_of`) or from per-day
    partials (:func:`sampleimp_spark.features.daily.window_aggregates`): per entity
    (:data:`~sampleimp_spark.features.behavior.ENTITY_PREFIXES`) the columns of
    :func:`~sampleimp_spark.features.behavior.entity_aggregates`, plus the item-category counts
    and price sums."""

    entities: dict[str, DataFrame]
    category_counts: DataFrame
    price_sums: DataFrame


ENTITY_KEYS: dict[str, tuple[str, ...]] = {
    "user": (S.USER_ID,),
    "item": (S.ITEM_ID,),
    "cat": (S.CATEGORY_ID,),
    "pair": (S.USER_ID, S.ITEM_ID),
}


def entity_aggregates_of(fe: DataFrame, *, feature_days: float) -> EntityAggregates:
    """The aggregates of prepared feature-window events."""
    return EntityAggregates(
        {e: entity_aggregates(fe, keys, feature_days=feature_days) for e, keys in ENTITY_KEYS.items()},
        category_counts(fe),
        price_sums(fe),
    )


def build_samples(
    events: DataFrame, *, windows: Windows | Sequence[Windows], tz: str, session_gap_minutes: float
) -> tuple[DataFrame, DataFrame]:
    """Samples with labels and all features (no shard yet) of every window, and the prepared
    feature-window events.

    Several windows of equal lengths are built in one pass: each event joins every window it falls
    in, and every aggregation is keyed by ``window_id`` too.

    Args:
        events: canonical events of one source (any time range; windows select).
        windows: one window, or several with equal feature-window lengths.
        tz: the source's local time zone (for hour and day-of-week profiles).
        session_gap_minutes: a longer gap between a user's events starts a new session.

    Returns:
        ``(samples, fe)``: one row per window and pair active in its feature window (with
        ``window_id``); ``fe`` the prepared feature-window events, a checkpoint: pass it to
        :func:`~sampleimp_spark.frames.release` once ``samples`` no longer need it.
    """
    wins = _as_list(windows)
    feature_days = equal_feature_days(wins)
    # Materialize the prepared events once: every aggregate below reads them, and cutting the
    # lineage here keeps the query plans of the many joins small (analysis time grows fast
    # with repeated self-joins of a deep plan).
    fe = checkpoint(prepare_events(events, windows=wins, tz=tz, session_gap_minutes=session_gap_minutes))
    samples = samples_of(entity_aggregates_of(fe, feature_days=feature_days), events, windows=wins)
    return samples, fe


def samples_of(aggs: EntityAggregates, events: DataFrame, *, windows: Sequence[Windows]) -> DataFrame:
    """Samples with labels (from ``events``' label windows) and every feature, from a window's aggregates."""
    feature_days = equal_feature_days(windows)
    w = S.WINDOW_ID

    def columns(entity: str) -> DataFrame:
        return entity_columns(aggs.entities[entity], ENTITY_KEYS[entity], entity, feature_days=feature_days)

    items = item_categories(aggs.category_counts)
    pair_events = aggs.entities["pair"].select(w, S.USER_ID, S.ITEM_ID, "n_events")
    item_prices, user_prices, cat_prices = price_features(items, aggs.price_sums, pair_events)
    users = columns("user").join(user_prices, [w, S.USER_ID], "left")
    item_feats = items.join(columns("item"), [w, S.ITEM_ID]).join(item_prices, [w, S.ITEM_ID], "left")
    cats = columns("cat").join(cat_prices, [w, S.CATEGORY_ID], "left")
    # The pair rows are the big side: the join order moves them as little as possible. The
    # labels are keyed like the pairs (no shuffle of the pairs), then one shuffle by item for
    # the item-level columns, the categories broadcast (one row per window and category), one
    # shuffle by user.
    samples = (
        with_labels(columns("pair"), events, windows=windows)
        .join(item_feats, [w, S.ITEM_ID])
        .join(F.broadcast(cats), [w, S.CATEGORY_ID], "left")
        .join(users, [w, S.USER_ID])
        .withColumn("pair_price_rel", F.col("item_price_rel"))
    )
    # A category seen only through other items' events has no own row: neutral values.
    return samples.fillna(
        {c: neutral_value(c, feature_days=feature_days) for c in samples.columns if c.startswith("cat_")}
    )


@dataclass
class WindowFrames:
    """The samples and class frequencies of some windows, as DataFrames (see :func:`build_window`).

    They read checkpoints: call :meth:`release` once they are written or copied.
    """

    samples: DataFrame
    class_frequencies: DataFrame
    held: tuple[DataFrame, ...]

    def release(self) -> None:
        """Free the checkpoints the frames read (the frames cannot be read afterwards)."""
        release(*self.held)


def build_window(
    events: DataFrame,
    *,
    windows: Windows | Sequence[Windows],
    tz: str,
    source: str,
    session_gap_minutes: float,
    min_shard_rows: int,
) -> WindowFrames:
    """Samples with shards and their class frequencies for one or more windows, without writing.

    The samples carry ``shard``, ``window_id`` and ``source``.
    """
    samples, fe = build_samples(events, windows=windows, tz=tz, session_gap_minutes=session_gap_minutes)
    samples = checkpoint(samples)
    release(fe)
    mapping = shard_map(samples, min_shard_rows=min_shard_rows)
    out, freqs = with_shards(samples, mapping, source=source)
    return WindowFrames(out, freqs, held=(samples, mapping))


def with_shards(samples: DataFrame, mapping: DataFrame, *, source: str) -> tuple[DataFrame, DataFrame]:
    """The samples with their shard and ``source`` (contract column order), and their class frequencies."""
    sharded = samples.join(
        F.broadcast(mapping.select(S.WINDOW_ID, S.CATEGORY_ID, S.SHARD)), [S.WINDOW_ID, S.CATEGORY_ID]
    ).withColumn(S.SOURCE, F.lit(source))
    freqs = class_frequencies(sharded, _behavior_counts(sharded), source=source)
    return ordered_columns(sharded), freqs


def _behavior_counts(samples: DataFrame) -> DataFrame:
    """``(window_id, shard, behavior, n_events)``: each sample's feature-window events per behavior.

    Every feature-window event belongs to exactly one sample (its user and item), and the
    sample's ``pair_n_<behavior>`` counts them: summed per shard, these are the event counts per
    behavior without another pass over the events.
    """
    per_pair = samples.select(S.WINDOW_ID, S.SHARD, *(F.col(f"pair_n_{b}").alias(b) for b in COUNTED_BEHAVIORS))
    return per_pair.unpivot([S.WINDOW_ID, S.SHARD], list(COUNTED_BEHAVIORS), S.BEHAVIOR, EVENT_COUNT)


def ordered_columns(samples: DataFrame) -> DataFrame:
    feats = sorted(
        feature_columns(samples), key=lambda c: (("user", "item", "cat", "pair").index(c.split("_", 1)[0]), c)
    )
    return samples.select(*KEY_COLUMNS, *LABEL_COLUMNS, *(F.col(c).cast("double").alias(c) for c in feats))
