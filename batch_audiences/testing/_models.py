"""The emulator's public value types: scripted answers, fault plans, request records, snapshots."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Final

import attrs

#: Route names, as used by :attr:`ScriptedResponse.route`, :attr:`FaultPlan.routes` and
#: :attr:`RecordedRequest.route`.
ROUTES: Final = frozenset({"create", "update", "replace", "remove", "view", "list"})
#: The routes that change state and answer ``202 {"indexing_token": ...}``.
WRITE_ROUTES: Final = frozenset({"create", "update", "replace", "remove"})
#: What a :class:`ScriptedResponse` can do with the request it is matched to.
ACTIONS: Final = ("respond", "drop_before", "drop_after", "slow", "hold", "crash")


def _check_route(_: object, attribute: attrs.Attribute[str | None], value: str | None) -> None:
    if value is not None and value not in ROUTES:
        raise ValueError(f"{attribute.name} must be one of {sorted(ROUTES)} or None, got {value!r}")


def _check_probability(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
        raise ValueError(f"{attribute.name} must be a probability between 0 and 1, got {value!r}")


def _check_seconds(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
        raise ValueError(f"{attribute.name} must be a finite number of seconds >= 0, got {value!r}")


def _check_status(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 100 <= value <= 599:
        raise ValueError(f"{attribute.name} must be an HTTP status from 100 to 599, got {value!r}")


def _frozen_headers(value: Mapping[str, str]) -> Mapping[str, str]:
    # A read-only copy, so a frozen ScriptedResponse cannot change behind the emulator's back.
    return MappingProxyType(dict(value))


def _route_set(value: Iterable[str] | None) -> frozenset[str] | None:
    if value is None:
        return None
    if isinstance(value, str):  # a bare "create" would otherwise become {"c", "r", ...}
        value = (value,)
    routes = frozenset(value)
    unknown = routes - ROUTES
    if unknown:
        raise ValueError(f"routes holds unknown route names {sorted(unknown)}; known: {sorted(ROUTES)}")
    return routes


@attrs.frozen
class ScriptedResponse:
    """One scripted answer, queued with :meth:`Emulator.script`.

    ``action`` says what happens to the request that consumes it:

    - ``"respond"``: answer ``status`` / ``body`` / ``headers`` without processing the request
      (no state change). ``body`` may be a JSON-able object, or ``str``/``bytes`` sent raw, e.g.
      a proxy's HTML page or invalid JSON. ``None`` sends an empty body.
    - ``"drop_before"``: close the connection without answering; the write is NOT applied.
    - ``"drop_after"``: process the request (a write is accepted), then close the connection
      without answering.
    - ``"slow"``: process the request normally, then wait ``delay`` seconds before answering.
    - ``"hold"``: read the request, wait ``delay`` seconds, then process and answer it. A write is
      applied late: after requests that arrived later, even if the client gave up waiting (a
      timeout) and sent it again meanwhile.
    - ``"crash"``: fail inside the emulator, as a bug in the server would (a ``RuntimeError``
      where the request would be processed): no state change, a JSON 500 ``INTERNAL_ERROR``
      answer, and the error logged with its traceback on the ``batch_audiences.testing`` logger.

    ``route`` restricts which requests may consume it (``None``: any route).

    >>> page = ScriptedResponse(503, "<html>down</html>", {"Content-Type": "text/html"}, route="update")
    >>> page.action
    'respond'
    """

    status: int = attrs.field(default=200, validator=_check_status)
    body: object = None
    headers: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen_headers)
    action: str = attrs.field(default="respond", validator=attrs.validators.in_(ACTIONS))
    delay: float = attrs.field(default=0.0, validator=_check_seconds)
    route: str | None = attrs.field(default=None, validator=_check_route)


@attrs.frozen
class FaultPlan:
    """Random faults, reproducible with ``seed``.

    For each request whose route is in ``routes`` (``None``: every route) the emulator draws ONE
    number ``u`` in ``[0, 1)`` from ``random.Random(seed)`` and walks the rates in this order:
    ``rate_429``, ``rate_503``, ``rate_500``, ``drop_before``, ``drop_after``, ``slow``, ``hold``;
    the first whose cumulative rate exceeds ``u`` fires. So each rate is the exact per-request
    probability of its fault, and the rates must add up to at most 1. ``slow`` answers
    ``slow_seconds`` late after processing; ``hold`` processes (applies) the request only after
    ``hold_seconds``, as a server that is slow to take a write does.

    A 429 carries ``Retry-After: <retry_after>``. NOTE: real servers send whole seconds; here
    ``retry_after`` is a float sent without trailing zeros (``"1"``, ``"0.05"``) so tests can use
    short waits. A client must therefore parse it as a float.

    >>> plan = FaultPlan(seed=7, rate_503=0.2, routes={"update"})
    >>> plan.routes == frozenset({"update"})
    True
    """

    seed: int | None = None
    rate_429: float = attrs.field(default=0.0, validator=_check_probability)
    retry_after: float = attrs.field(default=1.0, validator=_check_seconds)
    rate_503: float = attrs.field(default=0.0, validator=_check_probability)
    rate_500: float = attrs.field(default=0.0, validator=_check_probability)
    drop_before: float = attrs.field(default=0.0, validator=_check_probability)
    drop_after: float = attrs.field(default=0.0, validator=_check_probability)
    slow: float = attrs.field(default=0.0, validator=_check_probability)
    slow_seconds: float = attrs.field(default=5.0, validator=_check_seconds)
    hold: float = attrs.field(default=0.0, validator=_check_probability)
    hold_seconds: float = attrs.field(default=5.0, validator=_check_seconds)
    routes: frozenset[str] | None = attrs.field(default=None, converter=_route_set)

    def __attrs_post_init__(self) -> None:
        total = sum(rate for _, rate in self.ordered_rates())
        if total > 1.0 + 1e-9:
            raise ValueError(f"the fault rates add up to {total}, more than 1")

    def ordered_rates(self) -> tuple[tuple[str, float], ...]:
        """The fault kinds and their rates, in the order they are checked."""
        return (
            ("fault_429", self.rate_429),
            ("fault_503", self.rate_503),
            ("fault_500", self.rate_500),
            ("drop_before", self.drop_before),
            ("drop_after", self.drop_after),
            ("slow", self.slow),
            ("hold", self.hold),
        )

    def applies_to(self, route: str) -> bool:
        """Whether requests to ``route`` are subject to this plan."""
        return self.routes is None or route in self.routes


@attrs.frozen
class RecordedRequest:
    """One request the emulator received, as listed in :attr:`Emulator.requests`.

    ``route`` is a route name (``"create"``, ``"view"``...) or the raw path when it matched none.
    ``status`` is ``0`` when the connection was dropped (or the request is still in flight).
    ``body`` is the parsed JSON body (``None`` when absent, unparsable or not recorded).
    ``outcome`` is one of ``"ok"``, ``"error"`` (a 4xx/5xx produced by the API logic, or the 500
    of a scripted ``"crash"``),
    ``"rate_limited"``, ``"scripted"``, ``"fault_429"``, ``"fault_503"``, ``"fault_500"``,
    ``"dropped_before"``, ``"dropped_after"``, ``"slow"``, ``"held"`` (processed late, see
    :class:`ScriptedResponse`; its ``status`` is the answer's even if the client had gone),

    ``"in_flight"``, ``"aborted"``
    (the emulator stopped or the client went away mid-request).
    ``headers`` has the ``Authorization`` value masked. ``received_at`` is ``time.monotonic()``
    at arrival, handy to check a client's pacing.
    """

    method: str
    route: str
    status: int
    body: object | None
    query: dict[str, str]
    outcome: str
    headers: dict[str, str]
    path: str = ""
    received_at: float = 0.0


@attrs.frozen
class EmulatedAudience:
    """A snapshot of one emulated audience (applied content only), from :meth:`Emulator.audience`.

    ``members`` maps each custom ID to its attributes (possibly empty). ``tokens`` maps every
    indexing token the audience gave out to its current state (``"IN_PROGRESS"``, ``"APPLIED"``
    or ``"REPLACED"``), in arrival order; ``last_token`` is the latest one and
    ``pending_writes`` the number of writes not applied yet.
    """

    name: str
    display_name: str | None
    type: str
    members: dict[str, dict[str, object]]
    created: datetime
    updated: datetime
    tokens: dict[str, str]
    last_token: str | None
    pending_writes: int

    @property
    def nb_ids(self) -> int:
        """The number of applied members, as the view route reports it."""
        return len(self.members)

    @property
    def indexing_state(self) -> str:
        """The state of the last write, as the view route reports it without a token."""
        if self.last_token is None:
            return "APPLIED"
        return self.tokens[self.last_token]
