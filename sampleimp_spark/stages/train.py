"""The train stage: weighted vs unweighted ALS, GBT and ALS+GBT next to non-learned baselines ->
models, ``gold.metrics``, ``gold.experiment_results``.

It reads the gold windows the features and weights stages built for the experiment (the run's
window and, before it, one window per origin plus two for validation: ``train.origins``), pinned
at one Delta version, and the source's events, and runs
:func:`sampleimp_spark.training.protocol.run_experiment`. The models of the latest origin and
their lineage (``training.json``) are stored through :mod:`sampleimp_spark.lake`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sampleimp_spark import lake, leases
from sampleimp_spark import schema as S
from sampleimp_spark.config import Config, TrainConfig
from sampleimp_spark.errors import BadInputError
from sampleimp_spark.evaluation import names as N
from sampleimp_spark.frames import checkpoint, release
from sampleimp_spark.progress import RunProgress
from sampleimp_spark.stages.features import source_of
from sampleimp_spark.stages.tracking import Tracker
from sampleimp_spark.stages.weights import label_column, windows_to_weight
from sampleimp_spark.training.als import FittedALS
from sampleimp_spark.training.gbt import resolve_features
from sampleimp_spark.training.protocol import (
    ExperimentPlan,
    ExperimentResult,
    origin_windows,
    run_experiment,
    stored_origins,
    uses_density_ratio,
    variant_weights,
)
from sampleimp_spark.training.selection import Selection
from sampleimp_spark.weighting.combine import weight_diagnostics
from sampleimp_spark.windows import Windows

log = logging.getLogger(__name__)


@dataclass
class TrainingReport:
    """What a training run measured, on which gold version."""

    window_id: str
    training_version: int
    result: ExperimentResult
    #: The MLflow run the training was logged to (``tracking.enabled``), else None.
    tracking_run: str | None = None

    def lines(self) -> list[str]:
        out = [f"window {self.window_id}, gold.training_samples version {self.training_version}", *self.result.lines()]
        if self.result.tuned.selection is not None:
            out.append(f"weighting chosen on validation: {self.result.tuned.selection.reason}")
        return out


def experiment_plan(
    tcfg: TrainConfig,
    combine: dict[str, object],
    features: list[str],
    *,
    resampled: bool = False,
    snips: bool = False,
    unshippable: dict[str, str] | None = None,
) -> ExperimentPlan:
    """The experiment the config describes, as plain values."""
    ev = tcfg.evaluation
    return ExperimentPlan(
        variants=tuple(tcfg.variants),
        seeds=tuple(tcfg.seeds),
        features=tuple(features),
        als={"rank": tcfg.als.rank, "max_iter": tcfg.als.max_iter, "num_blocks": tcfg.als.num_blocks},
        strengths=dict(tcfg.als.strengths),
        candidates=tcfg.als.candidates,
        gbt={
            "max_iter": tcfg.gbt.max_iter,
            "step_size": tcfg.gbt.step_size,
            "subsampling_rate": tcfg.gbt.subsampling_rate,
            "max_bins": tcfg.gbt.max_bins,
        },
        combine=combine,
        k=ev.k,
        als_reg_grid=tuple(tcfg.als_reg_grid),
        als_alpha_grid=tuple(tcfg.als_alpha_grid),
        gbt_depth_grid=tuple(tcfg.gbt_depth_grid),
        half_life_grid=tuple(tcfg.half_life_grid),
        max_users=ev.max_users,
        n_boot=ev.n_boot,
        ci_level=ev.ci_level,
        power=ev.power,
        top_fraction=ev.top_fraction,
        negative_rate=tcfg.gbt.negative_rate,
        parallelism=tcfg.parallelism,
        seed=ev.seed,
        rerank=tcfg.rerank,
        ndcg_gain=ev.ndcg_gain,
        resampled=resampled,
        confidence=tcfg.als.confidence,
        epsilon=tcfg.als.epsilon,
        snips=snips,
        unshippable=dict(unshippable or {}),
    )


def _recent_target(gold: DataFrame) -> bool:
    """Whether every sample's density ratio has the ``recent`` target (``is_target`` set), known at
    its window's feature end: only then does SNIPS on an evaluation window read no event of its
    evaluation period (the ``next_window`` target, ``is_target`` null, spans it)."""
    return gold.where(F.col(S.IS_TARGET).isNull()).limit(1).count() == 0


def _without_density_ratio(
    gold: DataFrame, window_id: str, variants: Sequence[str], combine: Mapping[str, object]
) -> dict[str, str]:
    """The variants with a density ratio, with the reason, when no sample of ``window_id`` has
    one (every ``w_dr`` and ``w_shard`` 1: e.g. its next window is not stored yet, the default
    target's case for the newest window): shipped there, they would lack it."""
    with_ratio = [v for v in variants if uses_density_ratio(v, combine)]
    if not with_ratio:
        return {}
    mine = gold.where(F.col(S.WINDOW_ID) == window_id)
    varies = (F.col(S.W_DR) != 1.0) | (F.coalesce(F.col(S.W_SHARD), F.lit(1.0)) != 1.0)
    if mine.where(varies).limit(1).count():
        return {}
    why = f"every w_dr and w_shard of window {window_id} is 1 (no density-ratio target)"
    return {v: why for v in with_ratio}


def run(
    spark: SparkSession,
    cfg: Config,
    *,
    ctx: lake.RunContext,
    progress: RunProgress,
    window_id: str | None = None,
) -> TrainingReport:
    """Run the experiment ending at one gold window; write ``gold.metrics`` and ``gold.experiment_results``."""
    source = source_of(cfg)
    tcfg = cfg.train
    with progress.stage(spark, "train", f"weighted vs unweighted ALS / GBT on {source}") as info:
        latest_id = windows_to_weight(spark, cfg, source, [window_id] if window_id else None)[-1]
        latest = Windows.from_id(latest_id)
        ctx.claim(leases.window_key(source, latest_id))
        version = lake.table_version(spark, cfg.lakehouse, S.GOLD_TRAINING_SAMPLES)
        ctx = ctx.with_inputs(S.GOLD_TRAINING_SAMPLES, version)
        gold_all = lake.read_table(spark, cfg.lakehouse, S.GOLD_TRAINING_SAMPLES, version=version).where(
            F.col(S.SOURCE) == source
        )
        missing = [c for c in S.GOLD_WEIGHT_COLUMNS if c not in gold_all.columns]
        if missing:
            raise BadInputError(
                f"gold.training_samples has no column {missing} (written by an older version): run the weights "
                "stage again"
            )
        present = {r[0] for r in gold_all.select(S.WINDOW_ID).distinct().collect()}  # one row per window
        origins = stored_origins(present, latest, tcfg.origins)
        if origins < 1:
            raise BadInputError(
                f"gold.training_samples holds too few windows before {latest_id} for an experiment: run the "
                "features and weights stages with train.enabled: true first"
            )
        windows = origin_windows(latest, origins=origins)
        ids = [w.window_id for w in windows]
        tracker = Tracker.open(
            cfg,
            ctx.run_id,
            {"sampleimp.window_id": latest_id, "sampleimp.training_version": str(version), "sampleimp.source": source},
        )
        try:  # a failure anywhere from here marks the MLflow run FAILED
            gold = checkpoint(gold_all.where(F.col(S.WINDOW_ID).isin(ids)))
            events = checkpoint(
                lake.read_table(spark, cfg.lakehouse, S.BRONZE_EVENTS).where(
                    (F.col(S.SOURCE) == source)
                    & (F.col(S.TS) >= F.lit(windows[0].t0))
                    & (F.col(S.TS) < F.lit(windows[-1].t2))
                )
            )
            try:
                cc = cfg.weights.combine
                combine: dict[str, object] = {
                    "a": cc.a,
                    "b": cc.b,
                    "c": cc.c,
                    "d": cc.d,
                    "clip_quantile": cc.clip_quantile,
                    "label_col": label_column(cfg.weights),
                }
                features = resolve_features(tcfg.gbt.features, gold)
                plan = experiment_plan(
                    tcfg,
                    combine,
                    features,
                    resampled=cfg.weights.resample.enabled,
                    snips=_recent_target(gold),
                    unshippable=_without_density_ratio(gold, latest_id, tcfg.variants, combine),
                )

                def store(origin: str, variant: str, seed: int, als: FittedALS, gbt: PipelineModel) -> None:
                    if origin != latest_id:  # the models of the latest origin are the ones worth keeping
                        return
                    if tcfg.save_models:
                        name = f"{variant}-seed{seed}"
                        lake.save_models(cfg.lakehouse, latest_id, ctx.run_id, name, als=als, gbt=gbt)
                    if tracker is not None:
                        tracker.log_models(variant, seed, als, gbt, gold.schema, list(plan.features))

                keep = tcfg.save_models or tracker is not None
                result = run_experiment(events, gold, windows, plan=plan, on_models=store if keep else None)
                lineage = {
                    "table": S.GOLD_TRAINING_SAMPLES,
                    "version": version,
                    "window_id": latest_id,
                    "training_window": ids[-2],
                    "windows": ids,
                    "source": source,
                    "tuned": result.tuned.as_dict(),
                    "run_id": ctx.run_id,
                    "variants": list(tcfg.variants),
                    "seeds": list(tcfg.seeds),
                }
                if tracker is not None:
                    tracker.log_results(result, lineage)
            finally:
                release(events, gold)
            if tcfg.save_models:
                lake.write_model_lineage(cfg.lakehouse, latest_id, ctx.run_id, lineage)
            report = TrainingReport(
                window_id=latest_id,
                training_version=version,
                result=result,
                tracking_run=None if tracker is None else tracker.run_id,
            )
            _write_metrics(spark, cfg, report, source=source, ctx=ctx)
            selection = result.tuned.selection
            if tcfg.select_weight and selection is not None:
                _ship_weight(spark, cfg, report, selection, combine=combine, source=source, ctx=ctx)
            info.rows_out = {"metric_rows": len(result.per_origin), "comparisons": len(result.summary)}
            for line in report.lines():
                log.info("%s", line)
        except BaseException:
            if tracker is not None:
                tracker.finish(ok=False)
            raise
        if tracker is not None:
            tracker.finish(ok=True)
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
    for name, rows in ((S.GOLD_METRICS, report.result.per_origin), (S.GOLD_EXPERIMENT_RESULTS, report.result.summary)):
        schema = S.CONTRACTS[name].columns
        records = [{**common, **r} for r in rows]
        frame = spark.createDataFrame([tuple(r.get(f.name) for f in schema.fields) for r in records], schema)
        lake.write_table(frame, cfg.lakehouse, name, ctx=ctx, replace_where=replace)


def _ship_weight(
    spark: SparkSession,
    cfg: Config,
    report: TrainingReport,
    selection: Selection,
    *,
    combine: dict[str, object],
    source: str,
    ctx: lake.RunContext,
) -> None:
    """Record every candidate in ``gold.weight_selection``, write the chosen weighting as ``weight``
    of the run's window (with its ``w_raw`` and ``w_clipped``; every component as stored), and the
    window's weight statistics in ``gold.weight_diagnostics``: one commit each."""
    common = {
        S.RUN_ID: ctx.run_id,
        S.WINDOW_ID: report.window_id,
        S.SOURCE: source,
        "training_version": report.training_version,
        "reason": selection.reason,
    }
    schema = S.CONTRACTS[S.GOLD_WEIGHT_SELECTION].columns
    rows = [tuple({**common, **r}.get(f.name) for f in schema.fields) for r in selection.candidates]
    lake.write_table(
        spark.createDataFrame(rows, schema),
        cfg.lakehouse,
        S.GOLD_WEIGHT_SELECTION,
        ctx=ctx,
        replace_where=lake.rows_where(source=source, window_id=report.window_id),
    )
    window = lake.read_table(spark, cfg.lakehouse, S.GOLD_TRAINING_SAMPLES, version=report.training_version).where(
        (F.col(S.SOURCE) == source) & (F.col(S.WINDOW_ID) == report.window_id)
    )
    stored = checkpoint(window)
    try:
        # The weight and how it was made change; every component keeps its stored column (the
        # time variant recomputes w_time with the half-life validation chose, for the weight alone).
        made = (S.WEIGHT, S.RAW_WEIGHT, S.CLIPPED)
        kept = [c for c in stored.columns if c not in made]
        recomputed = variant_weights(
            stored.select(*kept, *(F.col(c).alias(f"_stored_{c}") for c in kept)),
            selection.chosen,
            combine=combine,
            half_life_days=report.result.tuned.half_life,
        )
        if selection.chosen == N.REFERENCE_VARIANT:  # weight 1: no product, nothing clipped
            recomputed = recomputed.withColumns({S.RAW_WEIGHT: F.lit(1.0), S.CLIPPED: F.lit(False)})
        chosen = recomputed.select(*(F.col(c) if c in made else F.col(f"_stored_{c}").alias(c) for c in stored.columns))
        props = ctx.with_properties(
            {
                "sampleimp.weight_selection": json.dumps(
                    {"window_id": report.window_id, "chosen": selection.chosen, "reason": selection.reason},
                    sort_keys=True,
                )
            }
        )
        lake.write_table(
            lake.gold_layout(chosen),
            cfg.lakehouse,
            S.GOLD_TRAINING_SAMPLES,
            ctx=props,
            replace_where=lake.rows_where(source=source, window_id=report.window_id),
        )
    finally:
        release(stored)
    _refresh_diagnostics(spark, cfg, report.window_id, source=source, ctx=ctx)
    log.info("window %s ships weight %s: %s", report.window_id, selection.chosen, selection.reason)


def _refresh_diagnostics(
    spark: SparkSession, cfg: Config, window_id: str, *, source: str, ctx: lake.RunContext
) -> None:
    """``gold.weight_diagnostics`` of one window recomputed from the weight it now ships (the
    density-ratio fit columns as the weights stage stored them)."""
    this = (F.col(S.SOURCE) == source) & (F.col(S.WINDOW_ID) == window_id)
    stored = lake.read_table(spark, cfg.lakehouse, S.GOLD_WEIGHT_DIAGNOSTICS).where(this)
    stats = weight_diagnostics(lake.read_table(spark, cfg.lakehouse, S.GOLD_TRAINING_SAMPLES).where(this))
    kept = [c for c in stored.columns if c == S.SHARD or c not in stats.columns]
    fresh = checkpoint(stored.select(*kept).join(stats, S.SHARD, "inner").select(*stored.columns))
    try:
        where = lake.rows_where(source=source, window_id=window_id)
        lake.write_table(fresh, cfg.lakehouse, S.GOLD_WEIGHT_DIAGNOSTICS, ctx=ctx, replace_where=where)
    finally:
        release(fresh)
