"""``batch-audiences upload``: its error lines, ``--create``, ``--encoding``, ``--rejects``,
``--max-bad-rows`` and a finished checkpoint, through the console entry point and the emulator."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from batch_audiences._cli import main
from batch_audiences.testing import Emulator, ScriptedResponse
from tests.test_cli import SECRET_KEY, cli_at


@pytest.fixture
def emu(clean_env: pytest.MonkeyPatch) -> Iterator[Emulator]:
    with Emulator(indexing_delay=0.0, api_key=SECRET_KEY) as emulator:
        yield emulator


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error:")]


# -- one error line on stderr ---------------------------------------------------------------------


def test_missing_audience_is_one_error_line_and_once_in_the_report(emu: Emulator, tmp_path: Path) -> None:
    (tmp_path / "ids.txt").write_text("a\nb\n")
    run = cli_at(emu, "upload", "ghost", str(tmp_path / "ids.txt"))
    assert run.code == 1
    errors = error_lines(run.err)
    assert len(errors) == 1, run.err
    assert "no audience named 'ghost'" in errors[0]
    assert "--create" in errors[0]
    assert run.out.count("no audience named 'ghost'") == 1, run.out


def test_rejected_key_is_one_error_line_exit_3(emu: Emulator, tmp_path: Path) -> None:
    emu.add_audience("vip")
    (tmp_path / "ids.txt").write_text("a\nb\n")
    run = cli_at(emu, "--api-key", "wrong-key", "upload", "vip", str(tmp_path / "ids.txt"))
    assert run.code == 3
    errors = error_lines(run.err)
    assert len(errors) == 1, run.err
    assert "401" in errors[0]
    assert "wrong-key" not in run.err + run.out


def test_an_input_error_prints_no_progress_line_before_it(emu: Emulator, tmp_path: Path) -> None:
    emu.add_audience("vip")
    (tmp_path / "c.csv").write_text("id,plan\na,x\n")
    run = cli_at(emu, "upload", "vip", str(tmp_path / "c.csv"), "--attr", "nope")
    assert run.code == 2
    assert run.err == "error: line 1: no column 'nope' (attributes); the header has 'id', 'plan'\n"


def test_unknown_attribute_type_is_named_and_the_known_ones_listed(emu: Emulator, tmp_path: Path) -> None:
    (tmp_path / "c.csv").write_text("id,plan\na,x\n")
    run = cli_at(emu, "upload", "vip", str(tmp_path / "c.csv"), "--attr", "plan:integer")
    assert run.code == 2
    assert run.err.count("\n") == 1, run.err
    assert "unknown type 'integer'" in run.err
    assert "str, int, float, bool, date, url" in run.err
    assert "no column" not in run.err
    assert emu.requests == []


def test_a_column_name_with_a_colon_takes_its_type(emu: Emulator, tmp_path: Path) -> None:
    emu.add_audience("vip")
    (tmp_path / "c.csv").write_text("id,a:b\nu1,x\n")
    run = cli_at(emu, "upload", "vip", str(tmp_path / "c.csv"), "--attr", "a:b:str", "--wait")
    assert run.code == 0, run.err
    emu.settle()
    assert emu.members("vip") == {"u1": {"a:b": "x"}}


def test_rows_that_do_not_fit_the_mode_get_the_engines_reason(emu: Emulator, tmp_path: Path) -> None:
    source = tmp_path / "mixed.ndjson"
    source.write_text('{"id": "a"}\n{"id": "b", "action": "remove"}\n{"id": "c", "attributes": {"k": 1}}\n')
    document = cli_at(emu, "--json", "upload", "aud", str(source), "--mode", "remove", "--dry-run").json()
    assert [row["line"] for row in document["bad_rows"]] == [3]
    assert "takes no attributes" in document["bad_rows"][0]["error"]
    document = cli_at(emu, "--json", "upload", "aud", str(source), "--dry-run").json()
    assert [row["line"] for row in document["bad_rows"]] == [2]
    assert "adds only" in document["bad_rows"][0]["error"]
    assert "--mode update" in document["bad_rows"][0]["error"]


# -- --create ---------------------------------------------------------------------------------------


def test_create_makes_a_missing_audience_and_keeps_an_existing_one(emu: Emulator, tmp_path: Path) -> None:
    (tmp_path / "ids.txt").write_text("a\nb\n")
    run = cli_at(emu, "upload", "fresh", str(tmp_path / "ids.txt"), "--create", "--wait")
    assert run.code == 0, run.err
    emu.settle()
    assert sorted(emu.members("fresh")) == ["a", "b"]

    (tmp_path / "more.txt").write_text("c\n")
    run = cli_at(emu, "upload", "fresh", str(tmp_path / "more.txt"), "--create", "--wait")
    assert run.code == 0, run.err
    emu.settle()
    assert sorted(emu.members("fresh")) == ["a", "b", "c"]
    assert emu.count(route="create") == 2


# -- --encoding -------------------------------------------------------------------------------------


def test_encoding_reads_latin_1_csv(emu: Emulator, tmp_path: Path) -> None:
    emu.add_audience("fr")
    (tmp_path / "fr.csv").write_bytes("id,ville\nu1,Orléans\nu2,Besançon\n".encode("latin-1"))
    plain = cli_at(emu, "--json", "upload", "fr", str(tmp_path / "fr.csv"), "--attr", "ville", "--dry-run")
    assert plain.json()["bad_rows_count"] == 2  # not UTF-8
    run = cli_at(emu, "upload", "fr", str(tmp_path / "fr.csv"), "--attr", "ville", "--encoding", "latin-1",
                 "--wait")
    assert run.code == 0, run.err
    emu.settle()
    assert emu.members("fr") == {"u1": {"ville": "Orléans"}, "u2": {"ville": "Besançon"}}


@pytest.mark.parametrize(
    ("encoding", "message"), [("utf-16", "not supported"), ("klingon", "unknown encoding")]
)
def test_unusable_encodings_are_usage_errors(
    emu: Emulator, tmp_path: Path, encoding: str, message: str
) -> None:
    (tmp_path / "ids.txt").write_text("a\n")
    run = cli_at(emu, "upload", "x", str(tmp_path / "ids.txt"), "--encoding", encoding)
    assert run.code == 2
    assert run.err.count("\n") == 1
    assert message in run.err


# -- --rejects ----------------------------------------------------------------------------------------

BAD_CSV = (
    "id,score,note\n"
    "u1,1,fine\n"
    "u2,two,\"multi\nline\"\n"   # 3-4: not an integer (a record over two lines)
    ",3,no id\n"                  # 5
    "u4,4\n"                      # 6: too few fields
    "u5,5,fine\n"
)


def test_rejects_csv_keeps_the_rows_as_csv_with_line_and_reason(emu: Emulator, tmp_path: Path) -> None:
    emu.add_audience("aud")
    (tmp_path / "in.csv").write_text(BAD_CSV)
    rejects = tmp_path / "rejects.csv"
    run = cli_at(emu, "upload", "aud", str(tmp_path / "in.csv"), "--attr", "score:int",
                 "--rejects", str(rejects), "--wait")
    assert run.code == 1
    assert len(error_lines(run.err)) == 1
    assert str(rejects) in error_lines(run.err)[0]
    rows = list(csv.reader(io.StringIO(rejects.read_text())))
    assert rows[0] == ["_line", "_error", "id", "score", "note"]
    assert [row[0] for row in rows[1:]] == ["3", "5", "6"]
    assert rows[1][2:] == ["u2", "two", "multi\nline"]
    assert "integer" in rows[1][1]
    assert rows[2][2:] == ["", "3", "no id"]
    assert rows[3][2:] == ["u4", "4"]
    emu.settle()
    assert sorted(emu.members("aud")) == ["u1", "u5"]


def test_rejects_ndjson_and_text(emu: Emulator, tmp_path: Path) -> None:
    (tmp_path / "in.ndjson").write_text('{"id": "a"}\n{"nope": 1}\nnot json\n"b"\n')
    rejects = tmp_path / "rejects.ndjson"
    run = cli_at(emu, "upload", "aud", str(tmp_path / "in.ndjson"), "--dry-run", "--rejects", str(rejects))
    assert run.code == 1
    written = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert [(row["line"], "row" in row, "text" in row) for row in written] == [
        (2, True, False), (3, False, True)
    ]
    assert written[0]["row"] == {"nope": 1}
    assert written[1]["text"] == "not json"
    assert all(row["error"] for row in written)

    (tmp_path / "in.txt").write_bytes(b"good\ncaf\xe9\n\nok\n\xff\xfe\n")
    rejects = tmp_path / "rejects.txt"
    run = cli_at(emu, "upload", "aud", str(tmp_path / "in.txt"), "--dry-run", "--rejects", str(rejects))
    assert run.code == 1
    lines = rejects.read_text().splitlines()
    assert [line.split("\t", 2)[:2] for line in lines] == [["2", "not valid utf-8"], ["5", "not valid utf-8"]]
    assert lines[0].split("\t", 2)[2] == "caf\ufffd"


def test_rejects_holds_every_bad_row_beyond_what_the_report_keeps(emu: Emulator, tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_bytes(b"".join(b"\xff\n" if n % 2 else b"ok\n" for n in range(24_000)))
    rejects = tmp_path / "rejects.txt"
    run = cli_at(emu, "--json", "upload", "aud", str(tmp_path / "in.txt"), "--dry-run",
                 "--rejects", str(rejects))
    document = run.json()
    assert document["bad_rows_count"] == 12_000
    assert len(document["bad_rows"]) == 10_000
    assert len(rejects.read_text().splitlines()) == 12_000


# -- --max-bad-rows -----------------------------------------------------------------------------------


def test_max_bad_rows_stops_keeps_the_checkpoint_and_a_rerun_resumes(emu: Emulator, tmp_path: Path) -> None:
    emu.add_audience("aud")
    good = [f"id-{n:03d}" for n in range(40)]
    # 20 good rows, then 5 bad ones (not UTF-8), then 20 good ones.
    source = tmp_path / "in.txt"
    source.write_bytes("".join(f"{i}\n" for i in good[:20]).encode() + b"\xff\n" * 5
                       + "".join(f"{i}\n" for i in good[20:]).encode())
    checkpoint = tmp_path / "job.ckpt"
    argv = ["upload", "aud", str(source), "--chunk-size", "10", "--checkpoint", str(checkpoint), "--wait"]
    run = cli_at(emu, "--json", *argv, "--max-bad-rows", "3")
    assert run.code == 1
    assert len(error_lines(run.err)) == 1
    assert "--max-bad-rows" in error_lines(run.err)[0]
    report = run.json()
    assert report["max_bad_rows_reached"] is True
    assert report["accepted"] == 20
    assert 3 <= report["bad_rows_count"] <= 5
    saved = json.loads(checkpoint.read_text())
    assert saved["accepted_chunks"] == [0, 1]
    assert saved["finished"] is False
    emu.settle()
    assert sorted(emu.members("aud")) == good[:20]

    sent_before = emu.count(route="update")
    run = cli_at(emu, "--json", *argv)  # the same job, without the limit: resumes
    assert run.code == 1  # the bad rows are still bad
    assert run.json()["skipped"] == 20
    assert emu.count(route="update") == sent_before + 2
    emu.settle()
    assert sorted(emu.members("aud")) == good


def test_max_bad_rows_before_anything_is_read_sends_no_empty_replace(emu: Emulator, tmp_path: Path) -> None:
    emu.add_audience("aud", ["keep-me"])
    source = tmp_path / "in.txt"
    source.write_bytes(b"\xff\n" * 50 + "".join(f"id-{n}\n" for n in range(5)).encode())
    run = cli_at(emu, "upload", "aud", str(source), "--mode", "replace", "--max-bad-rows", "2")
    assert run.code == 1
    assert "--max-bad-rows" in error_lines(run.err)[0]
    assert emu.count(route="replace") == 0
    emu.settle()
    assert sorted(emu.members("aud")) == ["keep-me"]


# -- a finished checkpoint ------------------------------------------------------------------------------


def test_a_finished_job_run_again_is_already_done_and_sends_nothing(emu: Emulator, tmp_path: Path) -> None:
    emu.add_audience("aud")
    source = tmp_path / "in.txt"
    source.write_text("".join(f"id-{n}\n" for n in range(25)))
    checkpoint = tmp_path / "job.ckpt"
    argv = ["upload", "aud", str(source), "--chunk-size", "10", "--checkpoint", str(checkpoint)]
    assert cli_at(emu, *argv).code == 0
    saved = json.loads(checkpoint.read_text())
    assert saved["finished"] is True
    assert saved["chunks"] == 3
    requests = len(emu.requests)

    run = cli_at(emu, *argv)
    assert run.code == 0, run.err
    assert run.out.startswith("already done")
    assert "upload aud" not in run.err  # no progress line: nothing was read
    assert len(emu.requests) == requests
    assert cli_at(emu, "--json", *argv).json()["already_done"] is True


def test_console_script_reports_errors_on_stderr_only(emu: Emulator, tmp_path: Path) -> None:
    (tmp_path / "ids.txt").write_text("a\n")
    env = {**os.environ, "BATCH_API_BASE_URL": emu.base_url, "BATCH_REST_API_KEY": emu.api_key,
           "BATCH_PROJECT_KEY": emu.project_key}
    script = Path(sys.executable).with_name("batch-audiences")
    done = subprocess.run([str(script), "upload", "ghost", str(tmp_path / "ids.txt"), "--json"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 1
    assert json.loads(done.stdout)["ok"] is False
    assert len(error_lines(done.stderr)) == 1
    assert "ghost" in error_lines(done.stderr)[0]


def test_rejects_never_overwrites_the_input(emu: Emulator, tmp_path: Path) -> None:
    source = tmp_path / "in.txt"
    source.write_bytes(b"a\n\xff\n")
    run = cli_at(emu, "upload", "aud", str(source), "--dry-run", "--rejects", str(source))
    assert run.code == 2
    assert "would be overwritten" in run.err
    assert source.read_bytes() == b"a\n\xff\n"


def test_rejects_csv_header_when_the_first_bad_row_is_far_down(emu: Emulator, tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text("id,score\n" + "".join(f"u{n},{n}\n" for n in range(3000)) + "late,x\n")
    rejects = tmp_path / "rejects.csv"
    run = cli_at(emu, "upload", "aud", str(source), "--attr", "score:int", "--dry-run",
                 "--rejects", str(rejects))
    assert run.code == 1
    assert list(csv.reader(io.StringIO(rejects.read_text()))) == [
        ["_line", "_error", "id", "score"], ["3002", "column 'score': not an integer: 'x'", "late", "x"]
    ]


def test_rejects_a_row_that_does_not_fit_after_another_bad_row(emu: Emulator, tmp_path: Path) -> None:
    (tmp_path / "in.ndjson").write_text('{"id": "a"}\nnot json\n\n{"id": "b", "action": "remove"}\n')
    rejects = tmp_path / "rejects.ndjson"
    run = cli_at(emu, "upload", "aud", str(tmp_path / "in.ndjson"), "--dry-run",
                 "--rejects", str(rejects))
    assert run.code == 1
    written = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert [row["line"] for row in written] == [2, 4]
    assert written[1]["row"] == {"id": "b", "action": "remove"}


# -- --late-write-grace ------------------------------------------------------------------------


def test_late_write_grace_is_in_the_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["upload", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--late-write-grace S" in text
    assert "(default: 5.0;" in text.split("--late-write-grace S")[-1]


@pytest.mark.parametrize("bad", ["-1", "nan", "inf", "soon"])
def test_a_bad_late_write_grace_is_a_usage_error(emu: Emulator, tmp_path: Path, bad: str) -> None:
    emu.add_audience("vip")
    (tmp_path / "ids.txt").write_text("a\n")
    run = cli_at(emu, "upload", "vip", str(tmp_path / "ids.txt"), f"--late-write-grace={bad}")
    assert run.code == 2
    assert "--late-write-grace" in run.err
    assert "0 or more" in run.err or "expected a number" in run.err
    assert emu.requests == []


def wait_quiet(emulator: Emulator, timeout: float = 10.0) -> None:
    """Until no request is held by the emulator (a held write has been applied, late)."""
    deadline = time.monotonic() + timeout
    while any(r.outcome == "in_flight" for r in emulator.requests):
        assert time.monotonic() < deadline, "a request is still in flight"
        time.sleep(0.02)
    emulator.settle()


@pytest.mark.parametrize(("grace", "member_left"), [("0", True), ("4", False)])
def test_late_write_grace_reaches_the_engine(
    emu: Emulator, tmp_path: Path, grace: str, member_left: bool
) -> None:
    # The first try of "add u" times out and is applied 3 s later, after the retry was answered.
    # With no grace the "remove u" that follows goes out at once and the late add lands after it:
    # u is back. With a grace longer than the hold, the upload waits it out: u stays removed.
    emu.add_audience("vip")
    emu.script(ScriptedResponse(action="hold", delay=3.0, route="update"))
    (tmp_path / "ids.ndjson").write_text('{"id": "u", "action": "add"}\n{"id": "u", "action": "remove"}\n')
    run = cli_at(
        emu, "--http-timeout", "0.3", "upload", "vip", str(tmp_path / "ids.ndjson"), "--mode", "update",
        "--chunk-size", "1", "--concurrency", "1", "--wait", "--late-write-grace", grace,
    )
    assert run.code == 0, run.err
    wait_quiet(emu)
    assert [r.outcome for r in emu.requests].count("held") == 1
    assert ("u" in emu.members("vip")) is member_left
