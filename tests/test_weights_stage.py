"""The weights stage on awkward shards, its invariants, and gold read back without Spark."""

from __future__ import annotations

import math
import random

import pandas as pd
import pytest
from conftest import stored_rdds
from pyspark.sql import functions as F

from sampleimp_spark import lake
from sampleimp_spark import schema as S
from sampleimp_spark.config import WeightsConfig, load_config
from sampleimp_spark.features.frequencies import class_frequencies
from sampleimp_spark.stages.weights import compute_weights, diagnostics_of, windows_to_weight
from sampleimp_spark.windows import Windows

FEATURES = ["user_n_events", "item_n_events", "cat_n_events", "pair_n_events", "pair_recency_any"]
DR_FEATURES = ["user_n_events", "item_n_events", "pair_n_events"]
WINDOW = "w"


def _rows() -> list[tuple]:
    rnd = random.Random(7)
    rows = []

    def add(shard: str, n: int, *, pos_rate: float, target_rate: float, shift: float = 0.0) -> None:
        for i in range(n):
            target = rnd.random() < target_rate
            label = int(rnd.random() < pos_rate)
            user_n = rnd.gauss(10 + (shift if target else 0.0), 2)
            rows.append(
                (
                    f"u{shard}{i}",
                    f"i{i % 37}",
                    shard,
                    label,
                    "purchase" if label else "none",
                    user_n,
                    rnd.expovariate(0.1),
                    rnd.gauss(50, 5),
                    float(1 + rnd.randrange(5) + 3 * label),
                    rnd.uniform(0, 0.9) if target else rnd.uniform(1.5, 6),
                )
            )

    add("big", 3000, pos_rate=0.05, target_rate=0.3, shift=3.0)  # 100x the small shards
    add("small", 30, pos_rate=0.2, target_rate=0.5)
    add("single", 30, pos_rate=0.0, target_rate=0.5)  # a single-class shard
    add("one", 1, pos_rate=1.0, target_rate=1.0)  # a one-row shard
    add("notarget", 60, pos_rate=0.2, target_rate=0.0)  # empty target window
    # NaN and inf feature values
    rows.append(("uX", "iX", "small", 0, "none", float("nan"), float("inf"), 1.0, 1.0, 0.5))
    rows.append(("uY", "iY", "small", 1, "purchase", float("-inf"), 3.0, float("nan"), 2.0, 0.2))
    return rows


DDL = "user_id string, item_id string, shard string, label_purchase int, label_intent string, " + ", ".join(
    f"{f} double" for f in FEATURES
)
CFG = WeightsConfig.model_validate(
    {
        "features": FEATURES,
        "dr_features": DR_FEATURES,
        "dr_target": "recent",
        "target_days": 1.0,
        "density_ratio": {"min_rows": 10, "cv_folds": 3, "max_fit_rows": 400},
    }
)


@pytest.fixture(scope="module")
def inputs(spark):
    samples = spark.createDataFrame(_rows(), DDL).withColumn(S.WINDOW_ID, F.lit(WINDOW))
    events = spark.createDataFrame([(WINDOW, "big", "view")], "window_id string, shard string, behavior string")
    freqs = class_frequencies(samples, events, source="s")
    return samples, freqs


def _weigh(samples, freqs, *, cfg=CFG, feature_days=7.0):
    return compute_weights(samples, freqs, cfg=cfg, window_ids=[WINDOW], feature_days=feature_days)


@pytest.fixture(scope="module")
def weighted(inputs):
    samples, freqs = inputs
    result = _weigh(samples, freqs)
    pdf = result.samples.select(
        S.USER_ID,
        S.ITEM_ID,
        S.SHARD,
        S.IS_TARGET,
        S.W_CLASS,
        S.W_DR,
        S.W_SHARD,
        S.W_IG,
        S.W_TIME,
        S.W_RESAMPLE,
        S.WEIGHT,
    ).toPandas()  # a few thousand rows
    return result, pdf


@pytest.mark.slow  # the weights computation on a few thousand rows
def test_weights_are_finite_nonnegative_and_average_the_shard_marginal(weighted):
    _, pdf = weighted
    for col in (S.W_CLASS, S.W_DR, S.W_SHARD, S.W_IG, S.W_TIME, S.W_RESAMPLE, S.WEIGHT):
        assert pdf[col].map(math.isfinite).all() and (pdf[col] > 0 if col == S.W_SHARD else pdf[col] >= 0).all(), col
    # A shard's weights average its shard marginal (the density ratio's exponent is 1); over the
    # window they average 1, as the marginal does over the source's rows.
    by_shard = pdf.groupby(S.SHARD).agg(mean=(S.WEIGHT, "mean"), marginal=(S.W_SHARD, "first"))
    assert by_shard["mean"].to_numpy() == pytest.approx(by_shard["marginal"].to_numpy(), abs=1e-9)
    assert pdf[S.WEIGHT].mean() == pytest.approx(1.0, abs=1e-9)
    assert set(by_shard.index) == {"big", "small", "single", "one", "notarget"}  # every shard present
    # The marginal by hand: the shard's target share (smoothed with m = 10 pseudo-rows toward its
    # source share) over its source share; the source is every row ("today vs all").
    n_s = pdf.groupby(S.SHARD).size()
    n_t = pdf[pdf[S.IS_TARGET]].groupby(S.SHARD).size().reindex(n_s.index, fill_value=0)
    p_s = n_s / n_s.sum()
    expected = (n_t + 10 * p_s) / ((n_t.sum() + 10) * p_s)
    assert by_shard["marginal"].to_numpy() == pytest.approx(expected.reindex(by_shard.index).to_numpy(), rel=1e-12)
    assert by_shard.loc["notarget", "marginal"] < 0.1  # no target rows: down-weighted, never 0
    assert len(pdf) == 3000 + 30 + 30 + 1 + 60 + 2  # resampling is off: no row lost


@pytest.mark.slow  # the weights computation on a few thousand rows
def test_awkward_shards_fall_back_with_reasons(weighted, inputs):
    result, pdf = weighted
    frame = diagnostics_of(
        result.samples, result.dr_params, result.importance, shard_buckets=CFG.shard_buckets, label_col=S.LABEL_PURCHASE
    )
    lake.check_contract(frame.withColumn(S.SOURCE, F.lit("s")), S.GOLD_WEIGHT_DIAGNOSTICS)  # what the stage writes
    diag = (
        diagnostics_of(
            result.samples,
            result.dr_params,
            result.importance,
            shard_buckets=CFG.shard_buckets,
            label_col=S.LABEL_PURCHASE,
        )
        .toPandas()
        .set_index(S.SHARD)
    )
    assert set(diag.index) == {"big", "small", "single", "one", "notarget"}
    assert diag.loc["notarget", "dr_fallback_reason"] == "empty_target"
    assert diag.loc["one", "dr_fallback_reason"] in {"too_few_rows", "target_equals_source"}
    assert (pdf.loc[pdf[S.SHARD].isin(["notarget", "one"]), S.W_DR] == 1.0).all()
    assert (pdf.loc[pdf[S.SHARD] == "single", S.W_IG] == 1.0).all()  # no label information
    # Why a component is 1 throughout a shard is written down, never left as a silent 1.
    assert diag.loc["single", ["ig_reason", "class_reason", "ig_features"]].tolist() == ["single_class"] * 2 + [0]
    assert diag.loc["one", "ig_reason"] == diag.loc["one", "class_reason"] == "single_class"
    assert diag.loc["big", "ig_features"] >= 1 and pd.isna(diag.loc["big", "ig_reason"])
    assert pd.isna(diag.loc["big", "class_reason"]) and pd.isna(diag.loc["small", "class_reason"])
    # Every shard whose w_ig (w_class) is the same for all its samples says why; the others do not.
    for col, reason in ((S.W_IG, "ig_reason"), (S.W_CLASS, "class_reason")):
        constant = pdf.groupby(S.SHARD)[col].agg(lambda w: w.min() == w.max())
        assert diag.loc[constant.index, reason].notna().tolist() == constant.tolist(), (reason, constant)
    assert (diag.loc[diag["ig_features"] == 0, "ig_reason"].notna()).all()
    # With lambda = 0 and no class balancing, both are off: weight_off where there are two classes.
    off = CFG.model_copy(
        update={
            "information_gain": CFG.information_gain.model_copy(update={"lam": 0.0}),
            "class_balance": CFG.class_balance.model_copy(update={"method": "none"}),
        }
    )
    res = _weigh(*inputs, cfg=off)
    d = diagnostics_of(res.samples, res.dr_params, res.importance, shard_buckets=1, label_col=S.LABEL_PURCHASE)
    d = d.toPandas().set_index(S.SHARD)
    res.unpersist()
    assert d.loc["big", ["ig_reason", "class_reason"]].tolist() == ["weight_off", "weight_off"]
    assert d.loc["single", ["ig_reason", "class_reason"]].tolist() == ["single_class", "single_class"]
    assert diag.loc["big", "dr_fallback_reason"] is None or pd.isna(diag.loc["big", "dr_fallback_reason"])
    assert diag.loc["big", "dr_fit_quality"] > 0.6  # the shifted user_n_events is detectable
    assert 0 < diag.loc["big", "ess_ratio"] <= 1 and diag.loc["one", "rows"] == 1
    # The big shard's density-ratio fit saw a bounded sample, not the shard.
    params = result.dr_params.where("shard = 'big'").first()
    assert params["n_fit"] <= CFG.density_ratio.max_fit_rows < params["n_source"]


@pytest.mark.slow  # the weights computation on a few thousand rows
def test_density_ratio_upweights_target_like_rows(weighted):
    _, pdf = weighted
    big = pdf[pdf[S.SHARD] == "big"]
    assert big.loc[big[S.IS_TARGET], S.W_DR].mean() > 1.2 * big.loc[~big[S.IS_TARGET], S.W_DR].mean()


@pytest.mark.slow  # the weights computation on a few thousand rows
def test_class_weight_favours_the_rare_class(weighted, inputs):
    samples, _ = inputs
    _, pdf = weighted
    labels = samples.select(S.USER_ID, S.LABEL_PURCHASE).toPandas()
    big = pdf[pdf[S.SHARD] == "big"].merge(labels, on=S.USER_ID)
    assert (
        big.loc[big[S.LABEL_PURCHASE] == 1, S.W_CLASS].min() > 5 * big.loc[big[S.LABEL_PURCHASE] == 0, S.W_CLASS].max()
    )


@pytest.mark.slow
def test_same_seed_same_weights_whatever_the_partitioning(inputs, weighted):
    samples, freqs = inputs
    _, first = weighted
    again = _weigh(samples.repartition(7), freqs).samples
    second = again.select(S.USER_ID, S.ITEM_ID, S.WEIGHT).toPandas()
    merged = first.merge(second, on=[S.USER_ID, S.ITEM_ID], suffixes=("", "_2"))
    assert len(merged) == len(first)
    assert merged[S.WEIGHT].to_numpy() == pytest.approx(merged[f"{S.WEIGHT}_2"].to_numpy(), rel=1e-9)


def test_target_days_must_fit_the_window(inputs):
    from sampleimp_spark.errors import BadInputError

    samples, freqs = inputs
    with pytest.raises(BadInputError, match="target_days"):
        _weigh(samples, freqs, feature_days=0.5)
    with pytest.raises(BadInputError, match="not columns"):
        _weigh(samples, freqs, cfg=CFG.model_copy(update={"features": ["nope"]}))


@pytest.mark.slow  # the weights computation on a few thousand rows
def test_importance_lists_features_per_shard(weighted):
    result, _ = weighted
    imp = result.importance.where(F.col(S.SHARD) == "big").toPandas()
    assert set(imp["feature"]) == set(FEATURES)
    assert imp.sort_values("rank").iloc[0]["feature"] == "pair_n_events"  # built to carry the label


@pytest.mark.slow  # the weights computation on a few thousand rows
def test_unpersist_releases_everything_the_computation_stored(spark, inputs):
    samples, freqs = inputs
    before = stored_rdds(spark)
    result = _weigh(samples, freqs)
    assert result.samples.count() == 3123
    cached = (result.ig.bin_scores, result.ig.edges_long)
    assert all(df.storageLevel.useMemory for df in cached)
    # The density-ratio parameters and the components are checkpoints. (The cached IG tables
    # may share the cache entry of an identical earlier computation in this module.)
    assert len(stored_rdds(spark).keys() - before.keys()) >= 2
    result.unpersist()
    # Left cached, the next run over the same input would reuse them instead of computing;
    # left checkpointed, they would hold executor memory for the rest of the session.
    assert not any(df.storageLevel.useMemory or df.storageLevel.useDisk for df in cached)
    assert stored_rdds(spark).keys() - before.keys() == set()


@pytest.mark.slow  # the weights computation on a few thousand rows
def test_a_weights_run_alone_weights_the_windows_the_experiment_needs(spark, tmp_path):
    """Defect: ``sampleimp weights`` alone weighted only the latest window, so a scheduler running
    features, weights and train as separate tasks always failed at train ("lacks window(s)")."""
    latest = Windows.from_id("20171128T160000Z_20171202T160000Z_20171203T160000Z")
    step = latest.t2 - latest.t1
    stored = [latest.shifted(-k * step).window_id for k in range(5)]  # five consecutive windows
    rows = [("generator", w) for w in stored] + [("other", latest.shifted(step).window_id)]
    lakehouse = str(tmp_path / "lakehouse")
    frame = spark.createDataFrame(rows, f"{S.SOURCE} string, {S.WINDOW_ID} string")
    frame.write.format("delta").save(lake.table_path(lakehouse, S.SILVER_SAMPLES))

    def weighted(*overrides: str) -> list[str]:
        return windows_to_weight(spark, load_config(None, [f"lakehouse={lakehouse}", *overrides]), "generator", None)

    assert weighted("train.origins=1") == stored[2::-1]  # origins + 2 windows, oldest first
    assert weighted() == stored[::-1]  # train.origins null: as many as are stored
    assert weighted("train.enabled=false") == [latest.window_id]
    assert weighted("weights.window_id=" + stored[3]) == [stored[3]]


# --- the density ratio of the real shift: this window's samples -> the next window's ---------------

W0 = "20171124T160000Z_20171201T160000Z_20171202T160000Z"
W1 = "20171125T160000Z_20171202T160000Z_20171203T160000Z"  # W0 one label period (a day) later
NEXT = CFG.model_copy(update={"dr_target": "next_window"})


def _window(wid: str, sizes: dict[tuple[str, str], int], *, user_shift: float, seed: int) -> list[tuple]:
    """Rows of ``window_id, user_id, item_id, category_id, shard``, labels and FEATURES; ``sizes``
    by (category, shard)."""
    rnd = random.Random(seed)
    rows = []
    for (category, shard), n in sizes.items():
        for i in range(n):
            label = int(rnd.random() < 0.1)
            rows.append(
                (
                    wid,
                    f"u{category}{i}",
                    f"i{i % 37}",
                    category,
                    shard,
                    label,
                    "purchase" if label else "none",
                    rnd.gauss(10 + user_shift, 2),
                    rnd.expovariate(0.1),
                    rnd.gauss(50, 5),
                    float(1 + rnd.randrange(5) + 3 * label),
                    rnd.uniform(0, 6),
                )
            )
    return rows


def _next_window_weights(spark, later: list[tuple]):
    """W0 and W1 weighted together, W1's label-free samples the target of W0 (W1 has none)."""
    earlier = _window(W0, {("cbig", "big"): 2000, ("csmall", "small"): 200}, user_shift=0.0, seed=1)
    ddl = "window_id string, user_id string, item_id string, category_id string, " + DDL.split(", ", 2)[2]
    samples = spark.createDataFrame(earlier + later, ddl)
    events = spark.createDataFrame([(W0, "big", "view")], "window_id string, shard string, behavior string")
    freqs = class_frequencies(samples, events, source="s")
    nxt = samples.where(F.col(S.WINDOW_ID) == W1).drop(S.LABEL_PURCHASE, S.LABEL_INTENT)  # never reads a label
    result = compute_weights(samples, freqs, cfg=NEXT, window_ids=[W0, W1], feature_days=7.0, next_samples=nxt)
    cols = [S.WINDOW_ID, S.SHARD, S.IS_TARGET, "user_n_events", S.W_DR, S.W_SHARD, S.WEIGHT]
    pdf = result.samples.select(*cols).toPandas()  # a few thousand rows
    diag = diagnostics_of(
        result.samples, result.dr_params, result.importance, shard_buckets=1, label_col=S.LABEL_PURCHASE
    ).toPandas()
    result.unpersist()
    return pdf, diag.set_index([S.WINDOW_ID, S.SHARD])


@pytest.mark.slow  # the weights computation on a few thousand rows
def test_next_window_density_ratio_weights_toward_the_next_windows_samples(spark):
    # W1 draws its shards on its own: "csmall" is pooled there, with a category W0 does not have
    # (which has no shard in W0: it is no target of W0's).
    later = _window(
        W1,
        {("cbig", "big"): 1500, ("csmall", "pool:x"): 600, ("cnew", "pool:x"): 300},
        user_shift=3.0,
        seed=2,
    )
    pdf, diag = _next_window_weights(spark, later)
    assert pdf[S.IS_TARGET].isna().all()  # the target is the next window's samples, none of these
    w0, w1 = pdf[pdf[S.WINDOW_ID] == W0], pdf[pdf[S.WINDOW_ID] == W1]
    big = w0[w0[S.SHARD] == "big"]
    # The next window's users are more active: W0's active users weigh more.
    high, low = big[big["user_n_events"] > 12], big[big["user_n_events"] < 8]
    assert high[S.W_DR].mean() > 2 * low[S.W_DR].mean()
    assert diag.loc[(W0, "big"), "dr_n_target"] == 1500 and diag.loc[(W0, "big"), "dr_n_source"] == 2000
    # The shard marginal: "small" is 9 % of W0's samples and 29 % of W1's.
    p_s = 200 / 2200
    marginal = w0.groupby(S.SHARD)[S.W_SHARD].agg(["min", "max"])
    expected = (600 + 10 * p_s) / ((2100 + 10) * p_s)
    assert marginal.loc["small", "min"] == marginal.loc["small", "max"] == pytest.approx(expected, rel=1e-12)
    assert w0.groupby(S.SHARD)[S.WEIGHT].mean()["small"] == pytest.approx(expected, rel=1e-9)
    assert w0[S.WEIGHT].mean() == pytest.approx(1.0, abs=1e-9)
    # W1 has no next window stored: no target, weight 1 for its density ratio, and a reason.
    assert (w1[S.W_DR] == 1.0).all() and (w1[S.W_SHARD] == 1.0).all()
    assert set(diag.loc[W1, "dr_fallback_reason"]) == {"empty_target"}


def test_a_window_without_density_ratio_bars_the_variants_that_need_one(spark):
    from sampleimp_spark.stages.train import _recent_target, _without_density_ratio

    ddl = "window_id string, is_target boolean, w_dr double, w_shard double"
    flat = spark.createDataFrame([(W1, None, 1.0, 1.0), (W1, None, 1.0, None)], ddl)
    variants = ["unweighted", "time", "density_ratio", "combined"]
    barred = _without_density_ratio(flat, W1, variants, {"b": 1.0})
    assert set(barred) == {"density_ratio", "combined"} and "no density-ratio target" in barred["combined"]
    assert set(_without_density_ratio(flat, W1, variants, {"b": 0.0})) == {"density_ratio"}  # combined has none
    fitted = spark.createDataFrame([(W1, False, 1.0, 1.0), (W1, True, 1.3, 1.0)], ddl)
    assert _without_density_ratio(fitted, W1, variants, {"b": 1.0}) == {}
    # SNIPS only where every sample's ratio has the recent target (is_target set).
    assert not _recent_target(flat) and _recent_target(fitted)
