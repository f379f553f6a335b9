"""Which tasks the shutdown finds, in what order, and what it leaves alone."""

from __future__ import annotations

import asyncio
import gc
import sys
from typing import Any

import pytest
from conftest import eager_too, kwargs_for

from aiorun import run


async def _idle() -> None:
    await asyncio.sleep(3600)


@eager_too
def test_every_pending_task_of_the_loop_is_cancelled_and_no_other(loop_kind: str) -> None:
    other = asyncio.new_event_loop()
    foreign = other.create_task(_idle())  # pending, but on another loop
    cancelled: list[int] = []
    finished: list[asyncio.Task[Any]] = []

    async def idle(i: int) -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append(i)
            raise

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for i in range(300):
            loop.create_task(idle(i))
        done = loop.create_task(asyncio.sleep(0))
        await done
        finished.append(done)
        loop.stop()

    try:
        run(main(), **kwargs_for(loop_kind))
        assert sorted(cancelled) == list(range(300))
        assert not finished[0].cancelled()
        assert not foreign.done()
    finally:
        foreign.cancel()
        other.run_until_complete(asyncio.wait({foreign}))
        other.close()


@eager_too
def test_tasks_unwind_in_order_of_address(loop_kind: str) -> None:
    # The order the shutdown cancels them in: the order they lie in memory.
    unwound: list[int] = []

    async def idle() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            unwound.append(id(asyncio.current_task()))
            raise

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for _ in range(2000):
            loop.create_task(idle())
        await asyncio.sleep(0)
        loop.stop()

    run(main(), **kwargs_for(loop_kind))
    assert len(unwound) == 2000
    assert unwound == sorted(unwound)


def test_a_replaced_all_tasks_is_respected(monkeypatch: pytest.MonkeyPatch) -> None:
    # A library that tracks tasks of its own may replace asyncio.all_tasks.
    calls: list[Any] = []
    stock = asyncio.all_tasks

    def counting(loop: Any = None) -> set[Any]:
        calls.append(loop)
        return stock(loop)

    monkeypatch.setattr(asyncio, "all_tasks", counting)

    async def main() -> None:
        asyncio.ensure_future(_idle())
        asyncio.get_running_loop().stop()

    run(main())
    assert calls


# asyncio's loop only: uvloop 0.23 passes the factory an argument that
# asyncio.eager_task_factory of 3.13.0 does not take.
@pytest.mark.skipif(sys.version_info < (3, 12), reason="eager tasks came in 3.12")
def test_tasks_of_an_eager_task_factory_are_cancelled() -> None:
    cancelled: list[str] = []

    async def eager() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append("eager")
            raise

    async def main() -> None:
        loop = asyncio.get_running_loop()
        try:
            loop.set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined]
            for _ in range(3):
                loop.create_task(eager())
        finally:
            loop.stop()

    run(main())
    assert cancelled == ["eager"] * 3


@eager_too
def test_the_collector_is_left_alone_during_the_shutdown(loop_kind: str) -> None:
    # It belongs to the whole process, and other threads and loops.
    seen: list[tuple[bool, int]] = []

    async def observer() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            seen.append((gc.isenabled(), gc.get_freeze_count()))
            await asyncio.sleep(0)
            seen.append((gc.isenabled(), gc.get_freeze_count()))
            raise

    async def main() -> None:
        loop = asyncio.get_running_loop()
        held = [loop.create_task(_idle()) for _ in range(3000)]
        loop.create_task(observer())
        await asyncio.sleep(0)
        loop.stop()
        await asyncio.sleep(3600)
        del held

    frozen = gc.get_freeze_count()
    run(main(), **kwargs_for(loop_kind))
    assert seen == [(True, frozen), (True, frozen)]
