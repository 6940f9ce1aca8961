"""An upload's batch of plain str IDs is checked by passes over the whole batch, not ID by ID.

Those passes must accept exactly what :func:`check_id` accepts, whatever the IDs hold: blanks made
of any whitespace, lengths at the limit counted in characters (not in UTF-8 bytes), characters
that JSON escapes. A batch they refuse goes item by item, where each bad ID gets its own error.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from batch_audiences import MAX_ID_LENGTH, ValidationError
from batch_audiences._bulk._encode import encode_batch
from batch_audiences._models import all_valid_ids, check_id
from batch_audiences.testing import Emulator

# IDs at the edges of each rule, next to ordinary ones.
_EDGES = [
    "", " ", "   ", "\t", "\n", "\x1c", "\x85", "\xa0", "\u3000", " \u3000 ", "a b", " lead", "trail ",
    "x" * MAX_ID_LENGTH, "x" * (MAX_ID_LENGTH + 1), "é" * MAX_ID_LENGTH, "é" * (MAX_ID_LENGTH + 1),
    "😀" * MAX_ID_LENGTH, '"', "\\", 'a","b', "é", "u1",
]
_IDS = st.lists(st.one_of(st.sampled_from(_EDGES), st.text(min_size=0, max_size=8)), max_size=8)


def _valid(custom_id: str) -> bool:
    try:
        check_id(custom_id)
    except ValidationError:
        return False
    return True


@settings(max_examples=500, deadline=None)
@given(ids=_IDS)
@example(ids=["u1", "\u3000"])  # a blank that is not ASCII
@example(ids=["u1", "é" * MAX_ID_LENGTH])  # at the limit in characters, over it in bytes
@example(ids=["u1", "x" * (MAX_ID_LENGTH + 1)])
@example(ids=["u1", "   ", "u2"])
@example(ids=['a","b', ""])  # an escape, and an empty ID
def test_the_batch_check_accepts_exactly_what_check_id_accepts(ids: list[str]) -> None:
    try:
        array = orjson.dumps(ids)
    except orjson.JSONEncodeError:
        return  # a lone surrogate: never checked this way (the batch goes item by item)
    assert all_valid_ids(ids, array) is all(map(_valid, ids))


def test_a_batch_with_one_bad_id_is_checked_item_by_item() -> None:
    bad: list[tuple[int, str]] = []

    def invalid(position: int, item: object, error: ValidationError) -> None:
        bad.append((position, str(error)))

    batch = ["u1", "\u3000", "é" * MAX_ID_LENGTH, "x" * (MAX_ID_LENGTH + 1), "", "a b", "\ud800"]
    encoded = encode_batch(batch, "add", False, 10, invalid)
    assert [position for position, _ in bad] == [11, 13, 14, 16]
    assert "non-empty" in bad[0][1]
    assert "1,024 characters" in bad[1][1]
    assert "non-empty" in bad[2][1]
    assert "JSON" in bad[3][1]
    assert encoded.ids == ["u1", "é" * MAX_ID_LENGTH, "a b"]
    entries = orjson.loads(b"[" + encoded.piece + b"]")
    assert entries == [{"action": "add", "id": custom_id} for custom_id in encoded.ids]


@pytest.mark.parametrize(("mode", "member", "entry"), [
    ("add", False, {"action": "add"}), ("remove", False, {"action": "remove"}), ("replace", True, {}),
])
def test_a_batch_of_good_ids_is_one_piece_of_entries(mode: Any, member: bool, entry: dict[str, str]) -> None:
    def invalid(position: int, item: object, error: ValidationError) -> None:
        raise AssertionError(f"{item!r} refused: {error}")

    batch = ["u1", "a b", "é" * MAX_ID_LENGTH, 'quote"', "\u3000x"]
    encoded = encode_batch(batch, mode, member, 0, invalid)
    assert encoded.ids == batch
    assert orjson.loads(b"[" + encoded.piece + b"]") == [{**entry, "id": custom_id} for custom_id in batch]


async def test_an_upload_sends_the_good_ids_of_a_batch_and_reports_each_bad_one() -> None:
    from batch_audiences import AsyncAudiencesClient

    good = ["u1", "a b", "é" * MAX_ID_LENGTH, "\u3000x"]
    stream = [good[0], " ", good[1], "\xa0\u3000", good[2], "y" * (MAX_ID_LENGTH + 1), good[3]]
    async with Emulator(indexing_delay=0.0) as emulator:
        emulator.add_audience("crm")
        async with AsyncAudiencesClient(emulator.api_key, emulator.project_key,
                                        base_url=emulator.base_url) as client:
            report = await client.upload("crm", stream)
        assert report.items_accepted == len(good)
        assert [(item.position, item.item) for item in report.failed_items] == [
            (1, " "), (3, "\xa0\u3000"), (5, "y" * (MAX_ID_LENGTH + 1)),
        ]
        emulator.settle()
        assert sorted(emulator.members("crm")) == sorted(good)
