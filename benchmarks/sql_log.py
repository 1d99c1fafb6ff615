"""Record where a running Spark application's time goes: its SQL executions and their jobs.

Polls the monitoring REST API of the Spark UI on ``--port`` (``run_all.py`` prints its port)
every ``--every`` seconds (the UI keeps only the last 1,000 executions, so a long run must be
read while it runs; what ran in the last interval before the application ended is missed) and,
when stopped (Ctrl-C or SIGTERM), writes one record per SQL execution: id, start (UTC),
seconds, status, job ids and the jobs' call sites. RDD-only jobs (ALS and GBT fits) belong to
no SQL execution; their time is the gaps between executions.

    .venv/bin/python benchmarks/run_all.py ... &      # prints "Spark UI on port P"
    .venv/bin/python benchmarks/sql_log.py --port P --out results/<date>-vm<tag>-sql.json --what "..."
    # Ctrl-C (or kill) once run_all.py is done: the file is written then
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from harness import machine_info

PACKAGE_PREFIX = re.compile(r"\S*/sampleimp_spark/(?:stages/|training/|weighting/|features/|sources/)?")


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def poll(port: int, executions: dict[int, dict], jobs: dict[int, dict]) -> None:
    try:
        apps = get(f"http://127.0.0.1:{port}/api/v1/applications")
    except (OSError, ValueError):
        return  # not up yet, or already gone
    for app in apps:
        base = f"http://127.0.0.1:{port}/api/v1/applications/{app['id']}"
        try:
            executions.update((e["id"], e) for e in get(f"{base}/sql?details=false&length=100000"))
            jobs.update((j["jobId"], j) for j in get(f"{base}/jobs"))
        except (OSError, ValueError):
            return  # the application ended between the calls


def records(executions: dict[int, dict], jobs: dict[int, dict]) -> list[dict[str, Any]]:
    out = []
    for e in sorted(executions.values(), key=lambda e: e["id"]):
        ids = sorted(e.get("successJobIds", []) + e.get("failedJobIds", []) + e.get("runningJobIds", []))
        sites = list(dict.fromkeys(PACKAGE_PREFIX.sub("", jobs.get(i, {}).get("name", "?")) for i in ids))
        out.append(
            {
                "sql_id": e["id"],
                "start": e["submissionTime"][11:19],
                "seconds": round(e.get("duration", 0) / 1000, 1),
                "status": e["status"],
                "jobs": ids,
                "callsites": sites,
            }
        )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True, help="the Spark UI's port")
    p.add_argument("--out", type=Path, required=True, help="JSON file to write when stopped")
    p.add_argument("--what", default="", help="what was running (kept in the file)")
    p.add_argument("--every", type=float, default=30.0, help="seconds between polls")
    args = p.parse_args(argv)
    executions: dict[int, dict] = {}
    jobs: dict[int, dict] = {}
    stop = False

    def on_signal(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while not stop:
        poll(args.port, executions, jobs)
        deadline = time.monotonic() + args.every
        while not stop and time.monotonic() < deadline:
            time.sleep(0.5)
    m = machine_info()
    doc = {
        "what": args.what,
        "machine": f"{m['host']}: {m['cores']} cores, {m['memory_gib']} GiB, Spark {m['spark']}, Python {m['python']}",
        "executions": records(executions, jobs),
    }
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"{len(doc['executions'])} SQL executions -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
