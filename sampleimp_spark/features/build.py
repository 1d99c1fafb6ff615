"""The features stage: ``bronze.events`` -> ``silver.samples``, ``silver.shard_map``,
``silver.class_frequencies``.

``silver.samples`` is **one wide table**: a row per sample with its keys, category, shard,
labels and every feature (user, item, category and pair features already joined). Training
code and downstream teams read one table with no joins, and the per-entity features, which
repeat across a user's or item's rows, cost little in compressed columnar files. It is
partitioned by ``window_id``; a rerun for the same windows replaces that window's rows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sampleimp_spark import lake
from sampleimp_spark import schema as S
from sampleimp_spark.config import Config, FeaturesConfig
from sampleimp_spark.errors import BadInputError
from sampleimp_spark.features import text
from sampleimp_spark.features.behavior import (
    COUNTED_BEHAVIORS,
    entity_features,
    feature_columns,
    item_categories,
    neutral_value,
    prepare_events,
    price_features,
)
from sampleimp_spark.features.frequencies import EVENT_COUNT, class_frequencies
from sampleimp_spark.features.samples import with_labels
from sampleimp_spark.features.shards import shard_map
from sampleimp_spark.features.windows import Windows, resolve_windows
from sampleimp_spark.frames import checkpoint, release
from sampleimp_spark.progress import RunProgress
from sampleimp_spark.sources import SOURCE_TIMEZONES

log = logging.getLogger(__name__)

KEY_COLUMNS = (S.WINDOW_ID, S.SOURCE, S.USER_ID, S.ITEM_ID, S.CATEGORY_ID, S.CATEGORY_PATH, S.SHARD)
LABEL_COLUMNS = (S.LABEL_PURCHASE, S.LABEL_INTENT)


@dataclass
class FeaturesReport:
    """What a features run wrote."""

    source: str
    windows: Windows
    samples: int
    shards: int
    pooled_categories: int
    features: list[str] = field(default_factory=list)
    label_counts: dict[str, int] = field(default_factory=dict)

    def lines(self) -> list[str]:
        return [
            f"source {self.source}: {self.windows.describe()}",
            f"  window_id {self.windows.window_id}",
            f"  {self.samples:,} samples, {len(self.features)} features, {self.shards:,} shards "
            f"({self.pooled_categories:,} small categories pooled)",
            f"  labels: {self.label_counts}",
        ]


def build_samples(events: DataFrame, *, windows: Windows, tz: str, cfg: FeaturesConfig) -> tuple[DataFrame, DataFrame]:
    """Samples with labels and all features (no shard yet), and the prepared feature-window events.

    Args:
        events: canonical events of one source (any time range; windows select).
        windows: feature and label windows.
        tz: the source's local time zone (for hour and day-of-week profiles).
        cfg: features settings.

    Returns:
        ``(samples, fe)``: one row per pair active in the feature window; ``fe`` the prepared
        feature-window events (for class frequencies), a checkpoint: pass it to
        :func:`~sampleimp_spark.frames.release` once ``samples`` no longer need it.
    """
    # Materialize the prepared events once: every aggregate below reads them, and cutting the
    # lineage here keeps the query plans of the many joins small (analysis time grows fast
    # with repeated self-joins of a deep plan).
    fe = checkpoint(prepare_events(events, windows=windows, tz=tz, session_gap_minutes=cfg.session_gap_minutes))
    items = item_categories(fe)
    item_prices, user_prices, cat_prices = price_features(fe, items)
    pairs = entity_features(fe, [S.USER_ID, S.ITEM_ID], "pair", windows=windows)
    users = entity_features(fe, [S.USER_ID], "user", windows=windows).join(user_prices, S.USER_ID, "left")
    item_feats = items.join(entity_features(fe, [S.ITEM_ID], "item", windows=windows), S.ITEM_ID).join(
        item_prices, S.ITEM_ID, "left"
    )
    cats = entity_features(fe, [S.CATEGORY_ID], "cat", windows=windows).join(cat_prices, S.CATEGORY_ID, "left")
    # The pair rows are the big side: the join order moves them as little as possible. The
    # labels are keyed like the pairs (no shuffle of the pairs), then one shuffle by item for
    # the item-level columns, the categories broadcast (one row per category), one shuffle
    # by user.
    samples = (
        with_labels(pairs, events, windows=windows)
        .join(item_feats, S.ITEM_ID)
        .join(F.broadcast(cats), S.CATEGORY_ID, "left")
        .join(users, S.USER_ID)
        .withColumn("pair_price_rel", F.col("item_price_rel"))
    )
    # A category seen only through other items' events has no own row: neutral values.
    samples = samples.fillna(
        {c: neutral_value(c, feature_days=windows.feature_days) for c in samples.columns if c.startswith("cat_")}
    )
    return samples, fe


@dataclass
class WindowFrames:
    """The samples and class frequencies of one window, as DataFrames (see :func:`build_window`).

    They read checkpoints: call :meth:`release` once they are written or copied.
    """

    samples: DataFrame
    class_frequencies: DataFrame
    held: tuple[DataFrame, ...]

    def release(self) -> None:
        """Free the checkpoints the frames read (the frames cannot be read afterwards)."""
        release(*self.held)


def build_window(events: DataFrame, *, windows: Windows, tz: str, cfg: FeaturesConfig, source: str) -> WindowFrames:
    """Samples with shards and their class frequencies for one window, without writing anything.

    What the features stage writes, as DataFrames: the training stage uses it to build a
    second, earlier window in memory. The samples carry ``shard``, ``window_id`` and ``source``.
    """
    samples, fe = build_samples(events, windows=windows, tz=tz, cfg=cfg)
    samples = checkpoint(samples)
    release(fe)
    mapping = shard_map(samples, min_shard_rows=cfg.min_shard_rows)
    out, freqs = _with_shards(samples, mapping, windows=windows, source=source)
    return WindowFrames(out, freqs, held=(samples, mapping))


def _with_shards(
    samples: DataFrame, mapping: DataFrame, *, windows: Windows, source: str
) -> tuple[DataFrame, DataFrame]:
    wid = windows.window_id
    sharded = samples.join(F.broadcast(mapping.select(S.CATEGORY_ID, S.SHARD)), S.CATEGORY_ID).withColumns(
        {S.WINDOW_ID: F.lit(wid), S.SOURCE: F.lit(source)}
    )
    freqs = class_frequencies(sharded, _behavior_counts(sharded), window_id=wid, source=source)
    return _ordered(sharded), freqs


def _behavior_counts(samples: DataFrame) -> DataFrame:
    """``(shard, behavior, n_events)``: each sample's feature-window events per behavior.

    Every feature-window event belongs to exactly one sample (its user and item), and the
    sample's ``pair_n_<behavior>`` counts them: summed per shard, these are the event counts per
    behavior without another pass over the events.
    """
    per_pair = samples.select(S.SHARD, *(F.col(f"pair_n_{b}").alias(b) for b in COUNTED_BEHAVIORS))
    return per_pair.unpivot([S.SHARD], list(COUNTED_BEHAVIORS), S.BEHAVIOR, EVENT_COUNT)


def _ordered(samples: DataFrame) -> DataFrame:
    feats = sorted(
        feature_columns(samples), key=lambda c: (("user", "item", "cat", "pair").index(c.split("_", 1)[0]), c)
    )
    return samples.select(*KEY_COLUMNS, *LABEL_COLUMNS, *(F.col(c).cast("double").alias(c) for c in feats))


def build_features(spark: SparkSession, cfg: Config, *, ctx: lake.RunContext, progress: RunProgress) -> FeaturesReport:
    """Build and write the silver tables for the configured source and windows."""
    fcfg = cfg.features
    source = fcfg.source or cfg.input.source
    tz = SOURCE_TIMEZONES[source]
    with progress.stage(spark, "features", f"samples, labels, shards and features of {source}") as info:
        events = lake.read_table(spark, cfg.lakehouse, S.BRONZE_EVENTS).where(F.col(S.SOURCE) == source)
        windows = resolve_windows(
            events,
            t0=fcfg.t0,
            t1=fcfg.t1,
            t2=fcfg.t2,
            label_days=fcfg.label_days,
            feature_days=fcfg.feature_days,
            tz=tz,
        )
        log.info("features %s: %s (window_id %s)", source, windows.describe(), windows.window_id)
        samples, fe = build_samples(events, windows=windows, tz=tz, cfg=fcfg)
        emb = None
        try:
            samples, emb = _with_text(spark, cfg, samples, fe, source=source, windows=windows, ctx=ctx)
            samples = checkpoint(samples)  # read by the shard map, frequencies and the write
        finally:
            release(fe, emb)
        try:
            report = _write(spark, cfg, samples, source=source, windows=windows, ctx=ctx)
        finally:
            release(samples)
        info.rows_in = None
        info.rows_out = {"samples": report.samples, "positives": report.label_counts.get("1", 0)}
        info.shards = report.shards
        for line in report.lines():
            log.info("%s", line)
    return report


#: Sources whose events carry item text or a category taxonomy (text features are built for
#: them), and those with titles (sentence embeddings).
TFIDF_SOURCES = frozenset({"amazon", "rees46", "canonical"})
EMBEDDING_SOURCES = frozenset({"amazon", "canonical"})
ITEM_EMB_PREFIX = "item_emb_"


def _with_text(
    spark: SparkSession,
    cfg: Config,
    samples: DataFrame,
    fe: DataFrame,
    *,
    source: str,
    windows: Windows,
    ctx: lake.RunContext,
) -> tuple[DataFrame, DataFrame | None]:
    """Write ``silver.item_text`` / ``silver.item_embeddings`` where configured and the source has
    text, and add the projected embeddings to the samples as ``item_emb_*`` features.

    Returns:
        ``(samples, embeddings)``: the embeddings (or ``None``) are a checkpoint the samples
        read; release it once the samples are materialized.
    """
    tcfg = cfg.features.text
    wid = windows.window_id
    where = f"{S.SOURCE} = '{source}' AND {S.WINDOW_ID} = '{wid}'"
    stamp = {S.WINDOW_ID: F.lit(wid)}
    if tcfg.tfidf_enabled and source in TFIDF_SOURCES:
        tfidf = text.item_tfidf(fe, cfg=tcfg).withColumns(stamp)
        lake.write_table(tfidf, cfg.lakehouse, S.SILVER_ITEM_TEXT, ctx=ctx, replace_where=where)
    if not (tcfg.embeddings_enabled and source in EMBEDDING_SOURCES):
        return samples, None
    # The encoder is expensive: embed each item once, keep the result for both uses.
    emb = checkpoint(text.item_embeddings(fe, cfg=tcfg))
    lake.write_table(emb.withColumns(stamp), cfg.lakehouse, S.SILVER_ITEM_EMBEDDINGS, ctx=ctx, replace_where=where)
    proj = [c for c in emb.columns if c.startswith(text.EMB_PREFIX)]
    renamed = emb.select(S.ITEM_ID, *(F.col(c).alias(ITEM_EMB_PREFIX + c.removeprefix(text.EMB_PREFIX)) for c in proj))
    # Items without text have no embedding: 0 (the projection is centred, so 0 is "average").
    filled = [ITEM_EMB_PREFIX + c[len(text.EMB_PREFIX) :] for c in proj]
    return samples.join(renamed, S.ITEM_ID, "left").fillna(0.0, filled), emb


def _write(
    spark: SparkSession,
    cfg: Config,
    samples: DataFrame,
    *,
    source: str,
    windows: Windows,
    ctx: lake.RunContext,
) -> FeaturesReport:
    wid = windows.window_id
    mapping = shard_map(samples, min_shard_rows=cfg.features.min_shard_rows)
    try:
        out, freqs = _with_shards(samples, mapping, windows=windows, source=source)
        where = f"{S.SOURCE} = '{source}' AND {S.WINDOW_ID} = '{wid}'"
        written = lake.write_table(
            out, cfg.lakehouse, S.SILVER_SAMPLES, ctx=ctx, replace_where=where, partition_by=(S.WINDOW_ID,)
        )
        lake.write_table(
            mapping.select(F.lit(wid).alias(S.WINDOW_ID), F.lit(source).alias(S.SOURCE), "*"),
            cfg.lakehouse,
            S.SILVER_SHARD_MAP,
            ctx=ctx,
            replace_where=where,
        )
        lake.write_table(
            freqs,
            cfg.lakehouse,
            S.SILVER_CLASS_FREQUENCIES,
            ctx=ctx,
            replace_where=where,
            expected_schema=S.CLASS_FREQUENCIES_SCHEMA,
        )
        shard_stats = mapping.agg(F.countDistinct(S.SHARD), F.count_if(F.col("rule") != "own")).first()
    finally:
        release(mapping)
    n_samples = written["numOutputRows"] if written else samples.count()
    if n_samples == 0:
        raise BadInputError(f"source {source}: no samples in the feature window ({windows.describe()})")
    labels = lake.read_table(spark, cfg.lakehouse, S.SILVER_CLASS_FREQUENCIES).where(
        (F.col(S.WINDOW_ID) == wid)
        & (F.col(S.SOURCE) == source)
        & (F.col(S.SHARD) == S.ALL_SHARDS)
        & (F.col(S.FREQ_KIND) == "purchase")
    )
    return FeaturesReport(
        source=source,
        windows=windows,
        samples=n_samples,
        shards=shard_stats[0],
        pooled_categories=shard_stats[1],
        features=feature_columns(out),
        label_counts={r[S.FREQ_CLASS]: r[S.FREQ_COUNT] for r in labels.collect()},
    )
