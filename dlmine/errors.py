"""The exceptions dlmine raises for a user's mistakes.

Every error a user can cause is a `DlmineError`: the CLI prints its message
after `Error:` and exits with its `exit_code`, with no traceback (`--debug`
shows one). Anything else is a bug in dlmine.
"""

from __future__ import annotations

from dataclasses import dataclass


class DlmineError(Exception):
    """A failure the user can act on; `exit_code` is what the CLI returns."""

    exit_code = 1


class UsageError(DlmineError):
    """The command line or the run directory asked for something impossible."""

    exit_code = 2


@dataclass(frozen=True)
class Problem:
    """One problem of a config: where it is, which key, and what is wrong.

    Args:
        source: `FILE:LINE` of the offending YAML, or `--set KEY=VALUE`.
        key: the dotted key, e.g. `model.layers[2].Dense.units`.
        message: what was expected and what was received.
    """

    source: str
    key: str
    message: str

    def __str__(self) -> str:
        key = f"{self.key}: " if self.key else ""
        return f"{self.source}: {key}{self.message}"


class ConfigError(DlmineError):
    """All the problems found in one config, reported together."""

    exit_code = 2

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        count = len(self.problems)
        header = "1 problem in the config:" if count == 1 else f"{count} problems in the config:"
        super().__init__("\n".join([header, *(f"  {p}" for p in self.problems)]))


class DataError(DlmineError):
    """The data named in a config is missing, unreadable or inconsistent."""


class TrainingError(DlmineError):
    """Training could not go on (the loss diverged, a device is missing)."""


class Interrupted(DlmineError):
    """The run was stopped by Ctrl-C or SIGTERM after saving what it had."""

    exit_code = 130
