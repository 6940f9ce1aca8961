"""2. Sequential calls: one create at a time, each waiting for its answer before the next.

This is the latency of one call, as a script that creates audiences one by one sees it: the
SDK's async client, its blocking facade (which hands each call to its event-loop thread), bare
aiohttp, ``requests.Session`` and ``httpx.Client``. All send the same bodies and headers over one
kept-alive connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import orjson
import requests

from batch_audiences import AudiencesClient

from ._contenders import BareAiohttp, SdkClient, close_loop, create_bodies
from ._runner import (
    API_KEY,
    PROJECT_KEY,
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
    timed,
)

KEY = "sequential"
TITLE = "2. Sequential calls"


def run(ctx: Context) -> Result:
    server = ctx.server()
    url = f"{server.url}/audiences/create"
    count = 200 if ctx.quick else 600
    names = Names(KEY)
    loop = asyncio.new_event_loop()
    headers = sdk_headers()
    state: dict[str, object] = {}

    # -- SDK async ---------------------------------------------------------------------------
    sdk = SdkClient(loop, server.base_url)

    def sdk_measure() -> float:
        assert sdk.client is not None
        return count / loop.run_until_complete(drive(1, names.take(count), sdk.client.create))

    # -- SDK sync facade ---------------------------------------------------------------------
    def sync_setup() -> None:
        state["sync"] = AudiencesClient(API_KEY, PROJECT_KEY, base_url=server.base_url)

    def sync_measure() -> float:
        client: AudiencesClient = state["sync"]  # type: ignore[assignment]
        batch = names.take(count)

        def work() -> None:
            for name in batch:
                client.create(name)

        return count / timed(work)

    def sync_teardown() -> None:
        state["sync"].close()  # type: ignore[attr-defined]

    # -- bare aiohttp ------------------------------------------------------------------------
    bare = BareAiohttp(loop, url, headers)

    def bare_measure() -> float:
        return count / loop.run_until_complete(drive(1, create_bodies(names.take(count)), bare.post))

    # -- requests ----------------------------------------------------------------------------
    def requests_setup() -> None:
        session = requests.Session()
        session.headers.update(headers)
        state["requests"] = session

    def blocking_posts(post: Callable[[bytes], tuple[int, bytes]]) -> float:
        """Creates per second through a blocking ``post(body) -> (status, content)``."""
        bodies = create_bodies(names.take(count))

        def work() -> None:
            for body in bodies:
                status, content = post(body)
                if status != 202:
                    raise RuntimeError(f"status {status}")
                orjson.loads(content)["indexing_token"]

        return count / timed(work)

    def requests_measure() -> float:
        session: requests.Session = state["requests"]  # type: ignore[assignment]

        def post(body: bytes) -> tuple[int, bytes]:
            response = session.post(url, data=body)
            return response.status_code, response.content

        return blocking_posts(post)

    def requests_teardown() -> None:
        state["requests"].close()  # type: ignore[attr-defined]

    # -- httpx -------------------------------------------------------------------------------
    def httpx_setup() -> None:
        state["httpx"] = httpx.Client(headers=headers)

    def httpx_measure() -> float:
        client: httpx.Client = state["httpx"]  # type: ignore[assignment]

        def post(body: bytes) -> tuple[int, bytes]:
            response = client.post(url, content=body)
            return response.status_code, response.content

        return blocking_posts(post)

    def httpx_teardown() -> None:
        state["httpx"].close()  # type: ignore[attr-defined]

    contenders = [
        Contender("bare aiohttp", bare_measure, bare.setup, bare.teardown),
        Contender("SDK async", sdk_measure, sdk.setup, sdk.teardown),
        Contender("SDK sync facade", sync_measure, sync_setup, sync_teardown),
        Contender("requests.Session", requests_measure, requests_setup, requests_teardown),
        Contender("httpx.Client", httpx_measure, httpx_setup, httpx_teardown),
    ]
    rounds = ctx.rounds(3, 15)
    progress(f"{TITLE}: {rounds} rounds of {count:,} calls per contender")
    try:
        samples = alternate(contenders, rounds)
    finally:
        close_loop(loop)
    return summarize(
        KEY, TITLE, "calls/s", samples, baseline="bare aiohttp", higher_is_better=True,
        targets=[
            Target("SDK async", ">=", 0.90, "SDK async / bare aiohttp"),
            Target("SDK sync facade", ">=", 0.85, "SDK sync facade / bare aiohttp"),
        ],
        notes=[f"{count:,} sequential creates per contender per round, against the {server.kind} server."],
    )
