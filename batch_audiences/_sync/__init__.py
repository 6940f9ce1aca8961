"""Audience sync: keep an audience equal to a source, sending only what changed.

:func:`run_sync` is the engine behind :meth:`AsyncAudiencesClient.sync`; the snapshot stores are
:class:`SqliteStore` (default) and :class:`PostgresStore` (extra ``[postgres]``).
"""

from ._engine import default_state_path, resolve_store, run_sync
from ._postgres import PostgresStore
from ._report import FullReason, SyncMode, SyncReport
from ._sqlite import SqliteStore
from ._store import (
    PlanCounts,
    SnapshotInfo,
    SnapshotKey,
    SnapshotStore,
    SyncLockedError,
    SyncSession,
    SyncStateError,
)

__all__ = [
    "FullReason",
    "PlanCounts",
    "PostgresStore",
    "SnapshotInfo",
    "SnapshotKey",
    "SnapshotStore",
    "SqliteStore",
    "SyncLockedError",
    "SyncMode",
    "SyncReport",
    "SyncSession",
    "SyncStateError",
    "default_state_path",
    "resolve_store",
    "run_sync",
]
