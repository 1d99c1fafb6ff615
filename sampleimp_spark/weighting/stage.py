"""The weights stage: ``silver.samples`` -> ``gold.training_samples``, ``gold.feature_importance``,
``gold.weight_diagnostics``.

Per shard, in this order (each component its own column, DESIGN §5):

1. ``is_target``: the density ratio's target population, by default the samples active in
   the last ``target_days`` of the feature window (today's traffic);
2. ``w_ig`` from the per-shard information gain of every feature about the label;
3. ``w_class`` from ``silver.class_frequencies``;
4. ``w_dr`` from the per-shard density ratio target / source (labels never used);
5. ``w_resample`` from seeded down-/over-sampling (off by default);
6. ``weight`` = the clipped, mean-1 combination (:mod:`sampleimp_spark.weighting.combine`).

``gold.training_samples`` layout: partitioned by ``window_id`` and ``shard_bucket`` (a hash
of the shard into ``shard_buckets`` buckets, 16 by default), and within each bucket the rows
are sorted by shard. Partitioning by the shard itself would give thousands of tiny
directories on Zipf-skewed categories; buckets keep the file count small, and the sort makes
each file cover a narrow range of shards, so a reader that filters on ``shard`` skips files
by their min/max statistics (Spark and delta-rs both do), and one that knows the bucket
(``gold.weight_diagnostics`` lists each shard's bucket) prunes whole directories.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pydantic import Field
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from sampleimp_spark import lake
from sampleimp_spark import schema as S
from sampleimp_spark.configbase import StrictModel
from sampleimp_spark.errors import BadInputError
from sampleimp_spark.features.behavior import feature_columns, shared_feature_groups
from sampleimp_spark.frames import checkpoint, release
from sampleimp_spark.progress import RunProgress
from sampleimp_spark.weighting.class_balance import ClassBalanceConfig, class_weights, with_class_weight
from sampleimp_spark.weighting.combine import CLIPPED, RAW_WEIGHT, CombineConfig, combine_weights, weight_diagnostics
from sampleimp_spark.weighting.density_ratio import DensityRatioConfig, fit_density_ratio, score_density_ratio
from sampleimp_spark.weighting.information_gain import (
    IG_SCORE,
    IGResult,
    InformationGainConfig,
    information_gain,
    with_ig_weight,
)
from sampleimp_spark.weighting.resample import ResampleConfig, resample

if TYPE_CHECKING:
    from sampleimp_spark.config import Config

log = logging.getLogger(__name__)

SHARD_BUCKET = "shard_bucket"
#: Order of the rows within a task of the gold write: the partition columns first (the file
#: writer needs that order and adds its own sort by them otherwise; a task can hold two
#: buckets), then shard, so each file covers a narrow range of shards.
GOLD_SORT: tuple[str, ...] = (S.WINDOW_ID, SHARD_BUCKET, S.SHARD, S.USER_ID, S.ITEM_ID)

#: Features the density ratio compares by default: what kind of user, item and category a
#: sample involves, and how intense the pair is. Recency features are left out on purpose:
#: the default target *is* "active in the last days", so recency would separate target from
#: source trivially and say nothing about covariate shift.
DEFAULT_DR_FEATURES: tuple[str, ...] = (
    "user_n_events",
    "user_active_days",
    "user_cart_per_view",
    "user_purchase_per_view",
    "item_n_events",
    "item_cart_per_view",
    "item_purchase_per_view",
    "cat_n_events",
    "cat_purchase_per_view",
    "pair_n_events",
    "item_price_rel",
)


class WeightsConfig(StrictModel):
    """Sample-importance weights (DESIGN §5)."""

    #: Features for information gain; null = every feature of ``silver.samples``.
    features: list[str] | None = None
    #: Features for the density ratio; null = :data:`DEFAULT_DR_FEATURES` (those present).
    dr_features: list[str] | None = None
    #: Target population of the density ratio: samples whose last event is less than this many
    #: days before the end of the feature window.
    target_days: float = Field(1.0, gt=0)
    #: ``window_id`` of ``silver.samples`` to weight; null = the windows of this run's features
    #: stage, else the latest window of the source.
    window_id: str | None = None
    shard_buckets: int = Field(16, ge=1, le=4096)
    information_gain: InformationGainConfig = Field(default_factory=InformationGainConfig)
    class_balance: ClassBalanceConfig = Field(default_factory=ClassBalanceConfig)
    density_ratio: DensityRatioConfig = Field(default_factory=DensityRatioConfig)
    resample: ResampleConfig = Field(default_factory=ResampleConfig)
    combine: CombineConfig = Field(default_factory=CombineConfig)


@dataclass
class WeightsResult:
    """The weighted samples and the small per-shard tables that describe them.

    They read tables this computation cached or checkpointed (the IG tables, the density-ratio
    parameters, the weight components); call :meth:`unpersist` once they are written or copied.
    Left cached, they hold executor memory for the rest of the session, and a later run over
    the same input would silently reuse them instead of computing.
    """

    samples: DataFrame
    importance: DataFrame
    dr_params: DataFrame
    diagnostics: DataFrame
    ig: IGResult
    components: DataFrame

    def unpersist(self) -> None:
        """Release what the computation cached or checkpointed (the frames above cannot be read afterwards)."""
        self.ig.unpersist()
        release(self.dr_params, self.components)


@dataclass
class WeightsReport:
    """What a weights run wrote."""

    source: str
    window_id: str
    rows: int
    shards: int
    fallbacks: dict[str, int] = field(default_factory=dict)
    ess_ratio_median: float | None = None

    def lines(self) -> list[str]:
        return [
            f"source {self.source}, window {self.window_id}: {self.rows:,} weighted samples in {self.shards:,} shards",
            f"  median ESS/rows over shards {self.ess_ratio_median:.3f}; density-ratio fallbacks {self.fallbacks}",
        ]


def label_column(cfg: WeightsConfig) -> str:
    return S.LABEL_PURCHASE if cfg.class_balance.label == "purchase" else S.LABEL_INTENT


def shard_bucket(shard_col: str, buckets: int) -> Column:
    """The bucket of a shard: ``pmod(xxhash64(shard), buckets)`` (a Spark expression)."""
    return F.pmod(F.xxhash64(F.col(shard_col)), F.lit(buckets)).cast("int")


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

    df = samples.withColumn(S.IS_TARGET, F.col("pair_recency_any") < F.lit(cfg.target_days))

    # The density-ratio fit reads only features and is_target: fit it first, on the plain
    # samples, so its input does not drag the IG computation along (the fit is a pandas UDF
    # whose small output is materialized once).
    params = checkpoint(fit_density_ratio(df, dr_features, cfg=cfg.density_ratio))

    groups = shared_feature_groups(features)  # counted once per distinct user, item, category
    ig = information_gain(df, features, cfg=cfg.information_gain, label_col=label, groups=groups)
    try:
        df = with_ig_weight(df, ig, features, cfg=cfg.information_gain)  # runs the IG fit's jobs
    except Exception:
        ig.unpersist()
        release(params)
        raise

    cw = class_weights(class_frequencies, cfg=cfg.class_balance)
    df = with_class_weight(df, cw, cfg=cfg.class_balance, label_col=label)
    df = score_density_ratio(df, params, dr_features, cfg=cfg.density_ratio)

    # Materialize the components once: the combination reads them three times (per-shard clip
    # quantiles, per-shard means, the final weight).
    components = checkpoint(resample(df, cfg=cfg.resample, label_col=label))
    df = combine_weights(components, cfg=cfg.combine).withColumn(SHARD_BUCKET, shard_bucket(S.SHARD, cfg.shard_buckets))

    diagnostics = diagnostics_of(df, params, shard_buckets=cfg.shard_buckets)
    return WeightsResult(
        samples=df, importance=ig.importance, dr_params=params, diagnostics=diagnostics, ig=ig, components=components
    )


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
        .withColumn(SHARD_BUCKET, shard_bucket(S.SHARD, shard_buckets))
    )


def _gold_columns(df: DataFrame, features: Sequence[str]) -> list[str]:
    keys = [S.WINDOW_ID, S.SOURCE, S.USER_ID, S.ITEM_ID, S.CATEGORY_ID, S.CATEGORY_PATH, S.SHARD, SHARD_BUCKET]
    weights = [S.IS_TARGET, IG_SCORE, S.W_CLASS, S.W_DR, S.W_IG, S.W_RESAMPLE, RAW_WEIGHT, CLIPPED, S.WEIGHT]
    return [*keys, S.LABEL_PURCHASE, S.LABEL_INTENT, *features, *weights]


def _window_of(spark: SparkSession, cfg: Config, source: str, window_id: str | None) -> str:
    if window_id:
        return window_id
    if cfg.weights.window_id:
        return cfg.weights.window_id
    latest = (
        lake.read_table(spark, cfg.lakehouse, S.SILVER_SAMPLES)
        .where(F.col(S.SOURCE) == source)
        .agg(F.max(S.WINDOW_ID))
        .first()[0]
    )
    if latest is None:
        raise BadInputError(f"silver.samples has no window for source {source}; run the features stage first")
    return latest


def _feature_days(window_id: str) -> float:
    from datetime import datetime

    t0, t1, _ = (datetime.strptime(t, "%Y%m%dT%H%M%SZ") for t in window_id.split("_"))
    return (t1 - t0).total_seconds() / 86400.0


def build_weights(
    spark: SparkSession, cfg: Config, *, ctx: lake.RunContext, progress: RunProgress, window_id: str | None = None
) -> WeightsReport:
    """Compute the weights of one silver window and write the gold tables."""
    wcfg: WeightsConfig = cfg.weights
    source = cfg.features.source or cfg.input.source
    with progress.stage(spark, "weights", f"sample-importance weights of {source}") as info:
        wid = _window_of(spark, cfg, source, window_id)
        where = (F.col(S.SOURCE) == source) & (F.col(S.WINDOW_ID) == wid)
        samples = lake.read_table(spark, cfg.lakehouse, S.SILVER_SAMPLES).where(where)
        freqs = lake.read_table(spark, cfg.lakehouse, S.SILVER_CLASS_FREQUENCIES).where(where)
        result = compute_weights(samples, freqs, cfg=wcfg, feature_days=_feature_days(wid))
        try:
            features = list(wcfg.features or feature_columns(samples))
            gold = (
                result.samples.select(*_gold_columns(result.samples, features))
                .repartition(SHARD_BUCKET)
                .sortWithinPartitions(*GOLD_SORT)
            )
            sql_where = f"{S.SOURCE} = '{source}' AND {S.WINDOW_ID} = '{wid}'"
            props = lake.RunContext(
                ctx.run_id,
                ctx.config_hash,
                ctx.stage,
                extra_properties={"sampleimp.weights_config": json.dumps(wcfg.model_dump(mode="json"), sort_keys=True)},
            )
            written = lake.write_table(
                gold,
                cfg.lakehouse,
                S.GOLD_TRAINING_SAMPLES,
                ctx=props,
                replace_where=sql_where,
                partition_by=(S.WINDOW_ID, SHARD_BUCKET),
            )
            importance = result.importance.select(F.lit(wid).alias(S.WINDOW_ID), F.lit(source).alias(S.SOURCE), "*")
            lake.write_table(importance, cfg.lakehouse, S.GOLD_FEATURE_IMPORTANCE, ctx=ctx, replace_where=sql_where)
            # Diagnostics from the written table: a scan, instead of computing every weight again.
            written_gold = lake.read_table(spark, cfg.lakehouse, S.GOLD_TRAINING_SAMPLES).where(where)
            diagnostics = diagnostics_of(written_gold, result.dr_params, shard_buckets=wcfg.shard_buckets).select(
                F.lit(wid).alias(S.WINDOW_ID), F.lit(source).alias(S.SOURCE), "*"
            )
            lake.write_table(diagnostics, cfg.lakehouse, S.GOLD_WEIGHT_DIAGNOSTICS, ctx=ctx, replace_where=sql_where)
            diag = lake.read_table(spark, cfg.lakehouse, S.GOLD_WEIGHT_DIAGNOSTICS).where(where)
            stats = diag.agg(F.count(F.lit(1)), F.percentile_approx("ess_ratio", 0.5)).first()
            fallbacks = {r[0]: r[1] for r in diag.groupBy("dr_fallback_reason").count().collect() if r[0]}
            rows = written["numOutputRows"] if written else gold.count()
        finally:
            result.unpersist()
        report = WeightsReport(
            source=source,
            window_id=wid,
            rows=rows,
            shards=stats[0],
            fallbacks=fallbacks,
            ess_ratio_median=stats[1],
        )
        info.rows_out = {"weighted": report.rows}
        info.shards = report.shards
        for line in report.lines():
            log.info("%s", line)
    return report
