"""The bulk engine behind ``upload``: a stream of any length, chunked, paced, ordered, reported.

How an upload runs:

- The input is read lazily, one chunk at a time, and only when one of ``concurrency`` slots is
  free; a slot is held until the chunk is acknowledged (or has failed). So at most
  ``chunk_size * concurrency`` items are held, whatever the length of the stream.
- Items are checked as they are read. An invalid item is reported (its position and the
  :class:`ValidationError`) and not sent; the rest goes on. Chunk boundaries depend only on the
  input and ``chunk_size``, so chunk ``i`` is the same on every run: ``skip_chunks`` relies on it.
- Order (see :mod:`batch_audiences._chunking`): a chunk whose actions on a shared ID do not
  commute with those of an earlier chunk not yet known to be applied waits until that one is
  acknowledged and applied; other chunks go concurrently. Chunks of plain adds (no attributes)
  commute with each other, and so do chunks of removes: an upload of only one of those never
  waits, and costs no per-ID bookkeeping. A replace sends its first chunk to ``/replace``,
  waits until it is applied, then sends the rest to ``/update`` as adds.
- A chunk that fails for good (a 400, or retries refused by the budget or the deadline) is
  reported with its position; later chunks that would have waited for it are not sent (reported
  as depending on it): those sharing an ID with it and, since chunks of plain adds or of removes
  are not recorded by ID, every later chunk of another kind than such a failed chunk. Failures
  that would fail every other chunk too (authentication, a missing audience, throttling or
  unavailability that outlasted the retries, the deadline) stop the upload: nothing more is
  read, and chunks read but not sent are reported as not sent.
- Every request goes through the client's shared rate limiter; retries are counted against the
  call's :class:`RetryBudget`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import math
from collections import deque
from collections.abc import AsyncIterator, Callable, Collection, Iterator, Mapping
from itertools import islice
from typing import TYPE_CHECKING, Any, Final

import orjson

from ._bulk_errors import DeadlineExceededError, DependencyFailedError, NotSentError
from ._chunking import MIXED, PLAIN_ADDS, REMOVES, OrderTracker
from ._codec import decode, encode_attributes
from ._errors import (
    AuthenticationError,
    BatchAudiencesError,
    ClientClosedError,
    IndexingTimeoutError,
    NotFoundError,
    RateLimitError,
    ServerError,
    ServiceUnavailableError,
    ThrottledError,
    TransportError,
    UnexpectedResponseError,
    ValidationError,
)
from ._models import (
    MAX_IDS_PER_REQUEST,
    Accepted,
    Action,
    Audience,
    IdAction,
    IndexingState,
    Member,
    check_name,
)
from ._pacing import RetryBudget
from ._reports import FailedChunk, FailedItem, ProgressEvent, UploadReport
from ._transport import RequestTrace

if TYPE_CHECKING:
    from ._transport import Transport

__all__ = [
    "BulkCall",
    "MODES",
    "ProgressCallback",
    "Source",
    "UploadItem",
    "check_call_limits",
    "check_callback",
    "check_concurrency",
    "check_deadline",
    "check_retry_budget",
    "open_source",
    "run_upload",
]

UploadItem = str | Member | IdAction
ProgressCallback = Callable[[ProgressEvent], object]
#: An opened input: a plain iterator (read on the loop, synchronously) or an async one.
Source = Iterator[Any] | AsyncIterator[Any]

MODES: Final = ("add", "remove", "update", "replace")
_UPDATE: Final = "/audiences/update"
_REPLACE: Final = "/audiences/replace"
_VIEW: Final = "/audiences/view"

# IDs of acknowledged chunks are kept (to order later chunks) until those chunks are confirmed
# applied. Past this many, the oldest is confirmed (one view) before more input is read, so
# memory stays bounded on endless streams while short uploads never pay for a view.
_MIN_TRACKED_IDS = 200_000
# Chunks of plain adds or of removes hold no IDs, only their own small record until confirmed
# applied: past this many, the oldest is confirmed likewise.
_MAX_UNCONFIRMED_CHUNKS = 1_000
# How long to wait for one write to be applied before giving up (bounded by the deadline too).
_APPLY_TIMEOUT = 300.0
# Polling a write's indexing state: first look at once, then at growing intervals.
_POLL_FIRST = 0.02
_POLL_GROWTH = 2.0
_POLL_MAX = 1.0
_JUST_STR: Final = frozenset({str})
# (is a remove, is a /replace member) -> what goes before the first ID of an encoded batch, and
# what replaces the '","' between two IDs.
_TEMPLATES: Final = {
    (False, False): (b'{"action":"add","id":', b'"},{"action":"add","id":"'),
    (True, False): (b'{"action":"remove","id":', b'"},{"action":"remove","id":"'),
    (False, True): (b'{"id":', b'"},{"id":"'),
    (True, True): (b'{"id":', b'"},{"id":"'),
}
# Invalid items kept in detail in the report (all are counted).
_MAX_FAILED_ITEMS = 10_000

# Errors after which sending more chunks is pointless: they would fail the same way.
_STOPPING_ERRORS: Final = (
    AuthenticationError,
    NotFoundError,
    ClientClosedError,
    RateLimitError,
    ServiceUnavailableError,
    TransportError,
    ThrottledError,
    IndexingTimeoutError,
    NotSentError,
)


# -- argument checks, shared with create_many ------------------------------------------------


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_concurrency(value: object) -> int:
    """``concurrency``: a positive integer."""
    if not _is_int(value) or value < 1:  # type: ignore[operator]
        raise ValidationError("concurrency", f"must be a positive integer, got {value!r}")
    return value  # type: ignore[return-value]


def check_retry_budget(value: object) -> int | None:
    """``retry_budget``: ``None`` or a non-negative integer."""
    if value is not None and (not _is_int(value) or value < 0):  # type: ignore[operator]
        raise ValidationError("retry_budget", f"must be None or an integer >= 0, got {value!r}")
    return value  # type: ignore[return-value]


def check_deadline(value: object) -> float | None:
    """``deadline``: ``None`` or a positive number of seconds."""
    if value is None:
        return None
    if (
        not isinstance(value, (int, float))
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValidationError("deadline", f"must be None or a positive number of seconds, got {value!r}")
    return float(value)


def check_callback(value: object) -> ProgressCallback | None:
    """``on_progress``: ``None`` or a plain (not async) callable."""
    if value is not None and not callable(value):
        raise ValidationError("on_progress", f"must be a callable or None, got {type(value).__name__}")
    if inspect.iscoroutinefunction(value) or inspect.iscoroutinefunction(type(value).__call__):
        raise ValidationError(
            "on_progress", "must be a plain function, not async: it is called on the event loop"
        )
    return value


def open_source(items: object, field: str) -> Source:
    """An iterator over ``items``, which may be any iterable or async iterable (not a string)."""
    if isinstance(items, (str, bytes, bytearray)):
        raise ValidationError(field, "must be an iterable of items, not a single string")
    if hasattr(items, "__aiter__"):
        return items.__aiter__()  # type: ignore[no-any-return]
    try:
        return iter(items)  # type: ignore[call-overload,no-any-return]
    except TypeError:
        raise ValidationError(
            field, f"must be an iterable or an async iterable, got {type(items).__name__}"
        ) from None


def check_call_limits(
    on_progress: object, retry_budget: object, deadline: object
) -> tuple[ProgressCallback | None, int | None, float | None]:
    """``on_progress``, ``retry_budget`` and ``deadline``, checked in that order."""
    return check_callback(on_progress), check_retry_budget(retry_budget), check_deadline(deadline)


class BulkCall:
    """What every bulk call holds: its input, clock, retry budget, slots, counters and stop state.

    Subclasses read ``_source`` (an async one if ``_async_source``), hold one of ``_slots`` per
    request in flight, and end early through :meth:`_stop` (first error and reason win).
    """

    def __init__(
        self,
        source: Source,
        *,
        concurrency: int,
        on_progress: ProgressCallback | None,
        retry_budget: int | None,
        deadline: float | None,
    ) -> None:
        self._source = source
        self._async_source = hasattr(source, "__anext__")
        self._on_progress = on_progress
        self._deadline = deadline
        self._loop = asyncio.get_running_loop()
        self._started = self._loop.time()
        self._budget = RetryBudget(
            retry_budget, None if deadline is None else self._started + deadline, clock=self._loop.time
        )
        self._slots = asyncio.Semaphore(concurrency)
        self._position = 0
        self._input_exhausted = False
        self._stop_error: BatchAudiencesError | None = None
        self._stop_reason: str | None = None
        self._in_flight = 0
        self._requests = 0
        self._retries = 0

    def _start_deadline_timer(self) -> asyncio.TimerHandle | None:
        """Arm :meth:`_on_deadline` for the call's deadline, if it has one (cancel it when done)."""
        if self._budget.deadline is None:
            return None
        return self._loop.call_at(self._budget.deadline, self._on_deadline)

    def _on_deadline(self) -> None:
        assert self._deadline is not None
        self._stop(DeadlineExceededError(self._deadline), f"the deadline of {self._deadline:g}s passed")

    def _stop(self, error: BatchAudiencesError, reason: str) -> None:
        if self._stop_error is None:
            self._stop_error = error
            self._stop_reason = reason

    def _stopping_reason(self, error: BatchAudiencesError) -> str:
        """Why ``error`` stops the call: the deadline or the spent retry budget, if either caused it."""
        if self._budget.expired and self._deadline is not None:
            return f"the deadline of {self._deadline:g}s passed; last error: {error}"
        if self._budget.exhausted:
            return f"the retry budget ({self._budget.retries} retries) is spent; last error: {error}"
        return str(error)


def _check_chunk_size(value: object) -> int:
    if not _is_int(value) or not 1 <= value <= MAX_IDS_PER_REQUEST:  # type: ignore[operator]
        raise ValidationError(
            "chunk_size", f"must be an integer from 1 to {MAX_IDS_PER_REQUEST:,}, got {value!r}"
        )
    return value  # type: ignore[return-value]


def _check_skip_chunks(value: object, mode: str) -> frozenset[int]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Collection):
        raise ValidationError("skip_chunks", "must be a collection of chunk indexes")
    skip = frozenset(value)
    for index in skip:
        if not _is_int(index) or index < 0:
            raise ValidationError("skip_chunks", f"chunk indexes are integers >= 0, got {index!r}")
    if mode == "replace" and skip and 0 not in skip:
        # Sending the replace again would wipe whatever the skipped chunks added.
        raise ValidationError(
            "skip_chunks", "in replace mode, later chunks can be skipped only together with chunk 0"
        )
    return skip


# -- item conversion -----------------------------------------------------------------------


def _entry(custom_id: str, add: bool, attributes: Mapping[str, Any] | None, member: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {"id": custom_id} if member else {
        "action": "add" if add else "remove", "id": custom_id
    }
    if attributes:
        entry["attributes"] = encode_attributes(attributes)
    return entry


def _convert(item: object, mode: str, member: bool) -> tuple[str, dict[str, Any]]:
    """One input item as ``(id, wire entry)`` for ``mode``; raise ValidationError if it does not fit.

    ``member``: the entry is for a ``/replace`` body (no ``action``).
    """
    if isinstance(item, Member):
        custom_id, add, attributes = item.id, True, item.attributes
        if mode == "remove":
            if attributes:
                raise ValidationError("attributes", "a remove takes no attributes (mode 'remove')")
            add = False
    elif isinstance(item, IdAction):
        custom_id, attributes = item.id, item.attributes
        add = item.action is Action.ADD
        if mode in ("add", "replace") and not add:
            raise ValidationError("action", f"mode {mode!r} takes adds only, got a remove of {custom_id!r}")
        if mode == "remove" and add:
            raise ValidationError("action", f"mode 'remove' takes removes only, got an add of {custom_id!r}")
    elif isinstance(item, str):
        if not item or item.isspace():
            raise ValidationError("id", "must be a non-empty string")
        custom_id, add, attributes = str(item), mode != "remove", None
    else:
        raise ValidationError("item", f"must be a str ID, a Member or an IdAction, got {type(item).__name__}")
    return custom_id, _entry(custom_id, add, attributes, member)


# -- the engine ----------------------------------------------------------------------------


class _Chunk:
    """One request's worth of the input, from reading to its outcome."""

    __slots__ = (
        "acked", "confirm", "confirmed", "count", "done", "error", "ids", "index", "kind", "parts",
        "route", "start", "stop", "token", "uncertain", "waiting",
    )

    def __init__(self, index: int, start: int, route: str) -> None:
        self.index = index
        self.start = start
        self.stop = start
        self.route = route
        self.count = 0
        self.ids: list[str] = []
        # PLAIN_ADDS, REMOVES or MIXED (see _chunking) once an item is in; -1 while empty.
        self.kind = -1
        # The body's items, already JSON-encoded: pieces of the "ids" array, without brackets.
        self.parts: list[bytes] | None = []
        self.token: str | None = None
        self.acked = False
        self.confirmed = False
        self.error: BatchAudiencesError | None = None
        self.uncertain = False
        self.waiting = False
        self.done = asyncio.Event()
        self.confirm: asyncio.Task[None] | None = None


class _Upload(BulkCall):
    """One ``upload`` call; see the module docstring."""

    def __init__(
        self,
        transport: Transport,
        name: str,
        source: Source,
        *,
        mode: str,
        chunk_size: int,
        concurrency: int,
        wait: bool,
        on_progress: ProgressCallback | None,
        retry_budget: int | None,
        deadline: float | None,
        skip_chunks: frozenset[int],
    ) -> None:
        super().__init__(
            source, concurrency=concurrency, on_progress=on_progress, retry_budget=retry_budget,
            deadline=deadline,
        )
        self._transport = transport
        self._name = name
        self._body_head = b'{"name":' + orjson.dumps(name) + b',"ids":['
        self._mode = mode
        self._chunk_size = chunk_size
        self._concurrency = concurrency
        self._wait = wait
        self._skip = skip_chunks
        self._tracker = OrderTracker()
        self._max_tracked = max(2 * concurrency * chunk_size, _MIN_TRACKED_IDS)
        self._chunks: dict[int, _Chunk] = {}  # chunks not yet confirmed applied (failed ones stay)
        self._unconfirmed: deque[_Chunk] = deque()  # acknowledged, not yet confirmed applied
        self._tasks: dict[asyncio.Task[None], _Chunk] = {}
        self._callback_error: BaseException | None = None
        # counters for the report and the progress events
        self._items_sent = 0
        self._items_accepted = 0
        self._items_skipped = 0
        self._items_invalid = 0
        self._items_failed = 0
        self._chunks_acknowledged = 0
        self._chunks_skipped = 0
        self._tokens: dict[int, str] = {}
        self._failed_chunks: list[FailedChunk] = []
        self._failed_items: list[FailedItem] = []

    # -- the call ------------------------------------------------------------------------

    async def run(self) -> UploadReport:
        timer = self._start_deadline_timer()
        applied: bool | None = None
        try:
            if self._skip:
                # Chunks skipped were accepted by an earlier run, maybe not applied yet: let them
                # land before anything that could touch the same IDs is sent.
                await self._settle()
            input_error: BaseException | None = None
            if self._stop_error is None:
                try:
                    await self._read()
                except Exception as error:  # the input itself failed: finish what was read, re-raise
                    input_error = error
                    self._stop(NotSentError(f"reading the input failed: {error}"), "the input failed")
            while self._tasks:
                await asyncio.wait(list(self._tasks))
            if input_error is not None:
                raise input_error
            if self._wait and self._stop_error is None:
                applied = await self._wait_all_applied()
        finally:
            if timer is not None:
                timer.cancel()
            await self._cancel_all()
        if self._callback_error is not None:
            raise self._callback_error
        report = self._report(applied)
        self._emit("finished")
        if self._callback_error is not None:
            raise self._callback_error
        return report

    async def _cancel_all(self) -> None:
        pending: list[asyncio.Task[Any]] = [task for task in self._tasks if not task.done()]
        pending += [
            chunk.confirm for chunk in self._chunks.values()
            if chunk.confirm is not None and not chunk.confirm.done()
        ]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    def _report(self, applied: bool | None) -> UploadReport:
        return UploadReport(
            name=self._name,
            mode=self._mode,
            items_read=self._position,
            items_sent=self._items_sent,
            items_accepted=self._items_accepted,
            items_skipped=self._items_skipped,
            items_invalid=self._items_invalid,
            chunks_acknowledged=self._chunks_acknowledged,
            chunks_skipped=self._chunks_skipped,
            requests=self._requests,
            retries=self._retries,
            indexing_tokens=tuple(self._tokens[index] for index in sorted(self._tokens)),
            failed_chunks=tuple(sorted(self._failed_chunks, key=lambda chunk: chunk.index)),
            failed_items=tuple(self._failed_items),
            input_exhausted=self._input_exhausted,
            applied=applied,
            stop_reason=self._stop_reason,
            elapsed=self._loop.time() - self._started,
        )

    # -- reading ---------------------------------------------------------------------------

    async def _read(self) -> None:
        replace = self._mode == "replace"
        index = 0
        while self._stop_error is None:
            self._confirm_ahead()
            await self._slots.acquire()
            if self._stop_error is None and self._too_many_unconfirmed():
                await self._make_room()
            if self._stop_error is not None:
                self._slots.release()
                return
            first_replace = replace and index == 0 and 0 not in self._skip
            chunk = _Chunk(index, self._position, _REPLACE if first_replace else _UPDATE)
            if self._async_source:
                await self._afill(chunk, self._source, first_replace)  # type: ignore[arg-type]
            else:
                self._fill(chunk, self._source, first_replace)  # type: ignore[arg-type]
            if chunk.count == 0 and not first_replace:
                self._slots.release()  # only invalid items were left (or none at all)
                return
            if chunk.count == 0 and self._items_invalid:
                # Items were streamed but none was valid: emptying the audience cannot be meant.
                self._fail(chunk, NotSentError("no item of the stream is valid; the replace would empty "
                                               "the audience, so it was not sent"))
                self._slots.release()
                return
            if index in self._skip:
                self._skip_chunk(chunk)
            else:
                # A first replace is not registered: every later chunk waits for it anyway (below).
                depends = set() if first_replace else self._tracker.register(index, chunk.ids, chunk.kind)
                chunk.ids = []  # the tracker holds them now, if it needs them
                if replace and index > 0 and 0 not in self._skip:
                    depends.add(0)  # everything after the replace waits until it is applied
                depends.discard(index)
                self._chunks[index] = chunk
                task = asyncio.ensure_future(self._run_chunk(chunk, depends))
                self._tasks[task] = chunk
                task.add_done_callback(self._task_done)
            index += 1
            if self._input_exhausted:
                return
            # Building a chunk is synchronous work: let the requests just started go out.
            await asyncio.sleep(0)

    def _fill(self, chunk: _Chunk, source: Iterator[Any], member: bool) -> None:
        """Read up to chunk_size valid items from a plain iterator into ``chunk``.

        Items are taken a batch at a time, exactly as many as the chunk still needs, so nothing
        is read ahead.
        """
        exhausted = False
        while chunk.count < self._chunk_size:
            wanted = self._chunk_size - chunk.count
            batch = list(islice(source, wanted))
            self._take(chunk, batch, member)
            if len(batch) < wanted:
                exhausted = True
                break
        chunk.stop = self._position
        self._input_exhausted = exhausted

    async def _afill(self, chunk: _Chunk, source: AsyncIterator[Any], member: bool) -> None:
        """Read up to chunk_size valid items from an async iterator into ``chunk``."""
        exhausted = False
        while chunk.count < self._chunk_size:
            wanted = self._chunk_size - chunk.count
            batch: list[Any] = []
            async for item in source:
                batch.append(item)
                if len(batch) == wanted:
                    break
            self._take(chunk, batch, member)
            if len(batch) < wanted:
                exhausted = True
                break
        chunk.stop = self._position
        self._input_exhausted = exhausted

    def _take(self, chunk: _Chunk, batch: list[Any], member: bool) -> None:
        """Check and encode a batch of items read from the input into ``chunk``.

        The common case, a batch of plain non-blank str IDs, is checked and encoded by C-level
        operations, with no object per item; anything else goes item by item.
        """
        start = self._position
        self._position += len(batch)
        if not batch:
            return
        assert chunk.parts is not None
        if set(map(type, batch)) == _JUST_STR and "" not in batch and not any(map(str.isspace, batch)):
            try:
                encoded = orjson.dumps(batch)
            except orjson.JSONEncodeError:
                pass  # an unencodable string (a lone surrogate): find it item by item below
            else:
                head, separator = _TEMPLATES[(self._mode == "remove", member)]
                # In JSON from orjson a quote inside a string is always escaped, so '","' can only
                # be the boundary between two IDs.
                chunk.parts.append(head + encoded[1:-1].replace(b'","', separator) + b"}")
                chunk.ids.extend(batch)
                chunk.count += len(batch)
                kind = REMOVES if self._mode == "remove" else PLAIN_ADDS
                chunk.kind = kind if chunk.kind in (-1, kind) else MIXED
                return
        pieces: list[bytes] = []
        kind = chunk.kind
        for offset, item in enumerate(batch):
            try:
                custom_id, entry = _convert(item, self._mode, member)
                piece = orjson.dumps(entry)
            except ValidationError as error:
                self._invalid(start + offset, item, error)
                continue
            except orjson.JSONEncodeError as error:
                invalid = ValidationError("item", f"cannot be encoded as JSON: {error}")
                self._invalid(start + offset, item, invalid)
                continue
            pieces.append(piece)
            chunk.ids.append(custom_id)
            chunk.count += 1
            if kind != MIXED:
                if "attributes" in entry:
                    kind = MIXED
                else:
                    this = REMOVES if entry.get("action") == "remove" else PLAIN_ADDS
                    kind = this if kind in (-1, this) else MIXED
        chunk.kind = kind
        if pieces:
            chunk.parts.append(b",".join(pieces))

    def _invalid(self, position: int, item: object, error: ValidationError) -> None:
        self._items_invalid += 1
        self._items_failed += 1
        if len(self._failed_items) < _MAX_FAILED_ITEMS:
            field = error.field if error.field.startswith("item") else f"items[{position}].{error.field}"
            self._failed_items.append(FailedItem(position, item, ValidationError(field, error.rule)))

    def _skip_chunk(self, chunk: _Chunk) -> None:
        self._items_skipped += chunk.count
        self._chunks_skipped += 1
        chunk.parts = None
        self._slots.release()
        self._emit("skipped", chunk)

    def _too_many_unconfirmed(self, share: int = 1) -> bool:
        """Whether the chunks not yet confirmed applied hold more than ``1/share`` of the window:
        IDs of tracked chunks, or chunks at all."""
        return (
            self._tracker.tracked > self._max_tracked // share
            or len(self._unconfirmed) > _MAX_UNCONFIRMED_CHUNKS // share
        )

    def _confirm_ahead(self) -> None:
        """Past half the tracking window, confirm the oldest chunk in the background, so that
        the reader seldom has to wait for a view when the window is full."""
        if self._unconfirmed and self._too_many_unconfirmed(2):
            self._start_confirm(self._unconfirmed[0])

    async def _make_room(self) -> None:
        """Confirm the oldest acknowledged chunks applied until the tracker is small enough."""
        while self._too_many_unconfirmed() and self._unconfirmed:
            try:
                await self._applied(self._unconfirmed[0])
            except BatchAudiencesError as error:
                self._stop(error, f"waiting for a chunk to be applied failed: {error}")
                return
        if self._tracker.tracked > self._max_tracked and not self._unconfirmed and self._failed_chunks:
            self._stop(
                NotSentError("too many failed chunks to keep the order of later ones"),
                "too many failed chunks",
            )

    # -- one chunk -------------------------------------------------------------------------

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)
        # A chunk task handles every error of its own; anything else is a bug, raised at the end.
        if not task.cancelled() and task.exception() is not None and self._callback_error is None:
            self._callback_error = task.exception()

    async def _run_chunk(self, chunk: _Chunk, depends: set[int]) -> None:
        try:
            try:
                chunk.waiting = True
                for index in sorted(depends):
                    earlier = self._chunks.get(index)
                    if earlier is None:
                        continue  # already confirmed applied
                    await earlier.done.wait()
                    if earlier.error is not None:
                        raise DependencyFailedError(index)
                    if not earlier.confirmed:
                        await self._applied(earlier)
                chunk.waiting = False
                if self._stop_error is not None:
                    raise self._not_sent()
                await self._send(chunk)
            except asyncio.CancelledError:
                if not (chunk.waiting and self._stop_error is not None):
                    raise
                self._fail(chunk, self._not_sent())  # stopped while waiting: never sent
            except BatchAudiencesError as error:
                self._fail(chunk, error)
        finally:
            chunk.parts = None
            chunk.done.set()
            self._slots.release()

    def _not_sent(self) -> NotSentError:
        stop = self._stop_error
        if isinstance(stop, NotSentError):
            return stop
        error = NotSentError(f"the upload stopped: {stop}")
        error.__cause__ = stop
        return error

    async def _send(self, chunk: _Chunk) -> None:
        parts = chunk.parts
        assert parts is not None
        body = b"".join((self._body_head, b",".join(parts), b"]}"))
        chunk.parts = None
        trace = RequestTrace(budget=self._budget)
        self._in_flight += 1
        self._items_sent += chunk.count
        try:
            status, payload = await self._transport.request("POST", chunk.route, body=body, trace=trace)
            accepted = decode(payload, Accepted, status=status, method="POST", route=chunk.route)
        except UnexpectedResponseError:
            chunk.uncertain = True  # a success status: the write most likely happened
            raise
        except ServerError as error:
            chunk.uncertain = trace.uncertain or not isinstance(error, ServiceUnavailableError)
            raise
        except BatchAudiencesError:
            chunk.uncertain = trace.uncertain
            raise
        finally:
            self._in_flight -= 1
            self._requests += trace.attempts
            self._retries += trace.retries
        chunk.token = accepted.indexing_token
        chunk.acked = True
        if chunk.token is not None:
            self._tokens[chunk.index] = chunk.token
        self._items_accepted += chunk.count
        self._chunks_acknowledged += 1
        self._unconfirmed.append(chunk)
        self._emit("acknowledged", chunk)

    def _fail(self, chunk: _Chunk, error: BatchAudiencesError) -> None:
        chunk.error = error
        self._items_failed += chunk.count
        self._failed_chunks.append(
            FailedChunk(chunk.index, chunk.start, chunk.stop, chunk.count, error, chunk.uncertain)
        )
        self._emit("failed", chunk, error)
        if self._stop_error is not None:
            return
        if chunk.route == _REPLACE:
            self._stop(error, f"the replace (chunk 0) failed: {error}")
        elif isinstance(error, _STOPPING_ERRORS) and not isinstance(error, DependencyFailedError):
            self._stop(error, self._stopping_reason(error))

    # -- stopping early ----------------------------------------------------------------------

    def _stop(self, error: BatchAudiencesError, reason: str) -> None:
        if self._stop_error is not None:
            return
        super()._stop(error, reason)
        # Chunks still waiting for an earlier one are abandoned (reported as not sent); chunks
        # in flight finish, without further retries past the deadline.
        for task, chunk in list(self._tasks.items()):
            if chunk.waiting:
                task.cancel()
        for chunk in list(self._chunks.values()):
            if chunk.confirm is not None and not chunk.confirm.done():
                chunk.confirm.cancel()

    # -- indexing ----------------------------------------------------------------------------

    async def _applied(self, chunk: _Chunk) -> None:
        """Wait until ``chunk`` (acknowledged) is applied; then later chunks need not wait for it."""
        if chunk.confirmed:
            return
        task = self._start_confirm(chunk)
        # asyncio.wait, not a plain await: a waiter being cancelled must not cancel the poll
        # that other chunks share.
        await asyncio.wait((task,))
        if task.cancelled():
            raise self._not_sent()
        task.result()

    def _start_confirm(self, chunk: _Chunk) -> asyncio.Task[None]:
        """The one task that polls ``chunk`` until applied, shared by everyone waiting for it."""
        if chunk.confirm is None:
            chunk.confirm = asyncio.ensure_future(self._confirm(chunk))
            # Its error, if any, is raised to whoever waits for it; a task started ahead that
            # nobody waits for must not be reported as an exception never retrieved.
            chunk.confirm.add_done_callback(_retrieve)
        return chunk.confirm

    async def _confirm(self, chunk: _Chunk) -> None:
        await self._poll(chunk.token)
        chunk.confirmed = True
        self._tracker.release(chunk.index)
        self._chunks.pop(chunk.index, None)
        with contextlib.suppress(ValueError):
            self._unconfirmed.remove(chunk)

    async def _settle(self) -> None:
        try:
            await self._poll(None)
        except BatchAudiencesError as error:
            self._stop(error, f"waiting for earlier writes to be applied failed: {error}")

    async def _poll(self, token: str | None) -> Audience:
        """View the write ``token`` (None: the audience's last write) until it is not IN_PROGRESS."""
        remaining = self._budget.remaining_time()
        timeout = _APPLY_TIMEOUT if remaining is None else min(_APPLY_TIMEOUT, remaining)
        give_up = self._loop.time() + timeout
        params = {"name": self._name}
        if token is not None:
            params["indexing_token"] = token
        interval = _POLL_FIRST
        while True:
            trace = RequestTrace(budget=self._budget)
            try:
                status, payload = await self._transport.request("GET", _VIEW, params=params, trace=trace)
            finally:
                self._requests += trace.attempts
                self._retries += trace.retries
            audience = decode(payload, Audience, status=status, method="GET", route=_VIEW)
            if audience.indexing_state != IndexingState.IN_PROGRESS:
                return audience
            left = give_up - self._loop.time()
            if left <= 0:
                state = audience.indexing_state
                raise IndexingTimeoutError(self._name, token, timeout, getattr(state, "value", str(state)))
            await asyncio.sleep(min(interval, left))
            interval = min(interval * _POLL_GROWTH, _POLL_MAX)

    async def _wait_all_applied(self) -> bool:
        """``wait=True``: confirm every acknowledged chunk applied; False if one could not be."""
        gate = asyncio.Semaphore(self._concurrency)
        chunks = list(self._unconfirmed)

        async def one(chunk: _Chunk) -> bool:
            async with gate:
                try:
                    await self._applied(chunk)
                except BatchAudiencesError:
                    return False
                return True

        results = await asyncio.gather(*(one(chunk) for chunk in chunks))
        return all(results)

    # -- progress ----------------------------------------------------------------------------

    def _emit(self, kind: str, chunk: _Chunk | None = None, error: BatchAudiencesError | None = None) -> None:
        callback = self._on_progress
        if callback is None or self._callback_error is not None:
            return
        event = ProgressEvent(
            kind=kind,
            items_read=self._position,
            items_acknowledged=self._items_accepted,
            items_skipped=self._items_skipped,
            items_failed=self._items_failed,
            chunks_acknowledged=self._chunks_acknowledged,
            requests_in_flight=self._in_flight,
            requests=self._requests,
            retries=self._retries,
            rate=self._transport.limiter.rate,
            elapsed=self._loop.time() - self._started,
            chunk_index=None if chunk is None else chunk.index,
            chunk_start=None if chunk is None else chunk.start,
            chunk_count=None if chunk is None else chunk.count,
            token=None if chunk is None else chunk.token,
            error=error,
        )
        try:
            callback(event)
        except Exception as exc:  # a broken callback stops the upload; the error is raised at the end
            self._callback_error = exc
            self._stop(NotSentError(f"the progress callback raised {exc!r}"), "the progress callback raised")


def _retrieve(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()


async def run_upload(
    transport: Transport,
    name: str,
    items: object,
    *,
    mode: str,
    chunk_size: int,
    concurrency: int,
    wait: bool,
    on_progress: ProgressCallback | None,
    retry_budget: int | None,
    deadline: float | None,
    skip_chunks: Collection[int],
) -> UploadReport:
    """Check every argument (nothing is sent if one is wrong), then run the upload."""
    check_name(name)
    if mode not in MODES:
        raise ValidationError("mode", f"must be one of {', '.join(repr(m) for m in MODES)}, got {mode!r}")
    chunk_size = _check_chunk_size(chunk_size)
    concurrency = check_concurrency(concurrency)
    if not isinstance(wait, bool):
        raise ValidationError("wait", f"must be True or False, got {wait!r}")
    on_progress, retry_budget, deadline = check_call_limits(on_progress, retry_budget, deadline)
    skip = _check_skip_chunks(skip_chunks, mode)
    source = open_source(items, "items")
    upload = _Upload(
        transport, name, source, mode=mode, chunk_size=chunk_size, concurrency=concurrency,
        wait=wait, on_progress=on_progress, retry_budget=retry_budget, deadline=deadline,
        skip_chunks=skip,
    )
    return await upload.run()
