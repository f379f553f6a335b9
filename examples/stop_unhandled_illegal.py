"""Refused: stop_on_unhandled_errors on a loop with its own exception handler.

    .venv/bin/python examples/stop_unhandled_illegal.py   # exits 1: "... is unavailable ..."

Your handler would see every error, so the option could never act.
"""

import asyncio

from aiorun import run


async def job() -> None:
    raise Exception("ouch")


if __name__ == "__main__":
    loop = asyncio.new_event_loop()
    loop.set_exception_handler(lambda loop, context: None)
    try:
        run(job(), loop=loop, stop_on_unhandled_errors=True)
    finally:
        loop.close()
