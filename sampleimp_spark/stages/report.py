"""The run report: ``<runs_dir>/<run_id>/report.md`` with PNG plots.

Everything plotted comes from small tables (per shard, per feature, per metric) or from a
bounded hash sample of the weights, never from a whole large table.

* class frequencies per shard (purchase share of samples, largest shards),
* information-gain ranking (mean IG over shards, top features),
* weight distributions and effective sample size per shard,
* metrics weighted vs unweighted (mean ± std over seeds).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")  # headless: files only

import matplotlib.pyplot as plt
import pandas as pd
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from sampleimp_spark import hashing, lake
from sampleimp_spark import schema as S
from sampleimp_spark.evaluation import names as N

if TYPE_CHECKING:
    from sampleimp_spark.config import Config
    from sampleimp_spark.stages.pipeline import RunResult

log = logging.getLogger(__name__)

MAX_SHARDS_PLOTTED = 20
MAX_WEIGHT_SAMPLE = 50_000
TOP_FEATURES = 20
#: The columns of ``gold.weight_diagnostics`` a reader looks at first.
DIAGNOSTIC_COLUMNS = (
    "shard",
    "rows",
    "ess_ratio",
    "w_min",
    "w_median",
    "w_max",
    "clipped_fraction",
    "dr_fit_quality",
    "dr_fallback_reason",
)


def _table(spark: SparkSession, cfg: Config, name: str):
    path = lake.table_path(cfg.lakehouse, name)
    return lake.read_table(spark, cfg.lakehouse, name) if lake.is_delta_table(spark, path) else None


def _save(fig: plt.Figure, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def plot_class_frequencies(freqs: pd.DataFrame, out: Path) -> str | None:
    """Purchase share and sample count of the largest shards."""
    if freqs.empty:
        return None
    purchase = freqs[(freqs[S.FREQ_KIND] == "purchase") & (freqs[S.SHARD] != S.ALL_SHARDS)]
    if purchase.empty:
        return None
    pivot = purchase.pivot_table(index=S.SHARD, columns=S.FREQ_CLASS, values=S.FREQ_COUNT, aggfunc="sum").fillna(0)
    pivot["n"] = pivot.sum(axis=1)
    pivot["share"] = pivot.get("1", 0) / pivot["n"]
    top = pivot.sort_values("n", ascending=False).head(MAX_SHARDS_PLOTTED)[::-1]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 0.35 * len(top) + 1.8), sharey=True)
    a.barh(top.index.astype(str), top["n"], color="#4c72b0")
    a.set_xlabel("samples")
    a.set_title("largest shards")
    b.barh(top.index.astype(str), 100 * top["share"], color="#dd8452")
    b.set_xlabel("purchase share of samples (%)")
    b.set_title("label imbalance per shard")
    return _save(fig, out / "class_frequencies.png")


def plot_information_gain(importance: pd.DataFrame, out: Path) -> str | None:
    """Mean IG over shards of the most informative features."""
    if importance.empty:
        return None
    mean = importance.groupby("feature")["ig"].mean().sort_values(ascending=False).head(TOP_FEATURES)[::-1]
    fig, ax = plt.subplots(figsize=(8, 0.3 * len(mean) + 1.5))
    ax.barh(mean.index, mean.to_numpy(), color="#55a868")
    ax.set_xlabel("information gain about the label (nats), mean over shards")
    ax.set_title(f"top {len(mean)} features by information gain")
    return _save(fig, out / "information_gain.png")


def plot_weights(weights: pd.DataFrame, diagnostics: pd.DataFrame, out: Path) -> str | None:
    """Histograms of the weight components (a bounded sample) and ESS / rows per shard."""
    if weights.empty:
        return None
    cols = [c for c in (S.W_CLASS, S.W_DR, S.W_SHARD, S.W_IG, S.WEIGHT) if c in weights.columns]
    fig, axes = plt.subplots(1, len(cols) + 1, figsize=(4 * (len(cols) + 1), 3.6))
    for ax, col in zip(axes, cols, strict=False):
        values = weights[col].clip(upper=float(weights[col].quantile(0.999)))
        ax.hist(values, bins=50, color="#8172b2")
        ax.set_yscale("log")
        ax.set_title(col)
        ax.set_xlabel("weight")
    diag = diagnostics.sort_values("rows", ascending=False).head(MAX_SHARDS_PLOTTED)
    ax = axes[-1]
    ax.scatter(diag["rows"], diag["ess_ratio"], color="#c44e52")
    ax.set_xscale("log")
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("rows in shard")
    ax.set_title("effective sample size / rows")
    return _save(fig, out / "weights.png")


def plot_metrics(summary: pd.DataFrame, out: Path) -> str | None:
    """Key metrics of every arm with their 95 % intervals: ranking NDCG@k (all items) of the
    models and the baselines, and the classifier's average precision."""
    panels = [
        (N.NDCG_AT_K, summary[(summary["metric"] == N.NDCG_AT_K) & (summary["segment"] == N.ALL_ITEMS)]),
        (N.AVERAGE_PRECISION, summary[summary["metric"] == N.AVERAGE_PRECISION]),
    ]
    panels = [(m, p[p["estimator"] == N.UNWEIGHTED]) for m, p in panels]
    panels = [(m, p) for m, p in panels if not p.empty]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.2), squeeze=False)
    for ax, (metric, part) in zip(axes[0], panels, strict=True):
        labels = [f"{m}\n{v}" if v != N.NO_VARIANT else m for m, v in zip(part["model"], part["variant"], strict=True)]
        err = [part["value"] - part["ci_low"], part["ci_high"] - part["value"]]
        colors = ["#999999" if m in N.BASELINES else "#4c72b0" for m in part["model"]]
        ax.bar(range(len(part)), part["value"], yerr=err, capsize=3, color=colors)
        ax.set_xticks(range(len(part)), labels, rotation=35, ha="right", fontsize=8)
        ax.set_title(f"{metric} (95 % bootstrap interval; grey: baselines)")
    return _save(fig, out / "metrics.png")


def _verdict(lo: object, hi: object, metric: str) -> str:
    """Where a paired interval of a difference lies: on the better side of 0, the worse side (for a
    metric where lower is better, such as log-loss, above 0 is worse), or across it."""
    try:
        low, high = float(lo), float(hi)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return ""
    if math.isnan(low) or math.isnan(high):
        return ""
    if metric in N.LOWER_IS_BETTER:
        low, high = -high, -low
    if low > 0:
        return "better"
    if high < 0:
        return "WORSE"
    return "no difference detected"


def experiment_tables(summary: pd.DataFrame) -> str:
    """Markdown: per model, every variant's value and its paired difference from ``unweighted``
    (interval, Holm p-value, minimum detectable effect), and every ranking arm against the history
    baseline."""
    shown = summary[summary["estimator"] == N.UNWEIGHTED].copy()
    shown["vs unweighted"] = [
        _verdict(lo, hi, m)
        for lo, hi, m in zip(shown["delta_ci_low"], shown["delta_ci_high"], shown["metric"], strict=True)
    ]
    shown["vs history"] = [
        _verdict(lo, hi, m)
        for lo, hi, m in zip(shown["vs_history_ci_low"], shown["vs_history_ci_high"], shown["metric"], strict=True)
    ]
    parts = []
    ranking = shown[shown["metric"].isin([N.NDCG_AT_K, N.RECALL_AT_K, N.PRECISION_AT_K])]
    if not ranking.empty:
        cols = [
            "model",
            "variant",
            "metric",
            "segment",
            "value",
            "ci_low",
            "ci_high",
            "delta",
            "delta_ci_low",
            "delta_ci_high",
            "p_holm",
            "mde",
            "vs unweighted",
            "vs_history",
            "vs history",
        ]
        parts.append("### Ranking (pooled over origins and seeds)\n\n" + _md_table(ranking[cols]))
    classification = shown[shown["model"] == N.GBT]
    if not classification.empty:
        cols = [
            "variant",
            "metric",
            "value",
            "ci_low",
            "ci_high",
            "delta",
            "delta_ci_low",
            "delta_ci_high",
            "p_holm",
            "mde",
            "vs unweighted",
        ]
        parts.append("### Classification (GBT, pooled over origins and seeds)\n\n" + _md_table(classification[cols]))
    return "\n".join(parts)


def _md_table(df: pd.DataFrame, floatfmt: str = "{:.4f}") -> str:
    if df.empty:
        return "_(empty)_\n"
    cells = [
        [floatfmt.format(v) if isinstance(v, float) else str(v) for v in row] for row in df.itertuples(index=False)
    ]
    head = "| " + " | ".join(map(str, df.columns)) + " |\n|" + "---|" * len(df.columns) + "\n"
    return head + "".join("| " + " | ".join(r) + " |\n" for r in cells)


def write_report(spark: SparkSession, cfg: Config, result: RunResult) -> Path:
    """Write ``report.md`` and its plots for ``result``; return the report's path."""
    out = Path(cfg.run.runs_dir).expanduser() / result.run_id
    out.mkdir(parents=True, exist_ok=True)
    parts = [f"# Run {result.run_id}\n", "## Stages\n", "```\n" + result.progress.summary() + "\n```\n"]
    for name, report in result.reports.items():
        if hasattr(report, "lines"):
            parts.append(f"### {name}\n\n```\n" + "\n".join(report.lines()) + "\n```\n")
    window_id = next(
        (getattr(r, "window_id", None) for r in result.reports.values() if getattr(r, "window_id", None)), None
    )
    features = result.reports.get("features")
    if window_id is None and features is not None:
        window_id = features.latest.windows.window_id

    def small(name: str, limit: int = 100_000) -> pd.DataFrame:
        if window_id is None:  # an ingest-only run: no window of its own to show (not every window's)
            return pd.DataFrame()
        df = _table(spark, cfg, name)
        if df is None:
            return pd.DataFrame()
        if window_id and S.WINDOW_ID in df.columns:
            df = df.where(F.col(S.WINDOW_ID) == window_id)
        if S.RUN_ID in df.columns:
            df = df.where(F.col(S.RUN_ID) == result.run_id)
        return df.limit(limit).toPandas()  # per-shard / per-metric tables: small by construction

    images = []
    freqs = small(S.SILVER_CLASS_FREQUENCIES)
    if (img := plot_class_frequencies(freqs, out)) is not None:
        images.append(("Class frequencies per shard", img))
    importance = small(S.GOLD_FEATURE_IMPORTANCE)
    if (img := plot_information_gain(importance, out)) is not None:
        images.append(("Information gain ranking", img))
    diagnostics = small(S.GOLD_WEIGHT_DIAGNOSTICS)
    gold = _table(spark, cfg, S.GOLD_TRAINING_SAMPLES)
    if gold is not None and window_id and not diagnostics.empty:
        sampled = gold.where(F.col(S.WINDOW_ID) == window_id)
        n = sampled.count()
        keep = hashing.uniform(0, F.col(S.USER_ID), F.col(S.ITEM_ID), salt="report") < min(
            1.0, MAX_WEIGHT_SAMPLE / max(n, 1)
        )
        shown = [c for c in (S.W_CLASS, S.W_DR, S.W_SHARD, S.W_IG, S.WEIGHT) if c in sampled.columns]
        weights = sampled.where(keep).select(*shown).toPandas()  # bounded sample
        if (img := plot_weights(weights, diagnostics, out)) is not None:
            images.append(("Weights and effective sample size", img))
        cols = list(DIAGNOSTIC_COLUMNS)
        parts.append(
            "## Weight diagnostics (largest shards)\n\n"
            + _md_table(
                diagnostics.sort_values("rows", ascending=False).head(MAX_SHARDS_PLOTTED)[
                    [c for c in cols if c in diagnostics]
                ]
            )
        )
    summary = small(S.GOLD_EXPERIMENT_RESULTS)
    if not summary.empty:
        if (img := plot_metrics(summary, out)) is not None:
            images.append(("Metrics of every arm", img))
        parts.append(
            "## Experiment results\n\nΔ is the paired difference from the unweighted variant of the same model "
            "(users resampled, the same draws for both arms), with its 95 % interval, Holm-adjusted p-value and "
            "the minimum detectable effect at 80 % power; 'vs history' compares with the history baseline.\n\n"
            + experiment_tables(summary)
        )
    selection = small(S.GOLD_WEIGHT_SELECTION)
    if not selection.empty:
        reason = str(selection["reason"].iloc[0])
        cols = ["family", "variant", "metric", "value", "delta", "delta_ci_low", "delta_ci_high", "mde", "chosen"]
        parts.append(
            "## Weight shipped\n\nEvery weighting compared with unweighted on the validation window (paired "
            f"intervals); `weight` of the run's window is the chosen one. {reason}.\n\n"
            + _md_table(selection.sort_values(["family", "variant"])[cols])
        )
    for title, img in images:
        parts.append(f"## {title}\n\n![{title}]({img})\n")
    path = out / "report.md"
    path.write_text("\n".join(parts))
    log.info("report: %s (%d plots)", path, len(images))
    tracked = getattr(result.reports.get("train"), "tracking_run", None)
    if tracked is not None:
        from sampleimp_spark.stages.tracking import log_report

        log_report(cfg, tracked, out)
    return path
