"""5. Memory: peak RSS of streaming 500,000 and 2,000,000 IDs from a CSV file through upload().

Each run is a fresh subprocess (``python -m benchmarks.memory --child ...``) that reads a CSV
export with :func:`batch_audiences.sources.read_csv` and hands the lazy reader to
``client.upload()``; the server discards the bodies. The process's peak resident set size is
read from ``getrusage`` at the end. Since the upload holds at most ``chunk_size x concurrency``
items, the peak should not depend on the length of the file: the ratio of the 2,000,000-ID run
to the 500,000-ID run is the growth.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
from pathlib import Path

from ._runner import (
    API_KEY,
    PROJECT_KEY,
    ROOT,
    Check,
    Contender,
    Context,
    Result,
    Target,
    alternate,
    child_env,
    progress,
    summarize,
)

KEY = "memory"
TITLE = "5. Peak RSS, IDs streamed from a CSV file through upload()"
AUDIENCE = "bench-memory"
MAX_PEAK_MB = 150.0


def write_csv(path: Path, count: int) -> None:
    """A CRM export: an ID column and a column the upload does not send."""
    plans = ("free", "pro", "team")
    with path.open("w", encoding="utf-8") as file:
        file.write("customer_id,plan\n")
        step = 100_000
        for start in range(0, count, step):
            stop = min(start + step, count)
            file.write("".join(f"customer-{i:09d},{plans[i % 3]}\n" for i in range(start, stop)))


def _peak_mb() -> float:
    """This process's peak resident set size, in MiB.

    On Linux, ``VmHWM`` from /proc: ``getrusage``'s ``ru_maxrss`` would report at least the
    parent's peak, which the kernel carries over into a child through fork and exec.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024  # bytes / KiB


def child(csv_path: str | None, base_url: str, expected: int) -> dict[str, float]:
    """In the subprocess: upload the file (or only make one request) and report the peak RSS."""
    from batch_audiences import AsyncAudiencesClient, AudienceExistsError
    from batch_audiences.sources import read_csv

    async def main() -> None:
        async with AsyncAudiencesClient(API_KEY, PROJECT_KEY, base_url=base_url) as client:
            with contextlib.suppress(AudienceExistsError):
                await client.create(AUDIENCE)
            if csv_path is None:
                return
            report = await client.upload(AUDIENCE, read_csv(csv_path, id_column="customer_id"))
            if report.items_accepted != expected:
                raise RuntimeError(f"the upload lost items: {report.summary()}")

    asyncio.run(main())
    return {"peak_mb": _peak_mb()}


def _spawn(csv_path: Path | None, base_url: str, expected: int) -> float:
    command = [sys.executable, "-m", "benchmarks.memory", "--child", "--url", base_url,
               "--expected", str(expected)]
    if csv_path is not None:
        command += ["--csv", str(csv_path)]
    out = subprocess.run(command, cwd=ROOT, env=child_env(), capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"memory child failed:\n{out.stderr}")
    return float(json.loads(out.stdout.strip().splitlines()[-1])["peak_mb"])


def run(ctx: Context) -> Result:
    server = ctx.server()
    # The same sizes in quick mode (one round instead of three): with fewer IDs the upload has
    # not reached its steady state (its buffers and order-tracking window still filling), and
    # the growth would say only how long they take to fill.
    small, large = 500_000, 2_000_000
    paths = {}
    for count in (small, large):
        paths[count] = ctx.workdir / f"ids-{count}.csv"
        write_csv(paths[count], count)

    def runner(count: int) -> Contender:
        return Contender(f"{count:,} IDs", lambda: _spawn(paths[count], server.base_url, count))

    contenders = [
        runner(small),
        runner(large),
        Contender(
            "no upload", lambda: _spawn(None, server.base_url, 0),
            note="the same process making one request: the interpreter, aiohttp and the SDK alone",
        ),
    ]
    rounds = ctx.rounds(1, 3)  # peak RSS hardly varies from run to run
    progress(f"{TITLE}: {small:,} and {large:,} IDs, {rounds} rounds")
    samples = alternate(contenders, rounds, warmup=0)
    result = summarize(
        KEY, TITLE, "MB", samples, baseline=f"{small:,} IDs", higher_is_better=False,
        targets=[Target(f"{large:,} IDs", "<=", 1.10, f"peak RSS {large:,} / {small:,} IDs")],
        notes=["Each run is a new process; upload() with its defaults (10,000 IDs per request, "
               f"4 in flight), from read_csv(), against the {server.kind} server."],
        row_notes={c.name: c.note for c in contenders if c.note},
    )
    peak = next(row.median for row in result.rows if row.name == f"{large:,} IDs")
    result.checks.append(Check(TITLE, f"peak RSS with {large:,} IDs, MB", "<=", MAX_PEAK_MB, peak))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory")
    parser.add_argument("--child", action="store_true", required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--csv", default=None)
    parser.add_argument("--expected", type=int, default=0)
    args = parser.parse_args(argv)
    print(json.dumps(child(args.csv, args.url, args.expected)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
