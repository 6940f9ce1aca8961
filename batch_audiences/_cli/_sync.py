"""``batch-audiences sync``: make an audience equal to a file, sending only what changed.

The file is opened exactly as ``upload`` opens it (same formats and options, bad rows collected
with their line numbers) and handed to :meth:`AsyncAudiencesClient.sync`; the snapshot store,
the plan and the sending are the library's. This module adds the options, the progress line
and the report. Ctrl-C cancels the sync: what Batch accepted so far is recorded, and the next
run sends the rest.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .._bulk import ProgressEvent
from .._errors import AuthenticationError, BatchAudiencesError
from .._models import MAX_IDS_PER_REQUEST
from .._sync import SyncReport
from ._argtypes import positive_float, positive_int, text_encoding
from ._commands import make_client
from ._errors import EXIT_FAILED, EXIT_OK, EXIT_SETUP, CLIError
from ._input import (
    Input,
    add_input_arguments,
    check_input_options,
    close_input,
    describe_input,
    estimate_total,
    input_format,
    open_input,
)
from ._output import Console, format_count, format_duration, key_values
from ._progress import Progress

if TYPE_CHECKING:
    from ..sources._rows import MemberBatch
    from ._main import Interrupter

__all__ = ["SYNC_EPILOG", "add_sync_arguments", "cmd_sync"]

# Bad rows and items listed in the text report (--json lists up to 10,000).
_SHOWN = 20
# The reading progress line is fed every so many rows.
_READ_STEP = 10_000

SYNC_EPILOG = """\
how it works:
  The snapshot of what was last pushed (default: sync.sqlite3 in the user's state directory;
  --state PATH or a postgresql:// URL) is compared with the file; only removes, adds and changed
  IDs are sent. The first run, --full, a missing audience (created unless --no-create) and drift
  (the audience's size differs from the snapshot's) replace everything instead. Only what Batch
  accepted is recorded, chunk by chunk: after a failure, a kill or Ctrl-C, run it again.

input: the same formats and options as upload (--id-column, --attr COL[:TYPE], '-' for stdin,
.parquet, compressed files, --sql QUERY --db URL).
Duplicate IDs: the first row wins; the others are reported, like bad rows, and not synced."""


def add_sync_arguments(parser: argparse.ArgumentParser) -> None:
    """The sync command's own arguments."""
    parser.add_argument("name", metavar="NAME", help="audience to keep equal to the input")
    add_input_arguments(parser)
    parser.add_argument("--encoding", type=text_encoding, default="utf-8", metavar="NAME",
                        help="text encoding of a CSV, NDJSON or text input (default: utf-8)")
    parser.add_argument("--state", metavar="PATH", default=None,
                        help="snapshot store: a SQLite file or a postgresql:// URL (default: the "
                        "user's state directory)")
    parser.add_argument("--full", action="store_true", help="ignore the snapshot: replace everything")
    parser.add_argument("--dry-run", action="store_true",
                        help="compute and show the plan; send nothing, leave the snapshot as it is")
    parser.add_argument("--no-create", dest="create", action="store_false",
                        help="fail if the audience does not exist instead of creating it")
    parser.add_argument("--concurrency", type=positive_int, default=4, metavar="N",
                        help="requests in flight at once (default: %(default)s)")
    parser.add_argument("--max-rate", type=positive_float, default=None, metavar="R",
                        help="at most R requests per second (default: adapt to the server)")
    parser.add_argument("--chunk-size", type=positive_int, default=MAX_IDS_PER_REQUEST, metavar="N",
                        help="IDs per request, 1 to 10,000 (default: %(default)s)")


class _Counted:
    """The file's items for the sync, feeding the reading progress line (the source is read
    before anything is sent).

    Iterated, it yields the items one by one. Where the reader has a batch path (a CSV file:
    IDs and checked attributes in columns, no object built per row), the sync reads it through
    :meth:`_member_batches` instead, as it would read the reader itself; the bad rows are then
    taken into the tally after each batch.
    """

    def __init__(self, source: Input, progress: Progress) -> None:
        self._source = source
        self._progress = progress

    def __iter__(self) -> Iterator[Any]:
        source, progress = self._source, self._progress
        count = 0
        for item in source.items():
            count += 1
            if count % _READ_STEP == 0:
                progress.update(done=count + source.bad_count, failed=source.bad_count)
            yield item
        self._finish(count)

    def _member_batches(self, size: int) -> Iterator[MemberBatch] | None:
        batches = self._source.reader._member_batches(size)
        return None if batches is None else self._batches(batches)

    def _batches(self, batches: Iterator[MemberBatch]) -> Iterator[MemberBatch]:
        source, progress = self._source, self._progress
        count = 0
        try:
            for batch in batches:
                source.take_errors()
                count += len(batch[0])
                progress.update(done=count + source.bad_count, failed=source.bad_count)
                yield batch
        finally:
            source.take_errors()
        source.exhausted = True
        self._finish(count)

    def _finish(self, count: int) -> None:
        source, progress = self._source, self._progress
        progress.update(done=count + source.bad_count, failed=source.bad_count, force=True)
        progress.close()


def _error_line(error: BatchAudiencesError) -> str:
    return " ".join(str(error).split())


async def cmd_sync(args: argparse.Namespace, console: Console, interrupter: Interrupter) -> int:
    fmt = input_format(args)
    if args.chunk_size > MAX_IDS_PER_REQUEST:
        raise CLIError(f"--chunk-size must be at most {MAX_IDS_PER_REQUEST:,}, got {args.chunk_size:,}")
    if args.action_column:
        raise CLIError("sync takes no --action-column: the input is the audience's whole content")
    check_input_options(args, fmt, "add")
    # The upload command's reader, in its plain "add" shape: rows are members or IDs. Nothing
    # may end the reading early (a partial source would remove the rest): no --max-bad-rows.
    args.mode, args.rejects, args.max_bad_rows = "add", None, None
    source = open_input(args, fmt, console)
    reading = Progress(console, f"sync {args.name}: reading", unit="rows",
                       total=estimate_total(args, fmt))
    sending = Progress(console, f"sync {args.name}: sending", unit="IDs")

    def on_progress(event: ProgressEvent) -> None:
        sending.update(done=event.items_done, failed=event.items_failed, retries=event.retries,
                       force=event.kind == "finished")

    try:
        async with make_client(args, max_rate=args.max_rate) as client:
            report = await client.sync(
                args.name, _Counted(source, reading), state=args.state, full=args.full,
                create=args.create, dry_run=args.dry_run, chunk_size=args.chunk_size,
                concurrency=args.concurrency, on_progress=on_progress,
            )
    finally:
        reading.close()
        sending.close()
        close_input(source)
    bad_rows = [{"line": e.line, "error": e.message, "column": e.column} for e in source.bad_rows]
    document = _document(args, report, bad_rows, source.bad_count, describe_input(args, fmt))
    console.result(document, _text(document))
    if any(isinstance(chunk.error, AuthenticationError) for chunk in report.failed_chunks):
        return EXIT_SETUP
    return EXIT_OK if document["ok"] else EXIT_FAILED


def _document(
    args: argparse.Namespace, report: SyncReport, bad_rows: list[dict[str, Any]], bad_count: int,
    source: str,
) -> dict[str, Any]:
    return {
        "command": "sync",
        "audience": args.name,
        "file": source,
        "dry_run": report.dry_run,
        "mode": report.mode,
        "full_reason": report.full_reason,
        "added": report.added,
        "removed": report.removed,
        "changed": report.changed,
        "unchanged": report.unchanged,
        "resent": report.resent,
        "requests": report.requests,
        "ok": report.ok and bad_count == 0,
        "completed": report.completed,
        "stop_reason": report.stop_reason,
        "elapsed": round(report.elapsed, 3),
        "read": report.items_read + bad_count,
        "bad_rows_count": bad_count,
        "bad_rows": bad_rows,
        "failed_items_count": report.items_failed,
        "failed_items": [
            {"position": item.position, "error": _error_line(item.error),
             "id": getattr(item.item, "id", item.item if isinstance(item.item, str) else None)}
            for item in report.failed_items
        ],
        "failed_chunks": [
            {"index": c.index, "count": c.count, "error": _error_line(c.error),
             "error_type": type(c.error).__name__, "uncertain": c.uncertain}
            for c in report.failed_chunks
        ],
        "state": args.state,
    }


def _text(document: dict[str, Any]) -> str:
    how = document["mode"]
    if document["full_reason"]:
        how += f", {document['full_reason'].replace('_', ' ')}"
    head = "dry run: nothing sent; " if document["dry_run"] else ""
    lines = [
        f"{head}sync of {document['audience']!r} ({how}) from {document['file']}",
        key_values([
            ("added", format_count(document["added"])),
            ("removed", format_count(document["removed"])),
            ("changed", format_count(document["changed"])),
            ("unchanged", format_count(document["unchanged"])),
            *([("resent", format_count(document["resent"]))] if document["resent"] else []),
            ("requests", format_count(document["requests"])),
            ("elapsed", format_duration(document["elapsed"])),
        ]),
    ]
    if document["stop_reason"]:
        lines.append(f"stopped early: {document['stop_reason']}")
    for chunk in document["failed_chunks"][:_SHOWN]:
        lines.append(f"  chunk {chunk['index']} ({chunk['count']:,} IDs, sent again next run): "
                     f"{chunk['error']}")
    if document["bad_rows_count"]:
        lines.append(f"bad rows ({format_count(document['bad_rows_count'])}, not synced):")
        lines += [f"  line {row['line']}: {row['error']}" for row in document["bad_rows"][:_SHOWN]]
    if document["failed_items_count"]:
        lines.append(f"bad items ({format_count(document['failed_items_count'])}, not synced):")
        lines += [f"  item {item['position']} ({item['id']!r}): {item['error']}"
                  for item in document["failed_items"][:_SHOWN]]
    return "\n".join(lines)
