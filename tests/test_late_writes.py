"""Late writes cannot reorder an upload.

A try that timed out on the client may still be applied by the server later, after the chunks
that followed it. The emulator can hold a write and apply it late (``ScriptedResponse`` /
``FaultPlan`` ``hold``); the upload must keep the stream's order all the same, for writes that
land within ``late_write_grace`` seconds of being sent.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import pytest

from batch_audiences import IdAction, ValidationError
from batch_audiences.testing import Emulator, FaultPlan, ScriptedResponse

from .conftest import fast_retry_policy


async def quiet(emulator: Emulator, timeout: float = 10.0) -> None:
    """Wait until the emulator holds no request (every held write has been applied)."""
    deadline = time.monotonic() + timeout
    while any(r.outcome == "in_flight" for r in emulator.requests):
        if time.monotonic() > deadline:
            raise AssertionError("a request is still in flight")
        await asyncio.sleep(0.02)
    emulator.settle()


async def test_a_held_first_try_cannot_undo_a_later_remove(make_api: Any, emulator: Emulator) -> None:
    api = await make_api(timeout=0.5)
    emulator.add_audience("aud")
    emulator.script(ScriptedResponse(action="hold", delay=1.0, route="update"))
    items = [IdAction.add("u"), IdAction.remove("u")]
    report = await api.upload(
        "aud", items, mode="update", chunk_size=1, concurrency=1, wait=True, late_write_grace=2.0
    )
    assert report.ok, report.summary()
    assert report.applied
    # wait=True returned after the grace: the held try (1 s) had landed by then.
    assert [r.outcome for r in emulator.requests if r.route == "update"].count("held") == 1
    await quiet(emulator)
    held = [r for r in emulator.requests if r.outcome == "held"]
    assert len(held) == 1  # the first try was really applied late
    assert emulator.members("aud") == {}


async def test_late_write_grace_is_checked_before_anything_is_sent(make_api: Any, emulator: Emulator) -> None:
    api = await make_api()
    emulator.add_audience("aud")
    for bad in (-1, float("nan"), "2", True):
        with pytest.raises(ValidationError, match="late_write_grace"):
            await api.upload("aud", ["u"], late_write_grace=bad)
    assert emulator.requests == []


def _stream(seed: int, length: int) -> list[IdAction]:
    rng = random.Random(seed)
    items = []
    for _ in range(length):
        key = f"u{rng.randrange(4)}"
        if rng.random() < 0.5:
            items.append(IdAction.remove(key))
        else:
            items.append(IdAction.add(key, {"v": rng.randrange(3)} if rng.random() < 0.5 else None))
    return items


def _apply(items: list[IdAction]) -> dict[str, dict[str, object]]:
    content: dict[str, dict[str, object]] = {}
    for item in items:
        if item.action.value == "remove":
            content.pop(item.id, None)
        else:
            content[item.id] = dict(item.attributes or {})
    return content


@pytest.mark.parametrize("seed", [3, 8])
async def test_random_held_writes_keep_the_stream_order(
    make_api: Any, emulator: Emulator, seed: int
) -> None:
    """Some tries are held past the client's timeout and applied late; the end state is the
    stream applied in order."""
    api = await make_api(timeout=0.3, retry=fast_retry_policy(max_retries=8))
    emulator.add_audience("aud")
    emulator.faults = FaultPlan(seed=seed, hold=0.15, hold_seconds=0.6, routes={"update"})
    items = _stream(seed, 24)
    report = await api.upload(
        "aud", items, mode="update", chunk_size=2, concurrency=2, wait=True, late_write_grace=1.5,
        retry_budget=100,
    )
    assert report.ok, report.summary()
    await quiet(emulator)
    assert any(r.outcome == "held" for r in emulator.requests), "the seed should hold some tries"
    assert emulator.members("aud") == _apply(items)
