"""Ingest: parsed records -> validated -> ``bronze.events`` + ``bronze.rejects``.

Every input record ends in exactly one place: an event, a reject (with its raw text, file
and reason), or the count of duplicates dropped (identical raw records; in a dated run also
events another run's input stored already). :class:`IngestReport` carries the
counts, and a test checks that they add up on the real Taobao sample.

Reruns are idempotent: the events a run writes replace the rows of the same source over the
run's date range (``replaceWhere``) or, in a dated run (``--date D``), the rows tagged
``ingest_day = D`` (the day's own and the other days' events its input held) and the untagged
rows of day D; its rejects replace the earlier rejects of the same input files.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from sampleimp_spark import lake, leases
from sampleimp_spark import schema as S
from sampleimp_spark.config import Config
from sampleimp_spark.errors import BadInputError
from sampleimp_spark.frames import checkpoint, release
from sampleimp_spark.progress import RunProgress
from sampleimp_spark.sources import SOURCE_TIMEZONES, generator, read_source
from sampleimp_spark.sources.base import source_file_names
from sampleimp_spark.sources.validate import (
    dedupe,
    event_days,
    main_span,
    reject_outside,
    to_events,
    to_rejects,
    validate,
)
from sampleimp_spark.stages.daily import day_bounds, mark_stale

log = logging.getLogger(__name__)


@dataclass
class IngestReport:
    """Counts of one ingest run. ``input_rows == events + sum(rejects) + duplicates``."""

    source: str
    input_rows: int
    events: int
    duplicates: int
    rejects: dict[str, int] = field(default_factory=dict)
    rows_by_file: dict[str, int] = field(default_factory=dict)
    first_date: date | None = None
    last_date: date | None = None
    skipped: bool = False  # Delta skipped the writes: this run id had committed them already
    #: A dated run's (``--date``) valid input events of earlier days (late arrivals) and of later
    #: days: stored with the day's own (``ingest_day``), unless bronze holds them already.
    late: int = 0
    other_days: int = 0
    #: Completed days whose windows read a day this run wrote: marked stale.
    stale_days: int = 0

    @property
    def reject_rate(self) -> float:
        return sum(self.rejects.values()) / self.input_rows if self.input_rows else 0.0

    def lines(self) -> list[str]:
        others = [
            *([f"{self.late:,} of earlier days"] if self.late else []),
            *([f"{self.other_days:,} of later days"] if self.other_days else []),
        ]
        out = [
            f"source {self.source}: {self.input_rows:,} input rows -> {self.events:,} events, "
            f"{sum(self.rejects.values()):,} rejects ({self.reject_rate:.2%}), "
            f"{self.duplicates:,} duplicates dropped" + (f"; input events {' and '.join(others)}" if others else "")
        ]
        if self.stale_days:
            out.append(f"  {self.stale_days:,} completed day(s) read a changed day: marked stale")
        out += [f"  rejected {reason}: {n:,}" for reason, n in sorted(self.rejects.items())]
        if self.first_date:
            out.append(f"  event dates {self.first_date} .. {self.last_date}")
        return out


def run(spark: SparkSession, cfg: Config, *, ctx: lake.RunContext, progress: RunProgress) -> IngestReport:
    """Read, validate, de-duplicate and write one source's input; return the counts.

    Raises:
        BadInputError: the input is empty, or the reject rate exceeds
            ``ingest.max_reject_rate`` (the rejects are written first, the events are not).
    """
    source = cfg.input.source
    valid_from, valid_until = cfg.ingest.valid_from, cfg.ingest.valid_until
    if source == generator.NAME and valid_from is None and valid_until is None:
        valid_from, valid_until = generator.window(cfg.input.generator)

    ctx = ctx.with_inputs(lake.files_fingerprint([*cfg.input.paths, *cfg.input.item_paths]))
    with progress.stage(spark, "ingest", f"parse and validate {source} input") as info:
        parsed = read_source(spark, cfg.input)
        files = source_file_names(parsed)  # with rows or not: a file now empty replaces its rejects too
        validated = validate(parsed, source=source, valid_from=valid_from, valid_until=valid_until)
        stored = validated = validated.persist()
        if valid_from is None and valid_until is None:
            span = main_span(
                ((r["day"], r["n"]) for r in event_days(stored).collect()),  # one row per day
                gap_days=cfg.ingest.span_gap_days,
            )
            if span is not None:
                log.info("ingest: no valid window configured; the input's main time span is %s to %s", *span)
                validated = reject_outside(validated, *span)
        day = None if cfg.run.date is None else day_bounds(cfg.run.date, source)
        try:
            report = _write(spark, cfg, validated, ctx=ctx, source=source, day=day, files=files)
        finally:
            stored.unpersist()
        info.rows_in = report.input_rows
        info.rows_out = {
            "events": report.events,
            "rejects": sum(report.rejects.values()),
            "duplicates": report.duplicates,
            **({"late": report.late} if report.late else {}),
            **({"other_days": report.other_days} if report.other_days else {}),
        }
        for line in report.lines():
            log.info("%s", line)
    return report


#: The stats column telling a dated run's valid events before its day (late) and after it.
_WHEN = "_when"
_LATE, _LATER = "late", "later"
_DAY = "_day"


def _local_day(tz: str) -> Column:
    """The day of the source's time zone ``tz`` each event falls in."""
    return F.to_date(F.from_utc_timestamp(S.TS, tz))


def _write(
    spark: SparkSession,
    cfg: Config,
    validated: DataFrame,
    *,
    ctx: lake.RunContext,
    source: str,
    day: tuple[datetime, datetime] | None,
    files: Sequence[str],
) -> IngestReport:
    tz = SOURCE_TIMEZONES[source]
    valid_row = F.col(S.REASON).isNull()
    # One pass over the input for all the counts: per file and reason, and the date range; in a
    # dated run also per local day, and whether before or after the run's day.
    when = F.lit(None).cast("string")
    local = F.lit(None).cast("date")
    if day is not None:
        when = F.when(valid_row & (F.col(S.TS) < F.lit(day[0])), _LATE).when(
            valid_row & (F.col(S.TS) >= F.lit(day[1])), _LATER
        )
        local = F.when(valid_row, _local_day(tz))
    stats = (
        validated.groupBy(S.SOURCE_FILE, S.REASON, when.alias(_WHEN), local.alias(_DAY))
        .agg(F.count(F.lit(1)).alias("n"), F.min(F.to_date(S.TS)).alias("lo"), F.max(F.to_date(S.TS)).alias("hi"))
        .collect()
    )
    rows_by_file: dict[str, int] = {}
    rejects: dict[str, int] = {}
    valid = late = other_days = 0
    lo: date | None = None
    hi: date | None = None
    input_days: set[date] = set()
    for r in stats:
        rows_by_file[r[S.SOURCE_FILE]] = rows_by_file.get(r[S.SOURCE_FILE], 0) + r["n"]
        if r[S.REASON] is not None:
            rejects[r[S.REASON]] = rejects.get(r[S.REASON], 0) + r["n"]
            continue
        if r[_WHEN] == _LATE:
            late += r["n"]
        elif r[_WHEN] == _LATER:
            other_days += r["n"]
        else:
            valid += r["n"]
        lo = r["lo"] if lo is None else min(lo, r["lo"])
        hi = r["hi"] if hi is None else max(hi, r["hi"])
        if r[_DAY] is not None:
            input_days.add(r[_DAY])
    input_rows = sum(rows_by_file.values())
    empty_day_ok = day is not None and cfg.ingest.allow_empty_day
    if input_rows == 0 and not empty_day_ok:
        raise BadInputError(
            f"source {source}: the input has no rows ({cfg.input.paths or 'generator'})"
            + ("; set ingest.allow_empty_day: true if the day had no traffic" if day is not None else "")
        )
    if day is not None and valid == 0 and not empty_day_ok:
        raise BadInputError(
            f"source {source}: the input holds no valid event of {cfg.run.date} "
            f"({cfg.input.paths or 'generator'}); nothing was written (set ingest.allow_empty_day: true "
            "if the day had no traffic)"
        )
    report = IngestReport(
        source=source,
        input_rows=input_rows,
        events=0,
        duplicates=0,
        rejects=rejects,
        rows_by_file=rows_by_file,
        first_date=lo,
        last_date=hi,
        late=late,
        other_days=other_days,
    )

    ctx.claim(*([] if lo is None or hi is None else leases.month_keys(source, lo, hi)))
    replaced = sorted({*rows_by_file, *files})  # the rejects of these files are the run's
    if replaced:
        lake.write_table(
            to_rejects(validated, run_id=ctx.run_id, max_raw_chars=cfg.ingest.max_raw_chars),
            cfg.lakehouse,
            S.BRONZE_REJECTS,
            ctx=ctx,
            replace_where=lake.rows_where(source=source) + " AND " + lake.value_in("source_file", replaced),
        )
    if report.reject_rate > cfg.ingest.max_reject_rate:
        raise BadInputError(
            f"source {source}: {sum(rejects.values()):,} of {input_rows:,} input rows rejected "
            f"({report.reject_rate:.2%}), over ingest.max_reject_rate = {cfg.ingest.max_reject_rate:.2%}; "
            f"by reason: {dict(sorted(rejects.items()))}. The rejects are in "
            f"{lake.table_path(cfg.lakehouse, S.BRONZE_REJECTS)} (run_id = {ctx.run_id}); "
            "no events were written."
        )
    if day is None and valid == 0:
        return report
    if day is None:
        assert lo is not None and hi is not None  # valid events have dates
        replace = lake.rows_where(source=source) + " AND " + lake.date_between(S.EVENT_DATE, lo, hi)
        report.stale_days = mark_stale(spark, cfg.lakehouse, source, _days_of(lo, hi), ctx=ctx)
        events = to_events(dedupe(validated.where(valid_row)))
        written = lake.write_table(events, cfg.lakehouse, S.BRONZE_EVENTS, ctx=ctx, replace_where=replace)
        if written is not None:
            report.events = written.get(lake.OUTPUT_ROWS, 0)
    else:
        assert cfg.run.date is not None
        report.events, report.stale_days, written = _write_day(
            spark, cfg, validated, source=source, day=cfg.run.date, days=input_days, ctx=ctx
        )
    if written is None:  # a retried run whose events had committed already: recount them
        report.skipped = True
        report.events = _count_run_rows(spark, cfg, source, lo, hi, cfg.run.date)
    report.duplicates = valid + late + other_days - report.events
    return report


def _write_day(
    spark: SparkSession,
    cfg: Config,
    validated: DataFrame,
    *,
    source: str,
    day: date,
    days: set[date],
    ctx: lake.RunContext,
) -> tuple[int, int, dict[str, int] | None]:
    """A dated ingest: every valid event of the day's input (late arrivals and events of later
    days included) replaces the rows the run for ``day`` stored before, and the undated rows of the
    day itself, in one commit; events other runs hold already are duplicates (as many copies as
    are missing are written). ``days``: the local days of the input's valid events. The days
    whose events may change (those of the rows replaced and of the input) are marked stale before
    the commit, so that a crash after it leaves no mark missing.

    Returns:
        The events written, the completed days marked stale, and the commit's metrics (None: a
        retried run whose write Delta skipped).
    """
    start, end = day_bounds(day, source)
    mine_sql = (
        f"{lake.date_between(S.INGEST_DAY, day, day)} OR ({lake.sql_identifier(S.INGEST_DAY)} IS NULL AND "
        f"{lake.date_between(S.EVENT_DATE, start.date(), (end - timedelta(microseconds=1)).date())} AND "
        f"{lake.time_between(S.TS, start, end)})"
    )
    mine = F.coalesce(F.expr(mine_sql), F.lit(False))
    ctx.claim(*leases.month_keys(source, day - timedelta(days=1), day + timedelta(days=1)))  # before reading
    if lake.is_delta_table(spark, lake.table_path(cfg.lakehouse, S.BRONZE_EVENTS)):
        bronze = lake.read_table(spark, cfg.lakehouse, S.BRONZE_EVENTS).where(F.col(S.SOURCE) == source)
        if S.INGEST_DAY not in bronze.columns:  # a table written before the column: every row undated
            bronze = bronze.withColumn(S.INGEST_DAY, F.lit(None).cast("date"))
    else:
        bronze = spark.createDataFrame([], S.EVENT_SCHEMA)
    tz = SOURCE_TIMEZONES[source]
    before = {r[0] for r in bronze.where(mine).select(_local_day(tz)).distinct().collect()}  # days: a handful
    touched = before | days | {day}
    ctx.claim(*leases.month_keys(source, min(touched) - timedelta(days=1), max(touched) + timedelta(days=1)))
    keys = [c for c in S.EVENT_COLUMNS if c != S.INGEST_DAY]
    # The rows of the input's days that other runs stored (a local day spans two UTC dates).
    span = (min(days) - timedelta(days=1), max(days) + timedelta(days=1)) if days else (day, day)
    in_days = F.col(S.EVENT_DATE).between(*span) & _local_day(tz).isin(sorted(days))
    held = bronze.where(in_days & ~mine).select(*keys)
    events = to_events(dedupe(validated.where(F.col(S.REASON).isNull())), ingest_day=day)
    new = checkpoint(events.select(*keys).exceptAll(held).withColumn(S.INGEST_DAY, F.lit(day)).select(*events.columns))
    try:
        n_new = new.count()
        stale = mark_stale(spark, cfg.lakehouse, source, sorted(touched), ctx=ctx)
        replace = f"{lake.rows_where(source=source)} AND ({mine_sql})"
        written = lake.write_table(new, cfg.lakehouse, S.BRONZE_EVENTS, ctx=ctx, replace_where=replace)
    finally:
        release(new)
    return n_new, stale, written


def _days_of(lo: date, hi: date) -> list[date]:
    """The source's local days that may hold events of UTC dates ``lo .. hi``."""
    return [lo - timedelta(days=1) + timedelta(days=i) for i in range((hi - lo).days + 3)]


def _count_run_rows(
    spark: SparkSession, cfg: Config, source: str, lo: date | None, hi: date | None, day: date | None
) -> int:
    events = lake.read_table(spark, cfg.lakehouse, S.BRONZE_EVENTS).where(F.col(S.SOURCE) == source)
    if day is not None:
        return events.where(F.col(S.INGEST_DAY) == F.lit(day)).count()
    assert lo is not None and hi is not None
    return events.where(F.col(S.EVENT_DATE).between(lo, hi)).count()
