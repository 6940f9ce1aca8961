"""``batch-audiences upload`` against the emulator: formats, modes, report, dry run, resume, Ctrl-C.

Resume is tested three ways: a chunk that fails for good (a scripted 500) and is the only thing
sent again; a process killed with SIGKILL once its checkpoint shows a few chunks; and a process
interrupted with SIGINT (graceful: exit 130, checkpoint and partial report written). Each time
the audience must end up as one uninterrupted run leaves it, and no chunk the checkpoint held
may be sent again (checked on the request bodies the emulator recorded).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batch_audiences.testing import Emulator, ScriptedResponse
from tests.test_cli import SECRET_KEY, Run, cli, cli_at, connect


@pytest.fixture
def emu(clean_env: pytest.MonkeyPatch) -> Iterator[Emulator]:
    with Emulator(indexing_delay=0.0, api_key=SECRET_KEY) as emulator:
        yield emulator


def write_ids(path: Path, count: int, prefix: str = "id") -> list[str]:
    ids = [f"{prefix}-{n:05d}" for n in range(count)]
    path.write_text("".join(f"{i}\n" for i in ids))
    return ids


def sent_update_ids(emulator: Emulator, since: int = 0) -> list[list[str]]:
    """The IDs of each update/replace request body the emulator received, in arrival order."""
    bodies = []
    for request in emulator.requests[since:]:
        if request.route in ("update", "replace") and isinstance(request.body, dict):
            bodies.append([entry["id"] for entry in request.body["ids"]])
    return bodies


def checkpoint_chunks(path: Path) -> list[int]:
    try:
        return list(json.loads(path.read_text())["accepted_chunks"])
    except (OSError, ValueError, KeyError):
        return []


# -- formats and modes --------------------------------------------------------------------------


def test_upload_csv_with_typed_attributes(emu: Emulator, tmp_path: Path) -> None:
    emu.add_audience("crm")
    source = tmp_path / "crm.csv"
    source.write_text(
        "plan,customer_id,signup,site,score,vip\n"
        "pro,c1,2024-01-02,https://example.com/c1,3,yes\n"
        "free,c2,2024-02-03T10:00:00Z,,4.5,no\n"
    )
    run = cli_at(emu, "upload", "crm", str(source), "--id-column", "customer_id", "--attr", "plan",
                 "--attr", "signup:date", "--attr", "site:url", "--attr", "score:float",
                 "--attr", "vip:bool", "--wait")
    assert run.code == 0, run.err
    emu.settle()
    assert emu.members("crm") == {
        "c1": {"plan": "pro", "date(signup)": "2024-01-02T00:00:00Z", "url(site)": "https://example.com/c1",
               "score": 3.0, "vip": True},
        "c2": {"plan": "free", "date(signup)": "2024-02-03T10:00:00Z", "score": 4.5, "vip": False},
    }
    for label in ("sent", "accepted", "failed", "retries", "requests", "elapsed"):
        assert label in run.out


def test_upload_text_in_chunks_with_json_report(emu: Emulator, tmp_path: Path) -> None:
    emu.add_audience("big")
    ids = write_ids(tmp_path / "ids.txt", 2_500)
    run = cli_at(emu, "--json", "upload", "big", str(tmp_path / "ids.txt"), "--chunk-size", "1000",
                 "--concurrency", "3", "--wait")
    assert run.code == 0, run.err
    report = run.json()
    assert report["ok"] is True
    assert report["read"] == report["sent"] == report["accepted"] == 2_500
    assert report["failed"] == 0
    assert report["applied"] is True
    assert report["indexing_tokens"] == []  # --wait: every write confirmed applied, none to wait for
    assert report["requests"] >= 3
    assert report["failed_chunks"] == []
    assert report["bad_rows"] == []
    assert [len(body) for body in sent_update_ids(emu)] == [1000, 1000, 500]
    emu.settle()
    assert sorted(emu.members("big")) == ids


def test_update_mode_from_ndjson_keeps_stream_order(emu: Emulator, tmp_path: Path) -> None:
    emu.add_audience("aud", ["keep", "drop"])
    lines = [
        {"id": "u1", "action": "add", "attributes": {"n": 1}},
        {"id": "drop", "action": "remove"},
        {"id": "u1", "action": "remove"},
        {"id": "u2", "action": "add"},
        {"id": "u1", "action": "add", "attributes": {"n": 2}},
        "u3",
    ]
    source = tmp_path / "actions.jsonl"
    source.write_text("".join(json.dumps(line) + "\n" for line in lines))
    run = cli_at(emu, "upload", "aud", str(source), "--mode", "update", "--chunk-size", "2",
                 "--concurrency", "4", "--wait")
    assert run.code == 0, run.err
    emu.settle()
    assert emu.members("aud") == {"keep": {}, "u1": {"n": 2}, "u2": {}, "u3": {}}


def test_update_mode_from_csv_action_column(emu: Emulator, tmp_path: Path) -> None:
    emu.add_audience("aud", ["a", "b"])
    source = tmp_path / "changes.csv"
    source.write_text("id,op,tier\na,remove,\nc,add,gold\nb,add,silver\n")
    run = cli_at(emu, "upload", "aud", str(source), "--mode", "update", "--action-column", "op",
                 "--attr", "tier", "--wait")
    assert run.code == 0, run.err
    emu.settle()
    assert emu.members("aud") == {"b": {"tier": "silver"}, "c": {"tier": "gold"}}


def test_replace_and_remove_modes(emu: Emulator, tmp_path: Path) -> None:
    emu.add_audience("aud", ["old-1", "old-2"])
    ids = write_ids(tmp_path / "ids.txt", 250)
    run = cli_at(emu, "upload", "aud", str(tmp_path / "ids.txt"), "--mode", "replace",
                 "--chunk-size", "100", "--wait")
    assert run.code == 0, run.err
    emu.settle()
    assert sorted(emu.members("aud")) == ids
    assert [r.route for r in emu.requests if r.route in ("update", "replace")] == [
        "replace", "update", "update"]

    (tmp_path / "gone.txt").write_text("".join(f"{i}\n" for i in ids[:200]))
    run = cli_at(emu, "upload", "aud", str(tmp_path / "gone.txt"), "--mode", "remove", "--wait")
    assert run.code == 0, run.err
    emu.settle()
    assert sorted(emu.members("aud")) == ids[200:]


def test_upload_from_standard_input(emu: Emulator) -> None:
    emu.add_audience("aud")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCH_")}
    env.update(BATCH_REST_API_KEY=emu.api_key, BATCH_PROJECT_KEY=emu.project_key,
               BATCH_API_BASE_URL=emu.base_url)
    done = subprocess.run(
        [sys.executable, "-m", "batch_audiences", "upload", "aud", "-", "--json", "--wait"],
        input="s1\ns2\n\ns3\n", env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["accepted"] == 3
    emu.settle()
    assert sorted(emu.members("aud")) == ["s1", "s2", "s3"]


# -- bad input ----------------------------------------------------------------------------------


BAD_CSV = (
    "id,score,signup\n"      # line 1
    "u1,1,2024-01-01\n"      # 2 good
    ",2,2024-01-01\n"        # 3 empty ID
    "u3,three,2024-01-01\n"  # 4 not an integer
    "u4,4\n"                 # 5 wrong number of fields
    "u5,5,someday\n"         # 6 not a date
    "u6,6,2024-01-06\n"      # 7 good
)


def test_dry_run_lists_bad_rows_and_sends_nothing(emu: Emulator, tmp_path: Path) -> None:
    source = tmp_path / "bad.csv"
    source.write_text(BAD_CSV)
    run = cli_at(emu, "upload", "aud", str(source), "--attr", "score:int", "--attr", "signup:date",
                 "--dry-run")
    assert run.code == 1
    for line in (3, 4, 5, 6):
        assert f"line {line}:" in run.out
    assert "line 2:" not in run.out
    assert "line 7:" not in run.out
    assert emu.requests == []

    document = cli_at(emu, "--json", "upload", "aud", str(source), "--attr", "score:int",
                      "--attr", "signup:date", "--dry-run").json()
    assert document["dry_run"] is True
    assert document["rows"] == 6
    assert document["valid"] == 2
    assert document["bad_rows_count"] == 4
    assert [row["line"] for row in document["bad_rows"]] == [3, 4, 5, 6]
    assert document["bad_rows"][1]["column"] == "score"
    assert emu.requests == []


def test_dry_run_of_a_clean_file_exits_0(emu: Emulator, tmp_path: Path) -> None:
    write_ids(tmp_path / "ids.txt", 30)
    run = cli_at(emu, "--json", "upload", "aud", str(tmp_path / "ids.txt"), "--dry-run",
                 "--chunk-size", "10")
    assert run.code == 0, run.err
    assert run.json()["valid"] == 30
    assert run.json()["requests"] == 3
    assert emu.requests == []


def test_dry_run_catches_rows_that_do_not_fit_the_mode(emu: Emulator, tmp_path: Path) -> None:
    source = tmp_path / "mixed.ndjson"
    source.write_text('{"id": "a"}\n\n{"id": "b", "action": "remove"}\n"c"\n')
    document = cli_at(emu, "--json", "upload", "aud", str(source), "--dry-run").json()
    assert document["valid"] == 2
    assert [row["line"] for row in document["bad_rows"]] == [3]
    assert "--mode update" in document["bad_rows"][0]["error"]


def test_real_upload_reports_bad_rows_and_exits_1(emu: Emulator, tmp_path: Path) -> None:
    emu.add_audience("aud")
    source = tmp_path / "bad.csv"
    source.write_text(BAD_CSV)
    run = cli_at(emu, "--json", "upload", "aud", str(source), "--attr", "score:int",
                 "--attr", "signup:date", "--wait")
    assert run.code == 1
    report = run.json()
    assert report["ok"] is False
    assert report["accepted"] == 2
    assert report["failed"] == 4
    assert [row["line"] for row in report["bad_rows"]] == [3, 4, 5, 6]
    emu.settle()
    assert sorted(emu.members("aud")) == ["u1", "u6"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--format", "txt", "--attr", "x"], "--attr"),
        (["--mode", "update", "--format", "txt"], "update"),
        (["--mode", "remove", "--format", "csv", "--attr", "x"], "remove"),
        (["--action-column", "op", "--format", "csv"], "--action-column"),
        (["--chunk-size", "10001"], "10,000"),
        (["--checkpoint", "x.json", "--dry-run"], "--dry-run"),
    ],
)
def test_inconsistent_options_are_usage_errors(
    emu: Emulator, tmp_path: Path, argv: list[str], message: str
) -> None:
    write_ids(tmp_path / "ids.txt", 3)
    run = cli_at(emu, "upload", "aud", str(tmp_path / "ids.txt"), *argv)
    assert run.code == 2
    assert message in run.err
    assert emu.requests == []


def test_input_errors_exit_2(emu: Emulator, tmp_path: Path) -> None:
    missing = cli_at(emu, "upload", "aud", str(tmp_path / "nope.csv"))
    assert missing.code == 2
    assert "nope.csv" in missing.err

    (tmp_path / "a.csv").write_text("id,plan\nu1,pro\n")
    no_column = cli_at(emu, "upload", "aud", str(tmp_path / "a.csv"), "--attr", "tier")
    assert no_column.code == 2
    assert "tier" in no_column.err
    assert [r.route for r in emu.requests if r.route != "view"] == []

    stdin_checkpoint = cli_at(emu, "upload", "aud", "-", "--checkpoint", str(tmp_path / "c.json"))
    assert stdin_checkpoint.code == 2
    assert "standard input" in stdin_checkpoint.err


def test_missing_audience_is_a_failed_upload(emu: Emulator, tmp_path: Path) -> None:
    write_ids(tmp_path / "ids.txt", 20)
    run = cli_at(emu, "--json", "upload", "ghost", str(tmp_path / "ids.txt"), "--chunk-size", "10")
    assert run.code == 1
    report = run.json()
    assert report["accepted"] == 0
    assert report["failed_chunks"]
    assert report["failed_chunks"][0]["error_type"] == "NotFoundError"
    assert "ghost" in report["stop_reason"]


# -- resume ---------------------------------------------------------------------------------------


def _actions_csv(path: Path, rows: int) -> dict[str, dict[str, object]]:
    """An update-mode CSV that adds, removes and re-adds the same IDs across chunks; returns the
    content applying it row by row gives."""
    expected: dict[str, dict[str, object]] = {}
    lines = ["id,action,n"]
    for n in range(rows):
        custom_id = f"u{(n * 7) % 97}"
        if n % 5 == 3:
            lines.append(f"{custom_id},remove,")
            expected.pop(custom_id, None)
        else:
            lines.append(f"{custom_id},add,{n}")
            expected[custom_id] = {"n": n}
    path.write_text("\n".join(lines) + "\n")
    return expected


def test_resume_after_a_failed_chunk_sends_only_what_was_not_accepted(emu: Emulator, tmp_path: Path) -> None:
    emu.add_audience("aud")
    source = tmp_path / "actions.csv"
    expected = _actions_csv(source, 400)
    checkpoint = tmp_path / "aud.checkpoint"
    argv = ["upload", "aud", str(source), "--mode", "update", "--attr", "n:int", "--chunk-size", "40",
            "--concurrency", "3", "--checkpoint", str(checkpoint), "--wait"]
    # The fourth update fails for good (500 is not retried): it, and the chunks acting on its
    # IDs after it, are not accepted; the others are.
    emu.script(ScriptedResponse(500, {"error_code": "BOOM", "error_message": "boom"}, route="update"))
    first = cli_at(emu, "--json", *argv)
    assert first.code == 1, first.err
    report = first.json()
    failed = [chunk["index"] for chunk in report["failed_chunks"]]
    assert failed
    accepted = checkpoint_chunks(checkpoint)
    assert accepted
    assert set(accepted).isdisjoint(failed)
    assert sorted(set(accepted) | set(failed)) == list(range(10))
    assert SECRET_KEY not in checkpoint.read_text()

    before = len(emu.requests)
    second = cli_at(emu, "--json", *argv)
    assert second.code == 0, second.err
    resumed = second.json()
    assert resumed["skipped"] == 40 * len(accepted)
    assert resumed["accepted"] == 40 * len(failed)
    sent_again = sent_update_ids(emu, before)
    assert len(sent_again) == len(failed)  # one request per chunk not accepted, nothing more
    rows = [line.split(",")[0] for line in source.read_text().splitlines()[1:]]
    for index, body in zip(sorted(failed), sent_again, strict=True):
        assert body == rows[index * 40:(index + 1) * 40]
    emu.settle()
    assert emu.members("aud") == expected
    assert json.loads(checkpoint.read_text())["finished"] is True


def test_a_checkpoint_for_another_job_is_refused(emu: Emulator, tmp_path: Path) -> None:
    emu.add_audience("aud")
    emu.add_audience("other")
    write_ids(tmp_path / "ids.txt", 30)
    checkpoint = tmp_path / "c.json"
    base = ["upload", "aud", str(tmp_path / "ids.txt"), "--chunk-size", "10", "--checkpoint", str(checkpoint)]
    assert cli_at(emu, *base).code == 0
    assert checkpoint_chunks(checkpoint) == [0, 1, 2]
    sent = len(emu.requests)

    for argv, what in [
        (["upload", "other", *base[2:]], "audience"),
        ([*base, "--mode", "remove"], "mode"),
        ([*base[:-4], "--chunk-size", "5", *base[-2:]], "chunk size"),
    ]:
        run = cli_at(emu, *argv)
        assert run.code == 2, (argv, run.err)
        assert what in run.err
        assert "another job" in run.err
    write_ids(tmp_path / "ids.txt", 31)  # the file changed
    run = cli_at(emu, *base)
    assert run.code == 2
    assert "input file" in run.err
    (tmp_path / "junk.json").write_text("{not json")
    run = cli_at(emu, *base[:-1], str(tmp_path / "junk.json"))
    assert run.code == 2
    assert "cannot read checkpoint" in run.err
    assert len(emu.requests) == sent


def _env(emulator: Emulator) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCH_")}
    env.update(BATCH_REST_API_KEY=emulator.api_key, BATCH_PROJECT_KEY=emulator.project_key,
               BATCH_API_BASE_URL=emulator.base_url)
    return env


def _start_upload(emulator: Emulator, argv: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "batch_audiences", *argv], env=_env(emulator),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _wait_for_chunks(process: subprocess.Popen[str], checkpoint: Path, count: int) -> list[int]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        chunks = checkpoint_chunks(checkpoint)
        if len(chunks) >= count:
            return chunks
        if process.poll() is not None:
            break
        time.sleep(0.02)
    process.kill()
    out, err = process.communicate()
    pytest.fail(f"the upload did not record {count} chunks: rc={process.returncode} {out} {err}")


def _chunk_ids(ids: list[str], chunks: list[int], size: int) -> set[str]:
    return {i for index in chunks for i in ids[index * size:(index + 1) * size]}


@pytest.mark.parametrize("how", ["kill", "interrupt"])
def test_resume_after_kill_or_ctrl_c(emu: Emulator, tmp_path: Path, how: str) -> None:
    emu.add_audience("aud", ["before"])
    emu.latency = 0.05  # slow enough to stop it part-way
    ids = write_ids(tmp_path / "ids.txt", 3_000)
    checkpoint = tmp_path / "aud.checkpoint"
    argv = ["upload", "aud", str(tmp_path / "ids.txt"), "--mode", "replace", "--chunk-size", "100",
            "--concurrency", "2", "--checkpoint", str(checkpoint), "--json"]
    process = _start_upload(emu, argv)
    _wait_for_chunks(process, checkpoint, 3)
    if how == "kill":
        process.kill()
        process.communicate(timeout=30)
    else:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
        assert process.returncode == 130, err
        report = json.loads(out)
        assert report["interrupted"] is True
        assert report["ok"] is False
        assert 0 < report["accepted"] < 3_000
        assert "resume" in err
    accepted = checkpoint_chunks(checkpoint)
    assert 0 in accepted  # the replace itself
    assert len(accepted) < 30
    assert SECRET_KEY not in checkpoint.read_text()

    emu.latency = 0.0
    before = len(emu.requests)
    run = cli(*connect(emu), *argv, "--wait")
    assert run.code == 0, run.err
    report = run.json()
    assert report["skipped"] == 100 * len(accepted)
    resent = {i for body in sent_update_ids(emu, before) for i in body}
    assert resent.isdisjoint(_chunk_ids(ids, accepted, 100))
    assert resent | _chunk_ids(ids, accepted, 100) == set(ids)
    assert "replace" not in [r.route for r in emu.requests[before:]]
    emu.settle()
    assert sorted(emu.members("aud")) == ids  # as one uninterrupted replace would leave it


def test_second_ctrl_c_exits_at_once(emu: Emulator, tmp_path: Path) -> None:
    emu.add_audience("aud")
    write_ids(tmp_path / "ids.txt", 300)
    checkpoint = tmp_path / "c.json"
    # The first update hangs for a minute: the first Ctrl-C would wait for it, the second does not.
    emu.script(ScriptedResponse(action="slow", delay=60.0, route="update"))
    process = _start_upload(emu, ["upload", "aud", str(tmp_path / "ids.txt"), "--chunk-size", "100",
                                  "--concurrency", "1", "--checkpoint", str(checkpoint)])
    deadline = time.monotonic() + 30
    while not any(r.route == "update" for r in emu.requests):
        assert time.monotonic() < deadline, "the upload never started"
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _out, err = process.communicate(timeout=30)
    assert process.returncode == 130
    assert "exiting now" in err


def test_the_key_never_shows_in_upload_output_or_checkpoint(emu: Emulator, tmp_path: Path) -> None:
    emu.add_audience("aud")
    write_ids(tmp_path / "ids.txt", 50)
    checkpoint = tmp_path / "c.json"
    runs: list[Run] = [
        cli_at(emu, "-v", "upload", "aud", str(tmp_path / "ids.txt"), "--chunk-size", "10",
               "--checkpoint", str(checkpoint), "--wait"),
        cli_at(emu, "-v", "--json", "upload", "ghost", str(tmp_path / "ids.txt")),
        cli_at(emu, "-v", "upload", "aud", str(tmp_path / "ids.txt"), "--dry-run"),
    ]
    assert [run.code for run in runs] == [0, 1, 0]
    assert "DEBUG" in runs[0].err
    for run in runs:
        assert SECRET_KEY not in run.out
        assert SECRET_KEY not in run.err
    text = checkpoint.read_text()
    assert SECRET_KEY not in text
    assert SECRET_KEY[-8:] not in text
    data: dict[str, Any] = json.loads(text)
    assert data["accepted_chunks"] == [0, 1, 2, 3, 4]


def test_rejected_key_during_an_upload_exits_3(emu: Emulator, tmp_path: Path) -> None:
    emu.add_audience("aud")
    write_ids(tmp_path / "ids.txt", 30)
    run = cli("--json", "--base-url", emu.base_url, "--api-key", "some-other-key-000",
              "--project-key", emu.project_key, "upload", "aud", str(tmp_path / "ids.txt"),
              "--chunk-size", "10", "--concurrency", "1")
    assert run.code == 3
    report = run.json()
    assert report["accepted"] == 0
    assert report["failed_chunks"][0]["error_type"] == "AuthenticationError"


def test_checkpoint_is_written_atomically(emu: Emulator, tmp_path: Path) -> None:
    emu.add_audience("aud")
    write_ids(tmp_path / "ids.txt", 50)
    directory = tmp_path / "state"
    directory.mkdir()
    checkpoint = directory / "c.json"
    run = cli_at(emu, "upload", "aud", str(tmp_path / "ids.txt"), "--chunk-size", "10",
                 "--checkpoint", str(checkpoint))
    assert run.code == 0, run.err
    assert [p.name for p in directory.iterdir()] == ["c.json"]  # no temporary file left behind
    data = json.loads(checkpoint.read_text())
    assert data["job"]["audience"] == "aud"
    assert data["job"]["input"]["path"] == str((tmp_path / "ids.txt").resolve())
    assert data["finished"] is True
    assert data["chunks"] == 5


def test_an_unwritable_checkpoint_fails_before_sending(emu: Emulator, tmp_path: Path) -> None:
    emu.add_audience("aud")
    write_ids(tmp_path / "ids.txt", 5)
    run = cli_at(emu, "upload", "aud", str(tmp_path / "ids.txt"), "--checkpoint",
                 str(tmp_path / "missing-dir" / "c.json"))
    assert run.code == 2
    assert "missing-dir" in run.err
    assert emu.requests == []
