"""A tour in one second: workers, protected work, a signal, a clean exit.

    .venv/bin/python examples/demo.py

The program sends itself SIGINT, as Ctrl-C would, and shows the shutdown.
"""

import asyncio
import logging
import os
import signal

from aiorun import run, shutdown_waits_for

logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")


async def worker(n: int) -> None:
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        print(f"worker {n}: cancelled, cleaning up")
        await asyncio.sleep(0.1)  # cleanup may await
        print(f"worker {n}: clean")
        raise


async def save_report() -> str:
    await asyncio.sleep(0.5)
    print("report saved, although the shutdown had begun")
    return "report"


async def main() -> None:
    workers = [asyncio.create_task(worker(n)) for n in range(3)]
    shutdown_waits_for(save_report())  # fire and forget, but never lost
    await asyncio.sleep(0.2)
    print("sending myself SIGINT (as Ctrl-C would)")
    os.kill(os.getpid(), signal.SIGINT)
    await asyncio.Event().wait()  # until the shutdown cancels main() too
    del workers


if __name__ == "__main__":
    run(main())
    print("run() returned: bye")
