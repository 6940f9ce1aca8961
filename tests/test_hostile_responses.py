"""Hostile or broken responses: whatever a server or a proxy sends, only the SDK's errors come out.

Property tests (hypothesis) feed the response parser (``_codec.decode``), the error mapping
(``_errors.error_from_response``) and the ``Retry-After`` reader arbitrary input; then whole
requests go through a real client to a loopback server that answers with arbitrary statuses,
headers and bodies, and to a raw TCP server that breaks HTTP itself. The rule: a model comes out,
or an exception that is a :class:`BatchAudiencesError` — never a ``KeyError``, ``TypeError`` or
a hang. Tolerance where it is the right call: states and types this SDK does not know must not
break a listing of 10,000 audiences.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import attrs
import orjson
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batch_audiences import (
    Accepted,
    AiohttpSender,
    APIError,
    AsyncAudiencesClient,
    Audience,
    AudiencePage,
    BatchAudiencesError,
    IdAction,
    IndexingState,
    RateLimitError,
    RetryPolicy,
    ServerError,
    TransportError,
    UnexpectedResponseError,
)
from batch_audiences._codec import decode
from batch_audiences._errors import error_from_response
from batch_audiences._transport import parse_retry_after
from batch_audiences.testing import Emulator, ScriptedResponse

from ._compat import async_timeout
from .conftest import serving
from .test_careless_callers import no_asyncio_errors  # noqa: F401  (autouse: asyncio logged no error)

T = TypeVar("T")
API_KEY = "hostile-test-key-0123456789"
PROPERTY = settings(max_examples=150, deadline=None)
# Each example of the HTTP properties is a real request: fewer of them.
HTTP_PROPERTY = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
MODELS: list[type[Any]] = [Accepted, Audience, AudiencePage]

# -- what a broken server can send -------------------------------------------------------------

JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),  # what orjson can write; bigger numbers come as raw bytes below
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=10),
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
FIELD_VALUES = st.one_of(
    JSON_VALUES,
    st.sampled_from(
        ["APPLIED", "IN_PROGRESS", "REPLACED", "SOMETHING_NEW", "CUSTOM_ID", "", "2023-08-12T22:30:05Z"]
    ),
)
VIEW_FIELDS = ["name", "display_name", "type", "nb_ids", "indexing_state", "created", "updated"]


@st.composite
def audience_shapes(draw: st.DrawFn) -> dict[str, Any]:
    """Near-valid view objects: fields missing, extra, or of the wrong type."""
    obj: dict[str, Any] = {
        "name": "vip",
        "display_name": "VIP",
        "type": "CUSTOM_ID",
        "nb_ids": 3,
        "indexing_state": "APPLIED",
        "created": "2023-08-12T22:30:05Z",
        "updated": "2023-08-12T22:30:05Z",
    }
    for field in draw(st.lists(st.sampled_from(VIEW_FIELDS), max_size=3, unique=True)):
        if draw(st.booleans()):
            del obj[field]
        else:
            obj[field] = draw(FIELD_VALUES)
    obj.update(draw(st.dictionaries(st.text(max_size=6), JSON_SCALARS, max_size=2)))
    return obj


@st.composite
def page_shapes(draw: st.DrawFn) -> dict[str, Any]:
    page: dict[str, Any] = {
        "audiences": draw(st.lists(audience_shapes(), max_size=3)),
        "has_more": draw(st.one_of(st.booleans(), JSON_SCALARS)),
        "next_from": draw(st.one_of(st.text(max_size=8), JSON_SCALARS)),
        "count": draw(JSON_SCALARS),
    }
    for field in draw(st.lists(st.sampled_from(list(page)), max_size=2, unique=True)):
        del page[field]
    return page


HTML_PAGE = (
    b"<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head>"
    b"<body><h1>Bad Gateway</h1><p>The proxy server received an invalid response.</p></body></html>"
)
BODIES = st.one_of(
    st.just(b""),
    st.just(b"   \n"),
    st.just(HTML_PAGE),
    st.binary(max_size=64),
    JSON_VALUES.map(orjson.dumps),
    audience_shapes().map(orjson.dumps),
    page_shapes().map(orjson.dumps),
    st.dictionaries(st.sampled_from(["indexing_token", "error_code", "error_message"]), JSON_VALUES).map(
        orjson.dumps
    ),
    st.sampled_from(
        [
            b'{"indexing_token": "t1"',  # truncated
            b'{"nb_ids": 1e999, "name": "vip"}',  # overflows to infinity
            b'{"name": "vip", "nb_ids": 123456789012345678901234567890}',  # past 64 bits
            b'{"name": "vip", "nb_ids": NaN}',
            b'{"audiences": [], "has_more": true}',  # more, but no cursor
            b'{"audiences": {}, "has_more": false}',
            b"\xff\xfe\x00{",  # not UTF-8
            b"[" * 5000 + b"]" * 5000,  # nested deeper than any parser allows
            b'{"error_code": ' + b"9" * 400 + b"}",
            b"null",
            b"[]",
            b'"just a string"',
        ]
    ),
)
STATUSES = st.one_of(
    st.sampled_from(
        [200, 201, 202, 204, 301, 302, 307, 400, 401, 403, 404, 409, 418, 429, 500, 502, 503, 504]
    ),
    st.integers(200, 599).filter(lambda s: s not in (204, 205, 304)),
)
OPERATIONS = ["create", "update", "replace", "remove", "view", "list"]


def check_error(error: BaseException, *, key: str = API_KEY) -> None:
    """An SDK error, one readable line, bounded, without the key."""
    assert isinstance(error, BatchAudiencesError), f"{type(error).__name__} escaped the SDK: {error!r}"
    text = str(error)
    assert "\n" not in text
    assert len(text) < 1200, f"an error message of {len(text)} characters"
    assert key not in text
    assert key not in repr(error)


def sdk_outcome(function: Callable[[], T]) -> T | BatchAudiencesError:
    """What ``function`` returns, or the SDK error it raised (anything else propagates)."""
    try:
        return function()
    except BatchAudiencesError as error:
        return error


async def async_outcome(awaitable: Awaitable[T]) -> T | BatchAudiencesError:
    try:
        return await awaitable
    except BatchAudiencesError as error:
        return error


# -- the parser, the error mapping and Retry-After, alone ------------------------------------


@PROPERTY
@given(body=BODIES, cls=st.sampled_from(MODELS), status=st.integers(200, 299))
def test_decode_gives_a_model_or_unexpected_response(body: bytes, cls: type[Any], status: int) -> None:
    model = sdk_outcome(lambda: decode(body, cls, status=status, method="GET", route="/audiences/view"))
    if isinstance(model, BatchAudiencesError):
        check_error(model)
        assert isinstance(model, UnexpectedResponseError)
        assert model.status == status
        return
    assert isinstance(model, cls)
    if isinstance(model, Audience):
        assert isinstance(model.name, str)
        assert isinstance(model.nb_ids, int)
        assert not isinstance(model.nb_ids, bool)
    if isinstance(model, AudiencePage):
        assert all(isinstance(a, Audience) for a in model.audiences)
        assert not model.has_more or isinstance(model.next_from, str)


@PROPERTY
@given(body=BODIES, status=st.integers(300, 599), reason=st.one_of(st.none(), st.text(max_size=20)))
def test_any_error_answer_maps_to_its_class(body: bytes, status: int, reason: str | None) -> None:
    error = error_from_response(status, body, method="POST", route="/audiences/update", reason=reason)
    check_error(error)
    assert error.status == status
    assert isinstance(error.error_message, str)
    assert error.error_message
    if 400 <= status < 500:
        assert type(error).__name__ in {
            "BadRequestError", "AuthenticationError", "NotFoundError", "RateLimitError"
        }
    elif status >= 500:
        assert isinstance(error, ServerError)


HEADER_TEXT = st.one_of(
    st.text(max_size=30),
    st.sampled_from(
        ["0", "-5", "1.5", "nan", "inf", "-inf", "1e999", "1e10", "Wed, 21 Oct 2015 07:28:00 GMT",
         "Wed, 21 Oct 2099 07:28:00", "Mon, 99 Foo 2015 99:99:99 GMT", "", " ", "0x10"]
    ),
    st.floats().map(str),
)


@PROPERTY
@given(retry_after=st.one_of(st.none(), HEADER_TEXT), reset=st.one_of(st.none(), HEADER_TEXT))
def test_retry_after_is_a_wait_or_none(retry_after: str | None, reset: str | None) -> None:
    headers = {}
    if retry_after is not None:
        headers["Retry-After"] = retry_after
    if reset is not None:
        headers["X-RateLimit-Reset"] = reset
    wait = parse_retry_after(headers, now=1_700_000_000.0)
    assert wait is None or (isinstance(wait, float) and not math.isnan(wait) and wait >= 0)


# -- the same through a real client and a loopback server ------------------------------------


@attrs.define
class Answer:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = attrs.Factory(dict)


@attrs.define
class HostileServer:
    """An aiohttp server answering every request with :attr:`answer`."""

    url: str
    answer: Answer
    hits: int = 0


@pytest.fixture
async def hostile() -> AsyncIterator[HostileServer]:
    server = HostileServer("", Answer())

    async def handle(request: web.Request) -> web.StreamResponse:
        await request.read()
        server.hits += 1
        answer = server.answer
        return web.Response(status=answer.status, body=answer.body or None, headers=answer.headers)

    async with serving(handle) as server.url:
        yield server


def client_for(url: str, **kwargs: Any) -> AsyncAudiencesClient:
    settings_: dict[str, Any] = {
        "base_url": url,
        "timeout": 5.0,
        "retry": RetryPolicy(max_retries=0, base_delay=0.001, max_delay=0.01, max_retry_after=2.0),
    }
    settings_.update(kwargs)
    return AsyncAudiencesClient(API_KEY, "project_hostile", **settings_)


def call(client: AsyncAudiencesClient, operation: str) -> Awaitable[object]:
    if operation == "create":
        return client.create("vip", display_name="VIP")
    if operation == "update":
        return client.update("vip", [IdAction.add("u1"), IdAction.remove("u2")])
    if operation == "replace":
        return client.replace("vip", ["u1"])
    if operation == "remove":
        return client.remove("vip")
    if operation == "view":
        return client.view("vip")
    return client.list(limit=5)


EXPECTED_MODEL = {
    "create": Accepted, "update": Accepted, "replace": Accepted, "remove": Accepted,
    "view": Audience, "list": AudiencePage,
}


@HTTP_PROPERTY
@given(
    operation=st.sampled_from(OPERATIONS),
    status=STATUSES,
    body=BODIES,
    content_type=st.sampled_from(["application/json", "text/html; charset=utf-8", "text/plain", None]),
    retry_after=st.one_of(st.none(), HEADER_TEXT.filter(lambda v: v.isprintable())),
)
async def test_any_answer_over_http_gives_a_model_or_an_sdk_error(
    hostile: HostileServer,
    operation: str,
    status: int,
    body: bytes,
    content_type: str | None,
    retry_after: str | None,
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    if retry_after is not None:
        headers["Retry-After"] = retry_after.strip() or "0"
    hostile.answer = Answer(status, body, headers)
    async with client_for(hostile.url) as client, async_timeout(10):
        result = await async_outcome(call(client, operation))
    if isinstance(result, BatchAudiencesError):
        check_error(result)
        assert isinstance(result, APIError), f"an HTTP answer came back, not {type(result).__name__}"
        assert result.status == status
        assert status >= 300 or isinstance(result, UnexpectedResponseError)
        return
    assert 200 <= status < 300, f"HTTP {status} was taken for a success"
    assert isinstance(result, EXPECTED_MODEL[operation])


async def test_a_huge_retry_after_fails_that_call_and_does_not_stall_the_client(
    hostile: HostileServer,
) -> None:
    # The server asks for a wait far beyond max_retry_after: the call fails at once with the
    # server's figure, and the client's other calls must not inherit an endless pause.
    async with client_for(hostile.url, retry=RetryPolicy(max_retries=3, max_retry_after=2.0)) as client:
        for huge in ("1e10", "inf", "1e999", "Wed, 21 Oct 2999 07:28:00 GMT"):
            hostile.answer = Answer(429, b'{"error_code": "TOO_MANY"}', {"Retry-After": huge})
            async with async_timeout(5):
                with pytest.raises(RateLimitError) as raised:
                    await client.view("vip")
            assert raised.value.retry_after is not None
            assert raised.value.retry_after > 2.0
            hostile.answer = Answer(200, orjson.dumps({"name": "vip", "nb_ids": 1}))
            async with async_timeout(5):
                audience = await client.view("vip")
            assert audience.nb_ids == 1


async def test_an_endless_body_is_cut_off_with_an_sdk_error() -> None:
    # A broken proxy streams for ever: the client must stop reading at its cap, not fill memory
    # until the request times out. The cap is the sender's option, here 1 MiB.
    sent = 0

    async def endless(request: web.Request) -> web.StreamResponse:
        nonlocal sent
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        await response.prepare(request)
        chunk = b"[" + b"0," * 32_768
        try:
            while sent < 64 << 20:  # bounded, in case the client does read for ever
                await response.write(chunk)
                sent += len(chunk)
        except (ConnectionError, RuntimeError):
            pass
        return response

    async with serving(endless) as url:
        async with (
            client_for(url, timeout=30.0, sender=AiohttpSender(max_response_bytes=1 << 20)) as client,
            async_timeout(20),
        ):
            with pytest.raises(UnexpectedResponseError, match="bytes") as raised:
                await client.view("vip")
        check_error(raised.value)
        assert "1048576 bytes" in str(raised.value)  # the sender's cap, not the default
        assert sent < 32 << 20, f"the client read {sent} bytes of an endless answer"


@pytest.mark.parametrize("status", [200, 502])
async def test_an_enormous_body_gives_a_short_message(hostile: HostileServer, status: int) -> None:
    hostile.answer = Answer(status, b"<html>" + b"x" * (8 << 20) + b"</html>", {"Content-Type": "text/html"})
    async with client_for(hostile.url) as client:
        with pytest.raises(APIError) as raised:
            await client.list()
    check_error(raised.value)
    assert raised.value.status == status


# -- raw TCP: answers that are not even HTTP -------------------------------------------------

RAW_ANSWERS = {
    "garbage": b"this is not http\r\n\r\n",
    "closed-at-once": b"",
    "truncated-body": (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"na"
    ),
    "bad-gzip": (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
        b"Content-Length: 10\r\n\r\nnot-gzip!!"
    ),
    "bad-chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n",
    "huge-header": b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n",
    "bad-status-line": b"HTTP/1.1 abc Nope\r\nContent-Length: 0\r\n\r\n",
    "http-0.9": b"{\"indexing_token\": \"t\"}",
}


@pytest.fixture
async def raw_server() -> AsyncIterator[Callable[[bytes], str]]:
    servers: list[asyncio.base_events.Server] = []
    writers: list[asyncio.StreamWriter] = []

    async def start(answer: bytes) -> str:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writers.append(writer)
            try:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(answer)
                await writer.drain()
            except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"

    yield start  # type: ignore[misc]
    for server in servers:
        server.close()
        await server.wait_closed()
    for writer in writers:
        writer.close()


@pytest.mark.parametrize("operation", ["create", "update", "view"])
@pytest.mark.parametrize("answer", list(RAW_ANSWERS), ids=list(RAW_ANSWERS))
async def test_broken_http_gives_an_sdk_error(
    raw_server: Callable[[bytes], Awaitable[str]], answer: str, operation: str
) -> None:
    url = await raw_server(RAW_ANSWERS[answer])
    async with (
        client_for(url, retry=RetryPolicy(max_retries=1, base_delay=0.001, max_delay=0.01)) as client,
        async_timeout(10),
    ):
        with pytest.raises(BatchAudiencesError) as raised:
            await call(client, operation)
    check_error(raised.value)
    assert isinstance(raised.value, (TransportError, APIError))


# -- tolerance: one unknown value must not break a listing -----------------------------------


def _page_of(count: int, start: int, *, more: bool) -> dict[str, Any]:
    states = ["APPLIED", "IN_PROGRESS", "REPLACED", "ARCHIVED", "QUEUED_V3", ""]
    types = ["CUSTOM_ID", "custom_ids", "SEGMENT", "PREDICTED_V2"]
    audiences = [
        {
            "name": f"aud-{i}",
            "display_name": None if i % 7 == 0 else f"Audience {i}",
            "type": types[i % len(types)],
            "nb_ids": i,
            "indexing_state": states[i % len(states)],
            "created": "2023-08-12T22:30:05Z" if i % 5 else "not a date",
            "updated": "2023-08-12T22:30:05Z",
            "some_new_field": {"nested": [i]},
        }
        for i in range(start, start + count)
    ]
    page: dict[str, Any] = {"audiences": audiences, "has_more": more}
    if more:
        page["next_from"] = f"cursor-{start + count}"
    if start == 0:
        page["count"] = 10_000
    return page


async def test_unknown_states_and_types_do_not_break_a_listing_of_10000() -> None:
    async with Emulator(indexing_delay=0.0) as emu, AsyncAudiencesClient(
        emu.api_key, emu.project_key, base_url=emu.base_url
    ) as client:
        # One page of 10,000 (a server may ignore the limit), then the same over 100 pages.
        emu.script(ScriptedResponse(200, _page_of(10_000, 0, more=False), route="list"))
        page = await client.list(limit=100)
        assert len(page.audiences) == 10_000
        assert page.count == 10_000
        emu.script(*(ScriptedResponse(200, _page_of(100, s, more=s < 9_900), route="list")
                     for s in range(0, 10_000, 100)))
        seen = [audience async for audience in client.iter_audiences(page_size=100)]
    assert [a.name for a in seen] == [f"aud-{i}" for i in range(10_000)]
    assert {a.indexing_state for a in seen} == {
        IndexingState.APPLIED, IndexingState.IN_PROGRESS, IndexingState.REPLACED, "ARCHIVED", "QUEUED_V3", ""
    }
    kinds = {str(getattr(a.type, "value", a.type)) for a in seen}
    assert kinds == {"custom_ids", "SEGMENT", "PREDICTED_V2"}
    assert sum(a.created is None for a in seen) == 2_000
    assert all(a.updated is not None for a in seen)


async def test_a_200_where_a_202_was_expected_is_accepted(caplog: pytest.LogCaptureFixture) -> None:
    async with Emulator(indexing_delay=0.0) as emu, AsyncAudiencesClient(
        emu.api_key, emu.project_key, base_url=emu.base_url
    ) as client:
        emu.script(
            ScriptedResponse(200, {"indexing_token": "tok-200"}, route="create"),
            ScriptedResponse(204, None, route="remove"),
            ScriptedResponse(200, "", route="update"),
        )
        assert await client.create("vip") == Accepted("tok-200")
        assert await client.remove("vip") == Accepted(None)
        assert await client.update("vip", [IdAction.add("u")]) == Accepted(None)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
