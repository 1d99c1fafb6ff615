"""The canonical layout, for every other log: CSV with a header, or Parquet.

Columns by name (any order): required ``user_id, item_id, category_id, behavior, ts``;
optional ``session_id, price, brand, rating, item_text, category_path``; other columns are
ignored. ``behavior`` must be one of the canonical behaviors (case-insensitive). ``ts`` is
ISO-8601 text (UTC unless it carries an offset) or, in Parquet, a timestamp. Files whose name
ends in ``.csv`` (any case) are read as CSV, the others as Parquet; folders are searched
recursively.

Every file is read with its own columns: CSV files grouped by header line, Parquet files by
schema. CSV is RFC-4180 (a quote in a quoted field is doubled; a quoted field may hold newlines,
and the raw record is then its lines joined by ``\\n``); a 0-byte CSV file holds no records. A
file without a header (other than a 0-byte CSV file) or a required column, or with a column of
an unusable type, is a :class:`BadInputError` naming the file.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from functools import reduce

import pyarrow.parquet as pq
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from sampleimp_spark import schema as S
from sampleimp_spark.errors import BadInputError
from sampleimp_spark.sources.base import (
    bad_value_flag,
    blank_to_null,
    input_files,
    join_quoted_lines,
    local_time,
    map_values,
    parsed_records,
    read_lines,
    split_csv,
    to_double,
)

NAME = "canonical"
TIMEZONE = "UTC"
REQUIRED = (S.USER_ID, S.ITEM_ID, S.CATEGORY_ID, S.BEHAVIOR, S.TS)
OPTIONAL = (S.SESSION_ID, S.PRICE, S.BRAND, S.RATING, S.ITEM_TEXT, S.CATEGORY_PATH)
CSV_OPTIONS = {"quote": '"', "escape": '"'}

_INTEGRAL = (T.ByteType, T.ShortType, T.IntegerType, T.LongType)
#: Parquet types each canonical column may have, and how the error message names them.
_PARQUET_TYPES: dict[str, tuple[tuple[type[T.DataType], ...], str]] = {
    **{c: ((T.StringType, *_INTEGRAL), "string or integer") for c in (S.USER_ID, S.ITEM_ID, S.CATEGORY_ID)},
    S.SESSION_ID: ((T.StringType, *_INTEGRAL), "string or integer"),
    **{c: ((T.StringType,), "string") for c in (S.BEHAVIOR, S.BRAND, S.ITEM_TEXT, S.CATEGORY_PATH)},
    **{
        c: ((T.StringType, T.FloatType, T.DoubleType, T.DecimalType, *_INTEGRAL), "a number or numeric text")
        for c in (S.PRICE, S.RATING)
    },
    S.TS: ((T.TimestampType, T.TimestampNTZType, T.StringType), "a timestamp or ISO-8601 text"),
}


def _check_columns(columns: Sequence[str], where: str) -> None:
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise BadInputError(f"{where}: canonical input lacks required column(s) {missing}; it has {list(columns)}")


def _records(df: DataFrame, ts: Column) -> DataFrame:
    """Parsed records from a frame holding canonical columns as text (``ts`` given parsed)."""
    cols = set(df.columns)

    def text(name: str) -> Column:
        return blank_to_null(name) if name in cols else F.lit(None).cast("string")

    price = to_double(F.col(S.PRICE)) if S.PRICE in cols else F.lit(None).cast("double")
    rating = to_double(F.col(S.RATING)) if S.RATING in cols else F.lit(None).cast("double")
    checks = {n: (F.col(n), p) for n, p in ((S.PRICE, price), (S.RATING, rating)) if n in cols}
    return parsed_records(
        df,
        {
            S.USER_ID: text(S.USER_ID),
            S.ITEM_ID: text(S.ITEM_ID),
            S.CATEGORY_ID: text(S.CATEGORY_ID),
            S.BEHAVIOR: map_values(F.lower(F.trim(S.BEHAVIOR)), {b: b for b in S.ALL_BEHAVIORS}),
            S.BEHAVIOR_RAW: F.col(S.BEHAVIOR),
            S.TS: ts,
            S.TS_RAW: F.col(S.TS).cast("string"),
            S.SESSION_ID: text(S.SESSION_ID),
            S.PRICE: price,
            S.BRAND: text(S.BRAND),
            S.RATING: rating,
            S.ITEM_TEXT: text(S.ITEM_TEXT),
            S.CATEGORY_PATH: text(S.CATEGORY_PATH),
            S.BAD_VALUE: bad_value_flag(checks) if checks else F.lit(None).cast("string"),
        },
    )


def _where(files: Sequence[str]) -> str:
    return files[0] + (f" (and {len(files) - 1} more file(s) like it)" if len(files) > 1 else "")


def _csv_header(path: str) -> str:
    """The first line of a CSV file, as Spark reads it (without its line break and an opening
    byte-order mark)."""
    with open(path, "rb") as f:
        line = f.readline().rstrip(b"\n").rstrip(b"\r")
    if not line:
        raise BadInputError(f"{path}: empty first line; canonical CSV needs a header line")
    try:
        return line.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        raise BadInputError(f"{path}: the header line is not UTF-8 ({e})") from None


#: The header a 0-byte file is read under: it holds no line, so any header with the required columns does.
_EMPTY_FILE_HEADER = ",".join(REQUIRED)


def _read_csv(spark: SparkSession, paths: Sequence[str]) -> DataFrame:
    groups: dict[str, list[str]] = {}
    for p in paths:
        # A 0-byte file holds no records (and no header), yet stays in the read: the run names it
        # among its input files (a corrected empty file replaces its earlier rejects).
        header = _csv_header(p) if os.path.getsize(p) > 0 else _EMPTY_FILE_HEADER
        groups.setdefault(header, []).append(p)
    frames = []
    for header, files in groups.items():
        fields = [f.strip() for f in next(csv.reader([header]))]
        _check_columns(fields, _where(files))
        if len(set(fields)) < len(fields):
            raise BadInputError(f"{_where(files)}: the CSV header repeats a column name: {fields}")
        lines = join_quoted_lines(read_lines(spark, files, ordered=True))
        df = split_csv(lines, fields, header=header, options=CSV_OPTIONS)
        frames.append(_records(df, local_time(S.TS, fmt=None, tz="UTC")))
    return reduce(DataFrame.unionByName, frames)


def _parquet_schema(path: str) -> tuple[tuple[str, str], ...]:
    try:
        return tuple((f.name, str(f.type)) for f in pq.read_schema(path))
    except Exception as e:  # not a Parquet file, or an unreadable one
        raise BadInputError(f"{path}: not a readable Parquet file ({e})") from None


def _read_parquet_group(spark: SparkSession, files: Sequence[str]) -> DataFrame:
    raw = spark.read.parquet(*files)
    _check_columns(raw.columns, _where(files))
    for name, (types, spelled) in _PARQUET_TYPES.items():
        if name in raw.columns and not isinstance(raw.schema[name].dataType, types):
            got = raw.schema[name].dataType.simpleString()
            raise BadInputError(f"{_where(files)}: canonical Parquet column {name} is {got}; it must be {spelled}")
    if isinstance(raw.schema[S.TS].dataType, T.StringType):
        ts = local_time(S.TS, fmt=None, tz="UTC")
    else:
        ts = F.col(S.TS).cast("timestamp")
    # Parquet strings are UTF-8 by contract, but a writer may break it: such rows are rejects too.
    strings = [f.name for f in raw.schema.fields if isinstance(f.dataType, T.StringType)]
    invalid = reduce(lambda a, b: a | b, (~F.coalesce(F.is_valid_utf8(c), F.lit(True)) for c in strings), F.lit(False))
    typed = [c for c in raw.columns if c != S.TS]
    df = raw.select(
        F.make_valid_utf8(F.to_json(F.struct(*raw.columns))).alias(S.RAW),
        F.col("_metadata.file_path").alias(S.SOURCE_FILE),
        F.lit(False).alias(S.MALFORMED),
        invalid.alias(S.INVALID_UTF8),
        *(F.col(c).cast("string").alias(c) for c in typed),
        F.col(S.TS),
    )
    return _records(df, ts)


def read(spark: SparkSession, paths: Sequence[str], item_paths: Sequence[str] = ()) -> DataFrame:
    """Parsed records from canonical CSV (header required) and Parquet files, each file read with
    its own header or schema; folders are searched recursively (:func:`input_files`)."""
    files = input_files(paths)
    csv_files = [f for f in files if f.lower().endswith(".csv")]
    groups: dict[tuple[tuple[str, str], ...], list[str]] = {}
    for f in sorted(set(files) - set(csv_files)):
        groups.setdefault(_parquet_schema(f), []).append(f)
    frames = [_read_parquet_group(spark, group) for group in groups.values()]
    frames += [_read_csv(spark, csv_files)] if csv_files else []
    return reduce(DataFrame.unionByName, frames)  # input_files found at least one file
