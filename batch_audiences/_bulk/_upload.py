"""The bulk engine behind ``upload``: a stream of any length, chunked, paced, ordered, reported.

How an upload runs:

- The input is read lazily, one chunk at a time, and only when one of ``concurrency`` slots is
  free; a slot is held until the chunk is acknowledged (or has failed). So at most
  ``chunk_size * concurrency`` items are held, whatever the length of the stream.
- Items are checked as they are read. An invalid item is reported (its position and the
  :class:`ValidationError`) and not sent; the rest goes on. Chunk boundaries depend only on the
  input and ``chunk_size``, so chunk ``i`` is the same on every run: ``skip_chunks`` relies on it.
- Order (see :mod:`batch_audiences._bulk._chunking`): a chunk whose actions on a shared ID do not
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
- A try that timed out or broke may be applied by the server later than its retry. A chunk
  acknowledged after such a try counts as applied, for the chunks ordered after it, only
  ``late_write_grace`` seconds after the try was given up (see :mod:`._indexing`).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Collection, Iterator
from itertools import islice
from typing import Any, Final

from .._api import Operations
from .._codec import ids_body
from .._errors import (
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
from .._models import MAX_IDS_PER_REQUEST, IdAction, Member, check_name
from .._transport import RequestTrace
from ._call import (
    BulkCall,
    ProgressCallback,
    Source,
    check_call_limits,
    check_concurrency,
    is_int,
    open_source,
)
from ._chunk import Chunk
from ._chunking import MIXED as _MIXED
from ._chunking import OrderTracker
from ._encode import MODES, encode_batch
from ._errors import DependencyFailedError, NotSentError
from ._indexing import Confirmations
from ._reports import FailedChunk, FailedItem, ProgressKind, UploadMode, UploadReport

__all__ = ["LATE_WRITE_GRACE", "MIN_TRACKED_IDS", "UploadItem", "run_upload"]

UploadItem = str | Member | IdAction

#: IDs of acknowledged chunks are kept (to order later chunks) until those chunks are confirmed
#: applied. Past this many (or ``2 * concurrency * chunk_size`` if more), the oldest is confirmed
#: (one view) before more input is read, so memory stays bounded on endless streams while short
#: uploads never pay for a view. :func:`run_upload` takes another value as ``max_tracked_ids``.
MIN_TRACKED_IDS: Final = 200_000
#: Seconds after a try that timed out or broke is given up during which the server may still
#: apply it: until then its chunk does not count as applied for the chunks ordered after it.
LATE_WRITE_GRACE: Final = 5.0
# Chunks of plain adds or of removes hold no IDs, only their own small record until confirmed
# applied: past this many, the oldest is confirmed likewise.
_MAX_UNCONFIRMED_CHUNKS: Final = 1_000
# Invalid items kept in detail in the report (all are counted).
_MAX_FAILED_ITEMS: Final = 10_000

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


def _check_chunk_size(value: object) -> int:
    if not is_int(value) or not 1 <= value <= MAX_IDS_PER_REQUEST:  # type: ignore[operator]
        raise ValidationError(
            "chunk_size", f"must be an integer from 1 to {MAX_IDS_PER_REQUEST:,}, got {value!r}"
        )
    return value  # type: ignore[return-value]


def _check_skip_chunks(value: object, mode: str) -> frozenset[int]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Collection):
        raise ValidationError("skip_chunks", "must be a collection of chunk indexes")
    skip = frozenset(value)
    for index in skip:
        if not is_int(index) or index < 0:
            raise ValidationError("skip_chunks", f"chunk indexes are integers >= 0, got {index!r}")
    if mode == "replace" and skip and 0 not in skip:
        # Sending the replace again would wipe whatever the skipped chunks added.
        raise ValidationError(
            "skip_chunks", "in replace mode, later chunks can be skipped only together with chunk 0"
        )
    return skip


def _check_grace(value: object) -> float:
    if (
        not isinstance(value, (int, float))
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValidationError(
            "late_write_grace", f"must be a finite number of seconds >= 0, got {value!r}"
        )
    return float(value)


class _Upload(BulkCall):
    """One ``upload`` call: the scheduler (read → send → fail → stop); see the module docstring."""

    def __init__(
        self,
        ops: Operations,
        name: str,
        source: Source,
        *,
        mode: UploadMode,
        chunk_size: int,
        concurrency: int,
        wait: bool,
        on_progress: ProgressCallback | None,
        retry_budget: int | None,
        deadline: float | None,
        skip_chunks: frozenset[int],
        max_tracked_ids: int,
        late_write_grace: float,
    ) -> None:
        super().__init__(
            ops, source, concurrency=concurrency, on_progress=on_progress, retry_budget=retry_budget,
            deadline=deadline,
        )
        self._name = name
        self._mode: UploadMode = mode
        self._chunk_size = chunk_size
        self._wait = wait
        self._skip = skip_chunks
        self._tracker = OrderTracker()
        self._max_tracked = max(2 * concurrency * chunk_size, max_tracked_ids)
        self._chunks: dict[int, Chunk] = {}  # chunks not yet confirmed applied (failed ones stay)
        self._confirmations = Confirmations(
            ops, name, self._budget, self._tally, self._confirmed, late_write_grace
        )
        self._tasks: dict[asyncio.Task[None], Chunk] = {}
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
            input_error = await self._read_input() if self._stop_error is None else None
            while self._tasks:
                await asyncio.wait(list(self._tasks))
            if input_error is not None:
                raise input_error
            if self._wait and self._stop_error is None:
                applied = await self._confirmations.wait_all(lambda: self._emit("indexing"))
        finally:
            if timer is not None:
                timer.cancel()
            await self._cancel_all()
        self._raise_crash()
        return self._finish(self._report(applied))

    async def _cancel_all(self) -> None:
        confirms = [chunk.confirm for chunk in self._chunks.values() if chunk.confirm is not None]
        await self._cancel([*self._tasks, *confirms])

    def _report(self, applied: bool | None) -> UploadReport:
        tally = self._tally
        return UploadReport(
            name=self._name,
            mode=self._mode,
            items_read=tally.items_read,
            items_sent=tally.items_sent,
            items_accepted=tally.items_accepted,
            items_skipped=tally.items_skipped,
            items_invalid=tally.items_invalid,
            chunks_acknowledged=tally.chunks_acknowledged,
            chunks_skipped=tally.chunks_skipped,
            requests=tally.requests,
            retries=tally.retries,
            indexing_tokens=tuple(self._tokens[index] for index in sorted(self._tokens)),
            failed_chunks=tuple(sorted(self._failed_chunks, key=lambda chunk: chunk.index)),
            failed_items=tuple(self._failed_items),
            input_exhausted=self._input_exhausted,
            applied=applied,
            stop_reason=self._stop_reason,
            elapsed=self._elapsed(),
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
            chunk = Chunk(index, self._tally.items_read, "replace" if first_replace else "update")
            if self._async_source:
                await self._afill(chunk, self._source, first_replace)  # type: ignore[arg-type]
            else:
                self._fill(chunk, self._source, first_replace)  # type: ignore[arg-type]
            if chunk.count == 0 and not first_replace:
                self._slots.release()  # only invalid items were left (or none at all)
                return
            if chunk.count == 0 and self._tally.items_invalid:
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

    def _fill(self, chunk: Chunk, source: Iterator[Any], member: bool) -> None:
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
        chunk.stop = self._tally.items_read
        self._input_exhausted = exhausted

    async def _afill(self, chunk: Chunk, source: AsyncIterator[Any], member: bool) -> None:
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
        chunk.stop = self._tally.items_read
        self._input_exhausted = exhausted

    def _take(self, chunk: Chunk, batch: list[Any], member: bool) -> None:
        """Check and encode a batch of items read from the input into ``chunk``."""
        start = self._tally.items_read
        self._tally.items_read += len(batch)
        if not batch:
            return
        assert chunk.parts is not None
        encoded = encode_batch(batch, self._mode, member, start, self._invalid)
        if encoded.ids:
            chunk.parts.append(encoded.piece)
            chunk.ids.extend(encoded.ids)
            chunk.count += len(encoded.ids)
            chunk.kind = encoded.kind if chunk.kind in (-1, encoded.kind) else _MIXED

    def _invalid(self, position: int, item: object, error: ValidationError) -> None:
        self._tally.items_invalid += 1
        self._tally.items_failed += 1
        if len(self._failed_items) < _MAX_FAILED_ITEMS:
            field = error.field if error.field.startswith("item") else f"items[{position}].{error.field}"
            self._failed_items.append(FailedItem(position, item, ValidationError(field, error.rule)))

    def _skip_chunk(self, chunk: Chunk) -> None:
        self._tally.items_skipped += chunk.count
        self._tally.chunks_skipped += 1
        chunk.parts = None
        self._slots.release()
        self._emit("skipped", chunk)

    def _too_many_unconfirmed(self, share: int = 1) -> bool:
        """Whether the chunks not yet confirmed applied hold more than ``1/share`` of the window:
        IDs of tracked chunks, or chunks at all."""
        return (
            self._tracker.tracked > self._max_tracked // share
            or len(self._confirmations.unconfirmed) > _MAX_UNCONFIRMED_CHUNKS // share
        )

    def _confirm_ahead(self) -> None:
        """Past half the tracking window, confirm the oldest chunk in the background, so that
        the reader seldom has to wait for a view when the window is full."""
        unconfirmed = self._confirmations.unconfirmed
        if unconfirmed and self._too_many_unconfirmed(2):
            self._confirmations.start(unconfirmed[0])

    async def _make_room(self) -> None:
        """Confirm the oldest acknowledged chunks applied until the tracker is small enough."""
        unconfirmed = self._confirmations.unconfirmed
        while self._too_many_unconfirmed() and unconfirmed:
            try:
                await self._confirmations.applied(unconfirmed[0], self._not_sent)
            except BatchAudiencesError as error:
                self._stop(error, f"waiting for a chunk to be applied failed: {error}")
                return
        if self._tracker.tracked > self._max_tracked and not unconfirmed and self._failed_chunks:
            self._stop(
                NotSentError("too many failed chunks to keep the order of later ones"),
                "too many failed chunks",
            )

    # -- one chunk -------------------------------------------------------------------------

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)
        self._keep_crash(task)

    async def _run_chunk(self, chunk: Chunk, depends: set[int]) -> None:
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
                        await self._confirmations.applied(earlier, self._not_sent)
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

    async def _send(self, chunk: Chunk) -> None:
        parts = chunk.parts
        assert parts is not None
        body = ids_body(self._name, parts)
        chunk.parts = None
        trace = RequestTrace(budget=self._budget)
        tally = self._tally
        tally.in_flight += 1
        tally.items_sent += chunk.count
        try:
            accepted = await self._ops.send_ids(chunk.route, body, trace)
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
            tally.in_flight -= 1
            tally.record(trace)
        if trace.uncertain:
            # A try given up by now may still be applied late: see _indexing.
            chunk.lost_at = self._loop.time()
        chunk.token = accepted.indexing_token
        chunk.acked = True
        if chunk.token is not None:
            self._tokens[chunk.index] = chunk.token
        tally.items_accepted += chunk.count
        tally.chunks_acknowledged += 1
        self._confirmations.acknowledged(chunk)
        self._emit("acknowledged", chunk)
        if self._ops.has_hooks:
            self._ops.chunk_acknowledged(self._name, chunk.route, chunk.index, chunk.count, chunk.token)

    def _fail(self, chunk: Chunk, error: BatchAudiencesError) -> None:
        chunk.error = error
        self._tally.items_failed += chunk.count
        self._failed_chunks.append(
            FailedChunk(chunk.index, chunk.start, chunk.stop, chunk.count, error, chunk.uncertain)
        )
        self._emit("failed", chunk, error)
        if self._stop_error is not None:
            return
        if chunk.route == "replace":
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

    def _confirmed(self, chunk: Chunk) -> None:
        """``chunk`` is applied: later chunks need not wait for it any more."""
        self._tracker.release(chunk.index)
        self._chunks.pop(chunk.index, None)
        self._tokens.pop(chunk.index, None)  # kept only while unconfirmed: see UploadReport

    async def _settle(self) -> None:
        try:
            await self._confirmations.settle()
        except BatchAudiencesError as error:
            self._stop(error, f"waiting for earlier writes to be applied failed: {error}")

    # -- progress ----------------------------------------------------------------------------

    def _emit(
        self, kind: ProgressKind, chunk: Chunk | None = None, error: BatchAudiencesError | None = None
    ) -> None:
        if chunk is None:
            self._publish(kind, error=error)
        else:
            self._publish(
                kind, chunk_index=chunk.index, chunk_start=chunk.start, chunk_count=chunk.count,
                token=chunk.token, error=error,
            )


async def run_upload(
    ops: Operations,
    name: str,
    items: object,
    *,
    mode: UploadMode,
    chunk_size: int,
    concurrency: int,
    wait: bool,
    on_progress: ProgressCallback | None,
    retry_budget: int | None,
    deadline: float | None,
    skip_chunks: Collection[int],
    max_tracked_ids: int = MIN_TRACKED_IDS,
    late_write_grace: float = LATE_WRITE_GRACE,
) -> UploadReport:
    """Check every argument (nothing is sent if one is wrong), then run the upload.

    ``max_tracked_ids``: how many IDs of acknowledged chunks are kept to order later chunks
    before the oldest chunk is confirmed applied (see :data:`MIN_TRACKED_IDS`); a small value
    makes the engine confirm as it goes (tests use it to exercise that path).
    """
    check_name(name)
    if mode not in MODES:
        raise ValidationError("mode", f"must be one of {', '.join(repr(m) for m in MODES)}, got {mode!r}")
    chunk_size = _check_chunk_size(chunk_size)
    concurrency = check_concurrency(concurrency)
    if not isinstance(wait, bool):
        raise ValidationError("wait", f"must be True or False, got {wait!r}")
    on_progress, retry_budget, deadline = check_call_limits(on_progress, retry_budget, deadline)
    skip = _check_skip_chunks(skip_chunks, mode)
    grace = _check_grace(late_write_grace)
    source = open_source(items, "items")
    upload = _Upload(
        ops, name, source, mode=mode, chunk_size=chunk_size, concurrency=concurrency,
        wait=wait, on_progress=on_progress, retry_budget=retry_budget, deadline=deadline,
        skip_chunks=skip, max_tracked_ids=max_tracked_ids, late_write_grace=grace,
    )
    return await upload.run()
