"""The IG contingency counts with and without the shared-feature groups: time and equality.

On a lakehouse that ``run_all.py --keep-data`` left under ``benchmarks/data/run_<n>``, computes the
weights stage's IG bin edges once (cached), then the contingency counts of the latest window's
``silver.samples`` (the weights stage's ``_counts``) two ways, ``--reps`` times each in one JVM:
every feature stacked once per sample (``groups=()``, the counts before a9a3f90), and the user,
item and category features stacked once per distinct (shard, label, value tuple) with their
number of samples (``shared_feature_groups``, what the stage does). Checks that both give the
same rows (``exceptAll`` both ways), and records the stacked rows each way.

    .venv/bin/python benchmarks/bench_ig_counts.py --events 1e6
"""

from __future__ import annotations

import time

from harness import save
from run_all import kept_lakehouse_parser, kept_samples, noop

from sampleimp_spark import schema as S
from sampleimp_spark.features.behavior import feature_columns, shared_feature_groups
from sampleimp_spark.weighting import information_gain as IG


def main() -> None:
    p = kept_lakehouse_parser(__doc__, reps=3, reps_help="timed runs of each way (alternating)")
    args = p.parse_args()

    samples = kept_samples(args.events, args.driver_memory)
    features = tuple(feature_columns(samples))
    groups = shared_feature_groups(features)
    cfg = IG.InformationGainConfig()
    edges = IG.information_gain(samples, features, cfg=cfg).edges_long
    n_edges = edges.count()  # computed once and cached: only the counts are timed

    def counts(way: list[list[str]]):
        return IG._counts(
            samples, features, edges, shard_col=S.SHARD, label_col=S.LABEL_PURCHASE, n_bins=cfg.n_bins, groups=way
        )

    ways = {"per sample": [], "shared groups": groups}
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(args.reps):
        for name, way in ways.items():
            t = time.perf_counter()
            noop(counts(way))
            seconds[name].append(round(time.perf_counter() - t, 1))
            print(f"{name}: {seconds[name][-1]:.1f} s", flush=True)
    plain, grouped = counts([]), counts(groups)
    differ = plain.exceptAll(grouped).count() + grouped.exceptAll(plain).count()
    n_samples = samples.count()
    grouped_rows = sum(samples.select(S.SHARD, S.LABEL_PURCHASE, *g).distinct().count() * len(g) for g in groups)
    in_groups = sum(len(g) for g in groups)
    path = save(
        f"ig-counts-{int(args.events / 1e6)}m{args.tag}",
        {
            "events": int(args.events),
            "samples": n_samples,
            "features": len(features),
            "grouped_features": {g[0].split("_", 1)[0]: len(g) for g in groups},
            "edges_rows": n_edges,
            "stacked_rows": {
                "per sample": n_samples * len(features),
                "shared groups": grouped_rows + n_samples * (len(features) - in_groups),
            },
            "seconds": seconds,
            "count_rows": plain.count(),
            "rows_that_differ": differ,
        },
    )
    print(f"rows that differ: {differ}; saved {path}")


if __name__ == "__main__":
    main()
