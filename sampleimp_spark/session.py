"""The one place a SparkSession is built; no session is created at import time.

* Inside ``spark-submit`` (or any process that already has a session), :func:`get_session` reuses
  the active session as is: the cluster's settings win. Delta must then come from the submit line
  (``--packages`` or ``--jars``); :func:`get_session` checks that and says how to fix it.
* Otherwise it builds a session with the Delta SQL extension and catalog, Arrow on, UTC, adaptive
  execution (with a local master, one Delta snapshot partition per core), and the Delta JARs.
  Spark's own resolver (Ivy) fetches the JARs from Maven Central on first use into
  ``spark.jars_cache_dir`` and a manifest of the files is written there; later sessions put those
  files on ``spark.jars`` directly, with no resolver and no network. Processes starting together
  on an empty cache resolve one at a time (a lock file in the cache).

Either way, a few Spark loggers whose warnings are expected here are quieted.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from pyspark.sql import SparkSession

from sampleimp_spark.config import SparkConfig

log = logging.getLogger(__name__)

DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
DELTA_CATALOG = "org.apache.spark.sql.delta.catalog.DeltaCatalog"

#: Settings every session of ours gets unless the caller overrides them in ``spark.conf``.
BASE_CONF: dict[str, str] = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.execution.arrow.pyspark.fallback.enabled": "false",
    "spark.sql.adaptive.enabled": "true",
    "spark.ui.showConsoleProgress": "false",
    # A local session's driver is its executor too: Spark's 1g default runs out of heap in the
    # training stage's broadcasts on the real Taobao sample. A maximum, not a reservation.
    "spark.driver.memory": "4g",
    # Delta: let a rerun replace only the rows its predicate names.
    "spark.databricks.delta.replaceWhere.dataColumns.enabled": "true",
    "spark.sql.extensions": DELTA_EXTENSION,
    "spark.sql.catalog.spark_catalog": DELTA_CATALOG,
}


#: Spark loggers that flood the console with warnings that are expected here: the window of
#: shard ids in the information gain runs over one small table (one row per shard) on purpose,
#: and checkpoints are released on purpose.
QUIET_LOGGERS: dict[str, str] = {
    "org.apache.spark.sql.execution.window.WindowExec": "ERROR",
    "org.apache.spark.sql.execution.window": "ERROR",
    # Releasing a local checkpoint (frames.release) is deliberate: its lineage is gone by design.
    "org.apache.spark.rdd.MapPartitionsRDD": "ERROR",
    # ALS persists its input, which may already be a checkpoint.
    "org.apache.spark.sql.execution.CacheManager": "ERROR",
    # Spark ML falls back to its Java BLAS when no native one is installed, and says so.
    "dev.ludovic.netlib": "ERROR",
    # GBT's task binaries (its trees) are broadcast; the size warning is expected.
    "org.apache.spark.scheduler.DAGScheduler": "ERROR",
    # Wide plans (one column per feature) are abbreviated in logs; the note about it is noise.
    "org.apache.spark.util.SparkStringUtils": "ERROR",
}


#: Tasks Delta reconstructs a table's state in, and filters its files for every query in: 50 by
#: default, sized for a cluster's logs. A locally built session uses one per core.
SNAPSHOT_PARTITIONS = "spark.databricks.delta.snapshotPartitions"


def is_local_master(master: str) -> bool:
    """``local``, ``local[N]``, ``local[*]``, ``local[N, F]``; not ``local-cluster[...]`` or a cluster's."""
    return master == "local" or master.startswith("local[")


def _local_defaults(spark: SparkSession) -> None:
    """A locally built session's Delta snapshot partitions: one per core (the context's default
    parallelism, Spark's own count), unless the Spark conf sets them (0.66 s -> 0.25 s per
    filtered query of a small table on 2 cores)."""
    sc = spark.sparkContext
    if is_local_master(sc.master or "") and not sc.getConf().contains(SNAPSHOT_PARTITIONS):
        spark.conf.set(SNAPSHOT_PARTITIONS, str(sc.defaultParallelism))


def _quiet(spark: SparkSession) -> None:
    """Set the log level of :data:`QUIET_LOGGERS` (log4j 2, Spark's logging)."""
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    configurator = jvm.org.apache.logging.log4j.core.config.Configurator
    for name, level in QUIET_LOGGERS.items():
        configurator.setLevel(name, jvm.org.apache.logging.log4j.Level.getLevel(level))


def _manifest_path(cfg: SparkConfig) -> Path:
    safe = cfg.delta_packages.replace(":", "_").replace(",", "+")
    return Path(cfg.jars_cache_dir).expanduser() / f"{safe}.jars"


def cached_delta_jars(cfg: SparkConfig) -> list[str] | None:
    """The JAR files resolved for ``cfg.delta_packages`` by an earlier session, if all exist."""
    manifest = _manifest_path(cfg)
    if not manifest.exists():
        return None
    jars = [line for line in manifest.read_text().splitlines() if line.strip()]
    if jars and all(Path(j).exists() for j in jars):
        return jars
    return None


def _record_resolved_jars(spark: SparkSession, cfg: SparkConfig) -> None:
    jars = spark.sparkContext.getConf().get("spark.jars", "")
    ivy_jars = Path(cfg.jars_cache_dir).expanduser() / "ivy" / "jars"
    files = []
    for uri in filter(None, jars.split(",")):
        path = Path(uri.removeprefix("file://").removeprefix("file:"))
        if path.parent == ivy_jars and path.exists():
            files.append(str(path))
    if files:
        manifest = _manifest_path(cfg)
        tmp = manifest.with_suffix(".tmp")
        tmp.write_text("\n".join(files) + "\n")
        tmp.replace(manifest)  # atomic: a half-written manifest is never read
        log.info("cached %d Delta JARs; manifest %s", len(files), manifest)


@contextlib.contextmanager
def _resolving(cfg: SparkConfig) -> Iterator[None]:
    """Hold the cache's lock: one process at a time resolves the JARs (parallel test workers, two
    jobs started together); the others wait, then find the manifest it wrote."""
    cache = Path(cfg.jars_cache_dir).expanduser()
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / "resolve.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # say why a start seems to hang through another's download
            log.info("waiting for another process resolving the Delta JARs into %s", cache)
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _has_delta(spark: SparkSession) -> bool:
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    try:
        jvm.java.lang.Class.forName(
            "io.delta.tables.DeltaTable", True, jvm.Thread.currentThread().getContextClassLoader()
        )
    except Exception:  # py4j raises a generic Py4JJavaError
        return False
    return True


def get_session(cfg: SparkConfig | None = None) -> SparkSession:
    """Return the active SparkSession, or build a local Delta-enabled one from ``cfg``.

    Raises:
        RuntimeError: the active session (e.g. from ``spark-submit``) lacks Delta Lake.
    """
    cfg = cfg or SparkConfig()
    active = SparkSession.getActiveSession()
    if active is None and os.environ.get("PYSPARK_GATEWAY_PORT"):
        # Launched by spark-submit: the JVM and its conf exist; builder picks them up.
        active = SparkSession.builder.getOrCreate()
    if active is not None:
        if not _has_delta(active):
            raise RuntimeError(
                "the running Spark session has no Delta Lake classes; submit with "
                f"--packages {cfg.delta_packages} (or --jars with the cached files listed in "
                f"{_manifest_path(cfg)}) and --conf spark.sql.extensions={DELTA_EXTENSION} "
                f"--conf spark.sql.catalog.spark_catalog={DELTA_CATALOG}"
            )
        _quiet(active)
        return active

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = SparkSession.builder.master(cfg.master).appName(cfg.app_name)
    conf = {**BASE_CONF, "spark.sql.shuffle.partitions": str(cfg.shuffle_partitions), **cfg.conf}
    with contextlib.ExitStack() as stack:
        jars = cached_delta_jars(cfg)
        if jars is None:
            stack.enter_context(_resolving(cfg))
            jars = cached_delta_jars(cfg)  # resolved meanwhile by the process we waited for?
        if jars is not None:
            conf["spark.jars"] = ",".join([*jars, *filter(None, conf.get("spark.jars", "").split(","))])
        else:
            ivy = Path(cfg.jars_cache_dir).expanduser() / "ivy"
            ivy.mkdir(parents=True, exist_ok=True)
            log.info("resolving %s into %s (first run; later runs are offline)", cfg.delta_packages, ivy)
            conf["spark.jars.packages"] = cfg.delta_packages
            conf["spark.jars.ivy"] = str(ivy)
        for key, value in conf.items():
            builder = builder.config(key, value)
        spark = builder.getOrCreate()
        _local_defaults(spark)
        if jars is None:
            _record_resolved_jars(spark, cfg)
    spark.sparkContext.setLogLevel(cfg.log_level)
    _quiet(spark)
    return spark
