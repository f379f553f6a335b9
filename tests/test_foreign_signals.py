"""Signals that belong to someone else: ignored ones, and a server's own handlers."""

from __future__ import annotations

import signal

import pytest
from conftest import Child, assert_clean

IGNORED_SIGINT = """
import asyncio, logging, signal, sys
from aiorun import run

logging.basicConfig(level=logging.DEBUG, format="%(levelname)s %(message)s")
# What a shell does for a background job.
signal.signal(signal.SIGINT, signal.SIG_IGN)

async def main():
    print("during run, SIGINT ignored:", signal.getsignal(signal.SIGINT) == signal.SIG_IGN)
    print("ready", flush=True)
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError as exc:
        print("main cancelled:", exc.args[0], flush=True)
        raise

run(main(), use_uvloop=sys.argv[1] == "uvloop")
print("after run, SIGINT ignored:", signal.getsignal(signal.SIGINT) == signal.SIG_IGN, flush=True)
"""


def test_an_ignored_sigint_stays_ignored(loop_kind: str) -> None:
    child = Child(IGNORED_SIGINT, loop_kind)
    child.wait_for("ready")
    # The SIGINT is queued before the SIGTERM is sent, so the process takes
    # it no later than the SIGTERM. Had it been captured, the loop would
    # read both from its wakeup fd, in either order, and act on both: the
    # SIGINT would start the shutdown, or be reported as a signal during it.
    child.send(signal.SIGINT)
    child.send(signal.SIGTERM)
    out, err = child.finish()
    assert child.returncode == 0, err
    assert "main cancelled: aiorun shutdown: signal SIGTERM" in out, out + err
    assert "Got SIGINT" not in err, err
    assert "Got signal SIGINT" not in err, err
    assert "during run, SIGINT ignored: True" in out
    assert "after run, SIGINT ignored: True" in out
    assert "SIGINT is ignored in this process (SIG_IGN)" in err, err
    assert_clean(err)


# A uvicorn server with a slow route and a lifespan shutdown, run by run().
# A client thread starts one request; the route prints "ready" once it is
# in flight, and the parent sends one SIGTERM then.
UVICORN_APP = """
import asyncio, http.client, logging, signal, socket, sys, threading
import uvicorn
from aiorun import run

logging.basicConfig(level=logging.DEBUG, format="%(levelname)s %(name)s %(message)s")
kind, mode, options = sys.argv[1:]


def say(*words):
    # One write per line: the client thread and the loop print at the same time.
    sys.stdout.write(" ".join(map(str, words)) + "\\n")
    sys.stdout.flush()


class Ignored(logging.Handler):
    # A readiness line for the parent: aiorun has seen a signal and ignored it.
    def emit(self, record):
        if "during the shutdown" in record.getMessage():
            say("ignored")


logging.getLogger("aiorun").addHandler(Ignored())


async def hang():
    say("hung")
    await asyncio.sleep(3600)


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                say("lifespan shutdown")
                await send({"type": "lifespan.shutdown.complete"})
                return
    else:
        say("ready")
        await asyncio.sleep(1)  # the slow request, the behaviour under test
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"done"})

# Listening before run(): the client may connect at once, and waits in the
# backlog until uvicorn accepts.
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen()
port = listener.getsockname()[1]

def client():
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", "/slow")
        response = connection.getresponse()
        say("response", response.status, response.read().decode())
    except Exception as exc:
        say("request failed:", repr(exc))
    finally:
        connection.close()

thread = threading.Thread(target=client)
thread.start()
server = uvicorn.Server(uvicorn.Config(app, lifespan="on", loop="none", log_config=None))
result = run(
    server.serve(sockets=[listener]),
    stop_on_main_exit=mode == "stop_on_main_exit",
    exit_on_second_signal="exit_on_second_signal" in options,
    shutdown_callback=hang() if "hang" in options else None,
    use_uvloop=kind == "uvloop",
    warn_blocked_loop=30 if "warn_blocked_loop" in options else None,
)
listener.close()  # uvicorn closes it on a shutdown of its own, not otherwise
thread.join()
say("run returned", result, signal.getsignal(signal.SIGTERM) == signal.SIG_DFL)
"""


# warn_blocked_loop: its watch wraps the handlers that run() installs.
@pytest.mark.parametrize("options", ["", "exit_on_second_signal", "warn_blocked_loop"])
@pytest.mark.parametrize("mode", ["default", "stop_on_main_exit"])
def test_one_sigterm_lets_uvicorn_drain_and_shut_down(
    loop_kind: str, mode: str, options: str
) -> None:
    child = Child(UVICORN_APP, loop_kind, mode, options)
    child.wait_for("ready")
    child.send(signal.SIGTERM)
    out, err = child.finish()
    assert child.returncode == 0, out + err
    assert "response 200 done" in out, out + err
    assert "lifespan shutdown" in out, out + err
    assert "run returned None True" in out, out + err  # and the handlers are back
    # Seen while uvicorn's handler was in place, then delivered again by uvicorn.
    assert "Got SIGTERM, which another library's handler takes" in err, err
    assert "during the shutdown" not in err, err
    assert "again" not in err, err
    warnings = [line for line in err.splitlines() if line.startswith("WARNING aiorun")]
    assert warnings in ([], ["WARNING aiorun Stopping the loop"]), err
    assert_clean(err)


@pytest.mark.parametrize("mode", ["default", "stop_on_main_exit"])
def test_a_signal_after_the_one_uvicorn_passed_on_still_counts(loop_kind: str, mode: str) -> None:
    # The shutdown hangs in shutdown_callback. In the default mode the SIGTERM
    # uvicorn passes on is the first for run(), so the next one abandons the
    # shutdown. Under stop_on_main_exit the shutdown began with main's end
    # and the SIGTERM passed on does not count: the next one is the first,
    # ignored, and the one after it abandons the shutdown.
    child = Child(UVICORN_APP, loop_kind, mode, "exit_on_second_signal,hang")
    child.wait_for("ready")
    child.send(signal.SIGTERM)
    child.wait_for("hung")
    if mode == "stop_on_main_exit":
        child.send(signal.SIGTERM)
        child.wait_for("ignored")
    child.send(signal.SIGTERM)
    out, err = child.finish()
    assert child.returncode == 128 + signal.SIGTERM, out + err
    assert "response 200 done" in out, out + err
    assert "lifespan shutdown" in out, out + err
    assert "Got SIGTERM again, so the shutdown is abandoned" in err, err
    if mode == "stop_on_main_exit":
        assert (
            "Got SIGTERM during the shutdown and ignored it; the next signal ends the run "
            "(exit_on_second_signal=True)" in err
        ), err
    assert_clean(err)
