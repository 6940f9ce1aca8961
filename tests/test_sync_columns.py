"""The batch path by which ``sync`` reads the SDK's own CSV reader (IDs and checked attributes in
columns, no ``Member`` per row) against the item path every other source takes: the same items,
the same bad rows at the same lines, the same duplicates at the same positions, the same plan and
the same audience, on real files, a real SQLite store and the emulator."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from batch_audiences import AsyncAudiencesClient, Member, SyncReport
from batch_audiences._sync._plan import columns_of
from batch_audiences.sources import SourceError, SourceReader, read_csv
from batch_audiences.testing import Emulator

LONG_ID = "x" * 5000

# Every kind of row the reader judges: good ones, spaces around an ID, empty and oversize IDs,
# a wrong width, values that do not convert or pass no check (an integer past 64 bits, an
# infinity), empty cells, a blank line, a quoted field over two lines, a quote never closed,
# bytes that are not UTF-8, and duplicate IDs.
ROWS = (
    "id,plan,score,ratio,vip\n"
    "u1,pro,1,0.5,yes\n"
    "  u2  ,free,2,1.5,no\n"
    ",pro,3,0.1,yes\n"
    f"{LONG_ID},pro,4,0.1,no\n"
    "u5,pro,5\n"
    "u6,pro,six,0.1,no\n"
    f"u7,pro,{2**64},0.1,no\n"
    "u8,pro,8,inf,no\n"
    "u9,pro,9,0.1,maybe\n"
    "u10,,,,\n"
    "u11,,11,,\n"
    "\n"
    'u12,"two\nlines",12,0.2,yes\n'
    "u1,team,13,0.3,no\n"
    'u14,"open,14,0.4,no\n'
    "u15,pro,15,0.5,no\n"
    "u16,pro,16,0.6,yes\n"
    "u2,pro,17,0.7,yes\n"
    "u18,pro,-18,-0.8,t\n"
)
TYPED = ["plan", "score:int", "ratio:float", "vip:bool"]


def write(tmp_path: Path, text: str, name: str = "crm.csv", tail: bytes = b"") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode() + tail)
    return path


def batch_items(reader: SourceReader[Any], size: int) -> list[Any]:
    """The items the batch path stands for, rebuilt: IDs, or ``Member``s of its columns."""
    batches = reader._member_batches(size)
    assert batches is not None
    items: list[Any] = []
    for ids, attributes, _ in batches:
        assert 0 < len(ids) <= size
        if attributes is None:
            items += ids
        else:
            assert len(attributes) == len(ids)
            items += [Member(custom_id, values) for custom_id, values in zip(ids, attributes, strict=True)]
    return items


def tally(reader: SourceReader[Any]) -> tuple[Any, ...]:
    messages = [str(error) for error in reader.errors]
    return messages, reader.errors, reader.rows, reader.error_count, reader.line


CASES = {
    "typed": (ROWS, TYPED, b""),
    "ids only": (ROWS, None, b""),
    "strings": (ROWS, ["plan"], b""),
    "not utf-8 at the end": (ROWS, TYPED, b"u19,\xff\xfe,19,0.9,no\nu20,pro,20,1.0,no\n"),
    "dates and urls": (
        "id,when,site,n\n"
        "a,2024-05-01,https://example.com/a,1\n"
        "b,2024-05-01T10:00:00+02:00,,2\n"
        "c,not a date,https://example.com/c,3\n"
        "d,2024-05-02,ftp://nope,4\n"
        "e,,,\n"
        "a,2024-06-01,https://example.com/z,6\n",
        ["when:date", "site:url", "n:int"], b"",
    ),
    "a column written as a typed key": (
        "id,date(when),plain\nk1,2024-05-01T00:00:00Z,x\nk2,,y\nk3\nk1,soon,z\n",
        ["date(when)", "plain"], b"",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("size", [1, 3, 10_000])
def test_the_batch_path_gives_the_items_and_bad_rows_of_iterating(
    tmp_path: Path, case: str, size: int
) -> None:
    text, attributes, tail = CASES[case]
    path = write(tmp_path, text, tail=tail)
    reader = read_csv(path, attributes=attributes, errors="collect")
    expected = list(reader)
    expected_tally = tally(reader)
    assert expected  # the case has good rows
    assert expected_tally[0]  # and bad ones
    got = batch_items(reader, size)
    assert got == expected
    assert [type(item) for item in got] == [type(item) for item in expected]
    assert tally(reader) == expected_tally
    # The flag that lets sync skip the per-value type test: no datetime, no Url anywhere.
    batches = reader._member_batches(size)
    assert batches is not None
    flags = {plain for _, _, plain in batches}
    assert flags == {case != "dates and urls"}


@pytest.mark.parametrize("max_errors", [None, 0, 2, 5])
def test_the_batch_path_stops_where_iterating_stops(tmp_path: Path, max_errors: int | None) -> None:
    path = write(tmp_path, ROWS)
    errors = "raise" if max_errors is None else "collect"
    reader = read_csv(path, attributes=TYPED, errors=errors, max_errors=max_errors)
    with pytest.raises(SourceError) as iterating:
        list(reader)
    seen = tally(reader)
    with pytest.raises(SourceError) as batching:
        batch_items(reader, 2)
    assert str(batching.value) == str(iterating.value)
    assert batching.value.line == iterating.value.line
    assert tally(reader)[:4] == seen[:4]


def test_only_the_sdk_readers_without_an_action_column_have_a_batch_path(tmp_path: Path) -> None:
    path = write(tmp_path, "id,plan,action\nu1,pro,add\n")
    reader = read_csv(path, attributes=["plan"])
    assert columns_of(reader) is not None
    assert columns_of(iter(reader)) is None
    assert columns_of([Member("u1")]) is None
    assert columns_of(read_csv(path, attributes=["plan"], action_column="action")) is None


# -- through sync: the same plan, report and audience on either path -----------------------------


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(indexing_delay=0.005) as emulator:
        yield emulator


@pytest.fixture
async def client(emu: Emulator) -> AsyncIterator[AsyncAudiencesClient]:
    async with AsyncAudiencesClient(emu.api_key, emu.project_key, base_url=emu.base_url) as c:
        yield c


def item_path(reader: SourceReader[Any]) -> Iterator[Any]:
    """The reader's items one by one: a plain generator has no batch path."""
    yield from reader


def outcome(report: SyncReport) -> tuple[Any, ...]:
    failed = [(f.position, f.item, type(f.error), str(f.error)) for f in report.failed_items]
    return (report.mode, report.full_reason, report.added, report.removed, report.changed,
            report.unchanged, report.items_read, report.items_failed, failed, report.ok)


@pytest.mark.parametrize("attributes", [TYPED, None, ["when:date", "plan"]])
async def test_sync_plans_and_reports_alike_on_either_path(
    tmp_path: Path, client: AsyncAudiencesClient, emu: Emulator, attributes: list[str] | None
) -> None:
    dated = attributes is not None and "when:date" in attributes
    if dated:
        header = "id,when,plan\n"
        first = header + "".join(f"d{i},2024-05-{1 + i % 28:02d},pro\n" for i in range(30))
        second = header + "".join(
            f"d{i},2024-06-{1 + i % 28:02d},{'team' if i % 4 else ''}\n" for i in range(3, 40)
        ) + "d5,2024-01-01,pro\n,2024-01-01,pro\nd7,soon,pro\n"
    else:
        first = ROWS
        second = ROWS.replace("u15,pro,15", "u15,team,15").replace("u16,pro,16,0.6,yes", "u16,pro,,,") + (
            "u30,free,30,3.0,no\nu1,pro,1,0.5,yes\n"
        )
    runs: dict[str, list[tuple[Any, ...]]] = {}
    for path_name in ("batch", "items"):
        runs[path_name] = []
        state = tmp_path / f"{path_name}.sqlite3"
        for number, text in enumerate((first, second)):
            csv_path = write(tmp_path, text, f"{path_name}-{number}.csv")
            reader = read_csv(csv_path, attributes=attributes, errors="collect")
            source: Any = reader if path_name == "batch" else item_path(reader)
            report = await client.sync(f"crm-{path_name}", source, state=state, chunk_size=7)
            emu.settle()
            runs[path_name].append((outcome(report), [str(e) for e in reader.errors],
                                    emu.members(f"crm-{path_name}")))
    assert runs["batch"] == runs["items"]
    # The runs did something worth comparing: a full sync, then a real difference, and
    # duplicates and bad rows on the way.
    first_report, second_report = runs["batch"][0][0], runs["batch"][1][0]
    assert (first_report[0], second_report[0]) == ("full", "incremental")
    assert sum(second_report[2:5]) > 0
    assert first_report[7] + second_report[7] > 0
    assert runs["batch"][1][1]


async def test_a_bad_row_raised_stops_sync_alike_on_either_path(
    tmp_path: Path, client: AsyncAudiencesClient, emu: Emulator
) -> None:
    path = write(tmp_path, ROWS)
    messages = []
    for path_name in ("batch", "items"):
        reader = read_csv(path, attributes=TYPED)
        source: Any = reader if path_name == "batch" else item_path(reader)
        with pytest.raises(SourceError) as raised:
            await client.sync(f"crm-{path_name}", source, state=tmp_path / f"{path_name}.sqlite3")
        messages.append(str(raised.value))
    assert messages[0] == messages[1] == "line 4: empty ID in column 'id'"
    assert not [r for r in emu.requests if r.route in ("update", "replace")]


async def test_duplicates_across_the_store_statements_are_found_at_their_positions(
    tmp_path: Path, client: AsyncAudiencesClient, emu: Emulator
) -> None:
    # 2,500 rows: the store inserts them by statements of many rows, so duplicates fall inside
    # one statement, across two, and against rows of an earlier one.
    ids = [f"c{i}" for i in range(2500)]
    repeats = {5: "c4", 999: "c998", 1000: "c2", 1001: "c1000", 2400: "c1999", 2499: "c2499x"}
    for position, custom_id in repeats.items():
        ids[position] = custom_id
    path = write(tmp_path, "id,n\n" + "".join(f"{custom_id},{i}\n" for i, custom_id in enumerate(ids)))
    report = await client.sync("crm", read_csv(path, attributes=["n:int"]), state=tmp_path / "s.sqlite3")
    emu.settle()
    duplicates = [position for position, custom_id in repeats.items() if custom_id in ids[:position]]
    assert duplicates == [5, 999, 1000, 2400]
    assert [f.position for f in report.failed_items] == duplicates
    assert [f.item for f in report.failed_items] == [Member(ids[p], {"n": p}) for p in duplicates]
    assert report.added == len(set(ids))
    assert len(emu.members("crm")) == len(set(ids))
