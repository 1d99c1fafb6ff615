"""Crash campaign: SIGKILL a stage's driver at chosen points; reruns must heal every table.

    python scripts/crash_campaign.py [--points N] [--stages ingest,features,weights,train] [--only TEXT] [--work DIR]

A clean run goes stage by stage (``sampleimp <stage>``), snapshotting the lakehouse after each.
Its Delta commits give the kill points: per stage, the first commit, the last commit and the
middle of the stage's compute (``--points`` picks that many, spread over the stages). For each
point the stage runs on a copy of the lakehouse as it was before the stage, is killed (SIGKILL
to the Python driver and its JVM, by PID) when the point is reached, and is then rerun twice on
copies of what the kill left: with the same run id and with a new one. Both reruns must exit 0
and leave every table equal to the clean run's after that stage (row count and a checksum of the
sorted rows; run stamps ``run_id``/``training_version`` left out, floats to 9 significant digits;
in tables keyed by run id, every run's rows equal the clean run's). A reader
polling every table with ``deltalake`` during all runs must only see states that the clean run's
tables also passed through. Prints one line per point and a summary; exits 1 if any point failed.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pandas as pd
from deltalake import DeltaTable

STAGES = ("ingest", "features", "weights", "train")
#: Columns that say which run wrote a row, not what it holds.
STAMPS = frozenset({"run_id", "training_version"})
#: Tables keyed by run id (one set of rows per run, DESIGN's contract): a rerun under a new id adds
#: its own rows, so each run's rows are compared, not the table.
PER_RUN = frozenset({"gold/metrics", "gold/experiment_results"})
#: A small generated log and a cheap training protocol: every stage runs, in about a minute each.
SETTINGS = [
    "input.generator.events=15000",
    "input.generator.users=300",
    "input.generator.items=2000",
    "input.generator.categories=20",
    "features.min_shard_rows=200",
    "weights.density_ratio.min_rows=20",
    "weights.density_ratio.cv_folds=3",
    "train.variants=[unweighted, combined]",
    "train.seeds=[1]",
    "train.origins=1",
    "train.als_reg_grid=[0.1]",
    "train.als_alpha_grid=[10.0]",
    "train.gbt_depth_grid=[2]",
    "train.half_life_grid=[null]",
    "train.als.rank=8",
    "train.als.max_iter=2",
    "train.als.candidates=20",
    "train.gbt.max_iter=2",
    "train.evaluation.n_boot=100",
    "train.evaluation.k=5",
    # Small data: interpreting expressions is faster than compiling them.
    'spark.conf={"spark.sql.codegen.wholeStage": "false", "spark.sql.codegen.factoryMode": "NO_CODEGEN"}',
]


def tables(lakehouse: Path) -> list[str]:
    """Names (``layer/table``) of the Delta tables under ``lakehouse``."""
    return sorted(str(p.parent.relative_to(lakehouse)) for p in lakehouse.glob("*/*/_delta_log"))


def content(frame: pd.DataFrame) -> tuple[int, str]:
    """Row count and a checksum of the rows, order-free, without run stamps."""
    frame = frame.drop(columns=[c for c in frame.columns if c in STAMPS])
    frame = frame[sorted(frame.columns)]
    for c in frame.columns:
        if pd.api.types.is_float_dtype(frame[c]):
            frame[c] = [None if pd.isna(v) else float(f"{v:.9g}") for v in frame[c]]
    rows = sorted(json.dumps(r, sort_keys=True, default=str) for r in frame.to_dict("records"))
    return len(rows), hashlib.sha256("\n".join(rows).encode()).hexdigest()[:16]


def states(table: str, frame: pd.DataFrame) -> frozenset[tuple[int, str]]:
    """The contents ``frame`` holds: the whole table, or each run's rows of a :data:`PER_RUN` table."""
    if table in PER_RUN and len(frame):
        return frozenset(content(rows) for _, rows in frame.groupby("run_id"))
    return frozenset({content(frame)})


def state(lakehouse: Path) -> dict[str, frozenset[tuple[int, str]]]:
    return {t: states(t, DeltaTable(str(lakehouse / t)).to_pandas()) for t in tables(lakehouse)}


def history(lakehouse: Path) -> dict[str, set[tuple[int, str]]]:
    """Every content each table passed through (all its versions)."""
    out: dict[str, set[tuple[int, str]]] = {}
    for t in tables(lakehouse):
        latest = DeltaTable(str(lakehouse / t)).version()
        versions = (DeltaTable(str(lakehouse / t), version=v).to_pandas() for v in range(latest + 1))
        out[t] = set().union(*(states(t, frame) for frame in versions))
    return out


def commits(lakehouse: Path) -> list[tuple[float, str, int]]:
    """(time, table, version) of every commit, oldest first."""
    out = []
    for t in tables(lakehouse):
        for f in (lakehouse / t / "_delta_log").glob("*.json"):
            out.append((f.stat().st_mtime, t, int(f.stem)))
    return sorted(out)


class Reader(threading.Thread):
    """Polls every table of a lakehouse with ``deltalake``; records states the clean run never had."""

    def __init__(self, lakehouse: Path, allowed: dict[str, set[tuple[int, str]]]) -> None:
        super().__init__(daemon=True)
        self.lakehouse, self.allowed = lakehouse, allowed
        self.reads, self.bad = 0, []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            for t in tables(self.lakehouse):
                try:
                    seen = states(t, DeltaTable(str(self.lakehouse / t)).to_pandas())
                except Exception:  # no commit yet, or a file the writer is creating
                    continue
                self.reads += 1
                if not seen <= self.allowed.get(t, set()):
                    self.bad.append((t, seen))
            time.sleep(0.2)

    def stop(self) -> None:
        self.stopping.set()
        self.join()


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


@dataclass
class Point:
    """Where to kill a stage: after a table reaches a version, or some seconds into the stage."""

    stage: str
    name: str
    table: str | None = None
    version: int | None = None
    seconds: float | None = None

    def reached(self, lakehouse: Path, started: float) -> bool:
        if self.table is not None:
            return (lakehouse / self.table / "_delta_log" / f"{self.version:020d}.json").exists()
        return self.seconds is not None and time.monotonic() - started >= self.seconds


@dataclass
class Outcome:
    point: Point
    killed: str = ""
    exits: list[int] = field(default_factory=list)
    diffs: list[str] = field(default_factory=list)
    reads: int = 0
    partial: int = 0

    @property
    def ok(self) -> bool:
        return self.killed.startswith("killed") and self.exits == [0, 0] and not self.diffs and not self.partial


def overrides(settings: list[str]) -> list[str]:
    """``settings`` as ``sampleimp`` options (``--set`` each)."""
    return [a for s in settings for a in ("--set", s)]


def start(args: list[str], lakehouse: Path, work: Path, run_id: str | None, out: IO[str]) -> subprocess.Popen:
    """Start ``sampleimp <args>`` on ``lakehouse`` (runs folder under ``work``) in its own session."""
    argv = [str(Path(sys.executable).with_name("sampleimp")), *args]
    argv += overrides([f"lakehouse={lakehouse}", f"run.runs_dir={work / 'runs'}"])
    argv += ["--run-id", run_id] if run_id else []
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def run_stage(
    stage: str, lakehouse: Path, work: Path, run_id: str, kill: Point | None = None, log: Path | None = None
) -> tuple[int, str]:
    """Run ``sampleimp <stage>``; with ``kill``, SIGKILL its driver and JVM when it is reached."""
    with open(log or os.devnull, "w") as out:
        proc = start([stage, *overrides(SETTINGS)], lakehouse, work, run_id, out)
        started, what = time.monotonic(), ""
        while proc.poll() is None:
            if kill is not None and not what and kill.reached(lakehouse, started):
                jvms = [p for p in descendants(proc.pid) if _is_java(p)]
                for pid in (proc.pid, *jvms):
                    os.kill(pid, signal.SIGKILL)
                what = f"killed at {time.monotonic() - started:.1f}s (python {proc.pid}, jvm {jvms})"
            time.sleep(0.05)
        if what:  # anything the driver left (Python workers) goes with its session
            time.sleep(1)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode, what or "not reached: the stage ended first"


def _is_java(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/exe").resolve().name == "java"
    except OSError:
        return False


def clean_run(work: Path, stages: list[str]) -> tuple[dict[str, Path], dict[str, Path], list[Point]]:
    """The reference run, stage by stage up to the last of ``stages``: the lakehouse before and
    after each stage (copies), and the kill points."""
    lakehouse = work / "clean"
    before: dict[str, Path] = {}
    after: dict[str, Path] = {}
    points: list[Point] = []
    for stage in STAGES[: max(STAGES.index(s) for s in stages) + 1]:
        before[stage] = work / f"before-{stage}"
        if lakehouse.exists():
            shutil.copytree(lakehouse, before[stage])
        else:
            before[stage].mkdir()
        done = len(commits(lakehouse)) if lakehouse.exists() else 0
        started = time.monotonic()
        code, _ = run_stage(stage, lakehouse, work, "clean", log=work / f"clean-{stage}.log")
        took = time.monotonic() - started
        if code != 0:
            raise SystemExit(f"the clean {stage} stage exited {code}: see {work / f'clean-{stage}.log'}")
        print(f"clean {stage:<9} {took:6.1f}s", flush=True)
        after[stage] = work / f"after-{stage}"
        shutil.copytree(lakehouse, after[stage])
        if stage not in stages:
            continue
        mine = commits(lakehouse)[done:]
        points.append(Point(stage, f"{stage}: mid-compute", seconds=round(took / 2, 1)))
        for label, (_, table, version) in (("first", mine[0]), ("last", mine[-1])):
            points.append(Point(stage, f"{stage}: after the {label} commit ({table} v{version})", table, version))
    return before, after, points


def try_point(point: Point, n: int, work: Path, start: Path, allowed, want) -> Outcome:
    """Kill ``point``'s stage run on a copy of ``start``; rerun it (same and new run id) on copies
    of what the kill left, and compare with ``want``."""
    out = Outcome(point)
    killed = work / f"p{n}-killed"
    shutil.copytree(start, killed)
    readers = []

    def watched(lakehouse: Path, run_id: str, kill: Point | None, tag: str) -> int:
        reader = Reader(lakehouse, allowed)
        reader.start()
        try:
            code, what = run_stage(point.stage, lakehouse, work, run_id, kill, log=work / f"p{n}-{tag}.log")
        finally:
            reader.stop()
            readers.append(reader)
        if kill is not None:
            out.killed = what
        return code

    watched(killed, f"crash-{n}", point, "killed")
    for tag, run_id in (("same-id", f"crash-{n}"), ("new-id", f"rerun-{n}")):
        lakehouse = work / f"p{n}-{tag}"
        shutil.copytree(killed, lakehouse)
        out.exits.append(watched(lakehouse, run_id, None, tag))
        got = state(lakehouse)
        for t in sorted(set(want) | set(got)):
            if got.get(t) != want.get(t):
                out.diffs.append(f"{tag} {t}: {got.get(t)} != clean {want.get(t)}")
        shutil.rmtree(lakehouse)
    shutil.rmtree(killed)
    out.reads = sum(r.reads for r in readers)
    out.partial = sum(len(r.bad) for r in readers)
    return out


def spread(points: list[Point], n: int) -> list[Point]:
    """``n`` of ``points``, taking each stage's in turn."""
    by_stage: dict[str, list[Point]] = {}
    for p in points:
        by_stage.setdefault(p.stage, []).append(p)
    picked: list[Point] = []
    while len(picked) < min(n, len(points)):
        for stage_points in by_stage.values():
            if stage_points and len(picked) < n:
                picked.append(stage_points.pop(0))
    return picked


def campaign(work: Path, n_points: int, stages: list[str], only: str = "") -> list[Outcome]:
    work.mkdir(parents=True, exist_ok=True)
    before, after, points = clean_run(work, stages)
    points = [p for p in points if only in p.name]
    allowed = history(work / "clean")  # every state the clean run's tables passed through
    outcomes = []
    for n, point in enumerate(spread(points, n_points), 1):
        started = time.monotonic()
        o = try_point(point, n, work, before[point.stage], allowed, state(after[point.stage]))
        verdict = "ok  " if o.ok else "FAIL"
        print(
            f"{verdict} {n:>2} {point.name:<60} {o.killed.split(' (')[0]:<18} reruns exit {o.exits}  "
            f"reads {o.reads}  partial {o.partial}  diffs {len(o.diffs)}  {time.monotonic() - started:5.0f}s",
            flush=True,
        )
        for d in o.diffs:
            print("     ", d)
        outcomes.append(o)
    return outcomes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=12, help="kill points, spread over the stages")
    parser.add_argument("--stages", default=",".join(STAGES), help="stages to kill (comma-separated)")
    parser.add_argument("--only", default="", help='only points whose name holds this, e.g. "last commit"')
    parser.add_argument("--work", type=Path, default=Path("crash-campaign"), help="scratch folder (emptied)")
    args = parser.parse_args(argv)
    shutil.rmtree(args.work, ignore_errors=True)
    stages = [s for s in re.split(r"[,\s]+", args.stages) if s]
    outcomes = campaign(args.work, args.points, stages, args.only)
    survived = sum(o.ok for o in outcomes)
    reads = sum(o.reads for o in outcomes)
    partial = sum(o.partial for o in outcomes)
    print(
        f"crashes injected {len(outcomes)}, survived {survived}; reruns {2 * len(outcomes)} "
        f"(same and new run id); tables differing from the clean run "
        f"{sum(len(o.diffs) for o in outcomes)}; reader polls {reads}, partial states seen {partial}"
    )
    return 0 if survived == len(outcomes) and outcomes else 1


if __name__ == "__main__":
    raise SystemExit(main())
