"""Time the weights stage on generated events, and split it into pandas-UDF and native-Spark parts.

    python benchmarks/bench_weights.py --events 1000000 10000000

Needs the lakehouse that ``bench_features.py`` builds for the same sizes (bronze + silver, one
window). Reports, per size: the whole stage (``stages.weights.run``: every component and the gold
writes), then each step materialized on its own so their times add up:

* native: the target flag, class weights, density-ratio fit input (stratified hash sample),
  density-ratio scoring, combination;
* pandas UDF: the IG scoring (a scalar pandas UDF over the samples), the per-shard
  density-ratio fit;
* mixed: the IG bin edges (a native hash sample, then a grouped pandas UDF per shard) and the IG
  fit from the cached edges (native contingency counts, then a grouped pandas UDF per shard).

``pandas_udf_share`` is ``(pandas UDF steps) / (sum of all steps)``; ``mixed_share`` the same for
the mixed steps.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_features import config_for
from harness import RssSampler, save
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from sampleimp_spark import lake
from sampleimp_spark import schema as S
from sampleimp_spark.config import DEFAULT_DR_FEATURES
from sampleimp_spark.features.behavior import feature_columns
from sampleimp_spark.progress import RunProgress
from sampleimp_spark.session import get_session
from sampleimp_spark.stages import weights
from sampleimp_spark.weighting import class_balance, combine, density_ratio
from sampleimp_spark.weighting import information_gain as ig


def _timed(steps: dict[str, float], name: str, df: DataFrame) -> DataFrame:
    """Materialize ``df`` (cut its lineage) and record how long that took."""
    t = time.perf_counter()
    out = df.localCheckpoint()
    steps[name] = round(time.perf_counter() - t, 2)
    return out


def steps_of(spark, cfg) -> dict[str, float]:
    """Each step of the weights computation, materialized on its own."""
    wcfg = cfg.weights
    samples = lake.read_table(spark, cfg.lakehouse, S.SILVER_SAMPLES).localCheckpoint()
    freqs = lake.read_table(spark, cfg.lakehouse, S.SILVER_CLASS_FREQUENCIES).localCheckpoint()
    feats = tuple(feature_columns(samples))
    steps: dict[str, float] = {}
    df = _timed(
        steps, "native: is_target", samples.withColumn(S.IS_TARGET, F.col("pair_recency_any") < F.lit(wcfg.target_days))
    )

    icfg = wcfg.information_gain
    result = ig.information_gain(
        df, feats, n_bins=icfg.n_bins, smoothing=icfg.smoothing, miller_madow=icfg.miller_madow
    )
    # The edges are cached by the fit: materialized here, read from the cache by the next step.
    _timed(steps, "mixed: IG edges (hash sample + per-shard pandas UDF)", result.edges_long)
    _timed(steps, "mixed: IG counts + per-shard IG (pandas UDF)", result.bin_scores)
    # with_ig_weight collects the fitted tables when called, before the timer starts.
    df = _timed(steps, "pandas UDF: IG scoring", ig.with_ig_weight(df, result, feats, lam=icfg.lam))

    cb = wcfg.class_balance
    cw = class_balance.class_weights(freqs, method=cb.method, beta=cb.beta, scope=cb.scope, label=cb.label)
    label = weights.label_column(wcfg)
    df = _timed(
        steps, "native: class weights", class_balance.with_class_weight(df, cw, label_col=label, scope=cb.scope)
    )

    settings = weights.density_ratio_settings(wcfg)
    dr_feats = [f for f in DEFAULT_DR_FEATURES if f in df.columns]
    fit_in = _timed(
        steps, "native: DR fit input (capped sample)", density_ratio.fit_input(df, dr_feats, settings=settings)
    )
    params = _timed(
        steps,
        "pandas UDF: DR fit per shard",
        fit_in.groupBy(S.SHARD).applyInPandas(
            lambda p: density_ratio.fit_shard_frame(p, settings=settings, features=dr_feats, shard_col=S.SHARD),
            schema=density_ratio.params_schema(df.schema[S.SHARD].dataType),
        ),
    )
    df = _timed(steps, "native: DR scoring", density_ratio.score_density_ratio(df, params, dr_feats, settings=settings))
    cc = wcfg.combine
    _timed(
        steps,
        "native: combination",
        combine.combine_weights(df, a=cc.a, b=cc.b, c=cc.c, clip_quantile=cc.clip_quantile),
    )
    result.unpersist()
    return steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=float, nargs="+", default=[1e6, 1e7])
    parser.add_argument("--driver-memory", default="12g")
    parser.add_argument("--partitions", type=int, default=16)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    runs = []
    spark = None
    for n in (int(e) for e in args.events):
        cfg = config_for(n, args.driver_memory, args.partitions)
        spark = spark or get_session(cfg.spark)
        if not lake.is_delta_table(spark, lake.table_path(cfg.lakehouse, S.SILVER_SAMPLES)):
            raise SystemExit(f"run benchmarks/bench_features.py --events {n} first")
        with RssSampler() as rss:
            t = time.perf_counter()
            report = weights.run(
                spark, cfg, ctx=lake.RunContext(f"bench-{n}", cfg.hash(), "weights"), progress=RunProgress(f"bench-{n}")
            ).windows[-1]
            stage_seconds = time.perf_counter() - t
        steps = steps_of(spark, cfg)
        udf = sum(v for k, v in steps.items() if k.startswith("pandas UDF"))
        mixed = sum(v for k, v in steps.items() if k.startswith("mixed"))
        row = {
            "events": n,
            "samples": report.rows,
            "shards": report.shards,
            "stage_seconds": round(stage_seconds, 1),
            "steps_seconds": steps,
            "pandas_udf_share": round(udf / sum(steps.values()), 3),
            "mixed_share": round(mixed / sum(steps.values()), 3),
            **rss.as_dict(),
        }
        print(row)
        runs.append(row)
    print(f"saved {save('weights', {'driver_memory': args.driver_memory, 'runs': runs})}")


if __name__ == "__main__":
    main()
