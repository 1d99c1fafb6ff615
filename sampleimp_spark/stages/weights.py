"""The weights stage: ``silver.samples`` -> ``gold.training_samples``, ``gold.feature_importance``,
``gold.weight_diagnostics``.

It weights every window the features stage built for this run (or ``weights.window_id``, or
the source's latest window). Per shard, each component is its own column (DESIGN §5):
``is_target`` (the ``recent`` density-ratio target), ``w_ig``, ``w_class``, ``w_dr`` (toward the
next window's samples by default), ``w_shard`` (its shard marginal), ``w_time``, ``w_resample`` and
``weight``, their clipped combination, mean ``w_shard^b`` per shard. The gold table is
partitioned by ``window_id`` and ``shard_bucket`` and sorted by shard within a bucket
(:func:`sampleimp_spark.lake.gold_layout`). A rerun replaces the rows of the same window.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sampleimp_spark import lake, leases
from sampleimp_spark import schema as S
from sampleimp_spark.config import DEFAULT_DR_FEATURES, Config, WeightsConfig
from sampleimp_spark.errors import BadInputError
from sampleimp_spark.features.behavior import feature_columns, shared_feature_groups
from sampleimp_spark.frames import checkpoint, release
from sampleimp_spark.progress import RunProgress
from sampleimp_spark.stages.daily import day_window
from sampleimp_spark.stages.features import source_of
from sampleimp_spark.training.protocol import origin_windows, stored_origins
from sampleimp_spark.weighting.class_balance import class_weights, with_class_weight
from sampleimp_spark.weighting.combine import combine_weights, weight_diagnostics
from sampleimp_spark.weighting.density_ratio import (
    DensityRatioSettings,
    fit_density_ratio,
    score_density_ratio,
    shard_marginal,
)
from sampleimp_spark.weighting.information_gain import IGResult, information_gain, with_ig_weight
from sampleimp_spark.weighting.resample import resample
from sampleimp_spark.weighting.time_decay import RECENCY, time_weights
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


#: Separates the window from the shard in the composite shard key of a several-window computation.
_KEY_SEP = "\x1f"
_SHARD = "_shard_of_window"


def _per_window_shards(df: DataFrame) -> DataFrame:
    """``df`` with ``shard`` replaced by ``window_id <sep> shard`` (the original kept aside), so
    that every per-shard computation runs per window and shard in one pass."""
    return df.withColumn(_SHARD, F.col(S.SHARD)).withColumn(
        S.SHARD, F.concat_ws(_KEY_SEP, F.col(S.WINDOW_ID), F.col(S.SHARD))
    )


def _split_shards(df: DataFrame) -> DataFrame:
    """The inverse of :func:`_per_window_shards` for frames keyed by the composite shard only:
    ``window_id`` and ``shard`` from the key."""
    parts = F.split(F.col(S.SHARD), _KEY_SEP, 2)
    return df.withColumns({S.WINDOW_ID: parts.getItem(0), S.SHARD: parts.getItem(1)})


_KEYS = (S.USER_ID, S.ITEM_ID)


def _next_window_fit_rows(
    df: DataFrame, next_samples: DataFrame | None, dr_features: Sequence[str], window_ids: Sequence[str]
) -> DataFrame:
    """The ``next_window`` density ratio's fit rows: each window's samples as its source
    (``is_target`` false) and the samples of the window one label period later as its target,
    in the source window's shard of their category (shards are drawn per window: a category may be
    pooled in one and not the other); a category the source window does not have has no shard
    there and is left out. The windows have equal lengths, so their counts cover equally many days."""
    cols = [S.SHARD, S.IS_TARGET, *_KEYS, *dr_features]
    source = df.withColumn(S.IS_TARGET, F.lit(False)).select(*cols)
    if next_samples is None:
        return source
    serves = {}
    for wid in window_ids:
        w = Windows.from_id(wid)
        serves[w.shifted(w.t2 - w.t1).window_id] = wid
    mapping = F.create_map(*[F.lit(x) for pair in serves.items() for x in pair])
    shard_of = df.select(S.WINDOW_ID, S.CATEGORY_ID, S.SHARD).distinct()  # one row per category
    target = (
        next_samples.where(F.col(S.WINDOW_ID).isin(list(serves)))
        .select(mapping[F.col(S.WINDOW_ID)].alias(S.WINDOW_ID), S.CATEGORY_ID, *_KEYS, *dr_features)
        .join(shard_of, [S.WINDOW_ID, S.CATEGORY_ID])
        .withColumn(S.IS_TARGET, F.lit(True))
    )
    return source.unionByName(target.select(*cols))


def compute_weights(
    samples: DataFrame,
    class_frequencies: DataFrame,
    *,
    cfg: WeightsConfig,
    window_ids: Sequence[str],
    feature_days: float,
    next_samples: DataFrame | None = None,
) -> WeightsResult:
    """Every weight component and the final weight for ``samples`` of one or more windows of one
    source, each window weighted on its own, in one pass.

    Args:
        samples: ``silver.samples`` rows of ``window_ids`` (features, labels, shard).
        class_frequencies: ``silver.class_frequencies`` rows of the same windows.
        cfg: weights settings.
        window_ids: the windows of ``samples``.
        feature_days: length of their feature windows (to check ``target_days``).
        next_samples: ``silver.samples`` rows of the windows one label period after
            ``window_ids`` (the ``next_window`` density-ratio target; only keys, category and the
            density-ratio features are read, never a label). None: no window has a target.

    Returns:
        The weighted samples (with ``window_id`` and ``shard`` as stored), and the importance and
        density-ratio tables with ``window_id`` and ``shard`` columns.
    """
    if cfg.dr_target == "recent" and cfg.target_days >= feature_days:
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

    # Class weights first, window by window (a small join each; the plans are only unioned).
    cb = cfg.class_balance
    by_window = None
    for wid in window_ids:
        mine = samples.where(F.col(S.WINDOW_ID) == wid)
        cw = class_weights(
            class_frequencies.where(F.col(S.WINDOW_ID) == wid),
            method=cb.method,
            beta=cb.beta,
            scope=cb.scope,
            label=cb.label,
        )
        part = with_class_weight(mine, cw, label_col=label, scope=cb.scope)
        by_window = part if by_window is None else by_window.unionByName(part)
    assert by_window is not None

    df = _per_window_shards(by_window)
    # The density-ratio fit reads only keys, features and is_target: fit it first, on the plain
    # samples, so its input does not drag the IG computation along (the fit is a pandas UDF
    # whose small output is materialized once).
    if cfg.dr_target == "recent":
        df = df.withColumn(S.IS_TARGET, F.col(RECENCY) < F.lit(cfg.target_days))
        fit_rows = df
    else:
        df = df.withColumn(S.IS_TARGET, F.lit(None).cast("boolean"))  # the target is another window's
        fit_rows = _next_window_fit_rows(df, next_samples, dr_features, window_ids)
        dr = dataclasses.replace(dr, source_includes_target=False)
    params = checkpoint(fit_density_ratio(fit_rows, dr_features, settings=dr))

    groups = shared_feature_groups(features)  # counted once per distinct user, item, category
    ig = information_gain(
        df,
        features,
        n_bins=igc.n_bins,
        smoothing=igc.smoothing,
        null_alpha=igc.null_alpha,
        folds=igc.folds,
        miller_madow=igc.miller_madow,
        label_col=label,
        scope_col=S.WINDOW_ID,  # a shard's prior is shrunk toward its window's
        groups=groups,
    )
    try:
        df = with_ig_weight(df, ig, features, lam=igc.lam)  # runs the IG fit's jobs
    except Exception:
        ig.unpersist()
        release(params)
        raise
    df = score_density_ratio(df, params, dr_features, settings=dr)
    if dr.shard_smoothing is None:
        df = df.withColumn(S.W_SHARD, F.lit(1.0))
    else:
        marginal = shard_marginal(
            _split_shards(params), smoothing=dr.shard_smoothing, max_ratio=dr.max_ratio, scope_col=S.WINDOW_ID
        ).select(F.concat_ws(_KEY_SEP, S.WINDOW_ID, S.SHARD).alias(S.SHARD), S.W_SHARD)
        df = df.join(F.broadcast(marginal), S.SHARD, "left").withColumn(
            S.W_SHARD, F.coalesce(F.col(S.W_SHARD), F.lit(1.0))
        )

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
    df = time_weights(df, half_life_days=cfg.half_life_days)
    components = checkpoint(df)
    cc = cfg.combine
    weighted = combine_weights(
        components, a=cc.a, b=cc.b, c=cc.c, d=cc.d, clip_quantile=cc.clip_quantile, label_col=label
    )
    weighted = weighted.withColumn(S.SHARD, F.col(_SHARD)).drop(_SHARD)
    weighted = weighted.withColumn(S.SHARD_BUCKET, lake.shard_bucket(F.col(S.SHARD), cfg.shard_buckets))
    return WeightsResult(
        samples=weighted,
        importance=_split_shards(ig.importance),
        dr_params=_split_shards(params),
        ig=ig,
        components=components,
    )


#: ``ig_reason`` / ``class_reason``: the shard has one class, so there is no label information.
SINGLE_CLASS = "single_class"
#: ``ig_reason``: every feature of the shard fails the null test.
NO_INFORMATIVE_FEATURE = "no_feature_passes_null_test"
#: ``ig_reason`` / ``class_reason``: the component is turned off (``λ = 0``, ``method: none``).
WEIGHT_OFF = "weight_off"


def diagnostics_of(
    weighted: DataFrame, dr_params: DataFrame, importance: DataFrame, *, shard_buckets: int, label_col: str
) -> DataFrame:
    """``gold.weight_diagnostics`` rows: weight statistics per shard with the density-ratio fit, the
    features that kept an IG (``ig_features``) and why ``w_ig`` or ``w_class`` is the same for every
    sample of a shard (``ig_reason``, ``class_reason``; null when it varies), read from the
    weights themselves."""
    dr = dr_params.select(
        S.WINDOW_ID,
        S.SHARD,
        F.col("method").alias("dr_method"),
        F.col("n_source").alias("dr_n_source"),
        F.col("n_target").alias("dr_n_target"),
        F.col("fit_quality").alias("dr_fit_quality"),
        F.col("quality_metric").alias("dr_quality_metric"),
        F.col("fallback_reason").alias("dr_fallback_reason"),
    )
    keys = [S.WINDOW_ID, S.SHARD]
    label = F.coalesce(F.col(label_col).cast("string"), F.lit("(null)"))  # a null label is a class, as in the IG
    spread = weighted.groupBy(*keys).agg(
        F.countDistinct(label).alias("_classes"),
        (F.min(S.W_IG) == F.max(S.W_IG)).alias("_ig_constant"),
        (F.min(S.W_CLASS) == F.max(S.W_CLASS)).alias("_class_constant"),
    )
    kept = importance.groupBy(*keys).agg(F.sum((F.col("ig") > 0).cast("int")).alias("ig_features"))
    single, features = F.col("_classes") <= 1, F.coalesce(F.col("ig_features"), F.lit(0)).cast("int")
    reasons = {
        "ig_features": features,
        "ig_reason": F.when(F.col("_ig_constant") & single, F.lit(SINGLE_CLASS))
        .when(F.col("_ig_constant") & (features == 0), F.lit(NO_INFORMATIVE_FEATURE))
        .when(F.col("_ig_constant"), F.lit(WEIGHT_OFF)),
        "class_reason": F.when(F.col("_class_constant") & single, F.lit(SINGLE_CLASS)).when(
            F.col("_class_constant"), F.lit(WEIGHT_OFF)
        ),
    }
    per_window = _split_shards(weight_diagnostics(_per_window_shards(weighted).drop(_SHARD)))
    return (
        per_window.join(dr, keys, "left")
        .join(spread, keys, "left")
        .join(kept, keys, "left")
        .withColumns(reasons)
        .drop("_classes", "_ig_constant", "_class_constant")
        .withColumn(S.SHARD_BUCKET, lake.shard_bucket(F.col(S.SHARD), shard_buckets))
    )


def gold_columns(features: Sequence[str]) -> list[str]:
    """The columns of ``gold.training_samples``, in order: keys, labels, features, weights."""
    return [*S.GOLD_KEY_COLUMNS, S.LABEL_PURCHASE, S.LABEL_INTENT, *features, *S.GOLD_WEIGHT_COLUMNS]


def windows_to_weight(spark: SparkSession, cfg: Config, source: str, window_ids: Sequence[str] | None) -> list[str]:
    """The windows a weights run weights, oldest first: this run's features windows, else the
    configured one, else the source's latest window of ``silver.samples`` with the earlier windows
    its experiment needs (when training is on) that ``silver.samples`` holds."""
    if window_ids:
        return list(window_ids)
    if cfg.weights.window_id:
        return [cfg.weights.window_id]
    samples = lake.read_table(spark, cfg.lakehouse, S.SILVER_SAMPLES).where(F.col(S.SOURCE) == source)
    present = {r[0] for r in samples.select(S.WINDOW_ID).distinct().collect()}  # one row per window
    if not present:
        raise BadInputError(f"silver.samples has no window for source {source}; run the features stage first")
    if cfg.run.date is None:
        latest = Windows.from_id(max(present))
    else:
        latest = day_window(cfg, cfg.run.date, source)
        if latest.window_id not in present:
            raise BadInputError(
                f"silver.samples has no window {latest.window_id} of source {source} (the one ending with "
                f"{cfg.run.date}): run the features stage for that date first"
            )
    origins = stored_origins(present, latest, cfg.train.origins) if cfg.train.enabled else 0
    if origins < 1:
        return [latest.window_id]
    return [w.window_id for w in origin_windows(latest, origins=origins) if w.window_id in present]


def run(
    spark: SparkSession,
    cfg: Config,
    *,
    ctx: lake.RunContext,
    progress: RunProgress,
    window_ids: Sequence[str] | None = None,
) -> WeightsReport:
    """Compute the weights of the run's silver windows and write the gold tables (one commit each)."""
    source = source_of(cfg)
    wcfg = cfg.weights
    with progress.stage(spark, "weights", f"sample-importance weights of {source}") as info:
        ctx = ctx.with_inputs(S.SILVER_SAMPLES, lake.table_version(spark, cfg.lakehouse, S.SILVER_SAMPLES))
        ids = windows_to_weight(spark, cfg, source, window_ids)
        ctx.claim(*(leases.window_key(source, w) for w in ids))
        where = (F.col(S.SOURCE) == source) & F.col(S.WINDOW_ID).isin(ids)
        samples = lake.read_table(spark, cfg.lakehouse, S.SILVER_SAMPLES).where(where)
        freqs = lake.read_table(spark, cfg.lakehouse, S.SILVER_CLASS_FREQUENCIES).where(where)
        days = {Windows.from_id(w).feature_days for w in ids}
        if len(days) != 1:
            raise BadInputError(f"windows weighted together need equal feature-window lengths, got {sorted(days)} days")
        nexts = None
        if wcfg.dr_target == "next_window":
            later = [(w := Windows.from_id(i)).shifted(w.t2 - w.t1).window_id for i in ids]
            nexts = lake.read_table(spark, cfg.lakehouse, S.SILVER_SAMPLES).where(
                (F.col(S.SOURCE) == source) & F.col(S.WINDOW_ID).isin(later)
            )
        result = compute_weights(samples, freqs, cfg=wcfg, window_ids=ids, feature_days=days.pop(), next_samples=nexts)
        try:
            features = list(wcfg.features or feature_columns(samples))
            gold = lake.gold_layout(result.samples.select(*gold_columns(features)))
            replace = lake.rows_where(source=source) + " AND " + lake.value_in(S.WINDOW_ID, ids)
            props = ctx.with_properties(
                {
                    "sampleimp.weights_config": json.dumps(wcfg.model_dump(mode="json"), sort_keys=True),
                    # `weight` is the configured product again until a train run selects one.
                    "sampleimp.weight_selection": json.dumps(
                        {"window_id": ids[-1], "chosen": None, "reason": "weights.combine product, not selected"},
                        sort_keys=True,
                    ),
                }
            )
            lake.write_table(gold, cfg.lakehouse, S.GOLD_TRAINING_SAMPLES, ctx=props, replace_where=replace)
            importance = result.importance.withColumn(S.SOURCE, F.lit(source))
            lake.write_table(importance, cfg.lakehouse, S.GOLD_FEATURE_IMPORTANCE, ctx=ctx, replace_where=replace)
            # Diagnostics from the written table: a scan, instead of computing every weight again.
            written = lake.read_table(spark, cfg.lakehouse, S.GOLD_TRAINING_SAMPLES).where(where)
            diagnostics = diagnostics_of(
                written,
                result.dr_params,
                result.importance,
                shard_buckets=wcfg.shard_buckets,
                label_col=label_column(wcfg),
            )
            diagnostics = diagnostics.withColumn(S.SOURCE, F.lit(source))
            lake.write_table(diagnostics, cfg.lakehouse, S.GOLD_WEIGHT_DIAGNOSTICS, ctx=ctx, replace_where=replace)
        finally:
            result.unpersist()
        done = _window_stats(spark, cfg, source=source, window_ids=ids)
        report = WeightsReport(source, done)
        info.rows_out = {"weighted": done[-1].rows}
        info.shards = done[-1].shards
        for line in report.lines():
            log.info("%s", line)
    return report


def _window_stats(spark: SparkSession, cfg: Config, *, source: str, window_ids: list[str]) -> list[WindowWeights]:
    """Per window: rows, shards, density-ratio fallbacks and the median ESS ratio, from the
    diagnostics just written (one row per shard)."""
    diag = lake.read_table(spark, cfg.lakehouse, S.GOLD_WEIGHT_DIAGNOSTICS).where(
        (F.col(S.SOURCE) == source) & F.col(S.WINDOW_ID).isin(window_ids)
    )
    stats = {
        r[0]: (r[1], r[2], r[3])
        for r in diag.groupBy(S.WINDOW_ID)
        .agg(F.sum("rows"), F.count(F.lit(1)), F.percentile_approx("ess_ratio", 0.5))
        .collect()  # one row per window
    }
    fallbacks: dict[str, dict[str, int]] = {}
    for r in (
        diag.where(F.col("dr_fallback_reason").isNotNull()).groupBy(S.WINDOW_ID, "dr_fallback_reason").count().collect()
    ):
        fallbacks.setdefault(r[0], {})[r[1]] = r[2]  # a few rows per window
    out = []
    for wid in window_ids:
        rows, shards, ess = stats.get(wid, (0, 0, None))
        out.append(
            WindowWeights(
                wid, rows=int(rows or 0), shards=int(shards), fallbacks=fallbacks.get(wid, {}), ess_ratio_median=ess
            )
        )
    return out
