"""The ordering rule of ``upload``: which earlier chunks a chunk must wait for.

Batch applies writes asynchronously, and two requests in flight at once may be applied in
either order. The final content must nevertheless equal applying the stream one item at a time,
so two chunks whose actions on a shared ID do not commute must never be open to reordering: the
later one is sent only once the earlier one is acknowledged *and* applied.

Every action sets the state of its ID to a constant (absent, or present with given attributes;
an add without attributes sets ``{}``), so the last one applied wins, and two actions on an ID
commute exactly when they set the same state. Hence a chunk's *kind*:

- :data:`PLAIN_ADDS`: only adds without attributes. Two such chunks commute on every ID.
- :data:`REMOVES`: only removes. Two such chunks commute on every ID.
- :data:`MIXED`: anything else (attributes, or adds and removes together), assumed to commute
  with nothing.

:class:`OrderTracker` keeps the IDs of the :data:`MIXED` chunks not yet known to be applied,
and answers "which earlier chunks share an ID with this one?" over them, in O(chunk) C-level set
operations when the answer is "none" and exactly otherwise. It keeps each ID as a fixed-size
digest (its 64-bit ``hash``), never the string: its memory does not grow with the length of the
IDs. Two IDs with the same digest are taken for one, which can only make a chunk wait for one it
need not wait for (the rule stays sound; it never lets a pair be reordered). Chunks of a commutative kind are
never recorded by ID, which is what makes the common uploads (all plain adds, all removes) cost
no set work at all: they are only counted, by kind. Since their IDs are not known, a chunk of
another kind conservatively waits for every unapplied one of them (a barrier), which is correct
and rare (a stream changing from adds to removes, or to attributes). In full, chunk ``j`` waits
for:

- the last tracked (:data:`MIXED`) chunk holding each ID it shares with one (the holders of an
  ID wait for each other in turn, so every earlier holder is applied before ``j`` is sent);
- every unapplied untracked chunk of a kind other than its own (those of its own commute with
  it; a :data:`MIXED` chunk waits for all of them).

An untracked chunk ``u`` that an earlier chunk ``i`` does not commute with is therefore either
waited for by ``i``'s successors (barrier), or waits for ``i`` itself (tracked ``i``: by ID;
untracked ``i`` of another kind: barrier); no pair that could be reordered harmfully is left.

A chunk is released once it is confirmed applied; a chunk that failed is never released, so that
every later chunk it orders against is held back too (and a resume that sends the failed chunks
again still applies the stream in order).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

__all__ = ["MIXED", "PLAIN_ADDS", "REMOVES", "OrderTracker"]

#: A chunk of adds without attributes only.
PLAIN_ADDS: Final = 0
#: A chunk of removes only.
REMOVES: Final = 1
#: Any other chunk: attributes, or adds and removes together.
MIXED: Final = 2


class OrderTracker:
    """The chunks not yet confirmed applied, and which of them a new one must wait for.

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

    Chunks of a commutative kind are only counted: they wait for each other never, and a chunk
    of another kind waits for all of them.

    >>> tracker = OrderTracker()
    >>> tracker.register(0, ["a"], PLAIN_ADDS), tracker.register(1, ["a"], PLAIN_ADDS)
    (set(), set())
    >>> sorted(tracker.register(2, ["z"], REMOVES))
    [0, 1]
    >>> tracker.tracked  # no ID is held for those
    0

    The common case for a :data:`MIXED` chunk, sharing no ID with any tracked one, costs a digest
    and three C-level set operations per ID over its life (``isdisjoint``, ``update``,
    ``difference_update``), and under 200 bytes per ID held (87 at 200,000 IDs: a digest, an int
    shared by the chunk's list and the set of digests), whatever the IDs' length. Only a chunk that does
    share IDs takes the exact slow path: finding, newest first, the last chunk holding each
    shared ID, and counting how many tracked chunks hold it, so that releasing one of them keeps
    the ID tracked for the others.
    """

    __slots__ = ("_chunks", "_dirty", "_ids", "_kinds", "_shared", "_untracked", "tracked")

    def __init__(self) -> None:
        # IDs are held as digests (hash(id)): fixed size, whatever the length of the IDs.
        self._ids: set[int] = set()  # the digest of every ID held by a tracked chunk
        # chunk -> its digests (duplicates included), in registration order; the int objects are
        # shared with the set, so a digest costs one int, one list slot and one set slot
        self._chunks: dict[int, list[int]] = {}
        self._dirty: set[int] = set()  # tracked chunks sharing an ID with another tracked chunk
        self._shared: dict[int, int] = {}  # digest -> number of tracked chunks holding it, when over 1
        self._untracked: dict[int, int] = {}  # unapplied chunk of a commutative kind -> its kind
        self._kinds = [0, 0]  # how many of those there are, per kind
        #: How many IDs are held for the chunks tracked: the tracker's memory, in IDs.
        self.tracked = 0

    @property
    def untracked(self) -> int:
        """How many chunks of a commutative kind are not yet confirmed applied."""
        return len(self._untracked)

    def register(self, index: int, ids: Iterable[str], kind: int = MIXED) -> set[int]:
        """Record chunk ``index`` (registered in stream order) of ``kind`` and return the earlier
        chunks it must wait for (see the module docstring). Of a :data:`MIXED` chunk the tracker
        keeps the digests of ``ids``, never the strings."""
        if kind != MIXED:
            depends = set()
            if self._ids:  # tracked chunks may share an ID with this one: digest its IDs to look
                depends = self._holders(index, list(map(hash, ids)), record=False)
            if self._kinds[1 - kind]:
                depends.update(i for i, other in self._untracked.items() if other != kind)
            self._untracked[index] = kind
            self._kinds[kind] += 1
            return depends
        digests = list(map(hash, ids))
        depends = self._holders(index, digests, record=True) if self._ids else set()
        if self._untracked:
            depends.update(self._untracked)
        self._ids.update(digests)
        self._chunks[index] = digests
        self.tracked += len(digests)
        return depends

    def _holders(self, index: int, ids: list[int], record: bool) -> set[int]:
        """For each ID of ``ids`` held by a tracked chunk, the last such chunk; with ``record``,
        note that ``index`` is about to hold the shared IDs too."""
        known = self._ids
        depends: set[int] = set()
        if known.isdisjoint(ids):
            return depends
        common = known.intersection(ids)
        remaining = set(common)
        for earlier in reversed(self._chunks):
            found = remaining.intersection(self._chunks[earlier])
            if found:
                depends.add(earlier)
                remaining -= found
                if not remaining:
                    break
        if record:
            shared = self._shared
            for key in common:
                shared[key] = shared.get(key, 1) + 1
            self._dirty |= depends
            self._dirty.add(index)
        return depends

    def release(self, index: int) -> None:
        """Forget chunk ``index`` (it is applied): later chunks need not wait for it."""
        kind = self._untracked.pop(index, None)
        if kind is not None:
            self._kinds[kind] -= 1
            return
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
        return index in self._chunks or index in self._untracked
