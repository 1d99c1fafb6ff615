"""Validation of parsed records: reject reasons, canonical events, de-duplication.

Pure transforms over the parsed records of :mod:`sampleimp_spark.sources`: :func:`validate` gives
each record a reject reason (null when valid; the first failing check of malformed, null_id,
unknown_behavior, bad_timestamp, ts_out_of_range, negative_price, bad_value), :func:`to_events`
keeps the valid ones as canonical events, :func:`dedupe` drops exact duplicates (identical raw
records) and :func:`to_rejects` shapes the rest for ``bronze.rejects``. So every record ends in
exactly one place: an event, a reject, or the count of duplicates. The ingest stage
(:mod:`sampleimp_spark.stages.ingest`) writes them.
"""

from __future__ import annotations

from datetime import datetime

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from sampleimp_spark import schema as S


def _in_window(ts: Column, valid_from: datetime | None, valid_until: datetime | None) -> Column:
    cond = F.lit(True)
    if valid_from is not None:
        cond = cond & (ts >= F.lit(valid_from))
    if valid_until is not None:
        cond = cond & (ts < F.lit(valid_until))
    return cond


def validate(
    parsed: DataFrame,
    *,
    source: str,
    valid_from: datetime | None = None,
    valid_until: datetime | None = None,
) -> DataFrame:
    """Add ``source``, ``reason`` and ``detail`` to parsed records; ``reason`` is null for valid ones.

    The first failing check gives the reason, in this order: malformed, null_id,
    unknown_behavior, bad_timestamp, ts_out_of_range, negative_price, bad_value.
    """
    null_ids = F.array_compact(
        F.array(*(F.when(F.col(c).isNull(), F.lit(c)) for c in (S.USER_ID, S.ITEM_ID, S.CATEGORY_ID)))
    )
    checks: list[tuple[Column, str, Column]] = [
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


def to_events(validated: DataFrame) -> DataFrame:
    """Valid records as canonical events (``event_date`` is the UTC date of ``ts``)."""
    valid = validated.where(F.col(S.REASON).isNull()).withColumn(S.EVENT_DATE, F.to_date(S.TS))
    return valid.select(*(F.col(f.name).cast(f.dataType).alias(f.name) for f in S.EVENT_SCHEMA.fields))


def dedupe(validated: DataFrame) -> DataFrame:
    """Drop exact duplicates: records whose raw text is identical (across all input files).

    Equality is on the raw record, not on the canonical columns: two Tianchi clicks in the
    same hour from different geohashes are two events, though their canonical columns match.
    """
    return validated.dropDuplicates([S.RAW])


def to_rejects(validated: DataFrame, *, run_id: str) -> DataFrame:
    """Rejected records with their raw text, file and reason."""
    return validated.where(F.col(S.REASON).isNotNull()).select(
        F.col(S.SOURCE),
        F.col(S.SOURCE_FILE).alias("source_file"),
        F.col(S.RAW).alias("raw"),
        F.col(S.REASON),
        F.col(S.DETAIL),
        F.lit(run_id).alias(S.RUN_ID),
    )
