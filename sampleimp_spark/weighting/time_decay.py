"""Time decay of evidence: an event ``age`` days before ``t1`` counts ``2^(-age/h)``.

:func:`decay` is the factor of one event: ALS evidence and the history baseline sum
``strength · decay`` per pair. :func:`time_weights` adds ``w_time`` to samples, the decay of the
pair's most recent event (``pair_recency_any`` days before ``t1``): the GBT's sample weight and a
component of the combined weight. ``h`` is the half-life in days, > 0; ``None`` = no decay
(factor 1). The reference point is SAR's time-decayed affinity (Microsoft recommenders).
Details: ``docs/weighting.md``.
"""

from __future__ import annotations

import math
from datetime import datetime

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from sampleimp_spark import schema as S

#: The sample feature holding the days from the pair's last event to ``t1``.
RECENCY = "pair_recency_any"


def check_half_life(half_life_days: float | None) -> None:
    """Raise ``ValueError`` unless the half-life is None or a finite number > 0."""
    if half_life_days is not None and not (math.isfinite(half_life_days) and half_life_days > 0):
        raise ValueError(f"half_life_days must be > 0 (or None for no decay), got {half_life_days}")


def _factor(age_days: Column, half_life_days: float | None) -> Column:
    check_half_life(half_life_days)
    if half_life_days is None:
        return F.lit(1.0)
    return F.pow(F.lit(2.0), -age_days / F.lit(float(half_life_days)))


def decay(ts_col: str, *, t1: datetime, half_life_days: float | None) -> Column:
    """``2^(-age/h)`` of an event, ``age`` the days from its timestamp to ``t1``; 1 without decay."""
    age = (F.unix_micros(F.lit(t1)) - F.unix_micros(F.col(ts_col))) / 86_400_000_000.0
    return _factor(age, half_life_days)


def time_weights(
    samples: DataFrame,
    *,
    half_life_days: float | None,
    recency_col: str = RECENCY,
    weight_col: str = S.W_TIME,
) -> DataFrame:
    """``samples`` with ``weight_col = 2^(-recency/h)`` (1 for every row without decay).

    Raises:
        ValueError: the half-life is not None and not a finite number > 0.
    """
    return samples.withColumn(weight_col, _factor(F.col(recency_col).cast("double"), half_life_days))
