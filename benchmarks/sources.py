"""7. Sources: 1,000,000 rows with two typed attributes, read into members ready to send.

The same rows (an ID, ``plan`` as a string, ``score`` as an integer) as a CSV file, a Parquet
file and an in-memory pyarrow table, each read to the end by its reader, plus the loop users
write today for a pandas DataFrame (``itertuples`` into :class:`Member`, the fastest of the hand
idioms; ``iterrows`` is several times slower). Each contender turns every row into a
:class:`Member` the upload engine can send as it is.

Targets (issue "Sources"): ``read_parquet`` at least 3x faster than ``read_csv``; ``read_arrow``
of the table at least 5x faster than the hand loop over the DataFrame.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from ._runner import Check, Contender, Context, Result, Target, alternate, progress, summarize

KEY = "sources"
TITLE = "7. Sources: 1,000,000 rows, two typed attributes, to members ready to send"
ROWS = 1_000_000


def make_table(count: int) -> Any:
    import pyarrow as pa

    plans = ("free", "pro", "team")
    return pa.table({
        "customer_id": [f"customer-{i:09d}" for i in range(count)],
        "plan": [plans[i % 3] for i in range(count)],
        "score": pa.array(range(count), pa.int64()),
    })


def _count(items: Any) -> int:
    count = 0
    for _ in items:
        count += 1
    return count


def run(ctx: Context) -> Result:
    try:
        import pyarrow.csv as arrow_csv
        import pyarrow.parquet as parquet
    except ImportError:
        raise SystemExit("the sources benchmark needs pyarrow and pandas: pip install -e '.[test]'") from None
    from batch_audiences import Member
    from batch_audiences.sources import read_arrow, read_csv, read_parquet

    rows = 200_000 if ctx.quick else ROWS
    table = make_table(rows)
    csv_path: Path = ctx.workdir / "sources.csv"
    parquet_path: Path = ctx.workdir / "sources.parquet"
    arrow_csv.write_csv(table, csv_path)
    parquet.write_table(table, parquet_path)
    frame = table.to_pandas()

    def timed(read: Any) -> float:
        import time

        started = time.perf_counter()
        count = read()
        elapsed = time.perf_counter() - started
        if count != rows:
            raise RuntimeError(f"read {count} rows of {rows}")
        return elapsed

    def by_hand() -> int:
        # What a user writes today: a Member per row, the numpy integer made a Python int.
        return _count(
            Member(row.customer_id, {"plan": row.plan, "score": int(row.score)})
            for row in frame.itertuples(index=False)
        )

    contenders = [
        Contender("read_parquet", lambda: timed(lambda: _count(read_parquet(
            parquet_path, id_column="customer_id", attributes=["plan", "score"])))),
        Contender("read_csv", lambda: timed(lambda: _count(read_csv(
            csv_path, id_column="customer_id", attributes={"plan": "str", "score": "int"})))),
        Contender("read_arrow (pyarrow table)", lambda: timed(lambda: _count(read_arrow(
            table, id_column="customer_id", attributes=["plan", "score"])))),
        Contender("DataFrame rows by hand", lambda: timed(by_hand),
                  note="pandas itertuples() into Member(...): the loop users write today"),
    ]
    rounds = ctx.rounds(1, 5)
    progress(f"{TITLE}: {rows:,} rows, {rounds} rounds")
    samples = alternate(contenders, rounds, warmup=0 if ctx.quick else 1)
    result = summarize(
        KEY, TITLE, "s", samples, baseline="read_parquet", higher_is_better=False,
        targets=[Target("read_csv", ">=", 3.0, "read_csv time / read_parquet time")],
        notes=[f"{rows:,} rows: an ID, plan (str), score (int); every row read into a Member.",
               "Ratios are paired by round (see benchmarks/README.md)."],
        row_notes={c.name: c.note for c in contenders if c.note},
    )
    hand = statistics.median(
        h / a for h, a in zip(samples["DataFrame rows by hand"], samples["read_arrow (pyarrow table)"],
                              strict=True)
    )
    result.checks.append(Check(TITLE, "DataFrame rows by hand time / read_arrow time", ">=", 5.0, hand))
    return result
