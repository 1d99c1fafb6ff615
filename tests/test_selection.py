"""The weighting to ship: chosen on validation only when it beats unweighted beyond its paired interval."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sampleimp_spark import schema as S
from sampleimp_spark.training.selection import select_weighting

USERS = [f"u{i:03d}" for i in range(300)]


def _ndcg(values: np.ndarray) -> pd.Series:
    return pd.Series(values, index=pd.Index(USERS, name=S.USER_ID))


def _oof(rng: np.random.Generator, skill: float) -> pd.DataFrame:
    """Two samples per user; ``skill`` > 0 ranks positives higher, < 0 lower."""
    users = np.repeat(USERS, 2)
    y = (rng.random(len(users)) < 0.1).astype(np.int64)
    p = 1 / (1 + np.exp(-(skill * (2 * y - 1) + rng.normal(0, 1, len(y)))))
    items = np.tile(["a", "b"], len(USERS))
    return pd.DataFrame({S.USER_ID: users, S.ITEM_ID: items, S.LABEL_PURCHASE: y, S.PROBABILITY: p})


def _base(rng: np.random.Generator) -> np.ndarray:
    return rng.beta(0.5, 3.0, len(USERS))


def test_a_variant_that_helps_every_user_is_shipped():
    rng = np.random.default_rng(1)
    base = _base(rng)
    gbt = _oof(rng, 1.0)
    out = select_weighting(
        {"unweighted": _ndcg(base), "time": _ndcg(base + 0.02), "combined": _ndcg(base + rng.normal(0, 0.05, 300))},
        {"unweighted": gbt, "time": gbt, "combined": gbt},
        n_boot=300,
        seed=0,
    )
    assert out.chosen == "time" and "time: ALS NDCG@k Δ +0.0200" in out.reason
    rows = pd.DataFrame(out.candidates)
    assert set(zip(rows["family"], rows["variant"], strict=True)) == {
        (f, v) for f in ("als", "gbt") for v in ("unweighted", "time", "combined")
    }
    assert rows.loc[rows["chosen"], "variant"].unique().tolist() == ["time"]
    time = rows[(rows["family"] == "als") & (rows["variant"] == "time")].iloc[0]
    assert time["delta"] == pytest.approx(0.02) and time["delta_ci_low"] > 0
    assert rows.loc[rows["variant"] == "unweighted", "delta"].isna().all()


def test_noise_ships_weight_one():
    rng = np.random.default_rng(2)
    base = _base(rng)
    out = select_weighting(
        {"unweighted": _ndcg(base), "combined": _ndcg(base + rng.normal(0.003, 0.08, 300))},
        {},
        n_boot=300,
        seed=0,
    )
    assert out.chosen == "unweighted" and "weight 1" in out.reason
    assert not pd.DataFrame(out.candidates).query("variant == 'combined'")["chosen"].any()


def test_a_significantly_worse_gbt_vetoes_the_ranking_gain():
    rng = np.random.default_rng(3)
    base = _base(rng)
    good, bad = _oof(rng, 2.0), _oof(rng, 2.0)
    bad[S.LABEL_PURCHASE] = good[S.LABEL_PURCHASE]
    bad[S.PROBABILITY] = 1 - good[S.PROBABILITY]  # the same rows ranked upside down
    out = select_weighting(
        {"unweighted": _ndcg(base), "combined": _ndcg(base + 0.02)},
        {"unweighted": good, "combined": bad},
        n_boot=300,
        seed=0,
    )
    assert out.chosen == "unweighted"
    gbt = pd.DataFrame(out.candidates).query("family == 'gbt' and variant == 'combined'").iloc[0]
    assert gbt["delta_ci_high"] < 0


def test_under_the_null_a_weighted_variant_is_rarely_shipped():
    """Two variants with the same distribution as unweighted (paired noise): the selection ships one
    of them in about alpha of the repetitions, not in half of them as 'the best point estimate' would."""
    shipped = 0
    for rep in range(40):
        rng = np.random.default_rng(100 + rep)
        base = _base(rng)
        noisy = {v: _ndcg(base + rng.normal(0, 0.05, 300)) for v in ("time", "combined")}
        out = select_weighting({"unweighted": _ndcg(base), **noisy}, {}, n_boot=200, seed=rep)
        shipped += out.chosen != "unweighted"
    assert shipped <= 6  # 40 × 2 one-sided tests at 2.5 %: about 2 expected


def test_unweighted_is_required():
    with pytest.raises(ValueError, match="unweighted"):
        select_weighting({"time": _ndcg(np.zeros(300))}, {}, n_boot=10, seed=0)


def test_a_variant_the_shipped_window_cannot_have_is_recorded_never_chosen():
    """``density_ratio`` helps most on validation, but the newest window has no density-ratio
    target: the next best that helps ships, and the reason names the barred variant."""
    rng = np.random.default_rng(5)
    base = _base(rng)
    gbt = _oof(rng, 1.0)
    ndcg = {"unweighted": _ndcg(base), "time": _ndcg(base + 0.02), "density_ratio": _ndcg(base + 0.04)}
    free = select_weighting(ndcg, {v: gbt for v in ndcg}, n_boot=300, seed=0)
    assert free.chosen == "density_ratio"
    why = "no density-ratio target"
    out = select_weighting(ndcg, {v: gbt for v in ndcg}, n_boot=300, seed=0, unavailable={"density_ratio": why})
    assert out.chosen == "time" and f"cannot ship: density_ratio: {why}" in out.reason
    rows = pd.DataFrame(out.candidates)
    assert set(rows["variant"]) == {"unweighted", "time", "density_ratio"}  # still evaluated and recorded
    pair = {k: ndcg[k] for k in ("unweighted", "density_ratio")}
    alone = select_weighting(pair, {}, n_boot=300, seed=0, unavailable={"density_ratio": why})
    assert alone.chosen == "unweighted" and alone.reason.startswith("no shippable weighting beat unweighted")
    assert "cannot ship: density_ratio" in alone.reason
