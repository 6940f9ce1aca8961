"""Every body builder sends valid JSON that decodes to the IDs it was given, whatever they hold.

A body that is not valid JSON is refused whole by the server (up to 10,000 valid IDs with it), so
no builder may splice bytes where user data can be: quotes, commas, backslashes, control
characters and any non-ASCII text in an ID must come back unchanged. Checked over HTTP against
the emulator, which parses each body with the standard library's strict JSON reader.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from batch_audiences import AsyncAudiencesClient, IdAction, Member, UploadMode
from batch_audiences._bulk import UploadItem
from batch_audiences.testing import Emulator

# Text that passes the SDK's ID check and can be sent as UTF-8 (a lone surrogate is reported as
# an invalid item instead, see test_bulk_upload), with JSON's own delimiters made likely.
_PIECES = st.sampled_from(['"', ",", '","', '\\', '\\"', "]", "}", "{", ":", "\n", "\x00", "é", "😀"])
_ANY = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=12)
_ID = st.one_of(_ANY, st.lists(st.one_of(_PIECES, _ANY), min_size=1, max_size=6).map("".join)).filter(
    lambda text: not text.isspace()
)
_IDS = st.lists(_ID, min_size=1, max_size=6, unique=True)


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator(indexing_delay=0.0, replace_indexing_delay=0.0) as emulator:
        yield emulator


async def _round_trips(emu: Emulator, ids: list[str]) -> None:
    emu.reset()
    async with AsyncAudiencesClient(emu.api_key, emu.project_key, base_url=emu.base_url) as client:
        await client.create("a")

        def holds(expected: set[str], how: str) -> None:
            emu.settle()
            assert set(emu.members("a")) == expected, how

        await client.update("a", [IdAction.add(custom_id, {"k": custom_id}) for custom_id in ids])
        holds(set(ids), "update")
        assert all(emu.members("a")[custom_id] == {"k": custom_id} for custom_id in ids)
        await client.update("a", [IdAction.remove(custom_id) for custom_id in ids])
        holds(set(), "update (removes)")
        await client.replace("a", ids)
        holds(set(ids), "replace (str IDs)")
        await client.replace("a", [Member(custom_id, {"k": 1}) for custom_id in ids])
        holds(set(ids), "replace (members)")
        uploads: tuple[tuple[UploadMode, list[UploadItem], set[str]], ...] = (
            ("remove", list(ids), set()),
            ("add", list(ids), set(ids)),
            ("remove", [IdAction.remove(custom_id) for custom_id in ids], set()),
            ("update", list(ids), set(ids)),
            ("update", [IdAction.remove(custom_id) for custom_id in ids], set()),
            ("add", [Member(custom_id, {"k": custom_id}) for custom_id in ids], set(ids)),
            ("replace", list(ids[:1]), set(ids[:1])),
            ("replace", list(ids), set(ids)),
            ("replace", [Member(custom_id) for custom_id in ids], set(ids)),
        )
        for mode, items, expected in uploads:
            # chunk_size=2: IDs meet inside one chunk and across chunk boundaries.
            report = await client.upload("a", list(items), mode=mode, chunk_size=2)
            assert report.ok, (mode, report.summary())
            holds(expected, f"upload {mode}")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ids=_IDS)
@example(ids=['x",', "y"])
@example(ids=['a","b', 'c\\', '"'])
def test_any_valid_id_round_trips_through_every_body_builder(emu: Emulator, ids: list[str]) -> None:
    asyncio.run(_round_trips(emu, ids))


@settings(max_examples=300, deadline=None)
@given(ids=st.lists(_ID, min_size=1, max_size=20), action=st.sampled_from(["add", "remove", None]))
@example(ids=['x",', ","], action="add")
@example(ids=[",", '","', "\\"], action=None)
def test_the_bare_id_fast_path_writes_what_the_dicts_would(ids: list[str], action: str | None) -> None:
    from batch_audiences._codec import entries_json, id_entries_json

    entries = [
        {"id": custom_id} if action is None else {"action": action, "id": custom_id} for custom_id in ids
    ]
    written = id_entries_json(ids, action)
    assert orjson.loads(b"[" + written + b"]") == entries
    assert written == entries_json(entries)
