"""3. Upload throughput: IDs per second, 1,000,000 IDs in 100 requests of 10,000.

``client.upload(name, ids)`` (``mode="add"``, the default 10,000 per request and 4 requests in
flight) against the loop a user would write instead: slice the list, build each body as a dict,
``orjson.dumps`` it, and post it with aiohttp, 4 requests in flight. Both build their bodies
inside the timed part: against a loopback server the network is nearly free (see the
pre-encoded row), so this measures what each does per ID. The SDK also checks every ID, and
keeps the order of writes (a chunk that shares an ID with one still in flight waits for it),
which the hand-written loop does not.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import orjson

from batch_audiences import AudienceExistsError

from ._contenders import BareAiohttp, SdkClient, close_loop
from ._runner import (
    Contender,
    Context,
    Result,
    Target,
    alternate,
    drive,
    progress,
    sdk_headers,
    summarize,
)

KEY = "upload"
TITLE = "3. Upload throughput, 10,000 IDs per request"
CHUNK = 10_000
IN_FLIGHT = 4
AUDIENCE = "bench-upload"


def make_ids(count: int) -> list[str]:
    """Distinct IDs shaped like real customer IDs."""
    return [f"customer-{index:09d}" for index in range(count)]


def _chunks(ids: Sequence[str]) -> list[Sequence[str]]:
    return [ids[start:start + CHUNK] for start in range(0, len(ids), CHUNK)]


def _body(chunk: Sequence[str]) -> bytes:
    return orjson.dumps({"name": AUDIENCE, "ids": [{"action": "add", "id": i} for i in chunk]})


def run(ctx: Context) -> Result:
    server = ctx.server()
    url = f"{server.url}/audiences/update"
    count = 200_000 if ctx.quick else 1_000_000
    ids = make_ids(count)
    loop = asyncio.new_event_loop()
    headers = sdk_headers()

    # -- SDK ---------------------------------------------------------------------------------
    sdk = SdkClient(loop, server.base_url)

    def sdk_setup() -> None:
        sdk.setup()
        client = sdk.client
        assert client is not None

        async def create() -> None:
            with contextlib.suppress(AudienceExistsError):
                await client.create(AUDIENCE)

        loop.run_until_complete(create())

    def sdk_measure() -> float:
        client = sdk.client
        assert client is not None

        async def upload() -> float:
            start = loop.time()
            report = await client.upload(AUDIENCE, ids, chunk_size=CHUNK, concurrency=IN_FLIGHT)
            elapsed = loop.time() - start
            if report.items_accepted != count:
                raise RuntimeError(f"the upload lost items: {report}")
            return elapsed

        return count / loop.run_until_complete(upload())

    # -- bare aiohttp ------------------------------------------------------------------------
    bare = BareAiohttp(loop, url, headers)

    def bare_measure() -> float:
        async def post_chunk(chunk: Sequence[str]) -> None:
            await bare.post(_body(chunk))

        async def upload() -> float:
            # Slicing is part of the work: the timer starts from the same list the SDK gets.
            start = loop.time()
            await drive(IN_FLIGHT, _chunks(ids), post_chunk)
            return loop.time() - start

        return count / loop.run_until_complete(upload())

    def prebuilt_measure() -> float:
        bodies = [_body(chunk) for chunk in _chunks(ids)]
        return count / loop.run_until_complete(drive(IN_FLIGHT, bodies, bare.post))

    contenders = [
        Contender("bare aiohttp, hand-built bodies", bare_measure, bare.setup, bare.teardown),
        Contender("SDK upload()", sdk_measure, sdk_setup, sdk.teardown),
        Contender(
            "bare aiohttp, bodies built beforehand", prebuilt_measure,
            note="the network and server alone: what is left when no body is built in the loop",
        ),
    ]
    rounds = ctx.rounds(3, 15)
    progress(f"{TITLE}: {rounds} rounds of {count:,} IDs per contender")
    try:
        samples = alternate(contenders, rounds)
    finally:
        close_loop(loop)
    return summarize(
        KEY, TITLE, "IDs/s", samples, baseline="bare aiohttp, hand-built bodies", higher_is_better=True,
        targets=[Target("SDK upload()", ">=", 0.85, "SDK upload() / bare aiohttp, hand-built bodies")],
        notes=[f"{count:,} IDs per round in requests of {CHUNK:,}, {IN_FLIGHT} in flight, against "
               f"the {server.kind} server."],
        row_notes={c.name: c.note for c in contenders if c.note},
    )
