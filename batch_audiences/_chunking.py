"""The ordering rule of ``upload``: which earlier chunks a chunk must wait for.

Batch applies writes asynchronously, and two requests in flight at once may be applied in
either order. The final content must nevertheless equal applying the stream one item at a time,
so two chunks that act on the same ID must never be open to reordering: the later one is sent
only once the earlier one is acknowledged *and* applied. Chunks that share no ID go concurrently.

:class:`OrderTracker` answers "which earlier chunks share an ID with this one?" in O(chunk): it
maps each ID to the last chunk (in stream order) that acts on it, for every chunk that is not
yet known to be applied. A chunk's IDs are released once it is confirmed applied; a chunk that
failed is never released, so that every later chunk touching its IDs is held back too (and a
resume that sends the failed chunks again still applies the stream in order).
"""

from __future__ import annotations

from collections import deque
from itertools import repeat

__all__ = ["OrderTracker"]


class OrderTracker:
    """ID -> last chunk acting on it, over the chunks not yet confirmed applied.

    >>> tracker = OrderTracker()
    >>> tracker.register(0, ["a", "b"])
    set()
    >>> tracker.register(1, ["c"])
    set()
    >>> sorted(tracker.register(2, ["b", "c", "d"]))
    [0, 1]
    >>> tracker.release(0)
    >>> tracker.register(3, ["a", "b"])
    {2}
    """

    __slots__ = ("_chunks", "_last", "_overwritten", "tracked")

    def __init__(self) -> None:
        self._last: dict[str, int] = {}
        # chunk -> its IDs (duplicates included), for release; a list costs 8 bytes an ID.
        self._chunks: dict[int, list[str]] = {}
        # chunks some of whose IDs a later chunk took over in ``_last``
        self._overwritten: set[int] = set()
        #: How many IDs are held for the chunks tracked: the tracker's memory, in IDs.
        self.tracked = 0

    def register(self, index: int, ids: list[str]) -> set[int]:
        """Record chunk ``index`` (registered in stream order) and return the earlier chunks it
        shares an ID with. The tracker keeps ``ids`` (the caller must not change it)."""
        last = self._last
        # ``keys() & list`` runs in C over the list: O(chunk), not O(tracked).
        depends = {last[key] for key in last.keys() & ids} if last else set()
        last.update(zip(ids, repeat(index)))
        self._overwritten |= depends
        self._chunks[index] = ids
        self.tracked += len(ids)
        return depends

    def release(self, index: int) -> None:
        """Forget chunk ``index`` (it is applied): later chunks need not wait for it."""
        ids = self._chunks.pop(index, None)
        if ids is None:
            return
        last = self._last
        if index in self._overwritten:
            self._overwritten.discard(index)
            for key in ids:
                if last.get(key) == index:
                    del last[key]
        else:
            # Every one of its IDs still points to it: drop them all at C speed.
            deque(map(last.pop, ids, repeat(None)), maxlen=0)
        self.tracked -= len(ids)

    def __contains__(self, index: object) -> bool:
        return index in self._chunks
