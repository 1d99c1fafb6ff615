"""Alibaba Taobao UserBehavior: ``user_id,item_id,category_id,behavior_type,timestamp``.

No header; behaviors ``pv, fav, cart, buy``; Unix seconds. The dataset's days are China
time (UTC+8), which matters for hour-of-day features, not for the stored UTC timestamps.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sampleimp_spark import schema as S
from sampleimp_spark.sources.base import blank_to_null, map_values, parsed_records, read_lines, split_csv, unix_time

NAME = "taobao"
TIMEZONE = "Asia/Shanghai"
FIELDS = ("user_id", "item_id", "category_id", "behavior_type", "timestamp")
BEHAVIORS = {"pv": "view", "fav": "fav", "cart": "cart", "buy": "purchase"}


def parse_lines(lines: DataFrame) -> DataFrame:
    """Parsed records from Taobao-format lines (``_raw``, ``_source_file``)."""
    df = split_csv(lines, FIELDS)
    return parsed_records(
        df,
        {
            S.USER_ID: blank_to_null("user_id"),
            S.ITEM_ID: blank_to_null("item_id"),
            S.CATEGORY_ID: blank_to_null("category_id"),
            S.BEHAVIOR: map_values(F.trim("behavior_type"), BEHAVIORS),
            S.BEHAVIOR_RAW: F.col("behavior_type"),
            S.TS: unix_time("timestamp"),
            S.TS_RAW: F.col("timestamp"),
        },
    )


def read(spark: SparkSession, paths: Sequence[str], item_paths: Sequence[str] = ()) -> DataFrame:
    """Parsed records from UserBehavior CSV files."""
    return parse_lines(read_lines(spark, paths))
