"""Helpers shared by the tests: loop kinds and child processes."""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent

# A shell running the tests in the background starts them with SIGINT
# ignored, and children inherit that: give them the ordinary disposition
# (Python's KeyboardInterrupt), which the signal tests start from.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
HAVE_UVLOOP = importlib.util.find_spec("uvloop") is not None
LOOP_KINDS = ["asyncio", "uvloop"]
# "eager" is the default loop with asyncio.eager_task_factory (Python 3.12
# and later): a task's first step runs inside create_task(), and work that
# never suspends is over before create_task() returns. A third kind only
# for the tests where that can change the outcome, as they choose with
# @eager_too.
HAVE_EAGER = sys.version_info >= (3, 12)
eager_too = pytest.mark.parametrize("loop_kind", [*LOOP_KINDS, "eager"], indirect=True)

# What asyncio prints when work is lost or left to the garbage collector.
ASYNCIO_WARNINGS = (
    "Task was destroyed",
    "never awaited",
    "Event loop is closed",
    "Exception ignored",
)


async def stubborn(period: float = 3600) -> None:
    """A task that swallows every cancellation: it refuses to exit.

    It wakes every ``period`` seconds, by a timer of the loop.
    """
    while True:
        try:
            await asyncio.sleep(period)
        except asyncio.CancelledError:
            pass


# The same, for the code of a child process.
STUBBORN = textwrap.dedent(inspect.getsource(stubborn))


def require_uvloop() -> None:
    """Skip the test where uvloop is not installed; in CI, fail it."""
    if not HAVE_UVLOOP:
        if os.environ.get("AIORUN_REQUIRE_UVLOOP"):  # CI: never skip in silence
            pytest.fail("uvloop is not installed, and AIORUN_REQUIRE_UVLOOP is set")
        pytest.skip("uvloop is not installed")


@pytest.fixture(params=LOOP_KINDS)
def loop_kind(request: pytest.FixtureRequest) -> str:
    if request.param == "uvloop":
        require_uvloop()
    elif request.param == "eager" and not HAVE_EAGER:
        pytest.skip("asyncio.eager_task_factory came in Python 3.12")
    return str(request.param)


def new_eager_loop() -> asyncio.AbstractEventLoop:
    """A default asyncio loop whose tasks start eagerly."""
    loop = asyncio.new_event_loop()
    loop.set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined,unused-ignore]
    return loop


def kwargs_for(kind: str) -> dict[str, Any]:
    """The run() arguments that select the loop kind."""
    if kind == "eager":
        return {"loop_factory": new_eager_loop}
    return {"use_uvloop": kind == "uvloop"}


def make_loop(kind: str) -> asyncio.AbstractEventLoop:
    """A new loop of the given kind, for tests that pass loop=."""
    if kind == "uvloop":
        import uvloop

        return uvloop.new_event_loop()  # type: ignore[no-any-return]
    if kind == "eager":
        return new_eager_loop()
    return asyncio.new_event_loop()


# What a child given the argument "eager" runs before its own code. Its
# run(use_uvloop=False) makes the loop with asyncio.new_event_loop(), and
# the loops made that way start their tasks eagerly.
EAGER_PRELUDE = """\
import asyncio as _asyncio

def _new_eager_loop(new=_asyncio.new_event_loop):
    loop = new()
    loop.set_task_factory(_asyncio.eager_task_factory)
    return loop

_asyncio.new_event_loop = _new_eager_loop
"""


@pytest.fixture
def own_loop(loop_kind: str) -> Iterator[asyncio.AbstractEventLoop]:
    """A loop of each kind for the test to pass to run(); always closed after."""
    loop = make_loop(loop_kind)
    try:
        yield loop
    finally:
        loop.close()


@pytest.fixture
def plain_loop() -> Iterator[asyncio.AbstractEventLoop]:
    """A default asyncio loop; always closed after."""
    loop = asyncio.new_event_loop()
    try:
        yield loop
    finally:
        loop.close()


class Child:
    """A Python child process, with a readiness handshake.

    The child prints a line (``ready`` by default, flushed) once the state
    under test is reached; ``wait_for`` reads up to it, so the parent never
    sleeps to synchronize. A child that dies first fails the test at once.
    The pipe is unbuffered: ``readline`` takes no more than its line, and
    ``communicate`` gets all the rest. A child given the argument ``eager``
    (the loop kind) runs ``EAGER_PRELUDE`` first.
    """

    def __init__(
        self,
        code: str,
        *args: str,
        env: dict[str, str] | None = None,
        dev: bool = True,
        ignore: tuple[str, ...] = (),
    ) -> None:
        # -X dev (asyncio's debug mode among others) by default; dev=False
        # for what debug mode would mask, timing races above all. Warnings
        # are errors, but for the categories in ``ignore``.
        flags = ["-X", "dev"] if dev else []
        flags += ["-W", "error"]
        for category in ignore:
            flags += ["-W", f"ignore::{category}"]
        code = textwrap.dedent(code)
        if "eager" in args:  # the loop kind, passed on to the child
            code = EAGER_PRELUDE + code
        self.start([sys.executable, *flags, "-c", code, *args], env)

    @classmethod
    def script(cls, path: str | Path, *args: str) -> Child:
        child = cls.__new__(cls)
        child.start([sys.executable, "-W", "error", str(path), *args], None)
        return child

    def start(self, argv: list[str], env: dict[str, str] | None) -> None:
        self.proc = subprocess.Popen(
            argv,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=0,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        self.lines: list[str] = []

    def readline(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        self.lines.append(line)
        return line

    def wait_for(self, expected: str = "ready") -> None:
        while True:
            line = self.readline()
            if not line:
                out, err = self.finish()
                pytest.fail(f"child ended before printing {expected!r}:\n{out}\n{err}")
            if line.strip() == expected:
                return

    def send(self, sig: int = signal.SIGTERM) -> None:
        self.proc.send_signal(sig)

    def finish(self, timeout: float = 30) -> tuple[str, str]:
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
            pytest.fail(f"child did not exit within {timeout}s:\n{out!r}\n{err!r}")
        return "".join(self.lines) + out.decode(), err.decode()

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode


def assert_clean(stderr: str) -> None:
    """No asyncio warning about lost work or stray errors."""
    for needle in ASYNCIO_WARNINGS:
        assert needle not in stderr, stderr
