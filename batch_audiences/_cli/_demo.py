"""The demo behind ``batch-audiences demo`` and ``python -m batch_audiences demo``.

It starts the emulator in this process, throttled and with injected 429 and 503 answers so that
retries happen, and then runs the SDK's main jobs through the public async client only: create a
few dozen audiences concurrently (``create_many``, with a progress line), fill them, replace one,
wait for indexing, list them all, remove one, and stream 100,000 IDs into one audience
(``upload``, with a progress line). It prints a short account of what happened, checks the
emulator's final state against what was asked, and returns 0 when everything matches.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Iterator
from typing import TypeVar

from .. import AsyncAudiencesClient, IdAction, Member, NewAudience, ProgressEvent, RetryPolicy
from ..testing import Emulator, FaultPlan
from ._output import Console, format_count, format_duration
from ._progress import Progress

__all__ = ["demo", "run_demo"]

T = TypeVar("T")

#: What the emulator accepts per second (burst 1); above it, 429 with Retry-After.
SERVER_RATE = 100.0
#: Share of requests answered with an injected 429 / 503.
FAULT_RATE = 0.04
#: IDs added to each small audience.
FILL_SIZE = 50
#: Members of the audience that is replaced.
REPLACE_SIZE = 20


def _customer_ids(count: int) -> Iterator[str]:
    # A generator: upload() reads it lazily, the 100,000 IDs never sit in a list.
    return (f"customer-{number:07d}" for number in range(count))


class _Account:
    """The lines of the account, and the time each step took."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.steps: list[tuple[str, float]] = []

    async def step(self, label: str, work: Awaitable[T]) -> T:
        started = time.perf_counter()
        result = await work
        elapsed = time.perf_counter() - started
        self.steps.append((label, elapsed))
        self.console.text(f"  {len(self.steps)}. {label:<62} {format_duration(elapsed):>6}")
        return result


async def demo(
    *,
    ids: int = 100_000,
    audiences: int = 36,
    seed: int | None = 7,
    console: Console | None = None,
) -> int:
    """Run the demo on the running loop; the exit status (0 when the final state checks out)."""
    console = console if console is not None else Console()
    audiences = max(audiences, 3)
    faults = FaultPlan(seed=seed, rate_429=FAULT_RATE, rate_503=FAULT_RATE, retry_after=0.1)
    console.text("batch-audiences demo: the public async client against a local emulator")
    console.text(
        f"(the emulator accepts {SERVER_RATE:g} requests/s and answers {FAULT_RATE:.0%} of them with "
        f"429 and {FAULT_RATE:.0%} with 503, so retries show)\n"
    )
    started = time.perf_counter()
    async with Emulator(indexing_delay=0.02, replace_indexing_delay=0.08, rate_limit=SERVER_RATE,
                        faults=faults) as emu, AsyncAudiencesClient(
        emu.api_key, emu.project_key, base_url=emu.base_url,
        # Short waits, so the demo stays short; a real job keeps the defaults.
        retry=RetryPolicy(max_retries=10, base_delay=0.05, max_delay=1.0, max_retry_after=5.0),
    ) as client:
        account = _Account(console)
        names = [f"demo-{number:02d}" for number in range(audiences)]

        progress = Progress(console, "create_many", unit="audiences", total=len(names))

        def on_create(event: ProgressEvent) -> None:
            progress.update(done=event.items_done, failed=event.items_failed, retries=event.retries,
                            force=event.kind == "finished")

        wanted = [NewAudience(name, display_name=f"Demo audience {name[-2:]}") for name in names]
        try:
            created = await account.step(
                f"created {len(names)} audiences concurrently (create_many)",
                client.create_many(wanted, concurrency=8, on_progress=on_create),
            )
        finally:
            progress.close()
        if not created.ok:
            console.error(created.summary())
            return 1

        fills = {name: [f"{name}-user-{n:03d}" for n in range(FILL_SIZE)] for name in names}
        tokens = await account.step(
            f"filled each with {FILL_SIZE} IDs ({len(names)} updates at once)",
            asyncio.gather(*(
                client.update(name, [IdAction.add(i, {"source": "demo"}) for i in members])
                for name, members in fills.items()
            )),
        )
        replaced = names[1]
        fills[replaced] = [f"{replaced}-vip-{n:02d}" for n in range(REPLACE_SIZE)]
        replace = await account.step(
            f"replaced {replaced} with {REPLACE_SIZE} other members",
            client.replace(replaced, [Member(i, {"tier": "gold"}) for i in fills[replaced]]),
        )
        writes = [*zip(names, (t.indexing_token for t in tokens), strict=True),
                  (replaced, replace.indexing_token)]
        await account.step(
            f"waited until all {len(writes)} writes were indexed",
            asyncio.gather(*(
                client.wait_until_applied(name, token, timeout=30, poll_interval=0.05)
                for name, token in writes
            )),
        )
        listed = await account.step(
            "listed every audience (pages of 10)",
            _collect(client, page_size=10),
        )
        removed = names[-1]
        await account.step(f"removed {removed}", client.remove(removed))

        big = "demo-big"
        await client.create(big, display_name="Demo: a CRM export")
        upload_progress = Progress(console, f"upload {big}", unit="IDs", total=ids)

        def on_upload(event: ProgressEvent) -> None:
            upload_progress.update(done=event.items_done, failed=event.items_failed,
                                   retries=event.retries, force=event.kind == "finished")

        try:
            report = await account.step(
                f"uploaded {format_count(ids)} IDs to {big} (upload, wait=True)",
                client.upload(big, _customer_ids(ids), concurrency=4, wait=True, on_progress=on_upload),
            )
        finally:
            upload_progress.close()

        stats = client.stats
        elapsed = time.perf_counter() - started
        emu.settle()
        problems = _check(emu, fills, removed, big, ids)
        seen = emu.requests
        throttled = sum(1 for r in seen if r.outcome in ("rate_limited", "fault_429"))
        unavailable = sum(1 for r in seen if r.outcome == "fault_503")

    rate = int(report.items_accepted / report.elapsed) if report.elapsed > 0 else 0
    document = {
        "ok": not problems,
        "steps": [{"step": label, "seconds": round(seconds, 3)} for label, seconds in account.steps],
        "audiences_listed": len(listed),
        "upload": {"ids": report.items_accepted, "requests": report.chunks_acknowledged,
                   "ids_per_second": rate},
        "requests": stats.requests,
        "retries": stats.retries,
        "server_429": throttled,
        "server_503": unavailable,
        "seconds": round(elapsed, 3),
        "problems": problems,
    }
    lines = [
        "",
        f"  listed     {len(listed)} audiences, 10 per page",
        f"  upload     {format_count(report.items_accepted)} IDs in {report.chunks_acknowledged} requests "
        f"of up to 10,000, {format_count(rate)} IDs/s",
        f"  requests   {format_count(stats.requests)} sent by the client, {format_count(stats.retries)} "
        "of them retries",
        f"  server     answered {throttled} x 429 (rate limit or injected) and {unavailable} x 503 "
        "(injected): all retried, nothing lost",
        f"  time       {format_duration(elapsed)}",
    ]
    if not problems:
        lines.append(f"  check      the emulator holds exactly what was asked: {len(names)} audiences "
                     f"({removed} gone, {big} added), {big} with {format_count(ids)} IDs - OK")
    console.result(document, "\n".join(lines))
    for problem in problems:
        console.error(problem)
    return 1 if problems else 0


async def _collect(client: AsyncAudiencesClient, *, page_size: int) -> list[str]:
    return [audience.name async for audience in client.iter_audiences(page_size=page_size)]


def _check(emu: Emulator, fills: dict[str, list[str]], removed: str, big: str, ids: int) -> list[str]:
    """What differs between the emulator's final state and what the demo asked for."""
    problems = []
    expected = sorted([name for name in fills if name != removed] + [big])
    if emu.audience_names() != expected:
        problems.append(f"audiences are {emu.audience_names()}, expected {expected}")
        return problems
    for name, members in fills.items():
        if name != removed and sorted(emu.members(name)) != sorted(members):
            problems.append(f"{name} does not hold the {len(members)} IDs it was given")
    held = emu.members(big)
    if len(held) != ids or any(f"customer-{n:07d}" not in held for n in (0, ids // 2, ids - 1)):
        problems.append(f"{big} holds {len(held):,} IDs, expected {ids:,}")
    return problems


def run_demo(
    *,
    ids: int = 100_000,
    audiences: int = 36,
    seed: int | None = 7,
    console: Console | None = None,
) -> int:
    """Run the demo in a new event loop; returns the exit status (0: success)."""
    return asyncio.run(demo(ids=ids, audiences=audiences, seed=seed, console=console))
