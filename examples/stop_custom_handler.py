"""Your own exception handler decides: here it stops the loop.

    .venv/bin/python examples/stop_custom_handler.py

The other job is still cancelled during the shutdown, and run() returns
normally: the handler has dealt with the error.
"""

import asyncio
from typing import Any

from aiorun import run


async def job() -> None:
    raise Exception("ouch")


async def other_job() -> None:
    try:
        await asyncio.sleep(10)
    except asyncio.CancelledError:
        print("other_job was cancelled!")
        raise


def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    print(f"Stopping loop due to error: {context['exception']}")
    loop.stop()


if __name__ == "__main__":
    loop = asyncio.new_event_loop()
    loop.set_exception_handler(handler)
    # No references kept, on purpose: asyncio reports a task's error as
    # unhandled when the finished task is released with it unretrieved.
    loop.create_task(job())  # noqa: RUF006
    loop.create_task(other_job())  # noqa: RUF006
    run(loop=loop)
    loop.close()
