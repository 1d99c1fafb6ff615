"""Weighted implicit-feedback ALS in Spark ML: ratings, fit and top-k recommendations.

Spark's ALS has no weight column, so sample weights enter in one place, :func:`implicit_ratings`:
one rating per (user, item), ``rating = w(u, i) · Σ strength(behavior) · 2^(-age/h)`` over the
pair's events (``w = 1`` for a pair without a weight; no decay without a half-life ``h``), or its
saturating form ``log(1 + rating / ε)``. ALS with ``implicitPrefs=True`` reads it as confidence
``1 + alpha · rating`` with preference 1 (Hu, Koren & Volinsky 2008): a weight scales how much the
pair's events count, and never removes an observed pair (it is floored at a tiny positive value);
resampled copies of a pair add their weights (``Σ 1/rate``). :func:`fit_als` indexes the ids
(:func:`index_ids`: contiguous, a function of the set of ids alone; :func:`index_ratings` indexes
once for several fits) and fits; :func:`recommend` gives each known user's exact top ``k`` items,
scored in float64 in blocks, ties by item index.
With the same ratings, seed and ``num_blocks`` the factors do not depend on the ratings' order or
partitioning in practice (tested to the last bit; the exception is in ``docs/reproducibility.md``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd
from pyspark import StorageLevel
from pyspark.ml.recommendation import ALS, ALSModel
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from sampleimp_spark import schema as S
from sampleimp_spark.frames import checkpoint, release
from sampleimp_spark.weighting.time_decay import check_half_life, decay

#: Hash buckets of :func:`index_ids` (the parallelism of the index; not a limit on ids).
DEFAULT_INDEX_BUCKETS = 256
#: ALS user and item ids are Java ints.
MAX_INDEX = 2**31 - 1

# Internal column names (prefixed so they cannot clash with the caller's columns).
_USER_INDEX = "_als_user"
_ITEM_INDEX = "_als_item"
_PREDICTION = "_als_prediction"
_STRENGTH = "_strength"
#: The smallest weight a pair's evidence is scaled by: an observed pair stays a positive.
MIN_PAIR_WEIGHT = 1e-6
#: How ALS's confidence grows with a pair's evidence: ``linear`` (``1 + α r``) or ``log``
#: (``1 + α log(1 + r / ε)``).
CONFIDENCE_FORMS: tuple[str, ...] = ("linear", "log")
_W = "_w"
_W_ROWS = "_w_rows"
_W_VALID = "_w_valid"
_W_MIN = "_w_min"
_DROPPED = "_dropped"
_BUCKET = "_bucket"
_POS = "_pos"
_OFFSET = "_offset"


def _check_strengths(strengths: Mapping[str, float]) -> None:
    bad = {b: s for b, s in strengths.items() if not (math.isfinite(s) and s >= 0)}
    if bad:
        raise ValueError(f"strengths must be finite and >= 0, got {bad}")
    if not any(s > 0 for s in strengths.values()):
        raise ValueError("at least one behavior needs a positive strength, or every rating is 0")


def strength(behavior: Column, strengths: Mapping[str, float]) -> Column:
    """The strength of one event as a double column (0 for behaviors not in ``strengths``)."""
    out = F.lit(0.0)
    for name, value in sorted(strengths.items()):
        out = F.when(behavior == F.lit(name), F.lit(float(value))).otherwise(out)
    return out


def implicit_ratings(
    events: DataFrame,
    weights: DataFrame | None = None,
    *,
    strengths: Mapping[str, float],
    half_life_days: float | None = None,
    t1: datetime | None = None,
    weight_col: str = S.WEIGHT,
    user_col: str = S.USER_ID,
    item_col: str = S.ITEM_ID,
    behavior_col: str = S.BEHAVIOR,
    ts_col: str = S.TS,
    rating_col: str = S.RATING,
    copies: bool = False,
    samples: DataFrame | None = None,
    confidence: str = "linear",
    epsilon: float = 1.0,
) -> DataFrame:
    """Implicit ALS ratings: per (user, item), the weighted, time-decayed sum of its events' strengths.

    ``rating(u, i) = max(w(u, i), MIN_PAIR_WEIGHT) · Σ_{events e of (u, i)} strengths[e] · 2^(-age_e/h)``
    (``age_e`` in days before ``t1``; no decay without a half-life). This is THE place
    where sample weights enter ALS: ALS (``implicitPrefs=True``) reads a rating ``r`` as
    confidence ``c = 1 + alpha · r`` that the user prefers the item (preference ``p = 1`` when
    ``r > 0``; Hu, Koren & Volinsky 2008). So the weight scales the extra confidence of the
    pair's observations, ``alpha · Σ strength``, while the preference stays 1.

    Rules:

    * One row per (user, item): Spark's ALS does not merge duplicate pairs (each row would be
      a separate observation, with its own confidence term), so the events are summed here.
    * A pair missing from ``weights`` gets weight 1 (e.g. no weights at all, or events of
      pairs that are not samples): it counts as an ordinary, unweighted observation.
    * Pairs whose events all have strength 0 (such as ``remove_from_cart``) are dropped: in
      implicit ALS, ``r = 0`` means confidence 1 with preference 0, exactly how ALS treats
      every pair *without* a row.
    * A weight never removes an observed pair: a weight below :data:`MIN_PAIR_WEIGHT` (e.g. a
      density ratio of 0) counts as that floor, so the pair keeps preference 1 with a
      confidence just above 1, instead of turning into a negative.
    * Events with a null user, item or behavior are ignored; behaviors not in ``strengths``
      have strength 0.
    * With ``copies`` (the weights of a resampled window), the rows of a pair are the copies
      resampling kept, each weighted ``1/rate``: their weights add (``Σ 1/rate``, an unbiased
      stand-in for 1). A pair of ``samples`` (the window's pairs before resampling) with no row
      was dropped by resampling: its weight is 0 (floored as above), not 1. A pair in neither is
      not a sample of the window and weighs 1, as without copies.
    * ``confidence="log"`` saturates the evidence: ``rating = log(1 + w · Σ ... / ε)``, so ALS's
      confidence grows with the log of the evidence (Hu, Koren & Volinsky's second form)
      instead of linearly; ``"linear"`` keeps ``w · Σ ...``.

    Args:
        events: behavior events (one row per event).
        weights: per-(user, item) sample weights, one row per pair (e.g.
            ``gold.training_samples`` of one window), or None for unweighted ratings.
        strengths: behavior -> strength (finite, ≥ 0), e.g. ``ALSConfig.strengths``.
        half_life_days: half-life of the evidence decay in days (> 0); None = no decay.
        t1: end of the feature window, ages are measured to it (needed with a half-life).
        weight_col: weight column of ``weights``.
        user_col: user id column (events and weights).
        item_col: item id column (events and weights).
        behavior_col: behavior column of ``events``.
        rating_col: name of the output rating column.
        copies: ``weights`` holds resampled copies (see the rules); needs ``samples``.
        samples: ``(user_col, item_col)`` of the window's samples before resampling.
        confidence: ``linear`` or ``log`` (saturating).
        epsilon: ``ε`` of the saturating form (> 0): evidence well below it counts linearly.

    Returns:
        ``(user_col, item_col, rating_col)`` with ``rating_col`` a double > 0, one row per pair.
        Bad weights fail when the frame is computed (lazily, through ``raise_error``): a pair
        with several rows in ``weights``, or a null, negative, NaN or infinite weight.

    Raises:
        ValueError: a strength is negative or not finite, no strength is positive, the
            half-life is not > 0 or comes without ``t1``, or the confidence form is unknown or
            ``ε`` not > 0.
    """
    _check_strengths(strengths)
    check_half_life(half_life_days)
    if half_life_days is not None and t1 is None:
        raise ValueError("implicit_ratings: a half-life needs t1, the time ages are measured to")
    if confidence not in CONFIDENCE_FORMS:
        raise ValueError(f"implicit_ratings: confidence must be one of {list(CONFIDENCE_FORMS)}, got {confidence!r}")
    if not (math.isfinite(epsilon) and epsilon > 0):
        raise ValueError(f"implicit_ratings: epsilon must be finite and > 0, got {epsilon}")
    if copies and weights is not None and samples is None:
        raise ValueError(
            "implicit_ratings: copies need the window's samples (to tell a dropped pair from a non-sample)"
        )

    def rated(evidence: Column) -> Column:
        return F.log1p(evidence / F.lit(epsilon)) if confidence == "log" else evidence

    user, item, behavior = F.col(user_col), F.col(item_col), F.col(behavior_col)
    valid = user.isNotNull() & item.isNotNull() & behavior.isNotNull()
    evidence = strength(behavior, strengths)
    if half_life_days is not None and t1 is not None:
        evidence = evidence * decay(ts_col, t1=t1, half_life_days=half_life_days)
    sums = (
        events.where(valid)
        .groupBy(user_col, item_col)
        .agg(F.sum(evidence).alias(_STRENGTH))
        .where(F.col(_STRENGTH) > 0)
    )
    if weights is None:
        return sums.select(user_col, item_col, rated(F.col(_STRENGTH)).alias(rating_col))

    # Aggregated per pair so a duplicated pair in `weights` cannot duplicate ratings; it is
    # reported instead (copies add up). The sum of a bad weight is bad too, so the checks hold.
    w_in = F.col(weight_col).cast("double")
    w_df = weights.groupBy(user_col, item_col).agg(
        (F.sum(w_in) if copies else F.max(w_in)).alias(_W),
        F.count(F.lit(1)).alias(_W_ROWS),
        F.count(w_in).alias(_W_VALID),  # rows with a non-null weight
        F.min(w_in).alias(_W_MIN),  # a negative copy must not hide in a positive sum
    )
    if copies and samples is not None:
        dropped = samples.select(user_col, item_col).distinct().withColumn(_DROPPED, F.lit(True))
        w_df = w_df.join(dropped, [user_col, item_col], "full")
    w, rows = F.col(_W), F.col(_W_ROWS)
    pair = F.concat_ws(", ", user.cast("string"), item.cast("string"))
    absent = F.lit(1.0)  # a pair without a weight row is not a sample of the window: weight 1
    if copies:  # ... unless resampling dropped it
        absent = F.when(F.coalesce(F.col(_DROPPED), F.lit(False)), F.lit(MIN_PAIR_WEIGHT)).otherwise(absent)
    weight = (
        F.when(rows.isNull(), absent)
        .when(
            (rows > 1) & F.lit(not copies),
            F.raise_error(F.concat(F.lit(f"implicit_ratings: several {weight_col} rows for pair ("), pair, F.lit(")"))),
        )
        .when(
            (F.col(_W_VALID) < rows) | F.isnan(w) | (F.col(_W_MIN) < 0) | (w == F.lit(math.inf)),
            F.raise_error(
                F.concat(
                    F.lit(f"implicit_ratings: {weight_col} of pair ("),
                    pair,
                    F.lit(") must be finite and >= 0, got "),
                    F.when(F.col(_W_VALID) < rows, F.lit("null"))
                    .when(F.col(_W_MIN) < 0, F.col(_W_MIN).cast("string"))
                    .otherwise(w.cast("string")),
                )
            ),
        )
        .otherwise(F.greatest(w, F.lit(MIN_PAIR_WEIGHT)))
    )
    return (
        sums.join(w_df, [user_col, item_col], "left")
        .select(user_col, item_col, rated(F.col(_STRENGTH) * weight).alias(rating_col))
        .where(F.col(rating_col) > 0)
    )


def _int_index(index: Column, *, what: str) -> Column:
    """``index`` as an int, failing with a clear message past ALS's int range."""
    return (
        F.when(
            index > F.lit(MAX_INDEX),
            F.raise_error(F.lit(f"more than {MAX_INDEX + 1} distinct {what}: ALS ids must fit in a Java int")),
        )
        .otherwise(index)
        .cast("int")
    )


def index_ids(
    df: DataFrame,
    *,
    id_col: str,
    index_col: str,
    buckets: int = DEFAULT_INDEX_BUCKETS,
) -> DataFrame:
    """A contiguous int index ``0..n-1`` of the distinct non-null values of ``id_col``.

    The zipWithIndex trick in SQL, with no id collected to the driver and no window over all
    ids: the distinct ids are split into ``buckets`` buckets by a hash of the id; within each
    bucket (one window partition) they are numbered in id order; the bucket sizes (``buckets``
    numbers) give each bucket's offset as a prefix sum, computed in one small aggregate; and
    ``index = offset(bucket) + position in bucket``. The buckets depend only on the id values
    (not on Spark's partitioning of ``df``), so the index is a pure function of the set of ids
    and ``buckets``: deterministic across runs, partitionings and clusters.

    Args:
        df: any frame with the id column (duplicates and nulls allowed).
        id_col: the id column (any orderable type).
        index_col: name of the int index column added.
        buckets: number of hash buckets (the parallelism of the numbering; the offsets cost a
            ``buckets``-row aggregate). Changing it changes the index.

    Returns:
        ``(id_col, index_col)``, one row per distinct id, ``index_col`` an int in ``0..n-1``.
        Fails when computed if there are more than ``2**31`` distinct ids.

    Raises:
        ValueError: ``buckets`` is less than 1.
    """
    if buckets < 1:
        raise ValueError(f"buckets must be at least 1, got {buckets}")
    ids = (
        df.select(id_col)
        .where(F.col(id_col).isNotNull())
        .distinct()
        .withColumn(_BUCKET, F.pmod(F.xxhash64(F.col(id_col)), F.lit(buckets)).cast("int"))
    )
    positioned = ids.withColumn(_POS, F.row_number().over(Window.partitionBy(_BUCKET).orderBy(id_col)) - 1)
    # Prefix sums of the bucket sizes: one row with an array of at most `buckets` entries.
    sizes = ids.groupBy(_BUCKET).agg(F.count(F.lit(1)).alias("n"))
    table = sizes.agg(F.array_sort(F.collect_list(F.struct(_BUCKET, "n"))).alias("s"))
    zero = F.lit(0).cast("bigint")
    offsets = table.select(
        F.inline(
            F.transform(
                "s",
                lambda e, i: F.struct(
                    e[_BUCKET].alias(_BUCKET),
                    F.aggregate(F.slice("s", 1, i), zero, lambda acc, x: acc + x["n"]).alias(_OFFSET),
                ),
            )
        )
    )
    index = F.col(_OFFSET) + F.col(_POS)
    return positioned.join(F.broadcast(offsets), _BUCKET).select(
        id_col, _int_index(index, what=f"values of {id_col}").alias(index_col)
    )


@dataclass(frozen=True)
class FittedALS:
    """A fitted ALS model with the id indexes that map its int ids back to the original ids.

    The indexes are persisted (every :func:`recommend` call reads them); call
    :meth:`unpersist` when done. A model fitted on :class:`IndexedRatings` reads its indexes,
    which :meth:`IndexedRatings.release` frees.
    """

    model: ALSModel
    #: ``(user_col, _als_user)``: the users the model knows.
    user_index: DataFrame
    #: ``(item_col, _als_item)``: the items the model knows.
    item_index: DataFrame
    user_col: str = S.USER_ID
    item_col: str = S.ITEM_ID
    #: The indexes belong to an :class:`IndexedRatings` that other fits share (it frees them).
    shared_indexes: bool = False

    def unpersist(self) -> None:
        """Release the factor RDDs Spark's ALS keeps stored for the model, and its indexes
        unless they are shared.

        Scoring afterwards would recompute the whole fit (or fail, once shared indexes are
        released): save the model first if it is needed.
        """
        own = () if self.shared_indexes else (self.user_index, self.item_index)
        release(*own, self.model.userFactors, self.model.itemFactors)


@dataclass(frozen=True)
class IndexedRatings:
    """Ratings joined to their id indexes once, for several fits of the same ratings (a tuning
    grid, several seeds): :func:`fit_als` then skips the indexing. Free with :meth:`release`
    after the last use of every model fitted on it."""

    #: ``(_als_user, _als_item, rating)``, stored.
    data: DataFrame
    user_index: DataFrame
    item_index: DataFrame
    user_col: str
    item_col: str
    rating_col: str

    def release(self) -> None:
        release(self.data, self.user_index, self.item_index)


def index_ratings(
    ratings: DataFrame,
    *,
    user_col: str = S.USER_ID,
    item_col: str = S.ITEM_ID,
    rating_col: str = S.RATING,
    index_buckets: int = DEFAULT_INDEX_BUCKETS,
) -> IndexedRatings:
    """``ratings`` (as for :func:`fit_als`) with their user and item indexes, computed now."""
    ratings = ratings.select(user_col, item_col, rating_col).persist(StorageLevel.MEMORY_AND_DISK)
    user_index = item_index = None
    try:
        user_index = checkpoint(index_ids(ratings, id_col=user_col, index_col=_USER_INDEX, buckets=index_buckets))
        item_index = checkpoint(index_ids(ratings, id_col=item_col, index_col=_ITEM_INDEX, buckets=index_buckets))
        joined = ratings.join(user_index, user_col).join(item_index, item_col)
        data = checkpoint(joined.select(_USER_INDEX, _ITEM_INDEX, rating_col))
    except BaseException:
        release(user_index, item_index)
        raise
    finally:
        ratings.unpersist()
    return IndexedRatings(data, user_index, item_index, user_col, item_col, rating_col)


def fit_als(
    ratings: DataFrame | IndexedRatings,
    *,
    seed: int,
    rank: int = 32,
    reg_param: float = 0.1,
    alpha: float = 10.0,
    max_iter: int = 10,
    num_blocks: int | None = None,
    user_col: str = S.USER_ID,
    item_col: str = S.ITEM_ID,
    rating_col: str = S.RATING,
    index_buckets: int = DEFAULT_INDEX_BUCKETS,
) -> FittedALS:
    """Fit implicit-feedback ALS on ratings from :func:`implicit_ratings`.

    Args:
        ratings: one row per (user, item) with a rating > 0 (ALS does not merge duplicate
            pairs: use :func:`implicit_ratings`, which also applies the sample weights), or
            such ratings already indexed (:func:`index_ratings`; ``user_col``, ``item_col``,
            ``rating_col`` and ``index_buckets`` are then its own).
        seed: seed of ALS's factor initialisation (see the module docstring on
            reproducibility).
        rank: latent factors.
        reg_param: L2 regularisation λ (scaled by each user's / item's positive pairs).
        alpha: confidence scale, ``c = 1 + alpha · rating``.
        max_iter: ALS sweeps.
        num_blocks: user and item blocks (Spark's parallelism of the fit); None = the context's
            default parallelism.
        user_col: user id column.
        item_col: item id column.
        rating_col: rating column.
        index_buckets: buckets of :func:`index_ids` (only changes the int ids used internally).

    Returns:
        The fitted model with its user and item indexes (persisted; see
        :meth:`FittedALS.unpersist`).
    """

    def estimator(rating: str, blocks: int) -> ALS:
        return ALS(
            rank=rank,
            maxIter=max_iter,
            regParam=reg_param,
            alpha=alpha,
            implicitPrefs=True,
            numUserBlocks=blocks,
            numItemBlocks=blocks,
            userCol=_USER_INDEX,
            itemCol=_ITEM_INDEX,
            ratingCol=rating,
            # Pairs of unknown users or items get no prediction rather than NaN (the joins in
            # recommend already drop them; this keeps ALSModel.transform safe too).
            coldStartStrategy="drop",
            seed=seed,
        ).setPredictionCol(_PREDICTION)

    if isinstance(ratings, IndexedRatings):
        spark = ratings.data.sparkSession
        blocks = num_blocks or spark.sparkContext.defaultParallelism
        model = estimator(ratings.rating_col, blocks).fit(ratings.data)
        return FittedALS(
            model, ratings.user_index, ratings.item_index, ratings.user_col, ratings.item_col, shared_indexes=True
        )
    # The ratings are read three times (two indexes and the ALS input): keep them for the fit
    # rather than recompute the aggregation of all events each time.
    ratings = ratings.select(user_col, item_col, rating_col).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        user_index = index_ids(ratings, id_col=user_col, index_col=_USER_INDEX, buckets=index_buckets)
        item_index = index_ids(ratings, id_col=item_col, index_col=_ITEM_INDEX, buckets=index_buckets)
        # Persisted here, materialised by the fit below (which reads them) and kept afterwards.
        user_index = user_index.persist(StorageLevel.MEMORY_AND_DISK)
        item_index = item_index.persist(StorageLevel.MEMORY_AND_DISK)
        data = ratings.join(user_index, user_col).join(item_index, item_col)
        blocks = num_blocks or ratings.sparkSession.sparkContext.defaultParallelism
        model = estimator(rating_col, blocks).fit(data.select(_USER_INDEX, _ITEM_INDEX, rating_col))
    finally:
        ratings.unpersist()
    return FittedALS(model, user_index, item_index, user_col=user_col, item_col=item_col)


#: Users and items per block of :func:`recommend`: the scores of one user block against one item
#: block are computed in one pandas UDF call, :data:`_SCORE_ROWS` users at a time. Each pair of
#: blocks is a partition of its own (see :func:`_block_pairs`), so an Arrow batch carries one
#: pair: about 8.5 MiB at rank 32, whatever the number of users and items.
USER_BLOCK = 4096
ITEM_BLOCK = 65536
#: Users scored at once against an item block (a 512 × 65,536 float32 score matrix is 128 MiB).
_SCORE_ROWS = 512
_BLOCK = "_block"
_IDS = "_ids"
_FLAT = "_flat"
_SCORE = "_score"
_CANDIDATES_SCHEMA = f"{_USER_INDEX} int, {_ITEM_INDEX} int, {_SCORE} double"
_EPS32 = float(np.finfo(np.float32).eps)


def block_top_k(
    user_ids: np.ndarray, users: np.ndarray, item_ids: np.ndarray, items: np.ndarray, k: int
) -> pd.DataFrame:
    """Each user's ``k`` best items of one item block: score ``x_u · y_i`` in float64 (from the
    float32 factors) descending, equal scores by item id ascending.

    Every score is first computed in float32 (one matrix product), which is only good to
    ``δ = rank · ε₃₂ · |x_u| · max_i |y_i|``, at least twice the rounding bound of a float32 dot
    product. If ``t`` is the ``k``-th best float32 score of a user, at least ``k`` items score at
    least ``t - δ`` exactly, so every item of the exact top ``k`` has a float32 score of at least
    ``t - 2δ``. Only those candidates (usually ``k``, a few more on near-ties) are scored again in
    float64 and ranked.

    Args:
        user_ids: ``m`` user ids.
        users: ``m × rank`` user factors.
        item_ids: ``n`` item ids (distinct).
        items: ``n × rank`` item factors.
        k: list length; the block gives ``min(k, n)`` items per user.

    Returns:
        ``(_als_user, _als_item, _score)``, ``min(k, n)`` rows per user, in list order.
    """
    n, rank = items.shape
    kk = min(k, n)
    items32 = np.ascontiguousarray(items, dtype=np.float32)
    items64 = items.astype(np.float64)
    item_norm = float(np.sqrt((items64 * items64).sum(axis=1)).max()) if n else 0.0
    frames = []
    for start in range(0, len(user_ids), _SCORE_ROWS):
        chunk = users[start : start + _SCORE_ROWS].astype(np.float64)
        scores = chunk.astype(np.float32) @ items32.T
        kth = np.partition(scores, n - kk, axis=1)[:, n - kk].astype(np.float64)
        delta = rank * _EPS32 * np.sqrt((chunk * chunk).sum(axis=1)) * item_norm
        low = kth - 2 * delta
        low32 = low.astype(np.float32)  # rounded down, so no candidate is lost to the cast
        low32 = np.where(low32 > low, np.nextafter(low32, np.float32(-np.inf)), low32)
        row, col = np.nonzero(scores >= low32[:, None])
        exact = np.einsum("ij,ij->i", chunk[row], items64[col])
        order = np.lexsort((item_ids[col], -exact, row))
        row, col, exact = row[order], col[order], exact[order]
        first = np.searchsorted(row, np.arange(len(chunk)))
        keep = np.arange(len(row)) - first[row] < kk
        frames.append(
            pd.DataFrame(
                {
                    _USER_INDEX: user_ids[start + row[keep]].astype(np.int32),
                    _ITEM_INDEX: item_ids[col[keep]].astype(np.int32),
                    _SCORE: exact[keep],
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def _factor_blocks(factors: DataFrame, block: int, n_ids: int, prefix: str) -> DataFrame:
    """One row per block of ``block`` consecutive ids (of ``0 .. n_ids - 1``): the ids and their
    factors, flattened (in any order: the struct keeps each id with its factors, and the ranking
    orders ties by id). Block ``b`` is alone in partition ``b``."""
    rows = F.collect_list(F.struct(F.col("id"), F.col("features")))
    n_blocks = max(1, -(-n_ids // block))
    return (
        factors.groupBy(F.floor(F.col("id") / F.lit(block)).cast("int").alias(_BLOCK))
        .agg(rows.alias("_rows"))
        .repartitionById(n_blocks, _BLOCK)
        .select(
            F.transform("_rows", lambda r: r["id"]).alias(prefix + _IDS),
            F.flatten(F.transform("_rows", lambda r: r["features"])).alias(prefix + _FLAT),
        )
    )


def _block_pairs(model: FittedALS, users: DataFrame, user_block: int, item_block: int) -> DataFrame:
    """``(_u_ids, _u_flat, _i_ids, _i_flat)``: every pair of a block of ``users``' factors and a
    block of the items' factors, one pair per partition.

    A cartesian product of the blocks, not a broadcast: no block goes through the driver. Its
    partitions are the pairs of the two sides' partitions, and each side has one block per
    partition, so a task (and its Arrow batch) holds one pair of blocks, however many there
    are. Counts the model's users and items (two small jobs on its cached indexes).
    """
    subset = users.select(model.user_col).distinct().join(model.user_index, model.user_col)
    user_factors = model.model.userFactors.join(subset.select(F.col(_USER_INDEX).alias("id")), "id")
    user_blocks = _factor_blocks(user_factors, user_block, model.user_index.count(), "_u")
    item_blocks = _factor_blocks(model.model.itemFactors, item_block, model.item_index.count(), "_i")
    return user_blocks.join(item_blocks.hint("shuffle_replicate_nl"))


def recommend(
    model: FittedALS,
    users: DataFrame,
    k: int,
    *,
    rank_col: str = S.RANK,
    user_block: int = USER_BLOCK,
    item_block: int = ITEM_BLOCK,
) -> DataFrame:
    """Each user's top ``k`` items by ALS score ``x_u · y_i``, over every item the model knows.

    Items are ranked by score descending, computed in float64 from the model's float32
    factors; equal scores are ordered by the items' int index, so the ranks are 1, 2, ...
    without gaps or ties, and the lists do not depend on how the work is split. Already-seen
    items are not excluded. Users the model does not know (no rating in training) get no rows:
    ALS has no factors for them (cold start); the caller decides on a fallback.

    The users' and the items' factors are grouped into blocks of consecutive int ids
    (``user_block`` users, ``item_block`` items); every pair of blocks is a task of its own
    (:func:`_block_pairs`), scored in a pandas UDF with one matrix product (numpy's BLAS; see
    :func:`block_top_k`), which keeps each user's ``k`` best items of the block, and a native
    aggregation keeps the ``k`` best of each user's candidates. This is the blocked scheme of
    Spark's ``ALSModel.recommendForUserSubset``, whose per-user Java products made it the train
    stage's costliest step (308-352 s for 49,790 users × 416,699 items at rank 32 on 2 cores,
    against 103 s here; ``benchmarks/LOG.md``); its lists are the same but for near-ties,
    which it ranks by float32 scores. No factors go through the driver.

    Args:
        model: from :func:`fit_als`.
        users: a frame with the model's user column (duplicates allowed).
        k: list length; at least 1.
        rank_col: name of the rank column (1 = best); :data:`S.ALS_RANK` for GBT candidates.
        user_block: users per block (bounds a task's memory with ``item_block``).
        item_block: items per block.

    Returns:
        ``(user_col, item_col, rank_col)``, at most ``k`` rows per known user (fewer when the
        model knows fewer items).

    Raises:
        ValueError: ``k`` or a block size is less than 1.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if user_block < 1 or item_block < 1:
        raise ValueError(f"block sizes must be at least 1, got users {user_block}, items {item_block}")
    user_col, item_col = model.user_col, model.item_col
    rank = model.model.rank

    def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for pdf in batches:
            for u_ids, u_flat, i_ids, i_flat in pdf.itertuples(index=False, name=None):
                yield block_top_k(
                    np.asarray(u_ids),
                    np.asarray(u_flat, dtype=np.float32).reshape(-1, rank),
                    np.asarray(i_ids),
                    np.asarray(i_flat, dtype=np.float32).reshape(-1, rank),
                    k,
                )

    pairs = _block_pairs(model, users, user_block, item_block)
    candidates = pairs.mapInPandas(score, _CANDIDATES_SCHEMA)
    best = candidates.groupBy(_USER_INDEX).agg(
        F.slice(F.array_sort(F.collect_list(F.struct((-F.col(_SCORE)).alias("s"), F.col(_ITEM_INDEX)))), 1, k).alias(
            "_best"
        )
    )
    exploded = best.select(_USER_INDEX, F.posexplode("_best").alias(_POS, "_r")).select(
        _USER_INDEX, F.col(f"_r.{_ITEM_INDEX}").alias(_ITEM_INDEX), (F.col(_POS) + 1).cast("int").alias(rank_col)
    )
    return (
        exploded.join(model.user_index, _USER_INDEX)
        .join(model.item_index, _ITEM_INDEX)
        .select(user_col, item_col, rank_col)
    )
