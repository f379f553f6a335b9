"""Executor jobs abandoned by the shutdown, and what they do to the process's exit."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import Child, assert_clean, kwargs_for

from aiorun import run

# The child starts one slow job and queues a second one behind it (the
# executor has a single thread). The slow job prints ``ready`` once it runs,
# and ``job finished`` if it is ever allowed to end. argv: loop kind, how
# the jobs are started, what gives up on them, whose executor runs them,
# how long the slow job sleeps.
ABANDONED = """
import asyncio, sys, time
from concurrent.futures import ThreadPoolExecutor
from aiorun import run

kind, how, cause, whose, seconds = sys.argv[1:6]

def slow_export():
    print("ready", flush=True)
    time.sleep(float(seconds))
    print("job finished", flush=True)

def queued():
    print("queued job ran", flush=True)

async def main():
    loop = asyncio.get_running_loop()
    if how == "to_thread":
        asyncio.ensure_future(asyncio.to_thread(slow_export))
        asyncio.ensure_future(asyncio.to_thread(queued))
    else:
        loop.run_in_executor(None, slow_export)
        loop.run_in_executor(None, queued)
    await asyncio.sleep(3600)

if cause == "deadline":
    kwargs = {"shutdown_timeout": 0.5}
else:
    kwargs = {"timeout_executor_shutdown": 0.5}
if whose == "passed":
    kwargs["executor"] = ThreadPoolExecutor(1)
else:
    kwargs["executor_workers"] = 1
run(main(), use_uvloop=kind == "uvloop", **kwargs)
"""

# What gives up on the jobs, and the exit status the README documents for it.
CAUSES = {"deadline": 1, "timeout_executor_shutdown": 0}


def sigterm_to_exit(child: Child) -> tuple[float, str, str]:
    """Send SIGTERM once the child is ready; how long it took to exit, and its output."""
    child.wait_for("ready")
    sent = time.monotonic()
    child.send()
    out, err = child.finish(timeout=60)
    return time.monotonic() - sent, out, err


@pytest.mark.parametrize("cause", CAUSES)
@pytest.mark.parametrize("how", ["run_in_executor", "to_thread"])
def test_an_abandoned_job_of_our_executor_does_not_hold_the_exit(
    loop_kind: str, how: str, cause: str
) -> None:
    child = Child(ABANDONED, loop_kind, how, cause, "ours", "30")
    elapsed, out, err = sigterm_to_exit(child)
    assert child.returncode == CAUSES[cause], err
    # The job sleeps for 30 s; the process is gone long before that.
    assert elapsed < 10, (elapsed, err)
    assert "job finished" not in out
    assert "queued job ran" not in out  # cancelled, never started
    assert "Executor jobs are still running (1 job: slow_export() at " in err, err
    assert "they no longer keep the process from exiting" in err, err
    if cause == "deadline":
        assert "TimeoutError: The shutdown did not complete within 0.5 seconds" in err, err
    assert_clean(err)


@pytest.mark.parametrize("cause", CAUSES)
def test_an_abandoned_job_of_a_passed_executor_holds_the_exit_and_says_so(
    loop_kind: str, cause: str
) -> None:
    child = Child(ABANDONED, loop_kind, "run_in_executor", cause, "passed", "1.5")
    _, out, err = sigterm_to_exit(child)
    assert child.returncode == CAUSES[cause], err
    # The interpreter waited for the job at exit: it could print its last line.
    assert "job finished" in out, (out, err)
    assert "queued job ran" not in out
    assert (
        "Jobs of the executor passed to run() are still running (run() cannot see which "
        "ones). Their threads cannot be stopped, and the interpreter will wait for them "
        "when it exits." in err
    ), err
    # The job ends after the loop is closed. Python 3.9's asyncio then logs
    # "Event loop is closed" as it passes the result on; 3.10 checks first.
    if sys.version_info >= (3, 10):
        assert_clean(err)


def test_a_normal_shutdown_leaves_no_executor_thread_alive(loop_kind: str) -> None:
    threads: set[threading.Thread] = set()

    def note() -> None:
        threads.add(threading.current_thread())

    def slow() -> None:
        note()
        time.sleep(0.2)  # a job still running when the shutdown begins

    async def main() -> None:
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(None, note) for _ in range(20)))
        await asyncio.gather(*(asyncio.to_thread(note) for _ in range(20)))
        loop.run_in_executor(None, slow)
        loop.stop()

    run(main(), **kwargs_for(loop_kind))
    assert threads
    assert not [thread for thread in threads if thread.is_alive()]


def test_shutdown_default_executor_in_main_joins_the_threads(loop_kind: str) -> None:
    threads: list[threading.Thread] = []
    alive: list[bool] = []

    def slow() -> None:
        threads.append(threading.current_thread())
        time.sleep(0.2)  # a job still running when shutdown_default_executor() begins

    async def main() -> None:
        loop = asyncio.get_running_loop()
        try:
            await asyncio.to_thread(lambda: threads.append(threading.current_thread()))
            loop.run_in_executor(None, slow)
            await loop.shutdown_default_executor()
            alive.extend(thread.is_alive() for thread in threads)
        finally:
            loop.stop()  # run() then shuts the executor down a second time

    run(main(), **kwargs_for(loop_kind))
    assert alive == [False, False]


def default_workers() -> int:
    """ThreadPoolExecutor's documented default for max_workers."""
    cpus = os.process_cpu_count() if sys.version_info >= (3, 13) else os.cpu_count()
    return min(32, (cpus or 1) + 4)


@pytest.mark.parametrize("workers", [None, 2])
def test_the_executor_has_as_many_threads_as_a_thread_pool_executor(
    loop_kind: str, workers: int | None
) -> None:
    expected = default_workers() if workers is None else workers
    lock = threading.Condition()
    started: list[threading.Thread] = []
    release = threading.Event()
    all_started: list[bool] = []

    def job() -> None:
        with lock:
            started.append(threading.current_thread())
            lock.notify_all()
        release.wait(30)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        try:
            jobs = [loop.run_in_executor(None, job) for _ in range(expected + 3)]
            # As many jobs run at once as the executor has threads.
            with lock:
                all_started.append(lock.wait_for(lambda: len(started) >= expected, timeout=30))
            release.set()
            await asyncio.gather(*jobs)
            # The threads are reused: a job run after the others is on one of them.
            await loop.run_in_executor(None, job)
        finally:
            release.set()
            loop.stop()

    run(main(), executor_workers=workers, **kwargs_for(loop_kind))
    assert all_started == [True]
    assert len(started) == expected + 4
    names = {thread.name for thread in started}
    assert len(names) == expected, names
    for thread in started:
        assert re.fullmatch(r"ThreadPoolExecutor-\d+_\d+", thread.name), thread.name
        assert thread.daemon  # what lets an abandoned job's thread go at exit


def test_the_executor_keeps_daemon_threads_without_the_private_sizes(
    monkeypatch: pytest.MonkeyPatch, loop_kind: str
) -> None:
    # The executor reads ThreadPoolExecutor's private _max_workers and
    # _thread_name_prefix. Should a Python release drop them, its threads
    # must still be daemon threads, as many as asked for.
    stock = ThreadPoolExecutor.__init__

    def without_sizes(self: ThreadPoolExecutor, *args: object, **kwargs: object) -> None:
        stock(self, *args, **kwargs)  # type: ignore[arg-type]
        del self._max_workers, self._thread_name_prefix  # type: ignore[attr-defined]

    monkeypatch.setattr(ThreadPoolExecutor, "__init__", without_sizes)
    threads: list[threading.Thread] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        jobs = [loop.run_in_executor(None, threading.current_thread) for _ in range(5)]
        threads.extend(await asyncio.gather(*jobs))
        loop.stop()

    run(main(), executor_workers=2, **kwargs_for(loop_kind))
    assert len(threads) == 5
    for thread in threads:
        assert re.fullmatch(r"aiorun-executor_[01]", thread.name), thread.name
        assert thread.daemon
