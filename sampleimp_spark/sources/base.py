"""Building blocks shared by the source adapters.

An adapter turns one public format into *parsed records*: the canonical event columns
(``docs/design.md`` §2, without ``source`` and ``event_date``, which ingest adds) plus the
bookkeeping columns of :data:`sampleimp_spark.schema.ADAPTER_COLUMNS` that validation needs to give
a precise reject reason. Adapters never drop a record: every input line comes out as exactly one
parsed record, so ingest can account for all of them.

Parsing is strict and ANSI-safe: every conversion uses a ``try_*`` function or a guard, so one bad
value makes one reject instead of failing the job. Text is read as bytes: a line that is not valid
UTF-8 is flagged ``_invalid_utf8`` (validation rejects it) and its ``_raw`` repaired (bad bytes as
U+FFFD), so every stored string is valid UTF-8.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import DataType

from sampleimp_spark import schema as S

#: Parsed-record columns, in order: what every adapter returns.
PARSED_COLUMNS: tuple[str, ...] = (
    *(c for c in S.EVENT_COLUMNS if c not in (S.SOURCE, S.EVENT_DATE)),
    *S.ADAPTER_COLUMNS,
)
_TYPES = {f.name: f.dataType for f in S.EVENT_SCHEMA.fields}
_CORRUPT = "_corrupt_record"


def read_lines(spark: SparkSession, paths: Sequence[str]) -> DataFrame:
    """Every physical line of ``paths`` as ``_raw`` with its file in ``_source_file``.

    A line that is not valid UTF-8 gets ``_invalid_utf8`` and its bad bytes become U+FFFD in
    ``_raw``.
    """
    value = F.col("value")
    cols = [
        F.make_valid_utf8(value).alias(S.RAW),
        F.col("_metadata.file_path").alias(S.SOURCE_FILE),
        (~F.is_valid_utf8(value)).alias(S.INVALID_UTF8),
    ]
    return spark.read.text(list(paths)).select(*cols)


def split_csv(
    lines: DataFrame,
    fields: Sequence[str],
    *,
    header: str | None = None,
    options: Mapping[str, str] | None = None,
) -> DataFrame:
    """Split ``_raw`` CSV lines into string columns ``fields``; flag wrong field counts.

    Lines equal to ``header`` are removed (they are not records). Every other line stays; a
    line that is empty or does not have exactly ``len(fields)`` fields gets ``_malformed``.
    """
    if header is not None:
        lines = lines.where(F.col(S.RAW) != F.lit(header))
    ddl = ", ".join(f"`{f}` string" for f in [*fields, _CORRUPT])
    opts = {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": _CORRUPT, **(options or {})}
    parsed = lines.withColumn("_csv", F.from_csv(F.col(S.RAW), ddl, opts))
    malformed = F.col(f"_csv.{_CORRUPT}").isNotNull() | (F.trim(F.col(S.RAW)) == "")
    invalid_utf8 = F.col(S.INVALID_UTF8) if S.INVALID_UTF8 in lines.columns else F.lit(False)
    return parsed.select(
        S.RAW,
        S.SOURCE_FILE,
        invalid_utf8.alias(S.INVALID_UTF8),
        *(F.col(f"_csv.`{f}`").alias(f) for f in fields),
        malformed.alias(S.MALFORMED),
    )


def blank_to_null(col: Column | str) -> Column:
    """Trim a string; empty becomes null."""
    c = F.trim(F.col(col) if isinstance(col, str) else col)
    return F.when(c != "", c)


def map_values(col: Column | str, mapping: Mapping[str, str]) -> Column:
    """Map source spellings to canonical ones; anything else becomes null."""
    c = F.col(col) if isinstance(col, str) else col
    out = F.lit(None).cast("string")
    for src, dst in reversed(list(mapping.items())):
        out = F.when(c == F.lit(src), F.lit(dst)).otherwise(out)
    return out


#: Unix seconds of 9999-12-31T23:59:59Z: beyond it a timestamp overflows or has no ISO year.
_MAX_UNIX_SECONDS = 253_402_300_799


def unix_time(col: Column | str, *, unit: str = "seconds") -> Column:
    """Integer Unix seconds or milliseconds (as text) to a timestamp; anything else null, as is a
    value beyond year 9999 either way (it would overflow the microseconds of a timestamp)."""
    c = blank_to_null(col)
    digits = c.rlike(r"^-?[0-9]{1,16}$")
    as_long = F.when(digits, c).cast("long")
    bound = _MAX_UNIX_SECONDS * (1000 if unit == "millis" else 1)
    usable = digits & (F.abs(as_long) <= F.lit(bound))
    ts = F.timestamp_millis(as_long) if unit == "millis" else F.timestamp_seconds(as_long)
    return F.when(usable, ts)


def local_time(col: Column | str, *, fmt: str | None, tz: str) -> Column:
    """Parse wall-clock text in zone ``tz`` to a UTC timestamp; unparsable becomes null.

    The session runs in UTC, so the parsed wall time is shifted from ``tz`` to UTC.
    """
    c = blank_to_null(col)
    parsed = F.try_to_timestamp(c, F.lit(fmt)) if fmt else F.try_to_timestamp(c)
    return parsed if tz == "UTC" else F.to_utc_timestamp(parsed, tz)


def to_double(col: Column | str) -> Column:
    """Text to a finite double; unparsable or non-finite becomes null."""
    d = blank_to_null(col).try_cast("double")
    return F.when(~F.isnan(d) & (F.abs(d) != F.lit(float("inf"))), d)


def bad_value_flag(checks: Mapping[str, tuple[Column, Column]]) -> Column:
    """Name of the first optional field whose raw text is present but did not parse.

    Args:
        checks: field name -> (raw text column, parsed column).
    """
    out = F.lit(None).cast("string")
    for name, (raw, parsed) in reversed(list(checks.items())):
        out = F.when(blank_to_null(raw).isNotNull() & parsed.isNull(), F.lit(name)).otherwise(out)
    return out


def parsed_records(df: DataFrame, columns: Mapping[str, Column]) -> DataFrame:
    """Select the parsed-record columns in contract order, typed; absent ones are null."""
    out = []
    for name in PARSED_COLUMNS:
        if name in columns:
            col = columns[name]
        elif name in (S.RAW, S.SOURCE_FILE, S.MALFORMED):
            col = F.col(name)
        elif name == S.INVALID_UTF8:
            col = F.col(name) if name in df.columns else F.lit(False)
        else:
            col = F.lit(None)
        dtype: DataType | str = _TYPES.get(name) or ("boolean" if name in (S.MALFORMED, S.INVALID_UTF8) else "string")
        out.append(col.cast(dtype).alias(name))
    return df.select(*out)
