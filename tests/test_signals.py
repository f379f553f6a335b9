"""Signals, in real child processes with a readiness handshake."""

from __future__ import annotations

import signal
import subprocess

import pytest
from conftest import Child, assert_clean

APP = """
import asyncio, signal, sys
from aiorun import run, shutdown_waits_for

kind = sys.argv[1]

async def main():
    try:
        print("ready", flush=True)
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        print("main cancelled", flush=True)
        raise

run(main(), use_uvloop=kind == "uvloop")
print("run returned", signal.getsignal(signal.SIGINT) is signal.default_int_handler,
      signal.getsignal(signal.SIGTERM) == signal.SIG_DFL, flush=True)
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_cancels_main_and_returns(loop_kind: str, sig: int) -> None:
    child = Child(APP, loop_kind)
    child.wait_for("ready")
    child.send(sig)
    out, err = child.finish()
    assert child.returncode == 0, err
    assert "main cancelled" in out
    assert "run returned True True" in out
    assert "Stopping the loop" in err
    assert "Leaving. Bye!" not in err  # INFO is not shown without logging config
    assert_clean(err)


def test_ctrl_c_works_again_after_run_returns() -> None:
    # The original left SIG_IGN behind: Ctrl-C was dead for the rest of the
    # process and for every child it started.
    child = Child(
        """
        import asyncio, os, signal, subprocess, sys
        from aiorun import run
        async def main():
            os.kill(os.getpid(), signal.SIGINT)
            await asyncio.sleep(3600)
        run(main())
        grandchild = subprocess.run(
            [sys.executable, "-c",
             "import signal; print(signal.getsignal(signal.SIGINT) == signal.SIG_IGN)"],
            capture_output=True, text=True)
        print("grandchild ignores SIGINT:", grandchild.stdout.strip(), flush=True)
        import threading
        print("left behind:", signal.set_wakeup_fd(-1), threading.active_count(), flush=True)
        print("ready", flush=True)
        import time
        # Until the parent's SIGINT raises KeyboardInterrupt. Short naps, not
        # one long sleep: a signal landing after the interpreter's last check
        # but before the sleep began would otherwise wait for its end.
        while True:
            time.sleep(0.01)
        """
    )
    child.wait_for("ready")
    child.send(signal.SIGINT)
    out, err = child.finish()
    assert "grandchild ignores SIGINT: False" in out
    assert "left behind: -1 1" in out  # no wakeup fd, no thread
    assert "KeyboardInterrupt" in err
    assert child.returncode != 0


def test_further_signals_during_shutdown_are_logged_and_ignored(loop_kind: str) -> None:
    child = Child(
        """
        import asyncio, logging, sys
        from aiorun import run
        logging.basicConfig(level=logging.INFO)
        async def main():
            print("ready", flush=True)
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                print("cleanup started", flush=True)
                await asyncio.sleep(0.5)  # slow cleanup, the behaviour under test
                print("cleanup finished", flush=True)
        run(main(), use_uvloop=sys.argv[1] == "uvloop")
        """,
        loop_kind,
    )
    child.wait_for("ready")
    child.send(signal.SIGTERM)
    child.wait_for("cleanup started")
    child.send(signal.SIGINT)
    child.send(signal.SIGTERM)
    out, err = child.finish()
    assert child.returncode == 0, err
    assert "cleanup finished" in out
    assert "during the shutdown and ignored it; run(exit_on_second_signal=True) makes" in err
    assert "Closing the loop." in err
    assert_clean(err)


def test_signal_during_a_shutdown_started_by_stop_does_not_abort_it(loop_kind: str) -> None:
    child = Child(
        """
        import asyncio, logging, sys
        from aiorun import run
        logging.basicConfig(level=logging.INFO)
        async def cleanup():
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                print("ready", flush=True)
                await asyncio.sleep(0.5)  # slow cleanup, the behaviour under test
                print("cleanup finished", flush=True)
        async def main():
            asyncio.ensure_future(cleanup())
            await asyncio.sleep(0)
            asyncio.get_running_loop().stop()
        run(main(), use_uvloop=sys.argv[1] == "uvloop")
        print("run returned", flush=True)
        """,
        loop_kind,
    )
    child.wait_for("ready")
    child.send(signal.SIGTERM)
    out, err = child.finish()
    assert child.returncode == 0, err
    assert "cleanup finished" in out
    assert "run returned" in out
    assert "Closing the loop." in err
    assert_clean(err)


@pytest.mark.parametrize(("sig", "status"), [(signal.SIGTERM, 143), (signal.SIGINT, None)])
def test_second_signal_abandons_a_hung_shutdown_when_asked(
    loop_kind: str, sig: int, status: int | None
) -> None:
    child = Child(
        """
        import asyncio, signal, sys
        from aiorun import run, shutdown_waits_for
        async def forever():
            await asyncio.sleep(3600)
        async def main():
            shutdown_waits_for(forever())
            try:
                print("ready", flush=True)
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                print("hung", flush=True)
                await asyncio.sleep(3600)
        try:
            run(main(), exit_on_second_signal=True, use_uvloop=sys.argv[1] == "uvloop")
        finally:
            print("handlers restored",
                  signal.getsignal(signal.SIGTERM) == signal.SIG_DFL, flush=True)
        """,
        loop_kind,
    )
    child.wait_for("ready")
    child.send(sig)
    child.wait_for("hung")
    child.send(sig)
    out, err = child.finish()
    assert "handlers restored True" in out
    if status is None:
        assert "KeyboardInterrupt" in err
        assert child.returncode == -signal.SIGINT  # how Python ends on KeyboardInterrupt
    else:
        assert child.returncode == status, err
    assert "so the shutdown is abandoned" in err
    assert_clean(err)


def test_without_the_option_a_second_signal_changes_nothing(loop_kind: str) -> None:
    child = Child(
        """
        import asyncio, sys
        from aiorun import run
        async def main():
            try:
                print("ready", flush=True)
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                print("hung", flush=True)
                await asyncio.sleep(0.3)  # slow cleanup, the behaviour under test
                print("finished anyway", flush=True)
        run(main(), use_uvloop=sys.argv[1] == "uvloop")
        """,
        loop_kind,
    )
    child.wait_for("ready")
    child.send(signal.SIGTERM)
    child.wait_for("hung")
    child.send(signal.SIGTERM)
    out, err = child.finish()
    assert child.returncode == 0, err
    assert "finished anyway" in out


WAKEUP_APP = """
import asyncio, os, signal, sys, threading
import aiorun

go = threading.Event()

def sender():
    go.wait()
    os.kill(os.getpid(), signal.SIGTERM)

async def main():
    helper = threading.Thread(target=sender, daemon=True)
    helper.start()  # before the mask below: this thread can take SIGTERM
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    print("ready", flush=True)
    if sys.argv[2] == "no-wakeup-fd":  # the mechanism aiorun must not rely on
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGTERM, lambda *a: loop.call_soon_threadsafe(loop.stop))
    go.set()
    await asyncio.sleep(3600)  # the loop blocks in select(): only a wakeup fd wakes it

run_kwargs = {"use_uvloop": sys.argv[1] == "uvloop"}
aiorun.run(main(), **run_kwargs)
print("returned", flush=True)
"""


def test_signal_wakes_a_loop_blocked_in_select(loop_kind: str) -> None:
    # The signal is taken by another thread, so the main thread's select()
    # is not interrupted: only the wakeup fd of the loop's own signal
    # handling can end the wait. A plain signal.signal() handler (the
    # original's) sleeps through it; in real life, when the signal lands
    # just before the loop blocks.
    child = Child(WAKEUP_APP, loop_kind, "aiorun", dev=False)
    child.wait_for("ready")
    out, err = child.finish(timeout=20)
    assert child.returncode == 0, err
    assert "returned" in out
    assert_clean(err)


def test_the_wakeup_test_can_fail() -> None:
    # The same application with a plain Python handler hangs: proof that
    # the test above really checks the wakeup.
    child = Child(WAKEUP_APP, "asyncio", "no-wakeup-fd", dev=False)
    child.wait_for("ready")
    with pytest.raises(subprocess.TimeoutExpired):
        child.proc.communicate(timeout=2)  # the hang is the behaviour under test
    child.proc.kill()
    child.proc.communicate()
