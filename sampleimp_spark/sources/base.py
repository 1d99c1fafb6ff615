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

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import DataType

from sampleimp_spark import schema as S
from sampleimp_spark.errors import BadInputError

#: Parsed-record columns, in order: what every adapter returns.
PARSED_COLUMNS: tuple[str, ...] = (
    *(c for c in S.EVENT_COLUMNS if c not in (S.SOURCE, S.EVENT_DATE, S.INGEST_DAY)),
    *S.ADAPTER_COLUMNS,
)
_TYPES = {f.name: f.dataType for f in S.EVENT_SCHEMA.fields}
_CORRUPT = "_corrupt_record"
_POS = "_pos"


_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def input_files(paths: Sequence[str]) -> list[str]:
    """The files of ``paths``: local folders searched recursively, hidden names (``.x``, ``_x``)
    skipped; URIs of other file systems passed on for Spark to list (recursively).

    Raises:
        BadInputError: a local path does not exist, or a folder holds no files.
    """
    files: list[str] = []
    for p in paths:
        if _URI.match(p) and not p.startswith("file:"):
            files.append(p)
            continue
        root = Path(p.removeprefix("file://"))
        if not root.exists():
            raise BadInputError(f"input path {p} does not exist: fix input.paths")
        if not root.is_dir():
            files.append(str(root))
            continue
        found = [
            str(f)
            for f in sorted(root.rglob("*"))
            if f.is_file() and not any(part.startswith((".", "_")) for part in f.relative_to(root).parts)
        ]
        if not found:
            raise BadInputError(f"input folder {p} holds no files")
        files.extend(found)
    return files


def source_file_names(parsed: DataFrame) -> list[str]:
    """The files ``parsed`` reads (rows or not), named as its ``_source_file`` column names them.

    Spark's ``inputFiles()`` names a local file ``file:///p`` where ``_metadata.file_path`` says
    ``file:/p`` (the percent-encoding is the same); other schemes agree. Empty for the generator.
    """
    local = "file:///"
    return sorted({"file:/" + f.removeprefix(local) if f.startswith(local) else f for f in parsed.inputFiles()})


def read_lines(spark: SparkSession, paths: Sequence[str], *, ordered: bool = False) -> DataFrame:
    """Every physical line of the files of ``paths`` (:func:`input_files`) as ``_raw`` with its
    file in ``_source_file``.

    A line that is not valid UTF-8 gets ``_invalid_utf8`` and its bad bytes become U+FFFD in
    ``_raw``. With ``ordered``, ``_pos`` orders the lines of each file (file block, then line).
    """
    value = F.col("value")
    cols = [
        F.make_valid_utf8(value).alias(S.RAW),
        F.col("_metadata.file_path").alias(S.SOURCE_FILE),
        (~F.is_valid_utf8(value)).alias(S.INVALID_UTF8),
    ]
    if ordered:  # lines of one block are read in order, and so numbered increasingly
        pos = F.struct(F.col("_metadata.file_block_start").alias("block"), F.monotonically_increasing_id().alias("n"))
        cols.append(pos.alias(_POS))
    return spark.read.option("recursiveFileLookup", "true").text(input_files(paths)).select(*cols)


# RFC-4180 fields, as Java regexes: a closed quoted field, an unquoted one (a quote inside it is
# text), and the text of a quoted field that is still open at the end of a line.
_QUOTED = r'"(?:[^"]++|"")*+"'
_UNQUOTED = r'(?:[^",][^,]*+)?'
_OPEN_TAIL = r'"(?:[^"]++|"")*+$'
#: From outside any field, the line ends inside an open quoted field.
_OPENS = rf"^(?:(?:{_QUOTED}|{_UNQUOTED}),)*{_OPEN_TAIL}"
#: From inside an open quoted field, the line ends inside one (the same, or a later field).
_STAYS_OPEN = rf'^(?:[^"]++|"")*+(?:$|",(?:(?:{_QUOTED}|{_UNQUOTED}),)*{_OPEN_TAIL})'


def join_quoted_lines(lines: DataFrame) -> DataFrame:
    """Join the lines of each RFC-4180 record whose quoted field holds a newline (with ``\\n``).

    ``lines`` come from :func:`read_lines` with ``ordered``; the result has one row per record
    (``_raw``, ``_source_file``, ``_invalid_utf8``). Whether a line ends inside a quoted field
    depends on whether it starts inside one, so each line is an identity (no quote), a toggle or
    a constant; the state after a line follows from the last constant before it and the toggles
    since. A quote still open at the end of its file joins nothing: those lines stay records of
    their own, parsed as lone lines always were.
    """
    by_file = Window.partitionBy(S.SOURCE_FILE).orderBy(_POS)
    upto = by_file.rowsBetween(Window.unboundedPreceding, Window.currentRow)
    whole = by_file.rowsBetween(Window.unboundedPreceding, Window.unboundedFollowing)
    from_out, from_in = F.col(S.RAW).rlike(_OPENS), F.col(S.RAW).rlike(_STAYS_OPEN)
    toggles = F.sum((from_out & ~from_in).cast("int")).over(upto)
    lines = lines.withColumns({"_toggles": toggles, "_const": F.when(from_out == from_in, from_out)})
    last_const = F.last(F.when(F.col("_const").isNotNull(), F.struct("_const", "_toggles")), ignorenulls=True)
    lines = lines.withColumn("_last", last_const.over(upto))
    flips = F.col("_toggles") - F.coalesce(F.col("_last._toggles"), F.lit(0))
    lines = lines.withColumn("_open", F.coalesce(F.col("_last._const"), F.lit(False)) != (flips % 2 == 1))
    starts = ~F.coalesce(F.lag("_open").over(by_file), F.lit(False))
    lines = lines.withColumns({"_starts": starts, "_record": F.sum(starts.cast("int")).over(upto)})
    unclosed = F.last("_open").over(whole) & (F.col("_record") == F.max("_record").over(whole))
    single = lines.withColumn("_single", (F.col("_starts") & ~F.col("_open")) | unclosed)

    out = (S.RAW, S.SOURCE_FILE, S.INVALID_UTF8)
    ordered = F.sort_array(F.collect_list(F.struct(_POS, S.RAW)))
    joined = (
        single.where(~F.col("_single"))
        .groupBy(S.SOURCE_FILE, "_record")
        .agg(
            F.array_join(F.transform(ordered, lambda x: x[S.RAW]), "\n").alias(S.RAW),
            F.bool_or(S.INVALID_UTF8).alias(S.INVALID_UTF8),
        )
    )
    return single.where("_single").select(*out).unionByName(joined.select(*out))


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
