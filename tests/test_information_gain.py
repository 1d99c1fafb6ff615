"""Information gain: the pure per-shard math against scikit-learn and hand computations, then the
Spark pipeline (edges, ties, NaN/inf bins, degenerate shards, ranking, the w_ig invariants)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from chispa import assert_df_equality
from pydantic import ValidationError
from pyspark.sql import functions as F
from sklearn.metrics import mutual_info_score

from sampleimp_spark import schema as S
from sampleimp_spark.config import InformationGainConfig
from sampleimp_spark.weighting import information_gain as information_gain_module
from sampleimp_spark.weighting.information_gain import (
    NAN_BIN,
    ScoringModel,
    information_gain,
    pointwise_scores,
    quantile_edges,
    shard_information_gain,
    with_ig_weight,
)


def _counts(shard: str, data: dict[str, np.ndarray], labels: np.ndarray) -> pd.DataFrame:
    """The contingency table of discrete features, as the Spark stage hands it to the UDF."""
    frames = [
        pd.DataFrame({"feature": f, "bin": x, "label": labels.astype(str)}).value_counts().rename("count").reset_index()
        for f, x in data.items()
    ]
    return pd.concat(frames, ignore_index=True).assign(shard=shard)[["shard", "feature", "bin", "label", "count"]]


def _bins(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Independent re-implementation of the binning: the number of edges below x, NaN apart."""
    x = np.asarray(x, dtype=float)
    return np.where(np.isnan(x), NAN_BIN, np.searchsorted(edges, x, side="left"))


def _ig(out: pd.DataFrame) -> dict[str, float]:
    return out.drop_duplicates("feature").set_index("feature")["ig"].to_dict()


# --- pure pandas/numpy --------------------------------------------------------------------


def test_plugin_ig_equals_sklearn_mutual_info():
    rng = np.random.default_rng(7)
    y = rng.integers(0, 3, 500)
    data = {
        "a": np.where(rng.random(500) < 0.7, y, rng.integers(0, 4, 500)),  # informative, 4 bins
        "b": rng.integers(0, 6, 500),  # noise, 6 bins
        "c": (y > 0).astype(int) * 2 + rng.integers(0, 2, 500),  # partly informative
    }
    out = shard_information_gain(_counts("s", data, y), alpha=0.0, miller_madow=False)
    got = _ig(out)
    for f, x in data.items():
        assert got[f] == pytest.approx(mutual_info_score(y, x), abs=1e-9)
    by_sklearn = sorted(data, key=lambda f: -mutual_info_score(y, data[f]))
    ranks = out.drop_duplicates("feature").set_index("feature")["rank"].to_dict()
    assert ranks == {f: r for r, f in enumerate(by_sklearn, 1)}
    assert ranks["b"] == 3
    # Without smoothing, IG is the sample-weighted mean of the per-bin KL.
    for f, part in out.groupby("feature"):
        assert (part["n_bin"] * part["kl"]).sum() / 500 == pytest.approx(got[f], abs=1e-12)


def test_laplace_smoothing_by_hand():
    # bins x0, x1; classes 0, 1; counts [[3, 1], [0, 2]], alpha = 1: D = 6 + 1*2*2 = 10.
    counts = pd.DataFrame(
        {"shard": "s", "feature": "f", "bin": [0, 0, 1], "label": ["0", "1", "1"], "count": [3, 1, 2]}
    )
    out = shard_information_gain(counts, alpha=1.0).sort_values("bin")
    p = np.array([[4, 2], [1, 3]]) / 10
    px, py = p.sum(1), p.sum(0)
    ig = sum(p[i, j] * math.log(p[i, j] / (px[i] * py[j])) for i in range(2) for j in range(2))
    kl = [sum(p[i, j] / px[i] * math.log(p[i, j] / px[i] / py[j]) for j in range(2)) for i in range(2)]
    assert out["ig"].tolist() == pytest.approx([ig, ig], abs=1e-12)
    assert out["kl"].tolist() == pytest.approx(kl, abs=1e-12)
    assert out["n_bin"].tolist() == [4, 2]
    # One feature: its contrib is its KL, and g_mean the sample-weighted mean KL.
    assert out["contrib"].tolist() == pytest.approx(kl, abs=1e-12)
    assert out["g_mean"].iloc[0] == pytest.approx((4 * kl[0] + 2 * kl[1]) / 6, abs=1e-12)


def test_miller_madow_correction_by_hand():
    # counts [[3, 1], [0, 2], [2, 2]]: m_XY = 5, m_X = 3, m_Y = 2, N = 10 -> subtract 1 / 20.
    counts = pd.DataFrame(
        {
            "shard": "s",
            "feature": "f",
            "bin": [0, 0, 1, 2, 2],
            "label": ["0", "1", "1", "0", "1"],
            "count": [3, 1, 2, 2, 2],
        }
    )
    x = np.repeat([0, 0, 1, 2, 2], [3, 1, 2, 2, 2])
    y = np.repeat([0, 1, 1, 0, 1], [3, 1, 2, 2, 2])
    plugin = mutual_info_score(y, x)
    got = _ig(shard_information_gain(counts, alpha=0.0, miller_madow=True))["f"]
    assert got == pytest.approx(plugin - (5 - 3 - 2 + 1) / 20, abs=1e-12)
    # A weak feature: the correction overshoots and the IG is clipped at 0.
    weak = pd.DataFrame(
        {"shard": "s", "feature": "f", "bin": [0, 0, 1, 1], "label": ["0", "1", "0", "1"], "count": [5, 4, 4, 5]}
    )
    assert _ig(shard_information_gain(weak, alpha=0.0, miller_madow=True))["f"] == 0.0


def test_single_class_and_one_row_shards_score_zero():
    one_class = _counts("s", {"a": np.array([0, 1, 1, 2]), "b": np.array([5, 5, 6, 6])}, np.array([1, 1, 1, 1]))
    one_row = _counts("t", {"a": np.array([3])}, np.array([0]))
    for counts in (one_class, one_row):
        out = shard_information_gain(counts, alpha=1.0, miller_madow=True)
        assert (out[["ig", "kl", "contrib", "g_mean"]] == 0.0).all().all()
    out = shard_information_gain(one_class, alpha=1.0)
    assert out["n"].unique().tolist() == [4]
    assert out.groupby("feature")["n_bin"].sum().to_dict() == {"a": 4, "b": 4}
    assert sorted(out.drop_duplicates("feature")["rank"]) == [1, 2]


# --- Spark --------------------------------------------------------------------------------


SAMPLES_SCHEMA = (
    "shard string, user_id string, item_id string, label_purchase int, good double, noise double, tied double"
)


def _rows() -> list[tuple]:
    """Shards A (informative `good`, noise `noise`, a heavily tied `tied`), B (all one class),
    C (one row) and D (NaN and ±inf values)."""
    rng = np.random.default_rng(11)
    rows = []
    for i in range(300):
        y = int(rng.random() < 0.3)
        good = float(rng.normal(2.0 * y, 1.0))
        rows.append(("A", f"u{i}", f"i{i}", y, good, float(rng.normal()), float(i % 3 == 2)))
    for i in range(20):
        rows.append(("B", f"u{i}", f"j{i}", 0, float(i), float(-i), 1.0))
    rows.append(("C", "u0", "k0", 1, 0.5, 0.5, 0.5))
    nan, inf = float("nan"), float("inf")
    d_good = [nan, nan, -inf, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, inf]
    d_label = [1, 1, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1]
    for i, (x, y) in enumerate(zip(d_good, d_label, strict=True)):
        rows.append(("D", f"u{i}", f"m{i}", y, x, float(i % 2), 0.0))
    return rows


def _samples(spark):
    return spark.createDataFrame(_rows(), SAMPLES_SCHEMA).repartition(3)


FEATURES = ["good", "noise", "tied"]


@pytest.fixture(scope="module")
def fitted(spark):
    samples = _samples(spark)
    result = information_gain(samples, FEATURES, n_bins=4, smoothing=0.0)
    weighted = with_ig_weight(samples, result, lam=2.0).toPandas()
    out = {
        "samples": pd.DataFrame(_rows(), columns=[c.split()[0] for c in SAMPLES_SCHEMA.split(", ")]),
        "importance": result.importance.toPandas(),
        "bins": result.bin_scores.toPandas(),
        "edges": result.edges.toPandas(),
        "weighted": weighted,
    }
    result.unpersist()
    return out


def test_spark_ig_equals_sklearn_on_the_binned_samples(fitted):
    samples, edges, imp = fitted["samples"], fitted["edges"], fitted["importance"]
    edge = {(r.shard, r.feature): np.asarray(r.edges, dtype=float) for r in edges.itertuples()}
    checked = 0
    for (shard, feature), ig in imp.set_index(["shard", "feature"])["ig"].items():
        part = samples[samples["shard"] == shard]
        x = part[feature].to_numpy()
        bins = _bins(x, edge[(shard, feature)])
        assert ig == pytest.approx(mutual_info_score(part["label_purchase"], bins), abs=1e-9), (shard, feature)
        checked += 1
    assert checked == 4 * len(FEATURES)


def test_edges_are_distinct_and_ties_give_one_bin_per_value(fitted):
    edges = fitted["edges"].set_index(["shard", "feature"])["edges"]
    for e in edges:
        assert list(e) == sorted(set(e))
    # `tied` is 0 for 2/3 of shard A and 1 for the rest: the quantile edges 0, 0, 1 collapse to
    # [0, 1], giving one bin per value (the bin above 1 is empty and so absent, not a zero row).
    assert list(edges[("A", "tied")]) == [0.0, 1.0]
    bins = fitted["bins"]
    tied = bins[(bins["shard"] == "A") & (bins["feature"] == "tied")].sort_values("bin")
    assert tied[["bin", "n_bin"]].values.tolist() == [[0, 200], [1, 100]]
    samples = fitted["samples"].query("shard == 'A'")
    imp = fitted["importance"].set_index(["shard", "feature"])["ig"]
    assert imp[("A", "tied")] == pytest.approx(mutual_info_score(samples["label_purchase"], samples["tied"]), abs=1e-9)


def test_nan_gets_its_own_bin_and_inf_is_clamped(spark, fitted):
    bins = fitted["bins"]
    got = bins[(bins["shard"] == "D") & (bins["feature"] == "good")][["bin", "n_bin"]]
    # Finite values 1..8 with n_bins=4 give edges 2, 4, 6: -inf joins 1..2, +inf joins 7..8.
    assert list(fitted["edges"].set_index(["shard", "feature"]).loc[("D", "good"), "edges"]) == [2.0, 4.0, 6.0]
    expected = spark.createDataFrame([(NAN_BIN, 2), (0, 3), (1, 2), (2, 2), (3, 3)], "bin int, n_bin long")
    assert_df_equality(spark.createDataFrame(got).select("bin", "n_bin").orderBy("bin"), expected, ignore_nullable=True)
    d = fitted["weighted"].query("shard == 'D'")
    assert np.isfinite(d["w_ig"]).all() and np.isfinite(d["ig_score"]).all()


def test_quantile_edges_are_numpy_inverted_cdf_quantiles_of_the_finite_values():
    rng = np.random.default_rng(3)
    n_bins = 7
    probs = [k / n_bins for k in range(1, n_bins)]
    clean = rng.normal(size=1001)
    dirty = np.r_[rng.integers(0, 5, 500).astype(float), [np.nan, np.inf, -np.inf] * 20]
    none = np.full(1001, np.nan)
    none[:3] = np.inf
    values = np.c_[clean, np.resize(dirty, 1001), none]
    got = quantile_edges(values, n_bins)
    assert len(got) == 3
    for j in (0, 1):
        x = values[:, j]
        x = x[np.isfinite(x)]
        expected = np.unique(np.quantile(x, probs, method="inverted_cdf"))
        np.testing.assert_array_equal(got[j], expected)
    assert len(got[1]) <= 5  # ties collapse: five distinct values
    assert got[2].size == 0  # no finite value: no edges, one bin


def test_edges_of_a_large_shard_come_from_a_bounded_partition_independent_sample(spark):
    rng = np.random.default_rng(5)
    x = rng.normal(size=3000)
    rows = [("big", f"u{i}", f"i{i}", int(v > 1.0), float(v), float(i % 5), 0.0) for i, v in enumerate(x)]
    rows += [("small", f"u{i}", f"s{i}", i % 2, float(i), 0.0, 0.0) for i in range(40)]

    def edges(parts: int) -> dict[tuple[str, str], list[float]]:
        df = spark.createDataFrame(rows, SAMPLES_SCHEMA).repartition(parts)
        result = information_gain(df, FEATURES, n_bins=5, smoothing=0.0, edge_rows=300)
        out = {(r.shard, r.feature): list(r.edges) for r in result.edges.collect()}
        result.unpersist()
        return out

    one, seven = edges(1), edges(7)
    assert one == seven
    probs = [k / 5 for k in range(1, 5)]
    # The small shard is below edge_rows: its edges are those of all its rows.
    assert one[("small", "good")] == list(np.quantile(np.arange(40.0), probs, method="inverted_cdf"))
    # The big one's come from ~300 of its 3,000 rows: observed values near, not at, the full quantiles.
    full = np.quantile(x, probs, method="inverted_cdf")
    big = np.asarray(one[("big", "good")])
    assert len(big) == 4 and set(big) <= set(x)
    assert not np.array_equal(big, full)
    np.testing.assert_allclose(big, full, atol=0.25)


def test_single_class_and_one_row_shards(spark, fitted):
    imp = spark.createDataFrame(fitted["importance"]).where(F.col("shard").isin("B", "C"))
    expected = spark.createDataFrame(
        [(s, f, 0.0, r, n) for s, n in (("B", 20), ("C", 1)) for r, f in enumerate(FEATURES, 1)],
        "shard string, feature string, ig double, rank int, n long",
    )
    assert_df_equality(imp, expected, ignore_row_order=True, ignore_nullable=True)
    w = fitted["weighted"].query("shard in ('B', 'C')")
    assert (w["w_ig"] == 1.0).all() and (w["ig_score"] == 0.0).all() and len(w) == 21


def test_informative_feature_ranks_above_noise(fitted):
    rank = fitted["importance"].query("shard == 'A'").set_index("feature")["rank"]
    assert rank["good"] == 1
    assert rank["good"] < rank["noise"]


def test_w_ig_is_finite_nonnegative_and_averages_one_plus_lambda(fitted):
    w = fitted["weighted"]
    assert len(w) == len(fitted["samples"])
    assert np.isfinite(w["w_ig"]).all() and (w["w_ig"] >= 1.0).all() and (w["ig_score"] >= 0.0).all()
    means = w.groupby("shard")["w_ig"].mean()
    lam = 2.0
    assert means.to_dict() == pytest.approx({"A": 1 + lam, "B": 1.0, "C": 1.0, "D": 1 + lam}, abs=1e-9)
    # Samples in more informative bins get larger weights: in A, the weight rises with |good|.
    a = w.query("shard == 'A'")
    assert a["w_ig"].std() > 0


def test_pointwise_score_is_the_ig_weighted_sum_of_its_bins_terms(fitted):
    # Independent recomputation of g from the edges and the per-bin terms, sample by sample.
    samples, bins, weighted = fitted["samples"], fitted["bins"], fitted["weighted"]
    edge = {(r.shard, r.feature): np.asarray(r.edges, dtype=float) for r in fitted["edges"].itertuples()}
    term = {(r.shard, r.feature, r.bin): r.contrib for r in bins.itertuples()}
    expected = []
    for row in samples.itertuples():
        g = 0.0
        for f in FEATURES:
            x = getattr(row, f)
            b = int(_bins(x, edge[(row.shard, f)]))
            g += term[(row.shard, f, b)]
        expected.append(g)
    got = weighted.set_index(["shard", "user_id", "item_id"])["ig_score"]
    want = pd.Series(expected, index=pd.MultiIndex.from_frame(samples[["shard", "user_id", "item_id"]]))
    assert got.sort_index().to_numpy() == pytest.approx(want.sort_index().to_numpy(), abs=1e-12)
    assert weighted["ig_score"].max() > 0


def test_samples_of_an_unfitted_shard_weigh_one(spark):
    samples = _samples(spark).where("shard = 'A'")
    result = information_gain(samples, FEATURES, n_bins=4, smoothing=0.0)
    extra = spark.createDataFrame([("Z", "u0", "z0", 1, 5.0, 5.0, 5.0)], SAMPLES_SCHEMA)
    out = with_ig_weight(samples.unionByName(extra), result, lam=1.0).toPandas()
    result.unpersist()
    assert len(out) == 301 and out.loc[out["shard"] == "A", "w_ig"].mean() == pytest.approx(2.0, abs=1e-9)
    z = out[out["shard"] == "Z"].iloc[0]
    assert (z["ig_score"], z["w_ig"]) == (0.0, 1.0)


def test_scoring_keeps_the_samples_in_place_and_refuses_an_oversized_model(spark, monkeypatch):
    samples = spark.createDataFrame(_rows(), SAMPLES_SCHEMA)
    result = information_gain(samples, FEATURES, n_bins=4, smoothing=0.0)
    try:
        # Scored where the samples are: no shuffle and no join back on the sample keys.
        plan = with_ig_weight(samples, result, lam=1.0)._jdf.queryExecution().executedPlan().toString()
        assert "Exchange" not in plan and "Join" not in plan and plan.count("ArrowEvalPython") == 1
        # 4 shards x 3 features x (3 edges + 5 terms) = 96 values.
        monkeypatch.setattr(information_gain_module, "MAX_MODEL_CELLS", 95)
        with pytest.raises(ValueError, match="= 96 values"):
            with_ig_weight(samples, result, lam=1.0)
    finally:
        result.unpersist()


def test_pointwise_scores_without_a_fitted_shard_weigh_one():
    empty = ScoringModel(pd.Index([], dtype=object), np.empty((0, 3, 2)), np.empty((0, 2, 5)), np.empty(0))
    out = pointwise_scores(pd.Series(["a", None]), np.array([[1.0, np.nan], [0.0, 2.0]]), empty, 1.0)
    assert out.to_dict("list") == {"g": [0.0, 0.0], "w": [1.0, 1.0]}


def test_smoothing_and_miller_madow_shrink_the_plugin_ig(spark, fitted):
    samples = _samples(spark).where("shard = 'A'")
    plugin = fitted["importance"].set_index(["shard", "feature"]).loc[("A", "noise"), "ig"]
    ig = {}
    for name, settings in {
        "mm": {"n_bins": 4, "smoothing": 0.0, "miller_madow": True},
        "laplace": {"n_bins": 4, "smoothing": 5.0, "miller_madow": False},
    }.items():
        result = information_gain(samples, ["noise"], **settings)
        ig[name] = result.importance.collect()[0]["ig"]
        result.unpersist()
    # Plug-in MI of 4 bins x 2 classes on 300 rows, minus (8 - 4 - 2 + 1) / 600, clipped at 0.
    assert ig["mm"] == pytest.approx(max(plugin - 3 / 600, 0.0), abs=1e-12)
    assert 0.0 < ig["laplace"] < plugin


def test_custom_column_names_and_bad_inputs(spark):
    df = spark.createDataFrame(
        [("x", 1, 0.0, 1), ("x", 0, 1.0, 2), ("x", 1, 0.0, 3), ("x", 0, 1.0, 4)],
        "cat string, y int, `f.1` double, k int",
    )
    result = information_gain(df, ["f.1"], n_bins=2, smoothing=0.0, label_col="y", shard_col="cat")
    assert result.importance.collect()[0].asDict() == {
        "cat": "x",
        "feature": "f.1",
        "ig": pytest.approx(math.log(2), abs=1e-12),
        "rank": 1,
        "n": 4,
    }
    out = with_ig_weight(df, result, ["f.1"], lam=0.0, shard_col="cat", weight_col=S.W_IG)
    assert [r[S.W_IG] for r in out.collect()] == [1.0] * 4  # lambda = 0
    # A non-string shard column: the shard is compared as a string throughout.
    int_shard = df.withColumn("cat", F.lit(7))
    result = information_gain(int_shard, ["f.1"], n_bins=2, smoothing=0.0, label_col="y", shard_col="cat")
    out = with_ig_weight(int_shard, result, lam=1.0, shard_col="cat").toPandas()
    result.unpersist()
    assert out["cat"].tolist() == [7] * 4 and out[S.W_IG].mean() == pytest.approx(2.0, abs=1e-12)
    with pytest.raises(ValueError, match="differ"):
        with_ig_weight(df, result, ["y"], lam=0.0, shard_col="cat")
    with pytest.raises(TypeError, match="numeric"):
        information_gain(df, ["cat"], n_bins=2, smoothing=0.0, label_col="y", shard_col="cat")
    with pytest.raises(ValueError, match="not in the samples"):
        information_gain(df, ["nope"], n_bins=2, smoothing=0.0, label_col="y", shard_col="cat")


def test_config_is_strict():
    assert InformationGainConfig() == InformationGainConfig(n_bins=10, smoothing=1.0, miller_madow=False, lam=1.0)
    for bad in ({"n_bins": 1}, {"n_bins": 101}, {"smoothing": -0.1}, {"lam": -1.0}, {"bins": 5}):
        with pytest.raises(ValidationError):
            InformationGainConfig(**bad)


@pytest.mark.parametrize("groups", [(), (("a",),), (("a", "b"),), (("b",), ("a",))], ids=str)
def test_contingency_counts_equal_a_recount_with_one_bin_features(spark, groups):
    """Every (shard, feature, bin, label) count, recounted in pandas from the fitted edges: a
    feature constant in a shard (its one edge is its value) with and without NaN, an all-NaN
    feature (no edges), features with several bins, a null. The same counts whichever features
    are counted as groups of repeated value tuples (in Q, one (NaN, 7.0) row per label stands for all
    15 rows)."""
    nan = float("nan")
    rng = np.random.default_rng(3)
    rows = []
    for i in range(40):  # P: `a` constant but for 3 NaN, `b` varies
        rows.append(("P", f"u{i}", f"p{i}", int(i % 4 == 0), nan if i in (1, 5, 9) else 2.0, float(rng.normal())))
    for i in range(15):  # Q: `a` all NaN, `b` constant
        rows.append(("Q", f"u{i}", f"q{i}", int(i % 3 == 0), nan, 7.0))
    for i in range(30):  # R: both vary, `b` with a NaN and a null
        b = {4: nan, 7: None}.get(i, float(rng.normal()))
        rows.append(("R", f"u{i}", f"r{i}", int(i % 2 == 0), float(i % 5), b))
    schema = "shard string, user_id string, item_id string, label_purchase int, a double, b double"
    samples = spark.createDataFrame(rows, schema).repartition(2)
    feats = ("a", "b")
    module = information_gain_module
    sample = module._edge_sample(
        samples, feats, shard_col="shard", key_cols=["user_id", "item_id"], edge_rows=1000, seed=0
    )
    edges = module._edges(sample, n_features=2, n_bins=4).cache()
    got = module._counts(samples, feats, edges, shard_col="shard", label_col="label_purchase", n_bins=4, groups=groups)
    got = sorted(tuple(r) for r in got.collect())
    edge = {(r["shard"], feats[r[module._FIDX]]): np.asarray(r["edges"], dtype=float) for r in edges.collect()}
    assert edge[("P", "a")].tolist() == [2.0] and edge[("Q", "b")].tolist() == [7.0]
    assert edge[("Q", "a")].size == 0 and edge[("R", "a")].size > 1 and edge[("P", "b")].size > 1
    frame = pd.DataFrame(rows, columns=["shard", "user_id", "item_id", "label", "a", "b"])
    expected = []
    for (shard, f), e in edge.items():
        part = frame[frame["shard"] == shard]
        x = part[f].to_numpy()
        table = pd.DataFrame({"bin": _bins(x, e), "label": part["label"].astype(str)}).value_counts()
        expected += [(shard, f, int(b), lab, int(n)) for (b, lab), n in table.items()]
    edges.unpersist()
    assert got == sorted(expected)


def test_feature_groups_must_be_features_and_disjoint(spark):
    samples = _samples(spark)
    with pytest.raises(ValueError, match="'other' is not one of the features"):
        information_gain(samples, FEATURES, groups=[["good", "other"]])
    with pytest.raises(ValueError, match="'good' is in more than one group"):
        information_gain(samples, FEATURES, groups=[["good"], ["noise", "good"]])


def test_pointwise_scores_match_a_sample_by_sample_binning_across_row_chunks(monkeypatch):
    # A hand-built model with ragged edges (a feature of shard "b" has none), checked against a
    # per-sample searchsorted binning; chunks of 7 rows make every batch cross chunk borders.
    rng = np.random.default_rng(3)
    shards, n_features, n_bins = pd.Index(["a", "b", "c"]), 4, 5
    edge_lists = {
        (s, j): np.sort(rng.choice(np.arange(-3.0, 4.0), size=rng.integers(1, n_bins), replace=False))
        for s in range(3)
        for j in range(n_features)
    }
    edge_lists[(1, 2)] = np.empty(0)
    edges = np.full((3, n_bins - 1, n_features), np.inf)
    for (s, j), e in edge_lists.items():
        edges[s, : len(e), j] = e
    terms = rng.random((3, n_features, n_bins + 1))
    g_mean = np.array([0.5, 0.0, 2.0])  # shard "b" is uninformative: its samples weigh 1
    model = ScoringModel(shards, edges, terms, g_mean)
    n = 50
    shard = pd.Series(rng.choice(["a", "b", "c", "zz", None], size=n), dtype=object)
    values = rng.choice([-np.inf, -3.0, -1.0, -0.5, 0.0, 1.0, 2.5, 3.0, 9.0, np.inf, np.nan], size=(n, n_features))
    monkeypatch.setattr(information_gain_module, "_SCORE_ROWS", 7)
    out = pointwise_scores(shard, values, model, lam=0.5)
    for i in range(n):
        s = shards.get_indexer([shard[i]])[0]
        if s < 0:
            assert (out["g"][i], out["w"][i]) == (0.0, 1.0)
            continue
        g = sum(terms[s, j, int(_bins(values[i, j], edge_lists[(s, j)])) + 1] for j in range(n_features))
        w = 1.0 + 0.5 * g / g_mean[s] if g_mean[s] > 0 else 1.0
        assert (out["g"][i], out["w"][i]) == pytest.approx((g, w), abs=1e-12)
