"""The weights stage: ``silver.samples`` -> ``gold.training_samples``, ``gold.feature_importance``,
``gold.weight_diagnostics``.

It weights every window the features stage built for this run (or ``weights.window_id``, or
the source's latest window). Per shard, each component is its own column (DESIGN §5):
``is_target`` (the density ratio's target population), ``w_ig``, ``w_class``, ``w_dr``,
``w_resample`` and ``weight``, their clipped, mean-1 combination. The gold table is
partitioned by ``window_id`` and ``shard_bucket`` and sorted by shard within a bucket
(:func:`sampleimp_spark.lake.gold_layout`). A rerun replaces the rows of the same window.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sampleimp_spark import lake
from sampleimp_spark import schema as S
from sampleimp_spark.config import DEFAULT_DR_FEATURES, Config, WeightsConfig
from sampleimp_spark.errors import BadInputError
from sampleimp_spark.features.behavior import feature_columns, shared_feature_groups
from sampleimp_spark.frames import checkpoint, one_row, release
from sampleimp_spark.progress import RunProgress
from sampleimp_spark.stages.features import source_of
from sampleimp_spark.weighting.class_balance import class_weights, with_class_weight
from sampleimp_spark.weighting.combine import combine_weights, weight_diagnostics
from sampleimp_spark.weighting.density_ratio import DensityRatioSettings, fit_density_ratio, score_density_ratio
from sampleimp_spark.weighting.information_gain import IGResult, information_gain, with_ig_weight
from sampleimp_spark.weighting.resample import resample
from sampleimp_spark.windows import Windows

log = logging.getLogger(__name__)


@dataclass
class WeightsResult:
    """The weighted samples and the small per-shard tables that describe them.

    They read tables this computation cached or checkpointed (the IG tables, the density-ratio
    parameters, the weight components); call :meth:`unpersist` once they are written or copied.
    """

    samples: DataFrame
    importance: DataFrame
    dr_params: DataFrame
    ig: IGResult
    components: DataFrame

    def unpersist(self) -> None:
        """Release what the computation cached or checkpointed (the frames cannot be read afterwards)."""
        self.ig.unpersist()
        release(self.dr_params, self.components)


@dataclass
class WindowWeights:
    """What the stage wrote for one window."""

    window_id: str
    rows: int
    shards: int
    fallbacks: dict[str, int] = field(default_factory=dict)
    ess_ratio_median: float | None = None


@dataclass
class WeightsReport:
    """What a weights run wrote: one entry per window, the run's own window last."""

    source: str
    windows: list[WindowWeights]

    @property
    def window_id(self) -> str:
        return self.windows[-1].window_id

    def lines(self) -> list[str]:
        out = []
        for w in self.windows:
            out += [
                f"source {self.source}, window {w.window_id}: {w.rows:,} weighted samples in {w.shards:,} shards",
                f"  median ESS/rows over shards {w.ess_ratio_median:.3f}; density-ratio fallbacks {w.fallbacks}",
            ]
        return out


def label_column(cfg: WeightsConfig) -> str:
    """The label column the class weights balance."""
    return S.LABEL_PURCHASE if cfg.class_balance.label == "purchase" else S.LABEL_INTENT


def density_ratio_settings(cfg: WeightsConfig) -> DensityRatioSettings:
    """The density-ratio settings of the config, as the transform takes them."""
    return DensityRatioSettings(**cfg.density_ratio.model_dump())


def compute_weights(
    samples: DataFrame,
    class_frequencies: DataFrame,
    *,
    cfg: WeightsConfig,
    feature_days: float,
) -> WeightsResult:
    """Every weight component and the final weight for ``samples`` (one window of one source).

    Args:
        samples: ``silver.samples`` rows of one window (features, labels, shard).
        class_frequencies: ``silver.class_frequencies`` rows of the same window.
        cfg: weights settings.
        feature_days: length of the feature window (to check ``target_days``).
    """
    if cfg.target_days >= feature_days:
        raise BadInputError(
            f"weights.target_days = {cfg.target_days} must be shorter than the feature window "
            f"({feature_days:g} days), or every sample is a target sample"
        )
    label = label_column(cfg)
    features = list(cfg.features or feature_columns(samples))
    dr_features = list(cfg.dr_features or [f for f in DEFAULT_DR_FEATURES if f in samples.columns])
    missing = sorted(set(features + dr_features) - set(samples.columns))
    if missing:
        raise BadInputError(f"weights: feature(s) {missing} are not columns of silver.samples")
    dr = density_ratio_settings(cfg)
    igc = cfg.information_gain

    df = samples.withColumn(S.IS_TARGET, F.col("pair_recency_any") < F.lit(cfg.target_days))

    # The density-ratio fit reads only features and is_target: fit it first, on the plain
    # samples, so its input does not drag the IG computation along (the fit is a pandas UDF
    # whose small output is materialized once).
    params = checkpoint(fit_density_ratio(df, dr_features, settings=dr))

    groups = shared_feature_groups(features)  # counted once per distinct user, item, category
    ig = information_gain(
        df,
        features,
        n_bins=igc.n_bins,
        smoothing=igc.smoothing,
        miller_madow=igc.miller_madow,
        label_col=label,
        groups=groups,
    )
    try:
        df = with_ig_weight(df, ig, features, lam=igc.lam)  # runs the IG fit's jobs
    except Exception:
        ig.unpersist()
        release(params)
        raise

    cb = cfg.class_balance
    cw = class_weights(class_frequencies, method=cb.method, beta=cb.beta, scope=cb.scope, label=cb.label)
    df = with_class_weight(df, cw, label_col=label, scope=cb.scope)
    df = score_density_ratio(df, params, dr_features, settings=dr)

    rs = cfg.resample
    if rs.enabled:
        df = resample(
            df,
            seed=rs.seed,
            majority_ratio=rs.majority_ratio,
            oversample_minority=rs.oversample_minority,
            max_oversample=rs.max_oversample,
            label_col=label,
        )
    else:
        df = df.withColumn(S.W_RESAMPLE, F.lit(1.0))
    # Materialize the components once: the combination reads them three times (per-shard clip
    # quantiles, per-shard means, the final weight).
    components = checkpoint(df)
    cc = cfg.combine
    weighted = combine_weights(components, a=cc.a, b=cc.b, c=cc.c, clip_quantile=cc.clip_quantile)
    weighted = weighted.withColumn(S.SHARD_BUCKET, lake.shard_bucket(F.col(S.SHARD), cfg.shard_buckets))
    return WeightsResult(samples=weighted, importance=ig.importance, dr_params=params, ig=ig, components=components)


def diagnostics_of(weighted: DataFrame, dr_params: DataFrame, *, shard_buckets: int) -> DataFrame:
    """``gold.weight_diagnostics`` rows: weight statistics per shard with the density-ratio fit."""
    dr = dr_params.select(
        S.SHARD,
        F.col("method").alias("dr_method"),
        F.col("n_source").alias("dr_n_source"),
        F.col("n_target").alias("dr_n_target"),
        F.col("fit_quality").alias("dr_fit_quality"),
        F.col("quality_metric").alias("dr_quality_metric"),
        F.col("fallback_reason").alias("dr_fallback_reason"),
    )
    return (
        weight_diagnostics(weighted)
        .join(dr, S.SHARD, "left")
        .withColumn(S.SHARD_BUCKET, lake.shard_bucket(F.col(S.SHARD), shard_buckets))
    )


def gold_columns(features: Sequence[str]) -> list[str]:
    """The columns of ``gold.training_samples``, in order: keys, labels, features, weights."""
    return [*S.GOLD_KEY_COLUMNS, S.LABEL_PURCHASE, S.LABEL_INTENT, *features, *S.GOLD_WEIGHT_COLUMNS]


def windows_to_weight(spark: SparkSession, cfg: Config, source: str, window_ids: Sequence[str] | None) -> list[str]:
    """The windows a weights run weights: this run's features windows, else the configured one,
    else the source's latest window of ``silver.samples``."""
    if window_ids:
        return list(window_ids)
    if cfg.weights.window_id:
        return [cfg.weights.window_id]
    latest = one_row(
        lake.read_table(spark, cfg.lakehouse, S.SILVER_SAMPLES).where(F.col(S.SOURCE) == source).agg(F.max(S.WINDOW_ID))
    )[0]
    if latest is None:
        raise BadInputError(f"silver.samples has no window for source {source}; run the features stage first")
    return [latest]


def run(
    spark: SparkSession,
    cfg: Config,
    *,
    ctx: lake.RunContext,
    progress: RunProgress,
    window_ids: Sequence[str] | None = None,
) -> WeightsReport:
    """Compute the weights of the run's silver windows and write the gold tables."""
    source = source_of(cfg)
    with progress.stage(spark, "weights", f"sample-importance weights of {source}") as info:
        ctx = ctx.with_inputs(S.SILVER_SAMPLES, lake.table_version(spark, cfg.lakehouse, S.SILVER_SAMPLES))
        done = [
            _one_window(spark, cfg, source=source, window_id=wid, ctx=ctx)
            for wid in windows_to_weight(spark, cfg, source, window_ids)
        ]
        report = WeightsReport(source, done)
        info.rows_out = {"weighted": done[-1].rows}
        info.shards = done[-1].shards
        for line in report.lines():
            log.info("%s", line)
    return report


def _one_window(
    spark: SparkSession, cfg: Config, *, source: str, window_id: str, ctx: lake.RunContext
) -> WindowWeights:
    wcfg = cfg.weights
    where = (F.col(S.SOURCE) == source) & (F.col(S.WINDOW_ID) == window_id)
    samples = lake.read_table(spark, cfg.lakehouse, S.SILVER_SAMPLES).where(where)
    freqs = lake.read_table(spark, cfg.lakehouse, S.SILVER_CLASS_FREQUENCIES).where(where)
    result = compute_weights(samples, freqs, cfg=wcfg, feature_days=Windows.from_id(window_id).feature_days)
    try:
        features = list(wcfg.features or feature_columns(samples))
        gold = lake.gold_layout(result.samples.select(*gold_columns(features)))
        replace = lake.rows_where(source=source, window_id=window_id)
        props = ctx.with_properties(
            {"sampleimp.weights_config": json.dumps(wcfg.model_dump(mode="json"), sort_keys=True)}
        )
        written = lake.write_table(gold, cfg.lakehouse, S.GOLD_TRAINING_SAMPLES, ctx=props, replace_where=replace)
        importance = result.importance.select(F.lit(window_id).alias(S.WINDOW_ID), F.lit(source).alias(S.SOURCE), "*")
        lake.write_table(importance, cfg.lakehouse, S.GOLD_FEATURE_IMPORTANCE, ctx=ctx, replace_where=replace)
        # Diagnostics from the written table: a scan, instead of computing every weight again.
        written_gold = lake.read_table(spark, cfg.lakehouse, S.GOLD_TRAINING_SAMPLES).where(where)
        diagnostics = diagnostics_of(written_gold, result.dr_params, shard_buckets=wcfg.shard_buckets).select(
            F.lit(window_id).alias(S.WINDOW_ID), F.lit(source).alias(S.SOURCE), "*"
        )
        lake.write_table(diagnostics, cfg.lakehouse, S.GOLD_WEIGHT_DIAGNOSTICS, ctx=ctx, replace_where=replace)
        diag = lake.read_table(spark, cfg.lakehouse, S.GOLD_WEIGHT_DIAGNOSTICS).where(where)
        stats = one_row(diag.agg(F.count(F.lit(1)), F.percentile_approx("ess_ratio", 0.5)))
        fallbacks = {r[0]: r[1] for r in diag.groupBy("dr_fallback_reason").count().collect() if r[0]}
        rows = written[lake.OUTPUT_ROWS] if written else gold.count()
    finally:
        result.unpersist()
    return WindowWeights(window_id, rows=rows, shards=stats[0], fallbacks=fallbacks, ess_ratio_median=stats[1])
