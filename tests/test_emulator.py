"""Tests of the emulator itself, over loopback with a raw aiohttp client (never the SDK client)."""

from __future__ import annotations

import asyncio
import email.utils
import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from batch_audiences.testing import (
    EmulatedAudience,
    Emulator,
    FaultPlan,
    RecordedRequest,
    ScriptedResponse,
)

TOKEN_RE = re.compile(r"[0-9a-f]{32}")
TIME_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
PROJECT_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Reply:
    status: int
    body: Any
    headers: Mapping[str, str]


class Api:
    """Raw HTTP calls against one emulator."""

    def __init__(self, emu: Emulator, http: aiohttp.ClientSession) -> None:
        self.emu = emu
        self.http = http

    async def call(
        self,
        method: str,
        route: str,
        *,
        body: object = None,
        data: bytes | str | None = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        version: str = "2.8",
    ) -> Reply:
        url = f"{self.emu.base_url}/{version}/audiences/{route}"
        sent = dict(self.emu.auth_headers if headers is None else headers)
        if body is not None and data is None:
            data = json.dumps(body).encode()
            sent.setdefault("Content-Type", "application/json")
        kwargs: dict[str, Any] = {"params": params, "headers": sent}
        if data is not None:
            # A file-like body: aiohttp warns (an error here) about large raw bytes bodies.
            kwargs["data"] = io.BytesIO(data.encode() if isinstance(data, str) else data)
        async with self.http.request(method, url, **kwargs) as response:
            text = await response.text()
            try:
                parsed: Any = json.loads(text)
            except ValueError:
                parsed = text
            return Reply(response.status, parsed, response.headers)

    async def post(self, route: str, body: object = None, **kwargs: Any) -> Reply:
        return await self.call("POST", route, body=body, **kwargs)

    async def get(self, route: str, **params: str) -> Reply:
        return await self.call("GET", route, params=params)

    async def create(self, name: str, **extra: object) -> str:
        reply = await self.post("create", {"name": name, "type": "custom_ids", **extra})
        assert reply.status == 202, reply
        return str(reply.body["indexing_token"])

    async def update(self, name: str, *items: dict[str, object]) -> str:
        reply = await self.post("update", {"name": name, "ids": list(items)})
        assert reply.status == 202, reply
        return str(reply.body["indexing_token"])

    async def replace(self, name: str, *items: dict[str, object]) -> str:
        reply = await self.post("replace", {"name": name, "ids": list(items)})
        assert reply.status == 202, reply
        return str(reply.body["indexing_token"])

    async def state(self, name: str, token: str) -> str:
        reply = await self.get("view", name=name, indexing_token=token)
        assert reply.status == 200, reply
        return str(reply.body["indexing_state"])


def add(custom_id: str, **attributes: object) -> dict[str, object]:
    item: dict[str, object] = {"action": "add", "id": custom_id}
    if attributes:
        item["attributes"] = attributes
    return item


def remove(custom_id: str) -> dict[str, object]:
    return {"action": "remove", "id": custom_id}


async def poll(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until ``condition()`` holds; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(indexing_delay=0) as emulator:
        yield emulator


@pytest.fixture
def raw(emu: Emulator, http: aiohttp.ClientSession) -> Api:
    """Raw HTTP calls against ``emu`` (named apart from conftest's SDK ``api`` fixture)."""
    return Api(emu, http)


# -- routing and auth ------------------------------------------------------------------------------


async def test_base_url_is_loopback_with_ephemeral_port(emu: Emulator) -> None:
    assert emu.base_url == f"http://127.0.0.1:{emu.port}"
    assert emu.port > 0


async def test_base_url_before_start_is_a_clear_error() -> None:
    with pytest.raises(RuntimeError, match="not been started"):
        _ = Emulator().base_url


async def test_any_version_segment_is_accepted(raw: Api) -> None:
    for version in ("2.8", "2.11", "10.0"):
        reply = await raw.call("GET", "list", version=version)
        assert reply.status == 200, version


@pytest.mark.parametrize("path", ["/2.8/audiences/nope", "/v2.8/audiences/list", "/2/audiences/list", "/"])
async def test_unknown_route_is_a_json_404(emu: Emulator, http: aiohttp.ClientSession, path: str) -> None:
    async with http.get(emu.base_url + path, headers=emu.auth_headers) as response:
        assert response.status == 404
        assert response.content_type == "application/json"
        body = await response.json()
    assert body["error_code"] == "NOT_FOUND"
    assert emu.requests[-1].route == path


async def test_wrong_method_is_a_json_404(raw: Api) -> None:
    # Batch documents no 405: a route is a method and a path, so this is an unknown route
    reply = await raw.call("GET", "create")
    assert reply.status == 404
    assert reply.body["error_code"] == "NOT_FOUND"
    assert "create takes POST" in reply.body["error_message"]
    reply = await raw.call("POST", "view", body={"name": "a"})
    assert reply.status == 404
    assert "view takes GET" in reply.body["error_message"]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Batch-Project": "project_emulator"},
        {"Authorization": "Bearer emulator-rest-api-key"},
        {"Authorization": "Bearer wrong", "X-Batch-Project": "project_emulator"},
        {"Authorization": "emulator-rest-api-key", "X-Batch-Project": "project_emulator"},
        {"Authorization": "Bearer emulator-rest-api-key", "X-Batch-Project": "project_other"},
    ],
)
async def test_bad_credentials_are_401(raw: Api, headers: dict[str, str]) -> None:
    reply = await raw.call("GET", "list", headers=headers)
    assert reply.status == 401
    assert reply.body["error_code"] == "AUTHENTICATION_INVALID"
    assert reply.body["error_message"]


async def test_auth_is_checked_before_validation(raw: Api) -> None:
    reply = await raw.post("create", {"name": "bad name!"}, headers={"X-Batch-Project": "project_emulator"})
    assert reply.status == 401
    assert raw.emu.audience_names() == []


async def test_custom_credentials(http: aiohttp.ClientSession) -> None:
    async with Emulator(api_key="k1", project_key="project_p1") as emu:
        raw = Api(emu, http)
        assert (await raw.get("list")).status == 200
        bad = {"Authorization": "Bearer emulator-rest-api-key", "X-Batch-Project": "project_emulator"}
        assert (await raw.call("GET", "list", headers=bad)).status == 401


async def test_recorded_headers_mask_the_api_key(raw: Api) -> None:
    await raw.get("list")
    record = raw.emu.requests[-1]
    assert record.headers["Authorization"] == "Bearer <redacted>"
    assert "emulator-rest-api-key" not in repr(record)
    assert record.headers["X-Batch-Project"] == "project_emulator"


# -- validation ------------------------------------------------------------------------------------

LONG = "a" * 256
CREATE_ERRORS: list[tuple[object, str]] = [
    ({"type": "custom_ids"}, "name"),
    ({"name": 12, "type": "custom_ids"}, "name"),
    ({"name": None, "type": "custom_ids"}, "name"),
    ({"name": "", "type": "custom_ids"}, "name"),
    ({"name": "has space", "type": "custom_ids"}, "name"),
    ({"name": "accentué", "type": "custom_ids"}, "name"),
    ({"name": LONG, "type": "custom_ids"}, "name"),
    ({"name": "ok"}, "type"),
    ({"name": "ok", "type": "CUSTOM_ID"}, "type"),
    ({"name": "ok", "type": "custom_ids", "display_name": 3}, "display_name"),
    ({"name": "ok", "type": "custom_ids", "display_name": None}, "display_name"),
    ({"name": "ok", "type": "custom_ids", "colour": "red"}, "colour"),
    ([{"name": "ok"}], "object"),
    ("ok", "object"),
]


@pytest.mark.parametrize(("body", "field"), CREATE_ERRORS)
async def test_create_validation(raw: Api, body: object, field: str) -> None:
    reply = await raw.post("create", body)
    assert reply.status == 400, reply
    assert field in reply.body["error_message"]
    assert reply.body["error_code"]
    assert raw.emu.audience_names() == []


@pytest.mark.parametrize(
    ("data", "content_type", "field"),
    [
        (b"{not json", "application/json", "JSON"),
        (b"", "application/json", "JSON"),
        (b'{"name": NaN}', "application/json", "JSON"),
        (b'{"name": "a", "type": "custom_ids"}', "text/plain", "Content-Type"),
    ],
)
async def test_body_must_be_json(raw: Api, data: bytes, content_type: str, field: str) -> None:
    headers = {**raw.emu.auth_headers, "Content-Type": content_type}
    reply = await raw.call("POST", "create", data=data, headers=headers)
    assert reply.status == 400
    assert field in reply.body["error_message"]


async def test_names_at_the_limits_are_accepted(raw: Api) -> None:
    for name in ("a", "Z" * 255, "with_under-and-dash09"):
        await raw.create(name)
    assert len(raw.emu.audience_names()) == 3


UPDATE_ERRORS: list[tuple[dict[str, object], str]] = [
    ({"name": "aud"}, "ids"),
    ({"name": "aud", "ids": {"id": "x"}}, "ids"),
    ({"name": "aud", "ids": []}, "ids"),
    ({"name": "aud", "ids": [add(str(i)) for i in range(10_001)]}, "ids"),
    ({"name": "bad name", "ids": [add("x")]}, "name"),
    ({"name": "aud", "ids": ["x"]}, "ids[0]"),
    ({"name": "aud", "ids": [add("x"), {"id": "y"}]}, "ids[1].action"),
    ({"name": "aud", "ids": [{"action": "upsert", "id": "y"}]}, "ids[0].action"),
    ({"name": "aud", "ids": [{"action": "add"}]}, "ids[0].id"),
    ({"name": "aud", "ids": [{"action": "add", "id": ""}]}, "ids[0].id"),
    ({"name": "aud", "ids": [{"action": "add", "id": 42}]}, "ids[0].id"),
    ({"name": "aud", "ids": [{"action": "add", "id": "x", "attribute": {}}]}, "'attribute'"),
    ({"name": "aud", "ids": [{"action": "remove", "id": "x", "attributes": {"a": 1}}]}, "ids[0].attributes"),
    ({"name": "aud", "ids": [add("x"), {"action": "add", "id": "y", "attributes": [1]}]}, "ids[1].attr"),
    ({"name": "aud", "ids": [add("x", **{f"k{i}": i for i in range(16)})]}, "ids[0].attributes"),
    ({"name": "aud", "ids": [add("x", k=None)]}, "'k'"),
    ({"name": "aud", "ids": [add("x", k={"nested": 1})]}, "'k'"),
    ({"name": "aud", "ids": [add("x", tags=["a", 2])]}, "'tags'"),
    ({"name": "aud", "ids": [add("x", **{"date(signup)": "2023-08-12"})]}, "date(signup)"),
    ({"name": "aud", "ids": [add("x", **{"date(signup)": "2023-13-12T22:30:05Z"})]}, "date(signup)"),
    ({"name": "aud", "ids": [add("x", **{"date(signup)": 1691879405})]}, "date(signup)"),
    ({"name": "aud", "ids": [add("x", **{"date()": "2023-08-12T22:30:05Z"})]}, "date()"),
    ({"name": "aud", "ids": [add("x", **{"url(avatar)": "ftp://example.com/a.jpg"})]}, "url(avatar)"),
    ({"name": "aud", "ids": [add("x", **{"url(avatar)": "not a url"})]}, "url(avatar)"),
    ({"name": "aud", "ids": [add("x", **{"": "empty key"})]}, "attribute name"),
    ({"name": "aud", "ids": [add("x")], "type": "custom_ids"}, "type"),
]


@pytest.mark.parametrize(("body", "field"), UPDATE_ERRORS)
async def test_update_validation(raw: Api, body: dict[str, object], field: str) -> None:
    raw.emu.add_audience("aud", ["kept"])
    reply = await raw.post("update", body)
    assert reply.status == 400, reply
    assert field in reply.body["error_message"]
    raw.emu.settle()
    assert raw.emu.members("aud") == {"kept": {}}


async def test_update_rejects_non_finite_numbers(raw: Api) -> None:
    raw.emu.add_audience("aud")
    data = b'{"name": "aud", "ids": [{"action": "add", "id": "x", "attributes": {"n": 1e999}}]}'
    headers = {**raw.emu.auth_headers, "Content-Type": "application/json"}
    reply = await raw.call("POST", "update", data=data, headers=headers)
    assert reply.status == 400
    assert "finite" in reply.body["error_message"]


async def test_every_attribute_type_is_accepted(raw: Api) -> None:
    await raw.create("aud")
    attributes: dict[str, object] = {
        "plan": "gold",
        "age": 42,
        "score": 3.5,
        "vip": True,
        "tags": ["a", "b"],
        "none": [],
        "date(signup)": "2023-08-12T22:30:05Z",
        "date(paid)": "2023-08-12T22:30:05.123+02:00",
        "url(avatar)": "https://example.com/a.jpg",
        "url(home)": "http://example.com",
    }
    attributes.update({f"extra{i}": i for i in range(15 - len(attributes))})
    assert len(attributes) == 15
    await raw.update("aud", add("u1", **attributes))
    assert raw.emu.members("aud") == {"u1": attributes}


REPLACE_ERRORS: list[tuple[dict[str, object], str]] = [
    ({"name": "aud"}, "ids"),
    ({"name": "aud", "ids": "x"}, "ids"),
    ({"name": "aud", "ids": [{"id": str(i)} for i in range(10_001)]}, "ids"),
    ({"name": "aud", "ids": [{"action": "add", "id": "x"}]}, "ids[0].action"),
    ({"name": "aud", "ids": [{"id": "x"}, {"attributes": {}}]}, "ids[1].id"),
    ({"name": "aud", "ids": [{"id": "x", "attributes": {"k": {"a": 1}}}]}, "ids[0].attributes"),
]


@pytest.mark.parametrize(("body", "field"), REPLACE_ERRORS)
async def test_replace_validation(raw: Api, body: dict[str, object], field: str) -> None:
    raw.emu.add_audience("aud", ["kept"])
    reply = await raw.post("replace", body)
    assert reply.status == 400, reply
    assert field in reply.body["error_message"]
    raw.emu.settle()
    assert raw.emu.members("aud") == {"kept": {}}


@pytest.mark.parametrize(
    ("route", "body", "field"),
    [("remove", {}, "name"), ("remove", {"name": "aud", "force": True}, "force")],
)
async def test_remove_validation(raw: Api, route: str, body: dict[str, object], field: str) -> None:
    raw.emu.add_audience("aud")
    reply = await raw.post(route, body)
    assert reply.status == 400
    assert field in reply.body["error_message"]
    assert raw.emu.audience("aud") is not None


@pytest.mark.parametrize(
    ("route", "params", "field"),
    [
        ("view", {}, "name"),
        ("view", {"name": "bad name"}, "name"),
        ("view", {"name": "aud", "indexing_token": ""}, "indexing_token"),
        ("view", {"name": "aud", "verbose": "1"}, "verbose"),
        ("list", {"limit": "0"}, "limit"),
        ("list", {"limit": "101"}, "limit"),
        ("list", {"limit": "ten"}, "limit"),
        ("list", {"limit": "1.5"}, "limit"),
        ("list", {"from": "not-a-cursor"}, "from"),
        ("list", {"from": ""}, "from"),
    ],
)
async def test_query_validation(raw: Api, route: str, params: dict[str, str], field: str) -> None:
    raw.emu.add_audience("aud")
    reply = await raw.get(route, **params)
    assert reply.status == 400, reply
    assert field in reply.body["error_message"]


async def test_a_full_size_request_with_attributes_is_accepted(raw: Api) -> None:
    await raw.create("big")
    attributes = {f"attribute_{i}": "x" * 40 for i in range(15)}
    items = [add(f"user-{i:06d}", **attributes) for i in range(10_000)]
    await raw.update("big", *items)
    members = raw.emu.members("big")
    assert len(members) == 10_000
    assert members["user-009999"] == attributes


# -- routes ----------------------------------------------------------------------------------------


async def test_create_and_view(raw: Api) -> None:
    token = await raw.create("vip", display_name="Very important")
    assert TOKEN_RE.fullmatch(token)
    reply = await raw.get("view", name="vip")
    assert reply.status == 200
    view = reply.body
    assert {k: view[k] for k in ("name", "display_name", "type", "nb_ids", "indexing_state")} == {
        "name": "vip",
        "display_name": "Very important",
        "type": "CUSTOM_ID",
        "nb_ids": 0,
        "indexing_state": "APPLIED",
    }
    assert TIME_RE.fullmatch(view["created"])
    assert TIME_RE.fullmatch(view["updated"])


async def test_view_omits_an_unset_display_name(raw: Api) -> None:
    await raw.create("plain")
    view = (await raw.get("view", name="plain")).body
    assert "display_name" not in view
    snapshot = raw.emu.audience("plain")
    assert snapshot is not None
    assert snapshot.display_name is None
    assert snapshot.type == "custom_ids"


async def test_create_twice_is_a_documented_400(raw: Api) -> None:
    await raw.create("dup")
    reply = await raw.post("create", {"name": "dup", "type": "custom_ids"})
    assert reply.status == 400  # create documents 400, 401, 429, 500, 503: never a 409
    assert reply.body["error_code"] == "AUDIENCE_ALREADY_EXISTS"
    assert "dup" in reply.body["error_message"]
    assert raw.emu.audience_names() == ["dup"]


@pytest.mark.parametrize(
    ("mode", "code", "message"),
    [("vague", "INVALID_PARAMETER", "This name is already used"), ("opaque", "E4012", "Request rejected")],
)
async def test_taken_name_wordings_never_mention_existence(
    raw: Api, mode: str, code: str, message: str
) -> None:
    raw.emu.taken_name = mode
    await raw.create("dup")
    reply = await raw.post("create", {"name": "dup", "type": "custom_ids"})
    assert (reply.status, reply.body) == (400, {"error_code": code, "error_message": message})
    assert "exist" not in json.dumps(reply.body).lower()
    with pytest.raises(ValueError, match="taken_name"):
        raw.emu.taken_name = "rude"
    with pytest.raises(ValueError, match="taken_name"):
        Emulator(taken_name="rude")


async def test_every_answer_has_a_date_and_created_is_the_time_of_the_create(raw: Api) -> None:
    before = datetime.now(timezone.utc).replace(microsecond=0)
    await raw.create("aud")
    reply = await raw.get("view", name="aud")
    after = datetime.now(timezone.utc)
    created = datetime.fromisoformat(reply.body["created"].replace("Z", "+00:00"))
    assert before <= created <= after
    date = email.utils.parsedate_to_datetime(reply.headers["Date"])
    assert before <= date <= after
    missing = await raw.get("view", name="nobody")
    assert missing.status == 404
    assert "Date" in missing.headers


async def test_add_audience_can_backdate_its_creation(raw: Api) -> None:
    earlier = datetime(2024, 5, 1, 12, 30, tzinfo=timezone.utc)
    raw.emu.add_audience("theirs", ["u1"], created=earlier)
    reply = await raw.get("view", name="theirs")
    assert reply.body["created"] == "2024-05-01T12:30:00Z"
    snapshot = raw.emu.audience("theirs")
    assert snapshot is not None
    assert snapshot.created == earlier
    with pytest.raises(ValueError, match="timezone-aware"):
        raw.emu.add_audience("naive", created=datetime(2024, 5, 1))


async def test_a_held_write_is_applied_after_the_client_gave_up(raw: Api) -> None:
    await raw.create("aud")
    raw.emu.script(ScriptedResponse(action="hold", delay=1.0, route="update"))
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(raw.post("update", {"name": "aud", "ids": [add("late")]}), 0.1)
    # The client went away; a later write is applied at once, the held one after it.
    await raw.update("aud", remove("late"))
    assert raw.emu.members("aud") == {}
    await poll(lambda: raw.emu.requests[1].outcome != "in_flight")
    assert (raw.emu.requests[1].outcome, raw.emu.requests[1].status) == ("held", 202)
    assert raw.emu.members("aud") == {"late": {}}


async def test_hold_fault(http: aiohttp.ClientSession) -> None:
    async with Emulator(indexing_delay=0, faults=FaultPlan(seed=0, hold=1.0, hold_seconds=0.05)) as emu:
        reply = await Api(emu, http).post("create", {"name": "aud", "type": "custom_ids"})
        assert reply.status == 202
        assert emu.requests[-1].outcome == "held"
        assert emu.audience_names() == ["aud"]


async def test_names_are_case_sensitive(raw: Api) -> None:
    await raw.create("Dup")
    await raw.create("dup")
    assert raw.emu.audience_names() == ["Dup", "dup"]


@pytest.mark.parametrize(
    ("method", "route", "body"),
    [
        ("POST", "update", {"name": "ghost", "ids": [add("x")]}),
        ("POST", "replace", {"name": "ghost", "ids": []}),
        ("POST", "remove", {"name": "ghost"}),
    ],
)
async def test_writes_to_a_missing_audience_are_404(raw: Api, method: str, route: str, body: object) -> None:
    reply = await raw.call(method, route, body=body)
    assert reply.status == 404
    assert reply.body["error_code"] == "AUDIENCE_NOT_FOUND"
    assert "ghost" in reply.body["error_message"]


async def test_view_of_a_missing_audience_is_404(raw: Api) -> None:
    reply = await raw.get("view", name="ghost")
    assert reply.status == 404
    assert reply.body["error_code"] == "AUDIENCE_NOT_FOUND"


async def test_unknown_token_is_404(raw: Api) -> None:
    await raw.create("aud")
    reply = await raw.get("view", name="aud", indexing_token="0" * 32)
    assert reply.status == 404
    assert reply.body["error_code"] == "INDEXING_TOKEN_NOT_FOUND"


async def test_update_semantics(raw: Api) -> None:
    await raw.create("aud")
    await raw.update("aud", add("a", plan="gold"), add("b"), add("c", x=1))
    await raw.update(
        "aud",
        add("a"),  # add without attributes replaces the old ones with none
        remove("b"),
        remove("never-there"),  # a no-op
        add("d", v=1),
        remove("d"),  # same ID twice: the last action wins
        remove("e"),
        add("e", v=2),
        add("c", x=2),
    )
    assert raw.emu.members("aud") == {"a": {}, "c": {"x": 2}, "e": {"v": 2}}
    view = (await raw.get("view", name="aud")).body
    assert view["nb_ids"] == 3


async def test_replace_sets_exactly_the_given_members(raw: Api) -> None:
    await raw.create("aud")
    await raw.update("aud", add("old1"), add("old2", k="v"))
    await raw.replace("aud", {"id": "old2"}, {"id": "new", "attributes": {"k": "w"}}, {"id": "new"})
    assert raw.emu.members("aud") == {"old2": {}, "new": {}}
    await raw.replace("aud")
    assert raw.emu.members("aud") == {}


async def test_remove_deletes_at_once(raw: Api) -> None:
    await raw.create("aud")
    reply = await raw.post("remove", {"name": "aud"})
    assert reply.status == 202
    assert TOKEN_RE.fullmatch(reply.body["indexing_token"])
    assert (await raw.get("view", name="aud")).status == 404
    assert raw.emu.audience("aud") is None
    assert (await raw.post("update", {"name": "aud", "ids": [add("x")]})).status == 404


async def test_remove_discards_pending_writes(http: aiohttp.ClientSession) -> None:
    async with Emulator(indexing_delay=30) as emu:
        raw = Api(emu, http)
        await raw.create("aud")
        await raw.update("aud", add("ghost"))
        assert (await raw.post("remove", {"name": "aud"})).status == 202
        await raw.create("aud")  # same name, a new audience
        emu.settle()
        assert emu.members("aud") == {}


async def test_list_pages_with_cursors_and_count_on_first_page(raw: Api) -> None:
    names = [f"aud-{i:02d}" for i in range(25)]
    for name in reversed(names):  # created out of order: the list is sorted by name anyway
        await raw.create(name)
    first = (await raw.get("list")).body
    assert first["count"] == 25
    assert first["has_more"] is True
    assert [a["name"] for a in first["audiences"]] == names[:10]  # default limit 10
    assert first["audiences"][0]["type"] == "CUSTOM_ID"

    seen = [a["name"] for a in first["audiences"]]
    cursor = first["next_from"]
    pages = 1
    while True:
        page = (await raw.get("list", **{"from": cursor, "limit": "7"})).body
        pages += 1
        assert "count" not in page
        seen += [a["name"] for a in page["audiences"]]
        if not page["has_more"]:
            assert "next_from" not in page
            break
        cursor = page["next_from"]
    assert seen == names
    assert pages == 4  # 10 + 7 + 7 + 1


async def test_list_empty_and_exact_page(raw: Api) -> None:
    empty = (await raw.get("list")).body
    assert empty == {"audiences": [], "has_more": False, "count": 0}
    for name in ("a", "b"):
        await raw.create(name)
    page = (await raw.get("list", limit="2")).body
    assert page["has_more"] is False
    assert "next_from" not in page
    assert page["count"] == 2


async def test_list_cursor_survives_removal_of_its_audience(raw: Api) -> None:
    for name in ("a", "b", "c"):
        await raw.create(name)
    first = (await raw.get("list", limit="2")).body
    assert (await raw.post("remove", {"name": "b"})).status == 202
    rest = (await raw.get("list", **{"from": first["next_from"]})).body
    assert [a["name"] for a in rest["audiences"]] == ["c"]


# -- indexing --------------------------------------------------------------------------------------


async def test_writes_stay_in_progress_until_applied(http: aiohttp.ClientSession) -> None:
    async with Emulator(indexing_delay=30) as emu:
        raw = Api(emu, http)
        create_token = await raw.create("aud")
        update_token = await raw.update("aud", add("u1"))
        assert await raw.state("aud", update_token) == "IN_PROGRESS"
        view = (await raw.get("view", name="aud")).body
        assert view["indexing_state"] == "IN_PROGRESS"
        assert view["nb_ids"] == 0  # content changes only when the write is applied
        assert emu.members("aud") == {}
        snapshot = emu.audience("aud")
        assert snapshot is not None
        assert snapshot.pending_writes == 2
        assert snapshot.tokens == {create_token: "IN_PROGRESS", update_token: "IN_PROGRESS"}

        emu.settle()
        assert await raw.state("aud", update_token) == "APPLIED"
        assert await raw.state("aud", create_token) == "APPLIED"
        assert emu.members("aud") == {"u1": {}}


async def test_writes_are_applied_after_the_delay(http: aiohttp.ClientSession) -> None:
    async with Emulator(indexing_delay=0.05) as emu:
        raw = Api(emu, http)
        await raw.create("aud")
        token = await raw.update("aud", add("u1"))
        states: list[str] = []
        deadline = time.monotonic() + 5
        while (state := await raw.state("aud", token)) != "APPLIED":
            states.append(state)
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        assert set(states) <= {"IN_PROGRESS"}
        assert emu.members("aud") == {"u1": {}}


async def test_a_later_replace_marks_earlier_tokens_replaced(raw: Api) -> None:
    create_token = await raw.create("aud")
    update_token = await raw.update("aud", add("u1"))
    replace_token = await raw.replace("aud", {"id": "r1"})
    assert await raw.state("aud", update_token) == "REPLACED"
    assert await raw.state("aud", create_token) == "REPLACED"
    assert await raw.state("aud", replace_token) == "APPLIED"
    later = await raw.update("aud", add("u2"))
    assert await raw.state("aud", later) == "APPLIED"
    assert raw.emu.members("aud") == {"r1": {}, "u2": {}}


async def test_an_update_sent_during_a_replace_is_wiped(http: aiohttp.ClientSession) -> None:
    """The hazard the reference warns about: the update overtakes the replace, which wipes it."""
    async with Emulator(indexing_delay=0.05, replace_indexing_delay=0.5) as emu:
        raw = Api(emu, http)
        emu.add_audience("aud", ["old"])
        replace_token = await raw.replace("aud", {"id": "first-chunk"})
        update_token = await raw.update("aud", add("second-chunk"))

        await poll(lambda: "second-chunk" in emu.members("aud"))
        assert await raw.state("aud", replace_token) == "IN_PROGRESS"
        assert await raw.state("aud", update_token) == "APPLIED"

        await poll(lambda: emu.audience("aud").pending_writes == 0)  # type: ignore[union-attr]
        assert emu.members("aud") == {"first-chunk": {}}
        assert await raw.state("aud", update_token) == "REPLACED"
        assert await raw.state("aud", replace_token) == "APPLIED"
        view = (await raw.get("view", name="aud")).body
        assert view["indexing_state"] == "REPLACED"  # the state of the last write: the update


async def test_settle_applies_in_indexing_order(http: aiohttp.ClientSession) -> None:
    async with Emulator(indexing_delay=10, replace_indexing_delay=30) as emu:
        raw = Api(emu, http)
        await raw.create("aud")
        await raw.replace("aud", {"id": "r"})
        await raw.update("aud", add("u"))
        emu.settle()
        assert emu.members("aud") == {"r": {}}


async def test_default_replace_delay_is_three_times(http: aiohttp.ClientSession) -> None:
    emu = Emulator(indexing_delay=0.2)
    assert emu.replace_indexing_delay == pytest.approx(0.6)


async def test_updated_time_moves_when_writes_apply(raw: Api) -> None:
    await raw.create("aud")
    snapshot = raw.emu.audience("aud")
    assert snapshot is not None
    assert snapshot.updated >= snapshot.created
    assert snapshot.created.tzinfo is not None


# -- test helpers ----------------------------------------------------------------------------------


async def test_add_audience_members_and_lookup_errors(emu: Emulator) -> None:
    emu.add_audience("a", {"u1": {"k": "v"}, "u2": {}}, display_name="A")
    emu.add_audience("b", ["x", "y"])
    assert emu.members("a") == {"u1": {"k": "v"}, "u2": {}}
    assert emu.members("b") == {"x": {}, "y": {}}
    snapshot = emu.audience("a")
    assert isinstance(snapshot, EmulatedAudience)
    assert snapshot.nb_ids == 2
    assert snapshot.indexing_state == "APPLIED"
    assert snapshot.display_name == "A"
    assert emu.audience("missing") is None
    with pytest.raises(LookupError, match="missing"):
        emu.members("missing")
    with pytest.raises(ValueError, match="already"):
        emu.add_audience("a")
    with pytest.raises(ValueError, match="valid audience name"):
        emu.add_audience("bad name")


async def test_members_returns_a_copy(emu: Emulator) -> None:
    emu.add_audience("a", ["u1"])
    emu.members("a")["intruder"] = {}
    assert emu.members("a") == {"u1": {}}


async def test_requests_are_recorded_in_order_and_counted(raw: Api) -> None:
    await raw.create("aud")
    await raw.update("aud", add("u1"))
    await raw.get("view", name="nope")
    records = raw.emu.requests
    assert [(r.method, r.route, r.status, r.outcome) for r in records] == [
        ("POST", "create", 202, "ok"),
        ("POST", "update", 202, "ok"),
        ("GET", "view", 404, "error"),
    ]
    assert isinstance(records[0], RecordedRequest)
    assert records[0].body == {"name": "aud", "type": "custom_ids"}
    assert records[2].query == {"name": "nope"}
    assert records[0].path == "/2.8/audiences/create"
    assert records[0].received_at <= records[1].received_at
    assert raw.emu.count() == 3
    assert raw.emu.count("update") == 1
    assert raw.emu.count(status=404) == 1
    assert raw.emu.count("create", 404) == 0


async def test_record_bodies_can_be_turned_off(http: aiohttp.ClientSession) -> None:
    async with Emulator(record_bodies=False) as emu:
        await Api(emu, http).create("aud")
        assert emu.requests[0].body is None


async def test_reset_drops_state_logs_and_scripts(raw: Api) -> None:
    await raw.create("aud")
    raw.emu.script(ScriptedResponse(status=500))
    raw.emu.reset()
    assert raw.emu.audience_names() == []
    assert raw.emu.requests == []
    assert (await raw.get("list")).status == 200  # the script is gone


# -- rate limit ------------------------------------------------------------------------------------


async def test_rate_limit_answers_429_with_headers(http: aiohttp.ClientSession) -> None:
    async with Emulator(rate_limit=5) as emu:
        raw = Api(emu, http)
        first = await raw.get("list")
        assert first.status == 200
        assert first.headers["X-RateLimit-Limit"] == "5"
        limited = await raw.get("list")
        assert limited.status == 429
        assert limited.body["error_code"] == "TOO_MANY_REQUESTS"
        retry_after = float(limited.headers["Retry-After"])
        assert 0 < retry_after <= 0.2
        assert limited.headers["X-RateLimit-Limit"] == "5"
        assert limited.headers["X-RateLimit-Remaining"] == "0"
        assert int(limited.headers["X-RateLimit-Reset"]) >= int(time.time())
        assert emu.requests[-1].outcome == "rate_limited"

        await asyncio.sleep(retry_after)  # waiting as told is enough to get in
        assert (await raw.get("list")).status == 200


async def test_rate_limit_is_checked_before_auth_and_settable(http: aiohttp.ClientSession) -> None:
    async with Emulator(rate_limit=0.5) as emu:
        raw = Api(emu, http)
        assert (await raw.get("list")).status == 200
        assert (await raw.call("GET", "list", headers={})).status == 429
        emu.rate_limit = None
        assert [(await raw.get("list")).status for _ in range(5)] == [200] * 5
        emu.rate_limit = 0.5
        assert [(await raw.get("list")).status for _ in range(2)] == [200, 429]
        with pytest.raises(ValueError, match="rate_limit"):
            emu.rate_limit = 0


async def test_rate_limited_writes_are_not_applied(http: aiohttp.ClientSession) -> None:
    async with Emulator(rate_limit=0.5, indexing_delay=0) as emu:
        raw = Api(emu, http)
        assert (await raw.post("create", {"name": "a", "type": "custom_ids"})).status == 202
        assert (await raw.post("create", {"name": "b", "type": "custom_ids"})).status == 429
        assert emu.audience_names() == ["a"]


# -- scripted responses ----------------------------------------------------------------------------


async def test_scripted_raw_html_answer_without_processing(raw: Api) -> None:
    raw.emu.script(
        ScriptedResponse(status=502, body="<html>Bad gateway</html>", headers={"Content-Type": "text/html"})
    )
    reply = await raw.post("create", {"name": "aud", "type": "custom_ids"})
    assert reply.status == 502
    assert reply.body == "<html>Bad gateway</html>"
    assert reply.headers["Content-Type"].startswith("text/html")
    assert raw.emu.audience_names() == []  # not processed
    assert raw.emu.requests[-1].outcome == "scripted"
    assert (await raw.post("create", {"name": "aud", "type": "custom_ids"})).status == 202


async def test_scripted_invalid_json_and_json_bodies(raw: Api) -> None:
    raw.emu.script(
        ScriptedResponse(status=200, body=b"{not json", headers={"Content-Type": "application/json"}),
        ScriptedResponse(status=202, body={"indexing_token": "fake"}, headers={"X-Extra": "1"}),
        ScriptedResponse(status=503),
    )
    assert (await raw.get("list")).body == "{not json"
    fake = await raw.post("create", {"name": "aud", "type": "custom_ids"})
    assert (fake.status, fake.body, fake.headers["X-Extra"]) == (202, {"indexing_token": "fake"}, "1")
    empty = await raw.get("list")
    assert (empty.status, empty.body) == (503, "")
    assert raw.emu.audience_names() == []
    assert (await raw.get("list")).status == 200


async def test_scripts_only_match_their_route(raw: Api) -> None:
    await raw.create("aud")
    raw.emu.script(
        ScriptedResponse(status=500, route="update"),
        ScriptedResponse(status=418),
    )
    assert (await raw.get("view", name="aud")).status == 418  # the first script does not match view
    assert (await raw.get("view", name="aud")).status == 200
    assert (await raw.post("update", {"name": "aud", "ids": [add("x")]})).status == 500
    assert raw.emu.members("aud") == {}


async def test_scripted_drops(raw: Api, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    await raw.create("aud")
    raw.emu.script(
        ScriptedResponse(action="drop_before", route="update"),
        ScriptedResponse(action="drop_after", route="update"),
    )
    for custom_id in ("before", "after"):
        with pytest.raises(aiohttp.ClientError):
            await raw.post("update", {"name": "aud", "ids": [add(custom_id)]})
    raw.emu.settle()
    assert raw.emu.members("aud") == {"after": {}}
    outcomes = [(r.status, r.outcome) for r in raw.emu.requests[-2:]]
    assert outcomes == [(0, "dropped_before"), (0, "dropped_after")]
    # Intentional drops are not server errors: nothing logged at WARNING or above.
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_scripted_slow_answer(raw: Api) -> None:
    raw.emu.script(ScriptedResponse(action="slow", delay=0.2))
    started = time.monotonic()
    reply = await raw.post("create", {"name": "aud", "type": "custom_ids"})
    assert reply.status == 202
    assert time.monotonic() - started >= 0.2
    assert raw.emu.requests[-1].outcome == "slow"


def test_scripted_response_and_fault_plan_validate() -> None:
    with pytest.raises(ValueError, match="action"):
        ScriptedResponse(action="explode")
    with pytest.raises(ValueError, match="route"):
        ScriptedResponse(route="upsert")
    with pytest.raises(ValueError, match="status"):
        ScriptedResponse(status=42)
    with pytest.raises(ValueError, match="add up"):
        FaultPlan(rate_503=0.7, rate_500=0.5)
    with pytest.raises(ValueError, match="probability"):
        FaultPlan(slow=1.5)
    with pytest.raises(ValueError, match="unknown route"):
        FaultPlan(routes={"upsert"})
    assert FaultPlan(routes="update").routes == frozenset({"update"})  # type: ignore[arg-type]


# -- random faults ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("plan", "status", "code", "outcome"),
    [
        (FaultPlan(seed=1, rate_429=1.0, retry_after=0.05), 429, "TOO_MANY_REQUESTS", "fault_429"),
        (FaultPlan(seed=1, rate_503=1.0), 503, "SERVICE_UNAVAILABLE", "fault_503"),
        (FaultPlan(seed=1, rate_500=1.0), 500, "INTERNAL_ERROR", "fault_500"),
    ],
)
async def test_error_faults(
    http: aiohttp.ClientSession, plan: FaultPlan, status: int, code: str, outcome: str
) -> None:
    async with Emulator(faults=plan) as emu:
        raw = Api(emu, http)
        reply = await raw.post("create", {"name": "aud", "type": "custom_ids"}, headers={})
        assert reply.status == status  # faults come before auth
        assert reply.body["error_code"] == code
        if status == 429:
            assert reply.headers["Retry-After"] == "0.05"
        assert emu.audience_names() == []
        assert emu.requests[-1].outcome == outcome


async def test_retry_after_is_formatted_without_trailing_zeros(http: aiohttp.ClientSession) -> None:
    async with Emulator(faults=FaultPlan(rate_429=1.0)) as emu:
        assert (await Api(emu, http).get("list")).headers["Retry-After"] == "1"


async def test_drop_faults(http: aiohttp.ClientSession) -> None:
    plan = FaultPlan(seed=3, drop_before=1.0, routes={"update"})
    async with Emulator(indexing_delay=0, faults=plan) as emu:
        raw = Api(emu, http)
        await raw.create("aud")  # not subject to the plan
        with pytest.raises(aiohttp.ClientError):
            await raw.post("update", {"name": "aud", "ids": [add("before")]})
        emu.faults = FaultPlan(seed=3, drop_after=1.0, routes={"update"})
        with pytest.raises(aiohttp.ClientError):
            await raw.post("update", {"name": "aud", "ids": [add("after")]})
        emu.faults = FaultPlan()
        assert (await raw.get("view", name="aud")).body["nb_ids"] == 1
        assert emu.members("aud") == {"after": {}}
        assert [r.outcome for r in emu.requests[1:3]] == ["dropped_before", "dropped_after"]
        assert emu.count(status=0) == 2


async def test_slow_fault(http: aiohttp.ClientSession) -> None:
    async with Emulator(faults=FaultPlan(seed=0, slow=1.0, slow_seconds=0.2)) as emu:
        started = time.monotonic()
        assert (await Api(emu, http).get("list")).status == 200
        assert time.monotonic() - started >= 0.2
        assert emu.requests[-1].outcome == "slow"


async def test_seeded_faults_are_reproducible(http: aiohttp.ClientSession) -> None:
    plan = FaultPlan(seed=1234, rate_503=0.3, rate_429=0.2, retry_after=0)

    async def run() -> list[int]:
        async with Emulator(faults=plan) as emu:
            raw = Api(emu, http)
            return [(await raw.get("list")).status for _ in range(40)]

    first, second = await run(), await run()
    assert first == second
    assert {200, 429, 503} == set(first)


async def test_faults_spare_other_routes(http: aiohttp.ClientSession) -> None:
    async with Emulator(faults=FaultPlan(rate_500=1.0, routes={"replace"})) as emu:
        raw = Api(emu, http)
        await raw.create("aud")
        assert (await raw.post("replace", {"name": "aud", "ids": []})).status == 500
        assert (await raw.get("list")).status == 200


# -- latency and lifecycle -------------------------------------------------------------------------


async def test_fixed_latency(http: aiohttp.ClientSession) -> None:
    async with Emulator(latency=0.2) as emu:
        started = time.monotonic()
        assert (await Api(emu, http).get("list")).status == 200
        assert time.monotonic() - started >= 0.2


async def test_random_latency_can_reorder_processing(http: aiohttp.ClientSession) -> None:
    # Latency comes before processing, so concurrent creates are processed out of arrival order.
    async with Emulator(latency=(0.0, 0.3), faults=FaultPlan(seed=5), indexing_delay=0) as emu:
        raw = Api(emu, http)
        started = time.monotonic()
        replies = await asyncio.gather(
            *(raw.post("create", {"name": f"a{i}", "type": "custom_ids"}) for i in range(20))
        )
        assert all(r.status == 202 for r in replies)
        assert time.monotonic() - started <= 5
        snapshots = [emu.audience(f"a{i}") for i in range(20)]
        created = [s.created for s in snapshots if s is not None]
        assert len(created) == 20
        assert created != sorted(created)


async def test_stop_drops_a_slow_request_quickly(
    http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    emu = Emulator(faults=FaultPlan(slow=1.0, slow_seconds=60))
    await emu.start()
    raw = Api(emu, http)
    pending = asyncio.ensure_future(raw.get("list"))
    await poll(lambda: emu.count() == 0 and len(emu.requests) == 1)
    started = time.monotonic()
    await emu.stop()
    assert time.monotonic() - started < 5
    with pytest.raises(aiohttp.ClientError):
        await pending
    await emu.stop()  # idempotent
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_restart_after_stop(http: aiohttp.ClientSession) -> None:
    emu = Emulator()
    async with emu:
        await Api(emu, http).create("aud")
    async with emu:
        assert (await Api(emu, http).get("view", name="aud")).status == 200


def _get_json(emu: Emulator, path: str) -> Any:
    request = urllib.request.Request(f"{emu.base_url}{path}", headers=emu.auth_headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def test_threaded_emulator_from_blocking_code() -> None:
    with Emulator(indexing_delay=0) as emu:
        assert threading.current_thread() is threading.main_thread()
        emu.add_audience("vip", {"u1": {"tier": "gold"}})
        body = json.dumps({"name": "vip", "ids": [add("u2")]}).encode()
        request = urllib.request.Request(
            f"{emu.base_url}/2.8/audiences/update",
            data=body,
            headers={**emu.auth_headers, "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 202
        assert _get_json(emu, "/2.8/audiences/view?name=vip")["nb_ids"] == 2
        assert emu.members("vip") == {"u1": {"tier": "gold"}, "u2": {}}
        url = emu.base_url
    assert not any(t.name == "batch-audiences-emulator" for t in threading.enumerate())
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{url}/2.8/audiences/list", timeout=2)


def test_threaded_emulator_reports_a_taken_port() -> None:
    with Emulator() as first, pytest.raises(OSError, match=r"bind|in use"), Emulator(port=first.port):
        pass


# -- the command line ------------------------------------------------------------------------------


def _start_cli(*args: str) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "batch_audiences.testing", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=PROJECT_ROOT,
        env=env,
    )
    assert process.stdout is not None
    first_line = process.stdout.readline()
    match = re.search(r"http://127\.0\.0\.1:\d+", first_line)
    if match is None:
        process.kill()
        _, stderr = process.communicate()
        raise AssertionError(f"no URL in {first_line!r}; stderr: {stderr}")
    return process, match.group(0)


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_cli_serves_until_interrupted(stop_signal: signal.Signals) -> None:
    process, base_url = _start_cli("--api-key", "cli-key", "--project-key", "project_cli", "--seed", "1")
    try:
        assert process.stdout is not None
        banner = "".join(process.stdout.readline() for _ in range(4))
        assert "cli-key" in banner
        assert "project_cli" in banner
        request = urllib.request.Request(
            f"{base_url}/2.8/audiences/list",
            headers={"Authorization": "Bearer cli-key", "X-Batch-Project": "project_cli"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert json.load(response)["count"] == 0
        process.send_signal(stop_signal)
        _, stderr = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr


def test_cli_rejects_bad_options() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "batch_audiences.testing", "--fail-rate", "2"],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
        timeout=30,
    )
    assert result.returncode == 2
    assert "fail-rate" in result.stderr


@pytest.mark.parametrize("serving", ["thread", "loop"])
async def test_stopping_while_connections_arrive_leaves_no_socket_open(serving: str) -> None:
    # Connections that arrive while the emulator stops (a client connecting at that moment)
    # must be closed with it, not left for the garbage collector ("unclosed socket / transport"
    # ResourceWarnings raised in whatever test runs next).
    import gc
    import socket
    import warnings

    def arrive(port: int) -> list[socket.socket]:
        return [socket.create_connection(("127.0.0.1", port)) for _ in range(8)]

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(5):
            if serving == "thread":
                with Emulator(indexing_delay=0.0) as emu:
                    clients = arrive(emu.port)
            else:
                async with Emulator(indexing_delay=0.0) as emu:
                    clients = await asyncio.to_thread(arrive, emu.port)
                    await asyncio.sleep(0)  # the loop sees the connections arrive, then stops
            for client in clients:
                client.close()
            gc.collect()
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert leaks == []
