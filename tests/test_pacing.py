"""The adaptive rate limiter (in virtual time, then against a rate-limited emulator, counting)
and the retry budget of bulk calls."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import statistics
import time as time_
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from batch_audiences import RetryPolicy, ThrottledError
from batch_audiences._budget import RetryBudget
from batch_audiences._limitrules import SPACING_TOLERANCE, share_of_limit
from batch_audiences._pacing import RateLimiter
from batch_audiences.testing import Emulator, ScriptedResponse

from .conftest import forward, serving


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
    assert pacer.estimate == pytest.approx(50.0)  # nothing measured yet: halved
    assert second - first == pytest.approx(1 / 50)  # re-queued at the new pace


async def test_a_429_of_a_request_sent_before_the_last_cut_does_not_cut_again() -> None:
    time = VirtualTime()
    pacer = limiter(time, max_rate=10)
    a = await pacer.acquire()
    b = await pacer.acquire()
    time.now += 0.1
    pacer.on_throttle(a, None)
    pacer.on_throttle(b, None)  # sent before the cut: an echo of the same congestion
    assert pacer.estimate == pytest.approx(5.0)
    assert (pacer.throttles, pacer.decreases) == (2, 1)
    c = await pacer.acquire()
    pacer.on_throttle(c, None)  # sent after it, as the pace probes up from a guess: news
    assert pacer.decreases == 2
    assert pacer.estimate is not None
    assert pacer.estimate <= 5.0


async def run_at(time: VirtualTime, pacer: RateLimiter, rate: float, count: int) -> float:
    """``count`` requests accepted at ``rate`` per second; returns when the last one started."""
    sent = 0.0
    for _ in range(count):
        sent = await pacer.acquire()
        time.now += 1.0 / rate
        pacer.on_success()
    return sent


async def cut_after(time: VirtualTime, pacer: RateLimiter, rate: float, count: int) -> float:
    """``count`` requests accepted at ``rate`` per second, then a 429: the estimate it leaves."""
    pacer.on_throttle(await run_at(time, pacer, rate, count), None)
    estimate = pacer.estimate
    assert estimate is not None
    return estimate


async def test_after_a_cut_the_pace_climbs_back_in_seconds_then_probes_above() -> None:
    time = VirtualTime()
    pacer = limiter(time)
    sent = await run_at(time, pacer, 20.0, 40)  # the server took 20 per second…
    pacer.on_throttle(sent, None)  # …and then refused one
    cut = time.now
    # The estimate: the pace refused (all the others of the last answers got through).
    estimate = pacer.estimate
    assert estimate is not None
    assert estimate == pytest.approx(20.0, rel=0.01)
    assert pacer.rate == pytest.approx(0.95 * estimate)
    climb = 1.0  # a new estimate: back to it soon (20 requests, 1 s at least), in case it moves on
    # Concave: most of the way back within the first half of the climb.
    time.now = cut + climb / 2
    assert 0.99 * estimate <= (pacer.rate or 0) < estimate
    time.now = cut + climb
    assert pacer.rate == pytest.approx(estimate)
    # Then it probes above, slowly at first (a limit just above is met with one 429)…
    time.now = cut + climb + 0.1
    assert pacer.rate == pytest.approx(estimate * 1.008)
    # …then faster and faster, so that a limit that rose is found within a second or two.
    time.now = cut + climb + 0.5
    assert pacer.rate == pytest.approx(2 * estimate)
    time.now = cut + climb + 1.0
    assert pacer.rate == pytest.approx(9 * estimate)
    time.now = cut + 600
    assert pacer.rate == pytest.approx(64 * estimate)  # bounded
    # A limit that holds still is probed seldom: about 30 requests' worth of climb, not 1 s.
    again = await cut_after(time, pacer, 20.0, 40)
    assert again == pytest.approx(estimate, rel=0.05)
    time.now += 1.0
    assert (pacer.rate or 0) < again
    time.now += 30 / again - 1.0
    assert pacer.rate == pytest.approx(again)


async def test_the_climb_and_the_probe_wait_while_the_pace_is_not_used() -> None:
    time = VirtualTime()
    pacer = limiter(time)
    estimate = await cut_after(time, pacer, 20.0, 40)
    time.now += 60.0  # idle for a minute: nothing was learnt about the limit meanwhile
    await pacer.acquire()
    assert (pacer.rate or 0) <= estimate


async def test_a_limit_that_rises_is_followed_within_seconds() -> None:
    time = VirtualTime()
    pacer = limiter(time)
    sent = await run_at(time, pacer, 5.0, 15)
    pacer.on_throttle(sent, None)
    cut = time.now
    # The limit is now 20/s. The old limiter needed about 1,400 requests to get there.
    while (pacer.rate or 0) < 20.0:
        await run_at(time, pacer, 1000.0, 1)  # back-to-back requests: the pace is all that binds
    # 4 s back to 5/s (20 requests: enough to judge the cut, the estimate being new), then
    # 1.4 s of probing up to four times that.
    assert time.now - cut <= 6.0
    assert len(time.sleeps) <= 60


async def test_first_429_with_nothing_measured_halves_and_probes_from_there() -> None:
    time = VirtualTime()
    pacer = limiter(time)
    pacer.on_throttle(await pacer.acquire(), None)  # nothing known: a guess
    guess = pacer.rate
    assert guess is not None
    assert guess > 0
    time.now += 0.5
    assert pacer.rate == pytest.approx(2 * guess)


async def test_x_ratelimit_remaining_zero_holds_the_probe_at_the_limit() -> None:
    time = VirtualTime()
    pacer = limiter(time)
    estimate = await cut_after(time, pacer, 20.0, 40)
    time.now += 2.0  # past the climb (1.5 s): probing above the estimate
    probing = pacer.rate
    assert probing is not None
    assert probing > estimate
    pacer.on_success({"X-RateLimit-Remaining": "0"})
    time.now += 0.5
    # A server that has never said more than 0 lets no burst through: its 0 says nothing.
    assert (pacer.rate or 0) > probing
    time.now -= 0.5
    pacer.on_success({"X-RateLimit-Remaining": "2"})  # this one lets bursts through…
    pacer.on_success({"X-RateLimit-Remaining": "0"})  # …and says: that was the last one
    time.now += 5.0
    assert pacer.rate == pytest.approx(probing)  # held, not grown for five seconds
    pacer.on_success({"X-RateLimit-Remaining": "4"})  # room again
    time.now += 0.5
    assert pacer.rate == pytest.approx(2 * probing)  # probing on from there


async def test_x_ratelimit_remaining_one_then_zero_from_a_bucket_of_one_does_not_hold_the_probe() -> None:
    # A server whose bucket holds one request says 0 after most requests, whatever the pace, and
    # 1 when it refilled while it worked on a slow request: neither says the limit is reached.
    time = VirtualTime()
    pacer = limiter(time)
    sent = await run_at(time, pacer, 20.0, 40)
    pacer.on_throttle(sent, None)
    time.now += 2.0  # past the climb: probing above the estimate
    probing = pacer.rate
    assert probing is not None
    for _ in range(5):
        pacer.on_success({"X-RateLimit-Remaining": "1"})
        pacer.on_success({"X-RateLimit-Remaining": "0"})
    time.now += 0.5
    assert (pacer.rate or 0) > 1.5 * probing  # still probing up


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



async def against_a_token_bucket(limit: float, burst: float, accepted: int) -> tuple[RateLimiter, int, float]:
    """One request after the other (5 ms of work each) against a token bucket of ``limit`` per
    second holding ``burst``, full at the start, until ``accepted`` got through; in virtual time.
    Returns the limiter, the number of 429s and the virtual seconds taken."""
    time = VirtualTime()
    pacer = limiter(time)
    tokens, refilled, started = burst, time.now, time.now
    throttled = done = 0
    while done < accepted:
        sent = await pacer.acquire()
        time.now += 0.005
        tokens, refilled = min(burst, tokens + (time.now - refilled) * limit), time.now
        if tokens >= 1.0:
            tokens -= 1.0
            done += 1
            pacer.on_success(None, sent)
        else:
            throttled += 1
            pacer.on_throttle(sent, None)
    return pacer, throttled, time.now - started


async def test_a_429_after_a_saved_burst_was_drained_is_read_as_the_burst_spent_not_the_rate() -> None:
    # A server letting a second's worth through at once: a probe above its rate goes through
    # while the burst saved meanwhile lasts, then meets a 429. The rate is what the server let
    # through between two 429s (its bucket empty at both), not the pace that drained the burst.
    limit = 20.0
    pacer, throttled, elapsed = await against_a_token_bucket(limit, limit, 1_000)
    assert throttled <= 0.08 * (1_000 + throttled), throttled
    assert pacer.estimate is not None
    assert 0.9 * limit <= pacer.estimate <= 1.15 * limit, pacer.estimate
    assert (1_000 - limit) / elapsed >= 0.95 * limit  # virtual time: the limit, used


async def test_a_server_allowing_no_burst_is_paced_just_below_its_limit() -> None:
    # Every request must come 1/R after the last one accepted: the estimate is the highest gap
    # accepted, just below the lowest refused, so that climbs back to it meet no 429.
    limit = 20.0
    pacer, throttled, elapsed = await against_a_token_bucket(limit, 1.0, 1_000)
    assert throttled <= 0.05 * (1_000 + throttled), throttled
    assert pacer.estimate is not None
    assert 0.9 * limit <= pacer.estimate <= limit, pacer.estimate
    assert 1_000 / elapsed >= 0.9 * limit


async def first_cut_against_a_full_bucket(limit: float, burst: float) -> float | None:
    """A fresh limiter, one request after the other (5 ms each) against a full token bucket, up
    to its first 429 and the two answers after it: the estimate they leave."""
    time = VirtualTime()
    pacer = limiter(time)
    tokens, refilled = burst, time.now
    while pacer.throttles < 4:
        sent = await pacer.acquire()
        time.now += 0.005
        tokens, refilled = min(burst, tokens + (time.now - refilled) * limit), time.now
        if tokens >= 1.0:
            tokens -= 1.0
            pacer.on_success(None, sent)
        else:
            pacer.on_throttle(sent, None)
    return pacer.estimate


@pytest.mark.parametrize("limit", [20.0, 40.0])
async def test_a_429_that_ends_the_burst_of_an_unpaced_start_reads_a_second_of_rate(limit: float) -> None:
    # The unpaced start of a job drained a bucket holding one second of the rate: its first 429
    # says the bucket is empty, not what refills it. What got through per second of the job (a
    # second at least) is the estimate, not the pace that drained it (some 200 requests/s here),
    # from which many 429s would step down.
    estimate = await first_cut_against_a_full_bucket(limit, limit)
    assert estimate is not None
    assert 0.9 * limit <= estimate <= 1.25 * limit, estimate
    # (The reading waits for three more 429s, the bucket's refusals of the pace that drained
    # it: a 429 at random would be followed by accepted answers instead.)
    _, throttled, elapsed = await against_a_token_bucket(limit, limit, int(5 * limit))
    assert throttled <= 0.1 * 5 * limit, throttled
    assert (4 * limit) / elapsed >= 0.95 * limit


async def test_a_bucket_holding_several_seconds_is_not_hammered_once_drained() -> None:
    # 100/s holding 100, drained by a client twice as fast: the estimate of the first 429 is
    # too high (two seconds' worth went through in one), and what the server let through
    # between two 429s corrects it, without hundreds of 429s meanwhile.
    _, throttled, elapsed = await against_a_token_bucket(100.0, 100.0, 500)
    assert throttled <= 0.05 * 500, throttled
    assert 400 / elapsed >= 0.95 * 100


@pytest.mark.parametrize("limit", [5.0, 20.0, 40.0])
async def test_a_server_allowing_no_burst_is_found_from_an_unpaced_start_with_few_429s(limit: float) -> None:
    # One request got through, the next was refused: the limit may be anywhere below the pace.
    # Refusals are judged by the gap from the last request the server accepted, and a probe
    # that leapt far past the pace accepted goes back to it and probes up fast: the limit is
    # found with a handful of 429s, and kept just below.
    pacer, throttled, _ = await against_a_token_bucket(limit, 1.0, int(5 * limit))
    assert throttled <= 9, throttled
    assert pacer.estimate is not None
    assert 0.85 * limit <= pacer.estimate <= limit, pacer.estimate


@pytest.mark.parametrize(("limit", "most_429s", "least_efficiency"), [
    (3.0, 0.16, 0.80), (5.0, 0.11, 0.85), (10.0, 0.07, 0.90),
])
async def test_a_slow_limit_allowing_no_burst_is_kept_with_few_429s(
    limit: float, most_429s: float, least_efficiency: float
) -> None:
    # A few requests a second: a probe that grows by the second would leap from one request to
    # the next, and a refused request moves no turn of such a server (the gap it judges is the
    # one from the last request it accepted). Both make the pace overshoot, cycle after cycle.
    _, throttled, elapsed = await against_a_token_bucket(limit, 1.0, 1_000)
    assert throttled <= most_429s * (1_000 + throttled), throttled
    assert 1_000 / elapsed >= least_efficiency * limit


async def test_a_limit_allowing_no_burst_that_falls_is_cut_to_its_new_level_not_below() -> None:
    # 40/s with 4 requests in flight, then 10/s: the first 429s after the fall come at the old
    # pace, with the gap from the last request accepted already a bound on the new limit. The
    # share that got through is a share of the pace sent at, not of that bound again (which
    # would cut to 3 or 4/s, and take seconds to climb back).
    time = VirtualTime()
    pacer = limiter(time)
    tokens, refilled, limit = 1.0, time.now, 40.0
    fell_at = time.now + 4.0
    in_flight: list[tuple[float, bool]] = []
    refused = 0
    estimates: list[float] = []
    while time.now < fell_at + 4.0:
        if time.now >= fell_at:
            limit = 10.0
        sent = await pacer.acquire()
        # The server judges each request as it arrives; its answer reaches the client once
        # three more requests have left.
        tokens, refilled = min(1.0, tokens + (sent - refilled) * limit), sent
        accepted = tokens >= 1.0
        tokens -= accepted
        refused += sent >= fell_at and not accepted
        in_flight.append((sent, accepted))
        if len(in_flight) == 4:
            first, ok = in_flight.pop(0)
            pacer.on_success(None, first) if ok else pacer.on_throttle(first, None)
        if time.now >= fell_at + 2.0 and pacer.estimate is not None:
            estimates.append(pacer.estimate)
    assert 7.0 <= min(estimates) <= max(estimates) <= 10.5, (min(estimates), max(estimates))
    # For 40 accepted in the 4 s after the fall. (Reading the share of refusals after a few
    # 429s in a row, at random or not, took 49; 429s that come at random keep a few here.)
    assert refused <= 35, refused


async def test_429s_at_random_from_the_start_do_not_collapse_the_pace() -> None:
    # A server with no limit that refuses a fifth of the requests at random, from the first
    # ones: few got through before the first 429, so it looks like a server allowing no burst.
    # A refusal long after the last request accepted is then no spacing of such a server (one
    # accepted sooner since): taking it for one walked the estimate down to a few per second.
    time = VirtualTime()
    pacer = limiter(time)
    refusals = random.Random(7)
    started = time.now
    for n in range(1_500):
        sent = await pacer.acquire()
        time.now += 0.005
        if n == 2 or (n > 2 and refusals.random() < 0.2):
            pacer.on_throttle(sent, None)
        else:
            pacer.on_success(None, sent)
    # The client alone goes at 200/s here: 7.5 s for the 1,500 requests. (Taking the gaps for
    # a limit's, they took over 100 s, at an estimate of 1 to 20/s.)
    assert time.now - started <= 30.0, time.now - started
    assert pacer.estimate is not None
    assert pacer.estimate >= 10.0, pacer.estimate


async def answer_in_turn(time: VirtualTime, pacer: RateLimiter, answers: str) -> None:
    """One request after the other, 5 ms each, answered as ``answers`` says: A accepted, R 429."""
    for answer in answers:
        sent = await pacer.acquire()
        time.now += 0.005
        pacer.on_success(None, sent) if answer == "A" else pacer.on_throttle(sent, None)


async def test_a_429_at_random_after_many_accepted_is_not_read_as_a_drained_burst() -> None:
    # 30 accepted at 200/s, then one 429: a bucket drained by the start of a job, or a 429 that
    # came at random? A drained bucket refuses what follows too; here the next ones got through.
    # Reading it as a drained bucket at once took the pace to 30/s (what got through in the first
    # second), and 429s at random then held it low for minutes.
    time = VirtualTime()
    pacer = limiter(time)
    await answer_in_turn(time, pacer, "A" * 30 + "R" + "AA")
    assert pacer.estimate is not None
    assert pacer.estimate >= 100.0, pacer.estimate


async def test_a_drained_burst_is_read_once_the_answers_after_it_say_so() -> None:
    time = VirtualTime()
    pacer = limiter(time)
    await answer_in_turn(time, pacer, "A" * 30 + "RRRR")
    # What got through in the first second (30), not the pace that drained the burst (200/s).
    assert pacer.estimate == pytest.approx(30.0, rel=0.05)


async def test_a_server_allowing_no_burst_is_found_from_a_guess_once_the_answers_confirm_it() -> None:
    # One request of the start accepted, the next three refused: a server allowing no burst, far
    # below the start's pace. The pace starts again from 10/s and probes up fast from there.
    time = VirtualTime()
    pacer = limiter(time)
    await answer_in_turn(time, pacer, "ARRR")
    assert pacer.estimate == pytest.approx(10.0)
    time.now += 0.3  # nothing sent meanwhile would hold the probe: keep it busy
    await answer_in_turn(time, pacer, "AAAA")
    assert (pacer.rate or 0.0) >= 15.0, pacer.rate


@pytest.mark.parametrize("retry_after", [None, 0.05])
async def test_429s_that_say_when_to_come_back_are_followed_not_guessed_at(retry_after: float | None) -> None:
    # Four requests at once, one accepted: a server allowing no burst. Without advice, the pace
    # starts again from a guess; an exact Retry-After already spaces the requests as the server
    # allows, and the pace is read as for any other 429.
    time = VirtualTime()
    pacer = limiter(time)
    sent = [await pacer.acquire() for _ in range(4)]
    time.now += 0.002
    pacer.on_success(None, sent[0])
    for started in sent[1:]:
        pacer.on_throttle(started, retry_after)
    guessed = pacer.estimate == pytest.approx(10.0)
    assert guessed is (retry_after is None), pacer.estimate


async def test_one_429_at_random_at_the_start_is_not_read_as_a_server_allowing_no_burst() -> None:
    time = VirtualTime()
    pacer = limiter(time)
    await answer_in_turn(time, pacer, "ARA")
    assert pacer.estimate is not None
    assert pacer.estimate > 10.0, pacer.estimate


async def no_burst_limiter(
    time: VirtualTime, limit: float, pacer: RateLimiter | None = None, starts: list[float] | None = None
) -> RateLimiter:
    """A limiter (``pacer``, else a new one) that learnt, from a server allowing no burst, a
    limit of about ``limit``, over 200 requests of 5 ms of work each (their starts go to
    ``starts``)."""
    pacer = pacer or limiter(time)
    tokens, refilled = 1.0, time.now
    for _ in range(200):
        sent = await pacer.acquire()
        if starts is not None:
            starts.append(sent)
        time.now += 0.005
        tokens, refilled = min(1.0, tokens + (time.now - refilled) * limit), time.now
        if tokens >= 1.0:
            tokens -= 1.0
            pacer.on_success(None, sent)
        else:
            pacer.on_throttle(sent, None)
    assert pacer.estimate is not None
    return pacer


async def accepted_then_refused(time: VirtualTime, pacer: RateLimiter) -> tuple[float, float, int]:
    """One request accepted, the next refused (each answered 3 ms after it started); returns
    their starts and the cuts the 429 made."""
    accepted = await pacer.acquire()
    time.now = accepted + 0.003
    pacer.on_success(None, accepted)
    refused = await pacer.acquire()
    time.now = refused + 0.003
    decreases = pacer.decreases
    pacer.on_throttle(refused, None)
    return accepted, refused, pacer.decreases - decreases


async def test_after_a_cut_the_next_turn_follows_the_last_request_a_no_burst_server_accepted() -> None:
    # Such a server takes no token for a request it refuses: its next one comes a turn after
    # the last request it accepted. A turn spaced from the refused request left that token
    # unused for a turn: a turn of the server's rate lost at every cut.
    time = VirtualTime()
    pacer = await no_burst_limiter(time, 20.0)
    while pacer.rate is None or pacer.estimate is None or pacer.rate <= pacer.estimate:
        sent = await pacer.acquire()  # to the end of the climb, where one 429 cuts at once
        time.now = sent + 0.003
        pacer.on_success(None, sent)
    accepted, refused, cuts = await accepted_then_refused(time, pacer)
    assert cuts == 1
    assert pacer.estimate is not None
    retry = await pacer.acquire()
    # A turn of the new pace after the one accepted: never closer than the estimate's turn,
    # and well before a turn after the one refused (which came a turn after the one accepted).
    assert 1.0 / pacer.estimate <= retry - accepted <= 1.25 * (refused - accepted), (
        retry - accepted,
        refused - accepted,
    )


async def test_a_429_that_cuts_nothing_leaves_the_next_turn_spaced_from_the_refused_request() -> None:
    # A 429 while the pace climbs back below the estimate is judged later (the server's timing
    # jitters): the pace stays as it was, and a retry a turn of it after the last request
    # accepted would meet the same refusal.
    time = VirtualTime()
    pacer = await no_burst_limiter(time, 20.0)
    for _ in range(10):  # a cut, and the climb back from it
        if (await accepted_then_refused(time, pacer))[2]:
            break
    accepted, refused, cuts = await accepted_then_refused(time, pacer)
    assert cuts == 0
    assert pacer.rate is not None
    retry = await pacer.acquire()
    assert retry - refused >= (1.0 - SPACING_TOLERANCE) / pacer.rate, (retry - refused, refused - accepted)


async def test_after_a_cut_the_next_turn_still_keeps_to_max_rate() -> None:
    # max_rate is a ceiling on requests sent: the refused request counts, even when the turn
    # after a cut follows the last request the server accepted.
    time = VirtualTime()
    starts: list[float] = []
    # A server allowing no burst at 19/s, just under the ceiling.
    pacer = await no_burst_limiter(time, 19.0, limiter(time, max_rate=20.0), starts)
    assert pacer.decreases > 1
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    assert min(gaps) >= (1.0 - SPACING_TOLERANCE) / 20.0 - 1e-9, min(gaps)


@pytest.mark.parametrize("retry_after", [None, 0.048])
async def test_a_429_squeezed_by_a_stalling_server_does_not_cut(retry_after: float | None) -> None:
    # A server allowing no burst that stalls handles what arrived meanwhile at once and refuses
    # all but the first, whatever the pace: the two answers come together, though the requests
    # left a full turn apart (and a Retry-After, if any, says most of a turn). Slowing down
    # would not prevent the next stall.
    time = VirtualTime()
    pacer = await no_burst_limiter(time, 20.0)
    estimate, decreases = pacer.estimate, pacer.decreases
    first = await pacer.acquire()
    second = await pacer.acquire()
    assert second - first >= 0.9 / (estimate or 1)  # a turn apart, as the estimate allows
    time.now = second + 0.08  # the stall: both answered now, 2 ms apart
    pacer.on_success(None, first)
    time.now += 0.002
    pacer.on_throttle(second, retry_after)
    assert (pacer.squeezed, pacer.decreases, pacer.estimate) == (1, decreases, estimate)


async def test_a_429_that_says_the_server_is_ready_in_a_few_ms_is_not_taken_for_a_stall() -> None:
    # The same answers, but the server says it is ready again in 2 ms: it saw the request
    # nearly a turn after the one it accepted, not squeezed behind it. The pace came a little
    # early (a refusal's answer comes soon because it takes the server no work), and such
    # 429s, excused, kept a third of a job's requests refused.
    time = VirtualTime()
    pacer = await no_burst_limiter(time, 20.0)
    first = await pacer.acquire()
    second = await pacer.acquire()
    time.now = second + 0.08
    pacer.on_success(None, first)
    time.now += 0.002
    pacer.on_throttle(second, 0.002)
    assert pacer.squeezed == 0


async def test_429s_that_look_squeezed_but_outnumber_the_accepted_ones_are_not_all_excused() -> None:
    # Every 429 answered as a stall's would be, but most requests refused: the pace, not the
    # server's timing (a stall refuses a few among many accepted). Excusing them all can keep a
    # pace above the limit, with hundreds of 429s; once they outnumber the accepted ones by a
    # few, they count as the pace's again.
    time = VirtualTime()
    pacer = await no_burst_limiter(time, 20.0)
    decreases = pacer.decreases
    for _ in range(10):
        first = await pacer.acquire()
        refused = [await pacer.acquire() for _ in range(5)]
        time.now = refused[-1] + 0.08  # answered together, as after a stall
        pacer.on_success(None, first)
        for sent in refused:
            time.now += 0.002
            pacer.on_throttle(sent, None)
    # 10 accepted, 50 refused: at most 4 excused beyond half the accepted ones.
    assert pacer.squeezed <= 4 + 10 / 2 + 1, pacer.squeezed
    assert pacer.decreases > decreases


async def test_a_429_for_a_request_sent_faster_than_the_estimate_still_cuts() -> None:
    # The same answers, for a request sent at a tenth of the turn the estimate asks: the pace's
    # doing, however close the answers came.
    time = VirtualTime()
    pacer = await no_burst_limiter(time, 20.0)
    decreases = pacer.decreases
    for _ in range(40):  # past the climb back to the estimate, where one 429 is judged at once
        pacer.on_success(None, await pacer.acquire())
    first = await pacer.acquire()
    second = first + 0.005
    time.now = second + 0.08
    pacer.on_success(None, first)
    time.now += 0.002
    pacer.on_throttle(second, None)
    assert (pacer.squeezed, pacer.decreases) == (0, decreases + 1)


async def test_429s_at_a_limit_the_servers_timing_blurs_are_not_taken_for_noise() -> None:
    # A server allowing no burst whose arrivals jitter by up to 15% of its spacing refuses a
    # share of any pace near its limit, climb after climb. That is a limit: it stops below it,
    # and the limiter must find that out rather than decide the 429s are noise and ignore them.
    import random

    rng = random.Random(7)
    time = VirtualTime()
    pacer = limiter(time)
    limit, last_accepted = 40.0, -1.0
    accepted = throttled = 0
    while accepted < 1_000:
        sent = await pacer.acquire()
        time.now += 0.003
        arrival = sent + rng.uniform(0.0, 0.15 / limit)
        if arrival - last_accepted >= 1.0 / limit:
            last_accepted = max(last_accepted, arrival)
            accepted += 1
            pacer.on_success(None, sent)
        else:
            throttled += 1
            pacer.on_throttle(sent, None)
    assert pacer.noise is None
    assert throttled <= 0.15 * (accepted + throttled), throttled
    assert pacer.estimate is not None
    assert 0.75 * limit <= pacer.estimate <= 1.05 * limit, pacer.estimate


async def test_a_limit_that_fell_from_a_level_it_held_is_probed_soon_after_each_cut() -> None:
    # 40/s held for a while, then 10/s: the limit may come back, so climbs are short (the probe
    # above the estimate comes 0.6 s after each cut, not 1.5 s).
    async def steady_then(first: float) -> tuple[RateLimiter, VirtualTime, float]:
        time = VirtualTime()
        pacer = limiter(time)
        for _ in range(3):
            await cut_after(time, pacer, first, 60)
        await cut_after(time, pacer, 10.0, 40)  # the limit is 10/s now (or still, for the other)
        estimate = await cut_after(time, pacer, 10.0, 40)  # …and holds there
        return pacer, time, estimate

    fallen, time, estimate = await steady_then(40.0)
    assert estimate == pytest.approx(10.0, rel=0.15)
    time.now += 0.65
    assert (fallen.rate or 0) >= estimate  # back at the estimate: probing next
    steady, time, estimate = await steady_then(10.0)
    time.now += 0.65
    assert (steady.rate or 0) < estimate  # a limit that never moved: still climbing back


def test_far_above_a_limit_the_share_that_got_through_says_where_it_is() -> None:
    # A server allowing bursts accepts its rate, whatever the pace: the share is the limit's.
    assert share_of_limit(0.25, bursty=True) == 0.25
    assert share_of_limit(0.01, bursty=True) == 1 / 8  # one cut divides by 8 at most
    # One allowing none refuses every other request of any pace between its limit and twice
    # it: half accepted puts the limit between half the pace and all of it, not at half.
    assert share_of_limit(0.5, bursty=False) == pytest.approx(0.75)
    assert 1 / 3 < share_of_limit(1 / 3, bursty=False) < 1 / 2
    assert 1 / 4 < share_of_limit(1 / 4, bursty=False) < 1 / 3


async def test_a_throttled_request_is_retried_at_the_limiters_pace_not_after_a_back_off(
    make_api: Any, emulator: Emulator, wait_spy: Any
) -> None:
    # A back-off of seconds: a 429's retry must not take it, only what the limiter asks (here
    # the server's Retry-After, which pauses every request of the client).
    api = await make_api(max_rate=1_000, retry=RetryPolicy(max_retries=3, base_delay=5.0, max_delay=5.0))
    emulator.add_audience("crm")
    emulator.script(ScriptedResponse(429, {"error_code": "SLOW", "error_message": "down"},
                                     {"Retry-After": "0.05"}, route="update"))
    report = await api.upload("crm", [f"u{n}" for n in range(30)], chunk_size=10, concurrency=1)
    assert report.ok, report.summary()
    assert report.retries == 1
    [(retry_after, wait)] = wait_spy.calls
    assert retry_after == pytest.approx(0.05)
    assert 0.05 <= wait <= 0.06  # the limiter's pause, nothing of the back-off's 0-5 s


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
    # The limiter found the server's limit: its estimate is neither far below nor above it (the
    # pace itself moves around it by design: back up after a cut, then probing above).
    assert api.stats.rate is not None
    estimate = api.stats.limit
    assert estimate is not None
    assert 0.4 * limit <= estimate <= 1.5 * limit, estimate


@contextlib.asynccontextmanager
async def no_burst_emulator(limit: float) -> AsyncIterator[Emulator]:
    """The emulator limited to ``limit`` requests/s with no burst, its 429s saying nothing (no
    ``Retry-After``, no ``X-RateLimit-*``), holding the audience ``crm``, its counters at zero."""
    async with Emulator(indexing_delay=0, record_bodies=False, rate_limit=limit, burst=1,
                        rate_limit_retry_after="off", rate_limit_headers=False) as emu:
        emu.add_audience("crm")
        emu.rate_limit = limit  # counters from zero
        yield emu


async def test_the_pace_settles_near_a_limit_that_allows_no_burst() -> None:
    # A bucket holding one request: every request must be spaced 1/R apart, the strictest shape.
    # (With a second's worth of burst the pace does not settle yet: probes drain the bucket and
    # go through, and 0-23% of answers are 429s from run to run. The pacing benchmark reports
    # that shape; no test claims what the limiter does not do.)
    from batch_audiences import AsyncAudiencesClient

    limit = 40.0
    async with no_burst_emulator(limit) as emu:
        async with AsyncAudiencesClient(emu.api_key, emu.project_key, base_url=emu.base_url) as client:
            report = await client.upload("crm", (f"u{n}" for n in range(2_000)), chunk_size=10,
                                         retry_budget=10_000)
            estimate = client.stats.limit
        accepted, refused = emu.rate_limit_counts()
    assert report.ok, report.summary()
    assert accepted == 200
    # Few 429s (the start of the job included), and an estimate of the limit near it.
    assert refused <= 0.2 * (accepted + refused), (accepted, refused)
    assert estimate is not None
    assert 0.6 * limit <= estimate <= 1.4 * limit, estimate


async def test_the_pace_follows_a_limit_that_falls_and_rises() -> None:
    from batch_audiences import AsyncAudiencesClient, ProgressEvent

    async with Emulator(indexing_delay=0, rate_limit=40, burst=1, rate_limit_retry_after="off",
                        rate_limit_headers=False) as emu:
        emu.add_audience("crm")
        emu.rate_limit = 40
        moved: list[float] = []

        def move(event: ProgressEvent) -> None:
            # The limit falls to 10/s after 60 accepted requests, and rises back after 30 more.
            if event.chunks_acknowledged >= 60 and not moved:
                emu.set_rate(10)
                moved.append(time_.monotonic())
            elif event.chunks_acknowledged >= 90 and len(moved) == 1:
                emu.set_rate(40)
                moved.append(time_.monotonic())

        async with AsyncAudiencesClient(emu.api_key, emu.project_key, base_url=emu.base_url) as client:
            report = await client.upload("crm", (f"u{n}" for n in range(2_400)), chunk_size=10,
                                         on_progress=move, retry_budget=10_000)
        records = [r for r in emu.requests if r.route == "update"]
    assert report.ok, report.summary()
    assert len(moved) == 2
    fell, rose = moved
    low = [r for r in records if fell <= r.received_at < rose]
    high = [r for r in records if r.received_at >= rose]
    # At 10/s the pace came down: most requests of that phase got through (few 429s).
    assert sum(r.status == 202 for r in low) >= 0.6 * len(low), len(low)
    # Back at 40/s the pace climbed back: the last 100 accepted requests went at well over the
    # low limit, as the emulator's own clock measures them (the server's arrival times, not a
    # sleep). About 35/s on an idle machine; 1.5x the low limit leaves room for a loaded one,
    # whose late wake-ups the limiter cannot help, while a pace stuck near 10/s still fails.
    accepted_high = [r.received_at for r in high if r.status == 202]
    assert len(accepted_high) >= 140
    span = accepted_high[-1] - accepted_high[-100]
    assert 99 / span >= 15, f"{99 / span:.1f} requests/s at the end, against a limit of 40"


async def test_fail_fast_fails_the_chunk_that_would_have_waited(make_api: Any, emulator: Emulator) -> None:
    emulator.add_audience("crm")
    api = await make_api(max_rate=1, fail_fast=True)
    report = await api.upload("crm", [f"u{n}" for n in range(30)], chunk_size=10, concurrency=2)
    assert not report.ok
    assert report.chunks_acknowledged == 1
    assert any(isinstance(chunk.error, ThrottledError) for chunk in report.failed_chunks)
    assert emulator.count(route="update") == 1


# -- closing wakes every request queued in the limiter (issue 10, lifecycle) ---------------------


async def test_aclose_ends_every_request_queued_in_the_limiter_at_once(emulator: Emulator) -> None:
    from batch_audiences import AsyncAudiencesClient, ClientClosedError

    from ._compat import async_timeout

    emulator.add_audience("vip")
    client = AsyncAudiencesClient(
        emulator.api_key, emulator.project_key, base_url=emulator.base_url, max_rate=2
    )
    views = [asyncio.ensure_future(client.view("vip")) for _ in range(40)]
    # The first view goes at once; the 39 others are queued 0.5 s apart (about 20 s in all).
    async with async_timeout(10):
        done, _ = await asyncio.wait(views, return_when=asyncio.FIRST_COMPLETED)
    assert len(done) == 1
    await client.aclose()
    # Far less than the 19 s the queue would take: closing must wake them, not let them run out.
    async with async_timeout(2):
        outcomes = await asyncio.gather(*views, return_exceptions=True)
    closed = [o for o in outcomes if isinstance(o, ClientClosedError)]
    assert len(closed) == 39, outcomes
    assert emulator.count(route="view") == 1  # no queued view reached the server after the close


async def test_acquire_after_close_raises_and_waiters_wake_in_virtual_time() -> None:
    from batch_audiences import ClientClosedError

    pacer = RateLimiter(max_rate=1)  # the real sleep: only close() can end these waits early
    assert await pacer.acquire() > 0
    waiters = [asyncio.ensure_future(pacer.acquire()) for _ in range(5)]
    await asyncio.sleep(0)  # let them queue
    assert pacer.waiting == 5
    pacer.close()
    results = await asyncio.wait_for(asyncio.gather(*waiters, return_exceptions=True), 1.0)
    assert all(isinstance(r, ClientClosedError) for r in results), results
    assert pacer.waiting == 0
    with pytest.raises(ClientClosedError):
        await pacer.acquire()  # it would have to wait: no turn comes any more


# -- a server that stalls: 429s its own timing causes ------------------------------------------------


async def test_429s_of_a_stalling_server_do_not_drag_the_pace_down() -> None:
    # A gateway in front of the emulator stalls now and then (a busy machine) and lets what
    # arrived meanwhile through at once: the emulator's bucket, allowing no burst, refuses all
    # but the first, whatever the client's pace. The client retries those but must not slow
    # down for them: it learns the limit from the requests the stalls did not squeeze.
    import aiohttp
    from aiohttp import web

    from batch_audiences import AsyncAudiencesClient

    limit = 20.0
    async with no_burst_emulator(limit) as emu:
        loop = asyncio.get_running_loop()
        stall_until = 0.0
        seen = 0

        async def stalling(request: web.Request) -> web.Response:
            nonlocal stall_until, seen
            seen += 1
            if seen % 12 == 0:  # every 12th request opens a stall of 0.15 s
                stall_until = loop.time() + 0.15
            if loop.time() < stall_until:
                await asyncio.sleep(stall_until - loop.time())
            return await forward(emu, request, await request.read(), session)

        async with aiohttp.ClientSession(auto_decompress=False) as session, serving(
            stalling
        ) as base_url, AsyncAudiencesClient(emu.api_key, emu.project_key, base_url=base_url) as client:
            estimates: list[float] = []

            def sample(event: object) -> None:
                if client.stats.limit is not None:
                    estimates.append(client.stats.limit)

            report = await client.upload("crm", (f"u{n}" for n in range(1_500)), chunk_size=10,
                                         retry_budget=10_000, on_progress=sample)
        accepted, refused = emu.rate_limit_counts()
    assert report.ok, report.summary()
    assert accepted == 150
    assert refused > 0  # the stalls did squeeze requests
    # The estimate stays near the limit over the run: the squeezed 429s did not pull it down.
    # The median of the run's samples, not the last value, which moves by design around a cut.
    # Over real HTTP the stalls land where the machine's timing puts them, so the bound is loose
    # (medians of 15-19/s here; the rule before squeezed 429s were told apart gave 9-14/s): the
    # virtual-time tests above pin the rule itself down.
    assert estimates
    median = statistics.median(estimates)
    assert 0.55 * limit <= median <= 1.1 * limit, (median, min(estimates), max(estimates), refused)
