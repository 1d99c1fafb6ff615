"""The crash campaign (``scripts/crash_campaign.py``) at suite size, and its checks shown failing
on the mistakes they exist to catch (a lost, duplicated or changed row; a half-written state)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from deltalake import write_deltalake

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import crash_campaign as cc

ROWS = pd.DataFrame({"user_id": ["u1", "u2", "u3"], "weight": [0.5, 1.25, 2.0], "run_id": ["a", "a", "a"]})


def test_the_checksum_ignores_order_and_run_stamps_but_not_rows():
    same = ROWS.iloc[::-1].assign(run_id="b")
    assert cc.content(same) == cc.content(ROWS)
    assert cc.content(pd.concat([ROWS, ROWS.iloc[:1]])) != cc.content(ROWS)  # a duplicated row
    assert cc.content(ROWS.iloc[1:]) != cc.content(ROWS)  # a lost row
    assert cc.content(ROWS.assign(weight=[0.5, 1.25, 2.01])) != cc.content(ROWS)  # a changed value
    # A table keyed by run id: two complete runs hold one content; a run missing a row, two.
    two = pd.concat([ROWS, ROWS.assign(run_id="b")])
    assert cc.states("gold/metrics", two) == {cc.content(ROWS)}
    assert len(cc.states("gold/metrics", two.iloc[:-1])) == 2


def test_the_reader_flags_a_state_the_clean_run_never_had(tmp_path):
    """The clean table goes from 3 rows to 5 in one commit; a table that passes through 4 rows
    (half a write) is flagged, one that repeats the clean commits is not."""
    more = pd.concat([ROWS, ROWS.assign(user_id=["u4", "u5", "u6"]).iloc[:2]], ignore_index=True)
    clean = tmp_path / "clean"
    write_deltalake(str(clean / "gold" / "t"), ROWS)
    write_deltalake(str(clean / "gold" / "t"), more, mode="overwrite")
    allowed = cc.history(clean)
    assert allowed == {"gold/t": {cc.content(ROWS), cc.content(more)}}

    for name, steps, flagged in (("healthy", [ROWS, more], 0), ("partial", [ROWS, more.iloc[:4]], 1)):
        lakehouse = tmp_path / name
        reader = cc.Reader(lakehouse, allowed)
        reader.start()
        for frame in steps:
            write_deltalake(str(lakehouse / "gold" / "t"), frame, mode="overwrite")
            seen = reader.reads
            while reader.reads < seen + 2:  # the reader has polled this state
                time.sleep(0.05)
        reader.stop()
        assert reader.reads > 0 and len({t for t, _ in reader.bad}) == flagged, name


@pytest.mark.slow
def test_a_driver_killed_mid_ingest_leaves_tables_a_rerun_heals(tmp_path):
    """One point of the campaign: ingest SIGKILLed (Python and JVM) mid-run, rerun with the same and
    with a new run id; both equal the clean run, and the polling reader saw no partial state."""
    (outcome,) = cc.campaign(tmp_path, n_points=1, stages=["ingest"])
    assert outcome.killed.startswith("killed"), outcome.killed
    assert outcome.exits == [0, 0] and outcome.diffs == [] and outcome.partial == 0
    assert outcome.reads > 0
