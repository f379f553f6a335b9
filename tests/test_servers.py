"""A real server under load from a real client on loopback, stopped by SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest
from conftest import REPO, Child, assert_clean

SERVER = REPO / "examples" / "drain_server.py"
Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def start_server(shutdown_timeout: float) -> tuple[Child, int]:
    server = Child.script(SERVER, "0", str(shutdown_timeout))
    line = server.readline()  # readiness: the server prints its port
    assert line.startswith("Serving on"), line + server.finish()[1]
    return server, int(line.split()[-1])


async def request(port: int, seconds: float) -> Connection:
    """Send one request; return once the server has accepted it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"{seconds}\n".encode())
        await writer.drain()
        if await reader.readline() != b"accepted\n":
            raise ConnectionError("not accepted")
    except BaseException:
        writer.close()
        raise
    return reader, writer


async def answer(connection: Connection) -> bytes:
    reader, writer = connection
    try:
        return await reader.readline()
    finally:
        writer.close()


@pytest.mark.parametrize(
    ("count", "said"), [(40, "draining 40 requests"), (1, "draining 1 request")]
)
def test_sigterm_mid_load_loses_no_request_in_flight(count: int, said: str) -> None:
    server, port = start_server(shutdown_timeout=20)

    async def client() -> list[bytes]:
        # Slow requests, every one accepted (in flight) before the SIGTERM.
        connections = await asyncio.gather(*(request(port, 0.5) for _ in range(count)))
        server.send(signal.SIGTERM)
        return list(await asyncio.gather(*(answer(c) for c in connections)))

    answers = asyncio.run(client())
    out, err = server.finish()
    assert answers == [b"done\n"] * count
    assert server.returncode == 0, err
    assert f"{said}\n" in out
    assert_clean(err)


def test_under_continuous_traffic_the_server_is_gone_within_shutdown_timeout() -> None:
    shutdown_timeout = 2.0
    server, port = start_server(shutdown_timeout)
    refused = 0

    async def client() -> float:
        nonlocal refused
        # Requests far longer than the deadline: the drain cannot finish.
        stuck = await asyncio.gather(*(request(port, 3600) for _ in range(10)))
        server.send(signal.SIGTERM)
        sent = time.monotonic()
        # Traffic goes on until the process is gone (bounded: 60 s).
        while server.proc.poll() is None and time.monotonic() - sent < 60:
            try:
                connection = await request(port, 0)
            except ConnectionError:
                refused += 1
                await asyncio.sleep(0.001)  # pacing the traffic, not waiting for anything
            else:
                await answer(connection)  # accepted just before the close
        gone = time.monotonic() - sent
        for _reader, writer in stuck:
            writer.close()
        return gone

    gone = asyncio.run(client())
    _, err = server.finish()
    assert gone < shutdown_timeout + 3, gone
    assert server.returncode == 1  # run() raised TimeoutError: the shutdown did not complete
    assert "TimeoutError: The shutdown did not complete within 2.0 seconds" in err
    assert "10 pending tasks" in err
    assert refused > 0  # the listening socket was closed at once
