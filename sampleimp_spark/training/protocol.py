"""The weighted-vs-unweighted experiment: rolling origins, equal windows, baselines, paired inference.

Given consecutive gold windows ``W_0 .. W_M`` of equal feature and label lengths (each shifted
by one label length), every origin ``k >= 2`` evaluates on ``W_k``'s label period models trained
on what was known at its start: ALS on ``W_k``'s feature-window events with pair weights from
``W_{k-1}`` (whose labels end where ``W_k``'s start), GBT on ``W_{k-1}``'s samples. Every
variant, ``unweighted`` included, tunes the same hyperparameters with the same grid once, on the
first origin's validation data (``W_0`` → ``W_1``), before any evaluation period; the history
baseline's half-life likewise. Evaluated users are a seeded sample of at most ``max_users``.
Per-user values come to the driver (bounded by the sample) and are bootstrapped there
(:mod:`sampleimp_spark.evaluation.bootstrap`). ``docs/evaluation.md`` gives the protocol in full.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import numpy as np
import pandas as pd
from pyspark.ml import PipelineModel
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from sampleimp_spark import hashing
from sampleimp_spark import schema as S
from sampleimp_spark.errors import BadInputError
from sampleimp_spark.evaluation import bootstrap as B
from sampleimp_spark.evaluation import classification as C
from sampleimp_spark.evaluation import names as N
from sampleimp_spark.evaluation.ranking import per_user_ranking_metrics
from sampleimp_spark.frames import checkpoint, release
from sampleimp_spark.training import baselines
from sampleimp_spark.training.als import FittedALS, IndexedRatings, fit_als, implicit_ratings, index_ratings, recommend
from sampleimp_spark.training.gbt import candidate_features, fit_gbt, predict_proba, rerank
from sampleimp_spark.training.selection import Selection, select_weighting
from sampleimp_spark.weighting.combine import combine_weights
from sampleimp_spark.weighting.time_decay import time_weights
from sampleimp_spark.windows import Windows

log = logging.getLogger(__name__)

_EXPONENTS = {
    "class": (1.0, 0.0, 0.0, 0.0),
    "density_ratio": (0.0, 1.0, 0.0, 0.0),
    "information_gain": (0.0, 0.0, 1.0, 0.0),
    N.TIME_VARIANT: (0.0, 0.0, 0.0, 1.0),
}
#: Called with ``(window_id, variant, seed, als, gbt)`` for every fitted pair of models.
ModelSink = Callable[[str, str, int, FittedALS, PipelineModel], None]

_KEY = "_eval_key"  # arm | segment | user: many rankings evaluated in one pass
_SEP = "\x1f"
_USER_SAMPLE_SALT = "evaluation_users"


@dataclass(frozen=True)
class ExperimentPlan:
    """Everything the experiment varies, as plain values.

    Attributes:
        variants: weight variants; ``unweighted`` is the reference and must be one of them.
        seeds: model seeds; results are averaged over them.
        features: GBT feature columns.
        als: keywords of :func:`~sampleimp_spark.training.als.fit_als` other than ``reg_param``
            and ``alpha`` (tuned).
        strengths: behavior -> strength of one event (ALS ratings, history baseline).
        candidates: ALS candidates per user handed to the re-ranker.
        gbt: keywords of :func:`~sampleimp_spark.training.gbt.fit_gbt` other than ``max_depth``.
        combine: keywords of :func:`~sampleimp_spark.weighting.combine.combine_weights`.
        k: cut-off of the ranking metrics.
        als_reg_grid, als_alpha_grid: ALS hyperparameter grid (every variant).
        gbt_depth_grid: GBT depths (every variant), chosen on validation.
        half_life_grid: half-lives in days (``None`` = no decay) of the history baseline; the
            one validation chooses for it is also the ``time`` variant's.
        max_users: evaluated users per origin (a seeded sample).
        n_boot: bootstrap replicates.
        ci_level: coverage of the intervals (0.95).
        power: power of the minimum detectable effect (0.8).
        top_fraction: share of the highest scores of the fixed operating point.
        negative_rate: share of the negative samples the GBT is fitted on (every positive is
            kept); its probabilities are prior-corrected (He et al. 2014; King & Zeng 2001).
        parallelism: fits run at once (threads submitting Spark jobs).
        seed: seed of the user sample, the negative sample and the bootstrap.
        rerank: also evaluate ALS+GBT.
        ndcg_gain: ``exp2`` or ``linear`` gain of graded relevance.
        resampled: the weights stage resampled the windows (``gold`` holds the kept copies).
        confidence, epsilon: ALS's confidence form (``linear`` or ``log``) and its ``ε``.
        unshippable: variant -> why the run's window cannot ship it (see
            :func:`~sampleimp_spark.training.selection.select_weighting`).
        snips: also report the SNIPS estimator (weights ``w_dr · w_shard`` of the evaluation
            window). Only meaningful when that ratio is known at the evaluation window's feature
            end (the ``recent`` target); the ``next_window`` target's spans the evaluation period.
    """

    variants: Sequence[str]
    seeds: Sequence[int]
    features: Sequence[str]
    als: Mapping[str, Any]
    strengths: Mapping[str, float]
    candidates: int
    gbt: Mapping[str, Any]
    combine: Mapping[str, Any]
    k: int = 10
    als_reg_grid: Sequence[float] = (0.1,)
    als_alpha_grid: Sequence[float] = (10.0,)
    gbt_depth_grid: Sequence[int] = (5,)
    half_life_grid: Sequence[float | None] = (None,)
    max_users: int = 10_000
    n_boot: int = 1000
    ci_level: float = 0.95
    power: float = 0.8
    top_fraction: float = 0.01
    negative_rate: float = 1.0
    parallelism: int = 1
    seed: int = 0
    rerank: bool = True
    ndcg_gain: str = "exp2"
    resampled: bool = False
    confidence: str = "linear"
    epsilon: float = 1.0
    snips: bool = False
    unshippable: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if N.REFERENCE_VARIANT not in self.variants:
            raise ValueError(f"variants must include {N.REFERENCE_VARIANT!r}, got {list(self.variants)}")

    @property
    def alpha(self) -> float:
        return 1.0 - self.ci_level

    @property
    def rating_form(self) -> dict[str, Any]:
        """The keywords of :func:`als_ratings` that every variant shares."""
        return {"resampled": self.resampled, "confidence": self.confidence, "epsilon": self.epsilon}


@dataclass(frozen=True)
class Tuned:
    """What validation chose: per variant ALS ``(reg_param, alpha)``, GBT depth and F1 threshold,
    the history baseline's half-life (``None`` = no decay), and the weighting to ship."""

    als: dict[str, dict[str, float]]
    gbt_depth: dict[str, int]
    threshold: dict[str, float]
    half_life: float | None
    #: The weighting to ship, chosen on the same validation data (:mod:`.selection`).
    selection: Selection | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "als": self.als,
            "gbt_depth": self.gbt_depth,
            "threshold": self.threshold,
            "history_half_life_days": self.half_life,
            "weighting": None if self.selection is None else self.selection.chosen,
        }


@dataclass
class ExperimentResult:
    """What the experiment measured.

    Attributes:
        windows: the windows used, oldest first (evaluation origins are all but the first two).
        tuned: the hyperparameters validation chose.
        per_origin: ``gold.metrics`` rows: point values per origin, seed, arm, metric, estimator
            and segment.
        summary: ``gold.experiment_results`` rows: pooled values with intervals, and the paired
            comparisons (Δ against ``unweighted`` and against the history baseline).
    """

    windows: list[str]
    tuned: Tuned
    per_origin: list[dict[str, object]] = field(default_factory=list)
    summary: list[dict[str, object]] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"origins {self.windows[2:]}", f"tuned {self.tuned.as_dict()}"]
        for r in self.summary:
            if r["metric"] in (N.NDCG_AT_K, N.AVERAGE_PRECISION) and r["estimator"] == N.UNWEIGHTED:
                if r["segment"] not in (N.ALL_ITEMS, None):
                    continue
                line = f"  {r['model']:<20} {r['variant']:<17} {r['metric']:<18} {_fmt(r['value'])}"
                if r.get("delta") is not None:
                    line += f"  Δ {_fmt(r['delta'])} [{_fmt(r['delta_ci_low'])}, {_fmt(r['delta_ci_high'])}]"
                    line += f" p_holm {_fmt(r['p_holm'])}"
                out.append(line)
        return out


def _fmt(x: object) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{x:.4f}"


# --- concurrency ---------------------------------------------------------------------------------

_T = TypeVar("_T")
_R = TypeVar("_R")


def _in_parallel(fn: Callable[[_T], _R], items: Sequence[_T], workers: int) -> list[_R]:
    """``[fn(x) for x in items]`` with up to ``workers`` Spark jobs at once, results in input order.

    Like ``CrossValidator(parallelism=...)``: small fits are bound by scheduling latency, not by the
    cores, so several at once finish sooner; each fit is the same as alone.
    """
    if workers <= 1 or len(items) <= 1:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(fn, items))


# --- windows -------------------------------------------------------------------------------------


def origin_windows(latest: Windows, *, origins: int) -> list[Windows]:
    """The windows an experiment with ``origins`` evaluation origins needs, oldest first.

    ``origins + 2`` windows, each ``latest`` shifted back by a multiple of its label length: the
    first two serve validation and the training of the first origin.
    """
    if origins < 1:
        raise ValueError(f"origins must be at least 1, got {origins}")
    step = latest.t2 - latest.t1
    return [latest.shifted(-(origins + 1 - i) * step) for i in range(origins + 2)]


def stored_origins(present: Collection[str], latest: Windows, configured: int | None) -> int:
    """``configured``, else how many origins the stored consecutive windows (ids in ``present``)
    before ``latest`` allow (0 or less: none)."""
    if configured is not None:
        return configured
    step = latest.t2 - latest.t1
    n = 0
    while latest.shifted(-(n + 1) * step).window_id in present:
        n += 1
    return n - 1


def max_origins(latest: Windows, first_event: datetime) -> int:
    """How many evaluation origins the data allows: windows may not start before ``first_event``'s
    day (``latest.t0`` is taken as aligned to a day boundary)."""
    step = latest.t2 - latest.t1
    n = 0
    while latest.shifted(-(n + 2) * step).t0 >= first_event:
        n += 1
    return n


def windows_needed(latest: Windows, *, origins: int | None) -> list[Windows]:
    """The windows a run builds, oldest first: ``latest`` alone without training, else
    :func:`origin_windows`."""
    return [latest] if not origins else origin_windows(latest, origins=origins)


# --- weights and ground truth ----------------------------------------------------------------------


def uses_density_ratio(variant: str, combine: Mapping[str, Any]) -> bool:
    """Whether ``variant``'s weight contains the density ratio (its exponent ``b`` is positive)."""
    if variant == N.REFERENCE_VARIANT:
        return False
    b = _EXPONENTS[variant][1] if variant in _EXPONENTS else combine.get("b", 1.0)
    return float(b) > 0


def variant_weights(
    samples: DataFrame, variant: str, *, combine: Mapping[str, Any], half_life_days: float | None = None
) -> DataFrame:
    """``samples`` with ``weight`` recomputed for one variant from the stored components.

    Args:
        samples: gold rows with every weight component.
        variant: ``unweighted``, ``combined`` (the ``combine`` keywords as they are) or one
            component alone (its exponent 1, the others 0, the same clipping). ``time``
            recomputes ``w_time`` with ``half_life_days`` (the validation's choice).
        combine: keywords of :func:`~sampleimp_spark.weighting.combine.combine_weights`.
        half_life_days: the ``time`` variant's half-life (None = no decay).
    """
    if variant == N.REFERENCE_VARIANT:
        return samples.withColumn(S.WEIGHT, F.lit(1.0))
    kwargs = dict(combine)
    if variant != "combined":
        kwargs["a"], kwargs["b"], kwargs["c"], kwargs["d"] = _EXPONENTS[variant]
    if variant == N.TIME_VARIANT:
        samples = time_weights(samples, half_life_days=half_life_days)
    return combine_weights(samples.drop(S.WEIGHT), **kwargs)


def als_ratings(
    feature_events: DataFrame,
    weighted: DataFrame,
    variant: str,
    *,
    strengths: Mapping[str, float],
    half_life_days: float | None,
    t1: datetime,
    resampled: bool = False,
    confidence: str = "linear",
    epsilon: float = 1.0,
    sample_pairs: DataFrame | None = None,
) -> DataFrame:
    """ALS ratings of one variant: unweighted sums; for ``time`` the per-event decayed sums
    (the ALS form of ``w_time``); otherwise sums scaled by ``weighted``'s pair weights (the copies
    of a ``resampled`` window adding up; ``sample_pairs``, its samples before resampling, tell a
    dropped pair from a non-sample). Every variant has the same ``confidence`` form."""
    if variant == N.REFERENCE_VARIANT:
        weights, decayed = None, False
    elif variant == N.TIME_VARIANT:
        weights, decayed = None, True
    else:
        weights, decayed = weighted.select(S.USER_ID, S.ITEM_ID, S.WEIGHT), False
    return implicit_ratings(
        feature_events,
        weights,
        strengths=strengths,
        half_life_days=half_life_days if decayed else None,
        t1=t1,
        copies=resampled,
        samples=sample_pairs,
        confidence=confidence,
        epsilon=epsilon,
    )


def ground_truth(events: DataFrame, *, start: datetime, end: datetime) -> DataFrame:
    """``(user_id, item_id, relevance)``: items touched in ``[start, end)``, graded by intent (1..5)."""
    level = F.array_position(F.array(*(F.lit(b) for b in S.BEHAVIORS)), F.col(S.BEHAVIOR))
    window = (F.col(S.TS) >= F.lit(start)) & (F.col(S.TS) < F.lit(end)) & F.col(S.BEHAVIOR).isin(*S.BEHAVIORS)
    return events.where(window).groupBy(S.USER_ID, S.ITEM_ID).agg(F.max(level).cast("double").alias(S.RELEVANCE))


def _sample_pairs(events: DataFrame, window: Windows) -> DataFrame:
    """The window's samples before any resampling: the pairs with an event in its feature window."""
    return _between(events, window.t0, window.t1).select(S.USER_ID, S.ITEM_ID).distinct()


def _between(events: DataFrame, start: datetime, end: datetime) -> DataFrame:
    return events.where((F.col(S.TS) >= F.lit(start)) & (F.col(S.TS) < F.lit(end)))


def sample_users(samples: DataFrame, *, max_users: int, seed: int) -> DataFrame:
    """At most ``max_users`` of the samples' users: those with the smallest seeded hash (so the
    same user is in or out at every origin whenever they are active)."""
    u = hashing.uniform(seed, F.col(S.USER_ID), salt=_USER_SAMPLE_SALT)
    users = samples.select(S.USER_ID).distinct().withColumn("_u", u)
    return users.orderBy("_u", S.USER_ID).limit(max_users).drop("_u")


def _truth_segments(truth: DataFrame, samples: DataFrame) -> DataFrame:
    """Ground truth in three segments: all items, repeat items (the user's samples, i.e. items of
    the feature window) and new items."""
    seen = samples.select(S.USER_ID, S.ITEM_ID).distinct().withColumn("_seen", F.lit(True))
    flagged = truth.join(seen, [S.USER_ID, S.ITEM_ID], "left")
    repeat = F.coalesce(F.col("_seen"), F.lit(False))
    return (
        flagged.withColumn("_segment", F.lit(N.ALL_ITEMS))
        .unionByName(flagged.where(repeat).withColumn("_segment", F.lit(N.REPEAT_ITEMS)))
        .unionByName(flagged.where(~repeat).withColumn("_segment", F.lit(N.NEW_ITEMS)))
        .drop("_seen")
    )


# --- ranking of many arms in one pass --------------------------------------------------------------


@dataclass(frozen=True)
class _Arm:
    model: str
    variant: str
    seed: int | None
    recs: DataFrame  # (user_id, item_id, score): larger is better

    @property
    def name(self) -> str:
        return f"{self.model}{_SEP}{self.variant}{_SEP}{self.seed}"


def _ranking_rows(arms: Sequence[_Arm], truth_segments: DataFrame, *, k: int, ndcg_gain: str) -> pd.DataFrame:
    """Per-user ranking metrics of every arm and segment, in one Spark pass, as pandas."""
    spark = truth_segments.sparkSession
    names = spark.createDataFrame([(a.name,) for a in arms], "_arm string")
    segments = truth_segments.select("_segment").distinct()
    recs = None
    for arm in arms:
        part = arm.recs.select(S.USER_ID, S.ITEM_ID, F.col(S.SCORE).cast("double").alias(S.SCORE)).withColumn(
            "_arm", F.lit(arm.name)
        )
        recs = part if recs is None else recs.unionByName(part)
    assert recs is not None
    recs = recs.crossJoin(F.broadcast(segments))
    truth = truth_segments.crossJoin(F.broadcast(names))

    def keyed(df: DataFrame) -> DataFrame:
        return df.withColumn(_KEY, F.concat_ws(_SEP, "_arm", "_segment", S.USER_ID))

    per_user = per_user_ranking_metrics(
        keyed(recs),
        keyed(truth),
        k=k,
        relevance_col=S.RELEVANCE,
        rank_col=None,
        score_col=S.SCORE,
        ndcg_gain=ndcg_gain,  # type: ignore[arg-type]
        user_col=_KEY,
    )
    pdf = per_user.toPandas()  # bounded: sampled users × arms × 3 segments
    parts = pdf[_KEY].str.split(_SEP, expand=True)
    pdf["model"], pdf["variant"], pdf["seed"], pdf["segment"], pdf[S.USER_ID] = (
        parts[0],
        parts[1],
        parts[2],
        parts[3],
        parts[4],
    )
    pdf["seed"] = pd.to_numeric(pdf["seed"], errors="coerce")  # "None" for baselines
    return pdf.drop(columns=[_KEY])


def _ndcg_by_arm(rows: pd.DataFrame) -> dict[tuple[str, str], float]:
    """Mean NDCG@k (all items) per (model, variant)."""
    mine = rows[rows["segment"] == N.ALL_ITEMS]
    means = mine.groupby(["model", "variant"], as_index=False)[N.NDCG_AT_K].mean()
    return {(str(m), str(v)): float(x) for m, v, x in means.itertuples(index=False, name=None)}


# --- tuning ----------------------------------------------------------------------------------------


def _als_recs(model: FittedALS, users: DataFrame, n: int) -> DataFrame:
    ranked = recommend(model, users, n, rank_col=S.RANK)
    return ranked.select(S.USER_ID, S.ITEM_ID, (-F.col(S.RANK).cast("double")).alias(S.SCORE))


def tune(events: DataFrame, gold: DataFrame, w0: Windows, w1: Windows, plan: ExperimentPlan) -> Tuned:
    """Choose every variant's hyperparameters and the history half-life on ``w0`` → ``w1``.

    ALS: fitted on ``w1``'s feature-window events with pair weights from ``w0`` (labels ending at
    ``w1.t1``), validated by NDCG@k on ``w1``'s label period. GBT: fitted on ``w0``'s samples and
    weights, validated by the average precision of its predictions for ``w1``'s sampled users,
    which also give each variant's F1-best threshold. History: NDCG@k on ``w1``'s label period.
    No fit reads ``w1``'s label period; all of it precedes every evaluation period.
    """
    v_samples = gold.where(F.col(S.WINDOW_ID) == w1.window_id)
    users = checkpoint(sample_users(v_samples, max_users=plan.max_users, seed=plan.seed))
    truth = ground_truth(events, start=w1.t1, end=w1.t2).join(users, S.USER_ID, "left_semi")
    truth_all = checkpoint(truth.withColumn("_segment", F.lit(N.ALL_ITEMS)))
    feature_events = checkpoint(_between(events, w1.t0, w1.t1))
    held: list[DataFrame] = [users, truth_all, feature_events]
    try:
        history = [
            _Arm(
                N.HISTORY,
                str(h),
                None,
                baselines.history_scores(
                    feature_events, users, t1=w1.t1, half_life_days=h, strengths=plan.strengths, n=plan.k
                ),
            )
            for h in plan.half_life_grid
        ]
        history_ndcg = _ndcg_by_arm(_ranking_rows(history, truth_all, k=plan.k, ndcg_gain=plan.ndcg_gain))
        half_life = _best_key(history_ndcg, N.HISTORY, [(str(h), h) for h in plan.half_life_grid])
        log.info("validation: history half-life %s days (of %s)", half_life, list(plan.half_life_grid))
        w0_gold = gold.where(F.col(S.WINDOW_ID) == w0.window_id)
        # Indexed once per variant: every grid point fits the same ratings.
        ratings: dict[str, IndexedRatings] = {}
        for variant in plan.variants:
            weighted = variant_weights(w0_gold, variant, combine=plan.combine, half_life_days=half_life)
            ratings[variant] = index_ratings(
                als_ratings(
                    feature_events,
                    weighted,
                    variant,
                    strengths=plan.strengths,
                    half_life_days=half_life,
                    t1=w1.t1,
                    sample_pairs=_sample_pairs(events, w0) if plan.resampled else None,
                    **plan.rating_form,
                )
            )
            held += [ratings[variant].data, ratings[variant].user_index, ratings[variant].item_index]
        grid = [(v, reg, alpha) for v in plan.variants for reg in plan.als_reg_grid for alpha in plan.als_alpha_grid]

        def fit(point: tuple[str, float, float]) -> tuple[FittedALS, DataFrame]:
            variant, reg, alpha = point
            model = fit_als(ratings[variant], **plan.als, reg_param=reg, alpha=alpha, seed=plan.seeds[0])
            recs = checkpoint(_als_recs(model, users, plan.k))
            log.info("validation: ALS %s fitted (of %d grid points)", _grid_key(variant, reg, alpha), len(grid))
            return model, recs

        fitted = _in_parallel(fit, grid, plan.parallelism)
        arms: list[_Arm] = []
        for (variant, reg, alpha), (model, recs) in zip(grid, fitted, strict=True):
            model.unpersist()
            held.append(recs)
            arms.append(_Arm(N.ALS, _grid_key(variant, reg, alpha), None, recs))
        als_rows = _ranking_rows(arms, truth_all, k=plan.k, ndcg_gain=plan.ndcg_gain)
        ndcg = _ndcg_by_arm(als_rows)
    finally:
        release(*held)

    als_choice: dict[str, dict[str, float]] = {}
    for variant in plan.variants:
        options = [
            (_grid_key(variant, reg, alpha), {"reg_param": reg, "alpha": alpha})
            for reg in plan.als_reg_grid
            for alpha in plan.als_alpha_grid
        ]
        als_choice[variant] = _best_key(ndcg, N.ALS, options)
    depth, threshold, validated = _tune_gbt(gold, w0, w1, plan, half_life)
    tuned_rows = als_rows[als_rows["segment"] == N.ALL_ITEMS]
    per_user = {
        variant: tuned_rows[
            tuned_rows["variant"] == _grid_key(variant, choice["reg_param"], choice["alpha"])
        ].set_index(S.USER_ID)[N.NDCG_AT_K]
        for variant, choice in als_choice.items()
    }
    selection = select_weighting(
        per_user,
        validated,
        n_boot=plan.n_boot,
        seed=plan.seed,
        alpha=plan.alpha,
        power=plan.power,
        unavailable=plan.unshippable,
    )
    tuned = Tuned(als=als_choice, gbt_depth=depth, threshold=threshold, half_life=half_life, selection=selection)
    log.info("validation chose %s", tuned.as_dict())
    log.info("weight to ship: %s", selection.reason)
    return tuned


def _grid_key(variant: str, reg: float, alpha: float) -> str:
    return f"{variant}@reg={reg}@alpha={alpha}"


def _best_key(ndcg: Mapping[tuple[str, str], float], model: str, options: Sequence[tuple[str, Any]]) -> Any:
    """The option with the highest NDCG (the first on ties, i.e. the grid's order)."""
    best, best_value = options[0][1], -np.inf
    for variant_key, value in options:
        score = ndcg.get((model, variant_key), np.nan)
        if np.isfinite(score) and score > best_value:
            best, best_value = value, score
    return best


def _tune_gbt(
    gold: DataFrame, w0: Windows, w1: Windows, plan: ExperimentPlan, half_life: float | None
) -> tuple[dict[str, int], dict[str, float], dict[str, pd.DataFrame]]:
    """Per variant: the depth whose model, fitted on ``w0``'s samples and weights, has the best
    average precision on ``w1``'s sampled users' samples; the F1-best threshold of those
    predictions, and the predictions. No input of the fit reaches past ``w1.t1``: ``w0``'s labels
    end there, and so do the features of its weights' density-ratio target (``w1``'s samples)."""
    train = gold.where(F.col(S.WINDOW_ID) == w0.window_id)
    samples = gold.where(F.col(S.WINDOW_ID) == w1.window_id)
    users = sample_users(samples, max_users=plan.max_users, seed=plan.seed)
    held: list[DataFrame] = []
    fit_rows: dict[str, DataFrame] = {}
    tasks = [(v, d) for v in plan.variants for d in plan.gbt_depth_grid]

    def validate(task: tuple[str, int]) -> pd.DataFrame:
        variant, depth = task
        model = fit_gbt(
            fit_rows[variant],
            plan.features,
            **plan.gbt,
            max_depth=depth,
            seed=plan.seeds[0],
            weight_col=None if variant == N.REFERENCE_VARIANT else S.WEIGHT,
        )
        # bounded: the sampled users
        return predict_proba(model, held_out).select(S.USER_ID, S.ITEM_ID, S.LABEL_PURCHASE, S.PROBABILITY).toPandas()

    try:
        held_out = checkpoint(samples.join(users, S.USER_ID, "left_semi"))
        held.append(held_out)
        for v in plan.variants:
            weighted = variant_weights(train, v, combine=plan.combine, half_life_days=half_life)
            fit_rows[v] = checkpoint(negative_sample(weighted, rate=plan.negative_rate, seed=plan.seed))
            held.append(fit_rows[v])
        parts = dict(zip(tasks, _in_parallel(validate, tasks, plan.parallelism), strict=True))
    finally:
        release(*held)
    depths: dict[str, int] = {}
    thresholds: dict[str, float] = {}
    best_rows: dict[str, pd.DataFrame] = {}
    for variant in plan.variants:
        best: tuple[float, int, float] = (-np.inf, plan.gbt_depth_grid[0], 0.5)
        for depth in plan.gbt_depth_grid:
            rows = parts[(variant, depth)]
            y, p = rows[S.LABEL_PURCHASE].to_numpy(), rows[S.PROBABILITY].to_numpy()
            ap = float(C.average_precision(y, p, np.ones(len(y))))
            log.info("GBT validation: %s depth %s -> average precision %.4f", variant, depth, ap)
            if np.isfinite(ap) and ap > best[0]:
                best = (ap, depth, float(C.best_f1_threshold(y, p)))
        depths[variant], thresholds[variant] = best[1], best[2]
        best_rows[variant] = parts[(variant, best[1])]
    return depths, thresholds, best_rows


# --- one origin --------------------------------------------------------------------------------


def _density_ratio() -> Column:
    """A sample's density ratio with its shard marginal, ``w_dr · w_shard`` (a null ``w_shard``,
    on rows written before it existed, counts as 1)."""
    return F.col(S.W_DR).cast("double") * F.coalesce(F.col(S.W_SHARD).cast("double"), F.lit(1.0))


def _evaluate_origin(
    events: DataFrame,
    gold: DataFrame,
    e_win: Windows,
    t_win: Windows,
    plan: ExperimentPlan,
    tuned: Tuned,
    on_models: ModelSink | None,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Ranking rows, classification rows and user weights of one origin (evaluated on ``e_win``)."""
    origin = e_win.window_id
    e_samples = checkpoint(gold.where(F.col(S.WINDOW_ID) == e_win.window_id))
    t_samples = checkpoint(gold.where(F.col(S.WINDOW_ID) == t_win.window_id))
    users = checkpoint(sample_users(e_samples, max_users=plan.max_users, seed=plan.seed))
    mine = checkpoint(e_samples.join(users, S.USER_ID, "left_semi"))
    feature_events = checkpoint(_between(events, e_win.t0, e_win.t1))
    truth = ground_truth(events, start=e_win.t1, end=e_win.t2).join(users, S.USER_ID, "left_semi")
    segments = checkpoint(_truth_segments(truth, mine))
    held: list[DataFrame] = [e_samples, t_samples, users, mine, feature_events, segments]
    n = max(plan.k, plan.candidates) if plan.rerank else plan.k
    try:
        arms = [
            _Arm(
                N.HISTORY,
                N.NO_VARIANT,
                None,
                checkpoint(
                    baselines.history_scores(
                        feature_events,
                        users,
                        t1=e_win.t1,
                        half_life_days=tuned.half_life,
                        strengths=plan.strengths,
                        n=plan.k,
                    )
                ),
            ),
            _Arm(
                N.POPULARITY,
                N.NO_VARIANT,
                None,
                checkpoint(baselines.popularity_scores(feature_events, users, n=plan.k)),
            ),
            _Arm(
                N.CATEGORY_POPULARITY,
                N.NO_VARIANT,
                None,
                checkpoint(baselines.category_popularity_scores(feature_events, users, n=plan.k)),
            ),
        ]
        held += [a.recs for a in arms]
        prepared: dict[str, tuple[IndexedRatings, DataFrame, tuple[float, float]]] = {}
        for variant in plan.variants:
            weighted = checkpoint(
                variant_weights(t_samples, variant, combine=plan.combine, half_life_days=tuned.half_life)
            )
            reference = variant == N.REFERENCE_VARIANT
            ratings = index_ratings(  # once for every seed
                als_ratings(
                    feature_events,
                    weighted,
                    variant,
                    strengths=plan.strengths,
                    half_life_days=tuned.half_life,
                    t1=e_win.t1,
                    sample_pairs=_sample_pairs(events, t_win) if plan.resampled else None,
                    **plan.rating_form,
                )
            )
            fit_rows = checkpoint(negative_sample(weighted, rate=plan.negative_rate, seed=plan.seed))
            held += [weighted, ratings.data, ratings.user_index, ratings.item_index, fit_rows]
            prepared[variant] = (ratings, fit_rows, _priors(weighted, fit_rows, weighted=not reference))

        def train(task: tuple[str, int]) -> tuple[list[_Arm], pd.DataFrame, list[DataFrame]]:
            variant, seed = task
            ratings, fit_rows, priors = prepared[variant]
            mine_held: list[DataFrame] = []
            als = fit_als(
                ratings,
                **plan.als,
                reg_param=tuned.als[variant]["reg_param"],
                alpha=tuned.als[variant]["alpha"],
                seed=seed,
            )
            listed = checkpoint(recommend(als, users, n, rank_col=S.ALS_RANK))
            mine_held.append(listed)
            top = listed.where(F.col(S.ALS_RANK) <= plan.k).select(
                S.USER_ID, S.ITEM_ID, (-F.col(S.ALS_RANK).cast("double")).alias(S.SCORE)
            )
            new_arms = [_Arm(N.ALS, variant, seed, top)]
            gbt = fit_gbt(
                fit_rows,
                plan.features,
                **plan.gbt,
                max_depth=tuned.gbt_depth[variant],
                seed=seed,
                weight_col=None if variant == N.REFERENCE_VARIANT else S.WEIGHT,
            )
            scored = predict_proba(gbt, mine).select(
                S.USER_ID, S.LABEL_PURCHASE, S.PROBABILITY, _density_ratio().alias(S.W_DR)
            )
            part = scored.toPandas()  # bounded: the sampled users' samples
            part["variant"], part["seed"], part["origin"] = variant, seed, origin
            part["sample_prior"], part["weighted_prior"] = priors
            if plan.rerank:
                cands = candidate_features(listed, e_samples, plan.features, feature_days=e_win.feature_days)
                reranked = checkpoint(
                    rerank(cands, gbt, plan.k).select(
                        S.USER_ID, S.ITEM_ID, (-F.col(S.RANK).cast("double")).alias(S.SCORE)
                    )
                )
                mine_held.append(reranked)
                new_arms.append(_Arm(N.ALS_GBT, variant, seed, reranked))
            if on_models is not None:
                on_models(origin, variant, seed, als, gbt)
            als.unpersist()
            log.info("origin %s: trained %s seed %s", origin, variant, seed)
            return new_arms, part, mine_held

        tasks = [(v, seed) for v in plan.variants for seed in plan.seeds]
        scored_parts: list[pd.DataFrame] = []
        for new_arms, part, mine_held in _in_parallel(train, tasks, plan.parallelism):
            arms += new_arms
            scored_parts.append(part)
            held += mine_held
        ranking = _ranking_rows(arms, segments, k=plan.k, ndcg_gain=plan.ndcg_gain)
        ranking["origin"] = origin
        user_w = (
            mine.groupBy(S.USER_ID).agg(F.avg(_density_ratio()).alias(S.WEIGHT)).toPandas()
        )  # bounded: one row per sampled user
        user_w["origin"] = origin
    finally:
        release(*held)
    return ranking, pd.concat(scored_parts, ignore_index=True), user_w


_NEGATIVE_SALT = "gbt_negative_sample"


def negative_sample(samples: DataFrame, *, rate: float, seed: int) -> DataFrame:
    """Every positive and a seeded ``rate`` share of the negatives (by a hash of user and item)."""
    if rate >= 1.0:
        return samples
    u = hashing.uniform(seed, F.col(S.USER_ID), F.col(S.ITEM_ID), salt=_NEGATIVE_SALT)
    return samples.where((F.col(S.LABEL_PURCHASE) == 1) | (u < F.lit(rate)))


def _priors(full: DataFrame, fit: DataFrame, *, weighted: bool) -> tuple[float, float]:
    """The positive share of the training window, and the positive share the fit saw (after the
    negative sample, under the fit's weights): the two priors of the probability correction."""
    y = F.col(S.LABEL_PURCHASE).cast("double")
    w = F.col(S.WEIGHT).cast("double") if weighted else F.lit(1.0)
    plain = full.agg(F.avg(y)).first()
    seen = fit.agg(F.sum(w * y) / F.sum(w)).first()
    assert plain is not None and seen is not None
    return float(plain[0] or 0.0), float(seen[0] or 0.0)


# --- the whole experiment ----------------------------------------------------------------------


def run_experiment(
    events: DataFrame,
    gold: DataFrame,
    windows: Sequence[Windows],
    *,
    plan: ExperimentPlan,
    on_models: ModelSink | None = None,
) -> ExperimentResult:
    """Tune on the first two windows, evaluate every later one, and pool with paired inference.

    Args:
        events: the source's events over at least ``windows[0].t0`` to ``windows[-1].t2``.
        gold: ``gold.training_samples`` rows of every window (features, labels, components).
        windows: consecutive windows, oldest first (:func:`origin_windows`), at least three.
        plan: what to train and how to evaluate it.
        on_models: receives every fitted pair of models.

    Raises:
        BadInputError: fewer than three windows, or a window without samples.
    """
    if len(windows) < 3:
        raise BadInputError(f"the experiment needs at least 3 windows (one origin), got {len(windows)}")
    ids = [w.window_id for w in windows]
    present = {r[0] for r in gold.select(S.WINDOW_ID).distinct().collect()}  # one row per window
    missing = [w for w in ids if w not in present]
    if missing:
        raise BadInputError(
            f"gold.training_samples lacks window(s) {missing}: run the features and weights stages "
            "with the same train.origins first"
        )
    tuned = tune(events, gold, windows[0], windows[1], plan)
    ranking, scored, user_w = [], [], []
    for k in range(2, len(windows)):
        r, c, u = _evaluate_origin(events, gold, windows[k], windows[k - 1], plan, tuned, on_models)
        ranking.append(r)
        scored.append(c)
        user_w.append(u)
    per_origin, summary = infer(
        pd.concat(ranking, ignore_index=True),
        pd.concat(scored, ignore_index=True),
        pd.concat(user_w, ignore_index=True),
        plan=plan,
        tuned=tuned,
    )
    return ExperimentResult(windows=ids, tuned=tuned, per_origin=per_origin, summary=summary)


# --- inference on the driver -----------------------------------------------------------------------


def _classification_metrics(
    part: pd.DataFrame, *, plan: ExperimentPlan, threshold: float, mult: np.ndarray, index: dict[str, int]
) -> dict[tuple[str, str], tuple[float, np.ndarray]]:
    """Point and replicate values of every classification metric and estimator for one
    (variant, origin, seed)."""
    y = part[S.LABEL_PURCHASE].to_numpy(dtype=np.float64)
    p = part[S.PROBABILITY].to_numpy(dtype=np.float64)
    units = part[S.USER_ID].map(index).to_numpy()
    corrected = C.prior_corrected(
        p, sample_prior=float(part["sample_prior"].iloc[0]), weighted_prior=float(part["weighted_prior"].iloc[0])
    )
    out: dict[tuple[str, str], tuple[float, np.ndarray]] = {}
    bases = {N.UNWEIGHTED: np.ones(len(y))}
    if plan.snips:
        bases[N.SNIPS] = part[S.W_DR].to_numpy(dtype=np.float64)
    for estimator, base in bases.items():

        def top(yy: np.ndarray, ss: np.ndarray, ww: np.ndarray) -> Any:
            return C.precision_recall_at_top(yy, ss, ww, fraction=plan.top_fraction)

        def at_threshold(yy: np.ndarray, ss: np.ndarray, ww: np.ndarray) -> Any:
            prec, rec = C.precision_recall_at_threshold(yy, ss, ww, threshold=threshold)
            return prec, rec, C.f1_score(prec, rec)

        metrics: list[tuple[tuple[str, ...], Callable[..., Any], np.ndarray]] = [
            ((N.ROC_AUC,), C.roc_auc, p),
            ((N.AVERAGE_PRECISION,), C.average_precision, p),
            ((N.LOG_LOSS,), C.log_loss, corrected),
            ((N.PRECISION_AT_TOP, N.RECALL_AT_TOP), top, p),
            ((N.PRECISION_AT_THRESHOLD, N.RECALL_AT_THRESHOLD, N.F1_AT_THRESHOLD), at_threshold, p),
        ]
        for names, fn, scores in metrics:
            point = fn(y, scores, base)
            reps = C.replicate_metric(fn, y, scores, mult, units, base)
            if len(names) == 1:
                point, reps = (point,), (reps,)
            for name, pt, rp in zip(names, point, reps, strict=True):
                out[(name, estimator)] = (float(pt), np.asarray(rp, dtype=np.float64))
    return out


def infer(
    ranking: pd.DataFrame,
    scored: pd.DataFrame,
    user_weights: pd.DataFrame,
    *,
    plan: ExperimentPlan,
    tuned: Tuned,
) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    """Per-origin point values, and pooled values with intervals and paired comparisons.

    One Poisson multiplicity per user and replicate, shared by every arm, origin, seed and metric.
    Ranking metrics are per-user means (over seeds first, then over origin × user rows); a
    classification metric is computed per origin and seed, then averaged. Each weighted
    variant is compared with ``unweighted`` of the same model, and every ranking arm with the
    history baseline; p-values of the variant comparisons are Holm-adjusted together.
    """
    units = sorted(set(ranking[S.USER_ID]).union(scored[S.USER_ID]))
    mult, index = B.multiplicities(units, plan.n_boot, plan.seed)
    metric_cols = list(N.RANKING_METRICS)
    weights = user_weights.set_index(["origin", S.USER_ID])[S.WEIGHT]

    # (model, variant, metric, estimator, segment) -> (point, replicates, n_users)
    values: dict[tuple[str, str, str, str, str | None], tuple[float, np.ndarray, int]] = {}
    pooled = ranking.groupby(["origin", "model", "variant", "segment", S.USER_ID], as_index=False)[metric_cols].mean()
    for keys, part in pooled.groupby(["model", "variant", "segment"]):
        model, variant, segment = (str(k) for k in keys)
        part = part.sort_values(["origin", S.USER_ID])
        unit_index = part[S.USER_ID].map(index).to_numpy()
        w = weights.reindex(pd.MultiIndex.from_frame(part[["origin", S.USER_ID]])).fillna(0.0).to_numpy()
        for metric in metric_cols:
            v = part[metric].to_numpy(dtype=np.float64)
            for estimator, ww in ((N.UNWEIGHTED, None), (N.SNIPS, w)) if plan.snips else ((N.UNWEIGHTED, None),):
                point, reps = B.weighted_mean_replicates(v, unit_index, mult, ww)
                values[(model, variant, metric, estimator, segment)] = (point, reps, part[S.USER_ID].nunique())

    for variant_key, by_variant in scored.groupby("variant"):
        variant = str(variant_key)
        acc: dict[tuple[str, str], list[tuple[float, np.ndarray]]] = {}
        for _, part in by_variant.groupby(["origin", "seed"]):
            got = _classification_metrics(part, plan=plan, threshold=tuned.threshold[variant], mult=mult, index=index)
            for key, val in got.items():
                acc.setdefault(key, []).append(val)
        n_users = by_variant[S.USER_ID].nunique()
        for (metric, estimator), vals in acc.items():
            point, reps = _pooled_over_cells(vals)
            values[(N.GBT, variant, metric, estimator, None)] = (point, reps, n_users)

    per_origin = _per_origin_rows(ranking, scored, plan=plan, tuned=tuned)
    summary = _summary_rows(values, plan=plan)
    return per_origin, summary


def _pooled_over_cells(cells: Sequence[tuple[float, np.ndarray]]) -> tuple[float, np.ndarray]:
    """A classification metric pooled over its (origin, seed) cells: the point is the mean over the
    cells where it is defined, and so is each replicate. A cell can be undefined (average
    precision of an origin without a purchase, or of a replicate that drew none of its buyers);
    averaging the defined cells keeps it from turning the pooled value, or the replicate, into
    NaN. Which cells are defined depends on the labels and the multiplicities, which every arm
    shares, except for precision at the threshold (undefined when an arm predicts no positive)."""
    points = np.array([c[0] for c in cells], dtype=np.float64)
    reps = np.stack([c[1] for c in cells]).astype(np.float64)
    point = float(np.mean(points[np.isfinite(points)])) if np.isfinite(points).any() else float("nan")
    finite = np.isfinite(reps)
    counts = finite.sum(axis=0)
    sums = np.where(finite, reps, 0.0).sum(axis=0)
    pooled = np.full(reps.shape[1], np.nan)
    np.divide(sums, counts, out=pooled, where=counts > 0)
    return point, pooled


def _summary_rows(
    values: Mapping[tuple[str, str, str, str, str | None], tuple[float, np.ndarray, int]], *, plan: ExperimentPlan
) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for (model, variant, metric, estimator, segment), (point, reps, n_users) in sorted(
        values.items(), key=lambda kv: tuple(str(x) for x in kv[0])
    ):
        lo, hi = B.marginal_interval(reps, alpha=plan.alpha)
        row: dict[str, object] = {
            "model": model,
            "variant": variant,
            "metric": metric,
            "estimator": estimator,
            "segment": segment,
            "value": point,
            "ci_low": lo,
            "ci_high": hi,
            "n_users": n_users,
            "n_boot": int(np.isfinite(reps).sum()),  # the replicates behind the interval
        }
        ref = values.get((model, N.REFERENCE_VARIANT, metric, estimator, segment))
        if variant not in (N.REFERENCE_VARIANT, N.NO_VARIANT) and ref is not None:
            cmp = B.compare(point, ref[0], reps, ref[1], alpha=plan.alpha, power=plan.power)
            row.update(cmp.delta_columns(), n_boot=cmp.n_boot)  # those finite in both arms
        hist = values.get((N.HISTORY, N.NO_VARIANT, metric, estimator, segment))
        if segment is not None and model != N.HISTORY and hist is not None:
            cmp = B.compare(point, hist[0], reps, hist[1], alpha=plan.alpha, power=plan.power)
            row.update(vs_history=cmp.delta, vs_history_ci_low=cmp.ci_low, vs_history_ci_high=cmp.ci_high)
        rows.append(row)
    # The family of the Holm correction: every model × metric × weighted variant at the primary
    # estimator and segment; the other rows (segments, SNIPS) are descriptive and keep p_holm empty.
    tested = [
        i
        for i, r in enumerate(rows)
        if r.get("p_value") is not None and r["estimator"] == N.UNWEIGHTED and r["segment"] in (N.ALL_ITEMS, None)
    ]
    adjusted = B.holm([float(rows[i]["p_value"]) for i in tested])  # type: ignore[arg-type]
    for i, p in zip(tested, adjusted, strict=True):
        rows[i]["p_holm"] = float(p)
    return rows


def _per_origin_rows(
    ranking: pd.DataFrame, scored: pd.DataFrame, *, plan: ExperimentPlan, tuned: Tuned
) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    keys = ["origin", "model", "variant", "seed", "segment"]
    means = ranking.groupby(keys, dropna=False)[list(N.RANKING_METRICS)].mean().reset_index()
    counts = ranking.groupby(keys, dropna=False)[S.USER_ID].nunique().reset_index(name="n_users")
    for rec in means.merge(counts, on=keys).to_dict("records"):
        for metric in N.RANKING_METRICS:
            rows.append(
                {
                    "origin": rec["origin"],
                    "model": rec["model"],
                    "variant": rec["variant"],
                    "seed": None if pd.isna(rec["seed"]) else int(rec["seed"]),
                    "segment": rec["segment"],
                    "metric": metric,
                    "estimator": N.UNWEIGHTED,
                    "value": float(rec[metric]),
                    "n_users": int(rec["n_users"]),
                }
            )
    for (origin, variant, seed), part in scored.groupby(["origin", "variant", "seed"]):
        seed = int(seed)  # type: ignore[call-overload]
        y = part[S.LABEL_PURCHASE].to_numpy(dtype=np.float64)
        p = part[S.PROBABILITY].to_numpy(dtype=np.float64)
        one = np.ones(len(y))
        values = {
            N.ROC_AUC: C.roc_auc(y, p, one),
            N.AVERAGE_PRECISION: C.average_precision(y, p, one),
        }
        for metric, value in values.items():
            rows.append(
                {
                    "origin": origin,
                    "model": N.GBT,
                    "variant": variant,
                    "seed": seed,
                    "segment": None,
                    "metric": metric,
                    "estimator": N.UNWEIGHTED,
                    "value": float(value),
                    "n_users": int(part[S.USER_ID].nunique()),
                }
            )
    return rows
