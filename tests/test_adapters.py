"""Input adapters on mixed and hostile files (issue #30): no silent corruption.

Invalid UTF-8 is a reject in every text adapter, stored readable.
"""

from __future__ import annotations

import json

import pytest
from conftest import write_text
from deltalake import DeltaTable

from sampleimp_spark import lake
from sampleimp_spark import schema as S
from sampleimp_spark.config import load_config
from sampleimp_spark.progress import RunProgress
from sampleimp_spark.sources import amazon, canonical, rees46, retailrocket, taobao, tianchi
from sampleimp_spark.sources.validate import validate
from sampleimp_spark.stages import ingest

# --- invalid UTF-8 ------------------------------------------------------------------------------

#: One valid line per text adapter (with its header, if it has one); ``U1`` is the user id.
_LINES = {
    "taobao": (taobao.read, "", "U1,10,100,pv,1709287200"),
    "rees46": (rees46.read, rees46.HEADER, "2024-03-01 10:00:00 UTC,view,10,100,,,1.0,U1,s1"),
    "tianchi": (tianchi.read, tianchi.HEADER, "U1,10,1,,100,2024-03-01 18"),
    "retailrocket": (retailrocket.read, retailrocket.HEADER, "1709287200000,U1,view,10,"),
    "amazon": (amazon.read, amazon.HEADER, "5,t,x,[],A1,A1,U1,2024-03-01 10:00:00.000,0,True"),
    "canonical": (canonical.read, "user_id,item_id,category_id,behavior,ts", "U1,10,100,view,2024-03-01T10:00:00Z"),
}


@pytest.mark.parametrize("source", sorted(_LINES))
def test_invalid_utf8_is_a_reject_in_every_text_adapter(spark, tmp_path, source):
    read, header, line = _LINES[source]
    good, bad = line.encode(), line.replace("U1", "U\udcff1").encode("utf-8", "surrogateescape")
    path = tmp_path / ("e.csv" if source == "canonical" else "e.txt")
    path.write_bytes((header.encode() + b"\n" if header else b"") + good + b"\n" + bad + b"\n")
    meta = write_text(tmp_path / "meta.jsonl", '{"parent_asin": "A1", "categories": []}\n')
    got = validate(read(spark, [str(path)], [meta] if source == "amazon" else []), source=source)
    rows = sorted((r[S.REASON] or "", r[S.RAW]) for r in got.collect())
    assert rows == [("", line), ("invalid_utf8", line.replace("U1", "U\ufffd1"))]


def test_ids_differing_in_an_invalid_byte_are_rejects_not_merged(spark, tmp_path, lakehouse):
    header = b"user_id,item_id,category_id,behavior,ts\n"
    good = b"u1,i1,c1,view,2024-03-01T10:00:00Z\n"
    bad = [b"u\xff,i1,c1,view,2024-03-01T10:00:00Z\n", b"u\xfe,i1,c1,view,2024-03-01T10:00:00Z\n"]
    path = tmp_path / "e.csv"
    path.write_bytes(header + good + b"".join(bad))
    paths = json.dumps([str(path)])
    overrides = [
        f"lakehouse={lakehouse}",
        "input.source=canonical",
        f"input.paths={paths}",
        "ingest.max_reject_rate=0.9",
    ]
    cfg = load_config(None, overrides)
    ctx = lake.RunContext(run_id="utf8", config_hash=cfg.hash(), stage="ingest")
    report = ingest.run(spark, cfg, ctx=ctx, progress=RunProgress("utf8"))
    assert (report.events, report.duplicates, report.rejects) == (1, 0, {"invalid_utf8": 2})
    rejects = DeltaTable(lake.table_path(lakehouse, S.BRONZE_REJECTS)).to_pandas()
    assert sorted(rejects["raw"]) == ["u\ufffd,i1,c1,view,2024-03-01T10:00:00Z"] * 2
    assert set(rejects["reason"]) == {"invalid_utf8"}
    events = DeltaTable(lake.table_path(lakehouse, S.BRONZE_EVENTS)).to_pandas()
    assert list(events[S.USER_ID]) == ["u1"]
