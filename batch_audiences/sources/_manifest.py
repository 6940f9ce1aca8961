"""Manifests for ``create_many``: one audience per row, as CSV (with a ``name`` column) or NDJSON."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any, Final

from .._errors import ValidationError
from .._models import NewAudience
from ._csv import csv_records
from ._files import COMPRESSIONS, SourceFile, check_encoding, check_file, lines
from ._ndjson import json_values
from ._rows import RowError, SourceError, SourceReader

__all__ = ["MANIFEST_FORMATS", "read_manifest"]

#: Manifest formats by file extension.
MANIFEST_FORMATS: Final = {".csv": "csv", ".ndjson": "ndjson", ".jsonl": "ndjson", ".json": "ndjson"}
_FIELDS: Final = ("name", "display_name", "type")


def read_manifest(
    source: SourceFile,
    *,
    format: str | None = None,
    encoding: str = "utf-8",
    errors: str = "raise",
    max_errors: int | None = None,
) -> SourceReader[NewAudience]:
    """The audiences a manifest asks for, as :class:`NewAudience` items for ``create_many``.

    ``format`` is ``"csv"`` (a header row with a ``name`` column, and optionally
    ``display_name`` and ``type``) or ``"ndjson"`` (one object per line with those keys);
    by default the extension decides (``.csv``; ``.ndjson``, ``.jsonl``, ``.json``), else CSV.
    A row that is not a valid audience (a bad name…) is a bad row with its line, as in every
    reader; empty cells are no value.

    >>> import io
    >>> reader = read_manifest(io.StringIO("name,display_name\\nvip,VIP\\nbad name,\\n"), errors="collect")
    >>> [audience.name for audience in reader], [str(error) for error in reader.errors]
    (['vip'], ["line 3: name: must be 1 to 255 characters of A-Z a-z 0-9 _ -, got 'bad name'"])
    """
    check_file(source)
    check_encoding(encoding)
    if format is None:
        format = manifest_format(source)
    if format not in ("csv", "ndjson"):
        raise ValidationError("format", f"must be 'csv' or 'ndjson', got {format!r}")

    def produce(reader: SourceReader[NewAudience]) -> Iterator[NewAudience]:
        with lines(source, encoding) as numbered:
            if format == "csv":
                records = _csv(reader, csv_records(reader, numbered, ",", encoding))
            else:
                records = _ndjson(reader, numbered, encoding)
            for line, record in records:
                try:
                    audience = NewAudience(
                        record.get("name"),  # type: ignore[arg-type]  # checked by NewAudience
                        display_name=record.get("display_name") or None,
                        type=record.get("type") or "custom_ids",
                    )
                except (ValidationError, TypeError) as error:
                    reader.bad_row(line, str(error), getattr(error, "field", None))
                    continue
                reader.line = line
                yield audience

    return SourceReader(source, produce, errors=errors, max_errors=max_errors)


def manifest_format(source: object) -> str:
    if not isinstance(source, (str, os.PathLike)):
        return "csv"
    root, suffix = os.path.splitext(os.fspath(source).lower())
    if suffix in COMPRESSIONS:
        suffix = os.path.splitext(root)[1]
    return MANIFEST_FORMATS.get(suffix, "csv")


def _csv(
    reader: SourceReader[Any], records: Iterator[tuple[int, int, list[str]]]
) -> Iterator[tuple[int, dict[str, Any]]]:
    header = next(records)[2]
    if "name" not in header:
        raise SourceError(RowError(1, f"the manifest's header {header} has no 'name' column", "name"))
    width = len(header)
    for first, _, row in records:
        if len(row) != width:
            reader.bad_row(first, f"expected {width} fields, got {len(row)}")
            continue
        record = {key: value.strip() for key, value in zip(header, row, strict=False) if key in _FIELDS}
        if not any(row):
            continue
        yield first, record


def _ndjson(reader: SourceReader[Any], numbered: Iterator[tuple[int, str, bool]], encoding: str
            ) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, record in json_values(reader, numbered, encoding):
        if not isinstance(record, dict):
            reader.bad_row(number, f"expected a JSON object, got {type(record).__name__}")
            continue
        yield number, record
