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


def read_text(path, what: str = "file") -> str:
    """The text of a UTF-8 file (a UTF-8 byte-order mark is allowed), or a DataError naming the file
    and the encoding problem: the data and config formats here are UTF-8, and a UTF-16 or latin-1
    file would otherwise surface as a decode traceback or a puzzling JSON error."""
    from pathlib import Path

    data = Path(path).read_bytes()
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DataError(f"{path}: {what} is UTF-16 encoded (byte-order mark); save it as UTF-8")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DataError(f"{path}: {what} is not UTF-8 (byte 0x{data[e.start]:02x} at line {line}, offset "
                        f"{e.start}; latin-1 or another legacy encoding?); save it as UTF-8") from None
    if "\x00" in text:
        raise DataError(f"{path}: {what} contains NUL bytes (UTF-16 without a byte-order mark?); save it as UTF-8")
    return text
