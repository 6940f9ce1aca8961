"""The seam under the transport: ``sender=``, ``MockSender``, the zero-wait test mode,
``with_options`` and what an ``APIError`` keeps of the answer."""

from __future__ import annotations

import asyncio
import pickle
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from batch_audiences import (
    MAX_ERROR_BODY,
    AiohttpSender,
    APIError,
    AsyncAudiencesClient,
    AudiencesClient,
    BadRequestError,
    ClientClosedError,
    HTTPRequest,
    HTTPResponse,
    IdAction,
    InvalidSettingError,
    RetryPolicy,
    SendError,
    ServiceUnavailableError,
    ThrottledError,
    TransportError,
)
from batch_audiences.testing import Emulator, MockSender, is_testing, set_testing

KEY = "sender-test-key-0123456789abcdef"
PROJECT = "project_sender"
VIEW = {"name": "vip", "nb_ids": 3}


def client_with(handler: Callable[[HTTPRequest], Any], **kwargs: Any) -> AsyncAudiencesClient:
    return AsyncAudiencesClient(KEY, PROJECT, sender=MockSender(handler), **kwargs)


class Recorder:
    """A handler answering from a list (the last answer repeats), recording every request."""

    def __init__(self, *answers: HTTPResponse | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[HTTPRequest] = []

    def __call__(self, request: HTTPRequest) -> HTTPResponse:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


# -- MockSender --------------------------------------------------------------------------------


async def test_a_sync_handler_sees_the_request_the_client_sends() -> None:
    recorder = Recorder(HTTPResponse.from_json(202, {"indexing_token": "t1"}))
    async with client_with(recorder) as client:
        accepted = await client.update("vip", [IdAction.add("u1", {"plan": "pro"})])
    assert accepted.indexing_token == "t1"
    (request,) = recorder.requests
    assert request.method == "POST"
    assert request.route == "/audiences/update"
    assert request.url == "https://api.batch.com/2.8/audiences/update"
    assert request.headers["authorization"] == f"Bearer {KEY}"  # case-insensitive
    assert request.headers["X-Batch-Project"] == PROJECT
    assert request.json() == {
        "name": "vip", "ids": [{"action": "add", "id": "u1", "attributes": {"plan": "pro"}}]
    }
    assert request.timeout == 30.0
    assert KEY not in repr(request)


async def test_an_async_handler_and_query_parameters() -> None:
    seen: list[HTTPRequest] = []

    async def handler(request: HTTPRequest) -> HTTPResponse:
        seen.append(request)
        await asyncio.sleep(0)
        return HTTPResponse.from_json(200, {"name": request.params["name"], "nb_ids": 7})

    async with client_with(handler) as client:
        audience = await client.view("vip", indexing_token="tok/1+2 3")
    assert audience.nb_ids == 7
    assert seen[0].params == {"name": "vip", "indexing_token": "tok/1+2 3"}
    assert seen[0].json() is None


async def test_error_answers_take_the_clients_own_road() -> None:
    recorder = Recorder(HTTPResponse.from_json(400, {"error_code": "BAD", "error_message": "no"}))
    async with client_with(recorder) as client:
        with pytest.raises(BadRequestError) as raised:
            await client.view("vip")
    assert raised.value.error_code == "BAD"
    assert len(recorder.requests) == 1


async def test_a_send_error_is_retried_then_becomes_a_transport_error() -> None:
    recorder = Recorder(SendError("ClientConnectorError: refused", maybe_sent=False))
    async with client_with(recorder, retry=RetryPolicy(max_retries=2)) as client:
        with set_testing(True), pytest.raises(TransportError) as raised:
            await client.view("vip")
    assert raised.value.attempts == 3
    assert "refused" in str(raised.value)
    assert isinstance(raised.value.__cause__, SendError)


async def test_a_remove_whose_first_try_may_have_landed_is_done_on_a_404() -> None:
    # maybe_sent=True marks the attempt uncertain, as a connection dropped after sending would.
    recorder = Recorder(SendError("ServerDisconnectedError"),
                        HTTPResponse.from_json(404, {"error_code": "NOT_FOUND", "error_message": "gone"}))
    async with client_with(recorder) as client, set_testing(True):
        accepted = await client.remove("vip")
    assert accepted.indexing_token is None
    assert len(recorder.requests) == 2


async def test_a_handler_must_return_a_response() -> None:
    async with client_with(lambda request: {"status": 200}) as client:
        with pytest.raises(TypeError, match="HTTPResponse"):
            await client.view("vip")


def test_the_blocking_client_takes_a_sender_too() -> None:
    sender = MockSender(lambda request: HTTPResponse.from_json(200, VIEW))
    with AudiencesClient(KEY, PROJECT, sender=sender) as client:
        assert client.view("vip").nb_ids == 3


async def test_the_client_closes_the_sender_it_was_given() -> None:
    sender = MockSender(lambda request: HTTPResponse.from_json(200, VIEW))
    async with client_with(sender.handler) as client:
        pass
    client = AsyncAudiencesClient(KEY, PROJECT, sender=sender)
    await client.aclose()
    assert sender.closed


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"sender": object()}, "sender"),
        ({"sender": MockSender(lambda r: HTTPResponse(200)), "session": "later"}, "sender"),
        ({"hooks": [1]}, "hooks"),
        ({"hooks": "print"}, "hooks"),
    ],
)
async def test_bad_sender_or_hooks_are_refused_at_construction(settings: dict[str, Any], field: str) -> None:
    if settings.get("session") == "later":
        settings["session"] = aiohttp.ClientSession()
    try:
        with pytest.raises(InvalidSettingError) as raised:
            AsyncAudiencesClient(KEY, PROJECT, **settings)
        assert raised.value.field == field
    finally:
        if isinstance(settings.get("session"), aiohttp.ClientSession):
            await settings["session"].close()


@pytest.mark.parametrize("options", [{"max_connections": 0}, {"max_response_bytes": -1},
                                     {"max_response_bytes": True}])
def test_bad_aiohttp_sender_options_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(InvalidSettingError):
        AiohttpSender(**options)


# -- the zero-wait test mode ---------------------------------------------------------------------


async def test_test_mode_skips_a_long_retry_after_and_counts_the_retry() -> None:
    # The server asks for 200 s; the policy would honour it (max_retry_after is 300 s). In test
    # mode the retry happens at once: the 10 s guard is only there to fail the test, not to time.
    recorder = Recorder(HTTPResponse(503, {"Retry-After": "200"}), HTTPResponse.from_json(200, VIEW))
    async with client_with(recorder) as client:
        with set_testing(True):
            assert is_testing()
            audience = await asyncio.wait_for(client.view("vip"), 10)
        assert not is_testing()
    assert audience.nb_ids == 3
    assert client.stats.retries == 1


async def test_test_mode_skips_the_rate_limiters_pauses() -> None:
    recorder = Recorder(HTTPResponse.from_json(200, VIEW))
    async with client_with(recorder, max_rate=0.01) as client, set_testing(True):  # one per 100 s
        await asyncio.wait_for(asyncio.gather(*(client.view("vip") for _ in range(3))), 10)
    assert len(recorder.requests) == 3


async def test_without_test_mode_the_limiter_does_wait() -> None:
    # The control of the test above: the same client, test mode off, is still waiting.
    recorder = Recorder(HTTPResponse.from_json(200, VIEW))
    async with client_with(recorder, max_rate=0.01) as client:
        calls = asyncio.gather(*(client.view("vip") for _ in range(2)))
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(calls, 0.2)
    assert len(recorder.requests) == 1


def test_set_testing_nests_and_restores() -> None:
    with set_testing(True):
        with set_testing(False):
            assert not is_testing()
        assert is_testing()
    assert not is_testing()


# -- with_options ----------------------------------------------------------------------------


async def test_a_derived_client_shares_the_session_and_the_counters(emulator: Emulator) -> None:
    emulator.add_audience("vip")
    async with AsyncAudiencesClient(emulator.api_key, emulator.project_key,
                                    base_url=emulator.base_url) as client:
        derived = client.with_options(timeout=2.0, max_retries=1)
        assert derived.config.timeout == 2.0
        assert derived.config.retry.max_retries == 1
        assert client.config.timeout == 30.0  # the original is unchanged
        await derived.view("vip")
        await client.view("vip")
        assert client.stats.requests == derived.stats.requests == 2
        await derived.aclose()
        assert derived.closed
        assert not client.closed
        assert (await client.view("vip")).name == "vip"  # the shared session is still open
        with pytest.raises(ClientClosedError):
            await derived.view("vip")
        again = client.with_options(max_retries=0)
    with pytest.raises(ClientClosedError):  # closing the original ends its derived clients
        await again.view("vip")


async def test_a_derived_clients_settings_reach_the_wire() -> None:
    recorder = Recorder(HTTPResponse(503))
    async with client_with(recorder, retry=RetryPolicy(max_retries=0)) as client, set_testing(True):
        with pytest.raises(ServiceUnavailableError):
            await client.view("vip")
        assert len(recorder.requests) == 1
        with pytest.raises(ServiceUnavailableError):
            await client.with_options(max_retries=3, timeout=7.5).view("vip")
    assert len(recorder.requests) == 1 + 4
    assert [r.timeout for r in recorder.requests] == [30.0] + [7.5] * 4


async def test_a_derived_max_rate_is_a_ceiling_of_its_own() -> None:
    # fail_fast turns "would have to wait" into ThrottledError: no timing needed.
    recorder = Recorder(HTTPResponse.from_json(200, VIEW))
    async with client_with(recorder, fail_fast=True) as client:
        slow = client.with_options(max_rate=1.0)
        await slow.view("vip")
        with pytest.raises(ThrottledError):
            await slow.view("vip")
        for _ in range(5):  # the original is not held back by its derived client's ceiling
            await client.view("vip")


async def test_the_shared_limiter_still_governs_a_derived_client() -> None:
    recorder = Recorder(HTTPResponse(429, {"Retry-After": "50"}), HTTPResponse.from_json(200, VIEW))
    async with client_with(recorder, fail_fast=True) as client:
        derived = client.with_options(max_rate=1000.0)
        with pytest.raises(APIError) as raised:
            await derived.view("vip")  # fail-fast: a 429 is not retried
        assert raised.value.status == 429
        with pytest.raises(ThrottledError):  # the 429 paused the original too
            await client.view("vip")
        assert client.stats.throttled == 1


@pytest.mark.parametrize("options", [{"timeout": 0}, {"timeout": float("nan")}, {"max_retries": -1},
                                     {"max_rate": 0}, {"max_rate": True}])
def test_bad_options_are_refused(options: dict[str, Any]) -> None:
    client = AsyncAudiencesClient(KEY, PROJECT)
    with pytest.raises(InvalidSettingError):
        client.with_options(**options)


# -- what an APIError keeps ------------------------------------------------------------------


async def test_an_api_error_keeps_the_headers_and_a_capped_body() -> None:
    body = b'{"error_code": "BAD", "error_message": "' + b"x" * (MAX_ERROR_BODY * 2) + b'"}'
    answer = HTTPResponse(400, {"X-Request-Id": "req-7", "Content-Type": "application/json"}, body)
    async with client_with(lambda request: answer) as client:
        with pytest.raises(BadRequestError) as raised:
            await client.view("vip")
    error = raised.value
    assert error.headers["x-request-id"] == "req-7"
    assert error.body == body[:MAX_ERROR_BODY]
    copy = pickle.loads(pickle.dumps(error))
    assert copy.headers["X-Request-Id"] == "req-7"
    assert copy.body == error.body
    assert str(copy) == str(error)


# -- against a real server, the default sender ---------------------------------------------------


async def test_an_aiohttp_sender_with_options_against_the_emulator(emulator: Emulator) -> None:
    sender = AiohttpSender(max_connections=2)
    client = AsyncAudiencesClient(emulator.api_key, emulator.project_key, base_url=emulator.base_url,
                                  sender=sender)
    await client.create("vip")
    await asyncio.gather(*(client.view("vip") for _ in range(6)))
    await client.aclose()
    assert sender.closed
    assert emulator.count(route="view", status=200) == 6


