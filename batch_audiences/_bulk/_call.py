"""What every bulk call shares: argument checks, opening the input, the clock, the retry
budget, the stop state, and the :class:`Tally` that progress events and the report both read."""

from __future__ import annotations

import asyncio
import inspect
import math
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from .._budget import RetryBudget
from .._errors import BatchAudiencesError, ValidationError
from .._transport import RequestTrace
from ._errors import DeadlineExceededError, NotSentError
from ._reports import ProgressEvent, ProgressKind

if TYPE_CHECKING:
    from .._api import Operations

__all__ = [
    "BulkCall",
    "ProgressCallback",
    "Source",
    "Tally",
    "check_call_limits",
    "check_concurrency",
    "is_int",
    "open_source",
]

R = TypeVar("R")

ProgressCallback = Callable[[ProgressEvent], object]
#: An opened input: a plain iterator (read on the loop, synchronously) or an async one.
Source = Iterator[Any] | AsyncIterator[Any]


def is_int(value: object) -> bool:
    """An ``int`` that is not a ``bool``."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_concurrency(value: object) -> int:
    """``concurrency``: a positive integer."""
    if not is_int(value) or value < 1:  # type: ignore[operator]
        raise ValidationError("concurrency", f"must be a positive integer, got {value!r}")
    return value  # type: ignore[return-value]


def _check_retry_budget(value: object) -> int | None:
    if value is not None and (not is_int(value) or value < 0):  # type: ignore[operator]
        raise ValidationError("retry_budget", f"must be None or an integer >= 0, got {value!r}")
    return value  # type: ignore[return-value]


def _check_deadline(value: object) -> float | None:
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


def _check_callback(value: object) -> ProgressCallback | None:
    if value is not None and not callable(value):
        raise ValidationError("on_progress", f"must be a callable or None, got {type(value).__name__}")
    if inspect.iscoroutinefunction(value) or inspect.iscoroutinefunction(type(value).__call__):
        raise ValidationError(
            "on_progress", "must be a plain function, not async: it is called on the event loop"
        )
    return value


def check_call_limits(
    on_progress: object, retry_budget: object, deadline: object
) -> tuple[ProgressCallback | None, int | None, float | None]:
    """``on_progress``, ``retry_budget`` and ``deadline``, checked in that order."""
    return _check_callback(on_progress), _check_retry_budget(retry_budget), _check_deadline(deadline)


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


@attrs.define
class Tally:
    """The running counts of one bulk call: the single source of its progress events and report.

    For ``create_many`` a "chunk" is one audience.
    """

    items_read: int = 0
    items_sent: int = 0
    items_accepted: int = 0
    items_skipped: int = 0
    items_invalid: int = 0
    items_failed: int = 0
    items_uncertain: int = 0
    chunks_acknowledged: int = 0
    chunks_skipped: int = 0
    chunks_applied: int = 0
    requests: int = 0
    retries: int = 0
    in_flight: int = 0

    def record(self, trace: RequestTrace) -> None:
        """Count the HTTP attempts of one logical request."""
        self.requests += trace.attempts
        self.retries += trace.retries

    def event(
        self,
        kind: ProgressKind,
        *,
        rate: float | None,
        elapsed: float,
        chunk_index: int | None = None,
        chunk_start: int | None = None,
        chunk_count: int | None = None,
        token: str | None = None,
        error: BatchAudiencesError | None = None,
    ) -> ProgressEvent:
        """A :class:`ProgressEvent` of the counts as they are now."""
        return ProgressEvent(
            kind=kind,
            items_read=self.items_read,
            items_acknowledged=self.items_accepted,
            items_skipped=self.items_skipped,
            items_failed=self.items_failed,
            chunks_acknowledged=self.chunks_acknowledged,
            chunks_applied=self.chunks_applied,
            requests_in_flight=self.in_flight,
            requests=self.requests,
            retries=self.retries,
            rate=rate,
            elapsed=elapsed,
            chunk_index=chunk_index,
            chunk_start=chunk_start,
            chunk_count=chunk_count,
            token=token,
            error=error,
            items_uncertain=self.items_uncertain,
        )


class BulkCall:
    """What every bulk call holds: its input, clock, retry budget, slots, tally and stop state.

    Subclasses read ``_source`` (an async one if ``_async_source``), hold one of ``_slots`` per
    request in flight, and end early through :meth:`_stop` (first error and reason win).
    """

    def __init__(
        self,
        ops: Operations,
        source: Source,
        *,
        concurrency: int,
        on_progress: ProgressCallback | None,
        retry_budget: int | None,
        deadline: float | None,
    ) -> None:
        self._ops = ops
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
        self._tally = Tally()
        self._input_exhausted = False
        self._stop_error: BatchAudiencesError | None = None
        self._stop_reason: str | None = None
        # The first error of the progress callback, or of a task (a bug): raised at the end.
        self._crash: BaseException | None = None

    def _elapsed(self) -> float:
        return self._loop.time() - self._started

    def _start_deadline_timer(self) -> asyncio.TimerHandle | None:
        """Arm :meth:`_on_deadline` for the call's deadline, if it has one (cancel it when done)."""
        if self._budget.deadline is None:
            return None
        return self._loop.call_at(self._budget.deadline, self._on_deadline)

    def _on_deadline(self) -> None:
        assert self._deadline is not None
        self._stop(DeadlineExceededError(self._deadline), f"the deadline of {self._deadline:g}s passed")

    async def _read(self) -> None:
        raise NotImplementedError

    async def _read_input(self) -> BaseException | None:
        """Read the whole input (:meth:`_read`). An error of the input itself stops the call and
        is returned, to be raised once what was sent is finished."""
        try:
            await self._read()
        except Exception as error:
            self._stop(NotSentError(f"reading the input failed: {error}"), "the input failed")
            return error
        return None

    @staticmethod
    async def _cancel(tasks: Iterable[asyncio.Task[Any]]) -> None:
        """Cancel the tasks not done yet, and wait until they have ended."""
        pending = [task for task in tasks if not task.done()]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    def _finish(self, report: R) -> R:
        """Hand back ``report`` after the ``finished`` event, unless the call crashed (before or
        in that event)."""
        self._raise_crash()
        self._publish("finished")
        self._raise_crash()
        return report

    def _publish(
        self,
        kind: ProgressKind,
        *,
        chunk_index: int | None = None,
        chunk_start: int | None = None,
        chunk_count: int | None = None,
        token: str | None = None,
        error: BatchAudiencesError | None = None,
    ) -> None:
        """Hand the callback a progress event of the counts as they are now. A callback that
        raises stops the call; its error is raised at the end (see :meth:`_raise_crash`)."""
        callback = self._on_progress
        if callback is None or self._crash is not None:
            return
        event = self._tally.event(
            kind, rate=self._ops.limiter.rate, elapsed=self._elapsed(), chunk_index=chunk_index,
            chunk_start=chunk_start, chunk_count=chunk_count, token=token, error=error,
        )
        try:
            callback(event)
        except Exception as exc:
            self._crash = exc
            self._stop(NotSentError(f"the progress callback raised {exc!r}"), "the progress callback raised")

    def _keep_crash(self, task: asyncio.Task[None]) -> None:
        """A finished task's error: its own errors are handled inside, so any is a bug, raised at
        the end."""
        if not task.cancelled() and task.exception() is not None and self._crash is None:
            self._crash = task.exception()

    def _raise_crash(self) -> None:
        if self._crash is not None:
            raise self._crash

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
