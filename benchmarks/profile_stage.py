"""Where one pipeline stage spends its time: Spark's own per-operator metrics.

Runs one stage (default ``features``) on a copy of the bronze table of a lakehouse that
``run_all.py --keep-data`` left under ``benchmarks/data/run_<n>`` (after an untimed warm-up of the
same stage), then reads the SQL executions of the measured run from Spark's monitoring REST API
(``/api/v1/applications/<id>/sql``) and prints, summed over the run:

* per whole-stage-codegen block: its duration and the operators fused in it;
* per shuffle (``Exchange``): rows and bytes written and its write time;
* per operator kind: sort time, aggregation build time, spill.

With ``--py-spy``, the Python workers are sampled too: ``py-spy record`` attaches to the
pyspark daemon (started by the warm-up's first pandas UDF) and the workers it forks, for the
measured run only, and the samples are summed by what the workers were doing — the project's
UDF code (by its outermost function), Arrow (de)serialization, the rest of the worker loop —
with the hottest leaf frames. Only samples of running threads count (py-spy leaves out threads
waiting on a socket), so the total is the workers' busy time, summed over workers.

    .venv/bin/python benchmarks/profile_stage.py --events 1e6 --stage features
    .venv/bin/python benchmarks/profile_stage.py --events 1e6 --stage weights --py-spy

The JSON (``results/<date>-<host>-profile-<stage>-<n>m<tag>.json``) keeps every row. Durations are task
time summed over tasks (on 2 cores about twice the wall time of a fully parallel block), and a
block's duration includes the blocks pipelined into it in the same Spark stage, so block figures
overlap and do not add up; the shuffle rows and bytes are exact.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from harness import cmdline, descendants, save
from measure import free_port
from run_all import DATA, make_config, parse_args, scratch_lakehouse

from sampleimp_spark.session import get_session
from sampleimp_spark.stages.pipeline import run_stages

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
    """Executions by wall time, and codegen blocks, shuffles and operator kinds summed over them."""
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
    walls = [
        {"execution": ex["id"], "seconds": ex.get("duration", 0) / 1000, "description": ex.get("description") or ""}
        for ex in execs
    ]
    walls.sort(key=lambda e: -e["seconds"])
    return {
        "executions": walls,
        "blocks": blocks,
        "shuffles": shuffles,
        "kinds": {k: dict(v) for k, v in kinds.items()},
    }


@contextmanager
def py_spy(path: Path, rate: int) -> Iterator[None]:
    """``py-spy record`` of the pyspark daemon and its forked workers while in the block."""
    daemons = [pid for pid in descendants(os.getpid()) if "pyspark.daemon" in cmdline(pid)]
    if not daemons:
        raise SystemExit("no pyspark daemon running: --py-spy needs the warm-up (its pandas UDFs start the daemon)")
    exe = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or "py-spy"
    cmd = [exe, "record", "--pid", str(daemons[0]), "--subprocesses", "--nonblocking"]
    cmd += ["--rate", str(rate), "--format", "raw", "--output", str(path)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(1)  # attached before the run starts
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        _, err = proc.communicate(timeout=120)
        if not path.exists():
            raise SystemExit(f"py-spy wrote nothing: {err.strip()[-500:]}")


#: What a worker sample is doing: the first kind whose marker is in one of its frames, looked for
#: from the innermost frame out. py-spy names pyspark's files by their base name.
_WORKER_KINDS = (
    ("project UDF code", "sampleimp_spark/"),
    ("Arrow <-> pandas (de)serialization", "serializers.py"),
    ("Arrow <-> pandas (de)serialization", "conversion.py"),
    ("Arrow <-> pandas (de)serialization", "pyarrow/"),
)
#: A sample whose innermost Python frame is the forked worker's own loop in ``daemon.py``: with
#: worker reuse, pyspark runs ``gc.collect()`` there after every task.
_DAEMON_LOOP = ("worker loop between tasks (pyspark daemon.py: gc.collect)", "manager (daemon.py:")


def summarize_py_spy(path: Path, rate: int, top: int) -> dict[str, Any]:
    """Busy seconds of the Python workers by kind, by outermost project function, and by leaf frame."""
    kinds: Counter[str] = Counter()
    project: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        inner_first = frames[::-1]
        kind = next((k for k, marker in _WORKER_KINDS if any(marker in f for f in inner_first)), "other worker code")
        if frames[-1].startswith(_DAEMON_LOOP[1]):
            kind = _DAEMON_LOOP[0]
        kinds[kind] += n
        ours = [f for f in frames if "sampleimp_spark/" in f]
        if ours:
            project[ours[0].split(" (")[0]] += n
        leaves[frames[-1]] += n
    total_samples = sum(kinds.values())

    def secs(c: Counter[str], k: int | None = None) -> list[list[Any]]:
        return [[name, round(n / rate, 1)] for name, n in c.most_common(k)]

    return {
        "rate_hz": rate,
        "busy_seconds": round(total_samples / rate, 1),
        "by_kind": secs(kinds),
        "project_functions": secs(project, top),
        "leaf_frames": secs(leaves, top),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=float, default=1e6)
    p.add_argument("--stage", default="features", choices=["features", "weights"])
    p.add_argument("--no-warmup", action="store_true")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--tag", default="", help="suffix of the results file name")
    p.add_argument("--py-spy", action="store_true", help="also sample the Python workers with py-spy")
    p.add_argument("--py-spy-rate", type=int, default=50, help="py-spy samples per second")
    args = p.parse_args()
    if args.py_spy and args.no_warmup:
        p.error("--py-spy needs the warm-up (it attaches to the pyspark daemon the warm-up starts)")
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
    raw = DATA / f"py-spy-{args.stage}-{n}.txt"  # collapsed stacks, kept (git-ignored) for flame graphs
    t = time.perf_counter()
    with py_spy(raw, args.py_spy_rate) if args.py_spy else contextlib.nullcontext():
        run_stages(spark, cfg, [args.stage], run_id=f"profile-{args.stage}")
    seconds = time.perf_counter() - t
    time.sleep(3)  # let the listener bus catch up
    execs = [e for e in executions(sc.uiWebUrl, sc.applicationId) if e["id"] not in before]
    out = summarize(execs)
    print(f"{args.stage} at {n:,} events: {seconds:.1f} s wall, {len(execs)} SQL executions")
    print(f"\nSQL executions (top {args.top} by wall time, s; the job description names the step):")
    for e in out["executions"][: args.top]:
        print(f"  {e['seconds']:8.1f}  [{e['execution']}] {e['description'][:150]}")
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
    if args.py_spy:
        out["py_spy"] = spy = summarize_py_spy(raw, args.py_spy_rate, args.top)
        print(f"\nPython workers (py-spy, {spy['rate_hz']} Hz): busy {spy['busy_seconds']:.1f} s summed over workers")
        for kind, sec in spy["by_kind"]:
            print(f"  {sec:8.1f} s  {kind}")
        print("  project functions (outermost in the stack):")
        for name, sec in spy["project_functions"]:
            print(f"  {sec:8.1f} s  {name}")
        print("  leaf frames:")
        for name, sec in spy["leaf_frames"]:
            print(f"  {sec:8.1f} s  {name[:150]}")
    path = save(
        f"profile-{args.stage}-{n / 1e6:g}m{args.tag}",
        {"events": n, "stage": args.stage, "seconds": round(seconds, 1), **out},
    )
    print(f"saved {path}")
    shutil.rmtree(lakehouse, ignore_errors=True)


if __name__ == "__main__":
    main()
