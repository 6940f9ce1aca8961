"""How the emulator keeps members: the same content whatever the shape of the requests, and an
audience of IDs without attributes that costs the garbage collector nothing (over loopback, with
a raw aiohttp client, never the SDK client)."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from batch_audiences.testing import Emulator


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def post(emu: Emulator, http: aiohttp.ClientSession, route: str, body: object) -> Any:
    url = f"{emu.base_url}/2.8/audiences/{route}"
    async with http.post(url, json=body, headers=emu.auth_headers) as reply:
        assert reply.status == 202, await reply.text()
        return await reply.json()


def add(custom_id: str, **attributes: object) -> dict[str, object]:
    item: dict[str, object] = {"action": "add", "id": custom_id}
    if attributes:
        item["attributes"] = attributes
    return item


async def test_members_without_attributes_read_as_empty_dicts_of_their_own(
    http: aiohttp.ClientSession,
) -> None:
    async with Emulator(indexing_delay=0) as emu:
        emu.add_audience("aud", ["s1"])
        await post(emu, http, "replace", {"name": "aud", "ids": [{"id": "a"}, {"id": "b", "attributes": {}},
                                                                  {"id": "c", "attributes": {"k": 1}}]})
        members = emu.members("aud")
        assert members == {"a": {}, "b": {}, "c": {"k": 1}}
        assert members["a"] is not members["b"]
        members["a"]["changed"] = True  # a copy: the emulator's content does not move
        assert emu.members("aud")["a"] == {}
        snapshot = emu.audience("aud")
        assert snapshot is not None
        assert snapshot.members == {"a": {}, "b": {}, "c": {"k": 1}}
        assert snapshot.nb_ids == 3


async def test_updates_keep_request_order_whatever_the_mix_of_items(http: aiohttp.ClientSession) -> None:
    async with Emulator(indexing_delay=0) as emu:
        emu.add_audience("aud", {"x": {"old": 1}, "y": {}})
        # Plain adds only (applied in one step), then a mix (applied item by item).
        await post(emu, http, "update", {"name": "aud", "ids": [add("x"), add("z"), add("z")]})
        assert emu.members("aud") == {"x": {}, "y": {}, "z": {}}
        await post(emu, http, "update", {"name": "aud", "ids": [
            add("y", tier="gold"), {"action": "remove", "id": "x"}, add("x"), {"action": "remove", "id": "z"},
            add("w", n=2), add("w"),
        ]})
        assert emu.members("aud") == {"x": {}, "y": {"tier": "gold"}, "w": {}}


async def test_merged_attributes_survive_a_plain_add(http: aiohttp.ClientSession) -> None:
    async with Emulator(indexing_delay=0, attribute_merge="merge") as emu:
        emu.add_audience("aud", {"x": {"a": 1}})
        await post(emu, http, "update", {"name": "aud", "ids": [add("x"), add("y"), add("x", b=2)]})
        assert emu.members("aud") == {"x": {"a": 1, "b": 2}, "y": {}}


async def test_an_audience_of_ids_without_attributes_is_not_followed_by_the_garbage_collector(
    http: aiohttp.ClientSession,
) -> None:
    # A dict of a million {} is followed entry by entry at every full collection (about 0.1 s
    # each, dozens of times during one big upload); one whose values are all None is not.
    async with Emulator(indexing_delay=0) as emu:
        emu.add_audience("aud", [f"s{n}" for n in range(100)])
        await post(emu, http, "replace", {"name": "aud", "ids": [{"id": f"r{n}"} for n in range(1_000)]})
        await post(emu, http, "update", {"name": "aud", "ids": [add(f"u{n}") for n in range(1_000)]})
        assert emu.audience("aud") is not None  # applied
        store = emu._store  # the state itself: what the collector sees
        members = store._audiences["aud"].members
        assert len(members) == 2_000
        gc.collect()  # untracks what it can
        assert not gc.is_tracked(members)
        # Seeded audiences too.
        emu.add_audience("seeded", [f"s{n}" for n in range(100)])
        gc.collect()
        assert not gc.is_tracked(store._audiences["seeded"].members)


async def test_a_body_refused_by_the_rate_limit_is_not_decoded_unless_recorded(
    http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from batch_audiences.testing._validation import decode_json as decode

    decoded: list[bytes] = []

    def counting(raw: bytes) -> object:
        decoded.append(raw)
        return decode(raw)

    monkeypatch.setattr("batch_audiences.testing._server.decode_json", counting)
    async with Emulator(indexing_delay=0, record_bodies=False, rate_limit=0.001, burst=1) as emu:
        emu.add_audience("aud")
        url = f"{emu.base_url}/2.8/audiences/update"
        body = {"name": "aud", "ids": [add("x")]}
        statuses = []
        for _ in range(3):
            async with http.post(url, json=body, headers=emu.auth_headers) as reply:
                statuses.append(reply.status)
        assert statuses == [202, 429, 429]
        assert len(decoded) == 1  # the accepted one only
        emu.record_bodies = True  # recorded: decoded to be kept, refused or not
        async with http.post(url, json=body, headers=emu.auth_headers) as reply:
            assert reply.status == 429
        assert len(decoded) == 2
        assert emu.requests[-1].body == body
