"""The train stage: weighted vs unweighted ALS, GBT and ALS+GBT -> models, ``gold.metrics``,
``gold.experiment_results``.

It reads two stored gold windows: the evaluation window ``E`` (the run's window, or
``weights.window_id``, or the source's latest) and its training window ``T``
(:func:`sampleimp_spark.training.protocol.training_window`), which the features and weights
stages built when ``train.enabled`` is true, and the source's events. The experiment itself is
:func:`sampleimp_spark.training.protocol.run_experiments`; models and their lineage are stored
through :mod:`sampleimp_spark.lake`.
"""

from __future__ import annotations

import logging
from typing import Any

from pyspark.ml import PipelineModel
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from sampleimp_spark import lake
from sampleimp_spark import schema as S
from sampleimp_spark.config import Config, TrainConfig
from sampleimp_spark.errors import BadInputError
from sampleimp_spark.frames import checkpoint, release
from sampleimp_spark.progress import RunProgress
from sampleimp_spark.stages.features import source_of
from sampleimp_spark.stages.weights import windows_to_weight
from sampleimp_spark.training.als import FittedALS
from sampleimp_spark.training.gbt import resolve_features
from sampleimp_spark.training.protocol import (
    ExperimentPlan,
    TrainingReport,
    run_experiments,
    summarize,
    training_window,
)
from sampleimp_spark.windows import Windows

log = logging.getLogger(__name__)

_ALS_FIT = ("rank", "alpha", "max_iter", "num_blocks", "reg_param")
_GBT_FIT = ("max_iter", "max_depth", "step_size", "subsampling_rate", "max_bins")


def experiment_plan(tcfg: TrainConfig, combine: dict[str, Any], features: list[str]) -> ExperimentPlan:
    """The experiment the config describes, as plain values."""
    ev = tcfg.evaluation
    return ExperimentPlan(
        variants=tuple(tcfg.variants),
        seeds=tuple(tcfg.seeds),
        features=tuple(features),
        als={k: getattr(tcfg.als, k) for k in _ALS_FIT},
        strengths=dict(tcfg.als.strengths),
        candidates=tcfg.als.candidates,
        gbt={k: getattr(tcfg.gbt, k) for k in _GBT_FIT},
        ranking={
            "k": ev.k,
            "n_boot": ev.n_boot,
            "seed": ev.seed,
            "alpha": ev.alpha,
            "missing_recs": ev.missing_recs,
            "no_relevant": ev.no_relevant,
            "ndcg_gain": ev.ndcg_gain,
        },
        classification={
            "threshold": ev.threshold,
            "n_boot": ev.n_boot,
            "seed": ev.seed,
            "alpha": ev.alpha,
            "eps": ev.log_loss_eps,
        },
        combine=combine,
        als_reg_grid=tuple(tcfg.als_reg_grid),
        gbt_depth_grid=tuple(tcfg.gbt_depth_grid),
        validation_share=tcfg.validation_share,
        rerank=tcfg.rerank,
    )


def run(
    spark: SparkSession,
    cfg: Config,
    *,
    ctx: lake.RunContext,
    progress: RunProgress,
    window_id: str | None = None,
) -> TrainingReport:
    """Run the experiments on one gold window and write ``gold.metrics`` and ``gold.experiment_results``."""
    source = source_of(cfg)
    tcfg = cfg.train
    with progress.stage(spark, "train", f"weighted vs unweighted ALS / GBT on {source}") as info:
        wid = windows_to_weight(spark, cfg, source, [window_id] if window_id else None)[-1]
        windows = Windows.from_id(wid)
        t_windows = training_window(windows)
        version = lake.table_version(spark, cfg.lakehouse, S.GOLD_TRAINING_SAMPLES)
        ctx = ctx.with_inputs(S.GOLD_TRAINING_SAMPLES, version)
        gold = lake.read_table(spark, cfg.lakehouse, S.GOLD_TRAINING_SAMPLES, version=version).where(
            F.col(S.SOURCE) == source
        )
        eval_samples = checkpoint(gold.where(F.col(S.WINDOW_ID) == wid))
        train_samples = checkpoint(gold.where(F.col(S.WINDOW_ID) == t_windows.window_id))
        events = checkpoint(
            lake.read_table(spark, cfg.lakehouse, S.BRONZE_EVENTS).where(
                (F.col(S.SOURCE) == source) & (F.col(S.TS) >= F.lit(windows.t0)) & (F.col(S.TS) < F.lit(windows.t2))
            )
        )
        try:
            if train_samples.isEmpty():
                raise BadInputError(
                    f"gold.training_samples has no training window {t_windows.window_id} for {source}: "
                    "run the features and weights stages with train.enabled: true first"
                )
            cc = cfg.weights.combine
            combine = {"a": cc.a, "b": cc.b, "c": cc.c, "clip_quantile": cc.clip_quantile}
            plan = experiment_plan(tcfg, combine, resolve_features(tcfg.gbt.features, eval_samples))

            def store(variant: str, seed: int, als: FittedALS, gbt: PipelineModel) -> None:
                lake.save_models(cfg.lakehouse, wid, ctx.run_id, f"{variant}-seed{seed}", als=als, gbt=gbt)

            hyper, rows = run_experiments(
                events,
                eval_samples,
                train_samples,
                windows=windows,
                plan=plan,
                on_models=store if tcfg.save_models else None,
            )
        finally:
            release(events, eval_samples, train_samples)
        if tcfg.save_models:
            lake.write_model_lineage(
                cfg.lakehouse,
                wid,
                ctx.run_id,
                {
                    "table": S.GOLD_TRAINING_SAMPLES,
                    "version": version,
                    "window_id": wid,
                    "source": source,
                    "training_window": t_windows.window_id,
                    "hyperparameters": hyper,
                    "run_id": ctx.run_id,
                    "variants": list(tcfg.variants),
                    "seeds": list(tcfg.seeds),
                },
            )
        report = TrainingReport(
            window_id=wid,
            training_window_id=t_windows.window_id,
            training_version=version,
            hyperparameters=hyper,
            rows=rows,
            summary=summarize(rows),
        )
        _write_metrics(spark, cfg, report, source=source, ctx=ctx)
        info.rows_out = {"metric_rows": len(rows)}
        for line in report.lines():
            log.info("%s", line)
    return report


def _write_metrics(
    spark: SparkSession, cfg: Config, report: TrainingReport, *, source: str, ctx: lake.RunContext
) -> None:
    common = {
        S.RUN_ID: ctx.run_id,
        S.WINDOW_ID: report.window_id,
        S.SOURCE: source,
        "training_version": report.training_version,
    }
    replace = lake.rows_where(run_id=ctx.run_id)
    for name, rows in ((S.GOLD_METRICS, report.rows), (S.GOLD_EXPERIMENT_RESULTS, report.summary)):
        schema = S.CONTRACTS[name].columns
        records = [{**common, **r} for r in rows]
        frame = spark.createDataFrame([tuple(r.get(f.name) for f in schema.fields) for r in records], schema)
        lake.write_table(frame, cfg.lakehouse, name, ctx=ctx, replace_where=replace)
