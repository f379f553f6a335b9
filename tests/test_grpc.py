"""A real grpc.aio server stopped by a signal, a streaming RPC open."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator

import pytest
from conftest import Child

try:
    import grpc
except ImportError:  # pragma: no cover
    if os.environ.get("AIORUN_REQUIRE_GRPC"):  # CI: never skip in silence
        raise
    pytest.skip("grpcio is not installed (no wheel for this Python?)", allow_module_level=True)

METHOD = "/echo.Echo/Chat"

# Shaped like a gRPC service on aiorun: main stops the server when the
# shutdown cancels it; the streaming handler treats its own cancellation
# as the end of the RPC. The server must stop before the handlers end.
SERVER = """
import asyncio, sys
import grpc
from aiorun import run

async def chat(requests, context):
    try:
        while (request := await context.read()) is not grpc.aio.EOF:
            await context.write(request)
    except asyncio.CancelledError:
        print("rpc ended by its cancellation", file=sys.stderr, flush=True)
        return  # the end of this RPC

handler = grpc.method_handlers_generic_handler(
    "echo.Echo", {"Chat": grpc.stream_stream_rpc_method_handler(chat)}
)

async def main():
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    try:
        await server.wait_for_termination()
    except asyncio.CancelledError:
        print("server stopping", file=sys.stderr, flush=True)
        await server.stop(1)
        raise

async def on_shutdown(loop):
    print("shutdown_callback", file=sys.stderr, flush=True)

run(main(), use_uvloop=sys.argv[1] == "uvloop", shutdown_callback=on_shutdown)
print("run returned", file=sys.stderr, flush=True)
"""


@pytest.mark.parametrize("attempt", range(20))
def test_sigterm_with_a_stream_open_exits_cleanly(loop_kind: str, attempt: int) -> None:
    child = Child(SERVER, loop_kind, dev=False)
    port = int(child.readline())
    done = threading.Event()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        chat = channel.stream_stream(METHOD)
        stream = chat(_requests(done))
        assert next(stream) == b"hello"  # the handler runs, the stream is open
        child.send(signal.SIGTERM if attempt % 2 else signal.SIGINT)
        _, err = child.finish()
        done.set()
    assert child.returncode == 0, err
    assert "Fatal Python error" not in err
    # The server began to stop before its handler saw the cancellation.
    assert err.index("server stopping") < err.index("rpc ended by its cancellation"), err
    assert "run returned" in err


def _requests(done: threading.Event) -> Iterator[bytes]:
    """One request, then none until the test is over: the stream stays open."""
    yield b"hello"
    done.wait(60)
