"""REES46 multi-category store (Kaggle ``2019-Oct.csv`` layout).

Header ``event_time,event_type,product_id,category_id,category_code,brand,price,user_id,
user_session``; times ``YYYY-MM-DD HH:MM:SS UTC``; 19-digit category ids kept as text;
``category_code`` is a dot-separated taxonomy, stored as ``category_path``.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

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

NAME = "rees46"
TIMEZONE = "UTC"
FIELDS = (
    "event_time",
    "event_type",
    "product_id",
    "category_id",
    "category_code",
    "brand",
    "price",
    "user_id",
    "user_session",
)
HEADER = ",".join(FIELDS)
BEHAVIORS = {"view": "view", "cart": "cart", "remove_from_cart": "remove_from_cart", "purchase": "purchase"}


def read(spark: SparkSession, paths: Sequence[str], item_paths: Sequence[str] = ()) -> DataFrame:
    """Parsed records from REES46 CSV files (with their header line)."""
    df = split_csv(read_lines(spark, paths), FIELDS, header=HEADER)
    price = to_double("price")
    code = blank_to_null("category_code")
    return parsed_records(
        df,
        {
            S.USER_ID: blank_to_null("user_id"),
            S.ITEM_ID: blank_to_null("product_id"),
            S.CATEGORY_ID: blank_to_null("category_id"),
            S.BEHAVIOR: map_values(F.trim("event_type"), BEHAVIORS),
            S.BEHAVIOR_RAW: F.col("event_type"),
            S.TS: local_time("event_time", fmt="yyyy-MM-dd HH:mm:ss 'UTC'", tz="UTC"),
            S.TS_RAW: F.col("event_time"),
            S.SESSION_ID: blank_to_null("user_session"),
            S.PRICE: price,
            S.BRAND: blank_to_null("brand"),
            S.CATEGORY_PATH: F.array_join(F.split(code, r"\."), S.CATEGORY_PATH_SEP),
            S.BAD_VALUE: bad_value_flag({"price": (F.col("price"), price)}),
        },
    )
