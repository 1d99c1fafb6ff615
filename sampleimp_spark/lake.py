"""Everything the job stores goes through here: Delta tables, model artifacts and their lineage.

Tables are path-based (``<lakehouse>/<layer>/<table>``), so readers without Spark or a
metastore (delta-rs, DuckDB, pandas) find them by path. Every write is checked against the
table's contract (:data:`sampleimp_spark.schema.CONTRACTS`) before anything is written, and is
one atomic Delta commit that replaces exactly the rows its predicate selects
(:func:`rows_where`), so a rerun leaves the same rows. Commits carry ``userMetadata`` and a
transaction id per ``(stage, table, run id)``: a scheduler's retry of the same run id skips the
writes that already committed, and re-applies the table properties. SQL text is never built by
pasting values: :func:`sql_string` and :func:`sql_identifier` escape every value and name.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from sampleimp_spark import __version__
from sampleimp_spark import schema as S
from sampleimp_spark.frames import one_row

if TYPE_CHECKING:
    from pyspark.ml import PipelineModel

    from sampleimp_spark.leases import Leases
    from sampleimp_spark.training.als import FittedALS

log = logging.getLogger(__name__)

PROP_PREFIX = "sampleimp"
#: Key of the number of rows a write committed, in the dict :func:`write_table` returns.
OUTPUT_ROWS = "numOutputRows"
#: Folder of model artifacts under the lakehouse root.
MODELS_FOLDER = "models"
#: Order of the rows within a task of the gold write: the partition columns first (the file
#: writer needs that order and adds its own sort by them otherwise), then shard, so each file
#: covers a narrow range of shards and readers filtering on ``shard`` skip files by statistics.
GOLD_SORT: tuple[str, ...] = (S.WINDOW_ID, S.SHARD_BUCKET, S.SHARD, S.USER_ID, S.ITEM_ID)


@dataclass(frozen=True)
class RunContext:
    """Who is writing: stamped on every commit and table."""

    run_id: str
    config_hash: str
    stage: str
    extra_properties: Mapping[str, str] = field(default_factory=dict)
    #: A fingerprint of what the stage read (input files, table versions): a retry of the same
    #: run id skips a committed write only when it read the same inputs with the same config.
    inputs: str = ""
    #: The run's leases (None: a stage called directly, e.g. by a test, takes none).
    leases: Leases | None = field(default=None, compare=False)

    def claim(self, *keys: str) -> None:
        """Take the leases on what the stage is about to write (see :mod:`sampleimp_spark.leases`)."""
        if self.leases is not None:
            self.leases.acquire(*keys)

    def with_properties(self, props: Mapping[str, str]) -> RunContext:
        """The same context with more table properties to set."""
        return replace(self, extra_properties={**self.extra_properties, **props})

    def with_inputs(self, *parts: object) -> RunContext:
        """The same context, its writes keyed also by these inputs."""
        return replace(self, inputs=json.dumps([str(p) for p in parts]))

    def user_metadata(self, table: str) -> str:
        return json.dumps(
            {
                "run_id": self.run_id,
                "stage": self.stage,
                "table": table,
                "config_hash": self.config_hash,
                "version": __version__,
            },
            sort_keys=True,
        )


# --- SQL text, escaped ------------------------------------------------------------------------


def sql_string(value: str) -> str:
    """``value`` as a Spark SQL string literal: quoted, with backslashes and quotes escaped."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def sql_identifier(name: str) -> str:
    """``name`` as a Spark SQL identifier: backtick-quoted, inner backticks doubled."""
    return "`" + name.replace("`", "``") + "`"


def rows_where(**equal: str) -> str:
    """A ``replaceWhere`` predicate selecting the rows whose columns equal the given values,
    e.g. ``rows_where(source="taobao", window_id=wid)``."""
    if not equal:
        raise ValueError("rows_where needs at least one column")
    return " AND ".join(f"{sql_identifier(col)} = {sql_string(str(v))}" for col, v in equal.items())


def value_in(column: str, values: list[str]) -> str:
    """A predicate ``column IN (values...)`` on a string column."""
    if not values:
        raise ValueError("value_in needs at least one value")
    return f"{sql_identifier(column)} IN ({', '.join(sql_string(v) for v in values)})"


def date_between(column: str, lo: date, hi: date) -> str:
    """A predicate ``lo <= column <= hi`` on a date column.

    Two comparisons, not ``BETWEEN``: Delta's ``replaceWhere`` fails to resolve ``BETWEEN`` on a
    partition column.
    """
    col = sql_identifier(column)
    return f"{col} >= DATE{sql_string(lo.isoformat())} AND {col} <= DATE{sql_string(hi.isoformat())}"


def time_between(column: str, start: datetime, end: datetime) -> str:
    """A predicate ``start <= column < end`` on a timestamp column (UTC instants; the session's
    time zone is UTC)."""
    col = sql_identifier(column)
    fmt = "%Y-%m-%d %H:%M:%S.%f"
    lo, hi = (t.astimezone(UTC).strftime(fmt) for t in (start, end))
    return f"{col} >= TIMESTAMP{sql_string(lo)} AND {col} < TIMESTAMP{sql_string(hi)}"


# --- tables -----------------------------------------------------------------------------------


def table_path(lakehouse: str | Path, name: str) -> str:
    """Absolute path of logical table ``name`` (e.g. ``bronze.events``) under ``lakehouse``."""
    return str((Path(lakehouse).expanduser() / S.table_folder(name)).resolve())


def is_delta_table(spark: SparkSession, path: str) -> bool:
    from delta.tables import DeltaTable

    return bool(DeltaTable.isDeltaTable(spark, path))


def check_contract(df: DataFrame, name: str) -> S.TableContract:
    """Fail before writing when ``df`` does not satisfy the contract of table ``name``.

    Every contract column must be present with its type; any other column must be a double
    whose name the contract allows (sample features, embedding components).
    """
    contract = S.CONTRACTS.get(name)
    if contract is None:
        raise ValueError(f"table {name} has no contract in sampleimp_spark.schema.CONTRACTS")
    got = {f.name: f.dataType for f in df.schema.fields}
    problems = []
    for f in contract.columns.fields:
        if f.name not in got:
            problems.append(f"missing column {f.name} ({f.dataType.simpleString()})")
        elif got[f.name].simpleString() != f.dataType.simpleString():  # types, not nullability
            problems.append(f"column {f.name} is {got[f.name].simpleString()}, expected {f.dataType.simpleString()}")
    known = set(contract.columns.fieldNames())
    for col, dtype in got.items():
        if col in known:
            continue
        if not (contract.allows_extra(col) and dtype.simpleString() == "double"):
            problems.append(f"unexpected column {col} ({dtype.simpleString()})")
    if problems:
        raise ValueError(f"the frame written to {name} breaks its contract: " + "; ".join(problems))
    return contract


def _ensure_table(spark: SparkSession, path: str, contract: S.TableContract) -> None:
    """Create a fixed-schema table with its contract (NOT NULL columns enforced by Delta) if absent.

    Plain SQL with every name escaped: Delta's table builder pastes the path into SQL unescaped.
    """
    cols = ", ".join(
        f"{sql_identifier(f.name)} {f.dataType.simpleString()}{'' if f.nullable else ' NOT NULL'}"
        for f in contract.columns.fields
    )
    parts = ", ".join(sql_identifier(c) for c in contract.partition_by)
    spark.sql(
        f"CREATE TABLE IF NOT EXISTS delta.{sql_identifier(path)} ({cols}) USING DELTA"
        + (f" PARTITIONED BY ({parts})" if parts else "")
    )


def _add_new_columns(spark: SparkSession, path: str, df: DataFrame) -> None:
    """Add to an existing table the nullable columns ``df`` has and it lacks (a table written by an
    older version, e.g. before ``w_time``); its older rows read them as null."""
    have = set(spark.read.format("delta").load(path).columns)
    new = [f for f in df.schema.fields if f.name not in have]
    if new:
        cols = ", ".join(f"{sql_identifier(f.name)} {f.dataType.simpleString()}" for f in new)
        spark.sql(f"ALTER TABLE delta.{sql_identifier(path)} ADD COLUMNS ({cols})")
        log.info("%s: added column(s) %s", path, [f.name for f in new])


#: A commit of a Delta log (``_delta_log/<version, 20 digits>.json``, Delta's protocol).
_COMMIT_FILE = re.compile(r"^(\d{20})\.json$")


def _delta_log(spark: SparkSession, path: str):  # py4j objects out
    jvm = spark._jvm
    assert jvm is not None
    log_dir = jvm.org.apache.hadoop.fs.Path(f"{path}/_delta_log")
    return log_dir.getFileSystem(spark._jsc.hadoopConfiguration()), log_dir


def _commit_versions(spark: SparkSession, path: str) -> list[int]:
    """The versions of the commit files of ``path``'s Delta log, oldest first, listed from the log
    with the table's file system (no Spark job: ``DeltaTable.history`` runs one, 0.3 s a call)."""
    fs, log_dir = _delta_log(spark, path)
    if not fs.exists(log_dir):
        return []
    names = (status.getPath().getName() for status in fs.listStatus(log_dir))
    return sorted(int(m.group(1)) for name in names if (m := _COMMIT_FILE.match(name)))


def _commit_info(spark: SparkSession, path: str, version: int) -> dict[str, Any]:
    """The ``commitInfo`` action of commit ``version`` (operation, its metrics, ``userMetadata``)."""
    jvm = spark._jvm
    assert jvm is not None
    fs, log_dir = _delta_log(spark, path)
    stream = fs.open(jvm.org.apache.hadoop.fs.Path(log_dir, f"{version:020d}.json"))
    try:
        text = str(jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8"))
    finally:
        stream.close()
    for line in text.splitlines():
        action = json.loads(line) if line.strip() else {}
        if "commitInfo" in action:
            return dict(action["commitInfo"])
    return {}


def _current_version(spark: SparkSession, path: str) -> int | None:
    if not is_delta_table(spark, path):
        return None
    versions = _commit_versions(spark, path)
    return versions[-1] if versions else None


def write_table(
    df: DataFrame,
    lakehouse: str | Path,
    name: str,
    *,
    ctx: RunContext,
    replace_where: str | None = None,
    overwrite: bool = False,
) -> dict[str, int] | None:
    """Write ``df`` to table ``name`` in one atomic Delta commit, after checking its contract.

    Args:
        df: rows to write.
        lakehouse: lakehouse root.
        name: logical table name, e.g. ``bronze.events``.
        ctx: the run writing; its id goes into ``userMetadata`` and the transaction id.
        replace_where: replace the rows matching this predicate (:func:`rows_where`); all of
            ``df`` must match it.
        overwrite: replace the whole table (when ``replace_where`` is None).

    Returns:
        The commit's operation metrics (e.g. :data:`OUTPUT_ROWS`), or None when Delta skipped the
        write because this run already committed it (a retried run).
    """
    contract = check_contract(df, name)
    spark = df.sparkSession
    path = table_path(lakehouse, name)
    if not contract.features:
        _commit_with_retries(lambda: _ensure_table(spark, path, contract), name)
    # One transaction id per (stage, table, run, rows replaced, config, inputs): a run writing two
    # windows of a table makes two writes, and a retry of the run skips a write it already
    # committed only if it read the same inputs with the same config.
    what = replace_where or ("<overwrite>" if overwrite else "<append>")
    scope = hashlib.sha256("\x1f".join((what, ctx.config_hash, ctx.inputs)).encode()).hexdigest()[:16]
    app_id = f"sampleimp_spark/{ctx.stage}/{name}/{ctx.run_id}/{scope}"
    before = _current_version(spark, path)
    if before is not None:
        _add_new_columns(spark, path, df)
    writer = (
        df.write.format("delta")
        .option("userMetadata", ctx.user_metadata(name))
        .option("txnAppId", app_id)
        .option("txnVersion", 0)
    )
    exists = before is not None
    if replace_where is not None and exists:
        writer = writer.mode("overwrite").option("replaceWhere", replace_where)
    elif overwrite and exists:
        writer = writer.mode("overwrite")
    else:
        writer = writer.mode("append")
    if contract.partition_by:
        writer = writer.partitionBy(*contract.partition_by)
    _commit_with_retries(lambda: writer.save(path), name)
    skipped = before is not None and _current_version(spark, path) == before
    # Also after a skipped write: a crash between the data commit and this one left the
    # properties unset, and the retry heals them.
    set_properties(spark, lakehouse, name, ctx)
    if skipped:
        log.warning("%s: run %s already committed this write; skipped (retried run)", name, ctx.run_id)
        return None
    return last_commit_metrics(spark, lakehouse, name, operation_of_run=ctx.run_id)


#: Attempts of one write when another writer commits to the same table first (Delta's optimistic
#: concurrency); each retry re-reads the table, and waits ``COMMIT_BACKOFF_S · 2^k`` (plus jitter).
COMMIT_ATTEMPTS = 5
COMMIT_BACKOFF_S = 0.5
#: How Delta names a lost race: conflicting commits, and a table another run is creating.
_CONFLICTS = (
    "ConcurrentAppendException",
    "ConcurrentDeleteReadException",
    "ConcurrentDeleteDeleteException",
    "ConcurrentTransactionException",
    "MetadataChangedException",
    "ProtocolChangedException",
    "DELTA_CONCURRENT_",
    "DELTA_METADATA_CHANGED",
    "DELTA_PROTOCOL_CHANGED",
    "DELTA_CREATE_TABLE_WITH_NON_EMPTY_LOCATION",
    "is not empty and also not a Delta table",
)


def _is_conflict(exc: BaseException) -> bool:
    text = str(exc)
    return any(marker in text for marker in _CONFLICTS)


def _commit_with_retries(commit: Callable[[], object], name: str) -> None:
    """Run ``commit``; on a lost race with a concurrent writer, retry with exponential backoff."""
    for attempt in range(1, COMMIT_ATTEMPTS + 1):
        try:
            commit()
            return
        except Exception as exc:
            if not _is_conflict(exc):
                raise
            if attempt == COMMIT_ATTEMPTS:
                raise RuntimeError(
                    f"{name}: another writer kept committing to the table; gave up after {attempt} attempts "
                    f"(nothing of this write is visible): {str(exc).strip().splitlines()[0]}"
                ) from exc
            wait = COMMIT_BACKOFF_S * 2 ** (attempt - 1) * (1 + random.random())
            log.warning(
                "%s: a concurrent commit won (attempt %d of %d); retrying in %.1f s",
                name,
                attempt,
                COMMIT_ATTEMPTS,
                wait,
            )
            time.sleep(wait)


def set_properties(spark: SparkSession, lakehouse: str | Path, name: str, ctx: RunContext) -> None:
    """Stamp table properties with the config hash, package version and run id (when they differ)."""
    props = {
        f"{PROP_PREFIX}.config_hash": ctx.config_hash,
        f"{PROP_PREFIX}.package_version": __version__,
        f"{PROP_PREFIX}.run_id": ctx.run_id,
        # Transaction ids are kept 30 days: long enough for any scheduler retry.
        "delta.setTransactionRetentionDuration": "interval 30 days",
        **ctx.extra_properties,
    }
    current = table_properties(spark, lakehouse, name)
    if all(current.get(k) == v for k, v in props.items()):
        return
    assignments = ", ".join(f"{sql_string(k)} = {sql_string(v)}" for k, v in props.items())
    sql = f"ALTER TABLE delta.{sql_identifier(table_path(lakehouse, name))} SET TBLPROPERTIES ({assignments})"
    _commit_with_retries(lambda: spark.sql(sql), name)


#: What ``SHOW TBLPROPERTIES`` shows for a value Spark's redaction patterns match (``url``, ``token``,
#: ``secret``, ...).
_REDACTED = "*********(redacted)"


def table_properties(spark: SparkSession, lakehouse: str | Path, name: str) -> dict[str, str]:
    """The table's properties (with Delta's protocol versions), verbatim.

    Read with ``SHOW TBLPROPERTIES`` (the snapshot's metadata); ``DESCRIBE DETAIL`` also sizes every
    file, 3-7 s per table on a fresh snapshot, so it is the fallback only when Spark redacted a value.
    """
    path = table_path(lakehouse, name)
    rows = spark.sql(f"SHOW TBLPROPERTIES delta.{sql_identifier(path)}").collect()  # one row per property
    props = {str(r["key"]): str(r["value"]) for r in rows}
    if _REDACTED in props.values():
        from delta.tables import DeltaTable

        props = dict(one_row(DeltaTable.forPath(spark, path).detail())["properties"] or {})
    return props


def last_commit_metrics(
    spark: SparkSession, lakehouse: str | Path, name: str, *, operation_of_run: str | None = None
) -> dict[str, int]:
    """Operation metrics of the newest data commit (optionally: the newest one of a run) among the
    table's last 20 commits."""
    path = table_path(lakehouse, name)
    for version in reversed(_commit_versions(spark, path)[-20:]):
        info = _commit_info(spark, path, version)
        if info.get("operation") == "SET TBLPROPERTIES":
            continue
        if operation_of_run and operation_of_run not in (info.get("userMetadata") or ""):
            continue
        metrics = info.get("operationMetrics") or {}
        return {k: int(v) for k, v in metrics.items() if str(v).lstrip("-").isdigit()}
    return {}


def files_fingerprint(paths: list[str]) -> str:
    """A hash of the files under ``paths`` (each file's path, size and modification time)."""
    entries = []
    for p in paths:
        root = Path(p).expanduser()
        files = sorted(f for f in root.rglob("*") if f.is_file()) if root.is_dir() else [root]
        for f in files:
            try:
                st = f.stat()
            except OSError:
                entries.append(f"{f}:missing")
                continue
            entries.append(f"{f.resolve()}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha256("\n".join(entries).encode()).hexdigest()[:16]


# --- upkeep ----------------------------------------------------------------------------------


def storage_files(spark: SparkSession, path: str) -> int:
    """Data files on storage under a table's folder (live or not; the Delta log excluded)."""
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    hpath = jvm.org.apache.hadoop.fs.Path(path)
    fs = hpath.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    if not fs.exists(hpath):
        return 0
    files = fs.listFiles(hpath, True)
    n = 0
    while files.hasNext():
        name = files.next().getPath()
        if name.getName().endswith(".parquet") and "/_delta_log/" not in name.toUri().getPath():
            n += 1
    return n


def live_files(spark: SparkSession, lakehouse: str | Path, name: str) -> int:
    """Files of the table's current version."""
    from delta.tables import DeltaTable

    return int(one_row(DeltaTable.forPath(spark, table_path(lakehouse, name)).detail())["numFiles"])


def optimize(spark: SparkSession, lakehouse: str | Path, name: str, zorder: Sequence[str] = ()) -> None:
    """Compact a table's small files (one commit; readers see the same rows), Z-ordered by ``zorder``."""
    sql = f"OPTIMIZE delta.{sql_identifier(table_path(lakehouse, name))}"
    if zorder:
        sql += " ZORDER BY (" + ", ".join(sql_identifier(c) for c in zorder) + ")"
    spark.sql(sql).collect()  # one row of metrics


def vacuum(spark: SparkSession, lakehouse: str | Path, name: str, *, retention_hours: float) -> None:
    """Delete files no table version of the last ``retention_hours`` needs.

    The caller checks the retention against its readers (``MaintenanceConfig``); Delta's own
    7-day check is lifted for this call only when the retention is shorter.
    """
    key = "spark.databricks.delta.retentionDurationCheck.enabled"
    before = spark.conf.get(key, "true")
    if retention_hours < 168:
        spark.conf.set(key, "false")
    try:
        spark.sql(
            f"VACUUM delta.{sql_identifier(table_path(lakehouse, name))} RETAIN {float(retention_hours):g} HOURS"
        ).collect()
    finally:
        spark.conf.set(key, before or "true")


def table_version_or_none(spark: SparkSession, lakehouse: str | Path, name: str) -> int | None:
    """The current Delta version of table ``name``, or None when it does not exist yet."""
    return _current_version(spark, table_path(lakehouse, name))


def table_version(spark: SparkSession, lakehouse: str | Path, name: str) -> int:
    """The current Delta version of table ``name`` (to pin reads and record lineage)."""
    version = _current_version(spark, table_path(lakehouse, name))
    if version is None:
        raise FileNotFoundError(f"{name} does not exist under {lakehouse}")
    return version


def read_table(spark: SparkSession, lakehouse: str | Path, name: str, *, version: int | None = None) -> DataFrame:
    """Read table ``name``, optionally at a pinned Delta version."""
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    return reader.load(table_path(lakehouse, name))


# --- gold layout ------------------------------------------------------------------------------


def shard_bucket(shard: Column, buckets: int) -> Column:
    """The bucket of a shard in ``gold.training_samples``: ``pmod(xxhash64(shard), buckets)``."""
    return F.pmod(F.xxhash64(shard), F.lit(buckets)).cast("int")


def gold_layout(gold: DataFrame) -> DataFrame:
    """``gold`` arranged for its write: one task per bucket, rows sorted by :data:`GOLD_SORT`."""
    return gold.repartition(S.SHARD_BUCKET).sortWithinPartitions(*GOLD_SORT)


# --- models -----------------------------------------------------------------------------------


def models_dir(lakehouse: str | Path, window_id: str, run_id: str) -> Path:
    """Folder of the models one run trained on one window: ``<lakehouse>/models/<window>/<run>``."""
    return Path(lakehouse).expanduser().resolve() / MODELS_FOLDER / window_id / run_id


def save_models(
    lakehouse: str | Path, window_id: str, run_id: str, name: str, *, als: FittedALS, gbt: PipelineModel
) -> Path:
    """Store one variant's ALS (model and its id indexes) and GBT pipeline under :func:`models_dir`."""
    target = models_dir(lakehouse, window_id, run_id) / name
    als.model.write().overwrite().save(str(target / "als"))
    als.user_index.write.mode("overwrite").parquet(str(target / "als_user_index"))
    als.item_index.write.mode("overwrite").parquet(str(target / "als_item_index"))
    gbt.write().overwrite().save(str(target / "gbt"))
    return target


def write_model_lineage(lakehouse: str | Path, window_id: str, run_id: str, lineage: Mapping[str, Any]) -> Path:
    """Write ``training.json`` (what the models were trained on) next to the models, atomically."""
    folder = models_dir(lakehouse, window_id, run_id)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "training.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(dict(lineage), indent=2))
    tmp.replace(path)
    return path
