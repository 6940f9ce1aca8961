"""The shared snapshot store: PostgreSQL through psycopg 3 (async), extra ``[postgres]``.

For jobs that run on many machines (throwaway CI runners, several schedulers): every run reads
and writes one snapshot. The layout is the SQLite store's (see :mod:`._sqlite`), in the schema
``batch_audiences``; a run's source and plan live in temporary tables of its own connection.
The per-audience lock is a session advisory lock, released by the server when the connection
ends, however the process ended. Source rows are staged with ``COPY``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar
from urllib.parse import urlsplit, urlunsplit

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

if TYPE_CHECKING:
    import psycopg

__all__ = ["PostgresStore"]

# Schema creation by concurrent first runs is serialised by this transaction lock.
_SCHEMA_LOCK = 0x6261_7379_6E63  # "basync"
_SCHEMA = [
    "CREATE SCHEMA IF NOT EXISTS batch_audiences",
    """CREATE TABLE IF NOT EXISTS batch_audiences.audiences (
        akey bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        base_url text NOT NULL, project_key text NOT NULL, name text NOT NULL,
        valid boolean NOT NULL DEFAULT false, count bigint NOT NULL DEFAULT 0,
        updated timestamptz, UNIQUE (base_url, project_key, name))""",
    """CREATE TABLE IF NOT EXISTS batch_audiences.members (
        akey bigint NOT NULL, id text NOT NULL, h bigint NOT NULL, keys jsonb,
        PRIMARY KEY (akey, id))""",
    """CREATE TABLE IF NOT EXISTS batch_audiences.pending (
        akey bigint NOT NULL, id text NOT NULL, PRIMARY KEY (akey, id))""",
]
_SCRATCH = [
    "CREATE TEMP TABLE src (n bigint PRIMARY KEY, id text NOT NULL UNIQUE, h bigint NOT NULL, "
    "keys jsonb, attrs bytea)",
    "CREATE TEMP TABLE plan (pos bigint PRIMARY KEY, id text NOT NULL, op smallint NOT NULL, "
    "h bigint, keys jsonb, attrs bytea)",
    "CREATE TEMP TABLE diff (n bigint PRIMARY KEY, new boolean NOT NULL, lost boolean NOT NULL, "
    "pend boolean NOT NULL)",
]
_M = "batch_audiences.members"
_P = "batch_audiences.pending"
_A = "batch_audiences.audiences"


def _redacted(url: str) -> str:
    """``url`` without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = (parts.username or "") + ":***"
    return urlunsplit(parts._replace(netloc=f"{user}@{netloc[-1]}"))


P = ParamSpec("P")
T = TypeVar("T")


def _guarded(
    method: Callable[Concatenate[_PostgresSession, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[_PostgresSession, P], Coroutine[Any, Any, T]]:
    """A database error during a run, as one SDK error without the password."""

    @functools.wraps(method)
    async def guarded(self: _PostgresSession, /, *args: P.args, **kwargs: P.kwargs) -> T:
        import psycopg

        try:
            return await method(self, *args, **kwargs)
        except psycopg.Error as error:
            raise SyncStateError(f"the sync state {self.where} failed: {self.scrub(error)}") from None

    return guarded


def _bytea(row: StagedRow) -> tuple[str, int, str | None, bytes | None]:
    """A staged row for the ``bytea`` column (text there would be read with escapes)."""
    custom_id, h, keys, attrs = row
    return custom_id, h, keys, None if attrs is None else attrs.encode()


def _lock_id(key: SnapshotKey) -> int:
    return int.from_bytes(bytes.fromhex(key.digest), "big", signed=True)


class PostgresStore:
    """Snapshots in a PostgreSQL database (``state="postgresql://user:pass@host/db"``).

    Needs the ``[postgres]`` extra (psycopg 3). Tables are created, in the schema
    ``batch_audiences``, on first use. The password never shows in a repr or a message.

    >>> PostgresStore("postgresql://sync:s3cret@db.internal/marketing")
    PostgresStore('postgresql://sync:***@db.internal/marketing')
    """

    def __init__(self, url: str) -> None:
        self._url = url

    def __repr__(self) -> str:
        return f"PostgresStore({_redacted(self._url)!r})"

    def _scrub(self, error: BaseException) -> str:
        text = " ".join(str(error).split())
        password = urlsplit(self._url).password
        return text.replace(password, "***") if password else text

    async def open(self, key: SnapshotKey) -> _PostgresSession:
        try:
            import psycopg
        except ImportError:
            raise SyncStateError(
                "a postgresql:// sync state needs psycopg: pip install 'batch-audiences[postgres]'"
            ) from None
        try:
            conn = await psycopg.AsyncConnection.connect(self._url, autocommit=True)
        except psycopg.Error as error:
            raise SyncStateError(
                f"cannot connect to the sync state {_redacted(self._url)}: {self._scrub(error)}"
            ) from None
        session = _PostgresSession(conn, key, _redacted(self._url), self._scrub)
        try:
            await session.start()
        except psycopg.Error as error:
            await session.close()
            raise SyncStateError(
                f"the sync state {_redacted(self._url)} cannot be used: {self._scrub(error)}"
            ) from None
        except BaseException:
            await session.close()
            raise
        return session


class _PostgresSession:
    def __init__(
        self, conn: psycopg.AsyncConnection[Any], key: SnapshotKey, where: str,
        scrub: Callable[[BaseException], str],
    ) -> None:
        self._conn = conn
        self._key = key
        self.where = where
        self.scrub = scrub
        # The upload reads the plan while acknowledgements are recorded: on one connection, a
        # page's statements must not land inside a chunk's transaction.
        self._mutex = asyncio.Lock()
        self._akey: int | None = None
        self._staged = 0
        self._full = False
        self._closed = False
        self._locked = False

    async def _one(self, query: str, params: Any = None) -> Any:
        cursor = await self._conn.execute(query, params)
        return await cursor.fetchone()

    async def start(self) -> None:
        locked = await self._one("SELECT pg_try_advisory_lock(%s)", (_lock_id(self._key),))
        if not locked[0]:
            raise SyncLockedError(self._key.name, f"pg_advisory_lock({_lock_id(self._key)}) on {self.where}")
        self._locked = True
        async with self._conn.transaction():
            await self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            for statement in _SCHEMA:
                await self._conn.execute(statement)
        for statement in _SCRATCH:
            await self._conn.execute(statement)
        row = await self._one(
            f"SELECT akey FROM {_A} WHERE base_url = %s AND project_key = %s AND name = %s",
            (self._key.base_url, self._key.project_key, self._key.name),
        )
        self._akey = None if row is None else int(row[0])

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._locked:
            # Closing the connection frees the lock only once the server notices the disconnect,
            # a moment later: a sync started right after this one would find it still held.
            with contextlib.suppress(Exception):
                await self._conn.execute("SELECT pg_advisory_unlock(%s)", (_lock_id(self._key),))
        with contextlib.suppress(Exception):
            await self._conn.close()  # ends the session: temp tables go, and the lock if still held

    @_guarded
    async def stage(self, rows: Sequence[StagedRow]) -> list[int]:
        import psycopg

        first = self._staged
        try:
            async with self._conn.transaction(), self._conn.cursor() as cursor, cursor.copy(
                "COPY src (n, id, h, keys, attrs) FROM STDIN"
            ) as copy:
                for index, row in enumerate(rows):
                    await copy.write_row((first + index, *_bytea(row)))
        except psycopg.errors.UniqueViolation:
            # A duplicate ID in this batch: rare, so find it row by row.
            duplicates = []
            n = first
            async with self._conn.transaction():
                for index, row in enumerate(rows):
                    added = await self._one(
                        "INSERT INTO src (n, id, h, keys, attrs) VALUES (%s, %s, %s, %s, %s) "
                        "ON CONFLICT (id) DO NOTHING RETURNING n", (n, *_bytea(row)),
                    )
                    if added is None:
                        duplicates.append(index)
                    else:
                        n += 1
            self._staged = n
            return duplicates
        self._staged = first + len(rows)
        return []

    @_guarded
    async def info(self) -> SnapshotInfo:
        if self._akey is None:
            return SnapshotInfo(exists=False, valid=False, count=0, pending_in=0, pending_out=0)
        valid, count = await self._one(f"SELECT valid, count FROM {_A} WHERE akey = %s", (self._akey,))
        pending_in, pending_out = await self._one(
            f"SELECT count(m.id), count(*) - count(m.id) FROM {_P} p "
            f"LEFT JOIN {_M} m ON m.akey = p.akey AND m.id = p.id WHERE p.akey = %s", (self._akey,),
        )
        return SnapshotInfo(exists=True, valid=bool(valid), count=int(count),
                            pending_in=int(pending_in), pending_out=int(pending_out))

    async def _count(self, query: str) -> int:
        return int((await self._one(query))[0])

    @_guarded
    async def plan(self, full: bool) -> PlanCounts:
        staged = self._staged
        if full or self._akey is None:
            return PlanCounts(added=staged, removed=0, changed=0, unchanged=0, resent=0, unset=0,
                              size=staged)
        a = {"a": self._akey}
        conn = self._conn
        async with conn.transaction():
            await conn.execute(
                "INSERT INTO diff (n, new, lost, pend) "
                "SELECT s.n, m.id IS NULL, p.id IS NOT NULL OR (m.id IS NOT NULL AND m.keys IS NOT NULL "
                "AND NOT coalesce(s.keys @> m.keys, false)), p.id IS NOT NULL "
                f"FROM src s LEFT JOIN {_M} m ON m.akey = %(a)s AND m.id = s.id "
                f"LEFT JOIN {_P} p ON p.akey = %(a)s AND p.id = s.id "
                "WHERE m.id IS NULL OR m.h <> s.h OR p.id IS NOT NULL", a,
            )
            await conn.execute(
                "INSERT INTO plan (pos, id, op) SELECT row_number() OVER (ORDER BY d.n), s.id, %(op)s "
                "FROM diff d JOIN src s ON s.n = d.n WHERE d.lost", {"op": UNSET},
            )
            unset = await self._count("SELECT count(*) FROM plan")
            await conn.execute(
                "INSERT INTO plan (pos, id, op) SELECT %(base)s + row_number() OVER (ORDER BY m.id), "
                f"m.id, %(op)s FROM {_M} m WHERE m.akey = %(a)s "
                "AND NOT EXISTS (SELECT 1 FROM src s WHERE s.id = m.id)",
                {"op": REMOVE, "base": unset, **a},
            )
            removed = await self._count("SELECT count(*) FROM plan") - unset
            await conn.execute(
                "INSERT INTO plan (pos, id, op) SELECT %(base)s + row_number() OVER (ORDER BY p.id), "
                f"p.id, %(op)s FROM {_P} p WHERE p.akey = %(a)s "
                "AND NOT EXISTS (SELECT 1 FROM src s WHERE s.id = p.id) "
                f"AND NOT EXISTS (SELECT 1 FROM {_M} m WHERE m.akey = %(a)s AND m.id = p.id)",
                {"op": REMOVE, "base": unset + removed, **a},
            )
            size = await self._count("SELECT count(*) FROM plan")
            gone_pending = size - unset - removed
            for lost in (False, True):
                await conn.execute(
                    "INSERT INTO plan (pos, id, op, h, keys, attrs) SELECT %(base)s + row_number() "
                    "OVER (ORDER BY d.n), s.id, %(op)s, s.h, s.keys, s.attrs "
                    "FROM diff d JOIN src s ON s.n = d.n WHERE d.lost = %(lost)s",
                    {"op": ADD, "lost": lost, "base": size},
                )
                size = await self._count("SELECT count(*) FROM plan")
            new, changed, pend, total = await self._one(
                "SELECT count(*) FILTER (WHERE new AND NOT pend), count(*) FILTER (WHERE NOT new AND "
                "NOT pend), count(*) FILTER (WHERE pend), count(*) FROM diff"
            )
        return PlanCounts(
            added=int(new), removed=removed, changed=int(changed), unchanged=staged - int(total),
            resent=int(pend) + gone_pending, unset=unset, size=size,
        )

    @_guarded
    async def begin(self, full: bool) -> None:
        self._full = full
        async with self._conn.transaction():
            if self._akey is None:
                row = await self._one(
                    f"INSERT INTO {_A} (base_url, project_key, name, updated) VALUES (%s, %s, %s, now()) "
                    "ON CONFLICT (base_url, project_key, name) DO UPDATE SET valid = false "
                    "RETURNING akey",
                    (self._key.base_url, self._key.project_key, self._key.name),
                )
                self._akey = int(row[0])
            elif full:
                await self._conn.execute(
                    f"UPDATE {_A} SET valid = false, updated = now() WHERE akey = %s", (self._akey,)
                )

    @_guarded
    async def read(self, start: int, limit: int) -> list[PlanRow]:
        async with self._mutex:
            return await self._read(start, limit)

    async def _read(self, start: int, limit: int) -> list[PlanRow]:
        if self._full:
            where = "FROM src WHERE n >= %(lo)s AND n < %(hi)s"
            select = f"SELECT id, {ADD}, attrs {where} ORDER BY n"
        else:
            where = "FROM plan WHERE pos > %(lo)s AND pos <= %(hi)s"
            select = f"SELECT id, op, attrs {where} ORDER BY pos"
        span = {"a": self._akey, "lo": start, "hi": start + limit}
        cursor = await self._conn.execute(select, span)
        rows = await cursor.fetchall()
        async with self._conn.transaction():
            await self._conn.execute(
                f"INSERT INTO {_P} (akey, id) SELECT %(a)s, id {where} ON CONFLICT DO NOTHING", span
            )
        return [(custom_id, int(op), None if blob is None else bytes(blob)) for custom_id, op, blob in rows]

    @_guarded
    async def record(self, start: int, count: int, full: bool) -> None:
        async with self._mutex:
            await self._record(start, count, full)

    async def _record(self, start: int, count: int, full: bool) -> None:
        span = {"a": self._akey, "lo": start, "hi": start + count}
        conn = self._conn
        async with conn.transaction():
            if full:
                if start == 0:
                    await conn.execute(f"DELETE FROM {_M} WHERE akey = %(a)s", span)
                    await conn.execute(
                        f"DELETE FROM {_P} p WHERE p.akey = %(a)s AND NOT EXISTS "
                        "(SELECT 1 FROM src s WHERE s.id = p.id AND s.n >= %(hi)s)", span,
                    )
                    await conn.execute(f"UPDATE {_A} SET valid = true, count = 0 WHERE akey = %(a)s", span)
                else:
                    await conn.execute(
                        f"DELETE FROM {_P} WHERE akey = %(a)s AND id IN "
                        "(SELECT id FROM src WHERE n >= %(lo)s AND n < %(hi)s)", span,
                    )
                added = await conn.execute(
                    f"INSERT INTO {_M} (akey, id, h, keys) SELECT %(a)s, id, h, keys FROM src "
                    "WHERE n >= %(lo)s AND n < %(hi)s ON CONFLICT (akey, id) DO UPDATE "
                    "SET h = excluded.h, keys = excluded.keys", span,
                )
                delta = added.rowcount
            else:
                in_span = "SELECT id FROM plan WHERE pos > %(lo)s AND pos <= %(hi)s"
                new = await self._count_span(
                    f"SELECT count(*) FROM plan p WHERE p.pos > %(lo)s AND p.pos <= %(hi)s AND p.op = {ADD} "
                    f"AND NOT EXISTS (SELECT 1 FROM {_M} m WHERE m.akey = %(a)s AND m.id = p.id)", span,
                )
                gone = await conn.execute(
                    f"DELETE FROM {_M} WHERE akey = %(a)s AND id IN ({in_span} AND op = {REMOVE})", span
                )
                await conn.execute(
                    f"INSERT INTO {_M} (akey, id, h, keys) SELECT %(a)s, id, h, keys FROM plan "
                    f"WHERE pos > %(lo)s AND pos <= %(hi)s AND op = {ADD} "
                    "ON CONFLICT (akey, id) DO UPDATE SET h = excluded.h, keys = excluded.keys", span,
                )
                await conn.execute(
                    f"DELETE FROM {_P} WHERE akey = %(a)s AND id IN ({in_span} AND op <> {UNSET})", span
                )
                delta = new - gone.rowcount
            await conn.execute(
                f"UPDATE {_A} SET count = count + %(d)s, updated = now() WHERE akey = %(a)s",
                {"a": self._akey, "d": delta},
            )

    async def _count_span(self, query: str, params: Any) -> int:
        return int((await self._one(query, params))[0])
