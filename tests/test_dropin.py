"""What applications written for the original see, kept or documented."""

from __future__ import annotations

import asyncio
import signal
import sys

import pytest
from conftest import Child, assert_clean, kwargs_for

from aiorun import run, shutdown_waits_for


def test_a_task_running_protected_work_shows_the_work(loop_kind: str) -> None:
    reprs: list[str] = []

    async def save() -> None:
        await asyncio.sleep(0)

    async def main() -> None:
        waiter = shutdown_waits_for(save())
        task = asyncio.ensure_future(waiter)
        reprs.append(repr(task))
        await task
        asyncio.get_running_loop().stop()

    run(main(), **kwargs_for(loop_kind))
    (shown,) = reprs
    assert "without __name__" not in shown
    assert "<locals>.save() running at " in shown, shown
    assert __file__ in shown


@pytest.mark.skipif(sys.version_info < (3, 14), reason="call graphs came in 3.14")
def test_call_graphs_go_through_protected_work(loop_kind: str) -> None:
    graphs: list[str] = []

    async def save(ready: asyncio.Event) -> None:
        ready.set()
        await asyncio.sleep(3600)

    async def main() -> None:
        ready = asyncio.Event()
        task = asyncio.ensure_future(shutdown_waits_for(save(ready)))
        await ready.wait()
        await asyncio.sleep(0)
        graphs.append(asyncio.format_call_graph(task))  # type: ignore[attr-defined]
        task.cancel()
        asyncio.get_running_loop().stop()

    run(main(), timeout_task_shutdown=0, **kwargs_for(loop_kind))
    (graph,) = graphs
    assert "save()" in graph or "save" in graph, graph


AFTER_RUN = """
import asyncio, os, signal, sys
from aiorun import run
if sys.argv[1] == "ignore":
    # What run() finds, it puts back: ignored before, ignored after.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)

async def main():
    print("ready", flush=True)
    await asyncio.sleep(3600)

run(main())
os.kill(os.getpid(), signal.SIGTERM)  # a second, late SIGTERM
print("survived", flush=True)
"""


def test_a_signal_after_run_returns_meets_the_handler_found_before() -> None:
    child = Child(AFTER_RUN, "default")
    child.wait_for("ready")
    child.send(signal.SIGTERM)
    out, err = child.finish()
    assert child.returncode == -signal.SIGTERM
    assert "survived" not in out
    assert_clean(err)


def test_ignoring_the_signal_before_run_keeps_it_ignored_after() -> None:
    # The original left SIGTERM ignored after run(); applications that
    # relied on it set SIG_IGN themselves before calling run().
    child = Child(AFTER_RUN, "ignore")
    child.wait_for("ready")
    child.send(signal.SIGTERM)
    out, err = child.finish()
    assert child.returncode == 0, err
    assert "survived" in out
    assert_clean(err)
