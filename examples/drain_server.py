"""A server that loses no request when it is stopped.

    .venv/bin/python examples/drain_server.py [PORT] [SHUTDOWN_TIMEOUT]

On SIGTERM (or Ctrl-C) it stops accepting connections, lets the requests
in flight finish, and only then lets run() cancel what is left; the whole
shutdown is bounded by SHUTDOWN_TIMEOUT seconds (default 25: a few seconds
under Kubernetes' default grace period of 30).

The protocol, one request per connection: the client sends a number of
seconds and a newline; the server answers "accepted" at once, works that
long, then answers "done" and closes. Port 0 picks a free port; the one in
use is printed.
"""

import asyncio
import sys

from aiorun import run

# The handlers running now: what the drain waits for.
in_flight: "set[asyncio.Task[None]]" = set()
servers: "list[asyncio.Server]" = []


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    task = asyncio.current_task()
    assert task is not None
    in_flight.add(task)
    try:
        request = await reader.readline()
        if not request:
            return
        writer.write(b"accepted\n")
        await writer.drain()
        await asyncio.sleep(float(request))  # the work
        writer.write(b"done\n")
        await writer.drain()
    finally:
        in_flight.discard(task)
        writer.close()


async def main(port: int) -> None:
    server = await asyncio.start_server(handle, "127.0.0.1", port)
    servers.append(server)
    print(f"Serving on {server.sockets[0].getsockname()[1]}", flush=True)


async def drain(loop: asyncio.AbstractEventLoop) -> None:
    """Run first in the shutdown, before anything is cancelled."""
    for server in servers:
        server.close()  # 1. stop accepting: the listening socket closes
    if in_flight:  # 2. let the requests in flight finish
        count = len(in_flight)
        print(f"draining {count} request{'' if count == 1 else 's'}", flush=True)
        await asyncio.wait(set(in_flight))
    # 3. run() then cancels whatever is left, within shutdown_timeout.


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8888
    timeout = float(sys.argv[2]) if len(sys.argv) > 2 else 25.0
    run(main(port), shutdown_callback=drain, shutdown_timeout=timeout)
