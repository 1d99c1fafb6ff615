"""Labels of samples, from the label window only.

A sample is a ``(user_id, item_id)`` pair with at least one event in the feature window
``[t0, t1)``. :func:`labels` and :func:`with_labels` give it ``label_purchase`` (1 if the user
bought the item in ``[t1, t2)``) and ``label_intent`` (the highest behavior reached there, by
intent order view < click < fav < cart < purchase; ``none`` without a label-window event).
Labels never read feature-window events, and features never read label-window events.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from sampleimp_spark import schema as S
from sampleimp_spark.windows import Windows


def labels(events: DataFrame, *, windows: Sequence[Windows]) -> DataFrame:
    """``(window_id, user_id, item_id, label_purchase, label_intent)`` for pairs active in each
    window's label window."""
    bounds = events.sparkSession.createDataFrame(
        [(w.window_id, w.t1, w.t2) for w in windows], f"{S.WINDOW_ID} string, _t1 timestamp, _t2 timestamp"
    )
    inside = (F.col(S.TS) >= F.col("_t1")) & (F.col(S.TS) < F.col("_t2")) & F.col(S.BEHAVIOR).isin(*S.BEHAVIORS)
    le = events.join(F.broadcast(bounds), inside)
    level = F.array_position(F.array(*(F.lit(b) for b in S.BEHAVIORS)), F.col(S.BEHAVIOR))  # 1-based
    agg = le.groupBy(S.WINDOW_ID, S.USER_ID, S.ITEM_ID).agg(F.max(level).alias("_level"))
    return agg.select(
        S.WINDOW_ID,
        S.USER_ID,
        S.ITEM_ID,
        (F.col("_level") == len(S.BEHAVIORS)).cast("int").alias(S.LABEL_PURCHASE),
        F.element_at(F.array(*(F.lit(b) for b in S.BEHAVIORS)), F.col("_level").cast("int")).alias(S.LABEL_INTENT),
    )


def with_labels(samples: DataFrame, events: DataFrame, *, windows: Sequence[Windows]) -> DataFrame:
    """Attach labels to samples (keyed by window, user, item); pairs without a label-window event
    get 0 / ``none``."""
    joined = samples.join(labels(events, windows=windows), [S.WINDOW_ID, S.USER_ID, S.ITEM_ID], "left")
    return joined.withColumns(
        {
            S.LABEL_PURCHASE: F.coalesce(F.col(S.LABEL_PURCHASE), F.lit(0)),
            S.LABEL_INTENT: F.coalesce(F.col(S.LABEL_INTENT), F.lit(S.INTENT_NONE)),
        }
    )
