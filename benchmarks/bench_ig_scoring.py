"""The IG pointwise scoring's numpy (``pointwise_scores``) on real samples, against another revision.

On a lakehouse that ``run_all.py --keep-data`` left under ``benchmarks/data/run_<n>``, fits the
weights stage's information gain (default settings, every feature) on the latest window of
``silver.samples``, builds the scoring model as ``with_ig_weight`` does, and collects the first
``--rows`` samples in the table's scan order (the order the stage's Arrow batches see; the only
rows collected). Times ``pointwise_scores`` over them in batches of ``--batch`` rows (Spark's
Arrow batch size, 10,000 by default), ``--reps`` times. Only the numpy is timed: the Arrow
transfer to the Python workers and back is the same for every revision.

With ``--compare-to REV``, ``information_gain.py`` of git revision ``REV`` builds its own model
from the same fit and scores the same batches, alternating (``REV`` first); the largest absolute
difference of ``g`` and ``w`` between the two is recorded. ``REV`` must score cross-fitted models
(``pointwise_scores(shard, fold, values, model, lam)``).

    .venv/bin/python benchmarks/bench_ig_scoring.py --events 1e6 --compare-to HEAD~1
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
from harness import module_at, save
from pyspark.sql import functions as F
from run_all import kept_lakehouse_parser, kept_samples

from sampleimp_spark import schema as S
from sampleimp_spark.config import InformationGainConfig
from sampleimp_spark.features.behavior import feature_columns
from sampleimp_spark.weighting import information_gain as IG


def _whole_model(module, result):
    """The scoring model of ``module`` in one piece: this checkout's public ``scoring_models``
    (parts of whole shards) concatenated. A revision from before it was public has only its
    private builder, which ``--compare-to`` must call to score with that revision."""
    if hasattr(module, "scoring_models"):
        parts = module.scoring_models(result)
    elif hasattr(module, "_scoring_models"):
        parts = module._scoring_models(result)
    else:
        return module._scoring_model(result)
    return module.ScoringModel(
        pd.Index([s for p in parts for s in p.shards]),
        *(np.concatenate([getattr(p, f) for p in parts]) for f in ("edges", "terms", "g_mean")),
    )


def main() -> None:
    p = kept_lakehouse_parser(__doc__, reps=3, reps_help="timed passes over the rows (per revision)")
    p.add_argument("--rows", type=int, default=200_000, help="samples collected and scored")
    p.add_argument("--batch", type=int, default=10_000, help="rows per pointwise_scores call")
    p.add_argument("--compare-to", metavar="REV", help="also time information_gain.py of this git revision")
    args = p.parse_args()

    path = "sampleimp_spark/weighting/information_gain.py"
    impls = ([(args.compare_to, module_at(args.compare_to, path))] if args.compare_to else []) + [("this checkout", IG)]
    samples = kept_samples(args.events, args.driver_memory)
    features = tuple(feature_columns(samples))
    cfg = InformationGainConfig()  # the weights stage's defaults
    t = time.perf_counter()
    result = IG.information_gain(
        samples, features, n_bins=cfg.n_bins, smoothing=cfg.smoothing, miller_madow=cfg.miller_madow
    )
    # The model with_ig_weight builds and ships to the workers.
    models = {name: _whole_model(module, result) for name, module in impls}
    fit_s = time.perf_counter() - t
    rows = samples.select(
        F.col(S.SHARD).cast("string"), result.fold().alias("fold"), *[F.col(f).cast("double") for f in features]
    )
    local = rows.limit(args.rows).toPandas()
    shard, fold, values = local.iloc[:, 0], local.iloc[:, 1].to_numpy(), local.iloc[:, 2:].to_numpy(dtype=float)
    batches = [slice(a, a + args.batch) for a in range(0, len(local), args.batch)]
    shards_per_batch = [shard[b].nunique() for b in batches]
    print(
        f"fit + models {fit_s:.1f} s; {len(local):,} rows x {len(features)} features, "
        f"{len(batches)} batches, shards per batch median {int(np.median(shards_per_batch))}",
        flush=True,
    )

    seconds: dict[str, list[float]] = {name: [] for name, _ in impls}
    out: dict[str, pd.DataFrame] = {}
    for _ in range(args.reps):
        for name, module in impls:
            t = time.perf_counter()
            parts = [module.pointwise_scores(shard[b], fold[b], values[b], models[name], cfg.lam) for b in batches]
            seconds[name].append(round(time.perf_counter() - t, 2))
            out[name] = pd.concat(parts, ignore_index=True)
            print(f"{name}: {seconds[name][-1]:.2f} s", flush=True)
    record: dict[str, object] = {
        "events": int(args.events),
        "rows": len(local),
        "features": len(features),
        "shards": len(models["this checkout"].shards),
        "batch": args.batch,
        "shards_per_batch_median": int(np.median(shards_per_batch)),
        "compare_to": args.compare_to,
        "seconds": seconds,
        "ms_per_10k_rows": {n: round(1e4 * 1e3 * float(np.median(s)) / len(local), 1) for n, s in seconds.items()},
    }
    if args.compare_to:
        a, b = out["this checkout"], out[args.compare_to]
        record["largest_difference"] = float(max((a["g"] - b["g"]).abs().max(), (a["w"] - b["w"]).abs().max()))
        print(f"largest difference {record['largest_difference']:.3g}", flush=True)
    result.unpersist()
    print(f"saved {save(f'ig-scoring-{int(args.events / 1e6)}m{args.tag}', record)}")


if __name__ == "__main__":
    main()
