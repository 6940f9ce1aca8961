"""The retry budget of one bulk call: how many retries its requests may still make, and the
time after which they make none (kept apart from the rate limiter: a budget belongs to a call,
the limiter to a client)."""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["RetryBudget"]


class RetryBudget:
    """The retries one bulk call may still make, and the time after which it makes none.

    ``retries=None`` leaves each request its own limit (the client's ``max_retries``), as for a
    single call; an integer is shared by every request of the call, and then replaces the
    per-request limit: a request keeps retrying while the shared budget lasts. ``deadline`` is a
    clock time (``time.monotonic`` by default) after which no retry is allowed.
    """

    def __init__(
        self,
        retries: int | None = None,
        deadline: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.retries = retries
        self.deadline = deadline
        self._clock = clock
        #: Retries granted so far.
        self.spent = 0
        #: Set once a retry was refused because the shared budget was spent.
        self.exhausted = False
        #: Requests of the call the server accepted so far. While it grows, a 429 is the
        #: server's pace being shared by the call's requests, and the limiter slows the call
        #: down: such a 429 does not count against the refused request's own limit (see
        #: ``RequestTrace.may_retry``). The deadline and a shared ``retries`` still bound it.
        self.accepted = 0

    @property
    def expired(self) -> bool:
        """Whether the deadline has passed."""
        return self.deadline is not None and self._clock() >= self.deadline

    def remaining_time(self) -> float | None:
        """Seconds left before the deadline (``None``: no deadline; never negative)."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - self._clock())

    def allow(self, attempts: int, max_retries: int, wait: float | None = None) -> bool:
        """Whether a request that made ``attempts`` attempts may retry (after ``wait`` seconds).

        Counts the retry when it is granted.
        """
        if self.deadline is not None and self._clock() + (wait or 0.0) >= self.deadline:
            return False
        if self.retries is None:
            granted = attempts <= max_retries
        else:
            granted = self.spent < self.retries
            if not granted:
                self.exhausted = True
        if granted:
            self.spent += 1
        return granted
