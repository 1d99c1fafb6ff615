"""The training stage: weighted vs unweighted ALS, GBT and ALS+GBT, on the same split, over seeds.

**Windows.** The gold window ``E`` has features over ``[t0, t1)`` and labels over ``[t1, t2)``;
its label window is the *evaluation* period and nothing evaluated there may reach training.
Its weights are not used for training: ``w_class`` and ``w_ig`` are computed from ``E``'s labels,
so an ALS or GBT trained with them would be told which pairs are bought in the evaluation
period. Training weights come instead from a *training window* ``T``, the same pipeline
(features, shards, class frequencies, weights) shifted back by the label length ``L``:
features over ``[t0, t1 - L)``, labels over ``[t1 - L, t1)``, all before ``t1``.

* **ALS** is trained on every event of ``[t0, t1)`` (:func:`~sampleimp_spark.training.als.implicit_ratings`,
  pairs weighted by ``T``'s weights; pairs first seen in ``[t1 - L, t1)`` have weight 1) and
  evaluated on the items each user touched in ``[t1, t2)`` (graded by intent: view 1 ..
  purchase 5), for users with events before ``t1``.
* **GBT** is trained on ``T``'s samples (their labels end at ``t1``) and evaluated on ``E``'s
  samples (labels in ``[t1, t2)``).
* **ALS+GBT**: each ALS's top-``candidates`` items re-ranked by the GBT of the same variant
  and seed.

**Hyperparameters** are chosen once, unweighted, never on the evaluation period: ALS's
``reg_param`` on a validation window (train ``[t0, t1 - L)``, validate ``[t1 - L, t1)``, NDCG@k),
GBT's ``max_depth`` on held-out users of ``T`` (PR-AUC). Every variant then uses the same
hyperparameters, so the comparison isolates the weights.

**Variants**: ``unweighted``; ``class``, ``density_ratio``, ``information_gain`` (one
component alone, recombined with the configured clipping and mean-1 normalization); and
``combined`` (the configured combination). Each is trained once per seed.

**Metrics** (:mod:`sampleimp_spark.training.evaluate`): ranking metrics at ``k`` and
classification metrics, unweighted and importance-weighted by ``E``'s density-ratio weights
(``w_dr``, label-free: how much each evaluated user / sample resembles today's traffic), with
per-user bootstrap intervals. Per-seed rows go to ``gold.metrics``; mean ± std over seeds to
``gold.experiment_results``.
"""

from __future__ import annotations

import json
import logging
import statistics
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sampleimp_spark import hashing, lake
from sampleimp_spark import schema as S
from sampleimp_spark.configbase import StrictModel
from sampleimp_spark.errors import BadInputError
from sampleimp_spark.features.windows import Windows
from sampleimp_spark.frames import checkpoint, release
from sampleimp_spark.progress import RunProgress
from sampleimp_spark.sources import SOURCE_TIMEZONES
from sampleimp_spark.training import evaluate as E
from sampleimp_spark.training.als import ALS_RANK, ALSConfig, fit_als, implicit_ratings, recommend
from sampleimp_spark.training.gbt import GBTConfig, candidate_features, fit_gbt, predict_proba, rerank, resolve_features
from sampleimp_spark.weighting.combine import CombineConfig, combine_weights

if TYPE_CHECKING:
    from sampleimp_spark.config import Config

log = logging.getLogger(__name__)

Variant = Literal["unweighted", "class", "density_ratio", "information_gain", "combined"]
VARIANTS: tuple[str, ...] = ("unweighted", "class", "density_ratio", "information_gain", "combined")
_EXPONENTS = {"class": (1.0, 0.0, 0.0), "density_ratio": (0.0, 1.0, 0.0), "information_gain": (0.0, 0.0, 1.0)}
RELEVANCE = "relevance"
MODELS = ("als", "gbt", "als+gbt")


class TrainConfig(StrictModel):
    """Weighted-vs-unweighted experiments (DESIGN §6)."""

    variants: list[Variant] = Field(default_factory=lambda: list(VARIANTS), min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [1, 2, 3], min_length=1)
    als: ALSConfig = Field(default_factory=ALSConfig)
    gbt: GBTConfig = Field(default_factory=GBTConfig)
    evaluation: E.EvaluationConfig = Field(default_factory=E.EvaluationConfig)
    #: ALS reg_param candidates, chosen on the validation window (unweighted NDCG@k).
    als_reg_grid: list[float] = Field(default_factory=lambda: [0.01, 0.1, 1.0], min_length=1)
    #: GBT max_depth candidates, chosen on held-out users of the training window (PR-AUC).
    gbt_depth_grid: list[int] = Field(default_factory=lambda: [3, 5], min_length=1)
    validation_share: float = Field(0.2, gt=0, lt=1)
    rerank: bool = True
    save_models: bool = True


@dataclass
class TrainingReport:
    """What a training run measured."""

    window_id: str
    training_version: int
    hyperparameters: dict[str, object]
    rows: list[dict[str, object]] = field(default_factory=list)  # per (model, variant, seed, metric)
    summary: list[dict[str, object]] = field(default_factory=list)  # mean ± std over seeds

    def lines(self) -> list[str]:
        out = [
            f"window {self.window_id}, gold.training_samples version {self.training_version}, "
            f"hyperparameters {self.hyperparameters}"
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


def windows_of(window_id: str) -> Windows:
    """The windows a ``window_id`` encodes."""
    t0, t1, t2 = (datetime.strptime(t, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC) for t in window_id.split("_"))
    return Windows(t0, t1, t2)


def variant_weights(samples: DataFrame, variant: str, *, combine: CombineConfig) -> DataFrame:
    """``samples`` with ``weight`` recomputed for one variant from the stored components."""
    if variant == "unweighted":
        return samples.withColumn(S.WEIGHT, F.lit(1.0))
    if variant == "combined":
        cfg = combine
    else:
        a, b, c = _EXPONENTS[variant]
        cfg = CombineConfig(a=a, b=b, c=c, clip_quantile=combine.clip_quantile)
    return combine_weights(samples.drop(S.WEIGHT), cfg=cfg)


def ground_truth(events: DataFrame, *, start: datetime, end: datetime) -> DataFrame:
    """``(user_id, item_id, relevance)``: items touched in ``[start, end)``, graded by intent (1..5)."""
    level = F.array_position(F.array(*(F.lit(b) for b in S.BEHAVIORS)), F.col(S.BEHAVIOR))
    window = (F.col(S.TS) >= F.lit(start)) & (F.col(S.TS) < F.lit(end)) & F.col(S.BEHAVIOR).isin(*S.BEHAVIORS)
    return events.where(window).groupBy(S.USER_ID, S.ITEM_ID).agg(F.max(level).cast("double").alias(RELEVANCE))


def _between(events: DataFrame, start: datetime, end: datetime) -> DataFrame:
    return events.where((F.col(S.TS) >= F.lit(start)) & (F.col(S.TS) < F.lit(end)))


def _select_reg_param(events: DataFrame, windows: Windows, label: timedelta, cfg: TrainConfig) -> float:
    """ALS reg_param with the best unweighted NDCG@k on the validation window."""
    if len(cfg.als_reg_grid) == 1:
        return cfg.als_reg_grid[0]
    t_val = windows.t1 - label
    train = _between(events, windows.t0, t_val)
    truth = ground_truth(events, start=t_val, end=windows.t1).join(train.select(S.USER_ID).distinct(), S.USER_ID)
    ratings = checkpoint(implicit_ratings(train, None, strengths=cfg.als.strengths))
    users = truth.select(S.USER_ID).distinct()
    best, best_score = cfg.als_reg_grid[0], -1.0
    for reg in cfg.als_reg_grid:
        model = fit_als(ratings, cfg=cfg.als.model_copy(update={"reg_param": reg}), seed=cfg.seeds[0])
        recs = recommend(model, users, cfg.evaluation.k)
        ndcg = _metric(E.ranking_metrics(recs, truth, k=cfg.evaluation.k, relevance_col=RELEVANCE), "ndcg_at_k")
        model.unpersist()
        log.info("ALS validation: reg_param %s -> NDCG@%d %.4f", reg, cfg.evaluation.k, ndcg or 0.0)
        if ndcg is not None and ndcg > best_score:
            best, best_score = reg, ndcg
    release(ratings)
    return best


def _select_depth(train_samples: DataFrame, features: list[str], cfg: TrainConfig) -> int:
    """GBT max_depth with the best unweighted PR-AUC on held-out users of the training window."""
    if len(cfg.gbt_depth_grid) == 1:
        return cfg.gbt_depth_grid[0]
    held_out = hashing.uniform(cfg.seeds[0], F.col(S.USER_ID), salt="gbt_validation") < cfg.validation_share
    fit_part, val_part = train_samples.where(~held_out), train_samples.where(held_out)
    best, best_score = cfg.gbt_depth_grid[0], -1.0
    for depth in cfg.gbt_depth_grid:
        model = fit_gbt(fit_part, features, cfg=cfg.gbt.model_copy(update={"max_depth": depth}), seed=cfg.seeds[0])
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
    cfg: TrainConfig,
    combine: CombineConfig,
    models_dir: Path | None = None,
) -> tuple[dict[str, object], list[dict[str, object]]]:
    """Train and evaluate every (variant, seed); return the chosen hyperparameters and metric rows.

    Args:
        events: the source's events over at least ``[t0, t2)``.
        eval_samples: window ``E``: features, labels and ``w_dr`` (gold rows).
        train_samples: window ``T``: features, labels and every weight component.
        windows: ``E``'s windows.
        cfg: the experiment settings.
        combine: the configured combination (for the ``combined`` variant and the clipping).
        models_dir: where to save the fitted models (None = do not save).
    """
    label = windows.t2 - windows.t1
    ev = cfg.evaluation
    features = resolve_features(cfg.gbt, eval_samples)
    reg = _select_reg_param(events, windows, label, cfg)
    depth = _select_depth(train_samples, features, cfg)
    hyper = {"als_reg_param": reg, "gbt_max_depth": depth}
    als_cfg = cfg.als.model_copy(update={"reg_param": reg})
    gbt_cfg = cfg.gbt.model_copy(update={"max_depth": depth})

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
    # Evaluation settings, the same for every variant and seed.
    ranking = dict(
        k=ev.k,
        relevance_col=RELEVANCE,
        n_boot=ev.n_boot,
        seed=ev.seed,
        alpha=ev.alpha,
        missing_recs=ev.missing_recs,
        no_relevant=ev.no_relevant,
        ndcg_gain=ev.ndcg_gain,
    )
    cls = dict(threshold=ev.threshold, n_boot=ev.n_boot, seed=ev.seed, alpha=ev.alpha, eps=ev.log_loss_eps)
    rows: list[dict[str, object]] = []

    def record(values: list[E.MetricValue], model: str, variant: str, seed: int) -> None:
        rows.extend({**v.as_record(), "model": model, "variant": variant, "seed": seed} for v in values)

    for variant in cfg.variants:
        weighted_train = checkpoint(variant_weights(train_samples, variant, combine=combine))
        pair_w = weighted_train.select(S.USER_ID, S.ITEM_ID, S.WEIGHT)
        ratings = checkpoint(
            implicit_ratings(train_events, None if variant == "unweighted" else pair_w, strengths=als_cfg.strengths)
        )
        for seed in cfg.seeds:
            als = fit_als(ratings, cfg=als_cfg, seed=seed)
            # One ALS list per user, as long as the re-ranking's candidates, serves both
            # evaluations: its top k is ALS's list (the same order, ties by item index), the
            # whole list the GBT's candidates. Computing it is the costly part at scale.
            n_listed = max(ev.k, als_cfg.candidates) if cfg.rerank else ev.k
            listed = checkpoint(recommend(als, truth_users, n_listed, rank_col=ALS_RANK))
            recs = listed.where(F.col(ALS_RANK) <= ev.k).withColumnRenamed(ALS_RANK, E.RANK)
            record(
                E.ranking_metrics(recs, truth, user_weights=user_w, catalog=catalog, **ranking), "als", variant, seed
            )

            gbt = fit_gbt(
                weighted_train,
                features,
                cfg=gbt_cfg,
                seed=seed,
                weight_col=None if variant == "unweighted" else S.WEIGHT,
            )
            scored = checkpoint(predict_proba(gbt, eval_samples))
            # Unweighted and weighted by w_dr: the same rows, one bootstrap for both.
            record(E.classification_metrics(scored, weight_col=S.W_DR, **cls), "gbt", variant, seed)

            if cfg.rerank:
                cands = listed.where(F.col(ALS_RANK) <= als_cfg.candidates)
                with_feats = candidate_features(cands, eval_samples, features, feature_days=windows.feature_days)
                reranked = rerank(with_feats, gbt, ev.k)
                record(
                    E.ranking_metrics(reranked, truth, user_weights=user_w, catalog=catalog, **ranking),
                    "als+gbt",
                    variant,
                    seed,
                )
            if models_dir is not None:
                target = models_dir / f"{variant}-seed{seed}"
                als.model.write().overwrite().save(str(target / "als"))
                als.user_index.write.mode("overwrite").parquet(str(target / "als_user_index"))
                als.item_index.write.mode("overwrite").parquet(str(target / "als_item_index"))
                gbt.write().overwrite().save(str(target / "gbt"))
            als.unpersist()
            release(listed, scored)
            log.info("trained %s seed %s", variant, seed)
        release(ratings, weighted_train)
    release(truth, user_w)
    return hyper, rows


def _training_window(windows: Windows) -> Windows:
    label = windows.t2 - windows.t1
    if windows.t1 - label <= windows.t0:
        raise BadInputError(
            f"the feature window ({windows.feature_days:g} days) must be longer than the label "
            "window to build a training window before it"
        )
    return Windows(windows.t0, windows.t1 - label, windows.t1)


def build_training(
    spark: SparkSession, cfg: Config, *, ctx: lake.RunContext, progress: RunProgress, window_id: str | None = None
) -> TrainingReport:
    """Run the experiments on one gold window and write ``gold.metrics`` and ``gold.experiment_results``."""
    from sampleimp_spark.features.build import build_window
    from sampleimp_spark.weighting.stage import _window_of, compute_weights

    source = cfg.features.source or cfg.input.source
    tcfg: TrainConfig = cfg.train
    with progress.stage(spark, "train", f"weighted vs unweighted ALS / GBT on {source}") as info:
        wid = _window_of(spark, cfg, source, window_id)
        windows = windows_of(wid)
        version = lake.table_version(spark, cfg.lakehouse, S.GOLD_TRAINING_SAMPLES)
        where = (F.col(S.SOURCE) == source) & (F.col(S.WINDOW_ID) == wid)
        eval_samples = checkpoint(
            lake.read_table(spark, cfg.lakehouse, S.GOLD_TRAINING_SAMPLES, version=version).where(where)
        )
        events = checkpoint(
            _between(
                lake.read_table(spark, cfg.lakehouse, S.BRONZE_EVENTS).where(F.col(S.SOURCE) == source),
                windows.t0,
                windows.t2,
            )
        )
        t_windows = _training_window(windows)
        t_window = build_window(events, windows=t_windows, tz=SOURCE_TIMEZONES[source], cfg=cfg.features, source=source)
        weighted = compute_weights(
            t_window.samples, t_window.class_frequencies, cfg=cfg.weights, feature_days=t_windows.feature_days
        )
        train_samples = checkpoint(weighted.samples)
        # The checkpoint above no longer needs the computation's caches.
        weighted.unpersist()
        t_window.release()
        models_dir = None
        if tcfg.save_models:
            models_dir = Path(lake.table_path(cfg.lakehouse, "models.x")).parent / wid / ctx.run_id
        try:
            hyper, rows = run_experiments(
                events,
                eval_samples,
                train_samples,
                windows=windows,
                cfg=tcfg,
                combine=cfg.weights.combine,
                models_dir=models_dir,
            )
        finally:
            release(events, eval_samples, train_samples)
        if models_dir is not None:
            (models_dir / "training.json").write_text(
                json.dumps(
                    {
                        "table": S.GOLD_TRAINING_SAMPLES,
                        "version": version,
                        "window_id": wid,
                        "source": source,
                        "training_window": t_windows.window_id,
                        "hyperparameters": hyper,
                        "run_id": ctx.run_id,
                        "variants": tcfg.variants,
                        "seeds": tcfg.seeds,
                    },
                    indent=2,
                )
            )
        report = TrainingReport(
            window_id=wid, training_version=version, hyperparameters=hyper, rows=rows, summary=summarize(rows)
        )
        _write_metrics(spark, cfg, report, source=source, ctx=ctx)
        info.rows_out = {"metric_rows": len(rows)}
        for line in report.lines():
            log.info("%s", line)
    return report


METRIC_COLUMNS = (
    "model",
    "variant",
    "seed",
    "metric",
    "k",
    "threshold",
    "estimator",
    "weighted",
    "value",
    "ci_low",
    "ci_high",
    "n_users",
    "n_boot",
)
SUMMARY_COLUMNS = ("model", "variant", "metric", "estimator", "k", "seeds", "mean", "std", "ci_low", "ci_high")


def _write_metrics(
    spark: SparkSession, cfg: Config, report: TrainingReport, *, source: str, ctx: lake.RunContext
) -> None:
    common = {
        "run_id": ctx.run_id,
        "window_id": report.window_id,
        "source": source,
        "training_version": report.training_version,
    }
    metrics_ddl = (
        "run_id string, window_id string, source string, training_version long, model string, "
        "variant string, seed int, metric string, k int, threshold double, estimator string, "
        "weighted boolean, value double, ci_low double, ci_high double, n_users long, n_boot int"
    )
    rows = [{**common, **{c: r.get(c) for c in METRIC_COLUMNS}} for r in report.rows]
    metrics = spark.createDataFrame(rows, metrics_ddl)
    where = f"run_id = '{ctx.run_id}'"
    lake.write_table(metrics, cfg.lakehouse, S.GOLD_METRICS, ctx=ctx, replace_where=where)
    summary_ddl = (
        "run_id string, window_id string, source string, training_version long, model string, "
        "variant string, metric string, estimator string, k int, seeds int, mean double, std double, "
        "ci_low double, ci_high double"
    )
    srows = [{**common, **{c: r.get(c) for c in SUMMARY_COLUMNS}} for r in report.summary]
    summary = spark.createDataFrame(srows, summary_ddl)
    lake.write_table(summary, cfg.lakehouse, S.GOLD_EXPERIMENT_RESULTS, ctx=ctx, replace_where=where)
