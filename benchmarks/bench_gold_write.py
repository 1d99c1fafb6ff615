"""The ``gold.training_samples`` write with and without the partition columns leading its sort.

The weights stage writes the gold table partitioned by ``(window_id, shard_bucket)``, after a
shuffle by bucket and a sort within each task. Spark's file writer needs each task's rows
ordered by the partition columns; when the plan's order does not start with them, it sorts
every row again by them before writing. On a lakehouse that ``run_all.py --keep-data`` left
under ``benchmarks/data/run_<n>``, this reads the kept gold table into memory once (a
checkpoint, not timed) and writes it to a scratch Delta table both ways, alternating
``--reps`` times in one JVM:

* ``shard first``: ``sortWithinPartitions(shard, user_id, item_id)`` (the stage before);
* ``partition columns first``: ``sortWithinPartitions(*GOLD_SORT)`` (the stage now:
  ``window_id, shard_bucket, shard, user_id, item_id``).

Then it checks, with pyarrow on the written files (no Spark), that every file of both ways is
sorted by (shard, user, item) and that both ways wrote the same files: per bucket, the same row
counts and first and last keys.

    .venv/bin/python benchmarks/bench_gold_write.py --events 1e7 --reps 2
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
from deltalake import DeltaTable
from harness import save
from run_all import kept_gold, kept_lakehouse_parser

from sampleimp_spark import schema as S
from sampleimp_spark.frames import checkpoint, release
from sampleimp_spark.weighting.stage import GOLD_SORT, SHARD_BUCKET

KEYS = [S.SHARD, S.USER_ID, S.ITEM_ID]
WAYS = {"shard first": KEYS, "partition columns first": list(GOLD_SORT)}


def files_of(path: Path) -> set[tuple[object, ...]]:
    """(bucket, rows, first key, last key) of every file of the Delta table at ``path``; fails
    if a file's rows are not sorted by :data:`KEYS`."""
    table = DeltaTable(str(path))
    out = set()
    for uri in table.file_uris():
        file = uri.removeprefix("file://")
        rows = pq.read_table(file, columns=KEYS).to_pandas()
        assert rows.equals(rows.sort_values(KEYS, ignore_index=True)), f"not sorted: {file}"
        bucket = next(p.split("=", 1)[1] for p in Path(file).parts if p.startswith(f"{SHARD_BUCKET}="))
        out.add((bucket, len(rows), tuple(rows.iloc[0]), tuple(rows.iloc[-1])))
    return out


def main() -> None:
    p = kept_lakehouse_parser(__doc__, reps=2, reps_help="timed writes of each way (alternating)")
    args = p.parse_args()
    _, gold = kept_gold(args.events, args.driver_memory)
    t = time.perf_counter()
    rows = checkpoint(gold)
    n = rows.count()
    print(f"{n:,} gold rows, {len(gold.columns)} columns in memory in {time.perf_counter() - t:.1f} s", flush=True)
    scratch = Path(tempfile.mkdtemp(prefix="gold-write-"))
    seconds: dict[str, list[float]] = {name: [] for name in WAYS}
    files: dict[str, set[tuple[object, ...]]] = {}
    try:
        for _ in range(args.reps):
            for name, order in WAYS.items():
                path = scratch / name.replace(" ", "_")
                shutil.rmtree(path, ignore_errors=True)
                t = time.perf_counter()
                (
                    rows.repartition(SHARD_BUCKET)
                    .sortWithinPartitions(*order)
                    .write.format("delta")
                    .partitionBy(S.WINDOW_ID, SHARD_BUCKET)
                    .save(str(path))
                )
                seconds[name].append(round(time.perf_counter() - t, 1))
                print(f"{name}: {seconds[name][-1]:.1f} s", flush=True)
                files[name] = files_of(path)
        same = files["shard first"] == files["partition columns first"]
        print(f"files sorted by (shard, user, item) both ways; the same files: {same}", flush=True)
        record = {
            "events": int(args.events),
            "rows": n,
            "columns": len(gold.columns),
            "seconds": seconds,
            "files": len(files["shard first"]),
            "same_files": same,
        }
        print(f"saved {save(f'gold-write-{int(args.events / 1e6)}m{args.tag}', record)}")
    finally:
        release(rows)
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
