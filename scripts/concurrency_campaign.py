"""Concurrency campaign: pairs of real ``sampleimp`` processes started together on one lakehouse.

    python scripts/concurrency_campaign.py [--work DIR]

Each pair runs twice: one after the other on a fresh lakehouse (the reference), then both at once
on another. Pairs the docs allow (different sources, different months of one source) must both
exit 0; pairs they refuse (the same month, the same window, maintenance during a run) must end
with one refused (exit 1, "is in use by" naming the other) or, when the two did not overlap, both
done. Either way every table must equal the reference (row count and checksum of the sorted
rows, run stamps left out): no row lost, none duplicated. Prints one line per pair and a summary;
exits 1 if any pair failed.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from crash_campaign import SETTINGS, overrides, start, state


def _canonical(path: Path, month: int, rows: int = 2000) -> Path:
    lines = ["user_id,item_id,category_id,behavior,ts"]
    for i in range(rows):
        day = 1 + i % 27
        lines.append(
            f"u{i % 97},i{i % 389},c{i % 7},{('view', 'cart', 'purchase')[i % 3]},2024-{month:02d}-{day:02d}T10:00:00Z"
        )
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class Pair:
    name: str
    allowed: bool  # may both run at once (both must succeed)
    first: list[str]
    second: list[str]
    setup: list[list[str]] | None = None  # commands run before, on both lakehouses


def pairs(work: Path) -> list[Pair]:
    march, april = _canonical(work / "march.csv", 3), _canonical(work / "april.csv", 4)

    def canonical(path: Path) -> list[str]:
        return ["ingest", *overrides(["input.source=canonical", f"input.paths=['{path}']"])]

    generator = ["ingest", *overrides(SETTINGS)]
    features = ["features", *overrides(SETTINGS)]
    return [
        Pair("different sources (generator, canonical)", True, generator, canonical(march)),
        Pair("one source, different months", True, canonical(march), canonical(april)),
        Pair("one source, the same month", False, canonical(march), canonical(march)),
        Pair("one source, the same windows (features)", False, features, features, setup=[generator]),
        Pair("maintenance during an ingest", False, canonical(march), ["maintain"], setup=[canonical(april)]),
    ]


def _start(command: list[str], lakehouse: Path, work: Path, run_id: str, log: Path) -> subprocess.Popen:
    with log.open("w") as out:  # the child keeps its own copy of the descriptor
        return start(command, lakehouse, work, None if command[0] == "maintain" else run_id, out)


def _refusal(log: Path) -> str:
    lines = [ln for ln in log.read_text().splitlines() if "is in use by" in ln]
    return lines[0] if lines else ""


def try_pair(pair: Pair, n: int, work: Path) -> tuple[bool, str]:
    ref, both = work / f"pair{n}-reference", work / f"pair{n}-together"
    for lakehouse in (ref, both):
        for k, command in enumerate(pair.setup or []):
            code = _start(command, lakehouse, work, f"setup{n}-{k}", work / f"pair{n}-setup{k}.log").wait()
            if code != 0:
                return False, f"setup exited {code}"
    codes = [
        _start(c, ref, work, f"ref{n}-{k}", work / f"pair{n}-ref{k}.log").wait()
        for k, c in enumerate([pair.first, pair.second])
    ]
    if codes != [0, 0]:
        return False, f"reference runs exited {codes}"
    procs = [
        _start(c, both, work, f"run{n}-{k}", work / f"pair{n}-run{k}.log")
        for k, c in enumerate([pair.first, pair.second])
    ]
    codes = [p.wait() for p in procs]
    refused = [_refusal(work / f"pair{n}-run{k}.log") for k in range(2)]
    if pair.allowed:
        ok, what = codes == [0, 0], f"exits {codes}"
    else:
        one_refused = sorted(codes) == [0, 1] and any(refused[k] for k in range(2) if codes[k] == 1)
        ok, what = (
            one_refused or codes == [0, 0],
            f"exits {codes}" + (" (refused: named the holder)" if one_refused else ""),
        )
    if not ok:
        return False, what
    if sorted(codes) == [0, 1]:  # the refused run, retried once the other is done (as a scheduler would)
        k = codes.index(1)
        code = _start([pair.first, pair.second][k], both, work, f"retry{n}", work / f"pair{n}-retry.log").wait()
        if code != 0:
            return False, what + f"; the retry exited {code}"
        what += "; retry ok"
    want, got = state(ref), state(both)
    diffs = [t for t in sorted(set(want) | set(got)) if want.get(t) != got.get(t) and not t.startswith("_")]
    if diffs:
        return False, what + f"; tables differ from the reference: {diffs}"
    return True, what + f"; {len(got)} tables equal to the reference"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("concurrency-campaign"), help="scratch folder (emptied)")
    args = parser.parse_args(argv)
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    results = []
    for n, pair in enumerate(pairs(args.work), 1):
        started = time.monotonic()
        ok, what = try_pair(pair, n, args.work)
        results.append(ok)
        print(f"{'ok  ' if ok else 'FAIL'} {pair.name:<45} {what}  {time.monotonic() - started:5.0f}s", flush=True)
    print(f"concurrent pairs tried {len(results)}, as documented {sum(results)}")
    return 0 if all(results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
