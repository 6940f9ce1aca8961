"""10. Pacing: how close the SDK runs to a server's rate limit, and how few 429s it meets.

The emulator's rate limit (a token bucket of ``R`` requests per second holding ``burst``) is the
server; ``upload()`` (chunks of 10 IDs, so that the work per request is small and the limit is all
that binds) or ``create_many()`` runs against it from a fresh client that knows nothing of ``R``.
Efficiency is what the server's limit allowed that the client used::

    efficiency = (accepted requests / R - burst / R) / elapsed

the burst being free at the start (a full bucket), so it is taken out. A limit that moves
(40 -> 10 -> 40 requests/s, 6 s each) is measured over those 18 s: requests the server accepted
in that time over what it would have accepted (its capacity, the first burst included).

The emulator runs in a process of its own (``benchmarks._limited_server``), steered through its
stdin: the benchmark sets the limit for each run, moves it while a job runs and reads the
emulator's own counts of accepted and refused requests.
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

from batch_audiences import AsyncAudiencesClient

from ._runner import (
    API_KEY,
    PROJECT_KEY,
    ROOT,
    Check,
    Context,
    Result,
    Row,
    child_env,
    progress,
    stop_process,
)

KEY = "pacing"
TITLE = "10. Pacing at the server's rate limit (efficiency = share of the limit used)"
AUDIENCE = "bench-pacing"
IDS_PER_CHUNK = 10
SECONDS = 6.0
# A bulk call's shared retry budget: large, so that no chunk gives up and every request counts.
RETRY_BUDGET = 100_000


@dataclass
class Scenario:
    name: str
    rate: float
    burst: float
    retry_after: str = "off"
    headers: bool = False
    kind: str = "upload"  # or "create_many", "moving", "wait"
    efficiency_target: float = 0.90
    throttled_target: float | None = None


SCENARIOS = [
    Scenario("upload, R=20/s, burst R, no Retry-After", 20, 20, throttled_target=0.10),
    Scenario("upload, R=20/s, burst 1, no Retry-After", 20, 1, throttled_target=0.10),
    Scenario("upload, R=20/s, burst R, Retry-After: 1 (whole seconds)", 20, 20, retry_after="seconds"),
    Scenario("upload, R=100/s, burst R, no Retry-After", 100, 100),
    Scenario("upload, R=40->10->40/s, 6 s each, burst 1", 40, 1, kind="moving", efficiency_target=0.85),
    Scenario("create_many, R=20/s, burst R, no Retry-After", 20, 20, kind="create_many"),
    Scenario("upload, R=20/s, burst 1, exact Retry-After and X-RateLimit-*", 20, 1, retry_after="exact",
             headers=True),
    Scenario("upload of 100 chunks + wait=True, R=20/s, burst R, indexing 0.5 s", 20, 20, kind="wait"),
]
WAIT_CHUNKS = 100
INDEXING = 0.5


@dataclass
class Measure:
    efficiency: float
    throttled_share: float
    accepted: int
    elapsed: float
    estimate: float | None


def _chunks(count: int) -> Iterator[str]:
    return (f"customer-{n:09d}" for n in range(count * IDS_PER_CHUNK))


class LimitedServer:
    """``benchmarks._limited_server`` in a subprocess, and its commands."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks._limited_server"], cwd=ROOT, env=child_env(),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
        )
        line = self._read()
        if not line.startswith("PORT "):
            self.close()
            raise RuntimeError(f"the rate-limited emulator did not start: {line!r}")
        self.base_url = f"http://127.0.0.1:{int(line.split()[1])}"

    def _read(self) -> str:
        assert self.process.stdout is not None
        return self.process.stdout.readline().strip()

    def command(self, *words: object) -> str:
        assert self.process.stdin is not None
        self.process.stdin.write(" ".join(map(str, words)) + "\n")
        self.process.stdin.flush()
        answer = self._read()
        if answer.startswith("error"):
            raise RuntimeError(answer)
        return answer

    def counts(self) -> tuple[int, int]:
        accepted, refused = self.command("counts").split()
        return int(accepted), int(refused)

    def close(self) -> None:
        stop_process(self.process, terminate=False)  # closing its stdin is its signal to stop


async def _run(server: LimitedServer, scenario: Scenario, round_: int) -> Measure:
    indexing = INDEXING if scenario.kind == "wait" else 0.0
    server.command("start", scenario.rate, scenario.burst, scenario.retry_after, int(scenario.headers),
                   indexing)
    async with AsyncAudiencesClient(API_KEY, PROJECT_KEY, base_url=server.base_url) as client:
        if scenario.kind == "moving":
            return await _moving(server, client, scenario)
        if scenario.kind == "wait":
            return await _wait(server, client, scenario)
        requests = int(scenario.rate * SECONDS + scenario.burst)
        started = time.perf_counter()
        if scenario.kind == "create_many":
            names = [f"pacing-{round_}-{n}" for n in range(requests)]
            report = await client.create_many(names, retry_budget=RETRY_BUDGET)
            assert report.ok, report.summary()
        else:
            upload = await client.upload(AUDIENCE, _chunks(requests), chunk_size=IDS_PER_CHUNK,
                                         retry_budget=RETRY_BUDGET)
            assert upload.ok, upload.summary()
        elapsed = time.perf_counter() - started
        estimate = client.stats.limit
    accepted, refused = server.counts()
    efficiency = (accepted - scenario.burst) / scenario.rate / elapsed
    return Measure(efficiency, refused / max(accepted + refused, 1), accepted, elapsed, estimate)


async def _moving(server: LimitedServer, client: AsyncAudiencesClient, scenario: Scenario) -> Measure:
    """An upload that outlasts 18 s while the limit goes 40 -> 10 -> 40; what was accepted in them."""
    phases = [(40.0, SECONDS), (10.0, SECONDS), (40.0, SECONDS)]
    stop = asyncio.Event()

    def ids() -> Iterator[str]:
        n = 0
        while not stop.is_set():
            yield f"customer-{n:09d}"
            n += 1

    started = time.monotonic()
    job = asyncio.ensure_future(client.upload(AUDIENCE, ids(), chunk_size=IDS_PER_CHUNK,
                                              retry_budget=RETRY_BUDGET))
    for index, (rate, seconds) in enumerate(phases):
        if index:
            server.command("rate", rate)
        await asyncio.sleep(seconds)
    accepted, refused = server.counts()
    end = time.monotonic()
    stop.set()
    report = await job
    assert report.ok, report.summary()
    capacity = scenario.burst + sum(rate * seconds for rate, seconds in phases)
    return Measure(accepted / capacity, refused / max(accepted + refused, 1), accepted, end - started,
                   client.stats.limit)


async def _wait(server: LimitedServer, client: AsyncAudiencesClient, scenario: Scenario) -> Measure:
    """An upload with ``wait=True``: how long the wait adds after the last chunk was accepted,
    against its budget (the indexing delay, plus the views at the limit's pace, plus 1 s).

    The measure reported is that budget over the time the wait took (>= 1: within budget)."""
    acknowledged: list[float] = []

    def progress_(event: object) -> None:
        if getattr(event, "chunks_acknowledged", 0) >= WAIT_CHUNKS and not acknowledged:
            acknowledged.append(time.perf_counter())

    started = time.perf_counter()
    report = await client.upload(AUDIENCE, _chunks(WAIT_CHUNKS), chunk_size=IDS_PER_CHUNK, wait=True,
                                 on_progress=progress_, retry_budget=RETRY_BUDGET)
    end = time.perf_counter()
    assert report.ok, report.summary()
    accepted, refused = server.counts()
    views = accepted - WAIT_CHUNKS
    waited = end - (acknowledged[0] if acknowledged else end)
    budget = INDEXING + views / scenario.rate + 1.0
    return Measure(budget / max(waited, 1e-3), refused / max(accepted + refused, 1), accepted,
                   end - started, client.stats.limit)


def run(ctx: Context) -> Result:
    rounds = ctx.rounds(1, 3)
    progress(f"{TITLE}: {rounds} rounds of {len(SCENARIOS)} scenarios")
    samples: dict[str, list[Measure]] = {s.name: [] for s in SCENARIOS}
    loop = asyncio.new_event_loop()
    server = LimitedServer()
    try:
        for round_ in range(rounds):
            for scenario in SCENARIOS:
                measure = loop.run_until_complete(_run(server, scenario, round_))
                samples[scenario.name].append(measure)
                progress(f"{scenario.name}: efficiency {measure.efficiency:.2f}, "
                         f"429s {measure.throttled_share:.1%}, {measure.accepted} accepted in "
                         f"{measure.elapsed:.1f}s")
    finally:
        server.close()
        loop.close()
    return _summarize(samples, rounds)


def _summarize(samples: dict[str, list[Measure]], rounds: int) -> Result:
    rows, checks, notes = [], [], []
    for scenario in SCENARIOS:
        measures = samples[scenario.name]
        values = [m.efficiency for m in measures]
        median = statistics.median(values)
        share = statistics.median(m.throttled_share for m in measures)
        spread = (max(values) - min(values)) / median if median else 0.0
        elapsed = statistics.median(m.elapsed for m in measures)
        rows.append(Row(scenario.name, values, median, spread, None,
                        f"429s {share:.1%} of answers; {elapsed:.1f}s"))
        label = "wait budget / wait taken" if scenario.kind == "wait" else "efficiency"
        target = 1.0 if scenario.kind == "wait" else scenario.efficiency_target
        checks.append(Check(TITLE, f"{scenario.name}: {label}", ">=", target, median, scenario.name))
        if scenario.throttled_target is not None:
            checks.append(Check(TITLE, f"{scenario.name}: share of 429s", "<=", scenario.throttled_target,
                                share))
    notes.append(f"{IDS_PER_CHUNK} IDs per request, 4 requests in flight (create_many: 8); a fresh client "
                 f"per run; the emulator in a process of its own. Median of {rounds} rounds.")
    return Result(KEY, TITLE, "of R", True, "", rows, checks, notes)
