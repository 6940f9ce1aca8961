"""The operations layer: the one place that knows the Audience API's routes.

Everything that talks to Batch goes through :class:`Operations`: the client's methods, the
upload engine and ``create_many``. It names the routes, builds each write's body (through the
codec, which owns the wire format), decodes every answer into a model (through the codec's
cattrs converter), settles a create or remove whose answer was lost, and polls indexing with
one schedule and one budget. It borrows one verb from the transport, ``request``, the way
openai-python's resources borrow their client's ``get`` and ``post``; retries, pacing and
errors stay the transport's business.

A create or remove that fails is settled by state, never by the wording of the error: after a
4xx on create (other than 401/403/404/429), or a 5xx after a try whose answer was lost, one view
decides, and who made the audience is judged by :mod:`batch_audiences._evidence`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Final, Literal, Protocol, TypeVar

import attrs

from ._codec import decode, decode_accepted, encode, encode_create
from ._errors import (
    APIError,
    AudienceExistsError,
    IndexingTimeoutError,
    NotFoundError,
    ServerError,
    UncertainOutcomeError,
    UnexpectedResponseError,
)
from ._evidence import ClockOffset, Verdict, attempt_window, judge_create, judge_remove, offset_from_date
from ._hooks import ChunkAcknowledged
from ._models import (
    Accepted,
    Audience,
    AudiencePage,
    AudienceType,
    Confirmation,
    IdAction,
    IndexingState,
    Member,
    ReplaceRequest,
    UpdateRequest,
    check_name,
)
from ._transport import RequestTrace

if TYPE_CHECKING:
    from ._budget import RetryBudget
    from ._pacing import RateLimiter
    from ._transport import Transport

__all__ = ["IdsRoute", "Operations", "PollSchedule"]

T = TypeVar("T")

logger: Final = logging.getLogger("batch_audiences")

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


#: Error statuses on create with a meaning of their own, whatever the name's state.
_NOT_ABOUT_THE_NAME: Final = frozenset({401, 403, 404, 429})


def _state_decides(error: APIError, uncertain: bool) -> bool:
    """Whether a failed create is settled by viewing the name.

    Batch documents no "name taken" answer (most likely a 400 of unknown wording), so any 4xx
    but those with a meaning of their own is checked against the state; and so is a 5xx after a
    try whose answer was lost, since that try may have created the audience.
    """
    if 400 <= error.status < 500:
        return error.status not in _NOT_ABOUT_THE_NAME
    return uncertain and error.status >= 500


def _header(headers: Mapping[str, str] | None, name: str) -> str | None:
    if headers is None:
        return None
    value = headers.get(name)
    if value is None:  # a plain dict, from a test's sender, is not case-insensitive
        value = next((v for k, v in headers.items() if k.lower() == name.lower()), None)
    return value


def _shown(headers: Mapping[str, str] | None) -> Mapping[str, str]:
    # Not ``headers or {}``: that asks their length, which reads headers kept to be looked at
    # for the key only when the caller reads them (see _redact.HeadersOnRead).
    return headers if headers is not None else {}


def _exists_error(error: APIError) -> AudienceExistsError:
    return AudienceExistsError(
        error.status, error.error_code, error.error_message, method=error.method, route=error.route,
        headers=error.headers, body=error.body,
    )


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
        """Send one write; a success status whose body cannot be read is still a write done
        (see :meth:`_unread`), for every write route alike."""
        trace = trace if trace is not None else RequestTrace()
        try:
            status, payload = await self._request("POST", route, body=body, trace=trace)
            # The answer's status and headers go into the result, so a caller can log what the
            # server said (a request ID…).
            return decode_accepted(payload, status=status, headers=_shown(trace.headers),
                                   method="POST", route=route)
        except UnexpectedResponseError as error:  # from the codec, or a 2xx body over the cap
            return self._unread(error, trace)

    async def _read(
        self, route: str, params: Mapping[str, str], cls: type[T], trace: RequestTrace | None = None
    ) -> T:
        status, payload = await self._request("GET", route, params=params, trace=trace)
        return decode(payload, cls, status=status, method="GET", route=route)

    # -- writes ---------------------------------------------------------------------------

    async def create(
        self,
        name: str,
        type: AudienceType = AudienceType.CUSTOM_IDS,
        display_name: str | None = None,
        trace: RequestTrace | None = None,
    ) -> Accepted:
        """``POST /audiences/create``; a taken name raises :class:`AudienceExistsError`, unless the
        create itself took it (see :meth:`_settle_create`). Bad arguments raise
        :class:`ValidationError` before anything is sent."""
        body = encode_create(name, type, display_name)
        trace = trace if trace is not None else RequestTrace()
        try:
            # What _write does, inline: creates are the calls made by the thousand
            # (create_many), and a coroutine less is a frame and two resumptions less each.
            try:
                status, payload = await self._request("POST", _CREATE, body=body, trace=trace)
                return decode_accepted(payload, status=status, headers=_shown(trace.headers),
                                       method="POST", route=_CREATE)
            except UnexpectedResponseError as error:
                return self._unread(error, trace)
        except UnexpectedResponseError:
            raise  # not about the name: an answer that says nothing readable of it
        except APIError as error:
            if not _state_decides(error, trace.uncertain):
                raise
            return await self._settle_create(name, trace, error, answered=time.time())

    async def _settle_create(
        self, name: str, trace: RequestTrace, error: APIError, *, answered: float
    ) -> Accepted:
        """Decide a create that failed, by the state of its name (the rule, in one place).

        No such audience: the create did not happen, ``error`` stands. The audience exists and
        every try was answered: the name was taken (:class:`AudienceExistsError`). A try's answer
        was lost: the audience's ``created`` time against the time that try left, on the
        server's clock (:func:`_evidence.judge_create`), says whether this create made it
        (``Confirmation.INFERRED``), someone else did (:class:`AudienceExistsError`), or cannot
        tell (:class:`UncertainOutcomeError`).
        """
        audience, offset = await self._look(name, trace)
        if audience is None:
            raise error
        if not trace.uncertain:
            raise _exists_error(error) from error
        window = None
        if offset is not None and trace.uncertain_since is not None:
            window = attempt_window(sent=trace.uncertain_since, answered=answered, offset=offset)
        verdict = judge_create(audience.created, window)
        if verdict is Verdict.DONE:
            return Accepted(None, confirmation=Confirmation.INFERRED)
        if verdict is Verdict.NOT_DONE:
            raise _exists_error(error) from error
        missing = "a creation time" if audience.created is None else "a Date header"
        raise UncertainOutcomeError(
            "POST", _CREATE, name,
            f"a try broke after sending and a later one found the name taken; the server gave no "
            f"{missing} to tell whether this call created it (last answer: HTTP {error.status})",
        ) from error

    async def _look(self, name: str, write: RequestTrace) -> tuple[Audience | None, ClockOffset | None]:
        """View ``name`` for evidence: the audience (``None`` if missing) and the clock offset
        its answer proves. The view is part of the write: under its retry budget, and counted in
        its trace (so a bulk call's report counts it)."""
        trace = RequestTrace(budget=write.budget)
        sent = time.time()
        try:
            audience = await self.view(name, None, trace)
        except NotFoundError:
            return None, None
        finally:
            write.attempts += trace.attempts
            write.retries += trace.retries
        offset = offset_from_date(_header(trace.headers, "Date"), sent=sent, received=time.time())
        return audience, offset

    @staticmethod
    def _unread(error: UnexpectedResponseError, trace: RequestTrace) -> Accepted:
        """A success status whose body is not readable: the write happened, its token is unknown."""
        if not 200 <= error.status < 300:
            raise error
        logger.warning(
            "%s %s answered %d with an unreadable body; the write happened, its indexing token "
            "is unknown", error.method, error.route, error.status,
        )
        return Accepted(None, status=error.status, headers=_shown(trace.headers))

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
        """``POST /audiences/remove``; see :meth:`_settle_remove`."""
        check_name(name)
        trace = trace if trace is not None else RequestTrace()
        try:
            return await self._write(_REMOVE, encode({"name": name}), trace)
        except NotFoundError as error:
            if not trace.uncertain:
                raise
            return self._settle_remove(False, error)
        except ServerError as error:
            if not trace.uncertain:
                raise
            audience, _ = await self._look(name, trace)
            return self._settle_remove(audience is not None, error)

    @staticmethod
    def _settle_remove(still_there: bool, error: APIError) -> Accepted:
        """Decide a remove that failed after a try whose answer was lost.

        An audience still there was not removed: ``error`` stands. One that is gone leaves
        nothing to date (:func:`_evidence.judge_remove`): the remove is reported done by
        someone, ``Confirmation.UNCERTAIN``, never as this call's.
        """
        if judge_remove(still_there) is Verdict.NOT_DONE:
            raise error
        return Accepted(None, confirmation=Confirmation.UNCERTAIN)

    # -- reads ----------------------------------------------------------------------------

    async def view(
        self, name: str, indexing_token: str | None = None, trace: RequestTrace | None = None
    ) -> Audience:
        """``GET /audiences/view`` (arguments checked by the caller)."""
        params = {"name": name}
        if indexing_token is not None:
            params["indexing_token"] = indexing_token
        return await self._read(_VIEW, params, Audience, trace)

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
