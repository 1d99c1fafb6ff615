"""Train / evaluation splits of behavior events without leakage (DESIGN §6).

Two splits are offered:

* :func:`chronological_split` — one global cut in time: train on ``[t0, t1)``, evaluate on
  ``[t1, t2)``. This is the split of DESIGN §6 (feature window / label window): every training
  event is strictly older than every evaluation event.
* :func:`leave_last_k_split` — per user, the last ``k`` events go to evaluation and the rest to
  training. Ties in time are broken by a hash of ``(seed, user, item, behavior, ts)`` so the
  result depends only on the data and the seed, never on partitioning or row order.

Both are pure functions of their input: calling them twice (as Spark does when ``train`` and
``evaluation`` are computed by separate jobs) gives the same rows, so no ``persist`` is needed
to keep the two sides disjoint (unlike splits built on ``rand()`` or
``monotonically_increasing_id()``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from sampleimp_spark import hashing
from sampleimp_spark.configbase import StrictModel
from sampleimp_spark.schema import BEHAVIOR, ITEM_ID, TS, USER_ID

#: Column added by :func:`mark_leave_last_k`: true for rows that go to evaluation.
IS_EVAL = "is_eval"
#: Salt of the tie-breaking hash, so these draws are independent of other uses of the seed.
TIE_SALT = "leave_last_k_ties"


def _timestamp_literal(name: str, value: datetime) -> Column:
    if value.tzinfo is None:
        raise ValueError(f"{name} needs a UTC offset (a timezone-aware datetime), got {value!r}")
    return F.lit(value)


def chronological_split(
    events: DataFrame,
    *,
    t0: datetime,
    t1: datetime,
    t2: datetime,
    ts_col: str = TS,
) -> tuple[DataFrame, DataFrame]:
    """Split events at fixed times: train = ``[t0, t1)``, evaluation = ``[t1, t2)``.

    The intervals are half-open, so an event exactly at ``t1`` is an evaluation event and no
    event can be on both sides. Events before ``t0``, at or after ``t2``, or with a null time
    are in neither. Users and items may appear only in evaluation (cold start); metrics decide
    what to do with them (see :mod:`sampleimp_spark.training.evaluate`).

    Args:
        events: behavior events with a timestamp column.
        t0: start of the training window (inclusive); timezone-aware.
        t1: end of training (exclusive) and start of evaluation (inclusive); timezone-aware.
        t2: end of the evaluation window (exclusive); timezone-aware.
        ts_col: name of the timestamp column.

    Returns:
        ``(train, evaluation)``, both with the columns of ``events``.

    Raises:
        ValueError: a bound is a naive datetime, or the bounds are not ``t0 < t1 < t2``.
    """
    lo, mid, hi = (_timestamp_literal(n, v) for n, v in (("t0", t0), ("t1", t1), ("t2", t2)))
    if not t0 < t1 < t2:
        raise ValueError(f"need t0 < t1 < t2, got t0={t0}, t1={t1}, t2={t2}")
    ts = F.col(ts_col)
    train = events.where((ts >= lo) & (ts < mid))
    evaluation = events.where((ts >= mid) & (ts < hi))
    return train, evaluation


def mark_leave_last_k(
    events: DataFrame,
    *,
    k: int,
    seed: int,
    flag_col: str = IS_EVAL,
    user_col: str = USER_ID,
    item_col: str = ITEM_ID,
    behavior_col: str = BEHAVIOR,
    ts_col: str = TS,
) -> DataFrame:
    """Add a boolean column that is true for each user's last ``k`` events.

    Events are ordered per user by time, newest first. Events at the same time are ordered by
    ``hashing.uniform(seed, user, item, behavior, ts)`` (the larger draw counts as later), then
    by item and behavior, so the order is total and reproducible. Rows equal in
    ``(user, item, behavior, ts)`` are one event: they share a position and land on the same
    side (ingest de-duplicates them anyway). A user with ``k`` or fewer distinct events keeps
    them all in training (nothing would be left to learn from), so the flag is false for all
    of that user's rows.

    Args:
        events: behavior events.
        k: number of events per user to hold out; at least 1.
        seed: seed of the tie-breaking hash; another seed breaks ties differently.
        flag_col: name of the added boolean column.
        user_col: user id column.
        item_col: item id column.
        behavior_col: behavior column.
        ts_col: timestamp column.

    Returns:
        ``events`` with ``flag_col`` added (never null).

    Raises:
        ValueError: ``k`` is less than 1.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    user, item, behavior, ts = (F.col(c) for c in (user_col, item_col, behavior_col, ts_col))
    tie = hashing.uniform(seed, user, item, behavior, ts, salt=TIE_SALT)
    newest_first = Window.partitionBy(user).orderBy(ts.desc(), tie.desc(), item.desc(), behavior.desc())
    position = "_position"
    return (
        events.withColumn(position, F.dense_rank().over(newest_first))
        .withColumn(
            flag_col,
            (F.max(position).over(Window.partitionBy(user)) > k) & (F.col(position) <= k),
        )
        .drop(position)
    )


def leave_last_k_split(
    events: DataFrame,
    *,
    k: int,
    seed: int,
    user_col: str = USER_ID,
    item_col: str = ITEM_ID,
    behavior_col: str = BEHAVIOR,
    ts_col: str = TS,
) -> tuple[DataFrame, DataFrame]:
    """Hold out each user's last ``k`` events for evaluation; the rest is training.

    See :func:`mark_leave_last_k` for the order and tie-breaking rules. Users with ``k`` or
    fewer events are in training only. Within a user, no training event is newer than an
    evaluation event (events at the same instant may fall on both sides of the cut, decided by
    the hash). Across users there is no time cut: a training event of one user may be newer
    than an evaluation event of another, so use :func:`chronological_split` when global time
    leakage matters (DESIGN §6).

    Args:
        events: behavior events.
        k: number of events per user to hold out; at least 1.
        seed: seed of the tie-breaking hash.
        user_col: user id column.
        item_col: item id column.
        behavior_col: behavior column.
        ts_col: timestamp column.

    Returns:
        ``(train, evaluation)``, both with the columns of ``events``. Each is a lazy plan over
        the same window computation; cache ``events`` if it is expensive to recompute.
    """
    flag = "_leave_last_k_is_eval"
    marked = mark_leave_last_k(
        events,
        k=k,
        seed=seed,
        flag_col=flag,
        user_col=user_col,
        item_col=item_col,
        behavior_col=behavior_col,
        ts_col=ts_col,
    )
    train = marked.where(~F.col(flag)).drop(flag)
    evaluation = marked.where(F.col(flag)).drop(flag)
    return train, evaluation


class SplitConfig(StrictModel):
    """How the evaluation events are chosen (DESIGN §6: ``chronological``)."""

    method: Literal["chronological", "leave_last_k"] = "chronological"
    #: Events held out per user (``leave_last_k`` only).
    k: int = Field(1, ge=1)
    #: Seed of the tie-breaking hash (``leave_last_k`` only).
    seed: int = 0


def split_events(
    events: DataFrame,
    *,
    cfg: SplitConfig,
    t0: datetime,
    t1: datetime,
    t2: datetime,
    user_col: str = USER_ID,
    item_col: str = ITEM_ID,
    behavior_col: str = BEHAVIOR,
    ts_col: str = TS,
) -> tuple[DataFrame, DataFrame]:
    """Split events as configured: ``(train, evaluation)``.

    ``chronological`` cuts at ``t1`` (:func:`chronological_split`); ``leave_last_k`` keeps the
    events of ``[t0, t2)`` and holds out each user's last ``k`` of them
    (:func:`leave_last_k_split`; ``t1`` is then unused).
    """
    if cfg.method == "chronological":
        return chronological_split(events, t0=t0, t1=t1, t2=t2, ts_col=ts_col)
    lo, hi = _timestamp_literal("t0", t0), _timestamp_literal("t2", t2)
    if not t0 < t2:
        raise ValueError(f"need t0 < t2, got t0={t0}, t2={t2}")
    in_window = events.where((F.col(ts_col) >= lo) & (F.col(ts_col) < hi))
    return leave_last_k_split(
        in_window,
        k=cfg.k,
        seed=cfg.seed,
        user_col=user_col,
        item_col=item_col,
        behavior_col=behavior_col,
        ts_col=ts_col,
    )
