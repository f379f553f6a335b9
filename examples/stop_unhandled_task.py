"""The same with no main coroutine: a task made on your own loop raises.

.venv/bin/python examples/stop_unhandled_task.py     # exits 1 with the traceback of "ouch"
"""

import asyncio

from aiorun import run


async def job() -> None:
    raise Exception("ouch")


if __name__ == "__main__":
    loop = asyncio.new_event_loop()
    # No reference kept, on purpose: asyncio reports a task's error as
    # unhandled when the finished task is released with it unretrieved.
    loop.create_task(job())  # noqa: RUF006
    try:
        run(loop=loop, stop_on_unhandled_errors=True)
    finally:
        loop.close()  # a loop you pass in stays yours to close
