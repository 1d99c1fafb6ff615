"""Runs by date (``--date D``) and backfills (``sampleimp backfill --from D1 --to D2``).

A run for day D (a calendar day in the source's time zone) reads the input with ``{date}`` in
``input.paths`` replaced by ``YYYY-MM-DD``, ingests that day's events only (replacing exactly
that day's rows of ``bronze.events``; events of other days are counted as such and left to their
own runs), and builds features, weights and (with ``train.enabled``) the experiment for the
window whose label period ends at the day's end. A completed day is recorded in
``silver.window_status`` under the hash of the undated config: running it again with the same
config does nothing and says so; a backfill resumes at the first day not completed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from sampleimp_spark import lake
from sampleimp_spark import schema as S
from sampleimp_spark.config import Config
from sampleimp_spark.errors import ConfigError
from sampleimp_spark.sources import SOURCE_TIMEZONES
from sampleimp_spark.windows import Windows

log = logging.getLogger(__name__)

#: Written in ``input.paths``, replaced by the run's day (``YYYY-MM-DD``).
DATE_PLACEHOLDER = "{date}"
DONE = "done"


def parse_day(text: str, *, option: str = "--date") -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{option} must be a day as YYYY-MM-DD, got {text!r}") from None


def day_bounds(day: date, source: str) -> tuple[datetime, datetime]:
    """``[start, end)`` of ``day`` in the source's time zone, as UTC instants."""
    local = datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(SOURCE_TIMEZONES[source]))
    start = local.astimezone(UTC)
    return start, (local + timedelta(days=1)).astimezone(UTC)


def for_day(cfg: Config, day: date) -> Config:
    """The config of the run for ``day``: ``run.date`` set and ``{date}`` in the input paths filled.

    Raises:
        ConfigError: the config also fixes the windows (``features.t0``/``t1``/``t2``).
    """
    fixed = [k for k in ("t0", "t1", "t2") if getattr(cfg.features, k) is not None]
    if fixed:
        raise ConfigError(
            f"--date derives the windows from the day; unset features.{', features.'.join(fixed)} to use it"
        )
    paths = [p.replace(DATE_PLACEHOLDER, day.isoformat()) for p in cfg.input.paths]
    return cfg.model_copy(
        update={
            "run": cfg.run.model_copy(update={"date": day}),
            "input": cfg.input.model_copy(update={"paths": paths}),
        }
    )


@dataclass(frozen=True)
class DayStatus:
    stages: tuple[str, ...]
    run_id: str


def completed(spark: SparkSession, cfg: Config, day: date, config_hash: str) -> DayStatus | None:
    """What ``silver.window_status`` records as done for ``day`` with this config, if anything."""
    if lake.table_version_or_none(spark, cfg.lakehouse, S.SILVER_WINDOW_STATUS) is None:
        return None
    rows = (
        lake.read_table(spark, cfg.lakehouse, S.SILVER_WINDOW_STATUS)
        .where(
            (F.col(S.SOURCE) == cfg.input.source)
            & (F.col(S.DAY) == F.lit(day))
            & (F.col(S.CONFIG_HASH) == config_hash)
            & (F.col(S.STATUS) == DONE)
        )
        .select(S.STAGES, S.RUN_ID)
        .collect()  # at most one row: the table is keyed by (source, day, config hash)
    )
    if not rows:
        return None
    return DayStatus(tuple(rows[0][S.STAGES].split(",")), rows[0][S.RUN_ID])


def mark_done(
    spark: SparkSession,
    cfg: Config,
    day: date,
    config_hash: str,
    stages: Sequence[str],
    *,
    order: Sequence[str],
    ctx: lake.RunContext,
) -> None:
    """Record ``stages`` of ``day`` as done, with those an earlier run of the day completed, in
    ``order`` (the pipeline's)."""
    earlier = completed(spark, cfg, day, config_hash)
    recorded = set(stages) | set(earlier.stages if earlier else ())
    done = [s for s in order if s in recorded]
    schema = S.CONTRACTS[S.SILVER_WINDOW_STATUS].columns
    row = {
        S.SOURCE: cfg.input.source,
        S.DAY: day,
        S.CONFIG_HASH: config_hash,
        S.STAGES: ",".join(done),
        S.STATUS: DONE,
        S.RUN_ID: ctx.run_id,
        S.UPDATED_AT: datetime.now(UTC).replace(tzinfo=None),
    }
    frame = spark.createDataFrame([tuple(row[f.name] for f in schema.fields)], schema)
    where = " AND ".join(
        (
            lake.rows_where(source=cfg.input.source, config_hash=config_hash),
            lake.date_between(S.DAY, day, day),
        )
    )
    # Keyed by the stages too: a run id that recorded "ingest" and now records more (a fixed
    # scheduler id) must not have its write skipped as already committed.
    ctx = ctx.with_inputs(",".join(done))
    lake.write_table(frame, cfg.lakehouse, S.SILVER_WINDOW_STATUS, ctx=ctx, replace_where=where)


def day_window(cfg: Config, day: date, source: str) -> Windows:
    """The window of the run for ``day``: its label period ends with the day."""
    t2 = day_bounds(day, source)[1]
    t1 = t2 - timedelta(days=cfg.features.label_days)
    return Windows(t1 - timedelta(days=cfg.features.feature_days), t1, t2)


def days(first: date, last: date) -> list[date]:
    if last < first:
        raise ConfigError(f"backfill: --to {last} is before --from {first}")
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def backfill(
    run_day: Callable[[date, str], int], first: date, last: date, *, run_id: str | None, echo: Callable[[str], None]
) -> int:
    """Run ``run_day(day, run_id)`` for every day in order; stop at the first failure and return its
    exit code (0 when every day is done). Each day's run id is fixed (``<run_id or backfill>-<day>``)
    so a retried backfill retries a failed day under the same id."""
    todo = days(first, last)
    for i, day in enumerate(todo, 1):
        day_run = f"{run_id or 'backfill'}-{day.isoformat()}"
        echo(f"backfill [{i}/{len(todo)}] {day}: run {day_run}")
        code = run_day(day, day_run)
        if code != 0:
            echo(f"backfill stopped at {day} (exit {code}); rerun the same command to resume from it")
            return code
    echo(f"backfill {first} .. {last}: {len(todo)} day(s) done")
    return 0
