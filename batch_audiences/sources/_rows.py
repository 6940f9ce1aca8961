"""What every reader shares: the bad-row record, the error, the readers' tally, and the ID rule."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any, Final, Generic, TypeVar

import attrs

from .._errors import ValidationError
from .._models import MAX_ID_LENGTH

__all__ = [
    "AsyncSourceReader", "MemberBatch", "RowError", "SourceError", "SourceReader", "id_problem", "source_id",
]

T = TypeVar("T")

_ERRORS: Final = ("raise", "collect")

#: A batch of a reader's items as columns, for a consumer that needs their fields and not the
#: items (``sync``): the IDs; each one's attributes, exactly as ``Member(id, attributes)`` would
#: hold them (checked the same way, ``None`` for none), or ``None`` for the whole batch when
#: the items are the ``str`` IDs themselves; and whether every attribute value of the reader is
#: a ``str``, ``int``, ``float`` or ``bool`` (no ``datetime``, no ``Url``).
MemberBatch = tuple[list[str], "list[dict[str, Any] | None] | None", bool]


@attrs.frozen
class RowError:
    """One bad row, where it is, and what was wrong with it.

    ``line`` is the 1-based line of a text file (for a record spanning several lines, its first;
    ``end_line`` is then its last), or the 1-based row number of a table or a query. Columnar
    sources also give the ``batch`` (0-based) and the ``offset`` in it. ``column`` is the column
    (or NDJSON key) at fault, if one was.
    """

    line: int
    message: str
    column: str | None = None
    end_line: int | None = attrs.field(default=None, kw_only=True)
    batch: int | None = attrs.field(default=None, kw_only=True)
    offset: int | None = attrs.field(default=None, kw_only=True)

    @property
    def where(self) -> str:
        """``"line 5"``, ``"lines 5-1000"`` or ``"row 12 (batch 0, offset 11)"``."""
        if self.batch is not None:
            return f"row {self.line} (batch {self.batch}, offset {self.offset})"
        if self.end_line is not None and self.end_line != self.line:
            return f"lines {self.line}-{self.end_line}"
        return f"line {self.line}"

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


class SourceError(ValidationError):
    """A bad input: raised at the first bad row with ``errors="raise"``, once ``max_errors`` is
    passed, and for problems that make the whole source unreadable (no header, a missing column,
    a database that refuses the query) in either mode.

    ``row_error`` is the :class:`RowError` (``None`` for a problem of the whole source) and
    ``line`` its line or row number.
    """

    def __init__(self, error: RowError | str) -> None:
        if isinstance(error, RowError):
            super().__init__(error.where, error.message)
            self.line: int | None = error.line
            self.row_error: RowError | None = error
        else:
            super().__init__("source", error)
            self.line = None
            self.row_error = None


def check_errors_mode(errors: object) -> str:
    if errors not in _ERRORS:
        raise ValidationError("errors", f"must be 'raise' or 'collect', got {errors!r}")
    return str(errors)


def check_max_errors(max_errors: object) -> int | None:
    if max_errors is None:
        return None
    if type(max_errors) is not int or max_errors < 0:
        raise ValidationError("max_errors", f"must be None or an integer >= 0, got {max_errors!r}")
    return max_errors


def id_problem(value: str) -> str | None:
    """Why the string ``value`` cannot be an ID, or ``None``."""
    if not value or value.isspace():
        return "empty ID"
    if len(value) > MAX_ID_LENGTH:
        return f"ID longer than {MAX_ID_LENGTH:,} characters ({len(value):,})"
    return None


def source_id(value: object) -> str:
    """The ID rule of every reader: a string, or an integer taken as its decimal string.

    Anything else (``5.0``, ``true``, a list) is a bad row: an ID is an identifier, not a
    quantity, and guessing that ``5.0`` means ``"5"`` would send ``"5.0"`` from another source.
    A UUID (from a database) is a string. Raises :class:`ValueError` with the reason.
    """
    if type(value) is str:
        text = value
    elif isinstance(value, int) and not isinstance(value, bool):
        text = str(int(value))
    elif isinstance(value, (str, uuid.UUID)):
        text = str(value)
    else:
        raise ValueError(f"an ID must be a string or an integer, got {type(value).__name__} {value!r}")
    problem = id_problem(text)
    if problem is not None:
        raise ValueError(problem)
    return text


class _Tally:
    """The bad rows of one pass over a source, raised or collected, and the rows counted."""

    def __init__(self, source: object, *, errors: str, max_errors: int | None) -> None:
        self.source = source
        #: The bad rows of the last pass (``errors="collect"``).
        self.errors: list[RowError] = []
        #: Bad rows seen in the last pass (a caller may trim :attr:`errors`; this goes on counting).
        self.error_count = 0
        #: Rows read in the last pass, good and bad (blank lines are not rows).
        self.rows = 0
        #: The line (or row number) of the item last yielded.
        self.line = 0
        self._mode = check_errors_mode(errors)
        self._max_errors = check_max_errors(max_errors)

    def __repr__(self) -> str:
        where = self.source if isinstance(self.source, str) else type(self.source).__name__
        return f"<{type(self).__name__} {where!s}, {self.rows} rows, {self.error_count} errors>"

    def _reset(self) -> None:
        self.errors = []
        self.error_count = 0
        self.rows = 0
        self.line = 0

    def bad_row(
        self,
        line: int,
        message: str,
        column: str | None = None,
        *,
        end_line: int | None = None,
        batch: int | None = None,
        offset: int | None = None,
    ) -> None:
        """Record (``errors="collect"``) or raise (``"raise"``) a bad row; raise
        :class:`SourceError` once more than ``max_errors`` are seen."""
        error = RowError(line, message, column, end_line=end_line, batch=batch, offset=offset)
        if self._mode == "raise":
            raise SourceError(error)
        self.error_count += 1
        self.errors.append(error)
        if self._max_errors is not None and self.error_count > self._max_errors:
            raise SourceError(RowError(
                line, f"more than {self._max_errors:,} bad rows (max_errors); the last: {message}", column,
                end_line=end_line, batch=batch, offset=offset,
            ))


class SourceReader(_Tally, Generic[T]):
    """A lazy reader of one source; iterate it for the items, then look at :attr:`errors`.

    Each iteration reads the source again from its start (a path, a table, a query), or goes on
    from where a one-shot source stands (an open file, a record batch reader). With
    ``errors="collect"``, :attr:`errors` holds the bad rows of the last iteration and
    :attr:`rows` counts the rows read (good and bad); ``max_errors=N`` stops the reading with a
    :class:`SourceError` at the bad row after the ``N``-th.
    """

    def __init__(
        self,
        source: object,
        produce: Callable[[SourceReader[T]], Iterator[T]],
        *,
        errors: str = "raise",
        max_errors: int | None = None,
        members: Callable[[SourceReader[T], int], Iterator[MemberBatch]] | None = None,
    ) -> None:
        super().__init__(source, errors=errors, max_errors=max_errors)
        self._produce = produce
        self._members = members

    @classmethod
    def batched(
        cls,
        source: object,
        produce: Callable[[SourceReader[T]], Iterator[tuple[Iterable[int], list[T]]]],
        *,
        errors: str = "raise",
        max_errors: int | None = None,
    ) -> SourceReader[T]:
        """A reader whose ``produce`` makes whole batches: ``(their lines, their items)``.

        A columnar source builds a batch's items at once; handing them over as a list, with one
        generator between them and the caller instead of three, halves the cost per item.
        """

        def produce_items(reader: SourceReader[T]) -> Iterator[T]:
            for lines, items in produce(reader):
                for line, item in zip(lines, items):  # noqa: B905 - as many lines as items
                    reader.line = line
                    yield item

        return cls(source, produce_items, errors=errors, max_errors=max_errors)

    def __iter__(self) -> Iterator[T]:
        self._reset()
        yield from self._produce(self)

    def _member_batches(self, size: int) -> Iterator[MemberBatch] | None:
        """A pass over the source as batches of up to ``size`` items in columns (see
        :data:`MemberBatch`), or ``None`` when this reader has no such path.

        The same pass as iterating the reader: the same rows read, the same bad rows (raised or
        collected, at the same positions, counted in :attr:`rows` and :attr:`errors`), the same
        items in the same order, only not built one object each. Private: ``sync`` reads the
        SDK's own readers this way (building a ``Member`` per row cost as much as the rest of
        its work on the row).
        """
        if self._members is None:
            return None
        members = self._members

        def batches() -> Iterator[MemberBatch]:
            self._reset()
            yield from members(self, size)

        return batches()


class AsyncSourceReader(_Tally, Generic[T]):
    """:class:`SourceReader`'s twin for sources read with ``async for`` (an async database
    engine); the same :attr:`errors`, :attr:`rows` and ``max_errors``."""

    def __init__(
        self,
        source: object,
        produce: Callable[[AsyncSourceReader[T]], AsyncIterator[T]],
        *,
        errors: str = "raise",
        max_errors: int | None = None,
    ) -> None:
        super().__init__(source, errors=errors, max_errors=max_errors)
        self._produce = produce

    async def __aiter__(self) -> AsyncIterator[T]:
        self._reset()
        async for item in self._produce(self):
            yield item


def describe(value: Any) -> str:
    """A short ``repr`` for a message (a cell can be long)."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
