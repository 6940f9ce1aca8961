"""``AudiencesClient``: the blocking facade over :class:`AsyncAudiencesClient`.

One background thread runs one event loop that owns the async client; each method hands its
coroutine to that loop and waits for the result. The facade adds no behaviour of its own, so
the two clients cannot drift apart. Because the loop is private to the facade, it works from
plain scripts, from several threads at once, and from code that already runs an event loop
(a Jupyter cell, an async framework calling blocking code).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Callable,
    Collection,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
)
from types import TracebackType
from typing import Any, TypeVar

import aiohttp

from ._bulk import (
    LATE_WRITE_GRACE,
    BulkReport,
    IfExists,
    ProgressEvent,
    UploadItem,
    UploadMode,
    UploadReport,
)
from ._client import AsyncAudiencesClient
from ._config import ClientConfig, RetryPolicy
from ._errors import ClientClosedError, InvalidSettingError
from ._models import (
    MAX_IDS_PER_REQUEST,
    Accepted,
    Audience,
    AudiencePage,
    AudienceType,
    IdAction,
    Member,
    NewAudience,
)
from ._transport import ClientStats

__all__ = ["AudiencesClient", "LoopThread"]

T = TypeVar("T")


class _Call:
    """One coroutine handed to the loop thread, and the lock its caller blocks on until it is done.

    Lighter than ``asyncio.run_coroutine_threadsafe``, whose ``concurrent.futures.Future`` (a
    condition variable, state copied across by callbacks) costs about as much as the rest of a
    blocking call's hop between threads; the hop is most of what the facade adds to a request.
    """

    __slots__ = ("coro", "done", "error", "task")

    def __init__(self, coro: Coroutine[Any, Any, Any]) -> None:
        self.coro = coro
        self.task: asyncio.Task[Any] | None = None
        self.error: BaseException | None = None
        self.done = threading.Lock()
        self.done.acquire()  # released by the loop thread when the task is done

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """On the loop thread: run the coroutine as a task."""
        try:
            self.task = loop.create_task(self.coro)
        except BaseException as exc:
            self.error = exc
            self.done.release()
            return
        self.task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self.done.release()

    def cancel(self) -> None:
        """On the loop thread: the caller gave up waiting."""
        if self.task is not None:
            self.task.cancel()


class LoopThread:
    """A daemon thread running an event loop, to which coroutines are handed from any thread."""

    def __init__(self, name: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._lock = threading.Lock()
        self._closed = False
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    @property
    def closed(self) -> bool:
        return self._closed

    def _refuse_inside_loop(self, coro: Coroutine[Any, Any, Any] | None) -> None:
        # Waiting on the loop from the loop's own thread (a progress callback calling the
        # blocking client) could never end.
        if threading.current_thread() is self._thread:
            if coro is not None:
                coro.close()
            raise RuntimeError(
                "a blocking AudiencesClient method was called from inside its own event loop "
                "(a progress callback, for instance); that would deadlock"
            )

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and block until it is done; its exception is re-raised here."""
        self._refuse_inside_loop(coro)
        call = _Call(coro)
        with self._lock:
            if self._closed:
                coro.close()
                raise ClientClosedError("this client is closed; create a new one")
            self._loop.call_soon_threadsafe(call.start, self._loop)
        try:
            call.done.acquire()
        except BaseException:
            # Interrupted while waiting (KeyboardInterrupt): do not leave the work running.
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                self._loop.call_soon_threadsafe(call.cancel)
            raise
        task = call.task
        if task is None:
            assert call.error is not None
            raise call.error
        if task.cancelled():
            if self._closed:  # close() from another thread cancelled the work still running
                raise ClientClosedError("the client was closed while this call was in progress") from None
            raise concurrent.futures.CancelledError()
        result: T = task.result()
        return result

    def close(self, final: Coroutine[Any, Any, None] | None = None) -> None:
        """Run ``final`` on the loop, stop the loop, join the thread. Safe to call twice."""
        self._refuse_inside_loop(final)
        with self._lock:
            if self._closed:
                if final is not None:
                    final.close()
                return
            self._closed = True
        try:
            if final is not None:
                asyncio.run_coroutine_threadsafe(final, self._loop).result()
        finally:
            # Calls still running (from other threads) are cancelled, so their callers get an
            # answer instead of waiting forever on a stopped loop. The clean-up runs on the
            # loop's own thread: the caller's thread may be running an event loop of its own
            # (a Jupyter cell), where run_until_complete is not allowed.
            asyncio.run_coroutine_threadsafe(_cancel_remaining(), self._loop).result()
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()


class AudiencesClient:
    """Blocking client of Batch's Audience API: the same constructor and methods as
    :class:`AsyncAudiencesClient`, without ``await``.

    Call :meth:`close` (or use ``with``) to close its session and stop its thread.

    Example, against the local emulator::

        from batch_audiences import AudiencesClient, IdAction
        from batch_audiences.testing import Emulator

        with Emulator() as emu, AudiencesClient(
            emu.api_key, emu.project_key, base_url=emu.base_url
        ) as client:
            client.create("vip")
            token = client.update("vip", [IdAction.add("u1")]).indexing_token
            print(client.wait_until_applied("vip", token).nb_ids)  # 1
    """

    def __init__(
        self,
        api_key: str | None = None,
        project_key: str | None = None,
        *,
        base_url: str | None = None,
        api_version: str = "2.8",
        timeout: float = 30.0,
        max_retries: int = 5,
        max_connections: int = 100,
        session: aiohttp.ClientSession | None = None,
        max_rate: float | None = None,
        fail_fast: bool = False,
        retry: RetryPolicy | None = None,
        allow_insecure_http: bool = False,
    ) -> None:
        """Build the client (see :class:`AsyncAudiencesClient` for the arguments).

        ``session`` must be ``None``: the facade's session lives on its own event loop, which
        no caller's session can share.
        """
        if session is not None:
            raise InvalidSettingError(
                "session", "AudiencesClient runs its own event loop; pass session= to "
                "AsyncAudiencesClient instead"
            )
        # Built here, in the caller's thread, so a bad setting raises right at this line.
        self._async = AsyncAudiencesClient(
            api_key, project_key, base_url=base_url, api_version=api_version, timeout=timeout,
            max_retries=max_retries, max_connections=max_connections, max_rate=max_rate,
            fail_fast=fail_fast, retry=retry, allow_insecure_http=allow_insecure_http,
        )
        self._loop = LoopThread("batch-audiences-loop")

    def __repr__(self) -> str:
        return repr(self._async).replace("AsyncAudiencesClient", type(self).__name__, 1)

    def __enter__(self) -> AudiencesClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the session and stop the background thread. Safe to call twice."""
        self._loop.close(self._async.aclose())

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran."""
        return self._loop.closed

    @property
    def config(self) -> ClientConfig:
        """The checked settings this client runs with."""
        return self._async.config

    @property
    def stats(self) -> ClientStats:
        """Request, retry and throttling counters since the client was built."""
        return self._async.stats

    def create(
        self,
        name: str,
        *,
        display_name: str | None = None,
        type: AudienceType = AudienceType.CUSTOM_IDS,
    ) -> Accepted:
        """Blocking :meth:`AsyncAudiencesClient.create`."""
        return self._loop.run(self._async.create(name, display_name=display_name, type=type))

    def update(self, name: str, actions: Iterable[IdAction]) -> Accepted:
        """Blocking :meth:`AsyncAudiencesClient.update`."""
        return self._loop.run(self._async.update(name, actions))

    def replace(self, name: str, members: Iterable[Member | str]) -> Accepted:
        """Blocking :meth:`AsyncAudiencesClient.replace`."""
        return self._loop.run(self._async.replace(name, members))

    def remove(self, name: str) -> Accepted:
        """Blocking :meth:`AsyncAudiencesClient.remove`."""
        return self._loop.run(self._async.remove(name))

    def view(self, name: str, *, indexing_token: str | None = None) -> Audience:
        """Blocking :meth:`AsyncAudiencesClient.view`."""
        return self._loop.run(self._async.view(name, indexing_token=indexing_token))

    def list(self, *, limit: int = 10, cursor: str | None = None) -> AudiencePage:
        """Blocking :meth:`AsyncAudiencesClient.list`."""
        return self._loop.run(self._async.list(limit=limit, cursor=cursor))

    def iter_audiences(self, *, page_size: int = 100) -> Iterator[Audience]:
        """Every audience of the project, as a plain iterator (pages fetched as you go)."""
        return self._iterate(self._async.iter_audiences(page_size=page_size))

    def _iterate(self, source: AsyncIterator[T]) -> Iterator[T]:
        try:
            while True:
                try:
                    yield self._loop.run(_next(source))
                except StopAsyncIteration:
                    return
        finally:
            aclose = getattr(source, "aclose", None)
            if aclose is not None and not self._loop.closed:
                # close() may win the race from another thread; it finalizes the source itself.
                with contextlib.suppress(ClientClosedError):
                    self._loop.run(aclose())

    def wait_until_applied(
        self,
        name: str,
        indexing_token: str | None = None,
        *,
        timeout: float = 300.0,
        poll_interval: float = 1.0,
    ) -> Audience:
        """Blocking :meth:`AsyncAudiencesClient.wait_until_applied`."""
        return self._loop.run(
            self._async.wait_until_applied(
                name, indexing_token, timeout=timeout, poll_interval=poll_interval
            )
        )

    def upload(
        self,
        name: str,
        items: Iterable[UploadItem] | AsyncIterable[UploadItem],
        *,
        mode: UploadMode = "add",
        chunk_size: int = MAX_IDS_PER_REQUEST,
        concurrency: int = 4,
        wait: bool = False,
        on_progress: Callable[[ProgressEvent], object] | None = None,
        retry_budget: int | None = None,
        deadline: float | None = None,
        skip_chunks: Collection[int] = (),
        late_write_grace: float = LATE_WRITE_GRACE,
    ) -> UploadReport:
        """Blocking :meth:`AsyncAudiencesClient.upload`.

        ``items`` may be a plain iterable (a list, a generator, a reader of
        :mod:`batch_audiences.sources`) or an async iterable. Either way it is read on the
        client's own event-loop thread, a chunk at a time, so it must not rely on being read
        from the calling thread; ``on_progress`` runs on that thread too, and must not call
        this client (it would wait for itself).

        >>> with AudiencesClient() as client:  # doctest: +SKIP
        ...     report = client.upload("crm", (line.strip() for line in open("ids.txt")))
        ...     print(report.summary())
        """
        return self._loop.run(
            self._async.upload(
                name, items, mode=mode, chunk_size=chunk_size, concurrency=concurrency, wait=wait,
                on_progress=on_progress, retry_budget=retry_budget, deadline=deadline,
                skip_chunks=skip_chunks, late_write_grace=late_write_grace,
            )
        )

    def create_many(
        self,
        audiences: Iterable[NewAudience | Mapping[str, Any] | str]
        | AsyncIterable[NewAudience | Mapping[str, Any] | str],
        *,
        concurrency: int = 8,
        if_exists: IfExists = "error",
        on_progress: Callable[[ProgressEvent], object] | None = None,
        retry_budget: int | None = None,
        deadline: float | None = None,
    ) -> BulkReport:
        """Blocking :meth:`AsyncAudiencesClient.create_many` (``audiences`` and ``on_progress``
        are used on the client's event-loop thread, as for :meth:`upload`)."""
        return self._loop.run(
            self._async.create_many(
                audiences, concurrency=concurrency, if_exists=if_exists, on_progress=on_progress,
                retry_budget=retry_budget, deadline=deadline,
            )
        )


async def _cancel_remaining() -> None:
    """Cancel every other task of the running loop, wait for them, then finalize async generators."""
    current = asyncio.current_task()
    tasks = [task for task in asyncio.all_tasks() if task is not current]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.get_running_loop().shutdown_asyncgens()


async def _next(source: AsyncIterator[T]) -> T:
    return await source.__anext__()
