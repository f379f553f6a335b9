"""Errors: stop_on_unhandled_errors, SystemExit, errors during the shutdown."""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
import traceback

import pytest
from conftest import Child, assert_clean, kwargs_for

from aiorun import run, shutdown_waits_for


def test_error_in_main_stops_and_is_reraised_with_its_traceback(loop_kind: str) -> None:
    async def main() -> None:
        raise ValueError("ouch")

    with pytest.raises(ValueError, match="ouch") as info:
        run(main(), stop_on_unhandled_errors=True, **kwargs_for(loop_kind))
    frames = [f.name for f in traceback.extract_tb(info.value.__traceback__)]
    assert "main" in frames


def test_error_in_another_task_stops_the_loop(
    loop_kind: str, own_loop: asyncio.AbstractEventLoop
) -> None:
    loop = own_loop
    cancelled = []

    async def job() -> None:
        raise ValueError("ouch")

    async def other() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append("other")
            raise

    loop.create_task(job())
    loop.create_task(other())
    with pytest.raises(ValueError, match="ouch"):
        run(loop=loop, stop_on_unhandled_errors=True)
    assert cancelled == ["other"]
    assert loop.get_exception_handler() is None  # put back as it was
    loop.close()


def test_explicit_call_exception_handler_stops_the_loop(loop_kind: str) -> None:
    async def main() -> None:
        asyncio.get_running_loop().call_exception_handler(
            {"message": "bad", "exception": KeyError("k")}
        )
        await asyncio.sleep(3600)

    with pytest.raises(KeyError):
        run(main(), stop_on_unhandled_errors=True, **kwargs_for(loop_kind))


def test_context_without_exception_stops_and_returns_normally(loop_kind: str) -> None:
    async def main() -> None:
        asyncio.get_running_loop().call_exception_handler({"message": "just a message"})
        await asyncio.sleep(3600)

    run(main(), stop_on_unhandled_errors=True, **kwargs_for(loop_kind))


def test_first_error_is_the_one_reraised(loop_kind: str) -> None:
    async def late() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            raise KeyError("second") from None

    async def main() -> None:
        asyncio.ensure_future(late())
        await asyncio.sleep(0)
        raise ValueError("first")

    with pytest.raises(ValueError, match="first"):
        run(main(), stop_on_unhandled_errors=True, **kwargs_for(loop_kind))


def test_custom_exception_handler_refuses_the_option(plain_loop: asyncio.AbstractEventLoop) -> None:
    loop = plain_loop
    loop.set_exception_handler(lambda loop, context: None)
    with pytest.raises(ValueError, match="parameter is unavailable"):
        run(loop=loop, stop_on_unhandled_errors=True)
    loop.close()


def test_without_the_option_errors_are_logged_and_the_loop_keeps_running(
    loop_kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def boom() -> None:
        raise ValueError("ouch")

    async def main() -> None:
        task = asyncio.ensure_future(boom())
        await asyncio.wait([task])
        del task
        await asyncio.sleep(0.05)  # the loop survives; the behaviour under test
        asyncio.get_running_loop().stop()

    run(main(), **kwargs_for(loop_kind))


def test_error_in_main_reaches_the_handler_at_once(
    loop_kind: str, own_loop: asyncio.AbstractEventLoop
) -> None:
    # Not whenever the task object happens to be garbage-collected.
    loop = own_loop
    seen = []

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
        seen.append(context["exception"])
        loop.stop()

    loop.set_exception_handler(handler)

    async def main() -> None:
        me = asyncio.current_task()  # task -> coroutine -> frame -> task: a cycle
        assert me is not None
        raise ValueError("ouch")

    gc.disable()  # the cycle must not be what brings the report
    try:
        run(main(), loop=loop)
        assert [type(e) for e in seen] == [ValueError]
    finally:
        gc.enable()
    loop.close()


@pytest.mark.parametrize("exc", ["SystemExit(3)", "KeyboardInterrupt()"])
def test_systemexit_in_main_runs_the_shutdown_then_propagates(loop_kind: str, exc: str) -> None:
    child = Child(
        f"""
        import asyncio, logging, sys
        from aiorun import run, shutdown_waits_for
        logging.basicConfig(level=logging.INFO)
        async def worker():
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                print("worker cleaned up", flush=True)
                raise
        async def protected():
            await asyncio.sleep(0.1)
            print("protected finished", flush=True)
        async def main():
            asyncio.ensure_future(worker())
            shutdown_waits_for(protected())
            await asyncio.sleep(0)
            raise {exc}
        run(main(), use_uvloop=sys.argv[1] == "uvloop")
        """,
        loop_kind,
    )
    out, err = child.finish()
    assert "worker cleaned up" in out
    assert "protected finished" in out
    assert "Closing the loop." in err
    if exc.startswith("SystemExit"):
        assert child.returncode == 3, err
    else:
        assert "KeyboardInterrupt" in err
    assert_clean(err)


def test_errors_during_the_shutdown_do_not_abort_it(
    loop_kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aiorun")
    finished = []

    async def bad_cleanup() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            raise RuntimeError("cleanup failed") from None

    async def exiting_cleanup() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            sys.exit(4)

    async def good_cleanup() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await asyncio.sleep(0.05)  # slow cleanup, the behaviour under test
            finished.append("good")

    async def main() -> None:
        for job in (bad_cleanup, exiting_cleanup, good_cleanup):
            asyncio.ensure_future(job())
        await asyncio.sleep(0)
        raise ValueError("first")

    with pytest.raises(ValueError, match="first"):
        run(main(), stop_on_unhandled_errors=True, **kwargs_for(loop_kind))
    assert finished == ["good"]
    messages = [r.getMessage() for r in caplog.records]
    assert messages[-2:] == ["Leaving. Bye!", "Reraising unhandled exception"]
    assert "Closing the loop." in messages


def test_stop_during_the_shutdown_is_ignored(
    loop_kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    finished = []

    async def cleanup() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            asyncio.get_running_loop().stop()
            await asyncio.sleep(0.05)  # slow cleanup, the behaviour under test
            finished.append("cleanup")

    async def main() -> None:
        asyncio.ensure_future(cleanup())
        await asyncio.sleep(0)
        asyncio.get_running_loop().stop()

    run(main(), **kwargs_for(loop_kind))
    assert finished == ["cleanup"]
    assert any("loop.stop() called during the shutdown" in r.getMessage() for r in caplog.records)


def test_protected_work_failing_after_its_caller_left_is_reported(loop_kind: str) -> None:
    async def work(caller_gone: asyncio.Event) -> None:
        await caller_gone.wait()
        raise ValueError("lost?")

    async def main() -> None:
        caller_gone = asyncio.Event()  # made in the loop (3.9 binds at creation)
        try:
            await shutdown_waits_for(work(caller_gone))
        finally:
            caller_gone.set()

    async def starter() -> None:
        asyncio.ensure_future(main())
        await asyncio.sleep(0)
        asyncio.get_running_loop().stop()

    with pytest.raises(ValueError, match="lost"):
        run(starter(), stop_on_unhandled_errors=True, **kwargs_for(loop_kind))


def test_fire_and_forget_failure_is_reported(loop_kind: str) -> None:
    async def work() -> None:
        raise ValueError("fire and forget")

    async def main() -> None:
        shutdown_waits_for(work())

    with pytest.raises(ValueError, match="fire and forget"):
        run(main(), stop_on_unhandled_errors=True, **kwargs_for(loop_kind))
