"""The last moments of a run: nothing destroyed pending, nothing left for the interpreter.

A server that main() starts and leaves listening accepts connections until
the loop is closed, in the very passes that stop the loop; tasks given up
on hold clean-up that must run while their loop still exists.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import logging
import re
import textwrap
import time

import pytest
from conftest import STUBBORN, Child, assert_clean, eager_too, kwargs_for, stubborn

from aiorun import run

RUNS = 20

# Twenty runs in one process, each serving traffic from four client threads
# that connect through the SIGTERM (sent by one of them once traffic flows)
# until the server is gone.
SERVER = """
import asyncio, gc, itertools, logging, os, signal, socket, sys, threading
from aiorun import run

loop_kind, server_kind, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
REQUEST = b"ping\\n" if server_kind == "streams" else (
    b"GET / HTTP/1.1\\r\\nHost: test\\r\\nConnection: close\\r\\n\\r\\n"
)

def clients(port, served):
    for _ in range(20_000):  # bounded: the server is gone long before
        try:
            # A timeout: no client outlives a server that went silent.
            with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
                conn.sendall(REQUEST)
                if not conn.recv(1024):  # closed unanswered: the server is going
                    return
        except OSError:
            return
        if next(served) == 40:  # traffic flows: stop the service
            os.kill(os.getpid(), signal.SIGTERM)

async def handle(reader, writer):
    await reader.readline()
    writer.write(b"pong\\n")
    await writer.drain()
    writer.close()

async def main():
    if server_kind == "streams":
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
    else:
        from aiohttp import web

        async def pong(request):
            return web.Response(text="pong")

        app = web.Application()
        app.router.add_get("/", pong)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        port = runner.addresses[0][1]
    served = itertools.count()
    for _ in range(4):
        threading.Thread(target=clients, args=(port, served), daemon=True).start()

for _ in range(runs):
    run(main(), use_uvloop=loop_kind == "uvloop")
    gc.collect()
print("runs done", flush=True)
"""


@eager_too
@pytest.mark.parametrize("server_kind", ["streams", "aiohttp"])
def test_a_server_left_listening_leaves_nothing_pending_at_close(
    loop_kind: str, server_kind: str
) -> None:
    # uvloop's loop.close() warns of the server and the connections left
    # open (ResourceWarning) before closing each; a warning made an error
    # stops it closing them, and it then waits for them forever.
    ignore = ("ResourceWarning",) if loop_kind == "uvloop" else ()
    child = Child(SERVER, loop_kind, server_kind, str(RUNS), dev=False, ignore=ignore)
    out, err = child.finish(timeout=100)
    assert child.returncode == 0, err[-4000:]
    assert "runs done" in out
    assert "destroyed but it is pending" not in err, err[-4000:]
    assert "never awaited" not in err, err[-4000:]
    assert "cannot reuse already awaited coroutine" not in err, err[-4000:]  # no step once closed
    # What kept coming, when a pass that stops the loop accepted something
    # (a matter of timing), is named once a run, with what to do about it.
    reports = [line for line in err.splitlines() if "after it had cancelled the others" in line]
    assert len(reports) <= RUNS
    for line in reports:
        assert "Close listening servers in shutdown_callback" in line, line
        assert "_accept_connection2()" in line or "handle()" in line or "start()" in line, line


@eager_too
def test_tasks_that_keep_coming_are_named_once_and_closed(loop_kind: str) -> None:
    # A callback that starts a task on every pass of the loop, as a server
    # under traffic accepts a connection: the passes that stop the loop
    # start one too, every time. The run still ends, and says why.
    child = Child(
        """
        import asyncio, logging, sys
        from aiorun import run

        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")

        async def handle():
            await asyncio.sleep(0)

        def accept(loop):
            loop.create_task(handle())
            loop.call_soon(accept, loop)

        async def main():
            loop = asyncio.get_running_loop()
            loop.call_soon(accept, loop)
            loop.call_later(0.1, loop.stop)

        run(main(), timeout_task_shutdown=0.5, use_uvloop=sys.argv[1] == "uvloop")
        print("run returned", flush=True)
        """,
        loop_kind,
    )
    out, err = child.finish()
    assert child.returncode == 0, err
    assert "run returned" in out
    reports = [line for line in err.splitlines() if "after it had cancelled the others" in line]
    assert len(reports) == 1, err
    assert re.match(
        r"WARNING The shutdown also cancelled \d+ tasks? that started after it had cancelled "
        r"the others \((\d+ x )?handle\(\)\)\. Close listening servers in "
        r"shutdown_callback ",
        reports[0],
    ), reports[0]
    assert_clean(err)


# 15,000 tasks in Queue.get() that swallow every cancellation: closed before
# the loop, their clean-up runs now, not against a closed loop at exit.
QUEUE_WAITERS = (
    STUBBORN
    + """
import asyncio, logging, sys
from aiorun import run

logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
count, kind, loop_kind = int(sys.argv[1]), sys.argv[2], sys.argv[3]
finished = []
# The tasks are held, as asyncio asks: a task that only a cycle through its
# queue holds may be collected at any moment, pending, before the shutdown.
held = []

async def consumer(queue, number):
    try:
        while True:
            try:
                await queue.get()
            except asyncio.CancelledError:
                pass
    finally:
        finished.append(number)

async def awaits_in_finally():
    try:
        await stubborn()
    finally:
        await asyncio.sleep(0)  # on close(): "coroutine ignored GeneratorExit"

async def main():
    queue = asyncio.Queue()
    for number in range(count):
        held.append(asyncio.ensure_future(consumer(queue, number)))
    if kind == "ignoring":
        for _ in range(count):
            held.append(asyncio.ensure_future(awaits_in_finally()))
    await asyncio.sleep(0)
    asyncio.get_running_loop().stop()

run(main(), timeout_task_shutdown=0.2, use_uvloop=loop_kind == "uvloop")
print("finished before run() returned:", len(finished), flush=True)
sys.stderr.write("RUN RETURNED\\n")
"""
)


def after_run(err: str) -> str:
    return err.split("RUN RETURNED\n", 1)[1]


def test_tasks_refusing_to_exit_are_finalized_before_the_loop_closes(loop_kind: str) -> None:
    child = Child(QUEUE_WAITERS, "15000", "plain", loop_kind, dev=False)
    out, err = child.finish(timeout=100)
    assert child.returncode == 0, err[-4000:]
    assert "finished before run() returned: 15000" in out
    assert len(after_run(err).encode()) < 4096, after_run(err)[:4000]


@eager_too
def test_a_finally_of_each_task_given_up_on_runs_before_run_returns(loop_kind: str) -> None:
    child = Child(QUEUE_WAITERS, "3", "plain", loop_kind)
    out, err = child.finish()
    assert child.returncode == 0, err
    assert "finished before run() returned: 3" in out
    assert after_run(err) == ""
    assert_clean(err)


def test_what_the_clean_ups_of_tasks_given_up_on_raise_is_reported_once(loop_kind: str) -> None:
    child = Child(QUEUE_WAITERS, "5000", "ignoring", loop_kind, dev=False)
    out, err = child.finish(timeout=100)
    assert child.returncode == 0, err[-4000:]
    assert "finished before run() returned: 5000" in out
    before = err.split("RUN RETURNED\n", 1)[0]
    reports = [line for line in before.splitlines() if "clean-up" in line]
    assert len(reports) == 1, before[-4000:]
    expected = "5000 x RuntimeError: coroutine ignored GeneratorExit (in awaits_in_finally())"
    assert expected in reports[0]
    assert len(reports[0]) < 1024


def test_with_a_loop_supplied_tasks_given_up_on_are_left_as_they_are(
    own_loop: asyncio.AbstractEventLoop, caplog: pytest.LogCaptureFixture
) -> None:
    tasks: list[asyncio.Task[None]] = []

    async def main() -> None:
        tasks.extend(asyncio.ensure_future(stubborn()) for _ in range(3))
        await asyncio.sleep(0)
        asyncio.get_running_loop().stop()

    run(main(), loop=own_loop, timeout_task_shutdown=0.1)
    assert not own_loop.is_closed()
    assert all(not task.done() for task in tasks)
    assert all(inspect.getcoroutinestate(t.get_coro()) == "CORO_SUSPENDED" for t in tasks)  # type: ignore[arg-type]
    assert not [r for r in caplog.records if "clean-up" in r.getMessage()]
    # Still the application's: it may run the loop again, and end them itself.
    for task in tasks:
        task.get_coro().close()  # type: ignore[union-attr]


@eager_too
def test_tasks_left_by_an_abandoned_shutdown_are_finalized(
    loop_kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    cleaned: list[str] = []

    async def holds_on(name: str) -> None:
        try:
            await stubborn()
        finally:
            cleaned.append(name)

    async def main() -> None:
        for name in ("a", "b"):
            asyncio.ensure_future(holds_on(name))
        await asyncio.sleep(0)
        asyncio.get_running_loop().stop()

    with pytest.raises(TimeoutError):
        run(main(), shutdown_timeout=0.2, **kwargs_for(loop_kind))
    assert sorted(cleaned) == ["a", "b"]
    assert logging.WARNING in [r.levelno for r in caplog.records]


@eager_too
def test_no_step_of_a_task_given_up_on_follows_its_close(
    loop_kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Tasks woken by timers, and a log handler slow enough that their timers
    # are due by the time the abandonment is reported: uvloop runs due
    # timers before the callbacks of a pass, so a close made in a pass would
    # be followed by their steps ("cannot reuse already awaited coroutine",
    # "Task exception was never retrieved").
    class Slow(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            time.sleep(0.02)

    async def main() -> None:
        for _ in range(5):
            asyncio.ensure_future(stubborn(period=0.001))
        await asyncio.sleep(0)  # their first steps
        asyncio.get_running_loop().stop()

    gc.collect()  # what earlier tests left is reported now, not below
    caplog.clear()
    slow = Slow(logging.WARNING)
    logging.getLogger("aiorun").addHandler(slow)
    try:
        with pytest.raises(TimeoutError):
            run(main(), shutdown_timeout=0.2, **kwargs_for(loop_kind))
    finally:
        logging.getLogger("aiorun").removeHandler(slow)
    gc.collect()
    assert not [r for r in caplog.records if r.name == "asyncio"], caplog.text


def given_up(worker: str, loop_kind: str, after: str = "", dev: bool = True) -> Child:
    """A child whose main() starts ``worker()``, a task that refuses to exit, then stops."""
    return Child(
        STUBBORN
        + """
import asyncio, logging, os, sys
from aiorun import run

logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
"""
        + textwrap.dedent(worker)
        + """
async def main():
    asyncio.ensure_future(worker())
    await asyncio.sleep(0)
    asyncio.get_running_loop().stop()

run(main(), timeout_task_shutdown=0.1, use_uvloop=sys.argv[1] == "uvloop")
print("run returned", flush=True)
"""
        + after,
        loop_kind,
        dev=dev,
    )


@eager_too
def test_a_task_started_by_the_clean_up_of_a_task_given_up_on_is_closed(loop_kind: str) -> None:
    child = given_up(
        """
        async def report():
            await asyncio.sleep(0)  # it may start in the last pass, never end
            print("report ran", flush=True)

        async def worker():
            loop = asyncio.get_running_loop()
            try:
                await stubborn()
            finally:
                loop.create_task(report())
        """,
        loop_kind,
    )
    out, err = child.finish()
    assert child.returncode == 0, err
    assert out == "run returned\n", out
    assert_clean(err)


def test_a_task_swallowing_generator_exit_does_not_hold_run(loop_kind: str) -> None:
    # Its clean-up awaits again: with the loop running, it suspends there and
    # close() reports it. Without one, asyncio.sleep() would fail, the bare
    # except swallow that too, and the close never end. The application's
    # bug stays its own: the collector closes it again once run() returned,
    # so the child leaves with os._exit().
    child = given_up(
        """
        async def worker():
            while True:
                try:
                    await asyncio.sleep(0.01)
                except:  # noqa: E722, swallows GeneratorExit too
                    pass
        """,
        loop_kind,
        after="sys.stderr.flush()\nos._exit(0)\n",
        dev=False,
    )
    out, err = child.finish()
    assert out == "run returned\n", err
    assert "1 task raised: RuntimeError: coroutine ignored GeneratorExit" in err, err
