"""The default snapshot store: one SQLite file (standard library, WAL mode), many audiences.

Schema (plain, inspectable with the ``sqlite3`` shell):

- ``audiences(akey, base_url, project_key, name, valid, count, updated)``: one row per audience;
- ``members(akey, id, h, keys)``: what Batch accepted, ``h`` the hash of the ID's canonical
  attribute set and ``keys`` its sorted attribute keys (JSON);
- ``pending(akey, id)``: IDs whose last write was handed to the upload but not yet confirmed.

A run's source and plan live in ``temp`` tables of its own connection, on disk (``temp_store``
is ``FILE``) so that memory does not grow with the source; they vanish with the connection,
even after a ``kill -9``. The per-audience lock is an ``flock`` on a small file beside the
database, released by the operating system when its process dies.

All database work runs on one thread of the session's own, so the event loop never blocks on
the disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import os
import sqlite3
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any, TypeVar

import orjson

from ._store import (
    ADD,
    REMOVE,
    UNSET,
    PlanCounts,
    PlanRow,
    SnapshotInfo,
    SnapshotKey,
    StagedRow,
    SyncLockedError,
    SyncStateError,
)

__all__ = ["SqliteStore"]

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audiences (
    akey INTEGER PRIMARY KEY,
    base_url TEXT NOT NULL,
    project_key TEXT NOT NULL,
    name TEXT NOT NULL,
    valid INTEGER NOT NULL DEFAULT 0,
    count INTEGER NOT NULL DEFAULT 0,
    updated TEXT,
    UNIQUE (base_url, project_key, name)
);
CREATE TABLE IF NOT EXISTS members (
    akey INTEGER NOT NULL,
    id TEXT NOT NULL,
    h INTEGER NOT NULL,
    keys TEXT,
    PRIMARY KEY (akey, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pending (
    akey INTEGER NOT NULL,
    id TEXT NOT NULL,
    PRIMARY KEY (akey, id)
) WITHOUT ROWID;
"""

# ``src.n`` is the source row's stream position, from 1 (the rowid SQLite gives: one more than
# the largest, so positions stay contiguous when a duplicate is ignored). A row's attribute keys
# are not staged: they matter only for the few rows that change, and are read off their
# canonical attributes then (``_KEYS_OF``). ``diff`` holds the source rows that are new or whose
# hash changed, found batch by batch while the source is read.
_SCRATCH = """
CREATE TEMP TABLE src (n INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, h INTEGER NOT NULL,
                       attrs BLOB);
CREATE TEMP TABLE plan (pos INTEGER PRIMARY KEY, id TEXT NOT NULL, op INTEGER NOT NULL,
                        h INTEGER, keys TEXT, attrs BLOB);
CREATE TEMP TABLE diff (n INTEGER PRIMARY KEY, new INTEGER NOT NULL, lost INTEGER NOT NULL DEFAULT 0,
                        pend INTEGER NOT NULL DEFAULT 0);
"""

#: The sorted attribute keys (JSON text) of canonical attributes ``s.attrs`` (keys sorted already).
_KEYS_OF = ("CASE WHEN s.attrs IS NULL THEN NULL "
            "ELSE (SELECT json_group_array(key) FROM json_each(s.attrs)) END")

# The rows of a batch just staged (``n > :lo``) that are new to the snapshot or whose attributes
# changed: run by the store's thread while the next batch is read, so that the lookups in the
# snapshot cost no time of their own once the source is read.
_DIFF_BATCH = (
    "INSERT INTO diff (n, new) SELECT s.n, m.id IS NULL FROM src s "
    "LEFT JOIN members m ON m.akey = :a AND m.id = s.id "
    "WHERE s.n > :lo AND (m.id IS NULL OR m.h != s.h)"
)


# Staged rows go in by statements of many rows (``VALUES (...), (...), ...``): the rows are
# bound in one C loop and inserted in one step, without Python's lock, so the next batch is read
# meanwhile on another core. Measured against one JSON parameter per batch (``json_each``, whose
# ``json_extract`` per column parses each row again) and ``executemany`` (a step per row): less
# than two thirds of the time. Each row's keys (its third value) are bound but not used:
# numbered parameters skip them, which costs less than building new tuples without them.
# ``OR IGNORE``: a duplicate ID is left out (and found afterwards) instead of failing the
# statement. 1,000 rows a statement where SQLite takes 4,000 parameters (32,766 by default since
# 3.32), else 200 (its oldest limit is 999): the same work in SQLite, but each statement ends by
# taking Python's lock back from the reading thread, which can hold it for 5 ms, and on a busy
# machine each hand-over waits for the scheduler too, so fewer of them per batch is what lets
# the two threads run side by side (larger statements cost SQLite more: measured, 2,500 rows
# 1.4 times and 8,000 rows 3 times the time of 1,000).
_ROWS_PER_INSERT = 1000
_ROWS_PER_INSERT_OLD = 200
# ``sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER``, named there from Python 3.11 only.
_LIMIT_VARIABLE_NUMBER = 9


def _rows_per_insert(db: sqlite3.Connection) -> int:
    """Rows a staging statement may carry (4 parameters each) under the connection's limit."""
    getlimit = getattr(db, "getlimit", None)  # Python 3.11+
    if getlimit is not None:
        limit = int(getlimit(_LIMIT_VARIABLE_NUMBER))
    else:
        limit = 32766 if sqlite3.sqlite_version_info >= (3, 32, 0) else 999
    return _ROWS_PER_INSERT if limit >= 4 * _ROWS_PER_INSERT else _ROWS_PER_INSERT_OLD


@functools.lru_cache(maxsize=4)
def _insert_many(rows: int) -> str:
    values = ", ".join(f"(?{4 * i + 1}, ?{4 * i + 2}, ?{4 * i + 4})" for i in range(rows))
    return "INSERT OR IGNORE INTO src (id, h, attrs) VALUES " + values


def _lost_keys(old: str | None, attrs: str | bytes | None) -> int:
    """1 when the old attribute keys are not all among those of the canonical attributes
    ``attrs`` (SQL function)."""
    if old is None:
        return 0
    if attrs is None:
        return 1
    return 0 if set(orjson.loads(old)) <= orjson.loads(attrs).keys() else 1


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class _FileLock:
    """An exclusive, non-blocking lock on a file, held until released or the process dies."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[bytes] | None = None

    def acquire(self) -> bool:
        file = open(self.path, "a+b")  # noqa: SIM115 - held for the whole run
        try:
            if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
                import msvcrt

                msvcrt.locking(file.fileno(), msvcrt.LK_NBLCK, 1)
            else:
                import fcntl

                fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            file.close()
            return False
        self._file = file
        return True

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing the descriptor releases the lock
            self._file = None


class SqliteStore:
    """Snapshots in one SQLite file; the default store of :meth:`AsyncAudiencesClient.sync`.

    ``path`` may hold the snapshots of many audiences and projects. It is created (with its
    directory) on first use. Lock files named ``<path>-<key>.lock`` sit beside it.

    >>> SqliteStore("/tmp/audiences.sqlite3")
    SqliteStore('/tmp/audiences.sqlite3')
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r})"

    async def open(self, key: SnapshotKey) -> _SqliteSession:
        lock = _FileLock(Path(f"{self.path}-{key.digest}.lock"))
        session = _SqliteSession(self.path, key, lock)
        await session.start()
        return session


class _SqliteSession:
    def __init__(self, path: Path, key: SnapshotKey, lock: _FileLock) -> None:
        self._path = path
        self._key = key
        self._lock = lock
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="batch-audiences-sync")
        self._db: sqlite3.Connection | None = None
        self._akey: int | None = None
        self._staged = 0
        self._rows_per_insert = _ROWS_PER_INSERT
        self._full = False
        self._closed = False

    async def _run(self, func: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, functools.partial(func, *args))
        except sqlite3.Error as error:
            # Locked past the busy timeout, disk full, a damaged file...: one SDK error, named.
            raise SyncStateError(f"the sync state {self._path} failed: {error}") from error

    @property
    def db(self) -> sqlite3.Connection:
        assert self._db is not None
        return self._db

    # -- opening and closing ------------------------------------------------------------------

    async def start(self) -> None:
        try:
            await self._run(self._start)
        except BaseException:
            await self.close()
            raise

    def _start(self) -> None:
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise SyncStateError(f"cannot create the directory of the sync state {self._path}: "
                                 f"{error.strerror}") from None
        if not self._lock.acquire():
            raise SyncLockedError(self._key.name, str(self._lock.path))
        try:
            db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as error:
            raise SyncStateError(f"cannot open the sync state {self._path}: {error}") from None
        self._db = db
        try:
            db.execute("PRAGMA busy_timeout = 60000")  # other audiences of the same file
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
            db.execute("PRAGMA temp_store = FILE")
            db.execute("PRAGMA cache_size = -16384")
            self._rows_per_insert = _rows_per_insert(db)
            db.create_function("lost_keys", 2, _lost_keys, deterministic=True)
            db.executescript(_SCHEMA)
            db.executescript(_SCRATCH)
            db.execute("PRAGMA temp.cache_size = -16384")
            row = db.execute(
                "SELECT akey FROM audiences WHERE base_url = ? AND project_key = ? AND name = ?",
                (self._key.base_url, self._key.project_key, self._key.name),
            ).fetchone()
            self._akey = None if row is None else int(row[0])
        except sqlite3.DatabaseError as error:
            raise SyncStateError(f"the sync state {self._path} cannot be used: {error}") from None

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            await self._run(self._close)
        self._executor.shutdown(wait=False)

    def _close(self) -> None:
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
            self._db.close()
            self._db = None
        self._lock.release()

    # -- staging ------------------------------------------------------------------------------

    async def stage(self, rows: Sequence[StagedRow]) -> list[int]:
        return await self._run(self._stage, rows)

    def _stage(self, rows: Sequence[StagedRow]) -> list[int]:
        db = self.db
        if not db.in_transaction:
            db.execute("BEGIN")  # one transaction for the whole staging: temp tables only
        duplicates: list[int] = []
        flat = itertools.chain.from_iterable
        first = staged = self._staged
        step = self._rows_per_insert
        for start in range(0, len(rows), step):
            part = rows[start:start + step]
            inserted = db.execute(_insert_many(len(part)), list(flat(part))).rowcount
            if inserted != len(part):
                # A duplicate ID among these rows (left out): rare, so find which.
                duplicates += self._duplicates(part, start, staged)
            staged += inserted
        self._staged = staged
        if self._akey is not None:
            db.execute(_DIFF_BATCH, {"a": self._akey, "lo": first})
        return duplicates

    def _duplicates(self, part: Sequence[StagedRow], start: int, staged: int) -> list[int]:
        """Indexes (from ``start``) of the rows of ``part`` left out as duplicates: those after
        the first row of their ID that was staged from ``part``, and those staged before."""
        fresh = {row[0] for row in self.db.execute("SELECT id FROM src WHERE n > ?", (staged,))}
        duplicates = []
        for index, row in enumerate(part, start):
            if row[0] in fresh:
                fresh.discard(row[0])
            else:
                duplicates.append(index)
        return duplicates

    # -- planning -----------------------------------------------------------------------------

    async def info(self) -> SnapshotInfo:
        return await self._run(self._info)

    def _info(self) -> SnapshotInfo:
        db = self.db
        if db.in_transaction:
            db.execute("COMMIT")
        if self._akey is None:
            return SnapshotInfo(exists=False, valid=False, count=0, pending_in=0, pending_out=0)
        valid, count = db.execute(
            "SELECT valid, count FROM audiences WHERE akey = ?", (self._akey,)
        ).fetchone()
        pending_in, pending_out = db.execute(
            "SELECT count(m.id), count(*) - count(m.id) FROM pending p "
            "LEFT JOIN members m ON m.akey = p.akey AND m.id = p.id WHERE p.akey = ?",
            (self._akey,),
        ).fetchone()
        return SnapshotInfo(
            exists=True, valid=bool(valid), count=int(count),
            pending_in=int(pending_in), pending_out=int(pending_out),
        )

    async def plan(self, full: bool) -> PlanCounts:
        return await self._run(self._plan, full)

    def _plan(self, full: bool) -> PlanCounts:
        db = self.db
        if db.in_transaction:
            db.execute("COMMIT")
        staged = self._staged
        if full or self._akey is None:
            return PlanCounts(added=staged, removed=0, changed=0, unchanged=0, resent=0, unset=0,
                              size=staged)
        a = {"a": self._akey}
        db.execute("BEGIN")
        # ``diff`` holds the new and changed rows already (staging found them). Unconfirmed
        # writes of IDs still in the source join them, to be removed then added again.
        pending = db.execute("SELECT EXISTS (SELECT 1 FROM pending WHERE akey = :a)", a).fetchone()[0]
        if pending:  # not the common case (the last run ended cleanly)
            # ``CROSS JOIN``: ``pending`` first, then a lookup in ``src`` (never a scan of ``src``).
            db.execute(
                "INSERT OR IGNORE INTO diff (n, new) SELECT s.n, m.id IS NULL FROM pending p "
                "CROSS JOIN src s ON s.id = p.id LEFT JOIN members m ON m.akey = :a AND m.id = p.id "
                "WHERE p.akey = :a", a,
            )
            db.execute(
                "UPDATE diff SET pend = 1, lost = 1 WHERE n IN "
                "(SELECT s.n FROM pending p CROSS JOIN src s ON s.id = p.id WHERE p.akey = :a)", a,
            )
        # A changed ID that lost an attribute key is removed before it is added again.
        db.execute(
            "UPDATE diff SET lost = 1 WHERE NOT new AND NOT pend AND n IN (SELECT s.n FROM diff d "
            "CROSS JOIN src s ON s.n = d.n CROSS JOIN members m ON m.akey = :a AND m.id = s.id "
            "WHERE NOT d.new AND NOT d.pend AND lost_keys(m.keys, s.attrs))", a,
        )
        # 1. removes that a re-add at the end of the stream follows
        db.execute(
            "INSERT INTO plan (id, op) SELECT s.id, :op FROM diff d JOIN src s ON s.n = d.n "
            "WHERE d.lost ORDER BY d.n", {"op": UNSET},
        )
        unset = db.execute("SELECT count(*) FROM plan").fetchone()[0]
        # 2. IDs gone from the source, then unconfirmed writes of IDs gone from it
        db.execute(
            "INSERT INTO plan (id, op) SELECT m.id, :op FROM members m WHERE m.akey = :a "
            "AND NOT EXISTS (SELECT 1 FROM src s WHERE s.id = m.id)", {"op": REMOVE, **a},
        )
        removed = db.execute("SELECT count(*) FROM plan").fetchone()[0] - unset
        db.execute(
            "INSERT INTO plan (id, op) SELECT p.id, :op FROM pending p WHERE p.akey = :a "
            "AND NOT EXISTS (SELECT 1 FROM src s WHERE s.id = p.id) "
            "AND NOT EXISTS (SELECT 1 FROM members m WHERE m.akey = :a AND m.id = p.id)",
            {"op": REMOVE, **a},
        )
        gone_pending = db.execute("SELECT count(*) FROM plan").fetchone()[0] - unset - removed
        # 3. adds (new IDs, changed attributes), then the re-adds of step 1, in the same order
        for lost in (0, 1):
            db.execute(
                f"INSERT INTO plan (id, op, h, keys, attrs) SELECT s.id, :op, s.h, {_KEYS_OF}, s.attrs "
                "FROM diff d JOIN src s ON s.n = d.n WHERE d.lost = :lost ORDER BY d.n",
                {"op": ADD, "lost": lost},
            )
        new, changed, pend, total = db.execute(
            "SELECT coalesce(sum(new AND NOT pend), 0), coalesce(sum(NOT new AND NOT pend), 0), "
            "coalesce(sum(pend), 0), count(*) FROM diff"
        ).fetchone()
        size = db.execute("SELECT count(*) FROM plan").fetchone()[0]
        db.execute("COMMIT")
        return PlanCounts(
            added=int(new), removed=int(removed), changed=int(changed),
            unchanged=staged - int(total), resent=int(pend) + int(gone_pending),
            unset=int(unset), size=int(size),
        )

    # -- sending and recording ----------------------------------------------------------------

    async def begin(self, full: bool) -> None:
        await self._run(self._begin, full)

    def _begin(self, full: bool) -> None:
        self._full = full
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        if self._akey is None:
            self._akey = db.execute(
                "INSERT INTO audiences (base_url, project_key, name, valid, count, updated) "
                "VALUES (?, ?, ?, 0, 0, ?) RETURNING akey",
                (self._key.base_url, self._key.project_key, self._key.name, _now()),
            ).fetchone()[0]
        elif full:
            db.execute("UPDATE audiences SET valid = 0, updated = ? WHERE akey = ?", (_now(), self._akey))
        db.execute("COMMIT")

    async def read(self, start: int, limit: int) -> list[PlanRow]:
        return await self._run(self._read, start, limit)

    def _read(self, start: int, limit: int) -> list[PlanRow]:
        db = self.db
        if self._full:
            where = "FROM src WHERE n > :lo AND n <= :hi"
            rows = db.execute(f"SELECT id, {ADD}, attrs {where} ORDER BY n",
                              {"lo": start, "hi": start + limit}).fetchall()
        else:
            where = "FROM plan WHERE pos > :lo AND pos <= :hi"
            rows = db.execute(f"SELECT id, op, attrs {where} ORDER BY pos",
                              {"lo": start, "hi": start + limit}).fetchall()
        db.execute("BEGIN IMMEDIATE")
        db.execute(f"INSERT OR IGNORE INTO pending (akey, id) SELECT :a, id {where}",
                   {"a": self._akey, "lo": start, "hi": start + limit})
        db.execute("COMMIT")
        return rows

    async def record(self, start: int, count: int, full: bool) -> None:
        await self._run(self._record_full if full else self._record, start, count)

    def _record(self, start: int, count: int) -> None:
        db = self.db
        span = {"a": self._akey, "lo": start, "hi": start + count}
        in_span = "SELECT id FROM plan WHERE pos > :lo AND pos <= :hi"
        db.execute("BEGIN IMMEDIATE")
        try:
            gone = db.execute(
                f"SELECT count(*) FROM members WHERE akey = :a AND id IN ({in_span} AND op = {REMOVE})",
                span,
            ).fetchone()[0]
            new = db.execute(
                f"SELECT count(*) FROM plan p WHERE p.pos > :lo AND p.pos <= :hi AND p.op = {ADD} "
                "AND NOT EXISTS (SELECT 1 FROM members m WHERE m.akey = :a AND m.id = p.id)", span,
            ).fetchone()[0]
            db.execute(f"DELETE FROM members WHERE akey = :a AND id IN ({in_span} AND op = {REMOVE})", span)
            db.execute(
                f"INSERT INTO members (akey, id, h, keys) SELECT :a, id, h, keys FROM plan "
                f"WHERE pos > :lo AND pos <= :hi AND op = {ADD} "
                "ON CONFLICT (akey, id) DO UPDATE SET h = excluded.h, keys = excluded.keys", span,
            )
            db.execute(
                f"DELETE FROM pending WHERE akey = :a AND id IN ({in_span} AND op != {UNSET})", span
            )
            db.execute("UPDATE audiences SET count = count + :d, updated = :t WHERE akey = :a",
                       {"a": self._akey, "d": new - gone, "t": _now()})
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _record_full(self, start: int, count: int) -> None:
        db = self.db
        span = {"a": self._akey, "lo": start, "hi": start + count}
        db.execute("BEGIN IMMEDIATE")
        try:
            if start == 0:
                # The replace itself: what Batch holds is now this chunk, and later chunks of
                # this run that were read already (still pending).
                db.execute("DELETE FROM members WHERE akey = :a", span)
                db.execute(
                    "DELETE FROM pending WHERE akey = :a AND NOT EXISTS "
                    "(SELECT 1 FROM src s WHERE s.id = pending.id AND s.n > :hi)", span,
                )
                db.execute("UPDATE audiences SET valid = 1, count = 0 WHERE akey = :a", span)
            else:
                db.execute(
                    "DELETE FROM pending WHERE akey = :a AND id IN "
                    "(SELECT id FROM src WHERE n > :lo AND n <= :hi)", span,
                )
            db.execute(
                f"INSERT INTO members (akey, id, h, keys) SELECT :a, s.id, s.h, {_KEYS_OF} FROM src s "
                "WHERE s.n > :lo AND s.n <= :hi "
                "ON CONFLICT (akey, id) DO UPDATE SET h = excluded.h, keys = excluded.keys", span,
            )
            db.execute("UPDATE audiences SET count = count + :d, updated = :t WHERE akey = :a",
                       {"a": self._akey, "d": count, "t": _now()})
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
