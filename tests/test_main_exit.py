"""stop_on_main_exit: a run that ends with main(), returns its result, cancels it first.

Each case runs in a child process, which prints what happens in the order it
happens (log records included, on the same stream), so that the order itself
can be asserted.
"""

from __future__ import annotations

import re
import signal
import sys
import textwrap

import pytest
from conftest import STUBBORN, Child, assert_clean, eager_too

PRELUDE = (
    """
import asyncio, logging, os, signal, sys
from aiorun import run

kind = sys.argv[1]
logging.basicConfig(stream=sys.stdout, level=logging.WARNING, format="%(levelname)s %(message)s")

def say(*args):
    print(*args, flush=True)

async def outside(name="outside"):
    # A task that main() did not start in a group of its own: it must keep
    # running while main() cleans up, and only then be cancelled.
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError as exc:
        say(f"{name} cancelled: {exc.args[0] if exc.args else None}")
        await asyncio.sleep(0.01)  # a clean-up that takes a few steps
        say(f"{name} cleaned up")
        raise
"""
    + STUBBORN
)


def child(body: str, *args: str) -> Child:
    return Child(PRELUDE + textwrap.dedent(body), *args)


def lines(out: str) -> list[str]:
    """The child's lines, but the default signal handler's record.

    Also without asyncio's debug-mode warning of a slow step ("Executing
    <Task ...> took 0.158 seconds"), which -X dev logs on a loaded machine.
    """
    return [
        line
        for line in out.splitlines()
        if line
        and line != "WARNING Stopping the loop"
        and not line.startswith("WARNING Executing <")
    ]


@eager_too
def test_the_result_of_main_is_returned_after_the_whole_shutdown(loop_kind: str) -> None:
    proc = child(
        """
        import threading, time

        def export(started):
            started.set()
            time.sleep(0.2)
            say("executor job done")

        async def main():
            asyncio.create_task(outside())
            started = threading.Event()
            asyncio.get_running_loop().run_in_executor(None, export, started)
            started.wait()  # the job is running as main() returns
            await asyncio.sleep(0)
            return {"answer": 42}

        say("run returned", run(main(), stop_on_main_exit=True, use_uvloop=kind == "uvloop"))
        """,
        loop_kind,
    )
    out, err = proc.finish(timeout=20)
    assert proc.returncode == 0, out + err
    got = lines(out)
    # Handed back once the whole shutdown is over, the executor's included.
    assert got[-1] == "run returned {'answer': 42}", got
    assert sorted(got[:-1]) == [
        "executor job done",
        "outside cancelled: aiorun shutdown: main() returned",
        "outside cleaned up",
    ], got
    assert_clean(err)


@pytest.mark.parametrize(
    ("statement", "status", "cause"),
    [
        ("sys.exit(3)", 3, "SystemExit raised in a task"),
        # A BaseException that asyncio keeps in the task, as any error.
        ("raise Fatal()", 1, "main() raised Fatal"),
    ],
)
def test_base_exceptions_in_main_end_the_run(
    loop_kind: str, statement: str, status: int, cause: str
) -> None:
    proc = child(
        """
        class Fatal(BaseException):
            pass

        async def main():
            asyncio.create_task(outside())
            await asyncio.sleep(0)
            exec(sys.argv[2])

        run(main(), stop_on_main_exit=True, use_uvloop=kind == "uvloop")
        """,
        loop_kind,
        statement,
    )
    out, err = proc.finish(timeout=20)
    assert proc.returncode == status, out + err
    assert lines(out) == [f"outside cancelled: aiorun shutdown: {cause}", "outside cleaned up"], out
    assert_clean(err)


def test_an_error_in_main_is_raised_after_the_other_tasks_were_cleaned_up(
    loop_kind: str,
) -> None:
    proc = child(
        """
        async def main():
            asyncio.create_task(outside())
            await asyncio.sleep(0)
            raise ValueError("bad input")

        try:
            run(main(), stop_on_main_exit=True, use_uvloop=kind == "uvloop")
        except ValueError as exc:
            say("run raised", repr(exc))
            raise
        """,
        loop_kind,
    )
    out, err = proc.finish(timeout=20)
    assert proc.returncode == 1, out + err
    # Not reported to the exception handler as well: run() hands it over.
    assert lines(out) == [
        "outside cancelled: aiorun shutdown: main() raised ValueError",
        "outside cleaned up",
        "run raised ValueError('bad input')",
    ]
    assert err.rstrip().endswith("ValueError: bad input"), err
    # main's own traceback (newer Pythons show the source line, even under -c)
    assert re.search(r'in main\n(    raise ValueError\("bad input"\)\n)?ValueError: bad', err), err
    assert_clean(err)


STRUCTURED = """
async def worker(n):
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        say(f"worker {n} cleaning up; outside cancelled yet: {outside_task.cancelling()}")
        await asyncio.sleep(0.05)  # a clean-up that takes time
        say(f"worker {n} cleaned up")
        raise

async def cleanup(loop):
    say(f"shutdown_callback; main running: {not main_task.done()}")

async def main():
    global main_task, outside_task
    main_task = asyncio.current_task()
    outside_task = asyncio.create_task(outside())
    try:
        await serve()
    finally:
        say("main ended")

say("run returned", run(main(), stop_on_main_exit=sys.argv[2] == "1", shutdown_callback=cleanup,
                        use_uvloop=kind == "uvloop"))
"""

TASK_GROUP = """
async def serve():
    async with asyncio.TaskGroup() as group:
        for n in range(3):
            group.create_task(worker(n))
        await asyncio.sleep(0)
        say("ready")
"""

# The same structure without TaskGroup, which came with Python 3.11: main()
# cancels its children and awaits them itself.
BY_HAND = """
async def serve():
    children = [asyncio.create_task(worker(n)) for n in range(3)]
    await asyncio.sleep(0)
    say("ready")
    try:
        await asyncio.sleep(3600)
    finally:
        for task in children:
            task.cancel()
        await asyncio.gather(*children, return_exceptions=True)
"""


def structured(serve: str) -> str:
    # Task.cancelling() came with 3.11 too: the by-hand version asks a flag.
    body = serve + STRUCTURED
    if sys.version_info < (3, 11):
        body = body.replace("outside_task.cancelling()", "outside_task.done()")
    return body


@eager_too
@pytest.mark.parametrize(
    "serve",
    [
        pytest.param(
            TASK_GROUP,
            id="TaskGroup",
            marks=pytest.mark.skipif(sys.version_info < (3, 11), reason="TaskGroup is 3.11+"),
        ),
        pytest.param(BY_HAND, id="by-hand"),
    ],
)
def test_on_sigterm_main_cleans_up_its_children_before_the_rest_is_cancelled(
    loop_kind: str, serve: str
) -> None:
    proc = child(structured(serve), loop_kind, "1")
    proc.wait_for("ready")
    proc.send(signal.SIGTERM)
    out, err = proc.finish(timeout=20)
    assert proc.returncode == 0, out + err
    got = lines(out)[1:]  # after "ready"
    flag = "0" if sys.version_info >= (3, 11) else "False"
    assert got[0] == "shutdown_callback; main running: True", got
    # Every child cleans up while the task outside main() still runs.
    cleaning = [line for line in got if "cleaning up" in line]
    assert len(cleaning) == 3, got
    assert all(line.endswith(f"outside cancelled yet: {flag}") for line in cleaning), got
    ended = got.index("main ended")
    assert all(got.index(f"worker {n} cleaned up") < ended for n in range(3)), got
    # Only then is the task outside main() cancelled, with the signal's name.
    assert got[ended + 1 :] == [
        "outside cancelled: aiorun shutdown: signal SIGTERM",
        "outside cleaned up",
        "run returned None",
    ], got
    assert_clean(err)


@eager_too
def test_without_the_option_the_structured_main_is_cancelled_with_the_rest(
    loop_kind: str,
) -> None:
    # The default run is unchanged: one pass cancels everything, and the
    # task outside main() is cancelled before the children have cleaned up.
    proc = child(structured(BY_HAND), loop_kind, "0")
    proc.wait_for("ready")
    proc.send(signal.SIGTERM)
    out, err = proc.finish(timeout=20)
    assert proc.returncode == 0, out + err
    got = lines(out)[1:]
    assert got.index("outside cancelled: aiorun shutdown: signal SIGTERM") < got.index(
        "worker 0 cleaned up"
    ), got
    assert_clean(err)


def test_main_may_answer_its_cancellation_with_a_result(loop_kind: str) -> None:
    proc = child(
        """
        async def main():
            done = 0
            try:
                say("ready")
                while True:
                    await asyncio.sleep(3600)
                    done += 1
            except asyncio.CancelledError:
                return f"stopped after {done} items"

        say("run returned", repr(run(main(), stop_on_main_exit=True, use_uvloop=kind == "uvloop")))
        """,
        loop_kind,
    )
    proc.wait_for("ready")
    proc.send(signal.SIGINT)
    out, err = proc.finish(timeout=20)
    assert proc.returncode == 0, out + err
    assert lines(out)[-1] == "run returned 'stopped after 0 items'"
    assert_clean(err)


def test_main_cancelled_by_the_application_stops_the_run_and_returns_none(
    loop_kind: str,
) -> None:
    proc = child(
        """
        async def main():
            asyncio.create_task(outside())
            me = asyncio.current_task()
            asyncio.get_running_loop().call_soon(me.cancel)
            await asyncio.sleep(3600)

        say("run returned", run(main(), stop_on_main_exit=True, use_uvloop=kind == "uvloop"))
        """,
        loop_kind,
    )
    out, err = proc.finish(timeout=20)
    assert proc.returncode == 0, out + err
    assert lines(out) == [
        "outside cancelled: aiorun shutdown: main() was cancelled",
        "outside cleaned up",
        "run returned None",
    ]
    assert_clean(err)


STUBBORN_MAIN = """
async def main():
    asyncio.create_task(outside())
    await asyncio.sleep(0)
    say("ready")
    while True:  # swallows every cancellation
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError as exc:
            say(f"main refuses: {exc.args[0] if exc.args else None}")
"""


def test_the_wait_for_main_is_bounded_by_timeout_task_shutdown(loop_kind: str) -> None:
    proc = child(
        STUBBORN_MAIN
        + """
run(main(), stop_on_main_exit=True, timeout_task_shutdown=0.3, use_uvloop=kind == "uvloop")
say("run returned")
""",
        loop_kind,
    )
    proc.wait_for("ready")
    proc.send(signal.SIGTERM)
    out, err = proc.finish(timeout=20)
    assert proc.returncode == 0, out + err
    got = [line.split(":")[0] for line in lines(out)[1:] if not line.startswith("- ")]
    # main() is waited for alone, reported, and then the rest is cancelled
    # and waited for in its own time: its clean-up is not cut short.
    assert got == [
        "main refuses",
        "WARNING During shutdown, the following tasks refused to exit after 0.3 seconds",
        "outside cancelled",
        "outside cleaned up",
        "run returned",
    ], out
    assert "- 'Task-1' main(), suspended at" in out
    assert_clean(err)


def test_the_deadline_abandons_a_main_that_will_not_end(loop_kind: str) -> None:
    proc = child(
        STUBBORN_MAIN
        + """
run(main(), stop_on_main_exit=True, shutdown_timeout=0.3, use_uvloop=kind == "uvloop")
""",
        loop_kind,
    )
    proc.wait_for("ready")
    proc.send(signal.SIGTERM)
    out, err = proc.finish(timeout=20)
    assert proc.returncode == 1, out + err
    assert "TimeoutError: The shutdown did not complete within 0.3 seconds" in err
    # The task outside main() ran on until the end: its only cancellation
    # is the abandonment's.
    assert "outside cancelled: aiorun shutdown abandoned: shutdown_timeout=0.3 passed" in out
    assert "outside cancelled: aiorun shutdown: signal" not in out


def test_a_second_signal_abandons_the_wait_for_main(loop_kind: str) -> None:
    proc = child(
        STUBBORN_MAIN
        + """
run(main(), stop_on_main_exit=True, exit_on_second_signal=True, use_uvloop=kind == "uvloop")
""",
        loop_kind,
    )
    proc.wait_for("ready")
    proc.send(signal.SIGTERM)
    proc.wait_for("main refuses: aiorun shutdown: signal SIGTERM")
    proc.send(signal.SIGTERM)
    out, err = proc.finish(timeout=20)
    assert proc.returncode == 143, out + err
    assert "outside cancelled: aiorun shutdown abandoned: second SIGTERM" in out


@pytest.mark.parametrize("outcome", ["returns", "raises"])
def test_without_the_option_main_ending_changes_nothing(loop_kind: str, outcome: str) -> None:
    # As the original: the loop keeps running after main(), an error of
    # main() is only logged, run() returns None on the next signal.
    proc = child(
        """
        async def watch(main_task):
            await asyncio.wait([main_task])
            say("ready")

        async def main():
            asyncio.create_task(watch(asyncio.current_task()))
            await asyncio.sleep(0)
            if sys.argv[2] == "raises":
                raise ValueError("only logged")
            return 42

        say("run returned", run(main(), use_uvloop=kind == "uvloop"))
        """,
        loop_kind,
        outcome,
    )
    proc.wait_for("ready")
    proc.send(signal.SIGTERM)
    out, err = proc.finish(timeout=20)
    assert proc.returncode == 0, out + err
    assert lines(out)[-1] == "run returned None"
    if outcome == "raises":
        assert "ERROR Task exception was never retrieved" in out
        assert "ValueError: only logged" in out
    assert_clean(err)


@pytest.mark.parametrize(
    ("scenario", "raised", "logged"),
    [
        # main's error came first; the callback's is logged.
        ("callback", "ValueError: from main", "ERROR The shutdown_callback() raised an error"),
        # An unhandled error stopped the run; main's, later, is logged.
        (
            "unhandled",
            "KeyError: 'from a task'",
            "ERROR main() raised an error, but there is already a different exception",
        ),
        # The deadline outranks them all, and names main's error as its cause.
        ("deadline", "TimeoutError: The shutdown did not complete", None),
    ],
)
def test_which_error_run_raises(
    loop_kind: str, scenario: str, raised: str, logged: str | None
) -> None:
    proc = child(
        """
        scenario = sys.argv[2]

        async def fail():
            raise KeyError("from a task")

        async def main():
            if scenario == "unhandled":
                asyncio.create_task(fail())
                try:
                    await asyncio.sleep(3600)
                finally:
                    raise ValueError("from main's clean-up")
            if scenario == "deadline":
                asyncio.create_task(stubborn())
                await asyncio.sleep(0)
            raise ValueError("from main")

        async def callback(loop):
            if scenario == "callback":
                raise RuntimeError("from the callback")

        run(main(), stop_on_main_exit=True, shutdown_callback=callback,
            stop_on_unhandled_errors=scenario == "unhandled",
            shutdown_timeout=0.3 if scenario == "deadline" else None,
            use_uvloop=kind == "uvloop")
        """,
        loop_kind,
        scenario,
    )
    out, err = proc.finish(timeout=20)
    assert proc.returncode == 1, out + err
    assert err.rstrip().splitlines()[-1].startswith(raised), err
    if logged is not None:
        assert logged in out, out
    if scenario == "deadline":
        assert "ValueError: from main\n\nThe above exception was the direct cause" in err, err


@eager_too
def test_the_debug_log_names_each_phase_in_order(loop_kind: str) -> None:
    proc = child(
        """
        logging.getLogger("aiorun").setLevel(logging.DEBUG)

        async def main():
            say("ready")
            await asyncio.sleep(3600)

        run(main(), stop_on_main_exit=True, use_uvloop=kind == "uvloop")
        """,
        loop_kind,
    )
    proc.wait_for("ready")
    proc.send(signal.SIGTERM)
    out, err = proc.finish(timeout=20)
    assert proc.returncode == 0, out + err
    phases = [line.split(": ", 1)[1] for line in lines(out) if "Run phase: " in line]
    assert phases == [
        "serving",
        "running shutdown_callback",
        "cancelling the main task alone",
        "cancelling the pending tasks",
        "finalizing async generators",
        "shutting the executor down",
        "shutdown complete",
    ], out


@eager_too
@pytest.mark.parametrize("spawn", ["spawn", "spawn-without-factory", "no-spawn"])
def test_tasks_only_main_referred_to_are_held_while_main_ends(loop_kind: str, spawn: str) -> None:
    # Workers on a queue that only main()'s frame refers to: once main()
    # has returned, only reference cycles keep them, and the loop holds
    # tasks weakly. A collection between main's end and the cancellation
    # of the rest would destroy them pending, their clean-up never run.
    # With "spawn", main's clean-up makes a task, cancelled with the rest;
    # also when made by asyncio.Task() itself, which no task factory sees.
    proc = child(
        """
        import gc

        async def worker(n, queue):
            try:
                await queue.get()
            except asyncio.CancelledError as exc:
                say(f"worker {n} cancelled: {exc.args[0]}")
                raise

        async def collect():  # a collection at every pass of the loop
            while True:
                await asyncio.sleep(0)
                gc.collect()

        async def flush():  # its timer keeps it: the check is that it is cancelled
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError as exc:
                say(f"flush cancelled: {exc.args[0]}")
                raise

        async def main():
            queue = asyncio.Queue()
            workers = [asyncio.create_task(worker(n, queue)) for n in range(3)]
            collector = asyncio.create_task(collect())
            await asyncio.sleep(0)
            say("ready")
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if sys.argv[2] == "spawn":
                    asyncio.create_task(flush())
                elif sys.argv[2] == "spawn-without-factory":
                    kept.append(asyncio.Task(flush(), loop=asyncio.get_running_loop()))
                return "stopped"

        kept = []

        say("run returned", run(main(), stop_on_main_exit=True, use_uvloop=kind == "uvloop"))
        """,
        loop_kind,
        spawn,
    )
    proc.wait_for("ready")
    proc.send(signal.SIGTERM)
    out, err = proc.finish(timeout=20)
    assert proc.returncode == 0, out + err
    got = sorted(lines(out)[1:-1])
    expected = [f"worker {n} cancelled: aiorun shutdown: signal SIGTERM" for n in range(3)]
    if spawn != "no-spawn":
        expected.insert(0, "flush cancelled: aiorun shutdown: signal SIGTERM")
    assert got == expected, out
    assert lines(out)[-1] == "run returned stopped"
    assert_clean(err)
