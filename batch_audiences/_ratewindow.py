"""Counts of recent events (a rate limiter's sends) in buckets of a tenth of a second.

The limiter asks, when a 429 comes, at what rate the client was sending over the last couple of
seconds; counting each send into the bucket of its tenth of a second makes that question a sum
of twenty numbers, and the bookkeeping of a send one addition, whatever the rate.
"""

from __future__ import annotations

import math

__all__ = ["WINDOW", "Window"]

# How far back events are counted, in how many buckets.
WINDOW = 2.0
_BUCKETS = 20
_BUCKETS_PER_SECOND = _BUCKETS / WINDOW


class Window:
    """Events (sends, successes) of about the last ``WINDOW`` seconds, counted per bucket of
    ``WINDOW / _BUCKETS`` seconds: O(1) per event, with no object per event.

    A bucket remembers its slot number (``int(t * _BUCKETS_PER_SECOND)``), its count and the time
    of its first event; the window, seen from ``now``, is the buckets of the last ``_BUCKETS``
    slots, so it reaches back between ``WINDOW - 1/_BUCKETS_PER_SECOND`` and ``WINDOW``
    seconds. A clock going backwards (a test's) counts into the current bucket.
    """

    __slots__ = ("_current", "_firsts", "_slots", "counts", "edge", "index", "last")

    def __init__(self) -> None:
        #: Events per bucket; ``counts[index]`` is the current bucket's.
        self.counts = [0] * _BUCKETS
        self.index = 0
        #: When the current bucket ends: an event at or past it opens the next one.
        self.edge = -math.inf
        #: Time of the latest event.
        self.last = -math.inf
        self._firsts = [0.0] * _BUCKETS
        self._slots = [-1 - _BUCKETS] * _BUCKETS  # far enough back to be outside any window
        self._current = -1 - _BUCKETS

    def add(self, now: float) -> None:
        """Count one event at ``now`` (inlined by the limiter's hot paths)."""
        if now >= self.edge:
            self.open(now)
        self.counts[self.index] += 1
        self.last = now

    def open(self, now: float) -> None:
        """Start the bucket that ``now`` falls in."""
        # Past the edge always means a new slot, whatever the rounding of the product below.
        slot = max(int(now * _BUCKETS_PER_SECOND), self._current + 1)
        index = self.index = slot % _BUCKETS
        self._current = self._slots[index] = slot
        self.counts[index] = 0
        self._firsts[index] = now
        self.edge = (slot + 1) / _BUCKETS_PER_SECOND

    def span(self, now: float) -> tuple[int, float]:
        """How many events are in the window seen from ``now``, and the time of the first one."""
        oldest = int(now * _BUCKETS_PER_SECOND) - _BUCKETS
        count, first = 0, math.inf
        for index, slot in enumerate(self._slots):
            if slot > oldest and self.counts[index]:
                count += self.counts[index]
                first = min(first, self._firsts[index])
        return count, first
