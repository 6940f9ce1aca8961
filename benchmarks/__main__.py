"""``python -m benchmarks [--quick] [--only NAME] [--json PATH]``: run the suite, print the tables."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

try:
    from . import (
        creates,
        imports,
        memory,
        pacing,
        sequential,
        serialization,
        sources,
        sources_memory,
        sync,
        upload,
    )
except ImportError as error:  # httpx or requests: the contenders the SDK is compared with
    sys.exit(f"{error}: install the benchmark extra first, e.g. pip install -e '.[bench]'")
from ._runner import Context, Result, machine, progress, render, render_machine, render_summary, write_json

COMPARISONS: dict[str, ModuleType] = {
    module.KEY: module
    for module in (
        creates, sequential, upload, serialization, memory, imports, sources, sources_memory, sync,
        pacing,
    )
}


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Measure batch-audiences against bare aiohttp, requests and httpx.",
    )
    parser.add_argument("--quick", action="store_true", help="few rounds and small sizes: a smoke run")
    parser.add_argument(
        "--only", action="append", choices=sorted(COMPARISONS), metavar="NAME",
        help=f"run only this comparison (repeatable): {', '.join(COMPARISONS)}",
    )
    parser.add_argument(
        "--rounds", type=_positive, default=None,
        help="rounds for every comparison (default: each comparison's own, see the README)",
    )
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the results here")
    parser.add_argument(
        "--server", choices=["minimal", "emulator"], default="minimal",
        help="what the comparisons that send requests (1, 2, 3, 5) talk to: the minimal server "
        "(default) or the emulator",
    )
    args = parser.parse_args(argv)
    names = dict.fromkeys(args.only) if args.only else COMPARISONS
    selected = [COMPARISONS[name] for name in names]
    info = machine()
    print(render_machine(info), flush=True)
    results: list[Result] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="batch-audiences-bench-") as tmp:
        ctx = Context(
            quick=args.quick, workdir=Path(tmp), server_kind=args.server, rounds_override=args.rounds
        )
        try:
            for module in selected:
                run: Callable[[Context], Result] = module.run
                began = time.perf_counter()
                result = run(ctx)
                result.seconds = time.perf_counter() - began
                results.append(result)
                print("\n" + render(result), flush=True)
                progress(f"{result.title}: {result.seconds:.1f}s")
        finally:
            ctx.close()
    summary = render_summary(results)
    if summary:
        print("\n" + summary)
    print(f"\nTotal: {time.perf_counter() - started:.0f}s", flush=True)
    if args.json is not None:
        write_json(args.json, results, info, quick=args.quick)
        print(f"Results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
