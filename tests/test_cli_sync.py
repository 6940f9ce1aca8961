"""``batch-audiences sync`` against the emulator: report, dry run, exit codes, and ``kill -9``.

The kill test runs the real command in a subprocess and kills it (SIGKILL) at random moments,
over several rounds whose source files differ, then lets one run finish: the audience must then
hold exactly the last file, and one more run must send nothing.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from batch_audiences.testing import Emulator
from tests.test_cli import SECRET_KEY, cli_at


@pytest.fixture
def emu(clean_env: pytest.MonkeyPatch) -> Iterator[Emulator]:
    with Emulator(indexing_delay=0.0, api_key=SECRET_KEY, attribute_merge="merge") as emulator:
        yield emulator


def write_csv(path: Path, rows: dict[str, tuple[str, int | None]]) -> Path:
    lines = "".join(f"{i},{p},{'' if s is None else s}\n" for i, (p, s) in rows.items())
    path.write_text("id,plan,score\n" + lines)
    return path


def as_members(rows: dict[str, tuple[str, int | None]]) -> dict[str, dict[str, object]]:
    return {i: {"plan": p} if s is None else {"plan": p, "score": s} for i, (p, s) in rows.items()}


def writes(emu: Emulator, since: int = 0) -> int:
    return sum(1 for r in emu.requests[since:] if r.route in ("update", "replace"))


def test_sync_reports_json_and_sends_only_the_difference(emu: Emulator, tmp_path: Path) -> None:
    state = str(tmp_path / "state.sqlite3")
    first = {f"c{n}": ("pro", n) for n in range(30)}
    path = write_csv(tmp_path / "crm.csv", first)
    run = cli_at(emu, "--json", "sync", "crm", str(path), "--attr", "plan", "--attr", "score:int",
                 "--state", state)
    assert run.code == 0, run.err
    document = run.json()
    assert {k: document[k] for k in ("mode", "full_reason", "added", "ok")} == {
        "mode": "full", "full_reason": "audience_missing", "added": 30, "ok": True}
    emu.settle()
    second = {**{k: v for k, v in first.items() if k != "c0"}, "c1": ("free", 1), "new": ("pro", 9)}
    write_csv(path, second)
    mark = len(emu.requests)
    run = cli_at(emu, "--json", "sync", "crm", str(path), "--attr", "plan", "--attr", "score:int",
                 "--state", state)
    assert run.code == 0, run.err
    document = run.json()
    assert {k: document[k] for k in ("mode", "added", "removed", "changed", "unchanged", "ok")} == {
        "mode": "incremental", "added": 1, "removed": 1, "changed": 1, "unchanged": 28, "ok": True}
    assert document["requests"] == len(emu.requests) - mark
    assert writes(emu, mark) == 1
    emu.settle()
    assert emu.members("crm") == as_members(second)
    text = cli_at(emu, "sync", "crm", str(path), "--attr", "plan", "--attr", "score:int", "--state", state)
    assert text.code == 0
    counts = {m[1]: int(m[2]) for m in re.finditer(r"^\s*(added|removed|changed|unchanged)\s+(\d+)\s*$",
                                                   text.out, re.MULTILINE)}
    assert counts == {"added": 0, "removed": 0, "changed": 0, "unchanged": 30}, text.out


def test_dry_run_and_no_create(emu: Emulator, tmp_path: Path) -> None:
    path = tmp_path / "ids.txt"
    path.write_text("a\nb\n")
    state = str(tmp_path / "s.sqlite3")
    run = cli_at(emu, "--json", "sync", "crm", str(path), "--state", state, "--dry-run")
    assert run.code == 0, run.err
    assert run.json()["dry_run"] is True
    assert run.json()["added"] == 2
    assert emu.requests[-1].route == "view"
    assert emu.audience_names() == []
    run = cli_at(emu, "sync", "crm", str(path), "--state", state, "--no-create")
    assert run.code == 1
    assert "create" in run.err
    assert emu.audience_names() == []


def test_bad_rows_and_duplicates_fail_the_run_but_the_rest_is_synced(
    emu: Emulator, tmp_path: Path
) -> None:
    path = tmp_path / "crm.csv"
    path.write_text("id,score\na,1\nb,x\nc,3\na,4\n")
    run = cli_at(emu, "--json", "sync", "crm", str(path), "--attr", "score:int",
                 "--state", str(tmp_path / "s.sqlite3"))
    assert run.code == 1
    document = run.json()
    assert document["ok"] is False
    assert [row["line"] for row in document["bad_rows"]] == [3]
    assert [(item["position"], item["id"]) for item in document["failed_items"]] == [(2, "a")]
    emu.settle()
    assert emu.members("crm") == {"a": {"score": 1}, "c": {"score": 3}}


def test_a_file_of_several_batches_is_reported_as_the_library_reports_it(
    emu: Emulator, tmp_path: Path
) -> None:
    # The command reads a CSV file in batches of rows (the reader's batch path): bad rows and
    # duplicates in later batches keep their lines and positions, as the library reports them
    # when it reads the same file item by item.
    rows = [f"c{n},{n}" for n in range(25_000)]
    rows[4] = "c4,x"  # a bad row in the first batch: line 6
    rows[20_001] = "c20001,1,extra"  # a bad row in the third batch: line 20,003
    rows[12_000] = "c7,12000"  # a duplicate of c7, in the second batch
    rows[24_999] = "c0,5"  # a duplicate of c0, the last row
    path = tmp_path / "crm.csv"
    path.write_text("id,score\n" + "\n".join(rows) + "\n")
    run = cli_at(emu, "--json", "sync", "crm", str(path), "--attr", "score:int",
                 "--state", str(tmp_path / "s.sqlite3"))
    assert run.code == 1, run.err
    document = run.json()

    from batch_audiences import AudiencesClient
    from batch_audiences.sources import read_csv

    reader = read_csv(path, attributes=["score:int"], errors="collect")
    with AudiencesClient(emu.api_key, emu.project_key, base_url=emu.base_url) as client:
        report = client.sync("crm-items", (item for item in reader), state=tmp_path / "t.sqlite3")
    assert [row["line"] for row in document["bad_rows"]] == [e.line for e in reader.errors] == [6, 20_003]
    assert [(i["position"], i["id"]) for i in document["failed_items"]] == [
        (i.position, i.item.id) for i in report.failed_items]  # type: ignore[union-attr]
    assert len(document["failed_items"]) == 2
    assert (document["added"], document["requests"]) == (report.added, report.requests)
    assert report.added == 24_996
    emu.settle()
    assert emu.members("crm") == emu.members("crm-items")


def test_standard_input_and_help(emu: Emulator, tmp_path: Path) -> None:
    from batch_audiences._cli import main

    assert main(["sync", "--help"]) == 0
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCH_")}
    env.update(BATCH_REST_API_KEY=emu.api_key, BATCH_PROJECT_KEY=emu.project_key,
               BATCH_API_BASE_URL=emu.base_url)
    done = subprocess.run(
        [sys.executable, "-m", "batch_audiences", "--json", "sync", "crm", "-", "--state",
         str(tmp_path / "s.sqlite3")],
        input="x\ny\n", env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["added"] == 2
    assert SECRET_KEY not in done.stdout + done.stderr


def test_kill_9_at_random_points_then_one_run_converges(
    tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    rng = random.Random(20261201)
    state = str(tmp_path / "state.sqlite3")
    path = tmp_path / "crm.csv"
    with Emulator(indexing_delay=0.002, api_key=SECRET_KEY, latency=(0.002, 0.01),
                  attribute_merge="merge") as emu:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BATCH_")}
        env.update(BATCH_REST_API_KEY=emu.api_key, BATCH_PROJECT_KEY=emu.project_key,
                   BATCH_API_BASE_URL=emu.base_url)
        command = [sys.executable, "-m", "batch_audiences", "sync", "crm", str(path), "--attr", "plan",
                   "--attr", "score:int", "--state", state, "--chunk-size", "40", "--concurrency", "2"]
        rows: dict[str, tuple[str, int | None]] = {}
        killed = 0
        for round_ in range(8):  # bounded: eight runs, each on a new source, killed at a random point
            rows = {f"id{n}": (rng.choice(["pro", "free"]), rng.choice([None, 0, 1, 2]))
                    for n in rng.sample(range(3000), 1500)}
            write_csv(path, rows)
            mark = len(emu.requests)
            # Writes to let through before the kill (0: while reading); the last run dies sending.
            target = rng.randint(0 if round_ < 7 else 2, 12)
            process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)
            if target == 0:
                time.sleep(rng.uniform(0.0, 0.8))
            else:
                limit = time.monotonic() + 60
                while writes(emu, mark) < target and process.poll() is None and time.monotonic() < limit:
                    time.sleep(0.001)
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                killed += 1
            process.wait(timeout=60)
            emu.settle()
        assert killed >= 5, "the runs ended before they could be killed: make the source bigger"
        done = subprocess.run([*command, "--json"], env=env, capture_output=True, text=True,
                              timeout=300, check=False)
        assert done.returncode == 0, done.stderr
        # Writes sent but unconfirmed are known to the snapshot: never mistaken for drift.
        assert json.loads(done.stdout)["full_reason"] != "drift"
        emu.settle()
        assert emu.members("crm") == as_members(rows)
        mark = len(emu.requests)
        again = subprocess.run([*command, "--json"], env=env, capture_output=True, text=True,
                               timeout=300, check=False)
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout)["mode"] == "incremental"
        assert writes(emu, mark) == 0
