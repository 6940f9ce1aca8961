"""CSV with a header row, read by the standard library's ``csv`` module, and made to report
every malformed record with its lines instead of letting one bad quote swallow the file.

Two failures of ``csv`` are turned into bad rows here:

- **A quote that is never closed.** ``csv`` then reads on, across newlines, to the next quote
  or to the end of the file, and returns everything in between as one field: one bad row, and
  every row after it silently gone. A record of several lines whose text holds an odd number of
  quotes cannot be a well-quoted record (each quoted field has an even count, an escaped quote
  counting twice), so it is reported with the lines it spans, and the lines after its first are
  read again as records of their own.
- **A field over** ``csv.field_size_limit()`` (131,072 characters unless the program changed
  it): ``csv`` raises in the middle of the file. It is a bad row like any other; reading goes on.
"""

from __future__ import annotations

import csv
import itertools
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from .._errors import ValidationError
from .._models import _MAX_INT, _MIN_INT, MAX_ID_LENGTH, Action, IdAction, Member, _attributes_field
from ._convert import CONVERTERS, AttributeSpec, attribute_specs
from ._files import Line, SourceFile, check_encoding, check_file, lines
from ._rows import MemberBatch, RowError, SourceError, SourceReader, _Tally, id_problem

__all__ = ["read_csv"]


def read_csv(
    source: SourceFile,
    *,
    id_column: str | None = None,
    attributes: AttributeSpec | None = None,
    action_column: str | None = None,
    delimiter: str = ",",
    encoding: str = "utf-8",
    errors: str = "raise",
    max_errors: int | None = None,
) -> SourceReader[str | Member | IdAction]:
    """A CSV file with a header row; one item per record. A path ending in ``.gz``, ``.bz2``,
    ``.xz`` or ``.zst`` is decompressed as it is read.

    ``id_column`` names the ID column (default: the first one). ``attributes`` chooses the
    columns sent as attributes, with their types: a mapping ``{"plan": "str", "score": "int"}``,
    or strings ``"COLUMN"`` / ``"COLUMN:TYPE"`` as on the command line. ``action_column`` (for
    ``mode="update"``) names a column holding ``add`` or ``remove`` (the attribute cells of a
    ``remove`` row are ignored: a removal takes none). A missing header or column
    raises :class:`SourceError` whatever ``errors`` says; a bad record (wrong number of fields,
    empty or oversize ID, a value that does not convert, a quote never closed, a field over
    ``csv.field_size_limit()``) is a bad row. A UTF-8 byte-order mark is ignored.

    Quoting is RFC 4180's: a field may be quoted with ``"``, a quote inside is doubled, and a
    quoted field may span lines (the bad row then names its first line).

    >>> import io
    >>> reader = read_csv(io.StringIO('id,plan\\nu1,pro\\n"u2,free\\nu3,pro\\n'), errors="collect")
    >>> list(reader), [str(error) for error in reader.errors]
    (['u1', 'u3'], ['lines 3-4: a quote opened on line 3 is not closed (the record runs to line 4)'])
    """
    check_file(source)
    check_encoding(encoding)
    specs = attribute_specs(attributes)
    if not isinstance(delimiter, str) or len(delimiter) != 1:
        raise ValidationError("delimiter", f"must be one character, got {delimiter!r}")
    for field, value in (("id_column", id_column), ("action_column", action_column)):
        if value is not None and (not isinstance(value, str) or not value):
            raise ValidationError(field, f"must be a non-empty string, got {value!r}")

    def produce(reader: SourceReader[str | Member | IdAction]) -> Iterator[str | Member | IdAction]:
        with lines(source, encoding) as numbered:
            yield from _records(reader, numbered, id_column, specs, action_column, delimiter, encoding)

    def members(reader: SourceReader[str | Member | IdAction], size: int) -> Iterator[MemberBatch]:
        with lines(source, encoding) as numbered:
            yield from _member_batches(reader, numbered, id_column, specs, delimiter, encoding, size)

    # Items of an action column are IdActions, not members: no batch path for them.
    return SourceReader(source, produce, errors=errors, max_errors=max_errors,
                        members=None if action_column is not None else members)


#: An attribute column as the rows are read: its name, its index in the record, its converter.
_Typed = list[tuple[str, int, Callable[[str], Any]]]


def _layout(
    header: list[str], id_column: str | None, specs: list[tuple[str, str | None]], action_column: str | None
) -> tuple[int, _Typed, int | None]:
    """The ID column's index, the attribute columns and the action column's index, from the header."""
    columns = {name: index for index, name in reversed(list(enumerate(header)))}
    id_index = _column(columns, id_column, header, "id_column") if id_column else 0
    typed = [
        (name, _column(columns, name, header, "attributes"), CONVERTERS[kind or "str"])
        for name, kind in specs
    ]
    action_index = _column(columns, action_column, header, "action_column") if action_column else None
    return id_index, typed, action_index


def _records(
    reader: SourceReader[str | Member | IdAction],
    numbered: Iterator[Line],
    id_column: str | None,
    specs: list[tuple[str, str | None]],
    action_column: str | None,
    delimiter: str,
    encoding: str,
) -> Iterator[str | Member | IdAction]:
    records = csv_records(reader, numbered, delimiter, encoding)
    header = next(records)[2]
    id_index, typed, action_index = _layout(header, id_column, specs, action_column)
    id_name = header[id_index]
    width = len(header)
    plain = not typed and action_index is None
    for first, end, row in records:
        if len(row) != width:
            reader.bad_row(first, f"expected {width} fields, got {len(row)}", end_line=end)
            continue
        custom_id = row[id_index].strip()
        if not custom_id or len(custom_id) > MAX_ID_LENGTH:  # id_problem's test, inline: once per row
            reader.bad_row(first, f"{id_problem(custom_id)} in column {id_name!r}", id_name, end_line=end)
            continue
        if plain:
            reader.line = first
            yield custom_id
            continue
        item = _item(reader, first, row, custom_id, typed, action_index, header)
        if item is not None:
            reader.line = first
            yield item


def _member_batches(
    reader: SourceReader[Any],
    numbered: Iterator[Line],
    id_column: str | None,
    specs: list[tuple[str, str | None]],
    delimiter: str,
    encoding: str,
    size: int,
) -> Iterator[MemberBatch]:
    """:func:`_records` (without an action column) as batches of columns: the same records read,
    the same bad rows reported the same way, the same IDs and attributes, no item built.

    Each row is judged as :func:`_records` and :func:`_item` judge it, and its attributes as
    ``Member`` checks them: when no check can fail (the column names are plain keys, the values
    are of the types that pass as they are), only the integers' range is tested; otherwise the
    attributes go through ``Member``'s own converter, whose error is the bad row's, as in
    :func:`_item`.
    """
    records = csv_records(reader, numbered, delimiter, encoding)
    header = next(records)[2]
    id_index, typed, _ = _layout(header, id_column, specs, None)
    id_name = header[id_index]
    width = len(header)
    plain = all(kind in ("str", "int", "float", "bool", None) for _, kind in specs)
    # Values of these kinds pass Member's check as they come from their converter (a float's is
    # finite already), except an integer out of range, and keys pass it unless they end with
    # ")" (they are then checked as ``date(...)``/``url(...)`` keys): when that holds, only the
    # integers' range is tested here, else Member's own check runs.
    quick = plain and all(name[-1] != ")" for name, _ in specs)
    columns = [
        (name, index, convert, kind == "int")
        for (name, index, convert), (_, kind) in zip(typed, specs)  # noqa: B905 - one per spec
    ]
    ids: list[str] = []
    attributes: list[dict[str, Any] | None] = []
    line = 0
    for first, end, row in records:
        if len(row) != width:
            reader.bad_row(first, f"expected {width} fields, got {len(row)}", end_line=end)
            continue
        custom_id = row[id_index].strip()
        if not custom_id or len(custom_id) > MAX_ID_LENGTH:
            reader.bad_row(first, f"{id_problem(custom_id)} in column {id_name!r}", id_name, end_line=end)
            continue
        if typed:
            values: dict[str, Any] | None = {}
            checked = quick
            for name, index, convert, integer in columns:
                cell = row[index]
                if not cell.strip():
                    continue  # an empty cell: no value for this attribute on this row
                try:
                    value = convert(cell)
                except ValueError as error:
                    reader.bad_row(first, f"column {name!r}: {error}", name)
                    values = None
                    break
                if integer and not _MIN_INT <= value < _MAX_INT:
                    checked = False
                values[name] = value  # type: ignore[index]
            if values is None:
                continue
            if not values:
                values = None
            elif not checked:
                try:
                    values = _attributes_field(values)
                except ValidationError as error:
                    reader.bad_row(first, str(error), error.field)
                    continue
            attributes.append(values)
        ids.append(custom_id)
        line = first
        if len(ids) == size:
            reader.line = line
            yield ids, attributes if typed else None, plain
            ids, attributes = [], []
    if ids:
        reader.line = line
        yield ids, attributes if typed else None, plain


def csv_records(
    reader: _Tally, numbered: Iterator[Line], delimiter: str, encoding: str
) -> Iterator[tuple[int, int, list[str]]]:
    """``(1, 1, header)``, then ``(first line, last line, fields)`` for each record that is not
    blank; malformed records are reported to ``reader`` (and counted as rows) instead."""
    # The lines of the record being parsed (csv reads one line at a time and returns a record
    # as soon as a line ends outside quotes, so these are exactly the record's lines).
    record: list[Line] = []
    # Set when csv asked for a line past the last: it does so only to go on with a quoted
    # field, and then returns what it has as the last record, quote still open.
    ended = [False]

    def texts(lines: Iterator[Line]) -> Iterator[str]:
        for line in lines:
            record.append(line)
            yield line[1]
        ended[0] = True

    source: Iterator[Line] = numbered
    rows = csv.reader(texts(source), delimiter=delimiter)
    try:
        header = [name.strip() for name in next(rows)]
    except StopIteration:
        raise SourceError(RowError(1, "the file is empty: a header row is expected")) from None
    except csv.Error as error:
        raise SourceError(RowError(1, f"the header row cannot be read: {error}")) from None
    if len(record) > 1:
        raise SourceError(RowError(1, f"the header row runs over {len(record)} lines (a quote not closed?)",
                                   end_line=record[-1][0]))
    record.clear()
    yield 1, 1, header

    def malformed(error: str | None) -> list[Line] | None:
        """Report a record that is not well formed (a quote not closed, a ``csv`` error) as one
        bad row, and return the lines to read again (after an unclosed quote, all but the
        record's first); ``None`` if the record is well formed after all."""
        first, last = record[0][0], record[-1][0]
        quotes = sum(text.count('"') for _, text, _ in record)
        again: list[Line] = []
        if (len(record) > 1 or ended[0]) and quotes % 2 == 1:
            runs = "to the end of the file" if len(record) == 1 else f"to line {last}"
            reason = f"a quote opened on line {first} is not closed (the record runs {runs})"
            again = record[1:]
        elif error is not None:
            reason = error
        else:
            return None
        reader.rows += 1
        record.clear()
        reader.bad_row(first, reason, end_line=last)
        return again

    while True:
        try:
            for row in rows:
                if len(record) == 1 and not ended[0]:  # the common case, kept short
                    first, _, bad_text = record[0]
                    end = first
                else:
                    # A quoted field may span lines; one whose quotes balance is a record (of
                    # the right width or not, it is judged whole by the caller).
                    again = malformed(None)
                    if again is not None:
                        break  # to read its later lines again, with a new csv reader
                    first, end = record[0][0], record[-1][0]
                    bad_text = any(bad for _, _, bad in record)
                record.clear()
                if not row:
                    continue  # a blank line is not a row
                reader.rows += 1
                if bad_text:
                    reader.bad_row(first, f"not valid {encoding}", end_line=end)
                    continue
                yield first, end, row
            else:
                return
        except csv.Error as error:
            if not record:  # nothing consumed: the file ended inside a record
                return
            message = str(error)
            if "field larger than field limit" in message:
                message = f"a field is longer than {csv.field_size_limit():,} characters"
            again = malformed(f"not valid CSV ({message})") or []
        # A fresh csv reader (a clean state) over the lines to read again, then the rest.
        source = itertools.chain(again, source)
        rows = csv.reader(texts(source), delimiter=delimiter)


def _column(columns: Mapping[str, int], name: str, header: list[str], field: str) -> int:
    index = columns.get(name)
    if index is None:
        known = ", ".join(repr(column) for column in header)
        raise SourceError(RowError(1, f"no column {name!r} ({field}); the header has {known}", name))
    return index


def _item(
    reader: SourceReader[Any],
    line: int,
    row: list[str],
    custom_id: str,
    typed: list[tuple[str, int, Callable[[str], Any]]],
    action_index: int | None,
    header: list[str],
) -> Member | IdAction | None:
    attributes: dict[str, Any] = {}
    for name, index, convert in typed:
        cell = row[index]
        if not cell.strip():
            continue  # an empty cell: no value for this attribute on this row
        try:
            attributes[name] = convert(cell)
        except ValueError as error:
            reader.bad_row(line, f"column {name!r}: {error}", name)
            return None
    try:
        if action_index is not None:
            action = row[action_index].strip().lower()
            if action not in (Action.ADD.value, Action.REMOVE.value):
                column = header[action_index]
                reader.bad_row(line, f"column {column!r}: action must be 'add' or 'remove', got {action!r}",
                               column)
                return None
            if action == Action.REMOVE.value:
                return IdAction(custom_id, Action.REMOVE)  # a removal has no use for the row's cells
            return IdAction(custom_id, Action.ADD, attributes or None)
        return Member(custom_id, attributes or None)
    except ValidationError as error:
        reader.bad_row(line, str(error), error.field)
        return None
