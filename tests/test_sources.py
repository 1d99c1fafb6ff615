"""Each adapter on literal rows, and on its real sample in ../shared/data."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.parquet as pq
from chispa import assert_df_equality
from conftest import write_text
from pyspark.sql import functions as F

from sampleimp_spark import schema as S
from sampleimp_spark.sources import amazon, canonical, rees46, retailrocket, taobao, tianchi
from sampleimp_spark.sources.base import PARSED_COLUMNS

UTC = dt.UTC
CORE = [S.USER_ID, S.ITEM_ID, S.CATEGORY_ID, S.BEHAVIOR, S.TS, S.MALFORMED]
CORE_DDL = "user_id string, item_id string, category_id string, behavior string, ts timestamp, _malformed boolean"


def _ts(*args):
    return dt.datetime(*args, tzinfo=UTC)


def _core(df):
    return df.select(*CORE)


def test_taobao_literal_rows(spark, tmp_path):
    path = write_text(
        tmp_path / "ub.csv",
        "1,10,100,pv,1511658000\n2,20,200,buy,1511658060\n"
        "3,30,300,zz,1511658000\n,40,400,cart,1511658000\n100370,1968385,1875258,pv",
    )
    got = taobao.read(spark, [path])
    assert tuple(got.columns) == PARSED_COLUMNS
    expected = spark.createDataFrame(
        [
            ("1", "10", "100", "view", _ts(2017, 11, 26, 1, 0, 0), False),
            ("2", "20", "200", "purchase", _ts(2017, 11, 26, 1, 1, 0), False),
            ("3", "30", "300", None, _ts(2017, 11, 26, 1, 0, 0), False),
            (None, "40", "400", "cart", _ts(2017, 11, 26, 1, 0, 0), False),
            ("100370", "1968385", "1875258", "view", None, True),  # truncated last line
        ],
        CORE_DDL,
    )
    assert_df_equality(_core(got), expected, ignore_row_order=True, ignore_nullable=True)
    raws = {r[S.RAW] for r in got.select(S.RAW).collect()}
    assert "100370,1968385,1875258,pv" in raws  # the raw line is kept verbatim


def test_rees46_literal_rows(spark, tmp_path):
    path = write_text(
        tmp_path / "oct.csv",
        ",".join(rees46.FIELDS) + "\n"
        "2019-10-01 00:00:00 UTC,view,44600062,2103807459595387724,,shiseido,35.79,541312140,s1\n"
        "2019-10-01 00:00:01 UTC,remove_from_cart,3900821,2053013552326770905,"
        "appliances.environment.water_heater,aqua,-33.20,554748717,s2\n"
        "2019-10-01 00:00:02 UTC,purchase,17200506,2053013559792632471,furniture.living_room,,abc,519107250,s3\n",
    )
    got = rees46.read(spark, [path])
    expected = spark.createDataFrame(
        [
            (
                "541312140",
                "44600062",
                "2103807459595387724",
                "view",
                _ts(2019, 10, 1, 0, 0, 0),
                "s1",
                35.79,
                "shiseido",
                None,
                None,
            ),
            (
                "554748717",
                "3900821",
                "2053013552326770905",
                "remove_from_cart",
                _ts(2019, 10, 1, 0, 0, 1),
                "s2",
                -33.2,
                "aqua",
                "appliances > environment > water_heater",
                None,
            ),
            (
                "519107250",
                "17200506",
                "2053013559792632471",
                "purchase",
                _ts(2019, 10, 1, 0, 0, 2),
                "s3",
                None,
                None,
                "furniture > living_room",
                "price",
            ),
        ],
        "user_id string, item_id string, category_id string, behavior string, ts timestamp, session_id string, "
        "price double, brand string, category_path string, _bad_value string",
    )
    assert_df_equality(got.select(*expected.columns), expected, ignore_row_order=True, ignore_nullable=True)


def test_tianchi_literal_rows_are_china_time(spark, tmp_path):
    path = write_text(
        tmp_path / "ub.csv",
        ",".join(tianchi.FIELDS) + "\n10001082,285259775,1,97lk14c,4076,2014-12-08 18\n"
        "10001082,4368907,4,,5503,2014-12-12 12\n10001082,4368907,7,,5503,2014-12-12 12\n"
        "10001082,4368907,1,,5503,2014-12-12 1x",
    )
    got = tianchi.read(spark, [path])
    expected = spark.createDataFrame(
        [
            ("10001082", "285259775", "4076", "click", _ts(2014, 12, 8, 10), False),  # 18:00 UTC+8
            ("10001082", "4368907", "5503", "purchase", _ts(2014, 12, 12, 4), False),
            ("10001082", "4368907", "5503", None, _ts(2014, 12, 12, 4), False),
            ("10001082", "4368907", "5503", "click", None, False),
        ],
        CORE_DDL,
    )
    assert_df_equality(_core(got), expected, ignore_row_order=True, ignore_nullable=True)


def test_amazon_literal_rows_join_item_metadata(spark, tmp_path):
    reviews = write_text(
        tmp_path / "r.csv",
        ",".join(amazon.FIELDS) + "\n"
        '5,Great,"Nice, really ""nice""",[],A1,A1,U1,2020-12-15 15:29:02.433,0,True\n'
        '2,Meh,"ends in a backslash\\",[],A2,A2,U2,2016-08-12 03:28:32.000,1,False\n'
        "9,Odd,text,[],A3,A3,U3,2016-08-12 03:28:32.000,1,False\n",
    )
    meta = write_text(
        tmp_path / "meta.jsonl",
        '{"parent_asin": "A1", "title": "Cooking Light", "store": "Meredith", "categories": '
        '["Magazine Subscriptions", "Cooking, Food & Wine", "Food"], "price": "—"}\n'
        '{"parent_asin": "A2", "title": "Wired", "categories": []}\n',
    )
    got = amazon.read(spark, [reviews], [meta])
    expected = spark.createDataFrame(
        [
            (
                "U1",
                "A1",
                "Cooking, Food & Wine",
                "purchase",
                _ts(2020, 12, 15, 15, 29, 2, 433000),
                5.0,
                "Meredith",
                "Cooking Light",
                "Magazine Subscriptions > Cooking, Food & Wine > Food",
                None,
                False,
            ),
            ("U2", "A2", "(none)", "purchase", _ts(2016, 8, 12, 3, 28, 32), 2.0, None, "Wired", None, None, False),
            ("U3", "A3", "(none)", "purchase", _ts(2016, 8, 12, 3, 28, 32), None, None, None, None, "rating", False),
        ],
        "user_id string, item_id string, category_id string, behavior string, ts timestamp, rating double, "
        "brand string, item_text string, category_path string, _bad_value string, _malformed boolean",
    )
    assert_df_equality(got.select(*expected.columns), expected, ignore_row_order=True, ignore_nullable=True)


def test_retailrocket_literal_rows_take_latest_category(spark, tmp_path):
    events = write_text(
        tmp_path / "events.csv",
        ",".join(retailrocket.FIELDS) + "\n1433221332117,257597,view,355908,\n"
        "1433224214164,992329,transaction,248676,4000\n1433221999827,111016,addtocart,999,\n",
    )
    props = write_text(
        tmp_path / "item_properties_part1.csv",
        ",".join(retailrocket.PROPERTY_FIELDS) + "\n1435460400000,355908,categoryid,1277\n"
        "1431226800000,355908,categoryid,1000\n1435460400000,248676,categoryid,1059\n1435460400000,248676,888,n5.0\n",
    )
    got = retailrocket.read(spark, [events], [props])
    expected = spark.createDataFrame(
        [
            ("257597", "355908", "1277", "view", _ts(2015, 6, 2, 5, 2, 12, 117000), False),
            ("992329", "248676", "1059", "purchase", _ts(2015, 6, 2, 5, 50, 14, 164000), False),
            ("111016", "999", "(none)", "cart", _ts(2015, 6, 2, 5, 13, 19, 827000), False),
        ],
        CORE_DDL,
    )
    assert_df_equality(_core(got), expected, ignore_row_order=True, ignore_nullable=True)


def test_canonical_csv_and_parquet_agree(spark, tmp_path):
    csv = write_text(
        tmp_path / "e.csv",
        "ts,user_id,item_id,category_id,behavior,price,extra\n"
        "2024-03-01T10:00:00Z,u1,i1,c1,VIEW,9.5,x\n2024-03-01T12:00:00+02:00,u2,i2,c1,purchase,,y\n"
        "2024-03-01 10:00:00,u3,i3,c2,wishlist,1,z\n",
    )
    got_csv = canonical.read(spark, [csv])
    table = pa.table(
        {
            "user_id": ["u1", "u2", "u3"],
            "item_id": ["i1", "i2", "i3"],
            "category_id": ["c1", "c1", "c2"],
            "behavior": ["VIEW", "purchase", "wishlist"],
            "price": [9.5, None, 1.0],
            "ts": pa.array(
                [dt.datetime(2024, 3, 1, 10), dt.datetime(2024, 3, 1, 10), dt.datetime(2024, 3, 1, 10)],
                pa.timestamp("us", tz="UTC"),
            ),
        }
    )
    pq.write_table(table, tmp_path / "e.parquet")
    got_parquet = canonical.read(spark, [str(tmp_path / "e.parquet")])
    expected = spark.createDataFrame(
        [
            ("u1", "i1", "c1", "view", _ts(2024, 3, 1, 10), False),
            ("u2", "i2", "c1", "purchase", _ts(2024, 3, 1, 10), False),
            ("u3", "i3", "c2", None, _ts(2024, 3, 1, 10), False),
        ],
        CORE_DDL,
    )
    assert_df_equality(_core(got_csv), expected, ignore_row_order=True, ignore_nullable=True)
    assert_df_equality(_core(got_parquet), expected, ignore_row_order=True, ignore_nullable=True)


def test_canonical_requires_its_columns(spark, tmp_path):
    import pytest

    from sampleimp_spark.errors import BadInputError

    csv = write_text(tmp_path / "bad.csv", "user,item,ts\nu,i,2024-01-01\n")
    with pytest.raises(BadInputError, match="lacks required column"):
        canonical.read(spark, [csv])


# --- real samples -------------------------------------------------------------------------


def _counts(df, col):
    return {r[0]: r[1] for r in df.groupBy(col).count().collect()}


def test_taobao_real_sample(spark, shared_data):
    path = shared_data / "taobao_userbehavior" / "UserBehavior.csv"
    got = taobao.read(spark, [str(path)])
    n_lines = len(path.read_bytes().split(b"\n"))  # no trailing newline: lines = records
    assert got.count() == n_lines == 84_476
    assert _counts(got, S.BEHAVIOR) == {"view": 75_873, "cart": 4_497, "fav": 2_356, "purchase": 1_750}
    bad = got.where(F.col(S.MALFORMED)).select(S.RAW).collect()
    assert [r[0] for r in bad] == ["100370,1968385,1875258,pv"]


def test_rees46_real_sample(spark, shared_data):
    got = rees46.read(spark, [str(shared_data / "rees46_multicategory" / "2019-Oct-sample.csv")])
    assert got.count() == 1_000 and got.where(F.col(S.MALFORMED)).count() == 0
    assert _counts(got, S.BEHAVIOR) == {"view": 987, "purchase": 10, "cart": 3}
    row = got.agg(
        F.min(S.PRICE),
        F.max(S.PRICE),
        F.sum(F.col(S.CATEGORY_PATH).isNull().cast("int")),
        F.sum(F.col(S.BRAND).isNull().cast("int")),
        F.countDistinct(S.CATEGORY_ID),
        F.min(S.TS),
        F.max(S.TS),
    ).first()
    assert (row[0], row[1], row[2], row[3], row[4]) == (2.17, 1763.21, 366, 143, 128)
    assert (row[5], row[6]) == (dt.datetime(2019, 10, 1, 0, 0, 0), dt.datetime(2019, 10, 1, 0, 17, 26))
    # 19-digit category ids survive as text
    assert got.where(F.length(S.CATEGORY_ID) == 19).count() > 0


def test_tianchi_real_sample(spark, shared_data):
    got = tianchi.read(spark, [str(shared_data / "tianchi_mobile_recommend" / "sample_user_behavior.csv")])
    assert got.count() == 1_999 and got.where(F.col(S.MALFORMED) | F.col(S.TS).isNull()).count() == 0
    assert _counts(got, S.BEHAVIOR) == {"click": 1_876, "cart": 70, "purchase": 35, "fav": 18}
    assert got.agg(F.countDistinct(S.RAW)).first()[0] == 1_999 - 104  # the 104 exact duplicates


def test_amazon_real_sample(spark, shared_data):
    d = shared_data / "amazon_magazine_subscriptions"
    got = amazon.read(
        spark, [str(d / "Magazine_Subscriptions_Mini.csv")], [str(d / "meta_Magazine_Subscriptions.jsonl")]
    )
    assert got.count() == 10_000
    assert got.where(F.col(S.MALFORMED) | F.col(S.TS).isNull() | F.col(S.RATING).isNull()).count() == 0
    assert got.where(F.col(S.ITEM_TEXT).isNull()).count() == 0  # every review joins to a titled item
    cats = _counts(got, S.CATEGORY_ID)
    assert (cats["Home & Garden"], cats["Cooking, Food & Wine"], cats["(none)"]) == (1_865, 1_253, 758)
    assert len(cats) == 27  # 26 second-level categories + (none)
    assert _counts(got, S.RATING) == {5.0: 6_521, 4.0: 1_186, 3.0: 780, 2.0: 537, 1.0: 976}
