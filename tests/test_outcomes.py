"""Creates and removes report what happened: taken names by state, lost answers, false success.

Every test talks HTTP to the emulator. Its taken-name answer is a 400 (the status Batch documents
for create) worded three ways, one of which never mentions existence; the SDK must not depend on
the wording. When an answer is lost, the state decides, with the audience's ``created`` time
against the server's ``Date`` as the evidence of who made it.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from aiohttp import web

from batch_audiences import (
    Accepted,
    AudienceExistsError,
    BadRequestError,
    Confirmation,
    IdAction,
    NotFoundError,
    ServerError,
    UncertainOutcomeError,
)
from batch_audiences.testing import Emulator, ScriptedResponse

from .conftest import MAX_RETRIES, Api, forward, serving

INTERNAL = {"error_code": "INTERNAL_ERROR", "error_message": "something broke"}
AN_HOUR_AGO = datetime.now(timezone.utc) - timedelta(hours=1)


def trail(emulator: Emulator) -> list[tuple[str, int]]:
    return [(r.route, r.status) for r in emulator.requests]


# -- taken names, by state -----------------------------------------------------------------


@pytest.mark.parametrize("wording", ["explicit", "vague", "opaque"])
async def test_taken_name_is_decided_by_state_whatever_the_wording(
    api: Api, emulator: Emulator, wording: str
) -> None:
    emulator.taken_name = wording
    emulator.add_audience("vip")
    with pytest.raises(AudienceExistsError) as info:
        await api.create("vip")
    assert info.value.status == 400
    assert trail(emulator) == [("create", 400), ("view", 200)]  # one view decided


async def test_a_refusal_for_a_free_name_stays_what_it_was(api: Api, emulator: Emulator) -> None:
    emulator.script(ScriptedResponse(
        400, {"error_code": "INVALID_PARAMETER", "error_message": "display_name is not allowed"},
        route="create",
    ))
    with pytest.raises(BadRequestError) as info:
        await api.create("vip", display_name="VIP")
    assert not isinstance(info.value, AudienceExistsError)
    assert trail(emulator) == [("create", 400), ("view", 404)]


@pytest.mark.parametrize("wording", ["vague", "opaque"])
async def test_create_many_skips_taken_names_whatever_the_wording(
    api: Api, emulator: Emulator, wording: str
) -> None:
    emulator.taken_name = wording
    emulator.add_audience("taken", created=AN_HOUR_AGO)
    report = await api.create_many(["fresh", "taken"], if_exists="skip")
    assert [item.audience.name for item in report.succeeded] == ["fresh"]
    assert [item.audience.name for item in report.skipped] == ["taken"]
    assert isinstance(report.skipped[0].error, AudienceExistsError)
    assert report.ok


# -- lost answers ------------------------------------------------------------------------------


@pytest.mark.parametrize("wording", ["explicit", "vague", "opaque"])
async def test_lost_answer_then_taken_is_this_calls_create(
    api: Api, emulator: Emulator, wording: str
) -> None:
    emulator.taken_name = wording
    emulator.script(ScriptedResponse(action="drop_after", route="create"))
    accepted = await api.create("vip", display_name="VIP")
    assert accepted == Accepted(None, confirmation=Confirmation.INFERRED)
    assert emulator.audience_names() == ["vip"]
    assert trail(emulator) == [("create", 0), ("create", 400), ("view", 200)]


async def test_lost_answer_then_server_error_is_checked(api: Api, emulator: Emulator) -> None:
    emulator.script(
        ScriptedResponse(action="drop_after", route="create"),
        ScriptedResponse(500, INTERNAL, route="create"),
    )
    accepted = await api.create("vip")
    assert accepted == Accepted(None, confirmation=Confirmation.INFERRED)
    assert trail(emulator) == [("create", 0), ("create", 500), ("view", 200)]


async def test_server_error_after_a_try_that_never_landed_is_raised(api: Api, emulator: Emulator) -> None:
    emulator.script(
        ScriptedResponse(action="drop_before", route="create"),
        ScriptedResponse(500, INTERNAL, route="create"),
    )
    with pytest.raises(ServerError):
        await api.create("vip")
    assert trail(emulator) == [("create", 0), ("create", 500), ("view", 404)]
    assert emulator.audience_names() == []


@pytest.mark.parametrize("route", ["create", "remove", "update", "replace"])
async def test_success_status_with_unreadable_body_means_the_write_happened(
    api: Api, emulator: Emulator, route: str, caplog: pytest.LogCaptureFixture
) -> None:
    emulator.add_audience("vip")
    page = ScriptedResponse(
        202, f"<html>Accepted for Bearer {emulator.api_key}</html>", {"Content-Type": "text/html"},
        route=route,
    )
    emulator.script(page)
    calls = {
        "create": lambda: api.create("other"),
        "remove": lambda: api.remove("vip"),
        "update": lambda: api.update("vip", [IdAction.add("u1")]),
        "replace": lambda: api.replace("vip", ["u1"]),
    }
    with caplog.at_level(logging.DEBUG, logger="batch_audiences"):
        accepted = await calls[route]()
    assert accepted == Accepted(None, confirmation=Confirmation.ANSWERED)
    assert accepted.status == 202
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("unreadable" in r.getMessage() and route in r.getMessage() for r in warnings)
    assert not any(emulator.api_key in r.getMessage() for r in caplog.records)


# -- false success: someone else's audience ----------------------------------------------------


@pytest.mark.parametrize("wording", ["explicit", "vague", "opaque"])
async def test_someone_elses_older_audience_is_not_reported_created(
    api: Api, emulator: Emulator, wording: str
) -> None:
    # The first try never reached the server; the retry meets another team's audience.
    emulator.taken_name = wording
    emulator.add_audience("vip", ["theirs"], created=AN_HOUR_AGO)
    emulator.script(ScriptedResponse(action="drop_before", route="create"))
    with pytest.raises(AudienceExistsError):
        await api.create("vip")
    assert trail(emulator) == [("create", 0), ("create", 400), ("view", 200)]


@pytest.mark.parametrize("if_exists", ["skip", "error"])
async def test_create_many_does_not_list_someone_elses_audience_as_created(
    api: Api, emulator: Emulator, if_exists: str
) -> None:
    emulator.taken_name = "vague"
    emulator.add_audience("vip", created=AN_HOUR_AGO)
    emulator.script(ScriptedResponse(action="drop_before", route="create"))
    report = await api.create_many(["vip"], if_exists=if_exists)
    assert report.succeeded == ()
    outcome = report.skipped if if_exists == "skip" else report.failed
    assert [item.position for item in outcome] == [0]
    assert isinstance(outcome[0].error, AudienceExistsError)


def _view_without_times(name: str) -> ScriptedResponse:
    body = {"name": name, "type": "CUSTOM_ID", "nb_ids": 0, "indexing_state": "APPLIED"}
    return ScriptedResponse(200, body, route="view")


async def test_without_evidence_the_create_is_reported_uncertain(api: Api, emulator: Emulator) -> None:
    emulator.taken_name = "opaque"
    emulator.script(ScriptedResponse(action="drop_after", route="create"), _view_without_times("vip"))
    with pytest.raises(UncertainOutcomeError) as info:
        await api.create("vip")
    assert info.value.name == "vip"
    assert "vip" in str(info.value)


async def test_create_many_reports_an_uncertain_create_apart(api: Api, emulator: Emulator) -> None:
    emulator.script(ScriptedResponse(action="drop_after", route="create"), _view_without_times("vip"))
    report = await api.create_many(["vip", "other"], if_exists="skip")
    assert [item.audience.name for item in report.succeeded] == ["other"]
    assert [item.audience.name for item in report.uncertain] == ["vip"]
    assert isinstance(report.uncertain[0].error, UncertainOutcomeError)
    assert report.counts == {"succeeded": 1, "skipped": 0, "failed": 0, "uncertain": 1}
    assert not report.ok
    assert "1 uncertain" in report.summary()


async def test_create_many_marks_an_inferred_create(api: Api, emulator: Emulator) -> None:
    emulator.script(ScriptedResponse(action="drop_after", route="create"))
    report = await api.create_many(["vip"])
    assert [(item.audience.name, item.confirmation) for item in report.succeeded] == [
        ("vip", Confirmation.INFERRED)
    ]
    assert report.ok
    # The view that decided is one of the call's requests, like the two tries.
    assert report.requests == len(emulator.requests) == 3


# -- remove --------------------------------------------------------------------------------


@pytest.mark.parametrize("action", ["drop_before", "drop_after"])
async def test_remove_that_finds_nothing_after_a_lost_answer_is_uncertain(
    api: Api, emulator: Emulator, action: str
) -> None:
    # drop_before: someone else had removed it (here: it never existed); drop_after: this call
    # removed it. A removed audience leaves nothing to tell the two apart.
    if action == "drop_after":
        emulator.add_audience("vip")
    emulator.script(ScriptedResponse(action=action, route="remove"))
    accepted = await api.remove("vip")
    assert accepted == Accepted(None, confirmation=Confirmation.UNCERTAIN)


async def test_remove_lost_answer_then_server_error_is_checked(api: Api, emulator: Emulator) -> None:
    emulator.add_audience("vip")
    emulator.script(
        ScriptedResponse(action="drop_after", route="remove"),
        ScriptedResponse(500, INTERNAL, route="remove"),
    )
    assert await api.remove("vip") == Accepted(None, confirmation=Confirmation.UNCERTAIN)
    assert trail(emulator) == [("remove", 0), ("remove", 500), ("view", 404)]


async def test_remove_server_error_with_the_audience_still_there_is_raised(
    api: Api, emulator: Emulator
) -> None:
    emulator.add_audience("vip")
    emulator.script(
        ScriptedResponse(action="drop_before", route="remove"),
        ScriptedResponse(500, INTERNAL, route="remove"),
    )
    with pytest.raises(ServerError):
        await api.remove("vip")
    assert trail(emulator) == [("remove", 0), ("remove", 500), ("view", 200)]
    assert emulator.audience_names() == ["vip"]


async def test_remove_of_a_missing_audience_with_an_answer_raises(api: Api, emulator: Emulator) -> None:
    with pytest.raises(NotFoundError):
        await api.remove("vip")
    assert trail(emulator) == [("remove", 404)]


# -- an upload chunk acknowledged without a token ----------------------------------------------


class GarblingProxy:
    """A loopback proxy to the emulator that passes every request on (so each write is really
    applied) and replaces the body of the first ``garble`` answers of ``route`` with HTML,
    keeping their status."""

    def __init__(self, emulator: Emulator, route: str, garble: int) -> None:
        self.emulator, self.route, self.left = emulator, route, garble
        self.garbled = 0

    async def handle(self, request: web.Request) -> web.Response:
        answer = await forward(self.emulator, request, await request.read())
        if request.path.endswith("/" + self.route) and 200 <= answer.status < 300 and self.left > 0:
            self.left -= 1
            self.garbled += 1
            return web.Response(status=answer.status, text="<html>Accepted</html>", content_type="text/html")
        return answer


async def test_an_upload_chunk_acknowledged_without_a_token_is_confirmed_by_the_last_write(
    make_api: Any, emulator: Emulator
) -> None:
    emulator.add_audience("aud")
    proxy = GarblingProxy(emulator, "update", garble=1)
    async with serving(proxy.handle) as base_url:
        api = await make_api(base_url=base_url)
        items = [IdAction.add("u"), IdAction.remove("u"), IdAction.add("v")]
        report = await api.upload("aud", items, mode="update", chunk_size=1, concurrency=1, wait=True)
    assert proxy.garbled == 1
    assert report.ok, report.summary()
    assert report.applied is True
    assert report.chunks_acknowledged == 3
    assert report.indexing_tokens == ()
    emulator.settle()
    assert set(emulator.members("aud")) == {"v"}
    # the chunk after the token-less one (same ID) waited for a view of the audience's last write
    trail = [(r.route, r.query.get("indexing_token")) for r in emulator.requests]
    first, second = [i for i, (route, _) in enumerate(trail) if route == "update"][:2]
    assert ("view", None) in trail[first + 1:second]


class ThrottlingGateway:
    """A loopback gateway to the emulator that answers 429 (without passing it on) to the first
    ``refusals`` requests whose body holds ``marked``, as a rate limit shared with other traffic
    may refuse one request many times while others get through; everything else is passed on.

    With ``interleaved``, each refusal after the first is answered only once another request
    has been passed on since the previous one: the others do get through in between, whatever
    the timing of the client's retries on this machine.
    """

    def __init__(self, emulator: Emulator, marked: str, refusals: int, *, interleaved: bool = False) -> None:
        self.emulator, self.marked, self.left = emulator, marked.encode(), refusals
        self.interleaved = interleaved
        self.refused = 0
        self._passed = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.marked in body and self.left > 0:
            if self.interleaved and self.refused:
                await self._passed.wait()
            self._passed.clear()
            self.left -= 1
            self.refused += 1
            return web.json_response({"error": "rate limited"}, status=429)
        answer = await forward(self.emulator, request, body)
        self._passed.set()
        return answer


async def test_an_upload_chunk_refused_by_a_shared_limit_more_than_max_retries_still_lands(
    make_api: Any, emulator: Emulator
) -> None:
    # While other chunks of the upload are accepted, a 429 is the server's pace being shared,
    # not a stuck request: the chunk must not be given up after max_retries 429s.
    emulator.add_audience("aud")
    gateway = ThrottlingGateway(emulator, '"stuck"', refusals=MAX_RETRIES + 3, interleaved=True)
    ids = [f"u{n}" for n in range(40)]
    ids[1] = "stuck"
    async with serving(gateway.handle) as base_url:
        api = await make_api(base_url=base_url, max_rate=1000)
        report = await api.upload("aud", ids, mode="update", chunk_size=1, concurrency=2)
    assert gateway.refused == MAX_RETRIES + 3
    assert report.ok, report.summary()
    emulator.settle()
    assert set(emulator.members("aud")) == set(ids)


async def test_an_upload_chunk_refused_while_nothing_else_gets_through_is_given_up(
    make_api: Any, emulator: Emulator
) -> None:
    # With no progress anywhere, 429s count against max_retries as before: the call ends.
    emulator.add_audience("aud")
    gateway = ThrottlingGateway(emulator, '"stuck"', refusals=100)
    async with serving(gateway.handle) as base_url:
        api = await make_api(base_url=base_url, max_rate=1000)
        report = await api.upload("aud", ["stuck"], mode="update", chunk_size=1, concurrency=1)
    assert not report.ok
    assert gateway.refused == MAX_RETRIES + 1
