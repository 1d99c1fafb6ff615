"""Metrics on hand-computed examples, against Spark's own evaluators, and bootstrap invariants."""

from __future__ import annotations

import math

import pytest
from conftest import stored_rdds
from pydantic import ValidationError
from pyspark.ml.evaluation import BinaryClassificationEvaluator
from pyspark.ml.linalg import Vectors
from pyspark.sql import functions as F

from sampleimp_spark import hashing
from sampleimp_spark import schema as S
from sampleimp_spark.config import EvaluationConfig
from sampleimp_spark.schema import ITEM_ID, LABEL_PURCHASE, USER_ID, WEIGHT
from sampleimp_spark.training import evaluate as E

L2, L3 = math.log2(3), 2.0  # log2(2 + 1) and log2(3 + 1): the discounts of positions 2 and 3
APPROX = 1e-9


def _by(results, estimator="unweighted"):
    return {r.metric: r for r in results if r.estimator == estimator}


def _values(results, estimator="unweighted"):
    return {m: r.value for m, r in _by(results, estimator).items()}


def _close(actual: dict, expected: dict, tol: float = APPROX) -> None:
    assert actual.keys() == expected.keys()
    for key, want in expected.items():
        got = actual[key]
        assert (got is None and want is None) or got == pytest.approx(want, abs=tol), (key, got, want)


def _same_results(a, b) -> None:
    """Equal up to float summation order (sums over partitions are not bit-reproducible)."""
    assert [(r.metric, r.estimator, r.n_users, r.k, r.n_boot) for r in a] == [
        (r.metric, r.estimator, r.n_users, r.k, r.n_boot) for r in b
    ]
    for x, y in zip(a, b, strict=True):
        for field in ("value", "ci_low", "ci_high"):
            assert getattr(x, field) == pytest.approx(getattr(y, field), rel=1e-12, abs=1e-12), (x, y)


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
        E.PRECISION_AT_K: 2 / 3,
        E.RECALL_AT_K: 2 / 3,
        E.NDCG_AT_K: 1.5 / (1 + 1 / L2 + 1 / L3),
        E.MAP_AT_K: (1 + 2 / 3) / 3,
        E.HIT_RATE_AT_K: 1.0,
    },
    "u2": {E.PRECISION_AT_K: 1 / 3, E.RECALL_AT_K: 1.0, E.NDCG_AT_K: 1 / L2, E.MAP_AT_K: 0.5, E.HIT_RATE_AT_K: 1.0},
    "u3": dict.fromkeys(E.RANKING_METRICS, 0.0),
    "u4": dict.fromkeys(E.RANKING_METRICS, 0.0),
}


def _mean(users, weights=None, denominator=None):
    weights = weights or dict.fromkeys(users, 1.0)
    den = denominator if denominator is not None else sum(weights[u] for u in users)
    return {m: sum(weights[u] * PER_USER[u][m] for u in users) / den for m in E.RANKING_METRICS}


@pytest.fixture(scope="module")
def recs(spark):
    return spark.createDataFrame(RECS, f"{USER_ID} string, {ITEM_ID} string, rank int")


@pytest.fixture(scope="module")
def truth(spark):
    return spark.createDataFrame(TRUTH, f"{USER_ID} string, {ITEM_ID} string")


def test_per_user_ranking_metrics_hand_computed(recs, truth):
    rows = E.per_user_ranking_metrics(recs, truth, k=3).collect()
    got = {r[USER_ID]: {m: r[m] for m in E.RANKING_METRICS} for r in rows}
    assert got.keys() == PER_USER.keys()
    for user, expected in PER_USER.items():
        _close(got[user], expected)
    counts = {r[USER_ID]: (r[E.N_RELEVANT], r[E.N_RECOMMENDED], r[E.HITS]) for r in rows}
    # u2's duplicate x is one recommendation; u3 has none
    assert counts == {"u1": (3, 3, 2), "u2": (1, 2, 1), "u3": (1, 0, 0), "u4": (1, 3, 0)}


WEIGHTS = {"u1": 3.0, "u2": 1.0, "u3": 0.0, "u4": 2.0}  # sum 6, n = 4
BOOT_SEED = 3


@pytest.fixture(scope="module")
def ranked(spark, recs, truth):
    """One weighted, bootstrapped evaluation shared by the tests below (2 replicates, 90 % CI)."""
    w_df = spark.createDataFrame(list(WEIGHTS.items()), f"{USER_ID} string, {WEIGHT} double")
    return E.ranking_metrics(recs, truth, k=3, user_weights=w_df, n_boot=2, seed=BOOT_SEED, alpha=0.1)


def test_ranking_metrics_unweighted_means(ranked):
    _close(_values(ranked), _mean(list(PER_USER)))  # e.g. precision (2/3 + 1/3 + 0 + 0) / 4 = 0.25
    assert {(r.n_users, r.k, r.n_boot) for r in ranked} == {(4, 3, 2)}
    assert [(r.metric, r.estimator) for r in ranked] == [
        (m, e) for m in E.RANKING_METRICS for e in ("unweighted", "self_normalized", "ips")
    ]


def test_ranking_metrics_importance_weighted(ranked):
    users = list(WEIGHTS)
    # self-normalised: precision (3·2/3 + 1·1/3) / 6 = 0.3889; IPS: the same sum / 4 = 0.5833
    _close(_values(ranked, "self_normalized"), _mean(users, WEIGHTS))
    _close(_values(ranked, "ips"), _mean(users, WEIGHTS, denominator=4))
    assert _values(ranked, "ips")[E.HIT_RATE_AT_K] == pytest.approx((3 + 1) / 4)
    assert all(r.weighted == (r.estimator != "unweighted") for r in ranked)


def test_missing_recommendations_policy(recs, truth):
    excluded = E.ranking_metrics(recs, truth, k=3, missing_recs="exclude")
    _close(_values(excluded), _mean(["u1", "u2", "u4"]))  # u3 has no recommendation
    assert {r.n_users for r in excluded} == {3} and all(r.ci_low is None for r in excluded)


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ({"u1": 1.0, "u2": 1.0}, "no weight"),  # u3 missing
        ([("u1", 1.0), ("u2", 1.0), ("u3", 1.0), ("u3", 2.0)], "more than one row"),
        ({"u1": 1.0, "u2": -1.0, "u3": 1.0}, "negative"),
        ({"u1": 1.0, "u2": float("nan"), "u3": 1.0}, "negative, NaN"),  # NaN >= 0 is true in Spark
        ({"u1": 0.0, "u2": 0.0, "u3": 0.0}, "all user weights are zero"),
    ],
)
def test_user_weights_are_validated(spark, weights, message):
    per_user = spark.createDataFrame([("u1", 1.0), ("u2", 0.0), ("u3", 0.5)], f"{USER_ID} string, m double")
    rows = list(weights.items()) if isinstance(weights, dict) else weights
    w_df = spark.createDataFrame(rows, f"{USER_ID} string, {WEIGHT} double")
    with pytest.raises(ValueError, match=message):
        E.summarize_user_metrics(per_user, metrics=["m"], user_weights=w_df)


def test_summarize_user_metrics_without_users(spark):
    empty = spark.createDataFrame([], f"{USER_ID} string, m double")
    w_df = spark.createDataFrame([], f"{USER_ID} string, {WEIGHT} double")
    results = E.summarize_user_metrics(empty, metrics=["m"], user_weights=w_df, n_boot=3)
    assert [(r.estimator, r.value, r.ci_low, r.n_users) for r in results] == [
        ("unweighted", None, None, 0),
        ("self_normalized", None, None, 0),
        ("ips", None, None, 0),
    ]


def test_graded_relevance_and_users_without_relevant_items(spark, recs):
    truth = spark.createDataFrame(
        [("u1", "a", 3.0), ("u1", "c", 1.0), ("u1", "e", 2.0), ("u4", "p", 0.0)],
        f"{USER_ID} string, {ITEM_ID} string, relevance double",
    )
    # u1, exp2 gains 7 (a), 1 (c), 3 (e): DCG = 7/1 + 1/2; IDCG (sorted 7, 3, 1) = 7 + 3/log2 3 + 1/2
    u1 = {**PER_USER["u1"], E.NDCG_AT_K: 7.5 / (7 + 3 / L2 + 0.5)}
    # u4's only item has relevance 0 (recommended at rank 1, yet not a hit): excluded by default
    excluded = E.ranking_metrics(recs, truth, k=3, relevance_col="relevance")
    _close(_values(excluded), u1)
    assert {r.n_users for r in excluded} == {1}

    # no_relevant="zero" keeps u4 with zeros; linear gains 3, 1, 2 give u1
    # DCG = 3 + 1/2 and IDCG = 3 + 2/log2 3 + 1/2
    rows = E.per_user_ranking_metrics(
        recs, truth, k=3, relevance_col="relevance", no_relevant="zero", ndcg_gain="linear"
    ).collect()
    got = {r[USER_ID]: {m: r[m] for m in E.RANKING_METRICS} for r in rows}
    _close(got["u1"], {**u1, E.NDCG_AT_K: 3.5 / (3 + 2 / L2 + 0.5)})
    _close(got["u4"], dict.fromkeys(E.RANKING_METRICS, 0.0))
    assert got.keys() == {"u1", "u4"}


def test_top_k_score_ties_are_reproducible(spark):
    seed = 5
    rows = [("u7", "m", 0.9), ("u7", "n", 0.5), ("u7", "o", 0.5), ("u7", "p", 0.1)]
    recs = spark.createDataFrame(rows, f"{USER_ID} string, {ITEM_ID} string, score double")
    got = {
        r[ITEM_ID]: r[S.POSITION] for r in E.top_k(recs, k=3, rank_col=None, score_col="score", tie_seed=seed).collect()
    }
    draws = dict(
        recs.select(ITEM_ID, hashing.uniform(seed, F.col(USER_ID), F.col(ITEM_ID), salt=E.RANK_TIE_SALT)).collect()
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
        picked = E.top_k(df, k=40, rank_col=None, score_col="score", tie_seed=tie_seed)
        return [r[ITEM_ID] for r in picked.orderBy(S.POSITION).collect()]

    reference = order(many, 1)
    assert order(many.repartition(5), 1) == reference
    assert order(many, 2) != reference
    with pytest.raises(ValueError, match="exactly one"):
        E.top_k(many, k=1, rank_col="rank", score_col="score")


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
    ours = _values(E.ranking_metrics(recs_big, truth_big, k=5, relevance_col="relevance", no_relevant="zero"))
    ref = E.spark_reference_ranking_metrics(recs_big, truth_big, k=5, relevance_col="relevance")
    _close(ref, {m: ours[m] for m in ref})
    assert 0 < ours[E.PRECISION_AT_K] < ours[E.RECALL_AT_K] < 1  # a non-trivial case


def test_spark_ranking_evaluator_counts_duplicate_recommendations(spark):
    recs = spark.createDataFrame([("u1", "a", 1), ("u1", "a", 2)], f"{USER_ID} string, {ITEM_ID} string, rank int")
    truth = spark.createDataFrame([("u1", "a")], f"{USER_ID} string, {ITEM_ID} string")
    spark_raw = E.spark_reference_ranking_metrics(recs, truth, k=2, dedupe=False, metrics=[E.RECALL_AT_K, E.MAP_AT_K])
    # Spark: 2 hits for one relevant item -> recall 2/1 and AP (1/1 + 2/2) / 1 = 2
    assert spark_raw[E.RECALL_AT_K] == pytest.approx(2.0) and spark_raw[E.MAP_AT_K] == pytest.approx(2.0)
    ours = _values(E.ranking_metrics(recs, truth, k=2))
    assert ours[E.RECALL_AT_K] == 1.0 and ours[E.MAP_AT_K] == 1.0 and ours[E.PRECISION_AT_K] == 0.5


def test_catalog_coverage(spark, recs):
    # top-3 items of all recommended users: a b c x y p q r (u9's a again) = 8 distinct
    catalog = spark.createDataFrame([(c,) for c in "abcdefghijpqrs"], f"{ITEM_ID} string")  # 14 items, x y not in it
    assert E.catalog_coverage(recs, k=3, catalog=catalog) == pytest.approx(6 / 14)
    assert E.catalog_coverage(recs, k=1, catalog=20) == pytest.approx(3 / 20)  # a, x, p
    with pytest.raises(ValueError, match="at least 1"):
        E.catalog_coverage(recs, k=1, catalog=0)


def test_ranking_metrics_computes_the_lists_once(spark, recs, truth):
    # Metrics and coverage both read the lists; an uncached plan (ALS's recommendations) must
    # not be computed twice, and nothing may stay stored afterwards.
    computed = spark.sparkContext.accumulator(0)

    def count_row(rank):
        computed.add(1)
        return rank

    counted = F.udf(count_row, "int").asNondeterministic()  # test probe: counts each row's evaluation
    plan = recs.withColumn("rank", counted("rank"))
    before = stored_rdds(spark)
    results = E.ranking_metrics(plan, truth, k=3, catalog=20)
    assert computed.value == len(RECS)
    assert stored_rdds(spark).keys() - before.keys() == set()
    assert _values(results) == _values(E.ranking_metrics(recs, truth, k=3, catalog=20))


def test_user_mean_weights(spark):
    samples = spark.createDataFrame([("u1", 1.0), ("u1", 3.0), ("u2", 0.5)], f"{USER_ID} string, {WEIGHT} double")
    assert dict(E.user_mean_weights(samples).collect()) == {"u1": 2.0, "u2": 0.5}


# --- bootstrap ---------------------------------------------------------------------------


def test_bootstrap_replicates_are_hash_multiplicities(spark, ranked):
    users = list(PER_USER)
    mult = {
        r[USER_ID]: [r["c0"], r["c1"]]
        for r in spark.createDataFrame([(u,) for u in users], f"{USER_ID} string")
        .select(
            USER_ID,
            *(
                hashing.poisson1(BOOT_SEED, F.col(USER_ID), F.lit(b).cast("int"), salt=E.BOOTSTRAP_SALT).alias(f"c{b}")
                for b in (0, 1)
            ),
        )
        .collect()
    }
    for r in ranked:
        reps = []
        for b in (0, 1):
            c = {u: mult[u][b] for u in users}
            w = WEIGHTS if r.weighted else dict.fromkeys(users, 1.0)
            num = sum(c[u] * w[u] * PER_USER[u][r.metric] for u in users)
            den = sum(c[u] * w[u] for u in users) if r.estimator == "self_normalized" else sum(c.values())
            reps.append(num / den if den else None)  # an undefined replicate is left out
        reps = sorted(v for v in reps if v is not None)
        # percentiles 5 % and 95 % of two values, linearly interpolated
        lo, hi = reps[0] + 0.05 * (reps[-1] - reps[0]), reps[0] + 0.95 * (reps[-1] - reps[0])
        assert (r.ci_low, r.ci_high) == (pytest.approx(lo), pytest.approx(hi)), r


def test_bootstrap_is_reproducible_and_sensible(spark):
    recs = spark.range(600).select(
        F.concat(F.lit("u"), (F.col("id") % 120).cast("string")).alias(USER_ID),
        F.concat(F.lit("i"), ((F.col("id") * 13) % 29).cast("string")).alias(ITEM_ID),
        (F.col("id") / 120 + 1).cast("int").alias("rank"),
    )
    truth = spark.range(360).select(
        F.concat(F.lit("u"), (F.col("id") % 120).cast("string")).alias(USER_ID),
        F.concat(F.lit("i"), ((F.col("id") * 11) % 29).cast("string")).alias(ITEM_ID),
    )
    weights = recs.select(USER_ID).distinct().select(USER_ID, (F.length(USER_ID) - 1.0).alias(WEIGHT))

    def run(r, t, seed):
        return E.ranking_metrics(r, t, k=5, user_weights=weights, n_boot=30, seed=seed)

    first = run(recs, truth, 1)
    _same_results(run(recs.repartition(3), truth.repartition(4), 1), first)
    for r in first:
        assert r.ci_low < r.ci_high, r
        assert r.ci_low <= r.value <= r.ci_high, r


# --- classification ----------------------------------------------------------------------
#   user  label  p    weight
#   u1    1      0.9  1.0
#   u1    0      0.8  2.0
#   u2    1      0.8  1.0
#   u2    0      0.3  1.0
#   u3    1      0.1  0.5
# ROC (unweighted): points (0, 1/3), (1/2, 2/3), (1, 2/3), (1, 1) -> 1/2·1/2 + 1/2·2/3 = 7/12
#     (weighted, P = 2.5, N = 3): (0, .4), (2/3, .8), (1, .8), (1, 1) -> 2/3·.6 + 1/3·.8 = 2/3
# PR  (unweighted): (1/3, 1), (2/3, 2/3), (2/3, 1/2), (1, 3/5), from (0, 1):
#     1/3·1 + 1/3·(5/6) + 0 + 1/3·(1.1/2) = 0.79444
#     (weighted): (.4, 1), (.8, .5), (.8, .4), (1, 2.5/5.5) -> .4 + .4·.75 + 0 + .2·(.4 + 5/11)/2
# threshold 0.5 -> predicted positive: rows 1-3.
#     unweighted TP 2, FP 1, FN 1: P = R = F1 = 2/3
#     weighted   TP 2, FP 2, FN .5: P = .5, R = .8, F1 = 4 / 6.5
CLS = [("u1", 1, 0.9, 1.0), ("u1", 0, 0.8, 2.0), ("u2", 1, 0.8, 1.0), ("u2", 0, 0.3, 1.0), ("u3", 1, 0.1, 0.5)]
_LOSSES = [-math.log(0.9), -math.log(0.2), -math.log(0.8), -math.log(0.7), -math.log(0.1)]
CLS_EXPECTED = {
    "unweighted": {
        E.ROC_AUC: 7 / 12,
        E.PR_AUC: 1 / 3 + 1 / 3 * 5 / 6 + 1 / 3 * 0.55,
        E.LOG_LOSS: sum(_LOSSES) / 5,
        E.PRECISION: 2 / 3,
        E.RECALL: 2 / 3,
        E.F1: 2 / 3,
    },
    "self_normalized": {
        E.ROC_AUC: 2 / 3,
        E.PR_AUC: 0.4 + 0.4 * 0.75 + 0.2 * (0.4 + 5 / 11) / 2,
        E.LOG_LOSS: sum(w * loss for (_, _, _, w), loss in zip(CLS, _LOSSES, strict=True)) / 5.5,
        E.PRECISION: 0.5,
        E.RECALL: 0.8,
        E.F1: 4 / 6.5,
    },
}


CLS_SEED = 9


@pytest.fixture(scope="module")
def scored(spark):
    return spark.createDataFrame(CLS, f"{USER_ID} string, {LABEL_PURCHASE} int, probability double, {WEIGHT} double")


@pytest.fixture(scope="module")
def classified(scored):
    """One weighted evaluation with a single bootstrap replicate, shared by the tests below."""
    return E.classification_metrics(scored, weight_col=WEIGHT, n_boot=1, seed=CLS_SEED)


def test_classification_metrics_hand_computed(classified):
    for est, expected in CLS_EXPECTED.items():
        _close(_values(classified, est), expected)
    assert {r.n_users for r in classified} == {3}
    assert {r.metric: r.threshold for r in classified} == {
        E.ROC_AUC: None,
        E.PR_AUC: None,
        E.LOG_LOSS: None,
        E.PRECISION: 0.5,
        E.RECALL: 0.5,
        E.F1: 0.5,
    }


def test_classification_probability_vector_and_clipping(spark):
    # Spark ML's probability vector [P(0), P(1)]; p = 0 for a positive is clipped to 1e-15.
    df = spark.createDataFrame(
        [("u1", 1.0, Vectors.dense([1.0, 0.0])), ("u2", 0.0, Vectors.dense([1.0, 0.0]))],
        [USER_ID, LABEL_PURCHASE, "probability"],
    )
    got = _values(E.classification_metrics(df))
    _close(
        got,
        {
            E.LOG_LOSS: (-math.log(1e-15) - math.log(1 - 1e-15)) / 2,  # 17.27
            E.ROC_AUC: 0.5,  # one tied threshold: the diagonal
            E.PR_AUC: 0.5,  # single point (1, 1/2), with (0, 1/2) prepended
            E.PRECISION: None,  # no predicted positive
            E.RECALL: 0.0,
            E.F1: 0.0,  # 2·0 / (0 + 0 + 1)
        },
        tol=1e-7,
    )


def test_classification_single_class_has_no_auc(spark):
    df = spark.createDataFrame(
        [("u1", 1, 0.7), ("u2", 1, 0.2)], f"{USER_ID} string, {LABEL_PURCHASE} int, probability double"
    )
    got = _values(E.classification_metrics(df, threshold=0.2))
    assert got[E.ROC_AUC] is None and got[E.PR_AUC] is None
    # p = 0.2 is not above the threshold 0.2: TP 1, FN 1, FP 0
    assert got[E.RECALL] == 0.5 and got[E.PRECISION] == 1.0 and got[E.F1] == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (("u9", 2, 0.5, 1.0), "not 0/1"),
        (("u9", 1, 1.5, 1.0), "outside"),
        (("u9", 1, 0.5, -1.0), "negative"),
    ],
)
def test_classification_input_is_validated(spark, row, message):
    df = spark.createDataFrame(
        [*CLS, row], f"{USER_ID} string, {LABEL_PURCHASE} int, probability double, {WEIGHT} double"
    )
    with pytest.raises(ValueError, match=message):
        E.classification_metrics(df, weight_col=WEIGHT)


def test_classification_all_zero_weights_is_an_error(scored):
    with pytest.raises(ValueError, match="all weights are zero"):
        E.classification_metrics(scored.withColumn(WEIGHT, F.lit(0.0)), weight_col=WEIGHT)


def test_curve_areas_match_binary_classification_evaluator(spark):
    # A first threshold holding both classes tells the PR conventions apart: points (1/2, 1/2),
    # (1, 2/3); with (0, 1/2) prepended the area is 1/2·1/2 + 1/2·(1/2 + 2/3)/2 = 0.54167
    # (it would be 0.6667 with (0, 1) prepended). ROC: (1/2, 1) ... area 1/2·1/2 = 0.25.
    tiny = spark.createDataFrame([(0.9, 1.0), (0.9, 0.0), (0.5, 1.0)], "p double, y double")
    row = E.curve_areas(tiny, score_col="p", label_col="y").first()
    assert (row[E.ROC_AUC], row[E.PR_AUC]) == (pytest.approx(0.25), pytest.approx(0.5 * 0.5 + 0.5 * (0.5 + 2 / 3) / 2))

    data = spark.range(300).select(
        (F.col("id") % 2).cast("double").alias("y"),
        (((F.col("id") * 37) % 11) / 10.0).alias("p"),  # 11 distinct scores: many ties
        ((F.col("id") % 5) * 0.5).alias("w"),  # includes zero weights
        (F.col("id") % 3).alias("g"),
    )
    areas = {
        r["g"]: (r[E.ROC_AUC], r[E.PR_AUC])
        for r in E.curve_areas(data, group_cols=["g"], score_col="p", label_col="y", weight_col="w").collect()
    }
    for g in (0, 2):
        part = data.where((F.col("g") == g) & (F.col("w") > 0))
        for i, name in enumerate(("areaUnderROC", "areaUnderPR")):
            ev = BinaryClassificationEvaluator(
                rawPredictionCol="p", labelCol="y", weightCol="w", metricName=name, numBins=0
            )
            assert areas[g][i] == pytest.approx(ev.evaluate(part), abs=APPROX), (g, name)


def test_classification_bootstrap_resamples_users(scored, classified):
    # With one replicate the interval collapses to that replicate's value: recompute it with
    # every row weighted by its user's multiplicity (times its weight, for the weighted variant).
    mult = hashing.poisson1(CLS_SEED, F.col(USER_ID), F.lit(0).cast("int"), salt=E.BOOTSTRAP_SALT)
    resampled = scored.withColumn("c", mult.cast("double")).where("c > 0")
    rows = resampled.collect()
    assert len(rows) > 0 and len({r[USER_ID] for r in rows}) < 3  # this seed drops a user
    losses = {(u, y, p): -math.log(p if y == 1 else 1 - p) for u, y, p, _ in CLS}
    for est in ("unweighted", "self_normalized"):
        by_metric = _by(classified, est)
        assert all(r.ci_low == pytest.approx(r.ci_high) for r in by_metric.values()), est
        v = [r["c"] * (r[WEIGHT] if est != "unweighted" else 1.0) for r in rows]
        loss = [losses[(r[USER_ID], r[LABEL_PURCHASE], r["probability"])] for r in rows]
        expected_loss = sum(vi * li for vi, li in zip(v, loss, strict=True)) / sum(v)
        assert by_metric[E.LOG_LOSS].ci_low == pytest.approx(expected_loss), est
        has_both = len({r[LABEL_PURCHASE] for r in rows}) == 2
        if has_both:
            weighted_rows = resampled.withColumn(
                "v", F.col("c") * (F.col(WEIGHT) if est != "unweighted" else F.lit(1.0))
            )
            ev = BinaryClassificationEvaluator(
                rawPredictionCol="probability", labelCol=LABEL_PURCHASE, weightCol="v", numBins=0
            )
            assert by_metric[E.ROC_AUC].ci_low == pytest.approx(ev.evaluate(weighted_rows)), est
        else:
            assert by_metric[E.ROC_AUC].ci_low is None
    with pytest.raises(ValueError, match="user_col"):
        E.classification_metrics(scored, user_col=None, n_boot=5)


def test_classification_bootstrap_intervals_are_sensible(spark):
    # (Partition independence of the multiplicities is shown for ranking; same mechanism.)
    data = (
        spark.range(400)
        .select(
            F.concat(F.lit("u"), (F.col("id") % 80).cast("string")).alias(USER_ID),
            ((F.col("id") * 7) % 3 == 0).cast("int").alias(LABEL_PURCHASE),
            (((F.col("id") * 37) % 97) / 96.0).alias("probability"),
            (1.0 + (F.col("id") % 4)).alias(WEIGHT),
        )
        .repartition(3)
    )
    results = E.classification_metrics(data, weight_col=WEIGHT, n_boot=20, seed=4)
    assert len(results) == 12
    for r in results:
        assert r.n_boot == 20 and r.n_users == 80
        assert r.ci_low < r.ci_high, r
        assert r.ci_low <= r.value <= r.ci_high, r


def test_classification_bootstrap_equals_its_replicated_rows(spark):
    # The bootstrap sums rows per (user, curve point) before replicating them and merges the
    # negatives between consecutive positive scores into one point. Recompute every replicate
    # the direct way — each row replicated with its user's multiplicity, one curve point per
    # distinct score (curve_areas) — and compare the intervals. Rare positives, scores with
    # ties (also between a positive and negatives), negatives above the highest and below the
    # lowest positive, zero weights.
    n_boot, seed, threshold = 25, 3, 0.5
    data = spark.range(1500).select(
        F.concat(F.lit("u"), (F.col("id") % 120).cast("string")).alias(USER_ID),
        (F.col("id") % 23 == 5).cast("int").alias(LABEL_PURCHASE),
        (0.01 + ((F.col("id") * 7919) % 499) / 510.0).alias("probability"),
        ((F.col("id") % 7) * 0.5).alias(WEIGHT),
    )
    got = E.classification_metrics(data, weight_col=WEIGHT, n_boot=n_boot, seed=seed, threshold=threshold)

    mult = hashing.poisson1(seed, F.col(USER_ID), F.col("rep"), salt=E.BOOTSTRAP_SALT).cast("double")
    rows = data.withColumn("rep", F.explode(F.sequence(F.lit(0), F.lit(n_boot - 1)))).withColumn("m", mult)
    y, p = F.col(LABEL_PURCHASE).cast("double"), F.col("probability")
    loss = -(y * F.log(p) + (1 - y) * F.log(1 - p))
    pred = (p > threshold).cast("double")
    for est, ew in (("unweighted", F.lit(1.0)), ("self_normalized", F.col(WEIGHT))):
        v = rows.withColumn("v", F.col("m") * ew)
        areas = E.curve_areas(v, group_cols=["rep"], score_col="probability", label_col=LABEL_PURCHASE, weight_col="v")
        vc = F.col("v")
        sums = v.groupBy("rep").agg(
            (F.sum(vc * loss) / F.sum(vc)).alias(E.LOG_LOSS),
            (F.sum(vc * y * pred) / F.sum(vc * pred)).alias(E.PRECISION),
            (F.sum(vc * y * pred) / F.sum(vc * y)).alias(E.RECALL),
            (2 * F.sum(vc * y * pred) / (F.sum(vc * pred) + F.sum(vc * y))).alias(E.F1),  # 2TP / (2TP + FP + FN)
        )
        per_rep = sums.join(areas, "rep")
        assert per_rep.count() == n_boot
        expected = per_rep.agg(*(F.percentile(m, [0.025, 0.975]).alias(m) for m in E.CLASSIFICATION_METRICS)).first()
        for m in E.CLASSIFICATION_METRICS:
            r = _by(got, est)[m]
            assert (r.ci_low, r.ci_high) == (
                pytest.approx(expected[m][0], abs=APPROX),
                pytest.approx(expected[m][1], abs=APPROX),
            ), (est, m)
            assert r.ci_low < r.ci_high, (est, m)


def test_evaluation_config_is_strict():
    cfg = EvaluationConfig(k=5, n_boot=0)
    assert (cfg.k, cfg.missing_recs, cfg.no_relevant, cfg.log_loss_eps) == (5, "zero", "exclude", 1e-15)
    for bad in ({"k": 0}, {"alpha": 1.0}, {"missing_recs": "skip"}, {"typo": 1}):
        with pytest.raises(ValidationError):
            EvaluationConfig(**bad)
