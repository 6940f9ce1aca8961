"""Instrumentation: hook events for every attempt, a failing hook harmless, OpenTelemetry spans."""

from __future__ import annotations

import logging
import sys
from typing import Any

import pytest

from batch_audiences import (
    AnswerReceived,
    AsyncAudiencesClient,
    AudiencesClient,
    ChunkAcknowledged,
    HookEvent,
    HTTPResponse,
    IdAction,
    RequestFailed,
    RequestSent,
    RetryPolicy,
    RetryScheduled,
    SendError,
    Throttled,
    TransportError,
)
from batch_audiences.testing import Emulator, MockSender, ScriptedResponse, set_testing

KEY = "instrumentation-key-0123456789abcdef"
FAST = RetryPolicy(max_retries=3, base_delay=0.001, max_delay=0.002)


class Events(list[HookEvent]):
    """A hook that keeps every event."""

    def __call__(self, event: HookEvent) -> None:
        self.append(event)

    def kinds(self) -> list[str]:
        return [type(event).__name__ for event in self]


async def test_a_retried_request_tells_every_step(emulator: Emulator) -> None:
    emulator.add_audience("vip")
    emulator.script(ScriptedResponse(503, {"error_code": "MAINTENANCE"}, route="view",
                                     headers={"Retry-After": "0.01"}))
    events = Events()
    async with AsyncAudiencesClient(emulator.api_key, emulator.project_key, base_url=emulator.base_url,
                                    retry=FAST, hooks=[events]) as client:
        await client.view("vip")
    assert events.kinds() == ["RequestSent", "AnswerReceived", "RetryScheduled", "RequestSent",
                              "AnswerReceived"]
    first, answer, retry, second, final = events
    assert isinstance(first, RequestSent)
    assert isinstance(second, RequestSent)
    assert (first.method, first.route, first.attempt, first.audience) == ("GET", "/audiences/view", 1, "vip")
    assert second.attempt == 2
    assert first.request_id == second.request_id == retry.request_id
    assert isinstance(answer, AnswerReceived)
    assert (answer.status, answer.attempt) == (503, 1)
    assert answer.elapsed >= 0
    assert isinstance(retry, RetryScheduled)
    assert (retry.status, retry.retry_after) == (503, pytest.approx(0.01))
    assert retry.wait >= 0.01
    assert isinstance(final, AnswerReceived)
    assert (final.status, final.attempt) == (200, 2)


async def test_a_write_names_its_audience_and_a_429_is_told(emulator: Emulator) -> None:
    emulator.add_audience("crm")
    emulator.script(ScriptedResponse(429, {"error_code": "TOO_MANY"}, route="update",
                                     headers={"Retry-After": "0.01"}))
    events = Events()
    async with AsyncAudiencesClient(emulator.api_key, emulator.project_key, base_url=emulator.base_url,
                                    retry=FAST, hooks=[events]) as client:
        await client.update("crm", [IdAction.add("u1")])
    throttled = [event for event in events if isinstance(event, Throttled)]
    assert len(throttled) == 1
    assert throttled[0].retry_after == pytest.approx(0.01)
    assert throttled[0].rate is not None  # the limiter reacted
    assert {event.audience for event in events if not isinstance(event, ChunkAcknowledged)} == {"crm"}


async def test_no_answer_is_a_request_failed(free_port: int) -> None:
    events = Events()
    async with AsyncAudiencesClient(
        KEY, "project_x", base_url=f"http://127.0.0.1:{free_port}",
        retry=RetryPolicy(max_retries=1, base_delay=0.001), hooks=[events],
    ) as client:
        with pytest.raises(TransportError):
            await client.view("vip")
    assert events.kinds() == [
        "RequestSent", "RequestFailed", "RetryScheduled", "RequestSent", "RequestFailed"
    ]
    failed = events[1]
    assert isinstance(failed, RequestFailed)
    assert failed.maybe_applied is False  # nothing listens: the connection was never made
    assert "Connect" in failed.reason
    assert events[2].status is None  # type: ignore[union-attr]


async def test_a_hook_that_raises_does_not_break_the_request(caplog: pytest.LogCaptureFixture) -> None:
    def broken(event: HookEvent) -> None:
        raise RuntimeError("hook bug")

    events = Events()
    sender = MockSender(lambda request: HTTPResponse.from_json(200, {"name": "vip", "nb_ids": 1}))
    with caplog.at_level(logging.WARNING, logger="batch_audiences"):
        async with AsyncAudiencesClient(KEY, "project_x", sender=sender, hooks=[broken, events]) as client:
            assert (await client.view("vip")).nb_ids == 1
    assert events.kinds() == ["RequestSent", "AnswerReceived"]  # the next hook still ran
    warnings = [r for r in caplog.records if r.name == "batch_audiences" and r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "hook" in warnings[0].getMessage()
    assert warnings[0].exc_info is not None


async def test_no_event_carries_the_key() -> None:
    answers = iter([HTTPResponse(429, {"Retry-After": "0", "X-Echo": f"Bearer {KEY}"}),
                    HTTPResponse.from_json(202, {"indexing_token": "t"})])
    events = Events()
    sender = MockSender(lambda request: next(answers))
    async with AsyncAudiencesClient(KEY, "project_x", sender=sender, hooks=[events]) as client, set_testing():
        await client.create("vip")
    assert len(events) == 6
    for event in events:
        assert KEY not in repr(event)
        assert KEY not in str(getattr(event, "headers", ""))


async def test_a_cancelled_attempt_still_ends_for_hooks() -> None:
    import asyncio

    gate = asyncio.Event()

    async def never(request: Any) -> HTTPResponse:
        await gate.wait()
        raise AssertionError("unreachable")

    sent = asyncio.Event()
    events = Events()
    async with AsyncAudiencesClient(KEY, "project_x", sender=MockSender(never),
                                    hooks=[events, lambda event: sent.set()]) as client:
        task = asyncio.create_task(client.view("vip"))
        await sent.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert events.kinds() == ["RequestSent", "RequestFailed"]


def test_the_blocking_client_takes_hooks() -> None:
    events = Events()
    sender = MockSender(lambda request: HTTPResponse.from_json(200, {"name": "vip", "nb_ids": 2}))
    with AudiencesClient(KEY, "project_x", sender=sender, hooks=[events]) as client:
        client.view("vip")
    assert events.kinds() == ["RequestSent", "AnswerReceived"]


async def test_an_upload_tells_each_chunk_acknowledged(emulator: Emulator) -> None:
    emulator.add_audience("crm")
    events = Events()
    async with AsyncAudiencesClient(emulator.api_key, emulator.project_key, base_url=emulator.base_url,
                                    hooks=[events]) as client:
        report = await client.upload("crm", (f"u{n}" for n in range(25)), chunk_size=10, concurrency=2)
    assert report.ok
    acknowledged = sorted(
        (event for event in events if isinstance(event, ChunkAcknowledged)), key=lambda e: e.chunk_index
    )
    assert [(e.chunk_index, e.items) for e in acknowledged] == [(0, 10), (1, 10), (2, 5)]
    assert {e.audience for e in acknowledged} == {"crm"}
    assert {e.route for e in acknowledged} == {"/audiences/update"}
    assert all(e.indexing_token for e in acknowledged)


# -- OpenTelemetry --------------------------------------------------------------------------------


@pytest.fixture
def span_exporter() -> Any:
    sdk = pytest.importorskip("opentelemetry.sdk.trace",
                              reason="opentelemetry-sdk (in the test extra) is not installed")
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = sdk.TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


async def test_one_span_per_attempt_with_route_status_attempt_and_audience(
    emulator: Emulator, span_exporter: Any
) -> None:
    from opentelemetry.trace import SpanKind, StatusCode

    from batch_audiences.otel import OpenTelemetryHook

    provider, exporter = span_exporter
    emulator.add_audience("vip")
    emulator.script(ScriptedResponse(503, {"error_code": "MAINTENANCE"}, route="update",
                                     headers={"Retry-After": "0"}))
    async with AsyncAudiencesClient(emulator.api_key, emulator.project_key, base_url=emulator.base_url,
                                    retry=FAST, hooks=[OpenTelemetryHook(provider)]) as client:
        await client.update("vip", [IdAction.add("u1")])
        await client.view("vip")
    spans = exporter.get_finished_spans()
    assert [span.name for span in spans] == ["POST /audiences/update"] * 2 + ["GET /audiences/view"]
    assert [span.attributes["http.response.status_code"] for span in spans] == [503, 202, 200]
    assert [span.attributes["batch_audiences.attempt"] for span in spans] == [1, 2, 1]
    assert {span.attributes["batch_audiences.audience"] for span in spans} == {"vip"}
    assert {span.attributes["http.route"] for span in spans} == {"/audiences/update", "/audiences/view"}
    assert all(span.kind == SpanKind.CLIENT for span in spans)
    assert spans[0].status.status_code == StatusCode.ERROR
    assert spans[1].status.status_code == StatusCode.UNSET
    for span in spans:
        shown = repr(dict(span.attributes)) + span.name + repr(span.events)
        assert emulator.api_key not in shown


async def test_a_span_for_an_attempt_without_answer(free_port: int, span_exporter: Any) -> None:
    from opentelemetry.trace import StatusCode

    from batch_audiences.otel import OpenTelemetryHook

    provider, exporter = span_exporter
    async with AsyncAudiencesClient(
        KEY, "project_x", base_url=f"http://127.0.0.1:{free_port}", retry=RetryPolicy(max_retries=0),
        hooks=[OpenTelemetryHook(provider)],
    ) as client:
        with pytest.raises(TransportError):
            await client.view("vip")
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code == StatusCode.ERROR
    assert "http.response.status_code" not in span.attributes


def test_without_the_extra_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from batch_audiences.otel import OpenTelemetryHook

    monkeypatch.setitem(sys.modules, "opentelemetry", None)  # as if it were not installed
    with pytest.raises(ImportError) as raised:
        OpenTelemetryHook()
    assert str(raised.value) == (
        "OpenTelemetry tracing needs the otel extra: pip install 'batch-audiences[otel]'"
    )
    assert raised.value.__cause__ is None
    assert raised.value.__suppress_context__


async def test_send_errors_from_a_mock_count_as_no_answer() -> None:
    events = Events()
    sender = MockSender(lambda request: (_ for _ in ()).throw(SendError("reset", maybe_sent=True)))
    async with AsyncAudiencesClient(KEY, "project_x", sender=sender, hooks=[events],
                                    retry=RetryPolicy(max_retries=0)) as client:
        with pytest.raises(TransportError):
            await client.update("vip", [IdAction.add("u")])
    failed = [e for e in events if isinstance(e, RequestFailed)]
    assert len(failed) == 1
    assert failed[0].maybe_applied
    assert failed[0].audience == "vip"
