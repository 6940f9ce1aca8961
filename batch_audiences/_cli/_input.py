"""The upload command's input: the file or query opened with the right reader, its bad rows tallied.

:func:`add_input_arguments` declares where the rows come from (FILE, by its extension, compressed
or not; or ``--sql``/``--sql-file`` with ``--db``) and :func:`open_input` is the one place a
command opens that input and picks a reader of :mod:`batch_audiences.sources` for the format
(``upload`` and ``sync`` alike). A database password never reaches the terminal: it is
registered with the console's redaction before anything is read, and messages name the URL with
the password masked (:func:`describe_input`). :class:`Input` feeds the bulk
engine the good items and keeps what went wrong: every bad row is counted, the first
``MAX_BAD_ROWS`` kept for the report, and each written to ``--rejects`` as soon as it is found;
``--max-bad-rows`` and Ctrl-C stop the reading between two chunks.

Whether an item fits the mode (a remove in mode ``add``…) is the bulk engine's rule, asked of
it item by item rather than re-stated here, so the two cannot drift apart.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
import os
import stat
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, Final, cast

import attrs

# The engine's rule for which items fit which mode: asked, not re-stated.
from .._bulk import check_item
from .._errors import ValidationError
from ..sources import (
    COMPRESSIONS,
    RowError,
    SourceReader,
    read_csv,
    read_ndjson,
    read_parquet,
    read_sql,
    read_text,
    safe_url,
)
from ..sources._files import compression_of, open_binary
from ._argtypes import attribute_spec
from ._errors import CLIError
from ._output import Console
from ._rejects import Rejects

__all__ = [
    "DB_URL_ENV",
    "FORMATS",
    "MAX_BAD_ROWS",
    "Input",
    "add_input_arguments",
    "check_input_options",
    "close_input",
    "describe_input",
    "estimate_total",
    "input_format",
    "open_input",
]

#: Input formats by extension (after a compression suffix, if any).
FORMATS: Final = {
    ".csv": "csv", ".ndjson": "ndjson", ".jsonl": "ndjson", ".txt": "txt",
    ".parquet": "parquet", ".pq": "parquet",
}
#: The environment variable read for the database URL when ``--db`` is not given.
DB_URL_ENV: Final = "BATCH_AUDIENCES_DB_URL"

# Bad rows kept in memory for the report: a file that is all bad rows must not exhaust memory.
MAX_BAD_ROWS = 10_000
# Lines remembered for the rejects file: the longest CSV record it can copy whole.
_REJECT_WINDOW = 1_000


def add_input_arguments(parser: argparse.ArgumentParser) -> None:
    """FILE (or ``--sql``/``--sql-file`` with ``--db``) and the options that say how to read it."""
    parser.add_argument("file", metavar="FILE", nargs="?", default=None,
                        help="input file (.csv, .ndjson, .jsonl, .txt, .parquet; .gz, .bz2, .xz, .zst "
                        "compressed), or '-' for standard input; not with --sql")
    parser.add_argument("--format", choices=("csv", "ndjson", "txt", "parquet"), default=None,
                        help="input format (default: from the extension, else txt)")
    parser.add_argument("--sql", metavar="QUERY", default=None,
                        help="read the rows from this SQL query instead of a file (needs --db)")
    parser.add_argument("--sql-file", metavar="PATH", default=None,
                        help="read the rows from the SQL query in PATH instead of a file (needs --db)")
    parser.add_argument("--db", metavar="URL", default=None,
                        help=f"database URL for --sql, e.g. postgresql+psycopg://user@host/db "
                        f"(default: ${DB_URL_ENV}; its password is never printed)")
    parser.add_argument("--id-column", metavar="C", default=None,
                        help="column (CSV, Parquet, SQL) or key (NDJSON) holding the ID (default: the "
                        "first column, the NDJSON key 'id')")
    parser.add_argument("--attr", action="append", default=[], metavar="COL[:TYPE]", type=attribute_spec,
                        help="send column COL as an attribute (repeatable); TYPE: str, int, float, "
                        "bool, date, url (Parquet and SQL: default from the column's own type)")
    parser.add_argument("--action-column", metavar="C", default=None,
                        help="update mode: column (CSV) or key (NDJSON) holding 'add' or 'remove' "
                        "(default: action)")
    parser.add_argument("--delimiter", metavar="CHAR", default=",",
                        help="CSV field delimiter (default: ',')")


def _query(args: argparse.Namespace) -> str | None:
    if args.sql is not None and args.sql_file is not None:
        raise CLIError("give the query once: --sql or --sql-file, not both")
    if args.sql_file is not None:
        try:
            return Path(args.sql_file).read_text(encoding="utf-8")
        except OSError as error:
            raise CLIError(f"cannot read --sql-file {args.sql_file}: {error.strerror or error}") from None
    return str(args.sql) if args.sql is not None else None


def _db_url(args: argparse.Namespace) -> str:
    url = args.db or os.environ.get(DB_URL_ENV, "").strip()
    if not url:
        raise CLIError(f"--sql needs a database: pass --db URL or set {DB_URL_ENV}")
    return str(url)


def input_format(args: argparse.Namespace) -> str:
    """``"sql"``, the ``--format`` given, else the one the file's extension names (``.csv.gz``
    is CSV), else ``"txt"``."""
    if args.sql is not None or args.sql_file is not None:
        if args.file is not None:
            raise CLIError("give FILE or --sql/--sql-file, not both")
        return "sql"
    if args.file is None:
        raise CLIError("an input is needed: FILE, or --sql QUERY / --sql-file PATH with --db URL")
    if args.format is not None:
        return str(args.format)
    if args.file == "-":
        return "txt"
    path = args.file.lower()
    root, suffix = os.path.splitext(path)
    if suffix in COMPRESSIONS:
        suffix = os.path.splitext(root)[1]
    return FORMATS.get(suffix, "txt")


def check_input_options(args: argparse.Namespace, fmt: str, mode: str) -> None:
    """Options that do not fit the input, refused before anything is read or sent."""
    if fmt == "txt" and (args.attr or args.id_column or args.action_column):
        raise CLIError("a text file holds one ID per line: --attr, --id-column and --action-column "
                       "need --format csv or ndjson")
    if mode == "update" and fmt in ("txt", "parquet", "sql"):
        raise CLIError("--mode update needs an action per row: use a CSV or NDJSON file")
    if fmt in ("parquet", "sql") and args.file == "-":
        raise CLIError("Parquet cannot be read from standard input: give its path")
    if args.db is not None and fmt != "sql":
        raise CLIError("--db is for --sql or --sql-file")
    if fmt in ("parquet", "sql") and getattr(args, "rejects", None):
        raise CLIError("--rejects writes rows in the input's own format: it needs a CSV, NDJSON or "
                       "text input")


def describe_input(args: argparse.Namespace, fmt: str) -> str:
    """The input as a report names it: the file, or the query's database with no password."""
    if fmt != "sql":
        return str(args.file)
    return f"SQL query on {safe_url(_db_url(args))}"


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
    #: The input as reports name it: the file, or the query's database without its password.
    label: str = ""
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
                if self.reader.errors:  # a table or a query has no line feed to take them
                    self.take_errors()
                if type(item) is not str:
                    problem = _mode_problem(item, mode, member)
                    if problem is not None:
                        self._bad(RowError(self.counter.line or self.reader.line, problem), start)
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
        check_item(item, mode)
    except ValidationError as error:
        hint = " (use --mode update for mixed actions)" if error.field == "action" else ""
        return f"{error.rule}{hint}"
    return None


def open_input(args: argparse.Namespace, fmt: str, console: Console | None = None) -> Input:
    """The input the options describe: the one place a command opens its file or query.

    A file ending in ``.gz``, ``.bz2``, ``.xz`` or ``.zst`` is decompressed as it is read.
    ``console`` learns the database password of ``--sql``, so that no output shows it.
    """
    label = describe_input(args, fmt)
    if fmt in ("parquet", "sql"):
        # A table or a query has no lines: no line feed, no rejects file (refused earlier).
        empty = io.BytesIO()
        return Input(_columnar_reader(args, fmt, console), _LineCounter(empty), empty, args.mode,
                     args.chunk_size, label, encoding=args.encoding, max_bad_rows=args.max_bad_rows)
    file: IO[bytes] = sys.stdin.buffer if args.file == "-" else open_binary(args.file)
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
    return Input(reader, counter, file, args.mode, args.chunk_size, label, encoding=args.encoding,
                 rejects=rejects, max_bad_rows=args.max_bad_rows)


def _columnar_reader(args: argparse.Namespace, fmt: str, console: Console | None) -> SourceReader[Any]:
    attributes = args.attr or None
    if fmt == "parquet":
        with open(args.file, "rb"):  # OSError now, with the path, rather than mid-upload
            pass
        return read_parquet(args.file, id_column=args.id_column, attributes=attributes, errors="collect")
    query = _query(args)
    url = _db_url(args)
    if console is not None:
        from sqlalchemy.engine import make_url  # the [sql] extra: read_sql says if it is missing

        with contextlib.suppress(Exception):  # an unparsable URL: read_sql refuses it, unechoed
            console.add_secret(make_url(url).password or None)
    return read_sql(url, query, id_column=args.id_column, attributes=attributes, errors="collect")


def close_input(source: Input) -> None:
    if source.file is not sys.stdin.buffer:
        source.file.close()
    if source.rejects is not None:
        source.rejects.close()


def estimate_total(args: argparse.Namespace, fmt: str) -> int | None:
    """Rows in the input, for the progress bar only: a fast count of a plain file's newlines,
    a Parquet file's own count; ``None`` when only reading it all would tell."""
    path = args.file
    if fmt == "sql" or path in (None, "-") or compression_of(path) is not None:
        return None
    if fmt == "parquet":
        try:
            import pyarrow.parquet as parquet

            return int(parquet.ParquetFile(path).metadata.num_rows)
        except Exception:  # only a progress estimate
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
