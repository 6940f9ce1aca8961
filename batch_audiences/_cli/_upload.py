"""``batch-audiences upload``: a file streamed through ``client.upload``, with progress and resume.

The file is opened by :mod:`._input` (a :mod:`batch_audiences.sources` reader, bad rows tallied
with their line numbers, ``--rejects``, ``--max-bad-rows``) and handed to
:meth:`AsyncAudiencesClient.upload` as a lazy iterator; chunking, pacing, order and retries are the
bulk engine's. This module adds what a terminal needs: the progress line, the report and its one
error line, ``--dry-run``, ``--checkpoint`` (and ``already done`` for a finished one),
``--create`` and a graceful first Ctrl-C.

Resume works by chunk index. The engine numbers chunks by the items it reads, so the same file
read with the same options and chunk size always gives the same chunk ``i``: the checkpoint keeps
the indexes of the acknowledged chunks, and a re-run passes them as ``skip_chunks``. Ctrl-C ends
the input at the next chunk boundary (before the first chunk it cancels the upload: nothing was
sent), so no short chunk goes out in place of a full one; and as a second guard, a short chunk is
recorded only when the file really ended there.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from typing import TYPE_CHECKING, Any

from .._bulk import LATE_WRITE_GRACE, ProgressEvent, UploadReport
from .._client import AsyncAudiencesClient
from .._errors import AudienceExistsError, AuthenticationError, BatchAudiencesError, NotFoundError
from .._models import MAX_IDS_PER_REQUEST
from ._argtypes import non_negative_float, positive_float, positive_int, text_encoding
from ._checkpoint import Checkpoint, fingerprint
from ._commands import make_client, refused, resolved_base_url
from ._errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_SETUP, CLIError
from ._input import (
    MAX_BAD_ROWS,
    Input,
    add_input_arguments,
    check_input_options,
    close_input,
    estimate_total,
    input_format,
    open_input,
)
from ._output import Console, format_count, format_duration, key_values
from ._progress import Progress

if TYPE_CHECKING:
    from ._main import Interrupter

__all__ = ["add_upload_arguments", "cmd_upload"]

# After the first Ctrl-C, requests in flight get this long to finish before they are cancelled.
GRACE_SECONDS = 30.0
# Bad rows listed in the text report (all of them are in --json).
_SHOWN = 20
# A dry run hands control back to the event loop (for Ctrl-C) every so many items.
_DRY_RUN_BATCH = 10_000


def add_upload_arguments(parser: argparse.ArgumentParser) -> None:
    """The upload command's own arguments."""
    parser.add_argument("name", metavar="NAME",
                        help="audience to upload to (it must exist, unless --create)")
    parser.add_argument("--mode", choices=("add", "remove", "update", "replace"), default="add",
                        help="what to do with the IDs (default: %(default)s)")
    add_input_arguments(parser)
    parser.add_argument("--concurrency", type=positive_int, default=4, metavar="N",
                        help="requests in flight at once (default: %(default)s)")
    parser.add_argument("--max-rate", type=positive_float, default=None, metavar="R",
                        help="at most R requests per second (default: adapt to the server)")
    parser.add_argument("--chunk-size", type=positive_int, default=MAX_IDS_PER_REQUEST, metavar="N",
                        help="IDs per request, 1 to 10,000 (default: %(default)s)")
    parser.add_argument("--wait", action="store_true",
                        help="wait until every write is indexed before reporting")
    parser.add_argument("--checkpoint", metavar="PATH", default=None,
                        help="record accepted chunks in PATH, and resume from it when it exists")
    parser.add_argument("--dry-run", action="store_true",
                        help="read and check the whole input, send nothing, list the bad rows")
    parser.add_argument("--create", action="store_true",
                        help="create the audience first if it does not exist")
    parser.add_argument("--encoding", type=text_encoding, default="utf-8", metavar="NAME",
                        help="text encoding of a CSV, NDJSON or text input (default: utf-8; a "
                        "UTF-8 byte order mark is skipped)")
    parser.add_argument("--rejects", metavar="PATH", default=None,
                        help="write every bad row to PATH, with its line number and reason, in the "
                        "input's format")
    parser.add_argument("--max-bad-rows", type=positive_int, default=None, metavar="N",
                        help="stop (exit 1, checkpoint kept) once N bad rows are seen")
    parser.add_argument("--late-write-grace", type=non_negative_float, default=LATE_WRITE_GRACE,
                        metavar="S",
                        help="a request that timed out may still be applied late: a chunk whose "
                        "try was lost counts as applied, for the chunks after it, only S seconds "
                        "after that try (default: %(default)s; 0 trusts that none lands late)")


def _check_options(args: argparse.Namespace, fmt: str) -> None:
    if args.chunk_size > MAX_IDS_PER_REQUEST:
        raise CLIError(f"--chunk-size must be at most {MAX_IDS_PER_REQUEST:,}, got {args.chunk_size:,}")
    check_input_options(args, fmt, args.mode)
    if args.mode == "remove" and args.attr:
        raise CLIError("--mode remove takes no attributes (--attr)")
    if args.action_column and args.mode != "update":
        raise CLIError("--action-column is for --mode update")
    if args.file == "-" and args.checkpoint:
        raise CLIError("standard input cannot be checkpointed: save it to a file to use --checkpoint")
    if fmt == "sql" and args.checkpoint:
        raise CLIError("a query's rows can change between runs: --checkpoint needs a file")
    if args.checkpoint and args.dry_run:
        raise CLIError("--dry-run sends nothing: --checkpoint makes no sense with it")
    if args.rejects:
        for other, what in ((args.file, "the input"), (args.checkpoint, "the checkpoint")):
            if other and other != "-" and os.path.abspath(args.rejects) == os.path.abspath(other):
                raise CLIError(f"--rejects {args.rejects} is {what}: it would be overwritten")


# -- the command -----------------------------------------------------------------------------


async def cmd_upload(args: argparse.Namespace, console: Console, interrupter: Interrupter) -> int:
    fmt = input_format(args)
    _check_options(args, fmt)
    if args.dry_run:
        return await _dry_run(args, fmt, console, interrupter)

    checkpoint: Checkpoint | None = None
    if args.checkpoint:
        options = {"format": fmt, "id_column": args.id_column, "attributes": list(args.attr),
                   "action_column": args.action_column, "delimiter": args.delimiter}
        if args.encoding != "utf-8":  # absent when default, so checkpoints of 0.1 still match
            options["encoding"] = args.encoding
        checkpoint = Checkpoint.for_job(
            args.checkpoint,
            source=fingerprint(args.file),
            audience=args.name,
            mode=args.mode,
            chunk_size=args.chunk_size,
            options=options,
        )
        if checkpoint.finished:
            # Every chunk was accepted by an earlier run: no need to read the file again.
            return _already_done(args, console, checkpoint)
        # Written before anything is sent, so an unwritable path fails now, not after chunk 1.
        checkpoint.save()
        if checkpoint.resumed:
            console.note(f"resuming from {args.checkpoint}: {len(checkpoint.accepted)} chunk(s) "
                         "already accepted will be skipped")

    source = open_input(args, fmt, console)
    try:
        return await _upload(args, fmt, console, interrupter, source, checkpoint)
    finally:
        close_input(source)


def _already_done(args: argparse.Namespace, console: Console, checkpoint: Checkpoint) -> int:
    document = {
        "command": "upload", "audience": args.name, "mode": args.mode, "file": args.file,
        "ok": True, "already_done": True, "checkpoint": args.checkpoint,
        "chunks_accepted_total": len(checkpoint.accepted),
    }
    console.result(document, (
        f"already done: {args.file} was uploaded to {args.name!r} ({args.mode}) by an earlier run, "
        f"{format_count(len(checkpoint.accepted))} chunk(s) accepted; nothing sent (delete "
        f"{args.checkpoint} to upload it again)"
    ))
    return EXIT_OK


async def _upload(
    args: argparse.Namespace,
    fmt: str,
    console: Console,
    interrupter: Interrupter,
    source: Input,
    checkpoint: Checkpoint | None,
) -> int:
    chunk_size = args.chunk_size
    progress = Progress(console, f"upload {args.name}", unit="IDs", total=estimate_total(args, fmt))
    last_event: list[ProgressEvent] = []

    def on_progress(event: ProgressEvent) -> None:
        last_event[:] = [event]
        if (
            checkpoint is not None
            and event.kind == "acknowledged"
            and event.chunk_index is not None
            # A short chunk is complete only if the file really ended there (not a Ctrl-C).
            and (event.chunk_count == chunk_size or source.exhausted)
        ):
            checkpoint.accepted.add(event.chunk_index)
            if args.mode == "replace" and event.chunk_index == 0:
                checkpoint.replace_token = event.token
            checkpoint.save()
        progress.update(
            done=event.items_done + source.bad_count, failed=event.items_failed + source.bad_count,
            retries=event.retries, force=event.kind == "finished",
        )

    loop = asyncio.get_running_loop()
    report: UploadReport | None = None
    async with make_client(args, max_rate=args.max_rate) as client:
        if args.create:
            await _create_if_missing(client, args.name, console)
        task = asyncio.ensure_future(client.upload(
            args.name, source.items(), mode=args.mode, chunk_size=chunk_size,
            concurrency=args.concurrency, wait=args.wait, on_progress=on_progress,
            skip_chunks=frozenset(checkpoint.accepted) if checkpoint is not None else (),
            late_write_grace=args.late_write_grace,
        ))

        def stop_reading() -> None:
            source.stop_requested = True
            if source.yielded == 0:
                task.cancel()  # nothing read yet, so nothing sent: an empty replace must not go out

        def stop_gracefully() -> None:
            stop_reading()
            if source.yielded:
                loop.call_later(GRACE_SECONDS, task.cancel)

        interrupter.graceful = stop_gracefully
        source.on_too_many = stop_reading
        try:
            report = await task
        except asyncio.CancelledError:
            if not (interrupter.requested or source.too_many_bad_rows):
                raise
        finally:
            interrupter.graceful = None
            progress.close()

    interrupted = interrupter.requested
    if report is not None and checkpoint is not None and report.ok and source.exhausted and not interrupted:
        checkpoint.finished = True
        checkpoint.chunks = report.chunks_acknowledged + report.chunks_skipped
        checkpoint.save()
    document = _report_document(args, source, report, last_event[0] if last_event else None,
                                checkpoint, interrupted=interrupted)
    console.result(document, _report_text(document))
    if interrupted:
        if checkpoint is not None:
            console.note(f"interrupted: run the same command again to resume from {args.checkpoint}")
        return EXIT_INTERRUPTED
    failure = _failure_line(args, source, report, document)
    if failure is not None:
        console.error(failure)
    if report is not None and any(isinstance(c.error, AuthenticationError) for c in report.failed_chunks):
        return EXIT_SETUP
    return EXIT_OK if document["ok"] else EXIT_FAILED


async def _create_if_missing(client: AsyncAudiencesClient, name: str, console: Console) -> None:
    """``--create``: one create; an audience that exists already is what was wanted."""
    try:
        await client.create(name)
    except AudienceExistsError:
        return
    console.note(f"created audience {name!r}")


def _failure_line(
    args: argparse.Namespace, source: Input, report: UploadReport | None, document: dict[str, Any]
) -> str | None:
    """The one error line of an upload that did not fully succeed (None if it did)."""
    if document["ok"]:
        return None
    where = f"upload to {args.name!r}"
    if source.too_many_bad_rows:
        kept = f"; {args.checkpoint} keeps the chunks accepted" if args.checkpoint else ""
        return (f"{where} stopped after {format_count(source.bad_count)} bad rows (--max-bad-rows "
                f"{args.max_bad_rows}){kept}")
    if report is not None and report.stop_reason:
        hint = ""
        if any(isinstance(c.error, NotFoundError) for c in report.failed_chunks) and not args.create:
            hint = " (--create creates a missing audience)"
        elif any(refused(c.error) for c in report.failed_chunks):
            hint = f" (nothing is listening at {resolved_base_url(args)} any more)"
        return f"{where} stopped: {_error_line_text(report.stop_reason)}{hint}"
    if report is not None and report.failed_chunks:
        first = report.failed_chunks[0]
        return (f"{where}: {len(report.failed_chunks)} chunk(s) failed "
                f"({format_count(sum(c.count for c in report.failed_chunks))} IDs); the first: "
                f"{_error_line(first.error)}")
    if report is not None and report.failed_items:
        return f"{where}: {format_count(len(report.failed_items))} item(s) refused (listed above)"
    if source.bad_count:
        where_listed = f"all in {args.rejects}" if args.rejects else "listed above"
        return f"{where}: {format_count(source.bad_count)} bad row(s) not sent ({where_listed})"
    if report is not None and report.applied is False:
        return f"{where}: the writes were accepted but their indexing was not confirmed"
    return f"{where} did not complete (see the report)"


def _error_line_text(text: str) -> str:
    return " ".join(text.split())


def _error_line(error: BatchAudiencesError) -> str:
    return " ".join(str(error).split())


def _report_document(
    args: argparse.Namespace,
    source: Input,
    report: UploadReport | None,
    last: ProgressEvent | None,
    checkpoint: Checkpoint | None,
    *,
    interrupted: bool,
) -> dict[str, Any]:
    bad_rows = [{"line": e.line, "error": e.message, "column": e.column} for e in source.bad_rows]
    if report is None:  # cancelled after the grace period: only the progress events are left
        accepted = last.items_acknowledged if last else 0
        document: dict[str, Any] = {
            "read": last.items_read if last else 0, "sent": None, "accepted": accepted,
            "skipped": last.items_skipped if last else 0,
            "failed": (last.items_failed if last else 0) + source.bad_count,
            "requests": last.requests if last else 0, "retries": last.retries if last else 0,
            "elapsed": round(last.elapsed, 3) if last else 0.0,
            "applied": None, "stop_reason": "interrupted; requests in flight were cancelled",
            "failed_chunks": [], "failed_items": [], "indexing_tokens": [],
        }
    else:
        document = {
            "read": report.items_read, "sent": report.items_sent, "accepted": report.items_accepted,
            "skipped": report.items_skipped, "failed": report.items_failed + source.bad_count,
            "requests": report.requests, "retries": report.retries, "elapsed": round(report.elapsed, 3),
            "applied": report.applied,
            "stop_reason": report.stop_reason or ("interrupted" if interrupted else None),
            "failed_chunks": [
                {"index": c.index, "start": c.start, "stop": c.stop, "count": c.count,
                 "error": _error_line(c.error), "error_type": type(c.error).__name__,
                 "uncertain": c.uncertain}
                for c in report.failed_chunks
            ],
            "failed_items": [
                {"position": i.position, "error": _error_line(i.error)} for i in report.failed_items
            ],
            "indexing_tokens": list(report.indexing_tokens),
        }
    if source.too_many_bad_rows and not document["stop_reason"]:
        document["stop_reason"] = f"{format_count(source.bad_count)} bad rows (--max-bad-rows)"
    ok = (
        report is not None and report.ok and not interrupted and source.bad_count == 0
    )
    return {
        "command": "upload",
        "audience": args.name,
        "mode": args.mode,
        "file": source.label,
        "ok": ok,
        "interrupted": interrupted,
        **document,
        "bad_rows_count": source.bad_count,
        "bad_rows": bad_rows,
        "max_bad_rows_reached": source.too_many_bad_rows,
        "rejects": args.rejects,
        "checkpoint": args.checkpoint,
        "chunks_accepted_total": len(checkpoint.accepted) if checkpoint is not None else None,
    }


def _report_text(document: dict[str, Any]) -> str:
    def count(value: int | None) -> str:
        return "-" if value is None else format_count(value)

    rows: list[tuple[str, object]] = [
        ("sent", count(document["sent"])),
        ("accepted", count(document["accepted"])),
    ]
    if document["skipped"]:
        rows.append(("skipped", f"{count(document['skipped'])} (accepted by an earlier run)"))
    rows += [
        ("failed", count(document["failed"])),
        ("retries", count(document["retries"])),
        ("requests", count(document["requests"])),
        ("elapsed", format_duration(document["elapsed"])),
    ]
    if document["applied"] is not None:
        rows.append(("applied", "yes" if document["applied"] else "NOT confirmed"))
    lines = [f"upload to {document['audience']!r} ({document['mode']}) from {document['file']}",
             key_values(rows)]
    if document["stop_reason"]:
        lines.append(f"stopped early: {document['stop_reason']}")
    stop_reason = _error_line_text(document["stop_reason"] or "")
    for chunk in document["failed_chunks"][:_SHOWN]:
        # The error that stopped the upload is printed once, on the "stopped early" line.
        error = "the error above" if chunk["error"] == stop_reason else chunk["error"]
        lines.append(f"  chunk {chunk['index']} (items {chunk['start']}-{chunk['stop'] - 1}, "
                     f"{chunk['count']:,}): {error}")
    if len(document["failed_chunks"]) > _SHOWN:
        lines.append(f"  … and {len(document['failed_chunks']) - _SHOWN} more failed chunks (--json)")
    for item in document["failed_items"][:_SHOWN]:
        lines.append(f"  item {item['position']}: {item['error']}")
    lines.extend(_bad_row_lines(document["bad_rows"], document["bad_rows_count"]))
    return "\n".join(lines)


def _bad_row_lines(bad_rows: list[dict[str, Any]], total: int) -> list[str]:
    if not total:
        return []
    lines = [f"bad rows ({format_count(total)}, not sent):"]
    lines += [f"  line {row['line']}: {row['error']}" for row in bad_rows[:_SHOWN]]
    if total > _SHOWN:
        lines.append(f"  … and {format_count(total - _SHOWN)} more (--json lists the first "
                     f"{format_count(min(total, MAX_BAD_ROWS))})")
    return lines


async def _dry_run(args: argparse.Namespace, fmt: str, console: Console, interrupter: Interrupter) -> int:
    """Read and check the whole input; send nothing. Exit 1 if any row is bad."""
    source = open_input(args, fmt, console)
    valid = 0

    def stop() -> None:
        source.stop_requested = True

    interrupter.graceful = stop
    try:
        for _ in source.items():
            valid += 1
            if valid % _DRY_RUN_BATCH == 0:
                await asyncio.sleep(0)  # let a Ctrl-C in
    finally:
        interrupter.graceful = None
        close_input(source)
    bad = source.bad_rows
    document = {
        "command": "upload",
        "dry_run": True,
        "interrupted": source.interrupted and not source.too_many_bad_rows,
        "max_bad_rows_reached": source.too_many_bad_rows,
        "rejects": args.rejects,
        "audience": args.name,
        "mode": args.mode,
        "file": source.label,
        "format": fmt,
        "ok": source.bad_count == 0,
        "rows": source.reader.rows,
        "valid": valid,
        "bad_rows_count": source.bad_count,
        "bad_rows": [{"line": e.line, "error": e.message, "column": e.column} for e in bad],
        "requests": (valid + args.chunk_size - 1) // args.chunk_size if valid else 0,
    }
    lines = [
        f"dry run: {source.label} ({fmt}), nothing sent",
        key_values([
            ("rows", format_count(document["rows"])),
            ("valid", format_count(valid)),
            ("bad", format_count(source.bad_count)),
            ("requests", f"{document['requests']:,} of up to {args.chunk_size:,} IDs would be sent"),
        ]),
        *_bad_row_lines(document["bad_rows"], source.bad_count),
    ]
    if source.interrupted:
        lines.append("stopped: the file was not read to its end")
    console.result(document, "\n".join(lines))
    if source.too_many_bad_rows:
        console.error(f"dry run stopped after {format_count(source.bad_count)} bad rows (--max-bad-rows "
                      f"{args.max_bad_rows})")
        return EXIT_FAILED
    if source.interrupted:
        return EXIT_INTERRUPTED
    if source.bad_count:
        listed = f"all in {args.rejects}" if args.rejects else "listed above"
        console.error(f"{format_count(source.bad_count)} bad row(s) in {source.label} ({listed})")
        return EXIT_FAILED
    return EXIT_OK

