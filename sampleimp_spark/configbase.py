"""The base of every config model, in its own module so stage modules can define their
config sections next to their code while ``config.py`` assembles them (no import cycle)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names the offending key."""


class StrictModel(BaseModel):
    """Base of every config section: unknown keys are errors, values are validated, frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)
