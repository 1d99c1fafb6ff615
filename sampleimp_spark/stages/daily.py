"""Runs by date (``--date D``) and backfills (``sampleimp backfill --from D1 --to D2``).

A run for day D (a calendar day in the source's time zone) reads the input with ``{date}`` in
``input.paths`` replaced by ``YYYY-MM-DD``, ingests its events (replacing exactly the rows its
earlier runs brought, tagged ``ingest_day``, events of other days included), and builds
features, weights and (with ``train.enabled``) the experiment for the window whose label period
ends at the day's end, its features assembled from per-day partials
(``silver.daily_*``, built once per day). A completed day is recorded in
``silver.window_status`` under the hash of the undated config with the first day its windows
read: running it again with the same config does nothing and says so; a backfill resumes at the
first day not completed. Events arriving for an earlier day mark that day's partials and every
window reading it stale (:func:`mark_stale`): the next run for such a day rebuilds them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pyspark.sql import Column, SparkSession
from pyspark.sql import functions as F

from sampleimp_spark import lake
from sampleimp_spark import schema as S
from sampleimp_spark.config import Config
from sampleimp_spark.errors import ConfigError
from sampleimp_spark.sources import SOURCE_TIMEZONES
from sampleimp_spark.windows import Windows

log = logging.getLogger(__name__)

#: Written in ``input.paths``, replaced by the run's day (``YYYY-MM-DD``).
DATE_PLACEHOLDER = "{date}"
DONE = "done"
STALE = "stale"
BUILT = "built"


def parse_day(text: str, *, option: str = "--date") -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{option} must be a day as YYYY-MM-DD, got {text!r}") from None


def day_bounds(day: date, source: str) -> tuple[datetime, datetime]:
    """``[start, end)`` of ``day`` in the source's time zone, as UTC instants."""
    local = datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(SOURCE_TIMEZONES[source]))
    start = local.astimezone(UTC)
    return start, (local + timedelta(days=1)).astimezone(UTC)


def for_day(cfg: Config, day: date) -> Config:
    """The config of the run for ``day``: ``run.date`` set and ``{date}`` in the input paths filled.

    Raises:
        ConfigError: the config also fixes the windows (``features.t0``/``t1``/``t2``).
    """
    fixed = [k for k in ("t0", "t1", "t2") if getattr(cfg.features, k) is not None]
    if fixed:
        raise ConfigError(
            f"--date derives the windows from the day; unset features.{', features.'.join(fixed)} to use it"
        )
    paths = [p.replace(DATE_PLACEHOLDER, day.isoformat()) for p in cfg.input.paths]
    return cfg.model_copy(
        update={
            "run": cfg.run.model_copy(update={"date": day}),
            "input": cfg.input.model_copy(update={"paths": paths}),
        }
    )


@dataclass(frozen=True)
class DayStatus:
    stages: tuple[str, ...]
    run_id: str
    status: str  # DONE, or STALE: a day its windows read changed since
    first_day: date | None = None

    @property
    def fresh(self) -> frozenset[str]:
        """The recorded stages whose output is up to date: all of them, or only ingest when stale
        (the day's own events are as ingested; its windows read changed days)."""
        return frozenset(self.stages) if self.status == DONE else frozenset(self.stages) & {"ingest"}


def stages_to_run(wanted: Sequence[str], status: DayStatus | None, *, order: Sequence[str]) -> list[str]:
    """The stages of ``wanted`` a run for the day must run: from the first one not up to date on,
    since every later stage reads its output (empty: nothing to do)."""
    fresh = status.fresh if status is not None else frozenset()
    pending = [order.index(s) for s in wanted if s not in fresh]
    return [s for s in wanted if pending and order.index(s) >= min(pending)]


def fresh_after(ran: Sequence[str], status: DayStatus | None, *, order: Sequence[str]) -> list[str]:
    """The day's stages that are up to date once ``ran`` completed, in ``order``: a stage that ran
    is, if every earlier stage of the day is; one that did not run stays so only if it was and no
    earlier stage ran since. A stage that ran on an out-of-date input is not up to date."""
    fresh = status.fresh if status is not None else frozenset()
    recorded = frozenset(status.stages) if status is not None else frozenset()
    out: list[str] = []
    inputs_fresh, rerun = True, False
    for s in order:
        if s in ran:
            rerun = True
            if inputs_fresh:
                out.append(s)
        elif s in fresh and not rerun:
            out.append(s)
        elif s in recorded:
            inputs_fresh = False
    return out


def completed(spark: SparkSession, cfg: Config, day: date, config_hash: str) -> DayStatus | None:
    """What ``silver.window_status`` records for ``day`` with this config, if anything."""
    if lake.table_version_or_none(spark, cfg.lakehouse, S.SILVER_WINDOW_STATUS) is None:
        return None
    rows = (
        lake.read_table(spark, cfg.lakehouse, S.SILVER_WINDOW_STATUS)
        .where(
            (F.col(S.SOURCE) == cfg.input.source) & (F.col(S.DAY) == F.lit(day)) & (F.col(S.CONFIG_HASH) == config_hash)
        )
        .select(S.STAGES, S.RUN_ID, S.STATUS, S.FIRST_DAY)
        .collect()  # at most one row: the table is keyed by (source, day, config hash)
    )
    if not rows:
        return None
    r = rows[0]
    return DayStatus(tuple(s for s in r[S.STAGES].split(",") if s), r[S.RUN_ID], r[S.STATUS], r[S.FIRST_DAY])


def mark_done(
    spark: SparkSession,
    cfg: Config,
    day: date,
    config_hash: str,
    stages: Sequence[str],
    *,
    order: Sequence[str],
    first_day: date,
    ctx: lake.RunContext,
) -> list[str]:
    """Record which of ``day``'s stages are up to date now that ``stages`` completed
    (:func:`fresh_after`, in ``order``, the pipeline's; read after the run, so that marks the run
    itself made count); ``first_day`` is the first day the windows of ``stages`` read.

    Returns:
        The stages recorded as up to date.
    """
    earlier = completed(spark, cfg, day, config_hash)
    done = fresh_after(stages, earlier, order=order)
    kept = [s for s in done if s not in stages and s != "ingest"]
    if kept and earlier is not None and earlier.first_day is not None:
        first_day = min(first_day, earlier.first_day)  # the kept stages' windows read from there
    schema = S.CONTRACTS[S.SILVER_WINDOW_STATUS].columns
    row = {
        S.SOURCE: cfg.input.source,
        S.DAY: day,
        S.CONFIG_HASH: config_hash,
        S.STAGES: ",".join(done),
        S.STATUS: DONE,
        S.RUN_ID: ctx.run_id,
        S.UPDATED_AT: datetime.now(UTC).replace(tzinfo=None),
        S.FIRST_DAY: min(first_day, day),
    }
    frame = spark.createDataFrame([tuple(row[f.name] for f in schema.fields)], schema)
    where = " AND ".join(
        (
            lake.rows_where(source=cfg.input.source, config_hash=config_hash),
            lake.date_between(S.DAY, day, day),
        )
    )
    # Keyed by the stages and the time: a fixed scheduler run id that recorded "ingest" and now
    # records more, or redoes a stale day, must not have its write skipped as already committed.
    ctx = ctx.with_inputs(",".join(done), row[S.UPDATED_AT])
    lake.write_table(frame, cfg.lakehouse, S.SILVER_WINDOW_STATUS, ctx=ctx, replace_where=where)
    return done


def local_day(instant: datetime, source: str) -> date:
    """The day of the source's time zone that ``instant`` falls in."""
    return instant.astimezone(ZoneInfo(SOURCE_TIMEZONES[source])).date()


def days_in(column: str, values: Sequence[date]) -> str:
    """A predicate ``column IN (days...)`` on a date column."""
    if not values:
        raise ValueError("days_in needs at least one day")
    return " OR ".join(f"({lake.date_between(column, d, d)})" for d in sorted(set(values)))


def partials_built(spark: SparkSession, lakehouse: str, source: str, key: str) -> set[date]:
    """The days whose partials ``silver.daily_status`` records as built with ``key``."""
    if lake.table_version_or_none(spark, lakehouse, S.SILVER_DAILY_STATUS) is None:
        return set()
    rows = (
        lake.read_table(spark, lakehouse, S.SILVER_DAILY_STATUS)
        .where((F.col(S.SOURCE) == source) & (F.col(S.CONFIG_HASH) == key) & (F.col(S.STATUS) == BUILT))
        .select(S.DAY)
        .collect()  # one row per day
    )
    return {r[S.DAY] for r in rows}


def mark_partials(
    spark: SparkSession, lakehouse: str, source: str, built: Sequence[date], key: str, *, ctx: lake.RunContext
) -> None:
    """Record the partials of ``built`` days as built with ``key`` (replacing their earlier rows)."""
    now = datetime.now(UTC).replace(tzinfo=None)
    schema = S.CONTRACTS[S.SILVER_DAILY_STATUS].columns
    rows = [(source, d, key, BUILT, ctx.run_id, now) for d in sorted(built)]
    where = f"{lake.rows_where(source=source)} AND ({days_in(S.DAY, built)})"
    lake.write_table(
        spark.createDataFrame(rows, schema), lakehouse, S.SILVER_DAILY_STATUS, ctx=ctx, replace_where=where
    )


def mark_stale(
    spark: SparkSession, lakehouse: str, source: str, changed: Sequence[date], *, ctx: lake.RunContext
) -> int:
    """Events of ``changed`` days were written: mark those days' partials and the next days'
    (their first session may continue the day before) stale, and every completed day whose
    windows read a changed day. Returns the number of completed days marked stale."""
    if not changed:
        return 0
    affected = sorted({d + timedelta(days=k) for d in changed for k in (0, 1)})
    where = f"{lake.rows_where(source=source)} AND ({days_in(S.DAY, affected)})"
    _restamp(spark, lakehouse, S.SILVER_DAILY_STATUS, where, F.lit(True), ctx=ctx)
    reads = F.lit(False)  # an ingest-only day read nothing but its own file
    for d in set(changed):
        reads |= (F.col(S.FIRST_DAY) <= F.lit(d)) & (F.col(S.DAY) >= F.lit(d)) & (F.col(S.STAGES) != "ingest")
    return _restamp(spark, lakehouse, S.SILVER_WINDOW_STATUS, lake.rows_where(source=source), reads, ctx=ctx)


def _restamp(spark: SparkSession, lakehouse: str, name: str, where: str, stale: Column, *, ctx: lake.RunContext) -> int:
    """Set ``status`` to stale on the rows of ``name`` matching ``where`` and ``stale``, in one commit."""
    if lake.table_version_or_none(spark, lakehouse, name) is None:
        return 0
    rows = lake.read_table(spark, lakehouse, name).where(F.expr(where))
    hit = stale & (F.col(S.STATUS) != STALE)
    n = rows.where(hit).count()  # the status tables hold a row per day
    if n:
        out = rows.withColumn(S.STATUS, F.when(hit, F.lit(STALE)).otherwise(F.col(S.STATUS))).localCheckpoint()
        lake.write_table(out, lakehouse, name, ctx=ctx.with_inputs(name, where, n), replace_where=where)
    return n


def first_day_read(cfg: Config, day: date, built: Sequence[Any] | None, stages: Sequence[str]) -> date:
    """The first day the run for ``day`` read: the earliest feature day of the windows its
    features stage built (``built``: its window reports), else of the day's window when a later
    stage ran, else the day itself (ingest reads only its day)."""
    source = cfg.features.source or cfg.input.source
    if built:
        return min(local_day(w.windows.t0, source) for w in built)
    if set(stages) - {"ingest"}:
        return local_day(day_window(cfg, day, source).t0, source)
    return day


def day_window(cfg: Config, day: date, source: str) -> Windows:
    """The window of the run for ``day``: its label period ends with the day."""
    t2 = day_bounds(day, source)[1]
    t1 = t2 - timedelta(days=cfg.features.label_days)
    return Windows(t1 - timedelta(days=cfg.features.feature_days), t1, t2)


def days(first: date, last: date) -> list[date]:
    if last < first:
        raise ConfigError(f"backfill: --to {last} is before --from {first}")
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def backfill(
    run_day: Callable[[date, str], int], first: date, last: date, *, run_id: str | None, echo: Callable[[str], None]
) -> int:
    """Run ``run_day(day, run_id)`` for every day in order; stop at the first failure and return its
    exit code (0 when every day is done). Each day's run id is fixed (``<run_id or backfill>-<day>``)
    so a retried backfill retries a failed day under the same id."""
    todo = days(first, last)
    for i, day in enumerate(todo, 1):
        day_run = f"{run_id or 'backfill'}-{day.isoformat()}"
        echo(f"backfill [{i}/{len(todo)}] {day}: run {day_run}")
        code = run_day(day, day_run)
        if code != 0:
            echo(f"backfill stopped at {day} (exit {code}); rerun the same command to resume from it")
            return code
    echo(f"backfill {first} .. {last}: {len(todo)} day(s) done")
    return 0
