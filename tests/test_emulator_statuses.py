"""The emulator answers only statuses Batch documents (200, 202, 400, 401, 404, 429, 500, 503).

Odd requests are sent as raw bytes over a socket, so nothing between the test and the emulator
tidies them up: a wrong method, an oversized or malformed body, a broken request line, headers
too long, an ``Expect`` the server does not know, bad chunked encoding, a corrupt gzip body.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from batch_audiences.testing import Emulator, ScriptedResponse
from batch_audiences.testing._server import DOCUMENTED as SERVER_DOCUMENTED
from batch_audiences.testing._server import MAX_BODY_BYTES

DOCUMENTED = frozenset({200, 202, 400, 401, 404, 429, 500, 503})


@dataclass
class Raw:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> object:
        assert self.headers.get("content-type", "").startswith("application/json"), self
        return json.loads(self.body)


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(indexing_delay=0) as emulator:
        emulator.add_audience("vip")
        yield emulator


def auth(emu: Emulator) -> bytes:
    return "".join(f"{k}: {v}\r\n" for k, v in emu.auth_headers.items()).encode()


async def send(emu: Emulator, head: bytes, body: bytes = b"") -> Raw:
    """Write ``head`` (the request line and headers, without the blank line) and ``body``;
    read one answer until the server closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", emu.port)
    try:
        writer.write(head + b"Connection: close\r\n\r\n")
        # a server may answer (and close) before the whole body is sent: that is its right
        try:
            writer.write(body)
            await writer.drain()
        except ConnectionError:
            pass
        raw = await asyncio.wait_for(reader.read(-1), 10)
    finally:
        writer.close()
    head_bytes, _, payload = raw.partition(b"\r\n\r\n")
    while head_bytes.startswith(b"HTTP/1.1 100 "):  # an interim answer to Expect: 100-continue
        head_bytes, _, payload = payload.partition(b"\r\n\r\n")
    lines = head_bytes.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    return Raw(status, headers, payload)


def post(emu: Emulator, route: str, body: bytes, extra: bytes = b"") -> bytes:
    return (
        f"POST /2.8/audiences/{route} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n".encode() + auth(emu) + extra
    )


# -- the paths that answered undocumented statuses ------------------------------------------


@pytest.mark.parametrize(
    ("method", "route"),
    [("PUT", "create"), ("GET", "create"), ("DELETE", "view"), ("POST", "view"), ("PATCH", "update")],
)
async def test_a_wrong_method_is_a_json_404(emu: Emulator, method: str, route: str) -> None:
    head = f"{method} /2.8/audiences/{route} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n".encode()
    reply = await send(emu, head + auth(emu), b"{}")
    assert reply.status == 404
    body = reply.json()
    assert isinstance(body, dict)
    assert body["error_code"] == "NOT_FOUND"
    assert f"{method} /2.8/audiences/{route}" in body["error_message"]


async def test_a_body_over_the_limit_is_a_json_400(emu: Emulator) -> None:
    size = MAX_BODY_BYTES + 1
    reader, writer = await asyncio.open_connection("127.0.0.1", emu.port)
    try:
        writer.write(post(emu, "update", b"x" * 0)[: -len(b"Content-Length: 0\r\n") - len(auth(emu))])
        writer.write(f"Content-Length: {size}\r\n".encode() + auth(emu) + b"Connection: close\r\n\r\n")
        block = b" " * (1 << 20)
        sent = 0
        try:
            while sent < size:
                part = block[: min(len(block), size - sent)]
                writer.write(part)
                await writer.drain()
                sent += len(part)
        except ConnectionError:
            pass  # the server answered and closed before the end
        raw = await asyncio.wait_for(reader.read(-1), 30)
    finally:
        writer.close()
    head, _, payload = raw.partition(b"\r\n\r\n")
    assert head.split()[1] == b"400", head
    body = json.loads(payload)
    assert body["error_code"] == "PAYLOAD_TOO_LARGE"
    assert str(MAX_BODY_BYTES) in body["error_message"]


async def test_malformed_json_body_is_a_json_400(emu: Emulator) -> None:
    body = b'{"name": "vip", "ids": ['
    reply = await send(emu, post(emu, "update", body), body)
    assert reply.status == 400
    assert isinstance(reply.json(), dict)


async def test_an_unknown_route_is_a_json_404(emu: Emulator) -> None:
    reply = await send(emu, b"GET /2.8/audiences/nope HTTP/1.1\r\nHost: x\r\n" + auth(emu))
    assert reply.status == 404
    assert isinstance(reply.json(), dict)


async def test_an_unknown_expectation_is_ignored(emu: Emulator) -> None:
    # aiohttp answers 417 by default; Batch documents no such status
    head = b"GET /2.8/audiences/view?name=vip HTTP/1.1\r\nHost: x\r\nExpect: something-else\r\n"
    reply = await send(emu, head + auth(emu))
    assert reply.status == 200
    assert isinstance(reply.json(), dict)


async def test_a_body_the_server_cannot_read_is_a_json_400(emu: Emulator) -> None:
    body = b"not gzip at all"
    reply = await send(emu, post(emu, "update", body, b"Content-Encoding: gzip\r\n"), body)
    assert reply.status == 400
    assert isinstance(reply.json(), dict)


async def test_a_gzip_body_is_read(emu: Emulator) -> None:
    body = gzip.compress(json.dumps({"name": "vip", "ids": [{"id": "u1", "action": "add"}]}).encode())
    reply = await send(emu, post(emu, "update", body, b"Content-Encoding: gzip\r\n"), body)
    assert reply.status == 202


# -- a broad walk ----------------------------------------------------------------------------

LONG = b"a" * 20_000
JSON = b"Content-Type: application/json"


@dataclass(frozen=True)
class Odd:
    head: bytes  # the request line and headers, without the auth headers
    body: bytes
    auth: bool


def odd(line: bytes, *headers: bytes, body: bytes = b"", auth: bool = True, host: bool = True) -> Odd:
    """A request: ``Host`` added unless ``host`` is false, and a ``Content-Length`` for ``body``
    unless a header already frames it."""
    lines = [line, *([b"Host: x"] if host else []), *headers]
    framed = any(h.lower().startswith((b"content-length", b"transfer-encoding")) for h in headers)
    if body and not framed:
        lines.append(b"Content-Length: %d" % len(body))
    return Odd(b"".join(part + b"\r\n" for part in lines), body, auth)


LIST = b"GET /2.8/audiences/list HTTP/1.1"
CREATE = b"POST /2.8/audiences/create HTTP/1.1"
UPDATE = b"POST /2.8/audiences/update HTTP/1.1"

ODD_REQUESTS: dict[str, Odd] = {
    "put-create": odd(b"PUT /2.8/audiences/create HTTP/1.1", body=b"{}"),
    "head-list": odd(b"HEAD /2.8/audiences/list HTTP/1.1"),
    "options-star": odd(b"OPTIONS * HTTP/1.1"),
    "trace": odd(b"TRACE /2.8/audiences/list HTTP/1.1"),
    "connect": odd(b"CONNECT example.com:443 HTTP/1.1", b"Host: example.com:443", host=False),
    "unknown-method": odd(b"FROB /2.8/audiences/list HTTP/1.1"),
    "unknown-route": odd(b"GET /nope HTTP/1.1"),
    "root": odd(b"GET / HTTP/1.1", auth=False),
    "emulator-post": odd(b"POST /_emulator/audiences HTTP/1.1", b"Content-Length: 0"),
    "emulator-unknown": odd(b"GET /_emulator/nope HTTP/1.1"),
    "absolute-uri": odd(b"GET http://x/2.8/audiences/list HTTP/1.1"),
    "bad-percent": odd(b"GET /2.8/audiences/view?name=%ff%fe HTTP/1.1"),
    "bad-percent-path": odd(b"GET /2.8/audiences/%zz HTTP/1.1"),
    "garbage-line": odd(b"HELLO", host=False, auth=False),
    "bad-version": odd(b"GET /2.8/audiences/list HTTP/9.9"),
    "http-1.0": odd(b"GET /2.8/audiences/list HTTP/1.0", host=False),
    "long-url": odd(b"GET /2.8/audiences/view?name=" + LONG + b" HTTP/1.1"),
    "long-header": odd(LIST, b"X-Long: " + LONG),
    "many-headers": odd(LIST, *(b"X-H%d: v" % i for i in range(200))),
    "bad-header-line": odd(LIST, b"no colon here"),
    "expect-other": odd(LIST, b"Expect: 42-magic"),
    "expect-continue": odd(CREATE, JSON, b"Expect: 100-continue", body=b'{"name": "new"}'),
    "length-and-chunked": odd(CREATE, b"Content-Length: 5", b"Transfer-Encoding: chunked", body=b"0\r\n\r\n"),
    "bad-chunk": odd(UPDATE, b"Transfer-Encoding: chunked", body=b"zz\r\nhello\r\n0\r\n\r\n"),
    "negative-length": odd(CREATE, b"Content-Length: -1"),
    "bad-gzip": odd(UPDATE, JSON, b"Content-Encoding: gzip", body=b"nope"),
    "unknown-encoding": odd(UPDATE, JSON, b"Content-Encoding: zork", body=b"{}"),
    "odd-content-type": odd(CREATE, b"Content-Type: ;;;===", body=b'{"name": "new"}'),
    "binary-body": odd(CREATE, JSON, body=b"\xff\xfe\x00\x01"),
    "json-array": odd(CREATE, JSON, body=b"[]"),
    "deep-json": odd(CREATE, JSON, body=b"[" * 10_000 + b"]" * 10_000),
    "no-auth": odd(LIST, auth=False),
    "websocket": odd(
        LIST, b"Upgrade: websocket", b"Connection: Upgrade", b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        b"Sec-WebSocket-Version: 13",
    ),
}


#: Requests aiohttp cannot parse as HTTP: they never reach the application, and aiohttp answers
#: them 400 with a text body of its own (the status is documented; the body is not the API's).
NOT_HTTP = frozenset({
    "bad-chunk", "bad-header-line", "bad-version", "garbage-line", "length-and-chunked",
    "long-header", "long-url", "many-headers", "negative-length", "unknown-method",
})


@pytest.mark.parametrize("name", sorted(ODD_REQUESTS))
async def test_every_odd_request_gets_a_documented_status(emu: Emulator, name: str) -> None:
    request = ODD_REQUESTS[name]
    reply = await send(emu, request.head + (auth(emu) if request.auth else b""), request.body)
    assert reply.status in DOCUMENTED, (name, reply)
    if name in NOT_HTTP:
        assert reply.status == 400, (name, reply)
    elif reply.status >= 400 and reply.body:
        error = reply.json()
        assert isinstance(error, dict), (name, reply)
        assert set(error) == {"error_code", "error_message"}, (name, reply)


def test_the_documented_set_is_the_emulators() -> None:
    assert DOCUMENTED == SERVER_DOCUMENTED


async def test_an_error_inside_the_emulator_is_a_json_500_and_logged(
    emu: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    emu.script(ScriptedResponse(action="crash", route="create"))
    body = b'{"name": "vip2", "ids": []}'
    with caplog.at_level(logging.ERROR, logger="batch_audiences.testing"):
        reply = await send(
            emu, b"POST /2.8/audiences/create HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + b"Content-Length: %d\r\n" % len(body) + auth(emu), body,
        )
    assert reply.status == 500
    assert reply.json() == {
        "error_code": "INTERNAL_ERROR", "error_message": "the emulator failed: RuntimeError",
    }
    assert (emu.requests[-1].status, emu.requests[-1].outcome) == (500, "error")
    assert emu.audience_names() == ["vip"]  # nothing applied
    assert any(r.exc_info and "scripted crash" in str(r.exc_info[1]) for r in caplog.records)
