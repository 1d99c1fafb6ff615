"""Tables and plots of docs/RESULTS.md, from a lakehouse where `sampleimp run` ran (no Spark).

python docs/make_results.py /path/to/lakehouse RUN_ID > /tmp/tables.md
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
from deltalake import DeltaTable

from sampleimp_spark import schema as S
from sampleimp_spark.stages.report import (
    DIAGNOSTIC_COLUMNS,
    plot_class_frequencies,
    plot_information_gain,
    plot_metrics,
    plot_weights,
)

OUT = Path(__file__).resolve().parent / "results"
VARIANTS = ["unweighted", "class", "density_ratio", "information_gain", "combined"]


def table(lakehouse: str, name: str) -> pd.DataFrame:
    return DeltaTable(str(Path(lakehouse) / S.table_folder(name))).to_pandas()


def pivot(summary: pd.DataFrame, model: str, metrics: list[str]) -> str:
    rows = summary[(summary["model"] == model) & summary["metric"].isin(metrics) & (summary["estimator"] != "ips")]
    rows = rows.assign(cell=rows.apply(lambda r: f"{r['mean']:.4f} ± {r['std']:.4f}", axis=1))
    wide = rows.pivot_table(index=["metric", "estimator"], columns="variant", values="cell", aggfunc="first")
    wide = wide[[v for v in VARIANTS if v in wide.columns]]
    return wide.to_markdown()


def main() -> None:
    lakehouse, run_id = sys.argv[1], sys.argv[2]
    OUT.mkdir(exist_ok=True)
    summary = table(lakehouse, S.GOLD_EXPERIMENT_RESULTS)
    summary = summary[summary["run_id"] == run_id]
    window = summary["window_id"].iloc[0]
    print("## ALS\n")
    print(
        pivot(
            summary,
            "als",
            ["ndcg_at_k", "recall_at_k", "precision_at_k", "map_at_k", "hit_rate_at_k", "catalog_coverage_at_k"],
        )
    )
    print("\n## ALS + GBT re-ranking\n")
    print(
        pivot(
            summary, "als+gbt", ["ndcg_at_k", "recall_at_k", "precision_at_k", "hit_rate_at_k", "catalog_coverage_at_k"]
        )
    )
    print("\n## GBT\n")
    print(pivot(summary, "gbt", ["roc_auc", "pr_auc", "log_loss", "precision", "recall", "f1"]))
    metrics = table(lakehouse, S.GOLD_METRICS)
    metrics = metrics[(metrics["run_id"] == run_id) & (metrics["estimator"] == "unweighted")]
    ci = (
        metrics[metrics["metric"].isin(["ndcg_at_k", "roc_auc", "pr_auc"])]
        .groupby(["model", "metric", "variant"])[["ci_low", "ci_high"]]
        .mean()
    )
    print("\n## Mean 95% bootstrap interval (unweighted estimator)\n")
    print(ci.round(4).to_markdown())
    diag = table(lakehouse, S.GOLD_WEIGHT_DIAGNOSTICS)
    diag = diag[diag["window_id"] == window].sort_values("rows", ascending=False)
    print("\n## Weight diagnostics (10 largest shards)\n")
    cols = list(DIAGNOSTIC_COLUMNS)
    print(diag[cols].head(10).round(3).to_markdown(index=False))
    print(
        f"\nfallbacks: {diag['dr_fallback_reason'].value_counts().to_dict()}; "
        f"median ESS/rows {diag['ess_ratio'].median():.3f}"
    )
    freqs = table(lakehouse, S.SILVER_CLASS_FREQUENCIES)
    plot_class_frequencies(freqs[freqs["window_id"] == window], OUT)
    imp = table(lakehouse, S.GOLD_FEATURE_IMPORTANCE)
    plot_information_gain(imp[imp["window_id"] == window], OUT)
    gold = DeltaTable(str(Path(lakehouse) / S.table_folder(S.GOLD_TRAINING_SAMPLES))).to_pandas(
        columns=[S.WINDOW_ID, S.W_CLASS, S.W_DR, S.W_IG, S.WEIGHT]
    )  # ~50k rows: the real sample is small
    plot_weights(gold[gold[S.WINDOW_ID] == window], diag, OUT)
    plot_metrics(summary, OUT)


if __name__ == "__main__":
    main()
