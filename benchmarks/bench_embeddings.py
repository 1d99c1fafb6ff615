"""Throughput of item-title embeddings: the Spark pandas-UDF path vs. ``model.encode`` alone.

Why: ``sampleimp_spark.features.text.item_embeddings`` runs all-MiniLM-L6-v2 in an iterator
pandas UDF, one model per Python worker and one torch thread per worker. This script measures
what that costs against encoding the same titles in one process, so the choice (and the
batch size) is backed by numbers. It embeds the distinct Amazon Magazine Subscriptions items:
the 1,635 reviewed ones and, unless ``--no-meta``, all 3,391 titles of the item file.

Measured, per title set and batch size:

* ``spark_cold``: a first small job, which makes every Python worker import torch and load
  the model (the one-off cost per worker);
* ``spark_udf``: the UDF alone over the distinct titles (``embed_texts``), forced by a
  ``noop`` write, with warm workers;
* ``spark_end_to_end``: ``item_embeddings`` (projection fit on a capped sample + encode all
  + project), forced the same way;
* ``raw_encode_threads_N``: ``model.encode`` on the same titles in this process with N torch
  threads (1, and all cores).

Results are printed and saved by the shared ``harness`` as
``benchmarks/results/<date>-<host>-embeddings.json``, with the machine (cores, RAM, CPU model,
load average before and after: other jobs on a shared machine skew the figures) and the peak
RSS of the driver JVM and of the Python workers (each holds torch and one model).

Run: ``HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_embeddings.py [--batch-size 32 64 128]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from harness import RssSampler, save  # noqa: E402
from pyspark.sql import DataFrame, SparkSession  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402

from sampleimp_spark import schema as S  # noqa: E402
from sampleimp_spark.config import SparkConfig  # noqa: E402
from sampleimp_spark.features import text as X  # noqa: E402
from sampleimp_spark.session import get_session  # noqa: E402
from sampleimp_spark.sources import amazon  # noqa: E402

AMAZON = "amazon_magazine_subscriptions"
REVIEWS = "Magazine_Subscriptions_Mini.csv"
META = "meta_Magazine_Subscriptions.jsonl"


def machine_extra() -> dict[str, Any]:
    """What the harness's machine facts lack here: CPU model and the model libraries' versions."""
    import sentence_transformers
    import torch

    cpu_model = platform.processor() or "unknown"
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
        cpu_model = next(li.split(":", 1)[1].strip() for li in cpuinfo if li.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "cpu_model": cpu_model,
        "platform": platform.platform(),
        "torch": torch.__version__,
        "sentence_transformers": sentence_transformers.__version__,
    }


def title_sets(spark: SparkSession, data: Path, *, with_meta: bool) -> dict[str, DataFrame]:
    """Distinct (item_id, item_text) frames, materialized locally so timings exclude CSV parsing.

    Collecting is fine here: a benchmark of a fixed sample (at most 3,391 short titles).
    """
    d = data / AMAZON
    events = amazon.read(spark, [str(d / REVIEWS)], [str(d / META)])
    reviewed = (
        events.where(F.col(S.ITEM_ID).isNotNull() & F.col(S.ITEM_TEXT).isNotNull())
        .groupBy(S.ITEM_ID)
        .agg(F.max(S.ITEM_TEXT).alias(S.ITEM_TEXT))
    )
    frames = {"reviewed": reviewed}
    if with_meta:
        meta = amazon.read_items(spark, [str(d / META)]).where(F.col("_title").isNotNull())
        frames["all_meta"] = meta.select(F.col("_asin").alias(S.ITEM_ID), F.col("_title").alias(S.ITEM_TEXT))
    schema = f"{S.ITEM_ID} string, {S.ITEM_TEXT} string"
    return {k: spark.createDataFrame(v.toPandas(), schema).cache() for k, v in frames.items()}


def timed(fn: Callable[[], object], repeats: int) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls of ``fn``."""
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def rate(n: int, seconds: list[float]) -> dict[str, Any]:
    """Items per second of the best and the median run (the machine may be shared)."""
    return {
        "seconds": [round(s, 3) for s in seconds],
        "items_per_s_best": round(n / min(seconds), 1),
        "items_per_s_median": round(n / statistics.median(seconds), 1),
    }


def bench_spark(items: DataFrame, *, batch_size: int, max_fit_items: int, parts: int, repeats: int) -> dict[str, Any]:
    """Time the UDF alone and ``item_embeddings`` end to end (``noop`` writes force the work)."""
    n = items.count()

    def udf_only() -> None:
        spread = items.repartition(parts, S.ITEM_ID)
        X.embed_texts(spread, batch_size=batch_size).write.format("noop").mode("overwrite").save()

    def end_to_end() -> None:
        embedded = X.item_embeddings(items, batch_size=batch_size, max_fit_items=max_fit_items, encode_partitions=parts)
        embedded.write.format("noop").mode("overwrite").save()

    return {
        "items": n,
        "partitions": parts,
        "spark_udf": rate(n, timed(udf_only, repeats)),
        "spark_end_to_end": rate(n, timed(end_to_end, repeats)),
    }


def bench_raw(titles: list[str], *, batch_size: int, repeats: int) -> dict[str, Any]:
    """``model.encode`` on the same titles in this process, with 1 thread and with all cores."""
    import torch

    model = X.load_model()
    out: dict[str, Any] = {}
    for threads in sorted({1, os.cpu_count() or 1}):
        torch.set_num_threads(threads)
        secs = timed(lambda: X.encode_texts(model, titles, batch_size=batch_size), repeats)
        out[f"raw_encode_threads_{threads}"] = rate(len(titles), secs)
    return out


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, build one local session, run every measurement, print and save JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    data = Path(os.environ.get("SAMPLEIMP_SHARED_DATA", ROOT.parent / "shared" / "data"))
    p.add_argument("--data", type=Path, default=data)
    p.add_argument("--master", default="local[2]")
    p.add_argument("--batch-size", type=int, nargs="+", default=[64])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--max-fit-items", type=int, default=1_000)
    p.add_argument("--no-meta", action="store_true", help="only the 1,635 reviewed items")
    args = p.parse_args(argv)

    load_before = os.getloadavg()
    spark = get_session(
        SparkConfig(
            master=args.master,
            app_name="bench_embeddings",
            shuffle_partitions=2,
            log_level="ERROR",
            conf={"spark.ui.enabled": "false", "spark.sql.adaptive.coalescePartitions.initialPartitionNum": "2"},
        )
    )
    parts = spark.sparkContext.defaultParallelism
    runs = []
    try:
        with RssSampler() as rss:
            sets = title_sets(spark, args.data, with_meta=not args.no_meta)
            for batch_size in args.batch_size:
                # Cold start: every worker imports torch and loads the model once.
                warm = sets["reviewed"].limit(64)
                cold = timed(
                    lambda batch_size=batch_size, warm=warm: (
                        X.embed_texts(warm.repartition(parts), batch_size=batch_size)
                        .write.format("noop")
                        .mode("overwrite")
                        .save()
                    ),
                    1,
                )
                for name, items in sets.items():
                    titles = [r[S.ITEM_TEXT] for r in items.select(S.ITEM_TEXT).collect()]
                    result = {"titles": name, "batch_size": batch_size, "spark_cold_seconds": round(cold[0], 2)}
                    result |= bench_spark(
                        items,
                        batch_size=batch_size,
                        max_fit_items=args.max_fit_items,
                        parts=parts,
                        repeats=args.repeats,
                    )
                    result |= bench_raw(titles, batch_size=batch_size, repeats=args.repeats)
                    runs.append(result)
                    print(json.dumps(result))
    finally:
        spark.stop()

    summary = {
        "what": "item title embeddings (all-MiniLM-L6-v2): Spark iterator pandas UDF vs model.encode",
        "machine_extra": machine_extra(),
        "spark": {"master": args.master, "python_workers": parts, "torch_threads_per_worker": "spark.task.cpus (1)"},
        "max_fit_items": args.max_fit_items,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        **rss.as_dict(),
    }
    print(json.dumps(summary, indent=2))
    print(f"written to {save('embeddings', {**summary, 'runs': runs})}")


if __name__ == "__main__":
    main()
