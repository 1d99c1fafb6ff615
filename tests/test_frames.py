"""checkpoint / release: what a checkpoint holds is freed, and nothing else; canonical_layout."""

from __future__ import annotations

import pytest
from conftest import stored_rdds
from pyspark.sql import functions as F

from sampleimp_spark.frames import canonical_layout, checkpoint, release


def test_release_frees_a_checkpoint_that_unpersist_leaves(spark):
    before = stored_rdds(spark)
    ck = checkpoint(spark.range(50).withColumn("y", F.col("id") * 2))
    held = stored_rdds(spark).keys() - before.keys()
    assert len(held) == 1  # the checkpoint is stored
    ck.unpersist()
    assert stored_rdds(spark).keys() - before.keys() == held  # Spark's own call frees nothing
    release(ck)
    assert stored_rdds(spark).keys() - before.keys() == set()
    with pytest.raises(Exception, match=r"(?i)checkpoint"):
        ck.count()  # a released checkpoint cannot be read


def test_release_follows_projections_but_not_joins(spark):
    before = stored_rdds(spark)
    a = checkpoint(spark.range(20).withColumn("k", F.col("id") % 3))
    b = checkpoint(spark.range(3).withColumnRenamed("id", "k"))
    release(a.join(b, "k"))  # a join is not followed: both inputs stay
    assert len(stored_rdds(spark).keys() - before.keys()) == 2
    assert a.join(b, "k").count() == 20
    release(a.select("k").where(F.col("k") > 0), b)  # a chain of single-input steps is
    assert stored_rdds(spark).keys() - before.keys() == set()


def test_release_uncaches_a_cached_frame_and_skips_none(spark):
    before = stored_rdds(spark)
    cached = spark.range(30).cache()
    assert cached.count() == 30
    assert stored_rdds(spark).keys() - before.keys()
    release(None, cached)
    assert not cached.storageLevel.useMemory
    assert stored_rdds(spark).keys() - before.keys() == set()
    assert cached.count() == 30  # uncached, it is computed again


def test_canonical_layout_depends_only_on_the_rows(spark):
    rows = [(i % 7, float(i % 5) / 3, f"r{i % 11}") for i in range(200)]  # with duplicate rows
    a = spark.createDataFrame(rows, "k int, x double, s string")
    b = spark.createDataFrame(rows[::-1], "k int, x double, s string").repartition(5)
    layouts = [[[tuple(r) for r in part] for part in canonical_layout(df).rdd.glom().collect()] for df in (a, b)]
    assert layouts[0] == layouts[1]
    assert len(layouts[0]) == spark.sparkContext.defaultParallelism
    assert sorted(r for part in layouts[0] for r in part) == sorted(rows)  # the same rows
    assert all(part == sorted(part) for part in layouts[0])
