"""The exception tree, and the mapping from an HTTP answer to one of its classes.

::

    BatchAudiencesError
    ├── ConfigurationError              missing credential, bad setting
    │   └── InvalidSettingError         a setting's value is wrong (also a ValidationError)
    ├── ValidationError (ValueError)    bad input, raised before any request is sent
    ├── ClientClosedError (RuntimeError) the client was used after close()
    ├── ThrottledError                  the client-side limiter would wait, and fail-fast was asked
    ├── IndexingTimeoutError (TimeoutError)
    ├── TransportError                  connection failure or timeout, after retries
    ├── UncertainOutcomeError           a write's answer was lost and the state cannot tell
    └── APIError                        the server answered with an error
        ├── BadRequestError             400 and other 4xx
        │   └── AudienceExistsError     create of a name that is taken
        ├── AuthenticationError         401, 403
        ├── NotFoundError               404
        ├── RateLimitError              429, after retries
        ├── ServerError                 500 and other 5xx
        │   └── ServiceUnavailableError 503, after retries
        └── UnexpectedResponseError     a success status with a body the SDK cannot read

Catch :class:`BatchAudiencesError` for everything, or one class for a precise case.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

import orjson
from multidict import CIMultiDict, CIMultiDictProxy

__all__ = [
    "APIError",
    "AudienceExistsError",
    "AuthenticationError",
    "BadRequestError",
    "BatchAudiencesError",
    "ClientClosedError",
    "ConfigurationError",
    "IndexingTimeoutError",
    "InvalidSettingError",
    "NotFoundError",
    "RateLimitError",
    "ServerError",
    "ServiceUnavailableError",
    "ThrottledError",
    "TransportError",
    "UncertainOutcomeError",
    "UnexpectedResponseError",
    "ValidationError",
    "error_from_response",
    "MAX_ERROR_BODY",
]

# A proxy can answer with a whole HTML page; an exception message should stay one readable line.
_MAX_MESSAGE_CHARS = 300
#: The most of an error answer's body an :class:`APIError` keeps in :attr:`APIError.body`.
MAX_ERROR_BODY: Final = 16 * 1024


class BatchAudiencesError(Exception):
    """Root of every exception the SDK raises on purpose."""


class ConfigurationError(BatchAudiencesError):
    """The client cannot be built as asked: a missing credential, a bad URL or setting."""


class ValidationError(BatchAudiencesError, ValueError):
    """Input that the API would reject, caught before any request is sent.

    ``field`` names what was wrong (``"name"``, ``"ids[3].attributes"``…), ``rule`` says
    which rule it broke.

    >>> from batch_audiences import IdAction, ValidationError
    >>> try:
    ...     IdAction.remove("")
    ... except ValidationError as exc:
    ...     print(exc.field)
    id
    """

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule


class InvalidSettingError(ConfigurationError, ValidationError):
    """A client setting with a value it cannot take (a non-positive timeout, a bad base URL…).

    It is both a :class:`ConfigurationError` and a :class:`ValidationError`, so either catches it.
    """


class ClientClosedError(BatchAudiencesError, RuntimeError):
    """A client was used after ``close()`` / ``aclose()``."""


class ThrottledError(BatchAudiencesError):
    """The client's own rate limiter would have to wait, and the caller asked it not to."""

    def __init__(self, wait: float) -> None:
        super().__init__(f"the client-side rate limit needs a wait of {wait:.3f}s")
        self.wait = wait


class IndexingTimeoutError(BatchAudiencesError, TimeoutError):
    """A write was still being indexed when ``wait_until_applied`` gave up."""

    def __init__(self, name: str, indexing_token: str | None, timeout: float, state: str) -> None:
        token = f" (token {indexing_token})" if indexing_token else ""
        super().__init__(
            f"audience {name!r}{token} still {state} after {timeout:g}s of waiting"
        )
        self.name = name
        self.indexing_token = indexing_token
        self.timeout = timeout
        self.state = state


class TransportError(BatchAudiencesError):
    """The request did not get an HTTP answer: connection refused or broken, or a timeout.

    Raised after the retries allowed for the route are spent. ``__cause__`` holds the
    underlying ``aiohttp`` or ``asyncio`` exception.
    """

    def __init__(self, method: str, route: str, reason: str, *, attempts: int = 1) -> None:
        super().__init__(f"{method} {route} failed after {attempts} attempt(s): {reason}")
        self.method = method
        self.route = route
        self.reason = reason
        self.attempts = attempts


class UncertainOutcomeError(BatchAudiencesError):
    """A write's answer was lost, and the state afterwards cannot tell whether this call did it.

    Raised by ``create`` when a try broke after sending, a later try found the name taken, and
    no evidence (the audience's ``created`` time against the server's ``Date``) tells whether the
    audience is this call's or someone else's. The audience exists; check it is yours before
    writing to it. ``__cause__`` is the last try's error.
    """

    def __init__(self, method: str, route: str, name: str, reason: str) -> None:
        super().__init__(f"{method} {route} for {name!r}: outcome unknown: {reason}")
        self.method = method
        self.route = route
        self.name = name
        self.reason = reason


class APIError(BatchAudiencesError):
    """The server answered with an error status.

    ``status`` is the HTTP status; ``error_code`` and ``error_message`` come from the error
    body when it has them, and are ``None`` / a readable substitute when it does not.
    ``headers`` are the answer's headers, matched case-insensitively (log a request ID from
    them, if Batch sends one), and
    ``body`` its raw body, at most :data:`MAX_ERROR_BODY` (16 KiB) of it; in both, the API key
    is replaced by ``<redacted>`` should the server echo it.
    """

    def __init__(
        self,
        status: int,
        error_code: str | None,
        error_message: str,
        *,
        method: str = "",
        route: str = "",
        retry_after: float | None = None,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
    ) -> None:
        where = f" on {method} {route}" if method else ""
        code = f" {error_code}" if error_code else ""
        super().__init__(f"HTTP {status}{where}:{code} {error_message}".rstrip())
        self.status = status
        self.error_code = error_code
        self.error_message = error_message
        self.method = method
        self.route = route
        self.retry_after = retry_after
        # Case-insensitive, as HTTP headers are (aiohttp writes "X-Request-ID", say).
        self.headers: Mapping[str, str] = CIMultiDictProxy(CIMultiDict(headers or {}))
        self.body = body[:MAX_ERROR_BODY]

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only arguments do not survive the default pickling of exceptions.
        return (
            _rebuild_api_error,
            (type(self), self.status, self.error_code, self.error_message, self.method,
             self.route, self.retry_after, list(self.headers.items()), self.body),
        )


def _rebuild_api_error(cls: type[APIError], *args: Any) -> APIError:
    status, code, message, method, route, retry_after, headers, body = args
    return cls(status, code, message, method=method, route=route, retry_after=retry_after,
               headers=headers, body=body)


class BadRequestError(APIError):
    """400, or another 4xx without a class of its own: the request was malformed."""


class AudienceExistsError(BadRequestError):
    """A create named an audience that already exists in the project."""


class AuthenticationError(APIError):
    """401 or 403: the REST API key is not valid for this project."""


class NotFoundError(APIError):
    """404: the audience (or indexing token, or route) does not exist."""


class RateLimitError(APIError):
    """429 after every retry was spent; ``retry_after`` is the server's last advice, if any."""


class ServerError(APIError):
    """500 or another 5xx: the server failed."""


class ServiceUnavailableError(ServerError):
    """503 after every retry was spent: Batch is in maintenance."""


class UnexpectedResponseError(APIError):
    """A success status whose body is not what the route returns (missing, not JSON, wrong shape),
    or a status the API never answers with: a redirect (3xx), which the SDK never follows (the
    key would go with it), or a 1xx."""


_BY_STATUS: dict[int, type[APIError]] = {
    401: AuthenticationError,
    403: AuthenticationError,
    404: NotFoundError,
    429: RateLimitError,
    503: ServiceUnavailableError,
}


def _never_answered(status: int) -> bool:
    """Whether the API never answers with ``status``: a redirect (3xx) or an interim 1xx."""
    return status < 200 or 300 <= status < 400


def _error_class(status: int) -> type[APIError]:
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    if 400 <= status < 500:
        return BadRequestError
    if status >= 500:
        return ServerError
    if _never_answered(status):
        return UnexpectedResponseError
    return APIError


def _shorten(text: str) -> str:
    text = " ".join(text.split())
    if len(text) > _MAX_MESSAGE_CHARS:
        return text[: _MAX_MESSAGE_CHARS - 1] + "…"
    return text


def parse_error_body(body: bytes) -> tuple[str | None, str | None]:
    """Read ``(error_code, error_message)`` from an error body of any shape, never raising."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, None
    if not isinstance(data, dict):
        return None, None
    code, message = data.get("error_code"), data.get("error_message")
    # An empty or blank field says nothing: None, so that a readable substitute is used.
    code = None if code is None else _shorten(str(code)) or None
    message = None if message is None else _shorten(str(message)) or None
    return code, message


def error_from_response(
    status: int,
    body: bytes,
    *,
    method: str,
    route: str,
    reason: str | None = None,
    retry_after: float | None = None,
    headers: Mapping[str, str] | None = None,
    redact: Callable[[str], str] | None = None,
) -> APIError:
    """Build the typed exception for an error answer, whatever its body looks like.

    ``redact``, when given, is applied to every text of the error after decoding (the body and
    headers are expected to be redacted already).
    """
    code, message = parse_error_body(body)
    if _never_answered(status):
        location = (headers or {}).get("Location")
        where = f" to {_shorten(location)}" if location else ""
        kind = f"a redirect ({status}){where}" if status >= 300 else f"an interim answer ({status})"
        message = (f"the server answered with {kind}, not followed: the Audience API does not "
                   "redirect (check base_url)")
    elif message is None:
        reason = _shorten(reason or "") or "error"  # a reason phrase may hold line breaks too
        if body.strip():
            message = f"{reason} (unreadable body: {_shorten(body.decode('utf-8', 'replace'))})"
        else:
            message = f"{reason} (empty body)"
    if redact is not None:
        code = None if code is None else redact(code)
        message = redact(message)
    return _error_class(status)(
        status, code, message, method=method, route=route, retry_after=retry_after,
        headers=headers, body=body,
    )
