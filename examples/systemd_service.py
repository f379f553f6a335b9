"""A service that tells systemd how it is doing, and names a blocked loop.

    .venv/bin/python examples/systemd_service.py [PORT]

Under systemd (a unit with Type=notify, WatchdogSec= and NotifyAccess=main,
as in the README), run() sends READY=1 once main() has returned with the
server listening, WATCHDOG=1 from the event loop itself, and STOPPING=1 and
STATUS= lines during the shutdown. Outside systemd (no NOTIFY_SOCKET) the
option does nothing. Send "block" to make a handler block the loop for two
seconds: the log names where.

Port 0 picks a free port; the one in use is printed.
"""

import asyncio
import logging
import sys
import time

from aiorun import run

servers: "list[asyncio.Server]" = []


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    line = await reader.readline()
    if line.strip() == b"block":
        time.sleep(2)  # a blocking call in a coroutine: what warn_blocked_loop names
    writer.write(b"ok\n")
    await writer.drain()
    writer.close()


async def main(port: int) -> None:
    server = await asyncio.start_server(handle, "127.0.0.1", port)
    servers.append(server)
    print("Serving on port", server.sockets[0].getsockname()[1], flush=True)
    # Returning here is the readiness point: READY=1 goes to systemd now.


async def stop_accepting(loop: asyncio.AbstractEventLoop) -> None:
    for server in servers:
        server.close()  # no new connections during the shutdown


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    run(
        main(int(sys.argv[1]) if len(sys.argv) > 1 else 8888),
        shutdown_callback=stop_accepting,
        shutdown_timeout=20,
        systemd_notify=True,
        warn_blocked_loop=0.5,
    )
