"""The feature window ``[t0, t1)`` and label window ``[t1, t2)``, and their id codec.

A :class:`Windows` is the one description of a window used everywhere: its ``window_id``
(``<t0>_<t1>_<t2>`` in UTC, e.g. ``20171124T160000Z_20171201T160000Z_20171203T160000Z``) keys
the silver and gold tables, and :meth:`Windows.from_id` reads one back. :func:`resolve_windows`
fills bounds the config leaves open from the events' time range.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from sampleimp_spark import schema as S
from sampleimp_spark.errors import BadInputError

log = logging.getLogger(__name__)

_ID_FORMAT = "%Y%m%dT%H%M%SZ"


@dataclass(frozen=True)
class Windows:
    """Feature window ``[t0, t1)`` and label window ``[t1, t2)``, as aware UTC datetimes."""

    t0: datetime
    t1: datetime
    t2: datetime

    def __post_init__(self) -> None:
        if not (self.t0 < self.t1 < self.t2):
            raise ValueError(f"windows need t0 < t1 < t2, got {self.t0}, {self.t1}, {self.t2}")

    @classmethod
    def from_id(cls, window_id: str) -> Windows:
        """The windows a ``window_id`` encodes.

        Raises:
            ValueError: ``window_id`` is not three ``%Y%m%dT%H%M%SZ`` times joined by ``_``.
        """
        parts = window_id.split("_")
        try:
            if len(parts) != 3:
                raise ValueError("expected three parts")
            t0, t1, t2 = (datetime.strptime(t, _ID_FORMAT).replace(tzinfo=UTC) for t in parts)
        except ValueError as exc:
            raise ValueError(f"not a window id: {window_id!r} (expected <t0>_<t1>_<t2>, each {_ID_FORMAT})") from exc
        return cls(t0, t1, t2)

    @property
    def window_id(self) -> str:
        """A stable id, e.g. ``20171124T160000Z_20171201T160000Z_20171203T160000Z``."""
        return "_".join(t.astimezone(UTC).strftime(_ID_FORMAT) for t in (self.t0, self.t1, self.t2))

    @property
    def feature_days(self) -> float:
        """Length of the feature window in days."""
        return (self.t1 - self.t0).total_seconds() / 86400.0

    @property
    def label_days(self) -> float:
        """Length of the label window in days."""
        return (self.t2 - self.t1).total_seconds() / 86400.0

    def shifted(self, delta: timedelta) -> Windows:
        """The same windows moved by ``delta`` (negative: earlier)."""
        return Windows(self.t0 + delta, self.t1 + delta, self.t2 + delta)

    def describe(self) -> str:
        return (
            f"feature window [{self.t0.isoformat()}, {self.t1.isoformat()}), label window [.., {self.t2.isoformat()})"
        )


def _local_midnight(ts: datetime, tz: str, *, after: bool) -> datetime:
    local = ts.astimezone(ZoneInfo(tz))
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if after:
        midnight += timedelta(days=1)
    return midnight.astimezone(UTC)


def resolve_windows(
    events: DataFrame,
    *,
    t0: datetime | None,
    t1: datetime | None,
    t2: datetime | None,
    label_days: float,
    feature_days: float | None,
    tz: str,
) -> Windows:
    """Windows from config, with missing bounds derived from the events' time range.

    Derived bounds fall on local midnights of the source's time zone: ``t2`` is the midnight
    after the last event, ``t1 = t2 - label_days``, and ``t0`` is ``t1 - feature_days`` or the
    midnight before the first event. One small aggregate (min/max of ``ts``) is computed only
    when a bound is missing.
    """
    if t0 is None or t1 is None or t2 is None:
        row = events.agg(F.min(S.TS), F.max(S.TS)).first()
        first, last = (row[0], row[1]) if row is not None else (None, None)
        if first is None or last is None:
            raise BadInputError("no events to derive the feature and label windows from")
        first, last = first.replace(tzinfo=UTC), last.replace(tzinfo=UTC)
        t2 = t2 or _local_midnight(last, tz, after=True)
        t1 = t1 or t2 - timedelta(days=label_days)
        if t0 is None:
            t0 = t1 - timedelta(days=feature_days) if feature_days else _local_midnight(first, tz, after=False)
        windows = Windows(t0, t1, t2)
        log.info("derived windows from the data (%s .. %s, %s): %s", first, last, tz, windows.describe())
        return windows
    return Windows(t0, t1, t2)


def data_start(events: DataFrame, *, tz: str) -> datetime:
    """The local midnight (in ``tz``) before the first event: where the earliest window may start.

    Raises:
        BadInputError: there are no events.
    """
    row = events.agg(F.min(S.TS)).first()
    if row is None or row[0] is None:
        raise BadInputError("no events: nothing to build windows from")
    return _local_midnight(row[0].replace(tzinfo=UTC), tz, after=False)
