"""Reading a ``create-many`` manifest: CSV with a header, or NDJSON, each entry with its line."""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs

from ._errors import CLIError

__all__ = ["BadRow", "Manifest", "guess_format", "read_manifest"]


@attrs.frozen
class BadRow:
    """A row of an input file that could not be used, and why (``line`` is 1-based)."""

    line: int
    error: str


@attrs.frozen
class Manifest:
    """The audiences a manifest asks for (mappings for ``create_many``) and the lines they came from."""

    entries: list[dict[str, Any]]
    lines: list[int]
    bad_rows: list[BadRow]


def guess_format(path: str, given: str | None, *, default: str, known: dict[str, str]) -> str:
    """``given``, else the format the file extension names, else ``default``."""
    if given is not None:
        return given
    if path == "-":
        return default
    return known.get(Path(path).suffix.lower(), default)


def _open_text(path: str) -> io.TextIOBase | Any:
    if path == "-":
        return sys.stdin
    return open(path, encoding="utf-8-sig", newline="")


def _entry(record: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": record.get("name")}
    display = record.get("display_name")
    if display not in (None, ""):
        entry["display_name"] = display
    if record.get("type") not in (None, ""):
        entry["type"] = record["type"]
    return entry


def _csv_rows(file: Any) -> Iterator[tuple[int, dict[str, Any] | str]]:
    reader = csv.DictReader(file)
    if reader.fieldnames is None:
        return
    fields = [name.strip() for name in reader.fieldnames]
    reader.fieldnames = fields
    if "name" not in fields:
        raise CLIError(f"the manifest's header {fields} has no 'name' column")
    for record in reader:
        line = reader.line_num
        if None in record:
            yield line, f"{len(record[None])} more field(s) than the header has"
            continue
        if not any((value or "").strip() for value in record.values()):
            continue  # a blank line
        yield line, {key: value.strip() if isinstance(value, str) else value for key, value in record.items()}


def _ndjson_rows(file: Any) -> Iterator[tuple[int, dict[str, Any] | str]]:
    for line, text in enumerate(file, start=1):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as error:
            yield line, f"not valid JSON: {error.msg}"
            continue
        if not isinstance(record, dict):
            yield line, f"expected a JSON object, got {type(record).__name__}"
            continue
        yield line, record


def read_manifest(path: str, fmt: str) -> Manifest:
    """Read the whole manifest (it is small: one line per audience)."""
    entries: list[dict[str, Any]] = []
    lines: list[int] = []
    bad: list[BadRow] = []
    file = _open_text(path)
    try:
        rows = _csv_rows(file) if fmt == "csv" else _ndjson_rows(file)
        for line, row in rows:
            if isinstance(row, str):
                bad.append(BadRow(line, row))
            else:
                entries.append(_entry(row))
                lines.append(line)
    except (csv.Error, UnicodeDecodeError) as error:
        raise CLIError(f"cannot read the manifest {path}: {error}") from None
    finally:
        if file is not sys.stdin:
            file.close()
    return Manifest(entries, lines, bad)
