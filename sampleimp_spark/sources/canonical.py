"""The canonical layout, for every other log: CSV with a header, or Parquet.

Columns by name (any order): required ``user_id, item_id, category_id, behavior, ts``;
optional ``session_id, price, brand, rating, item_text, category_path``; other columns are
ignored. ``behavior`` must be one of the canonical behaviors (case-insensitive). ``ts`` is
ISO-8601 text (UTC unless it carries an offset) or, in Parquet, a timestamp. Paths that all
end in ``.csv`` are read as CSV, anything else as Parquet.

Every CSV file is read with its own columns (files are grouped by header line). CSV is RFC-4180
(a quote in a quoted field is doubled; a quoted field may hold newlines, and the raw record is
then its lines joined by ``\\n``). A file without a header or without a required column is a
:class:`BadInputError` naming the file.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from functools import reduce

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from sampleimp_spark import schema as S
from sampleimp_spark.errors import BadInputError
from sampleimp_spark.sources.base import (
    bad_value_flag,
    blank_to_null,
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
    """The first line of a CSV file, as Spark reads it (without its line break)."""
    with open(path, "rb") as f:
        line = f.readline().rstrip(b"\n").rstrip(b"\r")
    if not line:
        raise BadInputError(f"{path}: empty first line; canonical CSV needs a header line")
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadInputError(f"{path}: the header line is not UTF-8 ({e})") from None


def _read_csv(spark: SparkSession, paths: Sequence[str]) -> DataFrame:
    groups: dict[str, list[str]] = {}
    for p in paths:
        groups.setdefault(_csv_header(p), []).append(p)
    frames = []
    for header, files in groups.items():
        fields = [f.strip() for f in next(csv.reader([header.removeprefix("\ufeff")]))]
        _check_columns(fields, _where(files))
        if len(set(fields)) < len(fields):
            raise BadInputError(f"{_where(files)}: the CSV header repeats a column name: {fields}")
        lines = join_quoted_lines(read_lines(spark, files, ordered=True))
        df = split_csv(lines, fields, header=header, options=CSV_OPTIONS)
        frames.append(_records(df, local_time(S.TS, fmt=None, tz="UTC")))
    return reduce(DataFrame.unionByName, frames)


def read(spark: SparkSession, paths: Sequence[str], item_paths: Sequence[str] = ()) -> DataFrame:
    """Parsed records from canonical CSV (header required, each file its own) or Parquet files."""
    if all(p.lower().endswith(".csv") for p in paths):
        return _read_csv(spark, paths)

    raw = spark.read.parquet(*paths)
    _check_columns(raw.columns, ", ".join(paths))
    ts_type = raw.schema[S.TS].dataType
    if isinstance(ts_type, T.TimestampType | T.TimestampNTZType):
        ts = F.col(S.TS).cast("timestamp")
    elif isinstance(ts_type, T.StringType):
        ts = local_time(S.TS, fmt=None, tz="UTC")
    else:
        raise ValueError(f"canonical Parquet: ts must be a timestamp or ISO text, not {ts_type.simpleString()}")
    typed = [c for c in raw.columns if c != S.TS]
    df = raw.select(
        F.to_json(F.struct(*raw.columns)).alias(S.RAW),
        F.col("_metadata.file_path").alias(S.SOURCE_FILE),
        F.lit(False).alias(S.MALFORMED),
        *(F.col(c).cast("string").alias(c) for c in typed),
        F.col(S.TS),
    )
    return _records(df, ts)
