"""MLflow tracking of training runs (the optional ``mlflow`` extra; ``tracking.enabled``).

One MLflow run per sampleimp run id (tag ``sampleimp.run_id``, run name = the run id) in the
experiment ``tracking.experiment`` of ``tracking.uri`` (default: the local folder ``mlruns``, a
SQLite store with its artifacts beside it). The run holds:

* params: the config flattened (``train.als.rank``) and the tuned hyperparameters (``tuned.*``);
* metrics: every ``gold.experiment_results`` row as ``<model>/<variant>/<segment>/<metric>/
  <estimator>/<column>`` for the value, its interval, Δ against unweighted with its interval, p_holm;
* artifacts: ``config.json``, ``tuned.json``, ``models.json`` (name -> model URI), the run report
  and its plots (``report/``), and the latest origin's ALS and GBT of every variant and seed as
  MLflow Spark models with signatures (``models/<als|gbt>-<variant>-seed<s>``).

A retried run id (same config hash) resumes its unfinished MLflow run; a finished one is left as it
is; a failure anywhere in the train stage marks the MLflow run FAILED.
"""

from __future__ import annotations

import json
import logging
import math
import re
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyspark
from pyspark.ml import PipelineModel
from pyspark.sql import types as T

from sampleimp_spark.config import Config, TrackingConfig
from sampleimp_spark.errors import ConfigError

if TYPE_CHECKING:
    from sampleimp_spark.training.als import FittedALS
    from sampleimp_spark.training.protocol import ExperimentResult

log = logging.getLogger(__name__)

#: The local folder of ``tracking.uri: null``.
DEFAULT_FOLDER = "mlruns"
#: Tag naming the sampleimp run an MLflow run belongs to.
RUN_TAG = "sampleimp.run_id"
#: Tag holding the config hash: a run id reused with another config is another MLflow run.
HASH_TAG = "sampleimp.config_hash"
#: ``gold.experiment_results`` columns logged as metrics.
METRIC_COLUMNS = ("value", "ci_low", "ci_high", "delta", "delta_ci_low", "delta_ci_high", "p_holm")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")
_BAD_KEY_CHARS = re.compile(r"[^A-Za-z0-9_\-./ ]")
_MLFLOW_TYPES: dict[type, str] = {
    T.DoubleType: "double",
    T.FloatType: "float",
    T.IntegerType: "integer",
    T.LongType: "long",
    T.BooleanType: "boolean",
    T.StringType: "string",
}


def _mlflow() -> Any:
    try:
        import mlflow
        import mlflow.spark  # the Spark flavour, used through `mlflow`
    except ImportError as exc:
        raise ConfigError(
            "tracking.enabled is true but MLflow is not installed: pip install 'sampleimp_spark[mlflow]'"
        ) from exc
    return mlflow


def require(cfg: Config) -> None:
    """Fail before any stage runs when tracking is on and MLflow is missing.

    Raises:
        ConfigError: ``tracking.enabled`` without the ``mlflow`` extra installed.
    """
    if cfg.tracking.enabled:
        _mlflow()


def store_uris(tcfg: TrackingConfig) -> tuple[str, str | None]:
    """``(tracking URI, artifact root of a new experiment)``: a folder (``tracking.uri`` without a
    scheme, or ``mlruns`` when null) becomes a SQLite store with an ``artifacts`` folder beside it;
    a URI is used as it is, with the server's own artifact root."""
    uri = tcfg.uri
    if uri is not None and (_SCHEME.match(uri) or uri == "databricks"):
        return uri, None
    folder = Path(uri or DEFAULT_FOLDER).expanduser().resolve()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"tracking.uri: the folder {folder} cannot be created: {exc.strerror}") from exc
    return f"sqlite:///{folder / 'mlflow.db'}", (folder / "artifacts").as_uri()


def flatten(data: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    """``(dotted key, text)`` of every leaf of a nested mapping; lists and nulls as JSON."""
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            yield from flatten(value, f"{name}.")
        else:
            yield name, value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def metric_items(rows: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """``gold.experiment_results`` rows as MLflow metrics (finite values only)."""
    out: dict[str, float] = {}
    for r in rows:
        stem = "/".join(str(r.get(k) or "all") for k in ("model", "variant", "segment", "metric", "estimator"))
        for col in METRIC_COLUMNS:
            value = r.get(col)
            if isinstance(value, int | float) and math.isfinite(value):
                out[_BAD_KEY_CHARS.sub("_", f"{stem}/{col}")] = float(value)
    return out


def gbt_signature(model: PipelineModel, schema: T.StructType, features: Iterable[str]) -> Any:
    """The GBT's signature: the feature columns it reads, its predicted class (P(y = 1) is the
    second entry of its probability vector: :func:`sampleimp_spark.training.gbt.predict_proba`)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    fields = {f.name: f.dataType for f in schema.fields}
    inputs: list[Any] = [ColSpec(_MLFLOW_TYPES.get(type(fields[c]), "double"), c) for c in features]
    classifier = model.stages[-1]
    output = classifier.getPredictionCol() if hasattr(classifier, "getPredictionCol") else "prediction"
    return ModelSignature(inputs=Schema(inputs), outputs=Schema([ColSpec("double", output)]))


def als_signature(als: FittedALS) -> Any:
    """The ALS model's signature: the int user and item indexes it reads, its predicted score."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    inputs: list[Any] = [ColSpec("integer", als.model.getUserCol()), ColSpec("integer", als.model.getItemCol())]
    return ModelSignature(inputs=Schema(inputs), outputs=Schema([ColSpec("float", als.model.getPredictionCol())]))


class Tracker:
    """One MLflow run, written through an explicit client (model callbacks come from the
    experiment's fitting threads; a lock keeps them one at a time)."""

    def __init__(self, cfg: Config, mlflow: Any, client: Any, mlflow_run_id: str, tracking_uri: str) -> None:
        self.cfg = cfg
        self.mlflow = mlflow
        self.client = client
        self.run_id = mlflow_run_id
        self.tracking_uri = tracking_uri
        self.models: dict[str, str] = {}
        self._lock = threading.Lock()

    @classmethod
    def open(cls, cfg: Config, run_id: str, tags: Mapping[str, str]) -> Tracker | None:
        """The MLflow run of ``run_id`` with this config (created, or resumed when a retry finds it
        unfinished); None when tracking is off or that run is already tracked to the end. A run id
        reused with another config (a scheduler's fixed ids) gets a run of its own."""
        if not cfg.tracking.enabled:
            return None
        mlflow = _mlflow()
        uri, artifacts = store_uris(cfg.tracking)
        client = mlflow.MlflowClient(tracking_uri=uri)
        experiment = client.get_experiment_by_name(cfg.tracking.experiment)
        if experiment is None:
            exp_id = client.create_experiment(cfg.tracking.experiment, artifact_location=artifacts)
        else:
            exp_id = experiment.experiment_id
        config_hash = cfg.hash()
        # Both values are safe inside quotes: a run id follows RUN_ID_PATTERN, a hash is hex.
        query = f"tags.`{RUN_TAG}` = '{run_id}' AND tags.`{HASH_TAG}` = '{config_hash}'"
        found = client.search_runs([exp_id], filter_string=query, max_results=1)
        if found and found[0].info.status == "FINISHED":
            log.info("run %s is already tracked as MLflow run %s: nothing logged", run_id, found[0].info.run_id)
            return None
        if found:
            mlflow_run_id = found[0].info.run_id
            client.update_run(mlflow_run_id, status="RUNNING")
        else:
            mlflow_run_id = client.create_run(
                exp_id, run_name=run_id, tags={RUN_TAG: run_id, HASH_TAG: config_hash}
            ).info.run_id
        tracker = cls(cfg, mlflow, client, mlflow_run_id, uri)
        try:
            for key, value in tags.items():
                client.set_tag(mlflow_run_id, key, value)
            tracker._log_params(dict(flatten(cfg.model_dump(mode="json"))))
            client.log_dict(mlflow_run_id, cfg.model_dump(mode="json"), "config.json")
        except BaseException:
            tracker.finish(ok=False)
            raise
        log.info("tracking run %s as MLflow run %s at %s", run_id, mlflow_run_id, uri)
        return tracker

    def _log_params(self, params: Mapping[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k[:250], v[:6000]) for k, v in sorted(params.items())]
        for i in range(0, len(items), 100):  # MLflow's batch limit
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log_models(
        self, variant: str, seed: int, als: FittedALS, gbt: PipelineModel, schema: T.StructType, features: list[str]
    ) -> None:
        """Log one variant's ALS and GBT as MLflow Spark models with their signatures."""
        if not self.cfg.tracking.log_models:
            return
        with self._lock, tempfile.TemporaryDirectory(prefix="sampleimp-mlflow-") as tmp:
            for kind, model, signature in (
                ("als", als.model, als_signature(als)),
                ("gbt", gbt, gbt_signature(gbt, schema, features)),
            ):
                name = f"{kind}-{variant}-seed{seed}"
                local = Path(tmp) / name
                self.mlflow.spark.save_model(
                    model,
                    str(local),
                    signature=signature,
                    dfs_tmpdir=self.cfg.tracking.dfs_tmpdir,
                    # Given, not inferred: inference loads each model again in a new process.
                    pip_requirements=[f"pyspark=={pyspark.__version__}"],
                )
                self.client.log_artifacts(self.run_id, str(local), f"models/{name}")
                self.models[name] = f"runs:/{self.run_id}/models/{name}"

    def log_results(self, result: ExperimentResult, lineage: Mapping[str, Any]) -> None:
        """Tuned hyperparameters (params and ``tuned.json``), every pooled result as metrics, the
        model URIs (``models.json``) and the lineage of the models (``training.json``)."""
        from mlflow.entities import Metric

        tuned = json.loads(json.dumps(result.tuned.as_dict(), default=str))
        self._log_params(dict(flatten(tuned, "tuned.")))
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, 0) for k, v in sorted(metric_items(result.summary).items())]
        for i in range(0, len(metrics), 1000):  # MLflow's batch limit
            self.client.log_batch(self.run_id, metrics=metrics[i : i + 1000])
        self.client.log_dict(self.run_id, tuned, "tuned.json")
        self.client.log_dict(self.run_id, self.models, "models.json")
        self.client.log_dict(self.run_id, json.loads(json.dumps(dict(lineage), default=str)), "training.json")

    def finish(self, ok: bool) -> None:
        self.client.set_terminated(self.run_id, status="FINISHED" if ok else "FAILED")


def log_report(cfg: Config, mlflow_run_id: str, folder: Path) -> None:
    """Add a run report folder (``report.md`` and its plots) to the run's artifacts as ``report/``."""
    mlflow = _mlflow()
    uri, _ = store_uris(cfg.tracking)
    mlflow.MlflowClient(tracking_uri=uri).log_artifacts(mlflow_run_id, str(folder), "report")
