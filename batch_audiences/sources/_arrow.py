"""Arrow, the columnar path shared by tables, DataFrames, DuckDB results and Parquet files.

Each record batch is converted column by column with Arrow's own kernels (casts, time zones,
dictionary decoding), and each column becomes one Python list in one call; only the last step,
building one :class:`Member` per row, is a Python loop. A null cell means "no such attribute for
this ID".
"""

from __future__ import annotations

import functools
import gc
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from itertools import repeat
from typing import TYPE_CHECKING, Any, Final

from .._errors import ValidationError
from .._models import MAX_ID_LENGTH, Member
from ._convert import CONVERTERS, AttributeSpec, attribute_specs, json_value
from ._extras import require
from ._rows import SourceError, SourceReader, describe, id_problem

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["ArrowData", "read_arrow", "read_batches"]

#: A table, record batch reader, iterable of record batches, or an object exporting the Arrow
#: PyCapsule stream interface (``__arrow_c_stream__``: pandas, polars, DuckDB…).
ArrowData = Any

_new: Final = object.__new__


def _field_setter(name: str) -> Any:
    """A C-level setter of a frozen slotted class's field (attrs' default), else a Python one."""
    descriptor = Member.__dict__.get(name)
    if descriptor is not None and type(descriptor).__name__ == "member_descriptor":
        return descriptor.__set__
    return lambda item, value: object.__setattr__(item, name, value)


_SET_ID: Final = _field_setter("id")
_SET_ATTRIBUTES: Final = _field_setter("attributes")

#: Rows per batch when a whole table is cut into batches.
BATCH_ROWS: Final = 65_536


def pyarrow() -> Any:
    return require("pyarrow", extra="parquet", feature="reading Arrow data")


def read_arrow(
    data: ArrowData,
    *,
    id_column: str | None = None,
    attributes: AttributeSpec | None = None,
    errors: str = "raise",
    max_errors: int | None = None,
) -> SourceReader[str | Member]:
    """Members from Arrow data: a ``pyarrow.Table`` or ``RecordBatch``, a ``RecordBatchReader``,
    an iterable of record batches, or any object exporting the Arrow PyCapsule stream interface
    (``__arrow_c_stream__``: a pandas ≥ 2.2 or polars DataFrame, a DuckDB relation).

    ``id_column`` names the ID column (default: the first); its type must be a string or an
    integer type (an integer is sent as its decimal string). ``attributes`` is a list of column
    names (their types taken from the schema), a mapping column → type as for :func:`read_csv`
    (to convert, e.g. a string column of dates), or ``None`` for every column but the ID. Types
    taken from the schema: strings, integers, floats, booleans, decimals (as floats),
    timestamps with or without time zone (without one, UTC) and dates (sent as ``date(...)``
    attributes), lists of strings (arrays), dictionary-encoded columns (categoricals) of these.
    A null means "no such attribute for this ID"; a null or empty ID, a NaN, a value that does
    not convert are bad rows, found with their row number, batch and offset. With no attribute
    column, the items are plain ``str`` IDs.

    Needs ``pyarrow`` (``pip install 'batch-audiences[parquet]'``).

    >>> import pyarrow as pa
    >>> table = pa.table({"user": ["u1", "u2"], "score": [3, None]})
    >>> list(read_arrow(table, id_column="user"))
    [Member(id='u1', attributes={'score': 3}), Member(id='u2', attributes=None)]
    """
    specs = attribute_specs(attributes, untyped=None)
    if id_column is not None and (not isinstance(id_column, str) or not id_column):
        raise ValidationError("id_column", f"must be a non-empty string, got {id_column!r}")
    pa = pyarrow()
    if not (
        isinstance(data, (pa.Table, pa.RecordBatch, pa.RecordBatchReader))
        or hasattr(data, "__arrow_c_stream__")
        or (hasattr(data, "__iter__") and not isinstance(data, (str, bytes, dict)))
    ):
        raise ValidationError(
            "data", f"must be Arrow data (a table, batches, or an object with __arrow_c_stream__), "
            f"got {type(data).__name__}"
        )

    def produce(reader: SourceReader[str | Member]) -> Iterator[tuple[Iterable[int], list[str | Member]]]:
        yield from read_batches(reader, _batches(pa, data), id_column, specs, attributes is not None)

    return SourceReader.batched(data, produce, errors=errors, max_errors=max_errors)


def _batches(pa: Any, data: ArrowData) -> Iterator[pa.RecordBatch]:
    if isinstance(data, pa.Table):
        yield from data.to_batches(max_chunksize=BATCH_ROWS)
    elif isinstance(data, pa.RecordBatch):
        yield data
    elif isinstance(data, pa.RecordBatchReader):
        yield from data
    elif hasattr(data, "__arrow_c_stream__"):
        yield from pa.RecordBatchReader.from_stream(data)
    else:
        for index, batch in enumerate(data):
            if not isinstance(batch, pa.RecordBatch):
                raise SourceError(f"item {index} of the batches is a {type(batch).__name__}, "
                                  "not a RecordBatch")
            yield batch


def read_batches(
    reader: SourceReader[str | Member],
    batches: Iterable[pa.RecordBatch],
    id_column: str | None,
    specs: list[tuple[str, str | None]],
    chosen: bool,
) -> Iterator[tuple[Iterable[int], list[str | Member]]]:
    """The items of ``batches``, a batch at a time with their row numbers: the engine of
    :func:`read_arrow` and :func:`read_parquet`."""
    pa = pyarrow()
    plan: _Plan | None = None
    row = 0  # rows before this batch
    for number, batch in enumerate(batches):
        if plan is None:
            plan = _Plan(pa, batch.schema, id_column, specs, chosen)
        yield plan.items(reader, batch, number, row)
        row += batch.num_rows


class _Plan:
    """How each column of a schema becomes a Python list, decided once from the first batch."""

    def __init__(
        self, pa: Any, schema: pa.Schema, id_column: str | None, specs: list[tuple[str, str | None]],
        chosen: bool,
    ) -> None:
        self.pa = pa
        self.pc = require("pyarrow.compute", extra="parquet", feature="reading Arrow data")
        names = list(schema.names)
        if not names:
            raise SourceError("the data has no column")
        self.id_name = id_column if id_column is not None else names[0]
        for name in [self.id_name, *(name for name, _ in specs)]:
            if name not in names:
                known = ", ".join(repr(column) for column in names)
                raise SourceError(f"no column {name!r}; the data has {known}")
        if not chosen:
            specs = [(name, None) for name in names if name != self.id_name]
            if len(specs) > 15:
                raise SourceError(f"{len(specs)} attribute columns: at most 15; choose them with attributes=")
        id_type = schema.field(self.id_name).type
        if pa.types.is_dictionary(id_type):
            id_type = id_type.value_type
        if not (_is_string(pa, id_type) or pa.types.is_integer(id_type)):
            raise SourceError(
                f"the ID column {self.id_name!r} holds {id_type}: an ID must be a string or an "
                "integer (cast the column)"
            )
        self.columns = [
            (name, kind, self._check_type(name, schema.field(name).type, kind)) for name, kind in specs
        ]
        # Typed keys ("date(x)") have rules of their own: only plain names skip the row checks.
        self.plain_names = all(isinstance(name, str) and name and not name.endswith(")") for name, _ in specs)

    def _check_type(self, name: str, arrow_type: Any, kind: str | None) -> Any:
        pa = self.pa
        if pa.types.is_dictionary(arrow_type):
            arrow_type = arrow_type.value_type
        if kind is not None:
            return arrow_type
        if (
            _is_string(pa, arrow_type) or pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type)
            or pa.types.is_boolean(arrow_type) or pa.types.is_timestamp(arrow_type)
            or pa.types.is_date(arrow_type) or pa.types.is_decimal(arrow_type) or pa.types.is_null(arrow_type)
        ):
            return arrow_type
        if (pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type)) and (
            _is_string(pa, arrow_type.value_type) or pa.types.is_null(arrow_type.value_type)
        ):
            return arrow_type
        raise SourceError(
            f"column {name!r} holds {arrow_type}, which no attribute type matches: choose its type "
            "with attributes={...} or leave it out"
        )

    def items(
        self, reader: SourceReader[str | Member], batch: pa.RecordBatch, number: int, before: int
    ) -> tuple[Iterable[int], list[str | Member]]:
        """The batch's items and their row numbers.

        Everything Member's own checks would test row by row is tested here column by column
        (null, blank or oversize IDs; NaN and infinities; nulls in lists), so the rows that pass
        are built in bulk — attribute dicts and objects made by ``map`` over C functions, no
        Python code per row — and the few flagged rows go through the checked constructor,
        which also gives their reasons.
        """
        pa, pc = self.pa, self.pc
        flagged: dict[int, tuple[str, str | None] | None] = {}
        id_array = _decoded(pa, batch.column(self.id_name))
        if not _is_string(pa, id_array.type):
            id_array = pc.cast(id_array, pa.string())
        suspect = pc.or_kleene(
            pc.less(pc.utf8_length(pc.utf8_trim_whitespace(id_array)), 1),
            pc.greater(pc.utf8_length(id_array), MAX_ID_LENGTH),
        )
        for offset in _true_positions(pc, pc.fill_null(suspect, True)):  # null: no ID
            flagged[offset] = None
        ids: list[Any] = id_array.to_pylist()
        trusted = self.plain_names
        values = []
        with_nulls: set[int] = set()
        for name, kind, _ in self.columns:
            column = batch.column(name)
            column_values, checked = self._values(column, name, kind, flagged)
            values.append(column_values)
            trusted = trusted and checked
            if column.null_count:
                with_nulls.update(_true_positions(pc, pc.is_null(column)))
        reader.rows += batch.num_rows
        count = len(ids)
        items: list[Any]
        attributes: list[dict[str, Any] | None] = []
        if not self.columns:
            items = ids
        else:
            # The cyclic garbage collector would walk the growing batch of new dicts and objects
            # dozens of times while they are made (two thirds of the time, measured); they hold
            # no cycles, so it rests for these few lines.
            collecting = gc.isenabled()
            gc.disable()
            try:
                items, attributes = self._build(ids, values, with_nulls, count, trusted, flagged)
            finally:
                if collecting:
                    gc.enable()
        if not flagged:
            return range(before + 1, before + count + 1), items
        lines = list(range(before + 1, before + count + 1))
        for offset, problem in sorted(flagged.items()):
            row_attributes = attributes[offset] if attributes else None
            items[offset] = self._flagged(
                reader, ids[offset], row_attributes, problem, before, number, offset
            )
        kept = [offset for offset in range(count) if items[offset] is not None]
        return [lines[offset] for offset in kept], [items[offset] for offset in kept]

    def _build(
        self, ids: list[Any], values: list[list[Any]], with_nulls: set[int], count: int, trusted: bool,
        flagged: dict[int, tuple[str, str | None] | None],
    ) -> tuple[list[Any], list[dict[str, Any] | None]]:
        names = [name for name, _, _ in self.columns]
        attributes: list[dict[str, Any] | None] = _dict_builder(len(names))(names, values)
        for offset in with_nulls:  # few rows, usually: leave their nulls out
            row = attributes[offset]
            assert row is not None
            attributes[offset] = {key: value for key, value in row.items() if value is not None} or None
        if trusted:
            # Every check of Member's constructor was made above, by column: set the fields
            # as attrs' own __init__ does on a frozen class.
            items: list[Any] = list(map(_new, repeat(Member, count)))
            deque(map(_SET_ID, items, ids), maxlen=0)
            deque(map(_SET_ATTRIBUTES, items, attributes), maxlen=0)
        else:
            items = [None for _ in range(count)]
            flagged.update((offset, flagged.get(offset)) for offset in range(count))
        return items, attributes

    def _flagged(
        self, reader: SourceReader[str | Member], custom_id: str | None, attributes: dict[str, Any] | None,
        problem: tuple[str, str | None] | None, before: int, number: int, offset: int,
    ) -> Any:
        """A row that the column checks flagged (or any row, when they cannot vouch for a
        column): built by the checked constructor, or reported with its reason."""
        if problem is None:
            if custom_id is None:
                problem = ("no ID (null)", self.id_name)
            elif (text := id_problem(custom_id)) is not None:
                problem = (text, self.id_name)
            elif not self.columns:
                return custom_id
            else:
                try:
                    return Member(custom_id, attributes or None)
                except ValidationError as error:
                    problem = (str(error), error.field)
        reader.bad_row(before + offset + 1, problem[0], problem[1], batch=number, offset=offset)
        return None

    def _values(
        self, column: Any, name: str, kind: str | None, flagged: dict[int, tuple[str, str | None] | None]
    ) -> tuple[list[Any], bool]:
        """One column as a list of attribute values (``None``: no value on that row), and whether
        the column checks vouch for every value."""
        pa, pc = self.pa, self.pc
        column = _decoded(pa, column)
        arrow_type = column.type
        if kind is None or kind == _natural_kind(pa, arrow_type):
            if pa.types.is_timestamp(arrow_type) or pa.types.is_date(arrow_type):
                return _utc_datetimes(pa, pc, column), True
            if pa.types.is_decimal(arrow_type):
                column = pc.cast(column, pa.float64())
                arrow_type = column.type
            if pa.types.is_floating(arrow_type):
                for offset in _true_positions(pc, pc.invert(pc.is_finite(column))):
                    flagged.setdefault(offset, None)  # NaN or infinity: Member says why
            values: list[Any] = column.to_pylist()
            if (pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type)) and pc.list_flatten(
                column
            ).null_count:
                for offset, value in enumerate(values):
                    if value is not None and None in value:
                        flagged[offset] = (f"column {name!r}: a null inside the list", name)
            return values, True
        # A chosen type that the column's own does not give: convert value by value, so that each
        # value that does not convert is a bad row of its own.
        values = column.to_pylist()
        converted: list[Any] = []
        for offset, value in enumerate(values):
            if value is None or value == "":
                converted.append(None)
                continue
            try:
                if kind == "str" and not isinstance(value, (str, list)):
                    converted.append(_as_text(value))
                elif kind == "url":
                    converted.append(CONVERTERS["url"](str(value)))
                else:
                    converted.append(json_value(value, kind))
            except ValueError as error:
                flagged.setdefault(offset, (f"column {name!r}: {error}", name))
                converted.append(None)
        # Converted values pass their own checks, but an int may be out of range, a list of
        # the wrong kind: the checked constructor looks at each row.
        return converted, False


@functools.cache
def _dict_builder(width: int) -> Callable[[list[str], list[list[Any]]], list[dict[str, Any] | None]]:
    """A function making one dict per row from ``width`` columns, written out for that width.

    A comprehension with a dict display (``{k0: v0, k1: v1}``) builds a row's dict twice as fast
    as ``dict(zip(names, row))`` (measured), and this is most of a batch's time. As attrs does
    for ``__init__``, the code is generated; it holds no user data (names are arguments).
    """
    keys = ", ".join(f"k{index}" for index in range(width))
    values = ", ".join(f"v{index}" for index in range(width))
    columns = ", ".join(f"c{index}" for index in range(width))
    pairs = ", ".join(f"k{index}: v{index}" for index in range(width))
    source = (
        "def build(names, columns):\n"
        f"    {keys}, = names\n"
        f"    {columns}, = columns\n"
        f"    return [{{{pairs}}} for {values}, in zip({columns}, strict=True)]\n"
    )
    namespace: dict[str, Any] = {}
    exec(compile(source, f"<batch_audiences rows of {width}>", "exec"), {"zip": zip}, namespace)
    return namespace["build"]  # type: ignore[no-any-return]


def _true_positions(pc: Any, mask: Any) -> list[int]:
    """The offsets where a boolean array is true (usually none: one call to find out)."""
    if not pc.any(mask).as_py():
        return []
    return pc.indices_nonzero(mask).to_pylist()  # type: ignore[no-any-return]


def _as_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if hasattr(value, "isoformat"):
        return str(value.isoformat())
    raise ValueError(f"cannot be read as text: {describe(value)}")


def _is_string(pa: Any, arrow_type: Any) -> bool:
    return bool(
        pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type)
        or (hasattr(pa.types, "is_string_view") and pa.types.is_string_view(arrow_type))
    )


def _natural_kind(pa: Any, arrow_type: Any) -> str | None:
    if _is_string(pa, arrow_type):
        return "str"
    if pa.types.is_boolean(arrow_type):
        return "bool"
    if pa.types.is_integer(arrow_type):
        return "int"
    if pa.types.is_floating(arrow_type) or pa.types.is_decimal(arrow_type):
        return "float"
    if pa.types.is_timestamp(arrow_type) or pa.types.is_date(arrow_type):
        return "date"
    return None


def _decoded(pa: Any, column: Any) -> Any:
    if pa.types.is_dictionary(column.type):
        return column.dictionary_decode()
    return column


def _utc_datetimes(pa: Any, pc: Any, column: Any) -> list[Any]:
    """Timestamps (with a zone or without one, read as UTC) and dates as aware UTC datetimes.

    Arrow stores every timestamp as an instant since the epoch (a zone is only a label), so a
    cast to ``timestamp("us", "UTC")`` is the conversion, done in one call.
    """
    if pa.types.is_date(column.type):
        column = pc.cast(column, pa.timestamp("s"))
    # Nanoseconds are cut to microseconds (Python's precision), so the cast is told it may.
    return pc.cast(column, pa.timestamp("us", "UTC"), safe=False).to_pylist()  # type: ignore[no-any-return]
