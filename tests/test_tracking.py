"""MLflow tracking without Spark: where the store is, what a retried run id does, and the error
when MLflow is missing. The pipeline module checks a tracked training run end to end."""

from __future__ import annotations

import builtins

import pytest
from mlflow import MlflowClient

from sampleimp_spark.config import ConfigError, load_config
from sampleimp_spark.stages import tracking
from sampleimp_spark.stages.pipeline import STAGES, run_stages


def _cfg(*settings: str):
    return load_config(None, ["tracking.enabled=true", *settings])


def test_a_folder_or_the_default_is_a_local_sqlite_store_with_its_artifacts(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert tracking.store_uris(_cfg().tracking) == (
        f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}",
        (tmp_path / "mlruns" / "artifacts").as_uri(),
    )
    assert tracking.store_uris(_cfg("tracking.uri=runs/ml").tracking)[0] == f"sqlite:///{tmp_path}/runs/ml/mlflow.db"
    for uri in ("http://mlflow.internal:5000", "databricks", "sqlite:////var/ml.db"):
        assert tracking.store_uris(_cfg(f"tracking.uri={uri}").tracking) == (uri, None)


def test_off_by_default_and_kept_out_of_the_config_hash(tmp_path):
    cfg = load_config(None, [])
    assert not cfg.tracking.enabled and tracking.Tracker.open(cfg, "r1", {}) is None
    assert _cfg(f"tracking.uri={tmp_path}").hash() == cfg.hash()  # tracking changes no result


def test_a_retried_run_id_resumes_its_unfinished_run_and_leaves_a_finished_one(tmp_path):
    cfg = _cfg(f"tracking.uri={tmp_path / 'mlruns'}")
    first = tracking.Tracker.open(cfg, "nightly-1", {"sampleimp.window_id": "w"})
    assert first is not None
    first.finish(ok=False)  # the training crashed
    again = tracking.Tracker.open(cfg, "nightly-1", {})
    assert again is not None and again.run_id == first.run_id
    client = MlflowClient(tracking_uri=tracking.store_uris(cfg.tracking)[0])
    assert client.get_run(first.run_id).info.status == "RUNNING"
    again.finish(ok=True)
    assert tracking.Tracker.open(cfg, "nightly-1", {}) is None  # done: nothing logged twice
    other = tracking.Tracker.open(cfg, "nightly-2", {})
    assert other is not None and other.run_id != first.run_id
    # The same run id with another config (a scheduler's fixed id after a config change): a new run.
    changed = tracking.Tracker.open(_cfg(f"tracking.uri={tmp_path / 'mlruns'}", "train.seeds=[1, 2]"), "nightly-1", {})
    assert changed is not None and changed.run_id not in (first.run_id, other.run_id)
    run = client.get_run(first.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "nightly-1"
    assert run.data.tags["sampleimp.window_id"] == "w" and run.data.params["train.seeds"] == "[1]"


def test_metric_keys_name_the_arm_and_skip_missing_values():
    rows = [
        {"model": "als+gbt", "variant": "combined", "segment": None, "metric": "ndcg_at_k", "estimator": "snips"}
        | {"value": 0.25, "ci_low": 0.2, "delta": None, "p_holm": float("nan")},
    ]
    assert tracking.metric_items(rows) == {
        "als_gbt/combined/all/ndcg_at_k/snips/value": 0.25,
        "als_gbt/combined/all/ndcg_at_k/snips/ci_low": 0.2,
    }


def test_without_mlflow_installed_the_error_says_what_to_install_before_any_stage(monkeypatch, tmp_path):
    real = builtins.__import__

    def no_mlflow(name, *args, **kwargs):
        if name == "mlflow" or name.startswith("mlflow."):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_mlflow)
    with pytest.raises(ConfigError, match=r"pip install 'sampleimp_spark\[mlflow\]'"):
        tracking.Tracker.open(_cfg(), "r1", {})
    # A run that would train stops before its first stage (no Spark needed to get there).
    lakehouse = tmp_path / "lakehouse"
    with pytest.raises(ConfigError, match="MLflow is not installed"):
        run_stages(None, _cfg(f"lakehouse={lakehouse}"), STAGES, run_id="r1")
    assert not any(lakehouse.glob("*/*/_delta_log"))
    run_stages(None, _cfg(f"lakehouse={lakehouse}"), (), run_id="r2")  # no training: no MLflow needed
