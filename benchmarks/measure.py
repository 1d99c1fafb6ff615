"""Measurement helpers of ``run_all.py`` on top of ``harness.py``: Spark shuffle spill, the driver
Python's own memory, repetitions with a warm-up and medians, and the machine's load.

Shuffle spill comes from Spark's monitoring REST API, which local mode serves too when the UI
is on (``spark.ui.enabled=true``, a free ``spark.ui.port``): after a measured block, the stages
that completed during it are read from ``/api/v1/applications/<id>/stages`` and their
``memoryBytesSpilled`` / ``diskBytesSpilled`` (and shuffle read/write bytes) are summed.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import PeriodicSampler, RssSampler, rss_mib
from pyspark.sql import SparkSession


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now (for the Spark UI)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def load_info() -> dict[str, object]:
    """Load averages and available memory: how busy the machine was (other work may run on it)."""
    one, five, fifteen = os.getloadavg()
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    avail_kb = next(int(line.split()[1]) for line in meminfo if line.startswith("MemAvailable"))
    return {
        "loadavg_1m": round(one, 2),
        "loadavg_5m": round(five, 2),
        "loadavg_15m": round(fifteen, 2),
        "mem_available_gib": round(avail_kb / 2**20, 1),
    }


class SparkStageMetrics:
    """Sums task metrics of the Spark stages that complete between :meth:`mark` and :meth:`since`.

    Reads the monitoring REST API of the session's own UI; works in local mode. When the UI is
    off, every figure is ``None``.
    """

    FIELDS = ("memoryBytesSpilled", "diskBytesSpilled", "shuffleReadBytes", "shuffleWriteBytes")

    def __init__(self, spark: SparkSession) -> None:
        sc = spark.sparkContext
        self.spark = spark
        self.url = sc.uiWebUrl
        self.app_id = sc.applicationId
        self._seen: set[tuple[int, int]] = set()

    def _stages(self) -> list[dict[str, Any]]:
        if not self.url:
            return []
        api = f"{self.url}/api/v1/applications/{self.app_id}/stages?status=complete"
        with urllib.request.urlopen(api, timeout=60) as resp:
            return json.loads(resp.read())

    def _settle(self) -> list[dict[str, Any]]:
        """The completed stages once the listener bus has caught up (two equal reads in a row)."""
        tracker = self.spark.sparkContext.statusTracker()
        deadline = time.monotonic() + 30
        while tracker.getActiveStageIds() and time.monotonic() < deadline:
            time.sleep(0.2)
        before = self._stages()
        while time.monotonic() < deadline:
            time.sleep(0.5)
            now = self._stages()
            if len(now) == len(before):
                return now
            before = now
        return before

    def mark(self) -> None:
        """Remember the stages completed so far."""
        self._seen = {(s["stageId"], s["attemptId"]) for s in self._settle()}

    def since(self) -> dict[str, int | None]:
        """Summed metrics (MiB for bytes) of the stages completed since :meth:`mark`, and their count."""
        if not self.url:
            return {"spill_memory_mib": None, "spill_disk_mib": None, "shuffle_read_mib": None, "stages": None}
        new = [s for s in self._settle() if (s["stageId"], s["attemptId"]) not in self._seen]
        tot = {f: sum(int(s.get(f, 0) or 0) for s in new) for f in self.FIELDS}
        mib = 2**20
        return {
            "spill_memory_mib": round(tot["memoryBytesSpilled"] / mib, 1),
            "spill_disk_mib": round(tot["diskBytesSpilled"] / mib, 1),
            "shuffle_read_mib": round(tot["shuffleReadBytes"] / mib, 1),
            "shuffle_write_mib": round(tot["shuffleWriteBytes"] / mib, 1),
            "stages": len(new),
        }


@dataclass
class SelfRssSampler(PeriodicSampler):
    """Peak RSS of this (driver Python) process: where the single-node references run."""

    interval: float = 0.2
    peak_mib: float = 0.0

    def sample(self) -> None:
        self.peak_mib = max(self.peak_mib, rss_mib(os.getpid()))


@contextmanager
def measured(spark: SparkSession | None, metrics: SparkStageMetrics | None) -> Iterator[dict[str, Any]]:
    """Time a block and sample memory: Spark's JVM and Python workers (when ``spark`` is given), the
    driver Python process itself, and the spill of the Spark stages the block ran."""
    out: dict[str, Any] = {}
    if metrics is not None:
        metrics.mark()
    with RssSampler() as rss, SelfRssSampler() as me:
        t = time.perf_counter()
        yield out
        out["seconds"] = time.perf_counter() - t
    out.update(rss.as_dict() if spark is not None else {})
    out["driver_python_peak_rss_mib"] = round(me.peak_mib, 1)
    if metrics is not None:
        out.update(metrics.since())


def median_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of every numeric figure over the timed runs (the warm-up is not among them)."""
    keys = [k for k in runs[0] if all(isinstance(r.get(k), int | float) and r.get(k) is not None for r in runs)]
    out: dict[str, Any] = {k: statistics.median(r[k] for r in runs) for k in keys}
    out["seconds_all"] = [round(r["seconds"], 2) for r in runs]
    out["seconds"] = round(out["seconds"], 2)
    return out


def repeat(
    name: str,
    fn: Callable[[int], dict[str, Any] | None],
    *,
    reps: int,
    warmup: bool = True,
    spark: SparkSession | None = None,
    metrics: SparkStageMetrics | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run ``fn(rep)`` once untimed (warm-up, ``rep = -1``), then ``reps`` times measured; medians.

    ``fn`` may return extra figures (row counts ...); those of the last run are kept under ``info``.
    """
    info: dict[str, Any] | None = None
    if warmup:
        t = time.perf_counter()
        info = fn(-1)
        log(f"  {name}: warm-up {time.perf_counter() - t:.1f}s")
    runs = []
    for rep in range(reps):
        with measured(spark, metrics) as m:
            info = fn(rep) or info
        runs.append(m)
        log(f"  {name}: rep {rep + 1}/{reps} {m['seconds']:.1f}s")
    summary = median_summary(runs)
    summary["info"] = info or {}
    summary["load_after"] = load_info()
    return summary
