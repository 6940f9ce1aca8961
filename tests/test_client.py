"""Every method of both clients, against the emulator over real HTTP on loopback.

Each test runs twice: with :class:`AsyncAudiencesClient` and with :class:`AudiencesClient`
(wrapped in the awaitable adapter of conftest), so the two cannot drift.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone

import pytest

from batch_audiences import (
    Accepted,
    Audience,
    AudiencePage,
    AudienceType,
    IdAction,
    IndexingState,
    IndexingTimeoutError,
    Member,
    NotFoundError,
    UnexpectedResponseError,
)
from batch_audiences.testing import Emulator, ScriptedResponse

from .conftest import Api


def recent(moment: datetime | None) -> bool:
    now = datetime.now(timezone.utc)
    if moment is None or moment.tzinfo is None:
        return False
    return now - timedelta(minutes=5) < moment <= now + timedelta(seconds=5)


# -- create ----------------------------------------------------------------------------------


async def test_create(api: Api, emulator: Emulator) -> None:
    accepted = await api.create("vip", display_name="VIP customers")
    assert isinstance(accepted, Accepted)
    assert isinstance(accepted.indexing_token, str)
    assert accepted.indexing_token
    created = emulator.audience("vip")
    assert created is not None
    assert (created.display_name, created.members) == ("VIP customers", {})
    audience = await api.view("vip")
    assert audience.name == "vip"
    assert audience.display_name == "VIP customers"
    assert audience.type is AudienceType.CUSTOM_IDS
    assert audience.nb_ids == 0
    assert audience.indexing_state is IndexingState.APPLIED
    assert recent(audience.created)
    assert recent(audience.updated)


async def test_create_without_display_name(api: Api, emulator: Emulator) -> None:
    await api.create("plain", type=AudienceType.CUSTOM_IDS)
    assert (await api.view("plain")).display_name is None
    assert emulator.requests[0].body == {"name": "plain", "type": "custom_ids"}


async def test_concurrent_creates(api: Api, emulator: Emulator) -> None:
    names = [f"aud-{i:02d}" for i in range(20)]
    results = await asyncio.gather(*(api.create(name) for name in names))
    assert len({r.indexing_token for r in results}) == 20
    assert emulator.audience_names() == names


# -- update ----------------------------------------------------------------------------------


async def test_update_adds_and_removes(api: Api, emulator: Emulator) -> None:
    emulator.add_audience("vip", {"old": {}, "gone": {"x": 1}})
    accepted = await api.update(
        "vip",
        [IdAction.add("u1", {"plan": "pro", "score": 3}), IdAction.add("u2"), IdAction.remove("gone")],
    )
    assert accepted.indexing_token
    audience = await api.wait_until_applied("vip", accepted.indexing_token, poll_interval=0.01)
    assert audience.indexing_state is IndexingState.APPLIED
    assert audience.nb_ids == 3
    assert emulator.members("vip") == {"old": {}, "u1": {"plan": "pro", "score": 3}, "u2": {}}


async def test_update_takes_any_iterable(api: Api, emulator: Emulator) -> None:
    emulator.add_audience("vip")
    await api.update("vip", (IdAction.add(f"u{i}") for i in range(3)))
    emulator.settle()
    assert set(emulator.members("vip")) == {"u0", "u1", "u2"}


async def test_update_last_action_for_an_id_wins(api: Api, emulator: Emulator) -> None:
    emulator.add_audience("vip", ["u1"])
    await api.update("vip", [IdAction.remove("u1"), IdAction.add("u1", {"v": 2}), IdAction.add("u2"),
                             IdAction.remove("u2")])
    emulator.settle()
    assert emulator.members("vip") == {"u1": {"v": 2}}


async def test_update_of_missing_audience(api: Api, emulator: Emulator) -> None:
    with pytest.raises(NotFoundError):
        await api.update("missing", [IdAction.add("u1")])


async def test_update_of_10000_ids(api: Api, emulator: Emulator) -> None:
    emulator.add_audience("big")
    await api.update("big", [IdAction.add(f"user-{i}") for i in range(10_000)])
    emulator.settle()
    assert len(emulator.members("big")) == 10_000


# -- replace ---------------------------------------------------------------------------------


async def test_replace(api: Api, emulator: Emulator) -> None:
    emulator.add_audience("vip", ["old1", "old2"])
    earlier = await api.update("vip", [IdAction.add("old3")])
    accepted = await api.replace("vip", [Member("n1", {"tier": "gold"}), "n2"])
    audience = await api.wait_until_applied("vip", accepted.indexing_token, poll_interval=0.01)
    assert audience.nb_ids == 2
    assert emulator.members("vip") == {"n1": {"tier": "gold"}, "n2": {}}
    # The earlier write's content was superseded by the replace.
    assert earlier.indexing_token is not None
    previous = await api.view("vip", indexing_token=earlier.indexing_token)
    assert previous.indexing_state is IndexingState.REPLACED


async def test_replace_with_nothing_empties(api: Api, emulator: Emulator) -> None:
    emulator.add_audience("vip", ["u1", "u2"])
    await api.replace("vip", [])
    emulator.settle()
    assert emulator.members("vip") == {}
    assert emulator.requests[0].body == {"name": "vip", "ids": []}


# -- remove ----------------------------------------------------------------------------------


async def test_remove(api: Api, emulator: Emulator) -> None:
    emulator.add_audience("vip", ["u1"])
    emulator.add_audience("keep")
    accepted = await api.remove("vip")
    assert isinstance(accepted, Accepted)
    assert accepted.indexing_token
    assert emulator.audience_names() == ["keep"]
    with pytest.raises(NotFoundError):
        await api.view("vip")


# -- view ------------------------------------------------------------------------------------


async def test_view_with_token_reports_that_write(api: Api, emulator: Emulator) -> None:
    emulator.add_audience("vip")
    first = await api.update("vip", [IdAction.add("u1")])
    emulator.indexing_delay = 60.0
    second = await api.update("vip", [IdAction.add("u2")])
    done = await api.view("vip", indexing_token=first.indexing_token)
    assert done.indexing_state is IndexingState.APPLIED
    pending = await api.view("vip", indexing_token=second.indexing_token)
    assert pending.indexing_state is IndexingState.IN_PROGRESS
    assert pending.is_indexing
    assert (await api.view("vip")).indexing_state is IndexingState.IN_PROGRESS
    assert emulator.requests[-1].query == {"name": "vip"}
    assert emulator.requests[-2].query == {"name": "vip", "indexing_token": second.indexing_token}


async def test_view_of_unknown_token(api: Api, emulator: Emulator) -> None:
    emulator.add_audience("vip")
    with pytest.raises(NotFoundError) as info:
        await api.view("vip", indexing_token="no-such-token")
    assert info.value.error_code == "INDEXING_TOKEN_NOT_FOUND"


# -- list and iter_audiences -----------------------------------------------------------------


async def test_list_pages_and_count_on_first_page_only(api: Api, emulator: Emulator) -> None:
    names = [f"a{i}" for i in range(5)]
    for name in names:
        emulator.add_audience(name, display_name=name.upper())
    first = await api.list(limit=2)
    assert isinstance(first, AudiencePage)
    assert [a.name for a in first.audiences] == ["a0", "a1"]
    assert all(isinstance(a, Audience) for a in first.audiences)
    assert first.audiences[0].display_name == "A0"
    assert (first.has_more, first.count) == (True, 5)
    assert first.next_from
    second = await api.list(limit=2, cursor=first.next_from)
    assert [a.name for a in second.audiences] == ["a2", "a3"]
    assert second.count is None
    third = await api.list(limit=2, cursor=second.next_from)
    assert [a.name for a in third.audiences] == ["a4"]
    assert (third.has_more, third.next_from, third.count) == (False, None, None)
    queries = [r.query for r in emulator.requests]
    assert queries == [
        {"limit": "2"},
        {"limit": "2", "from": first.next_from},
        {"limit": "2", "from": second.next_from},
    ]


async def test_list_defaults_and_limits(api: Api, emulator: Emulator) -> None:
    for i in range(12):
        emulator.add_audience(f"x{i:02d}")
    assert len((await api.list()).audiences) == 10
    full = await api.list(limit=100)
    assert (len(full.audiences), full.has_more, full.count) == (12, False, 12)
    one = await api.list(limit=1)
    assert len(one.audiences) == 1
    assert one.has_more


async def test_list_of_empty_project(api: Api) -> None:
    page = await api.list()
    assert (page.audiences, page.has_more, page.count) == ((), False, 0)


@pytest.mark.parametrize(("total", "page_size", "pages"), [(7, 3, 3), (6, 3, 2), (0, 5, 1), (4, 100, 1)])
async def test_iter_audiences_across_pages(
    api: Api, emulator: Emulator, total: int, page_size: int, pages: int
) -> None:
    names = [f"aud-{i:03d}" for i in range(total)]
    for name in names:
        emulator.add_audience(name)
    seen = [audience.name async for audience in api.iter_audiences(page_size=page_size)]
    assert seen == names
    lists = [r for r in emulator.requests if r.route == "list"]
    assert len(lists) == pages
    assert all(r.query["limit"] == str(page_size) for r in lists)
    assert "from" not in lists[0].query
    assert all("from" in r.query for r in lists[1:])


async def test_iter_audiences_default_page_size(api: Api, emulator: Emulator) -> None:
    emulator.add_audience("only")
    assert [a.name async for a in api.iter_audiences()] == ["only"]
    assert emulator.requests[0].query == {"limit": "100"}


async def test_iter_audiences_is_lazy(api: Api, emulator: Emulator) -> None:
    for i in range(6):
        emulator.add_audience(f"n{i}")
    iterator = api.iter_audiences(page_size=2)
    assert emulator.requests == []  # nothing fetched before iterating
    taken = []
    async for audience in iterator:
        taken.append(audience.name)
        if len(taken) == 3:
            break
    assert taken == ["n0", "n1", "n2"]
    assert emulator.count(route="list") == 2


async def test_iter_audiences_stops_on_a_repeated_cursor(api: Api, emulator: Emulator) -> None:
    page = {"audiences": [], "has_more": True, "next_from": "same-cursor"}
    emulator.script(*(ScriptedResponse(200, body=page, route="list") for _ in range(3)))
    with pytest.raises(UnexpectedResponseError, match="twice"):
        _ = [a async for a in api.iter_audiences(page_size=5)]
    assert emulator.count(route="list") == 2


# -- wait_until_applied ----------------------------------------------------------------------


async def test_wait_until_applied_polls_until_done(api: Api, emulator: Emulator) -> None:
    emulator.add_audience("vip")
    emulator.indexing_delay = 60.0  # applied only when the test says so
    accepted = await api.update("vip", [IdAction.add("u1")])
    waiting = asyncio.ensure_future(
        api.wait_until_applied("vip", accepted.indexing_token, timeout=30, poll_interval=0.01)
    )
    while emulator.count(route="view") < 2:  # noqa: ASYNC110 - it has seen IN_PROGRESS, polls again
        await asyncio.sleep(0.005)
    assert not waiting.done()
    emulator.settle()
    audience = await waiting
    assert audience.indexing_state is IndexingState.APPLIED
    assert audience.nb_ids == 1
    views = [r for r in emulator.requests if r.route == "view"]
    assert all(r.query == {"name": "vip", "indexing_token": accepted.indexing_token} for r in views)


async def test_wait_until_applied_without_token_follows_the_last_write(api: Api, emulator: Emulator) -> None:
    emulator.add_audience("vip")
    emulator.indexing_delay = 0.05
    await api.update("vip", [IdAction.add("u1")])
    audience = await api.wait_until_applied("vip", poll_interval=0.01)
    assert audience.indexing_state is IndexingState.APPLIED
    assert audience.nb_ids == 1


async def test_wait_until_applied_returns_replaced_too(api: Api, emulator: Emulator) -> None:
    emulator.add_audience("vip")
    first = await api.update("vip", [IdAction.add("u1")])
    await api.replace("vip", ["u2"])
    audience = await api.wait_until_applied("vip", first.indexing_token, poll_interval=0.01)
    assert audience.indexing_state is IndexingState.REPLACED


async def test_wait_until_applied_times_out(api: Api, emulator: Emulator) -> None:
    emulator.add_audience("vip")
    emulator.indexing_delay = 60.0
    accepted = await api.update("vip", [IdAction.add("u1")])
    with pytest.raises(IndexingTimeoutError) as info:
        await api.wait_until_applied("vip", accepted.indexing_token, timeout=0.2, poll_interval=0.02)
    error = info.value
    assert (error.name, error.indexing_token, error.timeout, error.state) == (
        "vip", accepted.indexing_token, 0.2, "IN_PROGRESS",
    )
    assert isinstance(error, TimeoutError)
    assert emulator.count(route="view") >= 1


async def test_wait_until_applied_of_missing_audience(api: Api) -> None:
    with pytest.raises(NotFoundError):
        await api.wait_until_applied("missing", poll_interval=0.01)


# -- the whole journey -----------------------------------------------------------------------


async def test_journey(make_api: Callable[..., Awaitable[Api]], emulator: Emulator) -> None:
    emulator.indexing_delay = 0.01
    client = await make_api()
    await client.create("journey", display_name="Journey")
    token = (await client.update("journey", [IdAction.add(f"u{i}") for i in range(50)])).indexing_token
    assert (await client.wait_until_applied("journey", token, poll_interval=0.01)).nb_ids == 50
    token = (await client.replace("journey", ["a", "b"])).indexing_token
    assert (await client.wait_until_applied("journey", token, poll_interval=0.01)).nb_ids == 2
    assert [a.name async for a in client.iter_audiences()] == ["journey"]
    await client.remove("journey")
    assert (await client.list()).count == 0
    assert client.stats.retries == 0
