"""The limiter with several requests in flight, on an event loop whose clock is virtual.

The limiter's own waits (``call_later``), the requests' trips to the server and the answers all
run on :class:`VirtualLoop`: when nothing is ready, its clock jumps to the next timer instead of
sleeping. Seeded latencies (0.8-1.5 ms each way, a few ms more now and then) stand for the
network and the server's timing, so that a run is the same on every machine, and quick.
"""

from __future__ import annotations

import asyncio
import random
import selectors
import statistics
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from batch_audiences._pacing import RateLimiter


class _JumpingSelector(selectors.DefaultSelector):
    """Never waits: a wait for the next timer moves the loop's clock to it."""

    def __init__(self, loop: VirtualLoop) -> None:
        super().__init__()
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None:
            raise RuntimeError("nothing left to run: the simulation would wait for ever")
        self._loop.now += max(timeout, 0.0)
        return []


class VirtualLoop(asyncio.SelectorEventLoop):
    """An event loop whose ``time()`` only moves when every task waits for a timer."""

    def __init__(self) -> None:
        self.now = 1_000.0
        super().__init__(_JumpingSelector(self))

    def time(self) -> float:
        return self.now


@dataclass
class Run:
    accepted: int = 0
    refused: int = 0
    elapsed: float = 0.0

    @property
    def refused_share(self) -> float:
        return self.refused / (self.accepted + self.refused)


Judge = Callable[[float, random.Random], bool]


def simulate(
    judge: Judge,
    *,
    accepted: int,
    in_flight: int,
    seed: int,
    retry_after: Callable[[], float] | None = None,
) -> Run:
    """``in_flight`` workers send requests through one limiter until ``accepted`` got through;
    ``judge(arrival, rng)`` says whether the server accepts a request arriving then, and
    ``retry_after()`` (when given) what its 429 says to wait."""
    loop = VirtualLoop()
    rng = random.Random(seed)
    run = Run()

    async def worker(pacer: RateLimiter) -> None:
        while run.accepted < accepted:
            sent = await pacer.acquire()
            late = rng.uniform(0.002, 0.004) if rng.random() < 0.03 else 0.0
            await asyncio.sleep(0.0008 + 0.0007 * rng.random() + late)
            ok = judge(loop.time(), rng)
            await asyncio.sleep(0.0008 + 0.0005 * rng.random())
            if ok:
                run.accepted += 1
                pacer.on_success(None, sent)
            else:
                run.refused += 1
                pacer.on_throttle(sent, None if retry_after is None else retry_after())

    async def main() -> None:
        pacer = RateLimiter(clock=loop.time)
        started = loop.time()
        await asyncio.gather(*(worker(pacer) for _ in range(in_flight)))
        run.elapsed = loop.time() - started

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    return run


class TokenBucket:
    """The server's limit: ``rate`` requests per second, holding ``burst``; :meth:`wait` is the
    exact ``Retry-After`` of its last refusal."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens, self.refilled = burst, 1_000.0

    def __call__(self, now: float, _: random.Random) -> bool:
        self.tokens = min(self.burst, self.tokens + max(now - self.refilled, 0.0) * self.rate)
        self.refilled = max(now, self.refilled)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def wait(self) -> float:
        return (1.0 - self.tokens) / self.rate


def at_random(share: float) -> Judge:
    return lambda _, rng: rng.random() >= share


# Seeds on which an earlier limiter stalled for minutes (misreading the first 429 as a drained
# bucket, then cutting at every probe), and a few more.
@pytest.mark.parametrize("seed", [0, 15, 50, 56, 63, 73])
def test_429s_at_random_with_many_requests_in_flight_do_not_stall_a_job(seed: int) -> None:
    # No limit; a fifth of the requests refused at random, 8 in flight, as in the soak test.
    # The client alone sends the 1,500 requests in about a second.
    run = simulate(at_random(0.2), accepted=1_500, in_flight=8, seed=seed)
    assert run.elapsed <= 15.0, run.elapsed


def test_a_server_allowing_no_burst_meets_few_429s_from_a_concurrent_start() -> None:
    # 20/s, no burst, 4 in flight (an upload): the unpaced start has one request accepted and
    # the others refused. Starting again from a few per second and probing up fast costs a
    # handful of 429s; halving the pace from the start's own (thousands per second) cost a 429
    # per halving, and more for the requests already in flight at each step.
    runs = [simulate(TokenBucket(20.0, 1.0), accepted=121, in_flight=4, seed=seed) for seed in range(10)]
    assert statistics.median(r.refused_share for r in runs) <= 0.11, [r.refused for r in runs]
    # Each cut's next turn follows the last request the server accepted, not the one it refused
    # (0.88 when a turn of its rate was lost at every cut).
    efficiency = statistics.median((r.accepted - 1) / 20.0 / r.elapsed for r in runs)
    assert efficiency >= 0.90, efficiency


@pytest.mark.parametrize(("burst", "efficiency", "refused"), [(1.0, 0.93, 0.12), (20.0, 0.99, 0.06)])
def test_a_server_that_says_exactly_when_to_come_back_is_used_to_its_limit(
    burst: float, efficiency: float, refused: float
) -> None:
    # 20/s, an exact Retry-After on every 429 (a few milliseconds, for a request a little
    # early). Allowing no burst, the turn after a cut follows the last request accepted (0.90
    # when it followed the one refused); saving up a burst, the server keeps what a later turn
    # leaves.
    runs = []
    for seed in range(10):
        bucket = TokenBucket(20.0, burst)
        runs.append(
            simulate(bucket, accepted=120 + int(burst), in_flight=4, seed=seed, retry_after=bucket.wait)
        )
    used = statistics.median((r.accepted - burst) / 20.0 / r.elapsed for r in runs)
    assert used >= efficiency, used
    assert statistics.median(r.refused_share for r in runs) <= refused, [r.refused for r in runs]


def test_a_drained_burst_is_read_as_a_second_of_rate_with_requests_in_flight() -> None:
    # 20/s holding 20, 4 in flight: the first 429 ends the burst, and the 429s just after it
    # confirm that the bucket is empty: the rate is what got through in the first second.
    runs = [simulate(TokenBucket(20.0, 20.0), accepted=140, in_flight=4, seed=seed) for seed in range(10)]
    assert statistics.median(r.refused_share for r in runs) <= 0.08, [r.refused for r in runs]
