"""The whole pipeline on generated events: every stage, gold read back without Spark, training
metrics and models, no leakage, and reruns that replace rows and reproduce the metrics.

One lakehouse and one run for the module: the stages are slow to start, so the assertions
share them.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import stored_rdds
from deltalake import DeltaTable
from pyspark.sql import functions as F

from sampleimp_spark import lake
from sampleimp_spark import schema as S
from sampleimp_spark.config import load_config
from sampleimp_spark.errors import BadInputError
from sampleimp_spark.stages.pipeline import run_stages
from sampleimp_spark.training.protocol import ground_truth, summarize, training_window
from sampleimp_spark.windows import Windows

TRAIN = [
    "train.variants=[unweighted, combined]",
    "train.seeds=[1, 2]",
    "train.als_reg_grid=[0.05, 0.5]",
    "train.gbt_depth_grid=[2, 3]",  # a grid: the depth search runs (and frees what it stores)
    "train.als.rank=8",
    "train.als.max_iter=5",
    "train.als.candidates=20",
    "train.gbt.max_iter=8",
    "train.evaluation.n_boot=5",
    "train.evaluation.k=5",
]


@pytest.fixture(scope="module")
def lakehouse(tmp_path_factory):
    return str(tmp_path_factory.mktemp("pipeline") / "lakehouse")


@pytest.fixture(scope="module")
def cfg(lakehouse):
    return load_config(
        None,
        [
            f"lakehouse={lakehouse}",
            "input.generator.events=15000",
            "input.generator.users=300",
            "input.generator.items=2000",
            "input.generator.categories=20",
            "features.min_shard_rows=200",
            "weights.density_ratio.min_rows=20",
            "weights.density_ratio.cv_folds=3",
            *TRAIN,
        ],
    )


@pytest.fixture(scope="module")
def first_run(spark, cfg):
    return run_stages(spark, cfg, run_id="pipeline-1")


@pytest.fixture(scope="module")
def first(first_run):
    return first_run.reports["train"]


def test_every_stage_reports(first_run):
    assert [s.name for s in first_run.progress.stages] == ["ingest", "features", "weights", "train"]
    assert all(s.status == "ok" for s in first_run.progress.stages)
    ingest, features, weights = (first_run.reports[k] for k in ("ingest", "features", "weights"))
    assert ingest.input_rows == ingest.events + sum(ingest.rejects.values()) + ingest.duplicates
    # The run's window and, before it, the training window of the experiment.
    assert weights.window_id == features.latest.windows.window_id == first_run.reports["train"].window_id
    assert [w.window_id for w in weights.windows] == features.window_ids
    assert first_run.reports["train"].training_window_id == features.window_ids[0]
    for built, weighted in zip(features.windows, weights.windows, strict=True):
        assert weighted.rows == built.samples > 1000
        assert weighted.shards == built.shards >= 2


def test_gold_reads_without_spark_at_a_pinned_version(first_run, lakehouse):
    table = DeltaTable(lake.table_path(lakehouse, S.GOLD_TRAINING_SAMPLES))
    version = table.version()
    pdf = DeltaTable(lake.table_path(lakehouse, S.GOLD_TRAINING_SAMPLES), version=version).to_pandas()
    assert len(pdf) == sum(w.rows for w in first_run.reports["weights"].windows)
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
    # Each file's rows are sorted by shard (then user and item), so its shard min/max are narrow.
    keys = [S.SHARD, S.USER_ID, S.ITEM_ID]
    for uri in table.file_uris():
        rows = pq.read_table(uri.removeprefix("file://"), columns=keys).to_pandas()
        assert rows.equals(rows.sort_values(keys, ignore_index=True)), uri
    diag = DeltaTable(lake.table_path(lakehouse, S.GOLD_WEIGHT_DIAGNOSTICS)).to_pandas()
    assert set(diag[S.SHARD]) == set(pdf[S.SHARD])


def test_metrics_cover_every_model_variant_and_seed(first, lakehouse):
    metrics = DeltaTable(lake.table_path(lakehouse, S.GOLD_METRICS)).to_pandas()
    assert set(metrics["run_id"]) == {"pipeline-1"}
    combos = set(zip(metrics["model"], metrics["variant"], metrics["seed"], strict=True))
    assert combos == {(m, v, s) for m in ("als", "gbt", "als+gbt") for v in ("unweighted", "combined") for s in (1, 2)}
    als = metrics[(metrics["model"] == "als") & (metrics["metric"] == "ndcg_at_k")]
    assert set(als["estimator"]) == {"unweighted", "self_normalized", "ips"}
    assert als["value"].between(0, 1).all() and (als["ci_low"] <= als["ci_high"]).all()
    gbt = metrics[(metrics["model"] == "gbt") & (metrics["metric"] == "roc_auc")]
    assert set(gbt["estimator"]) == {"unweighted", "self_normalized"}
    assert (metrics["training_version"] == first.training_version).all()
    summary = DeltaTable(lake.table_path(lakehouse, S.GOLD_EXPERIMENT_RESULTS)).to_pandas()
    row = summary[
        (summary["model"] == "gbt")
        & (summary["variant"] == "combined")
        & (summary["metric"] == "roc_auc")
        & (summary["estimator"] == "unweighted")
    ].iloc[0]
    seeds = gbt[(gbt["variant"] == "combined") & (gbt["estimator"] == "unweighted")]["value"]
    assert row["seeds"] == 2 and row["mean"] == pytest.approx(seeds.mean())
    assert first.hyperparameters["als_reg_param"] in (0.05, 0.5) and first.hyperparameters["gbt_max_depth"] in (2, 3)


def test_models_are_saved_with_the_table_version(first, lakehouse):
    folder = Path(lakehouse) / "models" / first.window_id / "pipeline-1"
    meta = json.loads((folder / "training.json").read_text())
    assert meta["version"] == first.training_version and meta["table"] == S.GOLD_TRAINING_SAMPLES
    for variant in ("unweighted", "combined"):
        for part in ("als", "gbt", "als_user_index"):
            assert (folder / f"{variant}-seed1" / part).is_dir()


def test_no_evaluation_event_reaches_training(spark, lakehouse, first):
    w = Windows.from_id(first.window_id)
    t = training_window(w)
    assert t.t2 == w.t1 and t.t0 == w.t0  # the training window's labels end where evaluation starts
    events = lake.read_table(spark, lakehouse, S.BRONZE_EVENTS)
    truth = ground_truth(events, start=w.t1, end=w.t2)
    assert truth.count() > 0
    # Every ground-truth pair is judged on label-window events only.
    late = events.where(F.col(S.TS) >= F.lit(w.t1)).select(S.USER_ID, S.ITEM_ID).distinct()
    assert truth.join(late, [S.USER_ID, S.ITEM_ID], "left_anti").count() == 0
    with pytest.raises(BadInputError, match="longer than the label"):
        training_window(
            Windows(
                datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 2, tzinfo=UTC), datetime(2024, 1, 4, tzinfo=UTC)
            )
        )


def test_summarize_means_and_std_over_seeds():
    rows = [
        {
            "model": "als",
            "variant": "v",
            "metric": "m",
            "estimator": "unweighted",
            "k": 5,
            "value": x,
            "ci_low": x - 0.1,
            "ci_high": x + 0.1,
        }
        for x in (0.2, 0.4, 0.6)
    ]
    (s,) = summarize(rows)
    assert (s["seeds"], s["mean"], s["std"], s["ci_low"]) == (
        3,
        pytest.approx(0.4),
        pytest.approx(0.2),
        pytest.approx(0.3),
    )


def test_rerun_replaces_rows_and_reproduces_the_metrics(spark, cfg, first, lakehouse):
    names = (S.SILVER_SAMPLES, S.SILVER_CLASS_FREQUENCIES, S.GOLD_TRAINING_SAMPLES)
    before = {name: DeltaTable(lake.table_path(lakehouse, name)).to_pandas() for name in names}
    stored = stored_rdds(spark)
    again = run_stages(spark, cfg, ("features", "weights", "train"), run_id="pipeline-2").reports["train"]
    # Nothing the stages cached or checkpointed (ALS's factors included) outlives them. Delta
    # keeps the table snapshots it reads cached ("Delta Table State"), and manages them itself.
    left = {k: v for k, v in stored_rdds(spark).items() if k not in stored}
    assert {k: v for k, v in left.items() if not v.startswith("Delta Table State")} == {}
    for name, old in before.items():
        assert len(DeltaTable(lake.table_path(lakehouse, name)).to_pandas()) == len(old), name
    keys = [S.WINDOW_ID, S.USER_ID, S.ITEM_ID]
    gold_old = before[S.GOLD_TRAINING_SAMPLES].set_index(keys)[S.WEIGHT].sort_index()
    gold_new = DeltaTable(lake.table_path(lakehouse, S.GOLD_TRAINING_SAMPLES)).to_pandas().set_index(keys)[S.WEIGHT]
    assert gold_new.sort_index().to_numpy() == pytest.approx(gold_old.to_numpy(), rel=1e-9)
    # Same data (a new table version with the same rows), same seeds: the same metrics.
    assert again.training_version > first.training_version
    key = ("model", "variant", "seed", "metric", "estimator")
    a = {tuple(r[k] for k in key): r["value"] for r in first.rows}
    b = {tuple(r[k] for k in key): r["value"] for r in again.rows}
    assert a.keys() == b.keys()
    for k, v in a.items():
        assert (v is None and b[k] is None) or b[k] == pytest.approx(v, abs=1e-6), k


def test_run_report_has_tables_and_plots(spark, cfg, first_run, tmp_path):
    from sampleimp_spark.stages.report import write_report

    cfg = cfg.model_copy(update={"run": cfg.run.model_copy(update={"runs_dir": str(tmp_path)})})
    path = write_report(spark, cfg, first_run)
    text = path.read_text()
    for section in ("## Stages", "## Weight diagnostics", "## Experiment results"):
        assert section in text, section
    for png in ("class_frequencies.png", "information_gain.png", "weights.png", "metrics.png"):
        assert f"]({png})" in text and (path.parent / png).stat().st_size > 10_000, png


def test_downstream_notebook_runs_headless_against_the_lakehouse(first_run, lakehouse, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("SAMPLEIMP_LAKEHOUSE", lakehouse)
    nb = nbformat.read(Path(__file__).resolve().parents[1] / "notebooks" / "downstream_training.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3").execute()
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "gold.training_samples version" in outputs
    last = nb.cells[-1]["outputs"][0]["data"]["text/plain"]
    assert "unweighted" in last and "weighted" in last
