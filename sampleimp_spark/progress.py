"""Stage-level progress: start/end logs with row counts and durations, Spark job groups.

Each stage runs inside :meth:`RunProgress.stage`, which names the Spark jobs it triggers (so
the Spark UI reads like the pipeline) and logs one line when it starts and one when it ends.
Row counts come from what a stage computes anyway (aggregates it needs, Delta commit
metrics); nothing here triggers a Spark action of its own.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from pyspark.sql import SparkSession

log = logging.getLogger("sampleimp_spark")


@dataclass
class StageInfo:
    """What one stage did; filled in by the stage while it runs."""

    name: str
    seconds: float = 0.0
    rows_in: int | None = None
    rows_out: dict[str, int] = field(default_factory=dict)
    shards: int | None = None
    notes: list[str] = field(default_factory=list)
    status: str = "running"

    def line(self) -> str:
        parts = [f"{self.name:<10} {self.status:<6} {self.seconds:8.1f}s"]
        if self.rows_in is not None:
            parts.append(f"in={self.rows_in:,}")
        parts += [f"{k}={v:,}" for k, v in self.rows_out.items()]
        if self.shards is not None:
            parts.append(f"shards={self.shards:,}")
        return "  ".join(parts)


@dataclass
class RunProgress:
    """The stages of one run, in order."""

    run_id: str
    stages: list[StageInfo] = field(default_factory=list)

    @contextmanager
    def stage(self, spark: SparkSession, name: str, description: str = "") -> Iterator[StageInfo]:
        info = StageInfo(name)
        self.stages.append(info)
        spark.sparkContext.setJobGroup(f"{self.run_id}:{name}", description or name, interruptOnCancel=True)
        log.info("stage %s: start%s", name, f" ({description})" if description else "")
        start = time.perf_counter()
        try:
            yield info
            info.status = "ok"
        except BaseException:
            info.status = "failed"
            raise
        finally:
            info.seconds = time.perf_counter() - start
            spark.sparkContext.setLocalProperty("spark.jobGroup.id", None)  # type: ignore[arg-type]  # None clears it
            spark.sparkContext.setLocalProperty("spark.job.description", None)  # type: ignore[arg-type]
            log.info("stage %s: %s", name, info.line().split(None, 1)[1])

    def summary(self) -> str:
        return "\n".join(s.line() for s in self.stages)
