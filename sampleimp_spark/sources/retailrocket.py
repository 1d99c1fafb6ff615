"""RetailRocket: ``events.csv`` (``timestamp,visitorid,event,itemid,transactionid``).

Events ``view, addtocart, transaction`` map to view, cart, purchase; times are Unix
milliseconds. The category comes from the item-properties files
(``timestamp,itemid,property,value``): the latest ``categoryid`` value of each item; items
without one get the ``(none)`` category. There is no session, price or text.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sampleimp_spark import schema as S
from sampleimp_spark.sources.base import blank_to_null, map_values, parsed_records, read_lines, split_csv, unix_time

NAME = "retailrocket"
TIMEZONE = "UTC"
FIELDS = ("timestamp", "visitorid", "event", "itemid", "transactionid")
HEADER = ",".join(FIELDS)
PROPERTY_FIELDS = ("timestamp", "itemid", "property", "value")
PROPERTY_HEADER = ",".join(PROPERTY_FIELDS)
BEHAVIORS = {"view": "view", "addtocart": "cart", "transaction": "purchase"}


def read_item_categories(spark: SparkSession, item_paths: Sequence[str]) -> DataFrame:
    """``(_item, _category)``: each item's most recent ``categoryid`` property."""
    props = split_csv(read_lines(spark, item_paths), PROPERTY_FIELDS, header=PROPERTY_HEADER)
    cats = props.where(~F.col(S.MALFORMED) & (F.trim("property") == "categoryid")).select(
        blank_to_null("itemid").alias("_item"),
        F.struct(unix_time("timestamp", unit="millis").alias("t"), blank_to_null("value").alias("v")).alias("tv"),
    )
    return cats.groupBy("_item").agg(F.max("tv").alias("tv")).select("_item", F.col("tv.v").alias("_category"))


def read(spark: SparkSession, paths: Sequence[str], item_paths: Sequence[str] = ()) -> DataFrame:
    """Parsed records from RetailRocket event CSVs, categories joined from item properties."""
    df = split_csv(read_lines(spark, paths), FIELDS, header=HEADER)
    df = df.withColumn("_itemid", blank_to_null("itemid"))
    if item_paths:
        df = df.join(read_item_categories(spark, item_paths), F.col("_itemid") == F.col("_item"), "left")
    else:
        df = df.withColumn("_category", F.lit(None).cast("string"))
    return parsed_records(
        df,
        {
            S.USER_ID: blank_to_null("visitorid"),
            S.ITEM_ID: F.col("_itemid"),
            S.CATEGORY_ID: F.coalesce(F.col("_category"), F.lit(S.NO_CATEGORY)),
            S.BEHAVIOR: map_values(F.trim("event"), BEHAVIORS),
            S.BEHAVIOR_RAW: F.col("event"),
            S.TS: unix_time("timestamp", unit="millis"),
            S.TS_RAW: F.col("timestamp"),
        },
    )
