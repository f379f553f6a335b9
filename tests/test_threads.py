"""Several threads, each with its own loop, sharing the module's state."""

from __future__ import annotations

import asyncio
import sys
import threading

import pytest
from conftest import Child, assert_clean

from aiorun import run, shutdown_waits_for

# run() over and over in the main thread while other threads' loops call
# shutdown_waits_for() as fast as they can; a tiny switch interval makes the
# threads interleave inside every bytecode-level window. A fixed number of
# runs and calls, not a time: the test stops by itself.
RACE = """
import asyncio, sys, threading
from aiorun import run, shutdown_waits_for

sys.setswitchinterval(1e-6)
stop = threading.Event()
failures = []

async def work():
    pass

def hammer():
    async def main():
        while not stop.is_set():
            for _ in range(50):
                await shutdown_waits_for(work())
            shutdown_waits_for(work())  # dropped: fire and forget
            await asyncio.sleep(0)
    try:
        asyncio.run(main())
    except BaseException as exc:
        failures.append(repr(exc))

threads = [threading.Thread(target=hammer) for _ in range(3)]
for thread in threads:
    thread.start()

async def one_run():
    shutdown_waits_for(work())
    await asyncio.sleep(0)
    asyncio.get_running_loop().stop()

try:
    for _ in range(RUNS):
        run(one_run())
except BaseException as exc:
    failures.append(repr(exc))
finally:
    stop.set()
    for thread in threads:
        thread.join()
print("failures:", failures, flush=True)
"""


def test_run_and_shutdown_waits_for_in_other_threads_do_not_race() -> None:
    child = Child(RACE.replace("RUNS", "300"), dev=False)
    out, err = child.finish(timeout=100)
    assert child.returncode == 0, err
    assert "failures: []" in out, out + err
    assert_clean(err)


def test_runs_in_several_threads_at_once_each_finish_their_own_work(loop_kind: str) -> None:
    results: dict[int, list[str]] = {}
    errors: list[BaseException] = []
    started = threading.Barrier(4)

    def one(index: int) -> None:
        events: list[str] = []

        async def slow() -> None:
            await asyncio.sleep(0.05)  # protected work, the behaviour under test
            events.append("protected done")

        async def main() -> None:
            shutdown_waits_for(slow())
            started.wait(timeout=10)  # every thread is inside run() at once
            try:
                asyncio.get_running_loop().stop()
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                events.append("main cancelled")
                raise

        try:
            run(main(), use_uvloop=loop_kind == "uvloop")
        except BaseException as exc:
            errors.append(exc)
        results[index] = events

    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors
    assert results == {i: ["main cancelled", "protected done"] for i in range(4)}


# Another thread's loop holds many tasks and creates more all the time: up
# to Python 3.13, asyncio.all_tasks() copies the one registry every thread
# shares, and gives up after 1,000 copies that another thread disturbed.
BUSY_NEIGHBOUR = """
import asyncio, sys, threading
from aiorun import run, shutdown_waits_for

stop = threading.Event()
held = threading.Event()
failures = []

async def work():
    pass

def neighbour():
    async def main():
        idle = [asyncio.ensure_future(asyncio.sleep(3600)) for _ in range(100_000)]
        held.set()
        while not stop.is_set():
            for _ in range(100):
                shutdown_waits_for(work())
            await asyncio.sleep(0)
        for task in idle:
            task.cancel()
    try:
        asyncio.run(main())
    except BaseException as exc:
        failures.append(repr(exc))
        held.set()

thread = threading.Thread(target=neighbour)
thread.start()
held.wait(60)
sys.setswitchinterval(1e-6)

async def one_run():
    asyncio.get_running_loop().stop()

try:
    for _ in range(16):
        run(one_run())
except BaseException as exc:
    failures.append(repr(exc))
finally:
    sys.setswitchinterval(0.005)
    stop.set()
    thread.join()
print("failures:", failures, flush=True)
"""


def test_run_survives_a_busy_loop_with_many_tasks_in_another_thread() -> None:
    child = Child(BUSY_NEIGHBOUR, dev=False)
    out, err = child.finish(timeout=110)
    assert child.returncode == 0, err
    assert "failures: []" in out, out + err


def test_run_puts_the_switch_interval_back(loop_kind: str) -> None:
    seen: list[float] = []
    before = sys.getswitchinterval()

    async def main() -> None:
        seen.append(sys.getswitchinterval())
        asyncio.get_running_loop().stop()

    sys.setswitchinterval(0.0123)
    try:
        run(main(), use_uvloop=loop_kind == "uvloop")
        assert seen == [pytest.approx(0.0123)]
        assert sys.getswitchinterval() == pytest.approx(0.0123)
    finally:
        sys.setswitchinterval(before)


@pytest.mark.parametrize("all_tasks", ["stock", "replaced"])
def test_the_switch_interval_is_touched_only_where_all_tasks_races(
    monkeypatch: pytest.MonkeyPatch, all_tasks: str
) -> None:
    # Up to 3.13 all_tasks() can give up while other threads' loops create
    # tasks. run() reads asyncio's registry in C instead, and only when a
    # library has replaced all_tasks() does it ask that and hold the other
    # threads off meanwhile. From 3.14 on there is no race, and run() leaves
    # the process's switch interval alone.
    calls: list[float] = []
    real = sys.setswitchinterval

    def recording(interval: float) -> None:
        calls.append(interval)
        real(interval)

    monkeypatch.setattr(sys, "setswitchinterval", recording)
    if all_tasks == "replaced":
        stock = asyncio.all_tasks
        monkeypatch.setattr(asyncio, "all_tasks", lambda loop=None: stock(loop))

    async def main() -> None:
        asyncio.ensure_future(asyncio.sleep(3600))
        asyncio.get_running_loop().stop()

    run(main())
    if sys.version_info >= (3, 14) or all_tasks == "stock":
        assert calls == []
    else:
        assert len(calls) >= 2  # raised for each look, then put back
