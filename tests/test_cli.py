"""The ``batch-audiences`` command against the emulator: every simple command, JSON, exit codes.

Most tests call the real entry point in-process (``main(argv, stdout=..., stderr=...)``) against an
emulator serving from a background thread; a few run ``python -m batch_audiences`` and the
console script in a subprocess, to check what a user actually types.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from batch_audiences._cli import main
from batch_audiences.testing import Emulator, ScriptedResponse

SECRET_KEY = "sk-live-cli-secret-0123456789abcdef"


@attrs.frozen
class Run:
    """What one command printed, and its exit code."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture
def emu(clean_env: pytest.MonkeyPatch) -> Iterator[Emulator]:
    """An emulator on a background thread (the CLI runs its own event loop)."""
    with Emulator(indexing_delay=0.0, api_key=SECRET_KEY) as emulator:
        yield emulator


def connect(emulator: Emulator) -> list[str]:
    return ["--base-url", emulator.base_url, "--api-key", emulator.api_key,
            "--project-key", emulator.project_key]


def cli(*argv: str) -> Run:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return Run(code, out.getvalue(), err.getvalue())


def cli_at(emulator: Emulator, *argv: str) -> Run:
    return cli(*connect(emulator), *argv)


# -- help -----------------------------------------------------------------------------------------


COMMANDS = ["create", "remove", "view", "list", "wait", "upload", "create-many", "emulator", "demo"]


def test_top_level_help_lists_every_command_and_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for command in COMMANDS:
        assert f"    {command} " in text
    for code in ("0 ", "1 ", "2 ", "3 ", "130"):
        assert f"\n  {code}" in text
    assert "BATCH_REST_API_KEY" in text


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([command, "--help"]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: batch-audiences {command}")
    assert "exit codes" in text


def test_no_command_is_a_usage_error() -> None:
    run = cli()
    assert run.code == 2
    assert run.err.startswith("error: no command given")
    assert run.err.count("\n") == 1
    assert "--help" in run.err


@pytest.mark.parametrize(
    ("argv", "named"),
    [(["list", "--limit", "zero"], "--limit"), (["upload", "vip"], "FILE"), (["nonsense"], "nonsense")],
)
def test_bad_arguments_exit_2_with_one_line(
    argv: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run = cli(*argv)
    assert run.code == 2
    assert run.err.startswith("error: ")
    assert run.err.count("\n") == 1, run.err
    assert named in run.err
    assert run.out == ""
    assert capsys.readouterr() == ("", "")  # nothing behind the caller's back on the real streams


# -- commands -------------------------------------------------------------------------------------


def test_create_view_wait_list_remove(emu: Emulator) -> None:
    run = cli_at(emu, "create", "vip", "--display-name", "VIP customers")
    assert run.code == 0, run.err
    assert "vip" in run.out
    emu.settle()
    assert emu.audience("vip") is not None
    assert emu.audience("vip").display_name == "VIP customers"  # type: ignore[union-attr]

    emu.add_audience("churn", ["a", "b", "c"])
    run = cli_at(emu, "view", "churn")
    assert run.code == 0
    assert "IDs" in run.out
    assert re.search(r"^IDs\s+3$", run.out, re.MULTILINE), run.out

    run = cli_at(emu, "wait", "churn", "--timeout", "5", "--poll-interval", "0.01")
    assert run.code == 0
    assert "APPLIED" in run.out

    run = cli_at(emu, "list")
    assert run.code == 0
    assert "churn" in run.out
    assert "vip" in run.out
    assert "2 audiences" in run.out

    run = cli_at(emu, "remove", "vip")
    assert run.code == 0, run.err
    emu.settle()
    assert emu.audience_names() == ["churn"]


def test_json_output_of_each_command(emu: Emulator) -> None:
    created = cli_at(emu, "--json", "create", "vip")
    assert created.code == 0
    document = created.json()
    assert document["name"] == "vip"
    assert document["created"] is True
    token = document["indexing_token"]
    assert isinstance(token, str)
    assert token

    emu.add_audience("churn", ["a", "b"], display_name="Churn risk")
    view = cli_at(emu, "view", "churn", "--json").json()
    assert view["name"] == "churn"
    assert view["nb_ids"] == 2
    assert view["display_name"] == "Churn risk"
    assert view["indexing_state"] == "APPLIED"
    assert view["created"].endswith("Z")

    waited = cli_at(emu, "wait", "vip", "--token", token, "--json", "--poll-interval", "0.01").json()
    assert waited["name"] == "vip"
    assert waited["indexing_state"] == "APPLIED"

    listed = cli_at(emu, "list", "--json").json()
    assert listed["count"] == 2
    assert listed["has_more"] is False
    assert sorted(a["name"] for a in listed["audiences"]) == ["churn", "vip"]

    removed = cli_at(emu, "remove", "churn", "--json").json()
    assert removed == {"name": "churn", "removed": True, "indexing_token": removed["indexing_token"]}


def test_list_limit_and_all_page_through(emu: Emulator) -> None:
    for index in range(130):
        emu.add_audience(f"aud-{index:03d}")
    limited = cli_at(emu, "list", "--limit", "5", "--json").json()
    assert len(limited["audiences"]) == 5
    assert limited["count"] == 130
    assert limited["has_more"] is True

    more = cli_at(emu, "list", "--limit", "120", "--json").json()
    assert len(more["audiences"]) == 120

    everything = cli_at(emu, "list", "--all", "--json").json()
    assert sorted(a["name"] for a in everything["audiences"]) == emu.audience_names()
    assert everything["has_more"] is False
    assert len(emu.requests) > 0
    list_requests = [r for r in emu.requests if r.route == "list"]
    assert [r.query.get("limit") for r in list_requests[-2:]] == ["100", "100"]

    text = cli_at(emu, "list", "--limit", "3")
    assert "3 audiences of 130 (--all for every one)" in text.out


def test_exit_code_1_when_the_api_says_no(emu: Emulator) -> None:
    emu.add_audience("vip")
    run = cli_at(emu, "create", "vip")
    assert run.code == 1
    assert run.err.startswith("error: ")
    assert "already exists" in run.err
    assert run.err.count("\n") == 1
    assert "Traceback" not in run.err

    missing = cli_at(emu, "view", "ghost")
    assert missing.code == 1
    assert "ghost" in missing.err


def test_wait_timeout_exits_1(emu: Emulator) -> None:
    emu.indexing_delay = 30.0
    assert cli_at(emu, "create", "slow").code == 0
    run = cli_at(emu, "wait", "slow", "--timeout", "0.2", "--poll-interval", "0.05")
    assert run.code == 1
    assert "IN_PROGRESS" in run.err


def test_invalid_name_is_exit_2_and_sends_nothing(emu: Emulator) -> None:
    run = cli_at(emu, "create", "not a valid name!")
    assert run.code == 2
    assert "name" in run.err
    assert emu.requests == []


def test_authentication_and_configuration_errors_exit_3(emu: Emulator, clean_env: pytest.MonkeyPatch) -> None:
    wrong = cli("--base-url", emu.base_url, "--api-key", "not-the-right-key-42",
                "--project-key", emu.project_key, "list")
    assert wrong.code == 3
    assert "401" in wrong.err

    missing = cli("--base-url", emu.base_url, "list")
    assert missing.code == 3
    assert "BATCH_REST_API_KEY" in missing.err
    assert "--api-key" in missing.err

    bad_url = cli("--base-url", "ftp://example.com", "--api-key", "k", "--project-key", "p", "list")
    assert bad_url.code == 3
    assert "base_url" in bad_url.err


def test_environment_variables_are_the_defaults(emu: Emulator, clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("BATCH_REST_API_KEY", emu.api_key)
    clean_env.setenv("BATCH_PROJECT_KEY", emu.project_key)
    clean_env.setenv("BATCH_API_BASE_URL", emu.base_url)
    emu.add_audience("vip")
    run = cli("list", "--json")
    assert run.code == 0, run.err
    assert [a["name"] for a in run.json()["audiences"]] == ["vip"]


def test_global_options_work_after_the_command_too(emu: Emulator) -> None:
    emu.add_audience("vip")
    run = cli("view", "vip", *connect(emu), "--json", "--api-version", "2.9")
    assert run.code == 0, run.err
    assert run.json()["name"] == "vip"
    assert emu.requests[-1].path.startswith("/2.9/")


def test_retries_are_transparent(emu: Emulator) -> None:
    emu.add_audience("vip")
    emu.script(ScriptedResponse(503, {"error_code": "MAINTENANCE", "error_message": "later"},
                                {"Retry-After": "0.01"}))
    run = cli_at(emu, "view", "vip", "--json")
    assert run.code == 0, run.err
    assert emu.count(route="view", status=503) == 1
    assert emu.count(route="view", status=200) == 1


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_nothing_listening_is_one_line_at_once(
    free_port: int, host: str, clean_env: pytest.MonkeyPatch
) -> None:
    url = f"http://{host}:{free_port}"
    # -v logs every attempt and retry: there must be none, the refusal is reported at once.
    run = cli("--base-url", url, "--api-key", SECRET_KEY, "--project-key", "p", "-v", "list")
    assert run.code == 1
    assert run.err == f"error: nothing is listening at {url} (connection refused)\n"


def test_the_api_key_never_shows(emu: Emulator, tmp_path: Path) -> None:
    emu.add_audience("vip")
    outputs = [
        cli_at(emu, "-v", "view", "vip"),
        cli_at(emu, "-v", "--json", "list"),
        cli_at(emu, "-v", "view", "ghost"),
        cli_at(emu, "-v", "create", "bad name"),
        cli("-v", "--base-url", emu.base_url, "--api-key", SECRET_KEY, "--project-key", "wrong", "list"),
    ]
    assert outputs[0].code == 0
    assert outputs[2].code == 1
    assert outputs[4].code == 3
    assert "DEBUG" in outputs[0].err  # -v really logged the requests
    assert "Traceback" in outputs[2].err  # and showed the traceback
    for run in outputs:
        assert SECRET_KEY not in run.out
        assert SECRET_KEY not in run.err


# -- the real entry points ------------------------------------------------------------------------


def _env(emulator: Emulator) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCH_")}
    env.update(BATCH_REST_API_KEY=emulator.api_key, BATCH_PROJECT_KEY=emulator.project_key,
               BATCH_API_BASE_URL=emulator.base_url)
    return env


def test_python_dash_m_runs_the_cli(emu: Emulator) -> None:
    emu.add_audience("vip", ["u1"])
    done = subprocess.run([sys.executable, "-m", "batch_audiences", "view", "vip", "--json"],
                          env=_env(emu), capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["nb_ids"] == 1


def test_console_script_is_installed(emu: Emulator) -> None:
    script = Path(sys.executable).with_name("batch-audiences")
    if not script.exists():
        pytest.skip("the console script is not installed in this environment (pip install -e .)")
    done = subprocess.run([str(script), "list", "--json"], env=_env(emu), capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["count"] == 0


def test_emulator_command_serves_until_ctrl_c(clean_env: pytest.MonkeyPatch) -> None:
    import signal

    process = subprocess.Popen(
        [sys.executable, "-m", "batch_audiences", "emulator", "--port", "0", "--rate", "50",
         "--fail-rate", "0", "--api-key", SECRET_KEY],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert "listening on http://127.0.0.1:" in first, process.stderr.read() if process.stderr else ""
        base_url = first.rsplit(" ", 1)[-1].strip()
        created = cli("--base-url", base_url, "--api-key", SECRET_KEY, "--project-key", "project_emulator",
                      "create", "from-cli")
        assert created.code == 0, created.err
        listed = cli("--base-url", base_url, "--api-key", SECRET_KEY, "--project-key", "project_emulator",
                     "--json", "list")
        assert [a["name"] for a in listed.json()["audiences"]] == ["from-cli"]
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "Emulator stopped." in out


def test_emulator_command_rejects_a_bad_fail_rate(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["emulator", "--fail-rate", "2"]) == 2
    assert "--fail-rate" in capsys.readouterr().err


# -- the progress renderer ------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_on_a_terminal_rewrites_one_line() -> None:
    from batch_audiences._cli._output import Console
    from batch_audiences._cli._progress import Progress

    err = FakeTerminal()
    clock = FakeClock()
    progress = Progress(Console(err=err), "upload vip", unit="IDs", total=1000, clock=clock)
    for done in (100, 200, 500):
        clock.now += 1.0
        progress.update(done=done, retries=2)
    progress.close()
    text = err.getvalue()
    frames = text.split("\r")[1:]
    assert len(frames) == 4  # three updates and the final draw, each rewriting the line
    assert "\n" not in "".join(frames[:-1])
    assert frames[-1].endswith("\x1b[K\n")
    bar = frames[2][frames[2].index("[") + 1:frames[2].index("]")]
    assert abs(bar.count("#") - bar.count("-")) <= 1  # half full
    assert "50%" in frames[2]
    assert "500/1,000 IDs" in frames[2]
    assert "2 retries" in frames[2]
    assert "ETA" in frames[2]


def test_progress_without_a_terminal_logs_plain_lines_periodically() -> None:
    from batch_audiences._cli._output import Console
    from batch_audiences._cli._progress import Progress

    err = io.StringIO()
    clock = FakeClock()
    progress = Progress(Console(err=err), "upload vip", unit="IDs", total=None, clock=clock, interval=5.0)
    for _ in range(12):
        clock.now += 1.0
        progress.update(done=progress.done + 1000)
    progress.close()
    lines = err.getvalue().splitlines()
    assert len(lines) == 3  # at 5 s, at 10 s, and the final one
    assert "\r" not in err.getvalue()
    assert "\x1b" not in err.getvalue()
    assert lines[-1].startswith("upload vip  12,000 IDs")
    assert "1,000/s" in lines[-1]


def test_quiet_silences_progress() -> None:
    from batch_audiences._cli._output import Console
    from batch_audiences._cli._progress import Progress

    err = FakeTerminal()
    progress = Progress(Console(err=err, quiet=True), "x", total=10)
    progress.update(done=5, force=True)
    progress.close()
    assert err.getvalue() == ""


def test_a_server_gone_after_the_start_is_retried_then_named(clean_env: pytest.MonkeyPatch) -> None:
    import socket
    import threading

    # Something listens for the start-up check only, then goes away: the request itself is refused.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]

    def accept_once() -> None:
        connection, _ = listener.accept()
        listener.close()
        connection.close()

    thread = threading.Thread(target=accept_once)
    thread.start()
    try:
        url = f"http://127.0.0.1:{port}"
        run = cli("--base-url", url, "--api-key", SECRET_KEY, "--project-key", "p", "--max-retries", "1",
                  "list")
    finally:
        thread.join(timeout=30)
    assert run.code == 1
    assert run.err.count("\n") == 1
    assert "failed after 2 attempt(s)" in run.err
    assert run.err.rstrip().endswith(f"(nothing is listening at {url}: connection refused)")
