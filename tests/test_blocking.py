"""The blocking facade: plain scripts, inside a running event loop, from many threads, and its
thread's life. The emulator serves from its own thread here (``with Emulator()``), so a blocking
call may hold the caller's thread, even one that runs an event loop."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from batch_audiences import (
    AudiencesClient,
    ClientClosedError,
    IdAction,
    IndexingState,
    Member,
    NotFoundError,
)
from batch_audiences.testing import Emulator, ScriptedResponse

from .conftest import Api, fast_retry_policy


@pytest.fixture
def threaded_emulator() -> Iterator[Emulator]:
    with Emulator(indexing_delay=0.0) as emu:
        yield emu


def make_client(emu: Emulator, **kwargs: object) -> AudiencesClient:
    return AudiencesClient(
        emu.api_key, emu.project_key, base_url=emu.base_url, retry=fast_retry_policy(), **kwargs  # type: ignore[arg-type]
    )


def loop_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "batch-audiences-loop"}


def test_blocking_calls_from_a_plain_function(threaded_emulator: Emulator) -> None:
    with make_client(threaded_emulator) as client:
        assert client.create("vip", display_name="VIP").indexing_token
        token = client.update("vip", [IdAction.add("u1"), IdAction.add("u2")]).indexing_token
        assert client.wait_until_applied("vip", token, poll_interval=0.01).nb_ids == 2
        client.replace("vip", [Member("u3")])
        assert client.view("vip").nb_ids == 1
        assert client.list().count == 1
        assert [a.name for a in client.iter_audiences()] == ["vip"]
        client.remove("vip")
        with pytest.raises(NotFoundError):
            client.view("vip")
    assert client.closed


def test_iter_audiences_is_a_plain_lazy_iterator(threaded_emulator: Emulator) -> None:
    for i in range(5):
        threaded_emulator.add_audience(f"a{i}")
    with make_client(threaded_emulator) as client:
        iterator = client.iter_audiences(page_size=2)
        assert isinstance(iterator, Iterator)
        assert not hasattr(iterator, "__aiter__")
        assert threaded_emulator.count(route="list") == 0
        assert next(iterator).name == "a0"
        assert next(iterator).name == "a1"
        assert threaded_emulator.count(route="list") == 1
        assert [a.name for a in iterator] == ["a2", "a3", "a4"]
        assert threaded_emulator.count(route="list") == 3


def test_iterator_abandoned_midway_then_close(threaded_emulator: Emulator) -> None:
    for i in range(5):
        threaded_emulator.add_audience(f"a{i}")
    client = make_client(threaded_emulator)
    iterator = client.iter_audiences(page_size=2)
    assert next(iterator).name == "a0"
    client.close()
    with pytest.raises(ClientClosedError):
        next(iterator)
    del iterator
    gc.collect()


def test_iterator_closed_early_releases_its_pages(threaded_emulator: Emulator) -> None:
    for i in range(5):
        threaded_emulator.add_audience(f"a{i}")
    with make_client(threaded_emulator) as client:
        iterator = client.iter_audiences(page_size=2)
        assert next(iterator).name == "a0"
        iterator.close()  # type: ignore[attr-defined]
        with pytest.raises(StopIteration):
            next(iterator)
        assert client.view("a1").name == "a1"  # the client is still fine


async def test_inside_a_running_event_loop(threaded_emulator: Emulator) -> None:
    # As in a Jupyter cell: blocking calls, and close, from a thread that runs a loop.
    asyncio.get_running_loop()
    client = make_client(threaded_emulator)
    client.create("vip")
    client.update("vip", [IdAction.add("u1")])
    assert client.view("vip").nb_ids == 1
    assert [a.name for a in client.iter_audiences()] == ["vip"]
    client.close()
    assert client.closed
    assert not loop_threads()


async def test_context_manager_inside_a_running_event_loop(threaded_emulator: Emulator) -> None:
    with make_client(threaded_emulator) as client:
        client.create("vip")
    assert client.closed


def test_safe_from_many_threads(threaded_emulator: Emulator) -> None:
    threaded_emulator.add_audience("shared")
    with make_client(threaded_emulator) as client:

        def work(worker: int) -> list[str]:
            tokens = []
            for index in range(5):
                client.create(f"w{worker}-{index}")
                accepted = client.update("shared", [IdAction.add(f"w{worker}-u{index}")])
                assert accepted.indexing_token is not None
                tokens.append(accepted.indexing_token)
            return tokens

        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(work, range(8)))
        assert len({token for tokens in results for token in tokens}) == 40
        stats = client.stats
    threaded_emulator.settle()
    assert len(threaded_emulator.members("shared")) == 40
    assert len(threaded_emulator.audience_names()) == 41
    assert stats.requests == 80 == threaded_emulator.count()


def test_close_from_another_thread_while_others_call(threaded_emulator: Emulator) -> None:
    threaded_emulator.add_audience("vip")
    client = make_client(threaded_emulator)
    outcomes: list[str] = []
    started = threading.Event()

    def caller() -> None:
        for _ in range(100_000):
            try:
                client.view("vip")
            except ClientClosedError:
                outcomes.append("closed")
                return
            started.set()
        outcomes.append("never closed")

    threads = [threading.Thread(target=caller) for _ in range(4)]
    for thread in threads:
        thread.start()
    started.wait()
    client.close()
    for thread in threads:
        thread.join(timeout=10)
        assert not thread.is_alive()
    assert outcomes == ["closed"] * 4
    assert not loop_threads()


def test_close_cancels_a_call_waiting_for_its_answer(threaded_emulator: Emulator) -> None:
    threaded_emulator.add_audience("vip")
    threaded_emulator.script(ScriptedResponse(action="slow", delay=30.0, route="view"))
    client = make_client(threaded_emulator)
    errors: list[BaseException] = []

    def caller() -> None:
        try:
            client.view("vip")
        except BaseException as error:
            errors.append(error)

    thread = threading.Thread(target=caller)
    thread.start()
    while not threaded_emulator.requests:  # the request has reached the server
        time.sleep(0.005)
    client.close()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert len(errors) == 1
    assert isinstance(errors[0], ClientClosedError)


def test_no_thread_left_after_close(threaded_emulator: Emulator) -> None:
    before = set(threading.enumerate())
    client = make_client(threaded_emulator)
    assert len(loop_threads()) == 1
    client.create("vip")
    client.close()
    assert set(threading.enumerate()) <= before
    assert not loop_threads()


def test_no_thread_left_when_never_used() -> None:
    before = set(threading.enumerate())
    client = AudiencesClient("some-key-0123456789", "project_x")
    client.close()
    assert set(threading.enumerate()) <= before


def test_close_twice_and_use_after_close(threaded_emulator: Emulator) -> None:
    client = make_client(threaded_emulator)
    client.create("vip")
    client.close()
    client.close()
    assert client.closed
    for call in (
        lambda: client.create("x"),
        lambda: client.update("vip", [IdAction.add("u")]),
        lambda: client.replace("vip", []),
        lambda: client.remove("vip"),
        lambda: client.view("vip"),
        lambda: client.list(),
        lambda: client.wait_until_applied("vip"),
        lambda: next(client.iter_audiences()),
    ):
        with pytest.raises(ClientClosedError):
            call()
    assert threaded_emulator.count() == 1


def test_errors_cross_the_thread_with_their_type(threaded_emulator: Emulator) -> None:
    with make_client(threaded_emulator) as client:
        with pytest.raises(NotFoundError) as info:
            client.view("missing")
        assert info.value.status == 404


def test_no_del_method() -> None:
    # A __del__ would run on whichever thread drops the client, possibly with the interpreter
    # half torn down; a dropped client is closed by a weakref.finalize instead (test_lifecycle).
    assert "__del__" not in vars(AudiencesClient)


def test_sync_state_after_wait(threaded_emulator: Emulator) -> None:
    threaded_emulator.indexing_delay = 60.0  # applied only when the test says so
    with make_client(threaded_emulator) as client:
        client.create("vip")
        token = client.update("vip", [IdAction.add("u1")]).indexing_token
        assert client.view("vip", indexing_token=token).indexing_state is IndexingState.IN_PROGRESS
        threaded_emulator.settle()
        audience = client.wait_until_applied("vip", token, poll_interval=0.01)
        assert audience.indexing_state is IndexingState.APPLIED


def test_a_loop_thread_stopped_from_its_own_thread_winds_down_without_waiting_for_itself() -> None:
    # What a finalizer does when the collector happens to run on the loop's own thread: it
    # cannot wait there for the loop to finish, so it only asks, and the loop ends by itself.
    from batch_audiences._blocking import LoopThread

    before = set(threading.enumerate())
    loop = LoopThread("batch-audiences-loop")
    finished: list[str] = []

    async def final() -> None:
        finished.append("final")

    async def stop_from_inside() -> None:
        assert loop.stop(final)
        await asyncio.sleep(3600)  # cancelled by the wind-down

    with pytest.raises(ClientClosedError):
        loop.run(stop_from_inside())
    loop.join(20)
    assert finished == ["final"]
    assert set(threading.enumerate()) <= before
    assert not loop.stop(final)  # already stopped: nothing scheduled on a closed loop


# -- with_options -------------------------------------------------------------------------------


def test_with_options_shares_the_loop_thread_and_the_connections(threaded_emulator: Emulator) -> None:
    threaded_emulator.add_audience("vip")
    with make_client(threaded_emulator) as client:
        client.view("vip")
        patient = client.with_options(timeout=120.0, max_retries=1)
        assert isinstance(patient, AudiencesClient)
        assert len(loop_threads()) == 1
        assert patient.config.timeout == 120.0
        assert client.config.timeout != 120.0
        assert patient.view("vip").name == "vip"
        assert client.stats.requests == patient.stats.requests == 2  # one set of counters


def test_closing_a_derived_client_leaves_its_parent_open(threaded_emulator: Emulator) -> None:
    threaded_emulator.add_audience("vip")
    with make_client(threaded_emulator) as client:
        derived = client.with_options(timeout=60.0)
        derived.view("vip")
        derived.close()
        derived.close()
        assert derived.closed
        assert not client.closed
        with pytest.raises(ClientClosedError):
            derived.view("vip")
        assert client.view("vip").name == "vip"
        assert len(loop_threads()) == 1


def test_closing_the_parent_closes_its_derived_clients(threaded_emulator: Emulator) -> None:
    threaded_emulator.add_audience("vip")
    client = make_client(threaded_emulator)
    derived = client.with_options(max_rate=50.0)
    client.close()
    assert derived.closed
    with pytest.raises(ClientClosedError):
        derived.view("vip")
    derived.close()  # nothing left to close, and no error
    assert not loop_threads()


def test_a_derived_client_keeps_its_dropped_parent_alive(threaded_emulator: Emulator) -> None:
    threaded_emulator.add_audience("vip")
    derived = make_client(threaded_emulator).with_options(timeout=60.0)
    gc.collect()  # the parent is referenced by nothing but the derived client
    assert derived.view("vip").name == "vip"
    (thread,) = loop_threads()
    del derived
    gc.collect()
    thread.join(20)
    assert not thread.is_alive()


async def test_with_options_the_same_way_on_both_clients(api: Api, emulator: Emulator) -> None:
    # Through the test suite's adapter too, which derives its methods as the facade does.
    emulator.add_audience("vip")
    derived = api.with_options(timeout=60.0)
    assert type(derived) is type(api)
    assert derived.config.timeout == 60.0
    assert (await derived.view("vip")).name == "vip"
    await derived.aclose()
    assert derived.closed
    assert not api.closed
    assert (await api.view("vip")).name == "vip"
