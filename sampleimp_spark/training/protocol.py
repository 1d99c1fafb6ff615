"""The weighted-vs-unweighted experiment: ALS, GBT and ALS+GBT on one split, over seeds.

Pure: it takes frames and an :class:`ExperimentPlan` of plain values, and hands every fitted
model to a callback instead of storing it. ``docs/evaluation.md`` gives the protocol in full:
the windows, what trains on what, how hyperparameters are chosen and what is measured.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from sampleimp_spark import hashing
from sampleimp_spark import schema as S
from sampleimp_spark.errors import BadInputError
from sampleimp_spark.frames import checkpoint, release
from sampleimp_spark.training import evaluate as E
from sampleimp_spark.training.als import FittedALS, fit_als, implicit_ratings, recommend
from sampleimp_spark.training.gbt import candidate_features, fit_gbt, predict_proba, rerank
from sampleimp_spark.weighting.combine import combine_weights
from sampleimp_spark.windows import Windows

log = logging.getLogger(__name__)

_EXPONENTS = {"class": (1.0, 0.0, 0.0), "density_ratio": (0.0, 1.0, 0.0), "information_gain": (0.0, 0.0, 1.0)}
MODELS = ("als", "gbt", "als+gbt")

#: Called with ``(variant, seed, als, gbt)`` for every fitted pair of models.
ModelSink = Callable[[str, int, FittedALS, PipelineModel], None]


@dataclass(frozen=True)
class ExperimentPlan:
    """Everything the experiment varies, as plain values.

    Attributes:
        variants: weight variants (``unweighted``, ``class``, ``density_ratio``,
            ``information_gain``, ``combined``).
        seeds: model seeds; every variant is trained once per seed.
        features: GBT feature columns.
        als: keywords of :func:`~sampleimp_spark.training.als.fit_als` (``reg_param`` is tuned).
        strengths: behavior -> strength of one event in the ALS ratings.
        candidates: ALS candidates per user handed to the re-ranker.
        gbt: keywords of :func:`~sampleimp_spark.training.gbt.fit_gbt` (``max_depth`` is tuned).
        ranking: keywords of :func:`~sampleimp_spark.training.evaluate.ranking_metrics`.
        classification: keywords of :func:`~sampleimp_spark.training.evaluate.classification_metrics`.
        combine: keywords of :func:`~sampleimp_spark.weighting.combine.combine_weights`.
        als_reg_grid: ALS ``reg_param`` candidates.
        gbt_depth_grid: GBT ``max_depth`` candidates.
        validation_share: share of the training window's users held out to choose the depth.
        rerank: also evaluate ALS+GBT.
    """

    variants: Sequence[str]
    seeds: Sequence[int]
    features: Sequence[str]
    als: Mapping[str, Any]
    strengths: Mapping[str, float]
    candidates: int
    gbt: Mapping[str, Any]
    ranking: Mapping[str, Any]
    classification: Mapping[str, Any]
    combine: Mapping[str, Any]
    als_reg_grid: Sequence[float]
    gbt_depth_grid: Sequence[int]
    validation_share: float
    rerank: bool = True

    @property
    def k(self) -> int:
        return int(self.ranking["k"])


@dataclass
class TrainingReport:
    """What a training run measured."""

    window_id: str
    training_window_id: str
    training_version: int
    hyperparameters: dict[str, object]
    rows: list[dict[str, object]] = field(default_factory=list)  # per (model, variant, seed, metric)
    summary: list[dict[str, object]] = field(default_factory=list)  # mean ± std over seeds

    def lines(self) -> list[str]:
        out = [
            f"window {self.window_id} (trained on {self.training_window_id}), gold.training_samples "
            f"version {self.training_version}, hyperparameters {self.hyperparameters}"
        ]
        shown = {"ndcg_at_k", "recall_at_k", "roc_auc", "pr_auc"}
        for r in self.summary:
            if r["metric"] in shown:
                out.append(
                    f"  {r['model']:<8} {r['variant']:<17} {r['metric']:<11} {r['estimator']:<15} "
                    f"{_fmt(r['mean'])} ± {_fmt(r['std'])}"
                )
        return out


def _fmt(x: object) -> str:
    return "   n/a" if x is None else f"{x:.4f}"


def training_window(windows: Windows) -> Windows:
    """The window the models evaluated on ``windows`` are trained on: its features end where
    ``windows``' label period starts less one label length, and its labels end at ``t1``."""
    label = windows.t2 - windows.t1
    if windows.t1 - label <= windows.t0:
        raise BadInputError(
            f"the feature window ({windows.feature_days:g} days) must be longer than the label "
            "window to build a training window before it"
        )
    return Windows(windows.t0, windows.t1 - label, windows.t1)


def windows_needed(latest: Windows, *, training: bool) -> list[Windows]:
    """The windows a run builds, oldest first: ``latest``, preceded by its training window when
    the run trains models."""
    return [training_window(latest), latest] if training else [latest]


def variant_weights(samples: DataFrame, variant: str, *, combine: Mapping[str, Any]) -> DataFrame:
    """``samples`` with ``weight`` recomputed for one variant from the stored components.

    Args:
        samples: gold rows with every weight component.
        variant: ``unweighted``, ``combined`` (the ``combine`` keywords as they are) or one
            component alone (its exponent 1, the others 0, the same clipping).
        combine: keywords of :func:`~sampleimp_spark.weighting.combine.combine_weights`.
    """
    if variant == "unweighted":
        return samples.withColumn(S.WEIGHT, F.lit(1.0))
    kwargs = dict(combine)
    if variant != "combined":
        kwargs["a"], kwargs["b"], kwargs["c"] = _EXPONENTS[variant]
    return combine_weights(samples.drop(S.WEIGHT), **kwargs)


def ground_truth(events: DataFrame, *, start: datetime, end: datetime) -> DataFrame:
    """``(user_id, item_id, relevance)``: items touched in ``[start, end)``, graded by intent (1..5)."""
    level = F.array_position(F.array(*(F.lit(b) for b in S.BEHAVIORS)), F.col(S.BEHAVIOR))
    window = (F.col(S.TS) >= F.lit(start)) & (F.col(S.TS) < F.lit(end)) & F.col(S.BEHAVIOR).isin(*S.BEHAVIORS)
    return events.where(window).groupBy(S.USER_ID, S.ITEM_ID).agg(F.max(level).cast("double").alias(S.RELEVANCE))


def _between(events: DataFrame, start: datetime, end: datetime) -> DataFrame:
    return events.where((F.col(S.TS) >= F.lit(start)) & (F.col(S.TS) < F.lit(end)))


def _select_reg_param(events: DataFrame, windows: Windows, label: timedelta, plan: ExperimentPlan) -> float:
    """ALS reg_param with the best unweighted NDCG@k on the validation window."""
    if len(plan.als_reg_grid) == 1:
        return plan.als_reg_grid[0]
    t_val = windows.t1 - label
    train = _between(events, windows.t0, t_val)
    truth = ground_truth(events, start=t_val, end=windows.t1).join(train.select(S.USER_ID).distinct(), S.USER_ID)
    ratings = checkpoint(implicit_ratings(train, None, strengths=plan.strengths))
    users = truth.select(S.USER_ID).distinct()
    best, best_score = plan.als_reg_grid[0], -1.0
    for reg in plan.als_reg_grid:
        model = fit_als(ratings, **{**plan.als, "reg_param": reg}, seed=plan.seeds[0])
        recs = recommend(model, users, plan.k)
        ndcg = _metric(E.ranking_metrics(recs, truth, k=plan.k, relevance_col=S.RELEVANCE), "ndcg_at_k")
        model.unpersist()
        log.info("ALS validation: reg_param %s -> NDCG@%d %.4f", reg, plan.k, ndcg or 0.0)
        if ndcg is not None and ndcg > best_score:
            best, best_score = reg, ndcg
    release(ratings)
    return best


def _select_depth(train_samples: DataFrame, plan: ExperimentPlan) -> int:
    """GBT max_depth with the best unweighted PR-AUC on held-out users of the training window."""
    if len(plan.gbt_depth_grid) == 1:
        return plan.gbt_depth_grid[0]
    held_out = hashing.uniform(plan.seeds[0], F.col(S.USER_ID), salt="gbt_validation") < plan.validation_share
    fit_part, val_part = train_samples.where(~held_out), train_samples.where(held_out)
    best, best_score = plan.gbt_depth_grid[0], -1.0
    for depth in plan.gbt_depth_grid:
        model = fit_gbt(fit_part, plan.features, **{**plan.gbt, "max_depth": depth}, seed=plan.seeds[0])
        scored = checkpoint(predict_proba(model, val_part))  # read by several metric queries
        pr = _metric(E.classification_metrics(scored, user_col=None), "pr_auc")
        release(scored)
        log.info("GBT validation: max_depth %s -> PR-AUC %.4f", depth, pr or 0.0)
        if pr is not None and pr > best_score:
            best, best_score = depth, pr
    return best


def _metric(values: list[E.MetricValue], name: str, estimator: str = E.UNWEIGHTED) -> float | None:
    return next((v.value for v in values if v.metric == name and v.estimator == estimator), None)


def summarize(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    """Mean, standard deviation (over seeds) and mean interval per model, variant, metric, estimator."""
    groups: dict[tuple, list[dict[str, object]]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["variant"], r["metric"], r["estimator"], r["k"]), []).append(r)
    out = []
    for (model, variant, metric, estimator, k), rs in sorted(groups.items(), key=lambda kv: tuple(map(str, kv[0]))):
        values = [r["value"] for r in rs if r["value"] is not None]
        lows = [r["ci_low"] for r in rs if r["ci_low"] is not None]
        highs = [r["ci_high"] for r in rs if r["ci_high"] is not None]
        out.append(
            {
                "model": model,
                "variant": variant,
                "metric": metric,
                "estimator": estimator,
                "k": k,
                "seeds": len(values),
                "mean": statistics.fmean(values) if values else None,
                "std": statistics.stdev(values) if len(values) > 1 else (0.0 if values else None),
                "ci_low": statistics.fmean(lows) if lows else None,
                "ci_high": statistics.fmean(highs) if highs else None,
            }
        )
    return out


def run_experiments(
    events: DataFrame,
    eval_samples: DataFrame,
    train_samples: DataFrame,
    *,
    windows: Windows,
    plan: ExperimentPlan,
    on_models: ModelSink | None = None,
) -> tuple[dict[str, object], list[dict[str, object]]]:
    """Train and evaluate every (variant, seed); return the chosen hyperparameters and metric rows.

    Args:
        events: the source's events over at least ``[t0, t2)``.
        eval_samples: window ``E``: features, labels and ``w_dr`` (gold rows).
        train_samples: window ``T`` (:func:`training_window`): features, labels and every
            weight component.
        windows: ``E``'s windows.
        plan: what to train and how to evaluate it.
        on_models: receives every fitted pair of models (e.g. to store them).
    """
    label = windows.t2 - windows.t1
    reg = _select_reg_param(events, windows, label, plan)
    depth = _select_depth(train_samples, plan)
    hyper = {"als_reg_param": reg, "gbt_max_depth": depth}
    als_params = {**plan.als, "reg_param": reg}
    gbt_params = {**plan.gbt, "max_depth": depth}
    features = list(plan.features)
    k = plan.k

    train_events = _between(events, windows.t0, windows.t1)
    eval_users = eval_samples.select(S.USER_ID).distinct()
    truth = checkpoint(ground_truth(events, start=windows.t1, end=windows.t2).join(eval_users, S.USER_ID))
    truth_users = truth.select(S.USER_ID).distinct()
    user_w = checkpoint(
        E.user_mean_weights(eval_samples.join(truth_users, S.USER_ID), weight_col=S.W_DR).withColumnRenamed(
            S.W_DR, S.WEIGHT
        )
    )
    catalog = train_events.select(S.ITEM_ID).distinct().count()
    ranking = {**plan.ranking, "relevance_col": S.RELEVANCE}
    rows: list[dict[str, object]] = []

    def record(values: list[E.MetricValue], model: str, variant: str, seed: int) -> None:
        rows.extend({**v.as_record(), "model": model, "variant": variant, "seed": seed} for v in values)

    for variant in plan.variants:
        weighted_train = checkpoint(variant_weights(train_samples, variant, combine=plan.combine))
        pair_w = weighted_train.select(S.USER_ID, S.ITEM_ID, S.WEIGHT)
        ratings = checkpoint(
            implicit_ratings(train_events, None if variant == "unweighted" else pair_w, strengths=plan.strengths)
        )
        for seed in plan.seeds:
            als = fit_als(ratings, **als_params, seed=seed)
            # One ALS list per user, as long as the re-ranking's candidates, serves both
            # evaluations: its top k is ALS's list (the same order, ties by item index), the
            # whole list the GBT's candidates. Computing it is the costly part at scale.
            n_listed = max(k, plan.candidates) if plan.rerank else k
            listed = checkpoint(recommend(als, truth_users, n_listed, rank_col=S.ALS_RANK))
            recs = listed.where(F.col(S.ALS_RANK) <= k).withColumnRenamed(S.ALS_RANK, S.RANK)
            record(
                E.ranking_metrics(recs, truth, user_weights=user_w, catalog=catalog, **ranking), "als", variant, seed
            )

            gbt = fit_gbt(
                weighted_train,
                features,
                **gbt_params,
                seed=seed,
                weight_col=None if variant == "unweighted" else S.WEIGHT,
            )
            scored = checkpoint(predict_proba(gbt, eval_samples))
            # Unweighted and weighted by w_dr: the same rows, one bootstrap for both.
            record(E.classification_metrics(scored, weight_col=S.W_DR, **plan.classification), "gbt", variant, seed)

            if plan.rerank:
                cands = listed.where(F.col(S.ALS_RANK) <= plan.candidates)
                with_feats = candidate_features(cands, eval_samples, features, feature_days=windows.feature_days)
                reranked = rerank(with_feats, gbt, k)
                record(
                    E.ranking_metrics(reranked, truth, user_weights=user_w, catalog=catalog, **ranking),
                    "als+gbt",
                    variant,
                    seed,
                )
            if on_models is not None:
                on_models(variant, seed, als, gbt)
            als.unpersist()
            release(listed, scored)
            log.info("trained %s seed %s", variant, seed)
        release(ratings, weighted_train)
    release(truth, user_w)
    return hyper, rows
