"""Amazon Reviews 2023: a reviews CSV joined to the category's item metadata (JSON lines).

A review is a ``purchase`` event with a ``rating``. The item's ``title`` becomes
``item_text``, its ``store`` the ``brand``, and its category path (``categories``) gives
``category_id`` = the second level (the first is the department itself) or ``(none)`` when
the path is shorter, and ``category_path`` = the whole path. Prices are absent in practice.
Review CSVs quote RFC-4180 style (a quote inside a field is doubled); backslashes are text.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from sampleimp_spark import schema as S
from sampleimp_spark.sources.base import (
    bad_value_flag,
    blank_to_null,
    local_time,
    parsed_records,
    read_lines,
    split_csv,
    to_double,
)

NAME = "amazon"
TIMEZONE = "UTC"
FIELDS = (
    "rating",
    "title",
    "text",
    "images",
    "asin",
    "parent_asin",
    "user_id",
    "timestamp",
    "helpful_vote",
    "verified_purchase",
)
HEADER = ",".join(FIELDS)
CSV_OPTIONS = {"quote": '"', "escape": '"'}
META_SCHEMA = T.StructType(
    [
        T.StructField("parent_asin", T.StringType()),
        T.StructField("title", T.StringType()),
        T.StructField("store", T.StringType()),
        T.StructField("categories", T.ArrayType(T.StringType())),
    ]
)


def read_items(spark: SparkSession, item_paths: Sequence[str]) -> DataFrame:
    """One row per ``parent_asin``: title, store, category id and path.

    Unparsable metadata lines have a null ``parent_asin`` and join to nothing; their reviews
    then fall into the ``(none)`` category like reviews of unknown items.
    """
    meta = spark.read.schema(META_SCHEMA).json(list(item_paths)).where(F.col("parent_asin").isNotNull())
    cats = F.coalesce(F.col("categories"), F.array().cast("array<string>"))
    items = meta.select(
        F.col("parent_asin").alias("_asin"),
        blank_to_null("title").alias("_title"),
        blank_to_null("store").alias("_store"),
        F.when(F.size(cats) >= 2, cats[1]).alias("_category"),
        F.when(F.size(cats) >= 1, F.array_join(cats, S.CATEGORY_PATH_SEP)).alias("_path"),
    )
    # The meta file has one row per item; should an item repeat, keep one deterministically so
    # the join can never multiply reviews.
    best = F.max(F.struct("_title", "_store", "_category", "_path")).alias("m")
    return items.groupBy("_asin").agg(best).select("_asin", "m.*")


def read(spark: SparkSession, paths: Sequence[str], item_paths: Sequence[str] = ()) -> DataFrame:
    """Parsed records from review CSVs joined to item metadata."""
    reviews = split_csv(read_lines(spark, paths), FIELDS, header=HEADER, options=CSV_OPTIONS)
    joined = reviews.join(
        F.broadcast(read_items(spark, item_paths)),
        F.col("parent_asin") == F.col("_asin"),
        "left",
    )
    rating = to_double("rating")
    return parsed_records(
        joined,
        {
            S.USER_ID: blank_to_null("user_id"),
            S.ITEM_ID: blank_to_null("parent_asin"),
            S.CATEGORY_ID: F.coalesce(F.col("_category"), F.lit(S.NO_CATEGORY)),
            S.BEHAVIOR: F.lit("purchase"),
            S.BEHAVIOR_RAW: F.lit("review"),
            S.TS: local_time("timestamp", fmt=None, tz=TIMEZONE),
            S.TS_RAW: F.col("timestamp"),
            S.RATING: F.when((rating >= 1) & (rating <= 5), rating),
            S.BRAND: F.col("_store"),
            S.ITEM_TEXT: F.col("_title"),
            S.CATEGORY_PATH: F.col("_path"),
            S.BAD_VALUE: bad_value_flag({"rating": (F.col("rating"), F.when((rating >= 1) & (rating <= 5), rating))}),
        },
    )
