"""What applications meet in production: servers nobody closed, deep await chains, errors of main().

Each child process is a small application; the parent plays its clients
and its service manager.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import threading
import time

import pytest
from conftest import Child, assert_clean, require_uvloop

import aiorun

PRELUDE = """
import asyncio, logging, sys
from aiorun import run, shutdown_waits_for

logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s", stream=sys.stdout)
kind = sys.argv[1]

def say(*args):
    print(*args, flush=True)
"""


def child(body: str, *args: str, loop_kind: str) -> Child:
    if loop_kind == "uvloop":
        require_uvloop()
    # On uvloop, warnings made errors keep loop.close() from closing a
    # server left listening (see README); every other warning stays an error.
    ignore = ("ResourceWarning",) if loop_kind == "uvloop" else ()
    return Child(PRELUDE + body, loop_kind, *args, dev=False, ignore=ignore)


def lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line]


class Clients:
    """Clients on loopback that connect, ask and hang up, over and over, from threads."""

    def __init__(self, port: int, count: int) -> None:
        self.port = port
        self.served = 0
        self.target = float("inf")  # set by wait_until_served()
        self.reached = threading.Event()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.loop, daemon=True) for _ in range(count)]
        for thread in self.threads:
            thread.start()

    def loop(self) -> None:
        for _ in range(100_000):  # bounded: the server is gone long before
            if self.stop.is_set():
                return
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as conn:
                    conn.sendall(b"ping\n")
                    if conn.recv(100) == b"pong\n":
                        with self.lock:
                            self.served += 1
                            if self.served >= self.target:
                                self.reached.set()
            except OSError:
                # Refused or reset: the server is going. Clients keep trying
                # until the test stops them, as real ones would.
                time.sleep(0.001)  # pacing the retries, not waiting for anything

    def wait_until_served(self, count: int, timeout: float = 20) -> None:
        with self.lock:
            self.target = float(count)
            if self.served >= count:
                self.reached.set()
        assert self.reached.wait(timeout), f"only {self.served} requests were served"

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=5)


# A worker whose clean-up starts more work: a task that flushes, and work
# protected during the shutdown. The shutdown must wait for both.
CLEAN_UP_WORK = """
async def flush():
    await asyncio.sleep(0.2)
    say("flushed")

async def save():
    await asyncio.sleep(0.2)
    say("saved")

async def worker():
    try:
        await asyncio.sleep(3600)
    finally:
        # Clean-up work, started by a task the shutdown cancelled.
        asyncio.ensure_future(flush())
        # Work protected during the shutdown: it is waited for.
        shutdown_waits_for(save())
"""


LEFT_LISTENING = """
async def handle(reader, writer):
    await reader.readline()
    writer.write(b"pong\\n")
    await writer.drain()
    writer.close()

async def main():
    asyncio.create_task(worker())
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    say("port", server.sockets[0].getsockname()[1])

run(main(), use_uvloop=kind == "uvloop")
say("run returned")
"""


@pytest.mark.parametrize("attempt", range(3))
def test_a_server_left_listening_under_traffic_ends_soon_after_sigterm(
    loop_kind: str, attempt: int
) -> None:
    proc = child(CLEAN_UP_WORK + LEFT_LISTENING, loop_kind=loop_kind)
    line = proc.readline()
    assert line.startswith("port "), line + proc.finish()[1]
    clients = Clients(int(line.split()[1]), 24)
    try:
        clients.wait_until_served(100)  # readiness: traffic flows
        proc.send(signal.SIGTERM)
        sent = time.monotonic()
        out, err = proc.finish(timeout=70)
        gone = time.monotonic() - sent
    finally:
        clients.close()
    assert proc.returncode == 0, out + err
    # Within a second on an idle machine; the bound leaves room for a busy one.
    # Before, the clients kept the shutdown waiting for up to 60 seconds.
    assert gone < 3, gone
    got = lines(out)
    assert got[-1] == "run returned", out
    # The clean-up that a cancelled task started, and the work protected
    # during the shutdown, both completed.
    assert "flushed" in got, out
    assert "saved" in got, out
    # At most one warning says what kept arriving, and what to do about it.
    warnings = [line for line in got if line.startswith("WARNING") and "arriv" in line]
    assert len(warnings) <= 1, out
    for warning in warnings:
        assert "Close listening servers in shutdown_callback" in warning, warning
    assert "Task was destroyed" not in out + err
    assert "never awaited" not in out + err


ENDLESS_ARRIVALS = """
import os, signal, time

async def handle():
    await asyncio.sleep(0)

def accept(loop):
    # A plain callback that starts a task on every pass of the loop, as a
    # server accepts connections under traffic that never stops.
    loop.create_task(handle())
    loop.call_soon(accept, loop)

async def main():
    loop = asyncio.get_running_loop()
    asyncio.create_task(worker())
    loop.call_soon(accept, loop)
    await asyncio.sleep(0)  # one pass: the worker waits, and accept() has run
    os.kill(os.getpid(), signal.SIGTERM)

started = time.monotonic()
run(main(), use_uvloop=kind == "uvloop")  # timeout_task_shutdown stays at 60 s
say("run returned after", time.monotonic() - started)
"""


def test_tasks_arriving_without_end_do_not_hold_the_shutdown(loop_kind: str) -> None:
    # Not a bound in time ends this shutdown, but a bound in rounds: the
    # arrivals never stop, and timeout_task_shutdown is the default 60 s.
    proc = child(CLEAN_UP_WORK + ENDLESS_ARRIVALS, loop_kind=loop_kind)
    out, err = proc.finish(timeout=70)
    assert proc.returncode == 0, out + err
    got = lines(out)
    assert got[-1].startswith("run returned after "), out
    # Within a second on an idle machine. Before, timeout_task_shutdown.
    assert float(got[-1].split()[-1]) < 10, out
    assert "flushed" in got, out
    assert "saved" in got, out
    warnings = [line for line in got if line.startswith("WARNING") and "arriv" in line]
    assert len(warnings) == 1, out
    assert "x handle()" in warnings[0], warnings[0]
    assert "Task was destroyed" not in out + err
    assert "never awaited" not in out + err


IDLE_CLIENT = """
async def handle(reader, writer):
    say("client connected")
    try:
        await reader.read()  # The client never sends anything.
    except asyncio.CancelledError:
        say("handler cancelled")
        raise
    finally:
        writer.close()

async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        say("port", server.sockets[0].getsockname()[1])
        if sys.argv[2] == "serve_forever":
            await server.serve_forever()  # Its cancellation waits for the connection.
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            say("main cleaning up")
            raise
        # Leaving "async with" waits for the connection.

say("run returned", run(main(), stop_on_main_exit=True, use_uvloop=kind == "uvloop"))
"""


@pytest.mark.parametrize("form", ["serve_forever", "async_with"])
def test_stop_on_main_exit_with_an_idle_client_ends_soon_after_sigterm(
    loop_kind: str, form: str
) -> None:
    proc = child(IDLE_CLIENT, form, loop_kind=loop_kind)
    line = proc.readline()
    assert line.startswith("port "), line + proc.finish()[1]
    with socket.create_connection(("127.0.0.1", int(line.split()[1])), timeout=30):
        proc.wait_for("client connected")
        proc.send(signal.SIGTERM)
        sent = time.monotonic()
        out, err = proc.finish(timeout=70)
        gone = time.monotonic() - sent
    assert proc.returncode == 0, out + err
    # Before, Python 3.12 and 3.13 waited out timeout_task_shutdown (60 s),
    # as Server.wait_closed() waits for the connection's handler.
    assert gone < 3, gone
    got = lines(out)
    if form == "async_with":
        # main's own clean-up begins before the handler sees its cancellation.
        assert got.index("main cleaning up") < got.index("handler cancelled"), out
    assert got[-1] == "run returned None", out
    assert "Task was destroyed" not in out + err


ASYNC_GENERATOR = """
async def ticks():
    try:
        while True:
            yield
    finally:
        # Its clean-up needs the executor, which must still be there.
        say(await asyncio.to_thread(str.upper, "flushed in a thread"))

async def main():
    global ticker  # suspended at its yield when the shutdown starts
    ticker = ticks()
    await ticker.__anext__()
    say("ready")

run(main(), use_uvloop=kind == "uvloop")
say("run returned")
"""


def test_an_async_generator_may_use_the_executor_in_its_clean_up(loop_kind: str) -> None:
    proc = child(ASYNC_GENERATOR, loop_kind=loop_kind)
    proc.wait_for("ready")
    proc.send(signal.SIGTERM)
    out, err = proc.finish(timeout=30)
    assert proc.returncode == 0, out + err
    assert lines(out)[-2:] == ["FLUSHED IN A THREAD", "run returned"], out
    assert "cannot schedule new futures" not in out + err
    assert_clean(err)


DEEP_CHAIN = """
LEVELS = int(sys.argv[2])
ended = 0

async def level(n):
    global ended
    try:
        if n == 0:
            say("ready")
            await asyncio.sleep(3600)
        else:
            await asyncio.gather(level(n - 1))
    finally:
        ended += 1

run(level(LEVELS), use_uvloop=kind == "uvloop")
say("run returned", ended)
"""


def test_an_await_chain_a_thousand_deep_is_cancelled_and_awaited(loop_kind: str) -> None:
    proc = child(DEEP_CHAIN, "1000", loop_kind=loop_kind)
    proc.wait_for("ready")
    proc.send(signal.SIGTERM)
    out, err = proc.finish(timeout=60)
    assert proc.returncode == 0, out + err
    # Every level ended before run() returned: the whole chain was cancelled
    # and awaited, and nothing was reported as arriving or refusing to exit.
    assert lines(out)[-1] == "run returned 1001", out
    warnings = [line for line in lines(out) if line.startswith("WARNING")]
    assert warnings == ["WARNING Stopping the loop"], out
    assert "RecursionError" not in out + err
    assert_clean(err)


MAIN_RAISES = """
async def watch(main_task):
    await asyncio.wait([main_task])
    await asyncio.sleep(0)  # main's done callbacks have run
    say("ready")

async def main():
    asyncio.create_task(watch(asyncio.current_task()))
    await asyncio.sleep(0)
    raise ValueError("bad configuration")

run(main(), use_uvloop=kind == "uvloop")
say("run returned")
"""


def test_an_error_in_main_says_that_the_loop_keeps_running_and_what_would_end_it(
    loop_kind: str,
) -> None:
    proc = child(MAIN_RAISES, loop_kind=loop_kind)
    proc.wait_for("ready")
    proc.send(signal.SIGTERM)
    out, err = proc.finish(timeout=30)
    assert proc.returncode == 0, out + err
    got = lines(out)
    report = got.index("ERROR Task exception was never retrieved")
    warnings = [line for line in got if line.startswith("WARNING main() raised")]
    assert warnings == [
        "WARNING main() raised ValueError, and the event loop keeps running without it. Pass "
        "stop_on_main_exit=True (or stop_on_unhandled_errors=True) to run() to end the run instead"
    ], out
    # Right after asyncio's own report.
    assert report < got.index(warnings[0]) < got.index("ready"), out
    assert got[-1] == "run returned", out


def test_run_from_a_running_loop_says_what_to_do_instead() -> None:
    async def inner() -> None:
        pass

    async def outer() -> None:
        coro = inner()
        with pytest.raises(RuntimeError) as caught:
            aiorun.run(coro)
        assert str(caught.value) == (
            "run() cannot be called from a running event loop. Await the coroutine "
            "instead, or call run() from synchronous code"
        )

    asyncio.run(outer())
