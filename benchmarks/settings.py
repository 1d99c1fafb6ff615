"""What each Spark setting does on its own: the features and weights stages under one change at a time.

    .venv/bin/python benchmarks/settings.py --events 1e6

On the lakehouse of ``run_all.py`` at that size (``benchmarks/data/run_<n>``, kept with
``--keep-data``; its bronze events are reused, nothing is regenerated), one SparkSession runs a
warm-up, then for each variant the features stage and the weights stage once, in this order:

* ``baseline`` — what the pipeline uses: 16 shuffle partitions, AQE on, Arrow batches of
  10,000 rows (Spark's default), the prepared events and the samples materialized once
  (``localCheckpoint``) because several aggregations read them;
* ``partitions=4`` / ``partitions=64`` — ``spark.sql.shuffle.partitions``;
* ``aqe=off`` — ``spark.sql.adaptive.enabled=false`` (no coalescing, no skew-join splits);
* ``arrow=1000`` / ``arrow=100000`` — ``spark.sql.execution.arrow.maxRecordsPerBatch`` (the
  rows per batch the pandas UDFs and the Arrow conversions move at a time);
* ``no-caching`` — ``DataFrame.localCheckpoint`` made a no-op, so every reader recomputes;
* ``baseline`` again at the end, to see the drift of the machine over the run.

Prints a table and saves ``results/<date>-<host>-settings.json``. The SQL settings are set on
the running session (no restart), so the variants differ only in that setting.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness import save  # noqa: E402
from measure import SparkStageMetrics, free_port, load_info, measured  # noqa: E402
from pyspark.sql import DataFrame  # noqa: E402
from run_all import make_config, parse_args, scratch_lakehouse  # noqa: E402

from sampleimp_spark.session import get_session  # noqa: E402
from sampleimp_spark.stages.pipeline import run_stages  # noqa: E402

BASE = {
    "spark.sql.shuffle.partitions": "16",
    "spark.sql.adaptive.enabled": "true",
    "spark.sql.execution.arrow.maxRecordsPerBatch": "10000",
}


@contextmanager
def no_caching() -> Iterator[None]:
    """``DataFrame.localCheckpoint`` returns the frame itself (its lineage is recomputed by every reader)."""
    original = DataFrame.localCheckpoint
    DataFrame.localCheckpoint = lambda self, eager=True, storageLevel=None: self  # type: ignore[method-assign]
    try:
        yield
    finally:
        DataFrame.localCheckpoint = original  # type: ignore[method-assign]


@contextmanager
def nothing() -> Iterator[None]:
    yield


VARIANTS: list[tuple[str, dict[str, str], Callable[[], Any]]] = [
    ("baseline", {}, nothing),
    ("partitions=4", {"spark.sql.shuffle.partitions": "4"}, nothing),
    ("partitions=64", {"spark.sql.shuffle.partitions": "64"}, nothing),
    ("aqe=off", {"spark.sql.adaptive.enabled": "false"}, nothing),
    ("arrow=1000", {"spark.sql.execution.arrow.maxRecordsPerBatch": "1000"}, nothing),
    ("arrow=100000", {"spark.sql.execution.arrow.maxRecordsPerBatch": "100000"}, nothing),
    ("no-caching", {}, no_caching),
    ("baseline (again)", {}, nothing),
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=float, default=1e6)
    p.add_argument("--only", nargs="+", default=None, help="variant names to run (default: all)")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    n = int(args.events)
    lakehouse = scratch_lakehouse(n, "settings")
    cfg = make_config(n, parse_args(["--sizes", str(n)]), lakehouse, free_port())
    spark = get_session(cfg.spark)
    metrics = SparkStageMetrics(spark)
    variants = [v for v in VARIANTS if args.only is None or v[0] in args.only]
    rows: list[dict[str, Any]] = []

    def run(name: str, conf: dict[str, str], ctx: Callable[[], Any]) -> dict[str, Any]:
        for k, v in {**BASE, **conf}.items():
            spark.conf.set(k, v)
        row: dict[str, Any] = {"variant": name, "conf": conf}
        with ctx():
            for stage in ("features", "weights"):
                with measured(spark, metrics) as m:
                    run_stages(spark, cfg, [stage], run_id=f"settings-{name}-{stage}")
                row[stage] = round(m["seconds"], 1)
                row[f"{stage}_spill_disk_mib"] = m.get("spill_disk_mib")
        print(json.dumps(row), flush=True)
        return row

    t = time.perf_counter()
    run("warm-up", {}, nothing)
    for name, conf, ctx in variants:
        rows.append(run(name, conf, ctx))
    result = {
        "events": n,
        "load_end": load_info(),
        "base_conf": BASE,
        "protocol": "one SparkSession; one untimed warm-up of the baseline; then one run per variant, in order",
        "total_seconds": round(time.perf_counter() - t, 1),
        "variants": rows,
    }
    print(f"saved {save('settings', result)}")
    print("| variant | features s | weights s |\n|---|---:|---:|")
    for r in rows:
        print(f"| {r['variant']} | {r['features']} | {r['weights']} |")
    shutil.rmtree(lakehouse, ignore_errors=True)


if __name__ == "__main__":
    main()
