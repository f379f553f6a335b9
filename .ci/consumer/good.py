"""A typed application using aiorun as its users do: no error expected."""

import asyncio
import sys
from concurrent.futures import ThreadPoolExecutor

from typing_extensions import assert_type

import aiorun
from aiorun import ShutdownCallback, run, shutdown_waits_for


async def save(record: str) -> str:
    await asyncio.sleep(0)
    return record


async def main() -> None:
    saved: str = await shutdown_waits_for(save("a"))
    shutdown_waits_for(save("b"))  # dropped: the work goes on, the shutdown waits for it
    task: asyncio.Task[str] = asyncio.create_task(shutdown_waits_for(save("c")))
    print(await task)
    print(saved, aiorun.__version__)
    asyncio.get_running_loop().stop()


async def cleanup(loop: asyncio.AbstractEventLoop) -> None:
    await asyncio.sleep(0)


def on_signal(loop: asyncio.AbstractEventLoop) -> None:
    loop.stop()


callback: ShutdownCallback = cleanup


async def count_rows() -> int:
    await asyncio.sleep(0)
    return 3


def batch_job(dry_run: bool) -> int:
    # With stop_on_main_exit=True, main's result, or None if it was cancelled.
    rows = run(count_rows(), stop_on_main_exit=True, shutdown_timeout=25)
    assert_type(rows, "int | None")
    if rows is None:
        sys.exit(143)  # interrupted: not a finished job
    assert_type(run(count_rows()), None)
    assert_type(run(count_rows(), stop_on_main_exit=False), None)
    assert_type(run(count_rows(), stop_on_main_exit=dry_run), "int | None")
    return rows + 1


if __name__ == "__main__":
    run(
        main(),
        shutdown_handler=on_signal,
        shutdown_callback=callback,
        executor=ThreadPoolExecutor(2),
        timeout_task_shutdown=5.0,
        timeout_executor_shutdown=None,
        exit_on_second_signal=True,
        systemd_notify=True,
        warn_blocked_loop=0.5,
        loop_factory=asyncio.new_event_loop,
    )
