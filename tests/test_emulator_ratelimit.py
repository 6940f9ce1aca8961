"""The emulator's rate limit: a token bucket with a burst, a rate that moves while serving, and
``Retry-After`` exact, in whole seconds, or absent (over HTTP, and the bucket alone in a fake clock)."""

from __future__ import annotations

import argparse
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from batch_audiences.testing import Emulator
from batch_audiences.testing._cli import add_arguments, build_emulator, options_in_force
from batch_audiences.testing._ratelimit import TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def test_burst_one_spaces_requests_and_burst_n_lets_n_through_at_once() -> None:
    clock = Clock()
    strict = TokenBucket(10, burst=1, clock=clock)
    assert [strict.take() is None for _ in range(3)] == [True, False, False]
    clock.now += 0.1
    assert strict.take() is None
    clock.now += 5.0  # a quiet spell saves nothing up with a burst of 1
    assert [strict.take() is None for _ in range(2)] == [True, False]

    clock = Clock()
    loose = TokenBucket(10, burst=10, clock=clock)
    assert sum(loose.take() is None for _ in range(15)) == 10
    clock.now += 0.5  # half a second: five more
    assert sum(loose.take() is None for _ in range(15)) == 5
    assert (loose.accepted, loose.refused) == (15, 15)


def test_a_live_rate_change_keeps_what_was_saved_up() -> None:
    clock = Clock()
    bucket = TokenBucket(40, burst=40, clock=clock)
    assert sum(bucket.take() is None for _ in range(30)) == 30  # 10 tokens left
    bucket.change(10)
    assert sum(bucket.take() is None for _ in range(20)) == 10
    clock.now += 1.0
    assert sum(bucket.take() is None for _ in range(20)) == 10  # now 10 per second
    bucket.change(10, burst=2)
    clock.now += 10.0
    assert sum(bucket.take() is None for _ in range(5)) == 2


def test_retry_after_is_exact_whole_seconds_or_absent() -> None:
    clock = Clock()
    exact = TokenBucket(20, clock=clock)
    assert exact.take() is None
    refused = exact.take()
    assert refused is not None
    assert refused["Retry-After"] == "0.05"  # exact: a token is back in 1/20 s
    assert (refused["X-RateLimit-Limit"], refused["X-RateLimit-Remaining"]) == ("20", "0")
    assert int(refused["X-RateLimit-Reset"]) >= int(time.time())
    seconds = TokenBucket(20, retry_after="seconds", headers=False, clock=clock)
    assert seconds.take() is None
    assert seconds.take() == {"Retry-After": "1"}
    silent = TokenBucket(20, retry_after="off", headers=False, clock=clock)
    assert silent.take() is None
    assert silent.take() == {}
    with pytest.raises(ValueError, match="retry_after"):
        TokenBucket(20, retry_after="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="burst"):
        TokenBucket(20, burst=0.5)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def statuses(http: aiohttp.ClientSession, emu: Emulator, count: int) -> list[tuple[int, str | None]]:
    out = []
    for _ in range(count):
        async with http.get(f"{emu.base_url}/2.8/audiences/list", headers=emu.auth_headers) as reply:
            out.append((reply.status, reply.headers.get("Retry-After")))
    return out


async def test_the_emulator_serves_its_burst_then_429s(http: aiohttp.ClientSession) -> None:
    async with Emulator(rate_limit=1, burst=3, rate_limit_retry_after="seconds") as emu:
        answers = await statuses(http, emu, 5)
        assert [status for status, _ in answers] == [200, 200, 200, 429, 429]
        assert answers[3][1] == "1"
        assert emu.rate_limit_counts() == (3, 2)
        assert emu.burst == 3
        emu.rate_limit_retry_after = "off"
        assert (await statuses(http, emu, 1)) == [(429, None)]
        emu.rate_limit_headers = False
        async with http.get(f"{emu.base_url}/2.8/audiences/list", headers=emu.auth_headers) as reply:
            assert "X-RateLimit-Limit" not in reply.headers


async def test_set_rate_moves_the_limit_while_serving(http: aiohttp.ClientSession) -> None:
    async with Emulator(rate_limit=0.001, burst=5) as emu:
        assert [s for s, _ in await statuses(http, emu, 2)] == [200, 200]  # 3 tokens left
        emu.set_rate(0.002)  # a live change keeps them (assigning rate_limit would refill)
        assert [s for s, _ in await statuses(http, emu, 4)] == [200, 200, 200, 429]
        assert emu.rate_limit == 0.002
        assert emu.rate_limit_counts() == (5, 1)
        emu.set_rate(None)
        assert [s for s, _ in await statuses(http, emu, 3)] == [200] * 3
        with pytest.raises(ValueError, match="rate"):
            emu.set_rate(0)


def test_the_command_line_takes_the_burst_and_the_retry_after_mode() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        ["--rate", "20", "--burst", "20", "--rate-retry-after", "seconds", "--no-rate-headers"]
    )
    emu = build_emulator(args)
    assert (emu.rate_limit, emu.burst, emu.rate_limit_retry_after, emu.rate_limit_headers) == (
        20, 20, "seconds", False
    )
    # The startup banner lists them with every other option.
    shown = dict(options_in_force(args))
    assert (shown["--rate"], shown["--burst"], shown["--rate-retry-after"], shown["--no-rate-headers"]) == (
        20, 20, "seconds", True
    )
    with pytest.raises(ValueError, match="burst"):
        build_emulator(parser.parse_args(["--rate", "5", "--burst", "0"]))
