"""Canonical column names, schemas, behaviors, reject reasons and table names.

Every other module takes column names as keyword parameters whose defaults come from here,
so a downstream team with other names can reuse the transforms without renaming.
"""

from __future__ import annotations

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

#: Behaviors ordered by purchase intent (index = intent level). ``remove_from_cart`` is kept
#: as an event where a source has it but is not an intent level.
BEHAVIORS: tuple[str, ...] = ("view", "click", "fav", "cart", "purchase")
REMOVE_FROM_CART = "remove_from_cart"
ALL_BEHAVIORS: tuple[str, ...] = (*BEHAVIORS, REMOVE_FROM_CART)
INTENT_LEVEL: dict[str, int] = {b: i for i, b in enumerate(BEHAVIORS)}

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
ADAPTER_COLUMNS: tuple[str, ...] = (RAW, SOURCE_FILE, MALFORMED, BEHAVIOR_RAW, TS_RAW, BAD_VALUE)

# --- rejects (bronze.rejects) --------------------------------------------------------------
REASON = "reason"
DETAIL = "detail"
RUN_ID = "run_id"

REJECT_MALFORMED = "malformed"  # unparsable line or wrong field count (also empty lines)
REJECT_NULL_ID = "null_id"  # user, item or category id missing
REJECT_UNKNOWN_BEHAVIOR = "unknown_behavior"
REJECT_BAD_TIMESTAMP = "bad_timestamp"  # present but not parsable
REJECT_TS_OUT_OF_RANGE = "ts_out_of_range"
REJECT_NEGATIVE_PRICE = "negative_price"
REJECT_BAD_VALUE = "bad_value"  # an optional field (price, rating) present but unparsable
REJECT_REASONS: tuple[str, ...] = (
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
W_IG = "w_ig"
W_RESAMPLE = "w_resample"
WEIGHT = "weight"  # the final combined weight, mean 1 per shard

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
GOLD_TRAINING_SAMPLES = "gold.training_samples"
GOLD_FEATURE_IMPORTANCE = "gold.feature_importance"
GOLD_WEIGHT_DIAGNOSTICS = "gold.weight_diagnostics"
GOLD_METRICS = "gold.metrics"
GOLD_EXPERIMENT_RESULTS = "gold.experiment_results"


def table_folder(name: str) -> str:
    """Map a logical table name (``layer.table``) to its folder under the lakehouse root."""
    layer, _, table = name.partition(".")
    if not layer or not table or "/" in name:
        raise ValueError(f"table name must look like 'layer.table', got {name!r}")
    return f"{layer}/{table}"
