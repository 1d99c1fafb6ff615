"""Single-node references for ``run_all.py``: the same work as the project, done another way.

Each reference reads the project's Delta tables as plain Parquet files (the file list of the
current version from delta-rs; no Spark), computes, and writes its result to Parquet, so its
time covers reading, computing and writing like the project's stages do.

* **Behavior features** (:func:`duckdb_features`, :func:`polars_features`): the samples of one
  window (every (user, item) pair with a feature-window event) with their labels and, for
  ``user_``, ``item_``, ``cat_`` and ``pair_``, every behavior feature of
  ``sampleimp_spark/features/behavior.py`` except the price ones (the generator has no prices):
  counts per behavior, the four conversion ratios, recency per behavior, active days, 4-hour
  and day-of-week shares in local time, gap sessions and their mean length. That is
  :data:`FEATURE_SUBSET`: 132 of the project's 138 features. Not done: the shard map, class
  frequencies and the price features.
  :func:`pandas_features` computes the same in plain pandas (one core).
* **IG contingency counts** (:func:`duckdb_ig_counts`, :func:`polars_ig_counts`): given the bin
  edges the project produced (per shard and feature), rows per (shard, feature, bin, label)
  over the samples stacked one row per feature, with the project's bin rule (number of edges
  strictly below the value; NaN/null in bin -1).
* **The whole weighting, the plain way** (:func:`plain_weights`): pandas + NumPy +
  scikit-learn, what a team would write without this project: per shard, balanced class
  weights, quantile-binned information gain with Laplace smoothing and the per-bin KL score,
  a logistic density ratio (today vs all) on a bounded random sample with 5-fold AUC, the
  product clipped at the 99th percentile and normalized to mean 1.
* **ALS** (:func:`implicit_als`): the ``implicit`` library's ALS on the same user-item
  matrix as Spark's ALS, with the same rank, iterations, regularization and alpha.

Equality helpers (:func:`compare_frames`, :func:`compare_counts`) check the results against
the project's at the smallest size: counts exactly, doubles to 1e-9.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

BEHAVIORS = ("view", "click", "fav", "cart", "purchase")  # intent order, as sampleimp_spark.schema
ALL_BEHAVIORS = (*BEHAVIORS, "remove_from_cart")
RATIOS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "cart_per_view": (("cart",), ("view", "click")),
    "fav_per_view": (("fav",), ("view", "click")),
    "purchase_per_view": (("purchase",), ("view", "click")),
    "purchase_per_cart": (("purchase",), ("cart",)),
}
HOUR_BUCKETS = 6
PREFIXES = {"user": ("user_id",), "item": ("item_id",), "cat": ("category_id",), "pair": ("user_id", "item_id")}
NAN_BIN = -1


def entity_feature_names(prefix: str) -> list[str]:
    """The behavior features of one entity, named like the project's columns."""
    names = ["n_events", *(f"n_{b}" for b in ALL_BEHAVIORS), *RATIOS, "recency_any"]
    names += [f"recency_{b}" for b in BEHAVIORS]
    names += ["active_days", *(f"hour_{h}" for h in range(HOUR_BUCKETS)), *(f"dow_{d}" for d in range(1, 8))]
    names += ["sessions", "session_minutes"]
    return [f"{prefix}_{n}" for n in names]


#: The features both references compute (the project's features minus the price ones).
FEATURE_SUBSET: tuple[str, ...] = tuple(n for p in PREFIXES for n in entity_feature_names(p))
KEYS = ("user_id", "item_id", "category_id")
LABELS = ("label_purchase", "label_intent")


@dataclass(frozen=True)
class Window:
    """Feature window ``[t0, t1)``, label window ``[t1, t2)`` (aware datetimes) and the local zone."""

    t0: datetime
    t1: datetime
    t2: datetime
    tz: str
    source: str = "generator"
    session_gap_minutes: float = 30.0

    @property
    def us(self) -> tuple[int, int, int]:
        """The bounds in microseconds since the epoch."""
        return tuple(round(t.timestamp() * 1_000_000) for t in (self.t0, self.t1, self.t2))  # type: ignore[return-value]

    @property
    def feature_days(self) -> float:
        return (self.t1 - self.t0).total_seconds() / 86400.0


def delta_files(table_path: str | Path) -> list[str]:
    """Local paths of the Parquet files of a Delta table's current version (delta-rs)."""
    from deltalake import DeltaTable

    return [u.removeprefix("file://") for u in DeltaTable(str(table_path)).file_uris()]


# --- behavior features: DuckDB ---------------------------------------------------------------


def _sql_list(files: Sequence[str]) -> str:
    return "[" + ", ".join("'" + f.replace("'", "''") + "'" for f in files) + "]"


def _duck_entity(prefix: str, keys: Sequence[str], w: Window) -> str:
    """SQL of one entity's features over the prepared events table ``fe``."""
    _, t1, _ = w.us
    k = ", ".join(keys)
    aggs = ["count(*) AS n_events", "max(us) AS last_any", "count(DISTINCT d) AS active_days"]
    for b in ALL_BEHAVIORS:
        aggs.append(f"count_if(behavior = '{b}') AS n_{b}")
        aggs.append(f"max(us) FILTER (WHERE behavior = '{b}') AS last_{b}")
    aggs += [f"count_if(hb = {h}) AS h{h}" for h in range(HOUR_BUCKETS)]
    aggs += [f"count_if(dow = {d}) AS d{d}" for d in range(1, 8)]

    def ratio(num: str, den: str) -> str:
        return f"CASE WHEN ({den}) > 0 THEN CAST({num} AS DOUBLE) / CAST({den} AS DOUBLE) ELSE 0.0 END"

    def recency(last: str) -> str:
        return f"coalesce(CAST({t1} - {last} AS DOUBLE) / CAST(86400000000 AS DOUBLE), {w.feature_days!r})"

    out = [f"CAST(n_events AS DOUBLE) AS {prefix}_n_events"]
    out += [f"CAST(n_{b} AS DOUBLE) AS {prefix}_n_{b}" for b in ALL_BEHAVIORS]
    for name, (nums, dens) in RATIOS.items():
        out.append(
            f"{ratio(' + '.join(f'n_{x}' for x in nums), ' + '.join(f'n_{x}' for x in dens))} AS {prefix}_{name}"
        )
    out.append(f"{recency('last_any')} AS {prefix}_recency_any")
    out += [f"{recency(f'last_{b}')} AS {prefix}_recency_{b}" for b in BEHAVIORS]
    out.append(f"CAST(active_days AS DOUBLE) AS {prefix}_active_days")
    out += [f"{ratio(f'h{h}', 'n_events')} AS {prefix}_hour_{h}" for h in range(HOUR_BUCKETS)]
    out += [f"{ratio(f'd{d}', 'n_events')} AS {prefix}_dow_{d}" for d in range(1, 8)]
    return f"""
    WITH agg AS (SELECT {k}, {", ".join(aggs)} FROM fe GROUP BY {k}),
    touched AS (SELECT DISTINCT {k}, sess FROM fe),
    sf AS (
        SELECT {", ".join(f"t.{c}" for c in keys)}, CAST(count(*) AS DOUBLE) AS {prefix}_sessions,
               avg(l.minutes) AS {prefix}_session_minutes
        FROM touched t JOIN sess_len l USING (sess) GROUP BY {", ".join(f"t.{c}" for c in keys)}
    )
    SELECT {k}, {", ".join(out)}, coalesce({prefix}_sessions, 0.0) AS {prefix}_sessions,
           coalesce({prefix}_session_minutes, 0.0) AS {prefix}_session_minutes
    FROM agg LEFT JOIN sf USING ({k})
    """


def _duckdb_connect() -> Any:
    """A DuckDB connection whose memory limit is 60 % of the memory available now (DuckDB's
    default, 80 % of RAM, ignores the Spark driver beside it; over the limit DuckDB spills)."""
    import duckdb

    meminfo = Path("/proc/meminfo").read_text().splitlines()
    avail_kib = next(int(line.split()[1]) for line in meminfo if line.startswith("MemAvailable"))
    con = duckdb.connect()
    con.execute(f"SET memory_limit = '{int(avail_kib * 0.6 / 1024)}MB'")
    return con


def duckdb_features(events_files: Sequence[str], w: Window, out_path: str | Path, *, threads: int | None = None) -> int:
    """The feature subset and labels of every sample, computed by DuckDB and written to Parquet.

    Returns:
        The number of samples written.
    """

    t0, t1, t2 = w.us
    con = _duckdb_connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        if threads:
            con.execute(f"SET threads = {int(threads)}")
        src = f"read_parquet({_sql_list(events_files)})"
        gap = w.session_gap_minutes * 60
        con.execute(f"""
        CREATE TEMP TABLE fe AS
        WITH e AS (
            SELECT user_id, item_id, category_id, behavior, epoch_us(ts) AS us,
                   timezone('{w.tz}', CAST(ts AS TIMESTAMPTZ)) AS lt
            FROM {src}
            WHERE source = '{w.source}' AND epoch_us(ts) >= {t0} AND epoch_us(ts) < {t1}
        ), g AS (
            SELECT *, us // 1000000 - lag(us // 1000000) OVER (PARTITION BY user_id ORDER BY us, item_id, behavior)
                   AS gap
            FROM e
        )
        SELECT user_id, item_id, category_id, behavior, us, CAST(lt AS DATE) AS d,
               CAST(floor(hour(lt) / {24 // HOUR_BUCKETS}) AS INTEGER) AS hb, dayofweek(lt) + 1 AS dow,
               user_id || '#' || CAST(sum(CASE WHEN gap IS NULL OR gap > {gap} THEN 1 ELSE 0 END) OVER (
                   PARTITION BY user_id ORDER BY us, item_id, behavior
                   ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS VARCHAR) AS sess
        FROM g
        """)
        con.execute(
            "CREATE TEMP TABLE sess_len AS SELECT sess, CAST(max(us) - min(us) AS DOUBLE) / 60000000.0 AS minutes "
            "FROM fe GROUP BY sess"
        )
        for prefix, keys in PREFIXES.items():
            con.execute(f"CREATE TEMP TABLE f_{prefix} AS {_duck_entity(prefix, keys, w)}")
        con.execute("""
        CREATE TEMP TABLE items AS
        SELECT item_id, category_id FROM (
            SELECT item_id, category_id,
                   row_number() OVER (PARTITION BY item_id ORDER BY n DESC, category_id DESC) AS r
            FROM (SELECT item_id, category_id, count(*) AS n FROM fe GROUP BY ALL)
        ) WHERE r = 1
        """)
        intents = "[" + ", ".join(f"'{b}'" for b in BEHAVIORS) + "]"
        behaviors = ", ".join(f"'{b}'" for b in BEHAVIORS)
        con.execute(f"""
        CREATE TEMP TABLE labels AS
        SELECT user_id, item_id, max(list_position({intents}, behavior)) AS lvl FROM {src}
        WHERE source = '{w.source}' AND epoch_us(ts) >= {t1} AND epoch_us(ts) < {t2} AND behavior IN ({behaviors})
        GROUP BY user_id, item_id
        """)
        feats = ", ".join(FEATURE_SUBSET)
        con.execute(f"""
        COPY (
            SELECT user_id, item_id, i.category_id,
                   CAST(coalesce(l.lvl = {len(BEHAVIORS)}, false) AS INTEGER) AS label_purchase,
                   coalesce(list_extract({intents}, l.lvl), 'none') AS label_intent, {feats}
            FROM f_pair JOIN items i USING (item_id) JOIN f_user USING (user_id) JOIN f_item USING (item_id)
                 JOIN f_cat ON f_cat.category_id = i.category_id LEFT JOIN labels l USING (user_id, item_id)
        ) TO '{out_path}' (FORMAT parquet)
        """)
        return int(con.execute(f"SELECT count(*) FROM read_parquet('{out_path}')").fetchone()[0])
    finally:
        con.close()


# --- behavior features: Polars ---------------------------------------------------------------


def polars_features(events_files: Sequence[str], w: Window, out_path: str | Path) -> int:
    """The same feature subset and labels as :func:`duckdb_features`, with Polars' lazy API."""
    import polars as pl

    t0, t1, t2 = w.us
    us = pl.col("ts").dt.epoch("us")
    ev = pl.scan_parquet(list(events_files)).filter(pl.col("source") == w.source).with_columns(us.alias("us"))
    local = pl.from_epoch("us", time_unit="us").dt.replace_time_zone("UTC").dt.convert_time_zone(w.tz)
    order = ["user_id", "us", "item_id", "behavior"]
    sec = pl.col("us") // 1_000_000
    gap = sec - sec.shift(1).over("user_id")
    new = (gap.is_null() | (gap > w.session_gap_minutes * 60)).cast(pl.Int64)
    fe = (
        ev.filter((pl.col("us") >= t0) & (pl.col("us") < t1))
        .select("user_id", "item_id", "category_id", "behavior", "us")
        .sort(order)
        .with_columns(
            local.dt.date().alias("d"),
            (local.dt.hour() // (24 // HOUR_BUCKETS)).cast(pl.Int32).alias("hb"),
            (local.dt.weekday() % 7 + 1).alias("dow"),  # 1 = Sunday .. 7 = Saturday, as Spark
            new.alias("_new"),
        )
        .with_columns(
            (pl.col("user_id") + "#" + pl.col("_new").cum_sum().over("user_id").cast(pl.String)).alias("sess")
        )
        .drop("_new")
        .collect()
        .lazy()
    )
    sess_len = fe.group_by("sess").agg(
        ((pl.col("us").max() - pl.col("us").min()).cast(pl.Float64) / 60_000_000.0).alias("minutes")
    )

    def ratio(num: pl.Expr, den: pl.Expr) -> pl.Expr:
        return pl.when(den > 0).then(num.cast(pl.Float64) / den.cast(pl.Float64)).otherwise(0.0)

    def entity(prefix: str, keys: Sequence[str]) -> pl.LazyFrame:
        b = pl.col("behavior")
        aggs = [pl.len().alias("n_events"), pl.col("us").max().alias("last_any"), pl.col("d").n_unique().alias("ad")]
        for name in ALL_BEHAVIORS:
            aggs.append((b == name).sum().alias(f"n_{name}"))
            aggs.append(pl.col("us").filter(b == name).max().alias(f"last_{name}"))
        aggs += [(pl.col("hb") == h).sum().alias(f"h{h}") for h in range(HOUR_BUCKETS)]
        aggs += [(pl.col("dow") == d).sum().alias(f"d{d}") for d in range(1, 8)]
        n = pl.col("n_events")

        def recency(last: str) -> pl.Expr:
            return ((t1 - pl.col(last)).cast(pl.Float64) / 86_400_000_000.0).fill_null(w.feature_days)

        out = [n.cast(pl.Float64).alias(f"{prefix}_n_events")]
        out += [pl.col(f"n_{x}").cast(pl.Float64).alias(f"{prefix}_n_{x}") for x in ALL_BEHAVIORS]
        for name, (nums, dens) in RATIOS.items():
            num = pl.sum_horizontal(*(pl.col(f"n_{x}") for x in nums))
            den = pl.sum_horizontal(*(pl.col(f"n_{x}") for x in dens))
            out.append(ratio(num, den).alias(f"{prefix}_{name}"))
        out.append(recency("last_any").alias(f"{prefix}_recency_any"))
        out += [recency(f"last_{x}").alias(f"{prefix}_recency_{x}") for x in BEHAVIORS]
        out.append(pl.col("ad").cast(pl.Float64).alias(f"{prefix}_active_days"))
        out += [ratio(pl.col(f"h{h}"), n).alias(f"{prefix}_hour_{h}") for h in range(HOUR_BUCKETS)]
        out += [ratio(pl.col(f"d{d}"), n).alias(f"{prefix}_dow_{d}") for d in range(1, 8)]
        agg = fe.group_by(*keys).agg(aggs).select(*keys, *out)
        sf = (
            fe.select(*keys, "sess")
            .unique()
            .join(sess_len, on="sess")
            .group_by(*keys)
            .agg(
                pl.len().cast(pl.Float64).alias(f"{prefix}_sessions"),
                pl.col("minutes").mean().alias(f"{prefix}_session_minutes"),
            )
        )
        return agg.join(sf, on=list(keys), how="left").with_columns(
            pl.col(f"{prefix}_sessions").fill_null(0.0), pl.col(f"{prefix}_session_minutes").fill_null(0.0)
        )

    items = (
        fe.group_by("item_id", "category_id")
        .agg(pl.len().alias("n"))
        .sort(["item_id", "n", "category_id"], descending=[False, True, True])
        .group_by("item_id", maintain_order=True)
        .first()
        .select("item_id", "category_id")
    )
    level = pl.col("behavior").replace_strict({b: i + 1 for i, b in enumerate(BEHAVIORS)}, return_dtype=pl.Int32)
    labels = (
        ev.filter((pl.col("us") >= t1) & (pl.col("us") < t2) & pl.col("behavior").is_in(list(BEHAVIORS)))
        .group_by("user_id", "item_id")
        .agg(level.max().alias("lvl"))
    )
    intent = pl.col("lvl").replace_strict({i + 1: b for i, b in enumerate(BEHAVIORS)}, default=None)
    samples = (
        entity("pair", PREFIXES["pair"])
        .join(items, on="item_id")
        .join(entity("user", PREFIXES["user"]), on="user_id")
        .join(entity("item", PREFIXES["item"]), on="item_id")
        .join(entity("cat", PREFIXES["cat"]), on="category_id")
        .join(labels, on=["user_id", "item_id"], how="left")
        .select(
            *KEYS,
            (pl.col("lvl") == len(BEHAVIORS)).fill_null(False).cast(pl.Int32).alias("label_purchase"),
            intent.fill_null("none").alias("label_intent"),
            *FEATURE_SUBSET,
        )
        .collect()
    )
    samples.write_parquet(str(out_path))
    return samples.height


# --- behavior features: pandas ---------------------------------------------------------------


def pandas_features(events_files: Sequence[str], w: Window, out_path: str | Path) -> int:
    """The same feature subset and labels as :func:`duckdb_features`, in plain pandas (one core):
    what the features take without an engine, for the issue's "≥ 2× faster than pandas"."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    t0, t1, t2 = w.us
    columns = ["source", "user_id", "item_id", "category_id", "behavior", "ts"]
    table = ds.dataset(list(events_files), format="parquet").to_table(columns=columns)
    table = table.filter(pc.equal(table["source"], w.source)).drop_columns(["source"])
    us = pc.cast(pc.cast(table["ts"], pa.timestamp("us", tz="UTC")), pa.int64())
    ev = table.drop_columns(["ts"]).append_column("us", us).to_pandas()
    fe = ev[(ev["us"] >= t0) & (ev["us"] < t1)].sort_values(["user_id", "us", "item_id", "behavior"])
    local = pd.to_datetime(fe["us"], unit="us", utc=True).dt.tz_convert(w.tz)
    sec = fe["us"] // 1_000_000
    gap = sec - sec.groupby(fe["user_id"]).shift(1)
    new = (gap.isna() | (gap > w.session_gap_minutes * 60)).astype("int64")
    fe = fe.assign(
        d=local.dt.date,
        hb=local.dt.hour // (24 // HOUR_BUCKETS),
        dow=(local.dt.dayofweek + 1) % 7 + 1,  # 1 = Sunday .. 7 = Saturday, as Spark
        sess=fe["user_id"] + "#" + new.groupby(fe["user_id"]).cumsum().astype(str),
    )
    for b in ALL_BEHAVIORS:
        hit = fe["behavior"] == b
        fe[f"n_{b}"] = hit.astype("int64")
        fe[f"last_{b}"] = fe["us"].where(hit)
    for h in range(HOUR_BUCKETS):
        fe[f"h{h}"] = (fe["hb"] == h).astype("int64")
    for d in range(1, 8):
        fe[f"d{d}"] = (fe["dow"] == d).astype("int64")
    g = fe.groupby("sess")["us"]
    sess_minutes = ((g.max() - g.min()) / 60_000_000.0).rename("minutes")

    def ratio(num: pd.Series, den: pd.Series) -> pd.Series:
        return (num / den.where(den > 0)).fillna(0.0).astype(float)

    def entity(prefix: str, keys: list[str]) -> pd.DataFrame:
        sums = [f"n_{b}" for b in ALL_BEHAVIORS] + [f"h{h}" for h in range(HOUR_BUCKETS)]
        sums += [f"d{d}" for d in range(1, 8)]
        aggs = {"n_events": ("us", "size"), "last_any": ("us", "max"), "ad": ("d", "nunique")}
        aggs |= {c: (c, "sum") for c in sums} | {f"last_{b}": (f"last_{b}", "max") for b in ALL_BEHAVIORS}
        a = fe.groupby(keys, sort=False).agg(**aggs)
        n = a["n_events"]
        out = {f"{prefix}_n_events": n.astype(float)}
        out |= {f"{prefix}_n_{b}": a[f"n_{b}"].astype(float) for b in ALL_BEHAVIORS}
        for name, (nums, dens) in RATIOS.items():
            out[f"{prefix}_{name}"] = ratio(sum(a[f"n_{x}"] for x in nums), sum(a[f"n_{x}"] for x in dens))
        for last, col in (("last_any", "recency_any"), *((f"last_{b}", f"recency_{b}") for b in BEHAVIORS)):
            out[f"{prefix}_{col}"] = ((t1 - a[last]) / 86_400_000_000.0).fillna(w.feature_days)
        out[f"{prefix}_active_days"] = a["ad"].astype(float)
        out |= {f"{prefix}_hour_{h}": ratio(a[f"h{h}"], n) for h in range(HOUR_BUCKETS)}
        out |= {f"{prefix}_dow_{d}": ratio(a[f"d{d}"], n) for d in range(1, 8)}
        sf = (
            fe[[*keys, "sess"]]
            .drop_duplicates()
            .join(sess_minutes, on="sess")
            .groupby(keys, sort=False)["minutes"]
            .agg(["size", "mean"])
        )
        res = pd.DataFrame(out).join(sf)
        res[f"{prefix}_sessions"] = res.pop("size").fillna(0).astype(float)
        res[f"{prefix}_session_minutes"] = res.pop("mean").fillna(0.0)
        return res.reset_index()

    counts = fe.groupby(["item_id", "category_id"]).size().rename("n").reset_index()
    items = counts.sort_values(["item_id", "n", "category_id"], ascending=[True, False, False]).drop_duplicates(
        "item_id"
    )[["item_id", "category_id"]]
    lab = ev[(ev["us"] >= t1) & (ev["us"] < t2) & ev["behavior"].isin(BEHAVIORS)]
    level = lab["behavior"].map({b: i + 1 for i, b in enumerate(BEHAVIORS)})
    labels = level.groupby([lab["user_id"], lab["item_id"]]).max().rename("lvl").reset_index()
    samples = (
        entity("pair", list(PREFIXES["pair"]))
        .merge(items, on="item_id")
        .merge(entity("user", list(PREFIXES["user"])), on="user_id")
        .merge(entity("item", list(PREFIXES["item"])), on="item_id")
        .merge(entity("cat", list(PREFIXES["cat"])), on="category_id")
        .merge(labels, on=["user_id", "item_id"], how="left")
    )
    samples["label_purchase"] = (samples["lvl"] == len(BEHAVIORS)).astype("int32")
    samples["label_intent"] = samples["lvl"].map({i + 1: b for i, b in enumerate(BEHAVIORS)}).fillna("none")
    samples[[*KEYS, *LABELS, *FEATURE_SUBSET]].to_parquet(out_path, index=False)
    return len(samples)


# --- IG contingency counts -------------------------------------------------------------------


def edge_columns(edges: pd.DataFrame, n_bins: int) -> pd.DataFrame:
    """``shard, feature, e1 .. e{n_bins-1}`` from ``shard, feature, edges`` (a list per row; NaN pads)."""
    width = n_bins - 1
    mat = np.full((len(edges), width), np.nan)
    for i, e in enumerate(edges["edges"]):
        e = list(e) if e is not None else []
        mat[i, : len(e)] = e
    out = edges[["shard", "feature"]].reset_index(drop=True).copy()
    for k in range(width):
        out[f"e{k + 1}"] = mat[:, k]
    return out


def duckdb_ig_counts(
    samples_files: Sequence[str],
    features: Sequence[str],
    edges: pd.DataFrame,
    *,
    n_bins: int,
    window_id: str,
    label: str = "label_purchase",
) -> pd.DataFrame:
    """Contingency counts ``shard, feature, bin, label, count`` of the samples given the edges, in DuckDB."""

    con = _duckdb_connect()
    try:
        ecols = edge_columns(edges, n_bins)
        con.register("edges_df", ecols)
        con.execute("CREATE TEMP TABLE edges AS SELECT * FROM edges_df")
        cols = ", ".join(f'"{f}"' for f in features)
        below = " + ".join(f"coalesce(CAST(x > e{k + 1} AS INTEGER), 0)" for k in range(n_bins - 1))
        return con.execute(f"""
        WITH s AS (
            SELECT shard, coalesce(CAST({label} AS VARCHAR), '(null)') AS label, {cols}
            FROM read_parquet({_sql_list(samples_files)}) WHERE window_id = '{window_id}'
        ), long AS (
            UNPIVOT s ON {cols} INTO NAME feature VALUE x
        )
        SELECT shard, feature,
               CAST(CASE WHEN x IS NULL OR isnan(x) THEN {NAN_BIN} ELSE {below} END AS INTEGER) AS bin,
               label, count(*) AS count
        FROM long LEFT JOIN edges USING (shard, feature)
        GROUP BY ALL
        """).df()
    finally:
        con.close()


def polars_ig_counts(
    samples_files: Sequence[str],
    features: Sequence[str],
    edges: pd.DataFrame,
    *,
    n_bins: int,
    window_id: str,
    label: str = "label_purchase",
) -> pd.DataFrame:
    """The same counts as :func:`duckdb_ig_counts`, with Polars."""
    import polars as pl

    e = pl.from_pandas(edge_columns(edges, n_bins)).with_columns(
        [pl.col(f"e{k + 1}").fill_nan(None) for k in range(n_bins - 1)]
    )
    x = pl.col("x")
    below = pl.sum_horizontal(*((x > pl.col(f"e{k + 1}")).fill_null(False).cast(pl.Int32) for k in range(n_bins - 1)))
    counts = (
        pl.scan_parquet(list(samples_files))
        .filter(pl.col("window_id") == window_id)
        .select(
            "shard",
            pl.col(label).cast(pl.String).fill_null("(null)").alias("label"),
            *(pl.col(f).cast(pl.Float64) for f in features),
        )
        .unpivot(index=["shard", "label"], on=list(features), variable_name="feature", value_name="x")
        .join(e.lazy(), on=["shard", "feature"], how="left")
        .with_columns(pl.when(x.is_null() | x.is_nan()).then(NAN_BIN).otherwise(below).cast(pl.Int32).alias("bin"))
        .group_by("shard", "feature", "bin", "label")
        .agg(pl.len().alias("count"))
        .collect()
    )
    return counts.to_pandas()


# --- the whole weighting, the plain pandas + scikit-learn way ---------------------------------


def _laplace_ig_kl(n_xy: np.ndarray, alpha: float) -> tuple[float, np.ndarray]:
    """IG and per-bin KL of a ``bins × classes`` count matrix with Laplace pseudo-count ``alpha``."""
    k_x, k_y = n_xy.shape
    n = n_xy.sum()
    if k_y <= 1 or n <= 0:
        return 0.0, np.zeros(k_x)
    denom = n + alpha * k_x * k_y
    p_xy = (n_xy + alpha) / denom
    p_x = (n_xy.sum(axis=1) + alpha * k_y) / denom
    p_y = (n_xy.sum(axis=0) + alpha * k_x) / denom
    with np.errstate(divide="ignore", invalid="ignore"):
        ig = float(np.where(p_xy > 0, p_xy * np.log(p_xy / np.outer(p_x, p_y)), 0.0).sum())
        p_y_x = p_xy / p_x[:, None]
        kl = np.where(p_y_x > 0, p_y_x * np.log(p_y_x / p_y), 0.0).sum(axis=1)
    return max(ig, 0.0), np.maximum(kl, 0.0)


def quantile_edges(values: np.ndarray, n_bins: int) -> np.ndarray:
    """Distinct sorted ``k/n_bins`` quantiles of the finite values (``sorted[ceil(p·n) - 1]``, the
    inverted CDF, which is what Spark's ``percentile_approx`` returns when it is exact)."""
    v = np.sort(values[np.isfinite(values)])
    if len(v) == 0:
        return np.empty(0)
    ranks = [max(math.ceil((k / n_bins) * len(v)), 1) for k in range(1, n_bins)]
    return np.unique(v[np.array(ranks) - 1])


@dataclass
class PlainWeightsConfig:
    """The settings the plain weighting mirrors (the project's defaults)."""

    n_bins: int = 10
    smoothing: float = 1.0
    lam: float = 1.0
    target_days: float = 1.0
    max_fit_rows: int = 20_000
    target_share: float = 0.5
    min_rows: int = 50
    cv_folds: int = 5
    min_auc: float = 0.5
    logistic_c: float = 1.0
    z_clip: float = 5.0
    max_ratio: float = 100.0
    clip_quantile: float = 0.99
    seed: int = 42


def _standardize(x: np.ndarray, means: np.ndarray, scales: np.ndarray, z_clip: float) -> np.ndarray:
    with np.errstate(invalid="ignore", over="ignore"):
        z = np.clip((x - means) * scales, -z_clip, z_clip)
    z = np.where(np.isnan(x), 0.0, z)
    return np.where(scales == 0.0, 0.0, z)


def _fit_logistic_dr(x_s: np.ndarray, x_t: np.ndarray, cfg: PlainWeightsConfig) -> dict[str, Any]:
    """Standardize, k-fold AUC, fit; the ratio's intercept includes the prior ``log(m_s / m_t)``."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    pooled = np.vstack([x_s, x_t])
    finite = np.isfinite(pooled)
    cnt = finite.sum(axis=0)
    vals = np.where(finite, pooled, 0.0)
    means = np.where(cnt > 0, vals.sum(axis=0) / np.maximum(cnt, 1), 0.0)
    dev = np.where(finite, pooled - means, 0.0)
    std = np.sqrt((dev * dev).sum(axis=0) / np.maximum(cnt, 1))
    ok = (cnt > 0) & (std > 1e-12 * np.maximum(1.0, np.abs(means)))
    scales = np.where(ok, 1.0 / np.where(ok, std, 1.0), 0.0)
    if not ok.any():
        return {"reason": "constant_features"}
    z_s, z_t = (_standardize(a, means, scales, cfg.z_clip) for a in (x_s, x_t))
    x = np.vstack([z_s, z_t])
    y = np.r_[np.zeros(len(z_s)), np.ones(len(z_t))]
    folds = np.r_[np.arange(len(z_s)) % cfg.cv_folds, np.arange(len(z_t)) % cfg.cv_folds]
    oof = np.empty(len(y))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for k in range(cfg.cv_folds):
            held = folds == k
            m = LogisticRegression(C=cfg.logistic_c, max_iter=1000).fit(x[~held], y[~held])
            oof[held] = m.decision_function(x[held])
        final = LogisticRegression(C=cfg.logistic_c, max_iter=1000).fit(x, y)
    auc = float(roc_auc_score(y, oof))
    fit = {"means": means, "scales": scales, "auc": auc, "reason": None if auc >= cfg.min_auc else "poor_fit"}
    fit["intercept"] = float(final.intercept_[0]) + math.log(len(z_s) / len(z_t))
    fit["coefs"] = final.coef_[0].astype(np.float64)
    return fit


def plain_weights(
    samples: pd.DataFrame,
    features: Sequence[str],
    dr_features: Sequence[str],
    *,
    cfg: PlainWeightsConfig,
    edges: pd.DataFrame | None = None,
    dr_sample: pd.DataFrame | None = None,
    label: str = "label_purchase",
    collect: bool = True,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Every weight of every sample, per shard, in pandas + scikit-learn.

    Args:
        samples: one window of ``silver.samples`` (``shard``, label, features).
        features: the IG features.
        dr_features: the density-ratio features.
        cfg: the settings.
        edges: ``shard, feature, edges`` to bin with (the equality check passes the project's);
            None = this function's own quantiles over all of a shard's rows.
        dr_sample: the density-ratio fit sample to use (``shard, _dr_side`` 0/1, the hash column
            ``_dr_u``, the features; the equality check passes the project's); None = a seeded
            NumPy random sample of at most ``max_fit_rows`` rows per shard.
        label: the label column.
        collect: keep the per-shard details (contingency counts, IG, edges) for the checks.

    Returns:
        ``(weights, details)``: ``weights`` has ``user_id, item_id, shard, w_class, w_ig,
        ig_score, w_dr, w_raw, weight``; ``details`` the per-shard counts, IG, edges and fits.
    """
    from sklearn.utils.class_weight import compute_class_weight

    rng = np.random.default_rng(cfg.seed)
    given_edges = None
    if edges is not None:
        given_edges = {(r.shard, r.feature): np.asarray(r.edges, dtype=float) for r in edges.itertuples()}
    given_sample = dict(tuple(dr_sample.groupby("shard", sort=False))) if dr_sample is not None else {}
    parts: list[pd.DataFrame] = []
    details: dict[str, Any] = {"counts": [], "ig": [], "edges": {}, "dr": {}}
    y_all = samples[label].astype(str).to_numpy()
    is_target_all = (samples["pair_recency_any"] < cfg.target_days).to_numpy()
    for shard, idx in samples.groupby("shard", sort=True).indices.items():
        part = samples.iloc[idx]
        y = y_all[idx]
        n = len(part)
        classes, y_code = np.unique(y, return_inverse=True)
        # 1. class balance: scikit-learn's "balanced" (already mean 1 over the samples).
        cw = compute_class_weight("balanced", classes=classes, y=y)
        w_class = cw[y_code]
        # 2. information gain: quantile bins, Laplace IG, per-bin KL, IG-weighted mean KL per sample.
        per_feature = []
        for f in features:
            x = part[f].to_numpy(dtype=float)
            e = given_edges.get((shard, f), np.empty(0)) if given_edges is not None else quantile_edges(x, cfg.n_bins)
            if collect:
                details["edges"][(shard, f)] = e
            b = np.where(np.isnan(x), NAN_BIN, np.searchsorted(e, x, side="left"))
            bins, b_code = np.unique(b, return_inverse=True)
            n_xy = np.zeros((len(bins), len(classes)))
            np.add.at(n_xy, (b_code, y_code), 1.0)
            ig, kl = _laplace_ig_kl(n_xy, cfg.smoothing)
            per_feature.append((f, bins, b_code, n_xy, ig, kl))
        total_ig = sum(p[4] for p in per_feature)
        g = np.zeros(n)
        for f, bins, b_code, n_xy, ig, kl in per_feature:
            if collect:
                details["ig"].append((shard, f, ig))
                for j, c in zip(*np.nonzero(n_xy), strict=True):
                    details["counts"].append((shard, f, int(bins[j]), classes[c], int(n_xy[j, c])))
            if total_ig > 0:
                g += (ig / total_ig) * kl[b_code]
        g_mean = g.mean() if n else 0.0
        w_ig = 1.0 + cfg.lam * g / g_mean if g_mean > 0 else np.ones(n)
        # 3. density ratio: logistic, today (target) vs all (source), on a bounded sample.
        x_all = part[list(dr_features)].to_numpy(dtype=float)
        t_mask = is_target_all[idx]
        n_t, n_s = int(t_mask.sum()), n
        w_dr = np.ones(n)
        reason = None
        if n_t == 0:
            reason = "empty_target"
        elif n_t >= n_s:
            reason = "target_equals_source"
        elif n_t < cfg.min_rows:
            reason = "too_few_rows"
        fit: dict[str, Any] = {}
        if reason is None:
            cap_t = min(n_t, math.floor(cfg.max_fit_rows * cfg.target_share))
            cap_s = cfg.max_fit_rows - cap_t
            if dr_sample is not None:
                s = given_sample.get(shard)
                s = s.sort_values(["_dr_side", "_dr_u", *dr_features], kind="mergesort", na_position="last")
                x_s = s.loc[s["_dr_side"] == 0, list(dr_features)].to_numpy(dtype=float)[:cap_s]
                x_t = s.loc[s["_dr_side"] == 1, list(dr_features)].to_numpy(dtype=float)[:cap_t]
            else:
                x_s = x_all[rng.permutation(n_s)[:cap_s]]
                x_t = x_all[t_mask][rng.permutation(n_t)[:cap_t]]
            if min(len(x_s), len(x_t)) < cfg.min_rows:
                reason = "too_few_rows"
            else:
                fit = _fit_logistic_dr(x_s, x_t, cfg)
                reason = fit["reason"]
        if reason is None:
            z = _standardize(x_all, fit["means"], fit["scales"], cfg.z_clip)
            w_dr = np.exp(np.minimum(fit["intercept"] + z @ fit["coefs"], math.log(cfg.max_ratio)))
        details["dr"][shard] = {"reason": reason, "auc": fit.get("auc"), "n_target": n_t}
        # 4. combination: product, clipped at the shard's quantile, mean 1.
        raw = w_class * w_dr * w_ig
        weight = combine(raw, cfg.clip_quantile)
        parts.append(
            pd.DataFrame(
                {
                    "user_id": part["user_id"].to_numpy(),
                    "item_id": part["item_id"].to_numpy(),
                    "shard": shard,
                    "w_class": w_class,
                    "ig_score": g,
                    "w_ig": w_ig,
                    "w_dr": w_dr,
                    "w_raw": raw,
                    "weight": weight,
                }
            )
        )
    return pd.concat(parts, ignore_index=True), details


def combine(raw: np.ndarray, clip_quantile: float | None) -> np.ndarray:
    """Clip at the ``clip_quantile`` (inverted CDF) of ``raw`` and normalize to mean 1."""
    w = raw
    if clip_quantile is not None and clip_quantile < 1 and len(raw):
        v = np.sort(raw)
        cap = v[max(math.ceil(clip_quantile * len(v)), 1) - 1]
        w = np.minimum(raw, cap)
    mean = w.mean() if len(w) else 0.0
    return w / mean if mean > 0 else np.ones(len(w))


# --- ALS: implicit --------------------------------------------------------------------------


@dataclass
class Ratings:
    """A user × item rating matrix with its id maps (ids sorted)."""

    users: np.ndarray
    items: np.ndarray
    matrix: Any  # scipy.sparse.csr_matrix, float32

    @property
    def nnz(self) -> int:
        return int(self.matrix.nnz)


def ratings_matrix(events_files: Sequence[str], w: Window, strengths: dict[str, float]) -> Ratings:
    """``rating(u, i) = Σ strength(behavior)`` over feature-window events, as a CSR matrix (Polars)."""
    import polars as pl
    import scipy.sparse as sp

    t0, t1, _ = w.us
    us = pl.col("ts").dt.epoch("us")
    strength = pl.col("behavior").replace_strict(strengths, default=0.0, return_dtype=pl.Float64)
    r = (
        pl.scan_parquet(list(events_files))
        .filter((pl.col("source") == w.source) & (us >= t0) & (us < t1))
        .group_by("user_id", "item_id")
        .agg(strength.sum().alias("rating"))
        .filter(pl.col("rating") > 0)
        .collect()
    )
    users = np.sort(r["user_id"].unique().to_numpy())
    items = np.sort(r["item_id"].unique().to_numpy())
    u = np.searchsorted(users, r["user_id"].to_numpy())
    i = np.searchsorted(items, r["item_id"].to_numpy())
    m = sp.csr_matrix((r["rating"].to_numpy().astype(np.float32), (u, i)), shape=(len(users), len(items)))
    return Ratings(users, items, m)


def implicit_als(
    ratings: Ratings, *, rank: int, reg: float, alpha: float, iterations: int, seed: int, use_cg: bool = False
) -> tuple[Any, float]:
    """Fit ``implicit``'s ALS (confidence ``1 + alpha·r``); return the model and its fit seconds.

    ``use_cg=False`` solves each least-squares step exactly (Cholesky), like Spark; the library's
    default is a few conjugate-gradient steps, which is faster and approximate.
    """
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, "blas"):  # implicit parallelizes itself; nested BLAS threads slow it down
        model = AlternatingLeastSquares(
            factors=rank, regularization=reg, alpha=alpha, iterations=iterations, random_state=seed, use_cg=use_cg
        )
        t = time.perf_counter()
        model.fit(ratings.matrix, show_progress=False)
        seconds = time.perf_counter() - t
    return model, seconds


def precision_at_k(recs: dict[str, list[str]], truth: dict[str, set[str]], k: int) -> float:
    """Mean over users with a truth set of |top-k ∩ truth| / k (users without recommendations count 0)."""
    users = [u for u in truth if truth[u]]
    if not users:
        return 0.0
    return float(np.mean([len(set(recs.get(u, [])[:k]) & truth[u]) / k for u in users]))


def implicit_recommend(model: Any, ratings: Ratings, users: Sequence[str], k: int) -> dict[str, list[str]]:
    """Top-``k`` items (already-seen ones included, as Spark's ``recommendForUserSubset``)."""
    have = set(ratings.users.tolist())
    known = [u for u in users if u in have]
    idx = np.searchsorted(ratings.users, np.asarray(known))
    ids, _ = model.recommend(idx, ratings.matrix[idx], N=k, filter_already_liked_items=False)
    return {u: [ratings.items[j] for j in row if j >= 0] for u, row in zip(known, ids, strict=True)}


# --- equality -------------------------------------------------------------------------------


def compare_frames(
    ours: pd.DataFrame, theirs: pd.DataFrame, *, keys: Sequence[str], columns: Sequence[str], rtol: float = 1e-9
) -> dict[str, Any]:
    """Row sets equal on ``keys``; integer-valued columns exactly, doubles to ``rtol`` (absolute near 0).

    Returns:
        ``{"equal", "rows", "missing", "extra", "mismatched": {column: count}, "max_abs_diff"}``.
    """
    a = ours.set_index(list(keys))[list(columns)]
    b = theirs.set_index(list(keys))[list(columns)]
    missing = len(a.index.difference(b.index))
    extra = len(b.index.difference(a.index))
    common = a.index.intersection(b.index)
    a, b = a.loc[common], b.loc[common]
    mismatched: dict[str, int] = {}
    max_diff = 0.0
    for c in columns:
        x, y = a[c], b[c]
        if x.dtype.kind in "fc" or y.dtype.kind in "fc":
            xv, yv = x.to_numpy(dtype=float), y.to_numpy(dtype=float)
            ok = np.isclose(xv, yv, rtol=rtol, atol=rtol) | (np.isnan(xv) & np.isnan(yv))
            if len(xv):
                max_diff = max(max_diff, float(np.nanmax(np.abs(xv - yv))))
        else:
            ok = x.astype(str).to_numpy() == y.astype(str).to_numpy()
        bad = int((~ok).sum())
        if bad:
            mismatched[c] = bad
    return {
        "equal": not (missing or extra or mismatched),
        "rows": len(common),
        "missing": missing,
        "extra": extra,
        "mismatched": mismatched,
        "max_abs_diff": max_diff,
    }


def compare_counts(ours: pd.DataFrame, theirs: pd.DataFrame) -> dict[str, Any]:
    """Contingency tables ``shard, feature, bin, label, count`` equal, exactly."""
    keys = ["shard", "feature", "bin", "label"]

    def norm(df: pd.DataFrame) -> pd.DataFrame:
        out = df[[*keys, "count"]].copy()
        out["bin"] = out["bin"].astype(int)
        out["label"] = out["label"].astype(str)
        out["count"] = out["count"].astype(np.int64)
        return out

    return compare_frames(norm(ours), norm(theirs), keys=keys, columns=["count"], rtol=0.0)
