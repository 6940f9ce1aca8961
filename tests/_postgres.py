"""A throwaway PostgreSQL server for the tests that need a real one.

The server is Debian's ``postgresql`` package (``.ci/run`` installs it), started from its own
binaries in a temporary directory on a free loopback port, with password authentication so that
the tests see the same kind of URL users write. It lives for the whole test session.

Where the binaries are absent, the tests that ask for it skip with a visible reason; under CI
(``CI=true``) they fail instead, since CI must run them.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

USER = "audiences"
PASSWORD = "pg-test-Secret-4242"  # tests check that this never shows in a message


def _binaries() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(os.path.realpath(found)).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(versions[-1]).parent if versions else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _as_server_user() -> tuple[list[str], int | None]:
    """PostgreSQL refuses to run as root: run its commands as ``postgres`` then."""
    if os.geteuid() != 0:
        return [], None
    return ["runuser", "-u", "postgres", "--"], pwd.getpwnam("postgres").pw_uid


@pytest.fixture(scope="session")
def postgresql_url() -> Iterator[str]:
    """``postgresql://audiences:…@127.0.0.1:PORT/postgres`` of a server started for this session."""
    bindir = _binaries()
    if bindir is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL binaries not found; .ci/run must install Debian's postgresql")
        pytest.skip("PostgreSQL server binaries not found (apt-get install postgresql)")
    prefix, uid = _as_server_user()
    root = Path(tempfile.mkdtemp(prefix="batch-audiences-pg-"))
    if uid is not None:
        os.chown(root, uid, -1)
    data = root / "data"
    pwfile = root / "pw"
    pwfile.write_text(PASSWORD + "\n")
    if uid is not None:
        os.chown(pwfile, uid, -1)
    port = _free_port()

    def run(*args: str) -> None:
        subprocess.run([*prefix, *args], check=True, capture_output=True, cwd=root)

    run(
        str(bindir / "initdb"), "-D", str(data), "-U", USER, f"--pwfile={pwfile}",
        "--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8", "--no-sync",
    )
    options = f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off -c full_page_writes=off"
    run(str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start")
    try:
        yield f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{port}/postgres"
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)
