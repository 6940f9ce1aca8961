"""Deciding, at a request's arrival, whether it is answered normally or meets a fault.

Order: scripted responses (consumed only by matching requests), then the rate limit (the token
bucket of :mod:`._ratelimit`), then the random :class:`FaultPlan`. Decisions are taken at arrival
(before the added latency), so they follow arrival order and a seeded run is reproducible even
when latency reorders processing.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ._models import FaultPlan, ScriptedResponse
from ._ratelimit import RetryAfterMode, TokenBucket, check_burst, check_retry_after, format_seconds


@dataclass(frozen=True)
class Decision:
    """What to do with one request.

    ``kind``: ``"proceed"`` (process normally), ``"respond"`` (answer ``status``/``body`` without
    processing), ``"drop_before"``, ``"drop_after"``, ``"slow"`` (process, wait ``delay``) or
    ``"hold"`` (wait ``delay``, then process) or ``"crash"`` (fail where it would process).
    """

    kind: str
    outcome: str
    status: int = 0
    body: object = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


PROCEED = Decision("proceed", "ok")
_DROP_OUTCOMES = {"drop_before": "dropped_before", "drop_after": "dropped_after", "crash": "error"}


class FaultInjector:
    """Scripts, the token bucket and the seeded random faults. Thread-safe."""

    def __init__(
        self,
        plan: FaultPlan,
        rate_limit: float | None,
        clock: Callable[[], float] = time.monotonic,
        *,
        burst: float = 1.0,
        retry_after: RetryAfterMode = "exact",
        limit_headers: bool = True,
    ) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._scripts: list[ScriptedResponse] = []
        self._plan = plan
        self._rng = random.Random(plan.seed)
        self._bucket = TokenBucket(
            rate_limit, burst=burst, retry_after=retry_after, headers=limit_headers, clock=clock
        )

    @property
    def plan(self) -> FaultPlan:
        """The random fault plan; assigning one restarts its random sequence from its seed."""
        return self._plan

    @plan.setter
    def plan(self, plan: FaultPlan) -> None:
        if not isinstance(plan, FaultPlan):
            raise TypeError(f"faults must be a FaultPlan, got {type(plan).__name__}")
        with self._lock:
            self._plan = plan
            self._rng = random.Random(plan.seed)

    @property
    def rate_limit(self) -> float | None:
        """Accepted requests per second, or None for no limit. Assigning refills the bucket."""
        return self._bucket.rate

    @rate_limit.setter
    def rate_limit(self, value: float | None) -> None:
        with self._lock:
            self._bucket.change(value, name="rate_limit")
            self._bucket.reset()

    def limit_state(self) -> tuple[float | None, float, RetryAfterMode, bool, int, int]:
        """The rate limit's rate, burst, Retry-After mode, headers switch, and the requests it
        accepted and refused since the last reset."""
        with self._lock:
            b = self._bucket
            return b.rate, b.burst, b.retry_after, b.headers, b.accepted, b.refused

    def set_rate(self, rate: float | None, burst: float | None = None) -> None:
        """Change the rate (and burst) live: the tokens saved up stay, up to the new burst."""
        with self._lock:
            self._bucket.change(rate, burst)

    def configure_limit(
        self, *, burst: float | None = None, retry_after: RetryAfterMode | None = None,
        headers: bool | None = None,
    ) -> None:
        """Change what the rate limit allows at once and what its answers say."""
        with self._lock:
            bucket = self._bucket
            if burst is not None:
                bucket.change(bucket.rate, check_burst(burst))
            if retry_after is not None:
                bucket.retry_after = check_retry_after(retry_after)
            if headers is not None:
                bucket.headers = bool(headers)

    def script(self, responses: tuple[ScriptedResponse, ...]) -> None:
        """Queue scripted answers."""
        for response in responses:
            if not isinstance(response, ScriptedResponse):
                raise TypeError(f"script() takes ScriptedResponse objects, got {type(response).__name__}")
        with self._lock:
            self._scripts.extend(responses)

    def pending_scripts(self) -> int:
        """How many scripted answers are still queued."""
        with self._lock:
            return len(self._scripts)

    def reset(self) -> None:
        """Drop the scripts, refill the bucket and restart the random sequence."""
        with self._lock:
            self._scripts.clear()
            self._rng = random.Random(self._plan.seed)
            self._bucket.reset()

    def decide(self, route: str) -> Decision:
        """The fate of a request to ``route`` arriving now."""
        with self._lock:
            scripted = self._take_script(route)
            if scripted is not None:
                return scripted
            limited = self._take_token()
            if limited is not None:
                return limited
            return self._draw(route)

    def _take_script(self, route: str) -> Decision | None:
        for index, script in enumerate(self._scripts):
            if script.route is None or script.route == route:
                del self._scripts[index]
                if script.action == "respond":
                    return Decision("respond", "scripted", script.status, script.body, dict(script.headers))
                if script.action == "slow":
                    return Decision("slow", "slow", delay=script.delay)
                if script.action == "hold":
                    return Decision("hold", "held", delay=script.delay)
                return Decision(script.action, _DROP_OUTCOMES[script.action])
        return None

    def _take_token(self) -> Decision | None:
        bucket = self._bucket
        headers = bucket.take()
        if headers is None:
            return None
        message = (
            f"rate limit of {format_seconds(bucket.rate or 0)} requests per second exceeded; "
            f"retry in {format_seconds(bucket.wait())}s"
        )
        body = {"error_code": "TOO_MANY_REQUESTS", "error_message": message}
        return Decision("respond", "rate_limited", 429, body, headers)

    def rate_headers(self) -> dict[str, str]:
        """``X-RateLimit-*`` headers for an accepted request (empty without a rate limit)."""
        with self._lock:
            return self._bucket.limit_headers()

    def _draw(self, route: str) -> Decision:
        plan = self._plan
        if not plan.applies_to(route):
            return PROCEED
        draw = self._rng.random()  # one draw per request, so each rate is exactly its probability
        threshold = 0.0
        for kind, rate in plan.ordered_rates():
            threshold += rate
            if draw < threshold:
                return self._fault(kind, plan)
        return PROCEED

    @staticmethod
    def _fault(kind: str, plan: FaultPlan) -> Decision:
        if kind == "fault_429":
            message = f"too many requests, retry after {format_seconds(plan.retry_after)}s (injected fault)"
            return Decision(
                "respond", kind, 429, {"error_code": "TOO_MANY_REQUESTS", "error_message": message},
                {"Retry-After": format_seconds(plan.retry_after)},
            )
        if kind == "fault_503":
            message = "service under maintenance, try again later (injected fault)"
            body = {"error_code": "SERVICE_UNAVAILABLE", "error_message": message}
            return Decision("respond", kind, 503, body)
        if kind == "fault_500":
            message = "unexpected server error (injected fault)"
            return Decision("respond", kind, 500, {"error_code": "INTERNAL_ERROR", "error_message": message})
        if kind == "slow":
            return Decision("slow", "slow", delay=plan.slow_seconds)
        if kind == "hold":
            return Decision("hold", "held", delay=plan.hold_seconds)
        return Decision(kind, _DROP_OUTCOMES[kind])
