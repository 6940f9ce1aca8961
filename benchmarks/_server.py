"""The minimal server the benchmarks talk to: every POST answers 202 with an indexing token.

It reads and discards request bodies chunk by chunk (never holding a whole 10,000-ID body) and
does nothing else, so that the client's cost dominates what is measured. ``GET`` routes answer
a fixed audience, for the sequential comparison's reads.

Run by the suite in a subprocess (see :func:`benchmarks._runner.start_server` for why)::

    python -m benchmarks._server --port 0      # prints "PORT <n>" once listening
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import signal
import sys

from aiohttp import web

_AUDIENCE = (
    b'{"name":"bench","display_name":null,"type":"CUSTOM_ID","nb_ids":0,'
    b'"indexing_state":"APPLIED","created":"2024-01-01T00:00:00Z","updated":"2024-01-01T00:00:00Z"}'
)


def make_app() -> web.Application:
    """The aiohttp application: a catch-all route, no middleware, no access log."""
    tokens = itertools.count()

    async def write(request: web.Request) -> web.Response:
        content = request.content
        while await content.readany():
            pass
        return web.Response(
            status=202,
            body=b'{"indexing_token":"t%d"}' % next(tokens),
            content_type="application/json",
        )

    async def read(request: web.Request) -> web.Response:
        return web.Response(status=200, body=_AUDIENCE, content_type="application/json")

    app = web.Application(client_max_size=256 * 1024 * 1024)
    app.router.add_route("POST", "/{tail:.*}", write)
    app.router.add_route("GET", "/{tail:.*}", read)
    return app


async def serve(host: str, port: int, ready: asyncio.Future[int] | None = None) -> None:
    """Serve until cancelled (or SIGTERM/SIGINT when run as a program)."""
    runner = web.AppRunner(make_app(), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024, reuse_address=True)
    await site.start()
    server = site._server
    sockets = getattr(server, "sockets", None) or []
    bound = sockets[0].getsockname()[1] if sockets else port
    if ready is not None:
        ready.set_result(bound)
    else:
        print(f"PORT {bound}", flush=True)
    stop = asyncio.Event()
    if ready is None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks._server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--cpu", type=int, default=None, help="pin the server to this CPU")
    args = parser.parse_args(argv)
    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {args.cpu})
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
