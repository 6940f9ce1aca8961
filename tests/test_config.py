"""Settings: environment fallbacks, missing credentials, the base URL rules, the retry policy."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from aiohttp import web

from batch_audiences import (
    AsyncAudiencesClient,
    AudiencesClient,
    ConfigurationError,
    InvalidSettingError,
    RetryPolicy,
    ValidationError,
)
from batch_audiences._config import Secret, build_config, check_base_url
from batch_audiences.testing import Emulator

from .conftest import Api

KEY = "rest-key-0123456789abcdef"
PROJECT = "project_0664hxvwffvbpn278gxdyhsadddqgna6"
CLIENTS = [AsyncAudiencesClient, AudiencesClient]


def config(**overrides: Any) -> Any:
    settings: dict[str, Any] = {
        "api_key": KEY, "project_key": PROJECT, "base_url": None, "api_version": "2.8",
        "timeout": 30.0, "max_retries": 5, "max_connections": 100, "max_rate": None,
        "allow_insecure_http": False, "retry": None, "env": {},
    }
    settings.update(overrides)
    api_key, project_key = settings.pop("api_key"), settings.pop("project_key")
    return build_config(api_key, project_key, **settings)


def test_defaults() -> None:
    built = config()
    assert built.api_key.reveal() == KEY
    assert built.project_key == PROJECT
    assert built.base_url == "https://api.batch.com"
    assert built.root == "https://api.batch.com/2.8"
    assert built.timeout == 30.0
    assert built.retry == RetryPolicy(max_retries=5)
    assert built.max_connections == 100


def test_environment_fallbacks() -> None:
    env = {
        "BATCH_REST_API_KEY": "env-key-123456789",
        "BATCH_PROJECT_KEY": "project_env",
        "BATCH_API_BASE_URL": "https://eu.example.com/",
    }
    built = config(api_key=None, project_key=None, env=env)
    assert built.api_key.reveal() == "env-key-123456789"
    assert built.project_key == "project_env"
    assert built.base_url == "https://eu.example.com"


def test_arguments_win_over_environment() -> None:
    env = {"BATCH_REST_API_KEY": "env", "BATCH_PROJECT_KEY": "penv", "BATCH_API_BASE_URL": "https://env.example"}
    built = config(base_url="https://arg.example", env=env)
    assert (built.api_key.reveal(), built.project_key, built.base_url) == (KEY, PROJECT, "https://arg.example")


@pytest.mark.parametrize("client_class", CLIENTS)
def test_clients_read_the_environment(clean_env: pytest.MonkeyPatch, client_class: type[Any]) -> None:
    clean_env.setenv("BATCH_REST_API_KEY", KEY)
    clean_env.setenv("BATCH_PROJECT_KEY", PROJECT)
    clean_env.setenv("BATCH_API_BASE_URL", "http://127.0.0.1:9")
    client = client_class()
    try:
        assert client.config.api_key.reveal() == KEY
        assert client.config.project_key == PROJECT
        assert client.config.base_url == "http://127.0.0.1:9"
    finally:
        if isinstance(client, AudiencesClient):
            client.close()


@pytest.mark.parametrize("client_class", CLIENTS)
@pytest.mark.parametrize(
    ("args", "env", "variable"),
    [
        ((None, PROJECT), {}, "BATCH_REST_API_KEY"),
        (("", PROJECT), {}, "BATCH_REST_API_KEY"),
        ((None, PROJECT), {"BATCH_REST_API_KEY": "  "}, "BATCH_REST_API_KEY"),
        ((KEY, None), {}, "BATCH_PROJECT_KEY"),
        ((KEY, None), {"BATCH_PROJECT_KEY": ""}, "BATCH_PROJECT_KEY"),
        ((None, None), {}, "BATCH_REST_API_KEY"),
    ],
)
def test_missing_credentials_name_the_variable(
    clean_env: pytest.MonkeyPatch,
    client_class: type[Any],
    args: tuple[str | None, str | None],
    env: dict[str, str],
    variable: str,
) -> None:
    for name, value in env.items():
        clean_env.setenv(name, value)
    with pytest.raises(ConfigurationError) as info:
        client_class(*args)
    assert variable in str(info.value)


@pytest.mark.parametrize("client_class", CLIENTS)
def test_missing_key_leaves_no_thread(clean_env: pytest.MonkeyPatch, client_class: type[Any]) -> None:
    before = set(threading.enumerate())
    with pytest.raises(ConfigurationError):
        client_class(None, PROJECT)
    assert set(threading.enumerate()) <= before


@pytest.mark.parametrize("key", [123, "has space", "tab\tkey", "line\nkey"])
def test_malformed_key_is_refused(key: object) -> None:
    with pytest.raises(InvalidSettingError) as info:
        config(api_key=key)
    assert info.value.field == "api_key"


def test_malformed_project_key_is_refused() -> None:
    with pytest.raises(InvalidSettingError) as info:
        config(project_key="a b")
    assert info.value.field == "project_key"


# -- base URL --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://api.batch.com", "https://api.batch.com"),
        ("https://api.batch.com/", "https://api.batch.com"),
        ("  https://api.batch.com  ", "https://api.batch.com"),
        ("HTTPS://API.batch.com", "HTTPS://API.batch.com"),
        ("https://api.batch.com:8443", "https://api.batch.com:8443"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("http://localhost:8080/", "http://localhost:8080"),
        ("http://[::1]:8080", "http://[::1]:8080"),
        ("http://127.5.6.7", "http://127.5.6.7"),
    ],
)
def test_accepted_base_urls(url: str, expected: str) -> None:
    assert check_base_url(url, allow_insecure_http=False) == expected


@pytest.mark.parametrize(
    "url",
    [
        "ftp://api.batch.com",
        "api.batch.com",
        "https://",
        "https:///path",
        "",
        "https://api.batch.com?x=1",
        "https://api.batch.com#frag",
        "https://user:pw@api.batch.com",
        "file:///etc/passwd",
    ],
)
def test_refused_base_urls(url: str) -> None:
    with pytest.raises(InvalidSettingError) as info:
        check_base_url(url, allow_insecure_http=True)
    assert info.value.field == "base_url"


@pytest.mark.parametrize("url", ["http://api.batch.com", "http://10.0.0.5:8080", "http://localhost.evil.com"])
@pytest.mark.parametrize("client_class", CLIENTS)
def test_plain_http_refused_to_non_loopback(client_class: type[Any], url: str) -> None:
    with pytest.raises(InvalidSettingError) as info:
        client_class(KEY, PROJECT, base_url=url)
    assert "http" in info.value.rule
    assert isinstance(info.value, ValidationError)
    assert isinstance(info.value, ConfigurationError)


def test_plain_http_refused_from_the_environment(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("BATCH_API_BASE_URL", "http://api.batch.com")
    with pytest.raises(InvalidSettingError):
        AsyncAudiencesClient(KEY, PROJECT)


def test_plain_http_allowed_when_asked() -> None:
    client = AsyncAudiencesClient(KEY, PROJECT, base_url="http://10.0.0.5:8080", allow_insecure_http=True)
    assert client.config.base_url == "http://10.0.0.5:8080"


def test_base_url_must_be_a_string() -> None:
    with pytest.raises(InvalidSettingError):
        check_base_url(b"https://api.batch.com", allow_insecure_http=False)  # type: ignore[arg-type]


@pytest.mark.parametrize("version", ["2.9", "3.0", "2.11"])
async def test_api_version_is_in_the_path(
    make_api: Any, emulator: Emulator, version: str
) -> None:
    client: Api = await make_api(api_version=version)
    await client.list()
    assert emulator.requests[0].path == f"/{version}/audiences/list"


@pytest.mark.parametrize("version", ["v2.8", "2", "2.8.1", "", 2.8])
def test_bad_api_version(version: object) -> None:
    with pytest.raises(InvalidSettingError) as info:
        config(api_version=version)
    assert info.value.field == "api_version"


# -- numbers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), float("inf"), "5", True])
def test_timeout_must_be_positive(timeout: object) -> None:
    with pytest.raises(InvalidSettingError) as info:
        config(timeout=timeout)
    assert info.value.field == "timeout"


@pytest.mark.parametrize("value", [0, -1, 1.5, True])
def test_max_connections_must_be_positive_int(value: object) -> None:
    with pytest.raises(InvalidSettingError):
        config(max_connections=value)


@pytest.mark.parametrize("value", [-1, 1.0, "3", None])
def test_max_retries_must_be_non_negative_int(value: object) -> None:
    with pytest.raises(InvalidSettingError) as info:
        config(max_retries=value)
    assert info.value.field == "max_retries"


def test_max_retries_builds_the_policy_and_retry_wins() -> None:
    assert config(max_retries=2).retry.max_retries == 2
    policy = RetryPolicy(max_retries=7, base_delay=0.1)
    assert config(max_retries=2, retry=policy).retry is policy


@pytest.mark.parametrize(
    "settings",
    [{"base_delay": 0}, {"max_delay": -1.0}, {"max_retry_after": float("nan")}, {"max_retries": -2}],
)
def test_retry_policy_checks_itself(settings: dict[str, Any]) -> None:
    with pytest.raises(InvalidSettingError):
        RetryPolicy(**settings)


def test_retry_policy_statuses() -> None:
    policy = RetryPolicy()
    retried = [s for s in (400, 401, 404, 409, 429, 500, 502, 503) if policy.should_retry_status(s)]
    assert retried == [429, 503]


def test_waits_grow_are_capped_and_honour_retry_after() -> None:
    policy = RetryPolicy(base_delay=0.1, max_delay=0.4)
    for _ in range(20):  # jitter: check bounds over several draws
        waits = policy.waits()
        values = [waits.next() for _ in range(8)]
        ceilings = [0.1, 0.2, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4]
        assert all(0 <= value <= ceiling for value, ceiling in zip(values, ceilings, strict=True))
        assert 2.0 <= policy.waits().next(retry_after=2.0) <= 2.2


async def test_max_connections_bounds_the_pool() -> None:
    # Ten requests at once, answered only after a moment: no more than three are ever open.
    in_flight = peak = 0

    async def handle(request: web.Request) -> web.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.05)  # holds the connection; nothing is timed
        in_flight -= 1
        return web.json_response({"name": "vip", "nb_ids": 0})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        async with AsyncAudiencesClient(
            KEY, PROJECT, max_connections=3, base_url=f"http://127.0.0.1:{runner.addresses[0][1]}"
        ) as client:
            await asyncio.gather(*(client.view("vip") for _ in range(10)))
    finally:
        await runner.cleanup()
    assert peak == 3


# -- the secret ------------------------------------------------------------------------------


def test_secret_is_masked() -> None:
    secret = Secret(KEY)
    assert KEY not in repr(secret)
    assert KEY not in str(secret)
    assert repr(secret).endswith("cdef')")
    assert Secret("short").masked == "…"
    assert secret.reveal() == KEY
    assert KEY not in repr(config())
