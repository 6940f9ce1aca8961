"""``AsyncAudiencesClient``: the six routes of the Audience API as typed async methods."""

from __future__ import annotations

import math
import os
from collections.abc import AsyncIterable, AsyncIterator, Callable, Collection, Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

import aiohttp

from ._api import Operations, PollSchedule
from ._bulk import (
    LATE_WRITE_GRACE,
    BulkReport,
    IfExists,
    ProgressEvent,
    UploadItem,
    UploadMode,
    UploadReport,
    run_create_many,
    run_upload,
)
from ._config import ClientConfig, RetryPolicy, build_config, derive_config
from ._errors import InvalidSettingError, ValidationError
from ._hooks import Hook
from ._models import (
    MAX_IDS_PER_REQUEST,
    MAX_PAGE_SIZE,
    Accepted,
    Audience,
    AudiencePage,
    AudienceType,
    IdAction,
    Member,
    NewAudience,
    check_name,
)
from ._sender import Sender
from ._transport import ClientStats, Transport

if TYPE_CHECKING:  # loaded by sync() itself: a program that never syncs does not pay for it
    from ._sync import SnapshotStore, SyncReport

__all__ = ["AsyncAudiencesClient"]


def _check_page_size(value: object, field: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_PAGE_SIZE:
        raise ValidationError(field, f"must be an integer from 1 to {MAX_PAGE_SIZE}, got {value!r}")
    return value


def _check_seconds(value: object, field: str) -> float:
    if (
        not isinstance(value, (int, float))
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValidationError(field, f"must be a positive number of seconds, got {value!r}")
    return float(value)


def _check_token(value: object) -> str | None:
    if value is not None and (not isinstance(value, str) or not value):
        raise ValidationError("indexing_token", "must be a non-empty string")
    return value


class AsyncAudiencesClient:
    """Async client of Batch's Audience API.

    One pooled ``aiohttp`` session per client, created on first use and closed by
    :meth:`aclose` (a ``session=`` you pass stays yours and is never closed). Throttling (429)
    and maintenance (503) answers are retried with jittered exponential back-off, honouring
    ``Retry-After``; see :class:`RetryPolicy`.

    Credentials fall back to ``BATCH_REST_API_KEY`` and ``BATCH_PROJECT_KEY``, the base URL to
    ``BATCH_API_BASE_URL``.

    Example, against the local emulator::

        import asyncio
        from batch_audiences import AsyncAudiencesClient, IdAction
        from batch_audiences.testing import Emulator

        async def main() -> None:
            async with Emulator() as emu, AsyncAudiencesClient(
                emu.api_key, emu.project_key, base_url=emu.base_url
            ) as client:
                await client.create("vip", display_name="VIP customers")
                accepted = await client.update("vip", [IdAction.add("u1", {"plan": "pro"})])
                audience = await client.wait_until_applied("vip", accepted.indexing_token)
                print(audience.nb_ids)  # 1

        asyncio.run(main())
    """

    def __init__(
        self,
        api_key: str | None = None,
        project_key: str | None = None,
        *,
        base_url: str | None = None,
        api_version: str = "2.8",
        timeout: float = 30.0,
        max_retries: int = 5,
        max_connections: int = 100,
        session: aiohttp.ClientSession | None = None,
        max_rate: float | None = None,
        fail_fast: bool = False,
        retry: RetryPolicy | None = None,
        allow_insecure_http: bool = False,
        sender: Sender | None = None,
        hooks: Iterable[Hook] = (),
    ) -> None:
        """Build a client; nothing is sent until the first call.

        ``max_rate`` caps requests per second (``None``: unlimited until the server pushes
        back). ``fail_fast`` raises :class:`ThrottledError` / :class:`RateLimitError` instead of
        waiting for the rate limiter or retrying a 429. ``retry`` replaces the whole retry
        policy (and then ``max_retries`` is ignored). ``allow_insecure_http`` permits
        ``http://`` to a host that is not loopback.

        ``sender`` replaces the HTTP layer (an :class:`AiohttpSender` with options of your own,
        or :class:`batch_audiences.testing.MockSender` in unit tests); it excludes ``session``,
        and ``max_connections`` then does not apply. ``hooks`` are callables told of every
        request, answer, retry and throttling (see :data:`HookEvent`).
        """
        if session is not None and not isinstance(session, aiohttp.ClientSession):
            raise InvalidSettingError("session", "must be an aiohttp.ClientSession")
        if sender is not None:
            if session is not None:
                raise InvalidSettingError("sender", "pass sender= or session=, not both")
            if not isinstance(sender, Sender):
                raise InvalidSettingError("sender", "must have async send() and aclose() methods")
        config = build_config(
            api_key, project_key, base_url=base_url, api_version=api_version, timeout=timeout,
            max_retries=max_retries, max_connections=max_connections, max_rate=max_rate,
            allow_insecure_http=allow_insecure_http, retry=retry,
        )
        transport = Transport(config, session=session, sender=sender, hooks=hooks)
        transport.limiter.fail_fast = fail_fast
        self._setup(config, transport)

    def _setup(self, config: ClientConfig, transport: Transport) -> None:
        # Everything a client holds, made from its settings and its transport: shared by the
        # constructor and with_options().
        self._config = config
        self._transport = transport
        self._ops = Operations(transport)

    def with_options(
        self,
        *,
        timeout: float | None = None,
        max_retries: int | None = None,
        max_rate: float | None = None,
    ) -> AsyncAudiencesClient:
        """A client for some calls with other settings, sharing this one's connections.

        The derived client uses the same session (or sender), rate limiter, hooks and
        :attr:`stats` counters; ``None`` keeps this client's setting. ``max_rate`` caps the
        derived client's own requests, under the shared adaptive limiter that still paces
        every request of both. Closing the derived client does not close the shared session;
        closing this one ends both.

        >>> async def slow_report(client):  # doctest: +SKIP
        ...     patient = client.with_options(timeout=120, max_retries=10, max_rate=2)
        ...     return await patient.view("vip")
        """
        config = derive_config(self._config, timeout=timeout, max_retries=max_retries,
                               max_rate=max_rate)
        derived = object.__new__(type(self))
        derived._setup(config, self._transport.derive(config))
        return derived

    def __repr__(self) -> str:
        config = self._config
        return (
            f"{type(self).__name__}(project_key={config.project_key!r}, "
            f"api_key={config.api_key.masked!r}, base_url={config.root!r})"
        )

    @property
    def config(self) -> ClientConfig:
        """The checked settings this client runs with (the key masked in its repr)."""
        return self._config

    @property
    def stats(self) -> ClientStats:
        """Request, retry and throttling counters since the client was built."""
        return self._transport.stats()

    @property
    def closed(self) -> bool:
        """True once :meth:`aclose` ran."""
        return self._transport.closed

    async def __aenter__(self) -> AsyncAudiencesClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the client's own session. Safe to call twice."""
        await self._transport.aclose()

    # -- the six routes -------------------------------------------------------------------

    async def create(
        self,
        name: str,
        *,
        display_name: str | None = None,
        type: AudienceType = AudienceType.CUSTOM_IDS,
    ) -> Accepted:
        """Create an empty audience.

        Raises :class:`AudienceExistsError` when the name is taken: a refusal (any 4xx but
        401/403/404/429, whatever its wording) is checked with one view, which decides.

        A create whose try broke after it was sent is retried. If a later try is refused (or
        fails with a 5xx) and the audience exists, its ``created`` time against the time the
        broken try left, on the server's clock (from the answers' ``Date``), decides who made
        it: this call (returns ``Accepted(None, confirmation=Confirmation.INFERRED)``), someone
        earlier or later (:class:`AudienceExistsError`), or no evidence either way
        (:class:`UncertainOutcomeError`: the audience exists, but may not be yours). A success
        status with an unreadable body returns ``Accepted(None)`` and logs a warning.
        """
        return await self._ops.create(name, type, display_name)

    async def update(self, name: str, actions: Iterable[IdAction]) -> Accepted:
        """Add and remove IDs: 1 to 10,000 :class:`IdAction` in one request.

        If the same ID appears several times, the last action for it counts.
        """
        return await self._ops.update(name, actions)

    async def replace(self, name: str, members: Iterable[Member | str]) -> Accepted:
        """Make the audience hold exactly ``members`` (0 to 10,000; ``Member`` or str IDs).

        For more than 10,000 members use :meth:`upload` with ``mode="replace"``, which keeps
        the later chunks from being wiped by the replace.
        """
        return await self._ops.replace(name, members)

    async def remove(self, name: str) -> Accepted:
        """Delete the audience.

        ``indexing_token`` is ``None`` when the server answers without a body or with one the
        SDK cannot read. When a try broke after it was sent and a later one finds the audience
        gone (404, or a 5xx and a view that finds nothing), the audience is gone but nothing
        shows this call removed it: the result is
        ``Accepted(None, confirmation=Confirmation.UNCERTAIN)``, never reported as this call's.
        """
        return await self._ops.remove(name)

    async def view(self, name: str, *, indexing_token: str | None = None) -> Audience:
        """Describe one audience; with ``indexing_token``, the state of that write."""
        return await self._ops.view(check_name(name), _check_token(indexing_token))

    async def list(self, *, limit: int = 10, cursor: str | None = None) -> AudiencePage:
        """One page of the project's audiences (``limit`` 1 to 100).

        Pass the page's ``next_from`` as ``cursor`` for the next page; ``count`` (the total)
        is set on the first page only. :meth:`iter_audiences` does this for you.
        """
        limit = _check_page_size(limit, "limit")
        if cursor is not None and (not isinstance(cursor, str) or not cursor):
            raise ValidationError("cursor", "must be a non-empty string")
        return await self._ops.list(limit, cursor)

    def iter_audiences(self, *, page_size: int = 100) -> AsyncIterator[Audience]:
        """Every audience of the project, fetched page by page as you iterate.

        >>> async def names(client):  # doctest: +SKIP
        ...     return [audience.name async for audience in client.iter_audiences()]
        """
        _check_page_size(page_size, "page_size")
        return self._iter_audiences(page_size)

    async def _iter_audiences(self, page_size: int) -> AsyncIterator[Audience]:
        cursor: str | None = None
        seen: set[str] = set()
        while True:
            page = await self.list(limit=page_size, cursor=cursor)
            for audience in page.audiences:
                yield audience
            if not page.has_more or page.next_from is None:
                return
            if page.next_from in seen:
                # A server that hands back a cursor twice would otherwise be listed forever.
                raise self._ops.repeated_cursor(page.next_from)
            seen.add(page.next_from)
            cursor = page.next_from

    async def wait_until_applied(
        self,
        name: str,
        indexing_token: str | None = None,
        *,
        timeout: float = 300.0,
        poll_interval: float = 1.0,
    ) -> Audience:
        """Poll :meth:`view` until the write is no longer ``IN_PROGRESS``; return the audience.

        The first look is at once; then intervals start at ``poll_interval`` and double, up to
        ten times it, or one second if more (the schedule the upload engine uses too).
        Raises :class:`IndexingTimeoutError` once ``timeout`` seconds have passed.
        """
        check_name(name)
        _check_token(indexing_token)
        timeout = _check_seconds(timeout, "timeout")
        interval = _check_seconds(poll_interval, "poll_interval")
        return await self._ops.wait_applied(
            name, indexing_token, timeout=timeout, schedule=PollSchedule(interval)
        )

    # -- bulk -----------------------------------------------------------------------------

    async def upload(
        self,
        name: str,
        items: Iterable[UploadItem] | AsyncIterable[UploadItem],
        *,
        mode: UploadMode = "add",
        chunk_size: int = MAX_IDS_PER_REQUEST,
        concurrency: int = 4,
        wait: bool = False,
        on_progress: Callable[[ProgressEvent], object] | None = None,
        retry_budget: int | None = None,
        deadline: float | None = None,
        skip_chunks: Collection[int] = (),
        late_write_grace: float = LATE_WRITE_GRACE,
    ) -> UploadReport:
        """Stream any number of IDs into audience ``name``, in chunks of up to 10,000, in order.

        ``items`` is any iterable or async iterable of ``str`` IDs, :class:`Member` or
        :class:`IdAction`, read lazily: at most ``chunk_size * concurrency`` items are held at
        once. ``mode``:

        - ``"add"``: str IDs and members are added (an :class:`IdAction` must be an add);
        - ``"remove"``: str IDs (or members without attributes, or remove actions) are removed;
        - ``"update"``: :class:`IdAction` items, adds and removes mixed (str and members add);
        - ``"replace"``: the audience ends up holding exactly the streamed members. The first
          chunk goes to ``/replace``; the rest is sent as adds only once it is applied, so a
          replace of any size is never lossy. An empty stream empties the audience.

        The final content equals applying the stream one item at a time, whatever
        ``concurrency`` is: a chunk acting on an ID that an earlier chunk also acts on is sent
        only once that chunk is applied. ``wait=True`` returns only once every write is applied.

        A try that timed out or broke may still be applied by the server later, after the chunk
        was sent again. A chunk with such a try counts as applied, for the chunks that must come
        after it, only ``late_write_grace`` seconds (default 5) after the try was given up, so a
        late write landing within that time cannot undo a later chunk. One held longer by the
        server still can: the README's "Retries and pacing" states the limit.

        Every item is checked as it is read: an invalid one is reported (``failed_items``, with
        its position) and not sent; the rest goes on. A chunk that fails for good is reported in
        ``failed_chunks`` with its position in the stream, and later chunks sharing an ID with it
        are held back (reported too), so that sending the failed chunks again keeps the order.

        ``retry_budget``: retries the whole call may make (``None``: each request keeps the
        client's ``max_retries``). ``deadline``: seconds after which nothing more is sent or
        retried; the report says where it stopped. ``skip_chunks``: indexes of chunks an earlier
        run of the same input and ``chunk_size`` had accepted (``ProgressEvent.chunk_index`` of
        its ``"acknowledged"`` events); they are read but not sent. In replace mode, skipping
        chunk 0 means the replace already happened: the remaining chunks are sent as adds.

        ``on_progress`` receives a :class:`ProgressEvent` per chunk acknowledged, skipped or
        failed, and once at the end; it is called on the event loop and must return quickly.
        Raises :class:`ValidationError` for a bad argument, before anything is sent.

        Example, against the local emulator::

            async with Emulator() as emu, AsyncAudiencesClient(
                emu.api_key, emu.project_key, base_url=emu.base_url
            ) as client:
                await client.create("crm")
                ids = (f"customer-{n}" for n in range(100_000))
                report = await client.upload("crm", ids, wait=True)
                print(report.summary())
        """
        return await run_upload(
            self._ops, name, items, mode=mode, chunk_size=chunk_size,
            concurrency=concurrency, wait=wait, on_progress=on_progress,
            retry_budget=retry_budget, deadline=deadline, skip_chunks=skip_chunks,
            late_write_grace=late_write_grace,
        )

    async def create_many(
        self,
        audiences: Iterable[NewAudience | Mapping[str, Any] | str]
        | AsyncIterable[NewAudience | Mapping[str, Any] | str],
        *,
        concurrency: int = 8,
        if_exists: IfExists = "error",
        on_progress: Callable[[ProgressEvent], object] | None = None,
        retry_budget: int | None = None,
        deadline: float | None = None,
    ) -> BulkReport:
        """Create many audiences concurrently; one outcome per item, in a :class:`BulkReport`.

        ``audiences``: :class:`NewAudience` items, mappings with the keys ``name``,
        ``display_name`` and ``type``, or bare names. An invalid item fails with its
        :class:`ValidationError` and no request; one bad item never stops the others.
        ``if_exists="skip"`` reports an audience that already exists (or a name repeated in the
        input) as skipped instead of failed. A create whose connection broke is retried and
        checked, so no audience is created twice. ``retry_budget``, ``deadline`` and
        ``on_progress`` are as for :meth:`upload` (one event per item).

        >>> async def make(client):  # doctest: +SKIP
        ...     report = await client.create_many(
        ...         [NewAudience("vip"), {"name": "churn", "display_name": "At risk"}],
        ...         if_exists="skip",
        ...     )
        ...     return report.counts
        """
        return await run_create_many(
            self._ops, audiences, concurrency=concurrency, if_exists=if_exists,
            on_progress=on_progress, retry_budget=retry_budget, deadline=deadline,
        )

    async def sync(
        self,
        name: str,
        source: Iterable[Member | str] | AsyncIterable[Member | str],
        *,
        state: str | os.PathLike[str] | SnapshotStore | None = None,
        full: bool = False,
        create: bool = True,
        dry_run: bool = False,
        chunk_size: int = MAX_IDS_PER_REQUEST,
        concurrency: int = 4,
        on_progress: Callable[[ProgressEvent], object] | None = None,
        deadline: float | None = None,
    ) -> SyncReport:
        """Make audience ``name`` hold exactly ``source``, sending only what changed since the
        last sync.

        ``source``: the desired content, any iterable or async iterable of ``str`` IDs or
        :class:`Member`, read lazily (e.g. ``sources.read_csv(...)``). ``state``: where the
        snapshot of what was last pushed lives: a SQLite file path (default: ``sync.sqlite3`` in
        the user's state directory), a ``postgresql://`` URL (extra ``[postgres]``), or a store.

        The first run, a run without a usable snapshot, ``full=True``, a missing audience
        (created when ``create``) and drift (its size differs from the snapshot's) replace the
        whole audience, losslessly; otherwise only removes, adds and changed IDs are sent, through
        :meth:`upload`'s ordered engine. The snapshot records only what Batch accepted, chunk by
        chunk, so a run that fails or is killed is completed by the next one. ``dry_run=True``
        computes and reports the plan; it sends no write and leaves the snapshot as it was.

        Bad items and duplicate IDs (the first occurrence wins) are reported with their position
        in ``failed_items`` and never sent. A second sync of the same audience while one runs
        raises :class:`SyncLockedError`. ``chunk_size``, ``concurrency``, ``on_progress`` (the
        upload's events) and ``deadline`` (seconds, for the whole sync) are as for
        :meth:`upload`.

        >>> async def nightly(client):  # doctest: +SKIP
        ...     rows = sources.read_csv("pro.csv", id_column="user_id", attributes=["plan"])
        ...     report = await client.sync("pro-plan", rows)
        ...     print(report.summary())
        """
        from ._sync import run_sync

        return await run_sync(
            self, name, source, state=state, full=full, create=create, dry_run=dry_run,
            chunk_size=chunk_size, concurrency=concurrency, on_progress=on_progress,
            deadline=deadline,
        )
