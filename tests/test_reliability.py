"""Hostile run ids, configs and lakehouse paths; retries after failed or partial runs.

Each test names the defect it guards against; each failed on the code before its fix.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from conftest import canonical_args, write_text
from deltalake import DeltaTable
from pyspark.sql import functions as F

from sampleimp_spark import lake
from sampleimp_spark import schema as S
from sampleimp_spark.cli import main
from sampleimp_spark.config import ConfigError, check_run_id, load_config
from sampleimp_spark.errors import EXIT_BAD_INPUT, EXIT_CONFIG, EXIT_OK, EXIT_RUNTIME

HEADER = "user_id,item_id,category_id,behavior,ts\n"
HOSTILE = "x', 'delta.appendOnly' = 'true"


def _good_lines(n: int) -> str:
    return "".join(f"u{i % 50},i{i % 70},c{i % 5},view,2024-03-0{1 + i % 5}T10:{i % 60:02d}:00Z\n" for i in range(n))


@pytest.mark.parametrize("bad", [HOSTILE, "../../x", "/abs/dir", "it's", "a" * 300, "", ".hidden", "a b"])
def test_hostile_run_ids_exit_2_before_any_write(tmp_path, capsys, bad):
    """Defect: ``--run-id`` bypassed the run-id pattern; the SQL injection made bronze append-only,
    ``../../x`` wrote the report outside ``run.runs_dir``, a long id failed after its commit."""
    path = write_text(tmp_path / "e.csv", HEADER + _good_lines(20))
    lakehouse = tmp_path / "lakehouse"
    assert main(["ingest", *canonical_args(lakehouse, path), "--run-id", bad]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert "invalid run id" in err and "at most 128 characters" in err
    assert not lakehouse.exists()
    with pytest.raises(ConfigError, match=r"run\.run_id"):
        load_config(None, [f"run.run_id={json.dumps(bad)}"])
    with pytest.raises(ConfigError):
        check_run_id(bad)


def test_property_values_and_paths_round_trip_verbatim(spark, tmp_path):
    """Defect: ``lake.set_properties`` pasted values into SQL: a quote in a value injected
    properties, a backtick in the lakehouse path was a parse error."""
    lakehouse = tmp_path / "lake`house 'q' \\x"
    df = spark.createDataFrame([("s", "f", "raw", "malformed", None, "r")], S.REJECT_SCHEMA)
    value = "a'b\\c`d\" e', 'delta.appendOnly' = 'true"
    ctx = lake.RunContext(run_id="r-1", config_hash="h", stage="t", extra_properties={"sampleimp.note": value})
    lake.write_table(df, lakehouse, S.BRONZE_REJECTS, ctx=ctx, replace_where=lake.rows_where(source="s"))
    props = lake.table_properties(spark, lakehouse, S.BRONZE_REJECTS)
    assert props["sampleimp.note"] == value
    assert "delta.appendOnly" not in props
    # The table is still writable: nothing was made append-only.
    lake.write_table(df, lakehouse, S.BRONZE_REJECTS, ctx=ctx, replace_where=lake.rows_where(source="s"))
    assert lake.read_table(spark, lakehouse, S.BRONZE_REJECTS).count() == 1


def test_properties_spark_would_redact_are_read_verbatim(spark, tmp_path):
    """Spark's SHOW TBLPROPERTIES redacts values whose key or value matches its redaction patterns
    ("url", "token", ...): read that way, such a value never equals what the run set, and every
    write added a properties commit."""
    lakehouse = tmp_path / "lakehouse"
    df = spark.createDataFrame([("s", "f", "raw", "malformed", None, "r")], S.REJECT_SCHEMA)
    note = '{"features": ["n_tokens"], "source_url": "s3://bucket/x"}'
    ctx = lake.RunContext(run_id="tokenizer-v2", config_hash="h", stage="t", extra_properties={"sampleimp.note": note})
    where = lake.rows_where(source="s")
    lake.write_table(df, lakehouse, S.BRONZE_REJECTS, ctx=ctx, replace_where=where)
    props = lake.table_properties(spark, lakehouse, S.BRONZE_REJECTS)
    assert props["sampleimp.note"] == note and props["sampleimp.run_id"] == "tokenizer-v2"
    version = DeltaTable(lake.table_path(lakehouse, S.BRONZE_REJECTS)).version()
    lake.write_table(df, lakehouse, S.BRONZE_REJECTS, ctx=ctx.with_inputs("again"), replace_where=where)
    # The data commit only: the properties already matched.
    assert DeltaTable(lake.table_path(lakehouse, S.BRONZE_REJECTS)).version() == version + 1


def test_versions_and_commit_metrics_are_read_from_the_log(spark, tmp_path):
    """The table's version and a run's commit metrics, read from the Delta log's commit files,
    agree with delta-rs; a later run's commits and properties commits are passed over."""
    lakehouse = tmp_path / "lake house"
    path = lake.table_path(lakehouse, S.BRONZE_REJECTS)
    assert lake.table_version_or_none(spark, lakehouse, S.BRONZE_REJECTS) is None
    row = ("s", "f", "raw", "malformed", None, "r")
    where = lake.rows_where(source="s")
    first = lake.RunContext(run_id="r-1", config_hash="h", stage="t")
    written = lake.write_table(
        spark.createDataFrame([row] * 3, S.REJECT_SCHEMA), lakehouse, S.BRONZE_REJECTS, ctx=first, replace_where=where
    )
    assert written is not None and written[lake.OUTPUT_ROWS] == 3
    later = lake.RunContext(run_id="r-2", config_hash="h", stage="t")
    written = lake.write_table(
        spark.createDataFrame([row] * 2, S.REJECT_SCHEMA), lakehouse, S.BRONZE_REJECTS, ctx=later, replace_where=where
    )
    assert written is not None and written[lake.OUTPUT_ROWS] == 2  # not the properties commit after it
    assert lake.table_version(spark, lakehouse, S.BRONZE_REJECTS) == DeltaTable(path).version()
    assert lake.last_commit_metrics(spark, lakehouse, S.BRONZE_REJECTS, operation_of_run="r-1")[lake.OUTPUT_ROWS] == 3
    assert lake.last_commit_metrics(spark, lakehouse, S.BRONZE_REJECTS)[lake.OUTPUT_ROWS] == 2  # the newest data commit


def test_sql_helpers_escape_quotes_backslashes_and_backticks():
    assert lake.sql_string("it's a \\ test") == "'it\\'s a \\\\ test'"
    assert lake.sql_identifier("a`b") == "`a``b`"
    assert lake.rows_where(source="o'k") == "`source` = 'o\\'k'"


def test_properties_are_healed_by_a_retry(spark, tmp_path):
    """Defect: a crash between a table's data commit and its properties commit left the table
    without properties, and a same-id retry (its write skipped) never set them."""
    lakehouse = tmp_path / "lakehouse"
    df = spark.createDataFrame([("s", "f", "raw", "malformed", None, "r")], S.REJECT_SCHEMA)
    ctx = lake.RunContext(run_id="r-1", config_hash="h", stage="t")
    where = lake.rows_where(source="s")
    lake.write_table(df, lakehouse, S.BRONZE_REJECTS, ctx=ctx, replace_where=where)
    path = lake.table_path(lakehouse, S.BRONZE_REJECTS)
    spark.sql(f"ALTER TABLE delta.{lake.sql_identifier(path)} UNSET TBLPROPERTIES ('sampleimp.run_id')")
    assert "sampleimp.run_id" not in lake.table_properties(spark, lakehouse, S.BRONZE_REJECTS)
    assert lake.write_table(df, lakehouse, S.BRONZE_REJECTS, ctx=ctx, replace_where=where) is None  # skipped
    assert lake.table_properties(spark, lakehouse, S.BRONZE_REJECTS)["sampleimp.run_id"] == "r-1"


@pytest.mark.slow  # a whole ingest stage
def test_ingest_alone_on_a_new_lakehouse_exits_0(tmp_path, capsys):
    """Defect: the run report indexed the missing ``silver.class_frequencies``, so ``sampleimp
    ingest`` on a new lakehouse exited 1 after its data committed, and every retry too."""
    path = write_text(tmp_path / "e.csv", HEADER + _good_lines(30))
    lakehouse = tmp_path / "lakehouse"
    runs = tmp_path / "runs"
    args = ["ingest", *canonical_args(lakehouse, path, "--set", f"run.runs_dir={runs}"), "--run-id", "i-1"]
    assert main(args) == EXIT_OK
    assert (runs / "i-1" / "report.md").is_file()
    assert len(DeltaTable(lake.table_path(lakehouse, S.BRONZE_EVENTS)).to_pandas()) == 30


@pytest.mark.slow
def test_same_id_retry_after_bad_input_keeps_no_stale_rejects(tmp_path, capsys):
    """Defect: after exit 3, a retry with the same run id and a corrected file skipped the
    rejects write (same transaction id), leaving the old rejects and printing "0 rejects"."""
    path = tmp_path / "e.csv"
    write_text(path, HEADER + "".join(f"u{i},i{i},c1,like,2024-03-01T10:00:00Z\n" for i in range(40)))
    lakehouse = tmp_path / "lakehouse"
    args = ["ingest", *canonical_args(lakehouse, path, "--set", f"run.runs_dir={tmp_path / 'runs'}"), "--run-id", "r-1"]
    assert main(args) == EXIT_BAD_INPUT
    rejects = DeltaTable(lake.table_path(lakehouse, S.BRONZE_REJECTS)).to_pandas()
    assert len(rejects) == 40 and set(rejects[S.REASON]) == {S.REJECT_UNKNOWN_BEHAVIOR}
    write_text(path, HEADER + _good_lines(40))  # the corrected file, same name
    assert main(args) == EXIT_OK
    assert len(DeltaTable(lake.table_path(lakehouse, S.BRONZE_REJECTS)).to_pandas()) == 0
    assert len(DeltaTable(lake.table_path(lakehouse, S.BRONZE_EVENTS)).to_pandas()) == 40


def test_conf_directory_and_lakehouse_file_are_config_errors(tmp_path, capsys):
    """Defect: ``--conf <directory>`` printed a raw traceback (exit 1)."""
    assert main(["ingest", "--conf", str(tmp_path)]) == EXIT_CONFIG
    assert "is a directory" in capsys.readouterr().err
    path = write_text(tmp_path / "e.csv", HEADER + _good_lines(5))
    afile = write_text(tmp_path / "not-a-folder", "x")
    assert main(["ingest", *canonical_args(afile, path)]) == EXIT_CONFIG
    assert "is a file, not a folder" in capsys.readouterr().err


def test_a_table_of_an_older_version_gains_the_new_columns(spark, tmp_path):
    """gold.training_samples written before ``w_time`` existed: the next write adds the column
    (older rows null) instead of failing on a schema mismatch."""
    from datetime import date

    lakehouse = tmp_path / "lh"
    contract = S.CONTRACTS[S.GOLD_TRAINING_SAMPLES]
    value = {"string": "x", "double": 1.0, "int": 1, "boolean": True, "bigint": 1, "date": date(2017, 12, 1)}
    row = tuple(value[f.dataType.simpleString()] for f in contract.columns.fields)
    full = spark.createDataFrame([row], contract.columns).withColumn("user_n_events", F.lit(2.0))
    old = full.drop(S.W_TIME).withColumn(S.WINDOW_ID, F.lit("old"))
    path = lake.table_path(lakehouse, S.GOLD_TRAINING_SAMPLES)
    old.write.format("delta").partitionBy(*contract.partition_by).save(path)
    ctx = lake.RunContext(run_id="new", config_hash="h", stage="weights")
    lake.write_table(full, lakehouse, S.GOLD_TRAINING_SAMPLES, ctx=ctx, replace_where=f"{S.WINDOW_ID} = 'x'")
    got = DeltaTable(path).to_pandas()
    assert dict(zip(got[S.WINDOW_ID], got[S.W_TIME].isna(), strict=True)) == {"old": True, "x": False}


def _race(spark, lakehouse, tmp_path):
    """Ingest-like writes of two sources to ``bronze.rejects`` (unpartitioned, replaced per source on
    a data column) whose commits race: the first one's job waits, inside a task, until the second
    has committed. Returns the first one's error, or None."""
    import threading
    import time

    from pyspark.sql.functions import pandas_udf

    started, go = tmp_path / "started", tmp_path / "go"
    started.unlink(missing_ok=True)
    go.unlink(missing_ok=True)

    @pandas_udf("string")
    def held(raw: pd.Series) -> pd.Series:
        started.touch()
        deadline = time.monotonic() + 120
        while not go.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        return raw

    def rows(source: str) -> object:
        data = [(source, f"{source}.csv", f"line {i}", "malformed", None, f"run-{source}") for i in range(3)]
        return spark.createDataFrame(data, S.REJECT_SCHEMA).coalesce(1)

    def ctx(source: str) -> lake.RunContext:
        return lake.RunContext(run_id=f"run-{source}", config_hash="h", stage="ingest")

    lake.write_table(rows("a"), lakehouse, S.BRONZE_REJECTS, ctx=ctx("a0"), replace_where=lake.rows_where(source="a"))
    errors: list[BaseException] = []

    def slow() -> None:
        try:
            frame = rows("a").withColumn("raw", held("raw"))
            where = lake.rows_where(source="a")
            lake.write_table(frame, lakehouse, S.BRONZE_REJECTS, ctx=ctx("a"), replace_where=where)
        except BaseException as exc:  # reported to the test thread
            errors.append(exc)

    thread = threading.Thread(target=slow)
    thread.start()
    deadline = time.monotonic() + 120
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    lake.write_table(rows("b"), lakehouse, S.BRONZE_REJECTS, ctx=ctx("b"), replace_where=lake.rows_where(source="b"))
    go.touch()
    thread.join(timeout=300)
    return errors[0] if errors else None


@pytest.mark.slow
def test_a_write_that_loses_a_commit_race_is_retried_and_both_runs_keep_their_rows(spark, tmp_path, monkeypatch):
    """Defect 9: concurrent ingests of different sources both write ``bronze.rejects``; the one whose
    commit lost Delta's optimistic race died with DELTA_CONCURRENT_APPEND. Now it is retried on the new
    snapshot. With a single attempt the same race still fails: proof that the race happens here."""
    monkeypatch.setattr(lake, "COMMIT_ATTEMPTS", 1)
    lost = _race(spark, str(tmp_path / "no-retry"), tmp_path)
    assert lost is not None and "another writer kept committing" in str(lost)
    assert "ConcurrentAppend" in str(lost) or "DELTA_CONCURRENT" in str(lost)

    monkeypatch.setattr(lake, "COMMIT_ATTEMPTS", 5)
    monkeypatch.setattr(lake, "COMMIT_BACKOFF_S", 0.05)
    lakehouse = str(tmp_path / "retry")
    assert _race(spark, lakehouse, tmp_path) is None
    rejects = DeltaTable(lake.table_path(lakehouse, S.BRONZE_REJECTS)).to_pandas()
    assert rejects.groupby(["source", "run_id"]).size().to_dict() == {("a", "run-a"): 3, ("b", "run-b"): 3}


@pytest.fixture
def small_mount(tmp_path):
    """Mount a 1 MiB tmpfs (options given by the test); skipped where mounting is not allowed."""
    mounted: list[str] = []

    def mount(options: str) -> Path:
        point = tmp_path / f"mnt{len(mounted)}"
        point.mkdir()
        command = ["mount", "-t", "tmpfs", "-o", f"size=1m,{options}", "tmpfs", str(point)]
        done = subprocess.run(command, capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
        mounted.append(str(point))
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", point], check=False)


def test_a_read_only_lakehouse_is_a_config_error_naming_it(tmp_path, capsys, small_mount):
    """A read-only lakehouse (a read-only file system: even root cannot write it) exits 2 before
    any Spark work, and the message names the folder."""
    path = write_text(tmp_path / "e.csv", HEADER + _good_lines(5))
    lakehouse = small_mount("ro")
    assert main(["ingest", *canonical_args(lakehouse, path)]) == EXIT_CONFIG
    err = capsys.readouterr().err.splitlines()[0]
    assert str(lakehouse) in err and "not writable" in err


@pytest.mark.slow
def test_a_full_lakehouse_exits_1_saying_so_and_leaves_no_partial_table(tmp_path, capsys, small_mount):
    """A lakehouse on a full file system: exit 1 (a scheduler may retry once space is freed), the
    first line says the disk is full, and no table shows a partial write; after space is freed,
    the same command succeeds."""
    path = write_text(tmp_path / "e.csv", HEADER + _good_lines(400))
    mount = small_mount("rw")
    lakehouse = mount / "lakehouse"
    filler = mount / "filler"
    with open(filler, "wb", buffering=0) as f, contextlib.suppress(OSError):  # fill it to the last block
        while True:
            f.write(b"\0" * 4096)
    args = ["ingest", *canonical_args(lakehouse, path, "--set", f"run.runs_dir={tmp_path / 'runs'}")]
    assert main(args) == EXIT_RUNTIME
    assert "no space left on device" in capsys.readouterr().err.splitlines()[0]
    for name in (S.BRONZE_EVENTS, S.BRONZE_REJECTS):
        table = Path(lake.table_path(lakehouse, name))
        assert not (table / "_delta_log").exists() or len(DeltaTable(str(table)).to_pandas()) == 0
    filler.unlink()
    assert main(args) == EXIT_OK
    assert len(DeltaTable(lake.table_path(lakehouse, S.BRONZE_EVENTS)).to_pandas()) == 400
