"""HTTP for the client: the pooled session, headers, pacing, retries, error mapping, logging.

This module knows HTTP and nothing of audiences. One :class:`Transport` per client owns (or
borrows) one ``aiohttp.ClientSession``; every request goes through :meth:`Transport.request`,
the one place where the retry policy of :mod:`batch_audiences._config` is applied.
"""

from __future__ import annotations

import asyncio
import email.utils
import io
import logging
import platform
import time
from collections.abc import Mapping
from typing import Final

import aiohttp
import attrs

from ._config import ClientConfig
from ._errors import ClientClosedError, TransportError, UnexpectedResponseError, error_from_response
from ._pacing import RateLimiter, RetryBudget
from ._version import __version__

__all__ = ["ClientStats", "RequestTrace", "Transport", "parse_retry_after"]

logger: Final = logging.getLogger("batch_audiences")

USER_AGENT: Final = (
    f"batch-audiences/{__version__} python/{platform.python_version()} aiohttp/{aiohttp.__version__}"
)

_LARGE_BODY: Final = 2**20

# Failures of these kinds happen before a byte of the request left: nothing can have been applied.
_NOT_SENT: Final = (aiohttp.ClientConnectorError,)

#: The most of one answer body the client reads. The API's largest answer (a page of 100
#: audiences) is a few tens of KB; a broken proxy streaming without end must not fill memory.
MAX_RESPONSE_BYTES = 16 * 1024 * 1024
# Error messages quote the underlying exception; some span lines or embed whole headers.
_MAX_REASON_CHARS: Final = 300


@attrs.frozen
class ClientStats:
    """Counters of one client since it was built.

    ``requests`` counts HTTP attempts (retries included); ``retries`` the attempts that were
    repeats; ``throttled`` the 429 answers; ``rate`` the client-side pace now (``None``: unlimited).
    """

    requests: int
    retries: int
    throttled: int
    rate: float | None


@attrs.define
class RequestTrace:
    """What happened to one logical request, filled in by the transport as it goes.

    ``uncertain`` is set when an attempt failed after its bytes may have reached the server:
    a write may have happened even though no answer came back. ``budget``, when set (by the
    bulk engine), decides instead of the policy's ``max_retries`` whether another try is made.
    """

    attempts: int = 0
    retries: int = 0
    uncertain: bool = False
    budget: RetryBudget | None = None
    #: The headers of the success answer, once there is one.
    headers: Mapping[str, str] | None = None
    #: When (``time.time()``) the first try that may have been applied left: the evidence a
    #: create whose answer was lost is judged by. ``None`` while every try was answered.
    uncertain_since: float | None = None

    def may_retry(self, max_retries: int, wait: float | None = None) -> bool:
        """Whether one more try is allowed after ``self.attempts`` tries (``wait``: the least delay)."""
        if self.budget is None:
            return self.attempts <= max_retries
        return self.budget.allow(self.attempts, max_retries, wait)


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds the server asks us to wait: ``Retry-After`` (seconds or HTTP date), else
    ``X-RateLimit-Reset`` (epoch seconds, or seconds from now when small). ``None`` if neither."""
    now = time.time() if now is None else now
    value = headers.get("Retry-After")
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError):
                when = None
            if when is not None and when.tzinfo is not None:
                return max(0.0, when.timestamp() - now)
    reset = headers.get("X-RateLimit-Reset")
    if reset:
        try:
            seconds = float(reset)
        except ValueError:
            return None
        # Epoch timestamps are large; a small figure is a delay in seconds.
        return max(0.0, seconds - now) if seconds > 1e9 else max(0.0, seconds)
    return None


class Transport:
    """Sends requests for one client; see the module docstring."""

    def __init__(
        self,
        config: ClientConfig,
        *,
        session: aiohttp.ClientSession | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        self._config = config
        self._session = session
        self._owns_session = session is None
        self._loop: asyncio.AbstractEventLoop | None = None  # where the own session was made
        self._closed = False
        self.limiter = limiter or RateLimiter(config.max_rate)
        self._timeout = aiohttp.ClientTimeout(total=config.timeout)
        base = {
            "Authorization": f"Bearer {config.api_key.reveal()}",
            "X-Batch-Project": config.project_key,
            "User-Agent": USER_AGENT,
            "Accept": "application/json",
        }
        self._get_headers = base
        self._post_headers = {**base, "Content-Type": "application/json"}
        self._key_bytes = config.api_key.reveal().encode()
        self._root = config.root  # a property that formats a string: once, not per request
        self._requests = 0
        self._retries = 0
        self._throttled = 0

    @property
    def closed(self) -> bool:
        return self._closed

    def stats(self) -> ClientStats:
        return ClientStats(self._requests, self._retries, self._throttled, self.limiter.rate)

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
            connector = aiohttp.TCPConnector(limit=self._config.max_connections)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=self._timeout, auto_decompress=True
            )
            # aiohttp silently resends a GET once when a kept-alive connection breaks. Retries
            # belong to the policy (bounded, paced, counted in stats, logged): turn that off, as
            # aiohttp's own test client does. Harmless if a later aiohttp drops the attribute.
            if hasattr(self._session, "_retry_connection"):
                self._session._retry_connection = False
        return self._session

    async def aclose(self) -> None:
        """Close the session if this transport made it; a caller's session stays open."""
        self._closed = True
        self.limiter.close()  # requests waiting for their turn end now, with ClientClosedError
        session, self._session = self._session, None
        if session is not None and self._owns_session:
            await session.close()

    async def request(
        self,
        method: str,
        route: str,
        *,
        body: bytes | None = None,
        params: Mapping[str, str] | None = None,
        trace: RequestTrace | None = None,
    ) -> tuple[int, bytes]:
        """Send one logical request, retrying as the policy says; return ``(status, body)``.

        Raises the :class:`APIError` subclass for an error status, :class:`TransportError` when
        no answer came after the last try.
        """
        session = self._get_session()
        policy = self._config.retry
        limiter = self.limiter
        url = self._root + route
        headers = self._post_headers if body is not None else self._get_headers
        trace = trace if trace is not None else RequestTrace()
        waits = None
        debug = logger.isEnabledFor(logging.DEBUG)
        while True:
            sent_at = await limiter.acquire()
            # aclose() (or the caller closing its own session) may have happened while this
            # request waited for its turn or its back-off: say so, rather than aiohttp's
            # bare RuntimeError.
            if self._closed or session.closed:
                raise ClientClosedError(
                    "this client was closed while the request was in progress"
                    if self._closed else "the aiohttp session given as session= is closed"
                )
            trace.attempts += 1
            self._requests += 1
            attempt_sent = time.time()
            try:
                async with session.request(
                    method, url, data=_payload(body), params=params, headers=headers,
                    allow_redirects=False, timeout=self._timeout,
                ) as response:
                    length = response.content_length
                    if length is not None and length <= MAX_RESPONSE_BYTES and (
                        "Content-Encoding" not in response.headers
                    ):
                        # The common case, a small body of known size, without _read_capped's
                        # extra coroutine on every request.
                        payload, complete = await response.read(), True
                    else:
                        payload, complete = await _read_capped(response)
                    status = response.status
                    if not complete and 200 <= status < 300:
                        raise UnexpectedResponseError(
                            status, None, f"the answer is larger than {MAX_RESPONSE_BYTES} bytes; "
                            "it was not read", method=method, route=route,
                        )
                    reason = response.reason
                    response_headers = response.headers
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                if not isinstance(exc, _NOT_SENT):
                    trace.uncertain = True
                    if trace.uncertain_since is None:
                        trace.uncertain_since = attempt_sent
                what = _describe(exc)
                if not policy.retry_connection_errors or not trace.may_retry(policy.max_retries):
                    raise TransportError(method, route, what, attempts=trace.attempts) from exc
                waits = waits or policy.waits()
                wait = waits.next()
                if debug:
                    logger.debug("%s %s failed (%s), attempt %d; retrying in %.2fs",
                                 method, route, what, trace.attempts, wait)
                trace.retries += 1
                self._retries += 1
                await asyncio.sleep(wait)
                continue

            if self._key_bytes in payload:
                # A server or proxy echoing the key back must not put it into our error messages.
                payload = payload.replace(self._key_bytes, b"<redacted>")
            if debug:
                logger.debug("%s %s -> %d (attempt %d)", method, route, status, trace.attempts)
            if 200 <= status < 300:
                limiter.on_success(response_headers)
                trace.headers = response_headers
                return status, payload

            retry_after = parse_retry_after(response_headers) if status in (429, 503) else None
            # A wait beyond max_retry_after is not honoured (the call fails at once): it must not
            # pause the client's other requests either, or one odd header stalls them all.
            honoured = retry_after if retry_after is None or retry_after <= policy.max_retry_after else None
            if status == 429:
                self._throttled += 1
                limiter.on_throttle(sent_at, honoured, response_headers)
            if (
                policy.should_retry_status(status)
                and not limiter.fail_fast
                and (retry_after is None or retry_after <= policy.max_retry_after)
                and trace.may_retry(policy.max_retries, retry_after)
            ):
                waits = waits or policy.waits()
                wait = waits.next(retry_after)
                if debug:
                    logger.debug("%s %s -> %d; retrying in %.2fs (attempt %d of %d)",
                                 method, route, status, wait, trace.attempts + 1,
                                 policy.max_retries + 1)
                trace.retries += 1
                self._retries += 1
                await asyncio.sleep(wait)
                continue
            raise error_from_response(
                status, payload, method=method, route=route, reason=reason,
                retry_after=retry_after,
            )


def _payload(body: bytes | None) -> bytes | io.BytesIO | None:
    # aiohttp warns (an error under -W error) on raw bytes over 1 MiB, and writes a BytesIO in
    # slices that let the loop breathe; a fresh one per attempt, since a send consumes it.
    if body is not None and len(body) > _LARGE_BODY:
        return io.BytesIO(body)
    return body


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    text = " ".join(str(exc).split()) or type(exc).__name__
    if len(text) > _MAX_REASON_CHARS:
        text = text[: _MAX_REASON_CHARS - 1] + "…"
    return f"{type(exc).__name__}: {text}"


async def _read_capped(response: aiohttp.ClientResponse) -> tuple[bytes, bool]:
    """The body, up to ``MAX_RESPONSE_BYTES``; the flag is False when there was more."""
    limit = MAX_RESPONSE_BYTES
    length = response.content_length
    if length is not None and length <= limit and "Content-Encoding" not in response.headers:
        return await response.read(), True  # the common case: a small body of known size
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(65536):
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            return b"".join(chunks)[:limit], False
    return b"".join(chunks), True
