"""Per-day partials: a window assembled from its days equals the window computed from its events."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

from sampleimp_spark import schema as S
from sampleimp_spark.features.assemble import build_samples, samples_of
from sampleimp_spark.features.daily import day_partials, feature_days_of, window_aggregates
from sampleimp_spark.frames import release
from sampleimp_spark.windows import Windows

TZ = "Asia/Shanghai"
ZONE = ZoneInfo(TZ)
DAY0 = date(2024, 3, 1)
DDL = (
    "user_id string, item_id string, category_id string, behavior string, ts timestamp, price double, "
    "session_id string, category_path string"
)
KEYS = [S.WINDOW_ID, S.USER_ID, S.ITEM_ID]
#: Columns equal exactly (counts, days, sessions, recencies from the same instants, labels, keys).
EXACT = ("_n_", "_active_days", "_sessions", "_recency_", "label_", S.CATEGORY_ID, S.CATEGORY_PATH)


def _local(day: int, hour: int, minute: int, second: int = 0) -> datetime:
    """A local time of day ``DAY0 + day`` as a naive UTC datetime (the session time zone is UTC)."""
    d = DAY0 + timedelta(days=day)
    return datetime(d.year, d.month, d.day, hour, minute, second, tzinfo=ZONE).astimezone(UTC).replace(tzinfo=None)


FEATURE_DAYS = 5


def _window(first_day: int) -> Windows:
    def midnight(day: int) -> datetime:
        d = DAY0 + timedelta(days=day)
        return datetime(d.year, d.month, d.day, tzinfo=ZONE).astimezone(UTC)

    return Windows(midnight(first_day), midnight(first_day + FEATURE_DAYS), midnight(first_day + FEATURE_DAYS + 1))


def _hand_rows() -> list[tuple]:
    ev = []

    def add(user, item, cat, behavior, ts, price=10.0, session=None, path=None):
        ev.append((user, item, cat, behavior, ts, price, session, path))

    # A session crossing midnight between days 1 and 2, touching different items on each side.
    add("a", "i1", "c1", "view", _local(1, 23, 50))
    add("a", "i2", "c1", "cart", _local(2, 0, 10))
    add("a", "i2", "c1", "view", _local(2, 12, 0))
    # A session over three days: an event every 20 minutes from 23:40 on day 4 to 00:20 on day 6.
    t = _local(4, 23, 40)
    while t <= _local(6, 0, 20):
        add("b", "i3" if t.minute == 0 else "i4", "c2", "view", t, price=None)
        t += timedelta(minutes=20)
    # Sessions crossing the first window's start (day 0 -> 1) and its end (day 5 -> 6).
    add("e", "i1", "c1", "view", _local(0, 23, 45))
    add("e", "i1", "c1", "fav", _local(1, 0, 5))
    add("e", "i5", "c3", "view", _local(5, 23, 55), price=3.0)
    add("e", "i5", "c3", "purchase", _local(6, 0, 3), price=3.0)
    # Own session ids: one reused on days 1 and 4 (joined by id), mixed with events without one.
    add("c", "i6", "c3", "view", _local(1, 9, 0), session="s1")
    add("c", "i6", "c3", "view", _local(1, 9, 10))
    add("c", "i7", "c3", "cart", _local(4, 21, 0), session="s1")
    add("c", "i7", "c3", "view", _local(4, 23, 50))
    add("c", "i7", "c3", "view", _local(5, 0, 10), session="s2")
    # A user first seen on the first window's newest feature day, with her label.
    add("d", "i8", "c1", "view", _local(5, 10, 0), price=7.0, path="a/b")
    add("d", "i8", "c2", "view", _local(5, 10, 1), price=9.0, path="a/c")  # the item's category disagrees
    add("d", "i8", "c1", "purchase", _local(6, 10, 0))
    return ev


EMPTY_DAY = 3


def _random_rows(seed: int = 7) -> list[tuple]:
    """Events crowded around local midnights, some with session ids reused across days; no event
    on :data:`EMPTY_DAY`."""
    rng = random.Random(seed)
    ev = []
    for u in range(30):
        for day in range(8):
            if rng.random() < 0.25:
                continue  # users skip days; day-long gaps
            t = _local(day, 23, 0) - timedelta(minutes=rng.randint(0, 120))
            for _ in range(rng.randint(1, 12)):
                t += timedelta(minutes=rng.choice([1, 5, 12, 25, 29, 31, 45]), seconds=rng.randint(0, 59))
                item = f"i{rng.randint(0, 14)}"
                session = f"s{rng.randint(0, 3)}" if u % 5 == 0 and rng.random() < 0.6 else None
                price = None if rng.random() < 0.2 else float(rng.randint(1, 50))
                behavior = rng.choice(["view", "view", "view", "click", "fav", "cart", "purchase", "remove_from_cart"])
                cat = f"c{int(item[1:]) % 4 if rng.random() < 0.9 else 9}"
                ev.append((f"u{u}", item, cat, behavior, t, price, session, None))
    return [r for r in ev if not _local(EMPTY_DAY, 0, 0) <= r[4] < _local(EMPTY_DAY + 1, 0, 0)]


def _compare(expected: pd.DataFrame, got: pd.DataFrame) -> None:
    assert sorted(expected.columns) == sorted(got.columns)
    assert len(expected) == len(got) > 0
    expected = expected.sort_values(KEYS).reset_index(drop=True)
    got = got.sort_values(KEYS).reset_index(drop=True)[expected.columns]
    for c in expected.columns:
        if c in KEYS or any(x in c for x in EXACT) or expected[c].dtype == object:
            pd.testing.assert_series_equal(got[c], expected[c], check_dtype=False, obj=c)
        else:
            np.testing.assert_allclose(got[c], expected[c], rtol=1e-9, atol=1e-12, err_msg=c)


DAYS = [DAY0 + timedelta(days=i) for i in range(8)]  # more days than the windows need


@pytest.fixture(scope="module")
def both(spark):
    """``(expected, got, partials)``: the samples of two windows from events and from day partials."""
    windows = [_window(1), _window(2)]
    events = spark.createDataFrame(_hand_rows() + _random_rows(), DDL)
    full, fe = build_samples(events, windows=windows, tz=TZ, session_gap_minutes=30.0)
    expected = full.toPandas()  # tiny
    release(fe)
    partials = day_partials(events, days=DAYS, tz=TZ, session_gap_minutes=30.0)
    got = samples_of(window_aggregates(partials, windows=windows, tz=TZ), events, windows=windows).toPandas()
    return expected, got, partials


@pytest.mark.slow
def test_windows_from_day_partials_equal_windows_from_events(both):
    expected, got, _ = both
    assert expected[S.WINDOW_ID].nunique() == 2
    _compare(expected, got)


@pytest.mark.slow
def test_sessions_crossing_midnight_are_one_session(both):
    _, got, _ = both
    first, second = (w.window_id for w in (_window(1), _window(2)))
    users = got.groupby([S.WINDOW_ID, S.USER_ID])[["user_sessions", "user_session_minutes", "user_active_days"]].max()
    assert tuple(users.loc[(first, "a")][:2]) == (2, pytest.approx(10.0))  # 23:50 -> 00:10, then noon alone
    assert tuple(users.loc[(second, "a")][:2]) == (2, 0.0)  # day 1 is not in the second window
    assert tuple(users.loc[(second, "b")][:2]) == (1, 24 * 60 + 40)  # three days, one session
    assert tuple(users.loc[(first, "b")][:2]) == (1, 24 * 60)  # cut at t1
    assert tuple(users.loc[(first, "e")][:2]) == (2, 0.0)  # cut at t0 and at t1
    assert users.loc[(first, "d"), "user_active_days"] == 1  # first seen on the newest day


@pytest.mark.slow
def test_a_day_without_events_has_no_partials(both):
    _, _, partials = both
    assert partials.entities.where(F.col(S.DAY) == DAY0 + timedelta(days=EMPTY_DAY)).count() == 0
    assert partials.entities.where(F.col(S.DAY) == DAY0 + timedelta(days=EMPTY_DAY + 1)).count() > 0


def test_windows_must_be_whole_local_days():
    assert feature_days_of(_window(1), TZ) == [DAY0 + timedelta(days=i) for i in range(1, 6)]
    w = _window(1)
    with pytest.raises(ValueError, match="whole local days"):
        feature_days_of(Windows(w.t0 + timedelta(hours=1), w.t1, w.t2), TZ)
    with pytest.raises(ValueError, match="whole local days"):
        feature_days_of(w, "UTC")
