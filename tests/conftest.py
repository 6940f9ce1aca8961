"""Shared fixtures: the emulator, and one awaitable client interface over both clients.

Fixture names are a contract used by every test module:

- ``emulator``: a started :class:`Emulator` on the running loop, ``indexing_delay=0``.
- ``client_kind``: ``"async"`` or ``"sync"`` (parametrized).
- ``api``: a client of ``emulator`` in that kind, with the same *awaitable* methods either way
  (the sync client is wrapped by :class:`SyncAdapter`), fast retries; closed at teardown.
- ``fast_api``: like ``api`` with a high ``max_rate``, for tests that meet many 429s.
- ``make_api(**client_kwargs)``: builds more such clients (same kind), all closed at teardown.
- ``fast_retry``: the tiny-wait :class:`RetryPolicy` the clients above use.
- ``wait_spy``: records each back-off wait scheduled, with the server's ``Retry-After`` (a hook
  that ``make_api`` hands to every client of a test that asks for it).
- ``free_port``: a TCP port on 127.0.0.1 that nothing listens on.
- ``clean_env``: the ``BATCH_*`` environment variables removed for the test.

And one helper: ``serving(handler)``, a one-handler ``aiohttp.web`` server on loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import inspect
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

import aiohttp
import pytest
from aiohttp import web

from batch_audiences import AsyncAudiencesClient, AudiencesClient, HookEvent, RetryPolicy, RetryScheduled
from batch_audiences.testing import Emulator, is_testing, set_testing

from ._postgres import postgresql_url as postgresql_url
from .typing._twins import public_members, twin_name

T = TypeVar("T")

#: Retries in the shared clients: enough to see several, few enough to exhaust fast.
MAX_RETRIES = 3
#: The ``max_rate`` of ``fast_api``: high enough that pacing never shows in a test's duration.
FAST_RATE = 2000.0


def fast_retry_policy(max_retries: int = MAX_RETRIES) -> RetryPolicy:
    """Back-off waits of a few milliseconds, so retry tests stay fast."""
    return RetryPolicy(max_retries=max_retries, base_delay=0.002, max_delay=0.01, max_retry_after=5.0)


class SyncAdapter:
    """An :class:`AudiencesClient` behind the awaitable interface of :class:`AsyncAudiencesClient`.

    Its methods are derived from the async client's public members (the pairing rule of
    ``tests/typing/_twins.py``), not restated: each coroutine method runs its blocking twin in
    a worker thread (``asyncio.to_thread``), so the emulator, which serves on the test's own
    loop, keeps answering while the call waits; other methods call the twin at once (argument
    errors raise at the call, as for the async client) and adapt what it returns.
    """

    def __init__(self, client: AudiencesClient) -> None:
        self.sync = client

    def __repr__(self) -> str:
        return repr(self.sync)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.sync.close)

    async def __aenter__(self) -> SyncAdapter:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _in_a_thread(member: Callable[..., Any]) -> Callable[..., Any]:
    name = twin_name(member.__name__)

    @functools.wraps(member)
    async def call(self: SyncAdapter, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(getattr(self.sync, name), *args, **kwargs)

    return call


def _at_once(member: Callable[..., Any]) -> Callable[..., Any]:
    name = twin_name(member.__name__)

    @functools.wraps(member)
    def call(self: SyncAdapter, *args: Any, **kwargs: Any) -> Any:
        return _adapted(getattr(self.sync, name)(*args, **kwargs))

    return call


def _adapted(result: Any) -> Any:
    if isinstance(result, AudiencesClient):
        return SyncAdapter(result)
    if isinstance(result, Iterator):
        return _pages_in_a_thread(result)
    return result


async def _pages_in_a_thread(iterator: Iterator[T]) -> AsyncIterator[T]:
    done = object()
    while True:
        item = await asyncio.to_thread(next, iterator, done)
        if item is done:
            return
        yield item  # type: ignore[misc]


def _forwarded(name: str) -> property:
    return property(lambda self: getattr(self.sync, name))


for _name, _member in public_members(AsyncAudiencesClient).items():
    if _name in vars(SyncAdapter):
        continue
    if isinstance(_member, property):
        setattr(SyncAdapter, _name, _forwarded(_name))
    elif inspect.iscoroutinefunction(_member):
        setattr(SyncAdapter, _name, _in_a_thread(_member))
    else:
        setattr(SyncAdapter, _name, _at_once(_member))


#: What the ``api`` fixture yields: either client, awaited the same way.
Api = AsyncAudiencesClient | SyncAdapter


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    """A running emulator on the test's loop, writes applied at once."""
    async with Emulator(indexing_delay=0.0) as emu:
        yield emu


@pytest.fixture(params=["async", "sync"])
def client_kind(request: pytest.FixtureRequest) -> str:
    """Which client a test runs against."""
    return str(request.param)


@pytest.fixture
def fast_retry() -> RetryPolicy:
    """The retry policy of the shared clients: ``MAX_RETRIES`` retries, millisecond waits."""
    return fast_retry_policy()


@pytest.fixture
async def make_api(
    emulator: Emulator, client_kind: str, request: pytest.FixtureRequest
) -> AsyncIterator[Callable[..., Awaitable[Api]]]:
    """A factory of clients of ``emulator`` in the current kind; every one is closed at teardown.

    Keyword arguments go to the client constructor and override the defaults (the emulator's
    credentials and URL, a fast retry policy, and the ``wait_spy`` hook when the test uses it).
    """
    made: list[Api] = []
    spy = request.getfixturevalue("wait_spy") if "wait_spy" in request.fixturenames else None

    async def make(**kwargs: Any) -> Api:
        settings: dict[str, Any] = {
            "api_key": emulator.api_key,
            "project_key": emulator.project_key,
            "base_url": emulator.base_url,
            "timeout": 5.0,
        }
        if "retry" not in kwargs and "max_retries" not in kwargs:
            settings["retry"] = fast_retry_policy()
        if spy is not None:
            settings["hooks"] = [spy]
        settings.update(kwargs)
        client: Api
        if client_kind == "async":
            client = AsyncAudiencesClient(**settings)
        else:
            # Built in a worker thread like every other call of the adapter, which also checks
            # that the facade does not need the caller's thread to be loop-free.
            client = SyncAdapter(await asyncio.to_thread(lambda: AudiencesClient(**settings)))
        made.append(client)
        return client

    yield make
    for client in made:
        await client.aclose()


@pytest.fixture
async def api(make_api: Callable[..., Awaitable[Api]]) -> Api:
    """A client of ``emulator`` (async, or sync behind :class:`SyncAdapter`), fast retries."""
    return await make_api()


@pytest.fixture
async def fast_api(make_api: Callable[..., Awaitable[Api]]) -> Api:
    """Like ``api``, with ``max_rate=FAST_RATE``.

    After a 429 the adaptive limiter paces the client; with no rate known it guesses about one
    request per second, so a test that meets several 429s in a row would wait seconds. With a
    high ceiling the cuts start from it, and the waits stay in milliseconds.
    """
    return await make_api(max_rate=FAST_RATE)


class WaitSpy:
    """A hook recording every retry the clients schedule: ``(retry_after, wait)`` pairs.

    The server's ``Retry-After`` reaches the policy as ``retry_after``; checking it here tests
    the parsing and the minimum wait without timing anything.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[float | None, float]] = []

    def __call__(self, event: HookEvent) -> None:
        if isinstance(event, RetryScheduled):
            self.calls.append((event.retry_after, event.wait))

    @property
    def retry_afters(self) -> list[float | None]:
        return [retry_after for retry_after, _ in self.calls]

    @property
    def waits(self) -> list[float]:
        return [wait for _, wait in self.calls]


@pytest.fixture
def wait_spy() -> WaitSpy:
    """The retries scheduled by the clients ``make_api`` builds for this test (any thread)."""
    return WaitSpy()


@pytest.fixture(autouse=True)
def _test_mode_left_off() -> Iterator[None]:
    """A test that turns the zero-wait test mode on must turn it off: later tests time real waits."""
    yield
    leaked = is_testing()
    set_testing(False)
    assert not leaked, "the test left batch_audiences.testing.set_testing(True) on"


@pytest.fixture
def free_port() -> Iterator[int]:
    """A loopback port nothing listens on, for the whole test.

    The port stays bound (never listening) on 127.0.0.1, and on ::1 where there is IPv6, until
    the test ends: a connection to it is refused, and no other process (tests run side by side
    on one machine) can start listening on it meanwhile, as it could on a port merely free a
    moment ago.
    """
    with contextlib.ExitStack() as held:
        while True:
            v4 = held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            v4.bind(("127.0.0.1", 0))
            port = int(v4.getsockname()[1])
            if not socket.has_ipv6:
                break
            v6 = held.enter_context(socket.socket(socket.AF_INET6, socket.SOCK_STREAM))
            try:
                v6.bind(("::1", port))
            except OSError as error:
                if error.errno == errno.EADDRINUSE:
                    continue  # taken on ::1: another port (the sockets so far stay held)
                break  # no usable IPv6 loopback: "localhost" is 127.0.0.1 only
            break
        yield port


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Remove the SDK's environment variables, so a test sees only what it sets."""
    for variable in ("BATCH_REST_API_KEY", "BATCH_PROJECT_KEY", "BATCH_API_BASE_URL"):
        monkeypatch.delenv(variable, raising=False)
    return monkeypatch


@contextlib.asynccontextmanager
async def serving(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> AsyncIterator[str]:
    """Serve ``handler`` for every method and path on 127.0.0.1 (a free port); yields the base
    URL, and stops the server on exit."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def forward(
    emulator: Emulator, request: web.Request, body: bytes, session: aiohttp.ClientSession | None = None
) -> web.Response:
    """``request`` (whose body is ``body``) passed on to ``emulator``, and its answer: a gateway's
    step, for handlers given to :func:`serving`. Through ``session`` when given (its connections
    kept alive between requests), else through a session of its own."""
    if session is None:
        async with aiohttp.ClientSession() as own:
            return await forward(emulator, request, body, own)
    headers = {k: v for k, v in request.headers.items() if k.lower() not in {"host", "content-length"}}
    async with session.request(
        request.method, emulator.base_url + request.path_qs, data=body, headers=headers,
    ) as answer:
        return web.Response(status=answer.status, body=await answer.read(), content_type=answer.content_type)
