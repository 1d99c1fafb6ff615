"""Where one pipeline stage spends its time: Spark's own per-operator metrics.

Runs one stage (default ``features``) on a copy of the bronze table of a lakehouse that
``run_all.py --keep-data`` left under ``benchmarks/data/run_<n>`` (after an untimed warm-up of the
same stage), then reads the SQL executions of the measured run from Spark's monitoring REST API
(``/api/v1/applications/<id>/sql``) and prints, summed over the run:

* per whole-stage-codegen block: its duration and the operators fused in it;
* per shuffle (``Exchange``): rows and bytes written and its write time;
* per operator kind: sort time, aggregation build time, spill.

    .venv/bin/python benchmarks/profile_stage.py --events 1e6 --stage features

The JSON (``results/<date>-<host>-profile-<stage>.json``) keeps every row. Durations are task
time summed over tasks (on 2 cores about twice the wall time of a fully parallel block), and a
block's duration includes the blocks pipelined into it in the same Spark stage, so block figures
overlap and do not add up; the shuffle rows and bytes are exact.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import sys
import time
import urllib.request
from collections import defaultdict
from typing import Any

from harness import save
from measure import free_port
from run_all import make_config, parse_args, scratch_lakehouse

from sampleimp_spark.pipeline import run_stages
from sampleimp_spark.session import get_session

_UNITS = {"ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "B": 1.0, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}


def total(value: str) -> float:
    """The total of a Spark SQL metric string (``"total (min, med, max ...)\\n12.3 s (...)"`` or ``"1,234"``)."""
    last = value.split("\n", 1)[-1] if "\n" in value else value
    m = re.match(r"\s*([\d,.]+)\s*([A-Za-z]*)", last)
    if not m:
        return 0.0
    return float(m.group(1).replace(",", "")) * _UNITS.get(m.group(2), 1.0)


def executions(url: str, app_id: str) -> list[dict[str, Any]]:
    api = f"{url}/api/v1/applications/{app_id}/sql?details=true&planDescription=false&length=100000"
    with urllib.request.urlopen(api, timeout=120) as resp:
        return json.loads(resp.read())


def summarize(execs: list[dict[str, Any]]) -> dict[str, Any]:
    """Codegen blocks, shuffles and operator kinds, summed over the given executions."""
    blocks: list[dict[str, Any]] = []
    shuffles: list[dict[str, Any]] = []
    kinds: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for ex in execs:
        nodes = ex.get("nodes", [])
        members: dict[int, list[str]] = defaultdict(list)
        for node in nodes:
            if node.get("wholeStageCodegenId") is not None:
                members[node["wholeStageCodegenId"]].append(node["nodeName"])
        for node in nodes:
            metrics = {m["name"]: total(m["value"]) for m in node.get("metrics", [])}
            name = node["nodeName"]
            if name.startswith("WholeStageCodegen"):
                cid = int(re.search(r"\((\d+)\)", name).group(1))
                blocks.append(
                    {
                        "execution": ex["id"],
                        "seconds": metrics.get("duration", 0.0),
                        "operators": " < ".join(members.get(cid, [])),
                    }
                )
            elif name in ("Exchange", "ShuffleExchange"):
                shuffles.append(
                    {
                        "execution": ex["id"],
                        "rows": metrics.get("shuffle records written", 0.0),
                        "mib": metrics.get("shuffle bytes written", 0.0) / 2**20,
                        "write_s": metrics.get("shuffle write time", 0.0),
                    }
                )
            for k, v in metrics.items():
                if k.endswith("time") or "spill" in k or k == "duration":
                    kinds[name][k] += v
    blocks.sort(key=lambda b: -b["seconds"])
    shuffles.sort(key=lambda s: -s["mib"])
    return {"blocks": blocks, "shuffles": shuffles, "kinds": {k: dict(v) for k, v in kinds.items()}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=float, default=1e6)
    p.add_argument("--stage", default="features", choices=["features", "weights"])
    p.add_argument("--no-warmup", action="store_true")
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    n = int(args.events)
    lakehouse = scratch_lakehouse(n, "profile", ("bronze", "silver") if args.stage == "weights" else ("bronze",))
    cfg = make_config(n, parse_args(["--sizes", str(n)]), lakehouse, free_port())
    spark = get_session(cfg.spark)
    sc = spark.sparkContext
    if not args.no_warmup:
        run_stages(spark, cfg, [args.stage], run_id=f"profile-{args.stage}-warmup")
    before = {e["id"] for e in executions(sc.uiWebUrl, sc.applicationId)}
    t = time.perf_counter()
    run_stages(spark, cfg, [args.stage], run_id=f"profile-{args.stage}")
    seconds = time.perf_counter() - t
    time.sleep(3)  # let the listener bus catch up
    execs = [e for e in executions(sc.uiWebUrl, sc.applicationId) if e["id"] not in before]
    out = summarize(execs)
    print(f"{args.stage} at {n:,} events: {seconds:.1f} s wall, {len(execs)} SQL executions")
    print(f"\ncodegen blocks (top {args.top} by summed task time, s):")
    for b in out["blocks"][: args.top]:
        print(f"  {b['seconds']:8.1f}  [{b['execution']}] {b['operators'][:150]}")
    print(f"\nshuffles (top {args.top} by MiB written):")
    for s in out["shuffles"][: args.top]:
        print(f"  {s['mib']:9.1f} MiB {s['rows']:13,.0f} rows  write {s['write_s']:6.1f} s  [{s['execution']}]")
    print(
        f"  all {len(out['shuffles'])} shuffles: {sum(s['mib'] for s in out['shuffles']):,.1f} MiB, "
        f"{sum(s['rows'] for s in out['shuffles']):,.0f} rows"
    )
    print("\noperator kinds (summed):")
    for kind, metrics in sorted(out["kinds"].items(), key=lambda kv: -max(kv[1].values(), default=0)):
        shown = ", ".join(f"{k} {v:.1f}" for k, v in sorted(metrics.items()) if v >= 0.5)
        if shown:
            print(f"  {kind}: {shown}")
    path = save(f"profile-{args.stage}", {"events": n, "stage": args.stage, "seconds": round(seconds, 1), **out})
    print(f"saved {path}")
    shutil.rmtree(lakehouse, ignore_errors=True)


if __name__ == "__main__":
    main()
