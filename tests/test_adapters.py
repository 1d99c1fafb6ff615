"""Input adapters on mixed and hostile files (issue #30): no silent corruption.

Canonical CSV files are each read with their own header, quoted newlines are legal; canonical
Parquet files are each read with their own schema, a missing required column or a wrong type is
an error naming the file; invalid UTF-8 is a reject in every text adapter, stored readable.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import write_text
from deltalake import DeltaTable

from sampleimp_spark import lake
from sampleimp_spark import schema as S
from sampleimp_spark.config import load_config
from sampleimp_spark.errors import BadInputError
from sampleimp_spark.progress import RunProgress
from sampleimp_spark.sources import amazon, canonical, rees46, retailrocket, taobao, tianchi
from sampleimp_spark.sources.base import source_file_names
from sampleimp_spark.sources.validate import validate
from sampleimp_spark.stages import ingest

TS = dt.datetime(2024, 3, 1, 10, tzinfo=dt.UTC)


def _by_raw(df, *cols):
    return {r[S.RAW]: tuple(r[c] for c in cols) for r in df.collect()}


# --- canonical CSV ------------------------------------------------------------------------------


@pytest.mark.slow
def test_canonical_csv_reads_each_file_with_its_own_header(spark, tmp_path):
    a = write_text(tmp_path / "a.csv", "user_id,item_id,category_id,behavior,ts\nu1,i1,c1,view,2024-03-01T10:00:00Z\n")
    b = write_text(
        tmp_path / "b.csv",
        "item_id,user_id,behavior,category_id,ts,brand\n"
        "i2,u2,cart,c2,2024-03-01T10:00:00Z,acme\ni3,u3,view,c3,2024-03-01T10:00:00Z,\n",
    )
    got = canonical.read(spark, [a, b])
    rows = sorted(tuple(r) for r in got.select(S.USER_ID, S.ITEM_ID, S.CATEGORY_ID, S.BEHAVIOR, S.BRAND).collect())
    assert rows == [
        ("u1", "i1", "c1", "view", None),
        ("u2", "i2", "c2", "cart", "acme"),
        ("u3", "i3", "c3", "view", None),
    ]
    assert got.where(S.MALFORMED).count() == 0


@pytest.mark.slow
def test_canonical_csv_quoted_newline_is_one_record(spark, tmp_path):
    two_lines = 'u1,i1,c1,view,2024-03-01T10:00:00Z,"Big ""red""\nmug"'
    bad_behavior = 'u2,i2,c1,like,2024-03-01T10:00:00Z,"first\n\nthird, with a comma"'
    inch = 'u3,i3,c1,view,2024-03-01T10:00:00Z,TV 55" wide'  # a literal quote opens nothing
    path = write_text(
        tmp_path / "e.csv",
        "user_id,item_id,category_id,behavior,ts,item_text\n" + "\n".join([two_lines, bad_behavior, inch]) + "\n",
    )
    got = validate(canonical.read(spark, [path]), source="canonical")
    assert _by_raw(got, S.USER_ID, S.ITEM_TEXT, S.REASON) == {
        two_lines: ("u1", 'Big "red"\nmug', None),
        bad_behavior: ("u2", "first\n\nthird, with a comma", "unknown_behavior"),  # raw = the record's text
        inch: ("u3", 'TV 55" wide', None),
    }


def test_a_canonical_csv_opening_with_a_bom_keeps_its_header_out_of_the_records(spark, tmp_path):
    """Defect (found by the fuzz campaign): Spark drops a file's opening byte-order mark but the
    header was kept with it, so the header line became a reject."""
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbfuser_id,item_id,category_id,behavior,ts\nu1,i1,c1,view,2024-03-01T10:00:00Z\n")
    got = validate(canonical.read(spark, [str(path)]), source="canonical")
    assert [(r[S.USER_ID], r[S.REASON]) for r in got.collect()] == [("u1", None)]


def test_an_empty_canonical_csv_file_holds_no_records(spark, tmp_path):
    """Defect: a 0-byte file among the inputs failed the whole ingest ("empty first line"). Alone,
    it is read as no records (the ingest stage decides whether no rows is an error), and it stays
    among the read's input files."""
    good = write_text(  # a name Spark percent-encodes
        tmp_path / "a b%.csv", "user_id,item_id,category_id,behavior,ts\nu1,i1,c1,view,2024-03-01T10:00:00Z\n"
    )
    empty = write_text(tmp_path / "b.csv", "")
    both = canonical.read(spark, [good, empty])
    assert both.count() == 1
    (named,) = {r[S.SOURCE_FILE] for r in both.select(S.SOURCE_FILE).collect()}  # as the rows name their file
    assert named.endswith("/a%20b%25.csv")
    alone = canonical.read(spark, [empty])
    assert alone.count() == 0
    assert [Path(f).name for f in source_file_names(alone)] == ["b.csv"]
    assert source_file_names(both) == [named, *source_file_names(alone)]  # named as the rows name files


def test_canonical_csv_unclosed_quote_swallows_no_records(spark, tmp_path):
    """A quote left open until the end of a file joins nothing: each line stays a record (parsed
    leniently, as a lone line always was), so no record is lost into one malformed reject."""
    lines = [
        "u1,i1,c1,view,2024-03-01T10:00:00Z,fine",
        'u2,i2,c1,view,2024-03-01T10:00:00Z,"never closed',
        "u3,i3,c1,view,2024-03-01T10:00:00Z,fine",
    ]
    path = write_text(tmp_path / "e.csv", "user_id,item_id,category_id,behavior,ts,item_text\n" + "\n".join(lines))
    got = validate(canonical.read(spark, [path]), source="canonical")
    assert {raw: v[0] for raw, v in _by_raw(got, S.REASON).items()} == {
        lines[0]: None,
        lines[1]: None,
        lines[2]: None,
    }


# --- canonical Parquet --------------------------------------------------------------------------


def _parquet(path, **columns):
    n = len(next(iter(columns.values())))
    base = {
        "user_id": [f"u{i}" for i in range(n)],
        "item_id": [f"i{i}" for i in range(n)],
        "category_id": ["c1"] * n,
        "behavior": ["view"] * n,
        "ts": pa.array([TS] * n, pa.timestamp("us", tz="UTC")),
    }
    base.update(columns)
    pq.write_table(pa.table({k: v for k, v in base.items() if v is not None}), path)
    return str(path)


def test_canonical_parquet_keeps_columns_a_first_file_lacks(spark, tmp_path):
    a = _parquet(tmp_path / "a.parquet", user_id=["a0", "a1"])  # no brand, sorts first
    b = _parquet(tmp_path / "b.parquet", user_id=["b0", "b1"], brand=["acme", None], price=[1.5, 2.0])
    got = canonical.read(spark, [str(tmp_path)])
    rows = sorted(tuple(r) for r in got.select(S.USER_ID, S.BRAND, S.PRICE).collect())
    assert rows == [("a0", None, None), ("a1", None, None), ("b0", "acme", 1.5), ("b1", None, 2.0)]
    assert canonical.read(spark, [b, a]).where(S.BRAND + " = 'acme'").count() == 1


def test_a_canonical_folder_of_csv_and_parquet_files_reads_every_file_as_what_it_is(spark, tmp_path):
    """Defect: a folder of CSV files was read as Parquet (and failed); files in a subfolder were
    skipped without a word. Hidden files (``.x``, ``_SUCCESS``) are not input."""
    header = "user_id,item_id,category_id,behavior,ts\n"
    write_text(tmp_path / "in" / "a.csv", header + "c0,i1,c1,view,2024-03-01T10:00:00Z\n")
    write_text(tmp_path / "in" / "2024-03" / "b.CSV", header + "c1,i1,c1,view,2024-03-01T10:00:00Z\n")
    _parquet(tmp_path / "in" / "2024-03" / "c.parquet", user_id=["p0", "p1"])
    write_text(tmp_path / "in" / "_SUCCESS", "")
    write_text(tmp_path / "in" / ".a.csv.crc", "junk")
    got = canonical.read(spark, [str(tmp_path / "in")])
    assert sorted(r[0] for r in got.select(S.USER_ID).collect()) == ["c0", "c1", "p0", "p1"]


def test_text_adapters_read_subfolders_and_name_a_missing_path(spark, tmp_path):
    write_text(tmp_path / "in" / "day1.csv", "1,10,100,pv,1709287200\n")
    write_text(tmp_path / "in" / "2024" / "day2.csv", "2,10,100,pv,1709287200\n")
    assert sorted(r[0] for r in taobao.read(spark, [str(tmp_path / "in")]).select(S.USER_ID).collect()) == ["1", "2"]
    with pytest.raises(BadInputError, match=r"input path .*missing\.csv does not exist"):
        taobao.read(spark, [str(tmp_path / "in"), str(tmp_path / "missing.csv")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInputError, match=r"empty holds no files"):
        taobao.read(spark, [str(tmp_path / "empty")])


def test_canonical_parquet_missing_required_column_names_the_file(spark, tmp_path):
    _parquet(tmp_path / "a.parquet", user_id=["a0"])
    _parquet(tmp_path / "b.parquet", user_id=["b0"], category_id=None)
    with pytest.raises(BadInputError, match=r"b\.parquet.*lacks required column.*category_id"):
        canonical.read(spark, [str(tmp_path)])


def test_canonical_parquet_wrong_type_names_the_file(spark, tmp_path):
    _parquet(tmp_path / "a.parquet", user_id=["a0"])
    _parquet(tmp_path / "b.parquet", user_id=["b0"], ts=pa.array([1_709_287_200], pa.int64()))
    with pytest.raises(BadInputError, match=r"b\.parquet.*ts.*bigint"):
        canonical.read(spark, [str(tmp_path)])
    _parquet(tmp_path / "b.parquet", user_id=["b0"], price=pa.array([[1.0]], pa.list_(pa.float64())))
    with pytest.raises(BadInputError, match=r"b\.parquet.*price.*array"):
        canonical.read(spark, [str(tmp_path)])


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


@pytest.mark.slow
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
