"""Names of what the evaluation measures: metrics, estimators, item segments and arms.

They are the values of the ``metric``, ``estimator``, ``segment`` and ``model`` columns of
``gold.metrics`` and ``gold.experiment_results``.
"""

from __future__ import annotations

# --- ranking metrics at k (per user, then averaged) --------------------------------------------
PRECISION_AT_K = "precision_at_k"
RECALL_AT_K = "recall_at_k"
NDCG_AT_K = "ndcg_at_k"
MAP_AT_K = "map_at_k"
HIT_RATE_AT_K = "hit_rate_at_k"
RANKING_METRICS: tuple[str, ...] = (PRECISION_AT_K, RECALL_AT_K, NDCG_AT_K, MAP_AT_K, HIT_RATE_AT_K)
#: Per-user columns of the ranking metrics besides the metrics.
N_RELEVANT = "n_relevant"
N_RECOMMENDED = "n_recommended"
HITS = "hits"

# --- classification metrics (per sample, over users) ------------------------------------------
ROC_AUC = "roc_auc"
AVERAGE_PRECISION = "average_precision"
LOG_LOSS = "log_loss"  # after prior correction of weighted fits (King & Zeng 2001)
PRECISION_AT_TOP = "precision_at_top"  # among the top share of scores (a fixed operating point)
RECALL_AT_TOP = "recall_at_top"
PRECISION_AT_THRESHOLD = "precision_at_threshold"  # at the F1-best threshold chosen on validation
RECALL_AT_THRESHOLD = "recall_at_threshold"
F1_AT_THRESHOLD = "f1_at_threshold"
CLASSIFICATION_METRICS: tuple[str, ...] = (
    ROC_AUC,
    AVERAGE_PRECISION,
    LOG_LOSS,
    PRECISION_AT_TOP,
    RECALL_AT_TOP,
    PRECISION_AT_THRESHOLD,
    RECALL_AT_THRESHOLD,
    F1_AT_THRESHOLD,
)
#: Metrics where lower is better.
LOWER_IS_BETTER = frozenset({LOG_LOSS})

# --- estimators: how per-user values are averaged ----------------------------------------------
UNWEIGHTED = "unweighted"  # the mean over the evaluated users
SNIPS = "snips"  # self-normalised importance weighting by each user's density-ratio weight

# --- item segments of ranking metrics -----------------------------------------------------------
ALL_ITEMS = "all"
REPEAT_ITEMS = "repeat"  # ground-truth items the user had in the feature window
NEW_ITEMS = "new"  # ground-truth items the user had not
SEGMENTS: tuple[str, ...] = (ALL_ITEMS, REPEAT_ITEMS, NEW_ITEMS)

# --- arms ------------------------------------------------------------------------------------------
ALS = "als"
GBT = "gbt"
ALS_GBT = "als+gbt"
HISTORY = "history"  # the user's own feature-window items, by time-decayed strength
POPULARITY = "popularity"  # the most popular items of the feature window
CATEGORY_POPULARITY = "category_popularity"  # popular items of the user's categories
BASELINES: tuple[str, ...] = (HISTORY, POPULARITY, CATEGORY_POPULARITY)
#: The variant name of baselines (they have no weights).
NO_VARIANT = "-"
#: The reference variant every weighted variant is compared with.
REFERENCE_VARIANT = "unweighted"
#: The variant whose ALS evidence decays per event and whose GBT weight is ``w_time``.
TIME_VARIANT = "time"
