"""Tasks started during the shutdown past the task factory are found, however cheaply looked for.

``asyncio.Task(coro, loop=loop)``, and on Python 3.12 and later
``asyncio.Task(..., eager_start=True)`` as aiohttp starts its handlers,
never pass through the task factory, so the shutdown finds them only by
looking at the loop's tasks.
"""

from __future__ import annotations

import asyncio
import sys
import weakref

import pytest
from conftest import Child, assert_clean

import aiorun

STARTS = ["create_task", "Task"] + (["eager"] if sys.version_info >= (3, 12) else [])

# Each worker, once cancelled, starts a task past the factory and ends. Its
# task is freed at once (the set lets go of it), so the registry of tasks
# keeps its size: a count of it would not tell that a task was added. Until
# then the set holds the workers, as an application holds its tasks: a task
# that waits on a future only it refers to is garbage, and the collector
# may take it, still pending, at any time.
LATE = """
import asyncio, logging, sys
from aiorun import run

logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
start, loop_kind = sys.argv[1], sys.argv[2]

async def late(number):
    try:
        await asyncio.sleep(0.05)  # still pending at the last looks
    except asyncio.CancelledError:
        print("late", number, "cancelled", flush=True)
        raise
    print("late", number, "done", flush=True)

workers = set()

async def worker(number):
    loop = asyncio.get_running_loop()
    try:
        await loop.create_future()
    finally:
        workers.discard(asyncio.current_task())
        if start == "create_task":
            loop.create_task(late(number))
        elif start == "Task":
            asyncio.Task(late(number), loop=loop)
        else:
            asyncio.Task(late(number), loop=loop, eager_start=True)

async def main():
    for number in range(3):
        workers.add(asyncio.ensure_future(worker(number)))
    await asyncio.sleep(0)  # their first steps
    asyncio.get_running_loop().stop()

run(main(), use_uvloop=loop_kind == "uvloop")
print("run returned", flush=True)
"""


@pytest.mark.parametrize("start", STARTS)
def test_a_task_started_as_another_ends_is_found(loop_kind: str, start: str) -> None:
    # Through the task factory, a task that another task starts is clean-up
    # work, and waited for. Past the factory, nothing tells who started it,
    # so it counts as arrived from outside: cancelled, and named.
    child = Child(LATE, start, loop_kind)
    out, err = child.finish()
    assert child.returncode == 0, err
    outcome = "done" if start == "create_task" else "cancelled"
    assert sorted(out.splitlines()) == [
        f"late 0 {outcome}",
        f"late 1 {outcome}",
        f"late 2 {outcome}",
        "run returned",
    ], out + err
    assert out.splitlines()[-1] == "run returned", out
    if start == "create_task":
        assert_clean(err)
    else:
        assert (
            "The shutdown also cancelled 3 tasks that started after it had cancelled the others"
            in err
        )
        assert "(3 x late())" in err


def test_the_registry_read_for_the_looks_holds_every_pending_task() -> None:
    # The looks read asyncio's private registry of tasks up to Python 3.13.
    # Should a release move it, they fall back to all_tasks() and stay
    # correct, but slow: this says so on every version it concerns. From
    # 3.14 on, all_tasks() reads the loop's own thread only, and is asked.
    references = aiorun._task_registry()
    if sys.version_info >= (3, 14):
        assert references is None
        return
    assert isinstance(references, set)

    async def idle() -> None:
        await asyncio.sleep(0)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(idle()), asyncio.Task(idle(), loop=loop)]
        if sys.version_info >= (3, 12):
            tasks.append(asyncio.Task(idle(), loop=loop, eager_start=True))
        # Pending tasks are in the registry, by a weak reference each.
        assert all(weakref.ref(task) in references for task in tasks)
        await asyncio.gather(*tasks)

    asyncio.run(main())


def test_the_finder_finds_what_all_tasks_finds_look_after_look() -> None:
    finder = aiorun._TaskFinder()
    looks: list[bool] = []

    async def idle() -> None:
        await asyncio.sleep(3600)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(idle()) for _ in range(5)]
        for step in range(4):
            await asyncio.sleep(0)
            looks.append(finder.find(loop) == asyncio.all_tasks(loop))
            tasks[step].cancel()  # one fewer
            tasks.append(asyncio.Task(idle(), loop=loop))  # one more, past the factory
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        looks.append(finder.find(loop) == asyncio.all_tasks(loop))

    asyncio.run(main())
    assert looks == [True] * 5
