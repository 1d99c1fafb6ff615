"""The weighting to ship, chosen on validation with paired intervals.

Every weighted variant is compared with ``unweighted`` on the validation window, per model family,
with the paired bootstrap of :mod:`sampleimp_spark.evaluation.bootstrap` (one Poisson multiplicity
per user, shared by every candidate): ALS by per-user NDCG@k at each variant's tuned point, the
GBT by the average precision of its validation predictions. A weighting is shipped only when its
ALS Δ interval lies above 0 and its GBT Δ interval does not lie below 0; among several, the one
with the highest ALS NDCG. A variant the shipped window cannot have (``unavailable``) is evaluated
and recorded, never chosen. Otherwise ``unweighted``: ``weight`` 1. Pure pandas and numpy, on the
driver (bounded by the validation's sampled users).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from sampleimp_spark import schema as S
from sampleimp_spark.evaluation import bootstrap as B
from sampleimp_spark.evaluation import classification as C
from sampleimp_spark.evaluation import names as N


@dataclass(frozen=True)
class Selection:
    """The shipped variant, why, and every candidate's evidence (``gold.weight_selection`` rows)."""

    chosen: str
    reason: str
    candidates: list[dict[str, object]] = field(default_factory=list)


def _ap_replicates(oof: pd.DataFrame, mult: np.ndarray, index: Mapping[str, int]) -> tuple[float, np.ndarray]:
    rows = oof.sort_values([S.USER_ID, S.ITEM_ID])
    y = rows[S.LABEL_PURCHASE].to_numpy(dtype=np.float64)
    p = rows[S.PROBABILITY].to_numpy(dtype=np.float64)
    units = np.array([index[u] for u in rows[S.USER_ID].astype(str)], dtype=np.int64)
    base = np.ones(len(y))
    return float(C.average_precision(y, p, base)), C.replicate_metric(C.average_precision, y, p, mult, units, base)


def select_weighting(
    als_ndcg: Mapping[str, pd.Series],
    gbt_oof: Mapping[str, pd.DataFrame],
    *,
    n_boot: int,
    seed: int,
    alpha: float = 0.05,
    power: float = 0.8,
    unavailable: Mapping[str, str] | None = None,
) -> Selection:
    """Choose the weighting to ship from validation results.

    Args:
        als_ndcg: variant -> per-user NDCG@k on validation, indexed by user id (the same users for
            every variant; ``unweighted`` required).
        gbt_oof: variant -> validation rows (user_id, item_id, label_purchase, probability), the
            same rows for every variant. May be empty (no GBT evidence: not a veto).
        n_boot: bootstrap replicates.
        seed: seed of the multiplicities.
        alpha: 1 - interval coverage.
        power: power of the minimum detectable effect.
        unavailable: variant -> why the shipped window cannot have it; evaluated and recorded,
            never chosen.
    """
    ref = N.REFERENCE_VARIANT
    if ref not in als_ndcg:
        raise ValueError(f"the selection needs the {ref!r} variant, got {sorted(als_ndcg)}")
    users: set[str] = set()
    for per_user in als_ndcg.values():
        users |= set(per_user.index.astype(str))
    for oof in gbt_oof.values():
        users |= set(oof[S.USER_ID].astype(str))
    mult, index = B.multiplicities(sorted(users), n_boot, seed)

    values: dict[tuple[str, str], tuple[float, np.ndarray]] = {}
    n_users: dict[str, int] = {}
    for variant, per_user in als_ndcg.items():
        v = per_user.sort_index()
        units = np.array([index[u] for u in v.index.astype(str)], dtype=np.int64)
        values[(N.ALS, variant)] = B.weighted_mean_replicates(v.to_numpy(dtype=np.float64), units, mult)
        n_users[N.ALS] = len(v)
    if ref in gbt_oof:
        for variant, oof in gbt_oof.items():
            values[(N.GBT, variant)] = _ap_replicates(oof, mult, index)
            n_users[N.GBT] = int(oof[S.USER_ID].nunique())

    candidates: list[dict[str, object]] = []
    verdict: dict[tuple[str, str], tuple[float, float]] = {}
    for (family, variant), (point, reps) in sorted(values.items()):
        row: dict[str, object] = {
            "family": family,
            "variant": variant,
            "metric": N.NDCG_AT_K if family == N.ALS else N.AVERAGE_PRECISION,
            "value": point,
            "n_users": n_users[family],
            "n_boot": int(np.isfinite(reps).sum()),  # the replicates behind the interval
        }
        if variant != ref:
            ref_point, ref_reps = values[(family, ref)]
            cmp = B.compare(point, ref_point, reps, ref_reps, alpha=alpha, power=power)
            row.update(cmp.delta_columns(), n_boot=cmp.n_boot)  # those finite in both arms
            verdict[(family, variant)] = (cmp.ci_low, cmp.ci_high)
        candidates.append(row)

    eligible: list[str] = []
    barred: list[str] = []
    for variant in als_ndcg:
        if variant == ref:
            continue
        als_low = verdict[(N.ALS, variant)][0]
        gbt_high = verdict.get((N.GBT, variant), (np.nan, np.nan))[1]
        if np.isfinite(als_low) and als_low > 0 and not (np.isfinite(gbt_high) and gbt_high < 0):
            (barred if variant in (unavailable or {}) else eligible).append(variant)
    if eligible:
        chosen = max(eligible, key=lambda v: (values[(N.ALS, v)][0], v))
        low, high = verdict[(N.ALS, chosen)]
        reason = (
            f"{chosen}: ALS NDCG@k Δ {values[(N.ALS, chosen)][0] - values[(N.ALS, ref)][0]:+.4f} "
            f"[{low:+.4f}, {high:+.4f}] above 0 on validation, GBT average precision not worse"
        )
    else:
        chosen = ref
        shippable = "shippable weighting" if barred else "weighting"
        reason = f"no {shippable} beat unweighted on validation beyond its paired interval: weight 1"
    if barred:
        why = "; ".join(f"{v}: {(unavailable or {})[v]}" for v in sorted(barred))
        reason += f" (beat unweighted but cannot ship: {why})"
    for row in candidates:
        row["chosen"] = row["variant"] == chosen
    return Selection(chosen=chosen, reason=reason, candidates=candidates)
