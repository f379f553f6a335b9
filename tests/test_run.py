"""run(): the loop's life, the shutdown sequence and its log lines."""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import signal
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from conftest import Child, eager_too, kwargs_for, stubborn

import aiorun
from aiorun import run, shutdown_waits_for

SEQUENCE = [
    "Entering shutdown phase.",
    "Cancelling pending tasks.",
    "Running pending tasks till complete",
    # Async generators before the executor, as in asyncio.run(): their
    # clean-up may still need it (the original has the other order).
    "Shutting down async generators",
    "Waiting for executor shutdown.",
    "Closing the loop.",
    "Leaving. Bye!",
]


def info_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == "aiorun" and r.levelno == logging.INFO
    ]


def test_public_surface_matches_the_original() -> None:
    assert aiorun.__all__ == ["run", "shutdown_waits_for"]
    params = inspect.signature(run).parameters
    assert list(params)[:9] == [
        "coro",
        "loop",
        "shutdown_handler",
        "shutdown_callback",
        "executor_workers",
        "executor",
        "use_uvloop",
        "stop_on_unhandled_errors",
        "timeout_task_shutdown",
    ]
    defaults = {name: p.default for name, p in params.items()}
    assert defaults["coro"] is None
    assert defaults["use_uvloop"] is False
    assert defaults["stop_on_unhandled_errors"] is False
    assert defaults["timeout_task_shutdown"] == 60
    assert all(p.kind is p.KEYWORD_ONLY for name, p in params.items() if name != "coro")
    assert list(inspect.signature(shutdown_waits_for).parameters) == ["coro", "loop"]
    assert aiorun.logger is logging.getLogger("aiorun")
    assert aiorun.ShutdownCallback is not None
    year, month, minor = aiorun.__version__.split(".")
    assert len(year) == 4
    assert 1 <= int(month) <= 12
    assert int(minor) >= 0
    import weakref

    assert isinstance(aiorun._DO_NOT_CANCEL_COROS, weakref.WeakSet)


@eager_too
def test_stop_from_main_runs_the_whole_sequence_with_its_log_lines(
    loop_kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="aiorun")

    async def main() -> None:
        asyncio.get_running_loop().stop()
        await asyncio.sleep(3600)  # pending when the shutdown starts

    run(main(), **kwargs_for(loop_kind))
    assert info_lines(caplog) == SEQUENCE
    assert caplog.records[0].getMessage() == "Entering run()"
    assert caplog.records[0].levelno == logging.DEBUG


def test_with_nothing_pending_the_task_lines_are_not_logged(
    loop_kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    # As the original: log scrapers and INFO logs see the same lines.
    caplog.set_level(logging.INFO, logger="aiorun")

    async def main() -> None:
        asyncio.get_running_loop().stop()

    run(main(), **kwargs_for(loop_kind))
    assert info_lines(caplog) == [
        line
        for line in SEQUENCE
        if line not in ("Cancelling pending tasks.", "Running pending tasks till complete")
    ]


def test_loop_keeps_running_after_main_returns(loop_kind: str) -> None:
    seen = []

    async def main() -> None:
        asyncio.get_running_loop().call_later(0.05, later)

    def later() -> None:
        seen.append("still running")
        asyncio.get_event_loop().stop()

    run(main(), **kwargs_for(loop_kind))
    assert seen == ["still running"]


@eager_too
def test_run_without_coro_runs_tasks_created_beforehand(
    loop_kind: str, own_loop: asyncio.AbstractEventLoop
) -> None:
    loop = own_loop
    seen = []

    async def job() -> None:
        seen.append("job ran")
        asyncio.get_running_loop().stop()

    loop.create_task(job())
    run(loop=loop)
    assert seen == ["job ran"]
    assert not loop.is_closed()  # the caller owns it
    loop.close()


@eager_too
def test_pending_tasks_are_cancelled_and_awaited(loop_kind: str) -> None:
    events = []

    async def worker() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await asyncio.sleep(0.01)  # slow cleanup, the behaviour under test
            events.append("cleaned up")
            raise

    async def main() -> None:
        for _ in range(3):
            asyncio.ensure_future(worker())
        await asyncio.sleep(0)
        asyncio.get_running_loop().stop()

    run(main(), **kwargs_for(loop_kind))
    assert events == ["cleaned up"] * 3


def test_cancelled_main_is_swallowed(loop_kind: str) -> None:
    async def main() -> None:
        asyncio.get_running_loop().stop()
        await asyncio.sleep(3600)

    run(main(), **kwargs_for(loop_kind))  # no CancelledError comes out


def test_signal_in_process_stops_and_restores_handlers(loop_kind: str) -> None:
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    during = []

    async def main() -> None:
        during.append(signal.getsignal(signal.SIGTERM))
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.sleep(3600)

    run(main(), **kwargs_for(loop_kind))
    assert during[0] not in before
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_handlers_restored_after_run_raises(loop_kind: str) -> None:
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)

    async def main() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        run(main(), stop_on_unhandled_errors=True, **kwargs_for(loop_kind))
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_users_own_handler_is_restored() -> None:
    def mine(signum: int, frame: object) -> None:
        pass

    old = signal.signal(signal.SIGTERM, mine)
    try:

        async def main() -> None:
            asyncio.get_running_loop().stop()

        run(main())
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, old)


def test_second_run_in_same_process_handles_signals_again(loop_kind: str) -> None:
    for _ in range(2):
        cleaned = []

        async def main(cleaned: list[str] = cleaned) -> None:
            try:
                os.kill(os.getpid(), signal.SIGINT)
                await asyncio.sleep(3600)
            finally:
                cleaned.append("main cleaned up")

        run(main(), **kwargs_for(loop_kind))
        assert cleaned == ["main cleaned up"]


def test_custom_shutdown_handler_is_called_with_the_loop(loop_kind: str) -> None:
    calls = []

    def handler(loop: asyncio.AbstractEventLoop) -> None:
        calls.append(loop)
        loop.stop()

    async def main() -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.sleep(3600)

    run(main(), shutdown_handler=handler, **kwargs_for(loop_kind))
    assert len(calls) == 1
    assert isinstance(calls[0], asyncio.AbstractEventLoop)


def test_supplied_loop_is_neither_closed_nor_finalized(
    caplog: pytest.LogCaptureFixture, plain_loop: asyncio.AbstractEventLoop
) -> None:
    caplog.set_level(logging.INFO, logger="aiorun")
    loop = plain_loop

    async def main() -> None:
        assert asyncio.get_event_loop() is loop
        loop.stop()

    run(main(), loop=loop)
    assert not loop.is_closed()
    assert "Shutting down async generators" not in info_lines(caplog)
    assert "Closing the loop." not in info_lines(caplog)
    assert loop.get_exception_handler() is None
    assert loop.get_task_factory() is None
    loop.close()


def test_supplied_loop_keeps_its_task_factory(plain_loop: asyncio.AbstractEventLoop) -> None:
    loop = plain_loop
    made = []

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        task = asyncio.Task(coro, loop=loop, **kwargs)
        made.append(task)
        return task

    async def cleanup() -> None:
        await asyncio.sleep(0)

    async def main() -> None:
        try:
            loop.stop()
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            loop.create_task(cleanup())  # made during the shutdown: still ours
            raise

    loop.set_task_factory(factory)
    run(main(), loop=loop)
    assert loop.get_task_factory() is factory
    names = [task.get_coro().__qualname__.split(".")[-1] for task in made]
    assert "main" in names
    assert "cleanup" in names  # made during the shutdown, through the factory
    loop.close()


def test_own_loop_is_closed_and_not_left_current(loop_kind: str) -> None:
    loops = []

    async def main() -> None:
        loops.append(asyncio.get_running_loop())
        loops[0].stop()

    run(main(), **kwargs_for(loop_kind))
    assert loops[0].is_closed()
    with warnings.catch_warnings():
        # No current loop: an error, or (3.12+ warns first) a brand-new loop.
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            current = asyncio.get_event_loop()
        except RuntimeError:
            return
    try:
        assert current is not loops[0]
        assert not current.is_closed()
    finally:
        current.close()
        asyncio.set_event_loop(None)


def test_default_executor_is_used_and_shut_down(loop_kind: str) -> None:
    threads = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, lambda: threads.append(threading.current_thread()))
        loop.stop()

    run(main(), executor_workers=2, **kwargs_for(loop_kind))
    assert not threads[0].is_alive()


def test_supplied_executor_becomes_default_and_is_shut_down(loop_kind: str) -> None:
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mine")
    names = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        names.append(await loop.run_in_executor(None, lambda: threading.current_thread().name))
        loop.stop()

    run(main(), executor=executor, **kwargs_for(loop_kind))
    assert names[0].startswith("mine")
    with pytest.raises(RuntimeError):
        executor.submit(print)


def test_executor_jobs_finish_before_run_returns(loop_kind: str) -> None:
    done = threading.Event()
    started = threading.Event()

    def job() -> None:
        started.set()
        done.wait(0.2)  # slow job, the behaviour under test
        done.set()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.run_in_executor(None, job)
        await loop.run_in_executor(None, started.wait)
        loop.stop()

    run(main(), **kwargs_for(loop_kind))
    assert done.is_set()


@eager_too
@pytest.mark.parametrize("form", ["function", "async function", "coroutine", "lambda->coro"])
def test_each_shutdown_callback_form_runs_before_cancellation(
    form: str, loop_kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aiorun")
    events = []

    async def main() -> None:
        try:
            asyncio.get_running_loop().stop()
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            events.append("main cancelled")

    def plain(loop: asyncio.AbstractEventLoop) -> None:
        assert isinstance(loop, asyncio.AbstractEventLoop)
        events.append("callback")

    async def coro_fn(loop: asyncio.AbstractEventLoop) -> None:
        assert loop is asyncio.get_running_loop()
        await asyncio.sleep(0)
        events.append("callback")

    async def coro() -> None:
        await asyncio.sleep(0)
        events.append("callback")

    callback = {
        "function": lambda: plain,
        "async function": lambda: coro_fn,
        "coroutine": coro,
        "lambda->coro": lambda: lambda loop: coro_fn(loop),
    }[form]()
    run(main(), shutdown_callback=callback, **kwargs_for(loop_kind))
    assert events == ["callback", "main cancelled"]
    assert "Executing provided shutdown_callback." in info_lines(caplog)


def test_plain_callback_may_use_run_until_complete() -> None:
    seen = []

    async def cleanup() -> None:
        seen.append("cleanup")

    def callback(loop: asyncio.AbstractEventLoop) -> None:
        loop.run_until_complete(cleanup())

    async def main() -> None:
        asyncio.get_running_loop().stop()

    run(main(), shutdown_callback=callback)
    assert seen == ["cleanup"]


def test_shutdown_callback_error_is_reraised_when_nothing_else_pending() -> None:
    def callback(loop: asyncio.AbstractEventLoop) -> None:
        raise OSError("flush failed")

    async def main() -> None:
        asyncio.get_running_loop().stop()

    with pytest.raises(OSError, match="flush failed"):
        run(main(), shutdown_callback=callback)


def test_shutdown_callback_error_is_logged_when_another_is_pending(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def callback(loop: asyncio.AbstractEventLoop) -> None:
        raise OSError("flush failed")

    async def main() -> None:
        raise KeyError("first")

    with pytest.raises(KeyError, match="first"):
        run(main(), shutdown_callback=callback, stop_on_unhandled_errors=True)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert any("shutdown_callback() raised an error" in r.getMessage() for r in errors)


@eager_too
def test_tasks_refusing_to_exit_are_reported_after_the_timeout(
    loop_kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        asyncio.ensure_future(stubborn())
        await asyncio.sleep(0)
        asyncio.get_running_loop().stop()

    run(main(), timeout_task_shutdown=0.1, **kwargs_for(loop_kind))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        m.startswith("During shutdown, the following tasks refused to exit after 0.1 seconds:")
        and "stubborn" in m
        for m in warnings
    ), warnings


@eager_too
def test_async_generators_are_finalized(loop_kind: str) -> None:
    closed = []

    async def ticker():
        try:
            while True:
                yield 1
                await asyncio.sleep(0)
        finally:
            closed.append("agen closed")

    gens = []

    async def main() -> None:
        gen = ticker()
        gens.append(gen)  # kept alive past its task: shutdown_asyncgens closes it
        await gen.__anext__()
        asyncio.get_running_loop().stop()

    run(main(), **kwargs_for(loop_kind))
    assert closed == ["agen closed"]


def test_uvloop_option_runs_on_uvloop() -> None:
    pytest.importorskip("uvloop")
    import uvloop

    kinds = []

    async def main() -> None:
        kinds.append(type(asyncio.get_running_loop()))
        asyncio.get_running_loop().stop()

    run(main(), use_uvloop=True)
    assert kinds == [uvloop.Loop]


def test_loop_factory_makes_the_loop() -> None:
    made = []

    def factory() -> asyncio.AbstractEventLoop:
        made.append(asyncio.new_event_loop())
        return made[-1]

    async def main() -> None:
        assert asyncio.get_running_loop() is made[0]
        made[0].stop()

    run(main(), loop_factory=factory)
    assert made[0].is_closed()


def test_installed_policy_is_respected() -> None:
    class Loop(asyncio.SelectorEventLoop):
        pass

    seen = []

    async def main() -> None:
        seen.append(type(asyncio.get_running_loop()))
        asyncio.get_running_loop().stop()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the policy API, from 3.14

        class Policy(asyncio.DefaultEventLoopPolicy):
            def new_event_loop(self) -> asyncio.AbstractEventLoop:
                return Loop()

        old = asyncio.get_event_loop_policy()
        asyncio.set_event_loop_policy(Policy())
    try:
        run(main())
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            asyncio.set_event_loop_policy(old)
    assert seen == [Loop]


def test_run_from_a_thread_runs_without_signal_handlers(
    loop_kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="aiorun")
    result = []
    before = signal.getsignal(signal.SIGTERM)

    async def main() -> None:
        result.append(signal.getsignal(signal.SIGTERM))
        asyncio.get_running_loop().stop()

    def target() -> None:
        try:
            run(main(), **kwargs_for(loop_kind))
        except BaseException as exc:  # pragma: no cover - the failure under test
            result.append(exc)
        else:
            result.append("returned")

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(30)
    assert result == [before, "returned"]
    assert any("so no signal handlers are installed" in r.getMessage() for r in caplog.records)


def test_garbage_collector_state_is_restored(loop_kind: str) -> None:
    import gc

    async def main() -> None:
        asyncio.ensure_future(asyncio.sleep(3600))
        asyncio.get_running_loop().stop()

    frozen = gc.get_freeze_count()
    assert gc.isenabled()
    run(main(), **kwargs_for(loop_kind))
    assert gc.isenabled()
    assert gc.get_freeze_count() == frozen
    gc.disable()  # an application that turned it off keeps it off
    try:
        run(main(), **kwargs_for(loop_kind))
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_loops_without_signal_support_fall_back_to_python_handlers() -> None:
    # As on Windows, where loops raise NotImplementedError for signals.
    class NoSignals(asyncio.SelectorEventLoop):
        def add_signal_handler(self, sig: int, callback: Any, *args: Any) -> None:
            raise NotImplementedError

    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    cleaned = []

    async def main() -> None:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            await asyncio.sleep(3600)
        finally:
            cleaned.append("main cleaned up")

    run(main(), loop_factory=NoSignals)
    assert cleaned == ["main cleaned up"]
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_a_set_up_that_fails_half_way_is_undone() -> None:
    # The second signal handler cannot be installed: the first is put back,
    # the loop run() made is closed, and main() is closed, never run.
    class SecondHandlerFails(asyncio.SelectorEventLoop):
        def add_signal_handler(self, sig: int, callback: Any, *args: Any) -> None:
            if sig == signal.SIGTERM:
                raise OSError("no handler for SIGTERM")
            super().add_signal_handler(sig, callback, *args)

    made: list[asyncio.AbstractEventLoop] = []

    def factory() -> asyncio.AbstractEventLoop:
        made.append(SecondHandlerFails())
        return made[-1]

    async def main() -> None:
        pytest.fail("main() ran")

    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    wakeup_fd = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(wakeup_fd)
    coro = main()
    with pytest.raises(OSError, match="no handler for SIGTERM"):
        run(coro, loop_factory=factory)
    assert {sig: signal.getsignal(sig) for sig in handlers} == handlers
    assert signal.set_wakeup_fd(wakeup_fd) == wakeup_fd
    assert made[0].is_closed()
    assert inspect.getcoroutinestate(coro) == "CORO_CLOSED"


def test_import_loads_nothing_that_asyncio_has_not() -> None:
    # From Python 3.14 asyncio no longer imports typing: neither may aiorun.
    child = Child(
        """
        import asyncio, sys
        before = set(sys.modules)
        import aiorun
        print(sorted(set(sys.modules) - before))
        """
    )
    out, err = child.finish()
    assert child.returncode == 0, err
    assert out.strip() == "['aiorun']"


def phases(caplog: pytest.LogCaptureFixture) -> list[str]:
    prefix = "Run phase: "
    return [
        r.getMessage()[len(prefix) :] for r in caplog.records if r.getMessage().startswith(prefix)
    ]


@eager_too
def test_the_debug_log_names_each_phase_of_the_run(
    loop_kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        asyncio.get_running_loop().stop()

    with caplog.at_level(logging.DEBUG, logger="aiorun"):
        run(main(), **kwargs_for(loop_kind))
    assert phases(caplog) == [
        "serving",
        "running shutdown_callback",
        "cancelling the pending tasks",
        "finalizing async generators",
        "shutting the executor down",
        "shutdown complete",
    ]


def test_an_abandoned_shutdown_stays_abandoned(
    loop_kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        asyncio.create_task(stubborn())
        asyncio.get_running_loop().stop()

    with caplog.at_level(logging.DEBUG, logger="aiorun"), pytest.raises(TimeoutError):
        run(main(), shutdown_timeout=0.05, **kwargs_for(loop_kind))
    assert phases(caplog) == [
        "serving",
        "running shutdown_callback",
        "cancelling the pending tasks",
        "shutdown abandoned",
    ]
