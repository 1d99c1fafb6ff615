"""Ingest: parsed records -> validated -> ``bronze.events`` + ``bronze.rejects``.

Every input record ends in exactly one place: an event, a reject (with its raw text, file
and reason), or the count of exact duplicates dropped. :class:`IngestReport` carries the
counts, and a test checks that they add up on the real Taobao sample.

Reruns are idempotent: the events a run writes replace the rows of the same source over the
run's date range (``replaceWhere``), and its rejects replace the earlier rejects of the
same input files.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sampleimp_spark import lake, leases
from sampleimp_spark import schema as S
from sampleimp_spark.config import Config
from sampleimp_spark.errors import BadInputError
from sampleimp_spark.frames import checkpoint, release
from sampleimp_spark.progress import RunProgress
from sampleimp_spark.sources import SOURCE_TIMEZONES, generator, read_source
from sampleimp_spark.sources.validate import (
    dedupe,
    event_days,
    main_span,
    reject_outside,
    to_events,
    to_rejects,
    validate,
)
from sampleimp_spark.stages.daily import day_bounds, local_day, mark_stale

log = logging.getLogger(__name__)


@dataclass
class IngestReport:
    """Counts of one ingest run. ``input_rows == events + sum(rejects) + duplicates + late + other_days``."""

    source: str
    input_rows: int
    events: int
    duplicates: int
    rejects: dict[str, int] = field(default_factory=dict)
    rows_by_file: dict[str, int] = field(default_factory=dict)
    first_date: date | None = None
    last_date: date | None = None
    skipped: bool = False  # Delta skipped the writes: this run id had committed them already
    #: A dated run's (``--date``) valid events of earlier days (late arrivals), and how many of
    #: them bronze did not hold yet (added to their days, whose partials and windows go stale).
    late: int = 0
    late_added: int = 0
    #: A dated run's valid events of later days: left to those days' runs.
    other_days: int = 0
    #: Completed days whose windows read a day this run wrote: marked stale.
    stale_days: int = 0

    @property
    def reject_rate(self) -> float:
        return sum(self.rejects.values()) / self.input_rows if self.input_rows else 0.0

    def lines(self) -> list[str]:
        out = [
            f"source {self.source}: {self.input_rows:,} input rows -> {self.events:,} events, "
            f"{sum(self.rejects.values()):,} rejects ({self.reject_rate:.2%}), "
            f"{self.duplicates:,} exact duplicates dropped"
            + (f", {self.late:,} late events of earlier days ({self.late_added:,} new)" if self.late else "")
            + (f", {self.other_days:,} events of later days left to their runs" if self.other_days else "")
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
        validated = validate(
            read_source(spark, cfg.input), source=source, valid_from=valid_from, valid_until=valid_until
        )
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
            report = _write(spark, cfg, validated, ctx=ctx, source=source, day=day)
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


def _write(
    spark: SparkSession,
    cfg: Config,
    validated: DataFrame,
    *,
    ctx: lake.RunContext,
    source: str,
    day: tuple[datetime, datetime] | None = None,
) -> IngestReport:
    # One pass over the input for all the counts: per file and reason, and the date range.
    when = F.lit(None).cast("string")  # a dated run's valid events before or after its day
    if day is not None:
        valid_row = F.col(S.REASON).isNull()
        when = F.when(valid_row & (F.col(S.TS) < F.lit(day[0])), _LATE).when(
            valid_row & (F.col(S.TS) >= F.lit(day[1])), _LATER
        )
    stats = (
        validated.groupBy(S.SOURCE_FILE, S.REASON, when.alias(_WHEN))
        .agg(F.count(F.lit(1)).alias("n"), F.min(F.to_date(S.TS)).alias("lo"), F.max(F.to_date(S.TS)).alias("hi"))
        .collect()
    )
    rows_by_file: dict[str, int] = {}
    rejects: dict[str, int] = {}
    valid = late = other_days = 0
    lo: date | None = None
    hi: date | None = None
    for r in stats:
        rows_by_file[r[S.SOURCE_FILE]] = rows_by_file.get(r[S.SOURCE_FILE], 0) + r["n"]
        if r[_WHEN] == _LATE:
            late += r["n"]
        elif r[_WHEN] == _LATER:
            other_days += r["n"]
        elif r[S.REASON] is None:
            valid += r["n"]
            lo = r["lo"] if lo is None else min(lo, r["lo"])
            hi = r["hi"] if hi is None else max(hi, r["hi"])
        else:
            rejects[r[S.REASON]] = rejects.get(r[S.REASON], 0) + r["n"]
    input_rows = sum(rows_by_file.values())
    if input_rows == 0:
        raise BadInputError(f"source {source}: the input has no rows ({cfg.input.paths or 'generator'})")
    if day is not None and valid == 0:
        raise BadInputError(
            f"source {source}: the input holds no valid event of {cfg.run.date} "
            f"({cfg.input.paths or 'generator'}); nothing was written"
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
    lake.write_table(
        to_rejects(validated, run_id=ctx.run_id, max_raw_chars=cfg.ingest.max_raw_chars),
        cfg.lakehouse,
        S.BRONZE_REJECTS,
        ctx=ctx,
        replace_where=lake.rows_where(source=source) + " AND " + lake.value_in("source_file", sorted(rows_by_file)),
    )
    if report.reject_rate > cfg.ingest.max_reject_rate:
        raise BadInputError(
            f"source {source}: {sum(rejects.values()):,} of {input_rows:,} input rows rejected "
            f"({report.reject_rate:.2%}), over ingest.max_reject_rate = {cfg.ingest.max_reject_rate:.2%}; "
            f"by reason: {dict(sorted(rejects.items()))}. The rejects are in "
            f"{lake.table_path(cfg.lakehouse, S.BRONZE_REJECTS)} (run_id = {ctx.run_id}); "
            "no events were written."
        )
    if valid == 0:
        return report
    assert lo is not None and hi is not None  # valid events have dates
    events = validated.where(F.col(S.REASON).isNull() & when.isNull())
    if day is not None:  # exactly the day: a local day spans two UTC dates shared with its neighbours
        lo, hi = day[0].date(), (day[1] - timedelta(microseconds=1)).date()
    replace = lake.rows_where(source=source) + " AND " + lake.date_between(S.EVENT_DATE, lo, hi)
    if day is not None:
        replace += " AND " + lake.time_between(S.TS, *day)
    written = lake.write_table(
        to_events(dedupe(events)), cfg.lakehouse, S.BRONZE_EVENTS, ctx=ctx, replace_where=replace
    )
    if written is None:  # a retried run whose events had committed already: recount them
        report.skipped = True
        report.events = _count_run_rows(spark, cfg, source, lo, hi, day)
    else:
        report.events = written.get(lake.OUTPUT_ROWS, 0)
    report.duplicates = valid - report.events
    changed = _days_of(lo, hi) if day is None else [local_day(day[0], source)]
    if day is not None and late:
        added, late_days = _add_late(spark, cfg, validated.where(when == _LATE), source=source, before=day[0], ctx=ctx)
        report.late_added = added
        changed += late_days
    report.stale_days = mark_stale(spark, cfg.lakehouse, source, changed, ctx=ctx)
    return report


def _days_of(lo: date, hi: date) -> list[date]:
    """The source's local days that may hold events of UTC dates ``lo .. hi``."""
    return [lo - timedelta(days=1) + timedelta(days=i) for i in range((hi - lo).days + 3)]


def _add_late(
    spark: SparkSession, cfg: Config, late: DataFrame, *, source: str, before: datetime, ctx: lake.RunContext
) -> tuple[int, list[date]]:
    """Append the late events bronze does not hold yet (as many copies as are missing) to their
    days; returns how many were added and the local days of every late event, added or not: a
    rerun after a crash between the append and the stale marks must still mark their days."""
    events = to_events(dedupe(late))
    bounds = events.agg(F.min(S.EVENT_DATE), F.max(S.EVENT_DATE)).first()  # one row
    assert bounds is not None and bounds[0] is not None
    ctx.claim(*leases.month_keys(source, bounds[0], bounds[1]))
    held = lake.read_table(spark, cfg.lakehouse, S.BRONZE_EVENTS).where(
        (F.col(S.SOURCE) == source) & F.col(S.EVENT_DATE).between(bounds[0], bounds[1]) & (F.col(S.TS) < F.lit(before))
    )
    new = checkpoint(events.exceptAll(held.select(*events.columns)))
    try:
        tz = SOURCE_TIMEZONES[source]
        days = [r[0] for r in events.select(F.to_date(F.from_utc_timestamp(S.TS, tz))).distinct().collect()]  # days
        added = new.count()
        if added:
            lake.write_table(new, cfg.lakehouse, S.BRONZE_EVENTS, ctx=ctx.with_inputs(ctx.inputs, "late"))
    finally:
        release(new)
    log.info("ingest: %d late event(s) added, of %s", added, ", ".join(str(d) for d in sorted(days)))
    return added, days


def _count_run_rows(
    spark: SparkSession, cfg: Config, source: str, lo: date, hi: date, day: tuple[datetime, datetime] | None
) -> int:
    events = lake.read_table(spark, cfg.lakehouse, S.BRONZE_EVENTS)
    mine = (F.col(S.SOURCE) == source) & F.col(S.EVENT_DATE).between(lo, hi)
    if day is not None:
        mine &= (F.col(S.TS) >= F.lit(day[0])) & (F.col(S.TS) < F.lit(day[1]))
    return events.where(mine).count()
