"""One session-scoped local SparkSession (Delta on, UTC, UI off) for the whole suite."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SAMPLEIMP_SHARED_DATA", ROOT.parent / "shared" / "data"))

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
# Spark's own test mode (stricter internal checks); set before the JVM starts.
os.environ.setdefault("SPARK_TESTING", "1")
# MLflow's download progress bars are noise in a test log.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
# A pytest-xdist worker's __main__ has neither __spec__ nor __file__; pyspark.sql.connect (imported
# by mlflow.spark) takes that for a doctest run and calls sys.exit(0). Name the worker's main.
_main = sys.modules["__main__"]
if getattr(_main, "__spec__", None) is None and not hasattr(_main, "__file__"):
    _main.__file__ = "<pytest-xdist worker>"


#: The longest modules (whole pipelines, the cluster, the crash campaign): collected first, so that
#: with two workers (``make test``) they start first and the short ones fill in around them.
LONGEST = ("test_daily.py", "test_pipeline.py", "test_cluster.py", "test_campaigns.py", "test_weights_stage.py")


def pytest_collection_modifyitems(items):
    def rank(item) -> int:
        name = item.path.name
        return LONGEST.index(name) if name in LONGEST else len(LONGEST)

    items.sort(key=rank)  # stable: each module's tests keep their order, and stay together


@pytest.fixture(scope="session")
def spark():
    from sampleimp_spark.config import SparkConfig
    from sampleimp_spark.session import get_session

    cfg = SparkConfig(
        master="local[2]",
        app_name="sampleimp_spark-tests",
        shuffle_partitions=2,
        log_level="ERROR",
        conf={
            "spark.ui.enabled": "false",
            "spark.sql.adaptive.coalescePartitions.initialPartitionNum": "2",
            "spark.default.parallelism": "2",
            "spark.driver.memory": "4g",
            "spark.sql.sources.parallelPartitionDiscovery.parallelism": "2",
            # Test data is tiny: generating and compiling code for every (wide) projection costs
            # more than interpreting it (the cluster test interprets too). Production keeps Spark's
            # default, whole-stage code generation: `make demo` and benchmarks/ run with it.
            "spark.sql.codegen.wholeStage": "false",
            "spark.sql.codegen.factoryMode": "NO_CODEGEN",
            # Re-planning after every shuffle stage costs more than it finds on test-sized data
            # (two modules: 148 s -> 128 s, 151 s -> 136 s; results do not depend on it).
            # Production keeps adaptive execution on.
            "spark.sql.adaptive.enabled": "false",
        },
    )
    session = get_session(cfg)
    yield session
    session.stop()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"real samples not found at {SHARED_DATA} (CI keeps ../shared beside the clone)")
    return SHARED_DATA


@pytest.fixture
def lakehouse(tmp_path) -> str:
    return str(tmp_path / "lakehouse")


def write_text(path: Path, text: str) -> str:
    """Write ``text`` exactly (no newline added) and return the path as a string."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def canonical_args(lakehouse, path, *extra: str) -> list[str]:
    """``sampleimp`` options that ingest one canonical file into ``lakehouse``, then ``extra``."""
    return [
        "--set",
        f"lakehouse={lakehouse}",
        "--set",
        "input.source=canonical",
        "--set",
        f"input.paths={json.dumps([str(path)])}",
        *extra,
    ]


def stored_rdds(spark) -> dict[int, str]:
    """Id -> name of every RDD the session keeps stored (cached frames, checkpoints, ALS factors)."""
    rdds = spark.sparkContext._jsc.getPersistentRDDs()
    return {int(k): str(rdds.get(k).name()) for k in rdds.keySet()}


def assert_weight_means(gold) -> None:
    """``weight`` averages 1 over every window of ``gold`` (pandas), and over each of its shards
    either 1 (no density ratio in the weighting) or the shard's marginal ``w_shard`` (exponent 1),
    the same one for every shard of a window."""
    for window, rows in gold.groupby("window_id"):
        assert rows["weight"].mean() == pytest.approx(1.0, abs=1e-9), window
        by_shard = rows.groupby("shard").agg(
            mean=("weight", "mean"), marginal=("w_shard", "first"), spread=("w_shard", lambda w: w.max() - w.min())
        )
        assert (by_shard["spread"] == 0).all(), window  # one marginal per shard
        means, marginals = by_shard["mean"].to_numpy(), by_shard["marginal"].to_numpy()
        assert means == pytest.approx(1.0, abs=1e-9) or means == pytest.approx(marginals, abs=1e-9), window
