"""``sampleimp maintain``: compact every table of the lakehouse and delete files no reader needs.

Per table: OPTIMIZE (small files bin-packed; Z-ordered by ``maintenance.zorder`` within each
partition), then VACUUM with ``maintenance.retention_hours``, which the config refuses below
``maintenance.reader_pin_hours``. Each is one Delta commit that keeps the rows as they are, so it
may run while readers read; it should not run while a pipeline run writes the same tables (its
commit would conflict and fail, leaving the table as it was). Reports files before and after.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from pyspark.sql import SparkSession

from sampleimp_spark import lake
from sampleimp_spark import schema as S
from sampleimp_spark.config import Config
from sampleimp_spark.leases import UPKEEP, Leases

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TableUpkeep:
    """One table's files before and after."""

    name: str
    live_before: int
    live_after: int
    stored_before: int
    stored_after: int
    zorder: tuple[str, ...]

    def line(self) -> str:
        how = f"optimize zorder by {', '.join(self.zorder)}" if self.zorder else "optimize"
        return (
            f"{self.name:<26} live files {self.live_before:>5} -> {self.live_after:<5} "
            f"files on storage {self.stored_before:>5} -> {self.stored_after:<5} ({how}, vacuum)"
        )


@dataclass
class MaintenanceReport:
    retention_hours: float
    tables: list[TableUpkeep] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [f"retention {self.retention_hours:g} h", *(t.line() for t in self.tables)]


def run(spark: SparkSession, cfg: Config) -> MaintenanceReport:
    """Compact and vacuum every table that exists under ``cfg.lakehouse``, in contract order.

    Raises:
        RunConflictError: a run is using the lakehouse (upkeep waits for a quiet hour).
    """
    with Leases(cfg.lakehouse, "maintain") as held:
        held.acquire(UPKEEP)
        return _run(spark, cfg)


def _run(spark: SparkSession, cfg: Config) -> MaintenanceReport:
    mcfg = cfg.maintenance
    report = MaintenanceReport(mcfg.retention_hours)
    names = [n for n in S.CONTRACTS if lake.is_delta_table(spark, lake.table_path(cfg.lakehouse, n))]
    for i, name in enumerate(names, 1):
        path = lake.table_path(cfg.lakehouse, name)
        live, stored = lake.live_files(spark, cfg.lakehouse, name), lake.storage_files(spark, path)
        zorder = tuple(mcfg.zorder.get(name, ()))
        lake.optimize(spark, cfg.lakehouse, name, zorder)
        lake.vacuum(spark, cfg.lakehouse, name, retention_hours=mcfg.retention_hours)
        done = TableUpkeep(
            name,
            live,
            lake.live_files(spark, cfg.lakehouse, name),
            stored,
            lake.storage_files(spark, path),
            zorder,
        )
        report.tables.append(done)
        log.info("maintain %d/%d %s", i, len(names), done.line())
    return report
