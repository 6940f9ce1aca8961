"""``create-many`` and ``demo``: bulk creates from a manifest, and the end-to-end demo."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

from .._bulk import BulkReport, ProgressEvent
from .._errors import AuthenticationError
from .._models import NewAudience
from ..sources import RowError, read_manifest
from ._commands import make_client
from ._errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_SETUP
from ._output import Console, format_count, format_duration, key_values
from ._progress import Progress

if TYPE_CHECKING:
    from ._main import Interrupter

__all__ = ["cmd_create_many", "cmd_demo"]


class StopFlag:
    """Set by the first Ctrl-C: the input generators end at their next item."""

    def __init__(self) -> None:
        self.set = False

    def __call__(self) -> None:
        self.set = True


def _until(flag: StopFlag, items: list[NewAudience]) -> Iterator[NewAudience]:
    for item in items:
        if flag.set:
            return
        yield item


async def cmd_create_many(args: argparse.Namespace, console: Console, interrupter: Interrupter) -> int:
    # A manifest is small (one line per audience): read it whole, bad rows collected.
    source = sys.stdin.buffer if args.manifest == "-" else args.manifest
    reader = read_manifest(source, format=args.format or ("csv" if args.manifest == "-" else None),
                           errors="collect")
    entries: list[NewAudience] = []
    lines: list[int] = []
    for audience in reader:
        entries.append(audience)
        lines.append(reader.line)
    stop = StopFlag()
    interrupter.graceful = stop
    progress = Progress(console, "create-many", unit="audiences", total=len(entries))

    def on_progress(event: ProgressEvent) -> None:
        progress.update(done=event.items_done, failed=event.items_failed, retries=event.retries,
                        force=event.kind == "finished")

    async with make_client(args, max_rate=args.max_rate) as client:
        try:
            report = await client.create_many(
                _until(stop, entries), concurrency=args.concurrency,
                if_exists=args.if_exists, on_progress=on_progress,
            )
        finally:
            progress.close()
    _print_create_many(console, report, lines, reader.errors, interrupted=stop.set)
    if stop.set:
        return EXIT_INTERRUPTED
    failed = len(report.failed) + len(reader.errors)
    if failed:
        total = report.items_read + len(reader.errors)
        first = report.failed[0].error if report.failed else None
        why = f"; the first: {' '.join(str(first).split())}" if first else " (bad manifest rows, above)"
        console.error(f"create-many: {format_count(failed)} of {format_count(total)} audiences not "
                      f"created{why}")
    elif report.stop_reason:
        console.error(f"create-many stopped: {report.stop_reason}")
    if any(isinstance(failure.error, AuthenticationError) for failure in report.failed):
        return EXIT_SETUP
    return EXIT_OK if report.ok and not reader.errors else EXIT_FAILED


def _print_create_many(
    console: Console, report: BulkReport, lines: list[int], bad_rows: list[RowError], *, interrupted: bool
) -> None:
    def line_of(position: int) -> int | None:
        return lines[position] if 0 <= position < len(lines) else None

    failures = [
        {"line": line_of(f.position), "name": _name_of(f.item), "error": str(f.error),
         "error_type": type(f.error).__name__}
        for f in report.failed
    ]
    failures += [{"line": row.line, "name": None, "error": row.message, "error_type": "BadRow"}
                 for row in bad_rows]
    failures.sort(key=lambda f: f["line"] or 0)
    document = {
        "command": "create-many",
        "ok": report.ok and not bad_rows and not interrupted,
        "interrupted": interrupted,
        "read": report.items_read + len(bad_rows),
        "created": len(report.succeeded),
        "skipped": len(report.skipped),
        "failed": len(failures),
        "requests": report.requests,
        "retries": report.retries,
        "elapsed": round(report.elapsed, 3),
        "stop_reason": report.stop_reason,
        "created_names": [c.audience.name for c in report.succeeded],
        "skipped_names": [s.audience.name for s in report.skipped],
        "failures": failures,
        # Answer lost, audience found, and no evidence whose it is: listed, never counted created.
        "uncertain": [
            {"line": line_of(u.position), "name": u.audience.name, "error": str(u.error)}
            for u in report.uncertain
        ],
    }
    text = key_values([
        ("created", format_count(len(report.succeeded))),
        ("skipped", format_count(len(report.skipped))),
        ("failed", format_count(len(failures))),
        ("requests", format_count(report.requests)),
        ("retries", format_count(report.retries)),
        ("elapsed", format_duration(report.elapsed)),
    ])
    for item in report.uncertain:
        text += f"\n  uncertain, line {line_of(item.position) or '?'}: {item.audience.name}: {item.error}"
    if report.stop_reason:
        text += f"\nstopped early: {report.stop_reason}"
    if interrupted:
        text += "\ninterrupted: the manifest was not read to its end"
    for failure in failures[:20]:
        where = f"line {failure['line']}" if failure["line"] else "?"
        text += f"\n  {where}: {failure['name'] or ''}{': ' if failure['name'] else ''}{failure['error']}"
    if len(failures) > 20:
        text += f"\n  … and {len(failures) - 20} more (--json lists them all)"
    console.result(document, text)


def _name_of(item: object) -> str | None:
    name = item.get("name") if isinstance(item, dict) else getattr(item, "name", None)
    return name if isinstance(name, str) else None


async def cmd_demo(args: argparse.Namespace, console: Console, interrupter: Interrupter) -> int:
    from ._demo import demo

    return await demo(ids=args.ids, audiences=args.audiences, seed=args.seed, console=console)
