"""``MockSender``: answers a client's requests from a function, without any network.

The emulator (the rest of this package) is the API; this is a seam for unit tests of code that
uses a client, as httpx's ``MockTransport``. It uses the client's own request and response types
and shares nothing with the emulator.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable

from .._sender import HTTPRequest, HTTPResponse

__all__ = ["Handler", "MockSender"]

#: What :class:`MockSender` takes: a function from a request to a response, sync or async.
Handler = Callable[[HTTPRequest], "HTTPResponse | Awaitable[HTTPResponse]"]


class MockSender:
    """A :class:`~batch_audiences.Sender` whose every answer comes from ``handler``.

    ``handler`` receives the :class:`~batch_audiences.HTTPRequest` (``method``, ``url``,
    ``route``, ``params``, ``headers``, ``json()``) and returns an
    :class:`~batch_audiences.HTTPResponse`; it may be a coroutine function. To stand for a
    broken connection, it raises :class:`~batch_audiences.SendError`. Retries, pacing, errors and
    hooks are the client's own, so a test sees what production code would. Pair it with
    :func:`set_testing` so that retries take no time:

    >>> import asyncio
    >>> from batch_audiences import AsyncAudiencesClient, HTTPResponse, NotFoundError
    >>> from batch_audiences.testing import MockSender, set_testing
    >>> def handler(request):
    ...     if request.route == "/audiences/view" and request.params["name"] == "vip":
    ...         return HTTPResponse.from_json(200, {"name": "vip", "nb_ids": 3})
    ...     return HTTPResponse.from_json(404, {"error_code": "NOT_FOUND", "error_message": "no"})
    >>> async def main():
    ...     async with AsyncAudiencesClient("key", "project", sender=MockSender(handler)) as client:
    ...         print((await client.view("vip")).nb_ids)
    ...         try:
    ...             await client.view("other")
    ...         except NotFoundError as exc:
    ...             print(exc.status, exc.error_code)
    >>> asyncio.run(main())
    3
    404 NOT_FOUND

    Throttling, retried as against the real API (here with no wait at all):

    >>> answers = iter([HTTPResponse(429, {"Retry-After": "30"}),
    ...                 HTTPResponse.from_json(202, {"indexing_token": "t1"})])
    >>> async def create():
    ...     async with AsyncAudiencesClient(
    ...         "key", "project", sender=MockSender(lambda request: next(answers))
    ...     ) as client:
    ...         accepted = await client.create("vip")
    ...         return accepted.indexing_token, client.stats.retries
    >>> with set_testing(True):
    ...     asyncio.run(create())
    ('t1', 1)
    """

    def __init__(self, handler: Handler) -> None:
        if not callable(handler):
            raise TypeError(f"MockSender needs a callable handler, got {type(handler).__name__}")
        self.handler = handler
        self.closed = False

    def __repr__(self) -> str:
        return f"MockSender({self.handler!r})"

    async def send(self, request: HTTPRequest) -> HTTPResponse:
        """Answer with the handler's response (awaited when it is awaitable)."""
        response = self.handler(request)
        if inspect.isawaitable(response):
            response = await response
        if not isinstance(response, HTTPResponse):
            raise TypeError(
                f"a MockSender handler must return an HTTPResponse, got {type(response).__name__}"
            )
        return response

    async def aclose(self) -> None:
        """Nothing to release; remembered in :attr:`closed`."""
        self.closed = True
