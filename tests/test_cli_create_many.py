"""``batch-audiences create-many`` against the emulator: manifests, --if-exists, report, exit codes."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from batch_audiences.testing import Emulator, FaultPlan, ScriptedResponse
from tests.test_cli import SECRET_KEY, cli, cli_at


@pytest.fixture
def emu(clean_env: pytest.MonkeyPatch) -> Iterator[Emulator]:
    with Emulator(indexing_delay=0.0, api_key=SECRET_KEY) as emulator:
        yield emulator


def test_create_many_from_csv(emu: Emulator, tmp_path: Path) -> None:
    manifest = tmp_path / "audiences.csv"
    manifest.write_text("name,display_name,owner\n" + "".join(
        f"team-{n:02d},Team {n},someone\n" for n in range(25)))
    run = cli_at(emu, "create-many", str(manifest), "--concurrency", "5")
    assert run.code == 0, run.err
    assert "created" in run.out
    assert re.search(r"^created\s+25$", run.out, re.MULTILINE), run.out
    emu.settle()
    assert emu.audience_names() == [f"team-{n:02d}" for n in range(25)]
    assert emu.audience("team-07").display_name == "Team 7"  # type: ignore[union-attr]
    assert emu.count(route="create") == 25


def test_create_many_json_report_with_failures_and_line_numbers(emu: Emulator, tmp_path: Path) -> None:
    emu.add_audience("taken")
    manifest = tmp_path / "audiences.ndjson"
    manifest.write_text(
        '{"name": "a1", "display_name": "First"}\n'   # 1
        '\n'                                          # 2 blank
        '{"name": "bad name!"}\n'                     # 3 invalid name
        '{"name": "taken"}\n'                         # 4 exists
        'not json\n'                                  # 5
        '{"name": "a2"}\n'                            # 6
        '{"name": "a1"}\n'                            # 7 repeated
    )
    run = cli_at(emu, "--json", "create-many", str(manifest))
    assert run.code == 1
    report = run.json()
    assert report["ok"] is False
    assert report["created"] == 2
    assert sorted(report["created_names"]) == ["a1", "a2"]
    assert report["skipped"] == 0
    assert [(f["line"], f["error_type"]) for f in report["failures"]] == [
        (3, "BadRow"), (4, "AudienceExistsError"), (5, "BadRow"), (7, "ValidationError")]
    assert report["failed"] == 4
    errors = [line for line in run.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, run.err
    assert "4 of 6 audiences not created" in errors[0]
    # The invalid name (a bad row of the manifest) and the repeated one never reached the server.
    assert emu.count(route="create") == 3


def test_if_exists_skip(emu: Emulator, tmp_path: Path) -> None:
    emu.add_audience("b")
    manifest = tmp_path / "m.csv"
    manifest.write_text("name\na\nb\nc\n")
    run = cli_at(emu, "--json", "create-many", str(manifest), "--if-exists", "skip")
    assert run.code == 0, run.err
    report = run.json()
    assert report["created"] == 2
    assert report["skipped_names"] == ["b"]
    emu.settle()
    assert emu.audience_names() == ["a", "b", "c"]


def test_create_many_under_faults_creates_each_once(emu: Emulator, tmp_path: Path) -> None:
    emu.faults = FaultPlan(seed=3, rate_503=0.2, retry_after=0.01)
    manifest = tmp_path / "m.csv"
    manifest.write_text("name\n" + "".join(f"x{n}\n" for n in range(30)))
    run = cli_at(emu, "--json", "--max-retries", "10", "create-many", str(manifest))
    assert run.code == 0, run.err
    report = run.json()
    assert report["created"] == 30
    assert report["retries"] > 0
    emu.settle()
    assert len(emu.audience_names()) == 30
    assert emu.count(route="create", status=202) == 30


def test_manifest_errors_exit_2(emu: Emulator, tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("title\nx\n")
    run = cli_at(emu, "create-many", str(tmp_path / "m.csv"))
    assert run.code == 2
    assert "'name'" in run.err
    missing = cli_at(emu, "create-many", str(tmp_path / "none.csv"))
    assert missing.code == 2
    assert emu.requests == []


def test_authentication_error_exits_3(emu: Emulator, tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("name\nx\ny\n")
    run = cli("--json", "--base-url", emu.base_url, "--api-key", SECRET_KEY, "--project-key",
              "project_other", "create-many", str(tmp_path / "m.csv"), "--concurrency", "1")
    assert run.code == 3
    report = json.loads(run.out)
    assert report["failures"][0]["error_type"] == "AuthenticationError"
    assert "stopped" in report["stop_reason"] or "401" in report["stop_reason"]
    assert emu.audience_names() == []
    assert SECRET_KEY not in run.out + run.err


def test_an_uncertain_create_is_listed_and_fails_the_run(emu: Emulator, tmp_path: Path) -> None:
    # The first try's answer is lost, the retry is refused, and the view has no creation time:
    # nothing tells whose audience "b1" is. It must be listed, not counted created.
    emu.script(
        ScriptedResponse(action="drop_after", route="create"),
        ScriptedResponse(200, {"name": "b1", "type": "CUSTOM_ID", "nb_ids": 0,
                               "indexing_state": "APPLIED"}, route="view"),
    )
    manifest = tmp_path / "audiences.csv"
    manifest.write_text("name\nb1\n")
    run = cli_at(emu, "--json", "create-many", str(manifest))
    assert run.code == 1, run.err
    report = json.loads(run.out)
    assert report["ok"] is False
    assert report["created"] == 0
    assert [(item["line"], item["name"]) for item in report["uncertain"]] == [(2, "b1")]
    text = cli_at(emu, "create-many", str(manifest))  # now plainly taken: skipped or failed, not uncertain
    assert "uncertain" not in text.out
