"""Request deadlines, kept by one timer per sender: real requests to a loopback server that
holds them, and every way a request in flight can end (its deadline, the caller's cancel, the
caller's own timeout around it)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from batch_audiences import AsyncAudiencesClient, RetryPolicy, TransportError

KEY = "deadline-secret-key-0123456789"
PROJECT = "project_deadlines"
NO_RETRY = RetryPolicy(max_retries=0)


class Holding:
    """A loopback server that holds ``/hold`` creates until the test ends, answers others."""

    def __init__(self) -> None:
        self.base_url = ""
        self.held = 0
        self.arrived = asyncio.Event()
        self.release = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if b'"name":"hold' in body:
            self.held += 1
            self.arrived.set()
            await self.release.wait()
        return web.json_response({"indexing_token": "tok"}, status=202)


async def start(server: Holding) -> web.AppRunner:
    """Serve ``server`` on 127.0.0.1 (a free port), on the running loop; sets its ``base_url``."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server.handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    server.base_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    return runner


@pytest.fixture
async def holding() -> AsyncIterator[Holding]:
    server = Holding()
    runner = await start(server)
    yield server
    server.release.set()
    await runner.cleanup()


def client_of(server: Holding, timeout: float) -> AsyncAudiencesClient:
    return AsyncAudiencesClient(KEY, PROJECT, base_url=server.base_url, timeout=timeout, retry=NO_RETRY)


def cancel_requests_of(task: asyncio.Task[object]) -> int:
    """The cancellations still pending on ``task`` (0 where Python cannot tell, before 3.11)."""
    return task.cancelling() if sys.version_info >= (3, 11) else 0


async def test_a_request_past_its_deadline_fails_as_timed_out(holding: Holding) -> None:
    async with client_of(holding, timeout=0.2) as client:
        with pytest.raises(TransportError) as info:
            await client.create("hold-1")
        assert info.value.reason == "timed out"
        assert info.value.attempts == 1
        # The cancellation that ended the exchange was taken back: none is left on the task.
        task = asyncio.current_task()
        assert task is not None
        assert cancel_requests_of(task) == 0
        # The same client goes on, through the same sender.
        assert (await client.create("fast")).indexing_token == "tok"


async def test_every_request_in_flight_meets_its_own_deadline(holding: Holding) -> None:
    async with client_of(holding, timeout=0.3) as client:
        results = await asyncio.gather(
            *(client.create(f"hold-{i}") for i in range(20)), client.create("fast"),
            return_exceptions=True,
        )
    *held, fast = results
    assert all(isinstance(r, TransportError) and r.reason == "timed out" for r in held), held
    assert not isinstance(fast, BaseException)
    assert fast.indexing_token == "tok"


async def test_a_shorter_deadline_is_kept_behind_a_longer_one(holding: Holding) -> None:
    # The timer is set at the long request's deadline first; the short one, sent after it
    # (a derived client's timeout), must set it earlier.
    async with client_of(holding, timeout=60) as client:
        slow = asyncio.ensure_future(client.create("hold-long"))
        await holding.arrived.wait()
        with pytest.raises(TransportError) as info:
            await client.with_options(timeout=0.2).create("hold-short")
        assert info.value.reason == "timed out"
        assert not slow.done(), "the long request was ended before its deadline"
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow


async def test_the_callers_cancel_stays_a_cancel(holding: Holding) -> None:
    async with client_of(holding, timeout=60) as client:
        task = asyncio.ensure_future(client.create("hold-1"))
        await holding.arrived.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert task.cancelled()
        assert (await client.create("fast")).indexing_token == "tok"


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.timeout is Python 3.11+")
async def test_the_callers_timeout_around_a_request_is_the_callers(holding: Holding) -> None:
    async with client_of(holding, timeout=60) as client:
        # The caller's timeout comes first: theirs, a TimeoutError, not the SDK's error.
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await client.create("hold-1")
    async with client_of(holding, timeout=0.2) as client:
        # The SDK's deadline comes first, inside a caller's longer timeout: that one is left
        # untouched (not expired, nothing pending on the task) and the code after runs on.
        async with asyncio.timeout(60) as outer:
            with pytest.raises(TransportError):
                await client.create("hold-2")
            await asyncio.sleep(0)
        assert not outer.expired()
        task = asyncio.current_task()
        assert task is not None
        assert task.cancelling() == 0


def test_the_blocking_client_times_out_too() -> None:
    # The blocking client's requests run in tasks on its loop thread: the same deadlines.
    from batch_audiences import AudiencesClient

    loop = asyncio.new_event_loop()
    server = Holding()

    import threading

    runner = loop.run_until_complete(start(server))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        with AudiencesClient(KEY, PROJECT, base_url=server.base_url, timeout=0.2, retry=NO_RETRY) as client:
            with pytest.raises(TransportError) as info:
                client.create("hold-1")
            assert info.value.reason == "timed out"
            assert client.create("fast").indexing_token == "tok"
    finally:
        loop.call_soon_threadsafe(server.release.set)
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
