"""The operations layer as users see it: what an accepted write carries, and how ``wait=True``
confirms indexing (one schedule, few views, progress that says so), for both clients."""

from __future__ import annotations

from typing import Any

from batch_audiences import IdAction, ProgressEvent
from batch_audiences.testing import Emulator, ScriptedResponse


async def test_an_accepted_write_keeps_the_answers_status_and_headers(api: Any, emulator: Emulator) -> None:
    emulator.add_audience("crm")
    emulator.script(
        ScriptedResponse(202, {"indexing_token": "t1"}, {"X-Request-Id": "req-1"}, route="update"),
        ScriptedResponse(200, {"indexing_token": "t2"}, {"X-Request-Id": "req-2"}, route="update"),
    )
    first = await api.update("crm", [IdAction.add("u1")])
    second = await api.update("crm", [IdAction.add("u2")])
    assert (first.indexing_token, first.status, first.headers["x-request-id"]) == ("t1", 202, "req-1")
    assert (second.indexing_token, second.status, second.headers["X-Request-Id"]) == ("t2", 200, "req-2")
    # Status and headers describe the answer, not the write: equality is the token's.
    assert first == type(first)("t1")


async def test_wait_confirms_a_hundred_chunks_with_a_few_views_and_says_so(
    api: Any, emulator: Emulator
) -> None:
    emulator.indexing_delay = 0.3
    emulator.add_audience("crm")
    events: list[ProgressEvent] = []
    report = await api.upload(
        "crm", (f"u{n}" for n in range(1_000)), chunk_size=10, wait=True, on_progress=events.append
    )
    assert report.ok
    assert report.applied is True
    assert report.chunks_acknowledged == 100
    # Not one view per chunk: the audience's last write settles them all.
    views = emulator.count(route="view")
    assert 1 <= views <= 20, views
    waiting = [event for event in events if event.kind == "indexing"]
    assert waiting, [event.kind for event in events]
    assert waiting[0].chunks_applied == 0
    assert waiting[-1].chunks_applied == waiting[-1].chunks_acknowledged == 100
    assert waiting[-1].indexing == "waiting for indexing: 100/100 applied"
    assert events[-1].kind == "finished"
    emulator.settle()
    assert len(emulator.members("crm")) == 1_000
