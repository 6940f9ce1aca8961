"""``client.sync`` against the emulator, with the real SQLite store and a real PostgreSQL server.

Every scenario checks the final content of the audience (the emulator's applied members) against
the source, and the writes actually sent (the request bodies the emulator recorded).
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from batch_audiences import (
    AsyncAudiencesClient,
    AudiencesClient,
    FailedItem,
    IdAction,
    Member,
    NotFoundError,
    SqliteStore,
    SyncLockedError,
    SyncReport,
    ValidationError,
)
from batch_audiences.testing import Emulator, ScriptedResponse

WRITES = ("update", "replace")


@pytest.fixture(params=["sqlite", "postgres"])
def state(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh snapshot store: a SQLite file, or a database on the real PostgreSQL server."""
    if request.param == "sqlite":
        yield str(tmp_path / "state.sqlite3")
        return
    url: str = request.getfixturevalue("postgresql_url")
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS batch_audiences CASCADE")
    yield url


@pytest.fixture(params=["replace", "merge"])
async def emu(request: pytest.FixtureRequest) -> AsyncIterator[Emulator]:
    """An emulator whose adds of a present ID replace, or merge into, its attributes."""
    async with Emulator(indexing_delay=0.005, attribute_merge=request.param) as emulator:
        yield emulator


@pytest.fixture
async def client(emu: Emulator) -> AsyncIterator[AsyncAudiencesClient]:
    async with AsyncAudiencesClient(emu.api_key, emu.project_key, base_url=emu.base_url,
                                    max_retries=2) as c:
        yield c


def members(items: Iterable[Member | str]) -> dict[str, dict[str, object]]:
    """What an audience holding ``items`` looks like in the emulator."""
    out: dict[str, dict[str, object]] = {}
    for item in items:
        if isinstance(item, str):
            out.setdefault(item, {})
        else:
            out.setdefault(item.id, dict(item.attributes or {}))
    return out


def writes(emu: Emulator, since: int = 0) -> list[Any]:
    return [r for r in emu.requests[since:] if r.route in WRITES]


def source_v1(n: int = 40) -> list[Member]:
    return [Member(f"u{i:03d}", {"plan": "pro", "score": i}) for i in range(n)]


def source_v2() -> list[Member | str]:
    out: list[Member | str] = []
    for i in range(5, 45):  # u000-u004 leave; u040-u044 are new
        if i == 5:
            out.append(Member("u005", {"plan": "pro"}))  # loses the key "score"
        elif i == 6:
            out.append("u006")  # loses every attribute
        elif i in (7, 8):
            out.append(Member(f"u{i:03d}", {"plan": "free", "score": i}))  # a value changes
        elif i == 9:
            out.append(Member("u009", {"plan": "pro", "score": 9, "vip": True}))  # a key is added
        else:
            out.append(Member(f"u{i:03d}", {"plan": "pro", "score": i}))
    return out


async def settle(emu: Emulator) -> None:
    emu.settle()
    await asyncio.sleep(0)


# -- the rules ------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [15, 10_000])
async def test_first_run_is_full_then_only_the_difference_is_sent(
    emu: Emulator, client: AsyncAudiencesClient, state: str, chunk_size: int
) -> None:
    first = await client.sync("crm", source_v1(), state=state, chunk_size=chunk_size)
    assert (first.mode, first.full_reason, first.added, first.ok) == ("full", "audience_missing", 40, True)
    await settle(emu)
    assert emu.members("crm") == members(source_v1())

    mark = len(emu.requests)
    second = await client.sync("crm", source_v2(), state=state, chunk_size=chunk_size)
    await settle(emu)
    assert emu.members("crm") == members(source_v2())
    assert (second.mode, second.full_reason) == ("incremental", None)
    assert (second.added, second.removed, second.changed, second.unchanged) == (5, 5, 5, 30)
    assert second.ok
    assert second.summary().startswith("sync of 'crm' (incremental)")
    sent = writes(emu, mark)
    assert all(r.route == "update" for r in sent)
    actions = [(e["action"], e["id"]) for r in sent for e in r.body["ids"]]
    # Only the difference; the two IDs that lost keys are removed, then added back.
    assert sorted(i for a, i in actions if a == "remove") == ["u000", "u001", "u002", "u003", "u004",
                                                               "u005", "u006"]
    assert sorted(i for a, i in actions if a == "add") == [
        "u005", "u006", "u007", "u008", "u009", "u040", "u041", "u042", "u043", "u044"]
    for custom_id in ("u005", "u006"):
        remove_at = next(n for n, r in enumerate(sent) if ("remove", custom_id) in
                         [(e["action"], e["id"]) for e in r.body["ids"]])
        add_at = next(n for n, r in enumerate(sent) if ("add", custom_id) in
                      [(e["action"], e["id"]) for e in r.body["ids"]])
        assert remove_at < add_at  # never in one request, where the last action would win


async def test_an_unchanged_source_sends_no_write(
    emu: Emulator, client: AsyncAudiencesClient, state: str
) -> None:
    await client.sync("crm", source_v1(), state=state)
    await settle(emu)
    mark = len(emu.requests)
    report = await client.sync("crm", source_v1(), state=state)
    assert writes(emu, mark) == []
    assert (report.mode, report.added, report.removed, report.changed, report.unchanged) == (
        "incremental", 0, 0, 0, 40)
    assert report.requests == len(emu.requests) - mark == 1  # the view


async def test_one_percent_churn_costs_one_request_per_ten_thousand_changes(
    emu: Emulator, client: AsyncAudiencesClient, state: str
) -> None:
    n = 30_000
    base = [Member(f"c{i}", {"plan": "pro", "n": i % 7}) for i in range(n)]
    await client.sync("big", base, state=state)
    await settle(emu)
    churned = [m for m in base[90:]]  # 90 gone
    churned[:60] = [Member(m.id, {"plan": "free", "n": 1}) for m in churned[:60]]  # 60 changed
    churned += [Member(f"new{i}", {"plan": "pro", "n": 0}) for i in range(150)]  # 150 new
    mark = len(emu.requests)
    report = await client.sync("big", churned, state=state)
    await settle(emu)
    assert (report.added, report.removed, report.changed) == (150, 90, 60)
    assert len(writes(emu, mark)) == 1
    assert emu.members("big") == members(churned)


async def test_dry_run_sends_nothing_and_leaves_the_snapshot(
    emu: Emulator, client: AsyncAudiencesClient, state: str
) -> None:
    await client.sync("crm", source_v1(), state=state)
    await settle(emu)
    mark = len(emu.requests)
    dry = await client.sync("crm", source_v2(), state=state, dry_run=True)
    assert writes(emu, mark) == []
    assert dry.dry_run
    assert (dry.added, dry.removed, dry.changed) == (5, 5, 5)
    assert "dry run" in dry.summary()
    real = await client.sync("crm", source_v2(), state=state)
    assert (real.added, real.removed, real.changed) == (5, 5, 5)
    await settle(emu)
    assert emu.members("crm") == members(source_v2())


async def test_bad_items_and_duplicates_are_reported_with_positions_and_never_sent(
    emu: Emulator, client: AsyncAudiencesClient, state: str
) -> None:
    source: list[Any] = ["a", Member("b", {"x": 1}), "", 42, "a", Member("b", {"x": 2}), "c", "  "]
    report = await client.sync("crm", source, state=state)
    await settle(emu)
    assert emu.members("crm") == {"a": {}, "b": {"x": 1}, "c": {}}
    assert not report.ok
    assert report.items_read == 8
    assert report.items_failed == 5
    failed = {item.position: item for item in report.failed_items}
    assert sorted(failed) == [2, 3, 4, 5, 7]
    assert all(isinstance(item, FailedItem) and isinstance(item.error, ValidationError)
               for item in report.failed_items)
    assert "duplicate" in str(failed[4].error)
    assert failed[5].item == Member("b", {"x": 2})
    sent_ids = [e["id"] for r in writes(emu) for e in r.body["ids"]]
    assert sorted(sent_ids) == ["a", "b", "c"]
    # The snapshot holds the valid items only: the same source again sends nothing.
    mark = len(emu.requests)
    again = await client.sync("crm", source, state=state)
    assert writes(emu, mark) == []
    assert again.unchanged == 3


async def test_a_duplicate_is_reported_as_the_item_the_source_gave(
    emu: Emulator, client: AsyncAudiencesClient, state: str
) -> None:
    # Items whose row cannot give them back exactly (a date, empty attributes, a str subclass)
    # are the very objects of the source in the report; the others are equal to them.
    from datetime import datetime, timezone

    class Tag(str):
        pass

    when = datetime(2024, 5, 1, 12, 30, tzinfo=timezone.utc)
    dated, empty, tagged = Member("d", {"when": when}), Member("e", {}), Tag("t")
    plain, bare = Member("p", {"plan": "pro", "n": 2, "ok": True, "r": 0.5}), Member("b")
    source: list[Any] = [Member("d", {"when": when, "x": 1}), Member("e", {"x": 1}), "t",
                         Member("p"), "b", dated, empty, tagged, plain, bare]
    report = await client.sync("crm", source, state=state)
    failed = {item.position: item.item for item in report.failed_items}
    assert sorted(failed) == [5, 6, 7, 8, 9]
    assert failed[5] is dated
    assert failed[6] is empty
    assert failed[7] is tagged
    assert failed[8] == plain
    assert failed[9] == bare


async def test_drift_outside_the_sync_leads_to_a_full_replace(
    emu: Emulator, client: AsyncAudiencesClient, state: str
) -> None:
    await client.sync("crm", source_v1(), state=state)
    await settle(emu)
    await client.update("crm", [IdAction.add("intruder"), IdAction.remove("u001"), IdAction.add("x2")])
    await settle(emu)
    report = await client.sync("crm", source_v2(), state=state)
    await settle(emu)
    assert (report.mode, report.full_reason) == ("full", "drift")
    assert emu.members("crm") == members(source_v2())


async def test_an_audience_removed_outside_is_recreated_in_full(
    emu: Emulator, client: AsyncAudiencesClient, state: str
) -> None:
    await client.sync("crm", source_v1(), state=state)
    await settle(emu)
    await client.remove("crm")
    await settle(emu)
    with pytest.raises(NotFoundError, match="create=True"):
        await client.sync("crm", source_v2(), state=state, create=False)
    report = await client.sync("crm", source_v2(), state=state)
    await settle(emu)
    assert (report.mode, report.full_reason) == ("full", "audience_missing")
    assert emu.members("crm") == members(source_v2())


async def test_a_lost_snapshot_costs_one_full_replace_never_a_wrong_audience(
    emu: Emulator, client: AsyncAudiencesClient, tmp_path: Path
) -> None:
    await client.sync("crm", source_v1(), state=tmp_path / "runner-1.sqlite3")
    await settle(emu)
    report = await client.sync("crm", source_v2(), state=tmp_path / "runner-2.sqlite3")
    await settle(emu)
    assert (report.mode, report.full_reason) == ("full", "first_run")
    assert emu.members("crm") == members(source_v2())


async def test_full_true_replaces_everything(
    emu: Emulator, client: AsyncAudiencesClient, state: str
) -> None:
    await client.sync("crm", source_v1(), state=state)
    await settle(emu)
    mark = len(emu.requests)
    report = await client.sync("crm", source_v2(), state=state, full=True, chunk_size=15)
    await settle(emu)
    assert (report.mode, report.full_reason, report.added) == ("full", "requested", 40)
    assert [r.route for r in writes(emu, mark)] == ["replace", "update", "update"]
    assert emu.members("crm") == members(source_v2())
    follow = await client.sync("crm", source_v2(), state=state)
    assert follow.mode == "incremental"
    assert follow.writes == 0


async def test_snapshots_are_keyed_by_base_url_project_and_name(
    emu: Emulator, client: AsyncAudiencesClient, tmp_path: Path
) -> None:
    path = tmp_path / "shared.sqlite3"
    await client.sync("a", ["x", "y"], state=path)
    await client.sync("b", ["y", "z"], state=path)
    async with AsyncAudiencesClient(emu.api_key, "project_other", base_url=emu.base_url) as other:
        emu.project_key = "project_other"
        report = await other.sync("a", ["x"], state=path)
    assert report.full_reason == "first_run"
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT project_key, name, count FROM audiences ORDER BY 1, 2").fetchall()
    assert rows == [("project_emulator", "a", 2), ("project_emulator", "b", 2), ("project_other", "a", 1)]


# -- locks ------------------------------------------------------------------------------------------


async def test_a_second_sync_of_the_same_audience_fails_fast_naming_the_lock(
    emu: Emulator, client: AsyncAudiencesClient, state: str
) -> None:
    release = asyncio.Event()
    started = asyncio.Event()

    async def slow_source() -> AsyncIterator[str]:
        yield "a"
        started.set()
        await release.wait()
        yield "b"

    first = asyncio.ensure_future(client.sync("crm", slow_source(), state=state))
    await asyncio.wait_for(started.wait(), 10)
    with pytest.raises(SyncLockedError, match="lock") as caught:
        await client.sync("crm", ["c"], state=state)
    assert caught.value.lock
    assert "crm" in str(caught.value)
    other = await client.sync("other", ["z"], state=state)  # another audience is not blocked
    assert other.ok
    release.set()
    report = await asyncio.wait_for(first, 30)
    await settle(emu)
    assert report.ok
    assert emu.members("crm") == {"a": {}, "b": {}}
    # The lock is released: the next sync runs.
    assert (await client.sync("crm", ["c"], state=state)).ok


# -- failures: the snapshot holds what was accepted, the next run converges -------------------------


async def test_failed_chunks_are_sent_by_the_next_run(
    emu: Emulator, client: AsyncAudiencesClient, state: str
) -> None:
    await client.sync("crm", source_v1(), state=state)
    await settle(emu)
    emu.script(ScriptedResponse(400, {"error": "bad"}, route="update"))
    failed = await client.sync("crm", source_v2(), state=state, chunk_size=4, concurrency=1)
    assert not failed.ok
    assert failed.failed_chunks
    await settle(emu)
    again = await client.sync("crm", source_v2(), state=state, chunk_size=4)
    await settle(emu)
    assert again.mode == "incremental"
    assert again.ok
    assert emu.members("crm") == members(source_v2())
    final = await client.sync("crm", source_v2(), state=state)
    assert final.writes == 0


async def test_an_answer_lost_after_the_write_is_resent_and_converges(
    emu: Emulator, client: AsyncAudiencesClient, state: str
) -> None:
    await client.sync("crm", source_v1(), state=state)
    await settle(emu)
    # The write is applied, but no answer comes back, retries included.
    emu.script(*[ScriptedResponse(action="drop_after", route="update")] * 3)
    report = await client.sync("crm", source_v2(), state=state, concurrency=1)
    assert not report.ok
    await settle(emu)
    # Now the source goes back: the IDs of the unconfirmed write must be fixed too.
    again = await client.sync("crm", source_v1(), state=state)
    await settle(emu)
    assert again.resent > 0
    assert emu.members("crm") == members(source_v1())


async def test_a_cancelled_sync_keeps_what_was_accepted(
    emu: Emulator, client: AsyncAudiencesClient, state: str
) -> None:
    await client.sync("crm", source_v1(200), state=state)
    await settle(emu)
    target = [Member(f"u{i:03d}", {"plan": "free", "score": i}) for i in range(200)]
    acked = asyncio.Event()

    def on_progress(event: Any) -> None:
        if event.kind == "acknowledged":
            acked.set()

    task = asyncio.ensure_future(client.sync("crm", target, state=state, chunk_size=10, concurrency=1,
                                             on_progress=on_progress))
    await asyncio.wait_for(acked.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await settle(emu)
    report = await client.sync("crm", target, state=state, chunk_size=10)
    await settle(emu)
    # The acknowledged chunks were recorded: only the rest is sent again.
    assert report.mode == "incremental"
    assert report.changed + report.resent < 200
    assert emu.members("crm") == members(target)


async def test_a_deadline_stops_the_sync_and_the_next_run_converges(
    emu: Emulator, client: AsyncAudiencesClient, state: str
) -> None:
    await client.sync("crm", source_v1(300), state=state)
    await settle(emu)
    emu.latency = 0.05
    target = [m for m in source_v1(300)[50:]] + [Member(f"n{i}", {"k": i}) for i in range(100)]
    report = await client.sync("crm", target, state=state, chunk_size=10, concurrency=1, deadline=0.3)
    assert not report.ok
    assert not report.completed
    assert report.stop_reason
    emu.latency = 0.0
    await settle(emu)
    again = await client.sync("crm", target, state=state, chunk_size=10)
    await settle(emu)
    assert again.ok
    assert emu.members("crm") == members(target)


async def test_random_faults_and_sources_converge(
    emu: Emulator, client: AsyncAudiencesClient, state: str
) -> None:
    from batch_audiences.testing import FaultPlan

    rng = random.Random(1234)
    universe = [f"id{i}" for i in range(120)]
    for round_ in range(6):
        source = [
            Member(i, {k: rng.randint(0, 2) for k in rng.sample(["a", "b", "c"], rng.randint(0, 3))})
            for i in rng.sample(universe, rng.randint(0, 100))
        ]
        emu.faults = FaultPlan(seed=round_, rate_500=0.15, drop_after=0.1, drop_before=0.1,
                               routes={"update", "replace"})
        for _ in range(8):  # faulty runs until one is clean (bounded)
            report = await client.sync("crm", source, state=state, chunk_size=7)
            await settle(emu)
            if report.ok:
                break
        emu.faults = FaultPlan()
        final = await client.sync("crm", source, state=state, chunk_size=7)
        await settle(emu)
        assert final.ok
        assert emu.members("crm") == members(source), f"round {round_}"


# -- arguments, the blocking client ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"chunk_size": 0}, "chunk_size"), ({"concurrency": 0}, "concurrency"), ({"full": "yes"}, "full"),
     ({"deadline": -1}, "deadline"), ({"state": 3}, "state"), ({"on_progress": 5}, "on_progress")],
)
async def test_bad_arguments_raise_before_anything_is_sent(
    emu: Emulator, client: AsyncAudiencesClient, tmp_path: Path, kwargs: dict[str, Any], field: str
) -> None:
    kwargs.setdefault("state", tmp_path / "s.sqlite3")
    with pytest.raises(ValidationError, match=field):
        await client.sync("crm", ["a"], **kwargs)
    with pytest.raises(ValidationError, match="source"):
        await client.sync("crm", "not-a-list", state=tmp_path / "s.sqlite3")
    assert emu.requests == []


def test_the_blocking_client_syncs(tmp_path: Path) -> None:
    with Emulator(indexing_delay=0) as emu, AudiencesClient(
        emu.api_key, emu.project_key, base_url=emu.base_url
    ) as client:
        report = client.sync("crm", ["a", Member("b", {"k": 1})], state=tmp_path / "s.sqlite3")
        assert isinstance(report, SyncReport)
        assert report.ok
        report = client.sync("crm", ["a"], state=tmp_path / "s.sqlite3")
        emu.settle()
        assert (report.removed, emu.members("crm")) == (1, {"a": {}})


def test_the_default_state_lives_in_the_user_state_directory(monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Path) -> None:
    from batch_audiences._sync import default_state_path, resolve_store

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    path = default_state_path()
    assert path.startswith(str(tmp_path))
    assert path.endswith("sync.sqlite3")
    store = resolve_store(None)
    assert isinstance(store, SqliteStore)
    assert str(store.path) == path


# -- the stores' own failures -----------------------------------------------------------------------


async def test_a_source_of_only_bad_items_empties_nothing(
    emu: Emulator, client: AsyncAudiencesClient, state: str
) -> None:
    await client.sync("crm", source_v1(), state=state)
    await settle(emu)
    mark = len(emu.requests)
    report = await client.sync("crm", ["", "  ", 7], state=state)
    assert not report.ok
    assert report.stop_reason is not None
    assert "empty" in report.stop_reason
    assert writes(emu, mark) == []
    await settle(emu)
    assert emu.members("crm") == members(source_v1())


async def test_an_unusable_state_file_is_one_sdk_error(
    emu: Emulator, client: AsyncAudiencesClient, tmp_path: Path
) -> None:
    from batch_audiences import SyncStateError

    damaged = tmp_path / "damaged.sqlite3"
    damaged.write_bytes(b"this is not a database" * 100)
    with pytest.raises(SyncStateError, match=r"damaged\.sqlite3"):
        await client.sync("crm", ["a"], state=damaged)
    assert writes(emu) == []


async def test_a_postgres_store_that_cannot_be_reached_never_shows_its_password(
    emu: Emulator, client: AsyncAudiencesClient, free_port: int
) -> None:
    from batch_audiences import PostgresStore, SyncStateError

    url = f"postgresql://sync:Sup3r-Secret@127.0.0.1:{free_port}/audiences?connect_timeout=5"
    assert "Sup3r-Secret" not in repr(PostgresStore(url))
    with pytest.raises(SyncStateError) as caught:
        await client.sync("crm", ["a"], state=url)
    assert "Sup3r-Secret" not in str(caught.value)
    assert "***" in str(caught.value)


async def test_a_wrong_postgres_password_is_reported_without_it(
    emu: Emulator, client: AsyncAudiencesClient, postgresql_url: str
) -> None:
    from urllib.parse import urlsplit

    from batch_audiences import SyncStateError

    real = urlsplit(postgresql_url).password
    assert real is not None
    wrong = postgresql_url.replace(real, "Wrong-Pass-123")
    with pytest.raises(SyncStateError, match="password") as caught:
        await client.sync("crm", ["a"], state=wrong)
    assert "Wrong-Pass-123" not in str(caught.value)
    assert real not in str(caught.value)


async def test_a_postgres_sync_releases_its_lock_before_it_returns(
    emu: Emulator, client: AsyncAudiencesClient, postgresql_url: str
) -> None:
    # The server frees a session's advisory lock only once it notices the disconnect, a moment
    # after the client closed: a sync run right after another could find the lock still held.
    import psycopg

    async with await psycopg.AsyncConnection.connect(postgresql_url, autocommit=True) as watcher:
        await watcher.execute("DROP SCHEMA IF EXISTS batch_audiences CASCADE")
        for _ in range(20):
            report = await client.sync("crm", ["a", "b"], state=postgresql_url)
            assert report.ok, report.summary()
            cursor = await watcher.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
            )
            assert await cursor.fetchone() == (0,)
