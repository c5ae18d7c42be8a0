"""User-facing errors: the CLI turns them into one line on stderr and exit code 2."""

from __future__ import annotations


class MMBenchError(Exception):
    """Bad input from the user: what was wrong, what was expected, where."""


class ConfigError(MMBenchError):
    """A YAML file, a `--set` override or a flag does not validate."""


class DataError(MMBenchError):
    """A dataset is missing or malformed on disk."""


class RunFailed(Exception):
    """A run could not finish (NaN loss, too few samples for a stage); recorded as status 'failed'."""
