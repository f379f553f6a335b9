"""Work created during the shutdown, the executor, the loop policy."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import pytest
from conftest import Child, assert_clean, eager_too, kwargs_for

from aiorun import run


@eager_too
def test_tasks_spawned_by_cleanups_are_awaited_not_cancelled(loop_kind: str) -> None:
    events: list[str] = []

    async def flush(name: str) -> None:
        try:
            await asyncio.sleep(0.05)  # a flush taking time, the behaviour under test
            events.append(f"{name} flushed")
        except asyncio.CancelledError:
            events.append(f"{name} flush cancelled")
            raise

    async def helper() -> None:
        await asyncio.sleep(0.02)
        asyncio.ensure_future(flush("nested"))  # spawned by a task spawned in shutdown

    async def worker() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            asyncio.ensure_future(flush("worker"))
            asyncio.get_running_loop().create_task(helper())
            raise

    async def main() -> None:
        asyncio.ensure_future(worker())
        await asyncio.sleep(0)
        asyncio.get_running_loop().stop()

    run(main(), **kwargs_for(loop_kind))
    assert sorted(events) == ["nested flushed", "worker flushed"]


@eager_too
def test_tasks_spawned_after_a_cleanup_replaced_the_task_factory_are_awaited(
    loop_kind: str,
) -> None:
    events: list[str] = []

    async def flush() -> None:
        await asyncio.sleep(0.05)  # a flush taking time, the behaviour under test
        events.append("flushed")

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> Any:
        return asyncio.Task(coro, loop=loop, **kwargs)

    async def worker() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            loop = asyncio.get_running_loop()
            loop.set_task_factory(factory)
            loop.create_task(flush())
            raise

    async def main() -> None:
        asyncio.ensure_future(worker())
        await asyncio.sleep(0)
        asyncio.get_running_loop().stop()

    run(main(), **kwargs_for(loop_kind))
    assert events == ["flushed"]


@eager_too
def test_tasks_spawned_late_share_the_timeout(
    loop_kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def never() -> None:
        await asyncio.sleep(3600)

    async def main() -> None:
        try:
            asyncio.get_running_loop().stop()
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            asyncio.ensure_future(never())
            raise

    started = time.monotonic()
    run(main(), timeout_task_shutdown=0.2, **kwargs_for(loop_kind))
    assert time.monotonic() - started < 10
    assert any("refused to exit after 0.2 seconds" in r.getMessage() for r in caplog.records)


@eager_too
def test_nothing_is_destroyed_pending_in_a_real_process(loop_kind: str) -> None:
    child = Child(
        """
        import asyncio, sys
        from aiorun import run
        async def numbers():
            try:
                i = 0
                while True:
                    yield i
                    i += 1
                    await asyncio.sleep(0.001)
            finally:
                await asyncio.sleep(0.02)  # an async cleanup in the generator
                print("generator closed", flush=True)
        async def consumer(iterating):
            async for _ in numbers():
                iterating.set()
        async def flusher():
            await asyncio.sleep(0.05)
            print("flushed", flush=True)
        async def worker():
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                asyncio.ensure_future(flusher())
                raise
        async def main():
            iterating = asyncio.Event()  # made in the loop (3.9 binds at creation)
            asyncio.ensure_future(consumer(iterating))
            asyncio.ensure_future(worker())
            await iterating.wait()
            print("ready", flush=True)
            await asyncio.sleep(3600)
        run(main(), use_uvloop=sys.argv[1] == "uvloop")
        """,
        loop_kind,
    )
    child.wait_for("ready")
    child.send()
    out, err = child.finish()
    assert child.returncode == 0, err
    assert "generator closed" in out
    assert "flushed" in out
    assert_clean(err)


class _OnExecutorShutdown(logging.Handler):
    """Sets an event once the shutdown begins to wait for the executor's jobs."""

    def __init__(self, event: threading.Event) -> None:
        super().__init__()
        self.event = event

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == "Waiting for executor shutdown.":
            self.event.set()


def test_executor_job_waiting_on_the_loop_does_not_deadlock(loop_kind: str) -> None:
    # The job calls into the loop while the shutdown waits for it. (Earlier,
    # a coroutine that a thread schedules arrives like any task of the
    # shutdown, and the cancellation of every task may catch it unstarted.)
    results = []

    async def answer() -> int:
        return 42

    async def main() -> None:
        loop = asyncio.get_running_loop()
        started = threading.Event()

        def job() -> None:
            started.set()
            waiting.wait(10)  # still running when the shutdown waits for it
            results.append(asyncio.run_coroutine_threadsafe(answer(), loop).result(10))

        loop.run_in_executor(None, job)
        await loop.run_in_executor(None, started.wait)
        loop.stop()

    waiting = threading.Event()
    log = logging.getLogger("aiorun")
    handler = _OnExecutorShutdown(waiting)
    level = log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        run(main(), **kwargs_for(loop_kind))
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
    assert results == [42]


def test_executor_shutdown_timeout_abandons_the_rest(
    loop_kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    release = threading.Event()
    ran = []

    def stuck() -> None:
        release.wait(30)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.run_in_executor(None, stuck)
        loop.run_in_executor(None, ran.append, "queued job")  # behind the stuck one
        loop.stop()

    try:
        started = time.monotonic()
        run(main(), executor_workers=1, timeout_executor_shutdown=0.2, **kwargs_for(loop_kind))
        assert time.monotonic() - started < 10
    finally:
        release.set()
    assert ran == []
    assert any(
        "did not shut down within 0.2 seconds" in r.getMessage() and r.levelno == logging.WARNING
        for r in caplog.records
    )


def test_no_deprecation_warning_and_no_policy_change(loop_kind: str) -> None:
    # -W error turns any DeprecationWarning (policy API, get_event_loop) into
    # a failure in the child.
    child = Child(
        """
        import asyncio, sys, warnings
        from aiorun import run, shutdown_waits_for
        async def work():
            await asyncio.sleep(0)
            print("protected ran", flush=True)
        async def main():
            asyncio.get_running_loop().stop()
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        shutdown_waits_for(work())
        loop.call_soon(loop.stop)
        run(loop=loop)
        loop.close()
        asyncio.set_event_loop(None)
        run(main(), use_uvloop=sys.argv[1] == "uvloop")
        run(main())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            print("policy", type(asyncio.get_event_loop_policy()).__module__, flush=True)
        """,
        loop_kind,
    )
    out, err = child.finish()
    assert child.returncode == 0, err
    assert "protected ran" in out
    assert "policy asyncio" in out  # use_uvloop did not install uvloop's policy
    assert_clean(err)
