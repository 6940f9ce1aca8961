"""``python -m batch_audiences.testing``: serve an emulator until Ctrl-C.

:func:`add_arguments` and :func:`run` let another CLI offer the same command (e.g. a subcommand).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from typing import TextIO

from ._emulator import Emulator
from ._models import FaultPlan


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the emulator's options to ``parser``."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8080,
                        help="port to listen on, 0 for any free one (default: %(default)s)")
    parser.add_argument("--rate", type=float, default=None, metavar="R",
                        help="accept at most R requests per second (a token bucket); 429 over it")
    parser.add_argument("--burst", type=float, default=1.0, metavar="B",
                        help="requests the rate limit lets through at once after a quiet spell: 1 "
                        "spaces requests 1/R apart, R allows one second's worth (default: 1)")
    parser.add_argument("--rate-retry-after", choices=("exact", "seconds", "off"), default="exact",
                        help="Retry-After on the rate limit's 429s: exact fractional seconds, "
                        "whole seconds rounded up (as real servers send), or none (default: exact)")
    parser.add_argument("--no-rate-headers", action="store_true",
                        help="send no X-RateLimit-Limit/-Remaining/-Reset headers")
    parser.add_argument("--fail-rate", type=float, default=0.0, metavar="F",
                        help="probability of a transient failure per request, split evenly between "
                        "429 and 503 (default: 0)")
    parser.add_argument("--retry-after", type=float, default=1.0, metavar="S",
                        help="Retry-After seconds sent with injected 429s (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=None, help="seed for the random faults and latency")
    parser.add_argument("--api-key", default="emulator-rest-api-key",
                        help="REST API key to expect (default: %(default)s)")
    parser.add_argument("--project-key", default="project_emulator",
                        help="project key to expect (default: %(default)s)")
    parser.add_argument("--indexing-delay", type=float, default=0.05, metavar="S",
                        help="seconds before a write is applied (default: %(default)s)")
    parser.add_argument("--replace-indexing-delay", type=float, default=None, metavar="S",
                        help="seconds before a replace is applied (default: 3 x the indexing delay)")
    parser.add_argument("--latency", type=float, default=0.0, metavar="S",
                        help="seconds added before processing each request (default: %(default)s)")


def build_emulator(args: argparse.Namespace) -> Emulator:
    """The Emulator the parsed options describe (ValueError for bad values)."""
    if not 0.0 <= args.fail_rate <= 1.0:
        raise ValueError(f"--fail-rate must be between 0 and 1, got {args.fail_rate}")
    faults = FaultPlan(
        seed=args.seed,
        rate_429=args.fail_rate / 2,
        rate_503=args.fail_rate / 2,
        retry_after=args.retry_after,
    )
    return Emulator(
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        project_key=args.project_key,
        indexing_delay=args.indexing_delay,
        replace_indexing_delay=args.replace_indexing_delay,
        rate_limit=args.rate,
        burst=args.burst,
        rate_limit_retry_after=args.rate_retry_after,
        rate_limit_headers=not args.no_rate_headers,
        faults=faults,
        latency=args.latency,
        # Nothing outside this process can read the log's bodies: keeping them would only hold
        # every ID sent (hundreds of megabytes for a million) and slow the garbage collector.
        record_bodies=False,
    )


# Shown on their own banner lines already.
_SHOWN_APART = frozenset({"host", "port", "api_key", "project_key"})


def options_in_force(args: argparse.Namespace) -> list[tuple[str, object]]:
    """``[("--rate", 100.0), ...]``: every emulator option and its value in ``args``.

    The options are found by parsing an empty command line with :func:`add_arguments`, so an
    option added there shows on the banner with no code of its own.
    """
    probe = argparse.ArgumentParser(add_help=False)
    add_arguments(probe)
    defaults = vars(probe.parse_known_args([])[0])
    return [
        ("--" + dest.replace("_", "-"), getattr(args, dest, default))
        for dest, default in defaults.items()
        if dest not in _SHOWN_APART
    ]


def _shown(value: object) -> str:
    if value is None:
        return "unset"  # the option's documented default behaviour applies
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"{value:g}" if isinstance(value, float) else str(value)


async def serve(
    emulator: Emulator, out: TextIO = sys.stdout, options: list[tuple[str, object]] | None = None
) -> None:
    """Start ``emulator``, print how to reach it (and ``options``), serve until SIGINT/SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        # Not available on Windows, where Ctrl-C arrives as KeyboardInterrupt instead.
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    async with emulator:
        print(f"Batch Audience API emulator listening on {emulator.base_url}", file=out)
        print(f"  base URL:    {emulator.base_url}  (routes: /<version>/audiences/..., e.g. /2.8)", file=out)
        print(f"  API key:     {emulator.api_key}", file=out)
        print(f"  project key: {emulator.project_key}", file=out)
        if options:
            print("  options:     " + "  ".join(f"{name} {_shown(value)}" for name, value in options),
                  file=out)
        print(f"  inspect:     GET {emulator.base_url}/_emulator/audiences[/NAME/members] (emulator "
              "only), or: batch-audiences emulator-dump [NAME]", file=out)
        print("Press Ctrl-C to stop.", file=out, flush=True)
        await stop.wait()
    print("Emulator stopped.", file=out, flush=True)


def run(args: argparse.Namespace) -> int:
    """Serve with parsed options; the exit status (0 after Ctrl-C)."""
    try:
        emulator = build_emulator(args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(emulator, options=options_in_force(args)))
    except KeyboardInterrupt:  # when no signal handler could be installed
        return 0
    except OSError as error:  # e.g. the port is taken
        print(f"error: cannot listen on {args.host}:{args.port}: {error}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``) and serve; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m batch_audiences.testing",
        description="Serve an in-memory Batch Audience API emulator for tests and demos.",
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))
