"""Confirming that acknowledged chunks of an upload are applied (Batch indexes writes later).

Each chunk gets at most one polling task, shared by everyone who waits for it (a later chunk
that must not overtake it, the reader making room); ``wait=True`` at the end settles them all
with one view of the audience's last write (see :meth:`Confirmations.wait_all`). The polling itself
is the operations layer's (:meth:`Operations.wait_applied`), with the one schedule and the
call's retry budget.

A chunk acknowledged after a try that timed out or broke (``Chunk.lost_at``) may have a copy
still on its way: the server can apply that try late, after the chunks that followed. Such a
chunk counts as confirmed only ``late_write_grace`` seconds after the try was given up, so a
chunk ordered after it is sent once the late copy, if it lands within the grace, has landed; and
``wait=True`` returns only after that too.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Iterable
from typing import Final

from .._api import BULK_POLL, Operations
from .._budget import RetryBudget
from .._errors import BatchAudiencesError
from .._transport import RequestTrace
from ._call import Tally
from ._chunk import Chunk

__all__ = ["Confirmations"]

# How long to wait for one write to be applied before giving up (bounded by the deadline too).
_APPLY_TIMEOUT: Final = 300.0


def _retrieve(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()


class Confirmations:
    """The acknowledged chunks of one upload not yet confirmed applied, oldest first."""

    def __init__(
        self,
        ops: Operations,
        name: str,
        budget: RetryBudget,
        tally: Tally,
        on_confirmed: Callable[[Chunk], None],
        late_write_grace: float = 0.0,
    ) -> None:
        self._ops = ops
        self._grace = late_write_grace
        self._name = name
        self._budget = budget
        self._tally = tally
        self._on_confirmed = on_confirmed
        self.unconfirmed: deque[Chunk] = deque()

    def acknowledged(self, chunk: Chunk) -> None:
        """``chunk`` was accepted by the server; it is now to be confirmed."""
        self.unconfirmed.append(chunk)

    async def applied(self, chunk: Chunk, not_sent: Callable[[], BatchAudiencesError]) -> None:
        """Wait until ``chunk`` is applied; raise ``not_sent()`` if its poll was cancelled (the
        call stopped), or the poll's error."""
        if chunk.confirmed:
            return
        task = self.start(chunk)
        # asyncio.wait, not a plain await: a waiter being cancelled must not cancel the poll
        # that other chunks share.
        await asyncio.wait((task,))
        if task.cancelled():
            raise not_sent()
        task.result()

    def start(self, chunk: Chunk) -> asyncio.Task[None]:
        """The one task that polls ``chunk`` until applied, shared by everyone waiting for it."""
        if chunk.confirm is None:
            chunk.confirm = asyncio.ensure_future(self._confirm(chunk))
            # Its error, if any, is raised to whoever waits for it; a task started ahead that
            # nobody waits for must not be reported as an exception never retrieved.
            chunk.confirm.add_done_callback(_retrieve)
        return chunk.confirm

    async def _confirm(self, chunk: Chunk) -> None:
        await self._poll(chunk.token)
        await self._grace_of((chunk,))
        self._mark_applied(chunk)

    async def _grace_of(self, chunks: Iterable[Chunk]) -> None:
        """Wait until every try of ``chunks`` that may still be applied late has had its grace."""
        lost = [chunk.lost_at for chunk in chunks if chunk.lost_at is not None]
        if lost:
            loop = asyncio.get_running_loop()
            await asyncio.sleep(max(0.0, max(lost) + self._grace - loop.time()))

    def _mark_applied(self, chunk: Chunk) -> None:
        if chunk.confirmed:
            return
        chunk.confirmed = True
        with contextlib.suppress(ValueError):
            self.unconfirmed.remove(chunk)
        self._tally.chunks_applied += 1
        self._on_confirmed(chunk)

    async def settle(self) -> None:
        """Wait until the audience's last write (whatever it was) is applied."""
        await self._poll(None)

    async def _poll(self, token: str | None, record: Callable[[RequestTrace], object] | None = None) -> None:
        await self._ops.wait_applied(
            self._name, token, timeout=_APPLY_TIMEOUT, schedule=BULK_POLL, budget=self._budget,
            record=record or self._tally.record,
        )

    async def wait_all(self, progress: Callable[[], object]) -> bool:
        """``wait=True``: confirm every acknowledged chunk applied; False if that could not be done.

        Not a walk through the chunks: one view without a token shows the state of the
        audience's last write, which is at least as late as every chunk acknowledged, so once it
        is applied they all are. That view is polled on the one schedule, through the client's
        shared rate limiter, so the wait costs about the indexing delay plus a few views however
        many chunks there are. ``progress`` is called before, after each view, and at the end.
        """
        pending = list(self.unconfirmed)
        if not pending:
            return True
        progress()

        def record(trace: RequestTrace) -> None:
            self._tally.record(trace)
            progress()

        try:
            await self._poll(None, record)
        except BatchAudiencesError:
            return False
        await self._grace_of(pending)
        for chunk in pending:
            self._mark_applied(chunk)
        progress()
        return True
