"""The IG fit with and without the shared-feature groups: time and equality.

On a lakehouse that ``run_all.py --keep-data`` left under ``benchmarks/data/run_<n>``, fits the
weights stage's information gain (default settings, every feature) on the latest window of
``silver.samples`` two ways, ``--reps`` times each in one JVM, alternating: every feature stacked
once per sample for the contingency counts (``groups=()``), and the user, item and category
features stacked once per distinct (shard, label, value tuple) with their number of samples
(``shared_feature_groups``, what the stage does). Each run computes the fit up to its bin scores
(bin edges, contingency counts, per-shard IG); the edges and the per-shard IG are the same work
both ways, so the difference between the two times is the counting's. Checks that both ways give
the same bin scores (``exceptAll`` both ways), and records the stacked rows each way.

    .venv/bin/python benchmarks/bench_ig_counts.py --events 1e6
"""

from __future__ import annotations

import time

from harness import save
from run_all import kept_lakehouse_parser, kept_samples, noop

from sampleimp_spark import schema as S
from sampleimp_spark.config import InformationGainConfig
from sampleimp_spark.features.behavior import feature_columns, shared_feature_groups
from sampleimp_spark.weighting import information_gain as IG


def main() -> None:
    p = kept_lakehouse_parser(__doc__, reps=3, reps_help="timed runs of each way (alternating)")
    args = p.parse_args()

    samples = kept_samples(args.events, args.driver_memory)
    features = tuple(feature_columns(samples))
    groups = shared_feature_groups(features)
    cfg = InformationGainConfig()  # the weights stage's defaults

    def fit(way: list[list[str]]) -> IG.IGResult:
        return IG.information_gain(
            samples,
            features,
            n_bins=cfg.n_bins,
            smoothing=cfg.smoothing,
            miller_madow=cfg.miller_madow,
            label_col=S.LABEL_PURCHASE,
            groups=way,
        )

    ways = {"per sample": [], "shared groups": groups}
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(args.reps):
        for name, way in ways.items():
            result = fit(way)
            t = time.perf_counter()
            noop(result.bin_scores)
            seconds[name].append(round(time.perf_counter() - t, 1))
            result.unpersist()
            print(f"{name}: {seconds[name][-1]:.1f} s", flush=True)
    plain, grouped = fit([]), fit(groups)
    differ = plain.bin_scores.exceptAll(grouped.bin_scores).count()
    differ += grouped.bin_scores.exceptAll(plain.bin_scores).count()
    n_edges = plain.edges_long.count()
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
            "bin_score_rows": plain.bin_scores.count(),
            "rows_that_differ": differ,
        },
    )
    plain.unpersist()
    grouped.unpersist()
    print(f"rows that differ: {differ}; saved {path}")


if __name__ == "__main__":
    main()
