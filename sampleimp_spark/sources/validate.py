"""Validation of parsed records: reject reasons, canonical events, de-duplication.

Pure transforms over the parsed records of :mod:`sampleimp_spark.sources`: :func:`validate` gives
each record a reject reason (null when valid; the first failing check of invalid_utf8, malformed,
null_id, unknown_behavior, bad_timestamp, ts_out_of_range, negative_price, bad_value), :func:`to_events`
keeps the valid ones as canonical events, :func:`dedupe` drops exact duplicates (identical raw
records) and :func:`to_rejects` shapes the rest for ``bronze.rejects``. So every record ends in
exactly one place: an event, a reject, or the count of duplicates. The ingest stage
(:mod:`sampleimp_spark.stages.ingest`) writes them.

Timestamps must lie in ``[SUPPORTED_FROM, SUPPORTED_UNTIL)`` whatever the configured window (every
stored timestamp stays readable by pandas and delta-rs). Without a configured window,
:func:`main_span` gives the default one: the run of event days (gaps of at most
``gap_days``) holding the most events, so a stray year cannot stretch it; :func:`reject_outside`
turns the rest into ``ts_out_of_range`` rejects.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from sampleimp_spark import schema as S

#: The range every stored timestamp lies in (``ts = 0``, 1970-01-01, is the usual placeholder of a
#: missing time; pandas' nanosecond timestamps end in 2262).
SUPPORTED_FROM = datetime(1971, 1, 1, tzinfo=UTC)
SUPPORTED_UNTIL = datetime(2200, 1, 1, tzinfo=UTC)
_EPOCH = date(1970, 1, 1)


def _in_window(ts: Column, valid_from: datetime | None, valid_until: datetime | None) -> Column:
    lo = SUPPORTED_FROM if valid_from is None else max(valid_from, SUPPORTED_FROM)
    hi = SUPPORTED_UNTIL if valid_until is None else min(valid_until, SUPPORTED_UNTIL)
    return (ts >= F.lit(lo)) & (ts < F.lit(hi))


def event_days(validated: DataFrame) -> DataFrame:
    """``(day, n)``: valid records per UTC day, ``day`` in days since 1970-01-01 (one row per day)."""
    return (
        validated.where(F.col(S.REASON).isNull())
        .groupBy(F.unix_date(F.to_date(S.TS)).alias("day"))
        .agg(F.count(F.lit(1)).alias("n"))
    )


def main_span(day_counts: Iterable[tuple[int, int]], *, gap_days: int) -> tuple[datetime, datetime] | None:
    """The default valid window ``[first day, last day + 1)`` (UTC midnights): of the runs of event
    days whose gaps are at most ``gap_days``, the one with the most events (the earlier on a tie).
    None without days."""
    days = sorted((int(d), int(n)) for d, n in day_counts)
    if not days:
        return None
    best = cur = (days[0][0], days[0][0], days[0][1])  # first day, last day, events
    for day, n in days[1:]:
        cur = (cur[0], day, cur[2] + n) if day - cur[1] <= gap_days else (day, day, n)
        if cur[2] > best[2]:
            best = cur
    first = datetime.combine(_EPOCH + timedelta(days=best[0]), datetime.min.time(), tzinfo=UTC)
    last = datetime.combine(_EPOCH + timedelta(days=best[1] + 1), datetime.min.time(), tzinfo=UTC)
    return first, last


def reject_outside(validated: DataFrame, valid_from: datetime, valid_until: datetime) -> DataFrame:
    """Valid records outside ``[valid_from, valid_until)`` become ``ts_out_of_range`` rejects."""
    outside = F.col(S.REASON).isNull() & ~_in_window(F.col(S.TS), valid_from, valid_until)
    span = f"{valid_from:%Y-%m-%d} to {valid_until:%Y-%m-%d} UTC"
    detail = F.concat(
        F.lit("ts="),
        F.date_format(S.TS, "yyyy-MM-dd HH:mm:ss 'UTC'"),
        F.lit(f" outside the input's main time span {span} (set ingest.valid_from/valid_until to keep it)"),
    )
    return validated.withColumns(
        {
            S.REASON: F.when(outside, F.lit(S.REJECT_TS_OUT_OF_RANGE)).otherwise(F.col(S.REASON)),
            S.DETAIL: F.when(outside, detail).otherwise(F.col(S.DETAIL)),
        }
    )


def validate(
    parsed: DataFrame,
    *,
    source: str,
    valid_from: datetime | None = None,
    valid_until: datetime | None = None,
) -> DataFrame:
    """Add ``source``, ``reason`` and ``detail`` to parsed records; ``reason`` is null for valid ones.

    The first failing check gives the reason, in this order: invalid_utf8, malformed, null_id,
    unknown_behavior, bad_timestamp, ts_out_of_range, negative_price, bad_value.
    """
    null_ids = F.array_compact(
        F.array(*(F.when(F.col(c).isNull(), F.lit(c)) for c in (S.USER_ID, S.ITEM_ID, S.CATEGORY_ID)))
    )
    checks: list[tuple[Column, str, Column]] = [
        (
            F.col(S.INVALID_UTF8),
            S.REJECT_INVALID_UTF8,
            F.lit("bytes that are not UTF-8 (shown as U+FFFD in raw)"),
        ),
        (
            F.col(S.MALFORMED),
            S.REJECT_MALFORMED,
            F.when(F.trim(S.RAW) == "", F.lit("empty line")).otherwise(F.lit("wrong field count or unparsable")),
        ),
        (F.size(null_ids) > 0, S.REJECT_NULL_ID, F.concat(F.lit("missing "), F.array_join(null_ids, ", "))),
        (
            F.col(S.BEHAVIOR).isNull(),
            S.REJECT_UNKNOWN_BEHAVIOR,
            F.concat(F.lit("behavior="), F.coalesce(F.col(S.BEHAVIOR_RAW), F.lit("<null>"))),
        ),
        (
            F.col(S.TS).isNull(),
            S.REJECT_BAD_TIMESTAMP,
            F.concat(F.lit("ts="), F.coalesce(F.col(S.TS_RAW), F.lit("<null>"))),
        ),
        (
            ~_in_window(F.col(S.TS), valid_from, valid_until),
            S.REJECT_TS_OUT_OF_RANGE,
            F.concat(F.lit("ts="), F.date_format(S.TS, "yyyy-MM-dd HH:mm:ss 'UTC'")),
        ),
        (F.col(S.PRICE) < 0, S.REJECT_NEGATIVE_PRICE, F.concat(F.lit("price="), F.col(S.PRICE).cast("string"))),
        (F.col(S.BAD_VALUE).isNotNull(), S.REJECT_BAD_VALUE, F.concat(F.lit("unparsable "), F.col(S.BAD_VALUE))),
    ]
    reason = F.lit(None).cast("string")
    detail = F.lit(None).cast("string")
    for cond, name, why in reversed(checks):
        reason = F.when(cond, F.lit(name)).otherwise(reason)
        detail = F.when(cond, why).otherwise(detail)
    return parsed.withColumns({S.SOURCE: F.lit(source), S.REASON: reason, S.DETAIL: detail})


def to_events(validated: DataFrame, *, ingest_day: date | None = None) -> DataFrame:
    """Valid records as canonical events (``event_date`` is the UTC date of ``ts``), brought by
    the dated run of ``ingest_day`` (None: an undated ingest)."""
    valid = validated.where(F.col(S.REASON).isNull()).withColumns(
        {S.EVENT_DATE: F.to_date(S.TS), S.INGEST_DAY: F.lit(ingest_day).cast("date")}
    )
    return valid.select(*(F.col(f.name).cast(f.dataType).alias(f.name) for f in S.EVENT_SCHEMA.fields))


def dedupe(validated: DataFrame) -> DataFrame:
    """Drop exact duplicates: records whose raw text is identical (across all input files).

    Equality is on the raw record, not on the canonical columns: two Tianchi clicks in the
    same hour from different geohashes are two events, though their canonical columns match.
    """
    return validated.dropDuplicates([S.RAW])


def cut_text(text: Column, max_chars: int) -> Column:
    """``text`` with everything past ``max_chars`` characters replaced by "…[cut: N characters]"."""
    extra = F.length(text) - F.lit(max_chars)
    marker = F.concat(F.lit("…[cut: "), extra.cast("string"), F.lit(" characters]"))
    return F.when(extra > 0, F.concat(F.substring(text, 1, max_chars), marker)).otherwise(text)


def to_rejects(validated: DataFrame, *, run_id: str, max_raw_chars: int) -> DataFrame:
    """Rejected records with their raw text (cut past ``max_raw_chars``), file and reason."""
    return validated.where(F.col(S.REASON).isNotNull()).select(
        F.col(S.SOURCE),
        F.col(S.SOURCE_FILE).alias("source_file"),
        cut_text(F.col(S.RAW), max_raw_chars).alias("raw"),
        F.col(S.REASON),
        F.col(S.DETAIL),
        F.lit(run_id).alias(S.RUN_ID),
    )
