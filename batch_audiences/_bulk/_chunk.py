"""One chunk of an upload: one request's worth of the input, from reading to its outcome."""

from __future__ import annotations

import asyncio

from .._api import IdsRoute
from .._errors import BatchAudiencesError

__all__ = ["Chunk"]


class Chunk:
    """One chunk: its place in the stream, its encoded body pieces, and where it stands."""

    __slots__ = (
        "acked", "confirm", "confirmed", "count", "done", "error", "ids", "index", "kind",
        "lost_at", "parts", "route", "start", "stop", "token", "uncertain", "waiting",
    )

    def __init__(self, index: int, start: int, route: IdsRoute) -> None:
        self.index = index
        #: Positions in the input: ``start`` included, ``stop`` excluded.
        self.start = start
        self.stop = start
        self.route: IdsRoute = route
        self.count = 0
        self.ids: list[str] = []
        # PLAIN_ADDS, REMOVES or MIXED (see _chunking) once an item is in; NO_KIND while empty.
        self.kind = -1
        # The body's entries, already JSON-encoded: pieces of the "ids" array, without brackets.
        self.parts: list[bytes] | None = []
        self.token: str | None = None
        self.acked = False
        self.confirmed = False
        self.error: BatchAudiencesError | None = None
        self.uncertain = False
        # Loop time by which every try of an acknowledged chunk that may still be applied late
        # (it timed out or broke after sending) had been given up; None if there was none.
        self.lost_at: float | None = None
        self.waiting = False
        self.done = asyncio.Event()
        self.confirm: asyncio.Task[None] | None = None
