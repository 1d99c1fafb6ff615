"""Errors a scheduler can act on, and the exit code of each."""

from __future__ import annotations

EXIT_OK = 0
EXIT_RUNTIME = 1  # anything unexpected: a bug, a lost executor, a full disk
EXIT_CONFIG = 2  # the configuration or the command line is wrong: fix it, do not retry
EXIT_BAD_INPUT = 3  # the input is bad beyond the configured tolerance: fix the data


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names the offending key."""


class BadInputError(RuntimeError):
    """The input cannot be processed as configured (e.g. the reject rate is over threshold)."""


def exit_code(exc: BaseException) -> int:
    """The process exit code for an exception that ended a run."""
    if isinstance(exc, ConfigError):
        return EXIT_CONFIG
    if isinstance(exc, BadInputError):
        return EXIT_BAD_INPUT
    return EXIT_RUNTIME
