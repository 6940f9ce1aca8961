"""Running a coroutine on the event loop that owns what it touches.

An ``aiohttp`` session, its connector and their sockets belong to the loop they were made on:
closed from another loop, aiohttp schedules the closing on the owner, where it happens only
when (if ever) that loop runs again, and the call returns as if it were done.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from ._errors import ClientClosedError

__all__ = ["run_on_owner"]

T = TypeVar("T")


async def run_on_owner(
    work: Callable[[], Coroutine[Any, Any, T]], owner: asyncio.AbstractEventLoop | None
) -> T:
    """Await ``work()`` on ``owner`` (``None``: the running loop), from whichever loop runs now.

    - ``owner`` runs in another thread: ``work()`` is handed to it and awaited here;
    - ``owner`` is idle (not running, not closed): it runs ``work()`` in a worker thread;
    - ``owner`` is closed: what needs it cannot be done any more; ``work()`` is awaited here
      for the rest, then :class:`ClientClosedError` says so rather than pretending.
    """
    if owner is None or owner is asyncio.get_running_loop():
        return await work()
    if owner.is_closed():
        # What can be done without the owner is still done (aiohttp then marks the session and
        # connector closed, so they do not add their own warnings to this error).
        with contextlib.suppress(Exception):
            await work()
        raise ClientClosedError(
            "this client is closed, but not its connections: they belong to an event loop that "
            "was closed before aclose() ran (an earlier asyncio.run(), for instance), and only "
            "that loop could close them; their sockets are freed when garbage-collected. Close "
            "the client inside the event loop that uses it: `async with AsyncAudiencesClient(...)`, "
            "or `await client.aclose()` before that loop ends"
        )
    if owner.is_running():
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(work(), owner))
    return await asyncio.to_thread(_run_idle, owner, work)


def _run_idle(owner: asyncio.AbstractEventLoop, work: Callable[[], Coroutine[Any, Any, T]]) -> T:
    coro = work()
    try:
        return owner.run_until_complete(coro)
    except RuntimeError:
        # The owner started running (in its own thread) since it was found idle: hand it over.
        if not owner.is_running():
            coro.close()
            raise
        return asyncio.run_coroutine_threadsafe(coro, owner).result()
