"""Alibaba Tianchi mobile recommendation (2014): ``sample_user_behavior.csv`` layout.

Header ``user_id,item_id,behavior_type,user_geohash,item_category,time``; behavior codes
1..4 = click, fav, cart, purchase; hour-resolution times ``YYYY-MM-DD HH`` in China time.
The item file of the same dataset is an independent sample (it joins to almost nothing)
and the behavior file already carries the category, so only the behavior file is read.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sampleimp_spark import schema as S
from sampleimp_spark.sources.base import blank_to_null, local_time, map_values, parsed_records, read_lines, split_csv

NAME = "tianchi"
TIMEZONE = "Asia/Shanghai"
FIELDS = ("user_id", "item_id", "behavior_type", "user_geohash", "item_category", "time")
HEADER = ",".join(FIELDS)
BEHAVIORS = {"1": "click", "2": "fav", "3": "cart", "4": "purchase"}


def read(spark: SparkSession, paths: Sequence[str], item_paths: Sequence[str] = ()) -> DataFrame:
    """Parsed records from Tianchi behavior CSV files (with their header line)."""
    df = split_csv(read_lines(spark, paths), FIELDS, header=HEADER)
    return parsed_records(
        df,
        {
            S.USER_ID: blank_to_null("user_id"),
            S.ITEM_ID: blank_to_null("item_id"),
            S.CATEGORY_ID: blank_to_null("item_category"),
            S.BEHAVIOR: map_values(F.trim("behavior_type"), BEHAVIORS),
            S.BEHAVIOR_RAW: F.col("behavior_type"),
            S.TS: local_time("time", fmt="yyyy-MM-dd HH", tz=TIMEZONE),
            S.TS_RAW: F.col("time"),
        },
    )
