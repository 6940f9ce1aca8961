"""``read_arrow`` and ``read_parquet``: real Parquet files written by pyarrow (row groups, nulls,
timestamps with and without a zone, lists), pandas and polars DataFrames, a DuckDB result."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from batch_audiences import Member, ValidationError
from batch_audiences.sources import RowError, SourceError, read_arrow, read_parquet
from batch_audiences.testing import Emulator
from tests.test_cli import SECRET_KEY, cli_at

pa = pytest.importorskip("pyarrow", reason="the [parquet] extra (pyarrow) is not installed")
pq = pytest.importorskip("pyarrow.parquet", reason="the [parquet] extra (pyarrow) is not installed")

UTC = timezone.utc


@pytest.fixture
def emu(clean_env: pytest.MonkeyPatch) -> Iterator[Emulator]:
    with Emulator(indexing_delay=0.0, api_key=SECRET_KEY) as emulator:
        yield emulator


def users_table(count: int = 10) -> Any:
    """Every kind of column, with nulls on some rows."""
    base = datetime(2024, 5, 1, 10, 30)
    return pa.table({
        "user_id": [f"u{n}" for n in range(count)],
        "plan": [None if n % 3 == 0 else ("pro" if n % 2 else "free") for n in range(count)],
        "score": pa.array([None if n == 4 else n * 10 for n in range(count)], pa.int32()),
        "ratio": [n / 4 for n in range(count)],
        "active": [n % 2 == 0 for n in range(count)],
        "signup": pa.array([base + timedelta(days=n) for n in range(count)], pa.timestamp("ns")),
        "seen": pa.array([None if n == 1 else datetime(2024, 6, 1, 12, tzinfo=UTC) + timedelta(hours=n)
                          for n in range(count)], pa.timestamp("us", tz="Europe/Paris")),
        "tags": [["a", "b"] if n % 2 else None for n in range(count)],
    })


def expected_member(n: int) -> Member:
    attributes: dict[str, Any] = {
        "ratio": n / 4, "active": n % 2 == 0,
        "signup": datetime(2024, 5, 1, 10, 30, tzinfo=UTC) + timedelta(days=n),
    }
    if n % 3:
        attributes["plan"] = "pro" if n % 2 else "free"
    if n != 4:
        attributes["score"] = n * 10
    if n != 1:
        attributes["seen"] = datetime(2024, 6, 1, 12, tzinfo=UTC) + timedelta(hours=n)
    if n % 2:
        attributes["tags"] = ["a", "b"]
    return Member(f"u{n}", attributes)


def test_read_arrow_types_every_column_from_the_schema() -> None:
    items = list(read_arrow(users_table(), id_column="user_id"))
    assert items == [expected_member(n) for n in range(10)]
    # A timestamp without a zone is read as UTC; one with a zone keeps its instant.
    assert items[0].attributes["signup"] == datetime(2024, 5, 1, 10, 30, tzinfo=UTC)  # type: ignore[union-attr,index]
    assert items[2].attributes["seen"].utcoffset() == timedelta(0)  # type: ignore[union-attr,index]


def test_parquet_file_with_several_row_groups(tmp_path: Path) -> None:
    path = tmp_path / "users.parquet"
    pq.write_table(users_table(1000), path, row_group_size=128)
    assert pq.ParquetFile(path).metadata.num_row_groups == 8
    reader = read_parquet(path, id_column="user_id", batch_size=100)
    items = list(reader)
    assert items == [expected_member(n) for n in range(1000)]
    assert reader.rows == 1000
    # Twice: each iteration reads the file again.
    assert len(list(reader)) == 1000


def test_parquet_column_projection_reads_only_the_chosen_columns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "users.parquet"
    pq.write_table(users_table(20), path, row_group_size=5)
    asked: list[Any] = []
    original = pq.ParquetFile.iter_batches

    def spy(self: Any, *args: Any, **kwargs: Any) -> Any:
        asked.append(kwargs.get("columns"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", spy)
    items = list(read_parquet(path, id_column="user_id", attributes=["score", "plan:str"]))
    assert asked == [["user_id", "score", "plan"]]
    assert items[2] == Member("u2", {"score": 20, "plan": "free"})


def test_chosen_types_convert_value_by_value_and_report_each_bad_value() -> None:
    table = pa.table({
        "id": ["a", "b", "c", "d"],
        "when": ["2024-05-01", "not a date", None, "2024-05-02T08:00:00+02:00"],
        "n": ["1", "2", "x", ""],
        "site": ["https://e.com", "ftp://x", None, None],
        "flag": [1, 0, 1, None],
    })
    reader = read_arrow(table, attributes={"when": "date", "n": "int", "site": "url", "flag": "str"},
                        errors="collect")
    items = list(reader)
    assert [item.id for item in items] == ["a", "d"]  # type: ignore[union-attr]
    assert items[0].attributes["when"] == datetime(2024, 5, 1, tzinfo=UTC)  # type: ignore[union-attr,index]
    assert items[0].attributes["flag"] == "1"  # type: ignore[union-attr,index]
    assert items[1].attributes == {"when": datetime(2024, 5, 2, 6, tzinfo=UTC)}  # type: ignore[union-attr]
    where = [(e.line, e.batch, e.offset, e.column) for e in reader.errors]
    assert where == [(2, 0, 1, "when"), (3, 0, 2, "n")]
    assert str(reader.errors[0]) == (
        "row 2 (batch 0, offset 1): column 'when': not an ISO 8601 date: 'not a date'"
    )


def test_bad_rows_have_their_batch_and_offset_and_raise_by_default() -> None:
    batches = [
        pa.record_batch({"id": ["a", "b"], "x": [1.0, 2.0]}),
        pa.record_batch({"id": ["c", None], "x": [float("nan"), 4.0]}),
        pa.record_batch({"id": [" ", "f"], "x": [5.0, None]}),
    ]
    reader = read_arrow(iter(batches), errors="collect")
    assert [getattr(item, "id", None) for item in reader] == ["a", "b", "f"]
    assert [(e.line, e.batch, e.offset) for e in reader.errors] == [(3, 1, 0), (4, 1, 1), (5, 2, 0)]
    assert reader.errors[1] == RowError(4, "no ID (null)", "id", batch=1, offset=1)
    assert "finite" in reader.errors[0].message
    with pytest.raises(SourceError, match=r"row 3 \(batch 1, offset 0\)"):
        list(read_arrow(batches))


def test_only_an_id_column_gives_plain_ids_and_integers_become_strings() -> None:
    assert list(read_arrow(pa.table({"n": pa.array([1, 2], pa.int64())}))) == ["1", "2"]
    assert list(read_arrow(pa.table({"id": ["a"], "x": [1]}), attributes=[])) == ["a"]


def test_dictionary_and_decimal_columns() -> None:
    from decimal import Decimal

    table = pa.table({
        "id": pa.array(["a", "b"]).dictionary_encode(),
        "plan": pa.array(["pro", None]).dictionary_encode(),
        "price": pa.array([Decimal("1.50"), Decimal("2.25")], pa.decimal128(5, 2)),
        "day": pa.array([date(2024, 1, 2), None], pa.date32()),
    })
    assert list(read_arrow(table)) == [
        Member("a", {"plan": "pro", "price": 1.5, "day": datetime(2024, 1, 2, tzinfo=UTC)}),
        Member("b", {"price": 2.25}),
    ]


def test_schema_problems_raise_whatever_errors_says() -> None:
    table = pa.table({"id": ["a"], "blob": [b"x"], "nested": [[1]]})
    with pytest.raises(SourceError, match="no column 'nope'; the data has 'id', 'blob', 'nested'"):
        list(read_arrow(table, attributes=["nope"], errors="collect"))
    with pytest.raises(SourceError, match="column 'blob' holds binary"):
        list(read_arrow(table, errors="collect"))
    with pytest.raises(SourceError, match="column 'nested' holds list<item: int64>"):
        list(read_arrow(table, attributes=["nested"]))
    with pytest.raises(ValidationError, match="must be Arrow data"):
        read_arrow(42)


def test_pandas_dataframe() -> None:
    pd = pytest.importorskip("pandas", reason="pandas is not installed")
    frame = pd.DataFrame({
        "customer": ["c1", "c2", "c3"],
        "score": [1.5, None, 3.0],  # NaN in pandas: no value
        "plan": pd.Categorical(["pro", "free", None]),
        "since": pd.to_datetime(["2024-01-01 00:00", None, "2024-03-01 12:00"]).tz_localize("UTC"),
    })
    assert list(read_arrow(frame, id_column="customer")) == [
        Member("c1", {"score": 1.5, "plan": "pro", "since": datetime(2024, 1, 1, tzinfo=UTC)}),
        Member("c2", {"plan": "free"}),
        Member("c3", {"score": 3.0, "since": datetime(2024, 3, 1, 12, tzinfo=UTC)}),
    ]


def test_polars_dataframe() -> None:
    pl = pytest.importorskip("polars", reason="polars is not installed")
    frame = pl.DataFrame({
        "id": [1, 2],
        "tags": [["x", "y"], None],
        "day": [date(2024, 2, 3), date(2024, 2, 4)],
        "vip": [True, None],
    })
    assert list(read_arrow(frame)) == [
        Member("1", {"tags": ["x", "y"], "day": datetime(2024, 2, 3, tzinfo=UTC), "vip": True}),
        Member("2", {"day": datetime(2024, 2, 4, tzinfo=UTC)}),
    ]


def test_duckdb_query_result(tmp_path: Path) -> None:
    duckdb = pytest.importorskip("duckdb", reason="duckdb is not installed")
    path = tmp_path / "events.parquet"
    pq.write_table(pa.table({"user": ["a", "b", "a", "c"], "amount": [1, 2, 3, 4]}), path)
    connection = duckdb.connect()
    result = connection.sql(
        f"SELECT user, sum(amount)::BIGINT AS total FROM '{path}' GROUP BY user ORDER BY user"
    )
    assert list(read_arrow(result)) == [
        Member("a", {"total": 4}), Member("b", {"total": 2}), Member("c", {"total": 4}),
    ]


def test_upload_a_parquet_file_from_the_cli(emu: Emulator, tmp_path: Path) -> None:
    emu.add_audience("crm")
    path = tmp_path / "users.parquet"
    pq.write_table(users_table(30), path, row_group_size=7)
    run = cli_at(emu, "--json", "upload", "crm", str(path), "--id-column", "user_id",
                 "--attr", "score", "--attr", "plan", "--chunk-size", "8")
    assert run.code == 0, run.err
    assert run.json()["accepted"] == 30
    emu.settle()
    members = emu.members("crm")
    assert len(members) == 30
    assert members["u5"] == {"score": 50, "plan": "pro"}
    assert members["u4"] == {"plan": "free"}  # a null score: no attribute


def test_cli_refuses_options_a_parquet_file_cannot_serve(emu: Emulator, tmp_path: Path) -> None:
    path = tmp_path / "users.parquet"
    pq.write_table(users_table(3), path)
    run = cli_at(emu, "upload", "crm", str(path), "--mode", "update")
    assert run.code == 2
    assert "--mode update needs an action per row" in run.err
    missing = cli_at(emu, "upload", "crm", str(tmp_path / "none.parquet"))
    assert missing.code == 2
    assert "none.parquet" in missing.err
    assert emu.requests == []
