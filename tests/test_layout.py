"""The import graph points one way: stages use the pure packages, never the reverse."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "sampleimp_spark"
PURE = ("features", "weighting", "training", "evaluation")
#: What only stages may touch: config, storage, progress reporting, and the stages themselves.
STAGE_ONLY = ("sampleimp_spark.config", "sampleimp_spark.lake", "sampleimp_spark.progress", "sampleimp_spark.stages")


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def test_pure_packages_import_no_config_storage_progress_or_stage():
    offenders = {
        f"{path.relative_to(PACKAGE)}: {name}"
        for package in PURE
        for path in (PACKAGE / package).rglob("*.py")
        for name in imports_of(path)
        if any(name == m or name.startswith(m + ".") for m in STAGE_ONLY)
    }
    assert offenders == set()
    assert len(list((PACKAGE / "training").rglob("*.py"))) > 3  # the walk found the modules
