"""``upload --rejects PATH``: every bad row of the input, with its line number and reason.

The rejects file is in the input's own format, so that it can be read, fixed and uploaded again:

- CSV: the input's header, preceded by two columns ``_line`` and ``_error``; each bad row is
  written as it was read (its own fields, however many), preceded by its line number and reason.
  Putting the two columns first keeps them aligned even for a row with too many or too few fields.
  The file uses the input's delimiter and encoding.
- NDJSON: one object per bad row, ``{"line": N, "error": "...", "row": <the row>}``; a line that is
  not JSON at all is given as text under ``"text"`` instead of ``"row"``. UTF-8.
- text: one line per bad row, ``N<TAB>reason<TAB>the line as read`` (the line is the last field,
  so a tab inside it does not move the other two). The input's encoding.

Bytes that are not valid in the input's encoding are written as U+FFFD (or ``?``).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import IO

from ..sources import RowError

__all__ = ["Rejects"]


class Rejects:
    """An open rejects file; :meth:`write` each bad row, then :meth:`close`."""

    def __init__(self, path: str, fmt: str, *, encoding: str, delimiter: str) -> None:
        self.path = path
        self.format = fmt
        self.written = 0
        self._delimiter = delimiter
        self._header: list[str] | None = None
        self._header_written = False
        self._file: IO[str] = open(  # noqa: SIM115 (closed by close())
            path, "w", encoding="utf-8" if fmt == "ndjson" else encoding, errors="replace", newline=""
        )
        self._csv = csv.writer(self._file, delimiter=delimiter, lineterminator="\n")

    def set_header(self, raw: str) -> None:
        """The CSV input's header line, as read (its first record)."""
        self._header = _first_record(raw, self._delimiter) or []

    def write(self, error: RowError, raw_lines: Sequence[str]) -> None:
        """Write one bad row; ``raw_lines`` are the lines its record was read from."""
        text = "".join(raw_lines)
        if self.format == "csv":
            self._write_header()
            record = _first_record(text, self._delimiter)
            self._csv.writerow([error.line, error.message, *(record or [text.rstrip("\r\n")])])
        elif self.format == "ndjson":
            document: dict[str, object] = {"line": error.line, "error": error.message}
            try:
                document["row"] = json.loads(text)
            except ValueError:
                document["text"] = text.rstrip("\r\n")
            self._file.write(json.dumps(document, ensure_ascii=False) + "\n")
        else:
            self._file.write(f"{error.line}\t{error.message}\t{text.rstrip(chr(13) + chr(10))}\n")
        self.written += 1

    def _write_header(self) -> None:
        if not self._header_written:
            self._header_written = True
            self._csv.writerow(["_line", "_error", *(self._header or [])])

    def close(self) -> None:
        """Flush and close (a CSV rejects file has its header even when no row was bad)."""
        if self.format == "csv" and self._header is not None:
            self._write_header()
        self._file.close()


def _first_record(text: str, delimiter: str) -> list[str] | None:
    """The first non-empty CSV record of ``text``, or None if it has none (or does not parse)."""
    try:
        for record in csv.reader(io.StringIO(text), delimiter=delimiter):
            if record:
                return record
    except csv.Error:
        return None
    return None
