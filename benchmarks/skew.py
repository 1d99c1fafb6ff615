"""Category skew for the skew benchmark: the same events, the largest category holding a chosen share.

The generator's categories are Zipf-sized (the largest holds about 10 % of the events). To set
the largest category's share, :func:`skewed_events` re-assigns every *item* (all its events
together, so an item keeps one category) by a seeded hash of the item id:

* with probability ``share`` the item goes to category ``"0"`` (the largest);
* otherwise to one of the other ``categories - 1`` categories, uniformly by a second hash.

Item popularity does not depend on the hash, so category ``"0"`` gets about ``share`` of the
events (the heaviest items make it a little noisy; the measured share is reported), and every
other category about ``(1 - share) / (categories - 1)``. Users, items, times and behaviors are
unchanged: only the category column differs between the skew levels.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from sampleimp_spark import hashing
from sampleimp_spark import schema as S

LARGEST = "0"


def skewed_events(events: DataFrame, *, share: float, categories: int, seed: int = 7) -> DataFrame:
    """``events`` with ``category_id`` re-assigned so that category ``"0"`` holds about ``share`` of them."""
    if not 0 < share < 1:
        raise ValueError(f"share must be in (0, 1), got {share}")
    item = F.col(S.ITEM_ID)
    u = hashing.uniform(seed, item, salt="skew/largest")
    other = (F.lit(1) + F.floor(hashing.uniform(seed, item, salt="skew/other") * (categories - 1))).cast("long")
    category = F.when(u < F.lit(share), F.lit(LARGEST)).otherwise(other.cast("string"))
    return events.withColumn(S.CATEGORY_ID, category)


def largest_share(events: DataFrame) -> tuple[str, float]:
    """The largest category and its share of the events (one small aggregate)."""
    counts = events.groupBy(S.CATEGORY_ID).count()
    total = counts.agg(F.sum("count")).first()[0] or 0
    top = counts.orderBy(F.desc("count"), S.CATEGORY_ID).first()
    return (top[0], top[1] / total) if total else ("", 0.0)
