"""``read_sql`` against real databases: SQLite through SQLAlchemy, and a real PostgreSQL server
(psycopg 3) for the database's own types, server-side streaming, the async engine and the
password that must never show; and ``upload --sql`` from the command line."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest

from batch_audiences import Member, ValidationError
from batch_audiences.sources import AsyncSourceReader, SourceError, read_sql, safe_url
from batch_audiences.testing import Emulator
from tests._postgres import PASSWORD
from tests.test_cli import SECRET_KEY, cli_at

sqlalchemy = pytest.importorskip("sqlalchemy", reason="the [sql] extra (SQLAlchemy) is not installed")

UTC = timezone.utc
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def emu(clean_env: pytest.MonkeyPatch) -> Iterator[Emulator]:
    with Emulator(indexing_delay=0.0, api_key=SECRET_KEY) as emulator:
        yield emulator


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'crm.db'}"
    engine = sqlalchemy.create_engine(url)
    with engine.begin() as db:
        db.exec_driver_sql("CREATE TABLE users (id TEXT, plan TEXT, score INTEGER, ratio REAL, signup TEXT)")
        db.exec_driver_sql(
            "INSERT INTO users VALUES ('u1', 'pro', 3, 0.5, '2024-05-01'), ('u2', NULL, NULL, NULL, NULL),"
            " ('u3', 'free', 7, 2.5, 'soon'), (NULL, 'x', 1, 1, NULL)"
        )
    engine.dispose()
    return url


@pytest.fixture(scope="module")
def pg_url(postgresql_url: str) -> str:
    pytest.importorskip("psycopg", reason="psycopg is not installed")
    return postgresql_url.replace("postgresql://", "postgresql+psycopg://", 1)


# -- SQLite ----------------------------------------------------------------------------------------------


def test_sqlite_by_url_with_types_from_the_database(sqlite_url: str) -> None:
    reader = read_sql(sqlite_url, "SELECT id, plan, score, ratio FROM users ORDER BY rowid", errors="collect")
    assert list(reader) == [
        Member("u1", {"plan": "pro", "score": 3, "ratio": 0.5}),
        Member("u2"),  # NULLs: no attributes
        Member("u3", {"plan": "free", "score": 7, "ratio": 2.5}),
    ]
    assert [(e.line, e.message, e.column) for e in reader.errors] == [(4, "no ID (NULL)", "id")]


def test_sqlite_engine_select_params_and_chosen_types(sqlite_url: str) -> None:
    engine = sqlalchemy.create_engine(sqlite_url)
    users = sqlalchemy.table("users", sqlalchemy.column("id"), sqlalchemy.column("signup"),
                             sqlalchemy.column("score"))
    query = sqlalchemy.select(users.c.id, users.c.signup).where(users.c.score > 0).order_by(users.c.id)
    reader = read_sql(engine, query, attributes={"signup": "date"}, errors="collect")
    assert list(reader) == [Member("u1", {"signup": datetime(2024, 5, 1, tzinfo=UTC)})]
    # The NULL ID sorts first; u3's "soon" is no date.
    assert [(e.line, e.column) for e in reader.errors] == [(1, "id"), (3, "signup")]
    text = read_sql(engine, "SELECT id FROM users WHERE score >= :low ORDER BY id", params={"low": 5})
    assert list(text) == ["u3"]
    engine.dispose()


def test_sql_problems_are_clear_errors(sqlite_url: str) -> None:
    with pytest.raises(SourceError, match="no column 'nope' in the query's result; it has 'id', 'plan'"):
        list(read_sql(sqlite_url, "SELECT id, plan FROM users", attributes=["nope"]))
    with pytest.raises(SourceError, match="the database refused the query: OperationalError: no such table"):
        list(read_sql(sqlite_url, "SELECT * FROM missing"))
    with pytest.raises(ValidationError, match="must be a database URL, an Engine or an AsyncEngine"):
        read_sql(42, "SELECT 1")
    with pytest.raises(ValidationError, match="names an async driver"):
        read_sql("postgresql+psycopg_async://u:p@127.0.0.1/x", "SELECT 1")


def test_a_missing_driver_is_a_clear_error_without_the_password() -> None:
    import importlib.util

    if importlib.util.find_spec("MySQLdb") is not None:
        pytest.skip("MySQLdb is installed: this test needs a driver that is not")
    with pytest.raises(SourceError) as caught:
        list(read_sql("mysql+mysqldb://me:hunter2-secret@127.0.0.1/crm", "SELECT 1"))
    message = str(caught.value)
    assert "the database driver for mysql+mysqldb://me:***@127.0.0.1/crm is not installed" in message
    assert "hunter2" not in str(caught.value)


def test_safe_url_masks_the_password() -> None:
    assert safe_url("postgresql+psycopg://me:s3cr%40t@db/crm") == "postgresql+psycopg://me:***@db/crm"
    assert "s3cret" not in safe_url("postgresql://me:s3cret@[bad")


# -- PostgreSQL ---------------------------------------------------------------------------------------


def test_postgresql_types(pg_url: str) -> None:
    engine = sqlalchemy.create_engine(pg_url)
    with engine.begin() as db:
        db.exec_driver_sql("DROP TABLE IF EXISTS typed")
        db.exec_driver_sql(
            "CREATE TABLE typed (id uuid, n bigint, price numeric(6,2), ok boolean, at timestamptz,"
            " local timestamp, day date, tags text[], plan text)"
        )
        db.exec_driver_sql(
            "INSERT INTO typed VALUES ('6f1c1a3e-0000-4000-8000-000000000001', 9007199254740993, 12.50, true,"
            " '2024-05-01 12:00+02', '2024-05-01 12:00', '2024-05-02', '{a,b}', 'pro'),"
            " ('6f1c1a3e-0000-4000-8000-000000000002', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)"
        )
    items = list(read_sql(engine, "SELECT * FROM typed ORDER BY id"))
    engine.dispose()
    assert items == [
        Member("6f1c1a3e-0000-4000-8000-000000000001", {
            "n": 9007199254740993, "price": 12.5, "ok": True,
            "at": datetime(2024, 5, 1, 10, tzinfo=UTC), "local": datetime(2024, 5, 1, 12, tzinfo=UTC),
            "day": datetime(2024, 5, 2, tzinfo=UTC), "tags": ["a", "b"], "plan": "pro",
        }),
        Member("6f1c1a3e-0000-4000-8000-000000000002"),
    ]
    assert isinstance(uuid.UUID(items[0].id), uuid.UUID)  # type: ignore[union-attr]


async def test_postgresql_async_engine_gives_an_async_reader(pg_url: str) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(pg_url)
    try:
        reader = read_sql(engine, "SELECT 'a' || g AS id, g AS n FROM generate_series(1, 2500) g ORDER BY g",
                          batch_size=1000)
        assert isinstance(reader, AsyncSourceReader)
        items = [item async for item in reader]
    finally:
        await engine.dispose()
    assert len(items) == 2500
    assert items[-1] == Member("a2500", {"n": 2500})
    assert reader.rows == 2500


def test_the_password_never_shows_even_when_the_server_echoes_it(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    # The server names the missing table, which is the password: the message must not.
    with pytest.raises(SourceError) as caught:
        list(read_sql(pg_url, f'SELECT * FROM "{PASSWORD}"'))
    assert "UndefinedTable" in str(caught.value)
    wrong = pg_url.replace(PASSWORD, PASSWORD + "-wrong")
    with pytest.raises(SourceError) as refused:
        list(read_sql(wrong, "SELECT 1"))
    reader = read_sql(pg_url, "SELECT 1")
    for text in (str(caught.value), str(refused.value), repr(reader), caplog.text):
        assert PASSWORD not in text
    assert "***" in repr(reader)


MEMORY_CHILD = """
import json, sys
from pathlib import Path
from batch_audiences.sources import read_sql
url, rows = sys.argv[1], int(sys.argv[2])
count = 0
for item in read_sql(url, "SELECT id, score, plan FROM big WHERE score <= :rows", params={"rows": rows}):
    count += 1
peak = next(int(line.split()[1]) for line in Path("/proc/self/status").read_text().splitlines()
            if line.startswith("VmHWM:"))
print(json.dumps({"count": count, "peak_kb": peak}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="peak RSS read from /proc (Linux)")
def test_a_query_streams_from_the_server_in_bounded_memory(pg_url: str) -> None:
    """2,000,000 rows read with the same peak RSS as 200,000 (each in a fresh process): the
    rows come from a server-side cursor, one partition at a time."""
    engine = sqlalchemy.create_engine(pg_url)
    with engine.begin() as db:
        db.exec_driver_sql("DROP TABLE IF EXISTS big")
        db.exec_driver_sql(
            "CREATE TABLE big AS SELECT 'customer-' || lpad(g::text, 9, '0') AS id, g AS score,"
            " CASE WHEN mod(g, 3) = 0 THEN 'pro' ELSE 'free' END AS plan FROM generate_series(1, 2000000) g"
        )
    engine.dispose()
    peaks = {}
    for rows in (200_000, 2_000_000):
        out = subprocess.run([sys.executable, "-c", MEMORY_CHILD, pg_url, str(rows)], cwd=ROOT,
                             capture_output=True, text=True, check=True)
        result = json.loads(out.stdout)
        assert result["count"] == rows
        peaks[rows] = result["peak_kb"]
    print(f"peak RSS, KiB: {peaks}")
    # Held whole, 1,800,000 more rows would be hundreds of MB (tuples, strings, Members).
    assert peaks[2_000_000] < peaks[200_000] * 1.25, peaks


# -- the command line ---------------------------------------------------------------------------------


def test_upload_from_a_postgresql_query(emu: Emulator, pg_url: str, clean_env: pytest.MonkeyPatch,
                                        tmp_path: Path) -> None:
    emu.add_audience("crm")
    engine = sqlalchemy.create_engine(pg_url)
    with engine.begin() as db:
        db.exec_driver_sql("DROP TABLE IF EXISTS crm")
        db.exec_driver_sql("CREATE TABLE crm (customer text, plan text, since date)")
        db.exec_driver_sql(
            "INSERT INTO crm VALUES ('c1', 'pro', '2024-01-02'), ('c2', NULL, NULL), (NULL, 'x', NULL)"
        )
    engine.dispose()
    query = "SELECT * FROM crm ORDER BY customer"
    run = cli_at(emu, "--json", "upload", "crm", "--sql", query, "--db", pg_url)
    assert run.code == 1, run.err  # the NULL ID is a bad row
    report = run.json()
    assert report["accepted"] == 2
    assert report["bad_rows"] == [{"line": 3, "error": "no ID (NULL)", "column": "customer"}]
    assert report["file"] == f"SQL query on {pg_url.replace(PASSWORD, '***')}"
    emu.settle()
    assert emu.members("crm") == {"c1": {"plan": "pro", "date(since)": "2024-01-02T00:00:00Z"}, "c2": {}}

    # The URL from the environment, the query from a file.
    query = tmp_path / "q.sql"
    query.write_text("SELECT customer FROM crm WHERE customer IS NOT NULL")
    clean_env.setenv("BATCH_AUDIENCES_DB_URL", pg_url)
    run = cli_at(emu, "--json", "upload", "other", "--sql-file", str(query), "--dry-run")
    assert run.code == 0, run.err
    assert run.json()["valid"] == 2


def test_upload_from_sql_never_prints_the_password(emu: Emulator, pg_url: str) -> None:
    emu.add_audience("crm")
    for args in (
        ["upload", "crm", "--sql", f'SELECT * FROM "{PASSWORD}"', "--db", pg_url],
        ["--verbose", "upload", "crm", "--sql", "SELECT 1", "--db", pg_url.replace(PASSWORD, PASSWORD + "x")],
        ["--json", "upload", "crm", "--sql", f"SELECT '{PASSWORD}' AS id", "--db", pg_url, "--dry-run"],
    ):
        run = cli_at(emu, *args)
        assert PASSWORD not in run.out + run.err, args
        assert run.err.strip() or run.out.strip()
    bad = cli_at(emu, "upload", "crm", "--sql", "SELECT 1")
    assert bad.code == 2
    assert "--db URL or set BATCH_AUDIENCES_DB_URL" in bad.err
    both = cli_at(emu, "upload", "crm", "ids.txt", "--sql", "SELECT 1", "--db", pg_url)
    assert both.code == 2
    assert "not both" in both.err


def test_a_query_cannot_be_checkpointed(emu: Emulator, sqlite_url: str, tmp_path: Path) -> None:
    run = cli_at(emu, "upload", "crm", "--sql", "SELECT id FROM users", "--db", sqlite_url,
                 "--checkpoint", str(tmp_path / "c.json"))
    assert run.code == 2
    assert "--checkpoint needs a file" in run.err
    assert emu.requests == []


async def test_upload_streams_an_async_query_into_the_client(pg_url: str) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    from batch_audiences import AsyncAudiencesClient

    engine = create_async_engine(pg_url)
    try:
        async with Emulator(indexing_delay=0.0) as emu:
            emu.add_audience("big")
            async with AsyncAudiencesClient(emu.api_key, emu.project_key, base_url=emu.base_url) as client:
                rows = read_sql(engine, "SELECT 'm' || g AS id, g AS rank FROM generate_series(1, 25000) g",
                                batch_size=4000)
                report = await client.upload("big", rows, mode="replace", wait=True)
            assert report.ok, report.summary()
            emu.settle()
            members = emu.members("big")
    finally:
        await engine.dispose()
    assert len(members) == 25000
    assert members["m25000"] == {"rank": 25000}
