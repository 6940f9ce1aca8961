"""The REST API key never leaves the SDK, whatever a server echoes and however it encodes it.

A raw TCP server on loopback answers with any status line, header lines and body, so the key can
be put where a real server or proxy might echo it: in the reason phrase, in a header (well formed
or not, which aiohttp then quotes in its error), in an error body raw, JSON-escaped,
percent-encoded or as HTML entities, one character at a time. The check decodes every text the
way a reader would before looking for the key, independently of the SDK's own redaction.
"""

from __future__ import annotations

import asyncio
import copy
import html
import logging
import pickle
import re
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import unquote

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from batch_audiences import (
    Accepted,
    APIError,
    AsyncAudiencesClient,
    AuthenticationError,
    BatchAudiencesError,
    IdAction,
    RetryPolicy,
    TransportError,
)
from batch_audiences._redact import MIN_FRAGMENT, HeadersOnRead, Redactor
from batch_audiences.testing import set_testing
from tests.test_secrets import texts_of

SECRET = "sk-live-3c9e1a7f5b2d8e4c6a0f"
PROJECT = "project_redaction"
RETRY_ONCE = RetryPolicy(max_retries=1, base_delay=0.001, max_delay=0.002)


# -- an independent reader: every text decoded as a person or a tool would -------------------


def _unescape(text: str) -> str:
    text = re.sub(r"\\U([0-9a-fA-F]{8})", lambda m: chr(int(m.group(1), 16)), text)
    text = re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), text)
    text = re.sub(r"\\x([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), text)
    return text.replace("\\/", "/")


def readings(text: str) -> list[str]:
    """``text`` as it is, and decoded every way (and all ways at once)."""
    all_at_once = html.unescape(unquote(_unescape(text)))
    return [text, _unescape(text), unquote(text), html.unescape(text), all_at_once]


def leaks(text: str) -> bool:
    return any(SECRET in reading or SECRET[:12] in reading for reading in readings(text))


def texts_of_error(error: BaseException) -> list[str]:
    """Everything an error shows (as in test_secrets), and for an API error what it keeps of the
    answer: its pickled copy, its body and its headers."""
    out = texts_of(error)
    if isinstance(error, APIError):
        out.append(repr(pickle.loads(pickle.dumps(error))))
        out.append(error.body.decode("utf-8", "replace"))
        out += [f"{name}: {value}" for name, value in error.headers.items()]
    return out


class Capture(logging.Handler):
    """Every record of every logger, formatted with its traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.texts: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.texts.append(self.format(record))


@contextmanager
def capture_logs() -> Iterator[Capture]:
    root = logging.getLogger()
    handler, level = Capture(), root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


# -- a server that says anything ---------------------------------------------------------------


async def _raw_server(answer: bytes) -> tuple[asyncio.base_events.Server, str]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = re.search(rb"(?i)content-length:\s*(\d+)", head)
            if length:
                await reader.readexactly(int(length.group(1)))
            writer.write(answer)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


def http_answer(status: int, reason: str, headers: list[str], body: bytes) -> bytes:
    lines = [f"HTTP/1.1 {status} {reason}", *headers, f"Content-Length: {len(body)}", "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body


OPERATIONS: dict[str, Callable[[AsyncAudiencesClient], Awaitable[object]]] = {
    "view": lambda client: client.view("vip"),
    "update": lambda client: client.update("vip", [IdAction.add("u1")]),
    "create": lambda client: client.create("vip"),
}


async def outcome(answer: bytes, operation: str = "view", **options: Any) -> tuple[object, list[str]]:
    """What a call ends with (a result or an SDK error), and the texts it let out; ``options``
    go to the client."""
    server, url = await _raw_server(answer)
    try:
        with capture_logs() as logs, set_testing(True):
            async with AsyncAudiencesClient(SECRET, PROJECT, base_url=url, retry=RETRY_ONCE,
                                            timeout=5.0, **options) as client:
                texts = [repr(client)]
                try:
                    result: object = await asyncio.wait_for(OPERATIONS[operation](client), 10)
                except BatchAudiencesError as exc:
                    result = exc
                    texts += texts_of_error(exc)
                else:
                    texts += [repr(result), str(result)]
                texts.append(repr(client.stats))
    finally:
        server.close()
        await server.wait_closed()
    return result, texts + logs.texts


def assert_hidden(texts: list[str]) -> None:
    shown = [text for text in texts if leaks(text)]
    assert not shown, shown[0]


# -- the three echoes named in the issue --------------------------------------------------------


async def test_a_reason_phrase_echoing_the_key_is_redacted() -> None:
    result, texts = await outcome(http_answer(401, f"Bad key Bearer {SECRET}", [], b""))
    assert isinstance(result, AuthenticationError)
    assert "Bad key Bearer <redacted>" in str(result)  # the rest of the reason is kept
    assert_hidden(texts)


async def test_a_json_escaped_key_in_an_error_body_is_redacted() -> None:
    escaped = "".join(f"\\u{ord(c):04x}" for c in SECRET[:2]) + SECRET[2:]
    body = f'{{"error_code": "BAD_KEY", "error_message": "key {escaped} refused"}}'.encode()
    result, texts = await outcome(http_answer(400, "Bad Request", ["Content-Type: application/json"], body))
    assert isinstance(result, APIError)
    assert result.error_code == "BAD_KEY"
    assert result.error_message == "key <redacted> refused"
    assert_hidden(texts)


@pytest.mark.parametrize("operation", list(OPERATIONS))
async def test_a_malformed_header_line_holding_the_key_is_redacted(operation: str) -> None:
    # No colon: aiohttp refuses the answer and quotes the line in its error; the retry log line
    # and the final TransportError quote that error.
    answer = http_answer(200, "OK", [f"X-Echo Bearer {SECRET}"], b"{}")
    result, texts = await outcome(answer, operation)
    assert isinstance(result, TransportError)
    assert result.attempts == 2
    assert "<redacted>" in str(result)
    assert any("retrying" in text for text in texts)  # the retry log line was checked too
    assert_hidden(texts)


async def test_a_well_formed_header_echo_is_kept_redacted_on_the_error() -> None:
    answer = http_answer(
        500, "Internal Server Error",
        [f"X-Echo: Bearer {SECRET}", "X-Request-Id: req-42", "Content-Type: text/plain"],
        f"upstream: Authorization: Bearer {SECRET}".encode(),
    )
    result, texts = await outcome(answer)
    assert isinstance(result, APIError)
    assert result.headers["X-Request-Id"] == "req-42"
    assert result.headers["X-Echo"] == "Bearer <redacted>"
    assert result.body == b"upstream: Authorization: Bearer <redacted>"
    assert_hidden(texts)


async def _create_answered(answer: bytes, **options: Any) -> Accepted:
    result, texts = await outcome(answer, "create", **options)
    assert isinstance(result, Accepted), result
    assert_hidden(texts)
    return result


SUCCESS_ECHO = http_answer(
    202, "Accepted", [f"X-Echo: Bearer {SECRET}", "X-Request-Id: req-9", "Content-Type: application/json"],
    b'{"indexing_token":"t1"}',
)


@pytest.mark.parametrize("read", ["lookup", "dict", "repr", "pickle", "copy", "items"])
async def test_a_success_header_echo_is_hidden_however_the_headers_are_first_read(read: str) -> None:
    # A success seen by no hook has its headers looked at when first read, not when it came:
    # every kind of first read must see the key hidden, and a pickle must not carry it.
    accepted = await _create_answered(SUCCESS_ECHO)
    headers = accepted.headers
    if read == "lookup":
        texts = [headers["X-Echo"], headers["x-echo"]]
        assert headers["X-Request-Id"] == "req-9"
    elif read == "dict":
        texts = [str(dict(headers))]
    elif read == "repr":
        texts = [repr(headers), repr(accepted)]
    elif read == "pickle":
        data = pickle.dumps(accepted)
        assert SECRET[:MIN_FRAGMENT].encode() not in data
        again = pickle.loads(pickle.dumps(pickle.loads(data)))  # and once more, from the copy
        assert again == accepted
        assert again.headers["x-request-id"] == "req-9"  # still case-insensitive
        texts = [repr(dict(again.headers))]
    elif read == "copy":
        texts = [repr(dict(copy.copy(headers)))]
    else:
        texts = [f"{name}: {value}" for name, value in headers.items()]
    assert any("<redacted>" in text for text in texts), texts
    assert_hidden(texts)
    assert headers["X-Echo"] == "Bearer <redacted>"


async def test_a_success_header_echo_is_hidden_from_hooks_when_it_comes() -> None:
    seen: list[str] = []

    def hook(event: object) -> None:
        headers = getattr(event, "headers", None)
        if headers is not None:
            seen.extend(f"{name}: {value}" for name, value in headers.items())

    accepted = await _create_answered(SUCCESS_ECHO, hooks=[hook])
    assert "X-Echo: Bearer <redacted>" in seen
    assert_hidden(seen)
    assert accepted.headers["X-Echo"] == "Bearer <redacted>"


async def test_an_interim_answer_echoing_the_key_in_a_header_is_redacted_on_the_error() -> None:
    # A 101 is below 300 but no success: it becomes an error, which keeps the answer's headers.
    answer = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: foo\r\nConnection: Upgrade\r\n"
              b"X-Echo: Bearer " + SECRET.encode() + b"\r\n\r\n")
    result, texts = await outcome(answer, "create")
    assert isinstance(result, APIError), result
    assert result.headers["X-Echo"] == "Bearer <redacted>"
    assert_hidden(texts)


async def test_a_header_that_comes_twice_keeps_both_values_when_read_on_demand() -> None:
    answer = http_answer(202, "Accepted", ["Via: 1.1 a", "Via: 1.1 b", "Content-Type: application/json"],
                         b'{"indexing_token":"t1"}')
    headers = (await _create_answered(answer)).headers
    assert [value for name, value in headers.items() if name == "Via"] == ["1.1 a", "1.1 b"]
    assert [value for value in headers.values() if value.startswith("1.1")] == ["1.1 a", "1.1 b"]
    assert headers.getall("via") == ["1.1 a", "1.1 b"]
    assert headers == CIMultiDictProxy(CIMultiDict(headers.items()))


def test_headers_read_on_demand_drop_the_redactor_once_read() -> None:
    redactor = Redactor(SECRET)
    headers = HeadersOnRead(CIMultiDictProxy(CIMultiDict({"X-Echo": SECRET, "Date": "Mon"})), redactor)
    assert SECRET[:MIN_FRAGMENT].encode() not in pickle.dumps(headers)
    assert len(headers) == 2
    assert headers._redactor is None  # nothing holds the key's pattern any more
    assert dict(headers) == {"X-Echo": "<redacted>", "Date": "Mon"}
    clean = HeadersOnRead(CIMultiDictProxy(CIMultiDict({"Date": "Mon"})), redactor)
    assert "date" in clean
    assert clean.get("DATE") == "Mon"


async def test_a_key_cut_short_by_the_server_is_redacted_too() -> None:
    body = orjson.dumps({"error_message": f"bad key {SECRET[:20]}…"})
    result, texts = await outcome(http_answer(400, "Bad Request", [], body))
    assert isinstance(result, APIError)
    assert_hidden(texts)
    assert SECRET[:8] not in str(result)


# -- the fuzz ---------------------------------------------------------------------------------

ENCODERS: dict[str, Callable[[str], str]] = {
    "raw": lambda c: c,
    "json": lambda c: f"\\u{ord(c):04x}",
    "JSON": lambda c: f"\\u{ord(c):04X}",
    "percent": lambda c: "".join(f"%{b:02X}" for b in c.encode()),
    "percent-lower": lambda c: "".join(f"%{b:02x}" for b in c.encode()),
    "html": lambda c: f"&#{ord(c)};",
    "html-hex": lambda c: f"&#x{ord(c):x};",
    "python": lambda c: f"\\x{ord(c):02x}",
}
PLACES = ["reason", "header", "malformed-header", "json-message", "json-code", "text-body", "json-200"]
# Printable ASCII that is legal in a status line, a header value, a JSON string and a text body.
FILLER = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters='"\\'),
                 max_size=20)


@st.composite
def encoded_keys(draw: st.DrawFn) -> str:
    """The key with each character written its own way (all one way, often)."""
    if draw(st.booleans()):
        encoder = ENCODERS[draw(st.sampled_from(list(ENCODERS)))]
        return "".join(encoder(c) for c in SECRET)
    ways = draw(st.lists(st.sampled_from(list(ENCODERS)), min_size=len(SECRET), max_size=len(SECRET)))
    return "".join(ENCODERS[way](c) for way, c in zip(ways, SECRET, strict=True))


def build_answer(place: str, status: int, echo: str) -> bytes:
    reason, headers = "Whatever", ["Content-Type: application/json"]
    body = orjson.dumps({"error_code": "E", "error_message": "no"})
    if status in (429, 503):
        headers.append("Retry-After: 0")
    if place == "reason":
        reason = echo
    elif place == "header":
        headers.append(f"X-Echo: {echo}")
    elif place == "malformed-header":
        headers.append(f"X-Echo {echo}")
    elif place == "json-message":
        body = f'{{"error_code": "E", "error_message": "{echo}"}}'.encode()
    elif place == "json-code":
        body = f'{{"error_code": "{echo}", "error_message": "m"}}'.encode()
    elif place == "text-body":
        headers = ["Content-Type: text/plain", *headers[1:]]
        body = echo.encode()
    elif place == "json-200":
        status = 200
        body = (f'{{"name": "vip", "display_name": "{echo}", "nb_ids": 1, '
                f'"indexing_token": "{echo}"}}').encode()
    return http_answer(status, reason, headers, body)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    key=encoded_keys(),
    place=st.sampled_from(PLACES),
    status=st.sampled_from([400, 401, 404, 429, 500, 503]),
    operation=st.sampled_from(list(OPERATIONS)),
    before=FILLER,
    after=FILLER,
)
def test_fuzz_the_key_in_any_encoding_anywhere_never_shows(
    key: str, place: str, status: int, operation: str, before: str, after: str
) -> None:
    answer = build_answer(place, status, f"{before}{key}{after}")
    result, texts = asyncio.run(outcome(answer, operation))
    if place != "json-200":
        assert isinstance(result, BatchAudiencesError), result
    assert_hidden(texts)


# -- the reader above really reads ------------------------------------------------------------


@pytest.mark.parametrize("way", list(ENCODERS))
def test_the_independent_reader_finds_each_encoding(way: str) -> None:
    encoded = "".join(ENCODERS[way](c) for c in SECRET)
    assert leaks(f"xx {encoded} yy")



async def test_redacted_headers_still_match_case_insensitively() -> None:
    # An echo in one header makes the client rebuild the headers; Retry-After must still be read.
    answer = http_answer(503, "Unavailable", [f"X-Echo: {SECRET}", "retry-after: 0"], b"")
    waits: list[float | None] = []
    server, url = await _raw_server(answer)
    try:
        async with AsyncAudiencesClient(
            SECRET, PROJECT, base_url=url, retry=RETRY_ONCE,
            hooks=[lambda event: waits.append(getattr(event, "retry_after", "-"))],
        ) as client:
            with pytest.raises(APIError) as raised:
                await client.view("vip")
    finally:
        server.close()
        await server.wait_closed()
    assert raised.value.retry_after == 0.0
    assert raised.value.headers["Retry-After"] == "0"
    assert raised.value.headers["x-echo"] == "<redacted>"
    assert 0.0 in waits  # the RetryScheduled event saw the server's figure


async def test_a_logged_traceback_is_redacted_too(caplog: pytest.LogCaptureFixture) -> None:
    # A hook that fails on an event is logged with its traceback; whatever its exception says,
    # the key is hidden in the formatted record.
    def careless(event: object) -> None:
        raise RuntimeError(f"bad request with Authorization: Bearer {SECRET}")

    answer = http_answer(200, "OK", ["Content-Type: application/json"], b'{"name": "vip", "nb_ids": 1}')
    server, url = await _raw_server(answer)
    try:
        with capture_logs() as logs:
            async with AsyncAudiencesClient(SECRET, PROJECT, base_url=url, hooks=[careless]) as client:
                await client.view("vip")
    finally:
        server.close()
        await server.wait_closed()
    assert any("RuntimeError" in text for text in logs.texts)
    assert_hidden(logs.texts)


# -- the redactor's quick look at a whole answer -----------------------------------------------


@pytest.mark.parametrize("key", [SECRET, "clé-secrète-7f3a9c2e5b8d", "ключ-7f3a9c2e5b8d-ключ"])
@pytest.mark.parametrize("where", ["body", "header-name", "header-value", "reason"])
def test_the_quick_look_at_an_answer_sees_a_raw_key_anywhere(key: str, where: str) -> None:
    # Bytes are searched through their Latin-1 view: a key with non-ASCII characters, raw in a
    # UTF-8 body, must be seen as well as an ASCII one; and whatever it sees, body() hides.
    redactor = Redactor(key)
    body, headers, reason = b'{"indexing_token":"t1"}', {"Date": "Mon"}, "Accepted"
    if where == "body":
        body = f'{{"error_message":"bad key {key[:-1]}"}}'.encode()
    elif where == "header-name":
        headers = {key: "1"}
    elif where == "header-value":
        headers = {"X-Echo": key}
    else:
        reason = key
    assert redactor.answer_may_show_key(body, headers, reason)
    assert key[:MIN_FRAGMENT].encode() not in redactor.body(body)
    assert not redactor.answer_may_show_key(b'{"indexing_token":"t1"}', {"Date": "Mon"}, "Accepted")
