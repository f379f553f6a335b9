"""shutdown_waits_for() and run() under asyncio's eager task factory.

With ``loop.set_task_factory(asyncio.eager_task_factory)`` (Python 3.12 and
later) a task's first step runs inside ``create_task()``: work that never
suspends is over before ``shutdown_waits_for()`` has its task in hand.
"""

from __future__ import annotations

import asyncio
import gc
import signal
import weakref

import pytest
from conftest import HAVE_EAGER, Child, assert_clean, eager_too, kwargs_for

from aiorun import run, shutdown_waits_for

REPORT = "shutdown_waits_for() work failed with no caller awaiting it"

# A thousand calls of protected work that ends at once, in each phase of a
# run. Each task is followed by a weak reference: a task that the protection
# still holds once its work is over stays alive, and counts.
INSTANT = """
import asyncio, gc, weakref
from aiorun import run, shutdown_waits_for

refs = []

async def instant(i):
    refs.append(weakref.ref(asyncio.current_task()))
    return i

def alive():
    gc.collect()
    return sum(ref() is not None for ref in refs)

async def main():
    for i in range(1000):
        shutdown_waits_for(instant(i))
    got = [await shutdown_waits_for(instant(i)) for i in range(1000)]
    print("results", got == list(range(1000)), flush=True)
    print("alive while running", alive(), flush=True)
    print("ready", flush=True)
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        for i in range(1000):
            shutdown_waits_for(instant(i))
        print("alive during the shutdown", alive(), flush=True)
        raise

run(main())
print("alive after run", alive(), flush=True)
"""


@pytest.mark.skipif(not HAVE_EAGER, reason="asyncio.eager_task_factory came in Python 3.12")
def test_a_thousand_protections_of_work_ending_at_once_leave_nothing_behind() -> None:
    child = Child(INSTANT, "eager")
    child.wait_for("ready")
    child.send(signal.SIGTERM)
    out, err = child.finish(timeout=30)
    assert child.returncode == 0, out + err
    assert "results True" in out, out
    assert "alive while running 0" in out, out
    assert "alive during the shutdown 0" in out, out
    assert "alive after run 0" in out, out
    assert "never retrieved" not in err, err[-4000:]
    assert "AttributeError" not in err, err[-4000:]
    assert_clean(err)


async def _work(kind: str, tasks: list[weakref.ref[asyncio.Task[object]]]) -> str:
    task = asyncio.current_task()
    assert task is not None
    tasks.append(weakref.ref(task))
    if kind.endswith("later"):
        await asyncio.sleep(0.01)  # work that takes time: the behaviour under test
    if kind.startswith("fails"):
        raise KeyError(kind)
    return kind


@eager_too
@pytest.mark.parametrize("phase", ["running", "shutting down"])
@pytest.mark.parametrize("way", ["awaited", "dropped"])
@pytest.mark.parametrize(
    "kind", ["returns at once", "returns later", "fails at once", "fails later"]
)
def test_protected_work_of_every_kind_ends_as_it_would_without_eager_start(
    loop_kind: str, phase: str, way: str, kind: str
) -> None:
    tasks: list[weakref.ref[asyncio.Task[object]]] = []
    got: list[object] = []
    reports: list[str] = []

    def on_error(loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
        reports.append(str(context["message"]))  # the message alone: it holds no task

    async def protect() -> None:
        waiter = shutdown_waits_for(_work(kind, tasks))
        if way == "dropped":
            return
        try:
            got.append(await waiter)
        except KeyError as exc:
            got.append(exc.args[0])

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(on_error)
        if phase == "running":
            await protect()
            loop.stop()
            return
        loop.stop()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await protect()
            raise

    run(main(), **kwargs_for(loop_kind))
    gc.collect()  # a task's error never retrieved is reported as the task goes
    assert len(tasks) == 1
    assert tasks[0]() is None  # nothing of the work is held once run() has returned
    assert got == ([kind] if way == "awaited" else [])
    failed_alone = way == "dropped" and kind.startswith("fails")
    assert reports == ([REPORT] if failed_alone else [])


@eager_too
def test_protected_work_that_suspends_is_waited_for_by_the_shutdown(loop_kind: str) -> None:
    events: list[str] = []

    async def work() -> None:
        events.append("work started")
        await asyncio.sleep(0.05)  # work that takes time: the behaviour under test
        events.append("work done")

    async def main() -> None:
        shutdown_waits_for(work())
        events.append("call returned")
        asyncio.get_running_loop().stop()

    run(main(), **kwargs_for(loop_kind))
    # Eager start runs the work up to its first suspension inside the call.
    first = (
        ["work started", "call returned"]
        if loop_kind == "eager"
        else ["call returned", "work started"]
    )
    assert events == [*first, "work done"]
