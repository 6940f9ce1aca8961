"""The adaptive rate limiter (in virtual time, then against a rate-limited emulator, counting)
and the retry budget of bulk calls."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from batch_audiences import ThrottledError
from batch_audiences._pacing import RateLimiter, RetryBudget
from batch_audiences.testing import Emulator


class VirtualTime:
    """A clock and a sleep for the limiter: sleeping advances the clock, nothing really waits.

    ``during_next_sleep`` runs while the next sleep is in progress (e.g. a 429 arriving then).
    """

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []
        self.during_next_sleep: Callable[[], None] | None = None

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 9))
        hook, self.during_next_sleep = self.during_next_sleep, None
        if hook is not None:
            hook()
        self.now += seconds


def limiter(time: VirtualTime, **kwargs: Any) -> RateLimiter:
    return RateLimiter(clock=time.clock, sleep=time.sleep, **kwargs)


async def test_unlimited_until_throttled() -> None:
    time = VirtualTime()
    pacer = limiter(time)
    assert [await pacer.acquire() for _ in range(5)] == [100.0] * 5
    assert time.sleeps == []
    assert pacer.rate is None


async def test_max_rate_spaces_requests() -> None:
    time = VirtualTime()
    pacer = limiter(time, max_rate=10)
    starts = [await pacer.acquire() for _ in range(4)]
    assert starts == pytest.approx([100.0, 100.1, 100.2, 100.3])


async def test_retry_after_pauses_every_request() -> None:
    time = VirtualTime()
    pacer = limiter(time)
    sent = await pacer.acquire()
    pacer.on_throttle(sent, 2.0)
    assert pacer.delay() == pytest.approx(2.0)
    assert await pacer.acquire() == pytest.approx(102.0)


async def test_a_request_already_waiting_honours_a_pause_that_starts_meanwhile() -> None:
    time = VirtualTime()
    pacer = limiter(time, max_rate=10)
    await pacer.acquire()  # 100.0
    time.during_next_sleep = lambda: pacer.on_throttle(100.0, 1.0)  # a 429 arrives as we wait
    start = await pacer.acquire()  # had slot 100.1
    assert start == pytest.approx(101.0)
    assert time.sleeps == pytest.approx([0.1, 0.9])


async def test_a_cut_slows_down_requests_already_waiting() -> None:
    time = VirtualTime()
    pacer = limiter(time, max_rate=100)
    first = await pacer.acquire()

    def throttled() -> None:
        time.now += 0.005
        pacer.on_throttle(first, None)

    time.during_next_sleep = throttled
    second = await pacer.acquire()  # reserved 100.01 at the old pace
    assert pacer.rate == pytest.approx(50.0)
    assert second - first == pytest.approx(1 / 50)  # re-queued at the new pace


async def test_a_429_of_a_request_sent_before_the_last_cut_does_not_cut_again() -> None:
    time = VirtualTime()
    pacer = limiter(time, max_rate=10)
    a = await pacer.acquire()
    b = await pacer.acquire()
    time.now += 0.1
    pacer.on_throttle(a, None)
    pacer.on_throttle(b, None)  # sent before the cut: an echo of the same congestion
    assert pacer.rate == pytest.approx(5.0)
    assert (pacer.throttles, pacer.decreases) == (2, 1)
    c = await pacer.acquire()
    d = await pacer.acquire()
    pacer.on_throttle(c, None)  # sent after it: news, but one 429 alone may be noise
    assert pacer.rate == pytest.approx(5.0)
    pacer.on_throttle(d, None)  # every request since the cut throttled: the pace is the cause
    assert pacer.rate == pytest.approx(2.5)


async def test_a_cut_stays_just_under_what_the_server_accepted() -> None:
    time = VirtualTime()
    pacer = limiter(time, max_rate=30)
    for _ in range(40):  # 25 accepted per second
        pacer.on_success()
        time.now += 0.04
    time.now -= 0.04
    pacer.on_throttle(time.now, None)
    # Half of 30 would be 15; the server was taking 25, so 90 % of that.
    assert pacer.rate == pytest.approx(22.5, rel=0.01)


async def test_probing_is_fast_before_the_limit_is_known_and_slow_after() -> None:
    time = VirtualTime()
    pacer = limiter(time)
    pacer.on_throttle(await pacer.acquire(), None)  # nothing known: a guess
    guess = pacer.rate
    assert guess is not None
    assert guess > 0
    time.now += 1.0
    pacer.on_success()
    assert pacer.rate == pytest.approx(2 * guess)  # slow start: doubles in a second

    time = VirtualTime()
    pacer = limiter(time, max_rate=100)
    for _ in range(21):
        pacer.on_success()
        time.now += 0.05
    pacer.on_throttle(time.now, None)
    measured = pacer.rate
    assert measured is not None
    for _ in range(100):
        time.now += 1.0
        pacer.on_success()
    # Once measured: 0.1 % per accepted request, however long they take.
    assert pacer.rate == pytest.approx(measured * 1.001**100)


async def test_probing_never_passes_max_rate() -> None:
    time = VirtualTime()
    pacer = limiter(time, max_rate=8)
    pacer.on_throttle(await pacer.acquire(), None)
    for _ in range(100):
        time.now += 1.0
        pacer.on_success()
    assert pacer.rate == 8


async def test_fail_fast_raises_instead_of_waiting() -> None:
    time = VirtualTime()
    pacer = limiter(time, max_rate=4, fail_fast=True)
    await pacer.acquire()
    with pytest.raises(ThrottledError) as caught:
        await pacer.acquire()
    assert caught.value.wait == pytest.approx(0.25)
    assert time.sleeps == []


def test_retry_budget() -> None:
    now = [0.0]
    per_request = RetryBudget(None, clock=lambda: now[0])
    assert per_request.allow(1, 2)
    assert per_request.allow(2, 2)
    assert not per_request.allow(3, 2)

    shared = RetryBudget(3, clock=lambda: now[0])
    assert [shared.allow(1, 0) for _ in range(4)] == [True, True, True, False]
    assert shared.exhausted
    assert shared.spent == 3

    timed = RetryBudget(100, deadline=10.0, clock=lambda: now[0])
    assert timed.allow(1, 0)
    assert timed.remaining_time() == 10.0
    assert not timed.allow(1, 0, wait=11.0)  # the wait alone would pass the deadline
    now[0] = 10.0
    assert timed.expired
    assert not timed.allow(1, 0)
    assert timed.remaining_time() == 0.0
    assert not timed.exhausted


# -- against the emulator: counts, not times ---------------------------------------------------------


async def test_a_bulk_call_converges_under_a_server_limit_with_few_429s(
    make_api: Any, emulator: Emulator
) -> None:
    limit = 60.0
    emulator.rate_limit = limit
    emulator.add_audience("crm")
    api = await make_api()
    chunks = 180
    report = await api.upload("crm", (f"u{n}" for n in range(chunks * 10)), chunk_size=10, concurrency=8,
                              retry_budget=1_000)
    assert report.ok, report.summary()
    throttled = emulator.count(route="update", status=429)
    accepted = emulator.count(route="update", status=202)
    assert accepted == chunks
    assert throttled == report.retries
    assert throttled <= 0.15 * (accepted + throttled), (throttled, accepted)
    # The limiter found a pace near the server's limit: neither far below nor above it.
    rate = api.stats.rate
    assert rate is not None
    assert 0.4 * limit <= rate <= 1.5 * limit, rate


async def test_fail_fast_fails_the_chunk_that_would_have_waited(make_api: Any, emulator: Emulator) -> None:
    emulator.add_audience("crm")
    api = await make_api(max_rate=1, fail_fast=True)
    report = await api.upload("crm", [f"u{n}" for n in range(30)], chunk_size=10, concurrency=2)
    assert not report.ok
    assert report.chunks_acknowledged == 1
    assert any(isinstance(chunk.error, ThrottledError) for chunk in report.failed_chunks)
    assert emulator.count(route="update") == 1
