"""Paired Poisson bootstrap (sampleimp_spark.evaluation.bootstrap): hand cases first, then simulations.

Pure numpy; no Spark.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from sampleimp_spark.evaluation.bootstrap import (
    MULT_DTYPE,
    Comparison,
    compare,
    holm,
    marginal_interval,
    minimum_detectable_effect,
    multiplicities,
    weighted_mean_replicates,
)

Z_975 = 1.959964  # z_{0.975}
Z_80 = 0.841621  # z_{0.80}

# ----------------------------------------------------------------------------- multiplicities


def test_multiplicities_are_deterministic_and_independent_of_input_order() -> None:
    m1, idx1 = multiplicities(["c", "a", "b"], 50, seed=7)
    m2, idx2 = multiplicities(["b", "a", "c", "a", "b"], 50, seed=7)  # other order, duplicates
    m3, _ = multiplicities(["a", "b", "c"], 50, seed=7)
    assert idx1 == idx2 == {"a": 0, "b": 1, "c": 2}  # columns follow the sorted ids
    np.testing.assert_array_equal(m1, m2)
    np.testing.assert_array_equal(m1, m3)
    assert m1.shape == (50, 3)
    assert m1.dtype == MULT_DTYPE
    other_seed, _ = multiplicities(["a", "b", "c"], 50, seed=8)
    assert not np.array_equal(m1, other_seed)


def test_multiplicities_first_replicates_do_not_depend_on_n_boot() -> None:
    units = [f"u{i}" for i in range(300)]
    short, _ = multiplicities(units, 10, seed=3)
    long, _ = multiplicities(units, 40, seed=3)
    np.testing.assert_array_equal(short, long[:10])


def test_multiplicities_use_default_rng_poisson() -> None:
    # The documented generator: np.random.default_rng(seed).poisson(1, (B, U)), sorted unit columns.
    mult, _ = multiplicities(["y", "x"], 5, seed=11)
    expected = np.random.default_rng(11).poisson(1.0, size=(5, 2))
    np.testing.assert_array_equal(mult, expected)


def test_multiplicities_have_poisson_one_moments() -> None:
    mult, _ = multiplicities([str(i) for i in range(400)], 2500, seed=0)  # 10^6 draws
    x = mult.astype(np.float64)
    # SE of the mean is 1e-3, of the variance about 1.7e-3.
    assert x.mean() == pytest.approx(1.0, abs=0.005)
    assert x.var() == pytest.approx(1.0, abs=0.01)
    assert x.min() == 0
    assert np.mean(x == 0) == pytest.approx(math.exp(-1), abs=0.003)


def test_multiplicities_reject_zero_replicates() -> None:
    with pytest.raises(ValueError, match="n_boot"):
        multiplicities(["a"], 0, seed=0)


# ----------------------------------------------------------------------------- compare


def test_compare_hand_computed() -> None:
    # d = reps_a - reps_b = [0.5, 1.0, 3.0]; delta = 2.0 - 1.0 = 1.0.
    # Interval (np.quantile, method="linear": position q·(B-1) in the sorted d = [0.5, 1, 3]):
    #   q = 0.025 -> position 0.05 -> 0.5 + 0.05·(1 - 0.5) = 0.525
    #   q = 0.975 -> position 1.95 -> 1 + 0.95·(3 - 1) = 2.9
    # se = sd(d, ddof=1): mean 1.5, squared deviations 1 + 0.25 + 2.25 = 3.5, /2 -> sqrt(1.75).
    # p: the z-test with that se: 2 Φ(-1 / sqrt(1.75)) = 2 Φ(-0.755929) = 0.449692.
    # mde = (z_.975 + z_.8)·se = 2.801585·sqrt(1.75) = 3.7062...; rel_mde = mde / |1.0|.
    c = compare(2.0, 1.0, np.array([1.0, 2.0, 4.0]), np.array([0.5, 1.0, 1.0]))
    assert isinstance(c, Comparison)
    assert (c.estimate, c.reference, c.delta) == (2.0, 1.0, 1.0)
    assert c.rel_delta == pytest.approx(1.0)
    assert c.ci_low == pytest.approx(0.525)
    assert c.ci_high == pytest.approx(2.9)
    assert c.se == pytest.approx(math.sqrt(1.75))
    assert c.p_value == pytest.approx(0.449692, abs=1e-6)
    assert c.mde == pytest.approx((Z_975 + Z_80) * math.sqrt(1.75), rel=1e-6)
    assert c.rel_mde == pytest.approx(c.mde)
    assert c.n_boot == 3


def test_compare_leaves_out_non_finite_replicates() -> None:
    a = np.array([1.0, np.nan, 2.0, 4.0, 7.0])
    b = np.array([0.5, 0.3, 1.0, 1.0, np.inf])
    c = compare(2.0, 1.0, a, b)
    ref = compare(2.0, 1.0, np.array([1.0, 2.0, 4.0]), np.array([0.5, 1.0, 1.0]))
    assert c == ref
    assert c.n_boot == 3


def test_compare_p_value_formula_and_alpha() -> None:
    # delta = 0.5; se = sd(d, ddof=1) = sqrt(1.09375 / 5) = 0.467707; z = 0.5 / se = 1.069045;
    # p = 2 Φ(-1.069045) = 0.285049.
    d = np.array([0.0, 0.25, 0.5, 0.75, 1.0, 1.25])
    c = compare(1.5, 1.0, 1.0 + d, np.ones(6), alpha=0.5, power=0.9)
    assert c.se == pytest.approx(0.467707, abs=1e-6)
    assert c.p_value == pytest.approx(0.285049, abs=1e-6)
    assert (c.ci_low, c.ci_high) == pytest.approx(tuple(np.quantile(d, [0.25, 0.75])))
    assert c.mde == pytest.approx((0.6744898 + 1.2815516) * np.std(d, ddof=1), rel=1e-6)


def test_compare_zero_reference_and_zero_delta() -> None:
    c = compare(0.0, 0.0, np.array([0.1, -0.1, 0.2]), np.array([0.0, 0.1, 0.0]))
    assert c.rel_delta is None and c.rel_mde is None
    assert c.p_value == 1.0  # no difference at all
    # Constant non-zero differences (se = 0): as extreme as it gets.
    assert compare(1.0, 0.5, np.array([1.0, 2.0]), np.array([0.5, 1.5])).p_value == 0.0


def test_holm_over_a_large_family_can_reject_a_large_effect() -> None:
    """54 comparisons (three weighted variants × 18 metrics) from B = 1,000 replicates: an effect of
    6 SE survives Holm. A Monte-Carlo p-value could not: it is at least 1 / (B + 1), and
    54 / 1001 > 0.05."""
    rng = np.random.default_rng(3)
    n_boot = 1000
    ref = rng.normal(0.0, 1.0, n_boot)
    comparisons = [compare(6.0, 0.0, 6.0 + ref + rng.normal(0.0, 1.0, n_boot), ref)]
    comparisons += [compare(0.01 * i, 0.0, ref + rng.normal(0.0, 1.0, n_boot), ref) for i in range(53)]
    adjusted = holm([c.p_value for c in comparisons])
    assert adjusted[0] < 0.05, adjusted[0]
    assert (adjusted[1:] > 0.05).all()


def test_compare_with_too_few_replicates_is_nan() -> None:
    c = compare(1.0, 2.0, np.array([1.0, np.nan]), np.array([2.0, 2.0]))
    assert c.n_boot == 1
    assert math.isnan(c.se) and math.isnan(c.ci_low) and math.isnan(c.p_value) and math.isnan(c.mde)
    with pytest.raises(ValueError, match="differ in length"):
        compare(1.0, 1.0, np.zeros(3), np.zeros(4))


def test_paired_interval_is_the_interval_of_differences_not_of_marginals() -> None:
    rng = np.random.default_rng(1)
    shared = rng.normal(0.0, 1.0, 2000)  # common user effect: arms strongly correlated
    a = 10.0 + shared + rng.normal(0.0, 0.02, 2000)
    b = 9.9 + shared + rng.normal(0.0, 0.02, 2000)
    c = compare(10.0, 9.9, a, b)
    lo, hi = np.quantile(a - b, [0.025, 0.975])
    assert (c.ci_low, c.ci_high) == pytest.approx((lo, hi))
    a_lo, a_hi = marginal_interval(a)
    b_lo, b_hi = marginal_interval(b)
    # The difference of two marginal intervals (the widest interval compatible with both) ...
    naive_width = (a_hi - b_lo) - (a_lo - b_hi)
    assert c.ci_high - c.ci_low < 0.05 * naive_width
    # ... and the "bound minus bound" arithmetic (here about (0.10, 0.09), degenerate) are not it.
    assert abs(c.ci_low - (a_lo - b_lo)) > 0.03 and abs(c.ci_high - (a_hi - b_hi)) > 0.03
    assert c.ci_low > 0  # the paired interval detects the 0.1 improvement; the marginals overlap
    assert a_lo < b_hi


def test_marginal_interval() -> None:
    reps = np.array([3.0, 1.0, np.nan, 2.0])
    assert marginal_interval(reps, alpha=0.5) == pytest.approx((1.5, 2.5))  # quantiles .25/.75 of [1,2,3]
    assert all(math.isnan(x) for x in marginal_interval(np.array([np.nan])))


def test_minimum_detectable_effect() -> None:
    assert minimum_detectable_effect(1.0) == pytest.approx(Z_975 + Z_80, rel=1e-6)
    assert minimum_detectable_effect(0.5, alpha=0.1, power=0.5) == pytest.approx(0.5 * 1.6448536, rel=1e-6)
    with pytest.raises(ValueError):
        minimum_detectable_effect(1.0, power=1.0)


# ----------------------------------------------------------------------------- Holm


@pytest.mark.parametrize(
    ("p", "expected"),
    [
        # sorted: 0.005 (x4) = 0.02, 0.01 (x3) = 0.03, 0.03 (x2) = 0.06, 0.04 (x1) = 0.04 -> running max
        # 0.02, 0.03, 0.06, 0.06; back in input order [0.01, 0.04, 0.03, 0.005]:
        ([0.01, 0.04, 0.03, 0.005], [0.03, 0.06, 0.06, 0.02]),
        # sorted 0.2 (x3) = 0.6, 0.3 (x2) = 0.6, 0.5 (x1) = 0.5 -> 0.6, 0.6, 0.6
        ([0.3, 0.5, 0.2], [0.6, 0.6, 0.6]),
        # 0.6 (x2) = 1.2 -> capped at 1; 0.9 -> max(1, 0.9) = 1
        ([0.9, 0.6], [1.0, 1.0]),
        # ties: 0.01 (x3) = 0.03, 0.01 (x2) = 0.02 -> 0.03, 0.02 (x1) -> 0.03
        ([0.01, 0.02, 0.01], [0.03, 0.03, 0.03]),
        ([0.04], [0.04]),
        ([], []),
    ],
)
def test_holm_hand_cases(p: list[float], expected: list[float]) -> None:
    np.testing.assert_allclose(holm(p), expected, rtol=1e-12)


def test_holm_skips_nan() -> None:
    # m = 2 (the NaN is not a test): 0.01 (x2) = 0.02, 0.04 (x1) -> 0.04
    out = holm([0.01, float("nan"), 0.04])
    assert math.isnan(out[1])
    np.testing.assert_allclose(out[[0, 2]], [0.02, 0.04])
    assert np.all(np.isnan(holm([float("nan")])))
    with pytest.raises(ValueError):
        holm([0.5, 1.5])


def test_holm_is_monotone_and_dominates_raw_p() -> None:
    rng = np.random.default_rng(5)
    p = rng.uniform(0, 0.2, 30) ** 2
    adj = holm(p)
    order = np.argsort(p)
    assert np.all(np.diff(adj[order]) >= 0)
    assert np.all(adj >= p) and np.all(adj <= 1)
    assert adj.min() == pytest.approx(min(1.0, 30 * p.min()))
    np.testing.assert_allclose(holm(p[::-1]), adj[::-1])


# ----------------------------------------------------------------------------- weighted_mean_replicates


@pytest.mark.parametrize("weighted", [False, True])
def test_weighted_mean_replicates_matches_naive_loop(weighted: bool) -> None:
    rng = np.random.default_rng(2)
    n_units, n_rows, n_boot = 40, 150, 25  # users appear in several rows (origins, seeds)
    unit_index = rng.integers(0, n_units, n_rows)
    values = rng.normal(size=n_rows)
    weights = rng.exponential(size=n_rows) if weighted else None
    mult, _ = multiplicities([f"u{i:02d}" for i in range(n_units)], n_boot, seed=9)
    point, reps = weighted_mean_replicates(values, unit_index, mult, weights)
    w = np.ones(n_rows) if weights is None else weights
    assert point == pytest.approx(np.sum(w * values) / np.sum(w))
    naive = np.empty(n_boot)
    for b in range(n_boot):
        num = den = 0.0
        for r in range(n_rows):
            m = float(mult[b, unit_index[r]])
            num += m * w[r] * values[r]
            den += m * w[r]
        naive[b] = num / den if den > 0 else np.nan
    np.testing.assert_allclose(reps, naive, rtol=1e-12)


def test_weighted_mean_replicates_nan_when_nobody_is_drawn() -> None:
    mult = np.array([[0, 0], [1, 2], [0, 3]], dtype=MULT_DTYPE)
    values = np.array([1.0, 2.0, 4.0])
    unit_index = np.array([0, 0, 1])
    point, reps = weighted_mean_replicates(values, unit_index, mult, np.array([1.0, 1.0, 2.0]))
    # point: (1 + 2 + 8) / 4; replicate 1: (1 + 2 + 2·8) / (1 + 1 + 2·2); replicate 2: only unit 1.
    assert point == pytest.approx(11 / 4)
    assert math.isnan(reps[0])
    assert reps[1] == pytest.approx(19 / 6)
    assert reps[2] == pytest.approx(4.0)


def test_weighted_mean_replicates_validates_inputs() -> None:
    mult = np.ones((2, 2), dtype=MULT_DTYPE)
    with pytest.raises(ValueError, match="out of range"):
        weighted_mean_replicates(np.zeros(2), np.array([0, 2]), mult)
    with pytest.raises(ValueError, match="finite"):
        weighted_mean_replicates(np.array([0.0, np.nan]), np.array([0, 1]), mult)
    with pytest.raises(ValueError, match="non-negative"):
        weighted_mean_replicates(np.zeros(2), np.array([0, 1]), mult, np.array([1.0, -1.0]))


# ----------------------------------------------------------------------------- simulation


def _simulated_comparison(rng: np.random.Generator, seed: int, true_delta: float) -> Comparison:
    """Two arms on the same 120 users x 2 origins; per-user effects shared by the arms."""
    n_users, n_origins, n_boot = 120, 2, 500
    user = np.repeat(np.arange(n_users), n_origins)
    effect = rng.normal(0.0, 1.0, n_users)[user]  # shared: makes the arms correlated
    va = effect + true_delta + rng.normal(0.0, 0.5, user.size)
    vb = effect + rng.normal(0.0, 0.5, user.size)
    mult, index = multiplicities([f"user{u}" for u in range(n_users)], n_boot, seed=seed)
    unit_index = np.array([index[f"user{u}"] for u in user])
    pa, ra = weighted_mean_replicates(va, unit_index, mult)
    pb, rb = weighted_mean_replicates(vb, unit_index, mult)
    return compare(pa, pb, ra, rb)


def test_coverage_of_the_paired_interval_under_the_null() -> None:
    rng = np.random.default_rng(2024)
    results = [_simulated_comparison(rng, seed, true_delta=0.0) for seed in range(200)]
    coverage = np.mean([c.ci_low <= 0.0 <= c.ci_high for c in results])
    rejections = np.mean([c.p_value < 0.05 for c in results])
    assert 0.90 <= coverage <= 0.99, coverage
    assert rejections <= 0.10, rejections


def test_a_large_true_difference_is_detected() -> None:
    rng = np.random.default_rng(7)
    results = [_simulated_comparison(rng, seed, true_delta=0.3) for seed in range(20)]
    # sd of a user's mean difference is 0.5, so se ~ 0.5 / sqrt(120) = 0.046 and MDE ~ 0.13 < 0.3.
    assert all(c.p_value < 0.01 and c.ci_low > 0 for c in results)
    assert all(c.mde < 0.3 for c in results)


def test_a_classification_metric_pools_the_cells_where_it_is_defined() -> None:
    """An origin without a buyer (its point and replicates undefined) and a replicate that drew no
    buyer of an origin leave the pooled value and that replicate to the defined cells, not NaN."""
    from sampleimp_spark.training.protocol import _pooled_over_cells

    nan = float("nan")
    cells = [
        (0.5, np.array([0.4, nan, 0.6])),
        (nan, np.array([nan, nan, nan])),
        (0.3, np.array([0.2, 0.3, nan])),
    ]
    point, reps = _pooled_over_cells(cells)
    assert point == pytest.approx(0.4)
    np.testing.assert_allclose(reps, [0.3, 0.3, 0.6])
    point, reps = _pooled_over_cells([(nan, np.array([nan, nan]))])
    assert math.isnan(point) and np.isnan(reps).all()
