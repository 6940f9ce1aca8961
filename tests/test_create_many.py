"""``create_many``: per-item outcomes, ``if_exists``, invalid items, laziness and progress, for
both clients, against the emulator over HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from batch_audiences import (
    AudienceExistsError,
    BulkReport,
    NewAudience,
    ProgressEvent,
    ValidationError,
)
from batch_audiences.testing import Emulator


def created_names(emulator: Emulator) -> list[str]:
    return [r.body["name"] for r in emulator.requests if r.route == "create" and r.status == 202]  # type: ignore[index]


def check_outcomes(report: BulkReport) -> None:
    """Every item read is in exactly one list."""
    positions = (
        [item.position for item in report.succeeded]
        + [item.position for item in report.skipped]
        + [item.position for item in report.failed]
    )
    assert sorted(positions) == list(range(report.items_read))


async def test_creates_every_audience(api: Any, emulator: Emulator) -> None:
    audiences: list[Any] = [NewAudience(f"aud-{n}", display_name=f"Audience {n}") for n in range(40)]
    audiences += [{"name": "from-mapping", "display_name": "M"}, "bare-name"]
    report = await api.create_many(audiences, concurrency=8)
    assert report.ok
    assert report.input_exhausted
    assert report.counts == {"succeeded": 42, "skipped": 0, "failed": 0, "uncertain": 0}
    assert [item.position for item in report.succeeded] == list(range(42))
    assert report.succeeded[40].audience == NewAudience("from-mapping", display_name="M")
    assert all(item.indexing_token for item in report.succeeded)
    assert report.requests == 42
    assert report.retries == 0
    names = ["bare-name", "from-mapping", *(f"aud-{n}" for n in range(40))]
    assert emulator.audience_names() == sorted(names)
    snapshot = emulator.audience("aud-7")
    assert snapshot is not None
    assert snapshot.display_name == "Audience 7"
    check_outcomes(report)


async def test_existing_audiences_fail_by_default(api: Any, emulator: Emulator) -> None:
    emulator.add_audience("taken")
    report = await api.create_many(["new-1", "taken", "new-2"])
    assert not report.ok
    assert [item.audience.name for item in report.succeeded] == ["new-1", "new-2"]
    assert len(report.failed) == 1
    assert report.failed[0].position == 1
    assert isinstance(report.failed[0].error, AudienceExistsError)
    check_outcomes(report)


async def test_if_exists_skip_reports_them_as_skipped(api: Any, emulator: Emulator) -> None:
    emulator.add_audience("taken")
    report = await api.create_many(["new-1", "taken", "new-2"], if_exists="skip")
    assert report.ok
    assert [(item.position, item.audience.name) for item in report.skipped] == [(1, "taken")]
    assert isinstance(report.skipped[0].error, AudienceExistsError)
    assert len(report.succeeded) == 2


@pytest.mark.parametrize("if_exists", ["error", "skip"])
async def test_a_name_repeated_in_the_input_is_created_once(
    api: Any, emulator: Emulator, if_exists: str
) -> None:
    report = await api.create_many(["a", "b", "a", {"name": "b"}], if_exists=if_exists, concurrency=4)
    assert sorted(created_names(emulator)) == ["a", "b"]
    assert emulator.count(route="create") == 2  # the repeats were decided without a request
    repeats = report.skipped if if_exists == "skip" else report.failed
    assert [item.position for item in repeats] == [2, 3]
    assert all(isinstance(item.error, ValidationError) for item in repeats)
    assert "already appears at position 0" in str(repeats[0].error)
    check_outcomes(report)


async def test_invalid_items_fail_without_a_request(api: Any, emulator: Emulator) -> None:
    audiences: list[object] = [
        "good-1",
        "bad name",
        {"name": "x", "displayname": "typo"},
        {"display_name": "no name"},
        {"name": "y", "display_name": 3},
        {"name": "z", "type": "segments"},
        42,
        NewAudience("good-2"),
    ]
    report = await api.create_many(audiences)
    assert [item.audience.name for item in report.succeeded] == ["good-1", "good-2"]
    assert [item.position for item in report.failed] == [1, 2, 3, 4, 5, 6]
    assert all(isinstance(item.error, ValidationError) for item in report.failed)
    fields = [item.error.field for item in report.failed]  # type: ignore[attr-defined]
    assert fields == [
        "audiences[1].name", "audiences[2].audience", "audiences[3].name",
        "audiences[4].display_name", "audiences[5].type", "audiences[6]",
    ]
    assert report.failed[5].item == 42
    assert emulator.count(route="create") == 2
    check_outcomes(report)


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"concurrency": 0}, "concurrency"),
        ({"if_exists": "replace"}, "if_exists"),
        ({"on_progress": "print"}, "on_progress"),
        ({"retry_budget": 1.5}, "retry_budget"),
        ({"deadline": -3}, "deadline"),
    ],
)
async def test_bad_arguments_raise_before_any_request(
    api: Any, emulator: Emulator, arguments: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        await api.create_many(["a"], **arguments)
    assert caught.value.field == field
    with pytest.raises(ValidationError, match="audiences"):
        await api.create_many(7)
    assert emulator.requests == []


async def test_items_are_read_lazily_with_at_most_concurrency_in_flight(
    api: Any, emulator: Emulator
) -> None:
    emulator.latency = (0.0, 0.01)
    concurrency = 3
    ahead: list[int] = []

    def names() -> Iterator[str]:
        for n in range(60):
            answered = emulator.count(route="create", status=202)
            ahead.append(n - answered)
            yield f"aud-{n}"

    events: list[ProgressEvent] = []
    report = await api.create_many(names(), concurrency=concurrency, on_progress=events.append)
    assert report.ok
    assert len(report.succeeded) == 60
    assert max(ahead) <= concurrency
    assert max(event.requests_in_flight for event in events) <= concurrency


async def test_async_iterable_and_progress_events(api: Any, emulator: Emulator) -> None:
    emulator.add_audience("exists")

    async def audiences() -> AsyncIterator[Any]:
        for name in ["one", "exists", "bad name", "two"]:
            yield {"name": name}

    events: list[ProgressEvent] = []
    report = await api.create_many(audiences(), if_exists="skip", on_progress=events.append)
    kinds = sorted(event.kind for event in events[:-1])
    assert kinds == ["created", "created", "failed", "skipped"]
    assert events[-1].kind == "finished"
    assert events[-1].items_done == 4
    assert events[-1].items_read == 4
    assert {event.chunk_index for event in events[:-1]} == {0, 1, 2, 3}
    assert all(event.token for event in events if event.kind == "created")
    assert len(report.succeeded) == 2
    assert len(report.skipped) == 1
    assert len(report.failed) == 1
    assert "1 failed" in report.summary()


async def test_bad_credentials_stop_reading(make_api: Any, emulator: Emulator) -> None:
    api = await make_api(api_key="wrong-key-123456")
    report = await api.create_many((f"aud-{n}" for n in range(1_000)), concurrency=2)
    assert not report.ok
    assert not report.input_exhausted
    assert report.items_read < 10
    assert report.stop_reason
    assert "401" in report.stop_reason
    check_outcomes(report)
    assert emulator.audience_names() == []
