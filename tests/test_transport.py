"""The transport: headers, the session's life, Retry-After parsing, timeouts, logging, counters."""

from __future__ import annotations

import asyncio
import email.utils
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aioresponses import aioresponses

from batch_audiences import (
    AsyncAudiencesClient,
    AudiencesClient,
    ClientClosedError,
    IdAction,
    InvalidSettingError,
    NotFoundError,
    RetryPolicy,
    TransportError,
    __version__,
)
from batch_audiences._transport import parse_retry_after
from batch_audiences.testing import Emulator, ScriptedResponse

from .conftest import MAX_RETRIES, Api, fast_retry_policy

KEY = "transport-secret-key-0123456789"
PROJECT = "project_transport"
NOW = 1_700_000_000.0

VIEW_BODY = {
    "name": "vip", "display_name": None, "type": "CUSTOM_ID", "nb_ids": 0, "indexing_state": "APPLIED",
    "created": "2024-01-01T00:00:00Z", "updated": "2024-01-01T00:00:00Z",
}


# -- headers, seen by a plain aiohttp server (the emulator masks the key in its records) ----


class Capture:
    """A loopback server answering like the API and keeping each request's raw headers."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self.base_url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((request.method, request.path, dict(request.headers), await request.read()))
        if request.path.endswith("/list"):
            return web.json_response({"audiences": [VIEW_BODY], "has_more": False, "count": 1})
        if request.method == "GET":
            return web.json_response(VIEW_BODY)
        return web.json_response({"indexing_token": "tok"}, status=202)


@pytest.fixture
async def capture() -> AsyncIterator[Capture]:
    server = Capture()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server.base_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield server
    await runner.cleanup()


async def test_headers_on_every_route(make_api: Callable[..., Awaitable[Api]], capture: Capture) -> None:
    client = await make_api(api_key=KEY, project_key=PROJECT, base_url=capture.base_url)
    await client.create("vip", display_name="VIP")
    await client.update("vip", [IdAction.add("u1")])
    await client.replace("vip", ["u1"])
    await client.remove("vip")
    await client.view("vip")
    await client.list()
    assert [(m, p) for m, p, _, _ in capture.requests] == [
        ("POST", "/2.8/audiences/create"),
        ("POST", "/2.8/audiences/update"),
        ("POST", "/2.8/audiences/replace"),
        ("POST", "/2.8/audiences/remove"),
        ("GET", "/2.8/audiences/view"),
        ("GET", "/2.8/audiences/list"),
    ]
    for method, _, headers, body in capture.requests:
        assert headers["Authorization"] == f"Bearer {KEY}"
        assert headers["X-Batch-Project"] == PROJECT
        assert re.match(rf"batch-audiences/{re.escape(__version__)}( |$)", headers["User-Agent"])
        if method == "POST":
            assert headers["Content-Type"] == "application/json"
            assert body.startswith(b"{")
        else:
            assert "Content-Type" not in headers
            assert body == b""


async def test_the_headers_on_the_wire_are_the_same_through_a_callers_session(capture: Capture) -> None:
    # A client's own session holds the headers every request carries (set once); a session
    # given by the caller gets them with each request. The server must not see a difference.
    async def calls(client: AsyncAudiencesClient) -> None:
        await client.create("vip")
        await client.view("vip")
        await client.with_options(timeout=5).create("vip2")
        await client.list()

    async with AsyncAudiencesClient(KEY, PROJECT, base_url=capture.base_url) as client:
        await calls(client)
    own = capture.requests[:]
    del capture.requests[:]
    async with (
        aiohttp.ClientSession() as session,
        AsyncAudiencesClient(KEY, PROJECT, base_url=capture.base_url, session=session) as client,
    ):
        await calls(client)
    given = capture.requests[:]
    assert len(own) == len(given) == 4
    for (method, path, headers, body), (method2, path2, headers2, body2) in zip(own, given, strict=True):
        assert (method, path, body) == (method2, path2, body2)
        assert list(headers.items()) == list(headers2.items())
        assert headers["Accept"] == "application/json"
        assert ("Content-Type" in headers) == (method == "POST")


async def test_one_pooled_session_per_client(api: Api, emulator: Emulator) -> None:
    emulator.add_audience("vip")
    await asyncio.gather(*(api.view("vip") for _ in range(10)))
    await api.list()
    assert emulator.count(route="view", status=200) == 10


async def test_requests_one_after_another_reuse_one_connection() -> None:
    # A pooled session keeps its connection alive between requests: every request of a client
    # used one at a time arrives from the same client port.
    peers: list[object] = []

    async def handle(request: web.Request) -> web.Response:
        peers.append(request.transport.get_extra_info("peername") if request.transport else None)
        return web.json_response(VIEW_BODY)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        async with AsyncAudiencesClient(
            KEY, PROJECT, base_url=f"http://127.0.0.1:{runner.addresses[0][1]}"
        ) as client:
            for _ in range(5):
                await client.view("vip")
    finally:
        await runner.cleanup()
    assert len(peers) == 5
    assert len(set(peers)) == 1, peers


# -- session life ----------------------------------------------------------------------------


async def test_external_session_is_not_closed(emulator: Emulator) -> None:
    async with aiohttp.ClientSession() as session:
        client = AsyncAudiencesClient(
            emulator.api_key, emulator.project_key, base_url=emulator.base_url, session=session
        )
        await client.create("vip")
        await client.aclose()
        assert client.closed
        assert not session.closed
        # The caller's session still works after the client is gone.
        async with session.get(f"{emulator.base_url}/2.8/audiences/list", headers=emulator.auth_headers) as r:
            assert r.status == 200
        with pytest.raises(ClientClosedError):
            await client.view("vip")
    assert emulator.audience_names() == ["vip"]


async def test_closed_external_session_is_a_clear_error(emulator: Emulator) -> None:
    session = aiohttp.ClientSession()
    await session.close()
    client = AsyncAudiencesClient(
        emulator.api_key, emulator.project_key, base_url=emulator.base_url, session=session
    )
    with pytest.raises(ClientClosedError):
        await client.view("vip")
    assert emulator.requests == []


def test_session_must_be_a_client_session() -> None:
    with pytest.raises(InvalidSettingError):
        AsyncAudiencesClient(KEY, PROJECT, session="nope")  # type: ignore[arg-type]


def test_sync_client_refuses_a_session() -> None:
    async def make_session() -> aiohttp.ClientSession:
        return aiohttp.ClientSession()

    loop = asyncio.new_event_loop()
    try:
        session = loop.run_until_complete(make_session())
        with pytest.raises(InvalidSettingError) as info:
            AudiencesClient(KEY, PROJECT, session=session)
        assert info.value.field == "session"
        loop.run_until_complete(session.close())
    finally:
        loop.close()


async def test_aclose_twice_and_use_after_close(api: Api, emulator: Emulator) -> None:
    emulator.add_audience("vip", ["u1"])
    await api.view("vip")
    await api.aclose()
    await api.aclose()
    assert api.closed
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: api.create("x"),
        lambda: api.update("vip", [IdAction.add("u2")]),
        lambda: api.replace("vip", []),
        lambda: api.remove("vip"),
        lambda: api.view("vip"),
        lambda: api.list(),
        lambda: api.wait_until_applied("vip"),
    ]
    for call in calls:
        with pytest.raises(ClientClosedError):
            await call()
    with pytest.raises(ClientClosedError):
        async for _ in api.iter_audiences():
            pass
    assert emulator.count() == 1


async def test_close_without_any_request(emulator: Emulator) -> None:
    client = AsyncAudiencesClient(emulator.api_key, emulator.project_key, base_url=emulator.base_url)
    await client.aclose()
    assert client.closed


async def test_async_context_manager(emulator: Emulator) -> None:
    async with AsyncAudiencesClient(
        emulator.api_key, emulator.project_key, base_url=emulator.base_url
    ) as client:
        await client.create("vip")
    assert client.closed
    with pytest.raises(ClientClosedError):
        await client.view("vip")


# -- Retry-After and X-RateLimit-Reset parsing -----------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"Retry-After": "2"}, 2.0),
        ({"Retry-After": "0.25"}, 0.25),
        ({"Retry-After": "0"}, 0.0),
        ({"Retry-After": "-3"}, 0.0),
        ({"Retry-After": email.utils.formatdate(NOW + 30, usegmt=True)}, 30.0),
        ({"Retry-After": email.utils.formatdate(NOW - 30, usegmt=True)}, 0.0),
        ({"Retry-After": "soon"}, None),
        ({"Retry-After": ""}, None),
        ({"X-RateLimit-Reset": str(int(NOW + 7))}, 7.0),
        ({"X-RateLimit-Reset": str(int(NOW - 7))}, 0.0),
        ({"X-RateLimit-Reset": "3"}, 3.0),
        ({"X-RateLimit-Reset": "0.5"}, 0.5),
        ({"X-RateLimit-Reset": "later"}, None),
        ({"Retry-After": "1", "X-RateLimit-Reset": str(int(NOW + 60))}, 1.0),
        ({"Retry-After": "garbage", "X-RateLimit-Reset": "4"}, 4.0),
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    result = parse_retry_after(headers, now=NOW)
    if expected is None:
        assert result is None
    else:
        assert result == pytest.approx(expected)


def test_parse_retry_after_uses_the_clock() -> None:
    import time

    future = email.utils.formatdate(time.time() + 120, usegmt=True)
    assert 110 < (parse_retry_after({"Retry-After": future}) or 0) <= 120


def test_parse_retry_after_reads_case_insensitive_headers() -> None:
    from multidict import CIMultiDict

    assert parse_retry_after(CIMultiDict({"retry-after": "5"}), now=NOW) == 5.0


# -- narrow units with aioresponses ----------------------------------------------------------
# (aioresponses 0.7.9 cannot build responses with aiohttp 3.14; it still raises exceptions, which is
# what these tests need. Answers with headers are tested over real HTTP, in test_retries.)

MOCK_ROOT = "https://api.example.com/2.8"


def mock_client(**kwargs: Any) -> AsyncAudiencesClient:
    settings: dict[str, Any] = {"base_url": "https://api.example.com", "retry": fast_retry_policy()}
    settings.update(kwargs)
    return AsyncAudiencesClient(KEY, PROJECT, **settings)


async def test_timeout_becomes_transport_error_after_retries() -> None:
    async with mock_client() as client:
        with aioresponses() as mocked:
            mocked.get(re.compile(rf"{MOCK_ROOT}/audiences/view.*"), exception=asyncio.TimeoutError(),
                       repeat=True)
            with pytest.raises(TransportError) as info:
                await client.view("vip")
        assert info.value.attempts == MAX_RETRIES + 1
        assert info.value.reason == "timed out"
        assert isinstance(info.value.__cause__, asyncio.TimeoutError)
        assert client.stats.requests == MAX_RETRIES + 1
        assert client.stats.retries == MAX_RETRIES


async def test_connection_error_is_not_retried_when_policy_says_so() -> None:
    policy = RetryPolicy(max_retries=3, base_delay=0.001, retry_connection_errors=False)
    async with mock_client(retry=policy) as client:
        with aioresponses() as mocked:
            mocked.get(re.compile(rf"{MOCK_ROOT}/audiences/view.*"),
                       exception=aiohttp.ServerDisconnectedError(), repeat=True)
            with pytest.raises(TransportError) as info:
                await client.view("vip")
        assert info.value.attempts == 1
        assert "ServerDisconnectedError" in info.value.reason


# -- real timeouts on loopback ---------------------------------------------------------------


async def test_slow_answer_times_out_then_retry_succeeds(
    make_api: Callable[..., Awaitable[Api]], emulator: Emulator
) -> None:
    emulator.add_audience("vip", ["u1"])
    client = await make_api(timeout=0.2)
    emulator.script(ScriptedResponse(action="slow", delay=5.0, route="view"))
    audience = await client.view("vip")
    assert audience.nb_ids == 1
    # The slow one is still being answered (too late) when the retry has its answer.
    assert [r.outcome for r in emulator.requests] == ["in_flight", "ok"]
    assert client.stats.retries == 1


async def test_timeouts_exhaust_retries(
    make_api: Callable[..., Awaitable[Api]], emulator: Emulator
) -> None:
    client = await make_api(timeout=0.1, retry=fast_retry_policy(max_retries=1))
    emulator.script(*[ScriptedResponse(action="slow", delay=5.0, route="list") for _ in range(2)])
    with pytest.raises(TransportError) as info:
        await client.list()
    assert info.value.reason == "timed out"
    assert info.value.attempts == 2


async def test_connection_refused(make_api: Callable[..., Awaitable[Api]], free_port: int) -> None:
    client = await make_api(base_url=f"http://127.0.0.1:{free_port}")
    with pytest.raises(TransportError) as info:
        await client.create("vip")
    assert info.value.attempts == MAX_RETRIES + 1
    assert info.value.route == "/audiences/create"
    assert client.stats.requests == MAX_RETRIES + 1


# -- logging and counters --------------------------------------------------------------------


async def test_debug_log_of_requests_and_retries(
    api: Api, emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    emulator.add_audience("vip")
    emulator.script(ScriptedResponse(503, {"error_code": "MAINTENANCE", "error_message": "m"}, route="view"))
    with caplog.at_level(logging.DEBUG, logger="batch_audiences"):
        await api.view("vip")
    lines = [r.getMessage() for r in caplog.records if r.name == "batch_audiences"]
    assert any(re.fullmatch(r"GET /audiences/view -> 503 \(attempt 1\)", line) for line in lines), lines
    assert any(re.fullmatch(r"GET /audiences/view -> 503; retrying in \d+\.\d+s \(attempt 2 of 4\)", line)
               for line in lines), lines
    assert any(re.fullmatch(r"GET /audiences/view -> 200 \(attempt 2\)", line) for line in lines), lines
    assert all(r.levelno == logging.DEBUG for r in caplog.records if r.name == "batch_audiences")


async def test_nothing_logged_above_debug(
    api: Api, emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    emulator.script(ScriptedResponse(503, route="view"))
    with caplog.at_level(logging.INFO, logger="batch_audiences"), pytest.raises(NotFoundError):
        await api.view("vip")  # a 503, retried, then the 404 of a missing audience
    assert [r for r in caplog.records if r.name == "batch_audiences"] == []


async def test_stats_count_requests_retries_and_throttles(fast_api: Api, emulator: Emulator) -> None:
    emulator.add_audience("vip")
    emulator.script(
        ScriptedResponse(429, route="view", headers={"Retry-After": "0.01"}),
        ScriptedResponse(503, route="view"),
    )
    await fast_api.view("vip")
    await fast_api.list()
    stats = fast_api.stats
    assert (stats.requests, stats.retries, stats.throttled) == (4, 2, 1)
    assert emulator.count() == 4
