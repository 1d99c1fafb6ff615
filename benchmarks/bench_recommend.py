"""ALS top-k lists: the project's blocked numpy scoring against Spark's ``recommendForUserSubset``.

On a lakehouse that ``run_all.py --keep-data`` left under ``benchmarks/data/run_<n>``, fits
implicit ALS (the default ``train.als`` settings: rank 32, 10 iterations) on every bronze event, then
computes the top ``--k`` items (default 50, the train stage's candidate count) of half the users
(a hash of the user id) over every item, two ways:

* ``project``: :func:`sampleimp_spark.training.als.recommend` (blocks of users × items scored
  with numpy in a pandas UDF, float64 ranking);
* ``spark``: Spark's ``ALSModel.recommendForUserSubset`` (float32 scores), with the same
  tie order (score, then item index) applied to its lists,

each list checkpointed and counted, in rounds of both ways (the project first in odd rounds, the
other way first in even ones: a round's first call is often slower). It records the times and
how the lists of the first round differ: rows of one not in the other, (user, item) pairs of
one not in the other, users whose order differs, and the best rank at which they differ. With
``--against REV``, the other way is ``recommend`` of ``als.py`` at git revision ``REV`` instead
of Spark's.

    .venv/bin/python benchmarks/bench_recommend.py --events 1e7 --reps 2
    .venv/bin/python benchmarks/bench_recommend.py --events 1e7 --against e8d560c
"""

from __future__ import annotations

import time

from harness import module_at, save
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from run_all import kept_gold, kept_lakehouse_parser

from sampleimp_spark import schema as S
from sampleimp_spark.config import ALSConfig
from sampleimp_spark.frames import checkpoint, release
from sampleimp_spark.training import als as A


def spark_recommend(model: A.FittedALS, users: DataFrame, k: int) -> DataFrame:
    """The lists of ``ALSModel.recommendForUserSubset``, ranked by (score, item index)."""
    # The int index columns of the fitted model (the second column of each index frame).
    user_ix, item_ix = model.model.getUserCol(), model.model.getItemCol()
    subset = users.select(S.USER_ID).distinct().join(model.user_index, S.USER_ID).select(user_ix)
    recs = model.model.recommendForUserSubset(subset, k)
    key = F.transform("recommendations", lambda r: F.struct((-r["rating"]).alias("s"), r[item_ix].alias("i")))
    exploded = recs.select(user_ix, F.posexplode(F.array_sort(key)).alias("pos", "r"))
    return (
        exploded.select(user_ix, F.col("r.i").alias(item_ix), (F.col("pos") + 1).alias("rank"))
        .join(model.user_index, user_ix)
        .join(model.item_index, item_ix)
        .select(S.USER_ID, S.ITEM_ID, "rank")
    )


def differences(a: DataFrame, b: DataFrame, b_name: str) -> dict[str, object]:
    pairs_a, pairs_b = a.select(S.USER_ID, S.ITEM_ID), b.select(S.USER_ID, S.ITEM_ID)
    moved = a.alias("a").join(b.alias("b"), [S.USER_ID, "rank"]).where(F.col("a.item_id") != F.col("b.item_id"))
    return {
        "rows_only_project": a.exceptAll(b).count(),
        f"rows_only_{b_name}": b.exceptAll(a).count(),
        "pairs_only_project": pairs_a.exceptAll(pairs_b).count(),
        f"pairs_only_{b_name}": pairs_b.exceptAll(pairs_a).count(),
        "users_ordered_differently": moved.select(S.USER_ID).distinct().count(),
        "best_rank_differing": moved.agg(F.min("rank")).first()[0],
    }


def main() -> None:
    p = kept_lakehouse_parser(__doc__, reps=1, reps_help="rounds of both ways (project first in odd rounds)")
    p.add_argument("--k", type=int, default=50)
    p.add_argument("--against", default="spark", metavar="spark|REV", help="Spark's lists, or recommend at git REV")
    args = p.parse_args()

    if args.against == "spark":
        other = spark_recommend
    else:
        other = module_at(args.against, "sampleimp_spark/training/als.py").recommend

    _spark, events = kept_gold(args.events, args.driver_memory, S.BRONZE_EVENTS)
    cfg = ALSConfig()
    t = time.perf_counter()
    model = A.fit_als(
        A.implicit_ratings(events, strengths=cfg.strengths),
        seed=1,
        rank=cfg.rank,
        reg_param=cfg.reg_param,
        alpha=cfg.alpha,
        max_iter=cfg.max_iter,
        num_blocks=cfg.num_blocks,
    )
    users = events.select(S.USER_ID).distinct().where(F.xxhash64(S.USER_ID) % 2 == 0)
    n_users, n_items = users.join(model.user_index, S.USER_ID).count(), model.item_index.count()
    fit_s = time.perf_counter() - t
    print(f"ALS fit (rank {cfg.rank}) {fit_s:.1f} s; {n_users:,} users x {n_items:,} items, k {args.k}", flush=True)
    ways = {"project": A.recommend, args.against: other}
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    first: dict[str, DataFrame] = {}
    for round_ in range(args.reps):
        # The first call of a round tends to be slower: alternate which way goes first.
        for name, fn in list(ways.items())[:: 1 if round_ % 2 == 0 else -1]:
            t = time.perf_counter()
            lists = checkpoint(fn(model, users, args.k))
            rows = lists.count()
            seconds[name].append(round(time.perf_counter() - t, 1))
            print(f"{name}: {seconds[name][-1]:.1f} s, {rows:,} rows", flush=True)
            if name in first:
                release(lists)
            else:
                first[name] = lists
    diff = differences(first["project"], first[args.against], args.against)
    print(f"first round, project vs {args.against}: {diff}", flush=True)
    against = "" if args.against == "spark" else "-against-" + args.against.replace("/", "_")
    path = save(
        f"recommend-{int(args.events / 1e6)}m{against}{args.tag}",
        {
            "events": int(args.events),
            "rank": cfg.rank,
            "k": args.k,
            "against": args.against,
            "users": n_users,
            "items": n_items,
            "fit_s": round(fit_s, 1),
            "seconds": seconds,
            "differences": diff,
        },
    )
    print(f"saved {path}")
    release(*first.values())
    model.unpersist()


if __name__ == "__main__":
    main()
