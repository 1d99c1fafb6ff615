"""Time the features stage on generated Taobao-shaped events (1M and 10M by default).

    python benchmarks/bench_features.py --events 1000000 10000000

For each size: generate events with the built-in seeded generator (behavior mix ~89.5/5.5/
2.9/2.0 %, Zipf items, ~1,000 Zipf-sized categories, 9 days), ingest them into a lakehouse
under ``benchmarks/data/`` (kept between runs), then run the features stage on one window
(``train.enabled=false``: without the training window the pipeline builds before it) and
report events/second and peak memory of the driver JVM and the Python workers.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import RssSampler, save

from sampleimp_spark import lake
from sampleimp_spark import schema as S
from sampleimp_spark.config import Config, load_config
from sampleimp_spark.progress import RunProgress
from sampleimp_spark.session import get_session
from sampleimp_spark.stages import features, ingest

DATA = Path(__file__).resolve().parent / "data"


def config_for(events: int, driver_memory: str, partitions: int) -> Config:
    """The generator at ``events`` events, one window (no training window), benchmark Spark settings."""
    users = max(1_000, events // 100)  # ~100 events per user over 9 days, like Taobao's sample
    return load_config(
        None,
        [
            f"lakehouse={DATA / f'lake_{events}'}",
            f"input.generator.events={events}",
            f"input.generator.users={users}",
            f"input.generator.items={max(10_000, events // 20)}",
            "input.generator.categories=1000",
            "input.generator.bad_row_rate=0.0005",
            "train.enabled=false",
            f"spark.shuffle_partitions={partitions}",
            "spark.log_level=ERROR",
            f"spark.conf={{spark.driver.memory: {driver_memory}, spark.ui.enabled: 'false'}}",
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=float, nargs="+", default=[1e6, 1e7])
    parser.add_argument("--driver-memory", default="12g")
    parser.add_argument("--partitions", type=int, default=16)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    results = []
    spark = None
    for n in (int(e) for e in args.events):
        cfg = config_for(n, args.driver_memory, args.partitions)
        spark = spark or get_session(cfg.spark)
        spark.conf.set("spark.sql.shuffle.partitions", str(args.partitions))
        progress = RunProgress(f"bench-{n}")
        events_path = lake.table_path(cfg.lakehouse, S.BRONZE_EVENTS)
        if not lake.is_delta_table(spark, events_path):
            t = time.perf_counter()
            ingest.run(spark, cfg, ctx=lake.RunContext(f"bench-{n}", cfg.hash(), "ingest"), progress=progress)
            print(f"ingest {n:,}: {time.perf_counter() - t:.1f}s")
        n_events = lake.read_table(spark, cfg.lakehouse, S.BRONZE_EVENTS).count()
        with RssSampler() as rss:
            t = time.perf_counter()
            report = features.run(
                spark, cfg, ctx=lake.RunContext(f"bench-{n}", cfg.hash(), "features"), progress=progress
            ).latest
            seconds = time.perf_counter() - t
        row = {
            "events": n_events,
            "seconds": round(seconds, 1),
            "events_per_second": round(n_events / seconds),
            "samples": report.samples,
            "shards": report.shards,
            "features": len(report.features),
            "shuffle_partitions": args.partitions,
            **rss.as_dict(),
        }
        print(row)
        results.append(row)
    path = save("features", {"driver_memory": args.driver_memory, "runs": results})
    print(f"saved {path}")


if __name__ == "__main__":
    main()
