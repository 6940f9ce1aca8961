"""Careless callers: cancellation, closing twice or too early, threads, foreign event loops.

Whatever the caller does wrong, the SDK answers with a clear error of its own, leaves no thread,
session or task behind, and stays usable where that makes sense. Every test here runs with
warnings as errors (pyproject.toml), and an autouse fixture fails it if asyncio logged an error
("Unclosed client session", "Task was destroyed but it is pending", "Task exception was never
retrieved"...).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import pytest

from batch_audiences import (
    AsyncAudiencesClient,
    AudiencesClient,
    BatchAudiencesError,
    ClientClosedError,
    IdAction,
    RetryPolicy,
)
from batch_audiences.testing import Emulator, ScriptedResponse

from ._compat import async_timeout

FAST = RetryPolicy(max_retries=2, base_delay=0.002, max_delay=0.01, max_retry_after=1.0)
# Upper bounds that only a hang reaches; no test asserts how fast anything is.
HANG = 20.0


@pytest.fixture(autouse=True)
def no_asyncio_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Fail the test if asyncio logged an error, e.g. for a destroyed pending task."""
    caplog.set_level(logging.WARNING, logger="asyncio")
    yield
    gc.collect()
    records = [r for phase in ("setup", "call", "teardown") for r in caplog.get_records(phase)]
    errors = [r.getMessage() for r in records if r.name == "asyncio" and r.levelno >= logging.ERROR]
    assert not errors, errors


def sdk_threads() -> list[threading.Thread]:
    """Threads the SDK started (the sync facade's loop thread) that are still alive.

    Tests compare them as sets (``set(sdk_threads()) <= before``), not as counts: a client
    another test dropped may be collected, and its thread end, in the middle of this test.
    """
    return [t for t in threading.enumerate() if t.name.startswith("batch-audiences-loop")]


def wait_for(condition: Callable[[], bool], what: str) -> None:
    """Poll until ``condition`` holds; fail (rather than hang) after ``HANG`` seconds."""
    deadline = time.monotonic() + HANG
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.005)


async def until(condition: Callable[[], bool], what: str) -> None:
    """The async :func:`wait_for`."""
    deadline = time.monotonic() + HANG
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


def in_flight(emu: Emulator, route: str) -> Callable[[], bool]:
    return lambda: any(r.route == route and r.outcome == "in_flight" for r in emu.requests)


@pytest.fixture
def threaded_emulator() -> Iterator[Emulator]:
    """An emulator serving from its own thread, so blocking calls cannot starve it."""
    with Emulator(indexing_delay=0.0) as emu:
        yield emu


def sync_client(emu: Emulator, **kwargs: Any) -> AudiencesClient:
    settings: dict[str, Any] = {"base_url": emu.base_url, "timeout": 10.0, "retry": FAST}
    settings.update(kwargs)
    return AudiencesClient(emu.api_key, emu.project_key, **settings)


def async_client(emu: Emulator, **kwargs: Any) -> AsyncAudiencesClient:
    settings: dict[str, Any] = {"base_url": emu.base_url, "timeout": 10.0, "retry": FAST}
    settings.update(kwargs)
    return AsyncAudiencesClient(emu.api_key, emu.project_key, **settings)


def every_call(client: Any) -> list[tuple[str, Callable[[], Any]]]:
    """One call of each method (the results, for the async client, are coroutines)."""
    return [
        ("create", lambda: client.create("vip")),
        ("update", lambda: client.update("vip", [IdAction.add("u1")])),
        ("replace", lambda: client.replace("vip", ["u1"])),
        ("remove", lambda: client.remove("vip")),
        ("view", lambda: client.view("vip")),
        ("list", lambda: client.list()),
        ("wait_until_applied", lambda: client.wait_until_applied("vip", timeout=1.0)),
    ]


# -- close twice, use after close ------------------------------------------------------------


def test_sync_close_twice_then_every_method_says_closed(threaded_emulator: Emulator) -> None:
    before = set(sdk_threads())
    client = sync_client(threaded_emulator)
    client.create("vip")
    client.close()
    client.close()
    assert client.closed
    assert set(sdk_threads()) <= before, "close() must stop the facade's thread"
    for name, call in every_call(client):
        with pytest.raises(ClientClosedError, match="closed"):
            call()
        assert name
    with pytest.raises(ClientClosedError):
        next(iter(client.iter_audiences()))
    with client:  # entering a closed client is harmless; leaving it closes nothing more
        pass
    assert "closed" not in repr(client) or "AudiencesClient" in repr(client)


async def test_async_close_twice_then_every_method_says_closed() -> None:
    async with Emulator(indexing_delay=0.0) as emu:
        client = async_client(emu)
        await client.create("vip")
        await client.aclose()
        await client.aclose()
        assert client.closed
        for _, call in every_call(client):
            with pytest.raises(ClientClosedError, match="closed"):
                await call()
        with pytest.raises(ClientClosedError):
            await client.iter_audiences().__anext__()
        requests = emu.count()
    assert requests == 1, "nothing may reach the server after aclose()"


def test_closing_before_first_use_starts_nothing(threaded_emulator: Emulator) -> None:
    before = set(sdk_threads())
    with sync_client(threaded_emulator):
        pass
    assert set(sdk_threads()) <= before
    assert threaded_emulator.count() == 0


# -- the sync facade from a running loop and from many threads -------------------------------


async def test_sync_client_works_inside_a_running_event_loop(threaded_emulator: Emulator) -> None:
    # A Jupyter cell or an async framework calling blocking code: this coroutine's loop is
    # running (and blocked) while the facade works on its own loop.
    before = set(sdk_threads())
    client = sync_client(threaded_emulator)
    client.create("vip")
    token = client.update("vip", [IdAction.add("u1"), IdAction.add("u2")]).indexing_token
    assert client.wait_until_applied("vip", token, poll_interval=0.01).nb_ids == 2
    assert [a.name for a in client.iter_audiences()] == ["vip"]
    client.close()
    client.close()
    assert set(sdk_threads()) <= before
    assert threaded_emulator.members("vip").keys() == {"u1", "u2"}


def test_sync_client_shared_by_many_threads(threaded_emulator: Emulator) -> None:
    before = set(sdk_threads())
    failures: list[BaseException] = []
    with sync_client(threaded_emulator) as client:

        def work(worker: int) -> None:
            try:
                for n in range(10):
                    name = f"w{worker}-{n}"
                    client.create(name)
                    client.update(name, [IdAction.add(f"{name}-a"), IdAction.add(f"{name}-b")])
                    client.view(name)
                    client.list(limit=5)
            except BaseException as error:  # collected and reported by the main thread
                failures.append(error)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(HANG)
        assert not any(t.is_alive() for t in threads), "a call hung"
    assert not failures, failures
    threaded_emulator.settle()
    names = threaded_emulator.audience_names()
    assert len(names) == 80
    assert all(threaded_emulator.members(n).keys() == {f"{n}-a", f"{n}-b"} for n in names)
    assert set(sdk_threads()) <= before


def test_closing_while_other_threads_wait_gives_them_a_clear_error(threaded_emulator: Emulator) -> None:
    before = set(sdk_threads())
    threaded_emulator.add_audience("vip", ["u1"])
    # The view hangs on the server far longer than the test may take.
    threaded_emulator.script(ScriptedResponse(action="slow", delay=60.0, route="view"))
    client = sync_client(threaded_emulator, timeout=120.0)
    outcome: list[BaseException | object] = []

    def waiting_caller() -> None:
        try:
            outcome.append(client.view("vip"))
        except BaseException as error:  # reported below
            outcome.append(error)

    caller = threading.Thread(target=waiting_caller)
    caller.start()
    wait_for(in_flight(threaded_emulator, "view"), "the view to reach the server")
    client.close()
    caller.join(HANG)
    assert not caller.is_alive(), "a call in flight hung after close()"
    assert len(outcome) == 1
    assert isinstance(outcome[0], ClientClosedError), repr(outcome[0])
    assert set(sdk_threads()) <= before


# -- the async client: aclose and cancellation while requests run ----------------------------


async def test_aclose_while_requests_run_gives_them_sdk_errors() -> None:
    async with Emulator(indexing_delay=0.0) as emu:
        emu.add_audience("vip", ["u1"])
        emu.script(*[ScriptedResponse(action="slow", delay=60.0, route="view")] * 3)
        client = async_client(emu, timeout=120.0)
        calls = [asyncio.create_task(client.view("vip")) for _ in range(3)]
        await until(lambda: sum(r.outcome == "in_flight" for r in emu.requests) == 3, "3 views in flight")
        await client.aclose()
        async with async_timeout(HANG):
            results = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(r, BatchAudiencesError) for r in results), results


async def test_a_cancelled_call_leaves_the_client_usable() -> None:
    async with Emulator(indexing_delay=0.0) as emu:
        emu.add_audience("vip", ["u1"])
        emu.script(ScriptedResponse(action="slow", delay=60.0, route="view"))
        async with async_client(emu) as client:
            call = asyncio.create_task(client.view("vip"))
            await until(in_flight(emu, "view"), "the view to reach the server")
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            assert not client.closed
            async with async_timeout(HANG):
                audience = await client.view("vip")
                await client.update("vip", [IdAction.add("u2")])
            assert audience.nb_ids == 1
        emu.settle()
        assert emu.members("vip").keys() == {"u1", "u2"}


async def test_a_timeout_around_a_call_leaves_the_client_usable() -> None:
    async with Emulator(indexing_delay=0.0) as emu:
        emu.add_audience("vip")
        emu.script(ScriptedResponse(action="slow", delay=60.0, route="view"))
        async with async_client(emu) as client:
            with pytest.raises(TimeoutError):
                async with async_timeout(0.2):
                    await client.view("vip")
            async with async_timeout(HANG):
                assert (await client.view("vip")).name == "vip"


@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_an_async_client_used_from_a_second_event_loop_says_so(threaded_emulator: Emulator) -> None:
    # The first asyncio.run() closes its loop with the client's connections in it (the caller
    # never closed the client: the leaked sockets are theirs, hence the filters above); the
    # second run must get a clear SDK error, not aiohttp's "Event loop is closed". So must
    # aclose(): the connections died with the first loop, unclosed.
    client = async_client(threaded_emulator)
    asyncio.run(client.create("vip"))
    with pytest.raises(ClientClosedError, match="event loop"):
        asyncio.run(client.view("vip"))
    with pytest.raises(ClientClosedError, match="belong to an event loop that was closed"):
        asyncio.run(client.aclose())
    assert threaded_emulator.count(route="view") == 0
    del client
    gc.collect()  # the leaked socket is reported here, under this test's filters


def test_an_abandoned_sync_iterator_does_not_leak(threaded_emulator: Emulator) -> None:
    for n in range(5):
        threaded_emulator.add_audience(f"a{n}")
    before = set(sdk_threads())
    with sync_client(threaded_emulator) as client:
        pages = client.iter_audiences(page_size=2)
        assert next(pages).name == "a0"
        # Left half-way; the client is closed with the iterator still suspended.
    with pytest.raises((ClientClosedError, StopIteration)):
        next(pages)
    del pages
    gc.collect()
    assert set(sdk_threads()) <= before


def test_a_blocking_call_from_the_facades_own_loop_is_refused(threaded_emulator: Emulator) -> None:
    # A progress callback runs on the facade's loop thread: a blocking call from there would wait
    # for that very thread, forever.
    threaded_emulator.add_audience("crm")
    with sync_client(threaded_emulator) as client:

        def reenter(_: object) -> None:
            client.view("crm")

        with pytest.raises(RuntimeError, match="deadlock"):
            client.upload("crm", ["u1", "u2"], on_progress=reenter)
        assert client.create("vip").indexing_token


def test_close_from_the_facades_own_loop_is_refused(threaded_emulator: Emulator) -> None:
    # close() waits for the loop to finish its work: from the loop's own thread it never could.
    threaded_emulator.add_audience("crm")
    with sync_client(threaded_emulator) as client:

        def close_inside(_: object) -> None:
            client.close()

        with pytest.raises(RuntimeError, match="deadlock"):
            client.upload("crm", ["u1", "u2"], on_progress=close_inside)
        assert not client.closed
        assert client.create("vip").indexing_token


# -- cancelling a bulk call ------------------------------------------------------------------


def client_tasks(before: set[asyncio.Task[Any]]) -> set[asyncio.Task[Any]]:
    """Tasks started since ``before`` that are not this test's or the emulator server's."""
    return {
        task for task in asyncio.all_tasks() - before - {asyncio.current_task()}
        if not task.get_coro().__qualname__.startswith("RequestHandler")  # type: ignore[union-attr]
    }


def churn_stream(chunks: int, chunk_size: int) -> list[IdAction]:
    """Adds, with IDs removed and re-added in later chunks, so order across chunks matters."""
    stream: list[IdAction] = []
    for n in range(chunks * chunk_size):
        stream.append(IdAction.add(f"u{n}", {"n": n}))
        if n % 7 == 3 and n > chunk_size:
            stream.append(IdAction.remove(f"u{n - chunk_size - 1}"))
        if n % 11 == 5 and n > 2 * chunk_size:
            stream.append(IdAction.add(f"u{n - 2 * chunk_size - 3}", {"again": n}))
    return stream


def applied(stream: list[IdAction]) -> dict[str, dict[str, object]]:
    members: dict[str, dict[str, object]] = {}
    for item in stream:
        if item.action.value == "add":
            members[item.id] = dict(item.attributes or {})
        else:
            members.pop(item.id, None)
    return members


@pytest.mark.parametrize("own_session", [False, True], ids=["client-session", "caller-session"])
async def test_cancelling_an_upload_leaves_the_client_usable_and_says_what_was_accepted(
    own_session: bool,
) -> None:
    chunk_size = 50
    stream = churn_stream(40, chunk_size)
    async with (
        Emulator(indexing_delay=0.002, latency=(0.002, 0.01)) as emu,
        aiohttp.ClientSession() as session,
    ):
        emu.add_audience("crm")
        client = async_client(emu, session=session if own_session else None)
        acknowledged: set[int] = set()
        upload: asyncio.Task[Any] | None = None

        def progress(event: Any) -> None:
            if event.kind == "acknowledged":
                acknowledged.add(event.chunk_index)
                if len(acknowledged) == 8 and upload is not None:
                    upload.cancel()  # mid-way: more chunks are in flight and still to come

        before = asyncio.all_tasks()
        upload = asyncio.create_task(
            client.upload("crm", stream, mode="update", chunk_size=chunk_size, concurrency=4,
                          on_progress=progress)
        )
        with pytest.raises(asyncio.CancelledError):
            await upload
        total_chunks = -(-len(stream) // chunk_size)
        assert 8 <= len(acknowledged) < total_chunks
        # Nothing of the upload keeps running (the emulator's connection handlers are the server's).
        await until(lambda: not client_tasks(before), "the upload's tasks to end")
        # The client, and the caller's session, are still open and work.
        assert not client.closed
        assert not session.closed
        async with async_timeout(HANG):
            assert (await client.view("crm")).name == "crm"
            # What progress said was accepted is enough to finish the job exactly: resume.
            report = await client.upload("crm", stream, mode="update", chunk_size=chunk_size,
                                         concurrency=4, wait=True, skip_chunks=acknowledged)
        assert report.ok, report.summary()
        assert report.chunks_skipped == len(acknowledged)
        assert report.chunks_acknowledged == total_chunks - len(acknowledged)
        emu.settle()
        assert emu.members("crm") == applied(stream)
        await client.aclose()
        assert not session.closed  # a caller's session is never closed by the client


def test_closing_a_blocking_client_during_an_upload_ends_it_cleanly(threaded_emulator: Emulator) -> None:
    # The blocking analogue of cancelling: another thread closes the client while an upload
    # runs. The uploading thread gets ClientClosedError (not a hang), progress has said which
    # chunks were accepted, and no thread is left behind.
    before = set(sdk_threads())
    threaded_emulator.add_audience("crm")
    threaded_emulator.latency = (0.002, 0.01)
    stream = churn_stream(40, 50)
    client = sync_client(threaded_emulator)
    acknowledged: set[int] = set()
    enough = threading.Event()
    outcome: list[object] = []

    def progress(event: Any) -> None:
        if event.kind == "acknowledged":
            acknowledged.add(event.chunk_index)
            if len(acknowledged) >= 5:
                # From now on every request waits longer than the test does: the upload cannot
                # finish before close(), however the threads are scheduled, and close() has
                # requests in flight to end (it must not wait for their answers).
                threaded_emulator.latency = 10 * HANG
                enough.set()

    def uploader() -> None:
        try:
            outcome.append(client.upload("crm", stream, mode="update", chunk_size=50, on_progress=progress))
        except BaseException as error:  # reported below
            outcome.append(error)

    thread = threading.Thread(target=uploader)
    thread.start()
    assert enough.wait(HANG), "the upload never got going"
    client.close()
    thread.join(HANG)
    assert not thread.is_alive(), "the upload hung after close()"
    assert len(outcome) == 1
    assert isinstance(outcome[0], ClientClosedError), repr(outcome[0])
    assert 5 <= len(acknowledged) < 50
    assert set(sdk_threads()) <= before
    threaded_emulator.latency = 0.0
    # Resuming with a new client from what progress reported finishes the job exactly.
    with sync_client(threaded_emulator) as again:
        report = again.upload("crm", stream, mode="update", chunk_size=50, wait=True,
                              skip_chunks=acknowledged)
    assert report.ok, report.summary()
    threaded_emulator.settle()
    assert threaded_emulator.members("crm") == applied(stream)
