"""The request policy of a client: pacing, retries, redaction, error mapping, logging, hooks.

This module knows HTTP and nothing of audiences. Every request goes through
:meth:`Transport.request`, the one place where the retry policy of :mod:`batch_audiences._config`
is applied; the bytes travel through a :class:`~batch_audiences._sender.Sender` below it (aiohttp
by default), which makes one exchange and nothing else. ``request`` is a short loop over small
steps, as httpx's ``_send_handling_auth`` over ``_send_single_request``::

    while True:
        <take the turn, send, read>                     # pace, send, redact, count, tell hooks
        wait = self.should_retry(exchange, answer)      # None: this answer is final
        if wait is None:
            return self._conclude(exchange, answer)     # the body, or the typed error
        await self.wait_before_retry(exchange, answer, wait)
"""

from __future__ import annotations

import email.utils
import itertools
import logging
import platform
import re
import time
from collections.abc import Iterable, Mapping
from typing import Final
from urllib.parse import quote, urlencode

import aiohttp
import attrs
from multidict import CIMultiDict, CIMultiDictProxy

from . import _redact
from ._budget import RetryBudget
from ._config import ClientConfig, _Waits
from ._errors import ClientClosedError, TransportError, UnexpectedResponseError, error_from_response
from ._hooks import (
    AnswerReceived,
    ChunkAcknowledged,
    Hook,
    HookEvent,
    Hooks,
    RequestFailed,
    RequestSent,
    RetryScheduled,
    Throttled,
)
from ._pacing import RateLimiter
from ._sender import (
    MAX_RESPONSE_BYTES,
    AiohttpSender,
    HTTPRequest,
    HTTPResponse,
    Sender,
    SendError,
    prepared_request,
)
from ._testmode import pause
from ._version import __version__

__all__ = ["MAX_RESPONSE_BYTES", "ClientStats", "RequestTrace", "Transport", "parse_retry_after"]

logger: Final = logging.getLogger("batch_audiences")
_redact.install_log_filter(logger)

USER_AGENT: Final = (
    f"batch-audiences/{__version__} python/{platform.python_version()} aiohttp/{aiohttp.__version__}"
)

# Error messages quote the underlying exception; some span lines or embed whole headers.
_MAX_REASON_CHARS: Final = 300
# Every body the SDK builds starts with the audience's name: hooks learn it without a parse.
_NAME_FIRST: Final = re.compile(rb'\{"name":"([A-Za-z0-9_-]{1,255})"')
# One number per logical request, for hooks to tie the events of its attempts together.
_REQUEST_IDS: Final = itertools.count(1)
_new_object: Final = object.__new__



@attrs.frozen
class ClientStats:
    """Counters of one client since it was built.

    ``requests`` counts HTTP attempts (retries included); ``retries`` the attempts that were
    repeats; ``throttled`` the 429 answers; ``rate`` the client-side pace now (``None``: unlimited);
    ``limit`` the server's rate limit as the client last measured it, in requests per second
    (``None`` until a 429 has shown one). ``rate`` moves around ``limit``: back up after a cut,
    then probing above it.
    """

    requests: int
    retries: int
    throttled: int
    rate: float | None
    limit: float | None = None


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

    #: 429s that came after the call made progress (see ``RetryBudget.accepted``): they do
    #: not count against the request's own limit.
    shared_429s: int = 0
    #: ``budget.accepted`` at this request's last 429 (``None`` before its first).
    accepted_seen: int | None = None

    def may_retry(self, max_retries: int, wait: float | None = None, *, throttled: bool = False) -> bool:
        """Whether one more try is allowed after ``self.attempts`` tries (``wait``: the least delay;
        ``throttled``: the last answer was a 429)."""
        budget = self.budget
        if budget is None:
            return self.attempts <= max_retries
        if throttled:
            seen, self.accepted_seen = self.accepted_seen, budget.accepted
            if seen is not None and seen < budget.accepted:
                self.shared_429s += 1
        return budget.allow(self.attempts - self.shared_429s, max_retries, wait)


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



class _Counters:
    """Request counters shared by a client and the clients derived from it (``with_options``)."""

    __slots__ = ("requests", "retries", "throttled")

    def __init__(self) -> None:
        self.requests = 0
        self.retries = 0
        self.throttled = 0


@attrs.define
class _Exchange:
    """One logical request on its way: what is sent, and what its attempts have learnt."""

    method: str
    route: str
    request: HTTPRequest
    trace: RequestTrace
    audience: str | None
    request_id: int = 0
    waits: _Waits | None = None
    sent_at: float = 0.0  # the limiter's start time of the last attempt
    attempt_sent: float = 0.0  # time.time() when the last attempt left (evidence for a lost answer)
    started: float = 0.0  # time.perf_counter() of the last attempt, for hooks
    retry_after: float | None = None  # the last answer's advice (429 and 503 only)


@attrs.frozen
class _NoAnswer:
    """An attempt that got no answer: the sender's error, its reason with the key hidden."""

    error: SendError
    reason: str


class Transport:
    """Sends requests for one client; see the module docstring.

    ``sender`` makes the exchanges (default: an :class:`AiohttpSender` on ``session``). It is
    closed by :meth:`aclose`, given or made, as httpx's ``Client`` closes its transport; an aiohttp
    session given as ``session=`` stays open (the :class:`AiohttpSender` does not own it).
    ``hooks`` receive the events of every request.
    """

    def __init__(
        self,
        config: ClientConfig,
        *,
        session: aiohttp.ClientSession | None = None,
        limiter: RateLimiter | None = None,
        sender: Sender | None = None,
        hooks: Iterable[Hook] = (),
    ) -> None:
        if sender is not None and session is not None:
            raise ValueError("pass a sender or a session, not both")
        self._config = config
        self.sender: Sender = sender if sender is not None else AiohttpSender(
            session, max_connections=config.max_connections
        )
        self._closed = False
        self._parent: Transport | None = None  # the transport this one was derived from
        # Every pause of the limiter goes through the test mode's switch.
        self.limiter = limiter or RateLimiter(config.max_rate, sleep=pause)
        # A derived client's own ceiling, under the shared limiter (see derive()).
        self._ceiling: RateLimiter | None = None
        self.hooks = hooks if isinstance(hooks, Hooks) else Hooks(hooks)
        # Hooks are fixed at construction: whether there are any is asked once, not per step.
        self._hooked = bool(self.hooks)
        key = config.api_key.reveal()
        base = {
            "Authorization": f"Bearer {key}",
            "X-Batch-Project": config.project_key,
            "User-Agent": USER_AGENT,
            "Accept": "application/json",
        }
        # Built once, in the form HTTPRequest keeps, so that a request does not copy them.
        self._get_headers = CIMultiDictProxy(CIMultiDict(base))
        self._post_headers = CIMultiDictProxy(CIMultiDict({**base, "Content-Type": "application/json"}))
        if sender is None and session is None and isinstance(self.sender, AiohttpSender):
            # The sender made here sends for this client only: its session holds the headers
            # every request carries, once.
            self.sender._preset_headers(self._get_headers)
        self._redactor = _redact.Redactor(key)
        _redact.register(self._redactor)
        self._root = config.root  # a property that formats a string: once, not per request
        self._counters = _Counters()

    def derive(self, config: ClientConfig) -> Transport:
        """A transport with ``config``'s timeout, retries and ceiling, sharing this one's sender,
        limiter, counters and hooks; closing it leaves them open.

        ``config.max_rate`` becomes a ceiling of the derived transport's own requests, enforced
        before they take their turn with the shared (adaptive) limiter.
        """
        derived = Transport.__new__(Transport)
        derived.__dict__.update(self.__dict__)
        derived._config = config
        derived._closed = False
        derived._parent = self
        if config.max_rate is not None and config.max_rate != self._config.max_rate:
            derived._ceiling = RateLimiter(
                config.max_rate, fail_fast=self.limiter.fail_fast, sleep=pause
            )
        return derived

    @property
    def closed(self) -> bool:
        return self._closed or (self._parent is not None and self._parent.closed)

    @property
    def has_hooks(self) -> bool:
        """Whether anything listens to events (build costly details only when it does)."""
        return self._hooked

    def emit(self, event: HookEvent) -> None:
        """Give an event to the client's hooks (a failing hook is logged, never raised)."""
        if self.hooks:
            self.hooks.emit(event)

    def emit_chunk_acknowledged(self, details: ChunkAcknowledged) -> None:
        """For the bulk engine: the server accepted one chunk of an upload."""
        if self.hooks:
            self.hooks.emit(details)

    def stats(self) -> ClientStats:
        counters = self._counters
        limiter = self.limiter
        return ClientStats(
            counters.requests, counters.retries, counters.throttled, limiter.rate, limiter.estimate,
        )

    async def aclose(self) -> None:
        """Close the sender; a derived transport leaves what it shares (sender, limiter) open."""
        self._closed = True
        if self._ceiling is not None:
            self._ceiling.close()  # its own requests waiting for their turn end now
        if self._parent is not None:
            return
        self.limiter.close()  # every request waiting for its turn ends now, with ClientClosedError
        await self.sender.aclose()

    # -- the policy loop ------------------------------------------------------------------

    async def request(
        self,
        method: str,
        route: str,
        *,
        body: bytes | None = None,
        params: Mapping[str, str] | None = None,
        trace: RequestTrace | None = None,
        audience: str | None = None,
    ) -> tuple[int, bytes]:
        """Send one logical request, retrying as the policy says; return ``(status, body)``.

        ``audience``, when given, is the audience hooks are told the request is about (by
        default: the ``name`` of ``params`` or of the body). Raises the :class:`APIError`
        subclass for an error status, :class:`TransportError` when no answer came after the
        last try, :class:`ClientClosedError` once the client is closed.
        """
        exchange = self._prepare(method, route, body, params, trace, audience)
        while True:
            # One attempt, its steps inline (a coroutine of its own would cost a frame and two
            # resumptions on every request). The turn is taken at once, without a coroutine,
            # when nothing paces or pauses the client (the common case); else waited for.
            started = self.limiter.try_acquire() if self._ceiling is None else None
            if started is not None:
                exchange.sent_at = started
            else:
                await self._wait_turn(exchange)
            self._begin(exchange)
            try:
                response = await self.sender.send(exchange.request)
            except SendError as exc:
                answer: HTTPResponse | _NoAnswer = self._no_answer(exchange, exc)
            except BaseException as exc:
                self._broken(exchange, exc)
                raise
            else:
                answer = self._answered(exchange, response)
            wait = self.should_retry(exchange, answer)
            if wait is None:
                return self._conclude(exchange, answer)
            await self.wait_before_retry(exchange, answer, wait)

    def _prepare(
        self,
        method: str,
        route: str,
        body: bytes | None,
        params: Mapping[str, str] | None,
        trace: RequestTrace | None,
        audience: str | None,
    ) -> _Exchange:
        # ``closed``, inline (it runs on every request).
        if self._closed or (self._parent is not None and self._parent.closed):
            raise ClientClosedError("this client is closed; create a new one")
        url = self._root + route
        if params:
            url += "?" + urlencode(params, quote_via=quote, safe="")
        request = prepared_request(
            method, url, self._post_headers if body is not None else self._get_headers, body,
            self._config.timeout,
        )
        # _Exchange(method, route, request, trace, audience), its fields set here: one __init__
        # call less on every request (the class is private, built nowhere else).
        exchange = _new_object(_Exchange)
        exchange.method = method
        exchange.route = route
        exchange.request = request
        exchange.trace = trace if trace is not None else RequestTrace()
        exchange.audience = audience
        exchange.request_id = 0
        exchange.waits = None
        exchange.sent_at = 0.0
        exchange.attempt_sent = 0.0
        exchange.started = 0.0
        exchange.retry_after = None
        if self._hooked:
            exchange.request_id = next(_REQUEST_IDS)
            if audience is None:
                found = _NAME_FIRST.match(body) if body is not None else None
                exchange.audience = found.group(1).decode() if found else (params or {}).get("name")
        return exchange

    async def _wait_turn(self, exchange: _Exchange) -> None:
        """Wait for the attempt's turn: the client's own ceiling, then the shared limiter."""
        if self._ceiling is not None:
            await self._ceiling.acquire()
        exchange.sent_at = await self.limiter.acquire()

    def _begin(self, exchange: _Exchange) -> None:
        """Count the attempt that is about to leave and tell the hooks."""
        # aclose() may have happened while this request waited for its turn or its back-off:
        # say so, rather than a failure from the sender. (``closed``, inline.)
        if self._closed or (self._parent is not None and self._parent.closed):
            raise ClientClosedError("this client was closed while the request was in progress")
        trace = exchange.trace
        trace.attempts += 1
        self._counters.requests += 1
        if self._hooked:
            exchange.started = time.perf_counter()
            self.hooks.emit(RequestSent(request_id=exchange.request_id, method=exchange.method,
                                        route=exchange.route, attempt=trace.attempts,
                                        audience=exchange.audience))
        exchange.attempt_sent = time.time()

    def _broken(self, exchange: _Exchange, exc: BaseException) -> None:
        # Cancelled, or the sender broke: the attempt still ends, for hooks (a span must close).
        if self._hooked:
            self.hooks.emit(RequestFailed(
                request_id=exchange.request_id, method=exchange.method, route=exchange.route,
                attempt=exchange.trace.attempts, reason=type(exc).__name__,
                elapsed=time.perf_counter() - exchange.started, maybe_applied=True,
                audience=exchange.audience,
            ))

    def _answered(self, exchange: _Exchange, response: HTTPResponse) -> HTTPResponse:
        """The answer with the key hidden (the sender's own, or a redacted copy when it may
        show the key; a success's headers, when first read), told to the hooks, and a 429
        taken into account."""
        redactor = self._redactor
        # A server or proxy echoing the key back (in any encoding) must not put it into our
        # error messages, logs, models or hooks. One look at the whole answer at once (body,
        # header names and values, reason phrase): in the common case a few substring
        # searches, and nothing more. A success that no hook sees shows only its body now:
        # its reason phrase goes nowhere, and its headers reach the caller inside the result,
        # looked at when first read (see _conclude).
        if 200 <= response.status < 300 and not response.truncated and not self._hooked:
            shows = redactor.body_may_show_key(response.body)
        else:
            shows = redactor.answer_may_show_key(response.body, response.headers, response.reason)
        answer = self._redacted(response) if shows else response
        status = answer.status
        exchange.retry_after = parse_retry_after(answer.headers) if status in (429, 503) else None
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("%s %s -> %d (attempt %d)", exchange.method, exchange.route, status,
                         exchange.trace.attempts)
        if self._hooked:
            self.hooks.emit(AnswerReceived(
                request_id=exchange.request_id, method=exchange.method, route=exchange.route,
                attempt=exchange.trace.attempts, status=answer.status,
                elapsed=time.perf_counter() - exchange.started, headers=answer.headers,
                audience=exchange.audience,
            ))
        if answer.status == 429:
            self._throttled(exchange, answer)
        return answer

    def _no_answer(self, exchange: _Exchange, error: SendError) -> _NoAnswer:
        if error.maybe_sent:
            trace = exchange.trace
            trace.uncertain = True
            if trace.uncertain_since is None:
                trace.uncertain_since = exchange.attempt_sent
        reason = _shorten(self._redactor.text(str(error.reason)))
        if self.hooks:
            self.hooks.emit(RequestFailed(
                request_id=exchange.request_id, method=exchange.method, route=exchange.route,
                attempt=exchange.trace.attempts, reason=reason,
                elapsed=time.perf_counter() - exchange.started, maybe_applied=error.maybe_sent,
                audience=exchange.audience,
            ))
        return _NoAnswer(error, reason)

    def _redacted(self, response: HTTPResponse) -> HTTPResponse:
        """A copy of an answer that may show the key, with the key hidden from its body,
        headers and reason phrase (the sender's answer itself is kept when it surely does not)."""
        redactor = self._redactor
        reason = response.reason
        if reason:
            reason = redactor.text(reason)
        return HTTPResponse(response.status, redactor.headers(response.headers),
                            redactor.body(response.body), reason, response.truncated)

    def _throttled(self, exchange: _Exchange, answer: HTTPResponse) -> None:
        policy = self._config.retry
        retry_after = exchange.retry_after
        self._counters.throttled += 1
        # A wait beyond max_retry_after is not honoured (the call fails at once): it must not
        # pause the client's other requests either, or one odd header stalls them all.
        honoured = retry_after if retry_after is None or retry_after <= policy.max_retry_after else None
        self.limiter.on_throttle(exchange.sent_at, honoured, answer.headers)
        if self.hooks:
            self.hooks.emit(Throttled(
                request_id=exchange.request_id, method=exchange.method, route=exchange.route,
                attempt=exchange.trace.attempts, retry_after=retry_after, rate=self.limiter.rate,
                audience=exchange.audience,
            ))

    def should_retry(self, exchange: _Exchange, answer: HTTPResponse | _NoAnswer) -> float | None:
        """The wait before another try, or ``None`` when this answer (or failure) is final.

        A granted retry is counted against the request's budget, if it has one.
        """
        policy = self._config.retry
        trace = exchange.trace
        if isinstance(answer, _NoAnswer):
            if not policy.retry_connection_errors or not trace.may_retry(policy.max_retries):
                return None
            retry_after = None
        else:
            # ``policy.should_retry_status``, inline: a success ends here, on every request.
            if answer.status not in policy.retry_statuses:
                if answer.status < 300 and trace.budget is not None:
                    trace.budget.accepted += 1
                return None
            retry_after = exchange.retry_after
            if not (
                not self.limiter.fail_fast
                and (retry_after is None or retry_after <= policy.max_retry_after)
                and trace.may_retry(policy.max_retries, retry_after, throttled=answer.status == 429)
            ):
                return None
            if answer.status == 429:
                # The limiter owns the pace after a 429 (it took in the Retry-After and the cut
                # for every request): the retry queues for its turn there, with no back-off of
                # its own. The wait reported is what the limiter makes it wait, at least.
                return max(retry_after or 0.0, self.limiter.delay())
        if exchange.waits is None:
            exchange.waits = policy.waits()
        return exchange.waits.next(retry_after)

    async def wait_before_retry(
        self, exchange: _Exchange, answer: HTTPResponse | _NoAnswer, wait: float
    ) -> None:
        """Log and count the retry, tell the hooks, and sleep ``wait`` (no time in test mode;
        none after a 429, whose retry waits for its turn in the limiter)."""
        trace = exchange.trace
        status = None if isinstance(answer, _NoAnswer) else answer.status
        if logger.isEnabledFor(logging.DEBUG):
            if status is None:
                assert isinstance(answer, _NoAnswer)
                logger.debug("%s %s failed (%s), attempt %d; retrying in %.2fs", exchange.method,
                             exchange.route, answer.reason, trace.attempts, wait)
            else:
                logger.debug("%s %s -> %d; retrying in %.2fs (attempt %d of %d)", exchange.method,
                             exchange.route, status, wait, trace.attempts + 1,
                             self._config.retry.max_retries + 1)
        trace.retries += 1
        self._counters.retries += 1
        if self.hooks:
            self.hooks.emit(RetryScheduled(
                request_id=exchange.request_id, method=exchange.method, route=exchange.route,
                attempt=trace.attempts, wait=wait, status=status,
                retry_after=None if isinstance(answer, _NoAnswer) else exchange.retry_after,
                audience=exchange.audience,
            ))
        if status != 429:  # a 429's retry waits in the limiter's queue (see should_retry)
            await pause(wait)

    def _conclude(self, exchange: _Exchange, answer: HTTPResponse | _NoAnswer) -> tuple[int, bytes]:
        """The final answer's ``(status, body)``, or the error it stands for."""
        method, route = exchange.method, exchange.route
        if isinstance(answer, _NoAnswer):
            error = TransportError(method, route, answer.reason, attempts=exchange.trace.attempts)
            # The underlying exception is kept as the cause, unless its text would show the key
            # (aiohttp quotes a malformed header line, and the request's own headers in a repr).
            cause = answer.error.__cause__ or answer.error
            if self._redactor.exception_shows_key(cause):
                raise error from None
            raise error from cause
        status = answer.status
        if 200 <= status < 300:
            if answer.truncated:
                raise UnexpectedResponseError(
                    status, None, f"the answer is larger than {len(answer.body)} bytes (the "
                    "sender's cap); it was not read", method=method, route=route,
                    headers=answer.headers,
                )
            self.limiter.on_success(answer.headers, exchange.sent_at)  # reads a count, shows nothing
            exchange.trace.headers = _redact.HeadersOnRead(answer.headers, self._redactor)
            return status, answer.body
        raise error_from_response(
            status, answer.body, method=method, route=route, reason=answer.reason,
            retry_after=exchange.retry_after, headers=answer.headers, redact=self._redactor.text,
        )


def _shorten(text: str) -> str:
    if len(text) > _MAX_REASON_CHARS:
        return text[: _MAX_REASON_CHARS - 1] + "…"
    return text
