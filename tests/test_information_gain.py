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
from scipy import stats
from sklearn.metrics import mutual_info_score

from sampleimp_spark import schema as S
from sampleimp_spark.config import InformationGainConfig
from sampleimp_spark.weighting import information_gain as information_gain_module
from sampleimp_spark.weighting.information_gain import (
    NAN_BIN,
    ScoringModel,
    cluster_sums,
    design_effect,
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
    out = shard_information_gain(_counts("s", data, y), smoothing=0.0, null_alpha=1.0, miller_madow=False)
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


def _prior(counts: pd.DataFrame, other: str | None = None) -> pd.DataFrame:
    """A global class table: the shard's own counts, with one more class ``other`` if given."""
    table = counts.query(f"feature == '{counts['feature'].iloc[0]}'").groupby("label", as_index=False)["count"].sum()
    if other is not None:
        table = pd.concat([table, pd.DataFrame({"label": [other], "count": [50]})], ignore_index=True)
    return table.assign(fold=-1)


def test_m_estimates_shrink_toward_the_shard_prior_and_it_toward_the_global_one_by_hand():
    # bins x0, x1; classes 0, 1; counts [[3, 1], [0, 2]]; global prior (0.9, 0.1); m = 2.
    counts = pd.DataFrame(
        {"shard": "s", "feature": "f", "bin": [0, 0, 1], "label": ["0", "1", "1"], "count": [3, 1, 2]}
    )
    prior = pd.DataFrame({"fold": -1, "label": ["0", "1"], "count": [90, 10]})
    out = shard_information_gain(counts, smoothing=2.0, prior=prior).sort_values("bin")
    shard_prior = (np.array([3, 3]) + 2 * np.array([0.9, 0.1])) / (6 + 2)  # (0.6, 0.4)
    p = (np.array([[3, 1], [0, 2]]) + 2 * shard_prior) / (np.array([[4], [2]]) + 2)  # (0.7, 0.3), (0.3, 0.7)
    kl = [sum(p[i, j] * math.log(p[i, j] / shard_prior[j]) for j in range(2)) for i in range(2)]
    ig = (4 * kl[0] + 2 * kl[1]) / 6
    np.testing.assert_allclose(p, [[0.7, 0.3], [0.3, 0.7]], atol=1e-12)
    assert out["kl"].tolist() == pytest.approx(kl, abs=1e-12)
    assert out["ig"].tolist() == pytest.approx([ig, ig], abs=1e-12)
    assert out["n_bin"].tolist() == [4, 2]
    # One feature: its contrib is its KL, and g_mean the sample-weighted mean KL.
    assert out["contrib"].tolist() == pytest.approx(kl, abs=1e-12)
    assert out["g_mean"].iloc[0] == pytest.approx(ig, abs=1e-12)


def test_g_test_with_williams_correction_and_holm_gate_the_ig_by_hand():
    # f: [[30, 10], [10, 30]] (dependent); z: [[20, 20], [20, 20]] (independent), N = 80.
    counts = pd.DataFrame(
        {
            "shard": "s",
            "feature": ["f"] * 4 + ["z"] * 4,
            "bin": [0, 0, 1, 1] * 2,
            "label": ["0", "1"] * 4,
            "count": [30, 10, 10, 30, 20, 20, 20, 20],
        }
    )
    g, _, df, _ = stats.chi2_contingency([[30, 10], [10, 30]], correction=False, lambda_="log-likelihood")
    q = 1 + (80 * (1 / 40 + 1 / 40) - 1) * (80 * (1 / 40 + 1 / 40) - 1) / (6 * 80 * df)  # Williams
    p_f = stats.chi2.sf(g / q, df)
    out = shard_information_gain(counts, smoothing=0.0, null_alpha=0.05).drop_duplicates("feature")
    got = out.set_index("feature")
    assert got.loc["f", "p_value"] == pytest.approx(min(1.0, 2 * p_f), rel=1e-9)  # Holm over 2 features
    assert got.loc["z", "p_value"] == 1.0
    assert got.loc["f", "ig"] == pytest.approx(g / (2 * 80), abs=1e-12)  # plug-in IG = G / 2N
    assert got.loc["z", "ig"] == 0.0
    # At a level the Holm-adjusted p-value misses, f is gated too: no feature informs, g is 0.
    strict = shard_information_gain(counts, smoothing=0.0, null_alpha=min(1.0, 2 * p_f) / 2)
    assert (strict[["ig", "contrib", "g_mean"]] == 0.0).all().all()


def test_each_fold_is_scored_by_the_fit_on_the_other_folds():
    rng = np.random.default_rng(4)
    n = 900
    y = (rng.random(n) < 0.2).astype(int)
    data = {"a": np.where(rng.random(n) < 0.5, y * 3, rng.integers(0, 4, n)), "b": rng.integers(0, 3, n)}
    fold = rng.integers(0, 3, n)
    frames = [
        pd.DataFrame({"feature": f, "bin": x, "label": y.astype(str), "fold": fold}).value_counts().rename("count")
        for f, x in data.items()
    ]
    counts = pd.concat([f.reset_index() for f in frames], ignore_index=True).assign(shard="s")
    prior = counts.query("feature == 'a'").groupby(["fold", "label"], as_index=False)["count"].sum()
    prior = pd.concat([prior, pd.DataFrame({"fold": [0, 1, 2], "label": "1", "count": [40, 5, 9]})])  # other shards
    out = shard_information_gain(counts, prior=prior, smoothing=10.0, null_alpha=0.05)
    assert sorted(out["fold"].unique()) == [-1, 0, 1, 2]
    # Which features count is decided once, on all the samples: every fold's rows carry that p-value.
    gate = out[out["fold"] == -1].drop_duplicates("feature").set_index("feature")["p_value"]
    assert (out["p_value"] == out["feature"].map(gate)).all()
    kept = set(gate[gate <= 0.05].index)
    assert kept == {"a"}  # b is noise
    columns = ["feature", "bin", "n_bin", "kl"]
    for k in (0, 1, 2):
        others = counts[counts["fold"] != k].drop(columns="fold")
        fit = shard_information_gain(others, prior=prior[prior["fold"] != k].drop(columns="fold"), smoothing=10.0)
        mine = out[out["fold"] == k].reset_index(drop=True)
        pd.testing.assert_frame_equal(mine[columns], fit[columns].reset_index(drop=True), check_dtype=False)
        # The kept feature's IG is the other folds' own; a gated feature has none, and no term.
        ig = mine.drop_duplicates("feature").set_index("feature")["ig"]
        assert ig["a"] == pytest.approx(fit.drop_duplicates("feature").set_index("feature")["ig"]["a"], abs=1e-12)
        assert ig["b"] == 0.0 and (mine.loc[mine["feature"] == "b", "contrib"] == 0.0).all()
        # g_mean is the mean of g over fold k's own samples under that fit.
        own = counts[counts["fold"] == k].groupby(["feature", "bin"])["count"].sum()
        contrib = mine.set_index(["feature", "bin"])["contrib"]
        expected = (own * contrib.reindex(own.index, fill_value=0.0)).sum() / (fold == k).sum()
        assert mine["g_mean"].iloc[0] == pytest.approx(expected, abs=1e-12)
    whole = shard_information_gain(
        counts.drop(columns="fold"), prior=prior.drop(columns="fold"), smoothing=10.0, null_alpha=0.05
    )
    columns += ["ig", "p_value", "rank", "n"]
    pd.testing.assert_frame_equal(
        out[out["fold"] == -1][columns].reset_index(drop=True), whole[columns], check_dtype=False
    )
    with pytest.raises(ValueError, match="needs its fold column"):
        shard_information_gain(counts, prior=prior.drop(columns="fold"))


def _clustered_noise(seed: int, *, users: int = 1000, per_user: int = 3) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A shard of users' samples whose 10 features are the user's (shared by all the user's samples)
    and pure noise, with labels that cluster by user (a propensity ~ Beta(0.3, 2.7) per user):
    the contingency counts and the users' cluster sums."""
    rng = np.random.default_rng(seed)
    user = np.repeat(np.arange(users), per_user)
    y = (rng.random(len(user)) < rng.beta(0.3, 2.7, users)[user]).astype(int)
    x = rng.normal(size=(users, 10))[user]
    edges = quantile_edges(x, 10)
    counts = _counts("s", {f"x{j}": np.searchsorted(edges[j], x[:, j]) for j in range(10)}, y)
    per_class = pd.DataFrame({"u": user, "label": y.astype(str)}).value_counts().rename("n_uc").reset_index()
    per_class["n_u"] = per_class["u"].map(pd.Series(user).value_counts())
    per_class = per_class.assign(n2=per_class["n_uc"] ** 2, n_nu=per_class["n_uc"] * per_class["n_u"])
    sums = per_class.groupby("label", as_index=False)[["n_uc", "n2", "n_nu"]].sum().rename(columns={"n_uc": "n"})
    return counts, sums.assign(nu2=users * per_user**2, users=users)


def test_the_null_test_holds_its_level_when_a_users_samples_share_features_and_labels():
    """40 shards of clustered noise: without the design effect, the G-test (which takes the
    samples as independent) lets a noise feature through in most shards; with it, in about
    null_alpha of them."""
    passed = {"independent": 0, "clustered": 0}
    for seed in range(40):
        counts, sums = _clustered_noise(seed)
        for name, clusters in (("independent", None), ("clustered", sums)):
            out = shard_information_gain(counts, smoothing=10.0, null_alpha=0.05, clusters=clusters)
            passed[name] += bool((out["ig"] > 0).any())
    assert passed["independent"] >= 16, passed  # the defect: 19 of 40 here
    assert passed["clustered"] <= 6, passed  # 0 of 40 here; 0.05 x 40 = 2 expected


def test_design_effect_by_hand():
    # Two users: (3 samples, 3 positives), (1 sample, 0 positives); N = 4, p = 0.75, U = 2.
    sums = pd.DataFrame({"label": ["1", "0"], "n": [3, 1], "n2": [9, 1], "n_nu": [9, 1], "nu2": 10, "users": 2})
    spread = (3 - 0.75 * 3) ** 2 + (0 - 0.75 * 1) ** 2  # Σ_u (n_u1 - p n_u)²
    assert design_effect(sums) == pytest.approx(spread / (4 * 0.75 * 0.25) * 2 / 1, abs=1e-12)
    # One sample per user: no clustering, the design effect is 1 (up to the U / (U - 1) of the estimate).
    y = np.random.default_rng(0).random(5000) < 0.1
    one_each = pd.DataFrame(
        {"label": ["1", "0"], "n": [y.sum(), (~y).sum()], "n2": [y.sum(), (~y).sum()], "n_nu": [y.sum(), (~y).sum()]}
    )
    assert design_effect(one_each.assign(nu2=5000, users=5000)) == pytest.approx(1.0, abs=1e-3)
    assert design_effect(None) == 1.0


def test_a_one_row_bin_does_not_hide_a_strong_feature():
    """Williams' correction grows with 1 / n_x: one NaN row in a bin of its own made a feature with
    p ~ 1e-7 fail. Bins under MIN_TEST_BIN are pooled for the test."""
    rng = np.random.default_rng(2)
    n = 100_000
    x = rng.integers(0, 10, n)
    y = (rng.random(n) < np.where(x == 9, 0.007, 0.002)).astype(int)
    x[0] = NAN_BIN  # one sample in the NaN bin
    out = shard_information_gain(_counts("s", {"f": x}, y), smoothing=0.0, null_alpha=0.05)
    assert out["p_value"].iloc[0] < 1e-4 and out["ig"].iloc[0] > 0


def test_a_strong_feature_passes_the_null_test_and_noise_features_do_not():
    """A shard of 3,000 samples at a 1 % base rate: one feature puts positives 8x as often in its top
    bin, 30 features are noise. The strong feature is first and kept; every noise feature gets IG 0,
    although the largest noise IG is a third of the strong one's (plug-in)."""
    rng = np.random.default_rng(0)
    n = 3000
    strong = rng.integers(0, 10, n)
    y = (rng.random(n) < np.where(strong == 9, 0.05, 0.006)).astype(int)
    data = {"strong": strong, **{f"noise{j:02d}": rng.integers(0, 10, n) for j in range(30)}}
    counts = _counts("s", data, y)
    plugin = _ig(shard_information_gain(counts, smoothing=0.0, null_alpha=1.0))
    assert max(v for f, v in plugin.items() if f != "strong") > plugin["strong"] / 3
    out = shard_information_gain(counts, smoothing=10.0, null_alpha=0.05).drop_duplicates("feature")
    got = out.set_index("feature")
    assert got.loc["strong", "rank"] == 1 and got.loc["strong", "ig"] > 0 and got.loc["strong", "p_value"] < 0.05
    assert (got.drop(index="strong")["ig"] == 0.0).all()


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
    got = _ig(shard_information_gain(counts, smoothing=0.0, miller_madow=True))["f"]
    assert got == pytest.approx(plugin - (5 - 3 - 2 + 1) / 20, abs=1e-12)
    # A weak feature: the correction overshoots and the IG is clipped at 0.
    weak = pd.DataFrame(
        {"shard": "s", "feature": "f", "bin": [0, 0, 1, 1], "label": ["0", "1", "0", "1"], "count": [5, 4, 4, 5]}
    )
    assert _ig(shard_information_gain(weak, smoothing=0.0, miller_madow=True))["f"] == 0.0


def test_single_class_and_one_row_shards_score_zero():
    one_class = _counts("s", {"a": np.array([0, 1, 1, 2]), "b": np.array([5, 5, 6, 6])}, np.array([1, 1, 1, 1]))
    one_row = _counts("t", {"a": np.array([3])}, np.array([0]))
    for counts in (one_class, one_row):
        out = shard_information_gain(counts, smoothing=10.0, miller_madow=True, prior=_prior(one_class, "0"))
        assert (out[["ig", "kl", "contrib", "g_mean"]] == 0.0).all().all() and (out["p_value"] == 1.0).all()
    out = shard_information_gain(one_class, smoothing=10.0)
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
    result = information_gain(samples, FEATURES, n_bins=4, smoothing=0.0, null_alpha=1.0)
    weighted = with_ig_weight(samples, result, lam=2.0).withColumn("fold", result.fold()).toPandas()
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
    bins = fitted["bins"].query("fold == -1")
    tied = bins[(bins["shard"] == "A") & (bins["feature"] == "tied")].sort_values("bin")
    assert tied[["bin", "n_bin"]].values.tolist() == [[0, 200], [1, 100]]
    samples = fitted["samples"].query("shard == 'A'")
    imp = fitted["importance"].set_index(["shard", "feature"])["ig"]
    assert imp[("A", "tied")] == pytest.approx(mutual_info_score(samples["label_purchase"], samples["tied"]), abs=1e-9)


def test_nan_gets_its_own_bin_and_inf_is_clamped(spark, fitted):
    bins = fitted["bins"].query("fold == -1")
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
        [(s, f, 0.0, 1.0, r, n) for s, n in (("B", 20), ("C", 1)) for r, f in enumerate(FEATURES, 1)],
        "shard string, feature string, ig double, p_value double, rank int, n long",
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
    lam = 2.0
    # Over each fold of a shard the mean is 1 + lam where the fold's fit informs (g_mean > 0), else 1.
    g_mean = fitted["bins"].query("fold >= 0").drop_duplicates(["shard", "fold"]).set_index(["shard", "fold"])["g_mean"]
    means = w.groupby(["shard", "fold"])["w_ig"].mean()
    expected = {key: 1 + lam if g_mean.get(key, 0.0) > 0 else 1.0 for key in means.index}
    assert means.to_dict() == pytest.approx(expected, abs=1e-9)
    assert set(g_mean[g_mean > 0].index.get_level_values(0)) == {"A", "D"}
    assert all(g_mean[("A", k)] > 0 for k in w.query("shard == 'A'")["fold"].unique())
    assert w.groupby("shard")["w_ig"].mean()["A"] == pytest.approx(1 + lam, abs=1e-9)
    # Samples in more informative bins get larger weights: in A, the weight rises with |good|.
    a = w.query("shard == 'A'")
    assert a["w_ig"].std() > 0


def test_pointwise_score_is_the_ig_weighted_sum_of_its_bins_terms(fitted):
    # Independent recomputation of g from the edges and the per-bin terms, sample by sample.
    samples, bins, weighted = fitted["samples"], fitted["bins"], fitted["weighted"]
    edge = {(r.shard, r.feature): np.asarray(r.edges, dtype=float) for r in fitted["edges"].itertuples()}
    term = {(r.shard, r.fold, r.feature, r.bin): r.contrib for r in bins.itertuples()}
    fold = weighted.set_index(["shard", "user_id", "item_id"])["fold"]
    expected = []
    for row in samples.itertuples():
        g = 0.0
        k = fold[(row.shard, row.user_id, row.item_id)]
        for f in FEATURES:
            x = getattr(row, f)
            b = int(_bins(x, edge[(row.shard, f)]))
            g += term.get((row.shard, k, f, b), 0.0)  # a bin its fit did not see scores 0
        expected.append(g)
    assert len(set(fold)) == 5  # every fold is scored, each by its own fit
    got = weighted.set_index(["shard", "user_id", "item_id"])["ig_score"]
    want = pd.Series(expected, index=pd.MultiIndex.from_frame(samples[["shard", "user_id", "item_id"]]))
    assert got.sort_index().to_numpy() == pytest.approx(want.sort_index().to_numpy(), abs=1e-12)
    assert weighted["ig_score"].max() > 0


def test_samples_of_an_unfitted_shard_weigh_one(spark):
    samples = _samples(spark).where("shard = 'A'")
    result = information_gain(samples, FEATURES, n_bins=4, smoothing=0.0, null_alpha=1.0)
    extra = spark.createDataFrame([("Z", "u0", "z0", 1, 5.0, 5.0, 5.0)], SAMPLES_SCHEMA)
    out = with_ig_weight(samples.unionByName(extra), result, lam=1.0).toPandas()
    result.unpersist()
    assert len(out) == 301 and out.loc[out["shard"] == "A", "w_ig"].mean() == pytest.approx(2.0, abs=1e-9)
    z = out[out["shard"] == "Z"].iloc[0]
    assert (z["ig_score"], z["w_ig"]) == (0.0, 1.0)


@pytest.mark.slow
def test_scoring_keeps_the_samples_in_place_and_scores_a_large_model_in_parts(spark, monkeypatch):
    samples = spark.createDataFrame(_rows(), SAMPLES_SCHEMA)
    result = information_gain(samples, FEATURES, n_bins=4, smoothing=0.0)
    keys = ["user_id", "item_id", "shard"]
    unfitted = spark.createDataFrame([("Z", "u9", "z9", 1, 0.1, 0.2, 0.3)], SAMPLES_SCHEMA)
    scored = samples.unionByName(unfitted)  # a sample of a shard the fit has not seen: w_ig 1
    try:
        # Scored where the samples are: no shuffle and no join back on the sample keys.
        plan = with_ig_weight(samples, result, lam=1.0)._jdf.queryExecution().executedPlan().toString()
        assert "Exchange" not in plan and "Join" not in plan and plan.count("ArrowEvalPython") == 1
        expected = with_ig_weight(scored, result, lam=1.0).toPandas().sort_values(keys).reset_index(drop=True)
        assert len(expected) == 334 and expected.loc[expected["shard"] == "Z", "w_ig"].tolist() == [1.0]
        # 4 shards x 3 features x (3 edges + 5 folds x 5 terms) = 336 values, 84 per shard: above
        # 335, parts of 3 shards and 1; above 168, of 2 and 2. Every sample once, scored as before.
        for cap, n_parts in ((335, 2), (168, 2), (84, 4)):
            monkeypatch.setattr(information_gain_module, "MAX_MODEL_CELLS", cap)
            plan = with_ig_weight(samples, result, lam=1.0)._jdf.queryExecution().executedPlan().toString()
            assert plan.count("ArrowEvalPython") == n_parts and "Exchange" not in plan, cap
            got = with_ig_weight(scored, result, lam=1.0).toPandas().sort_values(keys).reset_index(drop=True)
            pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=1e-12)
        # More parts than the driver may hold, or one shard's model above a part, is refused.
        monkeypatch.setattr(information_gain_module, "MAX_MODEL_PARTS", 3)
        with pytest.raises(ValueError, match=r"= 336 values \(84 per shard\), above 3 parts of 84"):
            with_ig_weight(scored, result, lam=1.0)
        monkeypatch.setattr(information_gain_module, "MAX_MODEL_PARTS", 4)
        monkeypatch.setattr(information_gain_module, "MAX_MODEL_CELLS", 83)
        with pytest.raises(ValueError, match=r"\(84 per shard\), above 4 parts of 83"):
            with_ig_weight(scored, result, lam=1.0)
    finally:
        result.unpersist()


def test_pointwise_scores_without_a_fitted_shard_weigh_one():
    empty = ScoringModel(pd.Index([], dtype=object), np.empty((0, 3, 2)), np.empty((0, 5, 2, 5)), np.empty((0, 5)))
    out = pointwise_scores(pd.Series(["a", None]), np.array([0, 1]), np.array([[1.0, np.nan], [0.0, 2.0]]), empty, 1.0)
    assert out.to_dict("list") == {"g": [0.0, 0.0], "w": [1.0, 1.0]}


def test_smoothing_and_miller_madow_shrink_the_plugin_ig(spark, fitted):
    samples = _samples(spark).where("shard = 'A'")
    plugin = fitted["importance"].set_index(["shard", "feature"]).loc[("A", "noise"), "ig"]
    ig = {}
    for name, settings in {
        "mm": {"n_bins": 4, "smoothing": 0.0, "miller_madow": True, "null_alpha": 1.0},
        "m_estimate": {"n_bins": 4, "smoothing": 5.0, "miller_madow": False, "null_alpha": 1.0},
    }.items():
        result = information_gain(samples, ["noise"], **settings)
        ig[name] = result.importance.collect()[0]["ig"]
        result.unpersist()
    # Plug-in MI of 4 bins x 2 classes on 300 rows, minus (8 - 4 - 2 + 1) / 600, clipped at 0.
    assert ig["mm"] == pytest.approx(max(plugin - 3 / 600, 0.0), abs=1e-12)
    assert 0.0 < ig["m_estimate"] < plugin


def test_custom_column_names_and_bad_inputs(spark):
    rows = [("x", i % 2, float(1 - i % 2), i) for i in range(40)]  # f.1 = 1 - y: it tells y exactly
    df = spark.createDataFrame(rows, "cat string, y int, `f.1` double, k int")
    keys = {"key_cols": ["k"], "fold_cols": ["k"], "label_col": "y", "shard_col": "cat"}
    result = information_gain(df, ["f.1"], n_bins=2, smoothing=0.0, **keys)
    got = result.importance.collect()[0].asDict()
    assert got.pop("p_value") < 1e-9
    assert got == {"cat": "x", "feature": "f.1", "ig": pytest.approx(math.log(2), abs=1e-12), "rank": 1, "n": 40}
    out = with_ig_weight(df, result, ["f.1"], lam=0.0, shard_col="cat", weight_col=S.W_IG)
    assert [r[S.W_IG] for r in out.collect()] == [1.0] * 40  # lambda = 0
    # A non-string shard column: the shard is compared as a string throughout.
    int_shard = df.withColumn("cat", F.lit(7))
    result = information_gain(int_shard, ["f.1"], n_bins=2, smoothing=0.0, **keys)
    out = with_ig_weight(int_shard, result, lam=1.0, shard_col="cat").toPandas()
    result.unpersist()
    assert out["cat"].tolist() == [7] * 40 and out[S.W_IG].mean() == pytest.approx(2.0, abs=1e-12)
    with pytest.raises(ValueError, match="differ"):
        with_ig_weight(df, result, ["y"], lam=0.0, shard_col="cat")
    with pytest.raises(TypeError, match="numeric"):
        information_gain(df, ["cat"], n_bins=2, smoothing=0.0, label_col="y", shard_col="cat")
    with pytest.raises(ValueError, match="not in the samples"):
        information_gain(df, ["nope"], n_bins=2, smoothing=0.0, label_col="y", shard_col="cat")
    with pytest.raises(ValueError, match="at least 2 folds"):
        information_gain(df, ["f.1"], folds=1, label_col="y", shard_col="cat")


def test_config_is_strict():
    assert InformationGainConfig() == InformationGainConfig(
        n_bins=10, smoothing=10.0, null_alpha=0.05, folds=5, miller_madow=False, lam=1.0
    )
    bad_values = [{"n_bins": 1}, {"n_bins": 101}, {"smoothing": -0.1}, {"lam": -1.0}, {"bins": 5}]
    bad_values += [{"folds": 1}, {"null_alpha": 0.0}, {"null_alpha": 1.5}]
    for bad in bad_values:
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
    fold = information_gain_module.fold_of([F.col("user_id")], folds=3, seed=0)
    samples = samples.withColumn("fold", fold)
    got = module._counts(
        samples, feats, edges, shard_col="shard", label_col="label_purchase", n_bins=4, groups=groups, fold=fold
    )
    got = sorted(tuple(r) for r in got.collect())
    columns = ["shard", "user_id", "item_id", "label_purchase", "fold", "a", "b"]
    rows = [tuple(r) for r in samples.select(*columns).collect()]
    edge = {(r["shard"], feats[r[module._FIDX]]): np.asarray(r["edges"], dtype=float) for r in edges.collect()}
    assert edge[("P", "a")].tolist() == [2.0] and edge[("Q", "b")].tolist() == [7.0]
    assert edge[("Q", "a")].size == 0 and edge[("R", "a")].size > 1 and edge[("P", "b")].size > 1
    frame = pd.DataFrame(rows, columns=["shard", "user_id", "item_id", "label", "fold", "a", "b"])
    assert frame["fold"].nunique() == 3
    expected = []
    for (shard, f), e in edge.items():
        part = frame[frame["shard"] == shard]
        x = part[f].to_numpy(dtype=float)
        table = pd.DataFrame({"fold": part["fold"], "bin": _bins(x, e), "label": part["label"].astype(str)})
        expected += [(shard, int(k), f, int(b), lab, int(n)) for (k, b, lab), n in table.value_counts().items()]
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
    terms = rng.random((3, 2, n_features, n_bins + 1))  # two folds
    g_mean = np.array([[0.5, 0.7], [0.0, 0.0], [2.0, 0.0]])  # shard "b" and c's fold 1 are uninformative
    model = ScoringModel(shards, edges, terms, g_mean)
    n = 60
    shard = pd.Series(rng.choice(["a", "b", "c", "zz", None], size=n), dtype=object)
    fold = rng.choice([0, 1, 1, 2], size=n)  # fold 2 is not in the model
    values = rng.choice([-np.inf, -3.0, -1.0, -0.5, 0.0, 1.0, 2.5, 3.0, 9.0, np.inf, np.nan], size=(n, n_features))
    monkeypatch.setattr(information_gain_module, "_SCORE_ROWS", 7)
    out = pointwise_scores(shard, fold, values, model, lam=0.5)
    for i in range(n):
        s, k = shards.get_indexer([shard[i]])[0], fold[i]
        if s < 0 or k > 1:
            assert (out["g"][i], out["w"][i]) == (0.0, 1.0)
            continue
        g = sum(terms[s, k, j, int(_bins(values[i, j], edge_lists[(s, j)])) + 1] for j in range(n_features))
        w = 1.0 + 0.5 * g / g_mean[s, k] if g_mean[s, k] > 0 else 1.0
        assert (out["g"][i], out["w"][i]) == pytest.approx((g, w), abs=1e-12)


def _old_laplace_weights(frame: pd.DataFrame, edges: pd.DataFrame, feats: list[str]) -> np.ndarray:
    """``w_ig`` (λ = 1) as the weights stage computed it before cross-fitting: Laplace α = 1 on the
    joint table of *all* samples, each sample scored in-sample (its own label counted in its bin).
    The oracle of the defect, re-implemented here from the raw samples."""
    edge = {(r.shard, r.feature): np.asarray(r.edges, dtype=float) for r in edges.itertuples()}
    w = np.ones(len(frame))
    for shard, part in frame.groupby("shard"):
        y = part["label_purchase"].to_numpy()
        igs, kls = [], []
        for f in feats:
            b = _bins(part[f].to_numpy(), edge[(shard, f)])
            seen, b = np.unique(b, return_inverse=True)
            n_xy = np.zeros((len(seen), 2))
            np.add.at(n_xy, (b, y), 1)
            total = len(y) + 2 * len(seen)
            p_xy = (n_xy + 1) / total
            p_x, p_y = p_xy.sum(axis=1), p_xy.sum(axis=0)
            igs.append(float((p_xy * np.log(p_xy / np.outer(p_x, p_y))).sum()))
            p_y_x = p_xy / p_x[:, None]
            kls.append((p_y_x * np.log(p_y_x / p_y)).sum(axis=1)[b])
        g = sum(ig / sum(igs) * kl for ig, kl in zip(igs, kls, strict=True))
        w[part.index] = 1.0 + g / g.mean()
    return w


@pytest.mark.slow
def test_with_noise_features_the_weights_are_independent_of_the_label(spark):
    """The simulation that justifies the design: 16 shards of 1,000 samples (3 per user) at a 0.5 %
    base rate, 10 features that are pure noise. Without the null test, the cross-fitted ``w_ig``
    averages the same for positives and negatives; the old estimator (Laplace α = 1, in-sample)
    gives positives far more weight on the same samples. With the null test (the default), no
    feature informs at all."""
    rng = np.random.default_rng(21)
    feats = [f"x{j}" for j in range(10)]
    n = 16_000
    frame = pd.DataFrame(
        {
            "shard": np.repeat([f"s{k:02d}" for k in range(16)], n // 16),
            "user_id": [f"u{i // 3}" for i in range(n)],
            "item_id": [f"i{i}" for i in range(n)],
            "label_purchase": (rng.random(n) < 0.005).astype(int),
            **{f: rng.normal(size=n).round(2) for f in feats},
        }
    )
    samples = spark.createDataFrame(frame).repartition(2)
    y = frame["label_purchase"].to_numpy() == 1
    codes, users = pd.factorize(frame["user_id"])
    draws = [np.bincount(rng.integers(0, len(users), len(users)), minlength=len(users))[codes] for _ in range(200)]

    def ratio(w: np.ndarray, take: np.ndarray | None = None) -> float:
        t = np.ones(len(w)) if take is None else take
        return float(((w * t)[y].sum() / t[y].sum()) / ((w * t)[~y].sum() / t[~y].sum()))

    def band(w: np.ndarray) -> float:
        """Two standard errors of the ratio (bootstrap over users)."""
        return 2 * float(np.std([ratio(w, take) for take in draws]))

    # No null test: cross-fitting alone must make the weights independent of the label.
    result = information_gain(samples, feats, null_alpha=1.0)
    scored = with_ig_weight(samples, result, lam=1.0).select("item_id", "w_ig").toPandas()
    edges = result.edges.toPandas()
    result.unpersist()
    w = scored.set_index("item_id")["w_ig"].reindex(frame["item_id"]).to_numpy()
    old = _old_laplace_weights(frame, edges, feats)
    assert w.std() > 0.05 and old.std() > 0.05  # both weights vary
    assert abs(ratio(w) - 1.0) < band(w), (ratio(w), band(w))
    # The same check catches the old estimator: its positives weigh more, beyond sampling noise.
    assert ratio(old) - 1.0 > band(old), (ratio(old), band(old))
    # With the null test, no noise feature keeps any importance: every weight is 1.
    gated = information_gain(samples, feats)
    imp = gated.importance.toPandas()
    weights = with_ig_weight(samples, gated, lam=1.0).select("w_ig").toPandas()["w_ig"]
    gated.unpersist()
    assert (imp["ig"] == 0.0).all() and (imp["p_value"] > 0.05).all()
    assert (weights == 1.0).all()


def test_cluster_sums_are_the_users_sums_per_shard_and_class(spark):
    samples = _samples(spark)
    got = cluster_sums(samples, shard_col="shard", label_col="label_purchase", cluster_cols=["user_id"]).toPandas()
    frame = pd.DataFrame(_rows(), columns=[c.split()[0] for c in SAMPLES_SCHEMA.split(", ")])
    frame["label"] = frame["label_purchase"].astype(str)
    per_class = frame.groupby(["shard", "user_id", "label"]).size().rename("n_uc").reset_index()
    n_u = frame.groupby(["shard", "user_id"]).size().rename("n_u")
    per_class = per_class.join(n_u, on=["shard", "user_id"])
    expected = per_class.assign(n2=per_class["n_uc"] ** 2, n_nu=per_class["n_uc"] * per_class["n_u"])
    expected = expected.groupby(["shard", "label"])[["n_uc", "n2", "n_nu"]].sum().rename(columns={"n_uc": "n"})
    shard_sums = n_u.groupby("shard").agg(nu2=lambda v: int((v**2).sum()), users="size")
    expected = expected.join(shard_sums, on="shard").reset_index().sort_values(["shard", "label"], ignore_index=True)
    got = got.sort_values(["shard", "label"], ignore_index=True)[expected.columns]
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)
