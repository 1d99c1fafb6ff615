"""Ranking metrics on hand-computed examples, against Spark's own evaluator and against the
published unit-test values of Microsoft Recommenders' Spark evaluation."""

from __future__ import annotations

import math

import pytest
from oracles import spark_reference_ranking_metrics
from pyspark.sql import functions as F

from sampleimp_spark import hashing
from sampleimp_spark import schema as S
from sampleimp_spark.evaluation import names as N
from sampleimp_spark.evaluation import ranking as R
from sampleimp_spark.schema import ITEM_ID, USER_ID, WEIGHT

L2, L3 = math.log2(3), 2.0  # log2(2 + 1) and log2(3 + 1): the discounts of positions 2 and 3
APPROX = 1e-9


def _close(actual: dict, expected: dict, tol: float = APPROX) -> None:
    assert actual.keys() == expected.keys()
    for key, want in expected.items():
        got = actual[key]
        assert (got is None and want is None) or got == pytest.approx(want, abs=tol), (key, got, want)


def _means(per_user) -> dict:
    rows = per_user.collect()
    return {m: sum(r[m] for r in rows) / len(rows) for m in N.RANKING_METRICS}


# --- ranking fixtures --------------------------------------------------------------------
# Binary relevance, k = 3.
#   u1: recs a b c d, truth {a, c, e}: top-3 hits at 1 and 3.
#       P = 2/3, R = 2/3, DCG = 1 + 1/2, IDCG = 1 + 1/log2(3) + 1/2, AP = (1/1 + 2/3) / 3, hit 1
#   u2: recs x y (fewer than k; x also duplicated at rank 5), truth {y}: hit at 2.
#       P = 1/3, R = 1, NDCG = (1/log2 3) / 1, AP = (1/2) / min(3, 1), hit 1
#   u3: no recommendations, truth {a}: all 0 (or excluded)
#   u4: recs p q r, truth {s}: all 0
#   u9: recommendations but no ground truth: not evaluated
RECS = [
    ("u1", "a", 1),
    ("u1", "b", 2),
    ("u1", "c", 3),
    ("u1", "d", 4),
    ("u2", "x", 1),
    ("u2", "y", 2),
    ("u2", "x", 5),
    ("u4", "p", 1),
    ("u4", "q", 2),
    ("u4", "r", 3),
    ("u9", "a", 1),
]
TRUTH = [("u1", "a"), ("u1", "c"), ("u1", "e"), ("u1", "a"), ("u2", "y"), ("u3", "a"), ("u4", "s")]
PER_USER = {
    "u1": {
        N.PRECISION_AT_K: 2 / 3,
        N.RECALL_AT_K: 2 / 3,
        N.NDCG_AT_K: 1.5 / (1 + 1 / L2 + 1 / L3),
        N.MAP_AT_K: (1 + 2 / 3) / 3,
        N.HIT_RATE_AT_K: 1.0,
    },
    "u2": {N.PRECISION_AT_K: 1 / 3, N.RECALL_AT_K: 1.0, N.NDCG_AT_K: 1 / L2, N.MAP_AT_K: 0.5, N.HIT_RATE_AT_K: 1.0},
    "u3": dict.fromkeys(N.RANKING_METRICS, 0.0),
    "u4": dict.fromkeys(N.RANKING_METRICS, 0.0),
}


def _mean(users, weights=None, denominator=None):
    weights = weights or dict.fromkeys(users, 1.0)
    den = denominator if denominator is not None else sum(weights[u] for u in users)
    return {m: sum(weights[u] * PER_USER[u][m] for u in users) / den for m in N.RANKING_METRICS}


@pytest.fixture(scope="module")
def recs(spark):
    return spark.createDataFrame(RECS, f"{USER_ID} string, {ITEM_ID} string, rank int")


@pytest.fixture(scope="module")
def truth(spark):
    return spark.createDataFrame(TRUTH, f"{USER_ID} string, {ITEM_ID} string")


def test_per_user_ranking_metrics_hand_computed(recs, truth):
    rows = R.per_user_ranking_metrics(recs, truth, k=3).collect()
    got = {r[USER_ID]: {m: r[m] for m in N.RANKING_METRICS} for r in rows}
    assert got.keys() == PER_USER.keys()
    for user, expected in PER_USER.items():
        _close(got[user], expected)
    counts = {r[USER_ID]: (r[N.N_RELEVANT], r[N.N_RECOMMENDED], r[N.HITS]) for r in rows}
    # u2's duplicate x is one recommendation; u3 has none
    assert counts == {"u1": (3, 3, 2), "u2": (1, 2, 1), "u3": (1, 0, 0), "u4": (1, 3, 0)}


def test_missing_recommendations_policy(recs, truth):
    excluded = R.per_user_ranking_metrics(recs, truth, k=3, missing_recs="exclude")
    assert {r[USER_ID] for r in excluded.collect()} == {"u1", "u2", "u4"}  # u3 has no recommendation
    _close(_means(excluded), _mean(["u1", "u2", "u4"]))


def test_graded_relevance_and_users_without_relevant_items(spark, recs):
    truth = spark.createDataFrame(
        [("u1", "a", 3.0), ("u1", "c", 1.0), ("u1", "e", 2.0), ("u4", "p", 0.0)],
        f"{USER_ID} string, {ITEM_ID} string, relevance double",
    )
    # u1, exp2 gains 7 (a), 1 (c), 3 (e): DCG = 7/1 + 1/2; IDCG (sorted 7, 3, 1) = 7 + 3/log2 3 + 1/2
    u1 = {**PER_USER["u1"], N.NDCG_AT_K: 7.5 / (7 + 3 / L2 + 0.5)}
    # u4's only item has relevance 0 (recommended at rank 1, yet not a hit): excluded by default
    excluded = R.per_user_ranking_metrics(recs, truth, k=3, relevance_col="relevance")
    assert [r[USER_ID] for r in excluded.collect()] == ["u1"]
    _close(_means(excluded), u1)

    # no_relevant="zero" keeps u4 with zeros; linear gains 3, 1, 2 give u1
    # DCG = 3 + 1/2 and IDCG = 3 + 2/log2 3 + 1/2
    rows = R.per_user_ranking_metrics(
        recs, truth, k=3, relevance_col="relevance", no_relevant="zero", ndcg_gain="linear"
    ).collect()
    got = {r[USER_ID]: {m: r[m] for m in N.RANKING_METRICS} for r in rows}
    _close(got["u1"], {**u1, N.NDCG_AT_K: 3.5 / (3 + 2 / L2 + 0.5)})
    _close(got["u4"], dict.fromkeys(N.RANKING_METRICS, 0.0))
    assert got.keys() == {"u1", "u4"}


def test_top_k_score_ties_are_reproducible(spark):
    seed = 5
    rows = [("u7", "m", 0.9), ("u7", "n", 0.5), ("u7", "o", 0.5), ("u7", "p", 0.1)]
    recs = spark.createDataFrame(rows, f"{USER_ID} string, {ITEM_ID} string, score double")
    got = {
        r[ITEM_ID]: r[S.POSITION] for r in R.top_k(recs, k=3, rank_col=None, score_col="score", tie_seed=seed).collect()
    }
    draws = dict(
        recs.select(ITEM_ID, hashing.uniform(seed, F.col(USER_ID), F.col(ITEM_ID), salt=R.RANK_TIE_SALT)).collect()
    )
    first, second = sorted(["n", "o"], key=draws.__getitem__)  # the smaller draw ranks first
    assert got == {"m": 1, first: 2, second: 3}  # p is cut at k = 3

    # Many tied items: the order is a function of (seed, user, item) only.
    many = spark.range(40).select(
        F.lit("u8").alias(USER_ID),
        F.concat(F.lit("i"), F.col("id").cast("string")).alias(ITEM_ID),
        F.lit(1.0).alias("score"),
    )

    def order(df, tie_seed):
        picked = R.top_k(df, k=40, rank_col=None, score_col="score", tie_seed=tie_seed)
        return [r[ITEM_ID] for r in picked.orderBy(S.POSITION).collect()]

    reference = order(many, 1)
    assert order(many.repartition(5), 1) == reference
    assert order(many, 2) != reference
    with pytest.raises(ValueError, match="exactly one"):
        R.top_k(many, k=1, rank_col="rank", score_col="score")


def test_unweighted_metrics_agree_with_spark_ranking_evaluator(spark):
    # Users without relevant items (relevance 0, counted as 0 as Spark does), users without
    # recommendations, short lists. Spark's evaluator is binary, so relevance is 0/1 here.
    recs_big = spark.range(400).select(
        F.concat(F.lit("u"), (F.col("id") % 50).cast("string")).alias(USER_ID),
        F.concat(F.lit("i"), ((F.col("id") * 13) % 37).cast("string")).alias(ITEM_ID),
        (F.col("id") / 50 + 1).cast("int").alias("rank"),
    )
    truth_big = spark.range(300).select(
        F.concat(F.lit("u"), (F.col("id") % 60).cast("string")).alias(USER_ID),
        F.concat(F.lit("i"), ((F.col("id") * 7) % 37).cast("string")).alias(ITEM_ID),
        ((F.col("id") % 3 + F.floor(F.col("id") / 60)) % 3 > 0).cast("double").alias("relevance"),
    )
    ours = _means(R.per_user_ranking_metrics(recs_big, truth_big, k=5, relevance_col="relevance", no_relevant="zero"))
    ref = spark_reference_ranking_metrics(recs_big, truth_big, k=5, relevance_col="relevance")
    _close(ref, {m: ours[m] for m in ref})
    assert 0 < ours[N.PRECISION_AT_K] < ours[N.RECALL_AT_K] < 1  # a non-trivial case


def test_spark_ranking_evaluator_counts_duplicate_recommendations(spark):
    recs = spark.createDataFrame([("u1", "a", 1), ("u1", "a", 2)], f"{USER_ID} string, {ITEM_ID} string, rank int")
    truth = spark.createDataFrame([("u1", "a")], f"{USER_ID} string, {ITEM_ID} string")
    spark_raw = spark_reference_ranking_metrics(recs, truth, k=2, dedupe=False, metrics=[N.RECALL_AT_K, N.MAP_AT_K])
    # Spark: 2 hits for one relevant item -> recall 2/1 and AP (1/1 + 2/2) / 1 = 2
    assert spark_raw[N.RECALL_AT_K] == pytest.approx(2.0) and spark_raw[N.MAP_AT_K] == pytest.approx(2.0)
    ours = _means(R.per_user_ranking_metrics(recs, truth, k=2))
    assert ours[N.RECALL_AT_K] == 1.0 and ours[N.MAP_AT_K] == 1.0 and ours[N.PRECISION_AT_K] == 0.5


def test_the_published_values_of_microsoft_recommenders(spark):
    """The fixture of Recommenders' Spark ranking tests (``tests/unit/recommenders/evaluation``):
    its published values at k = 10 with every true item relevant (binary NDCG)."""
    users = [1, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 1, 1]
    true_items = [3, 1, 4, 5, 6, 7, 2, 5, 6, 8, 9, 10, 11, 12, 13, 14, 1, 2]
    pred_items = [12, 10, 3, 5, 11, 13, 4, 10, 7, 13, 1, 3, 5, 2, 11, 14, 3, 10]
    scores = [12, 14, 13, 12, 11, 10, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 14, 13]
    truth = spark.createDataFrame(
        [(str(u), str(i)) for u, i in zip(users, true_items, strict=True)], f"{USER_ID} string, {ITEM_ID} string"
    )
    recs = spark.createDataFrame(
        [(str(u), str(i), float(s)) for u, i, s in zip(users, pred_items, scores, strict=True)],
        f"{USER_ID} string, {ITEM_ID} string, score double",
    )
    got = _means(R.per_user_ranking_metrics(recs, truth, k=10, rank_col=None, score_col="score"))
    assert got[N.PRECISION_AT_K] == pytest.approx(0.26666, abs=1e-4)
    assert got[N.RECALL_AT_K] == pytest.approx(0.37777, abs=1e-4)
    assert got[N.NDCG_AT_K] == pytest.approx(0.38172, abs=1e-4)
    assert got[N.MAP_AT_K] == pytest.approx(0.23613, abs=1e-4)


def test_catalog_coverage(spark, recs):
    # top-3 items of all recommended users: a b c x y p q r (u9's a again) = 8 distinct
    catalog = spark.createDataFrame([(c,) for c in "abcdefghijpqrs"], f"{ITEM_ID} string")  # 14 items, x y not in it
    assert R.catalog_coverage(recs, k=3, catalog=catalog) == pytest.approx(6 / 14)
    assert R.catalog_coverage(recs, k=1, catalog=20) == pytest.approx(3 / 20)  # a, x, p
    with pytest.raises(ValueError, match="at least 1"):
        R.catalog_coverage(recs, k=1, catalog=0)


def test_user_mean_weights(spark):
    samples = spark.createDataFrame([("u1", 1.0), ("u1", 3.0), ("u2", 0.5)], f"{USER_ID} string, {WEIGHT} double")
    assert dict(R.user_mean_weights(samples).collect()) == {"u1": 2.0, "u2": 0.5}
