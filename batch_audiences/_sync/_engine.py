"""``client.sync``: make an audience equal to a source, sending only what changed.

One run:

1. lock the audience's snapshot (:class:`SyncLockedError` if another sync holds it);
2. stream the source into the store (bad items and duplicate IDs reported, never sent);
3. view the audience, waiting until its indexing has settled: missing, no usable snapshot,
   ``full=True``, or a size the snapshot cannot explain (drift) → a full replace;
4. let the store compute the plan; ``dry_run`` stops here;
5. send the plan through the public ``upload`` (``mode="replace"`` for a full sync, which is
   lossless across chunks; ``mode="update"`` otherwise, whose per-ID ordering applies a remove
   before the re-add that follows it), recording every acknowledged chunk in the store, in one
   transaction per chunk, as its acknowledgement arrives.

Why this is correct after any failure: a plan row is marked *pending* in the store before the
upload may send it, and cleared only by recording its chunk's acknowledgement. The next run
sends every pending ID again (a remove, then an add if the source still has it), whatever Batch
made of the lost write, and takes pending IDs into account when judging drift.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import orjson

from .._bulk import ProgressEvent, UploadReport
from .._bulk._call import check_call_limits, check_concurrency, open_source
from .._errors import NotFoundError, ValidationError
from .._models import MAX_IDS_PER_REQUEST, IdAction, IndexingState, Member, check_name
from ._plan import columns_of, stage_source
from ._report import FullReason, SyncReport
from ._sqlite import SqliteStore
from ._store import ADD, REMOVE, UNSET, SnapshotKey, SnapshotStore, SyncSession

if TYPE_CHECKING:
    from .._client import AsyncAudiencesClient

__all__ = ["default_state_path", "resolve_store", "run_sync"]

# Waiting for the audience's indexing to settle before judging drift.
_SETTLE_FIRST = 0.05
_SETTLE_MAX = 2.0
_SETTLE_TIMEOUT = 300.0


def default_state_path() -> str:
    """Where snapshots live by default: ``sync.sqlite3`` in the user's state directory."""
    import platformdirs

    return os.path.join(platformdirs.user_state_dir("batch-audiences", appauthor=False), "sync.sqlite3")


def resolve_store(state: object) -> SnapshotStore:
    """The store ``state`` names: ``None`` (default file), a path, a PostgreSQL URL, or a store."""
    if state is None:
        return SqliteStore(default_state_path())
    if isinstance(state, str) and state.startswith(("postgresql://", "postgres://")):
        from ._postgres import PostgresStore

        return PostgresStore(state)
    if isinstance(state, (str, os.PathLike)):
        if not os.fspath(state):
            raise ValidationError("state", "must not be an empty path")
        return SqliteStore(state)
    if isinstance(state, SnapshotStore):
        return state
    raise ValidationError(
        "state", f"must be a path, a postgresql:// URL or a snapshot store, got {type(state).__name__}"
    )


def _check_chunk_size(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_IDS_PER_REQUEST:
        raise ValidationError(
            "chunk_size", f"must be an integer from 1 to {MAX_IDS_PER_REQUEST:,}, got {value!r}"
        )
    return value


def _check_flag(value: object, field: str) -> bool:
    if not isinstance(value, bool):
        raise ValidationError(field, f"must be True or False, got {value!r}")
    return value


async def _plan_stream(session: SyncSession, size: int, full: bool, page: int) -> AsyncIterator[Any]:
    """The plan as upload items, read from the store a page (one chunk) at a time.

    A page is marked pending as it is read, so reading no further ahead than the upload keeps
    what a killed run leaves uncertain to the chunks it had in hand.
    """
    start = 0
    while start < size:
        rows = await session.read(start, min(page, size - start))
        if not rows:
            return
        for custom_id, op, blob in rows:
            attributes = None if blob is None else orjson.loads(blob)
            if full:
                yield Member(custom_id, attributes)
            elif op == ADD:
                yield IdAction.add(custom_id, attributes)
            else:
                assert op in (REMOVE, UNSET)
                yield IdAction.remove(custom_id)
        start += len(rows)


class _Recorder:
    """Records acknowledged chunks in the store, one at a time, in the order they came."""

    def __init__(self, session: SyncSession, full: bool) -> None:
        self._session = session
        self._full = full
        self._queue: asyncio.Queue[tuple[int, int] | None] = asyncio.Queue()
        self._task = asyncio.ensure_future(self._work())

    def acknowledged(self, start: int, count: int) -> None:
        self._queue.put_nowait((start, count))

    async def _work(self) -> None:
        while (span := await self._queue.get()) is not None:
            await self._session.record(*span, self._full)

    async def finish(self) -> None:
        """Record every acknowledgement received so far, even if the caller is being cancelled."""
        self._queue.put_nowait(None)
        await asyncio.shield(self._task)


class _Sync:
    def __init__(self, client: AsyncAudiencesClient, name: str, *, deadline: float | None) -> None:
        self.client = client
        self.name = name
        self.loop = asyncio.get_running_loop()
        self.started = self.loop.time()
        self.deadline_at = None if deadline is None else self.started + deadline
        self.requests = 0

    def remaining(self) -> float | None:
        return None if self.deadline_at is None else self.deadline_at - self.loop.time()

    async def settled_size(self) -> int | NotFoundError:
        """The audience's ``nb_ids`` once no write is in progress, or the error saying it does not
        exist."""
        wait = _SETTLE_FIRST
        limit = self.loop.time() + _SETTLE_TIMEOUT
        if self.deadline_at is not None:
            limit = min(limit, self.deadline_at)
        while True:
            self.requests += 1
            try:
                audience = await self.client.view(self.name)
            except NotFoundError as error:
                return error
            if audience.indexing_state != IndexingState.IN_PROGRESS or self.loop.time() + wait > limit:
                # Still indexing at the limit: the count is what it is; drift may be over-reported,
                # which costs a full replace, never a wrong audience.
                return audience.nb_ids
            await asyncio.sleep(wait)
            wait = min(wait * 2, _SETTLE_MAX)


async def run_sync(
    client: AsyncAudiencesClient,
    name: str,
    source: object,
    *,
    state: object,
    full: bool,
    create: bool,
    dry_run: bool,
    chunk_size: int,
    concurrency: int,
    on_progress: Callable[[ProgressEvent], object] | None,
    deadline: float | None,
) -> SyncReport:
    check_name(name)
    full = _check_flag(full, "full")
    create = _check_flag(create, "create")
    dry_run = _check_flag(dry_run, "dry_run")
    chunk_size = _check_chunk_size(chunk_size)
    concurrency = check_concurrency(concurrency)
    callback, _, deadline = check_call_limits(on_progress, None, deadline)
    opened = open_source(source, "source")
    # One of the SDK's readers is read through its batch path (no object per row).
    columns = columns_of(source)
    store = resolve_store(state)
    config = client.config
    run = _Sync(client, name, deadline=deadline)
    session = await store.open(SnapshotKey(config.base_url, config.project_key, name))
    try:
        return await _run(run, session, opened if columns is None else columns, full=full, create=create,
                          dry_run=dry_run, chunk_size=chunk_size, concurrency=concurrency, callback=callback)
    finally:
        await session.close()


async def _run(
    run: _Sync,
    session: SyncSession,
    source: Any,
    *,
    full: bool,
    create: bool,
    dry_run: bool,
    chunk_size: int,
    concurrency: int,
    callback: Callable[[ProgressEvent], object] | None,
) -> SyncReport:
    staged = await stage_source(session, source, deadline_at=run.deadline_at)
    info = await session.info()

    def report(**fields: Any) -> SyncReport:
        values: dict[str, Any] = {
            "name": run.name, "items_read": staged.items_read, "items_failed": staged.items_failed,
            "failed_items": tuple(staged.failed_items), "dry_run": dry_run,
            "requests": run.requests, "elapsed": run.loop.time() - run.started,
            "failed_chunks": (), "completed": True, "stop_reason": None, "upload": None,
        }
        values.update(fields)
        return SyncReport(**values)

    if staged.stopped is not None:
        return report(mode="incremental", full_reason=None, added=0, removed=0, changed=0,
                      unchanged=0, resent=0, completed=False, stop_reason=staged.stopped)

    if staged.items_read and staged.items_failed == staged.items_read:
        # Every item is bad: the audience would be emptied. That cannot be what was meant.
        return report(mode="incremental", full_reason=None, added=0, removed=0, changed=0,
                      unchanged=0, resent=0, completed=False,
                      stop_reason="no item of the source is valid: syncing would empty the audience, "
                      "so nothing was sent")

    size = await run.settled_size()
    nb_ids = None if isinstance(size, NotFoundError) else size
    reason: FullReason | None = None
    if isinstance(size, NotFoundError):
        if not create and not dry_run:
            raise NotFoundError(
                size.status, size.error_code,
                f"audience {run.name!r} does not exist (pass create=True to create it)",
                method=size.method, route=size.route,
            ) from size
        reason = "audience_missing"
    elif full:
        reason = "requested"
    elif not info.exists:
        reason = "first_run"
    elif not info.valid:
        reason = "no_snapshot"
    elif nb_ids is not None and not info.explains(nb_ids):
        reason = "drift"
    is_full = reason is not None
    plan = await session.plan(is_full)
    counts = {"added": plan.added, "removed": plan.removed, "changed": plan.changed,
              "unchanged": plan.unchanged, "resent": plan.resent}
    mode = "full" if is_full else "incremental"
    if dry_run:
        return report(mode=mode, full_reason=reason, **counts)
    if not is_full and plan.size == 0:
        return report(mode=mode, full_reason=reason, **counts)
    if nb_ids is None:
        run.requests += 1
        await run.client.create(run.name)
    remaining = run.remaining()
    if remaining is not None and remaining <= 0:
        return report(mode=mode, full_reason=reason, completed=False,
                      stop_reason="the deadline passed before anything was sent", **counts)

    effective = chunk_size
    if plan.unset:
        # A remove and its re-add must not share a chunk (in one request the last action for an
        # ID wins, and the remove would be lost): they are ``size - unset`` positions apart.
        effective = max(1, min(chunk_size, plan.size - plan.unset))
    await session.begin(is_full)
    recorder = _Recorder(session, is_full)

    def on_event(event: ProgressEvent) -> None:
        if event.kind == "acknowledged" and event.chunk_start is not None and event.chunk_count is not None:
            recorder.acknowledged(event.chunk_start, event.chunk_count)
        if callback is not None:
            callback(event)

    upload: UploadReport | None = None
    try:
        upload = await run.client.upload(
            run.name, _plan_stream(session, plan.size, is_full, effective),
            mode="replace" if is_full else "update", chunk_size=effective, concurrency=concurrency,
            on_progress=on_event, deadline=remaining,
        )
    finally:
        await recorder.finish()
    run.requests += upload.requests
    return report(
        mode=mode, full_reason=reason, **counts, upload=upload, failed_chunks=upload.failed_chunks,
        completed=upload.input_exhausted, stop_reason=upload.stop_reason,
    )

