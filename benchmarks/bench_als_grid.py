"""The ALS tuning grid of one variant: ratings indexed by every fit against indexed once.

On the lakehouse of ``make demo`` (``--lakehouse``), builds the unweighted ratings of the feature
window of its second-oldest gold window (the train stage's validation window) and fits the
default ``train.als_reg_grid`` × ``train.als_alpha_grid`` with the default ``train.als``
settings, each fit followed by the validation users' top-k lists (checkpointed), two ways:

* ``per_fit``: :func:`sampleimp_spark.training.als.fit_als` on the ratings frame (each fit
  indexes the ids and joins them);
* ``shared``: :func:`sampleimp_spark.training.als.index_ratings` once, then every fit on it
  (what the train stage's tuning does),

in rounds of both ways (the order alternating by round), one fit at a time. Records each way's
times and the ratio shared / per_fit of their medians.

    make demo && .venv/bin/python benchmarks/bench_als_grid.py --reps 2
"""

from __future__ import annotations

import argparse
import statistics
import time

from harness import save
from pyspark.sql import functions as F

from sampleimp_spark import lake
from sampleimp_spark import schema as S
from sampleimp_spark.config import load_config
from sampleimp_spark.frames import checkpoint, release
from sampleimp_spark.session import get_session
from sampleimp_spark.training import als as A
from sampleimp_spark.training.protocol import sample_users
from sampleimp_spark.windows import Windows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lakehouse", default="lakehouse")
    parser.add_argument("--reps", type=int, default=2)
    args = parser.parse_args()
    cfg = load_config(None, [f"lakehouse={args.lakehouse}"])
    tcfg = cfg.train
    spark = get_session(cfg.spark)
    gold = lake.read_table(spark, cfg.lakehouse, S.GOLD_TRAINING_SAMPLES)
    ids = sorted(r[0] for r in gold.select(S.WINDOW_ID).distinct().collect())  # one row per window
    w = Windows.from_id(ids[1])
    events = lake.read_table(spark, cfg.lakehouse, S.BRONZE_EVENTS)
    feature_events = events.where((F.col(S.TS) >= w.t0) & (F.col(S.TS) < w.t1))
    ratings = checkpoint(A.implicit_ratings(feature_events, strengths=tcfg.als.strengths))
    samples = gold.where(F.col(S.WINDOW_ID) == w.window_id)
    users = checkpoint(sample_users(samples, max_users=tcfg.evaluation.max_users, seed=tcfg.evaluation.seed))
    grid = [(reg, alpha) for reg in tcfg.als_reg_grid for alpha in tcfg.als_alpha_grid]
    settings = {"rank": tcfg.als.rank, "max_iter": tcfg.als.max_iter, "num_blocks": tcfg.als.num_blocks}

    def run_grid(shared: bool) -> float:
        t = time.perf_counter()
        source = A.index_ratings(ratings) if shared else ratings
        for reg, alpha in grid:
            model = A.fit_als(source, **settings, reg_param=reg, alpha=alpha, seed=tcfg.seeds[0])
            release(checkpoint(A.recommend(model, users, tcfg.evaluation.k)))
            model.unpersist()
        if isinstance(source, A.IndexedRatings):
            source.release()
        return time.perf_counter() - t

    times: dict[str, list[float]] = {"per_fit": [], "shared": []}
    for rep in range(args.reps):
        for shared in (rep % 2 == 1, rep % 2 == 0):
            name = "shared" if shared else "per_fit"
            times[name].append(run_grid(shared))
            print(f"round {rep}: {name} {times[name][-1]:.1f}s", flush=True)
    row = {
        "window_id": w.window_id,
        "ratings": ratings.count(),
        "users": users.count(),
        "grid_points": len(grid),
        **{f"{k}_s": [round(x, 1) for x in v] for k, v in times.items()},
        "ratio_median": round(statistics.median(times["shared"]) / statistics.median(times["per_fit"]), 3),
    }
    print(row)
    print(f"saved {save('als_grid', row)}")


if __name__ == "__main__":
    main()
