"""``sampleimp maintain``: compaction and vacuum keep every row, and a retention shorter than a
reader may pin a version is refused."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from deltalake import DeltaTable

from sampleimp_spark import lake
from sampleimp_spark import schema as S
from sampleimp_spark.cli import main
from sampleimp_spark.config import ConfigError, load_config
from sampleimp_spark.errors import EXIT_CONFIG, EXIT_OK
from sampleimp_spark.stages import maintain

CTX = lake.RunContext(run_id="m0", config_hash="h", stage="test")


def _rows(spark, run_id: str, value: float):
    schema = S.CONTRACTS[S.GOLD_WEIGHT_SELECTION].columns
    rows = [
        (run_id, "w", "src", 1, "als", variant, "ndcg_at_k", value, None, None, None, None, None, 10, 100, False, "r")
        for variant in ("unweighted", "time", "combined")
    ]
    return spark.createDataFrame(rows, schema)


def _parquet_on_disk(path: str) -> int:
    return sum(1 for p in Path(path).rglob("*.parquet") if "_delta_log" not in p.parts)


@pytest.mark.slow
def test_maintain_compacts_zorders_and_vacuums_keeping_every_row(spark, lakehouse, capsys):
    path = lake.table_path(lakehouse, S.GOLD_WEIGHT_SELECTION)
    for i in range(3):  # three commits, three files at least
        ctx = replace(CTX, run_id=f"m{i}")
        where = lake.rows_where(run_id=f"m{i}")
        rows = _rows(spark, f"m{i}", 0.1 * i)
        lake.write_table(rows, lakehouse, S.GOLD_WEIGHT_SELECTION, ctx=ctx, replace_where=where)
    # A rerun replaces m0's rows: its old file stays on storage, referenced by older versions only.
    again = replace(CTX, inputs="second")
    where = lake.rows_where(run_id="m0")
    lake.write_table(_rows(spark, "m0", 0.5), lakehouse, S.GOLD_WEIGHT_SELECTION, ctx=again, replace_where=where)
    keys = [S.RUN_ID, "variant"]
    before = DeltaTable(path).to_pandas().sort_values(keys, ignore_index=True)
    on_disk = _parquet_on_disk(path)

    cfg = load_config(
        None,
        [
            f"lakehouse={lakehouse}",
            "maintenance.retention_hours=0",
            "maintenance.reader_pin_hours=0",
            "maintenance.zorder={gold.weight_selection: [variant]}",
        ],
    )
    report = maintain.run(spark, cfg)
    (done,) = report.tables
    assert done.name == S.GOLD_WEIGHT_SELECTION and done.zorder == ("variant",)
    assert done.live_before >= 3 and done.live_after == 1
    assert done.stored_before == on_disk > done.live_before and done.stored_after == 1 == _parquet_on_disk(path)
    after = DeltaTable(path).to_pandas().sort_values(keys, ignore_index=True)
    assert after.equals(before)
    history = DeltaTable(path).history()
    optimize = [h for h in history if h["operation"] == "OPTIMIZE"]
    assert optimize and json.loads(optimize[0]["operationParameters"]["zOrderBy"]) == ["variant"]
    assert any(h["operation"] == "VACUUM END" for h in history)

    # The command: the same upkeep again is harmless.
    assert main(["maintain", *(a for kv in cfg_args(lakehouse) for a in ("--set", kv))]) == EXIT_OK
    out = capsys.readouterr().out
    assert "maintenance finished" in out and "gold.weight_selection" in out
    assert DeltaTable(path).to_pandas().sort_values(keys, ignore_index=True).equals(before)


def cfg_args(lakehouse: str) -> list[str]:
    return [f"lakehouse={lakehouse}", "maintenance.retention_hours=0", "maintenance.reader_pin_hours=0"]


def test_a_retention_below_the_reader_pin_is_refused(capsys):
    with pytest.raises(ConfigError, match=r"maintenance.retention_hours \(24\) is below maintenance.reader_pin_hours"):
        load_config(None, ["maintenance.retention_hours=24"])
    assert main(["maintain", "--set", "maintenance.retention_hours=24"]) == EXIT_CONFIG
    assert "reader_pin_hours" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="unknown table"):
        load_config(None, ["maintenance.zorder={gold.nope: [shard]}"])
    with pytest.raises(ConfigError, match="not a non-partition column"):
        load_config(None, ["maintenance.zorder={bronze.events: [event_date]}"])
    # Maintenance settings change no result: the config hash ignores them.
    assert load_config(None, ["maintenance.retention_hours=500"]).hash() == load_config(None, []).hash()
