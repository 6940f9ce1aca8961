"""The snapshot store: where a sync keeps what it last pushed, and computes the difference.

A store holds, per audience (keyed by API base URL, project key and audience name), the IDs Batch
accepted with a hash of each one's attribute set, plus the IDs whose last write was sent but not
confirmed (*pending*). One sync of an audience at a time: :meth:`SnapshotStore.open` takes the
audience's lock or raises :class:`SyncLockedError`.

A run, on the :class:`SyncSession` it opens:

1. ``stage`` the source, batch by batch, into a scratch table (duplicates reported back);
2. ``info``, then ``plan``: the database computes the difference (anti-joins on the indexed ID
   columns, attribute sets compared by hash) into an ordered plan;
3. ``begin``, then ``read`` the plan page by page for the upload (each page is marked pending
   *before* it is handed over, so a write that may have gone out is never forgotten), and
   ``record`` each chunk Batch acknowledged, in one transaction;
4. ``close`` (the lock is released; scratch tables go).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Final, Protocol, runtime_checkable

import attrs

from .._errors import BatchAudiencesError

__all__ = [
    "ADD",
    "REMOVE",
    "UNSET",
    "PlanCounts",
    "SnapshotInfo",
    "SnapshotKey",
    "SnapshotStore",
    "StagedRow",
    "SyncLockedError",
    "SyncSession",
    "SyncStateError",
]

#: Plan operations. ``REMOVE``: the ID left the source (or an unconfirmed add did). ``UNSET``: a
#: remove whose re-add comes later in the plan (the ID lost an attribute key, or its last write
#: is unconfirmed): recorded only with that re-add. ``ADD``: add with the source's attributes.
REMOVE: Final = 0
UNSET: Final = 1
ADD: Final = 2

#: One source item as staged: ID, attribute hash, sorted attribute keys (JSON text, ``None``
#: without attributes) and the canonical attributes (JSON text, ``None`` without).
StagedRow = tuple[str, int, "str | None", "str | None"]
#: One plan row as read for sending: ID, operation, canonical attributes (JSON text or bytes).
PlanRow = tuple[str, int, "str | bytes | None"]


class SyncStateError(BatchAudiencesError):
    """The snapshot store cannot be used (unreadable file, unreachable database, missing extra)."""


class SyncLockedError(SyncStateError):
    """Another sync of the same audience holds its lock; ``lock`` names it."""

    def __init__(self, name: str, lock: str) -> None:
        super().__init__(
            f"another sync of audience {name!r} is running (it holds the lock {lock}); "
            "try again once it has finished"
        )
        self.name = name
        self.lock = lock


@attrs.frozen
class SnapshotKey:
    """Which audience a snapshot belongs to; a snapshot is never used for another."""

    base_url: str
    project_key: str
    name: str

    @property
    def digest(self) -> str:
        """A short stable name for the key (lock names)."""
        text = "\x1f".join((self.base_url, self.project_key, self.name))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@attrs.frozen
class SnapshotInfo:
    """What the store knows of an audience before a run.

    ``exists``: the store has a record of it. ``valid``: its members are what Batch accepted
    (false while a full replace has not had its first chunk accepted). ``count``: members recorded.
    ``pending_in`` / ``pending_out``: unconfirmed IDs with / without a member row, so Batch's
    count may be anywhere in ``[count - pending_in, count + pending_out]``.
    """

    exists: bool
    valid: bool
    count: int
    pending_in: int
    pending_out: int

    def explains(self, nb_ids: int) -> bool:
        """Whether Batch holding ``nb_ids`` IDs agrees with this snapshot."""
        return self.count - self.pending_in <= nb_ids <= self.count + self.pending_out


@attrs.frozen
class PlanCounts:
    """The plan a store computed: counts for the report, and the layout of the stream.

    ``size`` actions in all; the first ``unset`` are removes whose re-adds are the last ``unset``.
    """

    added: int
    removed: int
    changed: int
    unchanged: int
    resent: int
    unset: int
    size: int


@runtime_checkable
class SyncSession(Protocol):
    """One locked run on one audience's snapshot (see the module docstring)."""

    async def stage(self, rows: Sequence[StagedRow]) -> list[int]:
        """Stage source rows in order; return the indexes (in ``rows``) of duplicate IDs, not staged."""
        ...

    async def info(self) -> SnapshotInfo:
        """What the store holds for the audience."""
        ...

    async def plan(self, full: bool) -> PlanCounts:
        """Compute the plan: every staged row (``full``) or the difference with the snapshot."""
        ...

    async def begin(self, full: bool) -> None:
        """About to send: for ``full``, mark the snapshot unusable until the replace is accepted."""
        ...

    async def read(self, start: int, limit: int) -> list[PlanRow]:
        """Plan rows at stream positions ``start``…, marked pending before they are returned."""
        ...

    async def record(self, start: int, count: int, full: bool) -> None:
        """Batch accepted stream positions ``[start, start + count)``: record it, atomically."""
        ...

    async def close(self) -> None:
        """Release the lock and drop the scratch data. Safe to call twice."""
        ...


@runtime_checkable
class SnapshotStore(Protocol):
    """Where snapshots live: :class:`SqliteStore` (default), :class:`PostgresStore`, or yours."""

    async def open(self, key: SnapshotKey) -> SyncSession:
        """Lock ``key``'s audience and open a run on it; :class:`SyncLockedError` if taken."""
        ...
