"""The emulator's rate limit: a token bucket, as API gateways commonly implement one.

The bucket holds at most ``burst`` tokens and gains ``rate`` tokens per second; a request takes
one, or is refused with a 429 when less than one is left. ``burst=1`` makes requests have to be
spaced ``1/rate`` apart (nothing is saved up while idle); ``burst=rate`` lets one second's worth
go at once after a quiet second. A refused request takes no token.

What a refusal says is configurable, since Batch documents none of it: ``retry_after`` is
``"exact"`` (the fractional seconds until a token is back, handy for fast tests), ``"seconds"``
(the same, rounded up to whole seconds, as HTTP's ``Retry-After`` is written by real servers) or
``"off"``; ``headers`` adds ``X-RateLimit-Limit`` (the rate), ``-Remaining`` (whole tokens left)
and ``-Reset`` (epoch seconds when a token is back) to every answer.

Not thread-safe by itself: the fault injector calls it under its lock.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Literal, TypeAlias

RetryAfterMode: TypeAlias = Literal["exact", "seconds", "off"]
RETRY_AFTER_MODES: tuple[RetryAfterMode, ...] = ("exact", "seconds", "off")
# Float noise must not turn an on-time request away.
_EPSILON = 1e-9


def format_seconds(seconds: float) -> str:
    """A number of seconds without trailing zeros: ``1.0`` -> ``"1"``, ``0.05`` -> ``"0.05"``."""
    text = f"{seconds:.6f}".rstrip("0").rstrip(".")
    return text or "0"


def check_rate(name: str, value: float | None) -> float | None:
    """``value`` as a float, or ValueError unless it is a positive number (or None)."""
    if value is None:
        return None
    if isinstance(value, bool) or not (
        isinstance(value, (int, float)) and math.isfinite(value) and value > 0
    ):
        raise ValueError(f"{name} must be a positive number of requests per second or None, got {value!r}")
    return float(value)


def check_burst(value: float) -> float:
    """``value`` as a float, or ValueError unless it is a number >= 1."""
    if isinstance(value, bool) or not (
        isinstance(value, (int, float)) and math.isfinite(value) and value >= 1
    ):
        raise ValueError(f"burst must be a number of requests >= 1, got {value!r}")
    return float(value)


def check_retry_after(value: str) -> RetryAfterMode:
    """``value`` if it is one of :data:`RETRY_AFTER_MODES`, else ValueError."""
    for mode in RETRY_AFTER_MODES:
        if value == mode:
            return mode
    raise ValueError(f"retry_after must be one of {', '.join(RETRY_AFTER_MODES)}, got {value!r}")


class TokenBucket:
    """See the module docstring. ``rate=None`` accepts everything."""

    def __init__(
        self,
        rate: float | None,
        *,
        burst: float = 1.0,
        retry_after: RetryAfterMode = "exact",
        headers: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self.rate = check_rate("rate_limit", rate)
        self.burst = check_burst(burst)
        self.retry_after = check_retry_after(retry_after)
        self.headers = headers
        self._tokens = self.burst
        self._refilled_at = clock()
        #: Requests this bucket let through, and refused, since it was made or reset.
        self.accepted = 0
        self.refused = 0

    def reset(self) -> None:
        """A full bucket, and the counters back to zero."""
        self._tokens = self.burst
        self._refilled_at = self._clock()
        self.accepted = self.refused = 0

    def change(self, rate: float | None, burst: float | None = None, *, name: str = "rate") -> None:
        """A new rate (and burst) from now on: what was saved up stays, up to the new burst."""
        rate = check_rate(name, rate)
        new_burst = self.burst if burst is None else check_burst(burst)
        self._refill()
        self.rate, self.burst = rate, new_burst
        self._tokens = min(self._tokens, new_burst) if rate is not None else new_burst

    def _refill(self) -> None:
        now = self._clock()
        if self.rate is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._refilled_at) * self.rate)
        self._refilled_at = now

    def take(self) -> dict[str, str] | None:
        """One token for a request arriving now: ``None`` when it may proceed, else the headers
        of its 429 (with ``Retry-After`` unless that is off)."""
        if self.rate is None:
            self.accepted += 1
            return None
        self._refill()
        if self._tokens >= 1.0 - _EPSILON:
            self._tokens = max(0.0, self._tokens - 1.0)
            self.accepted += 1
            return None
        self.refused += 1
        wait = self.wait()
        headers = self.limit_headers()
        if self.retry_after == "exact":
            headers["Retry-After"] = format_seconds(wait)
        elif self.retry_after == "seconds":
            headers["Retry-After"] = str(max(1, math.ceil(wait - _EPSILON)))
        return headers

    def wait(self) -> float:
        """Seconds until a token is back, rounded up to the millisecond, so that a client that
        waits exactly this long gets in (0 when one is there)."""
        if self.rate is None or self._tokens >= 1.0 - _EPSILON:
            return 0.0
        return math.ceil((1.0 - self._tokens) / self.rate * 1000) / 1000

    def limit_headers(self) -> dict[str, str]:
        """``X-RateLimit-*`` for an answer given now (empty without a limit or with them off)."""
        if self.rate is None or not self.headers:
            return {}
        self._refill()
        return {
            "X-RateLimit-Limit": format_seconds(self.rate),
            "X-RateLimit-Remaining": str(int(self._tokens + _EPSILON)),
            "X-RateLimit-Reset": str(math.ceil(time.time() + self.wait())),  # epoch seconds, whole
        }
