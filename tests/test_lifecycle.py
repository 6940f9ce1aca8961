"""A client's threads and sockets end with it: closed, dropped, or left open at interpreter exit.

Each scenario runs as a script in a fresh interpreter, with ``-X dev -W error`` (asyncio debug
mode, every warning an error), against an emulator serving from this process: the script's
``/proc/self/fd`` then holds only the client's side of each connection, and its stderr shows
any "Unclosed client session", ``ResourceWarning`` or exception ignored in ``__del__``.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from batch_audiences.testing import Emulator

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/fd").is_dir(), reason="counts file descriptors in /proc/self/fd (Linux)"
)

# Only a hang reaches this; no test asserts how fast anything is.
HANG = 60.0

PRELUDE = """\
import asyncio, gc, logging, os, sys, threading, time
from batch_audiences import AsyncAudiencesClient, AudiencesClient, ClientClosedError

# Debug mode reports slow callbacks as warnings, which a loaded machine can produce; errors
# (an unclosed session, a task destroyed while pending) are still printed.
logging.getLogger("asyncio").setLevel(logging.ERROR)
URL, KEY, PROJECT = sys.argv[1:4]


def sockets():
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
        except FileNotFoundError:  # the directory listing's own descriptor, closed since
            pass
    return count


def census():
    return threading.active_count(), len(os.listdir("/proc/self/fd"))


def join_loop_threads():
    # Bounded, so that a thread that never ends fails the test instead of hanging it.
    deadline = time.monotonic() + 20
    for thread in threading.enumerate():
        if thread.name == "batch-audiences-loop":
            thread.join(max(0.0, deadline - time.monotonic()))
"""


@pytest.fixture
def emulator_thread() -> Iterator[Emulator]:
    with Emulator(indexing_delay=0.0) as emu:
        emu.add_audience("vip")
        yield emu


def run_script(emu: Emulator, body: str, tmp_path: Path) -> tuple[str, str]:
    """Run ``PRELUDE + body`` under ``-X dev -W error``; return (stdout, stderr), exit code checked."""
    script = tmp_path / "script.py"
    script.write_text(PRELUDE + textwrap.dedent(body))
    done = subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error", str(script), emu.base_url, emu.api_key,
         emu.project_key],
        capture_output=True, text=True, timeout=HANG, check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout, done.stderr


# -- the blocking client ------------------------------------------------------------------------


def test_dropped_blocking_clients_leave_no_thread_or_socket(
    emulator_thread: Emulator, tmp_path: Path
) -> None:
    out, err = run_script(emulator_thread, """
        warm = AudiencesClient(KEY, PROJECT, base_url=URL)  # first-use allocations, kept apart
        warm.view("vip")
        warm.close()
        before = census()
        for _ in range(50):
            client = AudiencesClient(KEY, PROJECT, base_url=URL)
            client.view("vip")
            del client  # never closed
        gc.collect()
        join_loop_threads()
        print(*before, *census())
    """, tmp_path)
    assert err == ""
    threads_before, fds_before, threads_after, fds_after = map(int, out.split())
    assert (threads_after, fds_after) == (threads_before, fds_before)


def test_a_dropped_client_in_a_reference_cycle_is_closed_by_the_collector(
    emulator_thread: Emulator, tmp_path: Path
) -> None:
    out, err = run_script(emulator_thread, """
        before = census()
        client = AudiencesClient(KEY, PROJECT, base_url=URL)
        client.view("vip")
        cycle = [client]
        cycle.append(cycle)
        del client, cycle
        gc.collect()
        join_loop_threads()
        print(*before, *census())
    """, tmp_path)
    assert err == ""
    threads_before, fds_before, threads_after, fds_after = map(int, out.split())
    assert (threads_after, fds_after) == (threads_before, fds_before)


@pytest.mark.parametrize(
    "body",
    [
        'client = AudiencesClient(KEY, PROJECT, base_url=URL)\nprint(client.view("vip").name)\n',
        "client = AudiencesClient(KEY, PROJECT, base_url=URL)\nprint('vip')\n",
        # Still referenced from a suspended iterator when the interpreter exits.
        "client = AudiencesClient(KEY, PROJECT, base_url=URL)\n"
        "pages = client.iter_audiences(page_size=1)\nprint(next(pages).name)\n",
        # Only reachable through a cycle: the collector may never run before exit.
        "gc.disable()\nclient = AudiencesClient(KEY, PROJECT, base_url=URL)\n"
        "client.view('vip')\nholder = [client]\nholder.append(holder)\ndel client, holder\n"
        "print('vip')\n",
    ],
    ids=["used", "unused", "iterator-left-open", "in-a-cycle"],
)
def test_a_module_level_blocking_client_exits_quietly(
    emulator_thread: Emulator, tmp_path: Path, body: str
) -> None:
    # As people write `client = openai.OpenAI()` at the top of a script, and never close it.
    out, err = run_script(emulator_thread, body, tmp_path)
    assert out == "vip\n"
    assert err == ""


def test_a_client_dropped_while_a_call_runs_in_another_thread_is_not_closed_under_it(
    emulator_thread: Emulator, tmp_path: Path
) -> None:
    # The calling thread holds the client: only once its call is over may the client go.
    out, err = run_script(emulator_thread, """
        client = AudiencesClient(KEY, PROJECT, base_url=URL)
        results = []
        worker = threading.Thread(target=lambda c=client: results.append(c.view("vip").name))
        del client
        worker.start()
        worker.join()
        gc.collect()
        join_loop_threads()
        print(results, threading.active_count())
    """, tmp_path)
    assert err == ""
    assert out == "['vip'] 1\n"


# -- the async client's aclose() from another event loop -----------------------------------------


def test_aclose_from_another_loop_closes_the_socket_on_the_loop_that_owns_it(
    emulator_thread: Emulator, tmp_path: Path
) -> None:
    # The owning loop runs in another thread: the close is done there, and awaited.
    out, err = run_script(emulator_thread, """
        owner = asyncio.new_event_loop()
        thread = threading.Thread(target=owner.run_forever)
        thread.start()
        client = AsyncAudiencesClient(KEY, PROJECT, base_url=URL)
        before = sockets()
        asyncio.run_coroutine_threadsafe(client.view("vip"), owner).result()
        used = sockets()
        asyncio.run(client.aclose())
        print(used - before, sockets() - before, client.closed)
        owner.call_soon_threadsafe(owner.stop)
        thread.join()
        owner.close()
    """, tmp_path)
    assert err == ""
    assert out == "1 0 True\n"


def test_aclose_from_another_loop_closes_the_socket_of_an_idle_loop(
    emulator_thread: Emulator, tmp_path: Path
) -> None:
    # The owning loop is neither running nor closed: the close runs it once more.
    out, err = run_script(emulator_thread, """
        owner = asyncio.new_event_loop()
        client = AsyncAudiencesClient(KEY, PROJECT, base_url=URL)
        before = sockets()
        owner.run_until_complete(client.view("vip"))
        used = sockets()
        asyncio.run(client.aclose())
        print(used - before, sockets() - before, client.closed)
        owner.close()
    """, tmp_path)
    assert err == ""
    assert out == "1 0 True\n"


def test_aclose_after_the_owning_loop_closed_says_the_connections_are_lost(
    emulator_thread: Emulator, tmp_path: Path
) -> None:
    # Nothing can close a socket of a closed loop any more: a clear error says so, and how to
    # avoid it, instead of returning as if the socket were closed.
    out, err = run_script(emulator_thread, """
        import warnings
        client = AsyncAudiencesClient(KEY, PROJECT, base_url=URL)
        asyncio.run(client.view("vip"))
        try:
            asyncio.run(client.aclose())
        except ClientClosedError as error:
            print(client.closed, error)
        # The socket the caller left behind is reported when collected: expected here.
        warnings.simplefilter("ignore", ResourceWarning)
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    """, tmp_path)
    assert err == ""
    closed, message = out.split(" ", 1)
    assert closed == "True"
    assert "event loop" in message
    assert "closed" in message
    assert "inside" in message
