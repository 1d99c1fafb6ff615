"""Runs that may not share a lakehouse at once: the second fails fast naming the first, writes
nothing, and succeeds once the first has ended (or died)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import date

import pytest
from conftest import canonical_args, write_text
from deltalake import DeltaTable

from sampleimp_spark import lake
from sampleimp_spark import schema as S
from sampleimp_spark.cli import main
from sampleimp_spark.errors import EXIT_OK, EXIT_RUNTIME, RunConflictError
from sampleimp_spark.leases import UPKEEP, Leases, month_keys, window_key


def test_a_held_lease_refuses_a_second_holder_and_names_the_first(tmp_path):
    first, second = Leases(str(tmp_path), "run-a"), Leases(str(tmp_path), "run-b")
    first.acquire(window_key("taobao", "w1"))
    with pytest.raises(RunConflictError, match=r"window/taobao/w1 is in use by run run-a \(pid \d+"):
        second.acquire(window_key("taobao", "w2"), window_key("taobao", "w1"))
    # All or none: the free key it asked for in the same call was given back.
    assert second.held == []
    first.acquire(window_key("taobao", "w2"))
    second.acquire(window_key("other", "w1"))  # another source: no conflict
    first.release()
    second.acquire(window_key("taobao", "w1"))
    assert second.held == [window_key("other", "w1"), window_key("taobao", "w1")]
    second.release()


def test_runs_share_the_upkeep_lease_and_maintenance_excludes_them(tmp_path):
    runs = [Leases(str(tmp_path), f"run-{i}") for i in range(2)]
    for held in runs:
        held.acquire(UPKEEP, shared=True)
    upkeep = Leases(str(tmp_path), "maintain")
    with pytest.raises(RunConflictError, match="the lakehouse is in use by another run"):
        upkeep.acquire(UPKEEP)
    for held in runs:
        held.release()
    upkeep.acquire(UPKEEP)
    with pytest.raises(RunConflictError, match="the lakehouse is in use by run maintain"):
        runs[0].acquire(UPKEEP, shared=True)
    upkeep.release()


def test_an_ingest_claims_each_calendar_month_of_its_events():
    keys = month_keys("s", date(2017, 11, 25), date(2018, 1, 3))
    assert keys == ["month/s/2017-11", "month/s/2017-12", "month/s/2018-01"]
    assert month_keys("s", date(2024, 3, 1), date(2024, 3, 31)) == ["month/s/2024-03"]


def test_a_killed_holder_blocks_no_rerun(tmp_path):
    """SIGKILL leaves no stale lease: the kernel drops a dead process's locks."""
    code = (
        "import sys, time\n"
        "from sampleimp_spark.leases import Leases\n"
        "Leases(sys.argv[1], 'crashing-run').acquire('window/s/w')\n"
        "print('held', flush=True)\n"
        "time.sleep(600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        with pytest.raises(RunConflictError, match=f"crashing-run \\(pid {proc.pid}"):
            Leases(str(tmp_path), "rerun").acquire("window/s/w")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 10
    while True:
        try:
            Leases(str(tmp_path), "rerun").acquire("window/s/w")
            break
        except RunConflictError:
            assert time.monotonic() < deadline
            time.sleep(0.1)


def _canonical(tmp_path, n: int = 30) -> str:
    lines = "".join(f"u{i % 7},i{i % 9},c{i % 3},view,2024-03-0{1 + i % 5}T10:{i % 60:02d}:00Z\n" for i in range(n))
    return write_text(tmp_path / "e.csv", "user_id,item_id,category_id,behavior,ts\n" + lines)


@pytest.mark.slow  # a whole ingest, twice
def test_a_run_on_a_month_another_run_ingests_exits_1_naming_it_and_writes_nothing(spark, tmp_path, capsys):
    """Defect: two runs of one source and the same dates or window ran at once, and the tables could
    end with stages of either; the later run now fails fast, and its retry succeeds."""
    lakehouse = tmp_path / "lakehouse"
    runs = f"run.runs_dir={tmp_path / 'runs'}"
    args = ["ingest", *canonical_args(lakehouse, _canonical(tmp_path), "--set", runs), "--run-id", "late-run"]
    other = Leases(str(lakehouse), "nightly-2024-03-05")
    other.acquire(*month_keys("canonical", date(2024, 3, 5), date(2024, 3, 5)))
    try:
        assert main(args) == EXIT_RUNTIME
    finally:
        other.release()
    err = capsys.readouterr().err
    assert err.startswith("sampleimp: month/canonical/2024-03 is in use by run nightly-2024-03-05"), err
    assert "Traceback" not in err
    for name in (S.BRONZE_EVENTS, S.BRONZE_REJECTS):
        assert not lake.is_delta_table(spark, lake.table_path(str(lakehouse), name)), name
    assert main(args) == EXIT_OK
    assert len(DeltaTable(lake.table_path(str(lakehouse), S.BRONZE_EVENTS)).to_pandas()) == 30


def test_maintenance_while_a_run_is_active_exits_1(tmp_path, capsys):
    lakehouse = tmp_path / "lakehouse"
    run = Leases(str(lakehouse), "nightly")
    run.acquire(UPKEEP, shared=True)
    try:
        assert main(["maintain", "--set", f"lakehouse={lakehouse}"]) == EXIT_RUNTIME
    finally:
        run.release()
    assert capsys.readouterr().err.startswith("sampleimp: the lakehouse is in use by another run")
    assert main(["maintain", "--set", f"lakehouse={lakehouse}"]) == EXIT_OK
