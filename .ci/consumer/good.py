"""A typed application using aiorun as its users do: no error expected."""

import asyncio
from concurrent.futures import ThreadPoolExecutor

import aiorun
from aiorun import ShutdownCallback, run, shutdown_waits_for


async def save(record: str) -> str:
    await asyncio.sleep(0)
    return record


async def main() -> None:
    saved: str = await shutdown_waits_for(save("a"))
    print(saved, aiorun.__version__)
    asyncio.get_running_loop().stop()


async def cleanup(loop: asyncio.AbstractEventLoop) -> None:
    await asyncio.sleep(0)


def on_signal(loop: asyncio.AbstractEventLoop) -> None:
    loop.stop()


callback: ShutdownCallback = cleanup

if __name__ == "__main__":
    run(
        main(),
        shutdown_handler=on_signal,
        shutdown_callback=callback,
        executor=ThreadPoolExecutor(2),
        timeout_task_shutdown=5.0,
        timeout_executor_shutdown=None,
        exit_on_second_signal=True,
        loop_factory=asyncio.new_event_loop,
    )
