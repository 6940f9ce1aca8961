"""Instrumentation hooks: what happens to each request, told to code of the user's choosing.

A hook is any callable taking one event (``stamina``'s ``RetryHook`` and ``RetryDetails`` are the
model): pass it to the client as ``hooks=[...]``. Events are small frozen classes, so a hook can
``match`` on them::

    from batch_audiences import AnswerReceived, RetryScheduled

    def log_events(event: object) -> None:
        match event:
            case AnswerReceived(route=route, status=status, elapsed=elapsed):
                metrics.timing(f"batch.{route}.{status}", elapsed)
            case RetryScheduled(route=route, wait=wait):
                metrics.increment(f"batch.{route}.retries")

Events of one HTTP attempt share ``request_id`` (one logical request, all its attempts) and
``attempt`` (1 for the first try): :class:`RequestSent` opens the attempt, and exactly one of
:class:`AnswerReceived` or :class:`RequestFailed` closes it. :class:`RetryScheduled` and
:class:`Throttled` follow the answer they react to; :class:`ChunkAcknowledged` comes from the bulk
engine when the server accepted one chunk of an upload.

Hooks run on the event loop, in the order given, and must return quickly. A hook that raises is
logged (``batch_audiences`` logger, WARNING, with the traceback) and the request goes on. No event
carries the API key, nor a request's body.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Final, Protocol, TypeAlias

import attrs

from ._errors import InvalidSettingError

__all__ = [
    "AnswerReceived",
    "ChunkAcknowledged",
    "Hook",
    "HookEvent",
    "Hooks",
    "RequestFailed",
    "RequestSent",
    "RetryScheduled",
    "Throttled",
]

logger: Final = logging.getLogger("batch_audiences")


@attrs.frozen(kw_only=True)
class RequestSent:
    """An HTTP attempt is about to leave (its turn with the rate limiter came).

    ``audience`` is the audience the request is about, when it names one.
    """

    request_id: int
    method: str
    route: str
    attempt: int
    audience: str | None = None


@attrs.frozen(kw_only=True)
class AnswerReceived:
    """An answer came back for an attempt, whatever its status.

    ``elapsed`` is in seconds from :class:`RequestSent`; ``headers`` are the answer's (with the
    key redacted, should a server echo it).
    """

    request_id: int
    method: str
    route: str
    attempt: int
    status: int
    elapsed: float
    headers: Mapping[str, str] = attrs.field(factory=dict, repr=False)
    audience: str | None = None


@attrs.frozen(kw_only=True)
class RequestFailed:
    """An attempt got no answer: connection refused or broken, or a timeout.

    ``maybe_applied`` is true when the request may have reached the server before the failure.
    """

    request_id: int
    method: str
    route: str
    attempt: int
    reason: str
    elapsed: float
    maybe_applied: bool
    audience: str | None = None


@attrs.frozen(kw_only=True)
class RetryScheduled:
    """The attempt that just ended will be tried again after ``wait`` seconds.

    ``status`` is the answer's status (``None`` when no answer came); ``retry_after`` is the wait
    the server asked for, if any. ``wait`` is the policy's figure even in the zero-wait test mode.
    """

    request_id: int
    method: str
    route: str
    attempt: int
    wait: float
    status: int | None
    retry_after: float | None
    audience: str | None = None


@attrs.frozen(kw_only=True)
class Throttled:
    """The server answered 429; ``rate`` is the client's pace after reacting (``None``: unlimited)."""

    request_id: int
    method: str
    route: str
    attempt: int
    retry_after: float | None
    rate: float | None
    audience: str | None = None


@attrs.frozen(kw_only=True)
class ChunkAcknowledged:
    """The server accepted one chunk of a bulk upload.

    ``chunk_index`` is the chunk's position in the stream (0 first), ``items`` how many entries
    it held, ``indexing_token`` the server's token for it (``None`` when it gave none).
    """

    audience: str
    chunk_index: int
    items: int
    indexing_token: str | None
    route: str = ""


#: Every event a hook may receive.
HookEvent: TypeAlias = (
    RequestSent | AnswerReceived | RequestFailed | RetryScheduled | Throttled | ChunkAcknowledged
)


class Hook(Protocol):
    """What ``hooks=[...]`` takes: a callable receiving each event. Its result is ignored."""

    def __call__(self, event: HookEvent, /) -> object: ...


class Hooks:
    """The hooks of one client; calls each in turn, and keeps a failing one from doing harm."""

    __slots__ = ("_hooks",)

    def __init__(self, hooks: Iterable[Hook] = ()) -> None:
        if isinstance(hooks, (str, bytes)) or not isinstance(hooks, Iterable):
            raise InvalidSettingError("hooks", f"must be a list of callables, got {type(hooks).__name__}")
        self._hooks = tuple(hooks)
        for hook in self._hooks:
            if not callable(hook):
                raise InvalidSettingError("hooks", f"must hold callables, got {type(hook).__name__}")

    def __bool__(self) -> bool:
        return bool(self._hooks)

    def emit(self, event: HookEvent) -> None:
        """Give ``event`` to every hook; a hook that raises is logged and skipped."""
        for hook in self._hooks:
            try:
                hook(event)
            except Exception:
                logger.warning("hook %r failed on %s; the request goes on", hook,
                               type(event).__name__, exc_info=True)
