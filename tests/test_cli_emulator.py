"""The standalone emulator from a shell: its banner, its inspection routes and ``emulator-dump``."""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from batch_audiences.testing import Emulator
from batch_audiences.testing._cli import add_arguments, build_emulator
from tests.test_cli import SECRET_KEY, cli, cli_at


@pytest.fixture
def emu(clean_env: pytest.MonkeyPatch) -> Iterator[Emulator]:
    with Emulator(indexing_delay=0.0, api_key=SECRET_KEY) as emulator:
        yield emulator


def get(url: str, headers: dict[str, str]) -> tuple[int, object]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def test_inspection_routes_show_the_applied_state_and_are_not_api_traffic(emu: Emulator) -> None:
    emu.add_audience("vip", {"u1": {"plan": "pro"}, "u2": {}}, display_name="VIP")
    emu.add_audience("empty")
    status, body = get(f"{emu.base_url}/_emulator/audiences", emu.auth_headers)
    assert status == 200
    applied = {"indexing_state": "APPLIED", "pending_writes": 0}
    assert body == {"audiences": [
        {"name": "empty", "display_name": None, "nb_ids": 0, **applied},
        {"name": "vip", "display_name": "VIP", "nb_ids": 2, **applied},
    ]}
    status, body = get(f"{emu.base_url}/_emulator/audiences/vip/members", emu.auth_headers)
    assert status == 200
    assert body == {"name": "vip", "nb_ids": 2, "pending_writes": 0,
                    "members": {"u1": {"plan": "pro"}, "u2": {}}}

    assert get(f"{emu.base_url}/_emulator/audiences/ghost/members", emu.auth_headers)[0] == 404
    assert get(f"{emu.base_url}/_emulator/audiences", {})[0] == 401
    assert get(f"{emu.base_url}/_emulator/nothing", emu.auth_headers)[0] == 404
    assert emu.requests == []  # the emulator's own routes are not recorded as API requests


def test_emulator_dump_lists_audiences_and_members(emu: Emulator) -> None:
    emu.add_audience("vip", {"u2": {}, "u1": {"plan": "pro", "score": 3}})
    run = cli_at(emu, "emulator-dump")
    assert run.code == 0, run.err
    assert "vip" in run.out
    assert run.out.splitlines()[2].split() == ["vip", "2", "APPLIED", "0"]

    run = cli_at(emu, "emulator-dump", "vip")
    assert run.code == 0, run.err
    rows = [line.split(None, 1) for line in run.out.splitlines()[2:]]
    assert rows == [["u1", '{"plan": "pro", "score": 3}'], ["u2"]]

    document = cli_at(emu, "--json", "emulator-dump", "vip").json()
    assert document["members"] == emu.members("vip")


def test_emulator_dump_sees_what_an_upload_wrote(emu: Emulator, tmp_path: Path) -> None:
    path = tmp_path / "ids.txt"
    path.write_text("a\nb\nc\n")
    assert cli_at(emu, "upload", "fresh", str(path), "--create", "--wait").code == 0
    document = cli_at(emu, "--json", "emulator-dump", "fresh").json()
    assert sorted(document["members"]) == ["a", "b", "c"]


def test_emulator_dump_errors_are_one_line(emu: Emulator, free_port: int) -> None:
    run = cli_at(emu, "emulator-dump", "ghost")
    assert run.code == 1
    assert run.err.count("\n") == 1
    assert "no audience named 'ghost'" in run.err

    run = cli("--base-url", f"http://127.0.0.1:{free_port}", "emulator-dump")
    assert run.code == 1
    assert run.err == f"error: nothing is listening at http://127.0.0.1:{free_port} (connection refused)\n"

    run = cli("--base-url", "https://api.batch.com", "--api-key", SECRET_KEY, "emulator-dump")
    assert run.code == 2
    assert "loopback" in run.err
    assert SECRET_KEY not in run.err


def test_banner_lists_every_emulator_option_in_force(clean_env: pytest.MonkeyPatch) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "batch_audiences", "emulator", "--port", "0", "--rate", "50",
         "--fail-rate", "0.2", "--seed", "3", "--latency", "0.01"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    banner: list[str] = []
    try:
        assert process.stdout is not None
        while not banner or not banner[-1].startswith("Press Ctrl-C"):
            line = process.stdout.readline()
            assert line, process.stderr.read() if process.stderr else ""
            banner.append(line.rstrip("\n"))
        base_url = banner[0].rsplit(" ", 1)[-1]
        dumped = cli("--base-url", base_url, "--json", "emulator-dump")
        assert dumped.code == 0, dumped.err
        assert dumped.json() == {"audiences": []}
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)
    options = next(line for line in banner if line.strip().startswith("options:"))
    assert "--rate 50 " in options
    assert "--fail-rate 0.2 " in options
    assert "--seed 3 " in options
    assert "--latency 0.01" in options
    # Every option the emulator command takes is on the banner, whoever adds it.
    probe = argparse.ArgumentParser()
    add_arguments(probe)
    for dest in vars(probe.parse_args([])):
        if dest not in ("host", "port", "api_key", "project_key"):
            assert f"--{dest.replace('_', '-')} " in options + " ", dest
    assert any("/_emulator/audiences" in line for line in banner)


def test_the_command_line_emulator_keeps_no_request_bodies() -> None:
    # Nothing outside its process can read them: keeping them would hold every ID ever sent.
    probe = argparse.ArgumentParser()
    add_arguments(probe)
    emulator = build_emulator(probe.parse_args([]))
    assert emulator.record_bodies is False
