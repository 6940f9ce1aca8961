"""The seam under the transport: a :class:`Sender` makes one HTTP exchange, nothing more.

A sender takes an :class:`HTTPRequest` (method, URL, headers, body, timeout) and returns an
:class:`HTTPResponse` (status, headers, body), or raises :class:`SendError` when no answer came.
It knows nothing of retries, pacing, errors or keys: that policy lives in the transport, above
it. :class:`AiohttpSender` is the default, one pooled ``aiohttp.ClientSession``;
:class:`batch_audiences.testing.MockSender` answers from a function, for unit tests.
"""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import Mapping
from typing import Final, Protocol, runtime_checkable
from urllib.parse import parse_qsl, urlsplit

import aiohttp
import attrs
import orjson
import yarl
from multidict import CIMultiDict, CIMultiDictProxy

from ._deadlines import Deadlines
from ._errors import ClientClosedError, InvalidSettingError
from ._loops import run_on_owner

__all__ = [
    "MAX_RESPONSE_BYTES",
    "AiohttpSender",
    "HTTPRequest",
    "HTTPResponse",
    "SendError",
    "Sender",
    "prepared_request",
]

#: The most of one answer body :class:`AiohttpSender` reads by default. The API's largest answer
#: (a page of 100 audiences) is a few tens of KB; a broken proxy streaming without end must not
#: fill memory.
MAX_RESPONSE_BYTES: Final = 16 * 1024 * 1024

_LARGE_BODY: Final = 2**20
# URLs kept parsed (those without a query string: the write routes of a few base URLs), and
# timeouts kept made: bounds, should a program derive clients without end.
_MAX_KEPT_URLS: Final = 64
_AFTER_VERSION: Final = re.compile(r"/\d+\.\d+(/.*)$")
# Failures of these kinds happen before a byte of the request left: nothing can have been applied.
_NOT_SENT: Final = (aiohttp.ClientConnectorError,)
# What a request inside a task tells aiohttp: no timer of its own (see _deadlines for why; the
# request's deadline is kept by the sender's Deadlines instead).
_UNTIMED: Final = aiohttp.ClientTimeout()


def _headers(value: Mapping[str, str]) -> CIMultiDictProxy[str]:
    if isinstance(value, CIMultiDictProxy):
        return value
    return CIMultiDictProxy(CIMultiDict(value))


# HTTPRequest and HTTPResponse are plain attrs classes, not frozen ones, and convert only in
# __init__: one of each is built for every request, and a frozen class's __init__ (or one with
# on-setattr hooks) sets each field through object.__setattr__, about three times the work of
# plain assignments. Their headers are a read-only mapping either way, so neither was ever
# hashable.
_PLAIN: Final = attrs.setters.NO_OP


@attrs.define(on_setattr=_PLAIN)
class HTTPRequest:
    """One HTTP request as the transport hands it to a sender (treat it as read-only: a retry
    sends the same one again).

    ``url`` is complete, query string included (already percent-encoded); ``body`` is ``None``
    for a GET. ``timeout`` is the whole exchange's limit in seconds.
    """

    method: str
    url: str
    headers: Mapping[str, str] = attrs.field(converter=_headers, repr=False)  # holds the key
    body: bytes | None = attrs.field(default=None, repr=False)
    timeout: float = 30.0

    @property
    def path(self) -> str:
        """The URL's path, e.g. ``/2.8/audiences/view``."""
        return urlsplit(self.url).path

    @property
    def route(self) -> str:
        """The path after the API version, e.g. ``/audiences/view``."""
        path = self.path
        found = _AFTER_VERSION.search(path)
        return found.group(1) if found else path

    @property
    def params(self) -> dict[str, str]:
        """The query string, decoded."""
        return dict(parse_qsl(urlsplit(self.url).query, keep_blank_values=True))

    def json(self) -> object:
        """The body, decoded from JSON (``None`` when there is no body)."""
        return None if self.body is None else orjson.loads(self.body)


@attrs.define(on_setattr=_PLAIN)
class HTTPResponse:
    """One HTTP answer as a sender returns it (treat it as read-only).

    ``headers`` match case-insensitively. ``truncated`` is set by a sender that stopped reading
    a body larger than it allows; ``body`` then holds the part that was read.

    >>> HTTPResponse.from_json(202, {"indexing_token": "t1"}).body
    b'{"indexing_token":"t1"}'
    """

    status: int
    headers: Mapping[str, str] = attrs.field(factory=dict, converter=_headers)
    body: bytes = b""
    reason: str | None = None
    truncated: bool = False

    @classmethod
    def from_json(
        cls, status: int, data: object, *, headers: Mapping[str, str] | None = None
    ) -> HTTPResponse:
        """An answer with ``data`` as its JSON body (and the matching ``Content-Type``)."""
        return cls(
            status, {"Content-Type": "application/json", **(headers or {})}, orjson.dumps(data)
        )


_new_object: Final = object.__new__


def prepared_request(
    method: str, url: str, headers: CIMultiDictProxy[str], body: bytes | None, timeout: float
) -> HTTPRequest:
    """``HTTPRequest(method, url, headers, body, timeout)`` for headers already in their kept
    form: the transport's request of every call, without the ``__init__`` call and its
    converter (a third of the cost).

    >>> headers = CIMultiDictProxy(CIMultiDict({"Accept": "application/json"}))
    >>> prepared_request("GET", "http://x/2.8/audiences/list", headers, None, 30.0) == (
    ...     HTTPRequest("GET", "http://x/2.8/audiences/list", headers, None, 30.0))
    True
    """
    request = _new_object(HTTPRequest)
    request.method = method
    request.url = url
    request.headers = headers
    request.body = body
    request.timeout = timeout
    return request


def _answer(
    status: int, headers: CIMultiDictProxy[str], body: bytes, reason: str | None, truncated: bool
) -> HTTPResponse:
    # HTTPResponse(...) for aiohttp's headers (a CIMultiDictProxy already), as prepared_request.
    response = _new_object(HTTPResponse)
    response.status = status
    response.headers = headers
    response.body = body
    response.reason = reason
    response.truncated = truncated
    return response


class SendError(Exception):
    """A sender got no answer. ``maybe_sent`` is false only when nothing can have left
    (the connection was never made), so a write cannot have been applied.

    A custom sender or a :class:`~batch_audiences.testing.MockSender` handler raises it to stand
    for a refused, broken or timed-out connection; the transport retries it as such and finally
    raises :class:`TransportError`.
    """

    def __init__(self, reason: str, *, maybe_sent: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.maybe_sent = maybe_sent


@runtime_checkable
class Sender(Protocol):
    """What a client sends its HTTP through (``sender=`` of the clients)."""

    async def send(self, request: HTTPRequest) -> HTTPResponse:
        """Make one exchange; raise :class:`SendError` when no answer came."""
        ...

    async def aclose(self) -> None:
        """Release connections; called by the client that was given this sender, once, at close."""
        ...


class AiohttpSender:
    """The default :class:`Sender`: a pooled ``aiohttp.ClientSession``, created on first use.

    ``session``: use this session (it is never closed here; the caller keeps it).
    ``max_connections``: the pool's size when the sender makes its own session.
    ``max_response_bytes``: the most of one body read (default :data:`MAX_RESPONSE_BYTES`);
    a longer one comes back with ``truncated`` set. Redirects are never followed and TLS
    certificates are always verified (to trust another CA, pass a session of your own).
    """

    def __init__(
        self,
        session: aiohttp.ClientSession | None = None,
        *,
        max_connections: int = 100,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        if session is not None and not isinstance(session, aiohttp.ClientSession):
            raise InvalidSettingError("session", "must be an aiohttp.ClientSession")
        limits = {"max_connections": max_connections, "max_response_bytes": max_response_bytes}
        for field, value in limits.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidSettingError(field, f"must be a positive integer, got {value!r}")
        self._session = session
        self._owns_session = session is None
        self._loop: asyncio.AbstractEventLoop | None = None  # where the own session was made
        self._closed = False
        self.max_connections = max_connections
        self.max_response_bytes = max_response_bytes
        # Made once, not per request: a client sends to a handful of URLs with one timeout.
        self._urls: dict[str, yarl.URL] = {}
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}
        self._deadlines: Deadlines | None = None  # of the requests in flight, on their loop
        # Headers every request carries, given to the own session once (see _preset_headers);
        # and, per headers object a request brings, what is left to pass with it.
        self._common: CIMultiDictProxy[str] | None = None
        self._own: dict[int, tuple[Mapping[str, str], CIMultiDictProxy[str] | None]] = {}

    def __repr__(self) -> str:
        return (f"AiohttpSender(max_connections={self.max_connections}, "
                f"max_response_bytes={self.max_response_bytes}, own_session={self._owns_session})")

    @property
    def closed(self) -> bool:
        """True once :meth:`aclose` ran."""
        return self._closed

    def _preset_headers(self, common: Mapping[str, str]) -> None:
        """Headers every request through this sender carries (those of the client that made it):
        set on its own session once, so that aiohttp merges a request's headers with only what
        is its own (``Content-Type``), not all of them, each time. Nothing changes on the wire.
        Only before the session is made, and only for a session of its own."""
        if self._session is None and self._owns_session:
            self._common = _headers(common)

    def _headers_for(self, headers: Mapping[str, str]) -> CIMultiDictProxy[str] | None:
        """What to pass aiohttp for a request's ``headers``, the session holding ``_common``."""
        common = self._common
        assert common is not None
        if any(headers.get(name) != value for name, value in common.items()):
            # The session would add a header this request does not carry: only the transport
            # that preset them sends through this sender, so this is a bug, said plainly.
            raise RuntimeError("a request without the headers preset on its AiohttpSender")
        own = CIMultiDict((name, value) for name, value in headers.items() if name not in common)
        if len(self._own) >= _MAX_KEPT_URLS:
            self._own.clear()
        # Kept with the headers object itself, so that its id cannot be another's meanwhile.
        self._own[id(headers)] = (headers, CIMultiDictProxy(own) if own else None)
        return self._own[id(headers)][1]

    def _get_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise ClientClosedError("this client is closed; create a new one")
        loop = asyncio.get_running_loop()
        if self._session is not None and self._loop is not None and loop is not self._loop:
            # aiohttp would fail with a bare "Event loop is closed" or "attached to a different
            # loop" RuntimeError, typically on a second asyncio.run() with the same client.
            raise ClientClosedError(
                "this client's connections belong to the event loop it was first used in"
                f"{' (now closed)' if self._loop.is_closed() else ''}; an async client serves one "
                "event loop: build it inside your async code, or use the blocking AudiencesClient"
            )
        if self._session is None:
            self._loop = loop if self._owns_session else None
            connector = aiohttp.TCPConnector(limit=self.max_connections)
            self._session = aiohttp.ClientSession(
                connector=connector, auto_decompress=True, headers=self._common
            )
            # aiohttp silently resends a GET once when a kept-alive connection breaks. Retries
            # belong to the policy (bounded, paced, counted in stats, logged): turn that off, as
            # aiohttp's own test client does. Harmless if a later aiohttp drops the attribute.
            if hasattr(self._session, "_retry_connection"):
                self._session._retry_connection = False
        elif self._session.closed:
            raise ClientClosedError(
                "the aiohttp session given as session= is closed" if not self._owns_session
                else "this client is closed; create a new one"
            )
        return self._session

    async def aclose(self) -> None:
        """Close the session if this sender made it; a caller's session stays open."""
        self._closed = True
        if self._deadlines is not None:
            self._deadlines.close()
        session, self._session = self._session, None
        if session is not None and self._owns_session:
            # On the loop the session was made on, whichever loop calls this (see _loops).
            await run_on_owner(session.close, self._loop)

    async def send(self, request: HTTPRequest) -> HTTPResponse:
        """Make one exchange; see :class:`Sender`."""
        session = self._session
        loop = asyncio.get_running_loop()
        # _get_session's checks, their common outcome inline (this runs on every request): a
        # session of ours, open, on the loop it was made on; anything else is asked in full.
        # Our own session is closed only by aclose(), which sets _closed: only a caller's
        # session is asked (a property, and one more on its connector).
        if (session is None or self._closed
                or (self._loop is not None and loop is not self._loop)
                or (not self._owns_session and session.closed)):
            session = self._get_session()
        # The deadline: kept by one timer for every request in flight (see _deadlines), or,
        # outside a task (a coroutine driven by hand), by aiohttp.
        task = asyncio.current_task(loop)
        deadlines = self._deadlines
        if task is None:
            timeout = self._timeout(request.timeout)
        else:
            if deadlines is None or deadlines.loop is not loop:
                deadlines = self._deadlines = Deadlines(loop)
            deadlines.enter(task, request.timeout)
            timeout = _UNTIMED
        url = self._urls.get(request.url)
        if url is None:
            url = yarl.URL(request.url, encoded=True)
            if "?" not in request.url:  # the routes without a query: a few, reused by every write
                if len(self._urls) >= _MAX_KEPT_URLS:
                    self._urls.clear()
                self._urls[request.url] = url
        body = request.body
        data = body if body is None or len(body) <= _LARGE_BODY else _payload(body)
        headers: Mapping[str, str] | None = request.headers
        if self._common is not None:
            own = self._own.get(id(headers))
            headers = own[1] if own is not None and own[0] is headers else self._headers_for(request.headers)
        try:
            # Awaited, then released, rather than ``async with``: what the two context managers
            # do on the way out (release the connection, and await a body writer that is over
            # once the answer is read), without their five coroutines on every request.
            response = await session.request(
                request.method, url, data=data,
                headers=headers, allow_redirects=False, timeout=timeout,
            )
            try:
                cap = self.max_response_bytes
                content = response.content
                if content.is_eof() and self._owns_session:
                    # The whole body came with the headers (this API's answers are small): taken
                    # as it is, without read()'s coroutines, on every request. aiohttp gave the
                    # connection back to the pool at the body's end (or will, once the body's
                    # writer is done); release() below covers any other case. Its size is that
                    # of the body decoded, as _read_capped counts it. (Not for a caller's
                    # session: its trace configs see the body through read().)
                    body = content.read_nowait()
                    complete = len(body) <= cap
                    if not complete:
                        body = body[:cap]
                elif (length := response.content_length) is not None and length <= cap and (
                    "Content-Encoding" not in response.headers
                ):
                    # A body still on its way, of a size known and allowed: read() waits for it
                    # without _read_capped's extra coroutine.
                    body, complete = await response.read(), True
                else:
                    body, complete = await _read_capped(response, cap)
            except BaseException:
                response.close()  # a body read in part: the connection cannot serve another
                raise
            if not response.closed:
                response.release()
            return _answer(response.status, response.headers, body, response.reason, not complete)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise SendError(_describe(exc), maybe_sent=not isinstance(exc, _NOT_SENT)) from exc
        except asyncio.CancelledError:
            # Ours when the deadline passed, and nobody else cancelled the task meanwhile.
            if task is None or deadlines is None or not deadlines.expired(task) or (
                not deadlines.withdraw(task)
            ):
                raise
            raise SendError("timed out") from None
        finally:
            if task is not None and deadlines is not None:
                deadlines.leave(task)

    def _timeout(self, seconds: float) -> aiohttp.ClientTimeout:
        timeout = self._timeouts.get(seconds)
        if timeout is None:
            if len(self._timeouts) >= _MAX_KEPT_URLS:
                self._timeouts.clear()
            timeout = self._timeouts[seconds] = aiohttp.ClientTimeout(total=seconds)
        return timeout


def _payload(body: bytes | None) -> bytes | io.BytesIO | None:
    # aiohttp warns (an error under -W error) on raw bytes over 1 MiB, and writes a BytesIO in
    # slices that let the loop breathe; a fresh one per attempt, since a send consumes it.
    if body is not None and len(body) > _LARGE_BODY:
        return io.BytesIO(body)
    return body


def _describe(exc: BaseException) -> str:
    # On one line, but whole: the transport hides the key in it before shortening it.
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"


async def _read_capped(response: aiohttp.ClientResponse, limit: int) -> tuple[bytes, bool]:
    """The body, up to ``limit`` bytes; the flag is False when there was more."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(65536):
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            return b"".join(chunks)[:limit], False
    return b"".join(chunks), True
