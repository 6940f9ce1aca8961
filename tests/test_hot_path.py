"""The objects of every request, built without their ``__init__`` on the hot path, hold exactly
what their constructors would; and an answer read whole leaves its connection to the next
request. A field added to one of these classes and forgotten by its fast builder fails here."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import attrs
import pytest
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from batch_audiences import Accepted, AiohttpSender, AsyncAudiencesClient, HTTPRequest, HTTPResponse
from batch_audiences._codec import accepted_answer
from batch_audiences._sender import _answer, prepared_request
from batch_audiences._transport import RequestTrace, _Exchange

from .conftest import serving

HEADERS = CIMultiDictProxy(CIMultiDict({"Content-Type": "application/json", "Date": "Mon"}))


def fields_of(instance: Any) -> dict[str, Any]:
    # Every field, those left out of ``==`` too (Accepted's status and headers); an unset slot
    # raises AttributeError here.
    return {field.name: getattr(instance, field.name) for field in attrs.fields(type(instance))}


def test_accepted_answer_is_the_constructors_accepted() -> None:
    fast = accepted_answer("t1", 202, HEADERS)
    assert type(fast) is Accepted
    assert fields_of(fast) == fields_of(Accepted("t1", 202, HEADERS))
    assert fast == Accepted("t1")
    assert hash(fast) == hash(Accepted("t1"))
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        fast.indexing_token = "t2"  # type: ignore[misc]


def test_prepared_request_is_the_constructors_request() -> None:
    args = ("POST", "http://127.0.0.1:1/2.8/audiences/create", HEADERS, b'{"name":"a"}', 12.5)
    fast = prepared_request(*args)
    assert type(fast) is HTTPRequest
    assert fields_of(fast) == fields_of(HTTPRequest(*args))
    assert fast.route == "/audiences/create"


def test_the_senders_answer_is_the_constructors_response() -> None:
    fast = _answer(202, HEADERS, b"{}", "Accepted", False)
    assert type(fast) is HTTPResponse
    assert fields_of(fast) == fields_of(HTTPResponse(202, HEADERS, b"{}", "Accepted", False))


@pytest.mark.parametrize("hooked", [False, True])
async def test_the_exchange_of_a_request_holds_every_field(hooked: bool) -> None:
    client = AsyncAudiencesClient(
        "hot-path-key-0123456789", "project_hot", base_url="http://127.0.0.1:1",
        hooks=[lambda event: None] if hooked else (),
    )
    trace = RequestTrace()
    exchange = client._transport._prepare("POST", "/audiences/create", b'{"name":"vip"}', None,
                                          trace, None)
    expected = _Exchange("POST", "/audiences/create", exchange.request, trace,
                         "vip" if hooked else None, request_id=exchange.request_id)
    assert fields_of(exchange) == fields_of(expected)
    assert (exchange.request_id > 0) is hooked
    await client.aclose()


async def test_an_answer_read_whole_gives_its_connection_back() -> None:
    # One connection in the pool: a second request could not start if the first answer kept it.
    async def answer(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"indexing_token": "t"}, status=202)

    sender = AiohttpSender(max_connections=1)
    async with serving(answer) as url, AsyncAudiencesClient(
        "hot-path-key-0123456789", "project_hot", base_url=url, sender=sender,
    ) as client:
        for name in ("a", "b", "c"):
            accepted = await asyncio.wait_for(client.create(name), 10)
            assert accepted.indexing_token == "t"
        session = sender._session
        assert isinstance(session, aiohttp.ClientSession)
        connector = session.connector
        assert connector is not None
        assert len(connector._acquired) == 0  # every connection back in the pool


# -- reading the body: at once when it came whole, else waiting for it, within the cap --------

BODY = b'{"indexing_token":"' + b"t" * 40 + b'"}'


async def _send_to(handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
                   sender: AiohttpSender) -> HTTPResponse:
    async with serving(handler) as url:
        try:
            return await asyncio.wait_for(sender.send(HTTPRequest("GET", url, {}, None, 10.0)), 10)
        finally:
            await sender.aclose()


@pytest.mark.parametrize("cap", [len(BODY), len(BODY) - 1, 8])
async def test_a_body_that_came_whole_is_kept_within_the_cap(cap: int) -> None:
    async def whole(request: web.Request) -> web.Response:
        return web.Response(body=BODY, content_type="application/json")

    answer = await _send_to(whole, AiohttpSender(max_response_bytes=cap))
    assert answer.status == 200
    assert answer.body == BODY[:cap]
    assert answer.truncated is (cap < len(BODY))


async def test_a_compressed_body_that_came_whole_is_decoded_and_capped_decoded() -> None:
    async def compressed(request: web.Request) -> web.Response:
        return web.Response(body=gzip.compress(BODY), content_type="application/json",
                            headers={"Content-Encoding": "gzip"})

    answer = await _send_to(compressed, AiohttpSender())
    assert (answer.body, answer.truncated) == (BODY, False)
    capped = await _send_to(compressed, AiohttpSender(max_response_bytes=len(BODY) - 1))
    assert (capped.body, capped.truncated) == (BODY[:-1], True)


@pytest.mark.parametrize("sized", [True, False])
async def test_a_body_still_on_its_way_is_waited_for(sized: bool) -> None:
    # The headers and the first half leave, then the rest a moment later: the answer is not
    # whole when the headers are read, and must still come back whole (with a known size or
    # chunked).
    async def in_two_parts(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        if sized:
            response.content_length = len(BODY)
        await response.prepare(request)
        await response.write(BODY[:10])
        await asyncio.sleep(0.05)
        await response.write(BODY[10:])
        await response.write_eof()
        return response

    answer = await _send_to(in_two_parts, AiohttpSender())
    assert (answer.body, answer.truncated) == (BODY, False)


async def test_a_callers_session_still_sees_the_body_through_its_trace_configs() -> None:
    # A session of the caller's own may carry trace configs: the body is read through aiohttp
    # there, so that on_response_chunk_received fires as it always did.
    chunks: list[bytes] = []

    async def on_chunk(
        session: object, context: object, params: aiohttp.TraceResponseChunkReceivedParams
    ) -> None:
        chunks.append(params.chunk)

    trace = aiohttp.TraceConfig()
    trace.on_response_chunk_received.append(on_chunk)

    async def answer(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=202, body=BODY, content_type="application/json")

    async with (
        serving(answer) as url,
        aiohttp.ClientSession(trace_configs=[trace]) as session,
        AsyncAudiencesClient("hot-path-key-0123456789", "project_hot", base_url=url,
                             session=session) as client,
    ):
        accepted = await asyncio.wait_for(client.create("a"), 10)
    assert accepted.indexing_token == "t" * 40
    assert chunks == [BODY]
