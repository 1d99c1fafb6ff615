"""The classification bootstrap on real GBT scores: how many curve points, how long, against another revision.

On a lakehouse that ``run_all.py --keep-data`` left under ``benchmarks/data/run_<n>``, fits the
GBT of the train stage (default settings, depth 5) on 70 % of the users of
``gold.training_samples`` — unweighted, and weighted by the gold ``weight`` — scores every gold
row, and times :func:`classification_metrics` with ``weight_col=w_dr`` (both estimators, as the
train stage calls it) and ``--n-boot`` replicates. For each model it records the rows, users,
distinct scores and distinct scores held by a positive (what the curve compression keeps).

With ``--compare-to REV`` the same calls run with ``evaluate.py`` of git revision ``REV`` too,
alternating (``REV``, this checkout, ``REV``, ...), and the largest absolute difference of any
value or interval bound between the two is recorded.

    .venv/bin/python benchmarks/bench_classification.py --events 1e6 --compare-to 3558149~1
    .venv/bin/python benchmarks/bench_classification.py --events 1e7 --models weighted --reps 1 --compare-to 3558149~1
"""

from __future__ import annotations

import time

from harness import module_at, save
from pyspark.sql import functions as F
from run_all import kept_gold, kept_lakehouse_parser

from sampleimp_spark import schema as S
from sampleimp_spark.features.behavior import feature_columns
from sampleimp_spark.frames import checkpoint, release
from sampleimp_spark.training import evaluate
from sampleimp_spark.training.gbt import fit_gbt, predict_proba


def values(results: list[evaluate.MetricValue]) -> dict[tuple[str, str], tuple[float | None, ...]]:
    return {(v.metric, v.estimator): (v.value, v.ci_low, v.ci_high) for v in results}


def largest_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    out = 0.0
    for key in a:
        for x, y in zip(a[key], b[key], strict=True):
            assert (x is None) == (y is None), key
            if x is not None:
                out = max(out, abs(x - y))
    return out


def main() -> None:
    p = kept_lakehouse_parser(__doc__, reps=2, reps_help="timed calls per model (and per revision)")
    p.add_argument("--n-boot", type=int, default=100)
    p.add_argument("--models", nargs="+", default=["unweighted", "weighted"], choices=["unweighted", "weighted"])
    p.add_argument("--compare-to", metavar="REV", help="also time evaluate.py of this git revision")
    args = p.parse_args()

    other = module_at(args.compare_to, "sampleimp_spark/training/evaluate.py") if args.compare_to else None
    _, gold = kept_gold(args.events, args.driver_memory)
    train = gold.where(F.abs(F.hash(S.USER_ID)) % 10 < 7)
    features = feature_columns(gold)
    runs: list[dict[str, object]] = []
    for model in args.models:
        t = time.perf_counter()
        gbt = fit_gbt(train, features, seed=1, weight_col=S.WEIGHT if model == "weighted" else None)  # default settings
        fit_s = time.perf_counter() - t
        scored = checkpoint(predict_proba(gbt, gold))
        prob, label = F.col(S.PROBABILITY), F.col(S.LABEL_PURCHASE)
        shape = scored.select(
            F.count(F.lit(1)).alias("rows"),
            F.count_distinct(S.USER_ID).alias("users"),
            F.count_if(label == 1).alias("positives"),
            F.count_distinct(prob).alias("distinct_scores"),
            F.count_distinct(F.when(label == 1, prob)).alias("distinct_positive_scores"),
        ).first()
        assert shape is not None
        record: dict[str, object] = {"model": model, "fit_s": round(fit_s, 1), **shape.asDict(), "seconds": {}}
        print(f"{model}: GBT fit {fit_s:.1f} s; {shape.asDict()}", flush=True)
        impls = [("this checkout", evaluate)] + ([(args.compare_to, other)] if other else [])
        got = {}
        for _ in range(args.reps):
            for name, module in reversed(impls):
                t = time.perf_counter()
                got[name] = values(module.classification_metrics(scored, weight_col=S.W_DR, n_boot=args.n_boot, seed=1))
                seconds = time.perf_counter() - t
                record["seconds"].setdefault(name, []).append(round(seconds, 1))  # type: ignore[union-attr]
                print(f"{model}: classification_metrics ({name}) {seconds:.1f} s", flush=True)
        if other:
            record["largest_difference"] = largest_difference(got["this checkout"], got[args.compare_to])
            print(f"{model}: largest difference {record['largest_difference']:.3g}", flush=True)
        release(scored)
        runs.append(record)
    path = save(
        f"classification-{int(args.events / 1e6)}m{args.tag}",
        {"events": int(args.events), "n_boot": args.n_boot, "compare_to": args.compare_to, "runs": runs},
    )
    print(f"saved {path}")


if __name__ == "__main__":
    main()
