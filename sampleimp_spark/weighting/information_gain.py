"""Information gain of features about the label, per shard, and the cross-fitted IG sample weight ``w_ig``.

:func:`information_gain` bins each feature at per-shard quantile edges (from a bounded hash sample
of the shard; NaN and null get their own bin), counts (shard, fold, feature, bin, label) in native
Spark, and runs :func:`shard_information_gain` per shard in a grouped pandas UDF over the
contingency table: m-estimates shrunk toward the shard's prior (itself shrunk toward the global
one), and a G-test per feature (Holm over the shard's features) that zeroes a feature the data
cannot tell from noise. ``importance`` (``gold.feature_importance``) is the fit on every sample;
:func:`with_ig_weight` scores each sample with the fit on the other folds (cross-fitting, so a
weight never reads its own label): ``g``, the IG-weighted mean KL of its bins, and
``w_ig = 1 + λ · g / mean(g)``, mean ``1 + λ`` over each shard (1 where no feature informs).
Python only sees bounded inputs; nothing depends on partitioning. Formulas: ``docs/weighting.md``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T
from scipy import stats

from sampleimp_spark import hashing
from sampleimp_spark import schema as S
from sampleimp_spark.evaluation.bootstrap import holm

#: Bin of NaN and null values (its own bin; ``±inf`` are clamped to the outer finite bins).
NAN_BIN = -1

# Column names of the contingency table and of the per-shard UDF's input and output. They are
# fixed inside this module (the caller's shard column is renamed at the boundary), so the pure
# pandas function does not need column-name parameters.
_SHARD = "shard"
_FEATURE = "feature"
_BIN = "bin"
_LABEL = "label"
_COUNT = "count"
_FOLD = "fold"
_TERMS = "terms"

#: The ``fold`` of the fit on every sample of a shard (the importance); fold ``k >= 0`` is the fit on
#: the samples of the other folds, which scores fold ``k``'s samples.
ALL_FOLDS = -1

#: Columns of :attr:`IGResult.importance` (``gold.feature_importance`` without window metadata).
IMPORTANCE_COLUMNS: tuple[str, ...] = (_SHARD, _FEATURE, "ig", "p_value", "rank", "n")

_BIN_SCORES_SCHEMA = T.StructType(
    [
        T.StructField(_SHARD, T.StringType(), False),
        T.StructField(_FOLD, T.IntegerType(), False),  # the fit: ALL_FOLDS, or the samples not in fold k
        T.StructField(_FEATURE, T.StringType(), False),
        T.StructField(_BIN, T.IntegerType(), False),
        T.StructField("n_bin", T.LongType(), False),  # samples of the fit in this bin
        T.StructField("kl", T.DoubleType(), False),  # KL(p(Y|x) || p(Y)), both m-estimates
        T.StructField("ig", T.DoubleType(), False),  # the feature's IG in the fit (0 unless it passes the null test)
        T.StructField("p_value", T.DoubleType(), False),  # G-test of independence, Holm-adjusted over features
        T.StructField("rank", T.IntegerType(), False),  # 1 = most informative in the shard
        T.StructField("n", T.LongType(), False),  # samples in the shard
        T.StructField("contrib", T.DoubleType(), False),  # IG_j / Σ IG · kl: this bin's share of g
        T.StructField("g_mean", T.DoubleType(), False),  # mean of g over the samples the fit scores
    ]
)
_BIN_SCORES_COLUMNS: tuple[str, ...] = tuple(f.name for f in _BIN_SCORES_SCHEMA.fields)

_X = "__ig_x"
#: Stacked rows carry the feature's position (an int), not its name: smaller rows, cheaper joins.
_FIDX = "__ig_f"
#: Rows per shard the bin edges are computed from (a hash sample above that).
EDGE_SAMPLE_ROWS = 10_000
_EDGES = "edges"
_EDGES_SCHEMA = T.StructType(
    [
        T.StructField(_SHARD, T.StringType(), True),
        T.StructField(_FIDX, T.IntegerType(), False),
        T.StructField(_EDGES, T.ArrayType(T.DoubleType(), False), False),
    ]
)
_SID = "__ig_sid"
_N = "__ig_rows"  # the samples a stacked row stands for
_ID_SHARD = "__ig_id_shard"
_KEY = "__ig_key"
_SCORES = "__ig_scores"
_SCORES_SCHEMA = T.StructType([T.StructField("g", T.DoubleType()), T.StructField("w", T.DoubleType())])
#: Samples :func:`pointwise_scores` bins at once (a few MiB of temporaries at 138 features).
_SCORE_ROWS = 2048
#: Largest part of the scoring model :func:`with_ig_weight` collects and ships to a Python worker,
#: in doubles: edges and every fold's per-bin terms, ``shards × features × (n_bins - 1 + folds ×
#: (n_bins + 1))``. 2²⁵ (256 MiB) holds e.g. 3,800 shards of 138 features in 10 bins and 5 folds.
MAX_MODEL_CELLS = 2**25
#: Parts of that size the driver holds at most (1 GiB of doubles).
MAX_MODEL_PARTS = 4


@dataclass(frozen=True)
class IGResult:
    """What :func:`information_gain` computed; all tables are small (per shard, feature and bin).

    The tables are cached lazily (``DataFrame.cache``; nothing runs until they are used) because
    both the importance table and :func:`with_ig_weight` read them; call :meth:`unpersist` when done.

    Attributes:
        features: the feature columns, in the order given.
        importance: ``shard, feature, ig, p_value, rank, n`` — the rows of ``gold.feature_importance``
            (the fit on every sample).
        bin_scores: per ``shard, fold, feature, bin``: ``n_bin, kl, ig, p_value, rank, n, contrib,
            g_mean`` (see the module docstring; ``contrib`` is the bin's term of ``g``).
        edges: ``shard, feature, edges`` (``array<double>``, sorted and distinct).
        edges_long: the same keyed by the internal shard column and feature position (for joins).
        n_bins: the configured number of bins (``edges`` has at most ``n_bins - 1`` entries).
        shard_col: the shard column of ``importance`` and ``bin_scores``.
        folds: the cross-fitting folds.
        fold_cols: the columns a sample's fold is hashed from.
        seed: the seed of the folds (and of the edge sample).
    """

    features: tuple[str, ...]
    importance: DataFrame
    bin_scores: DataFrame
    edges: DataFrame
    edges_long: DataFrame
    n_bins: int
    shard_col: str
    folds: int
    fold_cols: tuple[str, ...]
    seed: int

    def fold(self) -> Column:
        """Each sample's cross-fitting fold, as the fit assigned it."""
        return fold_of([_col(k) for k in self.fold_cols], folds=self.folds, seed=self.seed)

    def unpersist(self) -> None:
        """Release the cached small tables."""
        self.bin_scores.unpersist()
        self.edges_long.unpersist()


# --- the pure per-shard function (no Spark) ------------------------------------------------


def _xlogy_ratio(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``p · log(p / q)`` elementwise with ``0 · log 0 = 0``."""
    out = np.zeros_like(p, dtype=float)
    mask = p > 0
    out[mask] = p[mask] * np.log(p[mask] / q[mask])
    return out


class _Fit(NamedTuple):
    """One fit of a shard's features: per feature its IG (not gated), per (feature, bin) row its KL."""

    ig: np.ndarray
    kl: np.ndarray


#: Bins with fewer samples are pooled into one before the G-test (Williams' correction grows
#: with ``1 / n_x``: a one-row bin would make any feature fail).
MIN_TEST_BIN = 5


def _g_test_p(n_xy: np.ndarray, starts: np.ndarray, deff: float) -> np.ndarray:
    """Per feature, the p-value of the G-test of independence of bin and class (plug-in counts;
    bins under :data:`MIN_TEST_BIN` pooled, into the largest bin if the pool is small too), with Williams' correction
    ``q = 1 + (N Σ_x 1/n_x - 1)(N Σ_y 1/n_y - 1) / (6 N df)`` and ``G`` divided by the design effect
    ``deff`` of clustered samples (Rao–Scott)."""
    ends = np.r_[starts[1:], len(n_xy)]
    p = np.ones(len(starts))
    for j, (a, b) in enumerate(zip(starts, ends, strict=True)):
        t = n_xy[a:b]
        small = t.sum(axis=1) < MIN_TEST_BIN
        if small.any() and not small.all():
            pooled, t = t[small].sum(axis=0), t[~small].copy()
            if pooled.sum() >= MIN_TEST_BIN:
                t = np.vstack([t, pooled])
            else:  # still too small on its own: into the largest bin
                t[np.argmax(t.sum(axis=1))] += pooled
        t = t[t.sum(axis=1) > 0][:, t.sum(axis=0) > 0]
        if t.shape[0] < 2 or t.shape[1] < 2:
            continue
        n, n_x, n_y = t.sum(), t.sum(axis=1), t.sum(axis=0)
        g = 2.0 * float(_xlogy_ratio(t, np.outer(n_x, n_y) / n).sum())
        df = (t.shape[0] - 1) * (t.shape[1] - 1)
        q = 1.0 + (n * (1.0 / n_x).sum() - 1.0) * (n * (1.0 / n_y).sum() - 1.0) / (6.0 * n * df)
        p[j] = float(stats.chi2.sf(max(g, 0.0) / (q * deff), df))
    return p


def design_effect(clusters: pd.DataFrame | None) -> float:
    """The design effect of a shard's class shares when its samples come in clusters (users):
    ``max(1, max_c Σ_u (n_uc - p_c n_u)² / (N p_c (1 - p_c)) · U / (U - 1))``, from the sums
    ``n = Σ_u n_uc``, ``n2 = Σ_u n_uc²``, ``n_nu = Σ_u n_uc n_u`` per class and ``nu2 = Σ_u n_u²``,
    ``users = U`` (repeated on every row). 1 without clusters, or with one user."""
    if clusters is None or clusters.empty:
        return 1.0
    users = float(clusters["users"].iloc[0])
    n_c = clusters["n"].to_numpy(dtype=float)
    total = n_c.sum()
    if users < 2 or total <= 0:
        return 1.0
    share = n_c / total
    spread = clusters["n2"].to_numpy(dtype=float) - 2 * share * clusters["n_nu"].to_numpy(dtype=float)
    spread = spread + share**2 * float(clusters["nu2"].iloc[0])
    rare = (share > 0) & (share < 1)
    if not rare.any():
        return 1.0
    deff = spread[rare] / (total * share[rare] * (1 - share[rare])) * users / (users - 1)
    return max(1.0, float(deff.max()))


def _fit(n_xy: np.ndarray, starts: np.ndarray, prior: np.ndarray, *, smoothing: float, miller_madow: bool) -> _Fit:
    """IG and per-bin KL of every feature of one shard from its ``(feature, bin) × class`` counts
    (rows of a feature contiguous from ``starts``); ``prior`` the global class counts the shard's
    prior is shrunk toward. Formulas: ``docs/weighting.md``."""
    n_features = len(starts)
    n_x = n_xy.sum(axis=1)
    n_y = np.add.reduceat(n_xy, starts, axis=0)  # (features, classes)
    n = n_y.sum(axis=1)  # every sample counts once per feature
    if n_features == 0 or n[0] <= 0 or int((n_y[0] > 0).sum()) <= 1:
        return _Fit(np.zeros(n_features), np.zeros(len(n_x)))  # one class (or none): nothing to learn
    rows = np.repeat(np.arange(n_features), np.diff(np.r_[starts, len(n_x)]))
    total = prior.sum()
    global_prior = prior / total if total > 0 else n_y[0] / n[0]
    m = smoothing
    shard_prior = (n_y + m * global_prior) / (n + m)[:, None]  # shrunk toward the global table
    prior_row = shard_prior[rows]
    denom = (n_x + m)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        p_y_x = np.where(denom > 0, (n_xy + m * prior_row) / denom, prior_row)  # toward the shard prior
    kl = np.maximum(_xlogy_ratio(p_y_x, np.where(prior_row > 0, prior_row, 1.0)).sum(axis=1), 0.0)
    ig = np.add.reduceat(n_x * kl, starts) / n
    if miller_madow:
        m_xy = np.add.reduceat((n_xy > 0).sum(axis=1).astype(float), starts)
        m_x = np.add.reduceat((n_x > 0).astype(float), starts)
        ig = ig - (m_xy - m_x - (n_y > 0).sum(axis=1) + 1) / (2.0 * n)
    return _Fit(np.maximum(ig, 0.0), kl)


def shard_information_gain(
    counts: pd.DataFrame,
    *,
    smoothing: float = 0.0,
    null_alpha: float = 1.0,
    miller_madow: bool = False,
    prior: pd.DataFrame | None = None,
    clusters: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Per-feature IG and per-bin KL scores of one shard, from its contingency table, for every
    cross-fitting fold.

    Plain pandas/numpy, called per shard through ``groupBy(shard).applyInPandas``; testable
    without Spark. The input is bounded by ``folds × features × bins × classes`` rows.

    Args:
        counts: one shard's contingency table with columns ``shard, feature, bin, label, count``
            and optionally ``fold`` (one row per observed combination; missing ones count 0).
        smoothing: prior strength ``m`` of the m-estimates: a bin's class distribution is shrunk
            toward the shard's prior with ``m`` pseudo-samples, and the shard's prior toward the
            global one with ``m`` pseudo-samples (0 = plug-in estimates, equal to scikit-learn's
            ``mutual_info_score`` on the binned data).
        null_alpha: a feature keeps its IG only when the G-test of independence on all the
            shard's samples (Williams' correction, the design effect of ``clusters``,
            Holm-adjusted over the shard's features) rejects at this level; 1 keeps all. One
            decision per shard, shared by every fold's fit.
        miller_madow: subtract the Miller–Madow bias estimate ``(m_XY - m_X - m_Y + 1) / 2N``.
        prior: the global class counts ``fold, label, count`` (over every shard of the scope) the
            shard's prior is shrunk toward; None uses the shard's own. With folds in ``counts``
            it must have them too (each fold's fit leaves its own fold out of the prior).
        clusters: the shard's cluster (user) sums of :func:`design_effect`; None = independent
            samples.

    Returns:
        Per fit and (feature, bin) the columns of the bin-scores table. Fold ``-1``
        (:data:`ALL_FOLDS`) is the fit on every sample (the importance); fold ``k`` the fit on the
        samples of every other fold, whose terms score fold ``k``'s samples (cross-fitting).
    """
    columns = list(_BIN_SCORES_COLUMNS)
    if counts.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    if _FOLD not in counts.columns:
        counts = counts.assign(**{_FOLD: ALL_FOLDS})
    counts = counts.assign(**{_LABEL: counts[_LABEL].astype(str)})
    shard = counts[_SHARD].iloc[0]
    prior_counts = prior if prior is not None else counts.iloc[0:0]
    classes = sorted(set(counts[_LABEL]) | set(prior_counts[_LABEL].astype(str)))
    # One (feature, bin) × (fold, class) matrix for the whole shard; its rows are sorted by
    # feature, then bin, so each feature is a contiguous block.
    table = counts.pivot_table(
        index=[_FEATURE, _BIN], columns=[_FOLD, _LABEL], values=_COUNT, aggfunc="sum", fill_value=0
    ).sort_index()
    folds = sorted(int(f) for f in table.columns.get_level_values(0).unique())
    by_fold = {f: pd.DataFrame(table[f]).reindex(columns=classes, fill_value=0).to_numpy(dtype=float) for f in folds}
    full = np.sum(list(by_fold.values()), axis=0)
    feature_of_row = table.index.get_level_values(0).astype(str).to_numpy()
    bin_of_row = table.index.get_level_values(1).to_numpy().astype("int32")
    starts = np.flatnonzero(np.r_[True, feature_of_row[1:] != feature_of_row[:-1]])
    names = [feature_of_row[i] for i in starts]
    sizes = np.diff(np.r_[starts, len(feature_of_row)])
    prior_table = pd.DataFrame(prior_counts).assign(**{_LABEL: prior_counts[_LABEL].astype(str)})
    if _FOLD not in prior_table.columns:
        if prior is not None and folds != [ALL_FOLDS]:
            raise ValueError("a prior for cross-fitted counts needs its fold column (or a fold's fit reads its labels)")
        prior_table = prior_table.assign(**{_FOLD: ALL_FOLDS})
    prior_by_fold = prior_table.pivot_table(index=_FOLD, columns=_LABEL, values=_COUNT, aggfunc="sum", fill_value=0)
    prior_by_fold = prior_by_fold.reindex(columns=classes, fill_value=0)
    prior_all = prior_by_fold.to_numpy(dtype=float).sum(axis=0)
    fits = [(ALL_FOLDS, full, full, prior_all)]
    if folds != [ALL_FOLDS]:
        for f in folds:
            own = by_fold[f]
            own_prior = prior_by_fold.loc[f].to_numpy(dtype=float) if f in prior_by_fold.index else 0.0
            fits.append((f, full - own, own, prior_all - own_prior))
    # Which features count is one decision per shard, on all its samples: a fold whose own fit
    # gated differently would weigh its users on another scale than the rest of the shard.
    p_value = holm(list(_g_test_p(full, starts, design_effect(clusters))))
    keep = p_value <= null_alpha
    out = []
    for fold, fit_counts, scored, fit_prior in fits:
        fit = _fit(fit_counts, starts, fit_prior, smoothing=smoothing, miller_madow=miller_madow)
        ig = np.where(keep, fit.ig, 0.0)
        n_fit = fit_counts.sum(axis=1)
        total_ig = float(ig.sum())
        ig_row = np.repeat(ig, sizes)
        contrib = (ig_row / total_ig) * fit.kl if total_ig > 0 else np.zeros_like(fit.kl)
        n_scored = scored.sum(axis=1)
        n_scored_total = float(n_scored[starts[0] : starts[0] + sizes[0]].sum())
        g_mean = float((n_scored * contrib).sum()) / n_scored_total if n_scored_total > 0 else 0.0
        # Rank by IG (descending), ties broken by feature name so the rank is deterministic.
        order = sorted(range(len(names)), key=lambda i: (-ig[i], names[i]))
        rank = np.empty(len(names), dtype=np.int32)
        rank[order] = np.arange(1, len(names) + 1, dtype=np.int32)
        seen = n_fit > 0  # a bin only the scored fold has is not in the fit: it scores 0
        out.append(
            pd.DataFrame(
                {
                    _SHARD: shard,
                    _FOLD: np.int32(fold),
                    _FEATURE: feature_of_row[seen],
                    _BIN: bin_of_row[seen],
                    "n_bin": n_fit[seen].astype("int64"),
                    "kl": fit.kl[seen],
                    "ig": ig_row[seen],
                    "p_value": np.repeat(p_value, sizes)[seen],
                    "rank": np.repeat(rank, sizes)[seen],
                    "n": np.int64(round(float(n_fit[starts[0] : starts[0] + sizes[0]].sum()))),
                    "contrib": contrib[seen],
                    "g_mean": g_mean,
                }
            )
        )
    return pd.concat(out, ignore_index=True)[columns]


# --- Spark --------------------------------------------------------------------------------


def _col(name: str) -> Column:
    """A top-level column by name, even when the name contains dots."""
    return F.col(f"`{name}`")


def _check_features(samples: DataFrame, features: Sequence[str]) -> tuple[str, ...]:
    feats = tuple(features)
    if not feats:
        raise ValueError("information gain needs at least one feature column")
    if len(set(feats)) != len(feats):
        raise ValueError(f"feature columns must be distinct, got {list(feats)}")
    types = {f.name: f.dataType for f in samples.schema.fields}
    for f in feats:
        if f not in types:
            raise ValueError(f"feature column {f!r} is not in the samples")
        if not isinstance(types[f], T.NumericType):
            raise TypeError(f"feature column {f!r} must be numeric, got {types[f].simpleString()}")
    return feats


def _bin(x: Column, edges: Column, max_edges: int) -> Column:
    """Bin index: the number of edges strictly below ``x``; :data:`NAN_BIN` for NaN and null.

    ``max_edges`` plain comparisons (a missing edge compares false), which Spark compiles;
    a ``filter`` lambda would be interpreted row by row.
    """
    below = [F.coalesce((x > F.try_element_at(edges, F.lit(k + 1))).cast("int"), F.lit(0)) for k in range(max_edges)]
    count = functools.reduce(lambda a, b: a + b, below, F.lit(0))
    return F.when(x.isNull() | F.isnan(x), F.lit(NAN_BIN)).otherwise(count).cast("int")


def _stacked(frame: DataFrame, positions: Sequence[int], *, keep: Sequence[str]) -> DataFrame:
    """One row per (row of ``frame``, feature): the ``keep`` columns, the feature's position and its
    value (``frame`` holds the values as ``__ig_x<position>``).

    The long layout keeps every per-feature expression small: binning ~100 features as ~100
    wide column expressions made query plans so large that planning and compiling them cost
    more than the work itself.
    """
    values = F.array(*[F.struct(F.lit(j).alias(_FIDX), F.col(f"{_X}{j}").alias(_X)) for j in positions])
    return frame.select(*keep, F.inline(values))


def _check_groups(features: tuple[str, ...], groups: Sequence[Sequence[str]]) -> list[list[int]]:
    """The positions of each group's features; every feature in at most one group."""
    position = {f: j for j, f in enumerate(features)}
    seen: set[str] = set()
    out = []
    for group in groups:
        for f in group:
            if f not in position:
                raise ValueError(f"grouped feature {f!r} is not one of the features")
            if f in seen:
                raise ValueError(f"feature {f!r} is in more than one group")
            seen.add(f)
        if group:
            out.append([position[f] for f in group])
    return out


def _names(features: Sequence[str]) -> Column:
    """The feature names as a literal array (position ``_FIDX`` is element ``_FIDX + 1``)."""
    return F.array(*[F.lit(f) for f in features])


def _feature_name(features: Sequence[str]) -> Column:
    """The name of the feature at position ``_FIDX``."""
    return F.element_at(_names(features), F.col(_FIDX) + 1)


def _label(label_col: str) -> Column:
    """The label as a string (``"(null)"`` for null), the class column of the counts."""
    return F.coalesce(_col(label_col).cast("string"), F.lit("(null)")).alias(_LABEL)


def quantile_edges(values: np.ndarray, n_bins: int) -> list[np.ndarray]:
    """Bin edges of each column of ``values`` (rows × features): the sorted, distinct quantiles at
    ``k / n_bins`` (``k = 1 .. n_bins-1``) of the column's *finite* values, each the inverted-CDF
    quantile ``sorted[ceil(p · n) - 1]`` (an observed value, as an exact ``percentile_approx``
    returns). A column without a finite value gets no edges (one bin)."""
    v = np.where(np.isfinite(values), values, np.nan)
    n = np.isfinite(v).sum(axis=0)
    v = np.sort(v, axis=0)  # NaN last
    out = []
    for j in range(v.shape[1]):
        if n[j] == 0:
            out.append(np.empty(0))
            continue
        ranks = np.array([max(math.ceil((k / n_bins) * n[j]), 1) - 1 for k in range(1, n_bins)])
        out.append(np.unique(v[ranks, j]))
    return out


def _edge_sample(
    samples: DataFrame,
    features: tuple[str, ...],
    *,
    shard_col: str,
    key_cols: Sequence[str],
    edge_rows: int,
    seed: int,
) -> DataFrame:
    """``shard, __ig_v0 .. __ig_v{F-1}`` (doubles): about ``edge_rows`` samples per shard at most, a
    hash sample by ``key_cols`` (every row of a smaller shard), so it does not depend on how the
    input is partitioned."""
    sizes = samples.groupBy(_col(shard_col).alias("__ig_sz_shard")).agg(F.count(F.lit(1)).alias("__ig_n"))
    keep = hashing.uniform(seed, *(_col(k) for k in key_cols), salt="ig_edges") * F.col("__ig_n") < F.lit(edge_rows)
    values = [_col(f).cast("double").alias(f"__ig_v{j}") for j, f in enumerate(features)]
    return (
        samples.join(F.broadcast(sizes), _col(shard_col) == F.col("__ig_sz_shard"))
        .where(keep)
        .select(_col(shard_col).cast("string").alias(_SHARD), *values)
    )


def _edges(sample: DataFrame, *, n_features: int, n_bins: int) -> DataFrame:
    """``shard, feature position, edges`` from the output of :func:`_edge_sample`, per shard in a
    grouped pandas UDF (:func:`quantile_edges`): a group is at most ~``edge_rows`` rows."""

    def per_shard(rows: pd.DataFrame) -> pd.DataFrame:
        edges = quantile_edges(rows.iloc[:, 1:].to_numpy(dtype=float), n_bins)
        return pd.DataFrame({_SHARD: rows[_SHARD].iloc[0], _FIDX: np.arange(n_features, dtype=np.int32), _EDGES: edges})

    return sample.groupBy(_SHARD).applyInPandas(per_shard, schema=_EDGES_SCHEMA)


def _shard_ids(edges: DataFrame) -> DataFrame:
    """``__ig_id_shard, __ig_sid``: a dense int id per shard of the edges table, in shard order,
    so it is the same whenever it is recomputed. The stacked rows carry it instead
    of the shard's name: int keys make the 10⁸-row join and aggregation cheaper than string keys."""
    order = Window.orderBy(F.col(_ID_SHARD).asc_nulls_first())
    shards = edges.select(F.col(_SHARD).alias(_ID_SHARD)).distinct()
    return shards.withColumn(_SID, F.row_number().over(order).cast("int"))


def _counts(
    samples: DataFrame,
    features: tuple[str, ...],
    edges: DataFrame,
    *,
    shard_col: str,
    label_col: str,
    n_bins: int,
    groups: Sequence[Sequence[str]] = (),
    fold: Column | None = None,
) -> DataFrame:
    """``shard, fold, feature, bin, label, count``: the samples stacked one row per feature, binned with
    their shard's edges (one broadcast join on a single long key) and counted in one aggregation
    with a map-side combine.

    The features of a group in ``groups`` are stacked once per distinct (shard, label, values of
    the group) with its number of samples, not once per sample; the aggregation sums those
    numbers. The counts are the same for any grouping; a group whose value tuples repeat (the
    features of one user, which all of the user's samples share) only makes fewer rows to stack,
    bin and count. Features in no group are stacked once per sample.

    ``fold`` is each sample's cross-fitting fold (:func:`fold_of`); None puts every sample in
    fold 0. Samples with a null shard have no edges and are not counted (``silver.samples.shard``
    is never null); :func:`with_ig_weight` gives them ``w_ig = 1``."""
    ids = F.broadcast(_shard_ids(edges))
    n_features = len(features)
    key = (F.col(_SID).cast("long") * n_features + F.col(_FIDX)).alias(_KEY)
    keyed_edges = edges.join(ids, F.col(_SHARD) == F.col(_ID_SHARD)).select(key, _EDGES)
    values = [_col(f).cast("double").alias(f"{_X}{j}") for j, f in enumerate(features)]
    fold_value = (fold if fold is not None else F.lit(0)).cast("int").alias(_FOLD)
    with_id = samples.join(ids, _col(shard_col).cast("string") == F.col(_ID_SHARD)).select(
        F.col(_SID), _label(label_col), fold_value, *values
    )
    grouped = _check_groups(features, groups)
    in_group = {j for group in grouped for j in group}
    keep = [_SID, _LABEL, _FOLD, _N]
    parts = [
        _stacked(
            with_id.groupBy(_SID, _LABEL, _FOLD, *[f"{_X}{j}" for j in group]).agg(F.count(F.lit(1)).alias(_N)),
            group,
            keep=keep,
        )
        for group in grouped
    ]
    if single := [j for j in range(n_features) if j not in in_group]:
        parts.append(_stacked(with_id.withColumn(_N, F.lit(1).cast("long")), single, keep=keep))
    stacked = functools.reduce(DataFrame.unionByName, parts).withColumn(_KEY, key)
    binned = stacked.join(F.broadcast(keyed_edges), _KEY, "left")
    edge_array = F.coalesce(F.col(_EDGES), F.array().cast("array<double>"))
    binned = binned.withColumn(_BIN, _bin(F.col(_X), edge_array, n_bins - 1))
    counts = binned.groupBy(_SID, _FOLD, _FIDX, _BIN, _LABEL).agg(F.sum(_N).alias(_COUNT))
    named = counts.join(ids, _SID).select(F.col(_ID_SHARD).alias(_SHARD), _FOLD, _FIDX, _BIN, _LABEL, _COUNT)
    return named.select(_SHARD, _FOLD, _feature_name(features).alias(_FEATURE), _BIN, _LABEL, _COUNT)


def fold_of(keys: Sequence[Column], *, folds: int, seed: int) -> Column:
    """The cross-fitting fold ``0 .. folds-1`` of a sample: a hash of its keys (the user by
    default, so that a user's samples, which share the user's features and often their labels,
    are fitted and scored apart together)."""
    return F.floor(hashing.uniform(seed, *keys, salt="ig_folds") * F.lit(folds)).cast("int")


def _fold_keys(samples: DataFrame, fold_cols: Sequence[str] | None, fallback: Sequence[str]) -> list[str]:
    cols = list(fold_cols or ())
    return cols if cols and all(c in samples.columns for c in cols) else list(fallback)


def _priors(
    samples: DataFrame, *, shard_col: str, label_col: str, fold: Column, scope_col: str | None
) -> tuple[dict[str, str], dict[str, pd.DataFrame]]:
    """The class counts per fold of every scope (``scope_col``'s value; one scope when None), and
    each shard's scope: the global tables the shards' priors are shrunk toward. One small
    aggregation, collected (a row per shard, fold and class)."""
    scope = _col(scope_col).cast("string") if scope_col else F.lit("")
    rows = (
        samples.where(_col(shard_col).isNotNull())
        .groupBy(
            scope.alias("scope"), _col(shard_col).cast("string").alias(_SHARD), fold.alias(_FOLD), _label(label_col)
        )
        .agg(F.count(F.lit(1)).alias(_COUNT))
        .toPandas()
    )
    scope_of = {str(k): str(v) for k, v in zip(rows[_SHARD], rows["scope"], strict=True)}
    tables = {
        str(name): pd.DataFrame(part.groupby([_FOLD, _LABEL], as_index=False)[_COUNT].sum())
        for name, part in rows.groupby("scope")
    }
    return scope_of, tables


def cluster_sums(samples: DataFrame, *, shard_col: str, label_col: str, cluster_cols: Sequence[str]) -> DataFrame:
    """Per shard and class, the cluster sums :func:`design_effect` reads (``n, n2, n_nu``, and the
    shard's ``nu2, users``), the clusters being the distinct values of ``cluster_cols`` (users).
    Native aggregations; one row per shard and class."""
    shard = _col(shard_col).cast("string").alias(_SHARD)
    keys = [_col(c).alias(f"__ig_c{i}") for i, c in enumerate(cluster_cols)]
    names = [_SHARD, *[f"__ig_c{i}" for i in range(len(cluster_cols))]]
    per_class = (
        samples.where(_col(shard_col).isNotNull())
        .groupBy(shard, *keys, _label(label_col))
        .agg(F.count(F.lit(1)).alias("__ig_nuc"))
    )
    per_user = per_class.groupBy(*names).agg(F.sum("__ig_nuc").alias("__ig_nu"))
    nuc, nu = F.col("__ig_nuc"), F.col("__ig_nu")
    by_class = (
        per_class.join(per_user, names)
        .groupBy(_SHARD, _LABEL)
        .agg(F.sum(nuc).alias("n"), F.sum(nuc * nuc).alias("n2"), F.sum(nuc * nu).alias("n_nu"))
    )
    by_shard = per_user.groupBy(_SHARD).agg(F.sum(nu * nu).alias("nu2"), F.count(F.lit(1)).alias("users"))
    return by_class.join(by_shard, _SHARD)


def information_gain(
    samples: DataFrame,
    features: Sequence[str],
    *,
    n_bins: int = 10,
    smoothing: float = 10.0,
    null_alpha: float = 0.05,
    folds: int = 5,
    miller_madow: bool = False,
    label_col: str = S.LABEL_PURCHASE,
    shard_col: str = S.SHARD,
    key_cols: Sequence[str] | None = (S.USER_ID, S.ITEM_ID),
    fold_cols: Sequence[str] | None = (S.USER_ID,),
    scope_col: str | None = None,
    edge_rows: int = EDGE_SAMPLE_ROWS,
    seed: int = 0,
    groups: Sequence[Sequence[str]] = (),
) -> IGResult:
    """Information gain of each feature about the label, per shard, and cross-fitted per-bin scores.

    The quantile edges are computed per shard from a bounded sample of it (a grouped pandas
    UDF); the contingency counts by native Spark over the samples stacked one row per feature,
    per cross-fitting fold; the per-shard math in :func:`shard_information_gain` over each shard's
    contingency table. Runs two small aggregations when called (the global class counts and the
    per-user sums of the design effect); the rest runs when a result table is used.

    Args:
        samples: one row per sample with ``shard_col``, ``label_col`` and the numeric features.
        features: feature columns to score (numeric; NaN/null get their own bin, ±inf are
            clamped to the outer bins).
        n_bins: quantile bins per feature and shard (fewer when values tie); NaN adds its own bin.
        smoothing: prior strength ``m`` of the m-estimates (a bin's class distribution toward the
            shard's, the shard's toward the global one); 0 = plug-in estimates.
        null_alpha: level of the per-shard G-test (Holm over features) a feature must pass to keep
            its IG; 1 keeps every feature.
        folds: cross-fitting folds: a sample is scored by the fit on the other folds' samples.
        miller_madow: subtract the Miller–Madow bias estimate from the per-shard IG.
        label_col: the label (any type; compared as a string, so ``0``/``1`` or intent names).
        shard_col: the shard column.
        key_cols: columns identifying a sample; the bin edges of a shard larger than
            ``edge_rows`` are computed on a hash sample of about that many rows (by these keys),
            so that they do not depend on partitioning. None (or keys absent from ``samples``)
            hashes the label and the feature values instead.
        fold_cols: the columns a sample's fold is hashed from (default the user), also the
            clusters of the G-test's design effect; absent ones fall back to ``key_cols``.
        scope_col: the global table a shard's prior is shrunk toward is that of the shards with
            its value of this column (e.g. the window); None = every shard.
        edge_rows: rows per shard the edges are computed from, at most.
        seed: seed of that sample and of the folds.
        groups: disjoint groups of ``features`` whose value tuples many samples share (e.g. the
            features of one user: :func:`~sampleimp_spark.features.behavior.shared_feature_groups`).
            Each group is counted once per distinct (shard, label, fold, values) with its number of
            samples. Any grouping gives the same result; a good one makes the counting cheaper.

    Returns:
        The importance, bin-score and edge tables (see :class:`IGResult`).
    """
    feats = _check_features(samples, features)
    if folds < 2:
        raise ValueError(f"cross-fitting needs at least 2 folds, got {folds}")
    keys = list(key_cols or ())
    if not keys or any(k not in samples.columns for k in keys):
        keys = [label_col, *feats]  # no sample keys: the row's content decides the sample
    by = _fold_keys(samples, fold_cols, [k for k in keys if k != label_col])  # never the label
    fold = fold_of([_col(k) for k in by], folds=folds, seed=seed)
    scope_of, priors = _priors(samples, shard_col=shard_col, label_col=label_col, fold=fold, scope_col=scope_col)
    sums = cluster_sums(samples, shard_col=shard_col, label_col=label_col, cluster_cols=by).toPandas()
    clusters = {str(name): pd.DataFrame(part) for name, part in sums.groupby(_SHARD)}  # a row per shard and class
    sample = _edge_sample(samples, feats, shard_col=shard_col, key_cols=keys, edge_rows=edge_rows, seed=seed)
    edges = _edges(sample, n_features=len(feats), n_bins=n_bins).cache()
    counts = _counts(
        samples, feats, edges, shard_col=shard_col, label_col=label_col, n_bins=n_bins, groups=groups, fold=fold
    )

    def per_shard(counts: pd.DataFrame) -> pd.DataFrame:
        scope = scope_of.get(str(counts[_SHARD].iloc[0]))
        return shard_information_gain(
            counts,
            smoothing=smoothing,
            null_alpha=null_alpha,
            miller_madow=miller_madow,
            prior=priors.get(scope) if scope is not None else None,
            clusters=clusters.get(str(counts[_SHARD].iloc[0])),
        )

    bin_scores = counts.groupBy(_SHARD).applyInPandas(per_shard, schema=_BIN_SCORES_SCHEMA)
    bin_scores = bin_scores.withColumnRenamed(_SHARD, shard_col).cache()
    importance = (
        bin_scores.where(F.col(_FOLD) == ALL_FOLDS)
        .select(shard_col, *IMPORTANCE_COLUMNS[1:])
        .dropDuplicates([shard_col, _FEATURE])
    )
    return IGResult(
        features=feats,
        importance=importance,
        bin_scores=bin_scores,
        edges=edges.select(F.col(_SHARD).alias(shard_col), _feature_name(feats).alias(_FEATURE), _EDGES),
        edges_long=edges,
        n_bins=n_bins,
        shard_col=shard_col,
        folds=folds,
        fold_cols=tuple(by),
        seed=seed,
    )


class ScoringModel(NamedTuple):
    """The fitted IG model as dense numpy arrays (what :func:`pointwise_scores` reads).

    Attributes:
        shards: the shard names (row ``s`` of every array is ``shards[s]``).
        edges: ``(shards, n_bins - 1, features)``, each shard's and feature's sorted edges padded with
            ``+inf`` (which no value exceeds); edge ``k`` of every feature is one contiguous row.
        terms: ``(shards, folds, features, n_bins + 1)``, the term of bin ``b`` at index ``b + 1`` in
            the fit that scores fold ``k`` (NaN's bin ``-1`` is index 0; a bin the fit did not see
            has term 0).
        g_mean: ``(shards, folds)``: the mean of ``g`` over the shard's samples of each fold.
    """

    shards: pd.Index
    edges: np.ndarray
    terms: np.ndarray
    g_mean: np.ndarray


def scoring_models(result: IGResult) -> list[ScoringModel]:
    """The fitted model collected to the driver, as :class:`ScoringModel` parts of consecutive
    shards, each at most :data:`MAX_MODEL_CELLS` values and collected on its own.

    This is what :func:`with_ig_weight` ships to the workers; it runs two small collects per part.
    Its size is set by the shards, folds, features and bins, not by the samples. A single shard
    above the part limit, or a whole model above :data:`MAX_MODEL_PARTS` parts, is refused with a
    clear error rather than risk the driver.
    """
    feats, n_bins, folds = result.features, result.n_bins, result.folds
    edges = result.edges_long.toPandas()  # shards x features rows
    shards = pd.Index(sorted(edges[_SHARD].dropna().unique()))
    per_feature = n_bins - 1 + folds * (n_bins + 1)  # edges, and the terms of every fold's fit
    per_shard = len(feats) * per_feature
    step = MAX_MODEL_CELLS // per_shard
    if step == 0 or len(shards) > step * MAX_MODEL_PARTS:
        raise ValueError(
            f"the IG scoring model has {len(shards):,} shards x {len(feats)} features x {per_feature} edges and "
            f"terms = {len(shards) * per_shard:,} values ({per_shard:,} per shard), above {MAX_MODEL_PARTS} parts "
            f"of {MAX_MODEL_CELLS:,}: use fewer features, bins or folds, or pool more shards (a larger "
            "features.min_shard_rows)"
        )
    shard = _col(result.shard_col).cast("string").alias(_SHARD)
    fitted = result.bin_scores.where(F.col(_FOLD) >= 0).select(shard, _FOLD, _FEATURE, _BIN, "contrib", "g_mean")
    # One row per (shard, fold, feature) with a nonzero term, its terms as one dense array (index
    # bin + 1): about n_bins times fewer rows than the per-bin table (whose collect outgrows
    # spark.driver.maxResultSize first), and no row at all for a feature the null test zeroed.
    by_bin = F.map_from_entries(F.collect_list(F.struct((F.col(_BIN) + 1).alias("k"), F.col("contrib").alias("v"))))
    dense = F.transform(
        F.sequence(F.lit(0), F.lit(n_bins)), lambda i: F.coalesce(F.try_element_at(_TERMS, i), F.lit(0.0))
    )
    models = []
    for i in range(0, max(len(shards), 1), step):
        part = shards[i : i + step]
        edge_arr = np.full((len(part), n_bins - 1, len(feats)), np.inf)
        mine = edges[part.get_indexer(edges[_SHARD]) >= 0]
        for r, j, e in zip(part.get_indexer(mine[_SHARD]), mine[_FIDX], mine[_EDGES], strict=True):
            edge_arr[r, : len(e), j] = e
        rows = fitted.where(F.col(_SHARD).isin(list(part)))
        means = rows.groupBy(_SHARD, _FOLD).agg(F.max("g_mean").alias("g_mean")).toPandas()  # shards x folds
        g_mean = np.zeros((len(part), folds))
        g_mean[part.get_indexer(means[_SHARD]), means[_FOLD].to_numpy()] = means["g_mean"].to_numpy()
        nonzero = (
            rows.where(F.col("contrib") != 0)
            .groupBy(_SHARD, _FOLD, _FEATURE)
            .agg(by_bin.alias(_TERMS))
            .select(_SHARD, _FOLD, _FEATURE, dense.alias(_TERMS))
            .toPandas()
        )
        terms = np.zeros((len(part), folds, len(feats), n_bins + 1))
        if len(nonzero):
            p = part.get_indexer(nonzero[_SHARD])
            j = pd.Index(feats).get_indexer(pd.Index(nonzero[_FEATURE]))
            terms[p, nonzero[_FOLD].to_numpy(), j] = np.stack(list(nonzero[_TERMS]))
        models.append(ScoringModel(part, edge_arr, terms, g_mean))
    return models


def pointwise_scores(
    shard: pd.Series, fold: np.ndarray, values: np.ndarray, model: ScoringModel, lam: float
) -> pd.DataFrame:
    """``g`` and ``w_ig`` of a batch of samples (plain numpy; called per Arrow batch).

    Vectorized over every feature at once, :data:`_SCORE_ROWS` samples at a time (so its memory
    does not grow with the batch): a sample's bin of every feature is the number of its shard's
    edges strictly below the value, counted one edge rank at a time against a row of edges
    gathered by shard; its terms are then read, from its fold's fit, with one flat index per
    (sample, feature).

    Args:
        shard: the samples' shards (as strings); a shard the model does not know scores 0.
        fold: the samples' folds (:func:`fold_of`); one outside the model's scores 0.
        values: the samples' feature values, ``rows × features`` in the fitted order (NaN for null).
        model: a part of the output of :func:`scoring_models`.
        lam: ``λ``.
    """
    shards, edge_arr, terms, g_mean = model.shards, model.edges, model.terms, model.g_mean
    if len(shards) == 0:  # nothing was fitted: every sample scores 0 and weighs 1
        return pd.DataFrame({"g": np.zeros(len(values)), "w": np.ones(len(values))})
    n_folds, n_features, n_terms = terms.shape[1], terms.shape[2], terms.shape[3]
    s = shards.get_indexer(pd.Index(shard))
    k = np.asarray(fold, dtype=np.int64)
    known = (s >= 0) & (k >= 0) & (k < n_folds)
    s = np.where(known, s, 0)
    cell = s * n_folds + np.where(known, k, 0)  # (shard, fold) of each sample
    n_edges = edge_arr.shape[1]
    flat_terms = terms.ravel()
    # Flat index of (shard, fold, feature, term index 0) in ``terms``.
    feature_base = np.arange(n_features) * n_terms
    g = np.zeros(len(values))
    for start in range(0, len(values), _SCORE_ROWS):
        rows = slice(start, start + _SCORE_ROWS)
        x, sc = values[rows], s[rows]
        idx = np.ones(x.shape, dtype=np.int64)  # term index = bin + 1
        for e in range(n_edges):
            idx += x > edge_arr[sc, e]  # the +inf padding is never below x
        idx[np.isnan(x)] = NAN_BIN + 1
        idx += (cell[rows] * (n_features * n_terms))[:, None] + feature_base
        g[rows] = flat_terms.take(idx).sum(axis=1)
    g = np.where(known, g, 0.0)
    mean = np.where(known, g_mean.ravel()[cell], 0.0)
    w = np.ones(len(g))
    informative = mean > 0
    w[informative] = 1.0 + lam * g[informative] / mean[informative]
    return pd.DataFrame({"g": g, "w": w})


def with_ig_weight(
    samples: DataFrame,
    result: IGResult,
    features: Sequence[str] | None = None,
    *,
    lam: float = 1.0,
    shard_col: str = S.SHARD,
    score_col: str = S.IG_SCORE,
    weight_col: str = S.W_IG,
) -> DataFrame:
    """Add the pointwise IG score ``g`` and the weight ``w_ig = 1 + λ · g / mean_s(g)``.

    Each sample is binned exactly as in :func:`information_gain` and its bins' terms, from the fit
    on the *other* folds (cross-fitting: a sample's weight never reads its own label), summed in a
    scalar pandas UDF that sees one Arrow batch of the samples' shard, fold and feature values at a
    time, with the fitted edges and per-bin terms as small dense arrays
    (:func:`scoring_models`). The samples stay where they are: no stacking, no shuffle, no join
    back. On the samples the IG was computed on, the mean of ``w_ig`` over every fold of a shard
    is ``1 + λ`` (or 1 where ``g`` is 0 throughout). Samples of a shard the IG was not computed on
    get ``g = 0`` and ``w_ig = 1``; bins not seen by their fit score 0.

    Unlike the fit, this runs Spark jobs when called: it collects the (small) fitted tables.

    Args:
        samples: the samples (same feature and shard columns as the IG fit).
        result: the output of :func:`information_gain`.
        features: the fitted features (default); given explicitly, they must be the same set.
        lam: ``λ`` of the weight; 0 gives ``w_ig = 1``.
        shard_col: the shard column.
        score_col: output column for ``g`` (double, ``>= 0``).
        weight_col: output column for ``w_ig`` (double, ``>= 1``).

    Returns:
        ``samples`` with ``score_col`` and ``weight_col`` added.

    Raises:
        ValueError: the features differ from the fitted ones, one shard's model is larger than
            :data:`MAX_MODEL_CELLS`, or the model needs more than :data:`MAX_MODEL_PARTS` parts of
            that size (a model above one part is scored in parts of whole shards).
    """
    feats = result.features
    if features is not None and set(features) != set(feats):
        raise ValueError(f"features {list(features)} differ from the fitted ones {list(feats)}")
    models = scoring_models(result)
    values = F.struct(*[_col(f).cast("double").alias(f"v{j}") for j, f in enumerate(feats)])
    shard = _col(shard_col).cast("string")

    def scored_by(model: ScoringModel, rows: DataFrame) -> DataFrame:
        @F.pandas_udf(_SCORES_SCHEMA)  # type: ignore[call-overload]
        def score(shard: pd.Series, fold: pd.Series, values: pd.DataFrame) -> pd.DataFrame:
            return pointwise_scores(shard, fold.to_numpy(dtype=np.int64), values.to_numpy(dtype=float), model, lam)

        return rows.withColumn(_SCORES, score(shard, result.fold(), values))

    if len(models) == 1:
        scored = scored_by(models[0], samples)
    else:  # each part scores its shards' samples; samples of no fitted shard get no score (g = 0)
        parts = [scored_by(m, samples.where(shard.isin(list(m.shards)))) for m in models]
        fitted = [x for m in models for x in m.shards]
        rest = samples.where(shard.isNull() | ~shard.isin(fitted)).withColumn(_SCORES, F.lit(None).cast(_SCORES_SCHEMA))
        scored = functools.reduce(DataFrame.unionByName, [*parts, rest])
    # coalesce: the UDF's output is nullable to Spark, but never null.
    g, w = F.coalesce(F.col(f"{_SCORES}.g"), F.lit(0.0)), F.coalesce(F.col(f"{_SCORES}.w"), F.lit(1.0))
    return scored.withColumns({score_col: g, weight_col: w}).drop(_SCORES)
