"""``batch_audiences.sources``: CSV, NDJSON and text readers; typed attributes; bad rows with
their line numbers; laziness; and an upload straight from a file."""

from __future__ import annotations

import io
import itertools
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from batch_audiences import IdAction, Member, Url, ValidationError
from batch_audiences.sources import RowError, SourceError, read_csv, read_ndjson, read_text
from batch_audiences.testing import Emulator


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8")
    else:
        path.write_bytes(text)
    return path


# -- CSV -----------------------------------------------------------------------------------------


CRM = """\
customer,plan,score,ratio,active,signup,avatar,note
u1,pro,3,0.5,yes,2024-05-01T10:00:00Z,https://example.com/u1.png,hello
u2,free,,1e3,false,2024-05-02,,
"u3","pro, annual",-7,2,1,2024-05-03T12:00:00+02:00,http://example.com/3,"multi
line"
"""


def test_csv_with_an_id_column_and_typed_attributes(tmp_path: Path) -> None:
    path = write(tmp_path, "crm.csv", CRM)
    reader = read_csv(path, id_column="customer", attributes={
        "plan": "str", "score": "int", "ratio": float, "active": "bool", "signup": "date", "avatar": "url",
        "note": str,
    })
    items = list(reader)
    assert reader.errors == []
    assert reader.rows == 3
    assert items == [
        Member("u1", {
            "plan": "pro", "score": 3, "ratio": 0.5, "active": True,
            "signup": datetime(2024, 5, 1, 10, tzinfo=timezone.utc),
            "avatar": Url("https://example.com/u1.png"), "note": "hello",
        }),
        # Empty cells leave the attribute out.
        Member("u2", {"plan": "free", "ratio": 1000.0, "active": False,
                      "signup": datetime(2024, 5, 2, tzinfo=timezone.utc)}),
        Member("u3", {
            "plan": "pro, annual", "score": -7, "ratio": 2.0, "active": True,
            "signup": datetime(2024, 5, 3, 10, tzinfo=timezone.utc),
            "avatar": Url("http://example.com/3"), "note": "multi\nline",
        }),
    ]
    assert isinstance(items[0], Member)
    assert items[0].attributes is not None
    assert items[0].attributes["score"] == 3
    assert type(items[0].attributes["score"]) is int


def test_csv_without_attributes_yields_plain_ids_from_the_first_column(tmp_path: Path) -> None:
    path = write(tmp_path, "ids.csv", "\ufeffid,other\n a1 ,x\n\nb2,y\n")
    assert list(read_csv(path)) == ["a1", "b2"]


def test_csv_attribute_specs_as_command_line_strings_and_a_delimiter(tmp_path: Path) -> None:
    path = write(tmp_path, "semi.csv", "id;score;tier\nu1;4;gold\n")
    items = list(read_csv(path, delimiter=";", attributes=["score:int", "tier"]))
    assert items == [Member("u1", {"score": 4, "tier": "gold"})]


def test_csv_bad_rows_are_collected_with_their_line_numbers(tmp_path: Path) -> None:
    text = (
        "id,score,active,signup,avatar\n"   # 1
        "u1,1,true,2024-01-01,\n"           # 2 good
        ",2,true,,\n"                       # 3 empty ID
        "u3,three,true,,\n"                 # 4 bad int
        "u4,4,maybe,,\n"                    # 5 bad bool
        "u5,5,true,yesterday,\n"            # 6 bad date
        "u6,6,true,,ftp://x\n"              # 7 bad URL
        "u7,7\n"                            # 8 wrong field count
        '"u8\n'                             # 9-10 a quoted field spanning lines
        'x",8,true,,\n'
        "u9,9,false,,\n"                    # 11 good
    )
    reader = read_csv(write(tmp_path, "bad.csv", text), errors="collect", attributes={
        "score": "int", "active": "bool", "signup": "date", "avatar": "url",
    })
    items = list(reader)
    assert [item.id for item in items] == ["u1", "u8\nx", "u9"]  # type: ignore[union-attr]
    assert [(error.line, error.column) for error in reader.errors] == [
        (3, "id"), (4, "score"), (5, "active"), (6, "signup"), (7, "avatar"), (8, None),
    ]
    assert str(reader.errors[1]) == "line 4: column 'score': not an integer: 'three'"
    assert "expected 5 fields, got 2" in reader.errors[5].message
    assert reader.rows == 9  # records, not lines


def test_csv_raises_at_the_first_bad_row_by_default(tmp_path: Path) -> None:
    reader = read_csv(write(tmp_path, "bad.csv", "id,n\nu1,1\nu2,x\nu3,3\n"), attributes={"n": "int"})
    seen: list[object] = []
    with pytest.raises(SourceError) as caught:
        seen.extend(reader)
    assert caught.value.line == 3
    assert isinstance(caught.value, ValidationError)
    assert caught.value.row_error == RowError(3, "column 'n': not an integer: 'x'", "n")
    assert seen == [Member("u1", {"n": 1})]


def test_csv_file_level_problems_raise_in_either_mode(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no column 'missing'"):
        list(read_csv(write(tmp_path, "a.csv", "id,x\nu1,1\n"), attributes=["missing"], errors="collect"))
    with pytest.raises(SourceError, match="no column 'user'"):
        list(read_csv(write(tmp_path, "b.csv", "id\nu1\n"), id_column="user", errors="collect"))
    with pytest.raises(SourceError, match="empty"):
        list(read_csv(write(tmp_path, "c.csv", ""), errors="collect"))


def test_csv_action_column_gives_id_actions(tmp_path: Path) -> None:
    text = "id,action,plan\nu1,add,pro\nu2,REMOVE,pro\nu3,delete,\n"
    reader = read_csv(write(tmp_path, "u.csv", text), action_column="action", attributes=["plan"],
                      errors="collect")
    assert list(reader) == [IdAction.add("u1", {"plan": "pro"}), IdAction.remove("u2")]
    assert [(error.line, error.column) for error in reader.errors] == [(4, "action")]


def test_csv_undecodable_bytes_are_a_bad_row(tmp_path: Path) -> None:
    path = write(tmp_path, "latin.csv", b"id\nu1\nu\xe92\nu3\n")
    reader = read_csv(path, errors="collect")
    assert list(reader) == ["u1", "u3"]
    assert [error.line for error in reader.errors] == [3]
    assert list(read_csv(path, encoding="latin-1")) == ["u1", "u\xe92", "u3"]


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"attributes": {"x": "decimal"}}, "attributes['x']"),
        ({"attributes": {f"c{n}": "str" for n in range(16)}}, "attributes"),
        ({"attributes": "plan"}, "attributes"),
        ({"attributes": ["a", "a:int"]}, "attributes"),
        ({"delimiter": ";;"}, "delimiter"),
        ({"errors": "ignore"}, "errors"),
        ({"encoding": "no-such-codec"}, "encoding"),
        ({"id_column": ""}, "id_column"),
    ],
)
def test_bad_reader_arguments_raise_at_once(tmp_path: Path, arguments: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        read_csv(tmp_path / "never-opened.csv", **arguments)
    assert caught.value.field == field


# -- NDJSON and text ---------------------------------------------------------------------------------


def test_ndjson_lines(tmp_path: Path) -> None:
    text = "\n".join([
        '"u1"',
        '{"id": "u2", "attributes": {"plan": "pro", "date(signup)": "2024-01-01T00:00:00Z"}, "x": 1}',
        '{"id": 3, "action": "remove"}',
        "",
        '{"id": "u4", "action": "add", "attributes": {"tags": ["a", "b"]}}',
    ])
    assert list(read_ndjson(write(tmp_path, "a.ndjson", text))) == [
        "u1",
        Member("u2", {"plan": "pro", "date(signup)": "2024-01-01T00:00:00Z"}),
        IdAction.remove("3"),
        IdAction.add("u4", {"tags": ["a", "b"]}),
    ]


def test_ndjson_typed_top_level_keys(tmp_path: Path) -> None:
    text = '{"id": "u1", "score": 4, "since": "2024-02-03", "site": "https://a.example", "skip": 1}\n'
    reader = read_ndjson(write(tmp_path, "b.ndjson", text),
                         attributes={"score": "int", "since": "date", "site": "url", "absent": "str"})
    assert list(reader) == [Member("u1", {
        "score": 4, "since": datetime(2024, 2, 3, tzinfo=timezone.utc), "site": Url("https://a.example"),
    })]


def test_ndjson_bad_lines_are_collected_with_their_line_numbers(tmp_path: Path) -> None:
    text = "\n".join([
        '"good"',                                   # 1
        "{not json",                                # 2
        "[1, 2]",                                   # 3
        '{"name": "no id"}',                        # 4
        '{"id": "u5", "action": "upsert"}',         # 5
        '{"id": "u6", "attributes": [1]}',          # 6
        '{"id": "u7", "action": "remove", "attributes": {"a": 1}}',  # 7
        '""',                                       # 8
        '{"id": "u9"}',                             # 9
    ])
    reader = read_ndjson(write(tmp_path, "c.ndjson", text), errors="collect")
    assert list(reader) == ["good", Member("u9")]
    assert [error.line for error in reader.errors] == [2, 3, 4, 5, 6, 7, 8]
    assert "not valid JSON" in reader.errors[0].message


def test_text_one_id_per_line(tmp_path: Path) -> None:
    path = write(tmp_path, "ids.txt", b"\xef\xbb\xbfu1\r\n\n  u2  \nbad\xff\nu4")
    reader = read_text(path, errors="collect")
    assert list(reader) == ["u1", "u2", "u4"]
    assert reader.errors == [RowError(4, "not valid utf-8")]
    with pytest.raises(SourceError, match="line 4"):
        list(read_text(path))


def test_readers_take_open_files_too() -> None:
    assert list(read_text(io.StringIO("a\nb\n"))) == ["a", "b"]
    assert list(read_text(io.BytesIO(b"a\nb\n"))) == ["a", "b"]
    assert list(read_csv(io.StringIO("id\nx\n"))) == ["x"]
    with pytest.raises(ValidationError, match="path or an open file"):
        read_text(42)  # type: ignore[arg-type]


def test_readers_are_lazy() -> None:
    pulled = 0

    class Lines:
        def __iter__(self) -> Iterator[bytes]:
            nonlocal pulled
            for n in itertools.count():
                pulled += 1
                yield f"id-{n}\n".encode()

    reader = read_text(Lines())  # type: ignore[arg-type]
    assert list(itertools.islice(reader, 3)) == ["id-0", "id-1", "id-2"]
    assert pulled == 3


# -- into an upload -------------------------------------------------------------------------------------


async def test_upload_straight_from_a_csv_file(api: Any, emulator: Emulator, tmp_path: Path) -> None:
    emulator.add_audience("crm")
    path = write(tmp_path, "crm.csv", CRM + "u4,free,x,1,no,,,\n")
    reader = read_csv(path, id_column="customer", errors="collect", attributes={
        "plan": "str", "score": "int", "signup": "date", "avatar": "url",
    })
    report = await api.upload("crm", reader, chunk_size=2)
    assert report.ok
    assert report.items_accepted == 3
    assert [(error.line, error.column) for error in reader.errors] == [(6, "score")]
    emulator.settle()
    members = emulator.members("crm")
    assert members["u1"] == {
        "plan": "pro", "score": 3, "date(signup)": "2024-05-01T10:00:00Z",
        "url(avatar)": "https://example.com/u1.png",
    }
    assert members["u2"] == {"plan": "free", "date(signup)": "2024-05-02T00:00:00Z"}
    assert set(members) == {"u1", "u2", "u3"}
