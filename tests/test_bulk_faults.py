"""Bulk calls under injected faults: 429 with ``Retry-After``, 503, connections dropped before
and after the write; the retry budget and the deadline. The final state must equal the
fault-free one, no audience is created twice, and every item has a definite outcome."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from batch_audiences import (
    Action,
    BulkReport,
    Confirmation,
    DeadlineExceededError,
    IdAction,
    Member,
    ServiceUnavailableError,
    UploadReport,
)
from batch_audiences.testing import Emulator, FaultPlan, ScriptedResponse

#: The pace ceiling of the clients here: high, so that cuts after injected 429s stay cheap.
CEILING = 500.0

FAULTS = {
    "429": FaultPlan(seed=1, rate_429=0.2, retry_after=0.01),
    "503": FaultPlan(seed=2, rate_503=0.25),
    "drop_before": FaultPlan(seed=3, drop_before=0.2),
    "drop_after": FaultPlan(seed=4, drop_after=0.2),
    "mixed": FaultPlan(seed=5, rate_429=0.07, retry_after=0.01, rate_503=0.07, drop_before=0.07,
                       drop_after=0.07),
}


def stream(count: int, distinct: int, seed: int) -> list[IdAction]:
    rng = random.Random(seed)
    items = []
    for position in range(count):
        custom_id = f"id-{rng.randrange(distinct)}"
        if rng.random() < 0.3:
            items.append(IdAction.remove(custom_id))
        else:
            items.append(IdAction.add(custom_id, {"v": position}))
    return items


def expected(items: list[IdAction], initial: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    content = dict(initial)
    for item in items:
        if item.action is Action.ADD:
            content[item.id] = dict(item.attributes or {})
        else:
            content.pop(item.id, None)
    return content


def faulty_attempts(emulator: Emulator) -> int:
    return sum(1 for r in emulator.requests if not 200 <= r.status < 300)


def check_accounting(report: UploadReport) -> None:
    in_failed_chunks = sum(chunk.count for chunk in report.failed_chunks)
    assert report.items_read == (
        report.items_accepted + report.items_skipped + report.items_invalid + in_failed_chunks
    )


def check_outcomes(report: BulkReport) -> None:
    positions = sorted(
        [i.position for i in report.succeeded] + [i.position for i in report.skipped]
        + [i.position for i in report.failed]
    )
    assert positions == list(range(report.items_read))


@pytest.mark.parametrize("fault", sorted(FAULTS))
async def test_update_upload_under_faults_ends_as_without_them(
    make_api: Any, emulator: Emulator, fault: str
) -> None:
    api = await make_api(max_rate=CEILING)
    emulator.indexing_delay = 0.005
    emulator.latency = (0.0, 0.005)
    initial = {"id-0": {"v": -1}, "keep": {}}
    emulator.add_audience("crm", initial)
    emulator.faults = FAULTS[fault]
    items = stream(500, 60, seed=len(fault))
    # These faults never apply a write late (tests/test_late_writes.py holds writes for that):
    # a short grace keeps the chunks waiting after a broken try from idling 5 s each.
    report = await api.upload("crm", items, mode="update", chunk_size=25, concurrency=4,
                              retry_budget=500, wait=True, late_write_grace=0.01)
    assert report.ok, report.summary()
    assert report.applied is True
    check_accounting(report)
    emulator.settle()
    assert emulator.members("crm") == expected(items, initial)
    # Every request of the call is counted, and every faulty answer was retried.
    assert report.requests == len(emulator.requests)
    assert report.retries == faulty_attempts(emulator) > 0


@pytest.mark.parametrize("fault", ["drop_after", "mixed"])
async def test_replace_upload_under_faults_ends_as_without_them(
    make_api: Any, emulator: Emulator, fault: str
) -> None:
    api = await make_api(max_rate=CEILING)
    emulator.indexing_delay = 0.005
    emulator.replace_indexing_delay = 0.02
    emulator.add_audience("crm", [f"old-{n}" for n in range(50)])
    emulator.faults = FAULTS[fault]
    members = [Member(f"new-{n}", {"n": n}) for n in range(330)]
    report = await api.upload("crm", members, mode="replace", chunk_size=50, concurrency=3,
                              retry_budget=500, late_write_grace=0.01)
    assert report.ok, report.summary()
    emulator.settle()
    assert emulator.members("crm") == {f"new-{n}": {"n": n} for n in range(330)}


@pytest.mark.parametrize("fault", sorted(FAULTS))
async def test_create_many_under_faults_creates_each_audience_once(
    make_api: Any, emulator: Emulator, fault: str
) -> None:
    api = await make_api(max_rate=CEILING)
    plan = FAULTS[fault]
    emulator.faults = FaultPlan(
        seed=plan.seed, rate_429=plan.rate_429, retry_after=plan.retry_after, rate_503=plan.rate_503,
        drop_before=plan.drop_before, drop_after=plan.drop_after, routes={"create"},
    )
    names = [f"aud-{n}" for n in range(60)]
    report = await api.create_many(names, concurrency=8, retry_budget=500)
    assert report.ok, report.summary()
    assert [item.audience.name for item in report.succeeded] == names
    check_outcomes(report)
    assert emulator.audience_names() == sorted(names)
    # Each was reported created exactly once, and no create answered 202 twice for one name.
    creates = [r for r in emulator.requests if r.route == "create"]
    answered = [r.body["name"] for r in creates if r.status == 202]  # type: ignore[index]
    assert len(answered) == len(set(answered)) <= len(names)
    if fault in ("drop_after", "mixed"):
        # A retried create met its own first try: confirmed by a view, reported as created.
        assert any(item.indexing_token is None for item in report.succeeded)
        assert any(r.status == 400 for r in creates)


async def test_create_many_with_existing_names_under_drops(make_api: Any, emulator: Emulator) -> None:
    api = await make_api(max_rate=CEILING)
    earlier = datetime.now(timezone.utc) - timedelta(hours=1)
    emulator.add_audience("taken-1", created=earlier)
    emulator.add_audience("taken-2", created=earlier)
    emulator.faults = FaultPlan(seed=9, drop_before=0.3, routes={"create"})
    report = await api.create_many(["a", "taken-1", "b", "taken-2", "c"], if_exists="skip", retry_budget=100)
    assert emulator.count(route="create", status=0) > 0  # some connections were really dropped
    created = {item.audience.name: item.confirmation for item in report.succeeded}
    skipped = [item.audience.name for item in report.skipped]
    assert set(created) == {"a", "b", "c"}
    assert not report.failed
    assert not report.uncertain
    # A taken name is skipped even when its first try broke: the client cannot tell a drop before
    # the write from one after it, but the audience's creation time, an hour before the try, says
    # it is someone else's.
    assert skipped == ["taken-1", "taken-2"]
    # A name of the input whose first try broke is created by this call either way.
    assert set(created.values()) <= {Confirmation.ANSWERED, Confirmation.INFERRED}
    assert emulator.audience_names() == ["a", "b", "c", "taken-1", "taken-2"]
    check_outcomes(report)


async def test_a_spent_retry_budget_fails_the_chunk_and_stops(make_api: Any, emulator: Emulator) -> None:
    api = await make_api(max_rate=CEILING)
    emulator.add_audience("crm")
    emulator.faults = FaultPlan(seed=1, rate_503=1.0, routes={"update"})
    report = await api.upload("crm", (f"u{n}" for n in range(1_000)), chunk_size=10, concurrency=2,
                              retry_budget=4)
    assert not report.ok
    assert not report.input_exhausted
    assert report.retries == 4
    assert report.failed_chunks
    assert all(
        isinstance(chunk.error, ServiceUnavailableError) for chunk in report.failed_chunks
    )
    assert report.stop_reason
    assert "retry budget (4 retries) is spent" in report.stop_reason
    assert report.requests == len(emulator.requests) <= 2 + 4
    check_accounting(report)


async def test_without_a_budget_each_request_keeps_the_client_max_retries(
    make_api: Any, emulator: Emulator
) -> None:
    api = await make_api(max_rate=CEILING)  # conftest's policy: 3 retries per request
    emulator.add_audience("crm")
    down = ScriptedResponse(503, {"error_code": "DOWN", "error_message": "x"}, route="update")
    emulator.script(down, down, down)
    report = await api.upload("crm", [f"u{n}" for n in range(10)], chunk_size=10)
    assert report.ok
    assert report.retries == 3
    assert report.requests == 4


async def test_the_deadline_stops_an_upload_and_reports_what_was_not_sent(
    api: Any, emulator: Emulator
) -> None:
    emulator.latency = 0.5
    emulator.add_audience("crm")
    # chunk 0 = a b, chunk 1 = c d, chunk 2 = a e: chunk 2 waits for chunk 0, which is slow (the
    # attributes make their order matter: two plain adds of "a" would not wait for each other).
    items = [Member("a", {"v": 1}), "b", "c", "d", Member("a", {"v": 2}), "e", "f", "g"]
    report = await api.upload("crm", items, chunk_size=2, concurrency=3, deadline=0.1)
    assert not report.ok
    assert not report.input_exhausted
    assert report.stop_reason
    assert "deadline" in report.stop_reason
    assert [chunk.index for chunk in report.failed_chunks] == [2]
    assert isinstance(report.failed_chunks[0].error, DeadlineExceededError)
    assert report.items_accepted == 4  # the two chunks in flight finished
    assert report.items_read == 6
    check_accounting(report)
    emulator.settle()
    assert set(emulator.members("crm")) == {"a", "b", "c", "d"}


async def test_the_deadline_stops_create_many(api: Any, emulator: Emulator) -> None:
    emulator.latency = 0.5
    report = await api.create_many((f"aud-{n}" for n in range(100)), concurrency=2, deadline=0.1)
    assert not report.input_exhausted
    assert report.stop_reason
    assert "deadline" in report.stop_reason
    assert report.items_read == 2
    assert len(report.succeeded) == 2
    check_outcomes(report)


async def test_a_429_with_retry_after_is_honoured(
    make_api: Any, emulator: Emulator, wait_spy: Any
) -> None:
    api = await make_api(max_rate=CEILING)
    emulator.add_audience("crm")
    emulator.script(ScriptedResponse(429, {"error_code": "SLOW", "error_message": "down"},
                                     {"Retry-After": "0.05"}, route="update"))
    report = await api.upload("crm", [f"u{n}" for n in range(100)], chunk_size=20, concurrency=3)
    assert report.ok
    assert report.retries == 1
    assert wait_spy.retry_afters == [0.05]
    assert wait_spy.waits[0] >= 0.05
    emulator.settle()
    assert len(emulator.members("crm")) == 100
