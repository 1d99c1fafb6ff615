"""Fuzzed input for every text adapter: every physical line comes out as one record, as an event
or a reject with a reason, and nothing crashes.

Hypothesis builds files of valid lines and hostile ones (random and invalid-UTF-8 bytes, NUL, BOM,
CRLF, fields of up to 1 MB, quoted commas, extra and missing fields, huge and negative ids,
huge, negative, non-numeric and far-future timestamps, empty lines, a header where none is
expected). The oracle splits the bytes as Hadoop's line reader does (``\\r\\n``, ``\\r``, ``\\n``)
and drops the lines equal to the adapter's header (not records). The suite runs
``SAMPLEIMP_FUZZ_EXAMPLES`` (default 4) files of up to 250 lines per adapter; raise it for a
larger campaign (``SAMPLEIMP_FUZZ_EXAMPLES=400 pytest tests/test_fuzz.py -s`` prints the lines).
"""

from __future__ import annotations

import os
import re
import tempfile
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from conftest import write_text
from deltalake import DeltaTable
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sampleimp_spark import lake
from sampleimp_spark import schema as S
from sampleimp_spark.config import load_config
from sampleimp_spark.errors import BadInputError
from sampleimp_spark.progress import RunProgress
from sampleimp_spark.sources import amazon, canonical, rees46, retailrocket, taobao, tianchi
from sampleimp_spark.sources.validate import validate
from sampleimp_spark.stages import ingest

EXAMPLES = int(os.environ.get("SAMPLEIMP_FUZZ_EXAMPLES", "4"))
LINES = int(os.environ.get("SAMPLEIMP_FUZZ_LINES", "250"))
#: Hypothesis settings of both tests: reproducible runs, no deadline, large examples allowed.
_SETTINGS: dict = {
    "deadline": None,
    "derandomize": True,
    "database": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
}
MAX_RAW = 2000  # ingest.max_raw_chars of the whole-ingest test

#: adapter -> (reader, header or "", a valid line, index of its timestamp field)
ADAPTERS = {
    "taobao": (taobao.read, "", "1,10,100,pv,1709287200", 4),
    "rees46": (rees46.read, rees46.HEADER, "2024-03-01 10:00:00 UTC,view,10,100,,,1.0,1,s1", 0),
    "tianchi": (tianchi.read, tianchi.HEADER, "1,10,1,,100,2024-03-01 18", 5),
    "retailrocket": (retailrocket.read, retailrocket.HEADER, "1709287200000,1,view,10,", 0),
    "amazon": (amazon.read, amazon.HEADER, "5,t,x,[],A1,A1,1,2024-03-01 10:00:00.000,0,True", 7),
    "canonical": (canonical.read, "user_id,item_id,category_id,behavior,ts", "1,10,100,view,2024-03-01T10:00:00Z", 4),
}

_TIMESTAMPS = [b"", b"-1", b"0", b"9" * 19, b"99999999999999999999999", b"abc", b"253402300800", b"1e9", b"NaN"]
_IDS = [b"", b"-5", b"0", b"9" * 40, b"\x00", b"\xef\xbb\xbfx", b'"1,2"', b"a b", b"\xff\xfe", b"\xc3\x28"]


def _field(draw, size: int) -> bytes:
    kind = draw(st.sampled_from(["bytes", "id", "big", "text"]))
    if kind == "bytes":  # anything but a line break
        return draw(st.binary(max_size=40)).replace(b"\n", b"").replace(b"\r", b"")
    if kind == "id":
        return draw(st.sampled_from(_IDS))
    if kind == "big":
        return b"x" * size
    return draw(st.text(st.characters(exclude_characters="\r\n\u2028\u2029\x85"), max_size=30)).encode()


def _unquoted(source: str, value: bytes) -> bytes:
    """Canonical CSV: random quotes could open a legal multi-line field, which the line oracle does
    not model (``tests/test_adapters.py`` tests those); the quoted comma of ``_IDS`` stays."""
    return value if source != "canonical" or value == b'"1,2"' else value.replace(b'"', b"")


@st.composite
def _line(draw, source: str) -> bytes:
    _, header, good, ts_index = ADAPTERS[source]
    fields = good.encode().split(b",")
    kind = draw(st.sampled_from(["valid", "field", "ts", "drop", "extra", "whole", "header", "empty"]))
    if kind == "field":
        size = draw(st.sampled_from([1000, 100_000, 1 << 20]))
        fields[draw(st.integers(0, len(fields) - 1))] = _unquoted(source, _field(draw, size))
    elif kind == "ts":
        fields[ts_index] = draw(st.sampled_from(_TIMESTAMPS))
    elif kind == "drop":
        del fields[draw(st.integers(0, len(fields) - 1))]
    elif kind == "extra":
        fields.append(_unquoted(source, _field(draw, 10)))
    elif kind == "whole":
        return _unquoted(source, draw(st.binary(max_size=80)).replace(b"\n", b"").replace(b"\r", b""))
    elif kind == "header":
        return (header or ADAPTERS["canonical"][1]).encode()
    elif kind == "empty":
        return b""
    return b",".join(fields)


@st.composite
def _file(draw, source: str) -> bytes:
    header = ADAPTERS[source][1]
    lines = draw(st.lists(_line(source), min_size=1, max_size=LINES))
    ends = draw(st.lists(st.sampled_from([b"\n", b"\r\n"]), min_size=len(lines), max_size=len(lines)))
    body = b"".join(line + end for line, end in zip(lines, ends, strict=True))
    if draw(st.booleans()):  # no line break after the last line
        body = body.rstrip(b"\n").removesuffix(b"\r")
    bom = b"\xef\xbb\xbf" if draw(st.booleans()) else b""  # a byte-order mark opens some exports
    return bom + (header.encode() + b"\n" if header else b"") + body


def _records(data: bytes, source: str) -> list[bytes]:
    """The records an adapter must return for ``data``: its physical lines but the headers (the
    adapter's fixed header line; for canonical CSV, the file's first line)."""
    data = data.removeprefix(b"\xef\xbb\xbf")  # Hadoop's line reader drops a file's opening BOM
    lines = re.split(rb"\r\n|\r|\n", data) if data else []  # an empty file has no lines
    if data.endswith((b"\n", b"\r")):
        lines.pop()
    header = lines[0] if source == "canonical" and lines else ADAPTERS[source][1].encode()
    return [line for line in lines if not header or line != header]


@pytest.mark.parametrize("source", sorted(ADAPTERS))
def test_every_fuzzed_line_is_one_event_or_one_reject(spark, source):
    read = ADAPTERS[source][0]
    checked = Counter[str]()

    @settings(
        max_examples=EXAMPLES,
        **_SETTINGS,
    )
    @given(data=_file(source))
    def check(data: bytes) -> None:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / ("e.csv" if source == "canonical" else "e.txt")
            path.write_bytes(data)
            meta = Path(folder) / "meta.jsonl"
            meta.write_text('{"parent_asin": "A1", "categories": []}\n')
            got = validate(read(spark, [str(path)], [str(meta)] if source == "amazon" else []), source=source)
            rows = got.select(S.RAW, S.REASON, S.USER_ID, S.ITEM_ID, S.TS).collect()
        expected = _records(data, source)
        assert len(rows) == len(expected)
        events = [r for r in rows if r[S.REASON] is None]
        assert all(r[S.USER_ID] and r[S.ITEM_ID] and r[S.TS] is not None for r in events)
        # Lines that are valid UTF-8 come back verbatim; the others are rejects.
        text = Counter(line.decode() for line in expected if _utf8(line))
        assert Counter(r[S.RAW] for r in rows if r[S.RAW] in text) == text
        assert sum(r[S.REASON] is not None for r in rows) >= sum(not _utf8(line) for line in expected)
        checked["lines"] += len(expected)
        checked["events"] += len(events)

    check()
    assert checked["lines"] > 0 and checked["events"] > 0
    print(f"{source}: {checked['lines']} lines, {checked['events']} events")


@pytest.mark.slow
@pytest.mark.parametrize("source", sorted(ADAPTERS))
def test_every_fuzzed_line_ends_in_events_rejects_or_duplicates_through_ingest(spark, tmp_path, source):
    """The whole ingest on a folder of fuzzed files (``SAMPLEIMP_FUZZ_EXAMPLES`` x 2 drawn files,
    concatenated into at most 8, and an empty one; half in a subfolder), read back with deltalake: events + rejects +
    duplicates = the oracle's records, long rejects cut with a marker, every stored timestamp in
    the window; then the same input with a zero reject tolerance fails as bad input (exit 3) with
    its rejects written and no events."""
    drawn: list[bytes] = []

    @settings(
        max_examples=2 * EXAMPLES,
        **_SETTINGS,
    )
    @given(data=_file(source))
    def draw(data: bytes) -> None:
        drawn.append(data)

    draw()
    files = [b"".join(drawn[i::8]) for i in range(min(8, len(drawn)))] + [b""]  # and an empty file
    folder = tmp_path / "in"  # a folder of files, one in a subfolder
    paths = [
        folder / ("sub" if i % 2 else "") / f"e{i}.{'csv' if source == 'canonical' else 'txt'}"
        for i in range(len(files))
    ]
    for path, data in zip(paths, files, strict=True):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    meta = write_text(tmp_path / "meta.jsonl", '{"parent_asin": "A1", "categories": []}\n')
    base = [
        f"input.source={source}",
        f"input.paths={[str(folder)]}",
        f"input.item_paths={[meta] if source == 'amazon' else []}",
        "ingest.valid_from=2024-01-01T00:00:00Z",
        "ingest.valid_until=2025-01-01T00:00:00Z",
        f"ingest.max_raw_chars={MAX_RAW}",
    ]
    cfg = load_config(None, [*base, f"lakehouse={tmp_path / 'lakehouse'}", "ingest.max_reject_rate=1.0"])
    ctx = lake.RunContext(run_id="fuzz", config_hash=cfg.hash(), stage="ingest")
    report = ingest.run(spark, cfg, ctx=ctx, progress=RunProgress("fuzz"))
    events = DeltaTable(lake.table_path(cfg.lakehouse, S.BRONZE_EVENTS)).to_pandas()
    rejects = DeltaTable(lake.table_path(cfg.lakehouse, S.BRONZE_REJECTS)).to_pandas()
    records = sum(len(_records(data, source)) for data in files)
    print(f"{source}: {records} lines -> {len(events)} events, {len(rejects)} rejects, {report.duplicates} duplicates")
    assert len(events) + len(rejects) + report.duplicates == records
    assert (rejects["raw"].str.len() <= MAX_RAW + len("…[cut: 1048576 characters]")).all()
    window = pd.Timestamp("2024-01-01", tz="UTC"), pd.Timestamp("2025-01-01", tz="UTC")
    assert events[S.TS].between(*window, inclusive="left").all()

    strict = load_config(None, [*base, f"lakehouse={tmp_path / 'strict'}", "ingest.max_reject_rate=0"])
    ctx = lake.RunContext(run_id="strict", config_hash=strict.hash(), stage="ingest")
    with pytest.raises(BadInputError, match=r"over ingest\.max_reject_rate"):
        ingest.run(spark, strict, ctx=ctx, progress=RunProgress("strict"))
    assert len(DeltaTable(lake.table_path(strict.lakehouse, S.BRONZE_REJECTS)).to_pandas()) == len(rejects)
    assert not Path(lake.table_path(strict.lakehouse, S.BRONZE_EVENTS)).exists()


def _utf8(line: bytes) -> bool:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
