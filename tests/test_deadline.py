"""shutdown_timeout: one deadline over the whole shutdown, and what it reports."""

from __future__ import annotations

import asyncio
import inspect
import logging
import signal
import threading
import time

import pytest
from conftest import Child, kwargs_for, stubborn

from aiorun import run, shutdown_waits_for


def timed_run(main: object, **kwargs: object) -> tuple[float, BaseException | None]:
    started = time.monotonic()
    try:
        run(main, **kwargs)  # type: ignore[arg-type]
    except BaseException as exc:
        return time.monotonic() - started, exc
    return time.monotonic() - started, None


def test_a_task_refusing_to_exit_is_abandoned_at_the_deadline(
    loop_kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        asyncio.ensure_future(stubborn())
        await asyncio.sleep(0)
        asyncio.get_running_loop().stop()

    elapsed, error = timed_run(main(), shutdown_timeout=0.3, **kwargs_for(loop_kind))
    assert isinstance(error, TimeoutError)
    assert "within 0.3 seconds" in str(error)
    assert "1 pending task ('Task-" in str(error)  # one task, in the singular
    assert "stubborn()" in str(error)
    assert elapsed < 10  # timeout_task_shutdown (60) did not apply
    abandoned = [r.getMessage() for r in caplog.records if "Abandoned" in r.getMessage()]
    assert len(abandoned) == 1
    assert abandoned[0].startswith("Abandoned 1 task that was still running: 1 task (0 protected")
    assert "in 1 group of similar tasks" in abandoned[0]
    assert "stubborn()" in abandoned[0]


def test_the_deadline_bounds_the_shutdown_callback(loop_kind: str) -> None:
    reached: list[str] = []

    async def callback(loop: asyncio.AbstractEventLoop) -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError as exc:
            reached.append(str(exc.args[0]) if exc.args else "")
            raise

    async def main() -> None:
        asyncio.get_running_loop().stop()

    elapsed, error = timed_run(
        main(), shutdown_callback=callback, shutdown_timeout=0.2, **kwargs_for(loop_kind)
    )
    assert isinstance(error, TimeoutError)
    assert str(error).endswith("Abandoned: no pending task or running job"), error
    assert elapsed < 10
    assert len(reached) == 1


def test_protected_work_is_cancelled_at_the_deadline(loop_kind: str) -> None:
    reasons: list[str] = []

    async def endless() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError as exc:
            reasons.append(exc.args[0] if exc.args else "")
            raise

    async def main() -> None:
        shutdown_waits_for(endless())
        await asyncio.sleep(0)
        asyncio.get_running_loop().stop()

    _, error = timed_run(main(), shutdown_timeout=0.2, **kwargs_for(loop_kind))
    assert isinstance(error, TimeoutError)
    assert reasons == ["aiorun shutdown abandoned: shutdown_timeout=0.2 passed"]
    # The work ended on the last cancellation, and is still named by what it ran.
    assert "endless()" in str(error), error
    assert "_guard" not in str(error), error


def test_executor_jobs_are_reported_and_no_longer_waited_for(loop_kind: str) -> None:
    release = threading.Event()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.run_in_executor(None, release.wait, 30)
        await asyncio.sleep(0)
        loop.stop()

    try:
        elapsed, error = timed_run(main(), shutdown_timeout=0.3, **kwargs_for(loop_kind))
    finally:
        release.set()  # the job ends with the test, not with run()
    assert isinstance(error, TimeoutError)
    assert "executor jobs still running" in str(error)
    assert elapsed < 10


def test_a_shutdown_within_the_deadline_returns_normally(
    loop_kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    done: list[str] = []

    async def cleanup() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await asyncio.sleep(0.05)  # slow cleanup, the behaviour under test
            done.append("cleaned")
            raise

    async def main() -> None:
        asyncio.ensure_future(cleanup())
        await asyncio.sleep(0)
        asyncio.get_running_loop().stop()

    run(main(), shutdown_timeout=30, **kwargs_for(loop_kind))
    assert done == ["cleaned"]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_deadline_passed_makes_the_process_exit_non_zero(loop_kind: str) -> None:
    child = Child(
        """
        import asyncio, sys
        from aiorun import run

        async def main():
            try:
                print("ready", flush=True)
                await asyncio.sleep(3600)
            finally:
                while True:  # a cleanup that never ends
                    try:
                        await asyncio.sleep(3600)
                    except asyncio.CancelledError:
                        pass

        run(main(), shutdown_timeout=0.5, use_uvloop=sys.argv[1] == "uvloop")
        """,
        loop_kind,
    )
    child.wait_for("ready")
    child.send(signal.SIGTERM)
    _, err = child.finish()
    assert child.returncode == 1
    assert "TimeoutError: The shutdown did not complete within 0.5 seconds" in err
    assert "'Task-1' main()" in err


# --- the cause, in every cancellation's message ----------------------------

CAUSE = """
import asyncio, os, signal, sys
from aiorun import run

async def main():
    try:
        print("ready", flush=True)
        await asyncio.sleep(3600)
    except asyncio.CancelledError as exc:
        print("reason:", exc.args[0] if exc.args else None, flush=True)
        raise

run(main(), use_uvloop=sys.argv[1] == "uvloop")
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_names_itself_in_the_cancellation(loop_kind: str, sig: int) -> None:
    child = Child(CAUSE, loop_kind)
    child.wait_for("ready")
    child.send(sig)
    out, err = child.finish()
    assert child.returncode == 0, err
    assert f"reason: aiorun shutdown: signal {signal.Signals(sig).name}" in out


async def idle_noting_why(reasons: list[object]) -> None:
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError as exc:
        reasons.append(exc.args[0] if exc.args else None)
        raise


def test_loop_stop_names_itself_in_the_cancellation(loop_kind: str) -> None:
    reasons: list[object] = []

    async def main() -> None:
        asyncio.ensure_future(idle_noting_why(reasons))
        await asyncio.sleep(0)
        asyncio.get_running_loop().stop()

    run(main(), **kwargs_for(loop_kind))
    assert reasons == ["aiorun shutdown: loop.stop()"]


def test_an_unhandled_error_names_itself_in_the_cancellation(loop_kind: str) -> None:
    reasons: list[object] = []

    async def main() -> None:
        asyncio.ensure_future(idle_noting_why(reasons))
        await asyncio.sleep(0)
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        run(main(), stop_on_unhandled_errors=True, **kwargs_for(loop_kind))
    assert reasons == ["aiorun shutdown: an unhandled error"]


# --- the report on tasks that refuse to exit -------------------------------


def test_tasks_refusing_to_exit_are_reported_by_name_coroutine_and_place(
    loop_kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        asyncio.ensure_future(stubborn(), loop=None).set_name("consumer")
        asyncio.ensure_future(stubborn())
        await asyncio.sleep(0)
        asyncio.get_running_loop().stop()

    run(main(), timeout_task_shutdown=0.1, **kwargs_for(loop_kind))
    (record,) = [r for r in caplog.records if "refused to exit" in r.getMessage()]
    message = record.getMessage()
    assert "refused to exit after 0.1 seconds: 2 tasks (0 protected" in message
    # Alike tasks make one line with a count and an example.
    assert "in 1 group of similar tasks\n- 2 x stubborn(), suspended at " in message
    assert f"{inspect.getsourcefile(stubborn)}:" in message
    assert " in stubborn; e.g. '" in message
    assert "<frame at" not in message  # no raw frame reprs


def test_executor_jobs_running_at_an_early_deadline_are_named(loop_kind: str) -> None:
    # The deadline passes while the shutdown still waits for a task, long
    # before the executor's turn: the job still running is named all the same.
    release = threading.Event()
    started = threading.Event()

    def export_report() -> None:
        started.set()
        release.wait(30)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        asyncio.ensure_future(asyncio.to_thread(export_report))  # a partial of context.run
        asyncio.ensure_future(stubborn())
        await loop.run_in_executor(None, started.wait, 10)
        loop.stop()

    try:
        _, error = timed_run(main(), shutdown_timeout=0.3, **kwargs_for(loop_kind))
    finally:
        release.set()
    assert isinstance(error, TimeoutError)
    message = str(error)
    assert "executor jobs still running (1 job: " in message, message
    assert "export_report() at " in message, message
    assert f"{__file__}:" in message, message
