"""Materializing intermediate frames once, freeing them again, and a canonical row layout.

:func:`checkpoint` computes a frame now, keeps its rows in executor storage and cuts its lineage
(``localCheckpoint``), so later plans stay small and later actions read the rows. :func:`release`
frees what a frame holds: a cached frame, a checkpoint, or a frame made from a stored RDD (such as
ALS's factors) alike. ``DataFrame.unpersist()`` alone frees nothing for a checkpoint: its blocks
stay until the driver's garbage collector drops the RDD, which in a long session may be never. A
released checkpoint cannot be read again.

:func:`canonical_layout` gives a frame partitions and a row order that depend only on its rows
(one shuffle), for the Spark ML fits whose floating-point sums follow the row order
(``docs/reproducibility.md``).
"""

from __future__ import annotations

from pyspark.sql import DataFrame, Row

#: Logical plan leaves that hold an RDD: a checkpoint (``LogicalRDD``) or a frame made from an
#: RDD (``ExternalRDD``, e.g. ALS's factors).
_RDD_LEAVES = frozenset({"LogicalRDD", "ExternalRDD"})


def checkpoint(df: DataFrame) -> DataFrame:
    """``df`` computed now, kept in executor memory (spilling to disk), its lineage cut.

    Free it with :func:`release` once nothing reads it any more.
    """
    return df.localCheckpoint(eager=True)


def canonical_layout(df: DataFrame) -> DataFrame:
    """``df``'s rows laid out in partitions and an order that depend only on the rows.

    Hash-partitioned on every column into ``defaultParallelism`` partitions (a fixed number,
    so adaptive execution does not coalesce them) and sorted within each partition by every
    column. Rows that compare equal are interchangeable. Costs one shuffle of ``df``.

    Spark ML's fits add up floating-point statistics partition by partition in row order, and
    such sums depend on their order: the same rows delivered in another order by the stages
    before would otherwise fit a model that differs in its last bits, and, where two choices
    tie, in a choice.
    """
    parts = df.sparkSession.sparkContext.defaultParallelism
    return df.repartition(parts, *df.columns).sortWithinPartitions(*df.columns)


def release(*frames: DataFrame | None) -> None:
    """Free what each frame holds: its cache entry, or else the stored RDD it reads.

    A cached frame (``cache()``/``persist()``) is uncached, nothing more. Any other frame is
    followed down its chain of single-input steps; if that ends at a stored RDD (a
    :func:`checkpoint`, or a frame made from a persisted RDD such as ALS's factors), the RDD is
    freed. A projection of a checkpoint therefore frees the checkpoint too: pass only frames
    nothing else reads. Joins and unions are not followed. ``None`` entries are skipped (for
    frames a failed step never made).
    """
    for df in frames:
        if df is None:
            continue
        if df.storageLevel.useMemory or df.storageLevel.useDisk:
            df.unpersist()
            continue
        rdd = _stored_rdd(df._jdf.queryExecution().logical())
        if rdd is not None and rdd.getStorageLevel().isValid():
            rdd.unpersist(False)


def _stored_rdd(plan):  # py4j objects in and out
    """The RDD at the end of ``plan``'s chain of single-child nodes, if it ends at one."""
    while plan.children().size() == 1:
        plan = plan.children().apply(0)
    return plan.rdd() if plan.nodeName() in _RDD_LEAVES else None


def one_row(df: DataFrame) -> Row:
    """The first row of ``df``, which must have one (a global aggregate always does)."""
    row = df.first()
    if row is None:
        raise ValueError("expected at least one row, got an empty frame")
    return row
