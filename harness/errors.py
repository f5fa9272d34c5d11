"""User-facing error types.

Every failure a user can cause (bad data, bad config, unknown model, ...) raises a subclass of
`HarnessError`. The CLI catches `HarnessError` once and prints its message as one line with exit
code 2; anything else is a bug and keeps its traceback (shown in full with `--debug`).
"""

from __future__ import annotations


class HarnessError(Exception):
    """Base class: a problem with the user's input, printed as one line."""

    exit_code = 2


class DataError(HarnessError):
    """A data file is missing, malformed, or a record lacks a field."""

    @classmethod
    def at(cls, path, record: int | str | None, field: str | None, problem: str) -> "DataError":
        where = str(path)
        if record is not None:
            where += f", record {record}"
        if field is not None:
            where += f", field '{field}'"
        return cls(f"{where}: {problem}")


class ConfigError(HarnessError):
    """A suite/gate file or a CLI option is invalid."""


class ModelError(HarnessError):
    """A model cannot be found, materialised or loaded."""


class StoreError(HarnessError):
    """The results store is missing something that was asked for."""


class CheckpointError(HarnessError):
    """A checkpoint or resume directory does not match the requested run."""
