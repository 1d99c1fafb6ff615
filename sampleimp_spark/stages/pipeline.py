"""The stages in order, over one session and one config: what ``sampleimp run`` executes."""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession

from sampleimp_spark import lake
from sampleimp_spark.config import Config, check_run_id
from sampleimp_spark.errors import ConfigError
from sampleimp_spark.leases import UPKEEP, Leases
from sampleimp_spark.progress import RunProgress
from sampleimp_spark.stages import features, ingest, tracking, train, weights

log = logging.getLogger("sampleimp_spark")

#: Stage names in pipeline order.
STAGES: tuple[str, ...] = ("ingest", "features", "weights", "train")


def check_lakehouse(lakehouse: str) -> Path:
    """The lakehouse folder, created if absent.

    Raises:
        ConfigError: the path is a file, or the folder cannot be created or written to.
    """
    path = Path(lakehouse).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"lakehouse {path} is a file, not a folder: set lakehouse to a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"lakehouse {path} cannot be created: {exc.strerror}") from exc
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"lakehouse {path} is not writable by this user: fix its permissions or set lakehouse")
    return path


def new_run_id() -> str:
    """A fresh, sortable run id: UTC time plus a random suffix."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


@dataclass
class RunResult:
    """What a run did: per-stage reports and the progress log."""

    run_id: str
    progress: RunProgress
    reports: dict[str, Any] = field(default_factory=dict)


def run_stages(
    spark: SparkSession, cfg: Config, stages: Sequence[str] = STAGES, *, run_id: str | None = None
) -> RunResult:
    """Run ``stages`` (a subset of :data:`STAGES`, in pipeline order) and return their reports."""
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; stages are {list(STAGES)}")
    run_id = check_run_id(run_id) if run_id else cfg.run.run_id or new_run_id()
    check_lakehouse(cfg.lakehouse)
    if "train" in stages:
        tracking.require(cfg)
    progress = RunProgress(run_id)
    result = RunResult(run_id, progress)
    config_hash = cfg.hash()
    log.info(
        "run %s: stages %s, config hash %s, lakehouse %s",
        run_id,
        list(stages),
        config_hash,
        Path(cfg.lakehouse).expanduser().resolve(),
    )
    with Leases(cfg.lakehouse, run_id) as held:
        held.acquire(UPKEEP, shared=True)  # `sampleimp maintain` waits for no run
        for name in STAGES:
            if name not in stages:
                continue
            ctx = lake.RunContext(run_id=run_id, config_hash=config_hash, stage=name, leases=held)
            if name == "ingest":
                result.reports[name] = ingest.run(spark, cfg, ctx=ctx, progress=progress)
            elif name == "features":
                result.reports[name] = features.run(spark, cfg, ctx=ctx, progress=progress)
            elif name == "weights":
                built = result.reports.get("features")
                window_ids = built.window_ids if built is not None else None
                result.reports[name] = weights.run(spark, cfg, ctx=ctx, progress=progress, window_ids=window_ids)
            elif name == "train" and not cfg.train.enabled and len(stages) > 1:
                log.info("train: skipped (train.enabled: false)")
            elif name == "train":
                weighted = result.reports.get("weights")
                window_id = weighted.window_id if weighted is not None else None
                result.reports[name] = train.run(spark, cfg, ctx=ctx, progress=progress, window_id=window_id)
    log.info("run %s summary:\n%s", run_id, progress.summary())
    return result
