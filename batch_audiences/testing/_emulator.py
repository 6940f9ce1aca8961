"""The :class:`Emulator`: an in-memory Batch Audience API on a loopback port."""

from __future__ import annotations

import asyncio
import math
import random
import threading
from collections.abc import Iterable, Mapping
from datetime import datetime
from types import TracebackType
from typing import TypeAlias

from aiohttp import web

from ._faults import FaultInjector
from ._models import EmulatedAudience, FaultPlan, RecordedRequest, ScriptedResponse
from ._ratelimit import RetryAfterMode, check_burst, check_retry_after
from ._recording import Recorder
from ._server import ApiServer, ServerSettings
from ._state import TAKEN_NAME_REPLIES, AudienceStore

Latency: TypeAlias = "float | tuple[float, float]"


def _check_delay(name: str, value: float) -> float:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
    return float(value)


def _check_taken_name(value: str) -> str:
    if value not in TAKEN_NAME_REPLIES:
        raise ValueError(f"taken_name must be one of {sorted(TAKEN_NAME_REPLIES)}, got {value!r}")
    return value


def _check_latency(value: Latency) -> Latency:
    if isinstance(value, tuple):
        if len(value) != 2:
            raise ValueError(f"latency must be seconds or a (min, max) pair, got {value!r}")
        low, high = (_check_delay("latency", v) for v in value)
        if low > high:
            raise ValueError(f"latency (min, max) must have min <= max, got {value!r}")
        return (low, high)
    return _check_delay("latency", value)


class Emulator:
    """An in-memory Batch Audience API server, for tests, demos and benchmarks.

    It implements the six routes under ``{base_url}/{version}/audiences/`` (any ``\\d+.\\d+``
    version), checks the two auth headers, validates bodies strictly, and models indexing: a write
    only changes content ``indexing_delay`` seconds after it was received (``replace_indexing_delay``
    for a replace), applied in that order. Faults (scripted answers, a rate limit, seeded random
    faults, dropped connections, latency) make a client's error handling testable.

    The rate limit is a token bucket of ``rate_limit`` requests per second holding ``burst``
    requests (1: requests must be spaced ``1/rate_limit`` apart; ``rate_limit``: one second's
    worth may go at once). Its 429s carry ``Retry-After`` as exact fractional seconds
    (``rate_limit_retry_after="exact"``), rounded up to whole seconds as real servers write it
    (``"seconds"``), or not at all (``"off"``); ``rate_limit_headers`` adds ``X-RateLimit-*`` to
    every answer. :meth:`set_rate` changes the rate while serving.

    Whether an add of an ID already present replaces its attribute set or merges into it is not
    documented by Batch: ``attribute_merge="replace"`` (the default) or ``"merge"`` picks one.

    Use it with ``async with`` on the running loop, or with ``with`` from blocking code (it then
    serves from a background thread with its own loop):

    >>> import json, urllib.request
    >>> with Emulator(indexing_delay=0) as emu:
    ...     emu.add_audience("vip", ["u1", "u2"])
    ...     request = urllib.request.Request(
    ...         f"{emu.base_url}/2.8/audiences/view?name=vip", headers=emu.auth_headers)
    ...     with urllib.request.urlopen(request) as response:
    ...         json.load(response)["nb_ids"]
    2

    State accessors (:meth:`audience`, :meth:`members`, :attr:`requests`...) are safe to call from
    another thread while it serves.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str = "emulator-rest-api-key",
        project_key: str = "project_emulator",
        indexing_delay: float = 0.05,
        replace_indexing_delay: float | None = None,
        rate_limit: float | None = None,
        burst: float = 1,
        rate_limit_retry_after: RetryAfterMode = "exact",
        rate_limit_headers: bool = True,
        faults: FaultPlan | None = None,
        latency: float | tuple[float, float] = 0.0,
        record_bodies: bool = True,
        attribute_merge: str = "replace",
        taken_name: str = "explicit",
    ) -> None:
        if attribute_merge not in ("replace", "merge"):
            raise ValueError(f"attribute_merge must be 'replace' or 'merge', got {attribute_merge!r}")
        indexing_delay = _check_delay("indexing_delay", indexing_delay)
        replace_delay = (
            3 * indexing_delay
            if replace_indexing_delay is None
            else _check_delay("replace_indexing_delay", replace_indexing_delay)
        )
        self._host = host
        self._port = port
        self._settings = ServerSettings(api_key, project_key, record_bodies)
        self._store = AudienceStore(indexing_delay, replace_delay, attribute_merge=attribute_merge)
        self._store.taken_name = _check_taken_name(taken_name)
        self._injector = FaultInjector(
            faults if faults is not None else FaultPlan(), rate_limit,
            burst=check_burst(burst), retry_after=check_retry_after(rate_limit_retry_after),
            limit_headers=bool(rate_limit_headers),
        )
        self._recorder = Recorder()
        self._latency = _check_latency(latency)
        self._latency_rng = self._new_latency_rng()
        self._server = ApiServer(
            self._settings, self._store, self._injector, self._recorder, self._next_latency
        )
        self._runner: web.AppRunner | None = None
        self._base_url: str | None = None
        self._thread: threading.Thread | None = None
        self._thread_loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        where = self._base_url if self._runner is not None else "not running"
        return f"<Emulator {where}>"

    # -- settings ---------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://host:port``; clients append ``/{api_version}/audiences/...``."""
        if self._base_url is None:
            raise RuntimeError(
                "the emulator has not been started: use 'async with Emulator()' or 'with Emulator()'"
            )
        return self._base_url

    @property
    def port(self) -> int:
        """The port it listens on (the ephemeral one once started with ``port=0``)."""
        return self._port

    @property
    def api_key(self) -> str:
        """The REST API key expected in ``Authorization: Bearer <key>``."""
        return self._settings.api_key

    @api_key.setter
    def api_key(self, value: str) -> None:
        self._settings.api_key = value

    @property
    def project_key(self) -> str:
        """The project key expected in ``X-Batch-Project``."""
        return self._settings.project_key

    @project_key.setter
    def project_key(self, value: str) -> None:
        self._settings.project_key = value

    @property
    def auth_headers(self) -> dict[str, str]:
        """The two headers a valid request carries (handy for raw HTTP tests)."""
        return {"Authorization": f"Bearer {self.api_key}", "X-Batch-Project": self.project_key}

    @property
    def indexing_delay(self) -> float:
        """Seconds before a create/update write is applied (for writes received from now on)."""
        return self._store.indexing_delay

    @indexing_delay.setter
    def indexing_delay(self, value: float) -> None:
        self._store.indexing_delay = _check_delay("indexing_delay", value)

    @property
    def replace_indexing_delay(self) -> float:
        """Seconds before a replace is applied (for replaces received from now on)."""
        return self._store.replace_indexing_delay

    @replace_indexing_delay.setter
    def replace_indexing_delay(self, value: float) -> None:
        self._store.replace_indexing_delay = _check_delay("replace_indexing_delay", value)

    @property
    def taken_name(self) -> str:
        """How a create of a taken name is worded: ``"explicit"``, ``"vague"`` or ``"opaque"``."""
        return self._store.taken_name

    @taken_name.setter
    def taken_name(self, value: str) -> None:
        self._store.taken_name = _check_taken_name(value)

    @property
    def faults(self) -> FaultPlan:
        """The random fault plan; assigning one restarts the random sequences from its seed."""
        return self._injector.plan

    @faults.setter
    def faults(self, plan: FaultPlan) -> None:
        self._injector.plan = plan
        self._latency_rng = self._new_latency_rng()

    @property
    def rate_limit(self) -> float | None:
        """Requests per second accepted; over it, 429. None: no limit. Assigning starts afresh
        (a full bucket, counters at zero); :meth:`set_rate` changes it as a live server would."""
        return self._injector.rate_limit

    @rate_limit.setter
    def rate_limit(self, value: float | None) -> None:
        self._injector.rate_limit = value

    def set_rate(self, rate: float | None, burst: float | None = None) -> None:
        """Change the rate limit (and its burst) while serving: the tokens saved up so far stay
        (up to the new burst), as when a real server's limit moves under a running job.

        >>> emu = Emulator(rate_limit=40, burst=40)
        >>> emu.set_rate(10)
        >>> emu.rate_limit, emu.burst
        (10.0, 40.0)
        """
        self._injector.set_rate(rate, burst)

    @property
    def burst(self) -> float:
        """How many requests the rate limit lets through at once after a quiet spell (>= 1)."""
        return self._injector.limit_state()[1]

    @burst.setter
    def burst(self, value: float) -> None:
        self._injector.configure_limit(burst=value)

    @property
    def rate_limit_retry_after(self) -> RetryAfterMode:
        """``Retry-After`` on the rate limit's 429s: ``"exact"``, ``"seconds"`` or ``"off"``."""
        return self._injector.limit_state()[2]

    @rate_limit_retry_after.setter
    def rate_limit_retry_after(self, value: RetryAfterMode) -> None:
        self._injector.configure_limit(retry_after=value)

    @property
    def rate_limit_headers(self) -> bool:
        """Whether answers carry ``X-RateLimit-Limit``, ``-Remaining`` and ``-Reset``."""
        return self._injector.limit_state()[3]

    @rate_limit_headers.setter
    def rate_limit_headers(self, value: bool) -> None:
        self._injector.configure_limit(headers=value)

    def rate_limit_counts(self) -> tuple[int, int]:
        """Requests the rate limit accepted and refused since it was last set (or reset)."""
        state = self._injector.limit_state()
        return state[4], state[5]

    @property
    def latency(self) -> float | tuple[float, float]:
        """Delay added before processing each request: seconds, or a (min, max) uniform range."""
        return self._latency

    @latency.setter
    def latency(self, value: float | tuple[float, float]) -> None:
        self._latency = _check_latency(value)

    @property
    def record_bodies(self) -> bool:
        """Whether :attr:`requests` keeps parsed bodies (turn off for big benchmarks)."""
        return self._settings.record_bodies

    @record_bodies.setter
    def record_bodies(self, value: bool) -> None:
        self._settings.record_bodies = value

    def _new_latency_rng(self) -> random.Random:
        # Its own generator, so latency draws do not shift the fault sequence of the same seed.
        seed = self._injector.plan.seed
        return random.Random(None if seed is None else f"latency-{seed}")

    def _next_latency(self) -> float:
        latency = self._latency
        if isinstance(latency, tuple):
            return self._latency_rng.uniform(*latency)
        return latency

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start serving on the running event loop."""
        if self._runner is not None:
            raise RuntimeError("the emulator is already running")
        runner = web.AppRunner(self._server.make_app(), access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self._host, self._port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = int(runner.addresses[0][1])
        host = f"[{self._host}]" if ":" in self._host else self._host
        self._base_url = f"http://{host}:{self._port}"

    async def stop(self) -> None:
        """Stop serving; requests still waiting (latency, slow answers) are dropped. Idempotent."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        self._server.begin_stop()
        await runner.cleanup()

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    def __enter__(self) -> Emulator:
        if self._thread is not None or self._runner is not None:
            raise RuntimeError("the emulator is already running")
        loop = asyncio.new_event_loop()
        started = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start())
            except BaseException as error:  # reported to the caller of __enter__
                failure.append(error)
            started.set()
            if not failure:
                loop.run_forever()
            _close_loop(loop)

        thread = threading.Thread(target=serve, name="batch-audiences-emulator", daemon=True)
        thread.start()
        started.wait()
        if failure:
            thread.join()
            raise failure[0]
        self._thread, self._thread_loop = thread, loop
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        thread, loop = self._thread, self._thread_loop
        if thread is None or loop is None:
            return
        self._thread = self._thread_loop = None
        try:
            asyncio.run_coroutine_threadsafe(self.stop(), loop).result()
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()

    # -- state, for tests -------------------------------------------------------------------------

    def audience(self, name: str) -> EmulatedAudience | None:
        """A snapshot of the audience's applied state (due writes applied first), or None."""
        return self._store.snapshot(name)

    def members(self, name: str) -> dict[str, dict[str, object]]:
        """A copy of the applied members, ID -> attributes; LookupError if there is no such audience."""
        return self._store.members(name)

    def audience_names(self) -> list[str]:
        """The names of every audience, sorted."""
        return self._store.names()

    def settle(self) -> None:
        """Apply every pending write now, in the order their indexing would complete."""
        self._store.settle()

    def add_audience(
        self,
        name: str,
        members: Mapping[str, Mapping[str, object]] | Iterable[str] = (),
        display_name: str | None = None,
        *,
        created: datetime | None = None,
    ) -> None:
        """Create an audience directly, its content already applied (ValueError if it exists).

        ``created`` (timezone-aware) backdates it: an audience someone else made earlier.
        """
        self._store.seed(name, members, display_name, created)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received, in arrival order (a copy)."""
        return self._recorder.snapshot()

    def count(self, route: str | None = None, status: int | None = None) -> int:
        """How many completed requests match ``route`` and ``status`` (None matches any)."""
        return self._recorder.count(route, status)

    def script(self, *responses: ScriptedResponse) -> None:
        """Queue answers: each goes to the next request matching its ``route``, in order."""
        self._injector.script(responses)

    def reset(self) -> None:
        """Drop every audience, pending write, recorded request and script; restart the random faults."""
        self._store.clear()
        self._recorder.clear()
        self._injector.reset()
        self._latency_rng = self._new_latency_rng()


def _close_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what is left on the background loop and close it, so no task is destroyed pending."""
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()
