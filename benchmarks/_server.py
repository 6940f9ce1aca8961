"""The minimal server the benchmarks talk to: every POST answers 202 with an indexing token.

It reads and discards request bodies chunk by chunk (never holding a whole 10,000-ID body) and
does nothing else, so that the client's cost dominates what is measured. ``GET`` routes answer
a fixed audience, for the sequential comparison's reads.

Run by the suite in a subprocess (see :meth:`benchmarks._runner.Server.start` for why)::

    python -m benchmarks._server --port 0      # prints "PORT <n>" once listening
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import signal
import socket
import sys
import threading

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


async def serve(host: str, port: int) -> None:
    """Serve until SIGTERM/SIGINT, or until stdin closes; print ``PORT <n>`` once listening."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    runner = web.AppRunner(make_app(), access_log=None, handle_signals=False)
    await runner.setup()
    await web.SockSite(runner, sock, backlog=1024).start()
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    # The suite holds our stdin open: its end means the suite is gone (even killed), and so
    # must this server be, rather than linger as an orphan.
    threading.Thread(target=_watch_stdin, args=(loop, stop), daemon=True).start()
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def _watch_stdin(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    # os.read on the descriptor, not sys.stdin: a daemon thread blocked in a buffered read
    # would make the interpreter's shutdown abort.
    with contextlib.suppress(OSError):
        while os.read(0, 4096):
            pass
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(stop.set)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks._server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
