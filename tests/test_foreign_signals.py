"""Signals that belong to someone else."""

from __future__ import annotations

import signal

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
