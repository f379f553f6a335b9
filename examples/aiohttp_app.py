"""An aiohttp application whose requests in flight finish when it is stopped.

    .venv/bin/python examples/aiohttp_app.py [PORT]

main() starts the application with an AppRunner and a TCPSite, prints the
port, and returns; run() keeps the loop running. On SIGTERM or Ctrl-C,
run() calls stop(), its shutdown_callback, before it cancels any task.
runner.cleanup() stops accepting connections and waits for the requests in
flight, so no request is cut. Then run() cancels what is left.

GET / answers at once. GET /slow?seconds=N answers after N seconds. Port 0
picks a free port; the one in use is printed.
"""

import asyncio
import sys

from aiohttp import web

from aiorun import run


async def hello(request: web.Request) -> web.Response:
    return web.Response(text="hello\n")


async def slow(request: web.Request) -> web.Response:
    seconds = float(request.query.get("seconds", "1"))
    print(f"slow request: working for {seconds} s", flush=True)
    await asyncio.sleep(seconds)  # the work
    return web.Response(text="done\n")


app = web.Application()
app.router.add_get("/", hello)
app.router.add_get("/slow", slow)
# No access log: one line per request would flood the console under load.
runner = web.AppRunner(app, access_log=None)


async def main(port: int) -> None:
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    print(f"Serving on port {runner.addresses[0][1]}", flush=True)
    # Returning here is fine: run() keeps the loop and the server running.


async def stop(loop: asyncio.AbstractEventLoop) -> None:
    """Run first in the shutdown, before run() cancels any task."""
    # Stop accepting connections, then wait for the requests in flight.
    await runner.cleanup()
    print("clean-up done: every request in flight has finished", flush=True)


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8080
    run(main(port), shutdown_callback=stop, shutdown_timeout=25)
