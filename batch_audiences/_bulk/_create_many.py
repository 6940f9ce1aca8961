"""The bulk engine behind ``create_many``: many creates, paced, each with a definite outcome.

Items are read lazily (at most ``concurrency`` creates in flight), checked before anything is
sent (an invalid item fails with its :class:`ValidationError` and no request), and created
concurrently through the client's shared rate limiter. A create whose connection broke after it
was sent is retried and settled by the operations layer from the state and the audience's
creation time: no audience is created twice, none is reported failed when this call created it,
and none made by someone else is reported created; a create that cannot be told is reported
uncertain. A name that appears twice in the input is created once; the later occurrence gets
the outcome an existing audience gets.

One bad item never stops the others. What would fail every later create as well (bad
credentials, throttling or unavailability that outlasted the retry budget, the deadline) stops
reading the input; creates in flight finish, and the report says where it stopped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Final

from .._api import Operations
from .._errors import (
    AudienceExistsError,
    AuthenticationError,
    BatchAudiencesError,
    ClientClosedError,
    RateLimitError,
    ServiceUnavailableError,
    ThrottledError,
    TransportError,
    UncertainOutcomeError,
    ValidationError,
)
from .._models import NewAudience
from .._transport import RequestTrace
from ._call import BulkCall, ProgressCallback, Source, check_call_limits, check_concurrency, open_source
from ._reports import (
    BulkReport,
    CreatedAudience,
    FailedItem,
    IfExists,
    ProgressKind,
    SkippedAudience,
    UncertainAudience,
)

__all__ = ["IF_EXISTS", "run_create_many"]

IF_EXISTS: Final = ("error", "skip")
_KEYS: Final = frozenset({"name", "display_name", "type"})
_STOPPING_ERRORS: Final = (
    AuthenticationError,
    ClientClosedError,
    RateLimitError,
    ServiceUnavailableError,
    TransportError,
    ThrottledError,
)


def to_new_audience(item: object, position: int) -> NewAudience:
    """``item`` as a :class:`NewAudience`: one already, a mapping with its keys, or a bare name."""
    try:
        if isinstance(item, NewAudience):
            return item
        if isinstance(item, str):
            return NewAudience(item)
        if isinstance(item, Mapping):
            unknown = [key for key in item if key not in _KEYS]
            if unknown:
                raise ValidationError(
                    "audience", f"unknown keys {', '.join(map(repr, unknown))}; the keys are "
                    "'name', 'display_name' and 'type'",
                )
            if "name" not in item:
                raise ValidationError("name", "is required")
            return NewAudience(**item)
    except ValidationError as error:
        raise ValidationError(f"audiences[{position}].{error.field}", error.rule) from None
    raise ValidationError(
        f"audiences[{position}]",
        f"must be a NewAudience, a mapping with its keys, or a name; got {type(item).__name__}",
    )


class _CreateMany(BulkCall):
    """One ``create_many`` call; see the module docstring."""

    def __init__(
        self,
        ops: Operations,
        source: Source,
        *,
        concurrency: int,
        if_exists: IfExists,
        on_progress: ProgressCallback | None,
        retry_budget: int | None,
        deadline: float | None,
    ) -> None:
        super().__init__(
            ops, source, concurrency=concurrency, on_progress=on_progress, retry_budget=retry_budget,
            deadline=deadline,
        )
        self._skip_existing = if_exists == "skip"
        self._tasks: set[asyncio.Task[None]] = set()
        self._seen: dict[str, int] = {}
        self._succeeded: list[CreatedAudience] = []
        self._skipped: list[SkippedAudience] = []
        self._uncertain: list[UncertainAudience] = []
        self._failed: list[FailedItem] = []

    async def run(self) -> BulkReport:
        timer = self._start_deadline_timer()
        try:
            input_error = await self._read_input()
            while self._tasks:
                await asyncio.wait(list(self._tasks))
        finally:
            if timer is not None:
                timer.cancel()
            await self._cancel(self._tasks)
        if input_error is not None:
            raise input_error
        self._raise_crash()
        return self._finish(BulkReport(
            succeeded=tuple(sorted(self._succeeded, key=lambda item: item.position)),
            skipped=tuple(sorted(self._skipped, key=lambda item: item.position)),
            failed=tuple(sorted(self._failed, key=lambda item: item.position)),
            items_read=self._tally.items_read,
            requests=self._tally.requests,
            retries=self._tally.retries,
            input_exhausted=self._input_exhausted,
            stop_reason=self._stop_reason,
            elapsed=self._elapsed(),
            uncertain=tuple(sorted(self._uncertain, key=lambda item: item.position)),
        ))

    async def _next(self) -> tuple[bool, object]:
        if self._async_source:
            try:
                return True, await self._source.__anext__()  # type: ignore[union-attr]
            except StopAsyncIteration:
                return False, None
        try:
            return True, next(self._source)  # type: ignore[arg-type]
        except StopIteration:
            return False, None

    async def _read(self) -> None:
        while self._stop_error is None:
            await self._slots.acquire()
            while self._stop_error is None:
                more, item = await self._next()
                if not more:
                    self._input_exhausted = True
                    self._slots.release()
                    return
                position = self._tally.items_read
                self._tally.items_read += 1
                audience = self._check(position, item)
                if audience is not None:
                    task = asyncio.ensure_future(self._create(position, audience))
                    self._tasks.add(task)
                    task.add_done_callback(self._task_done)
                    break  # the slot now belongs to the task
            else:
                self._slots.release()
                return

    def _check(self, position: int, item: object) -> NewAudience | None:
        """The item to create, or None when its outcome is already decided (no request)."""
        try:
            audience = to_new_audience(item, position)
        except ValidationError as error:
            self._fail(position, item, error)
            return None
        first = self._seen.setdefault(audience.name, position)
        if first != position:
            duplicate = ValidationError(
                f"audiences[{position}].name", f"{audience.name!r} already appears at position {first}"
            )
            if self._skip_existing:
                self._skipped.append(SkippedAudience(position, audience, duplicate))
                self._tally.items_skipped += 1
                self._emit("skipped", position)
            else:
                self._fail(position, audience, duplicate)
            return None
        return audience

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._keep_crash(task)

    async def _create(self, position: int, audience: NewAudience) -> None:
        trace = RequestTrace(budget=self._budget)
        tally = self._tally
        tally.in_flight += 1
        try:
            try:
                accepted = await self._ops.create(
                    audience.name, audience.type, audience.display_name, trace
                )
            finally:
                tally.in_flight -= 1
                tally.record(trace)
        except AudienceExistsError as error:
            if self._skip_existing:
                self._skipped.append(SkippedAudience(position, audience, error))
                tally.items_skipped += 1
                self._emit("skipped", position)
            else:
                self._fail(position, audience, error)
        except UncertainOutcomeError as error:
            self._uncertain.append(UncertainAudience(position, audience, error))
            tally.items_uncertain += 1
            self._emit("uncertain", position, error=error)
        except BatchAudiencesError as error:
            self._fail(position, audience, error)
            if isinstance(error, _STOPPING_ERRORS):
                self._stop(error, self._stopping_reason(error))
        else:
            self._succeeded.append(
                CreatedAudience(position, audience, accepted.indexing_token, accepted.confirmation)
            )
            tally.items_accepted += 1
            tally.chunks_acknowledged += 1
            self._emit("created", position, token=accepted.indexing_token)
        finally:
            self._slots.release()

    def _fail(self, position: int, item: object, error: BatchAudiencesError) -> None:
        self._failed.append(FailedItem(position, item, error))
        self._tally.items_failed += 1
        self._emit("failed", position, error=error)

    def _emit(
        self,
        kind: ProgressKind,
        position: int | None = None,
        *,
        token: str | None = None,
        error: BatchAudiencesError | None = None,
    ) -> None:
        self._publish(
            kind, chunk_index=position, chunk_start=position,
            chunk_count=None if position is None else 1, token=token, error=error,
        )


async def run_create_many(
    ops: Operations,
    audiences: object,
    *,
    concurrency: int,
    if_exists: IfExists,
    on_progress: ProgressCallback | None,
    retry_budget: int | None,
    deadline: float | None,
) -> BulkReport:
    """Check every argument (nothing is sent if one is wrong), then create the audiences."""
    concurrency = check_concurrency(concurrency)
    if if_exists not in IF_EXISTS:
        raise ValidationError("if_exists", f"must be 'error' or 'skip', got {if_exists!r}")
    on_progress, retry_budget, deadline = check_call_limits(on_progress, retry_budget, deadline)
    source = open_source(audiences, "audiences")
    engine = _CreateMany(
        ops, source, concurrency=concurrency, if_exists=if_exists, on_progress=on_progress,
        retry_budget=retry_budget, deadline=deadline,
    )
    return await engine.run()
