"""Errors the user can act on: what failed, with what input, and what to do."""
from __future__ import annotations


class PocketopsError(Exception):
    """Base for errors whose message is shown to the user as is (one line)."""


class DatasetError(PocketopsError):
    """Bad dataset input, located as precisely as the input allows."""

    def __init__(self, message: str, *, file: str | None = None, row: int | None = None,
                 column: str | None = None, expected: str | None = None, found: str | None = None,
                 hint: str | None = None):
        self.file, self.row, self.column = file, row, column
        self.expected, self.found, self.hint = expected, found, hint
        where = []
        if file:
            where.append(str(file))
        if row is not None:
            where.append(f"row {row}")
        if column is not None:
            where.append(f"column {column!r}")
        text = (": ".join([", ".join(where), message]) if where else message)
        said = [f"{word} {value}" for word, value in (("expected", expected), ("found", found)) if value is not None]
        if said:
            text += f" ({', '.join(said)})"
        if hint:
            text += f". {hint}"
        super().__init__(text)


class ConfigError(PocketopsError):
    """A configuration the user asked for that cannot run (e.g. a model over the size limit)."""


class DiskFull(PocketopsError):
    """A write failed for lack of space: says what could not be written and how much space it needs."""

    def __init__(self, message: str, *, path: str, needed: int | None, free: int | None, what: str = ""):
        self.path, self.needed, self.free, self.what = path, needed, free, what
        super().__init__(message)


class JobStopped(Exception):
    """Raised inside a job when the worker is shutting down; the job is released and resumed later."""


class JobCancelled(Exception):
    """Raised inside a job when the user asked to cancel it."""
