"""Source adapters: one per public log format, each turning raw input into parsed records.

Use :func:`read_source` (the configured input, or the seeded :mod:`.generator`); the records are
validated by :mod:`.validate`. :data:`SOURCE_TIMEZONES` tells later stages in which zone a source's
days and hours are defined (Taobao, Tianchi and the generator: China time; the others: UTC).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from pyspark.sql import DataFrame, SparkSession

from sampleimp_spark.sources import amazon, canonical, generator, rees46, retailrocket, taobao, tianchi
from sampleimp_spark.sources.base import PARSED_COLUMNS

if TYPE_CHECKING:
    from sampleimp_spark.config import InputConfig

_FILE_READERS: dict[str, Callable[[SparkSession, Sequence[str], Sequence[str]], DataFrame]] = {
    m.NAME: m.read for m in (taobao, rees46, tianchi, amazon, retailrocket, canonical)
}

SOURCE_TIMEZONES: dict[str, str] = {
    m.NAME: m.TIMEZONE for m in (taobao, rees46, tianchi, amazon, retailrocket, canonical, generator)
}


def read_source(spark: SparkSession, cfg: InputConfig) -> DataFrame:
    """Parsed records (see :mod:`sampleimp_spark.sources.base`) for the configured input."""
    if cfg.source == generator.NAME:
        return generator.read(spark, cfg.generator)
    return _FILE_READERS[cfg.source](spark, cfg.paths, cfg.item_paths)


__all__ = ["PARSED_COLUMNS", "SOURCE_TIMEZONES", "read_source"]
