"""Boilerplate for asyncio applications: run forever, shut down cleanly.

``run()`` starts an event loop, runs it until a signal (SIGINT, SIGTERM; on
Windows SIGINT and SIGBREAK), ``loop.stop()`` or an unhandled error ends it,
and then takes the application down in order: every pending task is
cancelled and awaited, the executor is shut down, async generators are
finalized and the loop is closed. ``shutdown_waits_for()`` marks work that
the shutdown must wait for instead of cancelling.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import logging
import signal
import sys
import threading
import warnings
import weakref
from concurrent.futures import Executor
from functools import partial
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine, Generator, Iterable
    from types import FrameType
    from typing import TypeVar, Union

    _T = TypeVar("_T")
    _Handler = Union[Callable[[int, Union[FrameType, None]], Any], int, None]
    ShutdownCallback = Union[
        Awaitable[Any],
        Callable[[asyncio.AbstractEventLoop], Union[Awaitable[Any], None]],
        None,
    ]

__version__ = "2026.11.0"
__all__ = ["run", "shutdown_waits_for"]

logger = logging.getLogger("aiorun")

WINDOWS = sys.platform == "win32"
_SIGNALS: tuple[signal.Signals, ...] = (
    (signal.SIGINT, signal.SIGBREAK)  # type: ignore[attr-defined,unused-ignore]
    if WINDOWS
    else (signal.SIGINT, signal.SIGTERM)
)

# The coroutine of every task started by shutdown_waits_for(). The shutdown
# leaves a task alone when ``task.get_coro()`` is in here; applications may
# add coroutines of their own, as they could with the original aiorun.
_DO_NOT_CANCEL_COROS: weakref.WeakSet[Any] = weakref.WeakSet()

# Where shutdown_waits_for() registers its coroutines: the set inside the
# WeakSet, reached directly for speed (see there). Bound once, so that each
# entry is removed from the set it was added to, even if code written for
# the original rebinds _DO_NOT_CANCEL_COROS.
_protected_entries: set[weakref.ref[Any]] = _DO_NOT_CANCEL_COROS.data  # type: ignore[attr-defined]

# Protected tasks stay strongly referenced until they finish: the event loop
# itself only holds weak references, and work that nothing else refers to
# would otherwise be garbage-collected mid-flight.
_protected_tasks: set[asyncio.Task[Any]] = set()

# asyncio's registry of tasks, read directly by the shutdown (see
# _registered_tasks). From 3.14 on, tasks live in per-thread lists instead
# and all_tasks() itself is fast: the registry is used up to 3.13 only.
_REGISTRY_NAME: str | None = (
    "_all_tasks"
    if sys.version_info < (3, 12)
    else "_scheduled_tasks"
    if sys.version_info < (3, 14)
    else None
)
_STOCK_ALL_TASKS = asyncio.all_tasks
_gil_enabled: Callable[[], bool] = getattr(sys, "_is_gil_enabled", lambda: True)


def run(
    coro: Awaitable[Any] | None = None,
    *,
    loop: asyncio.AbstractEventLoop | None = None,
    shutdown_handler: Callable[[asyncio.AbstractEventLoop], None] | None = None,
    shutdown_callback: ShutdownCallback = None,
    executor_workers: int | None = None,
    executor: Executor | None = None,
    use_uvloop: bool = False,
    stop_on_unhandled_errors: bool = False,
    timeout_task_shutdown: float = 60,
    timeout_executor_shutdown: float | None = None,
    exit_on_second_signal: bool = False,
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
) -> None:
    """Run the event loop forever, then shut the application down in order.

    ``coro`` (optional) is scheduled as the main task. The loop keeps running
    after it returns; the shutdown starts when SIGINT or SIGTERM arrives
    (SIGINT or SIGBREAK on Windows), when anything calls ``loop.stop()``, or,
    with ``stop_on_unhandled_errors=True``, when an error reaches the loop's
    exception handler. The shutdown then:

    1. calls ``shutdown_callback`` (a coroutine, or a function of the loop,
       plain or async) and waits for it;
    2. cancels every pending task except those protected by
       ``shutdown_waits_for()``, and waits for all of them, including tasks
       created meanwhile, for at most ``timeout_task_shutdown`` seconds;
    3. shuts the executor down (waiting at most ``timeout_executor_shutdown``
       seconds, if set), finalizes async generators and closes the loop;
    4. restores the signal handlers that were installed before ``run()``, and
       re-raises the first error that stopped or disturbed the run:
       an unhandled error under ``stop_on_unhandled_errors``, ``SystemExit``
       or ``KeyboardInterrupt`` raised by a task, or the shutdown callback's.

    Loop options: ``loop`` (yours: it is neither closed nor finalized),
    ``loop_factory`` (called once to make the loop), ``use_uvloop``; at most
    one of them. ``executor`` becomes the loop's default executor, otherwise
    a ``ThreadPoolExecutor(executor_workers)`` does. ``shutdown_handler(loop)``
    replaces the default reaction to the first signal (``loop.stop()``).
    With ``exit_on_second_signal=True`` a second signal abandons the shutdown
    and ``run()`` raises ``KeyboardInterrupt`` (SIGINT) or
    ``SystemExit(128 + signum)``.

    Example::

        async def main():
            server = await asyncio.start_server(handle, "127.0.0.1", 8888)
            async with server:
                await server.serve_forever()

        aiorun.run(main())
    """
    logger.debug("Entering run()")
    try:
        _check_arguments(
            coro,
            loop,
            loop_factory,
            use_uvloop,
            shutdown_handler,
            shutdown_callback,
            executor_workers,
            executor,
            stop_on_unhandled_errors,
            timeout_task_shutdown,
            timeout_executor_shutdown,
        )
        own_loop = loop is None
        if loop is None:
            loop = _new_loop(use_uvloop, loop_factory)
    except BaseException:
        # The coroutine will never run: close it, so that the error is all
        # the caller sees (no "coroutine ... was never awaited" warning).
        if inspect.iscoroutine(coro):
            coro.close()
        raise
    if executor is None:
        from concurrent.futures import ThreadPoolExecutor  # loaded on first use

        executor = ThreadPoolExecutor(max_workers=executor_workers)

    state = _State(loop, shutdown_handler or _shutdown_handler, exit_on_second_signal)
    previous_exception_handler = loop.get_exception_handler()
    asyncio.set_event_loop(loop)
    loop.set_default_executor(executor)
    if stop_on_unhandled_errors:
        loop.set_exception_handler(partial(_on_exception, state))
    previous_signal_handlers = _install_signal_handlers(state)
    try:
        if coro is not None:
            state.main = asyncio.ensure_future(coro, loop=loop)
            state.main.add_done_callback(_on_main_done)
        try:
            loop.run_forever()
        except BaseException as exc:  # SystemExit or KeyboardInterrupt from a task
            _record_error(state, exc)
        _shutdown(
            state,
            shutdown_callback,
            executor,
            own_loop,
            timeout_task_shutdown,
            timeout_executor_shutdown,
            previous_signal_handlers,
        )
    finally:
        # A protected task cancelled before its first step never ran the
        # guard's own clean-up: let it go now.
        _protected_tasks.difference_update([t for t in _protected_tasks if t.done()])
        _protected_entries.difference_update([e for e in _protected_entries if e() is None])
        _restore_signal_handlers(state, previous_signal_handlers)
        _resume_collector(state)  # if the shutdown was cut short mid-burst
        if stop_on_unhandled_errors and not loop.is_closed():
            loop.set_exception_handler(previous_exception_handler)
        if own_loop:
            if not loop.is_closed():  # only after a failure of aiorun itself
                loop.close()
            # Leave no closed loop behind as the current one (as asyncio.run).
            asyncio.set_event_loop(None)
    logger.info("Leaving. Bye!")
    if state.abort_signal is not None:
        if state.abort_signal == signal.SIGINT:
            raise KeyboardInterrupt from state.error
        raise SystemExit(128 + state.abort_signal) from state.error
    if state.error is not None:
        logger.info("Reraising unhandled exception")
        error, state.error = state.error, None  # no cycle through this frame
        raise error


def shutdown_waits_for(
    coro: Awaitable[_T], loop: asyncio.AbstractEventLoop | None = None
) -> Coroutine[Any, Any, _T]:
    """Protect ``coro`` from the shutdown's cancellation; the shutdown waits.

    The work starts at once in a task of its own, which the shutdown sequence
    of ``run()`` does not cancel but waits for (within
    ``timeout_task_shutdown``). What is returned is a coroutine that you may
    await (for the result or the exception), pass to ``create_task()`` or
    ``ensure_future()``, or simply drop when you need no result.

    A caller awaiting it is cancelled at shutdown like any other task: it
    gets ``CancelledError`` at once, while the protected work carries on to
    its end. Outside the shutdown it behaves like ``asyncio.shield()``. If
    the protected work fails after its caller has gone, the error is
    reported through the loop's exception handler.

    Example::

        async def save(record):
            await shutdown_waits_for(db.write(record))
    """
    if loop is None:
        # The running loop, found without raising (this is a hot path).
        loop = asyncio._get_running_loop() or _current_loop()
    waiter = _Waiter()
    waiter.future = future = loop.create_future()
    guard = _guard(coro, waiter, future)
    # A plain weak reference, which the guard removes itself when the work
    # ends: WeakSet.add() would attach a callback that runs Python code when
    # the coroutine dies (0.3 microseconds, 4% of the whole call).
    waiter.entry = entry = weakref.ref(guard)
    _protected_entries.add(entry)
    waiter.task = task = loop.create_task(guard)
    _protected_tasks.add(task)
    return cast("Coroutine[Any, Any, _T]", waiter)


class _State:
    """What one call of run() knows while it runs and shuts down."""

    __slots__ = (
        "abort_signal",
        "driver",
        "error",
        "exit_on_second_signal",
        "loop",
        "loop_signals",
        "main",
        "paused_collector",
        "shutdown_handler",
        "shutting_down",
        "signals",
        "spawned",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        shutdown_handler: Callable[[asyncio.AbstractEventLoop], None],
        exit_on_second_signal: bool,
    ) -> None:
        self.loop = loop
        self.shutdown_handler = shutdown_handler
        self.exit_on_second_signal = exit_on_second_signal
        self.main: asyncio.Future[Any] | None = None
        self.driver: asyncio.Task[None] | None = None
        self.error: BaseException | None = None
        self.shutting_down = False
        self.loop_signals = False
        self.signals = 0
        self.abort_signal: int | None = None
        self.spawned: list[asyncio.Task[Any]] = []
        self.paused_collector = False


class _Waiter:
    """What shutdown_waits_for() returns: a coroutine over the result future.

    A plain class rather than an ``async def``, so that dropping it unawaited
    (fire and forget) raises no "coroutine ... was never awaited" warning.
    It has the four methods of ``collections.abc.Coroutine``, which is all
    ``asyncio.iscoroutine()`` and ``create_task()`` ask for.
    """

    # No __init__: on this hot path a Python-level constructor is a
    # measurable share of the cost. Unset slots read as their defaults.
    __slots__ = ("_iter", "awaited", "entry", "future", "task")
    future: asyncio.Future[Any]
    task: asyncio.Task[None]
    entry: weakref.ref[Any]

    def __await__(self) -> Generator[Any, None, Any]:
        self.awaited = True
        return self.future.__await__()

    def send(self, value: Any) -> Any:  # when run as a task's coroutine
        it = getattr(self, "_iter", None)
        if it is None:
            it = self._iter = self.__await__()
        return it.send(value)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        exc = typ if val is None else val
        if isinstance(exc, type):
            exc = exc()
        if tb is not None:
            exc = exc.with_traceback(tb)
        it = getattr(self, "_iter", None)
        if it is None:  # not started: end here, as a coroutine would
            self._iter = _exhausted()  # a later send() ends at once, too
            raise exc
        return it.throw(exc)

    def close(self) -> None:
        it = getattr(self, "_iter", None)
        if it is not None:
            it.close()


def _exhausted() -> Generator[Any, None, Any]:
    yield from ()


async def _guard(coro: Awaitable[Any], waiter: _Waiter, future: asyncio.Future[Any]) -> None:
    """Run protected work and hand its outcome to whoever awaits the waiter."""
    try:
        result = await coro
    except asyncio.CancelledError:
        future.cancel()  # the protected task itself was cancelled
        raise
    except Exception as exc:
        if not future.cancelled() and getattr(waiter, "awaited", False):
            future.set_exception(exc)
        else:  # the caller is gone, or never came: report, do not drop
            if not future.done():
                future.set_exception(exc)
                future.exception()  # the report below is the one
            # Not under "task": from 3.12 the handler would be run inside
            # that task's context, which is the one running (already entered).
            future.get_loop().call_exception_handler(
                {
                    "message": "shutdown_waits_for() work failed with no caller awaiting it",
                    "exception": exc,
                    "protected_task": asyncio.current_task(),
                }
            )
    except BaseException:  # SystemExit, KeyboardInterrupt: they end run()
        future.cancel()
        raise
    else:
        if not future.done():
            future.set_result(result)
    finally:
        _protected_tasks.discard(waiter.task)
        _protected_entries.discard(waiter.entry)


def _current_loop() -> asyncio.AbstractEventLoop:
    """The current loop, outside a coroutine (no loop is running)."""
    # Only a loop set as the current one will do: never let get_event_loop()
    # make a new one (deprecated since Python 3.12).
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        try:
            return asyncio.get_event_loop()
        except (DeprecationWarning, RuntimeError):
            raise RuntimeError(
                "shutdown_waits_for() found no event loop: call it from a coroutine, or pass loop="
            ) from None


def _check_arguments(
    coro: object,
    loop: asyncio.AbstractEventLoop | None,
    loop_factory: object,
    use_uvloop: bool,
    shutdown_handler: object,
    shutdown_callback: object,
    executor_workers: object,
    executor: object,
    stop_on_unhandled_errors: bool,
    timeout_task_shutdown: object,
    timeout_executor_shutdown: object,
) -> None:
    """Refuse bad input before anything (signals, loops, globals) changes."""
    if coro is not None and not inspect.isawaitable(coro):
        if inspect.iscoroutinefunction(coro):
            name = getattr(coro, "__name__", "main")
            raise TypeError(
                f"run() takes a coroutine object, not the coroutine function "
                f"{name!r}: call it, as in run({name}())"
            )
        raise TypeError(f"run() takes a coroutine or awaitable, not {coro!r}")
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError("run() cannot be called from a running event loop")
    chosen = [
        name
        for name, value in (
            ("loop", loop is not None),
            ("loop_factory", loop_factory is not None),
            ("use_uvloop", use_uvloop),
        )
        if value
    ]
    if len(chosen) > 1:
        raise ValueError(
            f"the {' and '.join(repr(n) for n in chosen)} parameters are mutually "
            f"exclusive (make the loop you want and pass it as 'loop')"
        )
    if loop is not None:
        if not isinstance(loop, asyncio.AbstractEventLoop):
            raise TypeError(f"loop must be an event loop, not {loop!r}")
        if loop.is_closed():
            raise RuntimeError("the loop passed to run() is closed")
        if stop_on_unhandled_errors and loop.get_exception_handler() is not None:
            raise ValueError(
                "This loop has a custom exception handler, so the "
                "'stop_on_unhandled_errors' parameter is unavailable: your "
                "handler sees every error (call loop.stop() from it to stop)."
            )
    if loop_factory is not None and not callable(loop_factory):
        raise TypeError(f"loop_factory must be callable, not {loop_factory!r}")
    if shutdown_handler is not None and not callable(shutdown_handler):
        raise TypeError(f"shutdown_handler must be callable, not {shutdown_handler!r}")
    if not (
        shutdown_callback is None
        or callable(shutdown_callback)
        or inspect.isawaitable(shutdown_callback)
    ):
        raise TypeError(
            "shutdown_callback must be an awaitable or a function taking the "
            f"loop, not {shutdown_callback!r}"
        )
    from concurrent.futures import ThreadPoolExecutor

    if executor is not None and not isinstance(executor, ThreadPoolExecutor):
        kind = "a ThreadPoolExecutor" if isinstance(executor, Executor) else "an executor"
        raise TypeError(
            f"executor must be a concurrent.futures.ThreadPoolExecutor (asyncio "
            f"takes no other as the default executor), not {kind}: {executor!r}"
        )
    if executor_workers is not None and (
        isinstance(executor_workers, bool)
        or not isinstance(executor_workers, int)
        or executor_workers <= 0
    ):
        raise ValueError(f"executor_workers must be a positive int, not {executor_workers!r}")
    for name, value in (
        ("timeout_task_shutdown", timeout_task_shutdown),
        ("timeout_executor_shutdown", timeout_executor_shutdown),
    ):
        if value is None and name == "timeout_executor_shutdown":
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{name} must be a number of seconds, not {value!r}")
        if not value >= 0:  # also refuses NaN
            raise ValueError(f"{name} must not be negative, not {value!r}")
    if use_uvloop:
        import uvloop  # noqa: F401  (ImportError here, before anything changes)


def _new_loop(
    use_uvloop: bool, loop_factory: Callable[[], asyncio.AbstractEventLoop] | None
) -> asyncio.AbstractEventLoop:
    if loop_factory is not None:
        return loop_factory()
    if use_uvloop:
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def _install_signal_handlers(state: _State) -> dict[int, _Handler]:
    """Install ours; return what was there, to be restored afterwards."""
    if threading.current_thread() is not threading.main_thread():
        logger.debug("Not in the main thread: signal handlers not installed")
        return {}
    previous: dict[int, _Handler] = {sig: signal.getsignal(sig) for sig in _SIGNALS}
    loop = state.loop
    try:
        # Through the loop wherever it can: its handlers write to a wakeup
        # fd, which wakes a loop blocked in select(). A plain Python handler
        # cannot: a signal landing just before the loop blocks waits, unseen,
        # for the next event, maybe forever.
        for sig in _SIGNALS:
            loop.add_signal_handler(sig, _on_signal, state, sig)
        state.loop_signals = True
    except NotImplementedError:  # Windows loops: Python handlers it is
        handler = partial(_on_raw_signal, loop, partial(_on_signal, state))
        for sig in _SIGNALS:
            signal.signal(sig, handler)
    return previous


def _on_raw_signal(
    loop: asyncio.AbstractEventLoop,
    callback: Callable[[int], None],
    signum: int,
    frame: FrameType | None,
) -> None:
    # Runs between any two bytecodes of the main thread: only hand the signal
    # over to the loop, which deals with it in its own time.
    try:
        loop.call_soon_threadsafe(callback, signum)
    except RuntimeError:  # the loop was just closed: run() is returning
        pass


def _on_signal(state: _State, signum: int) -> None:
    state.signals += 1
    name = signal.Signals(signum).name
    if state.signals == 1 and not state.shutting_down:
        logger.debug("Got signal %s", name)
        state.shutdown_handler(state.loop)
    elif state.exit_on_second_signal and state.signals >= 2:
        if state.abort_signal is None:
            logger.warning("Got %s again: abandoning the shutdown", name)
            state.abort_signal = signum
            if state.driver is not None:
                state.driver.cancel()
            else:
                state.loop.stop()
    else:
        logger.warning("Got %s during the shutdown: ignored", name)


def _shutdown_handler(loop: asyncio.AbstractEventLoop) -> None:
    logger.warning("Stopping the loop")
    loop.stop()


def _on_exception(state: _State, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    exc = context.get("exception")
    if state.shutting_down:
        logger.error(
            "Unhandled exception during shutdown: %r", context.get("message"), exc_info=exc
        )
    else:
        logger.error("Unhandled exception; stopping loop: %r", context.get("message"), exc_info=exc)
        loop.stop()
    if exc is not None and state.error is None:
        state.error = exc


def _on_main_done(task: asyncio.Future[Any]) -> None:
    # Retrieve the outcome now, so that an error reaches the exception
    # handler at once, not whenever the task happens to be collected.
    if task.cancelled():
        return
    exc = task.exception()
    if isinstance(exc, Exception):
        task.get_loop().call_exception_handler(
            {"message": "Unhandled exception in the main coroutine", "exception": exc, "task": task}
        )


def _record_error(
    state: _State, exc: BaseException, also: str = "Another error while shutting down"
) -> None:
    """Keep the first error, for run() to raise; log any later one as ``also``."""
    if state.error is None:
        state.error = exc
    else:
        logger.error(also, exc_info=exc)


_CALLBACK_ERROR_ALSO = (
    "The shutdown_callback() raised an error, but another error is already "
    "pending; it is only logged here"
)


def _shutdown(
    state: _State,
    shutdown_callback: ShutdownCallback,
    executor: Executor,
    own_loop: bool,
    timeout_task_shutdown: float,
    timeout_executor_shutdown: float | None,
    previous_signal_handlers: dict[int, _Handler],
) -> None:
    loop = state.loop
    state.shutting_down = True
    logger.info("Entering shutdown phase.")
    pending_callback: Awaitable[Any] | None = None
    if shutdown_callback is not None and state.abort_signal is None:
        logger.info("Executing provided shutdown_callback.")
        if inspect.isawaitable(shutdown_callback):
            pending_callback = shutdown_callback
        else:
            # Called outside the running loop, as it always was: it may
            # still use loop.run_until_complete().
            try:
                returned = shutdown_callback(loop)
            except BaseException as exc:
                _record_error(state, exc, _CALLBACK_ERROR_ALSO)
            else:
                if inspect.isawaitable(returned):
                    pending_callback = returned
    task_factory = loop.get_task_factory()  # replaced while tasks are tracked
    driver = loop.create_task(
        _drive_shutdown(
            state,
            pending_callback,
            executor,
            own_loop,
            timeout_task_shutdown,
            timeout_executor_shutdown,
        )
    )
    state.driver = driver
    if state.abort_signal is not None:
        driver.cancel()
    driver.add_done_callback(lambda _: loop.stop())
    # Drive the loop until the sequence is over, whatever interrupts it: a
    # task raising SystemExit, user code calling loop.stop().
    while not driver.done():
        try:
            loop.run_forever()
        except BaseException as exc:
            _record_error(state, exc)
        else:
            if not driver.done():
                logger.warning("loop.stop() called during the shutdown: ignored")
    failure = None if driver.cancelled() else driver.exception()
    if failure is not None:  # a fault of aiorun itself: never hide it
        _record_error(state, failure)
    if state.abort_signal is not None:
        _abandon(state, executor)
    loop.set_task_factory(task_factory)
    # Before the loop closes: closing would leave the default dispositions
    # in place, for a moment, instead of those found on entry.
    _restore_signal_handlers(state, previous_signal_handlers)
    if own_loop:
        logger.info("Closing the loop.")
        loop.close()


def _pause_collector() -> bool:
    """Pause the collector while a burst of cancellations is processed.

    Each cancellation allocates (a callback handle, an exception, a
    traceback): with many tasks, the collections that these allocations set
    off cost more than the cancellations. Paused only until the loop has run
    them once, so that long cleanups still have their garbage collected.
    """
    if not gc.isenabled():
        return False
    gc.disable()
    return True


def _resume_collector(state: _State) -> None:
    """Resume the collector, its young generation rid of the burst.

    What the burst allocated and still holds (each cancelled task keeps its
    exception and traceback) would make the next young collection walk
    them all: at 100,000 tasks, an eighth of the shutdown on the default
    loop, a quarter on uvloop. Moved to the oldest generation instead, by
    freezing and at once unfreezing everything (two splices of lists), and
    only if nothing was frozen before, which unfreezing would release.
    """
    if state.paused_collector:
        state.paused_collector = False
        if gc.get_freeze_count() == 0:
            gc.freeze()
            gc.unfreeze()
        gc.enable()


async def _drive_shutdown(
    state: _State,
    pending_callback: Awaitable[Any] | None,
    executor: Executor,
    own_loop: bool,
    timeout_task_shutdown: float,
    timeout_executor_shutdown: float | None,
) -> None:
    loop = state.loop
    if pending_callback is not None:
        try:
            await pending_callback
        except BaseException as exc:
            if state.abort_signal is not None:
                raise
            _record_error(state, exc, _CALLBACK_ERROR_ALSO)
    logger.info("Cancelling pending tasks.")
    state.paused_collector = _pause_collector()
    tasks = _cancel_all_tasks(state)
    logger.info("Running pending tasks till complete")
    deadline = loop.time() + timeout_task_shutdown
    await _wait_for_tasks(state, tasks, deadline, timeout_task_shutdown)
    del tasks
    logger.info("Waiting for executor shutdown.")
    await _shutdown_executor(loop, executor, timeout_executor_shutdown)
    await _wait_for_tasks(state, (), deadline, timeout_task_shutdown)
    if own_loop:
        logger.info("Shutting down async generators")
        await loop.shutdown_asyncgens()
        await _wait_for_tasks(state, (), deadline, timeout_task_shutdown)


def _cancel_all_tasks(state: _State) -> list[asyncio.Task[Any]]:
    """Cancel what is pending and start recording the tasks created later."""
    tasks = _pending_tasks(state.loop, state.driver)
    _track_new_tasks(state)
    if _DO_NOT_CANCEL_COROS or _protected_tasks:
        protected = set(_DO_NOT_CANCEL_COROS)
        for task in tasks:
            if task not in _protected_tasks and task.get_coro() not in protected:
                task.cancel()
    else:
        for task in tasks:
            task.cancel()
    return tasks


def _pending_tasks(
    loop: asyncio.AbstractEventLoop, driver: asyncio.Task[None] | None
) -> list[asyncio.Task[Any]]:
    """``asyncio.all_tasks(loop)`` but the driver, in the order of addresses.

    In that order the tasks are visited (here, by the loop as they unwind,
    and while waiting) in the order they lie in memory: cancelling them and
    letting them unwind takes 34 to 41% less time than in the order of
    their hashes (measured at 100,000 and at a million tasks).
    """
    refs = _registered_tasks()
    if refs is None:
        return _sorted_tasks(loop, driver)
    # One pass over asyncio's registry instead of all_tasks()' two and a
    # sort: a bucket per MiB of addresses, and within a bucket the order in
    # which a set of weak references iterates, that of their hashes: for a
    # pointer hash and a table of more than 65,536 slots, that of addresses.
    # Only the speed depends on that, never the result. Finding the tasks
    # takes half the time of all_tasks() and sorted() at 100,000 tasks, a
    # third at a million.
    buckets: dict[int, list[asyncio.Task[Any]]] = {}
    try:
        for ref in refs:
            task = ref()
            if (
                task is not None
                and task.get_loop() is loop
                and not task.done()
                and task is not driver
            ):
                key = id(task) >> 20
                bucket = buckets.get(key)
                if bucket is None:
                    buckets[key] = [task]
                else:
                    bucket.append(task)
    except AttributeError:  # a task-like object of unknown make
        return _sorted_tasks(loop, driver)
    tasks: list[asyncio.Task[Any]] = []
    for key in sorted(buckets):
        tasks += buckets[key]
    return tasks


def _sorted_tasks(
    loop: asyncio.AbstractEventLoop, driver: asyncio.Task[None] | None
) -> list[asyncio.Task[Any]]:
    found = asyncio.all_tasks(loop)
    found.discard(driver)
    return sorted(found, key=id)


def _registered_tasks() -> list[Any] | None:
    """Weak references to every task asyncio knows, if they can be read.

    Where asyncio keeps them in a WeakSet (up to 3.13) and ``all_tasks`` is
    its own (not replaced by an application or a library). Copied in one C
    call, which no other thread can interrupt while the GIL is on.
    """
    if _REGISTRY_NAME is None or asyncio.all_tasks is not _STOCK_ALL_TASKS:
        return None
    if not _gil_enabled():
        return None
    tasks_module = asyncio.tasks
    registry = getattr(tasks_module, _REGISTRY_NAME, None)
    if type(registry) is not weakref.WeakSet:
        return None
    refs = list(registry.data)  # type: ignore[attr-defined]
    eager = getattr(tasks_module, "_eager_tasks", ())  # 3.12+: tasks mid-first-step
    if eager:
        refs.extend(weakref.ref(task) for task in list(eager))
    return refs


def _track_new_tasks(state: _State) -> None:
    """Record, through the task factory, every task created from now on."""
    loop = state.loop
    factory = loop.get_task_factory()
    spawned = state.spawned

    def record(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> Any:
        task: asyncio.Task[Any]
        if factory is None:
            task = asyncio.Task(coro, loop=loop, **kwargs)
        else:
            task = cast("asyncio.Task[Any]", factory(loop, coro, **kwargs))
        spawned.append(task)
        return task

    loop.set_task_factory(record)


async def _wait_for_tasks(
    state: _State,
    tasks: Iterable[asyncio.Task[Any]],
    deadline: float,
    timeout: float,
) -> None:
    """Wait for ``tasks`` and for every task created meanwhile.

    No done callback per task, as ``asyncio.wait()`` would add (and remove):
    the tasks are visited in the order they were cancelled, which is the
    order their cancellations run in, and only one not yet done is waited
    for. Once the loop has run a single pass most are done, and a visit is
    a ``done()`` call.
    """
    loop = state.loop
    spawned = state.spawned
    stuck = []
    batch = tasks
    while True:
        for task in batch:
            if not task.done():
                remaining = deadline - loop.time()
                if remaining > 0:
                    await asyncio.wait((task,), timeout=remaining)
                _resume_collector(state)  # the burst of cancellations has run
                if not task.done():
                    stuck.append(task)
                    continue
            if not task.cancelled() and getattr(task, "_log_traceback", False):
                _report_unretrieved(loop, task)
        if not spawned:
            break
        batch = spawned.copy()
        spawned.clear()
    _resume_collector(state)
    if stuck:
        logger.warning(
            "During shutdown, the following tasks refused to exit after %s seconds: %s",
            timeout,
            "\n\n".join(str(t.get_stack()) for t in stuck),
        )
        for task in stuck:
            # Reported just now: no second report when the loop is gone.
            task._log_destroy_pending = False  # type: ignore[attr-defined]


def _report_unretrieved(loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any]) -> None:
    """Report now an error asyncio would report when the task is collected.

    That may be after run() has returned, or never; and the first error must
    be known before run() decides what to raise.
    """
    exc = task.exception()  # retrieved: asyncio will not report it again
    if isinstance(exc, Exception):  # SystemExit and co. left run_forever()
        loop.call_exception_handler(
            {"message": "Task exception was never retrieved", "exception": exc, "task": task}
        )


async def _shutdown_executor(
    loop: asyncio.AbstractEventLoop, executor: Executor, timeout: float | None
) -> None:
    """Shut the executor down in a thread, so that the loop keeps running."""
    done = loop.create_future()

    def shut_down() -> None:
        try:
            executor.shutdown(wait=True)
        finally:
            try:
                loop.call_soon_threadsafe(_set_done, done)
            except RuntimeError:  # the loop is closed: nobody waits any more
                pass

    threading.Thread(target=shut_down, name="aiorun-executor-shutdown", daemon=True).start()
    finished, _ = await asyncio.wait({done}, timeout=timeout)
    if not finished:
        logger.warning(
            "The executor did not shut down within %s seconds: abandoning its remaining jobs",
            timeout,
        )
        executor.shutdown(wait=False, cancel_futures=True)


def _set_done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _abandon(state: _State, executor: Executor) -> None:
    """After a second signal: cancel everything left and stop waiting."""
    loop = state.loop
    executor.shutdown(wait=False, cancel_futures=True)
    leftover = _pending_tasks(loop, state.driver)
    for task in leftover:
        task.cancel()
    # One pass of the loop delivers the cancellations; nothing is awaited.
    loop.call_soon(loop.stop)
    try:
        loop.run_forever()
    except BaseException as exc:
        _record_error(state, exc)
    stuck = [t for t in leftover if not t.done()]
    if stuck:
        logger.warning("Abandoned %d tasks that were still running", len(stuck))
        for task in stuck:
            task._log_destroy_pending = False  # type: ignore[attr-defined]


def _restore_signal_handlers(state: _State, previous: dict[int, _Handler]) -> None:
    """Put back what was there before run(); safe to call more than once."""
    if state.loop_signals:
        state.loop_signals = False
        if not state.loop.is_closed():  # closing removes them
            for sig in previous:
                state.loop.remove_signal_handler(sig)
    for sig, handler in previous.items():
        # None: installed outside Python, nothing to restore it with.
        signal.signal(sig, signal.SIG_DFL if handler is None else handler)


if not TYPE_CHECKING:

    def __getattr__(name: str) -> Any:
        # The typing alias is built on first use: it costs more than the rest
        # of the module, and only type checkers and annotations ever ask.
        if name == "ShutdownCallback":
            from collections.abc import Awaitable
            from typing import Callable, Optional, Union

            alias = Optional[
                Union[
                    Awaitable[Any],
                    Callable[[asyncio.AbstractEventLoop], Optional[Awaitable[Any]]],
                ]
            ]
            globals()[name] = alias
            return alias
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
