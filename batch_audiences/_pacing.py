"""The adaptive rate limiter that every request of one client goes through.

Batch publishes no rate figure for the audience routes, so the limiter starts unlimited (or at
``max_rate``) and learns from the server: a 429 cuts the rate for every request of the client, not
just the one that got it (multiplicative decrease to what the server was actually accepting), a
``Retry-After`` pauses everyone, and a run of successes probes upward again, slowly (a few per
cent a second), so that 429s stay rare once the rate has converged.

Requests reserve a start time rather than queueing on a lock: ``acquire`` computes the slot and
sleeps with ``asyncio.sleep``, so the event loop is never blocked and the order of arrival is the
order of departure.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

from ._errors import ThrottledError

__all__ = ["RateLimiter"]

# How far back successes are counted to estimate what the server accepts.
_WINDOW = 2.0
# Relative rate increase per second of throttle-free running, once the limit has been measured…
_PROBE_PER_SECOND = 0.02
# …and while it has not (the rate was cut on a guess): find the limit fast, as TCP's slow start.
_SLOW_START_PER_SECOND = 1.0
# The rate never falls below this, so a single wrong signal cannot stall a job for minutes.
_MIN_RATE = 0.2


class RateLimiter:
    """Paces one client's requests; adapts to 429s.

    ``max_rate`` is a hard ceiling in requests per second (``None``: no ceiling). ``rate`` is
    the pace in force now (``None`` while no throttling has been seen and no ceiling is set).
    """

    def __init__(
        self,
        max_rate: float | None = None,
        *,
        fail_fast: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_rate = max_rate
        self.fail_fast = fail_fast
        self._clock = clock
        self._rate: float | None = max_rate
        self._next_slot = 0.0
        self._paused_until = 0.0
        self._last_decrease = -1.0
        self._last_probe = clock()
        self._successes: deque[float] = deque()
        self._probe = _PROBE_PER_SECOND
        self.throttles = 0

    @property
    def rate(self) -> float | None:
        """Requests per second in force now, or ``None`` when unlimited."""
        return self._rate

    def delay(self) -> float:
        """How long a request starting now would wait (0 when it may go at once)."""
        now = self._clock()
        return max(0.0, self._next_slot - now, self._paused_until - now)

    async def acquire(self) -> float:
        """Wait for this request's turn and return the time it was sent at.

        Raises :class:`ThrottledError` instead of waiting when the limiter is fail-fast.
        """
        now = self._clock()
        start = max(now, self._next_slot, self._paused_until)
        if start > now and self.fail_fast:
            raise ThrottledError(start - now)
        if self._rate is not None:
            self._next_slot = start + 1.0 / self._rate
        if start > now:
            await asyncio.sleep(start - now)
        return start

    def on_success(self) -> None:
        """Count an accepted request, and probe upward when the rate is capped by throttling."""
        now = self._clock()
        self._successes.append(now)
        while self._successes and self._successes[0] < now - _WINDOW:
            self._successes.popleft()
        if self._rate is None:
            return
        elapsed = now - self._last_probe
        self._last_probe = now
        if self._rate < (self.max_rate or float("inf")):
            self._rate *= 1.0 + self._probe * min(elapsed, 1.0)
            if self.max_rate is not None:
                self._rate = min(self._rate, self.max_rate)

    def on_throttle(self, sent_at: float, retry_after: float | None) -> None:
        """React to a 429 for a request sent at ``sent_at``.

        Requests sent before the last decrease were paced at the old rate, so their 429s say
        nothing new: they are honoured (``Retry-After``) but do not cut the rate again.
        """
        now = self._clock()
        self.throttles += 1
        if retry_after is not None and retry_after > 0:
            self._paused_until = max(self._paused_until, now + retry_after)
        if sent_at < self._last_decrease:
            return
        self._last_decrease = now
        accepted = self._accepted_rate(now)
        base = self._rate if self._rate is not None else accepted
        self._probe = _PROBE_PER_SECOND if accepted is not None else _SLOW_START_PER_SECOND
        if base is None:
            base = 1.0
        new_rate = base / 2.0
        if accepted is not None:
            # What the server just accepted is the best guess of its limit; stay a bit under it.
            new_rate = max(new_rate, 0.9 * accepted)
            new_rate = min(new_rate, base)
        new_rate = max(new_rate, _MIN_RATE)
        self._rate = min(new_rate, self.max_rate) if self.max_rate is not None else new_rate
        self._last_probe = now

    def _accepted_rate(self, now: float) -> float | None:
        while self._successes and self._successes[0] < now - _WINDOW:
            self._successes.popleft()
        if len(self._successes) < 2:
            return None
        span = max(now - self._successes[0], 1e-3)
        return len(self._successes) / span
