"""Streaming the source into the store: each item checked, put in canonical form, hashed.

Nothing of the source is kept in Python beyond one batch: rows go to the store's scratch table
as they are read, and the store computes the difference. An item's attribute set is put in the
canonical form of the wire (``date(...)``/``url(...)`` keys, sorted keys, compact JSON), and
hashed to 64 bits (CRC-32 and Adler-32), so the same set hashes the same on every run and
machine.

A source that is one of the SDK's readers with a batch path (``read_csv``) is read through it
(:func:`columns_of`): IDs and attributes checked exactly as its items would be, in columns, with
no ``Member`` built per row, which was half the work of reading the file. Any other source is
read item by item.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Iterator
from itertools import islice
from typing import TYPE_CHECKING, Any, Final
from zlib import adler32, crc32

import attrs
import orjson

from .._bulk import FailedItem
from .._codec import encode_attributes
from .._errors import BatchAudiencesError, ValidationError
from .._models import Member, check_id, plain_id
from ._store import StagedRow, SyncSession

if TYPE_CHECKING:
    from ..sources._rows import MemberBatch

__all__ = ["MAX_FAILED_ITEMS", "Columns", "StageResult", "canonical_row", "columns_of", "stage_source"]

# Items read and staged at a time.
_BATCH = 10_000
# Bad items kept in detail (all are counted).
MAX_FAILED_ITEMS = 10_000
_SORT_KEYS = orjson.OPT_SORT_KEYS
_PLAIN: Final = frozenset({str, int, bool, float})
_HALF: Final = 1 << 31
# Sorted keys (JSON) of the attribute key sequences seen: sources repeat a handful of them.
_KEYS: dict[tuple[str, ...], str] = {}
_MAX_KEY_SETS: Final = 4096


def canonical_row(custom_id: str, attributes: dict[str, Any] | None) -> StagedRow:
    """``(id, hash, keys, canonical attributes)`` of one checked member.

    >>> canonical_row("u1", None)
    ('u1', 0, None, None)
    >>> row = canonical_row("u1", {"plan": "pro", "age": 3})
    >>> row[2], row[3]
    ('["age","plan"]', '{"age":3,"plan":"pro"}')
    >>> row[1] == canonical_row("u1", {"age": 3, "plan": "pro"})[1]
    True
    >>> canonical_row("u1", {"plan": "pro", "age": 4})[1] == row[1]
    False
    """
    if not attributes:
        return (custom_id, 0, None, None)
    # This runs once per source row: plain values (all a CSV gives) skip the codec's reshaping,
    # which would return them unchanged.
    for value in attributes.values():
        if type(value) not in _PLAIN:
            return _row(custom_id, encode_attributes(attributes))
    return _row(custom_id, attributes)


def _row(custom_id: str, wire: dict[str, Any]) -> StagedRow:
    """The staged row of attributes in their wire form (not empty)."""
    order = tuple(wire)
    keys = _KEYS.get(order)
    if keys is None:
        keys = orjson.dumps(sorted(order)).decode()
        if len(_KEYS) < _MAX_KEY_SETS:
            _KEYS[order] = keys
    blob = orjson.dumps(wire, option=_SORT_KEYS)
    # 64 bits, stable across processes and machines: CRC-32 and Adler-32 of the canonical JSON
    # (as a signed integer, for the databases' bigint). 0 is "no attributes": moved off it.
    h = (crc32(blob) - _HALF) << 32 | adler32(blob)
    # Kept as text: orjson's output, kept alive by the thousand until its batch is written,
    # makes every later ``dumps`` several times slower (its buffers are allocated large, then
    # shrunk); a decoded copy is small and lets the buffer go at once (measured: 0.35 µs a row
    # instead of 2.5 µs).
    return (custom_id, h or 1, keys, blob.decode())


@attrs.define
class StageResult:
    """What staging read: items, and the bad or duplicate ones with their positions."""

    items_read: int = 0
    items_failed: int = 0
    failed_items: list[FailedItem] = attrs.field(factory=list)
    stopped: str | None = None

    def fail(self, position: int, item: object, error: BatchAudiencesError) -> None:
        self.items_failed += 1
        if len(self.failed_items) < MAX_FAILED_ITEMS:
            self.failed_items.append(FailedItem(position, item, error))


def _check(item: object) -> StagedRow:
    if type(item) is Member:
        return canonical_row(item.id, item.attributes)
    if type(item) is str:
        return (check_id(item), 0, None, None)
    if isinstance(item, Member):
        return canonical_row(item.id, item.attributes)
    if isinstance(item, str):
        return (check_id(plain_id(item)), 0, None, None)
    raise ValidationError("source", f"items must be str IDs or Member, got {type(item).__name__}")


#: One batch of the source, converted: the staged rows; for each, the item it came from, or
#: ``None`` where the item can be built again from the row (see :func:`_convert`); the position
#: of the batch's first item; each row's offset in the batch (``None``: row ``i`` is item ``i``).
_Batch = tuple[list[StagedRow], list[Any], int, "list[int] | None"]


def _convert(items: Iterable[Any], result: StageResult) -> _Batch | None:
    """``items`` (up to a batch of the source) as staged rows, each item checked as it comes;
    bad items are recorded in ``result``. ``None`` when there were no items.

    Every item is let go as soon as its row is made, as plain reading does, unless it cannot be
    built again from its row: a ``Member`` whose attributes are all plain (``str``, ``int``,
    ``float``, ``bool``; all a CSV gives) or absent can be, and is, when it must be reported as
    a duplicate. Holding a batch of such items until the store has written it would move them
    all into the collector's oldest generation, whose full passes then took a fifth of the
    time of reading the source (measured at 1,000,000 rows).
    """
    first = result.items_read
    rows: list[StagedRow] = []
    kept: list[Any] = []
    offsets: list[int] | None = None
    add, keep, plain = rows.append, kept.append, _PLAIN
    offset = -1
    for offset, item in enumerate(items):
        try:
            if type(item) is Member:
                attributes = item.attributes
                if attributes is None:
                    add((item.id, 0, None, None))
                    keep(None)
                elif attributes and plain.issuperset(map(type, attributes.values())):
                    add(_row(item.id, attributes))
                    keep(None)
                else:
                    add(canonical_row(item.id, attributes))
                    keep(item)
            else:
                add(_check(item))
                keep(item)
        except ValidationError as error:
            result.fail(first + offset, item, error)
            if offsets is None:
                offsets = list(range(offset))
            continue
        if offsets is not None:
            offsets.append(offset)
    if offset < 0:
        return None
    result.items_read = first + offset + 1
    return rows, kept, first, offsets


class Columns:
    """A source read through its reader's batch path (:meth:`SourceReader._member_batches`):
    batches of IDs and checked attributes, the items themselves never built."""

    def __init__(self, batches: Iterator[MemberBatch]) -> None:
        self.batches = batches


def columns_of(source: object) -> Columns | None:
    """The batch path of ``source`` when it is one of the SDK's readers that has one, else ``None``.

    Such a reader checks each row exactly as its items would be checked (the same bad rows,
    positions and errors) but builds no object per row: for a CSV file that halves the work of
    reading it. Any other iterable is read item by item.
    """
    member_batches = getattr(source, "_member_batches", None)
    if member_batches is None:
        return None
    batches = member_batches(_BATCH)
    return None if batches is None else Columns(batches)


def _convert_columns(batch: MemberBatch, result: StageResult) -> _Batch:
    """A batch of the batch path as staged rows: every item is valid and none is kept (a
    duplicate's item is built again from its row, or is its ID), except a ``Member`` whose
    attributes are not all plain, built for its row as :func:`_convert` would have kept it."""
    ids, attributes, plain = batch
    first = result.items_read
    result.items_read = first + len(ids)
    if attributes is None:  # the items are the IDs
        return [(custom_id, 0, None, None) for custom_id in ids], list(ids), first, None
    rows: list[StagedRow] = []
    add = rows.append
    if plain:
        # :func:`_row`, inline: this runs once per source row.
        dumps, sort_keys, known = orjson.dumps, _SORT_KEYS, _KEYS
        for custom_id, values in zip(ids, attributes):  # noqa: B905 - as many of each
            if values is None:
                add((custom_id, 0, None, None))
                continue
            keys = known.get(tuple(values))
            if keys is None:
                add(_row(custom_id, values))
                continue
            blob = dumps(values, option=sort_keys)
            h = (crc32(blob) - _HALF) << 32 | adler32(blob)
            add((custom_id, h or 1, keys, blob.decode()))
        return rows, [None] * len(ids), first, None
    kept: list[Any] = []
    for custom_id, values in zip(ids, attributes):  # noqa: B905 - as many of each
        add(canonical_row(custom_id, values))
        kept.append(None if values is None else Member(custom_id, values))
    return rows, kept, first, None


def _item_of(row: StagedRow, kept: object) -> object:
    """The source item a staged row came from (built again if it was not kept)."""
    if kept is not None:
        return kept
    custom_id, _, _, attributes = row
    return Member(custom_id, None if attributes is None else orjson.loads(attributes))


async def _batches(
    source: Iterator[Any] | AsyncIterator[Any] | Columns, result: StageResult
) -> AsyncIterator[_Batch]:
    if isinstance(source, Columns):
        for columns in source.batches:
            yield _convert_columns(columns, result)
        return
    if hasattr(source, "__anext__"):
        items: list[Any] = []
        async for item in source:  # type: ignore[union-attr]
            items.append(item)
            if len(items) == _BATCH:
                batch = _convert(items, result)
                assert batch is not None
                yield batch
                items = []
        if (batch := _convert(items, result)) is not None:
            yield batch
        return
    while (batch := _convert(islice(source, _BATCH), result)) is not None:
        yield batch


async def stage_source(
    session: SyncSession,
    source: Iterator[Any] | AsyncIterator[Any] | Columns,
    *,
    deadline_at: float | None,
) -> StageResult:
    """Read ``source`` to its end into ``session``; the store writes one batch while the next is read."""
    loop = asyncio.get_running_loop()
    result = StageResult()
    writing: asyncio.Future[list[int]] | None = None
    written: _Batch = ([], [], 0, None)

    def collect(duplicates: list[int], rows: list[StagedRow], kept: list[Any], first: int,
                offsets: list[int] | None) -> None:
        for index in duplicates:
            offset = index if offsets is None else offsets[index]
            result.fail(first + offset, _item_of(rows[index], kept[index]),
                        ValidationError("id", "duplicate ID: its first occurrence is the one synced"))

    try:
        async for batch in _batches(source, result):
            if writing is not None:
                collect(await writing, *written)
            # The store writes this batch (on its own thread) while the next one is read.
            writing = asyncio.ensure_future(session.stage(batch[0]))
            written = batch
            if deadline_at is not None and loop.time() >= deadline_at:
                result.stopped = "the deadline passed while the source was read"
                break
        if writing is not None:
            collect(await writing, *written)
            writing = None
    finally:
        if writing is not None and not writing.done():
            writing.cancel()
            await asyncio.gather(writing, return_exceptions=True)
    return result
