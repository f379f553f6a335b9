"""A random application for the stress test; its spec comes as JSON in argv.

It prints ``ready`` once every ingredient has started, then ends the way the
spec says (or waits for the parent's signal). Every piece of work prints a
line when it starts and when it finishes, so the parent can tell that none
was lost.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import threading
import time

from aiorun import run, shutdown_waits_for

spec = json.loads(sys.argv[1])


def say(*words: object) -> None:
    # One write of a short line is atomic on a pipe: lines from the executor
    # threads and from the loop never interleave.
    os.write(1, (" ".join(map(str, words)) + "\n").encode())


async def idle(name: str) -> None:
    await asyncio.sleep(3600)


async def slow_cleanup(name: str, delay: float) -> None:
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        say("cleanup-start", name)
        await asyncio.sleep(delay)
        say("cleanup-end", name)
        raise


async def helper(name: str, delay: float) -> None:
    await asyncio.sleep(delay)
    say("helper-end", name)


async def spawning_cleanup(name: str, helpers: list[float]) -> None:
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        say("cleanup-start", name)
        for i, delay in enumerate(helpers):
            say("helper-start", f"{name}.{i}")
            asyncio.ensure_future(helper(f"{name}.{i}", delay))
        say("cleanup-end", name)
        raise


async def protected_work(name: str, delay: float) -> str:
    await asyncio.sleep(delay)
    say("protected-end", name)
    return name


async def awaiting_caller(name: str, delay: float) -> None:
    try:
        await shutdown_waits_for(protected_work(name, delay))
    except asyncio.CancelledError:
        pass


def executor_job(name: str, delay: float) -> None:
    time.sleep(delay)
    say("job-end", name)


async def numbers(name: str, delay: float):
    try:
        i = 0
        while True:
            yield i
            i += 1
            await asyncio.sleep(0.001)
    finally:
        await asyncio.sleep(delay)
        say("agen-closed", name)


async def consume(name: str, delay: float, pause_outside: bool) -> None:
    async for _ in numbers(name, delay):
        if pause_outside:  # suspended in our own frame, not the generator's
            await asyncio.sleep(0.001)


async def main() -> str:
    loop = asyncio.get_running_loop()
    for item in spec["items"]:
        kind, name, delay = item["kind"], item["name"], item["delay"]
        say("start", kind, name)
        if kind == "idle":
            asyncio.ensure_future(idle(name))
        elif kind == "slow_cleanup":
            asyncio.ensure_future(slow_cleanup(name, delay))
        elif kind == "spawning_cleanup":
            asyncio.ensure_future(spawning_cleanup(name, item["helpers"]))
        elif kind == "protected_awaited":
            asyncio.ensure_future(awaiting_caller(name, delay))
        elif kind == "protected_fire_and_forget":
            shutdown_waits_for(protected_work(name, delay))
        elif kind == "executor_job":
            loop.run_in_executor(None, executor_job, name, delay)
        elif kind == "agen":
            asyncio.ensure_future(consume(name, delay, item["pause_outside"]))
    for _ in range(3):  # let every task take its first step
        await asyncio.sleep(0)
    say("ready")
    ending = spec["ending"]
    if ending == "stop":
        loop.stop()
    elif ending == "exit":
        sys.exit(spec["status"])
    elif ending == "error":
        raise RuntimeError("unhandled error under stop_on_unhandled_errors")
    elif ending == "return":  # under stop_on_main_exit only
        return "result"
    await asyncio.sleep(3600)  # until the parent's signal
    return "cancelled"


before = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
try:
    result = run(
        main(),
        use_uvloop=spec["loop"] == "uvloop",
        stop_on_unhandled_errors=spec["ending"] == "error",
        executor_workers=4,
        stop_on_main_exit=spec["main_exit"],
    )
    say("returned", result)
finally:
    after = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    say("handlers-restored", before == after, threading.active_count())
