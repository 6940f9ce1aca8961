"""The ordering rule of ``upload``: which earlier chunks a chunk must wait for.

Batch applies writes asynchronously, and two requests in flight at once may be applied in
either order. The final content must nevertheless equal applying the stream one item at a time,
so two chunks that act on the same ID must never be open to reordering: the later one is sent
only once the earlier one is acknowledged *and* applied. Chunks that share no ID go concurrently.

:class:`OrderTracker` answers "which earlier chunks share an ID with this one?" over the chunks
not yet known to be applied, in O(chunk) C-level set operations when the answer is "none" (the
usual case), and exactly otherwise. A chunk's IDs are released once it is confirmed applied; a
chunk that failed is never released, so that every later chunk touching its IDs is held back too
(and a resume that sends the failed chunks again still applies the stream in order).
"""

from __future__ import annotations

__all__ = ["OrderTracker"]


class OrderTracker:
    """The IDs of the chunks not yet confirmed applied, and which chunk a new one must wait for.

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

    The common case, a chunk sharing no ID with any tracked one, costs three C-level set
    operations per ID over its life (``isdisjoint``, ``update``, ``difference_update``). Only a
    chunk that does share IDs takes the exact slow path: finding, newest first, the last chunk
    holding each shared ID, and counting how many tracked chunks hold it, so that releasing one
    of them keeps the ID tracked for the others.
    """

    __slots__ = ("_chunks", "_dirty", "_ids", "_shared", "tracked")

    def __init__(self) -> None:
        self._ids: set[str] = set()  # every ID held by a tracked chunk
        # chunk -> its IDs (duplicates included), in registration order; a list costs 8 bytes an ID
        self._chunks: dict[int, list[str]] = {}
        self._dirty: set[int] = set()  # tracked chunks sharing an ID with another tracked chunk
        self._shared: dict[str, int] = {}  # ID -> number of tracked chunks holding it, when over 1
        #: How many IDs are held for the chunks tracked: the tracker's memory, in IDs.
        self.tracked = 0

    def register(self, index: int, ids: list[str]) -> set[int]:
        """Record chunk ``index`` (registered in stream order) and return the earlier tracked
        chunks it must wait for: for each ID it shares, the last chunk holding that ID. The
        tracker keeps ``ids`` (the caller must not change it)."""
        known = self._ids
        depends: set[int] = set()
        if known and not known.isdisjoint(ids):
            common = known.intersection(ids)
            remaining = set(common)
            for earlier in reversed(self._chunks):
                found = remaining.intersection(self._chunks[earlier])
                if found:
                    depends.add(earlier)
                    remaining -= found
                    if not remaining:
                        break
            shared = self._shared
            for key in common:
                shared[key] = shared.get(key, 1) + 1
            self._dirty |= depends
            self._dirty.add(index)
        known.update(ids)
        self._chunks[index] = ids
        self.tracked += len(ids)
        return depends

    def release(self, index: int) -> None:
        """Forget chunk ``index`` (it is applied): later chunks need not wait for it."""
        ids = self._chunks.pop(index, None)
        if ids is None:
            return
        self.tracked -= len(ids)
        if index not in self._dirty:
            self._ids.difference_update(ids)  # none of its IDs is held by another chunk
            return
        self._dirty.discard(index)
        known, shared = self._ids, self._shared
        for key in set(ids):
            holders = shared.get(key)
            if holders is None:
                known.discard(key)
            elif holders == 2:
                del shared[key]
            else:
                shared[key] = holders - 1

    def __contains__(self, index: object) -> bool:
        return index in self._chunks
