"""Deadlines of the exchanges in flight: one timer for all of them, not one per request.

aiohttp enforces a ``ClientTimeout(total=...)`` with a timer handle of its own per request,
plus a timer context entered and left at every step of the exchange (connect, write, each
read), each time looking up the current task: about a twentieth of what a small request costs
the client's process. The requests of a client share one timeout, so their deadlines come in
order; :class:`Deadlines` keeps them in a dict and one loop timer, set at the earliest deadline
that may still matter, cancels the tasks whose time is up. A request costs a dict entry.

The cancellation is told apart from any other by :meth:`Deadlines.expired` (the timer's own
mark), as ``asyncio.timeout`` does, and withdrawn with ``Task.uncancel()`` where Python has it
(3.11+), so that a caller's own ``asyncio.timeout`` or ``TaskGroup`` still counts right.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["Deadlines"]


class Deadlines:
    """The deadlines of the tasks in one loop that await an exchange.

    >>> async def demo() -> list[str]:
    ...     deadlines = Deadlines(asyncio.get_running_loop())
    ...     task = asyncio.current_task()
    ...     assert task is not None
    ...     deadlines.enter(task, 0.01)
    ...     seen = []
    ...     try:
    ...         await asyncio.sleep(1)
    ...     except asyncio.CancelledError:
    ...         seen.append("expired" if deadlines.expired(task) else "cancelled by someone else")
    ...         deadlines.withdraw(task)
    ...     finally:
    ...         deadlines.leave(task)
    ...     return seen
    >>> asyncio.run(demo())
    ['expired']
    """

    __slots__ = ("_expired", "_handle", "_inflight", "_when", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._inflight: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._handle: asyncio.TimerHandle | None = None
        self._when = 0.0

    def __len__(self) -> int:
        return len(self._inflight)

    def enter(self, task: asyncio.Task[Any], timeout: float) -> None:
        """``task`` awaits an exchange that must be over within ``timeout`` seconds."""
        deadline = self.loop.time() + timeout
        self._inflight[task] = deadline
        # The timer stays where it is unless this deadline comes first: with one timeout for
        # every request, that is only when the timer is not set.
        if self._handle is None or deadline < self._when:
            self._arm(deadline)

    def leave(self, task: asyncio.Task[Any]) -> None:
        """``task`` is done with its exchange (whatever the outcome)."""
        del self._inflight[task]
        if self._expired:
            self._expired.discard(task)
        # The timer stays set even when nothing is left in flight: cancelling it here and
        # setting it again at the next request would be a timer per request once more. When
        # it fires with nothing to watch, it is not set again.

    def close(self) -> None:
        """Stop the timer (the exchanges still in flight end on their own)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def expired(self, task: asyncio.Task[Any]) -> bool:
        """Whether ``task`` was cancelled here, its deadline passed."""
        return task in self._expired

    def withdraw(self, task: asyncio.Task[Any]) -> bool:
        """Take back the cancellation of an expired ``task``; False when a cancellation from
        elsewhere is pending too (Python 3.11+ tells; 3.10 cannot, and says True)."""
        uncancel = getattr(task, "uncancel", None)
        return uncancel is None or uncancel() == 0

    def _arm(self, when: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._when = when
        self._handle = self.loop.call_at(when, self._check)

    def _check(self) -> None:
        self._handle = None
        now = self.loop.time()
        soonest: float | None = None
        for task, deadline in self._inflight.items():
            if deadline <= now:
                if task not in self._expired:
                    self._expired.add(task)
                    task.cancel()  # thrown into the task at its next step, not here
            elif soonest is None or deadline < soonest:
                soonest = deadline
        if soonest is not None:
            self._arm(soonest)
