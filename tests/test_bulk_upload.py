"""``upload``: every mode, order kept under concurrency, replace, wait, invalid items, resume,
progress, and the memory bound, for both clients, against the emulator over HTTP."""

from __future__ import annotations

import asyncio
import enum
import random
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batch_audiences import (
    Action,
    AsyncAudiencesClient,
    DependencyFailedError,
    IdAction,
    Member,
    ProgressEvent,
    UploadReport,
    ValidationError,
)
from batch_audiences.testing import Emulator, ScriptedResponse

Item = str | Member | IdAction


def apply_stream(items: Iterable[Item], mode: str, initial: dict[str, dict[str, Any]] | None = None,
                 ) -> dict[str, dict[str, Any]]:
    """What the audience holds after applying ``items`` one at a time, in order."""
    content: dict[str, dict[str, Any]] = {} if mode == "replace" else dict(initial or {})
    for item in items:
        if isinstance(item, str):
            custom_id, add, attributes = item, mode != "remove", None
        elif isinstance(item, Member):
            custom_id, add, attributes = item.id, mode != "remove", item.attributes
        else:
            custom_id, add, attributes = item.id, item.action is Action.ADD, item.attributes
        if add:
            content[custom_id] = dict(attributes or {})
        else:
            content.pop(custom_id, None)
    return content


def flapping(count: int, distinct: int, seed: int) -> list[IdAction]:
    """A stream where a few IDs are added, removed and added again, all along."""
    rng = random.Random(seed)
    items = []
    for position in range(count):
        custom_id = f"id-{rng.randrange(distinct)}"
        if rng.random() < 0.35:
            items.append(IdAction.remove(custom_id))
        else:
            items.append(IdAction.add(custom_id, {"v": position}))
    return items


def slow_indexing(emulator: Emulator) -> None:
    """Indexing delays and jittered latency, so that a wrong order changes the content."""
    emulator.indexing_delay = 0.01
    emulator.replace_indexing_delay = 0.04
    emulator.latency = (0.0, 0.01)


def check_accounting(report: UploadReport) -> None:
    """Every item read has exactly one outcome."""
    in_failed_chunks = sum(chunk.count for chunk in report.failed_chunks)
    assert report.items_read == (
        report.items_accepted + report.items_skipped + report.items_invalid + in_failed_chunks
    )


def writes(emulator: Emulator, route: str) -> list[dict[str, Any]]:
    return [r.body for r in emulator.requests if r.route == route and r.status == 202]  # type: ignore[misc]


# -- every mode ------------------------------------------------------------------------------


async def test_add_many_chunks(api: Any, emulator: Emulator) -> None:
    slow_indexing(emulator)
    emulator.add_audience("crm", {"old": {"k": "v"}})
    ids = [f"user-{n}" for n in range(1_234)]
    events: list[ProgressEvent] = []
    report = await api.upload("crm", iter(ids), chunk_size=100, concurrency=4, on_progress=events.append)
    assert report.ok, report.summary()
    assert (report.items_read, report.items_sent, report.items_accepted) == (1_234, 1_234, 1_234)
    assert report.chunks_acknowledged == 13
    assert len(report.indexing_tokens) == 13  # slow indexing: none confirmed, every token kept
    assert report.requests == 13
    assert report.retries == 0
    emulator.settle()
    assert emulator.members("crm") == apply_stream(ids, "add", {"old": {"k": "v"}})
    bodies = writes(emulator, "update")
    assert sorted(len(body["ids"]) for body in bodies) == [34] + [100] * 12
    assert [event.kind for event in events].count("acknowledged") == 13


class Plan(str, enum.Enum):
    # A str-based Enum: str() of a member is "Plan.PRO" (and its hash is its name's), yet it is
    # the string "pro" to json and to ==.
    PRO = "pro"
    FREE = "free"


@pytest.mark.parametrize("mode", ["add", "update", "remove", "replace"])
async def test_an_id_of_a_str_subclass_is_sent_as_the_string_it_holds(
    api: Any, emulator: Emulator, mode: str
) -> None:
    emulator.add_audience("crm", ["pro", "free", "kept"])
    items: list[Any] = [Plan.PRO, "free"]
    if mode == "update":  # plain IDs, Members and IdActions: every road an ID can take
        items = [IdAction.remove(Plan.PRO), Member(Plan.FREE), Plan.PRO]
    elif mode in ("add", "replace"):
        items = [Plan.PRO, Member(Plan.FREE, {"tier": 1})]
    report = await api.upload("crm", items, mode=mode, chunk_size=1)
    assert report.ok, report.summary()
    emulator.settle()
    members = emulator.members("crm")
    assert "Plan.PRO" not in members
    assert "Plan.FREE" not in members
    expected = {
        "add": {"pro", "free", "kept"}, "update": {"pro", "free", "kept"},
        "remove": {"kept"}, "replace": {"pro", "free"},
    }[mode]
    assert set(members) == expected


def test_models_hold_a_str_subclass_id_as_a_plain_str() -> None:
    for made in (Member(Plan.PRO), IdAction.add(Plan.PRO), IdAction.remove(Plan.PRO)):
        assert type(made.id) is str
        assert made.id == "pro"


async def test_remove_mode(api: Any, emulator: Emulator) -> None:
    slow_indexing(emulator)
    emulator.add_audience("crm", [f"u{n}" for n in range(500)])
    gone = [f"u{n}" for n in range(0, 500, 2)] + ["never-there"]
    report = await api.upload("crm", gone, mode="remove", chunk_size=60, concurrency=3, wait=True)
    assert report.ok
    assert report.applied is True
    assert set(emulator.members("crm")) == {f"u{n}" for n in range(1, 500, 2)}
    assert all(item["action"] == "remove" for body in writes(emulator, "update") for item in body["ids"])


async def test_update_mode_keeps_the_order_of_flapping_ids(api: Any, emulator: Emulator) -> None:
    slow_indexing(emulator)
    emulator.add_audience("crm", {"id-1": {"v": -1}, "id-2": {}})
    stream = flapping(600, 50, seed=3)
    events: list[ProgressEvent] = []
    report = await api.upload("crm", stream, mode="update", chunk_size=25, concurrency=6,
                              on_progress=events.append)
    assert report.ok, report.summary()
    emulator.settle()
    expected = apply_stream(stream, "update", {"id-1": {"v": -1}, "id-2": {}})
    assert emulator.members("crm") == expected
    # Conflicting chunks waited for the earlier ones to be applied: views were needed.
    assert emulator.count(route="view") > 0


async def test_add_remove_add_across_chunk_boundaries(api: Any, emulator: Emulator) -> None:
    slow_indexing(emulator)
    emulator.add_audience("crm", {"y": {"was": "here"}})
    stream: list[Item] = [f"fill-{n}" for n in range(30)]
    stream[5] = IdAction.add("x", {"round": 1})
    stream[15] = IdAction.remove("x")
    stream[25] = IdAction.add("x", {"round": 3})
    stream[12] = IdAction.remove("y")
    stream[29] = Member("y", {"round": 4})
    report = await api.upload("crm", stream, mode="update", chunk_size=10, concurrency=3)
    assert report.ok
    emulator.settle()
    members = emulator.members("crm")
    assert members["x"] == {"round": 3}
    assert members["y"] == {"round": 4}
    assert members == apply_stream(stream, "update", {"y": {"was": "here"}})


async def test_chunks_without_common_ids_go_concurrently(api: Any, emulator: Emulator) -> None:
    emulator.latency = 0.05
    emulator.add_audience("crm")
    events: list[ProgressEvent] = []
    await api.upload("crm", (f"u{n}" for n in range(400)), chunk_size=50, concurrency=4,
                     on_progress=events.append)
    # A chunk acknowledged while others were still out: the requests overlapped.
    assert max(event.requests_in_flight for event in events) >= 2


async def test_a_conflicting_chunk_is_sent_only_once_the_earlier_write_is_applied(
    api: Any, emulator: Emulator
) -> None:
    emulator.indexing_delay = 0.15
    emulator.add_audience("crm")
    # chunk 0 = a (with attributes) b, chunk 3 = a again with other attributes: the order of those
    # two matters (the last add sets the attributes). Two plain adds of "a" would commute and go
    # concurrently (see test_plain_adds_or_removes_sharing_ids_never_wait).
    stream: list[Item] = [Member("a", {"v": 1}), "b", "c", "d", "e", "f", Member("a", {"v": 2})]
    report = await api.upload("crm", stream, chunk_size=2, concurrency=4)
    assert report.ok
    updates = [r for r in emulator.requests if r.route == "update" and r.status == 202]
    first = next(r for r in updates if "a" in {item["id"] for item in r.body["ids"]})  # type: ignore[index]
    last = next(r for r in reversed(updates) if "a" in {item["id"] for item in r.body["ids"]})  # type: ignore[index]
    assert first is not last
    # The emulator applies a write indexing_delay after it arrived; the client can only know it
    # is applied by viewing it, so the second request arrived after that moment.
    assert last.received_at >= first.received_at + 0.15
    views = [r for r in emulator.requests if r.route == "view" and "indexing_token" in r.query]
    assert views, "the engine must have checked the first write's indexing state"
    emulator.settle()
    assert emulator.members("crm") == apply_stream(stream, "add")


async def test_plain_adds_or_removes_sharing_ids_never_wait(api: Any, emulator: Emulator) -> None:
    """Plain adds commute with each other, and removes too: chunks of only one of those kinds go
    concurrently even when they share IDs, and the engine never has to view a write."""
    slow_indexing(emulator)
    emulator.add_audience("crm", {"keep": {"k": 1}, "u3": {"was": "here"}})
    adds = [f"u{n % 37}" for n in range(600)]  # every ID in many chunks
    report = await api.upload("crm", adds, chunk_size=25, concurrency=4)
    assert report.ok, report.summary()
    emulator.settle()  # two uploads are not ordered with each other: only the chunks of one are
    removes = [f"u{n % 23}" for n in range(400)]
    report = await api.upload("crm", removes, mode="remove", chunk_size=25, concurrency=4)
    assert report.ok, report.summary()
    assert report.chunks_acknowledged == 16
    assert emulator.count(route="view") == 0
    emulator.settle()
    expected = apply_stream(adds, "add", {"keep": {"k": 1}, "u3": {"was": "here"}})
    assert emulator.members("crm") == apply_stream(removes, "remove", expected)


async def test_chunks_of_removes_after_chunks_of_plain_adds_wait_for_them(
    api: Any, emulator: Emulator
) -> None:
    """Chunk-aligned runs: plain adds, removes of the same IDs, plain adds again. The chunks of
    each run commute with each other, not with those of the run before: each run waits for the
    previous one to be applied (a barrier), whatever the latency jitter."""
    slow_indexing(emulator)
    emulator.latency = (0.0, 0.03)
    emulator.add_audience("crm", {"u1": {"was": "here"}})
    ids = [f"u{n}" for n in range(40)]
    stream: list[Item] = [*ids, *(IdAction.remove(i) for i in reversed(ids)), *ids[::2],
                          *(IdAction.remove(i) for i in ids[::4])]
    report = await api.upload("crm", stream, mode="update", chunk_size=10, concurrency=8)
    assert report.ok, report.summary()
    emulator.settle()
    members = emulator.members("crm")
    assert members == {i: {} for i in ids[2::4]}
    assert members == apply_stream(stream, "update", {"u1": {"was": "here"}})


def runs_of_kinds(seed: int, runs: int, distinct: int) -> list[Item]:
    """A stream made of runs of one kind each (plain adds, removes, adds with attributes, or a
    mix), of random lengths, over few IDs: chunk boundaries fall inside and between runs, so
    chunks of every kind follow each other, sharing IDs."""
    rng = random.Random(seed)
    items: list[Item] = []
    for run in range(runs):
        kind = rng.choice(["plain", "plain", "remove", "remove", "attributes", "mixed"])
        for _ in range(rng.randrange(1, 60)):
            custom_id = f"id-{rng.randrange(distinct)}"
            kind_here = rng.choice(["plain", "remove", "attributes"]) if kind == "mixed" else kind
            if kind_here == "plain":
                items.append(rng.choice([custom_id, IdAction.add(custom_id), Member(custom_id)]))
            elif kind_here == "remove":
                items.append(IdAction.remove(custom_id))
            else:
                items.append(IdAction.add(custom_id, {"run": run, "n": len(items)}))
    return items


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_runs_of_plain_adds_removes_and_attributes_keep_the_order(
    api: Any, emulator: Emulator, seed: int
) -> None:
    slow_indexing(emulator)
    initial: dict[str, dict[str, Any]] = {"id-0": {"was": "here"}, "id-1": {}, "other": {"k": 2}}
    emulator.add_audience("crm", initial)
    stream = runs_of_kinds(seed, runs=14, distinct=25)
    report = await api.upload("crm", stream, mode="update", chunk_size=15, concurrency=4)
    assert report.ok, report.summary()
    check_accounting(report)
    emulator.settle()
    expected = apply_stream(stream, "update", initial)
    members = emulator.members("crm")
    for custom_id in sorted(set(expected) | set(members)):
        assert members.get(custom_id) == expected.get(custom_id), (custom_id, seed)


async def test_plain_adds_then_attributes_of_the_same_ids_in_add_mode(api: Any, emulator: Emulator) -> None:
    """Chunks of plain adds are not recorded by ID, so a later chunk with attributes waits for all
    of them (the barrier); plain adds after it must wait for it in turn."""
    slow_indexing(emulator)
    emulator.add_audience("crm")
    ids = [f"u{n}" for n in range(40)]
    stream: list[Item] = [*ids, *(Member(i, {"round": 2}) for i in ids[::2]), *ids[::4],
                          *(Member(i, {"round": 4}) for i in ids[::8]), *ids[:5]]
    report = await api.upload("crm", stream, chunk_size=7, concurrency=5)
    assert report.ok, report.summary()
    emulator.settle()
    expected = apply_stream(stream, "add")
    members = emulator.members("crm")
    assert members["u8"] == {"round": 4}  # attributed last at round 4 (u8 is not among the first 5)
    assert members["u4"] == {}  # round 2, then plain adds again
    assert members["u0"] == {}
    for custom_id in ids:
        assert members[custom_id] == expected[custom_id], custom_id
    assert set(members) == set(expected)


# -- replace -------------------------------------------------------------------------------------


async def test_multi_chunk_replace_is_not_lossy(api: Any, emulator: Emulator) -> None:
    slow_indexing(emulator)
    emulator.add_audience("crm", [f"old-{n}" for n in range(300)] + ["keep-7"])
    members = [Member(f"keep-{n}", {"n": n}) for n in range(1_050)]
    report = await api.upload("crm", members, mode="replace", chunk_size=100, concurrency=4)
    assert report.ok, report.summary()
    emulator.settle()
    assert emulator.members("crm") == {f"keep-{n}": {"n": n} for n in range(1_050)}
    routes = [r.route for r in emulator.requests if r.route in ("replace", "update")]
    assert routes[0] == "replace"
    assert routes.count("replace") == 1
    assert routes.count("update") == 10
    assert all(item["action"] == "add" for body in writes(emulator, "update") for item in body["ids"])


async def test_replace_then_update_without_waiting_loses_data(emulator: Emulator) -> None:
    """The control for the test above: the emulator does wipe updates sent during a replace."""
    slow_indexing(emulator)
    emulator.add_audience("crm", ["old"])
    async with AsyncAudiencesClient(emulator.api_key, emulator.project_key,
                                    base_url=emulator.base_url) as client:
        await client.replace("crm", ["a"])
        await client.update("crm", [IdAction.add("b")])
    emulator.settle()
    assert emulator.members("crm") == {"a": {}}


async def test_replace_with_an_empty_stream_empties_the_audience(api: Any, emulator: Emulator) -> None:
    emulator.add_audience("crm", ["a", "b", "c"])
    report = await api.upload("crm", iter(()), mode="replace", wait=True)
    assert report.ok
    assert report.applied is True
    assert emulator.members("crm") == {}
    replaces = writes(emulator, "replace")
    assert replaces == [{"name": "crm", "ids": []}]
    assert writes(emulator, "update") == []


async def test_a_replace_whose_items_are_all_invalid_does_not_empty_the_audience(
    api: Any, emulator: Emulator
) -> None:
    emulator.add_audience("crm", ["a", "b"])
    report = await api.upload("crm", ["", "  ", 5], mode="replace")
    assert not report.ok
    assert report.items_invalid == 3
    assert [chunk.index for chunk in report.failed_chunks] == [0]
    assert "would empty" in report.failed_chunks[0].reason
    assert emulator.requests == []
    assert set(emulator.members("crm")) == {"a", "b"}


async def test_replace_whose_first_chunk_fails_sends_nothing_else(api: Any, emulator: Emulator) -> None:
    emulator.add_audience("crm", ["a"])
    emulator.script(ScriptedResponse(400, {"error_code": "BAD", "error_message": "no"}, route="replace"))
    report = await api.upload("crm", [f"u{n}" for n in range(100)], mode="replace", chunk_size=10,
                              concurrency=4)
    assert not report.ok
    assert report.failed_chunks[0].index == 0
    assert report.failed_chunks[0].error.status == 400
    assert emulator.count(route="update") == 0
    assert "replace (chunk 0) failed" in (report.stop_reason or "")
    check_accounting(report)
    assert emulator.members("crm") == {"a": {}}


# -- wait -----------------------------------------------------------------------------------------


async def test_wait_true_returns_once_every_write_is_applied(api: Any, emulator: Emulator) -> None:
    emulator.indexing_delay = 0.2
    emulator.add_audience("crm")
    tokens: list[str] = []
    report = await api.upload("crm", (f"u{n}" for n in range(300)), chunk_size=50, wait=True,
                              on_progress=lambda e: tokens.append(e.token) if e.token else None)
    assert report.applied is True
    assert report.ok
    assert report.indexing_tokens == ()  # every write confirmed applied: none left to wait for
    snapshot = emulator.audience("crm")
    assert snapshot is not None
    assert snapshot.pending_writes == 0
    assert len(tokens) == 6
    assert all(snapshot.tokens[token] == "APPLIED" for token in tokens)
    assert len(emulator.members("crm")) == 300


async def test_without_wait_the_upload_returns_before_indexing(api: Any, emulator: Emulator) -> None:
    emulator.indexing_delay = 5.0
    emulator.add_audience("crm")
    report = await api.upload("crm", ["a", "b"], wait=False)
    assert report.applied is None
    snapshot = emulator.audience("crm")
    assert snapshot is not None
    assert snapshot.pending_writes == 1


# -- invalid input ----------------------------------------------------------------------------------


async def test_invalid_items_are_reported_with_their_position_and_not_sent(
    api: Any, emulator: Emulator
) -> None:
    emulator.add_audience("crm")
    stream: list[object] = ["a", "", "b", "   ", 42, IdAction.remove("c"), Member("d", {"x": 1}), None, "e"]
    report = await api.upload("crm", stream, chunk_size=2)
    assert not report.ok
    assert [failure.position for failure in report.failed_items] == [1, 3, 4, 5, 7]
    assert all(isinstance(failure.error, ValidationError) for failure in report.failed_items)
    assert report.failed_items[2].item == 42
    assert report.items_invalid == 5
    assert report.items_accepted == 4
    check_accounting(report)
    emulator.settle()
    assert emulator.members("crm") == {"a": {}, "b": {}, "d": {"x": 1}, "e": {}}
    assert "invalid" in report.summary()


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"mode": "upsert"}, "mode"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"chunk_size": 10_001}, "chunk_size"),
        ({"chunk_size": 1.5}, "chunk_size"),
        ({"concurrency": 0}, "concurrency"),
        ({"concurrency": True}, "concurrency"),
        ({"wait": "yes"}, "wait"),
        ({"on_progress": 3}, "on_progress"),
        ({"retry_budget": -1}, "retry_budget"),
        ({"deadline": 0}, "deadline"),
        ({"deadline": float("nan")}, "deadline"),
        ({"skip_chunks": [-1]}, "skip_chunks"),
        ({"skip_chunks": "12"}, "skip_chunks"),
        ({"skip_chunks": [1], "mode": "replace"}, "skip_chunks"),
    ],
)
async def test_bad_arguments_raise_before_any_request(
    api: Any, emulator: Emulator, arguments: dict[str, Any], field: str
) -> None:
    emulator.add_audience("crm")
    with pytest.raises(ValidationError) as caught:
        await api.upload("crm", ["a"], **arguments)
    assert caught.value.field == field
    assert emulator.requests == []


async def test_bad_name_or_items_raise_before_any_request(api: Any, emulator: Emulator) -> None:
    with pytest.raises(ValidationError, match="name"):
        await api.upload("not a name", ["a"])
    with pytest.raises(ValidationError, match="single string"):
        await api.upload("crm", "abc")
    with pytest.raises(ValidationError, match="iterable"):
        await api.upload("crm", 12)

    async def progress(event: ProgressEvent) -> None:
        pass

    with pytest.raises(ValidationError, match="not async"):
        await api.upload("crm", ["a"], on_progress=progress)
    assert emulator.requests == []


async def test_a_missing_audience_stops_the_upload(api: Any, emulator: Emulator) -> None:
    report = await api.upload("nowhere", (f"u{n}" for n in range(1_000)), chunk_size=10, concurrency=2)
    assert not report.ok
    assert not report.input_exhausted
    assert report.failed_chunks
    assert report.failed_chunks[0].error.status == 404
    assert report.items_read < 1_000
    assert emulator.count(route="update") <= 3
    check_accounting(report)


# -- streaming and memory ------------------------------------------------------------------------


async def test_memory_is_bounded_by_chunk_size_times_concurrency(api: Any, emulator: Emulator) -> None:
    """Counted, not timed: at every item the generator hands out, the items it handed out minus
    those the server has received never exceed chunk_size * concurrency."""
    emulator.latency = (0.0, 0.01)
    emulator.add_audience("crm")
    chunk_size, concurrency, total = 50, 3, 3_000
    held: list[int] = []

    def ids() -> Iterator[str]:
        for n in range(total):
            received = emulator.count(route="update", status=202) * chunk_size
            held.append(n - received)
            yield f"u{n}"

    report = await api.upload("crm", ids(), chunk_size=chunk_size, concurrency=concurrency)
    assert report.ok
    assert report.items_accepted == total
    assert max(held) <= chunk_size * concurrency
    # The bound was approached, so the count above measured something real.
    assert max(held) > chunk_size * (concurrency - 1)


async def test_an_async_iterable_is_read_lazily_too(api: Any, emulator: Emulator) -> None:
    emulator.add_audience("crm")
    pulled = 0

    async def ids() -> AsyncIterator[Member]:
        nonlocal pulled
        for n in range(500):
            pulled += 1
            yield Member(f"u{n}", {"n": n})
            await asyncio.sleep(0)

    report = await api.upload("crm", ids(), chunk_size=40, concurrency=2, wait=True)
    assert report.ok
    assert pulled == 500
    assert emulator.members("crm") == {f"u{n}": {"n": n} for n in range(500)}


async def test_many_chunks_past_the_tracking_window_are_confirmed_and_released(emulator: Emulator) -> None:
    from batch_audiences._api import Operations
    from batch_audiences._bulk import run_upload

    slow_indexing(emulator)
    emulator.add_audience("crm")
    stream = flapping(800, 400, seed=11)
    async with AsyncAudiencesClient(
        emulator.api_key, emulator.project_key, base_url=emulator.base_url
    ) as client:
        # max_tracked_ids=0: the window is 2 * concurrency * chunk_size, so the engine must
        # confirm chunks applied (and release their IDs) as it goes.
        report = await run_upload(
            Operations.of(client), "crm", stream, mode="update", chunk_size=20, concurrency=2,
            wait=False, on_progress=None, retry_budget=None, deadline=None, skip_chunks=(),
            max_tracked_ids=0,
        )
    assert report.ok
    emulator.settle()
    assert emulator.members("crm") == apply_stream(stream, "update")
    assert emulator.count(route="view") >= 10


# -- failures, resume and progress -----------------------------------------------------------------


async def test_a_failed_chunk_holds_back_later_chunks_sharing_its_ids_and_a_resume_fixes_it(
    api: Any, emulator: Emulator
) -> None:
    slow_indexing(emulator)
    emulator.add_audience("crm")
    stream = flapping(300, 40, seed=5)
    # The third update is refused; the chunks that share an ID with it must not be sent.
    emulator.script(
        ScriptedResponse(202, {"indexing_token": "x"}, route="update", action="slow", delay=0.0),
        ScriptedResponse(202, {"indexing_token": "y"}, route="update", action="slow", delay=0.0),
        ScriptedResponse(400, {"error_code": "BAD", "error_message": "refused"}, route="update"),
    )
    acknowledged: list[int] = []

    def progress(event: ProgressEvent) -> None:
        if event.kind == "acknowledged":
            assert event.chunk_index is not None
            acknowledged.append(event.chunk_index)

    first = await api.upload("crm", stream, mode="update", chunk_size=20, concurrency=3, on_progress=progress)
    assert not first.ok
    assert first.input_exhausted
    check_accounting(first)
    refused = [chunk for chunk in first.failed_chunks if not isinstance(chunk.error, DependencyFailedError)]
    assert len(refused) == 1
    assert refused[0].error.status == 400
    held = [chunk for chunk in first.failed_chunks if isinstance(chunk.error, DependencyFailedError)]
    assert held, "some later chunk shares an ID with the refused one"
    assert sorted(acknowledged) == sorted(set(range(15)) - {chunk.index for chunk in first.failed_chunks})
    assert all(chunk.start == chunk.index * 20 and chunk.count == 20 for chunk in first.failed_chunks)

    second = await api.upload("crm", stream, mode="update", chunk_size=20, concurrency=3,
                              skip_chunks=acknowledged)
    assert second.ok, second.summary()
    assert second.items_skipped == 20 * len(acknowledged)
    assert second.chunks_acknowledged == len(first.failed_chunks)
    emulator.settle()
    assert emulator.members("crm") == apply_stream(stream, "update")


async def test_replace_resumed_after_its_first_chunk_sends_the_rest_as_adds(
    api: Any, emulator: Emulator
) -> None:
    slow_indexing(emulator)
    emulator.add_audience("crm", ["old-1", "old-2"])
    members = [f"m{n}" for n in range(100)]
    emulator.script(
        ScriptedResponse(202, {"indexing_token": "t"}, route="update", action="slow", delay=0.0),
        ScriptedResponse(503, {"error_code": "DOWN", "error_message": "maintenance"}, route="update"),
        ScriptedResponse(503, {"error_code": "DOWN", "error_message": "maintenance"}, route="update"),
    )
    done: list[int] = []

    def progress(event: ProgressEvent) -> None:
        if event.kind == "acknowledged" and event.chunk_index is not None:
            done.append(event.chunk_index)

    first = await api.upload("crm", members, mode="replace", chunk_size=25, concurrency=1, retry_budget=1,
                             on_progress=progress)
    assert not first.ok
    assert not first.input_exhausted
    assert "retry budget" in (first.stop_reason or "")
    assert done == [0, 1]
    assert [chunk.index for chunk in first.failed_chunks] == [2]
    check_accounting(first)
    second = await api.upload("crm", members, mode="replace", chunk_size=25, skip_chunks=done)
    assert second.ok, second.summary()
    assert emulator.count(route="replace") == 1
    emulator.settle()
    assert emulator.members("crm") == {m: {} for m in members}


async def test_progress_events_report_each_chunk(api: Any, emulator: Emulator) -> None:
    emulator.add_audience("crm")
    events: list[ProgressEvent] = []
    report = await api.upload("crm", [f"u{n}" for n in range(250)], chunk_size=100, concurrency=2,
                              on_progress=events.append, skip_chunks={1})
    assert [event.kind for event in events].count("acknowledged") == 2
    assert [event.kind for event in events].count("skipped") == 1
    assert events[-1].kind == "finished"
    assert events[-1].items_done == 250
    acknowledged = sorted((e for e in events if e.kind == "acknowledged"), key=lambda e: e.chunk_index or 0)
    chunks = [(e.chunk_index, e.chunk_start, e.chunk_count) for e in acknowledged]
    assert chunks == [(0, 0, 100), (2, 200, 50)]
    # Without wait=True the writes are not confirmed: their tokens are kept, to wait for.
    assert tuple(e.token for e in acknowledged) == report.indexing_tokens
    progress = [event.items_acknowledged for event in events]
    assert progress == sorted(progress)
    assert report.items_skipped == 100
    assert report.chunks_skipped == 1


async def test_a_failing_progress_callback_stops_the_upload_and_is_raised(
    api: Any, emulator: Emulator
) -> None:
    emulator.add_audience("crm")

    def progress(event: ProgressEvent) -> None:
        raise RuntimeError("bar broke")

    with pytest.raises(RuntimeError, match="bar broke"):
        await api.upload("crm", (f"u{n}" for n in range(1_000)), chunk_size=10, concurrency=2,
                         on_progress=progress)
    assert emulator.count(route="update") <= 3


async def test_an_input_that_fails_is_raised_after_the_chunks_already_read(
    api: Any, emulator: Emulator
) -> None:
    emulator.add_audience("crm")

    def ids() -> Iterator[str]:
        yield from (f"u{n}" for n in range(25))
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        await api.upload("crm", ids(), chunk_size=10, concurrency=1)
    emulator.settle()
    assert len(emulator.members("crm")) == 20  # the two full chunks read before the failure


async def test_cancelling_an_upload_leaves_the_client_usable(emulator: Emulator) -> None:
    emulator.latency = 0.05
    emulator.add_audience("crm")
    async with AsyncAudiencesClient(emulator.api_key, emulator.project_key,
                                    base_url=emulator.base_url) as client:
        task = asyncio.ensure_future(client.upload("crm", (f"u{n}" for n in range(10_000)), chunk_size=10))
        await asyncio.sleep(0.12)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        report = await client.upload("crm", ["after"], wait=True)
        assert report.ok
    assert "after" in emulator.members("crm")


def test_summary_names_the_failures() -> None:
    from batch_audiences import FailedChunk, NotSentError

    report = UploadReport(
        name="crm", mode="add", items_read=30, items_sent=20, items_accepted=10, items_skipped=0,
        items_invalid=0, chunks_acknowledged=1, chunks_skipped=0, requests=3, retries=1,
        indexing_tokens=("t",), failed_chunks=(FailedChunk(1, 10, 20, 10, NotSentError("x")),),
        failed_items=(), input_exhausted=False, applied=None, stop_reason="the deadline passed",
        elapsed=1.5,
    )
    assert not report.ok
    assert report.items_failed == 10
    text = report.summary()
    assert "chunk 1 (items 10-19, 10): not sent: x" in text
    assert "stopped early: the deadline passed" in text
    assert "1 retry," in text


TRICKY_IDS = ['a","b', 'quote"', "\\", 'back\\"slash', "comma,", "é", "😀", '{"action":"x"}', '","',
              "tab\t", "nl\n", " lead", "line\u2028sep"]


@pytest.mark.parametrize("mode", ["add", "replace"])
async def test_ids_with_json_special_characters_are_sent_exactly(
    api: Any, emulator: Emulator, mode: str
) -> None:
    emulator.add_audience("crm", ["old"])
    stream = [*TRICKY_IDS[:6], "\ud800lone-surrogate", *TRICKY_IDS[6:]]
    report = await api.upload("crm", stream, mode=mode, chunk_size=4, wait=True)
    assert [failure.position for failure in report.failed_items] == [6]
    assert "JSON" in str(report.failed_items[0].error)
    assert report.items_accepted == len(TRICKY_IDS)
    expected = set(TRICKY_IDS) | ({"old"} if mode == "add" else set())
    assert set(emulator.members("crm")) == expected
    if mode == "add":
        removed = await api.upload("crm", TRICKY_IDS, mode="remove", chunk_size=5, wait=True)
        assert removed.ok
        assert set(emulator.members("crm")) == {"old"}


# -- the order tracker, against a brute-force model -------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(
    st.lists(st.sampled_from("abcdefghij"), max_size=6),  # register a chunk with these IDs
    st.integers(min_value=0, max_value=30),               # release the chunk of that index
), max_size=40))
def test_order_tracker_matches_a_brute_force_model(operations: list[Any]) -> None:
    from batch_audiences._bulk._chunking import OrderTracker

    tracker = OrderTracker()
    model: dict[int, list[str]] = {}
    index = 0
    for operation in operations:
        if isinstance(operation, list):
            # Expected: for each ID, the last tracked chunk holding it.
            expected = set()
            for key in set(operation):
                holders = [i for i, ids in model.items() if key in ids]
                if holders:
                    expected.add(max(holders))
            assert tracker.register(index, list(operation)) == expected
            model[index] = list(operation)
            index += 1
        else:
            tracker.release(operation)
            model.pop(operation, None)
        assert tracker.tracked == sum(len(ids) for ids in model.values())
        assert tracker._ids == {hash(key) for ids in model.values() for key in ids}


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_order_tracker_kinds_keep_the_final_content_under_any_schedule(data: st.DataObject) -> None:
    """The tracker with chunk kinds, against an adversarial scheduler: chunks are registered in
    stream order, and any registered chunk whose dependencies are applied may be applied at any
    time (released then, or later). The final content must be that of the stream in order."""
    from batch_audiences._bulk._chunking import MIXED, PLAIN_ADDS, REMOVES, OrderTracker

    action = st.one_of(
        st.tuples(st.just("plain"), st.sampled_from("abcde")),
        st.tuples(st.just("remove"), st.sampled_from("abcde")),
        st.tuples(st.just("attrs"), st.sampled_from("abcde")),
    )
    chunks: list[list[tuple[str, str]]] = data.draw(st.lists(st.one_of(
        st.lists(st.tuples(st.just("plain"), st.sampled_from("abcde")), min_size=1, max_size=4),
        st.lists(st.tuples(st.just("remove"), st.sampled_from("abcde")), min_size=1, max_size=4),
        st.lists(action, min_size=1, max_size=4),
    ), max_size=12))

    def kind_of(chunk: list[tuple[str, str]]) -> int:
        kinds = {what for what, _ in chunk}
        if kinds == {"plain"}:
            return PLAIN_ADDS
        if kinds == {"remove"}:
            return REMOVES
        return MIXED

    def apply(content: dict[str, object], index: int) -> None:
        for what, key in chunks[index]:
            if what == "remove":
                content.pop(key, None)
            else:
                content[key] = {} if what == "plain" else {"chunk": index}

    tracker = OrderTracker()
    depends: dict[int, set[int]] = {}
    applied: list[int] = []
    unreleased: list[int] = []
    content: dict[str, object] = {}
    registered = 0
    while len(applied) < len(chunks):
        ready = [i for i in range(registered) if i not in applied and depends[i] <= set(applied)]
        choices = ["register"] if registered < len(chunks) else []
        choices += [f"apply {i}" for i in ready] + [f"release {i}" for i in unreleased]
        choice = data.draw(st.sampled_from(choices))
        if choice == "register":
            ids = [key for _, key in chunks[registered]]
            depends[registered] = tracker.register(registered, ids, kind_of(chunks[registered]))
            assert all(earlier < registered for earlier in depends[registered])
            registered += 1
        elif choice.startswith("apply"):
            index = int(choice.split()[1])
            apply(content, index)
            applied.append(index)
            unreleased.append(index)
        else:
            index = int(choice.split()[1])
            tracker.release(index)
            unreleased.remove(index)
    expected: dict[str, object] = {}
    for index in range(len(chunks)):
        apply(expected, index)
    assert content == expected, (applied, depends)
