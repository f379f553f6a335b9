"""Workers in a TaskGroup, stopped by SIGTERM, cleaning up in order.

    .venv/bin/python examples/taskgroup_workers.py     (then Ctrl-C, or kill -TERM PID)

Python 3.11 or newer (asyncio.TaskGroup). main() holds three workers in a
TaskGroup; a heartbeat task runs beside it, outside main(). With
stop_on_main_exit=True the shutdown cancels main() alone first: the group
cancels its workers and waits for their clean-up, main() ends, and only then
is the heartbeat cancelled. Every step prints a line, so the order shows.
"""

import asyncio
import os

from aiorun import run

# Tasks started outside the group: the loop itself keeps only weak references.
background: "set[asyncio.Task[None]]" = set()


async def heartbeat(main_task: "asyncio.Task[str]") -> None:
    try:
        while True:
            await asyncio.sleep(1)
    except asyncio.CancelledError as exc:
        print(f"heartbeat: cancelled ({exc.args[0]}); main() ended: {main_task.done()}")
        raise


async def worker(n: int) -> None:
    done = 0
    try:
        while True:
            await asyncio.sleep(0.2)  # one job
            done += 1
    except asyncio.CancelledError:
        print(f"worker {n}: cancelled after {done} jobs, flushing its results")
        await asyncio.sleep(0.1 * n)  # a clean-up that takes a while
        print(f"worker {n}: clean")
        raise


async def main() -> str:
    me = asyncio.current_task()
    assert me is not None
    background.add(asyncio.create_task(heartbeat(me)))
    try:
        async with asyncio.TaskGroup() as group:
            for n in (1, 2, 3):
                group.create_task(worker(n))
            print(f"ready: pid {os.getpid()}; press Ctrl-C or send SIGTERM", flush=True)
    finally:
        print("main: every worker is clean, the task group has closed")
    return "never: the workers run until stopped"


if __name__ == "__main__":
    result = run(main(), stop_on_main_exit=True, shutdown_timeout=10)
    # None: main() ended by the shutdown's cancellation.
    print(f"run() returned {result!r}")
