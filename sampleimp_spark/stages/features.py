"""The features stage: ``bronze.events`` -> ``silver.samples``, ``silver.shard_map``,
``silver.class_frequencies`` (and ``silver.item_text`` / ``silver.item_embeddings`` where the
source has item text).

It builds the run's window and, when training is enabled, the earlier windows the experiment
needs (:func:`sampleimp_spark.training.protocol.windows_needed`), from the events or, in a dated
run (``--date``) with ``features.incremental``, from per-day partials (``silver.daily_*``, see
:mod:`sampleimp_spark.features.daily`), building only the days not built yet: the run's own day
and any missing or stale day its windows read. A rerun replaces the rows of the same source and
``window_id`` in every table.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from datetime import date, timedelta

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sampleimp_spark import lake, leases
from sampleimp_spark import schema as S
from sampleimp_spark.config import Config
from sampleimp_spark.errors import BadInputError
from sampleimp_spark.features import text
from sampleimp_spark.features.assemble import build_samples, samples_of, with_shards
from sampleimp_spark.features.behavior import feature_columns, window_events
from sampleimp_spark.features.daily import DayPartials, day_events, feature_days_of, partials_of, window_aggregates
from sampleimp_spark.features.shards import shard_map
from sampleimp_spark.frames import checkpoint, release
from sampleimp_spark.progress import RunProgress
from sampleimp_spark.sources import SOURCE_TIMEZONES
from sampleimp_spark.stages import daily
from sampleimp_spark.training.protocol import max_origins, windows_needed
from sampleimp_spark.windows import Windows, data_start, resolve_windows

log = logging.getLogger(__name__)

#: Sources whose events carry item text or a category taxonomy (TF-IDF), and those with
#: titles (sentence embeddings).
TFIDF_SOURCES = frozenset({"amazon", "rees46", "canonical"})
EMBEDDING_SOURCES = frozenset({"amazon", "canonical"})


@dataclass
class WindowReport:
    """What the stage wrote for one window."""

    windows: Windows
    samples: int
    shards: int
    pooled_categories: int
    features: list[str] = field(default_factory=list)
    label_counts: dict[str, int] = field(default_factory=dict)


@dataclass
class FeaturesReport:
    """What a features run wrote: one entry per window, the run's own window last."""

    source: str
    windows: list[WindowReport]

    @property
    def window_ids(self) -> list[str]:
        return [w.windows.window_id for w in self.windows]

    @property
    def latest(self) -> WindowReport:
        return self.windows[-1]

    def lines(self) -> list[str]:
        out = []
        for w in self.windows:
            out += [
                f"source {self.source}: {w.windows.describe()}",
                f"  window_id {w.windows.window_id}",
                f"  {w.samples:,} samples, {len(w.features)} features, {w.shards:,} shards "
                f"({w.pooled_categories:,} small categories pooled)",
                f"  labels: {w.label_counts}",
            ]
        return out


def source_of(cfg: Config) -> str:
    """The source the features, weights and train stages work on."""
    return cfg.features.source or cfg.input.source


def experiment_origins(cfg: Config, events: DataFrame, latest: Windows, *, tz: str) -> int | None:
    """The evaluation origins the run prepares windows for: ``train.origins``, else as many as the
    events allow; None when training is off.

    Raises:
        BadInputError: training is on and the events cover too few days for one origin.
    """
    if not cfg.train.enabled:
        return None
    if cfg.train.origins is not None:
        return cfg.train.origins
    available = max_origins(latest, data_start(events, tz=tz))
    if available < 1:
        days = cfg.features.feature_days + 3 * cfg.features.label_days
        raise BadInputError(
            f"the events cover too few days for an experiment: one origin needs {days:g} days "
            "(features.feature_days + 3 x features.label_days); shorten them or set train.enabled: false"
        )
    return available


def run(spark: SparkSession, cfg: Config, *, ctx: lake.RunContext, progress: RunProgress) -> FeaturesReport:
    """Build and write the silver tables for the configured source and windows."""
    fcfg = cfg.features
    source = source_of(cfg)
    tz = SOURCE_TIMEZONES[source]
    with progress.stage(spark, "features", f"samples, labels, shards and features of {source}") as info:
        version = lake.table_version(spark, cfg.lakehouse, S.BRONZE_EVENTS)
        ctx = ctx.with_inputs(S.BRONZE_EVENTS, version)
        events = lake.read_table(spark, cfg.lakehouse, S.BRONZE_EVENTS, version=version).where(
            F.col(S.SOURCE) == source
        )
        bounds = (fcfg.t0, fcfg.t1, fcfg.t2)
        if cfg.run.date is not None:  # for_day refuses fixed bounds: the day's window, as weights finds it
            day = daily.day_window(cfg, cfg.run.date, source)
            bounds = (day.t0, day.t1, day.t2)
        latest = resolve_windows(
            events,
            t0=bounds[0],
            t1=bounds[1],
            t2=bounds[2],
            label_days=fcfg.label_days,
            feature_days=fcfg.feature_days,
            tz=tz,
        )
        wanted = windows_needed(latest, origins=experiment_origins(cfg, events, latest, tz=tz))
        for windows in wanted:
            log.info("features %s: %s (window_id %s)", source, windows.describe(), windows.window_id)
        ctx.claim(*(leases.window_key(source, w.window_id) for w in wanted))
        reports = _build(spark, cfg, events, windows=wanted, source=source, tz=tz, ctx=ctx)
        report = FeaturesReport(source, reports)
        info.rows_out = {"samples": report.latest.samples, "positives": report.latest.label_counts.get("1", 0)}
        info.shards = report.latest.shards
        for line in report.lines():
            log.info("%s", line)
    return report


def _build(
    spark: SparkSession,
    cfg: Config,
    events: DataFrame,
    *,
    windows: list[Windows],
    source: str,
    tz: str,
    ctx: lake.RunContext,
) -> list[WindowReport]:
    """Every window's samples in one pass, written in one commit per table."""
    gap = cfg.features.session_gap_minutes
    fe: DataFrame | None
    if cfg.run.date is None or not cfg.features.incremental:
        samples, fe = build_samples(events, windows=windows, tz=tz, session_gap_minutes=gap)
    else:
        partials = _partials(spark, cfg, events, windows=windows, source=source, tz=tz, ctx=ctx)
        samples = samples_of(window_aggregates(partials, windows=windows, tz=tz), events, windows=windows)
        fe = checkpoint(window_events(events, windows)) if _has_text(cfg, source) else None
    emb = None
    try:
        if fe is not None:
            samples, emb = _with_text(cfg, samples, fe, source=source, windows=windows, ctx=ctx)
        samples = checkpoint(samples)  # read by the shard map, frequencies and the write
    finally:
        release(fe, emb)
    try:
        return _write(spark, cfg, samples, source=source, windows=windows, ctx=ctx)
    finally:
        release(samples)


#: Bump when the partials' definition changes: every day's partials are rebuilt.
PARTIALS_VERSION = 1
_PARTIAL_TABLES = {
    "entities": S.SILVER_DAILY_ENTITIES,
    "pieces": S.SILVER_DAILY_SESSIONS,
    "touches": S.SILVER_DAILY_SESSION_ENTITIES,
}


def partials_key(cfg: Config, source: str) -> str:
    """What the partials of a day depend on besides its events: their version, the time zone and
    the session gap."""
    spec = {"version": PARTIALS_VERSION, "tz": SOURCE_TIMEZONES[source], "gap": cfg.features.session_gap_minutes}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


def _partials(
    spark: SparkSession,
    cfg: Config,
    events: DataFrame,
    *,
    windows: list[Windows],
    source: str,
    tz: str,
    ctx: lake.RunContext,
) -> DayPartials:
    """The partials of every feature day of ``windows``, building the days not built yet (and the
    run's own day, which tomorrow's window reads)."""
    assert cfg.run.date is not None
    needed = sorted({d for w in windows for d in feature_days_of(w, tz)} | {cfg.run.date})
    key = partials_key(cfg, source)
    missing = sorted(set(needed) - daily.partials_built(spark, cfg.lakehouse, source, key))
    log.info(
        "features %s: partials of %d day(s) needed, %d to build%s",
        source,
        len(needed),
        len(missing),
        f" ({missing[0]} .. {missing[-1]})" if missing else "",
    )
    if missing:
        # The days' UTC dates and the one before (a day's first session may start the day before).
        near = F.col(S.EVENT_DATE).between(missing[0] - timedelta(days=2), missing[-1] + timedelta(days=1))
        gap = cfg.features.session_gap_minutes
        ev = checkpoint(day_events(events.where(near), days=missing, tz=tz, session_gap_minutes=gap))
        try:
            built = partials_of(ev)
            where = f"{lake.rows_where(source=source)} AND ({daily.days_in(S.DAY, missing)})"
            for part, name in _PARTIAL_TABLES.items():
                frame = getattr(built, part).withColumn(S.SOURCE, F.lit(source))
                lake.write_table(frame, cfg.lakehouse, name, ctx=ctx.with_inputs(ctx.inputs, key), replace_where=where)
        finally:
            release(ev)
        daily.mark_partials(spark, cfg.lakehouse, source, missing, key, ctx=ctx.with_inputs(ctx.inputs, key))
    return DayPartials(*(_read_days(spark, cfg, name, source, needed) for name in _PARTIAL_TABLES.values()))


def _read_days(spark: SparkSession, cfg: Config, name: str, source: str, days: list[date]) -> DataFrame:
    table = lake.read_table(spark, cfg.lakehouse, name)
    return table.where((F.col(S.SOURCE) == source) & F.col(S.DAY).isin(days)).drop(S.SOURCE)


def _has_text(cfg: Config, source: str) -> bool:
    tcfg = cfg.features.text
    return (tcfg.tfidf_enabled and source in TFIDF_SOURCES) or (tcfg.embeddings_enabled and source in EMBEDDING_SOURCES)


def _rows_of(source: str, windows: list[Windows]) -> str:
    """The replaceWhere predicate of a run's windows of one source."""
    return lake.rows_where(source=source) + " AND " + lake.value_in(S.WINDOW_ID, [w.window_id for w in windows])


def _with_text(
    cfg: Config,
    samples: DataFrame,
    fe: DataFrame,
    *,
    source: str,
    windows: list[Windows],
    ctx: lake.RunContext,
) -> tuple[DataFrame, DataFrame | None]:
    """Write the item-text tables where configured and the source has text, and add the projected
    embeddings to the samples as ``item_emb_*`` features.

    TF-IDF is fitted per window (its IDF counts that window's items); an item's embedding does not
    depend on the window, so every distinct item is encoded once.

    Returns:
        ``(samples, embeddings)``: the embeddings (or ``None``) are a checkpoint the samples
        read; release it once the samples are materialized.
    """
    tcfg = cfg.features.text
    where = _rows_of(source, windows)
    if tcfg.tfidf_enabled and source in TFIDF_SOURCES:
        parts = [
            text.item_tfidf(
                fe.where(F.col(S.WINDOW_ID) == w.window_id).drop(S.WINDOW_ID),
                num_features=tcfg.num_features,
                min_doc_freq=tcfg.min_doc_freq,
                min_token_length=tcfg.min_token_length,
                remove_stop_words=tcfg.remove_stop_words,
            ).withColumn(S.WINDOW_ID, F.lit(w.window_id))
            for w in windows
        ]
        tfidf = parts[0]
        for part in parts[1:]:
            tfidf = tfidf.unionByName(part)
        lake.write_table(tfidf, cfg.lakehouse, S.SILVER_ITEM_TEXT, ctx=ctx, replace_where=where)
    if not (tcfg.embeddings_enabled and source in EMBEDDING_SOURCES):
        return samples, None
    # The encoder is expensive: embed each item once, keep the result for both uses.
    emb = checkpoint(
        text.item_embeddings(
            fe.drop(S.WINDOW_ID),
            model_path=tcfg.model_path,
            device=tcfg.device,
            batch_size=tcfg.batch_size,
            torch_threads=tcfg.torch_threads,
            encode_partitions=tcfg.encode_partitions,
            dim=tcfg.embedding_dim,
            max_fit_items=tcfg.max_fit_items,
            seed=tcfg.seed,
        )
    )
    per_window = fe.select(S.WINDOW_ID, S.SOURCE, S.ITEM_ID).distinct().join(emb, [S.SOURCE, S.ITEM_ID])
    lake.write_table(per_window, cfg.lakehouse, S.SILVER_ITEM_EMBEDDINGS, ctx=ctx, replace_where=where)
    return text.with_item_embeddings(samples, emb), emb


def _write(
    spark: SparkSession,
    cfg: Config,
    samples: DataFrame,
    *,
    source: str,
    windows: list[Windows],
    ctx: lake.RunContext,
) -> list[WindowReport]:
    mapping = shard_map(samples, min_shard_rows=cfg.features.min_shard_rows)
    try:
        out, freqs = with_shards(samples, mapping, source=source)
        where = _rows_of(source, windows)
        lake.write_table(out, cfg.lakehouse, S.SILVER_SAMPLES, ctx=ctx, replace_where=where)
        lake.write_table(
            mapping.select(
                S.WINDOW_ID, F.lit(source).alias(S.SOURCE), *(c for c in mapping.columns if c != S.WINDOW_ID)
            ),
            cfg.lakehouse,
            S.SILVER_SHARD_MAP,
            ctx=ctx,
            replace_where=where,
        )
        lake.write_table(freqs, cfg.lakehouse, S.SILVER_CLASS_FREQUENCIES, ctx=ctx, replace_where=where)
        shard_stats = {
            r[0]: (r[1], r[2])
            for r in mapping.groupBy(S.WINDOW_ID)
            .agg(F.countDistinct(S.SHARD), F.count_if(F.col(S.SHARD_RULE) != "own"))
            .collect()  # one row per window
        }
    finally:
        release(mapping)
    ids = [w.window_id for w in windows]
    freq = lake.read_table(spark, cfg.lakehouse, S.SILVER_CLASS_FREQUENCIES).where(
        (F.col(S.SOURCE) == source)
        & F.col(S.WINDOW_ID).isin(ids)
        & (F.col(S.SHARD) == S.ALL_SHARDS)
        & (F.col(S.FREQ_KIND) == "purchase")
    )
    labels: dict[str, dict[str, int]] = {}
    for r in freq.collect():  # two rows per window
        labels.setdefault(r[S.WINDOW_ID], {})[r[S.FREQ_CLASS]] = r[S.FREQ_COUNT]
    features = feature_columns(out)
    reports = []
    for w in windows:
        counts = labels.get(w.window_id, {})
        n_samples = sum(counts.values())
        if n_samples == 0:
            raise BadInputError(f"source {source}: no samples in the feature window ({w.describe()})")
        shards, pooled = shard_stats.get(w.window_id, (0, 0))
        reports.append(
            WindowReport(
                windows=w,
                samples=n_samples,
                shards=shards,
                pooled_categories=pooled,
                features=features,
                label_counts=counts,
            )
        )
    return reports
