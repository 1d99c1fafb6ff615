"""The whole pipeline on generated events: every stage, gold read back without Spark, training
metrics and models, no leakage, and reruns that replace rows and reproduce the metrics.

One lakehouse and one run for the module: the stages are slow to start, so the assertions
share them.
"""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import assert_weight_means, stored_rdds
from deltalake import DeltaTable
from pyspark.sql import functions as F

from sampleimp_spark import lake, leases
from sampleimp_spark import schema as S
from sampleimp_spark.config import load_config
from sampleimp_spark.stages.pipeline import run_stages
from sampleimp_spark.windows import Windows

pytestmark = pytest.mark.slow  # the whole pipeline, then reruns and experiments on its tables

TRAIN = [
    "train.variants=[unweighted, combined]",
    "train.seeds=[1]",
    "train.origins=1",
    "train.als_reg_grid=[0.1]",
    "train.als_alpha_grid=[10.0]",
    "train.gbt_depth_grid=[2, 3]",  # a grid: the validation fits run (and free what they store)
    "train.half_life_grid=[1.0, null]",
    "train.als.rank=8",
    "train.als.max_iter=3",
    "train.als.candidates=20",
    "train.gbt.max_iter=3",
    "train.gbt.negative_rate=0.5",
    "train.evaluation.n_boot=200",
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
            "tracking.enabled=true",
            f"tracking.uri={Path(lakehouse).parent / 'mlruns'}",
            *TRAIN,
        ],
    )


@pytest.fixture(scope="module")
def first_run(spark, cfg):
    return run_stages(spark, cfg, run_id="pipeline-1")


@pytest.fixture(scope="module")
def first(first_run):
    return first_run.reports["train"]


def test_every_stage_reports(first_run, lakehouse):
    assert [s.name for s in first_run.progress.stages] == ["ingest", "features", "weights", "train"]
    assert all(s.status == "ok" for s in first_run.progress.stages)
    ingest, features, weights = (first_run.reports[k] for k in ("ingest", "features", "weights"))
    assert ingest.input_rows == ingest.events + sum(ingest.rejects.values()) + ingest.duplicates
    # The run's window and, before it, the windows of one origin: its training window and the
    # validation window before that, all of equal lengths, one label length apart.
    assert weights.window_id == features.latest.windows.window_id == first_run.reports["train"].window_id
    assert [w.window_id for w in weights.windows] == features.window_ids
    windows = [Windows.from_id(w) for w in features.window_ids]
    assert len(windows) == 3
    assert {(w.feature_days, w.label_days) for w in windows} == {(4.0, 1.0)}
    steps = [b.t1 - a.t1 for a, b in itertools.pairwise(windows)]
    assert steps == [windows[0].t2 - windows[0].t1] * 2
    assert first_run.reports["train"].result.windows == features.window_ids
    for built, weighted in zip(features.windows, weights.windows, strict=True):
        assert weighted.rows == built.samples > 1000
        assert weighted.shards == built.shards >= 2
    # Every window and month it wrote was leased (released since: the files stay, unlocked).
    keys = [leases.window_key("generator", w) for w in features.window_ids]
    keys += leases.month_keys("generator", ingest.first_date, ingest.last_date)
    stored = {p.name for p in (Path(lakehouse) / leases.FOLDER).iterdir()}
    assert {leases.file_name(k) for k in [*keys, leases.UPKEEP]} <= stored


def test_gold_reads_without_spark_at_a_pinned_version(first_run, lakehouse):
    table = DeltaTable(lake.table_path(lakehouse, S.GOLD_TRAINING_SAMPLES))
    version = table.version()
    pdf = DeltaTable(lake.table_path(lakehouse, S.GOLD_TRAINING_SAMPLES), version=version).to_pandas()
    assert len(pdf) == sum(w.rows for w in first_run.reports["weights"].windows)
    for col in (S.W_CLASS, S.W_DR, S.W_IG, S.W_TIME, S.W_RESAMPLE, S.WEIGHT, S.LABEL_PURCHASE, "user_n_events"):
        assert col in pdf.columns, col
    # w_time: the configured 2-day half-life of the pair's last event
    assert pdf[S.W_TIME].to_numpy() == pytest.approx(2.0 ** (-pdf["pair_recency_any"].to_numpy() / 2.0), rel=1e-12)
    assert np.isfinite(pdf[S.WEIGHT]).all() and (pdf[S.WEIGHT] >= 0).all()
    assert_weight_means(pdf)
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


def test_metrics_cover_every_arm_with_paired_comparisons(first, lakehouse):
    metrics = DeltaTable(lake.table_path(lakehouse, S.GOLD_METRICS)).to_pandas()
    assert set(metrics["run_id"]) == {"pipeline-1"}
    assert set(metrics["origin"]) == {first.window_id}
    models = {"als", "als+gbt", "gbt", "history", "popularity", "category_popularity"}
    assert set(metrics["model"]) == models
    assert set(metrics.loc[metrics["model"] == "als", "variant"]) == {"unweighted", "combined"}
    assert set(metrics.loc[metrics["model"] == "history", "variant"]) == {"-"}
    assert metrics["value"].between(0, 1).all()
    summary = DeltaTable(lake.table_path(lakehouse, S.GOLD_EXPERIMENT_RESULTS)).to_pandas()
    assert (summary["training_version"] == first.training_version).all()
    # n_boot: the replicates behind each interval (a classification replicate without a buyer, or
    # precision where nothing is predicted positive, is undefined); every ranking replicate over all
    # items is defined.
    assert summary["n_boot"].between(0, 200).all()
    assert (summary.loc[(summary["model"] != "gbt") & (summary["segment"] == "all"), "n_boot"] == 200).all()
    # Every ranking metric in three segments; each weighted variant compared with unweighted.
    als = summary[(summary["model"] == "als") & (summary["metric"] == "ndcg_at_k")]
    assert set(als["segment"]) == {"all", "repeat", "new"} and set(als["estimator"]) == {"unweighted"}  # no SNIPS here
    combined = als[als["variant"] == "combined"]
    assert combined[["delta", "delta_ci_low", "delta_ci_high", "p_value", "mde"]].notna().all().all()
    assert (combined["delta_ci_low"] <= combined["delta_ci_high"]).all()
    # Holm over every model × metric × variant at the primary estimator and segment
    primary = summary[summary["p_value"].notna() & (summary["estimator"] == "unweighted")]
    primary = primary[primary["segment"].isna() | (primary["segment"] == "all")]
    assert primary["p_holm"].notna().all() and (primary["p_holm"] >= primary["p_value"]).all()
    unweighted = als[als["variant"] == "unweighted"]
    assert unweighted["delta"].isna().all()
    merged = combined.merge(unweighted, on=["segment", "estimator"], suffixes=("", "_ref"))
    assert merged["delta"].to_numpy() == pytest.approx((merged["value"] - merged["value_ref"]).to_numpy())
    # Every ranking arm but the history baseline is compared with it.
    ranking = summary[summary["metric"] == "ndcg_at_k"]
    assert ranking.loc[ranking["model"] != "history", "vs_history"].notna().all()
    assert ranking.loc[ranking["model"] == "history", "vs_history"].isna().all()
    gbt = summary[summary["model"] == "gbt"]
    assert {"roc_auc", "average_precision", "log_loss", "precision_at_top", "f1_at_threshold"} <= set(gbt["metric"])
    assert set(first.result.tuned.gbt_depth.values()) <= {2, 3}
    assert first.result.tuned.half_life in (1.0, None)


def test_models_are_saved_with_the_table_version(first, lakehouse):
    folder = Path(lakehouse) / "models" / first.window_id / "pipeline-1"
    meta = json.loads((folder / "training.json").read_text())
    assert meta["version"] == first.training_version and meta["table"] == S.GOLD_TRAINING_SAMPLES
    assert meta["windows"] == first.result.windows
    for variant in ("unweighted", "combined"):
        for part in ("als", "gbt", "als_user_index"):
            assert (folder / f"{variant}-seed1" / part).is_dir()


def test_the_training_run_is_tracked_in_mlflow(spark, cfg, first, lakehouse, monkeypatch):
    """Config, tuned hyperparameters, every pooled value and Δ interval, and the models: loaded back
    from the MLflow store, they predict what the models stored in the lakehouse predict."""
    import mlflow
    from mlflow import MlflowClient
    from pyspark.ml import PipelineModel

    from sampleimp_spark.stages import tracking
    from sampleimp_spark.training.gbt import predict_proba

    uri, _ = tracking.store_uris(cfg.tracking)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("sampleimp_spark")
    (run,) = client.search_runs([exp.experiment_id], filter_string="tags.`sampleimp.run_id` = 'pipeline-1'")
    assert run.info.run_id == first.tracking_run and run.info.status == "FINISHED"
    assert run.data.tags["sampleimp.training_version"] == str(first.training_version)
    assert run.data.params["train.als.rank"] == "8"
    assert json.loads(run.data.params["train.variants"]) == ["unweighted", "combined"]
    assert json.loads(run.data.params["tuned.gbt_depth.combined"]) == first.result.tuned.gbt_depth["combined"]
    # Every pooled value, interval and paired Δ of gold.experiment_results, under a readable key.
    logged = 0
    for r in first.result.summary:
        stem = "/".join(str(r.get(k) or "all") for k in ("model", "variant", "segment", "metric", "estimator"))
        for col in ("value", "ci_low", "delta", "delta_ci_low", "delta_ci_high", "p_holm"):
            if r.get(col) is not None and np.isfinite(r[col]):
                assert run.data.metrics[stem.replace("+", "_") + "/" + col] == pytest.approx(r[col]), (stem, col)
                logged += 1
    assert logged > 100 and "als/combined/all/ndcg_at_k/unweighted/delta_ci_low" in run.data.metrics
    # The models, with signatures, load back and predict what the lakehouse's copies predict.
    models = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/models.json")
    assert set(models) == {f"{k}-{v}-seed1" for k in ("als", "gbt") for v in ("unweighted", "combined")}
    saved = lake.models_dir(lakehouse, first.window_id, "pipeline-1") / "combined-seed1"
    probe = lake.read_table(spark, lakehouse, S.GOLD_TRAINING_SAMPLES).where(
        F.col(S.WINDOW_ID) == first.result.windows[-2]
    )
    probe = probe.orderBy(S.USER_ID, S.ITEM_ID).limit(200)
    gbt = mlflow.spark.load_model(models["gbt-combined-seed1"])
    signature = mlflow.models.get_model_info(models["gbt-combined-seed1"]).signature
    features = signature.inputs.input_names()
    assert features == [c for c in probe.columns if S.is_feature_column(c)]

    def predictions(scored, keys, column="prediction"):
        return sorted(map(tuple, scored.select(*keys, column).collect()))

    keys = [S.USER_ID, S.ITEM_ID]
    signed = probe.select(*keys, *features)  # what the signature names is all the model needs
    assert predictions(predict_proba(gbt, signed), keys, S.PROBABILITY) == predictions(
        predict_proba(PipelineModel.load(str(saved / "gbt")), probe), keys, S.PROBABILITY
    )
    assert signature.outputs.input_names() == ["_gbt_prediction"]
    als = mlflow.spark.load_model(models["als-combined-seed1"])
    pairs = (
        spark.read.parquet(str(saved / "als_user_index"))
        .limit(20)
        .crossJoin(spark.read.parquet(str(saved / "als_item_index")).limit(20))
    )
    idx = [c for c in pairs.columns if c.startswith("_als_")]
    from pyspark.ml.recommendation import ALSModel

    stored = ALSModel.load(str(saved / "als"))
    scored = stored.getPredictionCol()
    assert predictions(als.transform(pairs), idx, scored) == predictions(stored.transform(pairs), idx, scored)
    signature = mlflow.models.get_model_info(models["als-combined-seed1"]).signature
    assert signature.inputs.input_names() == ["_als_user", "_als_item"]
    assert signature.outputs.input_names() == [scored]


def test_the_weighting_chosen_on_validation_is_what_gold_ships(spark, cfg, first, lakehouse):
    from sampleimp_spark.stages.weights import label_column
    from sampleimp_spark.training.protocol import variant_weights

    selection = DeltaTable(lake.table_path(lakehouse, S.GOLD_WEIGHT_SELECTION)).to_pandas()
    assert set(selection["run_id"]) == {"pipeline-1"} and set(selection[S.WINDOW_ID]) == {first.window_id}
    pairs = set(zip(selection["family"], selection["variant"], strict=True))
    assert pairs == {(f, v) for f in ("als", "gbt") for v in ("unweighted", "combined")}
    chosen = first.result.tuned.selection.chosen
    assert set(selection.loc[selection["chosen"], "variant"]) == {chosen}
    weighted = selection[selection["variant"] != "unweighted"]
    assert weighted[["delta", "delta_ci_low", "delta_ci_high", "mde"]].notna().all().all()
    # The newest window has no next window: no density ratio, so `combined` (b = 1) cannot ship;
    # it is evaluated and recorded, and named in the reason where it beat unweighted.
    assert chosen == "unweighted"
    rows = weighted.set_index(["family", "variant"])
    als_low, gbt_high = rows.loc[("als", "combined"), "delta_ci_low"], rows.loc[("gbt", "combined"), "delta_ci_high"]
    if als_low > 0 and gbt_high >= 0:
        assert "cannot ship: combined" in first.result.tuned.selection.reason
    props = lake.table_properties(spark, lakehouse, S.GOLD_TRAINING_SAMPLES)
    assert json.loads(props["sampleimp.weight_selection"])["chosen"] == chosen
    # The run's window carries the chosen weighting, recomputed from the components it was trained
    # on; every component column and every older window is as the weights stage wrote it.
    keys = [S.WINDOW_ID, S.USER_ID, S.ITEM_ID]
    trained = lake.read_table(spark, lakehouse, S.GOLD_TRAINING_SAMPLES, version=first.training_version)
    cc = cfg.weights.combine
    combine = {"a": cc.a, "b": cc.b, "c": cc.c, "d": cc.d, "clip_quantile": cc.clip_quantile}
    combine["label_col"] = label_column(cfg.weights)
    latest = trained.where(F.col(S.WINDOW_ID) == first.window_id)
    expected = variant_weights(latest, chosen, combine=combine, half_life_days=first.result.tuned.half_life)
    expected = expected.select(*keys, S.WEIGHT).toPandas().set_index(keys)[S.WEIGHT].sort_index()
    before = trained.toPandas().set_index(keys).sort_index()
    now = DeltaTable(lake.table_path(lakehouse, S.GOLD_TRAINING_SAMPLES)).to_pandas().set_index(keys).sort_index()
    assert now.index.equals(before.index)
    in_window = now.index.get_level_values(S.WINDOW_ID) == first.window_id
    assert now.loc[in_window, S.WEIGHT].to_numpy() == pytest.approx(expected.to_numpy(), rel=1e-12)
    assert now.loc[~in_window, S.WEIGHT].to_numpy() == pytest.approx(before.loc[~in_window, S.WEIGHT].to_numpy())
    components = [S.W_CLASS, S.W_DR, S.W_SHARD, S.W_IG, S.W_TIME, S.W_RESAMPLE, S.LABEL_PURCHASE]
    assert now[components].equals(before[components])
    if chosen == "unweighted":  # weight 1: no product, nothing clipped
        assert (now.loc[in_window, S.RAW_WEIGHT] == 1.0).all() and not now.loc[in_window, S.CLIPPED].any()
    # The window's diagnostics describe the weight it ships.
    diag = DeltaTable(lake.table_path(lakehouse, S.GOLD_WEIGHT_DIAGNOSTICS)).to_pandas()
    diag = diag[diag[S.WINDOW_ID] == first.window_id].set_index(S.SHARD).sort_index()
    shipped = now.loc[in_window].groupby(S.SHARD)[S.WEIGHT].agg(["size", "min", "max"]).sort_index()
    assert diag["rows"].tolist() == shipped["size"].tolist()
    assert diag["w_min"].to_numpy() == pytest.approx(shipped["min"].to_numpy())
    assert diag["w_max"].to_numpy() == pytest.approx(shipped["max"].to_numpy())


def _model_outputs(spark, lakehouse, windows, *, events=None, gold=None, variants=("unweighted", "combined")):
    """Run the experiment on the stored tables (or on replacements) and return the tuned
    hyperparameters and what the models of the latest origin predict: each variant's ALS lists and
    GBT scores of the training window's samples."""
    from sampleimp_spark.training import protocol as P
    from sampleimp_spark.training.als import recommend
    from sampleimp_spark.training.gbt import predict_proba

    events = events if events is not None else lake.read_table(spark, lakehouse, S.BRONZE_EVENTS)
    gold = gold if gold is not None else lake.read_table(spark, lakehouse, S.GOLD_TRAINING_SAMPLES)
    plan = P.ExperimentPlan(
        variants=variants,
        seeds=(1,),
        features=[c for c in gold.columns if S.is_feature_column(c)],
        als={"rank": 4, "max_iter": 3},
        strengths={"view": 1.0, "fav": 2.0, "cart": 3.0, "purchase": 4.0},
        candidates=10,
        gbt={"max_iter": 3},
        combine={"a": 1.0, "b": 1.0, "c": 1.0, "clip_quantile": 0.99},
        k=5,
        als_reg_grid=(0.05, 0.5),
        gbt_depth_grid=(2,),
        half_life_grid=(1.0, None),
        n_boot=100,
        negative_rate=0.5,
        rerank=False,  # the re-ranker adds no model: the captured ALS and GBT are the whole output
        parallelism=3,
    )
    probe = gold.where(F.col(S.WINDOW_ID) == windows[-2].window_id)
    users = probe.select(S.USER_ID).distinct()
    out: dict[str, object] = {}

    def capture(origin, variant, seed, als, gbt):
        lists = recommend(als, users, 5).select(S.USER_ID, S.ITEM_ID, S.RANK).collect()
        scores = predict_proba(gbt, probe).select(S.USER_ID, S.ITEM_ID, S.PROBABILITY).collect()
        out[variant] = (sorted(map(tuple, lists)), sorted(map(tuple, scores)))

    result = P.run_experiment(events, gold, windows, plan=plan, on_models=capture)
    return result.tuned.as_dict(), out


def test_no_evaluation_event_reaches_training_or_tuning(spark, lakehouse, first, monkeypatch):
    """The models and every tuned hyperparameter stay the same when the evaluation period's events
    and labels are scrambled; a protocol whose training events reach into the label period would
    not (shown with such a protocol)."""
    from sampleimp_spark.training import protocol as P

    windows = P.origin_windows(Windows.from_id(first.window_id), origins=1)
    evaluation = windows[-1]
    events = lake.read_table(spark, lakehouse, S.BRONZE_EVENTS)
    in_period = (F.col(S.TS) >= F.lit(evaluation.t1)) & (F.col(S.TS) < F.lit(evaluation.t2))
    assert events.where(in_period).count() > 100
    scrambled_events = events.withColumn(
        S.ITEM_ID, F.when(in_period, F.concat(F.lit("x"), F.col(S.ITEM_ID))).otherwise(F.col(S.ITEM_ID))
    ).withColumn(S.BEHAVIOR, F.when(in_period, F.lit("purchase")).otherwise(F.col(S.BEHAVIOR)))
    gold = lake.read_table(spark, lakehouse, S.GOLD_TRAINING_SAMPLES)
    flipped = F.when(F.col(S.WINDOW_ID) == evaluation.window_id, 1 - F.col(S.LABEL_PURCHASE))
    scrambled_gold = gold.withColumn(S.LABEL_PURCHASE, flipped.otherwise(F.col(S.LABEL_PURCHASE)))
    clean = _model_outputs(spark, lakehouse, windows)
    assert _model_outputs(spark, lakehouse, windows, events=scrambled_events, gold=scrambled_gold) == clean

    # A deliberately leaking protocol: its training events run a quarter of their span too far
    # (one variant is enough to show the check fails on it).
    between = P._between
    monkeypatch.setattr(P, "_between", lambda ev, start, end: between(ev, start, end + (end - start) / 4))
    one = ("unweighted",)
    leaky = _model_outputs(spark, lakehouse, windows, variants=one)
    assert (
        _model_outputs(spark, lakehouse, windows, events=scrambled_events, gold=scrambled_gold, variants=one) != leaky
    )


def test_origin_windows_are_equal_and_consecutive():
    from sampleimp_spark.training import protocol as P

    latest = Windows(
        datetime(2024, 1, 5, tzinfo=UTC), datetime(2024, 1, 9, tzinfo=UTC), datetime(2024, 1, 10, tzinfo=UTC)
    )
    got = P.origin_windows(latest, origins=2)
    assert [w.t1.day for w in got] == [6, 7, 8, 9]
    assert {(w.feature_days, w.label_days) for w in got} == {(4.0, 1.0)}
    assert P.max_origins(latest, datetime(2024, 1, 1, tzinfo=UTC)) == 3  # t0 may reach back to Jan 1
    assert P.max_origins(latest, datetime(2024, 1, 3, tzinfo=UTC)) == 1


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
    key = ("origin", "model", "variant", "seed", "segment", "metric", "estimator")
    a = {tuple(r[k] for k in key): r["value"] for r in first.result.per_origin}
    b = {tuple(r[k] for k in key): r["value"] for r in again.result.per_origin}
    assert a.keys() == b.keys()
    for k, v in a.items():
        assert b[k] == pytest.approx(v, abs=1e-6), k
    key = ("model", "variant", "segment", "metric", "estimator")
    nan = float("nan")
    a = {tuple(r[k] for k in key): (r["value"], r.get("delta_ci_low", nan)) for r in first.result.summary}
    b = {tuple(r[k] for k in key): (r["value"], r.get("delta_ci_low", nan)) for r in again.result.summary}
    assert a.keys() == b.keys()
    for k, v in a.items():
        assert b[k] == pytest.approx(v, abs=1e-6, nan_ok=True), k


def test_run_report_has_tables_and_plots(spark, cfg, first_run, tmp_path):
    from sampleimp_spark.stages.report import write_report

    cfg = cfg.model_copy(update={"run": cfg.run.model_copy(update={"runs_dir": str(tmp_path)})})
    path = write_report(spark, cfg, first_run)
    text = path.read_text()
    for section in ("## Stages", "## Weight diagnostics", "## Experiment results"):
        assert section in text, section
    for png in ("class_frequencies.png", "information_gain.png", "weights.png", "metrics.png"):
        assert f"]({png})" in text and (path.parent / png).stat().st_size > 10_000, png
    # The report and its plots are artifacts of the run's MLflow run too.
    from mlflow import MlflowClient

    from sampleimp_spark.stages.tracking import store_uris

    client = MlflowClient(tracking_uri=store_uris(cfg.tracking)[0])
    logged = {Path(a.path).name for a in client.list_artifacts(first_run.reports["train"].tracking_run, "report")}
    assert {"report.md", "metrics.png", "weights.png"} <= logged


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


def test_the_weights_stage_alone_ships_the_configured_product_and_says_so(spark, cfg, first, lakehouse):
    """After a weights run without training, ``weight`` is the configured product again (as the first
    run's weights stage wrote it) and the table property no longer names the last selection. Last in
    the module: it changes gold."""
    run_stages(spark, cfg, ("weights",), run_id="pipeline-3")
    props = lake.table_properties(spark, lakehouse, S.GOLD_TRAINING_SAMPLES)
    assert json.loads(props["sampleimp.weight_selection"])["chosen"] is None
    keys = [S.WINDOW_ID, S.USER_ID, S.ITEM_ID]
    path = lake.table_path(lakehouse, S.GOLD_TRAINING_SAMPLES)
    configured = DeltaTable(path, version=first.training_version).to_pandas().set_index(keys).sort_index()
    now = DeltaTable(path).to_pandas().set_index(keys).sort_index()
    assert now.index.equals(configured.index)
    assert now[S.WEIGHT].to_numpy() == pytest.approx(configured[S.WEIGHT].to_numpy(), rel=1e-9)
