"""The built-in generator: reproducible, Taobao-shaped."""

from __future__ import annotations

from datetime import UTC

from pyspark.sql import functions as F

from sampleimp_spark import schema as S
from sampleimp_spark.config import GeneratorConfig
from sampleimp_spark.sources import generator


def test_same_seed_same_lines_whatever_the_partitioning(spark):
    cfg = GeneratorConfig(events=4_000, users=300, items=3_000, categories=40)
    one = sorted(r[0] for r in generator.generate_lines(spark, cfg, partitions=1).collect())
    five = sorted(r[0] for r in generator.generate_lines(spark, cfg, partitions=5).collect())
    assert one == five
    other = sorted(r[0] for r in generator.generate_lines(spark, cfg.model_copy(update={"seed": 7})).collect())
    assert other != one


def test_behavior_mix_skew_and_funnels_look_like_taobao(spark):
    cfg = GeneratorConfig(events=60_000, users=2_000, items=20_000, categories=200, bad_row_rate=0, duplicate_rate=0)
    ev = generator.read(spark, cfg).cache()
    n = ev.count()
    assert 0.9 * cfg.events < n < 1.1 * cfg.events
    share = {r[0]: r[1] / n for r in ev.groupBy(S.BEHAVIOR).count().collect()}
    for behavior, target in {"view": 0.895, "cart": 0.055, "fav": 0.029, "purchase": 0.020}.items():
        assert abs(share[behavior] - target) < 0.012, (behavior, share[behavior])
    per_cat = [r[1] for r in ev.groupBy(S.CATEGORY_ID).count().orderBy(F.desc("count")).collect()]
    assert per_cat[0] > 20 * per_cat[len(per_cat) // 2]  # a heavy head and a long tail
    assert len(per_cat) > 100
    lo, hi = (t.astimezone(UTC).replace(tzinfo=None) for t in generator.window(cfg))
    first, last = ev.agg(F.min(S.TS), F.max(S.TS)).first()
    assert lo <= first and last < hi and (last - first).days >= cfg.days - 1
    # Purchases follow a view of the same pair (funnels), as in real logs.
    buys = ev.where(F.col(S.BEHAVIOR) == "purchase").select(S.USER_ID, S.ITEM_ID, F.col(S.TS).alias("bt"))
    views = ev.where(F.col(S.BEHAVIOR) == "view").select(S.USER_ID, S.ITEM_ID, F.col(S.TS).alias("vt"))
    preceded = (
        buys.join(views, [S.USER_ID, S.ITEM_ID])
        .where(F.col("vt") <= F.col("bt"))
        .select(S.USER_ID, S.ITEM_ID, "bt")
        .distinct()
        .count()
    )
    assert preceded == buys.count()
    ev.unpersist()
