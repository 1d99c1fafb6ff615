"""Ingest: reject reasons, row conservation, idempotent reruns, thresholds, Delta contract."""

from __future__ import annotations

import json
from datetime import date

import pytest
from conftest import canonical_args, write_text
from deltalake import DeltaTable
from pyspark.sql import functions as F

from sampleimp_spark import lake
from sampleimp_spark import schema as S
from sampleimp_spark.cli import main
from sampleimp_spark.config import Config, load_config
from sampleimp_spark.errors import EXIT_BAD_INPUT, EXIT_OK, BadInputError
from sampleimp_spark.progress import RunProgress
from sampleimp_spark.sources import canonical
from sampleimp_spark.sources.validate import to_rejects, validate
from sampleimp_spark.stages import daily, ingest

HEADER = "user_id,item_id,category_id,behavior,ts,price\n"
GOOD = [
    "u1,i1,c1,view,2024-03-01T10:00:00Z,1.5",
    "u1,i1,c1,purchase,2024-03-01T10:05:00Z,1.5",
    "u2,i2,c2,cart,2024-03-02T08:00:00Z,",
    "u3,i1,c1,view,2024-03-02T09:00:00Z,",
]


def _cfg(lakehouse: str, source: str, paths: list[str], *extra: str) -> Config:
    return load_config(
        None, [f"lakehouse={lakehouse}", f"input.source={source}", f"input.paths={json.dumps(paths)}", *extra]
    )


def _run(spark, cfg: Config, run_id: str):
    ctx = lake.RunContext(run_id=run_id, config_hash=cfg.hash(), stage="ingest")
    return ingest.run(spark, cfg, ctx=ctx, progress=RunProgress(run_id))


def _rows(spark, lakehouse, name, cols=None):
    df = lake.read_table(spark, lakehouse, name)
    return sorted(tuple(r) for r in df.select(*(cols or df.columns)).collect())


def test_each_reject_reason(spark, tmp_path):
    lines = {
        None: "u1,i1,c1,view,2024-03-01T10:00:00Z,1.5",
        "malformed": "u1,i1,c1,view,2024-03-01T10:00:00Z",
        "null_id": "u1,,c1,view,2024-03-01T10:00:00Z,1",
        "unknown_behavior": "u1,i1,c1,like,2024-03-01T10:00:00Z,1",
        "bad_timestamp": "u1,i1,c1,view,yesterday,1",
        "ts_out_of_range": "u1,i1,c1,view,2023-01-01T00:00:00Z,1",
        "negative_price": "u1,i1,c1,view,2024-03-01T10:00:00Z,-2",
        "bad_value": "u1,i1,c1,view,2024-03-01T10:00:00Z,NaN",
    }
    path = write_text(tmp_path / "e.csv", HEADER + "\n".join(lines.values()) + "\n\n")  # + an empty line
    from datetime import UTC, datetime

    got = validate(
        canonical.read(spark, [path]),
        source="canonical",
        valid_from=datetime(2024, 1, 1, tzinfo=UTC),
        valid_until=datetime(2025, 1, 1, tzinfo=UTC),
    )
    reasons = {r[S.RAW]: (r[S.REASON], r[S.DETAIL]) for r in got.collect()}
    assert {raw: reasons[raw][0] for raw in lines.values()} == {raw: reason for reason, raw in lines.items()}
    assert reasons[""] == ("malformed", "empty line")
    assert reasons[lines["null_id"]][1] == "missing item_id"
    assert reasons[lines["unknown_behavior"]][1] == "behavior=like"
    assert reasons[lines["bad_timestamp"]][1] == "ts=yesterday"
    assert reasons[lines["negative_price"]][1] == "price=-2.0"
    assert reasons[lines["bad_value"]][1] == "unparsable price"


def test_a_long_raw_record_is_stored_cut_with_a_marker(spark, tmp_path):
    """A 1 MB field must not land whole in bronze.rejects: past ``max_raw_chars`` the raw text is
    cut and says how much was cut; a short reject stays verbatim."""
    long_line = "u1,i1,c1,like,2024-03-01T10:00:00Z," + "9" * 1_000_000
    short_line = "u2,i2,c1,like,2024-03-01T10:00:00Z,1"
    path = write_text(tmp_path / "e.csv", HEADER + long_line + "\n" + short_line + "\n")
    validated = validate(canonical.read(spark, [path]), source="canonical", valid_from=None, valid_until=None)
    raws = sorted(r["raw"] for r in to_rejects(validated, run_id="r", max_raw_chars=100).collect())
    assert raws == sorted([long_line[:100] + f"…[cut: {len(long_line) - 100} characters]", short_line])


@pytest.mark.slow
def test_every_row_is_accounted_for_on_real_taobao(spark, shared_data, lakehouse):
    """The prefix file and the time slice share 88 identical rows; the prefix has a truncated
    last line and 35 rows before the dataset's window."""
    files = [
        shared_data / "taobao_userbehavior" / "UserBehavior.csv",
        shared_data / "taobao_userbehavior_timeslice" / "UserBehavior.csv",
    ]
    n_lines = sum(len(f.read_bytes().rstrip(b"\n").split(b"\n")) for f in files)
    cfg = _cfg(
        lakehouse,
        "taobao",
        [str(f) for f in files],
        "ingest.valid_from=2017-11-25T00:00:00+08:00",
        "ingest.valid_until=2017-12-04T00:00:00+08:00",
    )
    report = _run(spark, cfg, "conservation")

    events = DeltaTable(lake.table_path(lakehouse, S.BRONZE_EVENTS)).to_pyarrow_table()
    rejects = DeltaTable(lake.table_path(lakehouse, S.BRONZE_REJECTS)).to_pandas()
    assert n_lines == 84_476 + 110_300
    assert report.input_rows == n_lines
    assert events.num_rows + len(rejects) + report.duplicates == n_lines
    assert report.duplicates == 88
    assert report.events == events.num_rows == n_lines - 36 - 88
    assert rejects["reason"].value_counts().to_dict() == {"ts_out_of_range": 35, "malformed": 1}
    assert report.rejects == {"ts_out_of_range": 35, "malformed": 1}
    assert set(rejects["source_file"].str.rsplit("/", n=2).str[-2]) == {"taobao_userbehavior"}
    assert "100370,1968385,1875258,pv" in set(rejects["raw"])


@pytest.mark.slow
def test_rerun_is_idempotent_and_stamped(spark, tmp_path, lakehouse):
    rows = [*GOOD, GOOD[0], "u9,,c1,view,2024-03-01T10:00:00Z,"]
    path = write_text(tmp_path / "e.csv", HEADER + "\n".join(rows) + "\n")
    cfg = _cfg(lakehouse, "canonical", [path], "ingest.max_reject_rate=0.5")
    first = _run(spark, cfg, "run-1")
    events_1 = _rows(spark, lakehouse, S.BRONZE_EVENTS)
    rejects_1 = _rows(spark, lakehouse, S.BRONZE_REJECTS, ["source_file", "raw", "reason"])
    second = _run(spark, cfg, "run-2")
    assert (
        (first.events, first.duplicates, first.rejects)
        == (second.events, second.duplicates, second.rejects)
        == (4, 1, {"null_id": 1})
    )
    assert _rows(spark, lakehouse, S.BRONZE_EVENTS) == events_1
    assert _rows(spark, lakehouse, S.BRONZE_REJECTS, ["source_file", "raw", "reason"]) == rejects_1
    assert len(events_1) == 4 and len(rejects_1) == 1

    # Commits carry the run id; the table carries config hash, package version and last run.
    dt = DeltaTable(lake.table_path(lakehouse, S.BRONZE_EVENTS))
    metas = [json.loads(c["userMetadata"]) for c in dt.history() if c.get("userMetadata")]
    assert [m["run_id"] for m in metas[:2]] == ["run-2", "run-1"]
    props = dt.metadata().configuration
    assert props["sampleimp.config_hash"] == cfg.hash()
    assert props["sampleimp.package_version"] == "0.1.0"
    assert props["sampleimp.run_id"] == "run-2"

    # delta-rs reads the same rows and the contract schema, partitioned by event_date.
    arrow = dt.to_pyarrow_table()
    assert arrow.num_rows == 4
    assert [f.name for f in arrow.schema] == list(S.EVENT_COLUMNS)
    assert dt.metadata().partition_columns == [S.EVENT_DATE]
    types = {f.name: str(f.type) for f in arrow.schema}
    assert types[S.TS].startswith("timestamp[us") and types[S.EVENT_DATE] == "date32[day]"
    assert types[S.PRICE] == "double" and types[S.USER_ID] in ("string", "large_string", "string_view")


@pytest.mark.slow
def test_rerun_replaces_only_its_source_and_dates(spark, tmp_path, lakehouse):
    a = write_text(tmp_path / "a.csv", HEADER + "\n".join(GOOD) + "\n")
    b = write_text(tmp_path / "b" / "ub.csv", "7,70,700,pv,1709287200\n")  # 2024-03-01 10:00 UTC
    _run(spark, _cfg(lakehouse, "canonical", [a]), "a1")
    _run(spark, _cfg(lakehouse, "taobao", [b]), "b1")
    # The canonical source is re-delivered for the same days with one event fewer.
    write_text(tmp_path / "a.csv", HEADER + "\n".join(GOOD[:3]) + "\n")
    _run(spark, _cfg(lakehouse, "canonical", [a]), "a2")
    rows = _rows(spark, lakehouse, S.BRONZE_EVENTS, [S.SOURCE, S.USER_ID, S.BEHAVIOR])
    assert rows == [
        ("canonical", "u1", "purchase"),
        ("canonical", "u1", "view"),
        ("canonical", "u2", "cart"),
        ("taobao", "7", "view"),
    ]


@pytest.mark.slow
def test_retried_run_id_skips_committed_writes(spark, tmp_path, lakehouse):
    path = write_text(tmp_path / "e.csv", HEADER + "\n".join(GOOD) + "\n")
    cfg = _cfg(lakehouse, "canonical", [path])
    _run(spark, cfg, "scheduler-run-7")
    version = DeltaTable(lake.table_path(lakehouse, S.BRONZE_EVENTS)).version()
    again = _run(spark, cfg, "scheduler-run-7")
    assert again.skipped and again.events == 4
    assert DeltaTable(lake.table_path(lakehouse, S.BRONZE_EVENTS)).version() == version


@pytest.mark.slow
def test_reject_rate_over_threshold_writes_rejects_then_fails(spark, tmp_path, lakehouse):
    path = write_text(tmp_path / "e.csv", HEADER + "\n".join([GOOD[0], "x,y", "a,b,c,d,e,f,g"]) + "\n")
    cfg = _cfg(lakehouse, "canonical", [path], "ingest.max_reject_rate=0.5")
    with pytest.raises(BadInputError, match=r"2 of 3 input rows rejected \(66.67%\).*malformed"):
        _run(spark, cfg, "too-bad")
    rejects = DeltaTable(lake.table_path(lakehouse, S.BRONZE_REJECTS)).to_pandas()
    assert sorted(rejects["raw"]) == ["a,b,c,d,e,f,g", "x,y"] and set(rejects["run_id"]) == {"too-bad"}
    assert not lake.is_delta_table(spark, lake.table_path(lakehouse, S.BRONZE_EVENTS))  # no events written

    # The command line reports it with the bad-input exit code.
    code = main(
        [
            "ingest",
            *canonical_args(lakehouse, path, "--set", "ingest.max_reject_rate=0.5"),
        ]
    )
    assert code == EXIT_BAD_INPUT


@pytest.mark.slow  # a whole ingest stage
def test_generator_runs_through_ingest(spark, lakehouse):
    cfg = load_config(
        None,
        [
            f"lakehouse={lakehouse}",
            "input.generator.events=3000",
            "input.generator.bad_row_rate=0.02",
            "input.generator.duplicate_rate=0.01",
        ],
    )
    report = _run(spark, cfg, "gen")
    assert report.input_rows == report.events + sum(report.rejects.values()) + report.duplicates
    assert report.duplicates >= 10 and set(report.rejects) >= {"malformed", "null_id", "unknown_behavior"}
    events = lake.read_table(spark, lakehouse, S.BRONZE_EVENTS)
    assert events.where(F.col(S.SOURCE) != "generator").count() == 0


def test_main_span_is_the_run_of_days_with_the_most_events():
    from datetime import UTC, datetime

    from sampleimp_spark.sources.validate import main_span

    day = (datetime(2017, 11, 25, tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)).days
    counts = [(day + i, 1000) for i in range(9)] + [(day - 3, 2), (day - 70, 1), (day + 300_000, 1)]
    assert main_span(counts, gap_days=7) == (
        datetime(2017, 11, 22, tzinfo=UTC),  # 3 days before: within the gap, kept
        datetime(2017, 12, 4, tzinfo=UTC),
    )
    assert main_span([(5, 1), (100, 1)], gap_days=7) == (  # a tie: the earlier run
        datetime(1970, 1, 6, tzinfo=UTC),
        datetime(1970, 1, 7, tzinfo=UTC),
    )
    assert main_span([], gap_days=7) is None


def test_implausible_timestamps_are_rejects_without_a_window(spark, tmp_path, lakehouse):
    """No window configured (the default for files): a placeholder ``ts=0``, a year-3000 event, a
    stray event years before the rest and Unix times too large for a timestamp are each one reject
    (before the fix: the 16-digit value crashed the ingest with a long overflow, ``ts=0`` moved the
    feature window to 1970 and year 3000 made features fail and ``to_pandas()`` unreadable)."""
    good = [f"1,{i},9,pv,{1511740800 + 3600 * i}" for i in range(40)]  # 2017-11-27, hourly
    strays = {
        "0": "ts_out_of_range",  # 1970-01-01
        "32503680000": "ts_out_of_range",  # 3000-01-01
        "1104537600": "ts_out_of_range",  # 2005-01-01: outside the main span
        "9999999999999999": "bad_timestamp",  # 16 digits: beyond year 9999
        "253402300800": "bad_timestamp",  # 10000-01-01
    }
    lines = good + [f"2,{k},9,pv,{ts}" for k, ts in enumerate(strays)]
    path = write_text(tmp_path / "ub.csv", "\n".join(lines) + "\n")
    report = _run(spark, _cfg(lakehouse, "taobao", [path], "ingest.max_reject_rate=0.2"), "strays")
    assert report.events == 40 and report.input_rows == 45
    assert report.rejects == {"ts_out_of_range": 3, "bad_timestamp": 2}
    rejects = DeltaTable(lake.table_path(lakehouse, S.BRONZE_REJECTS)).to_pandas()
    got = {raw.rsplit(",", 1)[1]: reason for raw, reason in zip(rejects["raw"], rejects["reason"], strict=True)}
    assert got == strays
    assert "main time span 2017-11-27 to 2017-11-29 UTC" in " ".join(rejects["detail"])
    events = DeltaTable(lake.table_path(lakehouse, S.BRONZE_EVENTS)).to_pandas()
    assert len(events) == 40 and events[S.TS].dt.year.unique().tolist() == [2017]


@pytest.mark.slow
def test_a_dated_run_on_a_table_from_before_ingest_day_replaces_its_day_and_tags_its_rows(spark, tmp_path, lakehouse):
    """A ``bronze.events`` written before the ``ingest_day`` column (every row undated): the run for
    2024-03-01 replaces that day's rows, adds the column, and tags what it stored (a late event of
    the day before too); the other days' rows stay, read as undated."""
    old_schema = [f for f in S.EVENT_SCHEMA.fields if f.name != S.INGEST_DAY]
    old = spark.createDataFrame(
        [
            ("u0", "i0", "c0", "view", "2024-03-01 09:00:00", "2024-03-01"),  # replaced by the day's file
            ("u0", "i0", "c0", "view", "2024-03-02 09:00:00", "2024-03-02"),  # another day: kept
        ],
        "user_id string, item_id string, category_id string, behavior string, ts string, event_date string",
    ).select(
        *(
            (F.col(f.name) if f.name in ("user_id", "item_id", "category_id", "behavior") else F.lit(None))
            .cast(f.dataType)
            .alias(f.name)
            for f in old_schema
            if f.name not in (S.TS, S.EVENT_DATE, S.SOURCE)
        ),
        F.col(S.TS).cast("timestamp").alias(S.TS),
        F.lit("canonical").alias(S.SOURCE),
        F.col(S.EVENT_DATE).cast("date").alias(S.EVENT_DATE),
    )
    old.write.format("delta").partitionBy(S.EVENT_DATE).save(lake.table_path(lakehouse, S.BRONZE_EVENTS))
    day_file = [GOOD[0], GOOD[1], "u5,i5,c5,cart,2024-02-29T23:00:00Z,"]  # the last one is late
    path = write_text(tmp_path / "2024-03-01.csv", HEADER + "\n".join(day_file) + "\n")
    cfg = daily.for_day(_cfg(lakehouse, "canonical", [str(tmp_path / "{date}.csv")]), date(2024, 3, 1))
    assert cfg.input.paths == [path]
    report = _run(spark, cfg, "d1")
    assert (report.events, report.late, report.duplicates) == (3, 1, 0)
    got = DeltaTable(lake.table_path(lakehouse, S.BRONZE_EVENTS)).to_pandas(columns=[S.USER_ID, S.TS, S.INGEST_DAY])
    tagged = {
        (r.user_id, str(r.ts)[:10], None if r.ingest_day is None else str(r.ingest_day)) for r in got.itertuples()
    }
    assert (
        tagged
        == {
            ("u1", "2024-03-01", "2024-03-01"),
            ("u5", "2024-02-29", "2024-03-01"),
            ("u0", "2024-03-02", None),
        }
        and len(got) == 4
    )


@pytest.mark.slow
def test_a_day_re_ingested_keeps_the_late_events_other_days_files_brought(spark, tmp_path, lakehouse):
    """Day files with events of other days: 2024-03-02's holds a late event of 03-01 (u7) and a copy
    of one of 03-01's own events, 03-01's an event of 03-02 (u8). Run 03-02, then 03-01 (whose copy
    is then a duplicate), then 03-01 again: every event is stored once, in its own day."""
    files = {
        "2024-03-01": [GOOD[0], GOOD[1], "u8,i8,c8,view,2024-03-02T12:00:00Z,"],
        "2024-03-02": [GOOD[2], GOOD[3], "u7,i7,c7,view,2024-03-01T12:00:00Z,", GOOD[0]],
    }
    for day, lines in files.items():
        write_text(tmp_path / f"{day}.csv", HEADER + "\n".join(lines) + "\n")
    cfg = _cfg(lakehouse, "canonical", [str(tmp_path / "{date}.csv")])
    reports = [
        _run(spark, daily.for_day(cfg, day), run_id)
        for run_id, day in (("d2", date(2024, 3, 2)), ("d1", date(2024, 3, 1)), ("d1-again", date(2024, 3, 1)))
    ]
    counts = [(r.events, r.duplicates, r.late, r.other_days) for r in reports]
    assert counts == [(4, 0, 2, 0), (2, 1, 0, 1), (2, 1, 0, 1)]  # (events, duplicates, late, later days)
    got = DeltaTable(lake.table_path(lakehouse, S.BRONZE_EVENTS)).to_pandas(columns=[S.USER_ID, S.EVENT_DATE])
    assert sorted((r.user_id, str(r.event_date)) for r in got.itertuples()) == [
        ("u1", "2024-03-01"),
        ("u1", "2024-03-01"),
        ("u2", "2024-03-02"),
        ("u3", "2024-03-02"),
        ("u7", "2024-03-01"),
        ("u8", "2024-03-02"),
    ]


@pytest.mark.slow
def test_a_day_without_events_fails_unless_allowed_then_is_done_and_empties_the_day(spark, tmp_path, lakehouse, capsys):
    """A day file with no event of its day is most often a broken export: exit 3, nothing written.
    With ``ingest.allow_empty_day`` (sources with days without traffic) the day is done, and a
    corrected empty file (a header alone, or 0 bytes) replaces the events and the rejects the day had."""
    day_file = tmp_path / "2024-03-03.csv"
    one_of_each = HEADER + "u1,i1,c1,view,2024-03-03T10:00:00Z,\nu1,i1,c1,like,2024-03-03T11:00:00Z,\n"
    write_text(day_file, one_of_each)
    common = ["--date", "2024-03-03", *canonical_args(lakehouse, tmp_path / "{date}.csv")]
    common += ["--set", f"run.runs_dir={tmp_path / 'runs'}", "--set", "ingest.max_reject_rate=0.6"]
    allowed = [*common, "--set", "ingest.allow_empty_day=true"]
    assert main(["ingest", *allowed]) == EXIT_OK
    assert len(DeltaTable(lake.table_path(lakehouse, S.BRONZE_REJECTS)).to_pandas()) == 1
    write_text(day_file, HEADER)  # corrected: the day had no traffic
    assert main(["ingest", "--force", *common]) == EXIT_BAD_INPUT
    assert "no rows" in capsys.readouterr().err
    stored = {t: lake.table_path(lakehouse, t) for t in (S.BRONZE_EVENTS, S.BRONZE_REJECTS)}
    assert [len(DeltaTable(p).to_pandas()) for p in stored.values()] == [1, 1]
    assert main(["ingest", "--force", *allowed]) == EXIT_OK
    assert [len(DeltaTable(p).to_pandas()) for p in stored.values()] == [0, 0]  # the `like` row went too
    capsys.readouterr()
    assert main(["ingest", *allowed]) == EXIT_OK
    assert "nothing to do: 2024-03-03 (ingest)" in capsys.readouterr().out
    # The same with a 0-byte file (what an export of a day without traffic often writes).
    write_text(day_file, one_of_each)
    assert main(["ingest", "--force", *allowed]) == EXIT_OK
    assert [len(DeltaTable(p).to_pandas()) for p in stored.values()] == [1, 1]
    write_text(day_file, "")
    assert main(["ingest", "--force", *allowed]) == EXIT_OK
    assert [len(DeltaTable(p).to_pandas()) for p in stored.values()] == [0, 0]
