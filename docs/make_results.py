"""Regenerate docs/RESULTS.md: run the pipeline on every real sample the protocol can use, then
write the tables from the lakehouses with delta-rs (no Spark for the tables).

    python docs/make_results.py                  # the runs, then docs/RESULTS.md
    python docs/make_results.py --render-only    # docs/RESULTS.md from the lakehouses of the runs

The runs go to ``--workdir`` (default /tmp/sampleimp-results), one lakehouse per sample; the run id
is ``results-<sample>``. Needs the package installed with the ``docs`` extra.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from deltalake import DeltaTable

from sampleimp_spark import schema as S
from sampleimp_spark.evaluation import names as N
from sampleimp_spark.stages.report import experiment_tables

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
OUT = ROOT / "docs" / "RESULTS.md"


@dataclass(frozen=True)
class Sample:
    title: str
    overrides: tuple[str, ...]


SAMPLES = {
    "taobao": Sample(
        "Taobao UserBehavior, a contiguous prefix (815 users with complete histories, 9 days)",
        (
            "input.source=taobao",
            f"input.paths=[{DATA / 'taobao_userbehavior' / 'UserBehavior.csv'}]",
            "ingest.valid_from=2017-11-25T00:00:00+08:00",
            "ingest.valid_until=2017-12-04T00:00:00+08:00",
        ),
    ),
}

#: The real samples the protocol cannot use, and why.
NOT_RUN = {
    "taobao_userbehavior_timeslice": "2 h 10 min of events (2017-11-26 01:00-03:10 UTC): no day-long label "
    "period, let alone the four consecutive windows of two origins.",
    "rees46_multicategory": "the first ~17 minutes of 2019-10-01: no day-long window.",
    "tianchi_mobile_recommend": "1,999 events of 34 users over 31 days with 35 purchases in all: a "
    "one-day label period holds about one positive, and 34 users leave a per-user bootstrap nothing to resample.",
    "amazon_magazine_subscriptions": "reviews with a rating, not a behavior log: no views, carts or "
    "purchases to weigh, and 10,000 reviews spread over years with no user seen in two windows in a row.",
}

PRIMARY = {N.ALS: N.NDCG_AT_K, N.ALS_GBT: N.NDCG_AT_K, N.GBT: N.AVERAGE_PRECISION}


def table(lakehouse: Path, name: str) -> pd.DataFrame:
    return DeltaTable(str(lakehouse / S.table_folder(name))).to_pandas()


def run(name: str, sample: Sample, workdir: Path) -> float:
    """Run the whole pipeline on one sample; return its wall time in seconds."""
    home = workdir / name
    home.mkdir(parents=True, exist_ok=True)
    cmd = [str(Path(sys.executable).with_name("sampleimp")), "run", "--run-id", f"results-{name}"]
    for item in (f"lakehouse={home / 'lakehouse'}", f"run.runs_dir={home / 'runs'}", *sample.overrides):
        cmd += ["--set", item]
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    start = time.monotonic()
    with open(home / "run.log", "w") as log:
        subprocess.run(cmd, check=True, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    seconds = time.monotonic() - start
    (home / "wall_seconds").write_text(f"{seconds:.1f}\n")
    return seconds


def _machine() -> str:
    mem = next(
        (int(line.split()[1]) / 2**20 for line in Path("/proc/meminfo").read_text().splitlines() if "MemTotal" in line),
        float("nan"),
    )
    return f"{os.cpu_count()} cores, {mem:.0f} GiB, {platform.system()} {platform.machine()}, Spark local[*]"


def _stage_lines(home: Path) -> list[str]:
    log = (home / "run.log").read_text() if (home / "run.log").exists() else ""
    return [line.split("sampleimp_spark: ", 1)[1] for line in log.splitlines() if ": ok " in line and "stage " in line]


def _segment(value: object) -> str:
    return value if isinstance(value, str) else "all"


def _findings(summary: pd.DataFrame) -> list[str]:
    """Per model: does any weighted variant differ from unweighted beyond its interval, and how do the
    ranking models compare with the history baseline (primary metric, estimator and segment)."""
    out = []
    primary = summary[
        (summary["estimator"] == N.UNWEIGHTED) & (summary["segment"].isna() | (summary["segment"] == "all"))
    ]
    for model, metric in PRIMARY.items():
        rows = primary[(primary["model"] == model) & (primary["metric"] == metric)]
        if rows.empty:
            continue
        parts = []
        for r in rows[rows["variant"] != N.REFERENCE_VARIANT].itertuples():
            if r.delta_ci_low > 0:
                verdict = "better"
            elif r.delta_ci_high < 0:
                verdict = "worse"
            else:
                verdict = "no difference detected"
            parts.append(
                f"`{r.variant}` {verdict} (Δ {r.delta:+.4f}, 95 % [{r.delta_ci_low:+.4f}, {r.delta_ci_high:+.4f}], "
                f"MDE {r.mde:.4f})"
            )
        line = f"* **{model}** ({metric}): " + ("; ".join(parts) if parts else "only the unweighted variant ran")
        if model != N.GBT:
            hist = []
            for r in rows.itertuples():
                if pd.isna(r.vs_history_ci_low):
                    continue
                side = (
                    "above"
                    if r.vs_history_ci_low > 0
                    else "below"
                    if r.vs_history_ci_high < 0
                    else "not distinguishable from"
                )
                hist.append(f"`{r.variant}` {side} history ({r.vs_history:+.4f})")
            line += ". Against the history baseline: " + "; ".join(hist)
        # other metrics where a weighted variant differs beyond its interval (log-loss: lower is better)
        mine = summary[(summary["model"] == model) & (summary["estimator"] == N.UNWEIGHTED)]
        lower_better = mine["metric"].isin([N.LOG_LOSS])
        below, above = mine["delta_ci_high"] < 0, mine["delta_ci_low"] > 0
        for word, rows in (
            ("worse", mine[(below & ~lower_better) | (above & lower_better)]),
            ("better", mine[(above & ~lower_better) | (below & lower_better)]),
        ):
            flagged = sorted({f"{r.variant} {r.metric} ({_segment(r.segment)})" for r in rows.itertuples()})
            if flagged:
                line += f". Significantly {word} elsewhere: " + ", ".join(flagged)
        out.append(line + ".")
    return out


def _selection_lines(lakehouse: Path, run_id: str) -> list[str]:
    """The weighting validation chose to ship, and every candidate's paired evidence."""
    if not (lakehouse / S.table_folder(S.GOLD_WEIGHT_SELECTION)).exists():
        return []
    sel = table(lakehouse, S.GOLD_WEIGHT_SELECTION)
    sel = sel[sel[S.RUN_ID] == run_id].sort_values(["family", "variant"])
    if sel.empty:
        return []
    out = [
        "### The weight that ships",
        "",
        f"`weight` of the run's window `{sel[S.WINDOW_ID].iloc[0]}`, chosen on the validation windows (before "
        f"every evaluation period): {sel['reason'].iloc[0]}.",
        "",
        "| family | variant | metric | validation value | Δ | 95 % interval | MDE | chosen |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in sel.itertuples():
        delta = "" if pd.isna(r.delta) else f"{r.delta:+.4f}"
        ci = "" if pd.isna(r.delta_ci_low) else f"[{r.delta_ci_low:+.4f}, {r.delta_ci_high:+.4f}]"
        mde = "" if pd.isna(r.mde) else f"{r.mde:.4f}"
        out.append(
            f"| {r.family} | `{r.variant}` | {r.metric} | {r.value:.4f} | {delta} | {ci} | {mde} | "
            f"{'yes' if r.chosen else ''} |"
        )
    return [*out, ""]


def render(name: str, sample: Sample, workdir: Path) -> str:
    home = workdir / name
    lakehouse = home / "lakehouse"
    run_id = f"results-{name}"
    summary = table(lakehouse, S.GOLD_EXPERIMENT_RESULTS)
    summary = summary[summary[S.RUN_ID] == run_id]
    gold = table(lakehouse, S.GOLD_TRAINING_SAMPLES)
    events = DeltaTable(str(lakehouse / S.table_folder(S.BRONZE_EVENTS))).to_pyarrow_table().num_rows
    windows = (
        gold.groupby(S.WINDOW_ID)
        .agg(samples=(S.USER_ID, "size"), positives=(S.LABEL_PURCHASE, "sum"), users=(S.USER_ID, "nunique"))
        .reset_index()
    )
    wall = (home / "wall_seconds").read_text().strip() if (home / "wall_seconds").exists() else "?"
    n_users = summary["n_users"].dropna()
    lines = [
        f"## {name}: {sample.title}",
        "",
        f"{events:,} events; {len(windows)} windows of equal length (one label period apart); evaluated users per "
        f"comparison: {int(n_users.min()) if len(n_users) else 0:,}–{int(n_users.max()) if len(n_users) else 0:,} "
        f"(pooled over origins); bootstrap B = {int(summary['n_boot'].max())}. Whole run {wall} s.",
        "",
        "| window | samples | positives | users |",
        "|---|---|---|---|",
        *(f"| `{r.window_id}` | {r.samples:,} | {int(r.positives):,} | {r.users:,} |" for r in windows.itertuples()),
        "",
        "Stage times:",
        "",
        "```",
        *_stage_lines(home),
        "```",
        "",
        "### What the data says",
        "",
        *_findings(summary),
        "",
        *_selection_lines(lakehouse, run_id),
        experiment_tables(summary),
        "",
    ]
    return "\n".join(lines)


HEADER = """# Results: do the weights help?

Regenerated by one command (the runs, then this file; `--render-only` for the tables alone):

```bash
pip install -e '.[docs]' && python docs/make_results.py
```

Machine: {machine}. Every figure is from the runs below, with the embedded default configuration
except the input. Protocol ([evaluation.md](evaluation.md)): rolling origins over equal windows,
every variant tuned with the same grid on the first origin's validation data, models compared per
user with a paired bootstrap (Δ = variant − unweighted, the same draws for both arms), Holm over
model × metric × variant, and the minimum detectable effect (MDE, 80 % power) beside each Δ.
"better"/"WORSE" means the 95 % interval of Δ excludes 0; otherwise no difference was detected.
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/sampleimp-results"))
    ap.add_argument("--render-only", action="store_true")
    args = ap.parse_args()
    if not args.render_only:
        for name, sample in SAMPLES.items():
            print(f"running {name} ...", flush=True)
            seconds = run(name, sample, args.workdir)
            print(f"  {name}: {seconds:.0f} s", flush=True)
    parts = [HEADER.format(machine=_machine())]
    parts += [render(name, sample, args.workdir) for name, sample in SAMPLES.items()]
    parts.append("## Samples the protocol cannot use\n")
    parts += [f"* `{name}`: {why}" for name, why in NOT_RUN.items()]
    OUT.write_text("\n".join(parts) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
