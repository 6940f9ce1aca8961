"""Retries against the emulator: 429/503 with and without Retry-After, statuses never retried,
dropped connections on every route, and the create/remove rules after an uncertain outcome."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from batch_audiences import (
    Accepted,
    APIError,
    AudienceExistsError,
    AuthenticationError,
    BadRequestError,
    Confirmation,
    IdAction,
    IndexingState,
    Member,
    NotFoundError,
    RateLimitError,
    ServerError,
    ServiceUnavailableError,
    TransportError,
)
from batch_audiences.testing import Emulator, FaultPlan, ScriptedResponse

from .conftest import MAX_RETRIES, Api, WaitSpy, fast_retry_policy

THROTTLED = {"error_code": "TOO_MANY_REQUESTS", "error_message": "slow down"}
MAINTENANCE = {"error_code": "MAINTENANCE", "error_message": "back soon"}


def statuses(emulator: Emulator, route: str | None = None) -> list[int]:
    return [r.status for r in emulator.requests if route is None or r.route == route]


# -- 429 and 503 -----------------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 503])
async def test_retried_with_retry_after_seconds(
    fast_api: Api, emulator: Emulator, wait_spy: WaitSpy, status: int
) -> None:
    emulator.add_audience("vip", ["u1"])
    emulator.script(ScriptedResponse(status, THROTTLED, {"Retry-After": "0.05"}, route="view"))
    audience = await fast_api.view("vip")
    assert audience.nb_ids == 1
    assert statuses(emulator) == [status, 200]
    assert wait_spy.retry_afters == [pytest.approx(0.05)]
    assert wait_spy.waits[0] >= 0.05
    stats = fast_api.stats
    assert (stats.requests, stats.retries, stats.throttled) == (2, 1, 1 if status == 429 else 0)


@pytest.mark.parametrize("status", [429, 503])
async def test_retried_without_retry_after(
    fast_api: Api, emulator: Emulator, wait_spy: WaitSpy, status: int
) -> None:
    emulator.add_audience("vip")
    emulator.script(ScriptedResponse(status, route="view"))
    await fast_api.view("vip")
    assert statuses(emulator) == [status, 200]
    assert wait_spy.retry_afters == [None]
    assert 0 <= wait_spy.waits[0] <= fast_retry_policy().max_delay


async def test_default_client_retries_a_429(api: Api, emulator: Emulator, wait_spy: WaitSpy) -> None:
    # The default client (no max_rate) also starts pacing on a 429; the call still succeeds.
    emulator.add_audience("vip")
    assert api.stats.limit is None  # nothing measured before a 429
    emulator.script(ScriptedResponse(429, THROTTLED, {"Retry-After": "0.01"}, route="view"))
    assert (await api.view("vip")).name == "vip"
    assert statuses(emulator) == [429, 200]
    assert api.stats.rate is not None
    limit = api.stats.limit
    assert limit is not None
    assert limit > 0
    assert wait_spy.retry_afters == [pytest.approx(0.01)]


async def test_retry_after_as_a_past_http_date(api: Api, emulator: Emulator, wait_spy: WaitSpy) -> None:
    emulator.add_audience("vip")
    past = email.utils.formatdate(time.time() - 60, usegmt=True)
    emulator.script(ScriptedResponse(503, MAINTENANCE, {"Retry-After": past}, route="view"))
    await api.view("vip")
    assert statuses(emulator) == [503, 200]
    assert wait_spy.retry_afters == [0.0]


@pytest.mark.parametrize(
    "headers",
    [
        {"Retry-After": "__date__"},
        {"X-RateLimit-Reset": "__epoch__"},
    ],
    ids=["http-date", "ratelimit-reset-epoch"],
)
async def test_future_wait_is_read_from_the_headers(
    make_api: Callable[..., Awaitable[Api]], emulator: Emulator, headers: dict[str, str]
) -> None:
    # No retry allowed, so the wait the server asked for is visible on the error, not slept.
    client = await make_api(retry=fast_retry_policy(max_retries=0))
    in_30s = time.time() + 30
    value = {"__date__": email.utils.formatdate(in_30s, usegmt=True), "__epoch__": str(int(in_30s))}
    emulator.script(ScriptedResponse(429, THROTTLED, {k: value[v] for k, v in headers.items()}, route="list"))
    with pytest.raises(RateLimitError) as info:
        await client.list()
    assert info.value.retry_after is not None
    assert 25 < info.value.retry_after <= 30
    assert statuses(emulator) == [429]


async def test_ratelimit_reset_as_seconds(fast_api: Api, emulator: Emulator, wait_spy: WaitSpy) -> None:
    emulator.script(ScriptedResponse(429, THROTTLED, {"X-RateLimit-Reset": "0.03"}, route="list"))
    page = await fast_api.list()
    assert page.audiences == ()
    assert statuses(emulator) == [429, 200]
    assert wait_spy.retry_afters == [pytest.approx(0.03)]
    assert wait_spy.waits[0] >= 0.03


async def test_several_retries_then_success(fast_api: Api, emulator: Emulator, wait_spy: WaitSpy) -> None:
    emulator.add_audience("vip")
    emulator.script(
        ScriptedResponse(429, THROTTLED, {"Retry-After": "0.01"}, route="view"),
        ScriptedResponse(503, MAINTENANCE, route="view"),
        ScriptedResponse(429, THROTTLED, route="view"),
    )
    await fast_api.view("vip")
    assert statuses(emulator) == [429, 503, 429, 200]
    assert len(wait_spy.calls) == 3
    assert (fast_api.stats.retries, fast_api.stats.throttled) == (3, 2)


@pytest.mark.parametrize(
    ("status", "error_class"), [(429, RateLimitError), (503, ServiceUnavailableError)]
)
async def test_retries_run_out(
    fast_api: Api, emulator: Emulator, status: int, error_class: type[APIError]
) -> None:
    emulator.script(*[
        ScriptedResponse(status, THROTTLED, {"Retry-After": "0.01"}, route="view")
        for _ in range(MAX_RETRIES + 2)
    ])
    with pytest.raises(error_class) as info:
        await fast_api.view("vip")
    assert statuses(emulator) == [status] * (MAX_RETRIES + 1)
    assert fast_api.stats.retries == MAX_RETRIES
    assert info.value.retry_after == pytest.approx(0.01)


async def test_max_retries_zero(make_api: Callable[..., Awaitable[Api]], emulator: Emulator) -> None:
    client = await make_api(max_retries=0)
    emulator.script(ScriptedResponse(503, MAINTENANCE, route="view"))
    with pytest.raises(ServiceUnavailableError):
        await client.view("vip")
    assert statuses(emulator) == [503]
    assert client.stats.retries == 0


async def test_max_retries_is_used_by_default_policy(
    make_api: Callable[..., Awaitable[Api]], emulator: Emulator
) -> None:
    client = await make_api(max_retries=1, max_rate=2000.0)
    assert client.config.retry.max_retries == 1
    emulator.script(*[ScriptedResponse(503, route="view", headers={"Retry-After": "0"}) for _ in range(3)])
    with pytest.raises(ServiceUnavailableError):
        await client.view("vip")
    assert statuses(emulator) == [503, 503]


# -- never retried ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error_class"),
    [(400, BadRequestError), (401, AuthenticationError), (404, NotFoundError), (500, ServerError),
     (409, BadRequestError), (502, ServerError)],
)
@pytest.mark.parametrize("route", ["view", "update"])
async def test_not_retried(
    api: Api, emulator: Emulator, status: int, error_class: type[Exception], route: str
) -> None:
    emulator.add_audience("vip")
    emulator.script(ScriptedResponse(status, {"error_code": "E", "error_message": "no"}, route=route))
    call = api.view("vip") if route == "view" else api.update("vip", [IdAction.add("u1")])
    with pytest.raises(error_class):
        await call
    assert statuses(emulator) == [status]
    assert api.stats.retries == 0


async def test_real_errors_are_not_retried(api: Api, emulator: Emulator) -> None:
    with pytest.raises(NotFoundError):
        await api.view("missing")
    with pytest.raises(NotFoundError):
        await api.remove("missing")
    emulator.api_key = "rotated-key-000000"
    with pytest.raises(AuthenticationError):
        await api.list()
    assert statuses(emulator) == [404, 404, 401]
    assert api.stats.retries == 0


# -- every route retries throttling, and the write happens once ------------------------------


async def run_route(api: Api, route: str) -> Any:
    calls: dict[str, Callable[[], Awaitable[Any]]] = {
        "create": lambda: api.create("fresh", display_name="Fresh"),
        "update": lambda: api.update("vip", [IdAction.add("u2", {"n": 2}), IdAction.remove("u1")]),
        "replace": lambda: api.replace("vip", [Member("r1"), "r2"]),
        "remove": lambda: api.remove("vip"),
        "view": lambda: api.view("vip"),
        "list": lambda: api.list(limit=5),
    }
    return await calls[route]()


def check_route_effect(emulator: Emulator, route: str, result: Any) -> None:
    """The state after one successful call of ``route`` on the starting state {vip: [u1]}."""
    emulator.settle()
    if route == "create":
        assert emulator.audience_names() == ["fresh", "vip"]
        assert emulator.members("fresh") == {}
    elif route == "update":
        assert emulator.members("vip") == {"u2": {"n": 2}}
    elif route == "replace":
        assert emulator.members("vip") == {"r1": {}, "r2": {}}
    elif route == "remove":
        assert emulator.audience_names() == []
    elif route == "view":
        assert result.name == "vip"
        assert result.nb_ids == 1
    else:
        assert [a.name for a in result.audiences] == ["vip"]
    if route in ("create", "update", "replace", "remove"):
        assert isinstance(result, Accepted)


ROUTES = ["create", "update", "replace", "remove", "view", "list"]


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("status", [429, 503])
async def test_every_route_retries_throttling(
    fast_api: Api, emulator: Emulator, route: str, status: int
) -> None:
    emulator.add_audience("vip", ["u1"])
    emulator.script(*[ScriptedResponse(status, THROTTLED, {"Retry-After": "0.01"}, route=route)] * 2)
    result = await run_route(fast_api, route)
    assert statuses(emulator, route) == [status, status, 202 if route not in ("view", "list") else 200]
    check_route_effect(emulator, route, result)
    if route not in ("view", "list"):
        assert result.indexing_token is not None


# -- dropped connections ---------------------------------------------------------------------


@pytest.mark.parametrize("route", ROUTES)
async def test_drop_before_is_retried_on_every_route(api: Api, emulator: Emulator, route: str) -> None:
    emulator.add_audience("vip", ["u1"])
    emulator.script(ScriptedResponse(action="drop_before", route=route))
    result = await run_route(api, route)
    records = [r for r in emulator.requests if r.route == route]
    assert [r.outcome for r in records] == ["dropped_before", "ok"]
    check_route_effect(emulator, route, result)
    if route not in ("view", "list"):
        assert result.indexing_token is not None  # the retry did the write and said so
    assert api.stats.retries == 1


@pytest.mark.parametrize("route", ROUTES)
async def test_drop_after_is_retried_on_every_route(api: Api, emulator: Emulator, route: str) -> None:
    emulator.add_audience("vip", ["u1"])
    emulator.script(ScriptedResponse(action="drop_after", route=route))
    result = await run_route(api, route)
    check_route_effect(emulator, route, result)
    outcomes = [(r.route, r.outcome, r.status) for r in emulator.requests]
    if route == "create":
        # The create happened; the retry is told the name is taken; a view finds the audience,
        # created while this call's first try was out: this call's create.
        assert outcomes == [("create", "dropped_after", 0), ("create", "error", 400), ("view", "ok", 200)]
        assert result == Accepted(None, confirmation=Confirmation.INFERRED)
    elif route == "remove":
        # The remove happened; the retry finds nothing to remove. The audience is gone, but a
        # removed audience leaves no evidence of who removed it: reported uncertain.
        assert outcomes == [("remove", "dropped_after", 0), ("remove", "error", 404)]
        assert result == Accepted(None, confirmation=Confirmation.UNCERTAIN)
    else:
        expected = 200 if route in ("view", "list") else 202
        assert outcomes == [(route, "dropped_after", 0), (route, "ok", expected)]


async def test_create_after_uncertain_outcome_makes_one_audience(api: Api, emulator: Emulator) -> None:
    emulator.script(ScriptedResponse(action="drop_after", route="create"))
    accepted = await api.create("vip", display_name="VIP")
    assert accepted == Accepted(None, confirmation=Confirmation.INFERRED)
    assert emulator.audience_names() == ["vip"]
    assert emulator.count(route="create") == 2
    audience = await api.view("vip")
    assert audience.display_name == "VIP"


async def test_create_of_an_existing_name_raises(api: Api, emulator: Emulator) -> None:
    emulator.add_audience("vip")
    with pytest.raises(AudienceExistsError) as info:
        await api.create("vip")
    assert info.value.status == 400
    assert [r.route for r in emulator.requests] == ["create", "view"]  # the view decided


async def test_uncertain_create_refuted_by_view_raises(api: Api, emulator: Emulator) -> None:
    # The first try broke, the retry hears "exists", but the view finds no such audience: the
    # state refutes the wording, and the refusal stands as what it is.
    emulator.script(
        ScriptedResponse(action="drop_before", route="create"),
        ScriptedResponse(400, {"error_code": "AUDIENCE_ALREADY_EXISTS", "error_message": "taken"},
                         route="create"),
    )
    with pytest.raises(BadRequestError) as info:
        await api.create("vip")
    assert not isinstance(info.value, AudienceExistsError)
    assert [(r.route, r.status) for r in emulator.requests] == [("create", 0), ("create", 400), ("view", 404)]


async def test_wording_alone_never_makes_a_name_taken(api: Api, emulator: Emulator) -> None:
    emulator.script(ScriptedResponse(
        400,
        {"error_code": "INVALID_PARAMETER", "error_message": "An audience with this name already exists"},
        route="create",
    ))
    with pytest.raises(BadRequestError) as info:
        await api.create("vip")
    assert not isinstance(info.value, AudienceExistsError)  # the view found no such audience
    assert info.value.status == 400


@pytest.mark.parametrize(
    ("status", "body", "error_class"),
    [
        (400, {"error_code": "INVALID_TYPE", "error_message": "audience type 'x' does not exist"},
         BadRequestError),
        (401, {"error_code": "AUTH", "error_message": "this API key doesn't exist"}, AuthenticationError),
        (404, {"error_code": "NOT_FOUND", "error_message": "route does not exist"}, NotFoundError),
        (401, {"error_code": "AUTH", "error_message": "project already exists elsewhere"},
         AuthenticationError),
    ],
)
async def test_create_errors_that_do_not_mean_exists(
    api: Api, emulator: Emulator, status: int, body: object, error_class: type[APIError]
) -> None:
    emulator.script(ScriptedResponse(status, body, route="create"))
    with pytest.raises(error_class) as info:
        await api.create("vip")
    assert not isinstance(info.value, AudienceExistsError)
    # A 400 is checked against the state (the view finds nothing); 401 and 404 mean what they say.
    assert [r.route for r in emulator.requests] == (["create", "view"] if status == 400 else ["create"])


async def test_remove_of_missing_audience_raises(api: Api, emulator: Emulator) -> None:
    with pytest.raises(NotFoundError):
        await api.remove("vip")


async def test_remove_without_body(api: Api, emulator: Emulator) -> None:
    emulator.add_audience("vip")
    emulator.script(ScriptedResponse(202, None, route="remove"))
    assert await api.remove("vip") == Accepted(None)


@pytest.mark.parametrize("action", ["drop_before", "drop_after"])
async def test_dropped_connections_run_out(api: Api, emulator: Emulator, action: str) -> None:
    emulator.add_audience("vip", ["u1"])
    emulator.script(*[ScriptedResponse(action=action, route="update") for _ in range(MAX_RETRIES + 1)])
    with pytest.raises(TransportError) as info:
        await api.update("vip", [IdAction.add("u2")])
    assert info.value.attempts == MAX_RETRIES + 1
    assert info.value.route == "/audiences/update"
    emulator.settle()
    expected: dict[str, dict[str, object]] = {"u1": {}, "u2": {}} if action == "drop_after" else {"u1": {}}
    assert emulator.members("vip") == expected


async def test_update_retried_after_drop_is_applied_once(api: Api, emulator: Emulator) -> None:
    emulator.add_audience("vip", ["u1"])
    emulator.script(ScriptedResponse(action="drop_after", route="update"))
    accepted = await api.update("vip", [IdAction.add("u2")])
    audience = await api.wait_until_applied("vip", accepted.indexing_token, poll_interval=0.01)
    assert audience.indexing_state == IndexingState.APPLIED
    assert audience.nb_ids == 2


# -- random faults: every failure is a retry, counted on both sides --------------------------


async def test_random_faults_are_all_retried(
    make_api: Callable[..., Awaitable[Api]], emulator: Emulator
) -> None:
    # More retries than the shared clients have: random faults may chain a few in a row.
    client = await make_api(retry=fast_retry_policy(max_retries=10), max_rate=2000.0)
    emulator.faults = FaultPlan(seed=11, rate_429=0.15, retry_after=0.01, rate_503=0.15, drop_before=0.1,
                                drop_after=0.1)
    await client.create("vip")
    for index in range(12):
        await client.update("vip", [IdAction.add(f"u{index}")])
    page = await client.list()
    emulator.faults = FaultPlan()
    emulator.settle()
    assert [a.name for a in page.audiences] == ["vip"]
    assert set(emulator.members("vip")) == {f"u{i}" for i in range(12)}
    records = emulator.requests
    failed = [r for r in records if r.outcome != "ok"]
    assert len(failed) >= 5, "the seed should inject several faults"
    assert client.stats.requests == len(records)
    # Every failed attempt was retried, except a create whose retry heard "exists" (then a view).
    conflicts = sum(1 for r in records if r.route == "create" and r.status == 400)
    assert client.stats.retries == len(failed) - conflicts
