"""TCP echo client: sends one message, prints the echo, and stops.

.venv/bin/python examples/echo_client.py [PORT] [MESSAGE]
"""

import asyncio
import sys

from aiorun import run


async def tcp_echo_client(port: int, message: str) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    print(f"Send: {message!r}")
    writer.write(message.encode())
    data = await reader.read(100)
    print(f"Received: {data.decode()!r}")
    writer.close()
    await writer.wait_closed()
    # One message and done: stopping the loop starts the shutdown.
    asyncio.get_running_loop().stop()


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8888
    message = sys.argv[2] if len(sys.argv) > 2 else "Hello World!"
    run(tcp_echo_client(port, message))
