"""Leases: which run may write which part of a lakehouse right now.

A run takes an exclusive lease on every (source, month) it ingests and every (source, window) it
builds, weights or trains before its first write there, and holds them until it ends; a run that
asks for a lease another run holds fails at once (:class:`RunConflictError`, exit 1) naming that
run, before it writes anything of that stage. Every run also holds the lakehouse's upkeep lease
shared, which ``sampleimp maintain`` takes exclusively. Leases are ``flock`` locks on small files
under ``<lakehouse>/_leases``: the kernel drops them when their process ends, even by SIGKILL, so a
crashed run never blocks its rerun. The lakehouse must be a POSIX folder (as it is for every
stage); over NFS, locks need NFSv4.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import socket
from datetime import UTC, date, datetime
from pathlib import Path

from sampleimp_spark.errors import RunConflictError

FOLDER = "_leases"
UPKEEP = "upkeep"


def window_key(source: str, window_id: str) -> str:
    return f"window/{source}/{window_id}"


def month_keys(source: str, first: date, last: date) -> list[str]:
    """The leases of an ingest whose events fall on ``first`` .. ``last``: one per calendar month
    (a multi-year file takes tens of leases, not a thousand)."""
    months = range(first.year * 12 + first.month - 1, last.year * 12 + last.month)
    return [f"month/{source}/{m // 12:04d}-{m % 12 + 1:02d}" for m in months]


class Leases:
    """The leases of one run (or one upkeep job), released by :meth:`release` or process exit."""

    def __init__(self, lakehouse: str, holder: str) -> None:
        self._dir = Path(lakehouse).expanduser().resolve() / FOLDER
        self._holder = holder
        self._held: dict[str, int] = {}

    def __enter__(self) -> Leases:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    @property
    def held(self) -> list[str]:
        return sorted(self._held)

    def acquire(self, *keys: str, shared: bool = False) -> None:
        """Take every lease in ``keys`` (those already held are kept); all or none of the new ones.

        Raises:
            RunConflictError: another run holds one of them; it is named in the message.
        """
        taken: list[str] = []
        try:
            for key in sorted(set(keys) - self._held.keys()):
                self._held[key] = self._lock(key, shared)
                taken.append(key)
        except BaseException:  # refused, or the lease file cannot be written (a full disk)
            for key in taken:
                os.close(self._held.pop(key))
            raise

    def release(self) -> None:
        for fd in self._held.values():
            os.close(fd)  # closing the descriptor drops the lock; the small file stays
        self._held.clear()

    def _lock(self, key: str, shared: bool) -> int:
        self._dir.mkdir(parents=True, exist_ok=True)
        path = self._dir / file_name(key)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            what, rule = (
                ("the lakehouse", "maintenance and runs exclude each other")
                if key == UPKEEP
                else (key, "runs of one source may share a lakehouse when their months and windows differ")
            )
            message = f"{what} is in use by {holder}: wait for it to finish, then run again ({rule})"
            raise RunConflictError(message) from None
        if not shared:  # who holds it, for the message of a run that is refused
            stamp = {"holder": self._holder, "pid": os.getpid(), "host": socket.gethostname()}
            stamp["since"] = datetime.now(UTC).isoformat(timespec="seconds")
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, json.dumps(stamp).encode(), 0)
            except OSError:
                os.close(fd)
                raise
        return fd


def file_name(key: str) -> str:
    """The lease file of ``key`` under ``<lakehouse>/_leases``."""
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", key)[:80]
    return f"{readable}-{hashlib.sha256(key.encode()).hexdigest()[:12]}.lease"


def _read_holder(fd: int) -> str:
    try:
        stamp = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:
        stamp = {}
    if not stamp:
        return "another run"
    return f"run {stamp.get('holder')} (pid {stamp.get('pid')} on {stamp.get('host')}, since {stamp.get('since')})"
