"""Where a command's rows come from: a file (by its extension, compressed or not) or a SQL query.

:func:`add_input_arguments` declares the options and :func:`open_input` turns them into one
lazy :class:`~batch_audiences.sources.SourceReader`, for every command that reads members
(``upload``, ``sync``). A database password never reaches the terminal: it is registered with
the console's redaction before anything is read, and every message names the URL with the
password masked.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path
from typing import Any, Final

from ..sources import COMPRESSIONS, SourceReader, read_csv, read_ndjson, read_parquet, read_sql, read_text
from ._errors import CLIError
from ._output import Console

__all__ = [
    "DB_URL_ENV",
    "FORMATS",
    "add_input_arguments",
    "check_input_options",
    "describe_input",
    "estimate_rows",
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
    parser.add_argument("--attr", action="append", default=[], metavar="COL[:TYPE]",
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


def describe_input(args: argparse.Namespace, fmt: str) -> str:
    """The input as a report names it: the file, or the query's database with no password."""
    if fmt != "sql":
        return str(args.file)
    from ..sources import safe_url

    return f"SQL query on {safe_url(_db_url(args))}"


def open_input(
    args: argparse.Namespace,
    fmt: str,
    *,
    mode: str,
    console: Console | None = None,
    errors: str = "collect",
    max_errors: int | None = None,
) -> SourceReader[Any]:
    """The lazy reader of the input ``args`` name (``upload``'s and ``sync``'s options).

    A file is checked to be readable now (so that a wrong path fails before any request); it is
    opened again, and closed, by each pass of the reader. ``console`` learns the database
    password, so that no output shows it.
    """
    encoding = getattr(args, "encoding", None) or "utf-8"
    if fmt == "sql":
        query = _query(args)
        url = _db_url(args)
        if console is not None:
            from sqlalchemy.engine import make_url  # the [sql] extra: read_sql below says if it is missing

            with contextlib.suppress(Exception):
                console.add_secret(make_url(url).password or None)
        return read_sql(url, query, id_column=args.id_column, attributes=args.attr or None,
                        errors=errors, max_errors=max_errors)
    source: Any
    if args.file == "-":
        source = sys.stdin.buffer
    else:
        with open(args.file, "rb"):  # OSError now, with the path, rather than mid-upload
            pass
        source = args.file
    if fmt == "parquet":
        return read_parquet(source, id_column=args.id_column, attributes=args.attr or None,
                            errors=errors, max_errors=max_errors)
    if fmt == "csv":
        return read_csv(
            source, id_column=args.id_column, attributes=args.attr,
            action_column=(args.action_column or "action") if mode == "update" else None,
            delimiter=args.delimiter, encoding=encoding, errors=errors, max_errors=max_errors,
        )
    if fmt == "ndjson":
        return read_ndjson(
            source, id_key=args.id_column or "id", attributes=args.attr or None,
            action_key=args.action_column or "action", encoding=encoding, errors=errors,
            max_errors=max_errors,
        )
    return read_text(source, encoding=encoding, errors=errors, max_errors=max_errors)


def estimate_rows(args: argparse.Namespace, fmt: str) -> int | None:
    """Rows in the input, for the progress bar only: a fast count of a plain file's newlines,
    a Parquet file's own count; ``None`` when only reading it all would tell."""
    path = args.file
    if fmt == "sql" or path in (None, "-") or os.path.splitext(path)[1].lower() in COMPRESSIONS:
        return None
    if fmt == "parquet":
        try:
            import pyarrow.parquet as parquet

            return int(parquet.ParquetFile(path).metadata.num_rows)
        except Exception:
            return None
    try:
        with open(path, "rb") as file:
            if not os.path.isfile(path):
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
