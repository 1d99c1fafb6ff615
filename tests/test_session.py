"""The session builder: Delta on, UTC, and Delta JARs from the local cache without network."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from sampleimp_spark.config import SparkConfig
from sampleimp_spark.session import cached_delta_jars, is_local_master

# A JVM whose every HTTP(S) connection goes to a closed local port: no network at all.
NO_NETWORK = "-Dhttp.proxyHost=127.0.0.1 -Dhttp.proxyPort=9 -Dhttps.proxyHost=127.0.0.1 -Dhttps.proxyPort=9"

SCRIPT = textwrap.dedent("""
    import sys
    from sampleimp_spark.config import SparkConfig
    from sampleimp_spark.session import get_session
    spark = get_session(SparkConfig(master="local[1]", jars_cache_dir=sys.argv[1], log_level="ERROR",
                                    conf={"spark.ui.enabled": "false"}))
    assert spark.conf.get("spark.jars.packages", None) is None
    assert spark.conf.get("spark.databricks.delta.snapshotPartitions") == "1"  # local[1]: one core
    spark.range(3).write.format("delta").save(sys.argv[2])
    print("rows", spark.read.format("delta").load(sys.argv[2]).count())
""")


def test_session_is_utc_with_delta_and_arrow(spark):
    assert spark.conf.get("spark.sql.session.timeZone") == "UTC"
    assert spark.conf.get("spark.sql.execution.arrow.pyspark.enabled") == "true"
    assert "DeltaSparkSessionExtension" in spark.conf.get("spark.sql.extensions")


def test_a_local_session_reconstructs_delta_state_in_one_partition_per_core(spark):
    # The suite's session is local[2] and its conf does not set it: the builder's default.
    assert spark.conf.get("spark.databricks.delta.snapshotPartitions") == "2"
    assert all(is_local_master(m) for m in ("local", "local[3]", "local[*]", "local[4, 2]", "local[*,3]"))
    # A cluster's master keeps Delta's default (sized for a cluster's logs).
    assert not any(is_local_master(m) for m in ("spark://127.0.0.1:7077", "yarn", "local-cluster[2,1,1024]"))


def _run_offline(jars_cache_dir: str, table: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "JAVA_TOOL_OPTIONS": NO_NETWORK}
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, jars_cache_dir, table], env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_later_sessions_start_offline_from_the_cached_jars(spark, tmp_path):
    cfg = SparkConfig()  # the suite's session resolved (or reused) the default cache
    jars = cached_delta_jars(cfg)
    assert jars and any("delta-spark_4.2_2.13-4.4.0" in j for j in jars)
    done = _run_offline(cfg.jars_cache_dir, str(tmp_path / "t"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rows 3" in done.stdout
    # The same start with an empty cache must go to the network, and fails without it:
    # proof that the run above really used the cache.
    fresh = _run_offline(str(tmp_path / "empty-cache"), str(tmp_path / "u"))
    assert fresh.returncode != 0
    assert "delta-spark" in fresh.stderr
