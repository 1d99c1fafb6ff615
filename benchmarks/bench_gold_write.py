"""Ways to write ``gold.training_samples``, timed on a kept lakehouse's gold rows.

The weights stage writes the gold table partitioned by ``(window_id, shard_bucket)``, after a
shuffle by bucket and a sort within each task. On a lakehouse that ``run_all.py --keep-data``
left under ``benchmarks/data/run_<n>``, this reads the kept gold table into memory once (a
checkpoint, not timed) and writes it to a scratch Delta table each way, alternating ``--reps``
times in one JVM:

* ``by bucket``: :func:`sampleimp_spark.lake.gold_layout`, what the stage does:
  ``repartition(shard_bucket)``, then ``sortWithinPartitions(*GOLD_SORT)`` (``window_id,
  shard_bucket, shard, user_id, item_id``): one write task, and one file, per bucket, as large as
  the bucket (on Zipf-skewed shards the largest bucket holds a few times the mean);
* ``rebalanced``: the ``REBALANCE(shard_bucket)`` hint instead of the repartition: the same
  hash partitioning, but adaptive execution splits a partition larger than
  ``spark.sql.adaptive.advisoryPartitionSizeInBytes`` (64 MiB of shuffle data) into several
  tasks, each writing its own sorted file in the bucket, and merges small ones.

Then it checks, with pyarrow on the written files (no Spark), that every file of every way is
sorted by (shard, user, item), and that every way wrote the same rows to each bucket: per bucket,
the same row count and the same sum of a hash of each row's keys.

    .venv/bin/python benchmarks/bench_gold_write.py --events 1e7 --reps 2
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
from deltalake import DeltaTable
from harness import save
from pyspark.sql import DataFrame
from run_all import kept_gold, kept_lakehouse_parser

from sampleimp_spark import lake
from sampleimp_spark import schema as S
from sampleimp_spark.frames import checkpoint, release

KEYS = [S.SHARD, S.USER_ID, S.ITEM_ID]


def rebalanced(rows: DataFrame) -> DataFrame:
    return rows.hint("rebalance", S.SHARD_BUCKET).sortWithinPartitions(*lake.GOLD_SORT)


WAYS = {"by bucket": lake.gold_layout, "rebalanced": rebalanced}


def files_of(path: Path) -> tuple[int, dict[str, tuple[int, int]]]:
    """The number of files of the Delta table at ``path`` and, per bucket, (rows, sum of the keys'
    hashes mod 2⁶⁴); fails if a file's rows are not sorted by :data:`KEYS`."""
    table = DeltaTable(str(path))
    buckets: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    uris = table.file_uris()
    for uri in uris:
        file = uri.removeprefix("file://")
        rows = pq.read_table(file, columns=KEYS).to_pandas()
        assert rows.equals(rows.sort_values(KEYS, ignore_index=True)), f"not sorted: {file}"
        bucket = next(p.split("=", 1)[1] for p in Path(file).parts if p.startswith(f"{S.SHARD_BUCKET}="))
        hashes = pd.util.hash_pandas_object(rows, index=False).to_numpy()
        buckets[bucket][0] += len(rows)
        buckets[bucket][1] = (buckets[bucket][1] + int(hashes.sum(dtype="uint64"))) % 2**64
    return len(uris), {b: (n, h) for b, (n, h) in buckets.items()}


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
    written: dict[str, tuple[int, dict[str, tuple[int, int]]]] = {}
    try:
        for _ in range(args.reps):
            for name, way in WAYS.items():
                path = scratch / name.replace(" ", "_")
                shutil.rmtree(path, ignore_errors=True)
                t = time.perf_counter()
                way(rows).write.format("delta").partitionBy(S.WINDOW_ID, S.SHARD_BUCKET).save(str(path))
                seconds[name].append(round(time.perf_counter() - t, 1))
                print(f"{name}: {seconds[name][-1]:.1f} s", flush=True)
                written[name] = files_of(path)
        files = {name: n_files for name, (n_files, _) in written.items()}
        contents = [buckets for _, buckets in written.values()]
        same = all(c == contents[0] for c in contents)
        print(f"files sorted by (shard, user, item) every way; files {files}; the same rows per bucket: {same}")
        record = {
            "events": int(args.events),
            "rows": n,
            "columns": len(gold.columns),
            "seconds": seconds,
            "files": files,
            "same_rows_per_bucket": same,
        }
        print(f"saved {save(f'gold-write-{int(args.events / 1e6)}m{args.tag}', record)}")
    finally:
        release(rows)
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
