"""Nothing of a run stays reachable once run() has returned."""

from __future__ import annotations

import asyncio
import gc
import signal
import weakref
from typing import Any

import pytest
from conftest import Child, kwargs_for

from aiorun import run, shutdown_waits_for


@pytest.mark.parametrize("stop_on_errors", [False, True])
def test_an_error_nobody_retrieved_is_reported_when_run_returns(
    loop_kind: str, stop_on_errors: bool
) -> None:
    # A stream processor whose failed task stays referenced from the main
    # coroutine's frame: asyncio reports the error once the task is freed.
    # That must happen as run() returns, by reference counting alone (the
    # collector is off here): a reference cycle through the run's state
    # would delay it to some later collection, maybe after logging is gone.
    child = Child(
        """
        import asyncio, gc, sys
        from aiorun import run

        gc.disable()

        async def process(record):
            raise ValueError(f"bad record {record}")

        async def main():
            loop = asyncio.get_running_loop()
            worker = loop.create_task(process(7))
            await asyncio.sleep(0)
            print("ready", flush=True)
            await asyncio.sleep(3600)

        run(main(), use_uvloop=sys.argv[1] == "uvloop", stop_on_unhandled_errors=sys.argv[2] == "1")
        print("run returned", file=sys.stderr, flush=True)
        """,
        loop_kind,
        str(int(stop_on_errors)),
    )
    child.wait_for("ready")
    child.send(signal.SIGTERM)
    _, err = child.finish()
    assert child.returncode == 0, err
    assert "Task exception was never retrieved" in err
    assert "ValueError: bad record 7" in err
    assert err.index("ValueError: bad record 7") < err.index("run returned"), err


@pytest.mark.parametrize("stop_on_main_exit", [False, True])
@pytest.mark.parametrize("stop_on_errors", [False, True])
def test_tasks_and_errors_are_freed_without_the_collector(
    loop_kind: str, stop_on_errors: bool, stop_on_main_exit: bool
) -> None:
    refs: list[weakref.ref[Any]] = []

    async def fail() -> None:
        raise ValueError("kept?")

    async def protected() -> None:
        await asyncio.sleep(0)

    async def main() -> None:
        failed = asyncio.ensure_future(fail())
        refs.append(weakref.ref(failed))
        refs.append(weakref.ref(asyncio.current_task()))  # type: ignore[arg-type]
        shutdown_waits_for(protected())
        await asyncio.sleep(0)
        failed.exception()  # retrieved: no report, nothing to log
        asyncio.get_running_loop().stop()
        await asyncio.sleep(3600)

    enabled = gc.isenabled()
    gc.collect()
    gc.disable()  # whatever is freed now is freed by reference counting alone
    try:
        run(
            main(),
            stop_on_unhandled_errors=stop_on_errors,
            stop_on_main_exit=stop_on_main_exit,
            **kwargs_for(loop_kind),
        )
        assert [ref() for ref in refs] == [None, None]
    finally:
        if enabled:
            gc.enable()


def test_protected_work_left_pending_on_the_closed_loop_is_let_go(loop_kind: str) -> None:
    refs: list[weakref.ref[Any]] = []

    async def endless() -> None:
        await asyncio.sleep(3600)

    async def main() -> None:
        shutdown_waits_for(endless())
        (protected,) = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        refs.append(weakref.ref(protected))
        asyncio.get_running_loop().stop()

    # Reported as refusing to exit, and left pending when the loop closes.
    run(main(), timeout_task_shutdown=0, **kwargs_for(loop_kind))
    gc.collect()
    assert refs[0]() is None
