"""``AudiencesClient``: the blocking facade over :class:`AsyncAudiencesClient`.

One background thread runs one event loop that owns the async client; each method hands its
coroutine to that loop and waits for the result. The methods are derived from the async
client's by one typed wrapper (:func:`_blocking`), so they have its parameters, types and
documentation and cannot drift apart; the facade adds no behaviour of its own. Because the loop
is private to the facade, it works from plain scripts, from several threads at once, and from
code that already runs an event loop (a Jupyter cell, an async framework calling blocking code).

A client nobody closes is closed all the same: a ``weakref.finalize`` winds its loop down when
the client is garbage-collected, and at interpreter exit for one still alive then.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import inspect
import threading
import typing
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Iterator
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, TypeVar

import aiohttp

from ._client import AsyncAudiencesClient
from ._config import ClientConfig, RetryPolicy
from ._errors import ClientClosedError, InvalidSettingError
from ._hooks import Hook
from ._sender import Sender
from ._transport import ClientStats

__all__ = ["AudiencesClient", "LoopThread"]

T = TypeVar("T")
R = TypeVar("R")
P = ParamSpec("P")


class _Call:
    """One coroutine handed to the loop thread, and the lock its caller blocks on until it is done.

    Lighter than ``asyncio.run_coroutine_threadsafe``, whose ``concurrent.futures.Future`` (a
    condition variable, state copied across by callbacks) costs about as much as the rest of a
    blocking call's hop between threads; the hop is most of what the facade adds to a request.
    The outcome is kept and the caller released by the task itself, as its last step: a done
    callback would cost the loop one more turn (and a poll of its selector) on every call.
    """

    __slots__ = ("coro", "done", "error", "result", "task")

    def __init__(self, coro: Coroutine[Any, Any, Any]) -> None:
        self.coro = coro
        self.task: asyncio.Task[None] | None = None
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = threading.Lock()
        self.done.acquire()  # released on the loop thread once the outcome is known

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """On the loop thread: run the coroutine as a task."""
        try:
            self.task = loop.create_task(self._run())
        except BaseException as exc:
            self.coro.close()
            self.error = exc
            self.done.release()

    async def _run(self) -> None:
        try:
            self.result = await self.coro
        except (Exception, asyncio.CancelledError) as exc:
            # Kept for the caller, which raises it; a cancellation still ends the task as such.
            self.error = exc
            if isinstance(exc, asyncio.CancelledError):
                raise
        except BaseException as exc:  # KeyboardInterrupt, SystemExit: the loop's business too
            self.error = exc
            raise
        finally:
            self.done.release()

    def cancel(self) -> None:
        """On the loop thread: the caller gave up waiting."""
        if self.task is not None:
            self.task.cancel()


class LoopThread:
    """A daemon thread running an event loop, to which coroutines are handed from any thread.

    :meth:`stop` ends it without waiting (safe from a garbage-collection callback, on any
    thread, the loop's own included): the loop runs a last coroutine, cancels what is left,
    stops and closes itself. :meth:`close` is :meth:`stop`, then waiting for all of that.
    """

    def __init__(self, name: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._lock = threading.Lock()
        self._closed = False
        self._final_error: BaseException | None = None
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()
            _stopping.discard(self)

    @property
    def closed(self) -> bool:
        return self._closed

    def on_own_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def _refuse_inside_loop(self, coro: Coroutine[Any, Any, Any] | None = None) -> None:
        # Waiting on the loop from the loop's own thread (a progress callback calling the
        # blocking client) could never end.
        if self.on_own_thread():
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
        error = call.error
        if error is None:
            result: T = call.result
            return result
        if isinstance(error, asyncio.CancelledError) and call.task is not None:
            if self._closed:  # close() from another thread cancelled the work still running
                raise ClientClosedError("the client was closed while this call was in progress") from None
            raise concurrent.futures.CancelledError()
        call.error = None  # no cycle through the traceback
        raise error

    def stop(self, final: Callable[[], Awaitable[None]] | None = None) -> bool:
        """Have the loop await ``final()``, cancel every other task, then stop and close; return
        at once. False if it was already stopping."""
        with self._lock:
            if self._closed:
                return False
            self._closed = True
        _stopping.add(self)
        # Every call handed over before _closed was set is already queued, so it starts (and is
        # then cancelled) before the wind-down below.
        self._loop.call_soon_threadsafe(self._wind_down_soon, final)
        return True

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def close(self, final: Callable[[], Awaitable[None]] | None = None) -> None:
        """:meth:`stop`, then wait until the thread is over; ``final``'s error is raised here.
        Safe to call twice, and from several threads."""
        self._refuse_inside_loop()
        if self.stop(final):
            self._thread.join()
            if self._final_error is not None:
                error, self._final_error = self._final_error, None
                raise error
        else:
            self._thread.join()

    def _wind_down_soon(self, final: Callable[[], Awaitable[None]] | None) -> None:
        self._loop.create_task(self._wind_down(final))

    async def _wind_down(self, final: Callable[[], Awaitable[None]] | None) -> None:
        try:
            if final is not None:
                await final()
        except Exception as error:  # handed to close(), if anyone waits for it
            self._final_error = error
        finally:
            try:
                # Calls still running (from other threads) are cancelled, so their callers get
                # an answer instead of waiting forever on a stopped loop.
                await _cancel_remaining()
            finally:
                self._loop.stop()


#: Loop threads asked to stop but maybe not yet over; waited for at interpreter exit, so that
#: none is cut short half-way through closing its connections.
_stopping: set[LoopThread] = set()
#: The longest interpreter exit waits for a loop thread to close; only a hang reaches it.
_EXIT_GRACE = 10.0


@atexit.register
def _join_stopping() -> None:
    for loop in list(_stopping):
        loop.join(_EXIT_GRACE)


def _release(loop: LoopThread, client: AsyncAudiencesClient) -> None:
    """Close a client that nobody closed: called once it is garbage, or at interpreter exit.

    From the collector it only asks the loop to wind down (it may run on any thread, the
    loop's own included, and must not block there); at exit it also waits, because the loop
    thread is a daemon that would otherwise be stopped half-way.
    """
    loop.stop(client.aclose)
    exiting = not threading.main_thread().is_alive()  # the case once atexit functions run
    if exiting and not loop.on_own_thread():
        loop.join(_EXIT_GRACE)


def _blocking(
    method: Callable[Concatenate[AsyncAudiencesClient, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[AudiencesClient, P], R]:
    """The blocking twin of an async method: same parameters, its result instead of a coroutine.

    The coroutine is made in the caller's thread and run on the client's loop thread. Type
    checkers see the async method's own parameters (``P``) and result (``R``), so a parameter
    added to :class:`AsyncAudiencesClient` reaches both clients at once.
    """

    def call(self: AudiencesClient, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return self._loop.run(method(self._async, *args, **kwargs))

    _adopt(call, method)
    return call


def _blocking_iter(
    method: Callable[Concatenate[AsyncAudiencesClient, P], AsyncIterator[R]],
) -> Callable[Concatenate[AudiencesClient, P], Iterator[R]]:
    """The blocking twin of a method returning an async iterator: a plain, lazy iterator.

    Arguments are checked at the call, as the async method does; items are fetched on the
    loop thread as the iterator is advanced.
    """

    def call(self: AudiencesClient, /, *args: P.args, **kwargs: P.kwargs) -> Iterator[R]:
        return self._iterate(method(self._async, *args, **kwargs))

    _adopt(call, method, returns=lambda result: Iterator[typing.get_args(result)[0]])  # type: ignore[misc]
    return call


def _blocking_derived(
    method: Callable[Concatenate[AsyncAudiencesClient, P], AsyncAudiencesClient],
) -> Callable[Concatenate[AudiencesClient, P], AudiencesClient]:
    """The blocking twin of a method deriving a client (``with_options``): a blocking client
    around the derived async one, on the same loop thread."""

    def call(self: AudiencesClient, /, *args: P.args, **kwargs: P.kwargs) -> AudiencesClient:
        return self._derived(method(self._async, *args, **kwargs))

    _adopt(
        call, method, returns=lambda result: "AudiencesClient",  # a name: the class is not made yet
        summary="the same arguments, returning an :class:`AudiencesClient` that runs on this "
        "client's event-loop thread",
    )
    return call


def _adopt(
    twin: Callable[..., object],
    method: Callable[..., object],
    returns: Callable[[Any], object] | None = None,
    summary: str = "the same arguments, called without ``await``",
) -> None:
    """Give ``twin`` the name, signature, annotations and documentation of ``method``, for
    ``help()``, ``inspect`` and the API reference (``returns`` maps the async result type to
    the blocking one: ``AsyncIterator[X]`` to ``Iterator[X]``, for instance).

    Not ``functools.wraps``: its ``__wrapped__`` makes introspection tools (the API reference's
    among them) present the twin as the async method itself, and its docstring.
    """
    name = method.__name__
    twin.__name__ = name
    twin.__module__ = __name__
    twin.__qualname__ = f"AudiencesClient.{name}"
    twin.__doc__ = (
        f"Blocking :meth:`AsyncAudiencesClient.{name}`: {summary}.\n\n"
        + inspect.cleandoc(method.__doc__ or "")
    )
    signature = inspect.signature(method)
    try:
        annotations = typing.get_type_hints(method)
    except Exception:  # an annotation naming what only a type checker imports: keep the text
        annotations = dict(method.__annotations__)
    if returns is not None and "return" in annotations:
        result = annotations["return"]
        # Unevaluated text: the blocking names are the async ones without "Async".
        result = result.replace("Async", "", 1) if isinstance(result, str) else returns(result)
        annotations["return"] = result
        signature = signature.replace(return_annotation=result)
    twin.__annotations__ = annotations
    twin.__dict__["__signature__"] = signature


class AudiencesClient:
    """Blocking client of Batch's Audience API: the same constructor and methods as
    :class:`AsyncAudiencesClient`, without ``await``.

    Call :meth:`close` (or use ``with``) to close its session and stop its thread. A client
    that is never closed is closed when it is garbage-collected, or at interpreter exit.

    ``items``, ``audiences`` and ``on_progress`` given to :meth:`upload` and
    :meth:`create_many` are used on the client's own event-loop thread, a chunk at a time:
    they must not rely on being read from the calling thread, and ``on_progress`` must not
    call this client (it would wait for itself).

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
        sender: Sender | None = None,
        hooks: Iterable[Hook] = (),
    ) -> None:
        """Build the client (see :class:`AsyncAudiencesClient` for the arguments).

        ``session`` must be ``None``: the facade's session lives on its own event loop, which
        no caller's session can share. ``hooks`` are called on that loop's thread.
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
            sender=sender, hooks=hooks,
        )
        self._loop = LoopThread("batch-audiences-loop")
        # Not a __del__: the finalizer holds no reference to the client, runs once, and also
        # runs at interpreter exit for a client still alive then (a module-level one).
        self._finalizer: weakref.finalize[Any, Any] | None = weakref.finalize(
            self, _release, self._loop, self._async
        )
        self._parent: AudiencesClient | None = None

    def _derived(self, client: AsyncAudiencesClient) -> AudiencesClient:
        # A client of with_options(): its own async client, the parent's loop thread. It holds
        # the parent, so the parent (whose finalizer ends the loop) outlives it.
        derived = object.__new__(type(self))
        derived._async = client
        derived._loop = self._loop
        derived._finalizer = None
        derived._parent = self
        return derived

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
        """Close the session and stop the background thread. Safe to call twice.

        On a client made by :meth:`with_options`, only that client is closed: what it shares
        with the client it came from stays open.
        """
        if self._finalizer is not None:
            self._loop.close(self._async.aclose)
            self._finalizer.detach()
        elif not self._loop.closed:
            with contextlib.suppress(ClientClosedError):  # the parent closed meanwhile
                self._loop.run(self._async.aclose())

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran (on this client, or on the one it was derived from)."""
        return self._loop.closed or self._async.closed

    @property
    def config(self) -> ClientConfig:
        """The checked settings this client runs with."""
        return self._async.config

    @property
    def stats(self) -> ClientStats:
        """Request, retry and throttling counters since the client was built."""
        return self._async.stats

    # Every method below is the async client's own, run on the loop thread: its parameters,
    # defaults, types and documentation are written once, in _client.py.
    create = _blocking(AsyncAudiencesClient.create)
    update = _blocking(AsyncAudiencesClient.update)
    replace = _blocking(AsyncAudiencesClient.replace)
    remove = _blocking(AsyncAudiencesClient.remove)
    view = _blocking(AsyncAudiencesClient.view)
    list = _blocking(AsyncAudiencesClient.list)
    iter_audiences = _blocking_iter(AsyncAudiencesClient.iter_audiences)
    with_options = _blocking_derived(AsyncAudiencesClient.with_options)
    wait_until_applied = _blocking(AsyncAudiencesClient.wait_until_applied)
    upload = _blocking(AsyncAudiencesClient.upload)
    create_many = _blocking(AsyncAudiencesClient.create_many)
    sync = _blocking(AsyncAudiencesClient.sync)

    def _iterate(self, source: AsyncIterator[T]) -> Iterator[T]:
        try:
            while True:
                try:
                    yield self._loop.run(_next(source))
                except StopAsyncIteration:
                    return
        finally:
            aclose = getattr(source, "aclose", None)
            # Closed: the loop finalized the source as it wound down. On the loop's own thread
            # (dropped by a progress callback): the loop finalizes it when it is collected.
            if aclose is not None and not self._loop.closed and not self._loop.on_own_thread():
                # close() may win the race from another thread; it finalizes the source itself.
                with contextlib.suppress(ClientClosedError):
                    self._loop.run(aclose())


async def _cancel_remaining() -> None:
    """Cancel every other task of the running loop and wait for them; then finalize async
    generators and end the default executor's threads (as ``asyncio.run`` does)."""
    current = asyncio.current_task()
    tasks = [task for task in asyncio.all_tasks() if task is not current]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    loop = asyncio.get_running_loop()
    await loop.shutdown_asyncgens()
    await loop.shutdown_default_executor()


async def _next(source: AsyncIterator[T]) -> T:
    return await source.__anext__()
