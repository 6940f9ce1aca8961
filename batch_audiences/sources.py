"""Readers for the files bulk jobs start from: CSV, NDJSON, and plain text with one ID per line.

Each reader is lazy and streaming: nothing is read until it is iterated, and it holds one row at
a time, so it can feed :meth:`AsyncAudiencesClient.upload` a file of any size. Bad rows are never
dropped silently: with ``errors="raise"`` (the default) the first one raises a
:class:`SourceError` naming its line; with ``errors="collect"`` it is recorded in the reader's
:attr:`~SourceReader.errors` (a :class:`RowError` with its line number) and reading goes on, and
the job can report them all at the end.

>>> import tempfile, os
>>> from batch_audiences.sources import read_csv
>>> path = os.path.join(tempfile.mkdtemp(), "crm.csv")
>>> with open(path, "w") as file:
...     _ = file.write("id,plan,score\\nu1,pro,3\\n,free,1\\nu3,free,x\\n")
>>> reader = read_csv(path, attributes={"plan": "str", "score": "int"}, errors="collect")
>>> [member.id for member in reader]
['u1']
>>> [str(error) for error in reader.errors]
["line 3: empty ID in column 'id'", "line 4: column 'score': not an integer: 'x'"]

What each reader yields, ready for ``upload``:

- :func:`read_text`: ``str`` IDs.
- :func:`read_csv`: ``str`` IDs when no attribute and no action column is chosen (the fastest
  path), else :class:`Member` (with the typed attributes) or, with ``action_column``,
  :class:`IdAction`.
- :func:`read_ndjson`: per line, a JSON string is an ID; a JSON object gives a :class:`Member`,
  or an :class:`IdAction` when it has an ``action`` key.

Attribute types, for CSV columns (and NDJSON keys chosen with ``attributes=``): ``"str"``
(default), ``"int"``, ``"float"``, ``"bool"`` (true/false, yes/no, 1/0, t/f, y/n), ``"date"``
(ISO 8601; a date alone is midnight UTC, a time without offset is UTC; sent as ``date(key)``) and
``"url"`` (http or https; sent as ``url(key)``). The Python types ``str``, ``int``, ``float``,
``bool``, ``datetime`` and :class:`Url` are accepted as well. An empty cell means "no value": the
attribute is left out of that row.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import io
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import date, datetime, timezone
from typing import IO, Any, Final, Generic, TypeVar

import attrs
import orjson

from ._errors import ValidationError
from ._isodates import fromisoformat
from ._models import MAX_ATTRIBUTES, Action, IdAction, Member, Url

__all__ = [
    "ATTRIBUTE_TYPES",
    "RowError",
    "SourceError",
    "SourceReader",
    "read_csv",
    "read_ndjson",
    "read_text",
]

T = TypeVar("T")

#: A file to read: a path, or an open file (text or binary; ``-`` is not special here).
SourceFile = str | os.PathLike[str] | IO[str] | IO[bytes]
#: How an attribute is typed: one of :data:`ATTRIBUTE_TYPES` or a Python type.
AttributeSpec = Mapping[str, "str | type"] | Iterable[str]

#: The attribute type names the readers know.
ATTRIBUTE_TYPES: Final = ("str", "int", "float", "bool", "date", "url")
_ERRORS: Final = ("raise", "collect")
_TRUE: Final = frozenset({"true", "t", "yes", "y", "1"})
_FALSE: Final = frozenset({"false", "f", "no", "n", "0"})
_BY_TYPE: Final[dict[Any, str]] = {
    str: "str", int: "int", float: "float", bool: "bool", datetime: "date", date: "date", Url: "url",
}


@attrs.frozen
class RowError:
    """One bad row: its ``line`` in the file (1-based; for a CSV record spanning several lines,
    the first), what was wrong, and the ``column`` (or NDJSON key) at fault, if one was."""

    line: int
    message: str
    column: str | None = None

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


class SourceError(ValidationError):
    """A bad input file or row: raised at the first bad row with ``errors="raise"``, and for
    problems that make the whole file unreadable (no header, a missing column) in either mode.

    ``line`` is the 1-based line number; ``row_error`` the :class:`RowError`.
    """

    def __init__(self, error: RowError) -> None:
        super().__init__(f"line {error.line}", error.message)
        self.line = error.line
        self.row_error = error


# -- typed conversion of text cells -------------------------------------------------------------


def _to_str(text: str) -> str:
    return text


def _to_int(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError(f"not an integer: {text!r}") from None


def _to_float(text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise ValueError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {text!r}")
    return value


def _to_bool(text: str) -> bool:
    folded = text.strip().lower()
    if folded in _TRUE:
        return True
    if folded in _FALSE:
        return False
    raise ValueError(f"not a boolean (true/false, yes/no, 1/0): {text!r}")


def _to_date(text: str) -> datetime:
    value = text.strip()
    if value[-1:] in ("Z", "z"):
        value = value[:-1] + "+00:00"
    try:
        parsed = fromisoformat(value)
    except ValueError:
        raise ValueError(f"not an ISO 8601 date: {text!r}") from None
    # A date alone, or a time without offset, is read as UTC (what the API stores anyway).
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=timezone.utc)


def _to_url(text: str) -> Url:
    try:
        return Url(text.strip())
    except ValidationError:
        raise ValueError(f"not an http(s) URL: {text!r}") from None


_CONVERTERS: Final[dict[str, Callable[[str], Any]]] = {
    "str": _to_str, "int": _to_int, "float": _to_float, "bool": _to_bool, "date": _to_date, "url": _to_url,
}


def _json_value(value: object, kind: str) -> Any:
    """A JSON value converted to ``kind``; strings go through the text converters."""
    if isinstance(value, str):
        return _CONVERTERS[kind](value)
    if kind == "str" and isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    if kind == "int" and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind == "float" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return _to_float(str(value))
    if kind == "bool" and isinstance(value, bool):
        return value
    raise ValueError(f"expected {kind}, got {type(value).__name__} {value!r}")


def _attribute_specs(attributes: AttributeSpec | None) -> list[tuple[str, str]]:
    """``[(name, type name)]`` from a mapping or from ``"COL"`` / ``"COL:TYPE"`` strings."""
    if attributes is None:
        return []
    specs: list[tuple[str, str]] = []
    if isinstance(attributes, Mapping):
        for name, kind in attributes.items():
            specs.append((name, _type_name(name, kind)))
    elif isinstance(attributes, str):
        raise ValidationError("attributes", "must be a mapping or a list of 'COLUMN[:TYPE]' strings")
    else:
        for spec in attributes:
            if not isinstance(spec, str):
                raise ValidationError("attributes", f"entries must be 'COLUMN[:TYPE]' strings, got {spec!r}")
            name, _, kind = spec.rpartition(":")
            if not name or kind not in ATTRIBUTE_TYPES:
                name, kind = spec, "str"  # no (known) type suffix: the whole is the column name
            specs.append((name, kind))
    names = [name for name, _ in specs]
    for name in names:
        if not isinstance(name, str) or not name:
            raise ValidationError("attributes", f"names must be non-empty strings, got {name!r}")
    if len(set(names)) != len(names):
        raise ValidationError("attributes", "names a column twice")
    if len(specs) > MAX_ATTRIBUTES:
        raise ValidationError("attributes", f"at most {MAX_ATTRIBUTES} attributes per ID, got {len(specs)}")
    return specs


def _type_name(name: object, kind: object) -> str:
    if isinstance(kind, str) and kind in ATTRIBUTE_TYPES:
        return kind
    try:
        found = _BY_TYPE.get(kind)
    except TypeError:  # unhashable
        found = None
    if found is None:
        raise ValidationError(
            f"attributes[{name!r}]", f"type must be one of {', '.join(ATTRIBUTE_TYPES)}, got {kind!r}"
        )
    return found


def _check_errors_mode(errors: object) -> str:
    if errors not in _ERRORS:
        raise ValidationError("errors", f"must be 'raise' or 'collect', got {errors!r}")
    return str(errors)


# -- lines, with their numbers, from any kind of file ----------------------------------------------


@contextlib.contextmanager
def _lines(source: SourceFile, encoding: str) -> Iterator[Iterator[tuple[int, str, bool]]]:
    """``(line number, text, decoding failed)`` for each physical line, newline kept."""
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as file:
            yield _decode(file, encoding)
    elif isinstance(source, io.TextIOBase) or hasattr(source, "encoding"):
        yield _numbered(source)  # type: ignore[arg-type]
    else:
        yield _decode(source, encoding)  # type: ignore[arg-type]


def _decode(file: Iterable[bytes], encoding: str) -> Iterator[tuple[int, str, bool]]:
    decoder = codecs.lookup(encoding)
    utf8 = decoder.name == "utf-8"
    for number, raw in enumerate(file, 1):
        if number == 1 and utf8 and raw.startswith(codecs.BOM_UTF8):
            raw = raw[len(codecs.BOM_UTF8):]
        try:
            yield number, raw.decode(encoding), False
        except UnicodeDecodeError:
            yield number, raw.decode(encoding, "replace"), True


def _numbered(file: Iterable[str]) -> Iterator[tuple[int, str, bool]]:
    for number, text in enumerate(file, 1):
        if number == 1 and text.startswith("\ufeff"):
            text = text[1:]
        yield number, text, False


# -- the readers -------------------------------------------------------------------------------------


class SourceReader(Generic[T]):
    """A lazy reader of one file; iterate it for the items, then look at :attr:`errors`.

    Each iteration reads the file again from its start (a path), or goes on from where an open
    file stands. :attr:`errors` holds the bad rows of the last iteration (``errors="collect"``);
    :attr:`rows` counts the rows read (good and bad; blank lines are not rows).
    """

    def __init__(
        self,
        source: SourceFile,
        parse: Callable[[SourceReader[T], Iterator[tuple[int, str, bool]]], Iterator[T]],
        *,
        encoding: str,
        errors: str,
    ) -> None:
        if not isinstance(source, (str, os.PathLike)) and not hasattr(source, "__iter__"):
            raise ValidationError("source", f"must be a path or an open file, got {type(source).__name__}")
        try:
            codecs.lookup(encoding)
        except (LookupError, TypeError):
            raise ValidationError("encoding", f"unknown encoding {encoding!r}") from None
        self.source = source
        self.errors: list[RowError] = []
        self.rows = 0
        self._parse = parse
        self._encoding = encoding
        self._mode = _check_errors_mode(errors)

    def __repr__(self) -> str:
        where = self.source if isinstance(self.source, (str, os.PathLike)) else type(self.source).__name__
        return f"<{type(self).__name__} {where!s}, {self.rows} rows, {len(self.errors)} errors>"

    def __iter__(self) -> Iterator[T]:
        self.errors = []
        self.rows = 0
        with _lines(self.source, self._encoding) as lines:
            yield from self._parse(self, lines)

    def bad_row(self, line: int, message: str, column: str | None = None) -> None:
        """Record (``errors="collect"``) or raise (``"raise"``) a bad row."""
        error = RowError(line, message, column)
        if self._mode == "raise":
            raise SourceError(error)
        self.errors.append(error)


def read_text(source: SourceFile, *, encoding: str = "utf-8", errors: str = "raise") -> SourceReader[str]:
    """One ID per line. Surrounding spaces are stripped; blank lines are skipped (they are not
    rows). A line that is not valid in ``encoding`` is a bad row.

    >>> import io
    >>> list(read_text(io.BytesIO(b"u1\\n\\n  u2  \\n")))
    ['u1', 'u2']
    """

    def parse(reader: SourceReader[str], lines: Iterator[tuple[int, str, bool]]) -> Iterator[str]:
        for number, text, undecodable in lines:
            value = text.strip()
            if not value:
                continue
            reader.rows += 1
            if undecodable:
                reader.bad_row(number, f"not valid {encoding}")
                continue
            yield value

    return SourceReader(source, parse, encoding=encoding, errors=errors)


def read_ndjson(
    source: SourceFile,
    *,
    id_key: str = "id",
    attributes: AttributeSpec | None = None,
    attributes_key: str = "attributes",
    action_key: str = "action",
    encoding: str = "utf-8",
    errors: str = "raise",
) -> SourceReader[str | Member | IdAction]:
    """One JSON value per line (NDJSON / JSON Lines); blank lines are skipped.

    A JSON string is an ID. A JSON object has the ID under ``id_key`` (a string, or an integer
    taken as its decimal string), and optionally ``action_key`` (``"add"`` or ``"remove"``, which
    makes the item an :class:`IdAction`). Attributes come from the object under
    ``attributes_key`` as they are (typed keys like ``"date(signup)"`` pass through), or, when
    ``attributes`` is given, from those top-level keys with those types. Other keys are ignored.

    >>> import io
    >>> data = b'"u1"\\n{"id": "u2", "attributes": {"plan": "pro"}}\\n{"id": 3, "action": "remove"}\\n'
    >>> [getattr(item, "id", item) for item in read_ndjson(io.BytesIO(data))]
    ['u1', 'u2', '3']
    """
    specs = _attribute_specs(attributes)

    def parse(
        reader: SourceReader[str | Member | IdAction], lines: Iterator[tuple[int, str, bool]]
    ) -> Iterator[str | Member | IdAction]:
        for number, text, undecodable in lines:
            if not text.strip():
                continue
            reader.rows += 1
            if undecodable:
                reader.bad_row(number, f"not valid {encoding}")
                continue
            try:
                data = orjson.loads(text)
            except orjson.JSONDecodeError as error:
                reader.bad_row(number, f"not valid JSON ({error})")
                continue
            if isinstance(data, str):
                if not data.strip():
                    reader.bad_row(number, "empty ID")
                    continue
                yield data
            elif isinstance(data, dict):
                item = _ndjson_item(reader, number, data, id_key, specs, attributes_key, action_key)
                if item is not None:
                    yield item
            else:
                reader.bad_row(number, f"expected a JSON object or string, got {type(data).__name__}")

    return SourceReader(source, parse, encoding=encoding, errors=errors)


def _ndjson_item(
    reader: SourceReader[Any],
    number: int,
    data: dict[str, Any],
    id_key: str,
    specs: list[tuple[str, str]],
    attributes_key: str,
    action_key: str,
) -> Member | IdAction | None:
    custom_id = data.get(id_key)
    if isinstance(custom_id, int) and not isinstance(custom_id, bool):
        custom_id = str(custom_id)
    if not isinstance(custom_id, str) or not custom_id.strip():
        reader.bad_row(number, f"no ID: key {id_key!r} must hold a non-empty string", id_key)
        return None
    attributes: dict[str, Any] | None
    if specs:
        attributes = {}
        for name, kind in specs:
            value = data.get(name)
            if value is None or value == "":
                continue
            try:
                attributes[name] = _json_value(value, kind)
            except ValueError as error:
                reader.bad_row(number, f"key {name!r}: {error}", name)
                return None
    else:
        raw = data.get(attributes_key)
        if raw is not None and not isinstance(raw, dict):
            reader.bad_row(number, f"key {attributes_key!r} must hold an object", attributes_key)
            return None
        attributes = raw
    try:
        if action_key in data:
            return IdAction(custom_id, data[action_key], attributes or None)
        return Member(custom_id, attributes or None)
    except ValidationError as error:
        reader.bad_row(number, str(error), error.field)
        return None


def read_csv(
    source: SourceFile,
    *,
    id_column: str | None = None,
    attributes: AttributeSpec | None = None,
    action_column: str | None = None,
    delimiter: str = ",",
    encoding: str = "utf-8",
    errors: str = "raise",
) -> SourceReader[str | Member | IdAction]:
    """A CSV file with a header row; one item per record.

    ``id_column`` names the ID column (default: the first one). ``attributes`` chooses the
    columns sent as attributes, with their types: a mapping ``{"plan": "str", "score": "int"}``,
    or strings ``"COLUMN"`` / ``"COLUMN:TYPE"`` as on the command line. ``action_column`` (for
    ``mode="update"``) names a column holding ``add`` or ``remove`` (the attribute cells of a
    ``remove`` row are ignored: a removal takes none). A missing header or column
    raises :class:`SourceError` whatever ``errors`` says; a bad record (wrong number of fields,
    empty ID, a value that does not convert) is a bad row. A UTF-8 byte-order mark is ignored.
    """
    specs = _attribute_specs(attributes)
    if not isinstance(delimiter, str) or len(delimiter) != 1:
        raise ValidationError("delimiter", f"must be one character, got {delimiter!r}")
    for field, value in (("id_column", id_column), ("action_column", action_column)):
        if value is not None and (not isinstance(value, str) or not value):
            raise ValidationError(field, f"must be a non-empty string, got {value!r}")

    def parse(
        reader: SourceReader[str | Member | IdAction], lines: Iterator[tuple[int, str, bool]]
    ) -> Iterator[str | Member | IdAction]:
        undecodable: set[int] = set()

        def texts() -> Iterator[str]:
            for number, text, bad in lines:
                if bad:
                    undecodable.add(number)
                yield text

        rows = csv.reader(texts(), delimiter=delimiter)
        try:
            header = [name.strip() for name in next(rows)]
        except StopIteration:
            raise SourceError(RowError(1, "the file is empty: a header row is expected")) from None
        columns = {name: index for index, name in reversed(list(enumerate(header)))}
        id_index = _column(columns, id_column, header, "id_column") if id_column else 0
        id_name = header[id_index]
        typed = [
            (name, _column(columns, name, header, "attributes"), _CONVERTERS[kind]) for name, kind in specs
        ]
        action_index = _column(columns, action_column, header, "action_column") if action_column else None
        width = len(header)
        plain = not typed and action_index is None
        end = rows.line_num
        for row in rows:
            first, end = end + 1, rows.line_num
            if not row:
                continue  # a blank line is not a row
            reader.rows += 1
            if undecodable and any(n in undecodable for n in range(first, end + 1)):
                reader.bad_row(first, f"not valid {encoding}")
                continue
            if len(row) != width:
                reader.bad_row(first, f"expected {width} fields, got {len(row)}")
                continue
            custom_id = row[id_index].strip()
            if not custom_id:
                reader.bad_row(first, f"empty ID in column {id_name!r}", id_name)
                continue
            if plain:
                yield custom_id
                continue
            item = _csv_item(reader, first, row, custom_id, typed, action_index, header)
            if item is not None:
                yield item

    return SourceReader(source, parse, encoding=encoding, errors=errors)


def _column(columns: Mapping[str, int], name: str, header: list[str], field: str) -> int:
    index = columns.get(name)
    if index is None:
        known = ", ".join(repr(column) for column in header)
        raise SourceError(RowError(1, f"no column {name!r} ({field}); the header has {known}", name))
    return index


def _csv_item(
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
