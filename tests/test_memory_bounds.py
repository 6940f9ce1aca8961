"""Memory as promised: what an upload holds is counted, never timed.

The count is of live objects: ID strings made by this module (``tracemalloc`` attributes every
live block to the line that allocated it, so only the SDK can be keeping them), and indexing
tokens in the report.
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest

from batch_audiences import IdAction, ProgressEvent
from batch_audiences.testing import Emulator

ID_LENGTH = 1_000


def long_id(n: int) -> str:
    return f"{n:0>{ID_LENGTH}}"  # every live block allocated on this line is an ID someone holds


_ID_LINE = long_id.__code__.co_firstlineno + 1


def live_ids() -> int:
    """How many strings made by :func:`long_id` are alive now."""
    gc.collect()
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(True, __file__, lineno=_ID_LINE)]
    )
    return sum(stat.count for stat in snapshot.statistics("lineno"))


@pytest.fixture
def traced() -> Iterator[None]:
    tracemalloc.start()
    try:
        yield
    finally:
        tracemalloc.stop()


def test_the_order_tracker_holds_no_id(traced: None) -> None:
    from batch_audiences._bulk._chunking import MIXED, OrderTracker

    gc.collect()
    baseline = tracemalloc.get_traced_memory()[0]
    tracker = OrderTracker()
    for index in range(20):
        tracker.register(index, [long_id(index * 100 + n) for n in range(100)], MIXED)
    assert tracker.tracked == 2_000
    assert live_ids() == 0
    # What it holds instead is a fixed-size digest per ID (with the set's own overhead, which
    # shrinks per ID as it grows): well under the 1,000+ bytes of each string.
    gc.collect()
    assert tracemalloc.get_traced_memory()[0] - baseline < 200 * tracker.tracked
    # It still orders: a chunk sharing an ID with chunk 7 waits for it.
    assert tracker.register(20, [long_id(705)], MIXED) == {7}


async def test_an_upload_holds_at_most_chunk_size_times_concurrency_ids(
    api: Any, emulator: Emulator, traced: None
) -> None:
    """Chunks of IDs with attributes (tracked for ordering), never confirmed applied during the
    call (slow indexing): the ID strings alive stay within one window of chunks."""
    emulator.add_audience("crm")
    emulator.indexing_delay = 60.0
    emulator.record_bodies = False
    chunk_size, concurrency, chunks = 50, 2, 40
    counts: list[int] = []

    def on_progress(event: ProgressEvent) -> None:
        if event.kind == "acknowledged" and event.chunk_index is not None and event.chunk_index % 8 == 7:
            counts.append(live_ids())

    items = (IdAction.add(long_id(n), {"n": n}) for n in range(chunk_size * chunks))
    report = await api.upload(
        "crm", items, mode="update", chunk_size=chunk_size, concurrency=concurrency,
        on_progress=on_progress,
    )
    assert report.ok, report.summary()
    assert len(counts) == chunks // 8
    assert max(counts) <= chunk_size * concurrency, counts


async def test_tokens_are_kept_only_while_unconfirmed(api: Any, emulator: Emulator) -> None:
    emulator.add_audience("crm")
    tokens: list[str] = []

    def on_progress(event: ProgressEvent) -> None:
        if event.kind == "acknowledged" and event.token is not None:
            tokens.append(event.token)

    report = await api.upload("crm", (f"u{n}" for n in range(300)), chunk_size=1, concurrency=8,
                              wait=True, on_progress=on_progress)
    assert report.ok
    assert report.chunks_acknowledged == 300 == len(tokens)  # every token was handed out
    assert report.indexing_tokens == ()  # all confirmed applied: none kept


async def test_tokens_kept_are_bounded_without_wait(api: Any, emulator: Emulator) -> None:
    emulator.add_audience("crm")
    emulator.record_bodies = False
    total, concurrency = 1_100, 8
    report = await api.upload("crm", (f"u{n}" for n in range(total)), chunk_size=1,
                              concurrency=concurrency)
    assert report.ok
    assert report.chunks_acknowledged == total
    assert 0 < len(report.indexing_tokens) <= 1_000 + concurrency
    assert len(set(report.indexing_tokens)) == len(report.indexing_tokens)
