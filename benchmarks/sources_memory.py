"""8. Peak RSS reading a Parquet file with ``read_parquet``: 1,000,000 against 5,000,000 rows.

Each run is a fresh subprocess (``python -m benchmarks.sources_memory --child PATH``) that reads
the whole file into members (an ID and two typed attributes) and reports its peak resident set
size (``VmHWM``, see ``benchmarks/memory.py``). The reader holds one batch at a time, so the
peak should not depend on the length of the file. Target: at most 1.3x.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from ._runner import ROOT, Contender, Context, Result, Target, alternate, child_env, progress, summarize
from .memory import _peak_mb
from .sources import make_table

KEY = "sources-memory"
TITLE = "8. Peak RSS, a Parquet file read by read_parquet()"


def write_parquet(path: Path, count: int) -> None:
    import pyarrow.parquet as parquet

    step = 1_000_000
    with parquet.ParquetWriter(path, make_table(1).schema) as writer:
        for start in range(0, count, step):
            table = make_table(min(step, count - start))
            writer.write_table(table, row_group_size=250_000)


def _spawn(path: Path, expected: int) -> float:
    command = [sys.executable, "-m", "benchmarks.sources_memory", "--child", str(path), str(expected)]
    out = subprocess.run(command, cwd=ROOT, env=child_env(), capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"sources memory child failed:\n{out.stderr}")
    return float(json.loads(out.stdout.strip().splitlines()[-1])["peak_mb"])


def run(ctx: Context) -> Result:
    small, large = 1_000_000, 5_000_000
    paths = {}
    for count in (small, large):
        paths[count] = ctx.workdir / f"rows-{count}.parquet"
        write_parquet(paths[count], count)
    contenders = [Contender(f"{count:,} rows", lambda count=count: _spawn(paths[count], count))  # type: ignore[misc]
                  for count in (small, large)]
    rounds = ctx.rounds(1, 3)
    progress(f"{TITLE}: {small:,} and {large:,} rows, {rounds} rounds")
    samples = alternate(contenders, rounds, warmup=0)
    return summarize(
        KEY, TITLE, "MB", samples, baseline=f"{small:,} rows", higher_is_better=False,
        targets=[Target(f"{large:,} rows", "<=", 1.3, f"peak RSS {large:,} / {small:,} rows")],
        notes=["Each run is a new process reading the file to its end into members "
               "(ID, plan str, score int), 65,536 rows per batch."],
    )


def child(path: str, expected: int) -> dict[str, float]:
    from batch_audiences.sources import read_parquet

    count = 0
    for _ in read_parquet(path, id_column="customer_id", attributes=["plan", "score"]):
        count += 1
    if count != expected:
        raise RuntimeError(f"read {count} rows of {expected}")
    return {"peak_mb": _peak_mb()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sources_memory")
    parser.add_argument("--child", action="store_true", required=True)
    parser.add_argument("path")
    parser.add_argument("expected", type=int)
    args = parser.parse_args(argv)
    print(json.dumps(child(args.path, args.expected)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
