"""The operations layer: the one place that knows the Audience API's routes.

Everything that talks to Batch goes through :class:`Operations`: the client's methods, the
upload engine and ``create_many``. It names the routes, builds each write's body (through the
codec, which owns the wire format), decodes every answer into a model (through the codec's
cattrs converter), settles a create or remove whose answer was lost, and polls indexing with
one schedule and one budget. It borrows one verb from the transport, ``request``, the way
openai-python's resources borrow their client's ``get`` and ``post``; retries, pacing and
errors stay the transport's business.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Final, Literal, Protocol, TypeVar

import attrs

from ._codec import decode, encode
from ._errors import (
    APIError,
    AudienceExistsError,
    IndexingTimeoutError,
    NotFoundError,
    UnexpectedResponseError,
)
from ._hooks import ChunkAcknowledged
from ._models import (
    Accepted,
    Audience,
    AudiencePage,
    CreateRequest,
    IdAction,
    IndexingState,
    Member,
    ReplaceRequest,
    UpdateRequest,
    check_name,
)
from ._transport import RequestTrace

if TYPE_CHECKING:
    from ._pacing import RateLimiter, RetryBudget
    from ._transport import Transport

__all__ = ["IdsRoute", "Operations", "PollSchedule"]

T = TypeVar("T")

_CREATE: Final = "/audiences/create"
_UPDATE: Final = "/audiences/update"
_REPLACE: Final = "/audiences/replace"
_REMOVE: Final = "/audiences/remove"
_VIEW: Final = "/audiences/view"
_LIST: Final = "/audiences/list"

#: The two routes that take a list of IDs, for a body built ahead (the upload engine's chunks).
IdsRoute = Literal["update", "replace"]
_IDS_ROUTES: Final = {"update": _UPDATE, "replace": _REPLACE}


@attrs.frozen
class PollSchedule:
    """How indexing is polled: a first look at once, then waits from ``first`` seconds, doubling,
    up to ``max(10 * first, 1 s)``.

    The one schedule for :meth:`AsyncAudiencesClient.wait_until_applied` (``first`` is its
    ``poll_interval``) and the upload engine (which starts at 20 ms: short writes are often
    applied within a few tens of milliseconds).

    >>> [round(wait, 2) for wait, _ in zip(PollSchedule(0.1).waits(), range(6))]
    [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    """

    first: float

    def waits(self) -> Iterable[float]:
        """The waits between two looks, endless."""
        wait, ceiling = self.first, max(10 * self.first, 1.0)
        while True:
            yield wait
            wait = min(wait * 2, ceiling)


#: The upload engine's schedule.
BULK_POLL: Final = PollSchedule(0.02)


def _says_exists(error: APIError) -> bool:
    """Whether an error answer to a create means "that name is taken".

    Batch does not document this answer; a 409, or a 4xx whose code or message speaks of an
    existing audience, is read as such.
    """
    if error.status == 409:
        return True
    # Auth, not-found and throttling answers have classes of their own, whatever they say.
    if not 400 <= error.status < 500 or error.status in (401, 403, 404, 429):
        return False
    text = f"{error.error_code or ''} {error.error_message}".lower()
    if any(negation in text for negation in ("not exist", "n't exist", "no longer exist")):
        return False
    return "exist" in text or "duplicate" in text


class _OnOperations(Protocol):
    # The client, seen without importing it (it imports this module).
    _ops: Operations


class Operations:
    """The Audience API's six routes, plus the waits built on them, over one transport."""

    def __init__(self, transport: Transport) -> None:
        self._request = transport.request
        self.limiter: RateLimiter = transport.limiter
        #: Whether the client has hooks (an engine builds their events only then).
        self.has_hooks = transport.has_hooks
        self._emit_chunk_acknowledged = transport.emit_chunk_acknowledged

    @classmethod
    def of(cls, client: _OnOperations) -> Operations:
        """The operations layer an :class:`AsyncAudiencesClient` runs on (its session, limiter
        and settings), for driving an engine directly."""
        return client._ops

    # -- plumbing -------------------------------------------------------------------------

    async def _write(self, route: str, body: bytes, trace: RequestTrace | None) -> Accepted:
        trace = trace if trace is not None else RequestTrace()
        status, payload = await self._request("POST", route, body=body, trace=trace)
        accepted = decode(payload, Accepted, status=status, method="POST", route=route)
        # Where the answer is read, so a caller can log what the server said (a request ID…).
        return attrs.evolve(accepted, status=status, headers=trace.headers or {})

    async def _read(
        self, route: str, params: Mapping[str, str], cls: type[T], trace: RequestTrace | None = None
    ) -> T:
        status, payload = await self._request("GET", route, params=params, trace=trace)
        return decode(payload, cls, status=status, method="GET", route=route)

    # -- writes ---------------------------------------------------------------------------

    async def create(self, request: CreateRequest, trace: RequestTrace | None = None) -> Accepted:
        """``POST /audiences/create``; a taken name raises :class:`AudienceExistsError`, unless the
        create itself took it (see :meth:`_settle_uncertain_create`)."""
        trace = trace if trace is not None else RequestTrace()
        try:
            return await self._write(_CREATE, encode(request), trace)
        except APIError as error:
            return await self._settle_uncertain_create(request, trace, error)

    async def _settle_uncertain_create(
        self, request: CreateRequest, trace: RequestTrace, error: APIError
    ) -> Accepted:
        """Decide a create that failed: its own earlier try may have taken the name.

        The rule, in one place: a "name taken" answer after an attempt whose answer was lost
        (``trace.uncertain``) counts as done when a view finds the audience.
        """
        if not _says_exists(error):
            raise error
        if trace.uncertain and await self.exists(request.name):
            return Accepted(None)
        raise AudienceExistsError(
            error.status, error.error_code, error.error_message, method=error.method, route=error.route,
            headers=error.headers, body=error.body,
        ) from error

    async def update(
        self, name: str, actions: Iterable[IdAction], trace: RequestTrace | None = None
    ) -> Accepted:
        """``POST /audiences/update`` with 1 to 10,000 actions."""
        return await self._write(_UPDATE, encode(UpdateRequest(name, actions)), trace)

    async def replace(
        self, name: str, members: Iterable[Member | str], trace: RequestTrace | None = None
    ) -> Accepted:
        """``POST /audiences/replace`` with 0 to 10,000 members."""
        return await self._write(_REPLACE, encode(ReplaceRequest(name, members)), trace)

    async def send_ids(self, route: IdsRoute, body: bytes, trace: RequestTrace | None = None) -> Accepted:
        """An update or replace whose body is built already (by :func:`_codec.ids_body`)."""
        return await self._write(_IDS_ROUTES[route], body, trace)

    def chunk_acknowledged(
        self, name: str, route: IdsRoute, index: int, items: int, token: str | None
    ) -> None:
        """Tell the client's hooks that the server accepted chunk ``index`` of an upload."""
        self._emit_chunk_acknowledged(ChunkAcknowledged(
            audience=name, chunk_index=index, items=items, indexing_token=token,
            route=_IDS_ROUTES[route],
        ))

    async def remove(self, name: str, trace: RequestTrace | None = None) -> Accepted:
        """``POST /audiences/remove``; see :meth:`_settle_uncertain_remove`."""
        check_name(name)
        trace = trace if trace is not None else RequestTrace()
        try:
            return await self._write(_REMOVE, encode({"name": name}), trace)
        except NotFoundError as error:
            return self._settle_uncertain_remove(trace, error)

    def _settle_uncertain_remove(self, trace: RequestTrace, error: NotFoundError) -> Accepted:
        """Decide a remove answered "not found": done if an earlier try may have removed it."""
        if trace.uncertain:
            return Accepted(None)
        raise error

    # -- reads ----------------------------------------------------------------------------

    async def view(
        self, name: str, indexing_token: str | None = None, trace: RequestTrace | None = None
    ) -> Audience:
        """``GET /audiences/view`` (arguments checked by the caller)."""
        params = {"name": name}
        if indexing_token is not None:
            params["indexing_token"] = indexing_token
        return await self._read(_VIEW, params, Audience, trace)

    async def exists(self, name: str) -> bool:
        """Whether a view finds the audience."""
        try:
            await self.view(name)
        except NotFoundError:
            return False
        return True

    async def list(self, limit: int, cursor: str | None = None) -> AudiencePage:
        """``GET /audiences/list`` (arguments checked by the caller)."""
        params = {"limit": str(limit)}
        if cursor is not None:
            params["from"] = cursor
        return await self._read(_LIST, params, AudiencePage)

    def repeated_cursor(self, cursor: str) -> APIError:
        """The error for a list cursor handed out twice (a listing that would never end)."""
        return UnexpectedResponseError(
            200, None, f"list returned cursor {cursor!r} twice; stopping", method="GET", route=_LIST
        )

    # -- indexing -------------------------------------------------------------------------

    async def wait_applied(
        self,
        name: str,
        indexing_token: str | None,
        *,
        timeout: float,
        schedule: PollSchedule,
        budget: RetryBudget | None = None,
        record: Callable[[RequestTrace], object] | None = None,
    ) -> Audience:
        """View the write ``indexing_token`` (``None``: the audience's last write) until it is not
        ``IN_PROGRESS``; return the audience.

        ``timeout`` bounds the wait (and so does ``budget``'s deadline, if sooner); past it,
        :class:`IndexingTimeoutError`. Every view's trace goes to ``record`` (request counts).
        """
        loop = asyncio.get_running_loop()
        if budget is not None:
            remaining = budget.remaining_time()
            if remaining is not None:
                timeout = min(timeout, remaining)
        give_up = loop.time() + timeout
        waits = iter(schedule.waits())
        while True:
            trace = RequestTrace(budget=budget)
            try:
                audience = await self.view(name, indexing_token, trace)
            finally:
                if record is not None:
                    record(trace)
            if audience.indexing_state != IndexingState.IN_PROGRESS:
                return audience
            left = give_up - loop.time()
            if left <= 0:
                state = audience.indexing_state
                raise IndexingTimeoutError(name, indexing_token, timeout, getattr(state, "value", str(state)))
            await asyncio.sleep(min(next(waits), left))
