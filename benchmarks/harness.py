"""Shared pieces of the benchmark scripts: machine facts, peak-memory sampling, result files.

Benchmarks print their figures and save them as JSON under ``benchmarks/results/``; they are
never part of the test suite.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Self

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = RESULTS.parent.parent


def module_at(rev: str, path: str) -> ModuleType:
    """The module in file ``path`` (relative to the repository) as it was at git revision ``rev``,
    loaded under its own name (``<stem>_at_rev``) next to this checkout's. Its functions are
    pickled by value, so the Python workers (which cannot import it) can run its UDFs."""
    from pyspark import cloudpickle

    source = subprocess.run(
        ["git", "show", f"{rev}:{path}"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    name = f"{Path(path).stem}_at_rev"
    file = Path(tempfile.mkdtemp()) / f"{name}.py"
    file.write_text(source)
    spec = importlib.util.spec_from_file_location(name, file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    cloudpickle.register_pickle_by_value(module)
    return module


def machine_info() -> dict[str, object]:
    """Cores, memory and versions of what ran the benchmark."""
    import pyspark

    meminfo = Path("/proc/meminfo").read_text().splitlines()
    mem_kb = next(int(line.split()[1]) for line in meminfo if line.startswith("MemTotal"))
    java = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr.splitlines()[0]
    return {
        "host": socket.gethostname(),
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kb / 2**20, 1),
        "python": platform.python_version(),
        "java": java,
        "spark": pyspark.__version__,
    }


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            out.append(int(entry.name))
    return out


def descendants(pid: int) -> list[int]:
    """Process ids of every descendant of ``pid`` (read from ``/proc``)."""
    todo, seen = [pid], []
    while todo:
        p = todo.pop()
        kids = _children(p)
        seen += kids
        todo += kids
    return seen


def rss_mib(pid: int) -> float:
    """Resident set size of ``pid`` in MiB (0 when the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def cmdline(pid: int) -> str:
    """The command line of ``pid`` ("" when the process is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@dataclass
class PeriodicSampler:
    """Calls :meth:`sample` every ``interval`` seconds in a background thread while in a ``with``
    block (and once on entering it)."""

    interval: float = 0.5
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def sample(self) -> None:
        raise NotImplementedError  # subclasses record what they measure

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            time.sleep(self.interval)

    def __enter__(self) -> Self:
        self.sample()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()


@dataclass
class RssSampler(PeriodicSampler):
    """Samples the RSS of this process's descendants: the driver JVM and the Python workers."""

    jvm_peak_mib: float = 0.0
    python_workers_peak_mib: float = 0.0  # peak of the sum over concurrently alive workers
    python_worker_max_mib: float = 0.0  # peak of any single worker

    def sample(self) -> None:
        jvm = 0.0
        workers = []
        for pid in descendants(os.getpid()):
            cmd = cmdline(pid)
            if "java" in cmd.split(" ", 1)[0]:
                jvm += rss_mib(pid)
            elif "pyspark" in cmd or "python" in cmd.split(" ", 1)[0]:
                workers.append(rss_mib(pid))
        self.jvm_peak_mib = max(self.jvm_peak_mib, jvm)
        self.python_workers_peak_mib = max(self.python_workers_peak_mib, sum(workers))
        self.python_worker_max_mib = max([self.python_worker_max_mib, *workers])

    def as_dict(self) -> dict[str, float]:
        return {
            "jvm_peak_rss_mib": round(self.jvm_peak_mib, 1),
            "python_workers_peak_rss_mib": round(self.python_workers_peak_mib, 1),
            "python_worker_max_rss_mib": round(self.python_worker_max_mib, 1),
        }


def save(name: str, payload: dict[str, object]) -> Path:
    """Write ``payload`` (plus machine facts and a timestamp) to ``results/<date>-<host>-<name>.json``,
    or ``...-<name>-2.json`` (``-3``, ...) when that file exists: a second run never replaces
    the figures of the first."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    info = machine_info()
    stem = f"{datetime.now(UTC):%Y-%m-%d}-{info['host']}-{name}"
    path, n = RESULTS / f"{stem}.json", 1
    while path.exists():
        n += 1
        path = RESULTS / f"{stem}-{n}.json"
    path.write_text(
        json.dumps(
            {"benchmark": name, "at": datetime.now(UTC).isoformat(), "machine": info, **payload}, indent=2, default=str
        )
    )
    return path
