"""The ``sampleimp`` command (also ``python -m sampleimp_spark``; ``jobs/*.py`` call it too).

Exit codes: 0 ok, 2 bad configuration or arguments, 3 bad input over the configured
tolerance, 1 any other failure.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from datetime import date
from typing import NoReturn

from pyspark.sql import SparkSession

from sampleimp_spark import errors, lake
from sampleimp_spark.config import Config, ConfigError, check_run_id, load_config
from sampleimp_spark.stages import daily
from sampleimp_spark.stages.pipeline import STAGES, run_stages

log = logging.getLogger("sampleimp_spark")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse exits 2 too; keep the message plain
        self.print_usage(sys.stderr)
        self.exit(errors.EXIT_CONFIG, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument(
        "--conf", metavar="FILE", help="YAML profile (default: the embedded local profile, the same as conf/local.yaml)"
    )
    common.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        dest="overrides",
        help="override one config key, e.g. --set ingest.max_reject_rate=0.01 (repeatable; the value is read as YAML)",
    )
    common.add_argument(
        "--run-id",
        help="the scheduler's run id; a retried run with the same id "
        "skips writes it already committed (default: run.run_id, else a fresh id)",
    )
    common.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    dated = _Parser(add_help=False)
    dated.add_argument(
        "--date",
        metavar="YYYY-MM-DD",
        help="process one day (in the source's time zone): its input ({date} in input.paths), and the window "
        "ending with it; a day already done with the same config is a no-op",
    )
    dated.add_argument("--force", action="store_true", help="with --date: run the day even if it is done")

    parser = _Parser(prog="sampleimp", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    sub.add_parser("run", parents=[common, dated], help="run the whole pipeline: " + ", ".join(STAGES))
    sub.add_parser("ingest", parents=[common, dated], help="raw input -> bronze.events and bronze.rejects")
    sub.add_parser(
        "features", parents=[common, dated], help="bronze.events -> silver.samples, shard_map, class_frequencies"
    )
    sub.add_parser(
        "weights",
        parents=[common, dated],
        help="silver.samples -> gold.training_samples, feature_importance, weight_diagnostics",
    )
    sub.add_parser(
        "train",
        parents=[common, dated],
        help="weighted vs unweighted ALS / GBT -> models, gold.metrics, gold.experiment_results",
    )
    sub.add_parser(
        "maintain",
        parents=[common],
        help="compact every table (OPTIMIZE, Z-order) and VACUUM files older than maintenance.retention_hours",
    )
    backfill = sub.add_parser(
        "backfill",
        parents=[common],
        help="`run --date` for every day from --from to --to in order; a rerun resumes at the first day not done",
    )
    backfill.add_argument("--from", dest="first", metavar="YYYY-MM-DD", required=True)
    backfill.add_argument("--to", dest="last", metavar="YYYY-MM-DD", required=True)
    backfill.add_argument(
        "--stages", default=",".join(STAGES), help=f"the stages run for each day (default {','.join(STAGES)})"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("py4j").setLevel(logging.WARNING)
    try:
        cfg = load_config(args.conf, args.overrides)
        if args.run_id is not None:
            check_run_id(args.run_id)
        day = daily.parse_day(args.date) if getattr(args, "date", None) else cfg.run.date
        if args.command == "backfill":
            first, last = daily.parse_day(args.first, option="--from"), daily.parse_day(args.last, option="--to")
            daily.days(first, last)
            chosen = [s.strip() for s in args.stages.split(",") if s.strip()]
            if not chosen or set(chosen) - set(STAGES):
                raise ConfigError(f"--stages must name stages of {','.join(STAGES)}, got {args.stages!r}")
    except ConfigError as exc:
        print(f"sampleimp: {exc}", file=sys.stderr)
        return errors.EXIT_CONFIG
    if args.command == "maintain":
        return _maintain(cfg)
    stages: Sequence[str] = STAGES if args.command == "run" else (args.command,)
    if args.command == "backfill":
        stages = [s for s in STAGES if s in chosen]
    try:
        from sampleimp_spark.session import get_session

        spark = get_session(cfg.spark)
    except Exception as exc:
        return _failed(exc, "run")
    if args.command == "backfill":
        return daily.backfill(
            lambda d, run_id: _run(spark, cfg, stages, run_id, d), first, last, run_id=args.run_id, echo=print
        )
    return _run(spark, cfg, stages, args.run_id, day, force=getattr(args, "force", False))


def _run(
    spark: SparkSession,
    cfg: Config,
    stages: Sequence[str],
    run_id: str | None,
    day: date | None,
    *,
    force: bool = False,
) -> int:
    """Run ``stages`` (for ``day``, unless that day is done with this config); the exit code."""
    try:
        config_hash = cfg.hash()  # of the undated config (run.date is not part of a hash)
        wanted = [s for s in stages if s != "train" or cfg.train.enabled or len(stages) == 1]
        if day is not None:
            cfg = daily.for_day(cfg, day)
            done = daily.completed(spark, cfg, day, config_hash)
            # The stages not up to date, and every later one. A day whose own events are ingested is
            # not ingested again: its input has not changed.
            todo = list(wanted) if force else daily.stages_to_run(wanted, done, order=STAGES)
            if not todo:
                assert done is not None
                print(
                    f"nothing to do: {day} ({', '.join(wanted)}) was done by run {done.run_id} "
                    f"with config {config_hash}"
                )
                return errors.EXIT_OK
            if done is not None and (done.status == daily.STALE or todo != list(wanted)):
                if done.status == daily.STALE:
                    print(f"{day} is stale (a day its windows read changed): rebuilding {', '.join(todo)}")
                else:
                    kept = ", ".join(s for s in wanted if s not in todo)
                    print(f"{day}: {kept} up to date (run {done.run_id}); running {', '.join(todo)}")
                stages = wanted = todo
        result = run_stages(spark, cfg, stages, run_id=run_id)
        from sampleimp_spark.stages.report import write_report

        report_path = write_report(spark, cfg, result)
        if day is not None:
            ctx = lake.RunContext(run_id=result.run_id, config_hash=config_hash, stage="status")
            built = result.reports.get("features")
            first = daily.first_day_read(cfg, day, built.windows if built is not None else None, wanted)
            fresh = daily.mark_done(spark, cfg, day, config_hash, wanted, order=STAGES, first_day=first, ctx=ctx)
            behind = [s for s in wanted if s not in fresh]
            if behind:
                print(
                    f"{day}: {', '.join(behind)} ran on inputs that are not up to date; "
                    f"`sampleimp run --date {day}` rebuilds what is behind"
                )
    except Exception as exc:
        return _failed(exc, "run")
    print(f"run {result.run_id} finished\n{result.progress.summary()}\nreport: {report_path}")
    for name, report in result.reports.items():
        if hasattr(report, "lines"):
            print(f"[{name}]")
            print("\n".join(report.lines()))
    return errors.EXIT_OK


def _maintain(cfg: Config) -> int:
    try:
        from sampleimp_spark.session import get_session
        from sampleimp_spark.stages import maintain

        report = maintain.run(get_session(cfg.spark), cfg)
    except Exception as exc:
        return _failed(exc, "maintenance")
    print("maintenance finished\n" + "\n".join(report.lines()))
    return errors.EXIT_OK


def _failed(exc: Exception, what: str) -> int:
    """Report a failure (the traceback only for unexpected ones) and return its exit code."""
    code = errors.exit_code(exc)
    if code == errors.EXIT_RUNTIME and not isinstance(exc, errors.RunConflictError):
        log.exception("%s failed", what)
    print(f"sampleimp: {errors.describe(exc)}", file=sys.stderr)
    return code
