"""How the shutdown finds the loop's tasks, and what it does to the collector."""

from __future__ import annotations

import asyncio
import gc
import sys
from collections.abc import Awaitable
from typing import Any, Callable, TypeVar

import pytest
from conftest import kwargs_for

import aiorun
from aiorun import run

_T = TypeVar("_T")
READS_REGISTRY = sys.version_info < (3, 14)


async def _idle() -> None:
    await asyncio.sleep(3600)


async def _pending_and_all(driver: asyncio.Task[Any] | None) -> tuple[list[Any], set[Any]]:
    """Both views of the running loop's tasks, taken at the same moment."""
    loop = asyncio.get_running_loop()
    return aiorun._pending_tasks(loop, driver), asyncio.all_tasks(loop)


def _run(body: Callable[[], Awaitable[_T]], **kwargs: Any) -> _T:
    """run() until ``body`` has returned; its result, or its error raised."""
    results: list[_T] = []
    errors: list[BaseException] = []

    async def main() -> None:
        try:
            results.append(await body())
        except BaseException as exc:
            errors.append(exc)
        finally:
            asyncio.get_running_loop().stop()

    run(main(), **kwargs)
    if errors:
        raise errors[0]
    return results[0]


def _fast_path_only(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any) -> Any:
        raise AssertionError("asyncio.all_tasks() was used")

    monkeypatch.setattr(aiorun, "_sorted_tasks", refuse)


def test_registry_yields_what_all_tasks_does(
    loop_kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if READS_REGISTRY:
        _fast_path_only(monkeypatch)
    other = asyncio.new_event_loop()
    foreign = other.create_task(_idle())  # registered, but of another loop

    async def main() -> tuple[list[Any], set[Any], asyncio.Task[Any]]:
        loop = asyncio.get_running_loop()
        idle = [loop.create_task(_idle()) for _ in range(300)]
        finished = loop.create_task(asyncio.sleep(0))
        await finished
        assert finished.done()
        assert not any(t.done() for t in idle)
        pending, every = await _pending_and_all(None)
        for task in idle:
            task.cancel()
        return pending, every, finished

    try:
        pending, every, finished = _run(main, **kwargs_for(loop_kind))
    finally:
        foreign.cancel()
        other.run_until_complete(asyncio.wait({foreign}))
        other.close()
    assert len(pending) == len(set(pending)) == len(every) == 301  # and the main task
    assert set(pending) == every
    assert finished not in every
    assert foreign not in every


def test_tasks_come_in_order_of_address(loop_kind: str) -> None:
    async def main() -> list[Any]:
        loop = asyncio.get_running_loop()
        idle = [loop.create_task(_idle()) for _ in range(2000)]
        await asyncio.sleep(0)
        pending, _ = await _pending_and_all(None)
        for task in idle:
            task.cancel()
        return pending

    pending = _run(main, **kwargs_for(loop_kind))
    megabytes = [id(task) >> 20 for task in pending]
    assert megabytes == sorted(megabytes)


def test_the_driver_is_left_out(loop_kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if READS_REGISTRY:
        _fast_path_only(monkeypatch)

    async def main() -> None:
        me = asyncio.current_task()
        pending, every = await _pending_and_all(me)
        assert me in every
        assert me not in pending
        assert set(pending) == every - {me}

    _run(main, **kwargs_for(loop_kind))


def test_a_replaced_all_tasks_is_respected(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Any] = []
    stock = asyncio.all_tasks

    def counting(loop: Any = None) -> set[Any]:
        calls.append(loop)
        return stock(loop)

    monkeypatch.setattr(asyncio, "all_tasks", counting)

    async def main() -> None:
        pending, every = await _pending_and_all(None)
        assert set(pending) == every

    _run(main)
    assert len(calls) >= 2  # ours, and the one in main()


def test_task_like_objects_without_get_loop_are_found_as_asyncio_finds_them() -> None:
    class Foreign:  # registered by some library; all_tasks() reads its _loop
        def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
            self._loop = loop

        def done(self) -> bool:
            return False

    async def main() -> None:
        foreign = Foreign(asyncio.get_running_loop())
        asyncio.tasks._register_task(foreign)  # type: ignore[attr-defined]
        try:
            pending, every = await _pending_and_all(None)
            assert foreign in every
            assert set(pending) == every
        finally:
            asyncio.tasks._unregister_task(foreign)  # type: ignore[attr-defined]

    _run(main)


@pytest.mark.skipif(sys.version_info < (3, 12), reason="eager tasks came in 3.12")
def test_a_task_running_eagerly_is_found(monkeypatch: pytest.MonkeyPatch) -> None:
    _fast_path_only(monkeypatch)
    seen: list[tuple[list[Any], set[Any], Any]] = []

    async def eager() -> None:
        # In its first step, run synchronously inside create_task(): asyncio
        # keeps it among the eager tasks, not yet among the scheduled ones.
        pending, every = aiorun._pending_tasks(loop, None), asyncio.all_tasks(loop)
        seen.append((pending, every, asyncio.current_task()))

    async def main() -> None:
        nonlocal loop
        loop = asyncio.get_running_loop()
        loop.set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined]
        loop.create_task(eager())
        loop.set_task_factory(None)

    loop: Any = None
    _run(main)
    ((pending, every, me),) = seen
    assert me in every
    assert set(pending) == every


@pytest.mark.skipif(
    gc.get_freeze_count() != 0,
    reason="objects are frozen in this interpreter: the survivors stay young",
)
def test_the_burst_survivors_leave_the_young_generations(loop_kind: str) -> None:
    young: list[int] = []

    async def observer() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            while not gc.isenabled():  # paused during the burst of cancellations
                await asyncio.sleep(0)
            young.append(len(gc.get_objects(0)) + len(gc.get_objects(1)))
            raise

    async def main() -> None:
        loop = asyncio.get_running_loop()
        held = [loop.create_task(_idle()) for _ in range(3000)]
        loop.create_task(observer())
        await asyncio.sleep(0)
        loop.stop()
        await asyncio.sleep(3600)
        del held

    run(main(), **kwargs_for(loop_kind))
    # Each cancelled task holds an exception and its traceback: 3,000 tasks
    # leave at least 6,000 live objects, none of them left young.
    assert len(young) == 1
    assert young[0] < 3000


def test_objects_frozen_by_the_application_stay_frozen(loop_kind: str) -> None:
    def tracked(obj: object) -> bool:  # in a generation the collector walks
        return any(o is obj for o in gc.get_objects())

    sentinel: list[object] = [object()]
    gc.freeze()
    try:
        assert not tracked(sentinel)

        async def main() -> None:
            loop = asyncio.get_running_loop()
            for _ in range(100):
                loop.create_task(_idle())
            await asyncio.sleep(0)
            loop.stop()

        run(main(), **kwargs_for(loop_kind))
        assert not tracked(sentinel)
        assert gc.isenabled()
    finally:
        gc.unfreeze()
    assert tracked(sentinel)
