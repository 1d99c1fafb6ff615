"""The ``sampleimp`` command (also ``python -m sampleimp_spark``; ``jobs/*.py`` call it too).

Exit codes: 0 ok, 2 bad configuration or arguments, 3 bad input over the configured
tolerance, 1 any other failure.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import NoReturn

from sampleimp_spark import errors
from sampleimp_spark.config import Config, ConfigError, check_run_id, load_config
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

    parser = _Parser(prog="sampleimp", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    sub.add_parser("run", parents=[common], help="run the whole pipeline: " + ", ".join(STAGES))
    sub.add_parser("ingest", parents=[common], help="raw input -> bronze.events and bronze.rejects")
    sub.add_parser("features", parents=[common], help="bronze.events -> silver.samples, shard_map, class_frequencies")
    sub.add_parser(
        "weights",
        parents=[common],
        help="silver.samples -> gold.training_samples, feature_importance, weight_diagnostics",
    )
    sub.add_parser(
        "train",
        parents=[common],
        help="weighted vs unweighted ALS / GBT -> models, gold.metrics, gold.experiment_results",
    )
    sub.add_parser(
        "maintain",
        parents=[common],
        help="compact every table (OPTIMIZE, Z-order) and VACUUM files older than maintenance.retention_hours",
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
    except ConfigError as exc:
        print(f"sampleimp: {exc}", file=sys.stderr)
        return errors.EXIT_CONFIG
    if args.command == "maintain":
        return _maintain(cfg)
    stages = STAGES if args.command == "run" else (args.command,)
    try:
        from sampleimp_spark.session import get_session

        spark = get_session(cfg.spark)
        result = run_stages(spark, cfg, stages, run_id=args.run_id)
        from sampleimp_spark.stages.report import write_report

        report_path = write_report(spark, cfg, result)
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
