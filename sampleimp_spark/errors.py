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


class RunConflictError(RuntimeError):
    """Another run holds a lease this run needs (exit 1: retry once that run has finished)."""


def describe(exc: BaseException) -> str:
    """A message whose first line says what went wrong.

    Spark errors reach Python as ``Py4JJavaError`` whose text starts with "An error occurred while
    calling oNNN.method" and has the cause on the next line: that cause comes first here. A full
    disk is named as such.
    """
    text = str(exc)
    java = getattr(exc, "java_exception", None)
    if java is not None:
        try:
            text = str(java.toString())
        except Exception:  # the JVM may be gone
            lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("An error occurred")]
            text = lines[0] if lines else text
    first, _, rest = text.strip().partition("\n")
    if "No space left on device" in text:
        first = "no space left on device (the lakehouse, the runs folder or Spark's local dirs are full): " + first
    return first + ("\n" + rest if rest and java is None else "")


def exit_code(exc: BaseException) -> int:
    """The process exit code for an exception that ended a run."""
    if isinstance(exc, ConfigError):
        return EXIT_CONFIG
    if isinstance(exc, BadInputError):
        return EXIT_BAD_INPUT
    return EXIT_RUNTIME
