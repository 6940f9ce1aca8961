"""The upload command's input: the file opened with the right reader, its bad rows tallied.

:func:`open_input` is the one place the ``upload`` command opens its input (a path or ``-``) and
picks a reader of :mod:`batch_audiences.sources` for the format. :class:`Input` feeds the bulk
engine the good items and keeps what went wrong: every bad row is counted, the first
``MAX_BAD_ROWS`` kept for the report, and each written to ``--rejects`` as soon as it is found;
``--max-bad-rows`` and Ctrl-C stop the reading between two chunks.

Whether an item fits the mode (a remove in mode ``add``…) is the bulk engine's rule, asked of
it item by item rather than re-stated here, so the two cannot drift apart.
"""

from __future__ import annotations

import argparse
import collections
import os
import stat
import sys
from collections.abc import Callable, Iterator
from typing import IO, Any, cast

import attrs

# The engine's rule for which items fit which mode: asked, not re-stated.
from .._bulk import _convert as convert_item
from .._errors import ValidationError
from ..sources import RowError, SourceReader, read_csv, read_ndjson, read_text
from ._rejects import Rejects

__all__ = ["MAX_BAD_ROWS", "Input", "close_input", "estimate_total", "open_input"]

# Bad rows kept in memory for the report: a file that is all bad rows must not exhaust memory.
MAX_BAD_ROWS = 10_000
# Lines remembered for the rejects file: the longest CSV record it can copy whole.
_REJECT_WINDOW = 1_000


class _StopReading(Exception):
    """Raised from the line feed to end the reader at once (a stop was asked between chunks)."""


class _LineCounter:
    """A binary file's lines, counted as the reader pulls them: the line of the item just read.

    Before each new line it lets :class:`Input` take the bad rows recorded so far (all of them
    about lines already read), so a rejects file and ``--max-bad-rows`` see each bad row as soon
    as it is found, and a requested stop can end the reading even where no good row follows.
    With ``keep`` it remembers the last lines, for the rejects file.
    """

    def __init__(self, file: IO[bytes], keep: int = 0) -> None:
        self._file = file
        self.line = 0
        self.recent: collections.deque[tuple[int, bytes]] = collections.deque(maxlen=keep or 1)
        self._keep = keep > 0
        self.first: bytes | None = None
        self.source: Input | None = None

    def __iter__(self) -> Iterator[bytes]:
        for raw in self._file:
            source = self.source
            if source is not None:
                if source.reader.errors:
                    source.take_errors()
                if source.stop_requested and source.yielded % source.chunk_size == 0:
                    raise _StopReading
            self.line += 1
            if self._keep:
                self.recent.append((self.line, raw))
                if self.first is None and raw.strip():
                    self.first = raw  # a CSV's header, for the rejects file
            yield raw

    def lines(self, first: int, last: int) -> list[bytes]:
        """The remembered raw lines ``first`` to ``last`` (fewer if they were forgotten)."""
        return [raw for number, raw in self.recent if first <= number <= last]


@attrs.define
class Input:
    """The opened input: the reader, the line counter, and what went wrong so far.

    Bad rows (the reader's, and rows that do not fit the mode) are counted, the first
    ``MAX_BAD_ROWS`` kept for the report, and each written to the rejects file if there is one.
    """

    reader: SourceReader[Any]
    counter: _LineCounter
    file: IO[bytes]
    mode: str
    chunk_size: int
    encoding: str = "utf-8"
    rejects: Rejects | None = None
    max_bad_rows: int | None = None
    kept: list[RowError] = attrs.field(factory=list)
    bad_count: int = 0
    yielded: int = 0
    exhausted: bool = False
    interrupted: bool = False
    stop_requested: bool = False
    too_many_bad_rows: bool = False
    #: Called once when --max-bad-rows is reached (the upload then stops as on a first Ctrl-C).
    on_too_many: Callable[[], None] | None = None
    _record_start: int = 1
    _header_seen: bool = False

    @property
    def bad_rows(self) -> list[RowError]:
        return sorted(self.kept, key=lambda error: error.line)

    def take_errors(self) -> None:
        """Move the reader's newly recorded bad rows into the tally (and the rejects file)."""
        errors = self.reader.errors
        taken = list(errors)
        del errors[:]
        for error in taken:
            self._bad(error, error.line)
        if taken:
            # The reader records a bad row once it has read all of it: the next record starts after.
            self._record_start = self.counter.line + 1

    def _bad(self, error: RowError, first_line: int) -> None:
        self.bad_count += 1
        if len(self.kept) < MAX_BAD_ROWS:
            self.kept.append(error)
        if self.rejects is not None:
            self._reject(error, first_line)
        if self.max_bad_rows is not None and self.bad_count >= self.max_bad_rows and not self.stop_requested:
            self.too_many_bad_rows = True
            self.stop_requested = True
            if self.on_too_many is not None:
                self.on_too_many()

    def _reject(self, error: RowError, first_line: int) -> None:
        assert self.rejects is not None
        if self.rejects.format == "csv" and not self._header_seen:
            self._header_seen = True
            header = self.counter.first or b""
            self.rejects.set_header(header.decode(self.encoding, "replace").lstrip("\ufeff"))
        # A CSV record may span lines (from the record's first to the line read last); an NDJSON
        # or text row is the one line the error names.
        if self.rejects.format == "csv":
            raws = self.counter.lines(first_line, self.counter.line)
        else:
            raws = self.counter.lines(error.line, error.line)
        self.rejects.write(error, [raw.decode(self.encoding, "replace") for raw in raws])

    def items(self) -> Iterator[Any]:
        """The valid items, until the file ends or a stop is requested (then ``interrupted``)."""
        self.counter.source = self
        mode = self.mode
        member = mode == "replace"
        try:
            for item in self.reader:
                # Stop only between two chunks, so that no short chunk is sent in place of a full one.
                if self.stop_requested and self.yielded % self.chunk_size == 0:
                    self.interrupted = True
                    return
                start, self._record_start = self._record_start, self.counter.line + 1
                if type(item) is not str:
                    problem = _mode_problem(item, mode, member)
                    if problem is not None:
                        self._bad(RowError(self.counter.line, problem), start)
                        continue
                self.yielded += 1
                yield item
        except _StopReading:
            self.interrupted = True
            return
        finally:
            self.take_errors()
        self.exhausted = True


def _mode_problem(item: object, mode: str, member: bool) -> str | None:
    """Why an item read from the file does not fit ``mode``: the engine's own verdict on it."""
    try:
        convert_item(item, mode, member)
    except ValidationError as error:
        hint = " (use --mode update for mixed actions)" if error.field == "action" else ""
        return f"{error.rule}{hint}"
    return None


def open_input(args: argparse.Namespace, fmt: str) -> Input:
    """The input the options describe: the one place the upload command opens its file."""
    file: IO[bytes] = sys.stdin.buffer if args.file == "-" else open(args.file, "rb")  # noqa: SIM115
    # A CSV record may span lines: keep enough of them to write a bad one to the rejects file.
    counter = _LineCounter(file, keep=_REJECT_WINDOW if args.rejects else 0)
    # The readers take any iterable of binary lines (they only iterate it): the counter is one.
    lines = cast(IO[bytes], counter)
    reader: SourceReader[Any]
    rejects: Rejects | None = None
    try:
        if fmt == "csv":
            reader = read_csv(
                lines, id_column=args.id_column, attributes=args.attr,
                action_column=(args.action_column or "action") if args.mode == "update" else None,
                delimiter=args.delimiter, encoding=args.encoding, errors="collect",
            )
        elif fmt == "ndjson":
            reader = read_ndjson(
                lines, id_key=args.id_column or "id", attributes=args.attr or None,
                action_key=args.action_column or "action", encoding=args.encoding, errors="collect",
            )
        else:
            reader = read_text(lines, encoding=args.encoding, errors="collect")
        if args.rejects:
            rejects = Rejects(args.rejects, fmt, encoding=args.encoding, delimiter=args.delimiter)
    except BaseException:
        if file is not sys.stdin.buffer:
            file.close()
        raise
    return Input(reader, counter, file, args.mode, args.chunk_size, encoding=args.encoding,
                  rejects=rejects, max_bad_rows=args.max_bad_rows)


def close_input(source: Input) -> None:
    if source.file is not sys.stdin.buffer:
        source.file.close()
    if source.rejects is not None:
        source.rejects.close()


def estimate_total(path: str, fmt: str) -> int | None:
    """Rows in a regular file, from a fast count of its newlines (for the progress bar only)."""
    if path == "-":
        return None
    try:
        with open(path, "rb") as file:
            if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
                return None
            lines, last = 0, b""
            while block := file.read(1 << 20):
                lines += block.count(b"\n")
                last = block
    except OSError:
        return None
    if last and not last.endswith(b"\n"):
        lines += 1
    return max(0, lines - (1 if fmt == "csv" else 0))
