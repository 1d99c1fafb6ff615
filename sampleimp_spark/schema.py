"""Column names, behaviors, reject reasons, table names and every table's contract.

Every other module takes column names as keyword parameters whose defaults come from here,
so a downstream team with other names can reuse the transforms without renaming.
:data:`CONTRACTS` holds each table's schema and partitioning; :mod:`sampleimp_spark.lake`
checks it on every write.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import types as T

# --- canonical event columns (DESIGN §2) -------------------------------------------------
USER_ID = "user_id"
ITEM_ID = "item_id"
CATEGORY_ID = "category_id"
BEHAVIOR = "behavior"
TS = "ts"
SESSION_ID = "session_id"
PRICE = "price"
BRAND = "brand"
RATING = "rating"
ITEM_TEXT = "item_text"
#: Not in DESIGN §2's list: the item's taxonomy path where the source has one (REES46
#: ``category_code``, Amazon's category list), segments joined by `` > ``. Shard pooling
#: uses its parent; text features use its tokens.
CATEGORY_PATH = "category_path"
CATEGORY_PATH_SEP = " > "
#: Category of items whose source gives none (Amazon items with an empty category list).
NO_CATEGORY = "(none)"
SOURCE = "source"
EVENT_DATE = "event_date"
#: The day of the dated run (``--date``) whose input brought the event, null for an undated
#: ingest: that run's rerun replaces exactly these rows (late arrivals of other days included).
INGEST_DAY = "ingest_day"

#: Behaviors ordered by purchase intent (index = intent level). ``remove_from_cart`` is kept
#: as an event where a source has it but is not an intent level.
BEHAVIORS: tuple[str, ...] = ("view", "click", "fav", "cart", "purchase")
REMOVE_FROM_CART = "remove_from_cart"
ALL_BEHAVIORS: tuple[str, ...] = (*BEHAVIORS, REMOVE_FROM_CART)
INTENT_LEVEL: dict[str, int] = {b: i for i, b in enumerate(BEHAVIORS)}
HOUR_BUCKETS = 6  # 4-hour buckets of local time: 0 = 00-04h, ..., 5 = 20-24h
#: What the behavior features count per entity (behaviors, hour buckets, days of week) and the
#: times whose maximum gives the recencies.
ENTITY_COUNT_COLUMNS: tuple[str, ...] = (
    *(f"n_{b}" for b in ALL_BEHAVIORS),
    *(f"_hour_{h}" for h in range(HOUR_BUCKETS)),
    *(f"_dow_{d}" for d in range(1, 8)),
)
ENTITY_LAST_COLUMNS: tuple[str, ...] = ("_last_any", *(f"_last_{b}" for b in ALL_BEHAVIORS))

EVENT_SCHEMA = T.StructType(
    [
        T.StructField(USER_ID, T.StringType(), False),
        T.StructField(ITEM_ID, T.StringType(), False),
        T.StructField(CATEGORY_ID, T.StringType(), False),
        T.StructField(BEHAVIOR, T.StringType(), False),
        T.StructField(TS, T.TimestampType(), False),
        T.StructField(SESSION_ID, T.StringType(), True),
        T.StructField(PRICE, T.DoubleType(), True),
        T.StructField(BRAND, T.StringType(), True),
        T.StructField(RATING, T.DoubleType(), True),
        T.StructField(ITEM_TEXT, T.StringType(), True),
        T.StructField(CATEGORY_PATH, T.StringType(), True),
        T.StructField(SOURCE, T.StringType(), False),
        T.StructField(EVENT_DATE, T.DateType(), False),
        T.StructField(INGEST_DAY, T.DateType(), True),
    ]
)
EVENT_COLUMNS: tuple[str, ...] = tuple(f.name for f in EVENT_SCHEMA.fields)

# --- columns every source adapter adds next to the canonical ones --------------------------
RAW = "_raw"  # the input record exactly as read (a CSV line, a JSON line, a Parquet row as JSON)
SOURCE_FILE = "_source_file"
MALFORMED = "_malformed"  # true when the record could not be split into the expected fields
BEHAVIOR_RAW = "_behavior_raw"  # the behavior as the source spells it, for the reject detail
TS_RAW = "_ts_raw"  # the timestamp as the source spells it, for the reject detail
BAD_VALUE = "_bad_value"  # name of an optional field that is present but unparsable, else null
INVALID_UTF8 = "_invalid_utf8"  # true when the record's bytes are not valid UTF-8 (``_raw`` is then repaired)
ADAPTER_COLUMNS: tuple[str, ...] = (RAW, SOURCE_FILE, MALFORMED, BEHAVIOR_RAW, TS_RAW, BAD_VALUE, INVALID_UTF8)

# --- rejects (bronze.rejects) --------------------------------------------------------------
REASON = "reason"
DETAIL = "detail"
RUN_ID = "run_id"
# silver.window_status
DAY = "day"
FIRST_DAY = "first_day"
ENTITY = "entity"
SESSION_KEY = "session"
CONFIG_HASH = "config_hash"
STAGES = "stages"
STATUS = "status"
UPDATED_AT = "updated_at"

REJECT_INVALID_UTF8 = "invalid_utf8"  # bytes that are not UTF-8 (raw keeps them as U+FFFD)
REJECT_MALFORMED = "malformed"  # unparsable line or wrong field count (also empty lines)
REJECT_NULL_ID = "null_id"  # user, item or category id missing
REJECT_UNKNOWN_BEHAVIOR = "unknown_behavior"
REJECT_BAD_TIMESTAMP = "bad_timestamp"  # present but not parsable
REJECT_TS_OUT_OF_RANGE = "ts_out_of_range"
REJECT_NEGATIVE_PRICE = "negative_price"
REJECT_BAD_VALUE = "bad_value"  # an optional field (price, rating) present but unparsable
REJECT_REASONS: tuple[str, ...] = (
    REJECT_INVALID_UTF8,
    REJECT_MALFORMED,
    REJECT_NULL_ID,
    REJECT_UNKNOWN_BEHAVIOR,
    REJECT_BAD_TIMESTAMP,
    REJECT_TS_OUT_OF_RANGE,
    REJECT_NEGATIVE_PRICE,
    REJECT_BAD_VALUE,
)

REJECT_SCHEMA = T.StructType(
    [
        T.StructField(SOURCE, T.StringType(), False),
        T.StructField("source_file", T.StringType(), False),
        T.StructField("raw", T.StringType(), True),
        T.StructField(REASON, T.StringType(), False),
        T.StructField(DETAIL, T.StringType(), True),
        T.StructField(RUN_ID, T.StringType(), False),
    ]
)

# --- samples, labels, shards and weights (silver / gold) -----------------------------------
SHARD = "shard"  # the category shard a sample belongs to (its category, or a pool of small ones)
WINDOW_ID = "window_id"  # identifies the (t0, t1, t2) windows a sample was built for
LABEL_PURCHASE = "label_purchase"  # 1 when the pair is purchased in the label window, else 0
LABEL_INTENT = "label_intent"  # highest behavior reached in the label window, or "none"
INTENT_NONE = "none"
IS_TARGET = "is_target"  # the sample belongs to the density ratio's target population
ALL_SHARDS = "_all"  # the shard value of overall rows in class frequencies
OTHER_SHARD = "_other"  # the pool of small categories without a usable parent
W_CLASS = "w_class"
W_DR = "w_dr"
W_SHARD = "w_shard"  # the density ratio's shard marginal p_target(shard) / p_source(shard)
W_IG = "w_ig"
W_RESAMPLE = "w_resample"
W_TIME = "w_time"
WEIGHT = "weight"  # the final combined weight, mean w_shard^b per shard (1 without the density ratio)
IG_SCORE = "ig_score"  # the sample's pointwise information-gain score g
RAW_WEIGHT = "w_raw"  # the product of the components before clipping and normalization
CLIPPED = "w_clipped"  # true where the per-(shard, class) clip lowered the weight
SHARD_BUCKET = "shard_bucket"  # pmod(xxhash64(shard), buckets): a partition column of gold
SHARD_RULE = "rule"  # silver.shard_map: own, parent or other
FEATURE = "feature"  # gold.feature_importance: the feature's name

#: Feature columns of samples start with one of these entity prefixes.
FEATURE_PREFIXES: tuple[str, ...] = ("user", "item", "cat", "pair")

# --- training and evaluation -----------------------------------------------------------------
RELEVANCE = "relevance"  # graded ground truth: the highest intent level reached (view 1 .. purchase 5)
RANK = "rank"  # 1 = best recommendation
SCORE = "score"  # larger = better recommendation
PROBABILITY = "probability"  # P(label = 1): a double, or Spark ML's probability vector
POSITION = "position"  # 1-based position in a user's top-k list
ALS_RANK = "als_rank"  # a candidate's rank in its user's ALS list (input of the re-ranker)

# --- item text ------------------------------------------------------------------------------
N_TOKENS = "n_tokens"
TFIDF = "tfidf"  # Spark ML SparseVector, in-session only (a UDT cannot be stored for delta-rs)
TFIDF_INDICES = "tfidf_indices"
TFIDF_VALUES = "tfidf_values"
TFIDF_SIZE = "tfidf_size"
EMBEDDING = "embedding"  # array<float>, the model's unit-length sentence embedding
EMB_PREFIX = "emb_"  # emb_0 .. emb_{k-1}: the projected embedding in silver.item_embeddings
ITEM_EMB_PREFIX = "item_emb_"  # the same, as sample features

#: ``silver.class_frequencies``: per shard (and ``_all``), counts and shares of each class of
#: ``kind`` = ``behavior`` (events of the feature window), ``purchase`` (label 0/1, over
#: samples) and ``intent`` (label_intent, over samples). Shares sum to 1 per (shard, kind).
FREQ_KIND = "kind"
FREQ_CLASS = "class"
FREQ_COUNT = "count"
FREQ_SHARE = "share"
CLASS_FREQUENCIES_SCHEMA = T.StructType(
    [
        T.StructField(WINDOW_ID, T.StringType(), False),
        T.StructField(SOURCE, T.StringType(), False),
        T.StructField(SHARD, T.StringType(), False),
        T.StructField(FREQ_KIND, T.StringType(), False),
        T.StructField(FREQ_CLASS, T.StringType(), False),
        T.StructField(FREQ_COUNT, T.LongType(), False),
        T.StructField(FREQ_SHARE, T.DoubleType(), False),
    ]
)

# --- tables: logical name -> folder under the lakehouse root -------------------------------
BRONZE_EVENTS = "bronze.events"
BRONZE_REJECTS = "bronze.rejects"
SILVER_SAMPLES = "silver.samples"
SILVER_SHARD_MAP = "silver.shard_map"
SILVER_CLASS_FREQUENCIES = "silver.class_frequencies"
SILVER_ITEM_TEXT = "silver.item_text"
SILVER_ITEM_EMBEDDINGS = "silver.item_embeddings"
#: Days a dated run completed, per source and config hash (``--date``, ``sampleimp backfill``).
SILVER_WINDOW_STATUS = "silver.window_status"
#: Per-day partial aggregates of the behavior features (``features.daily``), their session
#: pieces that may cross midnight, the entities those pieces touch, and which days are built.
SILVER_DAILY_ENTITIES = "silver.daily_entities"
SILVER_DAILY_SESSIONS = "silver.daily_sessions"
SILVER_DAILY_SESSION_ENTITIES = "silver.daily_session_entities"
SILVER_DAILY_STATUS = "silver.daily_status"
GOLD_TRAINING_SAMPLES = "gold.training_samples"
GOLD_FEATURE_IMPORTANCE = "gold.feature_importance"
GOLD_WEIGHT_DIAGNOSTICS = "gold.weight_diagnostics"
GOLD_METRICS = "gold.metrics"
GOLD_EXPERIMENT_RESULTS = "gold.experiment_results"
GOLD_WEIGHT_SELECTION = "gold.weight_selection"


def is_feature_column(name: str) -> bool:
    """True for a sample feature column name (``user_*``, ``item_*``, ``cat_*``, ``pair_*``)."""
    return name.split("_", 1)[0] in FEATURE_PREFIXES and name not in (USER_ID, ITEM_ID)


# --- table contracts -------------------------------------------------------------------------


@dataclass(frozen=True)
class TableContract:
    """A table's columns and partitioning.

    Attributes:
        columns: the fixed columns with their types (nullability is enforced by Delta on
            tables created from the contract).
        partition_by: partition columns.
        extra_prefixes: the table also carries any number of double columns whose names start
            with one of these (sample features, embedding components); such a table is created
            by its first write.
    """

    columns: T.StructType
    partition_by: tuple[str, ...] = ()
    extra_prefixes: tuple[str, ...] = ()

    @property
    def features(self) -> bool:
        """True when the table carries columns beyond its fixed ones."""
        return bool(self.extra_prefixes)

    def allows_extra(self, name: str) -> bool:
        return any(name.startswith(p) for p in self.extra_prefixes)


def _fields(*spec: tuple[str, T.DataType, bool]) -> T.StructType:
    return T.StructType([T.StructField(n, t, nullable) for n, t, nullable in spec])


_STR, _DBL, _LNG, _INT, _BOOL = T.StringType(), T.DoubleType(), T.LongType(), T.IntegerType(), T.BooleanType()

#: Keys of every sample row, silver and gold.
SAMPLE_KEYS = _fields(
    (WINDOW_ID, _STR, False),
    (SOURCE, _STR, False),
    (USER_ID, _STR, False),
    (ITEM_ID, _STR, False),
    (CATEGORY_ID, _STR, False),
    (CATEGORY_PATH, _STR, True),
    (SHARD, _STR, False),
)
LABELS = _fields((LABEL_PURCHASE, _INT, False), (LABEL_INTENT, _STR, False))
#: Key columns of gold.training_samples, in order.
GOLD_KEY_COLUMNS: tuple[str, ...] = (*SAMPLE_KEYS.fieldNames(), SHARD_BUCKET)
GOLD_WEIGHTS = _fields(
    (IS_TARGET, _BOOL, True),
    (IG_SCORE, _DBL, True),
    (W_CLASS, _DBL, True),
    (W_DR, _DBL, True),
    (W_SHARD, _DBL, True),
    (W_IG, _DBL, True),
    (W_TIME, _DBL, True),
    (W_RESAMPLE, _DBL, True),
    (RAW_WEIGHT, _DBL, True),
    (CLIPPED, _BOOL, True),
    (WEIGHT, _DBL, True),
)
#: Weight columns of gold.training_samples, in order (after keys, labels and features).
GOLD_WEIGHT_COLUMNS: tuple[str, ...] = tuple(GOLD_WEIGHTS.fieldNames())

_RUN_KEYS = (
    (RUN_ID, _STR, False),
    (WINDOW_ID, _STR, False),
    (SOURCE, _STR, False),
    ("training_version", _LNG, False),
)
#: gold.metrics: point values per evaluation origin (a window id), seed, arm, metric.
METRICS_SCHEMA = _fields(
    *_RUN_KEYS,
    ("origin", _STR, False),
    ("model", _STR, False),
    ("variant", _STR, False),
    ("seed", _INT, True),
    ("segment", _STR, True),
    ("metric", _STR, False),
    ("estimator", _STR, False),
    ("value", _DBL, True),
    ("n_users", _LNG, True),
)
#: gold.experiment_results: values pooled over origins and seeds with bootstrap intervals, and
#: paired comparisons with the unweighted variant and with the history baseline.
EXPERIMENT_RESULTS_SCHEMA = _fields(
    *_RUN_KEYS,
    ("model", _STR, False),
    ("variant", _STR, False),
    ("metric", _STR, False),
    ("estimator", _STR, False),
    ("segment", _STR, True),
    ("value", _DBL, True),
    ("ci_low", _DBL, True),
    ("ci_high", _DBL, True),
    ("n_users", _LNG, True),
    ("n_boot", _INT, True),
    ("delta", _DBL, True),
    ("rel_delta", _DBL, True),
    ("delta_ci_low", _DBL, True),
    ("delta_ci_high", _DBL, True),
    ("p_value", _DBL, True),
    ("p_holm", _DBL, True),
    ("mde", _DBL, True),
    ("rel_mde", _DBL, True),
    ("vs_history", _DBL, True),
    ("vs_history_ci_low", _DBL, True),
    ("vs_history_ci_high", _DBL, True),
)

#: ``gold.weight_selection``: every weighting candidate's validation evidence, and the one shipped.
WEIGHT_SELECTION_SCHEMA = _fields(
    *_RUN_KEYS,
    ("family", _STR, False),
    ("variant", _STR, False),
    ("metric", _STR, False),
    ("value", _DBL, True),
    ("delta", _DBL, True),
    ("delta_ci_low", _DBL, True),
    ("delta_ci_high", _DBL, True),
    ("p_value", _DBL, True),
    ("mde", _DBL, True),
    ("n_users", _LNG, True),
    ("n_boot", _INT, True),
    ("chosen", _BOOL, False),
    ("reason", _STR, True),
)

_FEATURE_COLUMN_PREFIXES = tuple(f"{p}_" for p in FEATURE_PREFIXES)
CONTRACTS: dict[str, TableContract] = {}


def table_folder(name: str) -> str:
    """Map a logical table name (``layer.table``) to its folder under the lakehouse root."""
    layer, _, table = name.partition(".")
    if not layer or not table or "/" in name:
        raise ValueError(f"table name must look like 'layer.table', got {name!r}")
    return f"{layer}/{table}"


CONTRACTS.update(
    {
        BRONZE_EVENTS: TableContract(EVENT_SCHEMA, partition_by=(EVENT_DATE,)),
        BRONZE_REJECTS: TableContract(REJECT_SCHEMA),
        SILVER_SAMPLES: TableContract(
            T.StructType(SAMPLE_KEYS.fields + LABELS.fields),
            partition_by=(WINDOW_ID,),
            extra_prefixes=_FEATURE_COLUMN_PREFIXES,
        ),
        SILVER_SHARD_MAP: TableContract(
            _fields(
                (WINDOW_ID, _STR, False),
                (SOURCE, _STR, False),
                (CATEGORY_ID, _STR, False),
                (SHARD, _STR, False),
                (SHARD_RULE, _STR, False),
                ("samples", _LNG, False),
                ("shard_samples", _LNG, False),
            )
        ),
        SILVER_CLASS_FREQUENCIES: TableContract(CLASS_FREQUENCIES_SCHEMA),
        SILVER_ITEM_TEXT: TableContract(
            _fields(
                (SOURCE, _STR, True),
                (ITEM_ID, _STR, True),
                (N_TOKENS, _INT, True),
                (TFIDF_INDICES, T.ArrayType(_INT, True), True),
                (TFIDF_VALUES, T.ArrayType(_DBL, True), True),
                (TFIDF_SIZE, _INT, True),
                (WINDOW_ID, _STR, True),
            )
        ),
        SILVER_ITEM_EMBEDDINGS: TableContract(
            _fields(
                (SOURCE, _STR, True),
                (ITEM_ID, _STR, True),
                (EMBEDDING, T.ArrayType(T.FloatType(), True), True),
                (WINDOW_ID, _STR, True),
            ),
            extra_prefixes=(EMB_PREFIX,),
        ),
        GOLD_TRAINING_SAMPLES: TableContract(
            T.StructType(
                [*SAMPLE_KEYS.fields, T.StructField(SHARD_BUCKET, _INT, False), *LABELS.fields, *GOLD_WEIGHTS.fields]
            ),
            partition_by=(WINDOW_ID, SHARD_BUCKET),
            extra_prefixes=_FEATURE_COLUMN_PREFIXES,
        ),
        GOLD_FEATURE_IMPORTANCE: TableContract(
            _fields(
                (WINDOW_ID, _STR, False),
                (SOURCE, _STR, False),
                (SHARD, _STR, False),
                (FEATURE, _STR, False),
                ("ig", _DBL, False),
                ("p_value", _DBL, True),
                ("rank", _INT, False),
                ("n", _LNG, False),
            )
        ),
        GOLD_WEIGHT_DIAGNOSTICS: TableContract(
            _fields(
                (WINDOW_ID, _STR, False),
                (SOURCE, _STR, False),
                (SHARD, _STR, False),
                ("rows", _LNG, False),
                ("ess", _DBL, True),
                ("ess_ratio", _DBL, True),
                ("w_min", _DBL, True),
                ("w_median", _DBL, True),
                ("w_max", _DBL, True),
                ("clipped_fraction", _DBL, True),
                ("dr_method", _STR, True),
                ("dr_n_source", _LNG, True),
                ("dr_n_target", _LNG, True),
                ("dr_fit_quality", _DBL, True),
                ("dr_quality_metric", _STR, True),
                ("dr_fallback_reason", _STR, True),
                (SHARD_BUCKET, _INT, True),
                ("ig_features", _INT, True),  # features that passed the IG null test
                ("ig_reason", _STR, True),  # why w_ig is 1 throughout the shard (null: it is not)
                ("class_reason", _STR, True),  # why w_class is 1 throughout the shard
            )
        ),
        GOLD_METRICS: TableContract(METRICS_SCHEMA),
        GOLD_EXPERIMENT_RESULTS: TableContract(EXPERIMENT_RESULTS_SCHEMA),
        GOLD_WEIGHT_SELECTION: TableContract(WEIGHT_SELECTION_SCHEMA),
        SILVER_WINDOW_STATUS: TableContract(
            _fields(
                (SOURCE, _STR, False),
                (DAY, T.DateType(), False),
                (CONFIG_HASH, _STR, False),
                (STAGES, _STR, False),
                (STATUS, _STR, False),
                (RUN_ID, _STR, False),
                (UPDATED_AT, T.TimestampType(), False),
                (FIRST_DAY, T.DateType(), False),
            )
        ),
        SILVER_DAILY_ENTITIES: TableContract(
            _fields(
                (SOURCE, _STR, False),
                (DAY, T.DateType(), False),
                (ENTITY, _STR, False),
                (USER_ID, _STR, True),
                (ITEM_ID, _STR, True),
                (CATEGORY_ID, _STR, True),
                (CATEGORY_PATH, _STR, True),
                ("n_events", _LNG, False),
                *((c, _LNG, True) for c in ENTITY_COUNT_COLUMNS),
                ("price_sum", T.DecimalType(38, 9), True),
                ("price_n", _LNG, True),
                ("sessions", _LNG, True),
                ("session_micros", _LNG, True),
                *((c, T.TimestampType(), True) for c in ENTITY_LAST_COLUMNS),
            ),
            partition_by=(DAY, ENTITY),  # a window reads each entity's rows of its days alone
        ),
        SILVER_DAILY_SESSIONS: TableContract(
            _fields(
                (SOURCE, _STR, False),
                (DAY, T.DateType(), False),
                (SESSION_KEY, _STR, False),
                (USER_ID, _STR, True),
                ("_order", T.TimestampType(), True),
                ("_first_ts", T.TimestampType(), True),
                ("_last_ts", T.TimestampType(), True),
                ("_continues", _BOOL, True),
            ),
            partition_by=(DAY,),
        ),
        SILVER_DAILY_SESSION_ENTITIES: TableContract(
            _fields(
                (SOURCE, _STR, False),
                (DAY, T.DateType(), False),
                (SESSION_KEY, _STR, False),
                (ENTITY, _STR, False),
                (USER_ID, _STR, True),
                (ITEM_ID, _STR, True),
                (CATEGORY_ID, _STR, True),
            ),
            partition_by=(DAY,),
        ),
        SILVER_DAILY_STATUS: TableContract(
            _fields(
                (SOURCE, _STR, False),
                (DAY, T.DateType(), False),
                (CONFIG_HASH, _STR, False),
                (STATUS, _STR, False),
                (RUN_ID, _STR, False),
                (UPDATED_AT, T.TimestampType(), False),
            )
        ),
    }
)
