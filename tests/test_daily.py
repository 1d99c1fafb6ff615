"""Runs by date and backfills: the day's bounds and config, a dated ingest that replaces exactly
its day (a China-time day shares its UTC dates with its neighbours), a rerun that does nothing,
a missing day's input, a backfill that resumes where it stopped, features from per-day partials
equal to a full run, and a late event that makes exactly the windows reading its day stale."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from deltalake import DeltaTable

from sampleimp_spark import lake
from sampleimp_spark import schema as S
from sampleimp_spark.cli import main
from sampleimp_spark.config import ConfigError, load_config
from sampleimp_spark.errors import EXIT_BAD_INPUT, EXIT_OK
from sampleimp_spark.stages import daily
from sampleimp_spark.windows import Windows

#: The Taobao sample's documented days (China time).
FIRST, LAST = date(2017, 11, 25), date(2017, 12, 3)


def test_a_day_is_a_calendar_day_of_the_source_time_zone():
    assert daily.day_bounds(date(2017, 12, 1), "taobao") == (
        datetime(2017, 11, 30, 16, tzinfo=UTC),
        datetime(2017, 12, 1, 16, tzinfo=UTC),
    )
    assert daily.day_bounds(date(2019, 10, 1), "rees46")[0] == datetime(2019, 10, 1, tzinfo=UTC)
    assert lake.time_between("ts", *daily.day_bounds(date(2017, 12, 1), "taobao")) == (
        "`ts` >= TIMESTAMP'2017-11-30 16:00:00.000000' AND `ts` < TIMESTAMP'2017-12-01 16:00:00.000000'"
    )


def test_the_day_fills_the_input_paths_and_leaves_the_config_hash_alone():
    cfg = load_config(None, ["input.source=taobao", "input.paths=['/raw/{date}/events.csv', /raw/fixed.csv]"])
    dated = daily.for_day(cfg, date(2017, 12, 1))
    assert dated.input.paths == ["/raw/2017-12-01/events.csv", "/raw/fixed.csv"]
    assert dated.run.date == date(2017, 12, 1) and cfg.run.date is None
    assert load_config(None, ["run.date=2017-12-01"]).hash() == load_config(None, []).hash()
    with pytest.raises(ConfigError, match=r"unset features\.t2"):
        daily.for_day(load_config(None, ["features.t2=2017-12-01T00:00:00Z"]), date(2017, 12, 1))
    first = date(2017, 11, 30)
    assert daily.days(first, date(2017, 12, 2)) == [first + timedelta(days=i) for i in range(3)]
    with pytest.raises(ConfigError, match="before --from"):
        daily.days(date(2017, 12, 2), date(2017, 12, 1))


def test_a_backfill_stops_at_the_first_failed_day_and_names_it():
    ran, said = [], []

    def run_day(day, run_id):
        ran.append((day, run_id))
        return 3 if day == date(2017, 12, 2) else 0

    code = daily.backfill(run_day, date(2017, 12, 1), date(2017, 12, 3), run_id=None, echo=said.append)
    assert code == 3 and ran == [(date(2017, 12, 1), "backfill-2017-12-01"), (date(2017, 12, 2), "backfill-2017-12-02")]
    assert said[0] == "backfill [1/3] 2017-12-01: run backfill-2017-12-01"
    assert "stopped at 2017-12-02 (exit 3)" in said[-1]


ORDER = ("ingest", "features", "weights", "train")


def test_a_day_runs_from_its_first_stage_not_up_to_date():
    done = daily.DayStatus(("ingest", "features", "weights"), "r1", daily.DONE)
    stale = daily.DayStatus(("ingest", "features", "weights"), "r1", daily.STALE)
    wanted = ["ingest", "features", "weights"]
    assert daily.stages_to_run(wanted, done, order=ORDER) == []
    assert daily.stages_to_run(wanted, None, order=ORDER) == wanted
    assert daily.stages_to_run(wanted, stale, order=ORDER) == ["features", "weights"]  # not ingested again
    assert daily.stages_to_run(["weights"], stale, order=ORDER) == ["weights"]  # asked for alone
    only_ingested = daily.DayStatus(("ingest",), "r1", daily.DONE)
    assert daily.stages_to_run(wanted, only_ingested, order=ORDER) == ["features", "weights"]


def test_only_stages_built_on_up_to_date_inputs_are_recorded_up_to_date():
    stale = daily.DayStatus(("ingest", "features", "weights"), "r1", daily.STALE)
    # A stale day's features rebuilt alone: its weights were built on the old samples.
    assert daily.fresh_after(["features"], stale, order=ORDER) == ["ingest", "features"]
    # Its weights alone: built on stale samples, so neither is up to date.
    assert daily.fresh_after(["weights"], stale, order=ORDER) == ["ingest"]
    assert daily.fresh_after(["features", "weights"], stale, order=ORDER) == ["ingest", "features", "weights"]
    # A day re-ingested (--force, a corrected file): what its windows built from the old events is behind.
    done = daily.DayStatus(("ingest", "features", "weights"), "r1", daily.DONE)
    assert daily.fresh_after(["ingest"], done, order=ORDER) == ["ingest"]
    assert daily.fresh_after(["weights"], done, order=ORDER) == ["ingest", "features", "weights"]
    assert daily.fresh_after(["features"], None, order=ORDER) == ["features"]


def _split_by_day(src: Path, folder: Path) -> None:
    """The real sample's lines, as they are, in one file per China-time day (``<day>.csv``); lines
    without a timestamp go to the first day's file."""
    lines = src.read_text().rstrip("\n").split("\n")
    files: dict[str, list[str]] = {}
    for line in lines:
        fields = line.split(",")
        ok = len(fields) == 5 and fields[4].isdigit()
        day = pd.Timestamp(int(fields[4]), unit="s", tz="Asia/Shanghai").date() if ok else FIRST
        files.setdefault(str(day), []).append(line)
    folder.mkdir()
    for day, kept in files.items():
        (folder / f"{day}.csv").write_text("\n".join(kept) + "\n")


def _taobao(lakehouse: str, paths: str) -> list[str]:
    return [
        "--set",
        f"lakehouse={lakehouse}",
        "--set",
        "input.source=taobao",
        "--set",
        f"input.paths={json.dumps([paths])}",  # quoted: YAML reads a bare {date} as a mapping
        "--set",
        "ingest.valid_from=2017-11-25T00:00:00+08:00",
        "--set",
        "ingest.valid_until=2017-12-04T00:00:00+08:00",
        "--set",
        "ingest.max_reject_rate=0.01",
        "--set",
        f"run.runs_dir={Path(lakehouse).parent / 'runs'}",  # the run reports, beside the lakehouse
        "--set",
        "train.enabled=false",  # days of features and weights, no experiment
        "--set",
        "features.incremental=true",  # dated runs from per-day partials; the whole-input oracle from events
    ]


def _events_by_day(lakehouse: str) -> dict[date, int]:
    events = DeltaTable(lake.table_path(lakehouse, S.BRONZE_EVENTS)).to_pandas(columns=[S.TS])
    local = pd.to_datetime(events[S.TS], utc=True).dt.tz_convert("Asia/Shanghai").dt.date
    return local.value_counts().to_dict()


@pytest.mark.slow
@pytest.mark.timeout(1800)  # 35 CLI runs: 380-440 s alone, up to 900 s beside the other worker on a slow day
def test_dated_runs_ingest_their_day_once_and_a_backfill_resumes(spark, shared_data, tmp_path, capsys):
    src = shared_data / "taobao_userbehavior" / "UserBehavior.csv"
    _split_by_day(src, tmp_path / "days")
    # The oracle: the whole input ingested at once (tests/test_ingest.py checks it against the file).
    full = str(tmp_path / "full")
    assert main(["ingest", *_taobao(full, str(src))]) == EXIT_OK
    per_day = _events_by_day(full)
    assert set(per_day) == {FIRST + timedelta(days=i) for i in range(9)}
    lakehouse = str(tmp_path / "lakehouse")
    dated = _taobao(lakehouse, f"{tmp_path}/days/{{date}}.csv")

    # Two neighbouring China-time days share the UTC date 2017-11-30: each keeps the other's rows.
    assert main(["ingest", "--date", "2017-11-30", "--run-id", "d1", *dated]) == EXIT_OK
    assert main(["ingest", "--date", "2017-12-01", "--run-id", "d2", *dated]) == EXIT_OK
    assert _events_by_day(lakehouse) == {d: per_day[d] for d in (date(2017, 11, 30), date(2017, 12, 1))}
    # The same day again with the same config: nothing to do, nothing written.
    version = DeltaTable(lake.table_path(lakehouse, S.BRONZE_EVENTS)).version()
    capsys.readouterr()
    assert main(["ingest", "--date", "2017-12-01", *dated]) == EXIT_OK
    assert "nothing to do: 2017-12-01 (ingest) was done by run d2" in capsys.readouterr().out
    assert DeltaTable(lake.table_path(lakehouse, S.BRONZE_EVENTS)).version() == version
    # --force runs it anyway (a corrected file), replacing the day with the same rows.
    assert main(["ingest", "--date", "2017-12-01", "--force", *dated]) == EXIT_OK
    version = DeltaTable(lake.table_path(lakehouse, S.BRONZE_EVENTS)).version()
    assert _events_by_day(lakehouse) == {d: per_day[d] for d in (date(2017, 11, 30), date(2017, 12, 1))}
    # A day whose input is missing: exit 3, naming it, and no table touched.
    rejects = DeltaTable(lake.table_path(lakehouse, S.BRONZE_REJECTS)).version()
    assert main(["ingest", "--date", "2017-12-09", *dated]) == EXIT_BAD_INPUT
    assert "2017-12-09.csv" in capsys.readouterr().err
    assert DeltaTable(lake.table_path(lakehouse, S.BRONZE_EVENTS)).version() == version
    assert DeltaTable(lake.table_path(lakehouse, S.BRONZE_REJECTS)).version() == rejects

    # A backfill over three days whose second file is broken stops there; fixed, it resumes.
    broken = tmp_path / "days" / "2017-12-02.csv"
    good = broken.read_bytes()
    broken.write_bytes(b"not,a,taobao,row\n" * 500 + good)
    backfill = ["backfill", "--from", "2017-12-01", "--to", "2017-12-03", "--stages", "ingest", *dated]
    assert main(backfill) == EXIT_BAD_INPUT
    out = capsys.readouterr().out
    assert "backfill [2/3] 2017-12-02" in out and "stopped at 2017-12-02 (exit 3)" in out
    assert date(2017, 12, 2) not in _events_by_day(lakehouse)
    broken.write_bytes(good)
    assert main(backfill) == EXIT_OK
    out = capsys.readouterr().out
    assert "nothing to do: 2017-12-01 (ingest)" in out and "3 day(s) done" in out
    assert _events_by_day(lakehouse) == {d: per_day[d] for d in per_day if date(2017, 11, 30) <= d <= LAST}

    # The remaining days: day by day, the same events as the whole input at once.
    assert main(["backfill", "--from", str(FIRST), "--to", "2017-11-29", "--stages", "ingest", *dated]) == EXIT_OK
    key = [S.USER_ID, S.ITEM_ID, S.TS, S.BEHAVIOR, S.CATEGORY_ID]
    by_day = DeltaTable(lake.table_path(lakehouse, S.BRONZE_EVENTS)).to_pandas(columns=key)
    whole = DeltaTable(lake.table_path(full, S.BRONZE_EVENTS)).to_pandas(columns=key)
    pd.testing.assert_frame_equal(
        by_day.sort_values(key).reset_index(drop=True), whole.sort_values(key).reset_index(drop=True)
    )

    # The features and weights of a day (the window whose label day is that day), as a scheduler
    # with one fixed run id per day runs them: each stage is recorded, then the day is done.
    day_run = ["--date", "2017-12-02", "--run-id", "backfill-2017-12-02", *dated]
    assert main(["features", *day_run]) == EXIT_OK
    assert main(["weights", *day_run]) == EXIT_OK
    capsys.readouterr()
    assert main(["run", *day_run]) == EXIT_OK
    assert "nothing to do: 2017-12-02 (ingest, features, weights) was done by run backfill-2017-12-02" in (
        capsys.readouterr().out
    )
    gold = DeltaTable(lake.table_path(lakehouse, S.GOLD_TRAINING_SAMPLES)).to_pandas(columns=[S.WINDOW_ID])
    (window_id,) = set(gold[S.WINDOW_ID])
    w = Windows.from_id(window_id)
    assert (w.t1, w.t2) == daily.day_bounds(date(2017, 12, 2), "taobao") and w.feature_days == 4.0

    # Built from per-day partials, the day's window equals the same window built from the events of
    # the whole input at once: every feature and every weight.
    bounds = [f"features.{k}={t.isoformat()}" for k, t in zip(("t0", "t1", "t2"), (w.t0, w.t1, w.t2), strict=True)]
    fixed = [x for b in bounds for x in ("--set", b)]
    assert main(["features", *fixed, *_taobao(full, str(src))]) == EXIT_OK
    assert main(["weights", *fixed, *_taobao(full, str(src))]) == EXIT_OK
    for table in (S.SILVER_SAMPLES, S.GOLD_TRAINING_SAMPLES):
        _assert_same_rows(_rows(lakehouse, table, window_id), _rows(full, table, window_id), table)

    # A late event: the 2017-12-03 file also holds an event of 2017-12-01 (a new user). It is added
    # to its day; the window of 2017-12-02 (features of 11-28 .. 12-01) goes stale, that of
    # 2017-11-30 (11-26 .. 11-29) and the ingest-only days do not.
    assert main(["features", "--date", "2017-11-30", "--run-id", "backfill-2017-11-30", *dated]) == EXIT_OK
    late_dir = tmp_path / "late"
    late_dir.mkdir()
    one = next(x for x in (tmp_path / "days" / "2017-12-01.csv").read_text().split("\n") if x.count(",") == 4)
    late_line = ",".join(["999999999", *one.split(",")[1:]])
    (late_dir / "2017-12-03.csv").write_text((tmp_path / "days" / "2017-12-03.csv").read_text() + late_line + "\n")
    late = _taobao(lakehouse, f"{late_dir}/{{date}}.csv")
    capsys.readouterr()
    assert main(["ingest", "--date", "2017-12-03", "--run-id", "late-1", *late]) == EXIT_OK
    assert "input events 1 of earlier days" in capsys.readouterr().out
    # Its report describes the ingest, not the lakehouse's windows.
    assert "Class frequencies" not in (tmp_path / "runs" / "late-1" / "report.md").read_text()
    status = DeltaTable(lake.table_path(lakehouse, S.SILVER_WINDOW_STATUS)).to_pandas()
    stale = set(status.loc[status[S.STATUS] == daily.STALE, S.DAY])
    assert stale == {date(2017, 12, 2)}, status
    # Its features alone rebuild the samples; the weights built on the old ones stay behind, and
    # the next run for the day rebuilds just them.
    assert main(["features", "--date", "2017-12-02", "--run-id", "backfill-2017-12-02", *dated]) == EXIT_OK
    assert "2017-12-02 is stale (a day its windows read changed): rebuilding features" in capsys.readouterr().out
    assert _day_status(lakehouse, date(2017, 12, 2)) == ("ingest,features", daily.DONE)
    assert main(["run", "--date", "2017-12-02", "--run-id", "backfill-2017-12-02", *dated]) == EXIT_OK
    assert "2017-12-02: ingest, features up to date (run backfill-2017-12-02); running weights" in (
        capsys.readouterr().out
    )
    assert _day_status(lakehouse, date(2017, 12, 2)) == ("ingest,features,weights", daily.DONE)
    users = _rows(lakehouse, S.SILVER_SAMPLES, window_id)[S.USER_ID]
    assert (users == "999999999").sum() == 1
    assert main(["ingest", "--date", "2017-12-03", *late]) == EXIT_OK  # done: the late event is not added twice
    assert _events_by_day(lakehouse)[date(2017, 12, 1)] == per_day[date(2017, 12, 1)] + 1
    assert main(["run", "--date", "2017-12-02", *dated]) == EXIT_OK
    assert "nothing to do: 2017-12-02" in capsys.readouterr().out
    # Each event remembers the dated run that brought it (ingest_day). The 2017-12-03 file
    # re-ingested without its late event drops it, and the day built on it goes stale.
    assert main(["ingest", "--date", "2017-12-03", "--force", *dated]) == EXIT_OK
    assert _events_by_day(lakehouse)[date(2017, 12, 1)] == per_day[date(2017, 12, 1)]
    assert _day_status(lakehouse, date(2017, 12, 2)) == ("ingest,features,weights", daily.STALE)
    # With it again, the late day re-ingested from its own file keeps the event.
    assert main(["ingest", "--date", "2017-12-03", "--force", *late]) == EXIT_OK
    assert main(["ingest", "--date", "2017-12-01", "--force", *dated]) == EXIT_OK
    assert _events_by_day(lakehouse)[date(2017, 12, 1)] == per_day[date(2017, 12, 1)] + 1
    # A corrected file of 2017-12-02 holding an event of the next day (a new user) stores it in its
    # day; the day's windows, built from the old events, are behind.
    one = next(x for x in (tmp_path / "days" / "2017-12-03.csv").read_text().split("\n") if x.count(",") == 4)
    with (tmp_path / "days" / "2017-12-02.csv").open("a") as f:
        f.write(",".join(["888888888", *one.split(",")[1:]]) + "\n")
    capsys.readouterr()
    assert main(["ingest", "--date", "2017-12-02", "--force", *dated]) == EXIT_OK
    assert "input events 1 of later days" in capsys.readouterr().out
    assert _day_status(lakehouse, date(2017, 12, 2)) == ("ingest", daily.DONE)
    by_day = _events_by_day(lakehouse)
    assert by_day[date(2017, 12, 3)] == per_day[date(2017, 12, 3)] + 1
    assert by_day[date(2017, 12, 2)] == per_day[date(2017, 12, 2)]


def _day_status(lakehouse: str, day: date) -> tuple[str, str]:
    status = DeltaTable(lake.table_path(lakehouse, S.SILVER_WINDOW_STATUS)).to_pandas()
    (row,) = status[status[S.DAY] == day].itertuples()
    return getattr(row, S.STAGES), getattr(row, S.STATUS)


def _rows(lakehouse: str, table: str, window_id: str) -> pd.DataFrame:
    return DeltaTable(lake.table_path(lakehouse, table)).to_pandas(filters=[(S.WINDOW_ID, "=", window_id)])


def _assert_same_rows(got: pd.DataFrame, expected: pd.DataFrame, table: str) -> None:
    keys = [S.USER_ID, S.ITEM_ID]
    assert sorted(got.columns) == sorted(expected.columns) and len(got) == len(expected) > 0, table
    got = got.sort_values(keys).reset_index(drop=True)[expected.columns]
    expected = expected.sort_values(keys).reset_index(drop=True)
    for c in expected.columns:
        if expected[c].dtype.kind == "f":
            np.testing.assert_allclose(got[c], expected[c], rtol=1e-9, atol=1e-12, err_msg=f"{table}.{c}")
        else:
            pd.testing.assert_series_equal(got[c], expected[c], check_dtype=False, obj=f"{table}.{c}")
