"""What a service manager needs: systemd notification, and a blocked loop named.

The notify socket is a real AF_UNIX datagram socket that the child binds
before it calls run(), as systemd would, and reads from a thread of its
own, noting each message with the time and what main() had done by then.
"""

from __future__ import annotations

import signal

import pytest
from conftest import Child, assert_clean

SYSTEMD = """
import asyncio, logging, os, socket, sys, tempfile, threading, time
from aiorun import run

kind, case = sys.argv[1], sys.argv[2]
logging.basicConfig(stream=sys.stdout, level=logging.WARNING, format="%(levelname)s %(message)s")
events = []

def event(*what):
    events.append((time.monotonic(), *what))

receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
if case == "abstract":
    address = "@aiorun-test-%d" % os.getpid()
    bound = "\\0" + address[1:]
else:
    address = bound = os.path.join(tempfile.mkdtemp(), "notify")
receiver.bind(bound)

def mark(message):
    # Through the receiver's one queue: in order with what run() sends.
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
        sender.sendto(b"mark " + message.encode(), bound)
os.environ["NOTIFY_SOCKET"] = address if case != "unreachable" else address + ".gone"
if case in ("watchdog", "blocked"):
    os.environ["WATCHDOG_USEC"] = "300000"  # pings at least every 0.15 s
    os.environ["WATCHDOG_PID"] = str(os.getpid())

seen = {"READY=1": threading.Event(), "STOPPING=1": threading.Event()}

def receive():
    while True:
        message = receiver.recv(4096).decode()
        if message == "mark end":
            return
        if message.startswith("mark "):  # the test's own, not run()'s
            event("mark", message[5:])
            continue
        event("got", message.replace("\\n", " | "))
        for line in message.splitlines():
            if line in seen:
                seen[line].set()

reader = threading.Thread(target=receive)
reader.start()

async def main():
    event("environment", sorted(k for k in os.environ if k in (
        "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")))
    await asyncio.sleep(0)  # a pass, in which a READY=1 sent as the loop starts goes out
    if case == "raises":
        asyncio.get_running_loop().call_later(0.2, asyncio.get_running_loop().stop)
        raise ValueError("not ready")
    if case == "blocked":
        await asyncio.sleep(1)
        event("blocking")
        time.sleep(1)
        event("unblocked")
    if case in ("watchdog", "blocked"):
        await asyncio.sleep(1)
    mark("main returns")
    if case != "signal":
        asyncio.get_running_loop().call_later(0.2, asyncio.get_running_loop().stop)
    else:
        print("ready", flush=True)

def callback(loop):
    # The loop waits here: a STOPPING=1 that the reader gets was sent before.
    stopping = seen["STOPPING=1"].wait(5)
    event("shutdown_callback", "after STOPPING" if stopping else "before STOPPING")

run(main(), shutdown_callback=callback, use_uvloop=kind == "uvloop",
    systemd_notify=case != "off", shutdown_timeout=30)
mark("end")
reader.join()
receiver.close()
for when, *what in events:
    print(round(when, 3), *what)
"""


def events(out: str) -> list[tuple[float, str, str]]:
    found = []
    for line in out.splitlines():
        when, _, rest = line.partition(" ")
        try:
            found.append((float(when), *rest.partition(" ")[::2]))
        except ValueError:
            continue
    return found


def messages(out: str) -> list[str]:
    return [what for _, kind, what in events(out) if kind == "got"]


def order(out: str) -> list[str]:
    """Events in order, the status lines and watchdog pings left out."""
    return [
        f"{kind} {what}".strip()
        for _, kind, what in events(out)
        if not what.startswith(("STATUS=", "WATCHDOG=")) and kind != "environment"
    ]


@pytest.mark.parametrize("case", ["path", "abstract"])
def test_ready_once_main_returned_stopping_before_the_callback(loop_kind: str, case: str) -> None:
    child = Child(SYSTEMD, loop_kind, case)
    out, err = child.finish()
    assert child.returncode == 0, err
    extend = order(out)[2].rpartition("=")[2]
    assert order(out) == [
        "mark main returns",
        "got READY=1",
        f"got STOPPING=1 | EXTEND_TIMEOUT_USEC={extend}",
        "shutdown_callback after STOPPING",
    ], out
    # systemd is asked for the time shutdown_timeout leaves, and a margin.
    assert 34_000_000 < int(extend) <= 35_000_000
    statuses = [m for m in messages(out) if m.startswith("STATUS=")]
    assert "STATUS=serving" in statuses
    assert "STATUS=running shutdown_callback" in statuses
    assert statuses[-1] == "STATUS=shutdown complete", statuses
    assert_clean(err)


def test_no_ready_when_main_raises(loop_kind: str) -> None:
    child = Child(SYSTEMD, loop_kind, "raises")
    out, _ = child.finish()
    assert "READY=1" not in messages(out), out
    assert "got STOPPING=1" in "\n".join(order(out)), out


def test_the_environment_is_cleared_and_nothing_sent_without_the_option(loop_kind: str) -> None:
    child = Child(SYSTEMD, loop_kind, "path")
    out, _ = child.finish()
    assert "environment []" in out
    child = Child(SYSTEMD, loop_kind, "off")
    out, err = child.finish()
    assert child.returncode == 0, err
    assert messages(out) == []
    assert "environment ['NOTIFY_SOCKET']" in out


def test_a_send_that_fails_warns_once(loop_kind: str) -> None:
    child = Child(SYSTEMD, loop_kind, "unreachable")
    out, err = child.finish()
    assert child.returncode == 0, err
    warnings = [line for line in out.splitlines() if "systemd notification" in line]
    assert len(warnings) == 1, out
    assert "READY=1" in warnings[0] or "STATUS=serving" in warnings[0]


def test_watchdog_pings_come_from_the_loop_at_the_asked_cadence(loop_kind: str) -> None:
    child = Child(SYSTEMD, loop_kind, "blocked")
    out, err = child.finish()
    assert child.returncode == 0, err
    found = events(out)
    pings = [when for when, kind, what in found if what == "WATCHDOG=1"]
    blocked = next(when for when, kind, _ in found if kind == "blocking")
    unblocked = next(when for when, kind, _ in found if kind == "unblocked")
    before = [when for when in pings if when < blocked]
    assert len(before) >= 5, pings
    # At least every WATCHDOG_USEC / 2 while the loop runs...
    assert max(b - a for a, b in zip(before, before[1:])) < 0.15, before
    # ...and none while it is blocked.
    assert not [when for when in pings if blocked < when < unblocked - 0.01], pings


def test_no_watchdog_pings_for_another_process() -> None:
    child = Child(SYSTEMD.replace("str(os.getpid())", '"1"'), "asyncio", "watchdog")
    out, err = child.finish()
    assert child.returncode == 0, err
    assert "WATCHDOG=1" not in messages(out)
    assert "READY=1" in messages(out)


@pytest.mark.parametrize("value", ["0", "-5", "soon", "\u00b3"])
def test_a_watchdog_period_that_is_not_a_positive_number_is_ignored(value: str) -> None:
    # "\u00b3" (superscript three) passes str.isdigit(), but int() refuses it.
    child = Child(SYSTEMD.replace('"300000"', repr(value)), "asyncio", "watchdog")
    out, err = child.finish()
    assert child.returncode == 0, err
    assert "WATCHDOG=1" not in messages(out)
    assert "READY=1" in messages(out)


BLOCKING = """
import asyncio, logging, os, signal, sys, threading, time
from aiorun import run

kind, case = sys.argv[1], sys.argv[2]
logging.basicConfig(stream=sys.stdout, level=logging.WARNING, format="%(levelname)s %(message)s")

async def main():
    await asyncio.sleep(0.1)  # a loop that has run: see the note at the test
    if case == "signal":
        print("ready", flush=True)  # the parent signals while the loop is blocked
    for _ in range(20): time.sleep(0.1)  # 2 s in short sleeps: see the signal test
    if case != "signal":
        asyncio.get_running_loop().stop()

def in_thread():
    run(main(), use_uvloop=kind == "uvloop", warn_blocked_loop=0.5 if case != "off" else None)

if case == "thread":
    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join()
else:
    in_thread()
print("threads left:", threading.active_count(), flush=True)
"""


@pytest.mark.parametrize("case", ["main", "thread"])
def test_a_blocked_loop_is_named_then_timed(loop_kind: str, case: str) -> None:
    child = Child(BLOCKING, loop_kind, case)
    out, err = child.finish()
    assert child.returncode == 0, err
    warnings = [line for line in out.splitlines() if line.startswith("WARNING The event loop")]
    assert len(warnings) == 2, out
    assert warnings[0].startswith("WARNING The event loop has not run for 0.5 seconds"), out
    assert "(warn_blocked_loop=0.5); its thread is at <string>:12 in main" in warnings[0]
    assert warnings[1].startswith("WARNING The event loop ran again after 2."), out
    assert "threads left: 1" in out
    assert_clean(err)


def test_a_signal_the_blocked_loop_cannot_act_on_is_named(loop_kind: str) -> None:
    # A Python-level signal handler runs only when the interpreter checks
    # for signals: after most calls, or when a blocking call such as
    # time.sleep() is interrupted. The kernel delivers the signal to the
    # child's main thread, not to the watch thread. The parent signals as
    # soon as it reads "ready", so the signal can land after the child's
    # write but before its sleep has begun. From CPython 3.14 no check
    # follows the first run of a call with keyword arguments, such as
    # print(..., flush=True) here, and a single time.sleep(2) then ran to its
    # end with the handler still pending: the signal was noted only after the
    # block, too late to be named. Short sleeps bound that delay to one of
    # them, as any code that runs Python between blocking calls does.
    child = Child(BLOCKING, loop_kind, "signal")
    child.wait_for("ready")
    child.send(signal.SIGTERM)
    out, err = child.finish()
    assert child.returncode == 0, err
    assert "meanwhile SIGTERM arrived, which the loop will handle when it runs again" in out, out
    assert "Stopping the loop" in out


def test_nothing_is_watched_without_the_option(loop_kind: str) -> None:
    child = Child(BLOCKING, loop_kind, "off")
    out, err = child.finish()
    assert child.returncode == 0, err
    assert "The event loop" not in out
    assert "threads left: 1" in out
