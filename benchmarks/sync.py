"""7. Sync: a source with 1% churn against its snapshot, next to just reading the source.

Sources are CSV exports with two attributes (``customer_id,plan,score``). The snapshot holds the
"before" file (see below); the measured sync reads the "after" file, which differs from it by 1%
(0.5% new IDs, 0.3% gone, 0.2% with another plan). Measured, each in a fresh process:

- the floor: reading and validating the "after" file with :func:`sources.read_csv`, nothing else;
- ``client.sync()`` of the "after" file (SQLite snapshot, defaults), for ``BENCH_SYNC_ROWS`` rows
  (default 10,000,000; ``--quick``: 200,000) and a tenth of that, for the growth of peak RSS;
- ``client.sync()`` of an unchanged source (the "after" file of the smaller size, again).

The snapshot is the one a full sync of the "before" file leaves, written straight into the store
(staging the file through the sync's own code, then recording it as accepted), to spare the
suite a full upload of millions of IDs that measures nothing new.

The server is a stub on loopback that discards bodies, counts writes, and answers a view with the
size the audience has after the previous sync (so no drift is seen), the writes as applied.

Standalone: ``python -m benchmarks.sync --rows 1000000`` runs the same for one size.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from ._runner import (
    API_KEY,
    PROJECT_KEY,
    ROOT,
    Check,
    Context,
    Result,
    Row,
    child_env,
    progress,
)
from .memory import _peak_mb

KEY = "sync"
TITLE = "7. Sync with 1% churn, against reading the source alone"
AUDIENCE = "bench-sync"
MAX_WRITES = 12
MAX_TIME_RATIO = 2.5
MAX_PEAK_MB = 300.0
MAX_RSS_GROWTH = 1.3
_PLANS = ("free", "pro", "team")


# -- the files ----------------------------------------------------------------------------------


def write_sources(workdir: Path, rows: int) -> tuple[Path, Path, int]:
    """``before`` (IDs 0..rows-1) and ``after`` (1% churn); returns their paths and after's size."""
    before, after = workdir / f"before-{rows}.csv", workdir / f"after-{rows}.csv"
    new = rows // 200  # 0.5%
    size = 0
    with before.open("w") as b, after.open("w") as a:
        b.write("customer_id,plan,score\n")
        a.write("customer_id,plan,score\n")
        step = 100_000
        for start in range(0, rows, step):
            lines_b, lines_a = [], []
            for i in range(start, min(start + step, rows)):
                plan, score = _PLANS[i % 3], i % 100
                lines_b.append(f"customer-{i:09d},{plan},{score}\n")
                churn = i % 1000
                if churn < 3:  # 0.3% gone
                    continue
                if churn < 5:  # 0.2% changed
                    plan = _PLANS[(i + 1) % 3]
                lines_a.append(f"customer-{i:09d},{plan},{score}\n")
            b.write("".join(lines_b))
            a.write("".join(lines_a))
            size += len(lines_a)
        a.write("".join(f"customer-{rows + i:09d},pro,1\n" for i in range(new)))
        size += new
    return before, after, size


# -- the stub server ----------------------------------------------------------------------------


class StubServer:
    """Writes answered 202 and counted; a view answers ``nb_ids`` (set by the benchmark), applied."""

    def __init__(self) -> None:
        self.nb_ids = 0
        self.writes = 0
        self.base_url = ""
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> StubServer:
        self._thread.start()
        self._ready.wait(30)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)

    def _serve(self) -> None:
        from aiohttp import web

        tokens = itertools.count()
        exists = {"flag": False}

        async def write(request: web.Request) -> web.Response:
            while await request.content.readany():
                pass
            self.writes += 1
            exists["flag"] = True
            return web.json_response({"indexing_token": f"t{next(tokens)}"}, status=202)

        async def view(request: web.Request) -> web.Response:
            if not exists["flag"] and self.nb_ids == 0:
                return web.json_response({"error_code": "NOT_FOUND", "error_message": "no such audience"},
                                         status=404)
            return web.json_response({
                "name": AUDIENCE, "type": "CUSTOM_ID", "nb_ids": self.nb_ids, "indexing_state": "APPLIED",
                "created": "2024-01-01T00:00:00Z", "updated": "2024-01-01T00:00:00Z",
            })

        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_route("POST", "/{tail:.*}", write)
        app.router.add_route("GET", "/{tail:.*}", view)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(runner.setup())
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        site = web.SockSite(runner, sock)
        self._loop.run_until_complete(site.start())
        self.base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())
        self._loop.close()


# -- the children -------------------------------------------------------------------------------


def child(mode: str, csv_path: str, base_url: str, state: str) -> dict[str, float]:
    """In a fresh process: read the file (``read``) or sync it (``sync``); time, report, peak RSS."""
    from batch_audiences import AsyncAudiencesClient
    from batch_audiences.sources import read_csv

    def rows() -> object:
        return read_csv(csv_path, id_column="customer_id", attributes=["plan", "score:int"])

    if mode == "seed":
        return asyncio.run(_seed(csv_path, base_url, state))

    if mode == "read":
        started, cpu = time.perf_counter(), time.process_time()
        count = sum(1 for _ in rows())  # type: ignore[attr-defined]
        return {"seconds": time.perf_counter() - started, "cpu": time.process_time() - cpu,
                "rows": count, "peak_mb": _peak_mb()}

    async def main() -> dict[str, float]:
        async with AsyncAudiencesClient(API_KEY, PROJECT_KEY, base_url=base_url,
                                        allow_insecure_http=True) as client:
            started, cpu = time.perf_counter(), time.process_time()
            report = await client.sync(AUDIENCE, rows(), state=state)  # type: ignore[arg-type]
            seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        if not report.ok:
            raise RuntimeError(report.summary())
        return {"seconds": seconds, "cpu": cpu, "added": report.added, "removed": report.removed,
                "changed": report.changed, "unchanged": report.unchanged, "full": report.mode == "full",
                "requests": report.requests}

    result = asyncio.run(main())
    result["peak_mb"] = _peak_mb()
    return result


async def _seed(csv_path: str, base_url: str, state: str) -> dict[str, float]:
    """The snapshot a full sync of the file leaves, written straight into the store (no requests)."""
    from batch_audiences._sync import SnapshotKey, SqliteStore
    from batch_audiences._sync._plan import stage_source
    from batch_audiences.sources import read_csv

    started = time.perf_counter()
    session = await SqliteStore(state).open(SnapshotKey(base_url, PROJECT_KEY, AUDIENCE))
    try:
        rows = read_csv(csv_path, id_column="customer_id", attributes=["plan", "score:int"])
        staged = await stage_source(session, iter(rows), deadline_at=None)
        await session.plan(True)
        await session.begin(True)
        await session.record(0, staged.items_read, True)
    finally:
        await session.close()
    return {"seconds": time.perf_counter() - started, "rows": staged.items_read}


def _spawn(mode: str, csv_path: Path, server: StubServer, state: Path) -> dict[str, float]:
    command = [sys.executable, "-m", "benchmarks.sync", "--child", mode, "--csv", str(csv_path),
               "--url", server.base_url, "--state", str(state)]
    out = subprocess.run(command, cwd=ROOT, env=child_env(), capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"sync benchmark child failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def measure(workdir: Path, rows: int, server: StubServer, *, unchanged: bool) -> dict[str, dict[str, float]]:
    """One size: the floor, the snapshot, the churned sync, and (``unchanged``) an unchanged sync."""
    progress(f"sync: writing {rows:,}-row sources")
    before, after, after_size = write_sources(workdir, rows)
    state = workdir / f"state-{rows}.sqlite3"
    progress(f"sync: the snapshot of the {rows:,}-row source (a full sync's, written directly)")
    seeded = _spawn("seed", before, server, state)
    results = {"seed": seeded}
    progress("sync: reading the churned file with read_csv only")
    results["floor"] = _spawn("read", after, server, state)
    progress("sync: the churned sync")
    server.nb_ids, server.writes = rows, 0
    results["churned"] = _spawn("sync", after, server, state)
    results["churned"]["writes"] = server.writes
    if unchanged:
        progress("sync: the same source again")
        server.nb_ids, server.writes = after_size, 0
        results["unchanged"] = _spawn("sync", after, server, state)
        results["unchanged"]["writes"] = server.writes
    for path in (before, after, state):
        path.unlink(missing_ok=True)
    Path(f"{state}-wal").unlink(missing_ok=True)
    return results


def run(ctx: Context) -> Result:
    rows = int(os.environ.get("BENCH_SYNC_ROWS", "200000" if ctx.quick else "10000000"))
    small = max(rows // 10, 1000)
    with StubServer() as server:
        big = measure(ctx.workdir, rows, server, unchanged=False)
        little = measure(ctx.workdir, small, server, unchanged=True)
    floor = big["floor"]["seconds"]

    def row(name: str, seconds: float, note: str = "", ratio: bool = True) -> Row:
        return Row(name, [seconds], seconds, 0.0, seconds / floor if ratio else None, note)

    churned_big, churned_small = big["churned"], little["churned"]
    result = Result(
        KEY, TITLE, "s", higher_is_better=False, baseline=f"read_csv only, {rows:,} rows",
        rows=[
            row(f"read_csv only, {rows:,} rows", floor, f"CPU {big['floor']['cpu']:.1f} s"),
            row(f"sync, 1% churn, {rows:,} rows", churned_big["seconds"],
                f"{churned_big['writes']:.0f} writes, peak RSS {churned_big['peak_mb']:.0f} MB, CPU "
                f"{churned_big['cpu']:.1f} s ({churned_big['cpu'] / big['floor']['cpu']:.2f}x read's)"),
            row(f"sync, 1% churn, {small:,} rows", churned_small["seconds"],
                f"peak RSS {churned_small['peak_mb']:.0f} MB; read_csv only: "
                f"{little['floor']['seconds']:.1f} s; CPU {churned_small['cpu']:.1f} s "
                f"({churned_small['cpu'] / little['floor']['cpu']:.2f}x read's)", ratio=False),
            row(f"sync, unchanged, {small:,} rows", little["unchanged"]["seconds"],
                f"{little['unchanged']['writes']:.0f} writes", ratio=False),
        ],
        notes=[f"One run per size (a run of {rows:,} rows takes minutes); SQLite snapshot, chunks of "
               "10,000, 4 in flight, against a loopback stub that counts writes. Sizes: "
               "BENCH_SYNC_ROWS (default 10,000,000; --quick: 200,000). CPU: the process's, all "
               f"threads (the store writes on a thread of its own). Load average at the end: "
               f"{os.getloadavg()[0]:.1f}."],
    )
    churned, growth = big["churned"], big["churned"]["peak_mb"] / little["churned"]["peak_mb"]
    result.checks += [
        Check(TITLE, f"write requests, 1% churn of {rows:,}", "<=", MAX_WRITES, churned["writes"]),
        Check(TITLE, "time, sync / read_csv only", "<=", MAX_TIME_RATIO,
              churned["seconds"] / big["floor"]["seconds"]),
        Check(TITLE, f"peak RSS of the {rows:,}-row sync, MB", "<=", MAX_PEAK_MB, churned["peak_mb"]),
        Check(TITLE, f"peak RSS {rows:,} / {small:,} rows", "<=", MAX_RSS_GROWTH, growth),
        Check(TITLE, f"write requests, unchanged {small:,} rows", "<=", 0, little["unchanged"]["writes"]),
    ]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sync")
    parser.add_argument("--child", choices=["read", "sync", "seed"], default=None)
    parser.add_argument("--csv")
    parser.add_argument("--url")
    parser.add_argument("--state")
    parser.add_argument("--rows", type=int, default=1_000_000, help="standalone: rows of one measurement")
    args = parser.parse_args(argv)
    if args.child is not None:
        print(json.dumps(child(args.child, args.csv, args.url, args.state)))
        return 0
    import tempfile

    with tempfile.TemporaryDirectory(prefix="batch-audiences-sync-") as tmp, StubServer() as server:
        print(json.dumps(measure(Path(tmp), args.rows, server, unchanged=True), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
