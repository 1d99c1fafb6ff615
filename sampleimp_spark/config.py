"""Typed, strict configuration: YAML profiles in ``conf/`` plus ``--set key=value`` overrides.

The defaults of these models *are* the embedded default profile (``conf/local.yaml`` spells
them out; a test keeps the two equal). Unknown keys and bad values are rejected up front with
a message naming the dotted key, before any Spark work starts.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from sampleimp_spark.configbase import ConfigError, StrictModel
from sampleimp_spark.features.text import TextConfig
from sampleimp_spark.training.experiment import TrainConfig
from sampleimp_spark.weighting.stage import WeightsConfig

SourceName = Literal["generator", "taobao", "rees46", "tianchi", "amazon", "retailrocket", "canonical"]


_Strict = StrictModel


class SparkConfig(_Strict):
    """How the SparkSession is built when the job is not already inside one (spark-submit)."""

    master: str = "local[*]"
    app_name: str = "sampleimp_spark"
    shuffle_partitions: int = Field(8, ge=1)
    log_level: Literal["ERROR", "WARN", "INFO", "DEBUG"] = "WARN"
    #: Maven coordinates of Delta Lake; resolved once from Maven Central, then cached.
    delta_packages: str = "io.delta:delta-spark_4.2_2.13:4.4.0"
    #: Folder for the resolved Delta JARs (Ivy cache and a manifest). ``~`` is expanded.
    jars_cache_dir: str = "~/.cache/sampleimp_spark/jars"
    #: Extra Spark settings, passed through verbatim (e.g. ``spark.driver.memory: 4g``).
    conf: dict[str, str] = Field(default_factory=dict)


class GeneratorConfig(_Strict):
    """The built-in seeded generator of Taobao-shaped events (DESIGN §8)."""

    events: int = Field(200_000, ge=1)
    users: int = Field(5_000, ge=1)
    items: int = Field(50_000, ge=1)
    categories: int = Field(300, ge=1)
    days: int = Field(9, ge=1)
    start: datetime = datetime.fromisoformat("2017-11-25T00:00:00+08:00")
    seed: int = 42
    #: Share of generated rows deliberately corrupted (null ids, unknown behaviors, bad or
    #: out-of-window times), so the default run exercises the rejects path.
    bad_row_rate: float = Field(0.001, ge=0.0, le=0.5)
    #: Share of rows emitted twice, so the default run exercises de-duplication.
    duplicate_rate: float = Field(0.002, ge=0.0, le=0.5)

    @field_validator("start")
    @classmethod
    def _aware(cls, v: datetime) -> datetime:
        if v.tzinfo is None:
            raise ValueError("needs a UTC offset, e.g. 2017-11-25T00:00:00+08:00")
        return v


class InputConfig(_Strict):
    """Where raw events come from."""

    source: SourceName = "generator"
    #: Event files or folders (CSV, JSON lines or Parquet, by source). Empty for ``generator``.
    paths: list[str] = Field(default_factory=list)
    #: Item dimension files: Amazon ``meta_*.jsonl``, RetailRocket ``item_properties*.csv``.
    item_paths: list[str] = Field(default_factory=list)
    generator: GeneratorConfig = Field(default_factory=GeneratorConfig)

    @model_validator(mode="after")
    def _paths_match_source(self) -> InputConfig:
        if self.source == "generator" and self.paths:
            raise ValueError("paths must be empty when source is 'generator'")
        if self.source != "generator" and not self.paths:
            raise ValueError(f"paths must name at least one file for source {self.source!r}")
        if self.source == "amazon" and not self.item_paths:
            raise ValueError("item_paths must name the meta_*.jsonl file for source 'amazon'")
        return self


class IngestConfig(_Strict):
    """Validation and write settings of the ingest stage."""

    #: Events before ``valid_from`` or at/after ``valid_until`` are rejected (ts_out_of_range).
    #: Both need an explicit UTC offset. ``null`` disables that bound.
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    #: The job fails (after writing the rejects) when rejects / input rows exceeds this.
    max_reject_rate: float = Field(0.05, ge=0.0, le=1.0)

    @field_validator("valid_from", "valid_until")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.tzinfo is None:
            raise ValueError("needs a UTC offset, e.g. 2017-11-25T00:00:00+08:00")
        return v

    @model_validator(mode="after")
    def _ordered(self) -> IngestConfig:
        if self.valid_from and self.valid_until and self.valid_from >= self.valid_until:
            raise ValueError("valid_from must be before valid_until")
        return self


class FeaturesConfig(_Strict):
    """Samples, labels, shards and behavior features (DESIGN §3-§4)."""

    #: The source whose bronze events are featurized; null = ``input.source``.
    source: SourceName | None = None
    #: Feature window [t0, t1) and label window [t1, t2), with UTC offsets. Missing bounds are
    #: derived from the data on local midnights: t2 after the last event, t1 = t2 - label_days,
    #: t0 = t1 - feature_days (or the first event's midnight when feature_days is null).
    t0: datetime | None = None
    t1: datetime | None = None
    t2: datetime | None = None
    label_days: float = Field(2.0, gt=0)
    feature_days: float | None = Field(None, gt=0)
    #: Categories with fewer samples are pooled into a parent category or ``_other``.
    min_shard_rows: int = Field(200, ge=1)
    #: Where the source has no sessions, a gap longer than this starts a new one.
    session_gap_minutes: float = Field(30.0, gt=0)
    #: Item-text features (sources with item text or a taxonomy: amazon, rees46, canonical).
    text: TextConfig = Field(default_factory=TextConfig)

    @field_validator("t0", "t1", "t2")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.tzinfo is None:
            raise ValueError("needs a UTC offset, e.g. 2017-12-02T00:00:00+08:00")
        return v


class RunConfig(_Strict):
    """Identity of one run: used in commit metadata and Delta transaction identifiers."""

    #: Give the scheduler's run id here (or ``--run-id``) so a retried run is recognised;
    #: ``null`` makes a fresh id per run.
    run_id: str | None = Field(None, pattern=r"^[A-Za-z0-9_.:\-]{1,128}$")
    #: Where run reports go (one sub-folder per run).
    runs_dir: str = "runs"


class Config(_Strict):
    """The whole job configuration."""

    lakehouse: str = "lakehouse"
    run: RunConfig = Field(default_factory=RunConfig)
    spark: SparkConfig = Field(default_factory=SparkConfig)
    input: InputConfig = Field(default_factory=InputConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    weights: WeightsConfig = Field(default_factory=WeightsConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)

    def hash(self) -> str:
        """A stable hash of everything that changes results (the run id excluded)."""
        data = self.model_dump(mode="json", exclude={"run": {"run_id"}})
        blob = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _format_errors(err: ValidationError, origin: str) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        got = e.get("input")
        shown = "" if e["type"] == "extra_forbidden" or isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"  {key}: {msg}{shown}")
    return f"invalid configuration in {origin}:\n" + "\n".join(lines)


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    node = data
    parts = dotted.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"invalid override {dotted!r}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """Split ``key.path=value``; the value is read as YAML (so ``3``, ``true``, ``[a, b]`` work)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override must look like key.path=value, got {text!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {key!r}: value is not valid YAML: {exc}") from exc
    return key.strip(), value


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML profile (or the embedded default when ``path`` is None) and apply overrides.

    Raises:
        ConfigError: the file is missing or not YAML, or a key is unknown or a value invalid.
    """
    data: dict[str, Any] = {}
    origin = "the embedded default"
    if path is not None:
        origin = str(path)
        try:
            loaded = yaml.safe_load(Path(path).read_text())
        except FileNotFoundError as exc:
            raise ConfigError(f"config file not found: {path}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        data = loaded or {}
    for text in overrides or []:
        key, value = parse_override(text)
        _set_dotted(data, key, value)
        origin += f" with --set {text}"
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, origin)) from None
