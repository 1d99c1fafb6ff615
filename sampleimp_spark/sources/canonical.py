"""The canonical layout, for every other log: CSV with a header, or Parquet.

Columns by name (any order): required ``user_id, item_id, category_id, behavior, ts``;
optional ``session_id, price, brand, rating, item_text, category_path``; other columns are
ignored. ``behavior`` must be one of the canonical behaviors (case-insensitive). ``ts`` is
ISO-8601 text (UTC unless it carries an offset) or, in Parquet, a timestamp. Paths that all
end in ``.csv`` are read as CSV, anything else as Parquet.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from sampleimp_spark import schema as S
from sampleimp_spark.sources.base import (
    bad_value_flag,
    blank_to_null,
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


def _check_columns(columns: Sequence[str], where: str) -> None:
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise ValueError(f"{where}: canonical input lacks required column(s) {missing}; it has {list(columns)}")


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


def read(spark: SparkSession, paths: Sequence[str], item_paths: Sequence[str] = ()) -> DataFrame:
    """Parsed records from canonical CSV (header required) or Parquet files."""
    if all(p.lower().endswith(".csv") for p in paths):
        header = spark.read.text(paths[0]).first()
        if header is None:
            raise ValueError(f"{paths[0]}: empty file; canonical CSV needs a header line")
        fields = [f.strip() for f in header[0].split(",")]
        _check_columns(fields, paths[0])
        df = split_csv(read_lines(spark, paths), fields, header=header[0])
        return _records(df, local_time(S.TS, fmt=None, tz="UTC"))

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
