"""shutdown_waits_for(): protected work, every way it is used."""

from __future__ import annotations

import asyncio
import gc
import inspect
import logging
import os
import signal
import weakref

import pytest
from conftest import eager_too, kwargs_for, make_loop

import aiorun
from aiorun import run, shutdown_waits_for


async def slow(events: list[str], result: object = 42, delay: float = 0.05) -> object:
    await asyncio.sleep(delay)  # protected work taking time: the behaviour under test
    events.append("work done")
    return result


def stop_now() -> None:
    asyncio.get_running_loop().stop()


@eager_too
@pytest.mark.parametrize("way", ["await", "create_task", "ensure_future", "bare"])
def test_protected_work_finishes_although_shutdown_starts(way: str, loop_kind: str) -> None:
    events: list[str] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        if way == "await":
            loop.call_soon(stop_now)
            try:
                await shutdown_waits_for(slow(events))
            except asyncio.CancelledError:
                events.append("caller cancelled")
                raise
        elif way == "create_task":
            loop.create_task(shutdown_waits_for(slow(events)))
            stop_now()
        elif way == "ensure_future":
            asyncio.ensure_future(shutdown_waits_for(slow(events)))
            stop_now()
        else:
            shutdown_waits_for(slow(events))
            stop_now()

    run(main(), **kwargs_for(loop_kind))
    expected = ["caller cancelled", "work done"] if way == "await" else ["work done"]
    assert events == expected


@eager_too
def test_result_and_exception_reach_the_caller(loop_kind: str) -> None:
    got: list[object] = []

    async def fails() -> None:
        raise KeyError("inner")

    async def main() -> None:
        got.append(await shutdown_waits_for(slow([], result="value", delay=0)))
        try:
            await shutdown_waits_for(fails())
        except KeyError as exc:
            got.append(exc)
        got.append(await asyncio.ensure_future(shutdown_waits_for(slow([], result=7, delay=0))))
        stop_now()

    run(main(), **kwargs_for(loop_kind))
    assert got[0] == "value"
    assert isinstance(got[1], KeyError)
    assert got[2] == 7


@eager_too
def test_cancelling_the_protected_task_cancels_the_caller(loop_kind: str) -> None:
    outcome = []

    async def main() -> None:
        waiter = shutdown_waits_for(asyncio.sleep(3600))
        (protected,) = [
            t for t in asyncio.all_tasks() if t.get_coro() in aiorun._DO_NOT_CANCEL_COROS
        ]
        asyncio.get_running_loop().call_soon(protected.cancel)
        try:
            await waiter
        except asyncio.CancelledError:
            outcome.append("caller got CancelledError")
        stop_now()

    run(main(), **kwargs_for(loop_kind))
    assert outcome == ["caller got CancelledError"]


@eager_too
def test_outside_shutdown_it_shields_like_asyncio_shield(loop_kind: str) -> None:
    events: list[str] = []

    async def work(finished: asyncio.Event) -> None:
        await slow(events)
        finished.set()

    async def caller(finished: asyncio.Event) -> None:
        await shutdown_waits_for(work(finished))

    async def main() -> None:
        finished = asyncio.Event()
        task = asyncio.ensure_future(caller(finished))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        events.append("caller cancelled")
        await finished.wait()  # the work goes on without its caller
        events.append("stopping")
        stop_now()

    run(main(), **kwargs_for(loop_kind))
    assert events == ["caller cancelled", "work done", "stopping"]


@eager_too
def test_protected_task_is_identified_by_its_coroutine(loop_kind: str) -> None:
    found = []

    async def main() -> None:
        shutdown_waits_for(asyncio.sleep(0))
        found.extend(t for t in asyncio.all_tasks() if t.get_coro() in aiorun._DO_NOT_CANCEL_COROS)
        stop_now()

    run(main(), **kwargs_for(loop_kind))
    assert len(found) == 1


@eager_too
def test_coroutines_added_by_hand_are_not_cancelled(loop_kind: str) -> None:
    events: list[str] = []

    async def main() -> None:
        coro = slow(events)
        aiorun._DO_NOT_CANCEL_COROS.add(coro)
        asyncio.ensure_future(coro)
        stop_now()

    run(main(), **kwargs_for(loop_kind))
    assert events == ["work done"]


@eager_too
def test_protected_work_is_not_garbage_collected_in_flight(loop_kind: str) -> None:
    # The work awaits a future that only its own frame refers to strongly (its
    # resolver holds a weak reference): task and future form a cycle that the
    # garbage collector may break. The work must finish all the same.
    events: list[str] = []

    async def work() -> None:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        ref = weakref.ref(fut)

        def resolve() -> None:
            target = ref()
            if target is not None:
                target.set_result(None)

        loop.call_later(0.05, resolve)
        await fut
        events.append("work done")

    async def main() -> None:
        shutdown_waits_for(work())
        await asyncio.sleep(0)
        gc.collect()
        stop_now()

    run(main(), **kwargs_for(loop_kind))
    assert events == ["work done"]


@eager_too
def test_shutdown_waits_for_before_run_on_your_own_loop(loop_kind: str) -> None:
    events: list[str] = []
    loop = make_loop(loop_kind)
    asyncio.set_event_loop(loop)
    try:
        shutdown_waits_for(slow(events))  # no loop= : the current loop
        shutdown_waits_for(slow(events), loop=loop)
        loop.call_soon(loop.stop)
        run(loop=loop)
    finally:
        asyncio.set_event_loop(None)
        loop.close()
    assert events == ["work done", "work done"]


def test_without_any_loop_it_says_so_and_closes_the_coroutine() -> None:
    async def work() -> None:
        pass

    # set_event_loop(None) makes "no current loop" hold on every version. On
    # 3.11, a thread where it was never called gets a new loop, as the
    # original found it, so the test would depend on the tests before it.
    asyncio.set_event_loop(None)
    coro = work()
    with pytest.raises(RuntimeError, match="found no event loop"):
        shutdown_waits_for(coro)
    assert inspect.getcoroutinestate(coro) == "CORO_CLOSED"  # no "never awaited"


@eager_too
def test_protected_work_started_during_shutdown_is_awaited(loop_kind: str) -> None:
    events: list[str] = []

    async def main() -> None:
        try:
            stop_now()
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            shutdown_waits_for(slow(events))
            raise

    run(main(), **kwargs_for(loop_kind))
    assert events == ["work done"]


@eager_too
def test_signal_while_awaiting_protected_work(
    loop_kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aiorun")
    events: list[str] = []

    async def main() -> None:
        os.kill(os.getpid(), signal.SIGINT)
        try:
            await shutdown_waits_for(slow(events, delay=0.1))
        except asyncio.CancelledError:
            events.append("oh noes")

    run(main(), **kwargs_for(loop_kind))
    assert events == ["oh noes", "work done"]


@eager_too
def test_protection_survives_a_reset_of_the_compat_set(
    loop_kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []

    async def main() -> None:
        shutdown_waits_for(slow(events))
        # Code written for the original may reset the set between tests.
        monkeypatch.setattr(aiorun, "_DO_NOT_CANCEL_COROS", weakref.WeakSet())
        stop_now()

    run(main(), **kwargs_for(loop_kind))
    assert events == ["work done"]


@eager_too
def test_finished_protected_work_leaves_the_compat_set(loop_kind: str) -> None:
    seen = []

    async def main() -> None:
        await shutdown_waits_for(asyncio.sleep(0))
        seen.append((len(aiorun._DO_NOT_CANCEL_COROS), list(aiorun._DO_NOT_CANCEL_COROS)))
        stop_now()

    run(main(), **kwargs_for(loop_kind))
    assert seen == [(0, [])]


def test_a_coroutine_function_is_refused_at_the_call_with_what_to_do() -> None:
    async def flush() -> None:
        pass

    async def main() -> None:
        with pytest.raises(TypeError, match=r"not the coroutine function 'flush'. Call it, as in "):
            shutdown_waits_for(flush)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="takes a coroutine or awaitable, not 42"):
            shutdown_waits_for(42)  # type: ignore[arg-type]

    run(main(), stop_on_main_exit=True)
