"""The REST API key never shows: not in a repr or str, not in a log line at any level, not in an
exception message (even when the server echoes it back), not in a chained cause."""

from __future__ import annotations

import logging
import pickle
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from batch_audiences import (
    APIError,
    AsyncAudiencesClient,
    AudiencesClient,
    BatchAudiencesError,
    IdAction,
    RetryPolicy,
    TransportError,
    UnexpectedResponseError,
)
from batch_audiences._config import Secret, build_config
from batch_audiences.testing import Emulator, FaultPlan, ScriptedResponse

from .conftest import Api, fast_retry_policy

SECRET = "sk-live-7f3a9c2e5b8d1f4a6c0e"


@pytest.fixture
async def secret_emulator() -> AsyncIterator[Emulator]:
    async with Emulator(indexing_delay=0.0, api_key=SECRET) as emu:
        yield emu


def texts_of(error: BaseException) -> list[str]:
    """Everything an error shows: str, repr, args, the formatted traceback, its causes too."""
    out: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        out += [str(current), repr(current), repr(current.args)]
        out += [repr(value) for value in vars(current).values()] if hasattr(current, "__dict__") else []
        current = current.__cause__ or current.__context__
    out.append("".join(traceback.format_exception(error)))
    return out


def assert_hidden(*texts: str) -> None:
    for text in texts:
        assert SECRET not in text
        assert SECRET[:12] not in text  # no long prefix either


# -- reprs -----------------------------------------------------------------------------------


def test_reprs_hide_the_key() -> None:
    client = AsyncAudiencesClient(SECRET, "project_x")
    config = build_config(
        SECRET, "project_x", base_url=None, api_version="2.8", timeout=1.0, max_retries=1,
        max_connections=1, max_rate=None, allow_insecure_http=False, retry=None, env={},
    )
    assert_hidden(repr(client), str(client), repr(client.config), str(client.config), repr(config),
                  repr(Secret(SECRET)), str(Secret(SECRET)), repr(client.stats))
    assert SECRET[-4:] in repr(client)  # masked, yet recognizable
    sync = AudiencesClient(SECRET, "project_x")
    try:
        assert_hidden(repr(sync), str(sync), repr(sync.config))
    finally:
        sync.close()


def test_key_from_the_environment_is_hidden_too(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("BATCH_REST_API_KEY", SECRET)
    client = AsyncAudiencesClient(project_key="project_x")
    assert_hidden(repr(client), repr(client.config))


def test_invalid_key_is_not_quoted() -> None:
    spaced = SECRET[:10] + " " + SECRET[10:]
    with pytest.raises(BatchAudiencesError) as info:
        AsyncAudiencesClient(spaced, "project_x")
    assert SECRET[:10] not in str(info.value)
    assert SECRET[10:] not in str(info.value)


# -- errors ----------------------------------------------------------------------------------


@pytest.fixture
async def secret_api(
    secret_emulator: Emulator, client_kind: str
) -> AsyncIterator[Api]:
    from .conftest import SyncAdapter

    settings: dict[str, Any] = {
        "base_url": secret_emulator.base_url, "retry": fast_retry_policy(), "max_rate": 2000.0,
    }
    client: Api
    if client_kind == "async":
        client = AsyncAudiencesClient(SECRET, secret_emulator.project_key, **settings)
    else:
        client = SyncAdapter(AudiencesClient(SECRET, secret_emulator.project_key, **settings))
    yield client
    await client.aclose()


ECHOES: list[tuple[str, int, object]] = [
    ("json-400", 400, {"error_code": "BAD", "error_message": f"bad header Authorization: Bearer {SECRET}"}),
    ("html-401", 401, f"<html><pre>Authorization: Bearer {SECRET}</pre></html>"),
    ("text-500", 500, f"upstream said: key={SECRET}"),
    ("code-404", 404, {"error_code": SECRET, "error_message": "x"}),
]


@pytest.mark.parametrize(("what", "status", "body"), ECHOES, ids=[e[0] for e in ECHOES])
async def test_server_echo_of_the_key_is_redacted(
    secret_api: Api, secret_emulator: Emulator, what: str, status: int, body: object
) -> None:
    secret_emulator.script(ScriptedResponse(status, body, route="view"))
    with pytest.raises(APIError) as info:
        await secret_api.view("vip")
    assert info.value.status == status
    assert_hidden(*texts_of(info.value), *(str(v) for v in vars(info.value).values()))
    assert_hidden(repr(pickle.loads(pickle.dumps(info.value))))


async def test_echo_in_a_success_body_is_redacted(secret_api: Api, secret_emulator: Emulator) -> None:
    secret_emulator.script(ScriptedResponse(200, f"<html>Bearer {SECRET}</html>", route="view"))
    with pytest.raises(UnexpectedResponseError) as info:
        await secret_api.view("vip")
    assert_hidden(*texts_of(info.value))


async def test_transport_errors_hide_the_key(make_api: Callable[..., Awaitable[Api]], free_port: int) -> None:
    client = await make_api(api_key=SECRET, base_url=f"http://127.0.0.1:{free_port}")
    with pytest.raises(TransportError) as info:
        await client.view("vip")
    assert_hidden(*texts_of(info.value))


async def test_authentication_error_hides_the_key(make_api: Callable[..., Awaitable[Api]],
                                                  emulator: Emulator) -> None:
    client = await make_api(api_key=SECRET)  # not the emulator's key: 401
    with pytest.raises(APIError) as info:
        await client.list()
    assert info.value.status == 401
    assert_hidden(*texts_of(info.value))


# -- logs ------------------------------------------------------------------------------------


async def test_debug_logs_of_a_whole_run_hide_the_key(
    secret_api: Api, secret_emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    secret_emulator.faults = FaultPlan(seed=3, rate_429=0.1, retry_after=0.01, rate_503=0.1, drop_before=0.1,
                                       drop_after=0.1)
    with caplog.at_level(logging.DEBUG):  # every logger: the SDK's, aiohttp's, asyncio's
        await secret_api.create("vip")
        for index in range(6):
            await secret_api.update("vip", [IdAction.add(f"u{index}", {"k": SECRET[:3]})])
        secret_emulator.faults = FaultPlan()
        secret_emulator.script(
            ScriptedResponse(400, {"error_message": f"bad key {SECRET}"}, route="view"),
            ScriptedResponse(503, f"down; your key {SECRET}", route="list"),
            ScriptedResponse(503, route="list"),
            ScriptedResponse(503, route="list"),
            ScriptedResponse(503, route="list"),
        )
        with pytest.raises(APIError):
            await secret_api.view("vip")
        with pytest.raises(APIError):
            await secret_api.list()
        assert [a.name async for a in secret_api.iter_audiences()] == ["vip"]
        await secret_api.wait_until_applied("vip", poll_interval=0.01)
    sdk_records = [r for r in caplog.records if r.name == "batch_audiences"]
    assert len(sdk_records) >= 10
    assert any("retrying" in r.getMessage() for r in sdk_records)
    for record in caplog.records:
        assert_hidden(record.getMessage(), repr(record.args), caplog.text)
        if record.exc_info and record.exc_info[1] is not None:
            assert_hidden(*texts_of(record.exc_info[1]))


def test_retry_policy_repr_has_no_secret() -> None:
    assert_hidden(repr(RetryPolicy()))
