"""What applications written for the original see, kept or documented."""

from __future__ import annotations

import asyncio
import logging
import os
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
    # relied on it set SIG_IGN themselves before calling run(). run() leaves
    # an ignored signal alone, so SIGINT ends this run.
    child = Child(AFTER_RUN, "ignore")
    child.wait_for("ready")
    child.send(signal.SIGTERM)  # ignored: the process never takes it
    child.send(signal.SIGINT)
    out, err = child.finish()
    assert child.returncode == 0, err
    assert "survived" in out
    assert_clean(err)


@pytest.mark.parametrize("stop_on_errors", [False, True])
def test_an_error_in_main_is_reported_in_asyncios_words(
    loop_kind: str, stop_on_errors: bool, caplog: pytest.LogCaptureFixture
) -> None:
    # Log alerts written for the original match these lines.
    async def main() -> None:
        asyncio.get_running_loop().call_soon(asyncio.get_running_loop().stop)
        raise ValueError("address already in use")

    if stop_on_errors:
        with pytest.raises(ValueError, match="address already in use"):
            run(main(), stop_on_unhandled_errors=True, **kwargs_for(loop_kind))
        (record,) = [r for r in caplog.records if r.name == "aiorun" and r.levelname == "ERROR"]
        assert record.getMessage() == (
            "Unhandled exception; stopping loop: 'Task exception was never retrieved'"
        )
    else:
        run(main(), **kwargs_for(loop_kind))
        (record,) = [r for r in caplog.records if r.name == "asyncio"]
        assert record.getMessage().startswith("Task exception was never retrieved\nfuture: <Task ")
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], ValueError)


def test_the_originals_debug_lines(loop_kind: str, caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.sleep(3600)

    with caplog.at_level(logging.DEBUG, logger="aiorun"):
        run(main(), **kwargs_for(loop_kind))
    lines = [r.getMessage() for r in caplog.records if r.levelname == "DEBUG"]
    for line in ("Entering run()", "Creating default executor", "Entering shutdown handler"):
        assert line in lines


LOST_BEFORE_RUN = """
import asyncio, gc, sys, weakref
from aiorun import run, shutdown_waits_for

old = asyncio.new_event_loop()
asyncio.set_event_loop(old)

async def flush_metrics():
    print("flushed", flush=True)

work = flush_metrics()
held = weakref.ref(work)
shutdown_waits_for(work)  # before run(): on a loop that run() replaces
del work

async def main():
    asyncio.get_running_loop().stop()

run(main(), use_uvloop=sys.argv[1] == "uvloop")
old.close()  # the application's own loop lets go of what it had scheduled
del old
gc.collect()
print("held after run:", held() is not None, flush=True)
"""


def test_protected_work_on_a_loop_never_run_is_reported_and_let_go(loop_kind: str) -> None:
    child = Child(LOST_BEFORE_RUN, loop_kind)
    out, err = child.finish()
    assert child.returncode == 0, err
    assert "flushed" not in out
    assert "held after run: False" in out, out
    assert "shutdown_waits_for() never ran (1 task: flush_metrics())" in err, err
    assert_clean(err)  # one clear warning, not asyncio's two
