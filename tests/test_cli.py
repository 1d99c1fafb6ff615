"""The command line: one sub-command per stage, help, and exit codes a scheduler can act on."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sampleimp_spark.cli import build_parser, main
from sampleimp_spark.errors import EXIT_CONFIG
from sampleimp_spark.stages.pipeline import STAGES

ROOT = Path(__file__).resolve().parents[1]


def test_every_stage_has_a_subcommand_and_jobs_file():
    parser = build_parser()
    for stage in (*STAGES, "run"):
        args = parser.parse_args([stage, "--set", "a=1", "--run-id", "r"])
        assert (args.command, args.overrides, args.run_id) == (stage, ["a=1"], "r")
    jobs = {p.stem for p in (ROOT / "jobs").glob("*.py")}
    assert {"ingest_events", "build_features", "train_recommender", "pipeline"} <= jobs


def test_help_explains_the_options():
    out = subprocess.run([sys.executable, "-m", "sampleimp_spark", "run", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for option in ("--conf", "--set", "--run-id", "--verbose"):
        assert option in out.stdout


def test_bad_config_and_bad_arguments_exit_2(capsys):
    assert main(["run", "--set", "ingest.max_reject_rate=5"]) == EXIT_CONFIG
    assert "ingest.max_reject_rate" in capsys.readouterr().err
    assert main(["ingest", "--conf", "/nonexistent.yaml"]) == EXIT_CONFIG
    with pytest.raises(SystemExit) as exc:
        main(["no-such-stage"])
    assert exc.value.code == EXIT_CONFIG
