"""TCP echo server: starts up inside main(), serves until Ctrl-C.

    .venv/bin/python examples/echo_server.py [PORT]

Port 0 picks a free port; the one in use is printed.
"""

import asyncio
import sys

from aiorun import run


async def handle_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    data = await reader.read(100)
    peer = writer.get_extra_info("peername")
    print(f"Received {data.decode()!r} from {peer}")
    writer.write(data)
    await writer.drain()
    writer.close()
    await writer.wait_closed()


async def main(port: int) -> None:
    # Startup is ordinary async code: no run_until_complete() phases needed.
    server = await asyncio.start_server(handle_echo, "127.0.0.1", port)
    host, port = server.sockets[0].getsockname()[:2]
    print(f"Serving on {host} {port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 8888))
