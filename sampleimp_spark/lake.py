"""All Delta Lake storage goes through here: table paths, idempotent writes, commit metadata.

Tables are path-based (``<lakehouse>/<layer>/<table>``) so that readers without Spark or a
metastore (delta-rs, DuckDB, pandas) find them by path.

Idempotency, in two layers:

* ``replace_where``: a write replaces exactly the rows its predicate selects, in one atomic
  commit. A rerun over the same input therefore leaves the same rows, never duplicates.
* Delta transaction identifiers: a write made for ``(run_id, table)`` carries
  ``txnAppId``/``txnVersion``; when a scheduler retries the *same* run after a partial
  failure, writes that already committed are skipped by Delta itself.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

from sampleimp_spark import __version__
from sampleimp_spark.schema import table_folder

log = logging.getLogger(__name__)

PROP_PREFIX = "sampleimp"


@dataclass(frozen=True)
class RunContext:
    """Who is writing: stamped on every commit and table."""

    run_id: str
    config_hash: str
    stage: str
    extra_properties: dict[str, str] = field(default_factory=dict)

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


def table_path(lakehouse: str | Path, name: str) -> str:
    """Absolute path of logical table ``name`` (e.g. ``bronze.events``) under ``lakehouse``."""
    return str((Path(lakehouse).expanduser() / table_folder(name)).resolve())


def is_delta_table(spark: SparkSession, path: str) -> bool:
    from delta.tables import DeltaTable

    return DeltaTable.isDeltaTable(spark, path)


def check_schema(df: DataFrame, expected: T.StructType, *, table: str) -> None:
    """Fail before writing when ``df`` does not have exactly ``expected``'s names and types."""
    got = [(f.name, f.dataType) for f in df.schema.fields]
    want = [(f.name, f.dataType) for f in expected.fields]
    if got != want:
        raise ValueError(
            f"schema of the frame written to {table} differs from its contract:\n  expected {want}\n  got      {got}"
        )


def ensure_table(spark: SparkSession, path: str, schema: T.StructType, *, partition_by: tuple[str, ...] = ()) -> None:
    """Create the table with its contract schema (NOT NULL columns enforced by Delta) if absent."""
    from delta.tables import DeltaTable

    builder = DeltaTable.createIfNotExists(spark).location(path).addColumns(schema)
    if partition_by:
        builder = builder.partitionedBy(*partition_by)
    builder.execute()


def _current_version(spark: SparkSession, path: str) -> int | None:
    from delta.tables import DeltaTable

    if not is_delta_table(spark, path):
        return None
    return int(DeltaTable.forPath(spark, path).history(1).select("version").first()[0])


def write_table(
    df: DataFrame,
    lakehouse: str | Path,
    name: str,
    *,
    ctx: RunContext,
    replace_where: str | None = None,
    overwrite: bool = False,
    partition_by: tuple[str, ...] = (),
    expected_schema: T.StructType | None = None,
) -> dict[str, int] | None:
    """Write ``df`` to table ``name`` in one atomic Delta commit.

    Args:
        df: rows to write.
        lakehouse: lakehouse root.
        name: logical table name, e.g. ``bronze.events``.
        ctx: the run writing; its id goes into ``userMetadata`` and the transaction id.
        replace_where: replace the rows matching this SQL predicate (all of ``df`` must match).
        overwrite: replace the whole table (when ``replace_where`` is None).
        partition_by: partition columns, used when the table is created.
        expected_schema: checked before anything is written.

    Returns:
        The commit's operation metrics (e.g. ``numOutputRows``), or None when Delta skipped the
        write because this run already committed it (a retried run).
    """
    spark = df.sparkSession
    path = table_path(lakehouse, name)
    if expected_schema is not None:
        check_schema(df, expected_schema, table=name)
        ensure_table(spark, path, expected_schema, partition_by=partition_by)
    app_id = f"sampleimp_spark/{ctx.stage}/{name}/{ctx.run_id}"
    before = _current_version(spark, path)
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
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    writer.save(path)
    if before is not None and _current_version(spark, path) == before:
        # Delta skipped the write: this (txnAppId, txnVersion) is already in the log.
        log.warning("%s: run %s already committed this write; skipped (retried run)", name, ctx.run_id)
        return None
    set_properties(spark, lakehouse, name, ctx)
    return last_commit_metrics(spark, lakehouse, name, operation_of_run=ctx.run_id)


def set_properties(spark: SparkSession, lakehouse: str | Path, name: str, ctx: RunContext) -> None:
    """Stamp table properties with the config hash, package version and run id."""
    props = {
        f"{PROP_PREFIX}.config_hash": ctx.config_hash,
        f"{PROP_PREFIX}.package_version": __version__,
        f"{PROP_PREFIX}.run_id": ctx.run_id,
        # Transaction ids are kept 30 days: long enough for any scheduler retry.
        "delta.setTransactionRetentionDuration": "interval 30 days",
        **ctx.extra_properties,
    }
    path = table_path(lakehouse, name)
    current = table_properties(spark, lakehouse, name)
    if all(current.get(k) == v for k, v in props.items()):
        return
    assignments = ", ".join(f"'{k}' = '{v}'" for k, v in props.items())
    spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES ({assignments})")


def table_properties(spark: SparkSession, lakehouse: str | Path, name: str) -> dict[str, str]:
    from delta.tables import DeltaTable

    detail = DeltaTable.forPath(spark, table_path(lakehouse, name)).detail().first()
    return dict(detail["properties"] or {})


def last_commit_metrics(
    spark: SparkSession, lakehouse: str | Path, name: str, *, operation_of_run: str | None = None
) -> dict[str, int]:
    """Operation metrics of the newest data commit (optionally: the newest one of a run)."""
    from delta.tables import DeltaTable

    history = DeltaTable.forPath(spark, table_path(lakehouse, name)).history(20)
    for row in history.select("operation", "operationMetrics", "userMetadata").collect():
        if row["operation"] == "SET TBLPROPERTIES":
            continue
        if operation_of_run and operation_of_run not in (row["userMetadata"] or ""):
            continue
        return {k: int(v) for k, v in (row["operationMetrics"] or {}).items() if v.lstrip("-").isdigit()}
    return {}


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
