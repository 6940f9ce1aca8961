"""Error mapping: every status and every kind of error body yields the right class, readably."""

from __future__ import annotations

import pickle
from typing import Any

import pytest

from batch_audiences import (
    APIError,
    AudienceExistsError,
    AuthenticationError,
    BadRequestError,
    BatchAudiencesError,
    ClientClosedError,
    ConfigurationError,
    IdAction,
    IndexingTimeoutError,
    InvalidSettingError,
    NotFoundError,
    RateLimitError,
    ServerError,
    ServiceUnavailableError,
    ThrottledError,
    TransportError,
    UnexpectedResponseError,
    ValidationError,
)
from batch_audiences._errors import error_from_response
from batch_audiences.testing import Emulator, ScriptedResponse

from .conftest import MAX_RETRIES, Api

STATUS_CLASSES: list[tuple[int, type[APIError]]] = [
    (400, BadRequestError),
    (401, AuthenticationError),
    (403, AuthenticationError),
    (404, NotFoundError),
    (405, BadRequestError),
    (409, BadRequestError),
    (413, BadRequestError),
    (422, BadRequestError),
    (429, RateLimitError),
    (500, ServerError),
    (502, ServerError),
    (503, ServiceUnavailableError),
    (504, ServerError),
]

HTML = b"<html>\n<head><title>502 Bad Gateway</title></head>\n<body>nginx</body>\n</html>\n"

# (id, raw body, expected error_code, a fragment the message must contain)
BODIES: list[tuple[str, bytes, str | None, str]] = [
    ("json", b'{"error_code": "INVALID_NAME", "error_message": "name is invalid"}', "INVALID_NAME",
     "name is invalid"),
    ("missing", b"", None, "empty body"),
    ("blank", b"  \r\n", None, "empty body"),
    ("html", HTML, None, "502 Bad Gateway"),
    ("invalid-json", b'{"error_code": "X", ', None, '{"error_code": "X",'),
    ("json-list", b'["error"]', None, '["error"]'),
    ("json-string", b'"boom"', None, '"boom"'),
    ("json-null", b"null", None, "null"),
    ("wrong-fields", b'{"code": 1, "message": "m"}', None, '"message": "m"'),
    ("code-only", b'{"error_code": "RATE"}', "RATE", "RATE"),
    ("non-string-fields", b'{"error_code": 42, "error_message": ["a", "b"]}', "42", "['a', 'b']"),
    ("binary", b"\xff\xfe\x00garbage", None, "garbage"),
    ("blank-fields", b'{"error_code": "", "error_message": " \\n "}', None, "unreadable body"),
]


def test_hierarchy() -> None:
    for cls in (
        ConfigurationError, ValidationError, APIError, TransportError, IndexingTimeoutError,
        ClientClosedError, ThrottledError,
    ):
        assert issubclass(cls, BatchAudiencesError)
    for cls in (BadRequestError, AuthenticationError, NotFoundError, RateLimitError, ServerError,
                ServiceUnavailableError, UnexpectedResponseError, AudienceExistsError):
        assert issubclass(cls, APIError)
    assert issubclass(ValidationError, ValueError)
    assert issubclass(InvalidSettingError, ConfigurationError)
    assert issubclass(InvalidSettingError, ValidationError)
    assert issubclass(ServiceUnavailableError, ServerError)
    assert issubclass(AudienceExistsError, BadRequestError)
    assert issubclass(IndexingTimeoutError, TimeoutError)


@pytest.mark.parametrize(("status", "cls"), STATUS_CLASSES)
def test_status_maps_to_class(status: int, cls: type[APIError]) -> None:
    error = error_from_response(
        status, b'{"error_code": "C", "error_message": "text"}', method="GET", route="/audiences/view"
    )
    assert type(error) is cls
    assert (error.status, error.error_code, error.error_message) == (status, "C", "text")
    assert (error.method, error.route) == ("GET", "/audiences/view")
    assert str(error) == f"HTTP {status} on GET /audiences/view: C text"


@pytest.mark.parametrize(("what", "raw", "code", "fragment"), BODIES, ids=[b[0] for b in BODIES])
@pytest.mark.parametrize("status", [400, 404, 500, 503])
def test_any_body_gives_a_readable_error(
    status: int, what: str, raw: bytes, code: str | None, fragment: str
) -> None:
    error = error_from_response(status, raw, method="POST", route="/audiences/update", reason="Reason")
    assert type(error) is dict(STATUS_CLASSES)[status]
    assert error.error_code == code
    assert isinstance(error.error_message, str)
    assert error.error_message
    message = str(error)
    assert fragment in message
    assert f"HTTP {status}" in message
    assert "\n" not in message
    assert len(message) < 400


def test_long_bodies_are_shortened() -> None:
    error = error_from_response(500, b"<p>" + b"x" * 5000 + b"</p>", method="GET", route="/r")
    assert len(str(error)) < 400
    assert str(error).endswith("…)")
    long_message = b'{"error_code": "E", "error_message": "' + b"y" * 5000 + b'"}'
    assert len(str(error_from_response(400, long_message, method="GET", route="/r"))) < 400


def test_api_errors_pickle() -> None:
    error = RateLimitError(429, "TOO_MANY", "slow down", method="POST", route="/x", retry_after=2.0)
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is RateLimitError
    assert (copy.status, copy.error_code, copy.error_message, copy.retry_after) == (
        429, "TOO_MANY", "slow down", 2.0,
    )
    assert str(copy) == str(error)


def test_other_errors_carry_their_fields() -> None:
    timeout = IndexingTimeoutError("vip", "tok", 2.5, "IN_PROGRESS")
    assert (timeout.name, timeout.indexing_token, timeout.timeout, timeout.state) == (
        "vip", "tok", 2.5, "IN_PROGRESS",
    )
    assert "vip" in str(timeout)
    assert "IN_PROGRESS" in str(timeout)
    transport = TransportError("GET", "/audiences/view", "timed out", attempts=3)
    assert "3 attempt" in str(transport)
    assert "timed out" in str(transport)
    assert ThrottledError(1.5).wait == 1.5


# -- over the wire: every status, every body, through both clients ---------------------------


async def expect_error(
    api: Api, emulator: Emulator, status: int, body: object, headers: dict[str, str] | None = None
) -> APIError:
    # 429 and 503 are retried: the error comes after every attempt met the same answer.
    attempts = MAX_RETRIES + 1 if status in (429, 503) else 1
    emulator.script(*[
        ScriptedResponse(status, body, headers or {}, route="view") for _ in range(attempts)
    ])
    with pytest.raises(APIError) as info:
        await api.view("vip")
    assert emulator.count(route="view") == attempts
    return info.value


@pytest.mark.parametrize(("status", "cls"), STATUS_CLASSES)
async def test_each_status_over_http(
    fast_api: Api, emulator: Emulator, status: int, cls: type[APIError]
) -> None:
    error = await expect_error(
        fast_api, emulator, status, {"error_code": "SOME_CODE", "error_message": "what happened"}
    )
    assert type(error) is cls
    assert (error.status, error.error_code, error.error_message) == (status, "SOME_CODE", "what happened")
    assert (error.method, error.route) == ("GET", "/audiences/view")


@pytest.mark.parametrize("status", [400, 401, 404, 429, 500, 503])
@pytest.mark.parametrize(
    ("body", "headers", "fragment"),
    [
        (None, {}, "empty body"),
        (HTML.decode(), {"Content-Type": "text/html"}, "502 Bad Gateway"),
        ('{"error_code": ', {"Content-Type": "application/json"}, "error_code"),
        ([1, 2, 3], {}, "[1,2,3]"),
        ({"unexpected": {"shape": True}}, {}, "unexpected"),
    ],
    ids=["missing", "html", "invalid-json", "json-list", "wrong-shape"],
)
async def test_odd_bodies_over_http(
    fast_api: Api, emulator: Emulator, status: int, body: object, headers: dict[str, str], fragment: str
) -> None:
    error = await expect_error(fast_api, emulator, status, body, headers)
    assert type(error) is dict(STATUS_CLASSES)[status]
    assert error.error_code is None
    assert fragment in str(error)
    assert "\n" not in str(error)


@pytest.mark.parametrize("route", ["create", "update", "replace", "remove"])
async def test_write_routes_map_errors_too(api: Api, emulator: Emulator, route: str) -> None:
    emulator.add_audience("vip", ["u1"])
    emulator.script(ScriptedResponse(500, "<h1>Internal</h1>", route=route))
    calls: dict[str, Any] = {
        "create": lambda: api.create("other"),
        "update": lambda: api.update("vip", [IdAction.add("u9")]),
        "replace": lambda: api.replace("vip", ["u2"]),
        "remove": lambda: api.remove("vip"),
    }
    with pytest.raises(ServerError) as info:
        await calls[route]()
    assert info.value.status == 500
    assert info.value.route == f"/audiences/{route}"
    assert "Internal" in str(info.value)
    assert emulator.count(route=route) == 1


@pytest.mark.parametrize(
    ("status", "body"),
    [(200, "<html>not json</html>"), (200, {"audiences": "x"}), (202, None), (200, [])],
)
async def test_success_with_unreadable_body(api: Api, emulator: Emulator, status: int, body: object) -> None:
    emulator.script(ScriptedResponse(status, body, route="view"))
    with pytest.raises(UnexpectedResponseError) as info:
        await api.view("vip")
    assert info.value.status == status
    assert "Audience" in str(info.value)


async def test_real_emulator_errors(api: Api, emulator: Emulator) -> None:
    with pytest.raises(NotFoundError) as info:
        await api.view("missing")
    assert info.value.error_code == "AUDIENCE_NOT_FOUND"
    with pytest.raises(NotFoundError):
        await api.update("missing", [IdAction.add("u9")])
    await api.create("vip")
    with pytest.raises(AudienceExistsError) as exists:
        await api.create("vip")
    assert exists.value.status == 400
    emulator.api_key = "another-key-entirely"
    with pytest.raises(AuthenticationError) as auth:
        await api.view("vip")
    assert auth.value.status == 401
