"""Exceptions raised by data_prep; every message names the file (and row, where there is one)."""

from __future__ import annotations

from dataclasses import dataclass


class DataPrepError(Exception):
    """Any data-preparation failure the user must act on (bad path, bad format, bad checksum, ...)."""


class RowProblem(Exception):
    """A problem with one record, raised by a converter before the file and row are known.

    The conversion driver catches it and turns it into a :class:`BadRow` that names file and row.
    """


@dataclass(frozen=True)
class BadRow:
    """One rejected input row: where it is and why it was rejected."""

    file: str
    row: int  # 0-based position of the record in the file (== extra_info.index)
    reason: str
    line: int | None = None  # 1-based line number, for line-oriented formats (JSONL)

    def describe(self) -> str:
        where = f"row {self.row}" + (f" (line {self.line})" if self.line is not None else "")
        return f"{self.file}: {where}: {self.reason}"


class BadInputError(DataPrepError):
    """One or more rows of a file could not be converted (raised unless ``--skip-bad``)."""

    MAX_LISTED = 10

    def __init__(self, file: str, bad_rows: list[BadRow], total_rows: int) -> None:
        self.file = file
        self.bad_rows = list(bad_rows)
        self.total_rows = total_rows
        listed = "\n  ".join(b.describe() for b in self.bad_rows[: self.MAX_LISTED])
        more = len(self.bad_rows) - self.MAX_LISTED
        tail = f"\n  ... and {more} more" if more > 0 else ""
        super().__init__(
            f"{file}: {len(self.bad_rows)} of {total_rows} rows are bad:\n  {listed}{tail}\n"
            "Fix the input, or pass --skip-bad (skip_bad=True) to skip them; skips are counted in the summary."
        )


class ChecksumMismatchError(DataPrepError):
    """A file whose name is in the known-sha256 table has different content."""

    def __init__(self, file: str, expected: str, actual: str) -> None:
        self.file = file
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"{file}: sha256 mismatch: expected {expected}, got {actual} "
            "(the file is not the known upstream version; re-extract it or use a different file name)"
        )
