"""The pipeline end to end on generated events; gold read back without Spark; reruns."""

from __future__ import annotations

import json

import numpy as np
import pytest
from deltalake import DeltaTable

from sampleimp_spark import lake
from sampleimp_spark import schema as S
from sampleimp_spark.config import load_config
from sampleimp_spark.pipeline import run_stages


@pytest.fixture(scope="module")
def lakehouse(tmp_path_factory):
    return str(tmp_path_factory.mktemp("pipeline") / "lakehouse")


@pytest.fixture(scope="module")
def cfg(lakehouse):
    return load_config(
        None,
        [
            f"lakehouse={lakehouse}",
            "input.generator.events=20000",
            "input.generator.users=400",
            "input.generator.items=3000",
            "input.generator.categories=30",
            "features.min_shard_rows=150",
            "weights.density_ratio.min_rows=20",
            "weights.density_ratio.cv_folds=3",
        ],
    )


@pytest.fixture(scope="module")
def first_run(spark, cfg):
    return run_stages(spark, cfg, run_id="pipeline-1")


def test_every_stage_reports(first_run):
    assert [s.name for s in first_run.progress.stages] == ["ingest", "features", "weights"]
    assert all(s.status == "ok" for s in first_run.progress.stages)
    ingest, features, weights = (first_run.reports[k] for k in ("ingest", "features", "weights"))
    assert ingest.input_rows == ingest.events + sum(ingest.rejects.values()) + ingest.duplicates
    assert weights.rows == features.samples > 1000
    assert weights.shards == features.shards >= 2


def test_gold_reads_without_spark_at_a_pinned_version(first_run, lakehouse):
    table = DeltaTable(lake.table_path(lakehouse, S.GOLD_TRAINING_SAMPLES))
    version = table.version()
    pdf = DeltaTable(lake.table_path(lakehouse, S.GOLD_TRAINING_SAMPLES), version=version).to_pandas()
    assert len(pdf) == first_run.reports["weights"].rows
    for col in (S.W_CLASS, S.W_DR, S.W_IG, S.W_RESAMPLE, S.WEIGHT, S.LABEL_PURCHASE, "user_n_events"):
        assert col in pdf.columns, col
    assert np.isfinite(pdf[S.WEIGHT]).all() and (pdf[S.WEIGHT] >= 0).all()
    assert pdf.groupby(S.SHARD)[S.WEIGHT].mean().to_numpy() == pytest.approx(1.0, abs=1e-9)
    meta = table.metadata()
    assert meta.partition_columns == [S.WINDOW_ID, "shard_bucket"]
    weights_cfg = json.loads(meta.configuration["sampleimp.weights_config"])
    assert weights_cfg["density_ratio"]["method"] == "logistic"
    # A reader that wants one shard reads only its bucket's files.
    shard = pdf[S.SHARD].value_counts().index[0]
    bucket = int(pdf.loc[pdf[S.SHARD] == shard, "shard_bucket"].iloc[0])
    one = table.to_pandas(filters=[("shard_bucket", "=", bucket), (S.SHARD, "=", shard)])
    assert len(one) == int((pdf[S.SHARD] == shard).sum())
    diag = DeltaTable(lake.table_path(lakehouse, S.GOLD_WEIGHT_DIAGNOSTICS)).to_pandas()
    assert set(diag[S.SHARD]) == set(pdf[S.SHARD])


def test_rerunning_features_and_weights_replaces_rows(spark, cfg, first_run, lakehouse):
    before = {
        name: DeltaTable(lake.table_path(lakehouse, name)).to_pandas()
        for name in (S.SILVER_SAMPLES, S.SILVER_CLASS_FREQUENCIES, S.GOLD_TRAINING_SAMPLES)
    }
    run_stages(spark, cfg, ("features", "weights"), run_id="pipeline-2")
    for name, old in before.items():
        new = DeltaTable(lake.table_path(lakehouse, name)).to_pandas()
        assert len(new) == len(old), name
    keys = [S.USER_ID, S.ITEM_ID]
    gold_old = before[S.GOLD_TRAINING_SAMPLES].set_index(keys)[S.WEIGHT].sort_index()
    gold_new = DeltaTable(lake.table_path(lakehouse, S.GOLD_TRAINING_SAMPLES)).to_pandas().set_index(keys)[S.WEIGHT]
    assert gold_new.sort_index().to_numpy() == pytest.approx(gold_old.to_numpy(), rel=1e-9)
