"""No row dropped, no row stops the job: malformed CSV, oversize fields and IDs, one ID rule in
every reader, compressed files, ``max_errors``, and the line a missing extra prints."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batch_audiences import MAX_ID_LENGTH, IdAction, Member, ValidationError
from batch_audiences.sources import (
    RowError,
    SourceError,
    read_arrow,
    read_csv,
    read_manifest,
    read_ndjson,
    read_sql,
    read_text,
)
from batch_audiences.testing import Emulator
from tests.test_cli import SECRET_KEY, cli_at


@pytest.fixture
def emu(clean_env: pytest.MonkeyPatch) -> Iterator[Emulator]:
    with Emulator(indexing_delay=0.0, api_key=SECRET_KEY) as emulator:
        yield emulator


# -- CSV: an unclosed quote ------------------------------------------------------------------------


def crm_with_unclosed_quote(rows: int = 1000, bad_line: int = 5) -> str:
    lines = ["id,plan"]
    for number in range(2, rows + 2):
        lines.append('"q3,pro' if number == bad_line else f"u{number},pro")
    return "\n".join(lines) + "\n"


def test_an_unclosed_quote_is_one_bad_row_with_its_span_and_the_rest_is_read() -> None:
    reader = read_csv(io.StringIO(crm_with_unclosed_quote()), attributes=["plan"], errors="collect")
    ids = [item.id for item in reader]  # type: ignore[union-attr]
    # 1,000 data rows, line 5 is the bad one: 999 good IDs, none lost.
    assert len(ids) == 999
    assert ids[:4] == ["u2", "u3", "u4", "u6"]
    assert ids[-1] == "u1001"
    assert reader.rows == 1000
    [error] = reader.errors
    assert (error.line, error.end_line) == (5, 1001)
    assert str(error) == "lines 5-1001: a quote opened on line 5 is not closed (the record runs to line 1001)"


def test_an_unclosed_quote_raises_naming_its_line() -> None:
    with pytest.raises(SourceError, match="lines 5-1001: a quote opened on line 5") as caught:
        list(read_csv(io.StringIO(crm_with_unclosed_quote())))
    assert caught.value.line == 5


def test_an_unclosed_quote_closed_by_a_stray_quote_later_is_reported_and_recovered() -> None:
    text = 'id,plan\nu1,pro\nu2,"pro\nu3,pro\nu4,"free"\nu5,pro\n'
    reader = read_csv(io.StringIO(text), attributes=["plan"], errors="collect")
    assert [item.id for item in reader] == ["u1", "u3", "u4", "u5"]  # type: ignore[union-attr]
    assert [(e.line, e.end_line) for e in reader.errors] == [(3, 5)]


def test_a_quoted_field_over_several_lines_is_still_one_record() -> None:
    text = 'id,note\nu1,"two\nlines"\nu2,"a ""quoted""\nword"\n'
    items = list(read_csv(io.StringIO(text), attributes=["note"]))
    assert items == [Member("u1", {"note": "two\nlines"}), Member("u2", {"note": 'a "quoted"\nword'})]


def test_dry_run_reports_the_unclosed_quote_and_counts_every_other_row(emu: Emulator, tmp_path: Path) -> None:
    path = tmp_path / "crm.csv"
    path.write_text(crm_with_unclosed_quote())
    run = cli_at(emu, "--json", "upload", "crm", str(path), "--dry-run")
    assert run.code == 1
    report = run.json()
    assert (report["valid"], report["bad_rows_count"]) == (999, 1)
    assert report["bad_rows"][0]["line"] == 5


# -- CSV: a field over the csv module's limit -------------------------------------------------------


def test_a_field_over_the_csv_limit_is_a_bad_row_and_reading_goes_on() -> None:
    text = "id,note\nu1,a\nu2," + "x" * 200_000 + "\nu3,c\n"
    reader = read_csv(io.StringIO(text), errors="collect")
    assert list(reader) == ["u1", "u3"]
    [error] = reader.errors
    assert error.line == 3
    assert "longer than 131,072 characters" in error.message


def test_upload_goes_on_past_a_field_over_the_limit(emu: Emulator, tmp_path: Path) -> None:
    emu.add_audience("crm")
    path = tmp_path / "crm.csv"
    path.write_text("id,note\nu1,a\nu2," + "x" * 200_000 + "\nu3,c\n")
    run = cli_at(emu, "--json", "upload", "crm", str(path))
    assert run.code == 1  # a bad row makes the run not ok, but nothing else is lost
    report = run.json()
    assert report["accepted"] == 2
    assert [row["line"] for row in report["bad_rows"]] == [3]
    emu.settle()
    assert sorted(emu.members("crm")) == ["u1", "u3"]


# -- the ID length cap --------------------------------------------------------------------------------


def test_the_models_refuse_an_id_over_the_cap() -> None:
    Member("u" * MAX_ID_LENGTH)
    for build in (Member, IdAction, IdAction.add, IdAction.remove):
        with pytest.raises(ValidationError, match=f"at most {MAX_ID_LENGTH:,} characters, got 1,025"):
            build("u" * (MAX_ID_LENGTH + 1))


def test_an_oversize_id_is_a_bad_row_in_every_text_reader() -> None:
    big = "x" * (MAX_ID_LENGTH + 1)
    text = io.BytesIO(f"u1\n{big}\nu3\n".encode())
    reader = read_text(text, errors="collect")
    assert list(reader) == ["u1", "u3"]
    assert [(e.line, e.message) for e in reader.errors] == [(2, "ID longer than 1,024 characters (1,025)")]
    csv_reader = read_csv(io.StringIO(f"id\nu1\n{big}\n"), errors="collect")
    assert list(csv_reader) == ["u1"]
    assert csv_reader.errors[0].line == 3
    ndjson = read_ndjson(io.StringIO(f'"{big}"\n{{"id": "{big}"}}\n"u3"\n'), errors="collect")
    assert list(ndjson) == ["u3"]
    assert [e.line for e in ndjson.errors] == [1, 2]


def test_an_oversize_id_is_a_bad_item_not_a_failed_chunk(emu: Emulator, tmp_path: Path) -> None:
    emu.add_audience("crm")
    path = tmp_path / "ids.txt"
    path.write_text("u1\n" + "y" * 5_000_000 + "\nu3\n")
    run = cli_at(emu, "--json", "upload", "crm", str(path))
    report = run.json()
    assert report["accepted"] == 2
    assert report["failed_chunks"] == []
    assert [row["line"] for row in report["bad_rows"]] == [2]
    emu.settle()
    assert sorted(emu.members("crm")) == ["u1", "u3"]


# -- one ID rule ----------------------------------------------------------------------------------------


def test_ndjson_ids_are_strings_or_integers() -> None:
    data = b'{"id": 5}\n{"id": 5.0}\n{"id": true}\n{"id": "u4"}\n{"id": null}\n{"id": [1]}\n'
    reader = read_ndjson(io.BytesIO(data), errors="collect")
    assert [getattr(item, "id", item) for item in reader] == ["5", "u4"]
    assert [(e.line, e.message) for e in reader.errors] == [
        (2, "no ID: key 'id' must hold a string or an integer, got float 5.0"),
        (3, "no ID: key 'id' must hold a string or an integer, got bool true"),
        (5, "no ID: key 'id' must hold a non-empty string or an integer"),
        (6, "no ID: key 'id' must hold a string or an integer, got list [1]"),
    ]


def test_arrow_ids_are_strings_or_integers() -> None:
    pa = pytest.importorskip("pyarrow", reason="the [parquet] extra (pyarrow) is not installed")
    assert list(read_arrow(pa.table({"id": [5, 6]}))) == ["5", "6"]
    with pytest.raises(SourceError, match="the ID column 'id' holds double: an ID must be a string or an"):
        list(read_arrow(pa.table({"id": [5.0]})))
    with pytest.raises(SourceError, match="holds bool"):
        list(read_arrow(pa.table({"id": [True]})))


def test_sql_ids_are_strings_or_integers() -> None:
    sqlalchemy = pytest.importorskip("sqlalchemy", reason="the [sql] extra (SQLAlchemy) is not installed")
    engine = sqlalchemy.create_engine("sqlite://")
    query = "SELECT 5 AS id UNION ALL SELECT 5.0 UNION ALL SELECT 'u3' UNION ALL SELECT NULL"
    reader = read_sql(engine, query, errors="collect")
    assert list(reader) == ["5", "u3"]
    assert [(e.line, e.message) for e in reader.errors] == [
        (2, "an ID must be a string or an integer, got float 5.0"), (4, "no ID (NULL)"),
    ]


# -- compressed files ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("suffix", "compress"), [
    (".gz", gzip.compress), (".bz2", bz2.compress), (".xz", lzma.compress), (".zst", None),
])
def test_compressed_files_by_extension(tmp_path: Path, suffix: str, compress: object) -> None:
    if compress is None:
        zstandard = pytest.importorskip("zstandard", reason="zstandard is not installed")
        compress = zstandard.ZstdCompressor().compress
    assert callable(compress)
    csv_text = "id,score\nu1,3\nu2,x\nu3,\n"
    (tmp_path / f"crm.csv{suffix}").write_bytes(compress(csv_text.encode()))
    reader = read_csv(tmp_path / f"crm.csv{suffix}", attributes={"score": int}, errors="collect")
    assert list(reader) == [Member("u1", {"score": 3}), Member("u3")]
    assert [str(e) for e in reader.errors] == ["line 3: column 'score': not an integer: 'x'"]
    (tmp_path / f"ids.ndjson{suffix}").write_bytes(compress(b'"a"\n{"id": 2}\n'))
    assert [getattr(i, "id", i) for i in read_ndjson(tmp_path / f"ids.ndjson{suffix}")] == ["a", "2"]
    (tmp_path / f"ids.txt{suffix}").write_bytes(compress(b"a\nb\n"))
    assert list(read_text(str(tmp_path / f"ids.txt{suffix}"))) == ["a", "b"]


def test_upload_reads_a_gzipped_csv_by_its_extension(emu: Emulator, tmp_path: Path) -> None:
    emu.add_audience("crm")
    path = tmp_path / "crm.csv.gz"
    path.write_bytes(gzip.compress(b"customer,plan\nc1,pro\nc2,free\n"))
    run = cli_at(emu, "--json", "upload", "crm", str(path), "--attr", "plan")
    assert run.code == 0, run.err
    emu.settle()
    assert emu.members("crm") == {"c1": {"plan": "pro"}, "c2": {"plan": "free"}}


# -- max_errors, manifests ------------------------------------------------------------------------------


def test_max_errors_stops_at_the_bad_row_after_the_limit() -> None:
    text = "id,n\n" + "".join(f"u{i},{'x' if i % 2 else i}\n" for i in range(10))
    reader = read_csv(io.StringIO(text), attributes={"n": int}, errors="collect", max_errors=2)
    seen = []
    with pytest.raises(SourceError, match="more than 2 bad rows") as caught:
        seen.extend(reader)
    assert seen == [Member("u0", {"n": 0}), Member("u2", {"n": 2}), Member("u4", {"n": 4})]
    assert caught.value.line == 7  # u5, the third bad row
    assert [e.line for e in reader.errors] == [3, 5, 7]
    with pytest.raises(ValidationError, match="max_errors"):
        read_text(io.BytesIO(b""), max_errors=-1)


def test_read_manifest_yields_new_audiences_and_row_errors(tmp_path: Path) -> None:
    path = tmp_path / "m.ndjson"
    path.write_text('{"name": "a", "display_name": "A"}\n\n{"name": "bad name"}\nnope\n{"name": "b"}\n')
    reader = read_manifest(path, errors="collect")
    assert [(a.name, a.display_name) for a in reader] == [("a", "A"), ("b", None)]
    assert [(e.line, type(e)) for e in reader.errors] == [(3, RowError), (4, RowError)]
    with pytest.raises(SourceError, match="no 'name' column"):
        list(read_manifest(io.StringIO("title\nx\n")))


# -- missing extras ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("hidden", "call", "extra"), [
    ("pyarrow", "read_parquet('x.parquet')", "parquet"),
    ("pyarrow", "read_arrow([])", "parquet"),
    ("sqlalchemy", "read_sql('sqlite://', 'SELECT 1')", "sql"),
])
def test_a_missing_extra_is_one_line_naming_it(hidden: str, call: str, extra: str) -> None:
    script = (
        f"import sys; sys.modules[{hidden!r}] = None\n"
        "from batch_audiences.sources import *\n"
        "from batch_audiences.sources import MissingExtraError\n"
        f"try:\n    {call}\nexcept MissingExtraError as error:\n    print(error)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith(f"pip install 'batch-audiences[{extra}]'")
    assert len(out.stdout.strip().splitlines()) == 1


@given(
    ids=st.lists(st.from_regex(r"[a-z0-9]{1,8}", fullmatch=True), min_size=2, max_size=60, unique=True),
    data=st.data(),
)
@settings(max_examples=150, deadline=None)
def test_property_one_unclosed_quote_costs_one_row(ids: list[str], data: st.DataObject) -> None:
    """Wherever one quote is left open, every other row is read and the bad one is reported."""
    bad = data.draw(st.integers(0, len(ids) - 1))
    quoted = data.draw(st.booleans())  # open the quote in the ID column or in the last one
    lines = ["id,plan"]
    for index, custom_id in enumerate(ids):
        if index == bad:
            lines.append(f'"{custom_id},pro' if quoted else f'{custom_id},"pro')
        else:
            lines.append(f"{custom_id},pro")
    reader = read_csv(io.StringIO("\n".join(lines) + "\n"), errors="collect")
    assert list(reader) == [custom_id for index, custom_id in enumerate(ids) if index != bad]
    [error] = reader.errors
    assert (error.line, error.end_line) == (bad + 2, len(ids) + 1)


async def test_upload_of_plain_ids_reports_an_oversize_one_as_a_bad_item() -> None:
    from batch_audiences import AsyncAudiencesClient

    async with Emulator(indexing_delay=0.0) as emulator:
        emulator.add_audience("crm")
        async with AsyncAudiencesClient(emulator.api_key, emulator.project_key,
                                        base_url=emulator.base_url) as client:
            report = await client.upload("crm", ["u1", "z" * (MAX_ID_LENGTH + 1), "u3"])
        assert report.items_accepted == 2
        assert report.failed_chunks == ()
        assert [(item.position, "1,024 characters" in str(item.error)) for item in report.failed_items] == [
            (1, True)
        ]
        emulator.settle()
        assert sorted(emulator.members("crm")) == ["u1", "u3"]
