"""Refreshing the newest day from per-day partials against the full features stage, side by side.

    python benchmarks/bench_daily_features.py --events 10000000 --reps 2

Generated events (as ``bench_features.py``: 9 China-time days, lakehouse under ``benchmarks/data/``
kept between runs), ``train.enabled=false``. Setup, not timed: the features stage for the day
before the last (``--date``), which builds the partials of every earlier day. Then, alternately,
each rep times (a) the full features stage for the last day's window (computed from
``bronze.events``, its bounds fixed) and (b) the dated features stage for the last day with
``features.incremental``: it builds that day's partials (the only new day) and assembles the
window from the partials. Reports
both times and their ratio; the target is (b)/(a) <= 1/3.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_features import config_for
from harness import save

from sampleimp_spark import lake
from sampleimp_spark import schema as S
from sampleimp_spark.features.daily import feature_days_of
from sampleimp_spark.progress import RunProgress
from sampleimp_spark.session import get_session
from sampleimp_spark.sources import SOURCE_TIMEZONES
from sampleimp_spark.stages import daily, features, ingest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=float, default=1e7)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--driver-memory", default="12g")
    parser.add_argument("--partitions", type=int, default=16)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    n = int(args.events)
    cfg = config_for(n, args.driver_memory, args.partitions)
    spark = get_session(cfg.spark)
    progress = RunProgress(f"bench-daily-{n}")
    if not lake.is_delta_table(spark, lake.table_path(cfg.lakehouse, S.BRONZE_EVENTS)):
        ingest.run(spark, cfg, ctx=lake.RunContext(f"bench-{n}", cfg.hash(), "ingest"), progress=progress)
    n_events = lake.read_table(spark, cfg.lakehouse, S.BRONZE_EVENTS).count()
    gen = cfg.input.generator
    last = daily.local_day(gen.start + timedelta(days=gen.days - 1), "generator")
    window = daily.day_window(cfg, last, "generator")
    full_cfg = cfg.model_copy(
        update={"features": cfg.features.model_copy(update={"t0": window.t0, "t1": window.t1, "t2": window.t2})}
    )

    inc_cfg = cfg.model_copy(
        update={
            "input": cfg.input.model_copy(update={"paths": []}),
            "features": cfg.features.model_copy(update={"incremental": True}),
        }
    )

    def dated(day):
        return daily.for_day(inc_cfg, day)

    def ctx(tag: str) -> lake.RunContext:
        return lake.RunContext(f"bench-daily-{tag}-{time.time_ns()}", cfg.hash(), "features")

    before = set(feature_days_of(window, SOURCE_TIMEZONES["generator"]))
    key = features.partials_key(inc_cfg, "generator")
    if not before <= daily.partials_built(spark, cfg.lakehouse, "generator", key):
        t = time.perf_counter()
        features.run(spark, dated(last - timedelta(days=1)), ctx=ctx("setup"), progress=progress)
        print(f"setup (partials of the days before {last}): {time.perf_counter() - t:.1f}s")
    full, incremental = [], []
    for rep in range(args.reps):
        t = time.perf_counter()
        features.run(spark, full_cfg, ctx=ctx(f"full{rep}"), progress=progress)
        full.append(time.perf_counter() - t)
        daily.mark_stale(spark, cfg.lakehouse, "generator", [last], ctx=ctx(f"stale{rep}"))  # untimed
        t = time.perf_counter()
        features.run(spark, dated(last), ctx=ctx(f"inc{rep}"), progress=progress)
        incremental.append(time.perf_counter() - t)
        print(f"rep {rep}: full {full[-1]:.1f}s, newest day from partials {incremental[-1]:.1f}s")
    row = {
        "events": n_events,
        "window": window.window_id,
        "full_s": [round(x, 1) for x in full],
        "incremental_s": [round(x, 1) for x in incremental],
        "ratio_median": round(statistics.median(incremental) / statistics.median(full), 3),
        "shuffle_partitions": args.partitions,
    }
    print(row)
    print(f"saved {save('daily_features', row)}")


if __name__ == "__main__":
    main()
