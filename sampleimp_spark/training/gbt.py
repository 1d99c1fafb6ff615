"""Weighted gradient-boosted trees in Spark ML: purchase prediction and ALS re-ranking.

:func:`fit_gbt` fits ``VectorAssembler + GBTClassifier`` (logistic loss) on the samples' feature
columns, with the sample weight as Spark's native ``weightCol`` (or unweighted): a row of weight 2
counts exactly as two copies. :func:`predict_proba` adds ``P(label = 1)``. For two-stage
recommendation, :func:`candidate_features` gives ALS candidates the features of ``silver.samples``
(neutral values for pairs that are not samples) and :func:`rerank` orders them by the GBT probability.

The model is a function of the training rows as a multiset and ``seed`` (which drives row
subsampling and the split-threshold sample): the fit lays its rows out canonically
(:func:`sampleimp_spark.frames.canonical_layout`) and reads features and weights rounded to float32,
so a last-bit difference upstream almost never changes the trees; scoring rounds the same way, and
a saved model keeps the rounding. What stays order-dependent on a cluster: ``docs/reproducibility.md``.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.classification import GBTClassifier
from pyspark.ml.feature import SQLTransformer, VectorAssembler
from pyspark.ml.functions import vector_to_array
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from sampleimp_spark import schema as S
from sampleimp_spark.features.behavior import ENTITY_PREFIXES, feature_columns, neutral_value
from sampleimp_spark.frames import canonical_layout

# Internal columns of the fitted pipeline (prefixed so they cannot clash with the caller's).
_FEATURES = "_gbt_features"
_RAW = "_gbt_raw_prediction"
_PROB_VECTOR = "_gbt_probability"
_PREDICTION = "_gbt_prediction"
_LABEL = "_gbt_label"
_WEIGHT = "_gbt_weight"
_ROW = "_row"
_SINGLE = "_gbt_f32_"  # prefix of the features rounded to single precision (the model's input)
_SEEN = "_pair_seen"


def resolve_features(configured: Sequence[str] | None, samples: DataFrame) -> list[str]:
    """The configured feature columns, or all numeric feature columns of ``samples`` when null.

    Raises:
        ValueError: a configured feature is not a column of ``samples``, or there is none.
    """
    if configured is None:
        found = feature_columns(samples)
        if not found:
            raise ValueError("samples have no feature columns (user_*, item_*, cat_*, pair_*)")
        return found
    missing = [f for f in configured if f not in samples.columns]
    if missing:
        raise ValueError(f"features not in the samples: {missing}")
    return list(configured)


def fit_gbt(
    train: DataFrame,
    features: Sequence[str],
    *,
    seed: int,
    max_iter: int = 30,
    max_depth: int = 5,
    step_size: float = 0.1,
    subsampling_rate: float = 1.0,
    max_bins: int = 32,
    weight_col: str | None = None,
    label_col: str = S.LABEL_PURCHASE,
) -> PipelineModel:
    """Fit ``VectorAssembler + GBTClassifier`` (logistic loss) on a binary label.

    The pipeline's first stage rounds the features to float32 (and the fit rounds the weights):
    see the module docstring. A saved model therefore scores like the fitted one.

    Args:
        train: training samples with the feature, label and (optional) weight columns.
        features: feature columns (numeric, non-null: the features stage guarantees it, and
            the assembler fails on a null rather than guessing).
        seed: seed of row subsampling and split-threshold sampling (see the module docstring).
        max_iter, max_depth, step_size, subsampling_rate, max_bins: ``GBTClassifier``'s
            ``maxIter``, ``maxDepth``, ``stepSize``, ``subsamplingRate`` and ``maxBins``.
        weight_col: sample-weight column (finite, ≥ 0) passed as ``weightCol``; None fits the
            unweighted model (every row weight 1).
        label_col: the 0/1 label column.

    Returns:
        The fitted pipeline; use :func:`predict_proba` to score a frame with the same feature
        columns.

    Raises:
        ValueError: no features, or a feature, the label or the weight column is missing.
    """
    if not features:
        raise ValueError("fit_gbt needs at least one feature column")
    needed = [*features, label_col, *([weight_col] if weight_col else [])]
    missing = [c for c in needed if c not in train.columns]
    if missing:
        raise ValueError(f"columns not in the training frame: {missing}")
    # Rounded before the layout too: the layout hashes the values.
    cols = [F.expr(_single(f)).alias(f) for f in features]
    cols.append(F.col(label_col).cast("double").alias(_LABEL))
    if weight_col:
        cols.append(F.expr(_single(weight_col)).alias(_WEIGHT))
    data = canonical_layout(train.select(*cols))
    gbt = GBTClassifier(
        featuresCol=_FEATURES,
        labelCol=_LABEL,
        predictionCol=_PREDICTION,
        lossType="logistic",
        maxIter=max_iter,
        maxDepth=max_depth,
        stepSize=step_size,
        subsamplingRate=subsampling_rate,
        maxBins=max_bins,
        featureSubsetStrategy="all",
        seed=seed,
    )
    gbt.setProbabilityCol(_PROB_VECTOR).setRawPredictionCol(_RAW)
    if weight_col:
        gbt.setWeightCol(_WEIGHT)
    rounded = ", ".join(f"{_single(f)} AS `{_SINGLE}{f}`" for f in features)
    single = SQLTransformer(statement=f"SELECT *, {rounded} FROM __THIS__")
    inputs = [f"{_SINGLE}{f}" for f in features]
    assembler = VectorAssembler(inputCols=inputs, outputCol=_FEATURES, handleInvalid="error")
    return Pipeline(stages=[single, assembler, gbt]).fit(data)


def _single(col: str) -> str:
    """SQL for ``col`` rounded to the nearest float32, as a double (see the module docstring).

    The one definition of the rounding: the fit applies it before the canonical layout, and the
    pipeline's first stage (a ``SQLTransformer``, so saved models keep it) when scoring.
    """
    return f"CAST(CAST(`{col}` AS FLOAT) AS DOUBLE)"


def predict_proba(model: PipelineModel, df: DataFrame, *, probability_col: str = S.PROBABILITY) -> DataFrame:
    """``df`` with ``probability_col`` = ``P(label = 1)`` (a double) from a :func:`fit_gbt` model.

    Native Spark: the probability vector's second entry through ``vector_to_array``, no
    Python UDF. The model's internal columns are dropped; a column named ``probability_col``
    in ``df`` is replaced.
    """
    scored = model.transform(df.drop(probability_col))
    prob = vector_to_array(F.col(_PROB_VECTOR)).getItem(1)
    internal = [c for c in scored.columns if c.startswith(_SINGLE)]
    return scored.withColumn(probability_col, prob).drop(_FEATURES, _RAW, _PROB_VECTOR, _PREDICTION, *internal)


def _one_row_per(samples: DataFrame, key: str, order: str, cols: Sequence[str]) -> DataFrame:
    """``(key, *cols)`` from one sample row per ``key``: the row with the smallest ``order``.

    The columns are constant per key in ``silver.samples``; taking them all from one row
    (rather than an aggregate per column) keeps them consistent if they ever are not.
    """
    best = F.min_by(F.struct(*cols), F.col(order)).alias("_best")
    return samples.groupBy(key).agg(best).select(key, *(F.col(f"_best.{c}").alias(c) for c in cols))


def candidate_features(
    candidates: DataFrame,
    samples: DataFrame,
    features: Sequence[str],
    *,
    feature_days: float,
    user_col: str = S.USER_ID,
    item_col: str = S.ITEM_ID,
) -> DataFrame:
    """Give ALS candidates the feature columns of ``silver.samples``, for :func:`rerank`.

    * ``user_*`` from one of the user's sample rows, ``item_*`` and ``cat_*`` from one of the
      item's rows (they are constant per user / item);
    * ``pair_*`` from the pair's row when the pair is a sample; otherwise the neutral values
      of a pair with no events (:func:`neutral_value`: counts, ratios, shares, sessions and
      session minutes 0, recencies ``feature_days``), except ``pair_price_rel``, which is
      the item's ``item_price_rel`` as for every sample (1 when the item is unknown).
    * A candidate whose user (item) has no row in ``samples`` — possible when the candidates
      come from a model trained on other events — keeps the neutral values for the user
      (item and category) features too: it is scored as an entity with no events in the
      feature window, which is what the samples know about it.

    Args:
        candidates: one row per (user, item) candidate, e.g. ``(user_id, item_id, als_rank)``;
            every column is kept.
        samples: ``silver.samples`` of the feature window the model was trained on (one row
            per pair).
        features: the feature columns to add (the model's features); each must be a column of
            ``samples`` with a ``user_``, ``item_``, ``cat_`` or ``pair_`` prefix.
        feature_days: length of the feature window in days (``Windows.feature_days``).
        user_col: user id column.
        item_col: item id column.

    Returns:
        ``candidates`` with one non-null double column per feature, in ``features`` order.

    Raises:
        ValueError: a feature is not in ``samples``, has no entity prefix, or clashes with a
            column of ``candidates``.
    """
    missing = [f for f in features if f not in samples.columns]
    if missing:
        raise ValueError(f"features not in the samples: {missing}")
    by_prefix: dict[str, list[str]] = {p: [] for p in ENTITY_PREFIXES}
    for f in features:
        prefix = f.split("_", 1)[0]
        if prefix not in by_prefix or f in (user_col, item_col):
            raise ValueError(f"{f!r} is not a user_/item_/cat_/pair_ feature")
        by_prefix[prefix].append(f)
    clash = [f for f in features if f in candidates.columns]
    if clash:
        raise ValueError(f"candidates already have feature columns {clash}")

    pair_cols = by_prefix["pair"]
    # pair_price_rel of a pair that is not a sample: its item's item_price_rel (build.py's rule).
    item_rel = "_item_price_rel"
    want_item_rel = "pair_price_rel" in pair_cols and "item_price_rel" in samples.columns
    item_cols = by_prefix["item"] + by_prefix["cat"] + ([item_rel] if want_item_rel else [])

    out = candidates
    if by_prefix["user"]:
        out = out.join(_one_row_per(samples, user_col, item_col, by_prefix["user"]), user_col, "left")
    if item_cols:
        with_rel = samples.withColumn(item_rel, F.col("item_price_rel")) if want_item_rel else samples
        out = out.join(_one_row_per(with_rel, item_col, user_col, item_cols), item_col, "left")
    if pair_cols:
        # min of the struct: one whole row per pair, deterministic even if a pair repeats.
        pairs = samples.groupBy(user_col, item_col).agg(F.min(F.struct(*pair_cols)).alias("_pair"))
        pairs = pairs.select(
            user_col, item_col, F.lit(True).alias(_SEEN), *(F.col(f"_pair.{c}").alias(c) for c in pair_cols)
        )
        out = out.join(pairs, [user_col, item_col], "left")

    def filled(f: str) -> Column:
        value = F.col(f).cast("double")
        neutral = F.lit(neutral_value(f, feature_days=feature_days))
        if f == "pair_price_rel":
            if want_item_rel:
                neutral = F.coalesce(F.col(item_rel).cast("double"), neutral)
            return F.when(F.col(_SEEN), value).otherwise(neutral).alias(f)
        return F.coalesce(value, neutral).alias(f)

    return out.select(*candidates.columns, *(filled(f) for f in features))


def rerank(
    candidates_with_features: DataFrame,
    model: PipelineModel,
    k: int,
    *,
    user_col: str = S.USER_ID,
    item_col: str = S.ITEM_ID,
    als_rank_col: str = S.ALS_RANK,
    rank_col: str = S.RANK,
) -> DataFrame:
    """Each user's top ``k`` candidates by GBT probability.

    Candidates are ordered per user by ``P(label = 1)`` descending, then by ALS rank
    ascending (equal probabilities are common: trees give piecewise-constant scores), then by
    item id, so the ranks are 1, 2, ... without gaps and the same on every run. The window
    is per user over at most the ALS candidate count rows.

    Args:
        candidates_with_features: from :func:`candidate_features`.
        model: from :func:`fit_gbt`, fitted on the same feature columns.
        k: list length; at least 1.
        user_col: user id column.
        item_col: item id column.
        als_rank_col: the candidates' ALS rank (the first tie-breaker).
        rank_col: name of the output rank column (1 = best).

    Returns:
        ``(user_col, item_col, rank_col)``, at most ``k`` rows per user.

    Raises:
        ValueError: ``k`` is less than 1.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    prob = "_rerank_probability"
    scored = predict_proba(model, candidates_with_features, probability_col=prob)
    order = Window.partitionBy(user_col).orderBy(F.col(prob).desc(), F.col(als_rank_col).asc(), F.col(item_col).asc())
    return (
        scored.withColumn(_ROW, F.row_number().over(order))
        .where(F.col(_ROW) <= k)
        .select(user_col, item_col, F.col(_ROW).cast("int").alias(rank_col))
    )
