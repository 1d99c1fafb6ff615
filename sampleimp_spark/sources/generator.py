"""A seeded generator of Taobao-shaped behavior logs, at any size, in native Spark.

:func:`generate_lines` produces about ``cfg.events`` lines in the Taobao CSV format, and :func:`read`
parses them with the Taobao adapter, like a file. They imitate the real Taobao sample: funnels of
(user, item) interactions (views, sometimes a fav, a cart and a purchase, minutes apart; about
89.5 / 5.5 / 2.9 / 2.0 % view / cart / fav / purchase), power-law user activity and item popularity
over Zipf-sized categories, purchase propensity from a latent user trait and item quality, users
sticking to a favorite category, later days drifting toward other categories, China-time days with
an evening peak, and configurable quirks (corrupted lines, exact duplicates) for the rejects path.

Every random draw is a hash of ``(seed, row id, purpose)``, so the output depends only on the
config, never on partitioning or cluster size.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from sampleimp_spark import hashing
from sampleimp_spark import schema as S
from sampleimp_spark.sources import taobao

if TYPE_CHECKING:
    from sampleimp_spark.config import GeneratorConfig

NAME = "generator"
TIMEZONE = taobao.TIMEZONE

# Funnel shape: views per interaction = 1 + Geometric; extras with these base rates. Chosen so
# the event mix is ~89.5/5.5/2.9/2.0 % (view/cart/fav/purchase): mean views 2.5 per
# interaction, total ~2.79 events per interaction.
_EXTRA_VIEW_CONTINUE = 0.6  # P(another view): mean extra views 0.6/0.4 = 1.5
_P_CART, _P_FAV, _P_BUY = 0.1536, 0.0810, 0.0559
_EVENTS_PER_INTERACTION = 2.5 + _P_CART + _P_FAV + _P_BUY
_FAVORITE_CATEGORY_SHARE = 0.6
_MAX_DRIFT_SHARE = 0.35  # share of the last day's traffic drawn from the shifted popularity


def uniform(seed: int, key: Column, salt: str) -> Column:
    """A uniform draw in [0, 1) determined by ``(seed, key, salt)`` only."""
    return hashing.uniform(seed, key, salt=salt)


def _power_index(u: Column, n: int, exponent: float) -> Column:
    """Index in [0, n) with a heavy head: P(index < k) = (k/n)^(1/exponent)."""
    return F.least(F.floor(F.pow(u, exponent) * n), F.lit(n - 1)).cast("long")


def _zipf_index(u: Column, n: int, s: float = 1.0) -> Column:
    """Index in [0, n) with P(k) roughly proportional to 1 / (k + 1)^s (inverse CDF of the
    continuous Zipf approximation; s = 1 is log-uniform)."""
    if abs(s - 1.0) < 1e-9:
        k = F.pow(F.lit(float(n + 1)), u) - 1
    else:
        a = 1.0 - s
        k = F.pow(1 + u * (float(n + 1) ** a - 1), 1.0 / a) - 1
    return F.least(F.floor(k), F.lit(n - 1)).cast("long")


def category_table(spark: SparkSession, cfg: GeneratorConfig) -> DataFrame:
    """``(cat, first_item, n_items)``: items split over categories with Zipf-like sizes."""
    c = cfg.categories
    weights = 1.0 / np.arange(1, c + 1) ** 0.9
    sizes = np.maximum(1, np.floor(weights / weights.sum() * max(cfg.items, c))).astype(int)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    pdf = pd.DataFrame({"cat": np.arange(c), "first_item": starts, "n_items": sizes})
    return spark.createDataFrame(pdf)


def generate_lines(spark: SparkSession, cfg: GeneratorConfig, *, partitions: int | None = None) -> DataFrame:
    """Taobao-format lines (``_raw``, ``_source_file``) with about ``cfg.events`` events.

    ``partitions`` only changes how the work is split, never the lines produced.
    """
    seed = cfg.seed
    n_int = max(1, round(cfg.events / _EVENTS_PER_INTERACTION))
    start = int(cfg.start.timestamp())
    i = F.col("id")

    def u(salt: str) -> Column:
        return uniform(seed, i, salt)

    inter = spark.range(0, n_int, 1, partitions).select(
        i,
        _power_index(u("user"), cfg.users, 2.5).alias("user"),
        F.floor(u("day") * cfg.days).cast("int").alias("day"),
    )
    user_key = F.col("user")
    day_frac = F.col("day") / max(cfg.days - 1, 1)
    popular_cat = _zipf_index(u("cat"), cfg.categories)
    favorite_cat = _zipf_index(uniform(seed, user_key, "favcat"), cfg.categories)
    # Drift: a growing share of later days' traffic follows a permuted popularity order.
    drifted = F.pmod(popular_cat * 7919 + 13, F.lit(cfg.categories))
    cat = (
        F.when(u("fav_or_pop") < _FAVORITE_CATEGORY_SHARE, favorite_cat)
        .when(u("drift") < day_frac * _MAX_DRIFT_SHARE, drifted)
        .otherwise(popular_cat)
    )
    inter = inter.withColumn("cat", cat).join(F.broadcast(category_table(spark, cfg)), "cat")
    # Zipf popularity inside the category (log-uniform over its items).
    item = F.col("first_item") + F.least(
        F.floor(F.pow(F.col("n_items") + 1.0, u("item")) - 1), F.col("n_items") - 1
    ).cast("long")
    # Latent propensities with mean ~1: user trait and item quality drive carts and purchases.
    user_trait = 2.0 * uniform(seed, user_key, "trait")
    item_quality = 0.25 + 1.5 * uniform(seed, item, "quality")
    # Local time of the first view: half uniform over the day, half around a 21:00 peak.
    gauss = F.sqrt(-2.0 * F.log(1.0 - u("g1"))) * F.cos(2 * math.pi * u("g2"))
    peak = F.pmod(21 * 3600 + gauss * 2.5 * 3600, F.lit(86400))
    second = F.when(u("peak") < 0.5, u("sec") * 86400).otherwise(peak)
    t0 = F.lit(start) + F.col("day") * 86400 + F.floor(second).cast("long")
    extra_views = F.floor(F.log(1.0 - u("views")) / math.log(_EXTRA_VIEW_CONTINUE)).cast("int")
    inter = inter.select(
        i,
        "user",
        "cat",
        item.alias("item"),
        t0.alias("t0"),
        F.least(extra_views, F.lit(30)).alias("extra_views"),
        (u("cart") < F.least(F.lit(1.0), _P_CART * user_trait * item_quality)).alias("is_cart"),
        (u("fav") < _P_FAV * item_quality).alias("is_fav"),
        (u("buy") < F.least(F.lit(1.0), _P_BUY * user_trait * item_quality)).alias("is_buy"),
        (60 + F.floor(u("gap") * 540)).cast("long").alias("gap"),
    )
    steps = F.concat(
        F.transform(
            F.sequence(F.lit(0), F.col("extra_views")), lambda k: F.struct(F.lit("pv").alias("b"), k.alias("k"))
        ),
        F.filter(
            F.array(
                F.when(F.col("is_fav"), F.struct(F.lit("fav").alias("b"), (F.col("extra_views") + 1).alias("k"))),
                F.when(F.col("is_cart"), F.struct(F.lit("cart").alias("b"), (F.col("extra_views") + 2).alias("k"))),
                F.when(F.col("is_buy"), F.struct(F.lit("buy").alias("b"), (F.col("extra_views") + 3).alias("k"))),
            ),
            lambda x: x.isNotNull(),
        ),
    )
    events = inter.select(
        i.alias("iid"), "user", "item", "cat", "t0", "gap", F.posexplode(steps).alias("pos", "step")
    ).select(
        (F.col("iid") * 64 + F.col("pos")).alias("eid"),
        F.col("user").cast("string").alias("u"),
        F.col("item").cast("string").alias("it"),
        F.col("cat").cast("string").alias("c"),
        F.col("step.b").alias("b"),
        # A funnel started late on the last day stays inside the window.
        F.least(F.col("t0") + F.col("step.k") * F.col("gap"), F.lit(start + cfg.days * 86400 - 1)).alias("t"),
    )
    return _with_quirks(events, cfg)


def _with_quirks(events: DataFrame, cfg: GeneratorConfig) -> DataFrame:
    """Render lines; corrupt ``bad_row_rate`` of them and repeat ``duplicate_rate`` of them."""
    seed = cfg.seed
    e = F.col("eid")
    bad = uniform(seed, e, "bad") < cfg.bad_row_rate
    kind = F.floor(uniform(seed, e, "badkind") * 5).cast("int")
    user = F.when(bad & (kind == 0), F.lit("")).otherwise(F.col("u"))
    behavior = F.when(bad & (kind == 1), F.lit("clk")).otherwise(F.col("b"))
    t = F.col("t").cast("string")
    t = F.when(bad & (kind == 2), (F.col("t") - 90 * 86400).cast("string")).otherwise(t)
    t = F.when(bad & (kind == 3), F.lit("17e8")).otherwise(t)
    line = F.concat_ws(",", user, F.col("it"), F.col("c"), behavior, t)
    line = F.when(bad & (kind == 4), F.concat_ws(",", F.col("u"), F.col("it"), F.col("c"), behavior)).otherwise(line)
    is_dup = uniform(seed, e, "dup") < cfg.duplicate_rate
    copies = F.when(is_dup, F.array(F.lit(0), F.lit(1))).otherwise(F.array(F.lit(0)))
    source_file = f"generator:seed={seed},events={cfg.events}"
    return events.select(line.alias(S.RAW), F.explode(copies).alias("_copy")).select(
        S.RAW, F.lit(source_file).alias(S.SOURCE_FILE)
    )


def read(spark: SparkSession, cfg: GeneratorConfig) -> DataFrame:
    """Parsed records of generated events (through the Taobao parser, like a file)."""
    return taobao.parse_lines(generate_lines(spark, cfg))


def window(cfg: GeneratorConfig) -> tuple[datetime, datetime]:
    """The generator's valid event window ``[start, start + days)``."""
    return cfg.start, cfg.start + timedelta(days=cfg.days)
