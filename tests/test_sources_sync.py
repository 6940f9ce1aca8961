"""Every kind of source feeds ``sync``: Parquet, Arrow, a SQL query (SQLite through SQLAlchemy),
from the library and from the command line, against the emulator."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batch_audiences import AsyncAudiencesClient
from batch_audiences.sources import read_arrow, read_parquet, read_sql
from batch_audiences.testing import Emulator
from tests.test_cli import SECRET_KEY, cli_at

FIRST = {f"c{n}": "pro" if n % 2 else "free" for n in range(40)}
SECOND = {**{k: v for k, v in FIRST.items() if k not in {"c0", "c1"}}, "c2": "pro", "new": "free"}


def table(rows: dict[str, str]) -> pa.Table:
    return pa.table({"id": list(rows), "plan": list(rows.values())})


def write_sqlite(path: Path, rows: dict[str, str]) -> str:
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE IF EXISTS customers")
        conn.execute("CREATE TABLE customers (id TEXT PRIMARY KEY, plan TEXT)")
        conn.executemany("INSERT INTO customers VALUES (?, ?)", rows.items())
    conn.close()
    return f"sqlite:///{path}"


def expected(rows: dict[str, str]) -> dict[str, dict[str, object]]:
    return {i: {"plan": p} for i, p in rows.items()}


async def test_parquet_then_sql_then_arrow_sources_keep_an_audience_in_step(tmp_path: Path) -> None:
    state = tmp_path / "state.sqlite3"
    parquet = tmp_path / "crm.parquet"
    pq.write_table(table(FIRST), parquet, row_group_size=7)
    async with Emulator(indexing_delay=0.0) as emu, AsyncAudiencesClient(
        emu.api_key, emu.project_key, base_url=emu.base_url
    ) as client:
        first = await client.sync("crm", read_parquet(parquet, id_column="id", attributes=["plan"]),
                                  state=state)
        assert (first.ok, first.mode, first.added) == (True, "full", 40), first.summary()
        emu.settle()
        assert emu.members("crm") == expected(FIRST)

        url = write_sqlite(tmp_path / "crm.db", SECOND)
        second = await client.sync(
            "crm", read_sql(url, "SELECT id, plan FROM customers ORDER BY id", id_column="id"),
            state=state,
        )
        assert (second.ok, second.mode) == (True, "incremental"), second.summary()
        assert (second.added, second.removed, second.changed) == (1, 2, 1)
        emu.settle()
        assert emu.members("crm") == expected(SECOND)

        mark = len(emu.requests)
        third = await client.sync("crm", read_arrow(table(SECOND), id_column="id"), state=state)
        assert (third.ok, third.mode, third.unchanged) == (True, "incremental", 39), third.summary()
        assert [r.route for r in emu.requests[mark:] if r.route in ("update", "replace")] == []


@pytest.fixture
def emu(clean_env: pytest.MonkeyPatch) -> Iterator[Emulator]:
    with Emulator(indexing_delay=0.0, api_key=SECRET_KEY) as emulator:
        yield emulator


@pytest.mark.parametrize("kind", ["parquet", "sql"])
def test_the_sync_command_reads_parquet_files_and_sql_queries(
    emu: Emulator, tmp_path: Path, kind: str
) -> None:
    state = str(tmp_path / "state.sqlite3")
    if kind == "parquet":
        path = tmp_path / "crm.parquet"
        pq.write_table(table(FIRST), path)
        source = [str(path)]
    else:
        url = write_sqlite(tmp_path / "crm.db", FIRST)
        source = ["--sql", "SELECT id, plan FROM customers", "--db", url]
    run = cli_at(emu, "--json", "sync", "crm", *source, "--id-column", "id", "--attr", "plan",
                 "--state", state)
    assert run.code == 0, run.err
    assert {k: run.json()[k] for k in ("mode", "added", "ok")} == {"mode": "full", "added": 40, "ok": True}
    emu.settle()
    assert emu.members("crm") == expected(FIRST)
