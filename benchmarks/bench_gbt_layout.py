"""What the GBT's canonical row layout costs, and whether it makes the fit independent of row order.

On a lakehouse that ``run_all.py --keep-data`` left under ``benchmarks/data/run_<n>``, fits the
train stage's GBT (default settings, depth 5) on 70 % of the users of ``gold.training_samples``,
weighted by the gold ``weight``, twice: on the rows as the Delta scan gives them, and on the same
rows round-robin repartitioned (another order and partitioning). It does so with
:func:`fit_gbt`'s canonical layout, and with the layout step replaced by the identity (the fit
as it was before the layout existed), alternating. For each it records the fit times and whether
the two orders gave the same trees to the last bit.

    .venv/bin/python benchmarks/bench_gbt_layout.py --events 1e6
"""

from __future__ import annotations

import time

from harness import save
from pyspark.sql import functions as F
from run_all import kept_gold, kept_lakehouse_parser

from sampleimp_spark import schema as S
from sampleimp_spark.features.behavior import feature_columns
from sampleimp_spark.training import gbt as G


def main() -> None:
    p = kept_lakehouse_parser(__doc__, reps=1, reps_help="rounds of (canonical, as given)")
    args = p.parse_args()

    spark, gold = kept_gold(args.events, args.driver_memory)
    given = gold.where(F.abs(F.hash(S.USER_ID)) % 10 < 7)
    other = given.repartition(5)
    features = feature_columns(gold)
    canonical = G.canonical_layout
    layouts = {"canonical": canonical, "as given": lambda df: df}
    runs: list[dict[str, object]] = []
    for _ in range(args.reps):
        for name, layout in layouts.items():
            G.canonical_layout = layout
            record: dict[str, object] = {"layout": name, "fit_s": {}}
            trees = {}
            for order, frame in (("given", given), ("repartitioned", other)):
                t = time.perf_counter()
                model = G.fit_gbt(frame, features, seed=1, weight_col=S.WEIGHT)  # default settings
                seconds = time.perf_counter() - t
                record["fit_s"][order] = round(seconds, 1)  # type: ignore[index]
                trees[order] = model.stages[-1].toDebugString.split("\n", 1)[1]
                print(f"{name}: fit on the {order} rows {seconds:.1f} s", flush=True)
            record["same_trees"] = trees["given"] == trees["repartitioned"]
            print(f"{name}: the same trees from both orders: {record['same_trees']}", flush=True)
            runs.append(record)
    G.canonical_layout = canonical
    rows = given.count()
    path = save(
        f"gbt-layout-{int(args.events / 1e6)}m{args.tag}",
        {
            "events": int(args.events),
            "train_rows": rows,
            "features": len(features),
            "partitions": spark.sparkContext.defaultParallelism,
            "runs": runs,
        },
    )
    print(f"saved {path}")


if __name__ == "__main__":
    main()
