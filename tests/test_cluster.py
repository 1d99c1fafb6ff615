"""A real Spark standalone cluster on loopback: a master and two workers started with the
installed pyspark's ``spark-class``, ``jobs/pipeline.py`` submitted with ``spark-submit`` on
the real Taobao sample, the gold tables checked, and the daemons stopped by PID."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyspark
import pytest
from conftest import assert_weight_means
from deltalake import DeltaTable

from sampleimp_spark import lake
from sampleimp_spark import schema as S
from sampleimp_spark.config import SparkConfig
from sampleimp_spark.session import DELTA_CATALOG, DELTA_EXTENSION, cached_delta_jars
from sampleimp_spark.windows import Windows

ROOT = Path(__file__).resolve().parents[1]
SPARK_HOME = Path(pyspark.__file__).parent

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"daemon exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise TimeoutError(f"nothing listens on port {port} after {timeout}s")


@pytest.fixture
def cluster(tmp_path, spark):  # `spark` first: its start caches the Delta JARs the submit uses
    env = {
        **os.environ,
        "SPARK_HOME": str(SPARK_HOME),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_LOG_DIR": str(tmp_path / "logs"),
        "SPARK_WORKER_DIR": str(tmp_path / "work"),
    }
    spark_class = str(SPARK_HOME / "bin" / "spark-class")
    port = _free_port()
    procs: list[subprocess.Popen] = []

    def start(*args: str, log: str) -> subprocess.Popen:
        out = open(tmp_path / log, "w")  # noqa: SIM115 - lives as long as the daemon
        proc = subprocess.Popen(
            [spark_class, *args], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        procs.append(proc)
        return proc

    try:
        master = start(
            "org.apache.spark.deploy.master.Master",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--webui-port",
            str(_free_port()),
            log="master.log",
        )
        _wait_for_port(port, master)
        for i in range(2):
            start(
                "org.apache.spark.deploy.worker.Worker",
                f"spark://127.0.0.1:{port}",
                "--host",
                "127.0.0.1",
                "--cores",
                "1",
                "--memory",
                "2g",
                "--webui-port",
                str(_free_port()),
                "--work-dir",
                str(tmp_path / f"work{i}"),
                log=f"worker{i}.log",
            )
        yield f"spark://127.0.0.1:{port}", env
    finally:
        for proc in procs:  # always stop what we started, by PID (their process groups)
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


#: Users of the real sample the cluster run keeps (of 815): the test's time budget.
USERS = 100
#: The sample's documented window (China days 2017-11-25 .. 12-03), in UTC.
VALID = (pd.Timestamp("2017-11-24T16:00:00Z"), pd.Timestamp("2017-12-03T16:00:00Z"))


def _subset(src: Path, dst: Path) -> int:
    """The lines of the first ``USERS`` users of the real sample, and its truncated last line, as they
    are; returns how many of them are valid events (five fields, inside the documented window)."""
    lines = src.read_bytes().rstrip(b"\n").split(b"\n")
    users: set[bytes] = set()
    kept = []
    for line in lines[:-1]:
        user = line.split(b",", 1)[0]
        if user in users or len(users) < USERS:
            users.add(user)
            kept.append(line)
    kept.append(lines[-1])  # the truncated line: a reject
    dst.write_bytes(b"\n".join(kept))
    valid = 0
    for line in kept:
        fields = line.split(b",")
        if len(fields) == 5 and fields[4].isdigit():
            ts = pd.Timestamp(int(fields[4]), unit="s", tz="UTC")
            valid += VALID[0] <= ts < VALID[1]
    return valid


@pytest.mark.timeout(1500)
def test_pipeline_on_a_standalone_cluster(cluster, tmp_path, shared_data):
    master, env = cluster
    jars = cached_delta_jars(SparkConfig())
    assert jars, "the suite's session caches the Delta JARs first"
    lakehouse = tmp_path / "lakehouse"
    taobao = tmp_path / "UserBehavior.csv"
    n_valid = _subset(shared_data / "taobao_userbehavior" / "UserBehavior.csv", taobao)
    assert 8_000 < n_valid < 14_000
    cmd = [
        str(SPARK_HOME / "bin" / "spark-submit"),
        "--master",
        master,
        "--deploy-mode",
        "client",
        "--jars",
        ",".join(jars),
        "--conf",
        f"spark.sql.extensions={DELTA_EXTENSION}",
        "--conf",
        f"spark.sql.catalog.spark_catalog={DELTA_CATALOG}",
        "--conf",
        "spark.sql.session.timeZone=UTC",
        "--conf",
        "spark.driver.host=127.0.0.1",
        "--conf",
        "spark.executor.memory=1g",
        "--conf",
        "spark.sql.shuffle.partitions=4",
        "--conf",
        "spark.ui.enabled=false",
        # Interpreted expressions, as in the suite's session: on ~11k rows generating and compiling
        # code for each wide projection costs more than it saves (420 s -> 298 s for this test).
        "--conf",
        "spark.sql.codegen.wholeStage=false",
        "--conf",
        "spark.sql.codegen.factoryMode=NO_CODEGEN",
        "--conf",
        "spark.sql.adaptive.enabled=false",  # as in the suite's session: re-planning costs more here
        # Delta reconstructs a table's state and filters its files for every query in 50 tasks by
        # default (sized for a cluster's logs); this lakehouse's logs are a few files each.
        "--conf",
        "spark.databricks.delta.snapshotPartitions=2",
        "--conf",
        f"spark.pyspark.python={sys.executable}",
        str(ROOT / "jobs" / "pipeline.py"),
        "--conf",
        str(ROOT / "conf" / "standalone.yaml"),
        "--run-id",
        "cluster-1",
        "--set",
        f"lakehouse={lakehouse}",
        "--set",
        f"run.runs_dir={tmp_path / 'runs'}",
        "--set",
        f"input.paths=[{taobao}]",
        "--set",
        "train.origins=1",
        "--set",
        "train.variants=[unweighted, combined]",
        "--set",
        "train.seeds=[1]",
        "--set",
        "train.als_reg_grid=[0.1]",
        "--set",
        "train.als_alpha_grid=[10.0]",
        "--set",
        "train.gbt_depth_grid=[3]",
        "--set",
        "train.half_life_grid=[null]",
        "--set",
        "weights.dr_target=recent",  # the other target (the default is covered by test_pipeline), with SNIPS
        "--set",
        "weights.density_ratio.cv_folds=2",
        "--set",
        "train.als.rank=8",
        "--set",
        "train.als.max_iter=3",
        "--set",
        "train.gbt.max_iter=3",
        "--set",
        "train.rerank=false",
        "--set",
        "train.evaluation.n_boot=100",
        "--set",
        "train.save_models=false",
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    assert "run cluster-1 finished" in done.stdout
    # The executors did the work: the application ran on the cluster's workers.
    worker_apps = list((tmp_path / "work0").glob("app-*")) + list((tmp_path / "work1").glob("app-*"))
    assert worker_apps, "no executor ran on the workers"

    events = DeltaTable(lake.table_path(str(lakehouse), S.BRONZE_EVENTS)).to_pyarrow_table()
    assert events.num_rows == n_valid  # the truncated line and the out-of-window rows rejected
    gold = DeltaTable(lake.table_path(str(lakehouse), S.GOLD_TRAINING_SAMPLES)).to_pandas()
    silver = DeltaTable(lake.table_path(str(lakehouse), S.SILVER_SAMPLES)).to_pandas()
    # Three windows (one origin: validation W_0 -> W_1, evaluation on W_2), the same rows in silver
    # and gold.
    assert gold.groupby(S.WINDOW_ID).size().to_dict() == silver.groupby(S.WINDOW_ID).size().to_dict()
    assert gold[S.WINDOW_ID].nunique() == 3
    # Every sample and every label of the evaluation window, recomputed from the raw file in pandas.
    latest = Windows.from_id(max(gold[S.WINDOW_ID]))
    expected = _taobao_samples(taobao, latest)
    got = gold[gold[S.WINDOW_ID] == latest.window_id].set_index([S.USER_ID, S.ITEM_ID])[S.LABEL_PURCHASE]
    assert got.sort_index().to_dict() == expected.sort_index().to_dict()
    # Weights: finite, non-negative, mean 1 in every window, each shard's its marginal or 1.
    assert np.isfinite(gold[S.WEIGHT]).all() and (gold[S.WEIGHT] >= 0).all()
    assert_weight_means(gold)
    metrics = DeltaTable(lake.table_path(str(lakehouse), S.GOLD_METRICS)).to_pandas()
    assert {"als", "gbt", "history", "popularity"} <= set(metrics["model"])
    assert {"unweighted", "combined"} <= set(metrics["variant"])
    ranking = metrics[metrics["metric"].isin(["precision_at_k", "recall_at_k", "ndcg_at_k", "map_at_k"])]
    auc = metrics[metrics["metric"] == "roc_auc"]
    assert len(ranking) and ranking["value"].between(0, 1).all()
    assert len(auc) and auc["value"].between(0, 1).all()
    summary = DeltaTable(lake.table_path(str(lakehouse), S.GOLD_EXPERIMENT_RESULTS)).to_pandas()
    assert set(summary["estimator"]) == {"unweighted", "snips"}  # the recent target's ratio: SNIPS too
    assert summary.loc[summary["estimator"] == "snips", "p_holm"].isna().all()  # descriptive
    assert (tmp_path / "runs" / "cluster-1" / "report.md").exists()


def _taobao_samples(path: Path, w: Windows) -> pd.Series:
    """``label_purchase`` per (user, item) pair active in the feature window, from the raw file."""
    raw = pd.read_csv(path, header=None, names=["user", "item", "cat", "behavior", "ts"], dtype=str)
    raw = raw.dropna()
    ts = pd.to_datetime(raw["ts"].astype("int64"), unit="s", utc=True)
    feature = raw[(ts >= w.t0) & (ts < w.t1)]
    label = raw[(ts >= w.t1) & (ts < w.t2) & (raw["behavior"] == "buy")]
    pairs = feature[["user", "item"]].drop_duplicates()
    bought = set(zip(label["user"], label["item"], strict=True))
    values = [int((u, i) in bought) for u, i in zip(pairs["user"], pairs["item"], strict=True)]
    index = pd.MultiIndex.from_frame(pairs, names=[S.USER_ID, S.ITEM_ID])
    return pd.Series(values, index=index, name=S.LABEL_PURCHASE)
