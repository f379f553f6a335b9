"""A typed application with mistakes: each marked line must be reported."""

import asyncio
from concurrent.futures import ProcessPoolExecutor

from aiorun import run, shutdown_waits_for


async def save(record: str) -> str:
    await asyncio.sleep(0)
    return record


async def count_rows() -> int:
    await asyncio.sleep(0)
    return 3


async def main() -> None:
    count: int = await shutdown_waits_for(save("a"))  # expect-error
    print(count)


if __name__ == "__main__":
    run(main(), timeout_task_shutdown="5")  # expect-error
    run(main(), use_uvloop=1, executor_workers="4")  # expect-error
    shutdown_waits_for(save)  # expect-error
    rows: int = run(count_rows(), stop_on_main_exit=True)  # expect-error
    run(stop_on_main_exit=True)  # expect-error
    nothing: int = run(count_rows())  # expect-error
    run(count_rows(), stop_on_main_exit="yes")  # expect-error
    run(main(), systemd_notify=True, warn_blocked_loop="2")  # expect-error
    run(main(), executor=ProcessPoolExecutor())  # expect-error
