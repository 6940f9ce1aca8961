"""1. Concurrent creates: 64 requests in flight, SDK async client vs bare aiohttp vs httpx.

Every contender sends the same bodies and headers through a pool of 64 connections, from 64
workers that each wait for their answer before sending the next request; the metric is requests
per second over the whole batch. The bare-aiohttp loop posts JSON built before the timer starts
and reads the token out of each answer with ``orjson``: the floor of what any client could cost.
"""

from __future__ import annotations

import asyncio

import httpx
import orjson

from ._contenders import BareAiohttp, SdkClient, close_loop, create_bodies
from ._runner import (
    Contender,
    Context,
    Names,
    Result,
    Target,
    alternate,
    drive,
    progress,
    sdk_headers,
    summarize,
)

KEY = "creates"
TITLE = "1. Concurrent creates, 64 in flight"
IN_FLIGHT = 64


def run(ctx: Context) -> Result:
    server = ctx.server()
    url = f"{server.url}/audiences/create"
    count = 500 if ctx.quick else 3000
    # httpx manages under 200 requests/s at this concurrency: fewer of them give the same rate.
    httpx_count = 100 if ctx.quick else 300
    names = Names(KEY)
    loop = asyncio.new_event_loop()
    headers = sdk_headers()
    state: dict[str, object] = {}

    # -- SDK ---------------------------------------------------------------------------------
    sdk = SdkClient(loop, server.base_url, max_connections=IN_FLIGHT)

    def sdk_measure() -> float:
        assert sdk.client is not None
        batch = names.take(count)
        return count / loop.run_until_complete(drive(IN_FLIGHT, batch, sdk.client.create))

    # -- bare aiohttp ------------------------------------------------------------------------
    bare = BareAiohttp(loop, url, headers, limit=IN_FLIGHT)

    def bare_measure() -> float:
        bodies = create_bodies(names.take(count))
        return count / loop.run_until_complete(drive(IN_FLIGHT, bodies, bare.post))

    # -- httpx -------------------------------------------------------------------------------
    def httpx_setup() -> None:
        limits = httpx.Limits(max_connections=IN_FLIGHT, max_keepalive_connections=IN_FLIGHT)
        state["httpx"] = httpx.AsyncClient(limits=limits, headers=headers)

    def httpx_measure() -> float:
        client: httpx.AsyncClient = state["httpx"]  # type: ignore[assignment]

        async def post(body: bytes) -> None:
            response = await client.post(url, content=body)
            if response.status_code != 202:
                raise RuntimeError(f"status {response.status_code}")
            orjson.loads(response.content)["indexing_token"]

        bodies = create_bodies(names.take(httpx_count))
        return httpx_count / loop.run_until_complete(drive(IN_FLIGHT, bodies, post))

    def httpx_teardown() -> None:
        loop.run_until_complete(state["httpx"].aclose())  # type: ignore[attr-defined]

    contenders = [
        Contender("bare aiohttp", bare_measure, bare.setup, bare.teardown),
        Contender("SDK async", sdk_measure, sdk.setup, sdk.teardown),
        Contender("httpx.AsyncClient", httpx_measure, httpx_setup, httpx_teardown),
    ]
    rounds = ctx.rounds(3, 15)
    progress(f"{TITLE}: {rounds} rounds of {count:,} creates ({httpx_count:,} for httpx)")
    try:
        samples = alternate(contenders, rounds)
    finally:
        close_loop(loop)
    return summarize(
        KEY, TITLE, "req/s", samples, baseline="bare aiohttp", higher_is_better=True,
        targets=[Target("SDK async", ">=", 1.0, "SDK async / bare aiohttp")],
        notes=[f"{count:,} creates per round ({httpx_count:,} for httpx), against the "
               f"{server.kind} server."],
    )
