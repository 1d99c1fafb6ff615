"""The run report's verdicts read each metric's direction: a higher log-loss is worse."""

from __future__ import annotations

import math

import pandas as pd

from sampleimp_spark.stages.report import experiment_tables

NAN = math.nan


def _row(model: str, metric: str, lo: float, hi: float, segment: str | None = "all") -> dict[str, object]:
    return {
        "model": model,
        "variant": "combined",
        "metric": metric,
        "estimator": "unweighted",
        "segment": segment,
        "value": 0.5,
        "ci_low": 0.4,
        "ci_high": 0.6,
        "delta": (lo + hi) / 2,
        "delta_ci_low": lo,
        "delta_ci_high": hi,
        "p_holm": 0.01,
        "mde": 0.01,
        "vs_history": NAN,
        "vs_history_ci_low": NAN,
        "vs_history_ci_high": NAN,
    }


def test_verdicts_follow_the_metric_direction():
    summary = pd.DataFrame(
        [
            _row("gbt", "log_loss", 0.03, 0.07, None),  # higher log-loss: worse
            _row("gbt", "average_precision", 0.03, 0.07, None),  # higher AP: better
            _row("gbt", "roc_auc", -0.01, 0.02, None),
            _row("als", "ndcg_at_k", -0.05, -0.01),
        ]
    )
    text = experiment_tables(summary)
    lines = {line.split("|")[2].strip(): line for line in text.splitlines() if line.startswith("| combined")}
    assert lines["log_loss"].rstrip(" |").endswith("WORSE"), lines["log_loss"]
    assert lines["average_precision"].rstrip(" |").endswith("better")
    assert lines["roc_auc"].rstrip(" |").endswith("no difference detected")
    (ndcg,) = [line for line in text.splitlines() if "| ndcg_at_k |" in line]
    assert "| WORSE |" in ndcg
