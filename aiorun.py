"""Run an asyncio application forever, and shut it down cleanly.

``run()`` runs an event loop until a signal or ``loop.stop()`` stops it. Then
it cancels the pending tasks and waits for them, shuts the executor down, puts
back what it changed, and closes the loop if it made it. shutdown_waits_for()
marks work that the shutdown waits for instead of cancelling it.
"""

import asyncio
import collections
import contextlib
import contextvars
import functools
import inspect
import logging
import os
import signal
import socket
import sys
import threading
import time
import weakref
from concurrent.futures import Executor

# Not typing.TYPE_CHECKING. From Python 3.14 on, asyncio no longer imports
# typing, and importing aiorun must load no module that asyncio has not.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine, Generator, Iterator
    from concurrent.futures import ThreadPoolExecutor
    from types import FrameType
    from typing import Any, TypeVar, Union

    _T = TypeVar("_T")
    _Handler = Union[Callable[[int, Union[FrameType, None]], Any], int, None]
    ShutdownCallback = Union[
        Awaitable[Any],
        Callable[[asyncio.AbstractEventLoop], Union[Awaitable[Any], None]],
        None,
    ]

__version__ = "2026.12.0"
__all__ = ["run", "shutdown_waits_for"]

logger = logging.getLogger("aiorun")

WINDOWS = sys.platform == "win32"
_SIGNALS: "tuple[signal.Signals, ...]" = (
    (signal.SIGINT, signal.SIGBREAK)  # type: ignore[attr-defined,unused-ignore]
    if WINDOWS
    else (signal.SIGINT, signal.SIGTERM)
)

# Unless it is abandoned, the shutdown cancels no task whose coroutine is in this set.
# The set holds the _guard() coroutine of each shutdown_waits_for() task, and any that
# an application adds, as the original aiorun allowed. Threads only add, remove and
# test members, which is safe without a lock.
_DO_NOT_CANCEL_COROS: "weakref.WeakSet[Any]" = weakref.WeakSet()

# Protected tasks are held here until they end or their loop closes, because the
# loop holds its tasks only weakly. Threads use only single set operations on it.
_protected_tasks: "set[asyncio.Task[Any]]" = set()

# This maps each protected task made while its loop was not running (as by
# shutdown_waits_for() at module level) to the thread that made it. If run() then runs
# another loop in that thread, run() cancels the work and says so. Such tasks are rare,
# so the lock costs little.
_idle_protected: "weakref.WeakKeyDictionary[asyncio.Task[Any], tuple[int, Awaitable[Any]]]" = (
    weakref.WeakKeyDictionary()
)
_idle_protected_lock = threading.Lock()


# --- public API ---------------------------------------------------------------


def run(
    coro: "Awaitable[_T] | None" = None,
    *,
    loop: "asyncio.AbstractEventLoop | None" = None,
    shutdown_handler: "Callable[[asyncio.AbstractEventLoop], None] | None" = None,
    shutdown_callback: "ShutdownCallback" = None,
    executor_workers: "int | None" = None,
    executor: "ThreadPoolExecutor | None" = None,
    use_uvloop: bool = False,
    stop_on_unhandled_errors: bool = False,
    timeout_task_shutdown: float = 60,
    timeout_executor_shutdown: "float | None" = None,
    exit_on_second_signal: bool = False,
    loop_factory: "Callable[[], asyncio.AbstractEventLoop] | None" = None,
    shutdown_timeout: "float | None" = None,
    stop_on_main_exit: bool = False,
    systemd_notify: bool = False,
    warn_blocked_loop: "float | None" = None,
) -> "_T | None":
    """Run the event loop forever, then shut the application down in order.

    ``coro``, if given, runs as the main task, and the loop keeps running
    after it returns. The shutdown starts on SIGINT or SIGTERM (SIGINT or
    SIGBREAK on Windows), when anything calls ``loop.stop()``, or, with
    ``stop_on_unhandled_errors=True``, when an error reaches the loop's
    exception handler. Then run() does these steps in order:

    1. It calls ``shutdown_callback`` and waits for it.
    2. It cancels every pending task, except work protected by
       ``shutdown_waits_for()``, and waits for them and for the tasks they
       start, for at most ``timeout_task_shutdown`` seconds. Each cancelled
       task finds the cause in ``CancelledError.args[0]``, such as
       ``"aiorun shutdown: signal SIGTERM"``.
    3. On a loop it made, it finalizes async generators. It shuts the executor down.
    4. It restores what it changed, such as the signal handlers, closes the
       loop if it made it, and raises the first error that stopped or
       disturbed the run, if there was one.

    ``shutdown_timeout`` bounds the shutdown, though it cannot interrupt blocking
    code. At the deadline, run() cancels everything still pending, protected work
    included, and raises ``TimeoutError``. With ``stop_on_main_exit=True``, the
    run ends with ``coro``, and run() returns its result, not ``None``. The
    README describes every parameter.

    Example::

        async def main():
            server = await asyncio.start_server(handle, "127.0.0.1", 8888)
            async with server:
                await server.serve_forever()

        aiorun.run(main())
    """
    logger.debug("Entering run()")
    outcome: _T | None = _Runner(locals()).run()  # locals() holds the parameters only.
    return outcome


def shutdown_waits_for(
    coro: "Awaitable[_T]", loop: "asyncio.AbstractEventLoop | None" = None
) -> "Coroutine[Any, Any, _T]":
    """Protect ``coro`` from the shutdown's cancellation. The shutdown waits for it instead.

    The work is scheduled at once, in a task of its own. The shutdown of ``run()``
    does not cancel that task, and waits for it, for at most
    ``timeout_task_shutdown`` seconds. Await what this returns to get the
    result or the error, pass it to ``create_task()``, or drop it.

    A caller that awaits it is cancelled at shutdown like any other task,
    while the protected work carries on. Outside the shutdown it behaves
    like ``asyncio.shield()``. If the work fails after its caller has gone,
    the error goes to the loop's exception handler.

    Example::

        async def save(record):
            await shutdown_waits_for(db.write(record))
    """
    _check_awaitable("shutdown_waits_for", coro)
    if loop is None:
        # Like the original aiorun, take the running loop, or else the current one.
        # With no current loop, asyncio 3.10 to 3.13 warns (DeprecationWarning) and
        # makes one, as the original did. Where warnings are errors, and from 3.14
        # on, asyncio raises instead, and our error says what to do.
        try:
            loop = asyncio.get_event_loop()
        except (RuntimeError, DeprecationWarning):
            if inspect.iscoroutine(coro):
                coro.close()  # The caller should see the error, and no "never awaited".
            raise RuntimeError(
                "shutdown_waits_for() found no event loop. Call it from a coroutine, or pass loop="
            ) from None
    idle = not loop.is_running()
    waiter = _Waiter()
    waiter._iter = None
    waiter.awaited = False
    waiter.wrapped = coro
    waiter.future = loop.create_future()
    waiter.guard = guard = _guard(coro, waiter)
    # Code written for the original aiorun may rebind _DO_NOT_CANCEL_COROS. So the
    # waiter keeps the set that the guard joined, and the guard leaves that set.
    waiter.registry = registry = _DO_NOT_CANCEL_COROS
    registry.add(guard)
    waiter.task = None  # Set once the task is known to be pending.
    task = loop.create_task(guard)
    # An eager task factory (Python 3.12 and later) runs the guard inside
    # create_task(). Work that never suspends has then ended before create_task()
    # returns, and nothing would remove its task from _protected_tasks.
    if not task.done():
        waiter.task = task
        _protected_tasks.add(task)
    if idle:
        with _idle_protected_lock:
            _idle_protected[task] = (threading.get_ident(), coro)
    return waiter


# --- the runner ---------------------------------------------------------------


class _Phase:
    """The phases of a run, in order. ABANDONED, which is final, can follow any but COMPLETE."""

    # Plain strings, which logs and systemd's STATUS= show as they are.
    CREATED = "created"
    SERVING = "serving"  # The loop runs until something stops it.
    CALLING_BACK = "running shutdown_callback"
    CANCELLING_MAIN = "cancelling the main task alone"  # Under stop_on_main_exit only.
    CANCELLING_TASKS = "cancelling the pending tasks"
    FINALIZING = "finalizing async generators"
    SHUTTING_EXECUTOR = "shutting the executor down"
    LAST_PASSES = "waiting for the tasks started in the loop's last passes"
    COMPLETE = "shutdown complete"
    ABANDONED = "shutdown abandoned"


class _Runner:
    """One call of run(). The methods come stage by stage, in the order the stages run."""

    def __init__(self, args: "dict[str, Any]") -> None:
        # run()'s arguments, each with the type that run() declares for it.
        self._coro: Awaitable[Any] | None = args["coro"]
        self._supplied_loop: asyncio.AbstractEventLoop | None = args["loop"]
        self._loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = args["loop_factory"]
        self._use_uvloop: bool = args["use_uvloop"]
        self._shutdown_handler: Callable[[asyncio.AbstractEventLoop], None] = (
            args["shutdown_handler"] or _stop_loop
        )
        self._shutdown_callback: ShutdownCallback = args["shutdown_callback"]
        self._executor_workers: int | None = args["executor_workers"]
        self._supplied_executor: ThreadPoolExecutor | None = args["executor"]
        self._stop_on_unhandled_errors: bool = args["stop_on_unhandled_errors"]
        self._timeout_task_shutdown: float = args["timeout_task_shutdown"]
        self._timeout_executor_shutdown: float | None = args["timeout_executor_shutdown"]
        self._exit_on_second_signal: bool = args["exit_on_second_signal"]
        self._shutdown_timeout: float | None = args["shutdown_timeout"]
        self._stop_on_main_exit: bool = args["stop_on_main_exit"]
        self._systemd_notify: bool = args["systemd_notify"]
        self._warn_blocked_loop: float | None = args["warn_blocked_loop"]
        # What the set-up makes.
        self._undo: contextlib.ExitStack
        self._loop: asyncio.AbstractEventLoop
        self._executor: Executor
        self._notifier: _Notifier | None = None
        # _our_handlers maps each signal that comes through the loop to the Python-level
        # handler that the set-up left. _taken_by_others holds the signals that arrived
        # while another library's handler had replaced ours.
        self._our_handlers: dict[int, _Handler] = {}
        self._taken_by_others: set[int] = set()
        # How the run goes, and how it ends.
        self._phase = _Phase.CREATED
        self._main: asyncio.Future[Any] | None = None
        self._result: Any = None  # main's result, under stop_on_main_exit
        self._error: BaseException | None = None  # the first error, which run() raises
        self._signal_count = 0  # how many signals arrived
        self._cause: str | None = None  # what started the shutdown
        self._started_at = 0.0  # when the shutdown started, on the loop's clock
        self._second_signal: int | None = None  # the signal that abandoned the shutdown, if any
        self._abandoned_work = ""  # what was pending when the shutdown was abandoned
        # What the shutdown keeps track of.
        self._driver: asyncio.Task[Any] | None = None  # the task that runs the current step
        self._deadline: asyncio.TimerHandle | None = None  # the shutdown_timeout timer
        self._task_deadline = 0.0  # when the current wait for tasks ends
        self._held: set[asyncio.Task[Any]] = set()  # tasks held while main ends alone
        self._main_cancelled = False  # whether main was cancelled alone, first
        # Tasks that the shutdown no longer waits for, each reported once.
        self._written_off: set[asyncio.Task[Any]] = set()
        # Tasks created by other tasks during the shutdown, which are clean-up work.
        self._cleanup: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()
        self._arrival_rounds = 0  # rounds in which tasks arrived from outside
        self._arrivals: collections.Counter[str] = collections.Counter()  # their names
        self._executor_thread: threading.Thread | None = None  # shuts the executor down
        self._noting_factory: Any = None  # the task factory that notes new tasks
        self._saw_new_task = False  # whether the factory saw a task since the last look
        self._finder = _TaskFinder()

    def run(self) -> "Any":
        with contextlib.ExitStack() as self._undo:
            self._undo.callback(self._let_go)  # registered first, so it runs last
            self._check_arguments()
            self._set_up()  # Each change registers its undo, which runs as the block ends.
            self._serve()
            self._shut_down()
        return self._raise_outcome()

    def _enter(self, phase: str) -> None:
        if self._phase is not _Phase.ABANDONED:  # No phase follows ABANDONED.
            self._phase = phase
            logger.debug("Run phase: %s", phase)
            self._notify(f"STATUS={phase}")

    def _notify(self, message: str) -> None:
        if self._notifier is not None:
            self._notifier.send(message)

    @property
    def _abandoned(self) -> bool:
        """Whether a second signal or the deadline has abandoned the shutdown."""
        return self._phase is _Phase.ABANDONED

    @property
    def _owns_loop(self) -> bool:
        """Whether run() made the loop, and so finalizes and closes it."""
        return self._supplied_loop is None

    # --- check the arguments --------------------------------------------------

    def _check_arguments(self) -> None:
        """Refuse bad input before anything (signals, loops, globals) changes."""
        self._check_coro()
        self._check_loop_options()
        self._check_callables()
        self._check_executor()
        _check_seconds("timeout_task_shutdown", self._timeout_task_shutdown)
        _check_seconds("timeout_executor_shutdown", self._timeout_executor_shutdown, optional=True)
        _check_seconds("shutdown_timeout", self._shutdown_timeout, optional=True)
        _check_seconds("warn_blocked_loop", self._warn_blocked_loop, optional=True, positive=True)
        _check_flag("systemd_notify", self._systemd_notify)
        if self._use_uvloop:
            try:
                import uvloop  # noqa: F401  (here, before anything changes)
            except ImportError as exc:
                raise ModuleNotFoundError(
                    f"use_uvloop=True needs uvloop, which cannot be imported ({exc}). Install "
                    f"it with the extra: pip install 'aiorun[uvloop]' (not on Windows)",
                    name="uvloop",
                ) from exc

    def _check_coro(self) -> None:
        if self._coro is not None:
            _check_awaitable("run", self._coro)
        _check_flag("stop_on_main_exit", self._stop_on_main_exit)
        if self._stop_on_main_exit and self._coro is None:
            raise ValueError(
                "stop_on_main_exit=True ends the run with the main coroutine, and none "
                "was given. Pass it, as in run(main(), stop_on_main_exit=True)"
            )

    def _check_loop_options(self) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise RuntimeError(
                "run() cannot be called from a running event loop. Await the coroutine "
                "instead, or call run() from synchronous code"
            )
        options = {
            "loop": self._supplied_loop is not None,
            "loop_factory": self._loop_factory is not None,
            "use_uvloop": self._use_uvloop,
        }
        chosen = [repr(name) for name, given in options.items() if given]
        if len(chosen) > 1:
            raise ValueError(
                f"the {' and '.join(chosen)} parameters are mutually exclusive "
                f"(make the loop you want and pass it as 'loop')"
            )
        if self._loop_factory is not None and not callable(self._loop_factory):
            raise TypeError(f"loop_factory must be callable, not {self._loop_factory!r}")
        if self._supplied_loop is not None:
            self._check_supplied_loop(self._supplied_loop)

    def _check_supplied_loop(self, loop: "asyncio.AbstractEventLoop") -> None:
        if not isinstance(loop, asyncio.AbstractEventLoop):
            raise TypeError(f"loop must be an event loop, not {loop!r}")
        if loop.is_closed():
            raise RuntimeError("the loop passed to run() is closed")
        if self._stop_on_unhandled_errors and loop.get_exception_handler() is not None:
            raise ValueError(
                "This loop has a custom exception handler, so the 'stop_on_unhandled_errors' "
                "parameter is unavailable. Your handler sees every error, and can call loop.stop()."
            )

    def _check_callables(self) -> None:
        if not callable(self._shutdown_handler):
            raise TypeError(f"shutdown_handler must be callable, not {self._shutdown_handler!r}")
        callback = self._shutdown_callback
        if not (callback is None or callable(callback) or inspect.isawaitable(callback)):
            raise TypeError(
                f"shutdown_callback must be an awaitable or a function taking the loop, "
                f"not {callback!r}"
            )

    def _check_executor(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        executor = self._supplied_executor
        if executor is not None and not isinstance(executor, ThreadPoolExecutor):
            advice = (
                ". Keep it for your own jobs, with loop.run_in_executor(executor, ...)"
                if isinstance(executor, Executor)
                else ""
            )
            raise TypeError(
                f"executor must be a concurrent.futures.ThreadPoolExecutor (asyncio "
                f"takes no other as the default executor), not {type(executor).__name__} "
                f"{executor!r}{advice}"
            )
        workers = self._executor_workers
        if workers is not None and (
            isinstance(workers, bool) or not isinstance(workers, int) or workers <= 0
        ):
            raise ValueError(f"executor_workers must be a positive int, not {workers!r}")

    # --- set up, each change with its undo ------------------------------------

    def _set_up(self) -> None:
        """Make each change the run needs, and register its undo, which runs in reverse order."""
        undo = self._undo
        loop = self._loop = self._supplied_loop or self._new_loop()
        # This undo is registered before _close_loop, so it runs after the loop closes.
        undo.callback(self._release_protected_work)
        if self._owns_loop:
            undo.callback(self._close_loop)
        asyncio.set_event_loop(loop)
        executor = self._supplied_executor
        if executor is None:
            logger.debug("Creating default executor")
            executor = _daemon_executor_class()(max_workers=self._executor_workers)
            undo.callback(executor.shutdown, wait=False)  # In case a later set-up step fails.
        loop.set_default_executor(executor)
        self._executor = executor
        if self._stop_on_unhandled_errors:
            undo.callback(loop.set_exception_handler, loop.get_exception_handler())
            loop.set_exception_handler(self._on_exception)
        through_loop = undo.enter_context(_capture_signals(loop, self._on_signal))
        if self._systemd_notify:
            self._notifier = undo.enter_context(_notifying_systemd(loop))
        if self._warn_blocked_loop is not None:
            undo.enter_context(_watching_for_a_blocked_loop(loop, self._warn_blocked_loop))
        # The handlers are read last, because the blocked-loop watch wraps them.
        self._our_handlers = {sig: signal.getsignal(sig) for sig in through_loop}

    def _new_loop(self) -> "asyncio.AbstractEventLoop":
        if self._loop_factory is not None:
            return self._loop_factory()
        if self._use_uvloop:
            import uvloop

            return uvloop.new_event_loop()
        return asyncio.new_event_loop()

    def _close_loop(self) -> None:
        if not self._loop.is_closed():
            logger.info("Closing the loop.")
            self._loop.close()
        # Like asyncio.run(), leave no closed loop behind as the current one.
        asyncio.set_event_loop(None)

    def _release_protected_work(self) -> None:
        """Let go of the protected tasks that cannot end by themselves, and report lost work."""
        loop = self._loop
        for task in list(_protected_tasks):  # One call copies it, safe from other threads.
            if task.done() or (loop.is_closed() and task.get_loop() is loop):
                _protected_tasks.discard(task)
        lost = _drop_work_never_run(loop)
        if lost:
            logger.warning(
                "Work protected by shutdown_waits_for() never ran (%s: %s). It was given "
                "to an event loop that was not running, and run() ran another one. Call "
                "shutdown_waits_for() from a coroutine that run() runs",
                _plural(len(lost), "task"),
                _counted(collections.Counter(lost)),
            )

    def _let_go(self) -> None:
        """Let go of everything of the run, so that nothing of it stays reachable."""
        if self._main is None and inspect.iscoroutine(self._coro):
            # main never became a task, because an argument was refused or the
            # set-up failed. Closing it prevents a "was never awaited" warning.
            self._coro.close()
        if self._main is not None:  # A main task left pending must not hold the runner.
            self._main.remove_done_callback(self._on_main_done_stop)
        self._main = self._driver = self._coro = self._noting_factory = None
        self._finder = _TaskFinder()
        self._written_off.clear()
        self._held.clear()

    # --- serve until something stops the loop ---------------------------------

    def _serve(self) -> None:
        self._enter(_Phase.SERVING)
        if self._coro is not None:
            self._main = asyncio.ensure_future(self._coro, loop=self._loop)
            if self._stop_on_main_exit:
                self._main.add_done_callback(self._on_main_done_stop)
            else:
                self._main.add_done_callback(self._on_main_done_report)
        elif self._notifier is not None:
            self._loop.call_soon(self._notifier.send, "READY=1")
        raised = self._run_loop()
        self._note_cause("loop.stop()" if raised is None else f"{raised} raised in a task")

    def _run_loop(self) -> "str | None":
        """Run the loop until it stops. Record what it raised, and return the error's name."""
        try:
            self._loop.run_forever()
        except BaseException as exc:  # SystemExit or KeyboardInterrupt from a task
            self._record_error(exc)
            return type(exc).__name__
        return None

    def _note_cause(self, cause: str) -> None:
        """Remember what started the shutdown, and when. The first cause counts."""
        if self._cause is None:
            self._cause = cause
            self._started_at = self._loop.time()

    def _on_main_done_report(self, main: "asyncio.Future[Any]") -> None:
        """Without stop_on_main_exit, report main()'s end at once. The loop keeps running."""
        exc = None if main.cancelled() else main.exception()
        if exc is None and not main.cancelled():
            self._notify("READY=1")  # main() has set the application up.
        if not isinstance(exc, Exception):
            return  # None, or SystemExit and KeyboardInterrupt, which end run_forever().
        # The error is reported now, in asyncio's own words. The original's users saw
        # those when the task was garbage-collected, and their log alerts expect them.
        self._loop.call_exception_handler(
            {"message": "Task exception was never retrieved", "exception": exc, "future": main}
        )
        if not self._stop_on_unhandled_errors:
            logger.warning(
                "main() raised %s, and the event loop keeps running without it. Pass "
                "stop_on_main_exit=True (or stop_on_unhandled_errors=True) to run() to end "
                "the run instead",
                type(exc).__name__,
            )

    def _on_main_done_stop(self, main: "asyncio.Future[Any]") -> None:
        """Under stop_on_main_exit, keep the outcome, and stop the loop if main ended by itself."""
        if main.cancelled():
            cause = "main() was cancelled"
        elif (exc := main.exception()) is None:
            cause = "main() returned"
            self._result = main.result()
        else:
            cause = f"main() raised {type(exc).__name__}"
            self._record_error(exc, _LATER_MAIN_ERROR)
            if isinstance(exc, (SystemExit, KeyboardInterrupt)):
                # SystemExit and KeyboardInterrupt end run_forever() by
                # themselves. uvloop calls this callback before it ends.
                return
        if self._phase is _Phase.SERVING:
            logger.info("%s, so the loop stops", cause)
            self._note_cause(cause)
            self._loop.stop()

    def _on_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self._is_for_another_handler(signum, name):
            return
        self._signal_count += 1
        if self._signal_count == 1 and self._phase is _Phase.SERVING:
            logger.debug("Got signal %s", name)
            self._note_cause(f"signal {name}")
            self._shutdown_handler(self._loop)
        elif self._exit_on_second_signal and self._signal_count >= 2:
            self._abandon(signum)
        else:
            advice = (
                "the next signal ends the run (exit_on_second_signal=True)"
                if self._exit_on_second_signal
                else "run(exit_on_second_signal=True) makes a second signal end the run"
            )
            logger.warning("Got %s during the shutdown and ignored it; %s", name, advice)

    def _is_for_another_handler(self, signum: int, name: str) -> bool:
        """Whether the signal belongs to another library's handler. Also record such signals."""
        # The loop sees every signal through its wakeup fd, even while another library
        # (uvicorn's serve(), say) has replaced our handler. After that library puts our
        # handler back, it may raise the signal again. That signal starts the shutdown,
        # unless the run is already ending. On Windows, _our_handlers is empty.
        if signum in self._our_handlers and signal.getsignal(signum) != self._our_handlers[signum]:
            logger.debug(
                "Got %s, which another library's handler takes, so run() leaves it alone", name
            )
            self._taken_by_others.add(signum)
            return True
        if signum not in self._taken_by_others:
            return False
        self._taken_by_others.discard(signum)
        # Under stop_on_main_exit, the end of main() ends the run, even if its
        # done callback has not run yet (uvloop delivers the signal first).
        main_ended = self._stop_on_main_exit and self._main is not None and self._main.done()
        if self._phase is _Phase.SERVING and not main_ended:
            return False
        logger.debug(
            "Got %s back from the handler that took it. The run is already ending, so the "
            "signal changes nothing",
            name,
        )
        return True

    def _on_exception(self, loop: "asyncio.AbstractEventLoop", context: "dict[str, Any]") -> None:
        exc = context.get("exception")
        message = context.get("message")
        if self._phase is not _Phase.SERVING:
            logger.error("Unhandled exception during shutdown: %r", message, exc_info=exc)
        else:
            logger.error("Unhandled exception; stopping loop: %r", message, exc_info=exc)
            self._note_cause("an unhandled error")
            loop.stop()
        if exc is not None and self._error is None:
            self._error = exc

    def _record_error(
        self, exc: "BaseException", also: str = "Another error while shutting down"
    ) -> None:
        """Keep the first error, for run() to raise. Log each later one with message ``also``."""
        if self._error is None:
            self._error = exc
        elif exc is not self._error:  # The same error can arrive by two ways.
            logger.error(also, exc_info=exc)

    # --- shut down, step by step ----------------------------------------------

    def _shut_down(self) -> None:
        """Take the application down in order, one step after another.

        Every task but protected work is cancelled. Every task is waited for,
        and so are the tasks that cancelled tasks create to clean up. Tasks that
        arrive from outside (a listening server's connections) are cancelled as
        they come, and after ten rounds no longer waited for. The waits for
        tasks end ``timeout_task_shutdown`` seconds after the cancellation, and
        main(), cancelled alone first, has a wait of its own. A second signal
        (with ``exit_on_second_signal=True``) or ``shutdown_timeout`` abandons
        the steps that remain. On a loop that run() made, every task has ended
        or had its coroutine closed when the loop closes.
        """
        self._start_shutdown()  # Tell systemd, start the deadline, note new tasks.
        self._call_shutdown_callback()  # The application's own clean-up comes first.
        self._run_step(self._cancel_main_first)  # Under stop_on_main_exit, main() ends first.
        self._run_step(self._cancel_pending_tasks)  # Cancel the other tasks, and wait for them.
        self._run_step(self._shutdown_asyncgens)  # Finalize async generators, as asyncio.run().
        self._run_step(self._shutdown_executor)  # Wait for the executor's jobs to end.
        self._wait_for_last_pass_tasks()  # Wait for the tasks of the loop's last passes.
        if self._deadline is not None:  # From here on, the deadline cannot abandon the shutdown.
            self._deadline.cancel()
        if self._abandoned:
            self._cancel_everything_left()  # After a second signal or the deadline.
        self._close_written_off()  # On our own loop, close the tasks no longer waited for.
        self._warn_of_arrivals()  # Say what kept arriving, and how to prevent it.
        self._enter(_Phase.COMPLETE)

    def _start_shutdown(self) -> None:
        stopping = "STOPPING=1"
        if self._shutdown_timeout is not None:
            when = self._started_at + self._shutdown_timeout
            self._deadline = self._loop.call_at(when, self._abandon)
            # Ask systemd for the time the deadline leaves, and a margin to close the loop.
            left = when - self._loop.time()
            stopping += f"\nEXTEND_TIMEOUT_USEC={int((max(left, 0) + _STOP_MARGIN) * 1e6)}"
        self._notify(stopping)
        self._enter(_Phase.CALLING_BACK)
        logger.info("Entering shutdown phase.")
        self._watch_new_tasks()

    def _call_shutdown_callback(self) -> None:
        """Call a callback function with the loop stopped. Await its result, or the awaitable."""
        callback = self._shutdown_callback
        if callback is None:
            return
        if self._abandoned:
            if inspect.iscoroutine(callback):
                callback.close()  # It never runs. Closing it prevents the "never awaited" warning.
            return
        logger.info("Executing provided shutdown_callback.")
        if not inspect.isawaitable(callback):
            # A function is called while the loop is stopped, as in the original
            # aiorun, so that it may still call loop.run_until_complete().
            try:
                callback = callback(self._loop)
            except BaseException as exc:
                self._record_error(exc, _LATER_CALLBACK_ERROR)
                return
            if not inspect.isawaitable(callback):
                return
        self._run_step(self._await_callback, callback)

    async def _await_callback(self, callback: "Awaitable[Any]") -> None:
        try:
            await callback
        except BaseException as exc:
            if self._abandoned:
                raise
            self._record_error(exc, _LATER_CALLBACK_ERROR)

    async def _cancel_main_first(self) -> None:
        """Under stop_on_main_exit, cancel main alone and wait for it, as asyncio.Runner does."""
        # So a main() that uses a TaskGroup (or ``async with server``) ends its
        # children in its own order, while the other tasks still run.
        main = self._main
        if not self._stop_on_main_exit or not isinstance(main, asyncio.Task) or main.done():
            return
        # Hold every task, so that none that only main() refers to is collected as it ends.
        self._held = self._finder.find(self._loop)
        self._enter(_Phase.CANCELLING_MAIN)
        logger.info("Cancelling the main task.")
        self._task_deadline = self._loop.time() + self._timeout_task_shutdown
        if self._cancel([main]):
            return  # main()'s await chain is too deep to cancel alone. It goes with the rest.
        self._main_cancelled = True
        if not await self._wait_for_main(main):
            self._write_off_stuck([main])

    async def _wait_for_main(self, main: "asyncio.Task[Any]") -> bool:
        """Wait until main ends or waits for a server's connections. False at the deadline."""
        # Since Python 3.12, Server.wait_closed() waits until every connection
        # has closed (CPython gh-79033, gh-104344). A main() that leaves
        # "async with server" waits there for handlers that nothing cancels
        # while main() ends alone. So the other tasks are cancelled at once.
        while not main.done():
            remaining = self._task_deadline - self._loop.time()
            if remaining <= 0:
                return False
            await asyncio.wait((main,), timeout=min(remaining, _MAIN_LOOK_PERIOD))
            chain = _await_chain(main.get_coro())
            if any(getattr(coro, "cr_code", None) is _SERVER_WAIT_CLOSED_CODE for coro in chain):
                logger.info(
                    "main() waits for a server's connections to close, so they are cancelled now"
                )
                break
        return True

    async def _cancel_pending_tasks(self) -> None:
        """Cancel every pending task but protected work, wait for them, then for new ones."""
        self._enter(_Phase.CANCELLING_TASKS)
        # Look for tasks afresh, even after main's wait, to find any made without the factory.
        tasks = self._look()
        self._held.clear()  # The look found every held task, so _held can let go of them.
        self._task_deadline = self._loop.time() + self._timeout_task_shutdown
        if tasks:
            logger.info("Cancelling pending tasks.")
            self._notify(f"STATUS=waiting for {_plural(len(tasks), 'task')} to end")
            main_first = self._main_cancelled and tasks[0] is self._main
            failed = self._cancel(tasks[1:] if main_first else tasks)
            logger.info("Running pending tasks till complete")
            if not await self._wait_for_cancelled(tasks, failed):
                return
            del tasks  # So each task is freed, and its errors reported, once it is done.
        await self._wait_for_new_tasks()

    async def _shutdown_asyncgens(self) -> None:
        """On a loop that run() made, finalize async generators before the executor goes."""
        # As in asyncio.run(), because a generator's clean-up may need the executor.
        if not self._owns_loop:
            return
        self._enter(_Phase.FINALIZING)
        logger.info("Shutting down async generators")
        await self._loop.shutdown_asyncgens()
        await self._wait_for_new_tasks()

    async def _shutdown_executor(self) -> None:
        """Shut the executor down in a thread, so that the loop keeps running meanwhile."""
        self._enter(_Phase.SHUTTING_EXECUTOR)
        logger.info("Waiting for executor shutdown.")
        loop = self._loop
        executor = self._executor
        if getattr(executor, "aiorun_used", True) is False:
            executor.shutdown(wait=True)  # It never started a thread, so nothing waits.
            return
        done = loop.create_future()

        def shut_down() -> None:
            try:
                executor.shutdown(wait=True)
            finally:
                with contextlib.suppress(RuntimeError):  # If the loop is closed, nothing waits.
                    loop.call_soon_threadsafe(done.set_result, None)

        thread = self._executor_thread = threading.Thread(
            target=shut_down, name="aiorun-executor-shutdown", daemon=True
        )
        thread.start()
        finished, _ = await asyncio.wait({done}, timeout=self._timeout_executor_shutdown)
        if finished:
            thread.join()  # The thread is ending. Joining it leaves no thread behind.
        else:
            logger.warning(
                "The executor did not shut down within %s seconds, so its remaining jobs "
                "are abandoned",
                self._timeout_executor_shutdown,
            )
            self._abandon_executor_jobs()
        await self._wait_for_new_tasks()

    def _wait_for_last_pass_tasks(self) -> None:
        """Deal with the tasks that the loop's last passes started, until a look finds none."""
        # The pass that stops the loop runs its I/O callbacks, so a server left
        # listening may accept a connection that only a look for tasks can find.
        while not self._abandoned:
            tasks = self._look()
            if not tasks:
                return
            self._enter(_Phase.LAST_PASSES)
            if self._arrival_rounds >= _MAX_ARRIVAL_ROUNDS:
                self._cancel(self._note_arrivals(tasks))
                self._write_off(tasks)
                return
            self._drive(self._wait_for_round(tasks))

    def _cancel_everything_left(self) -> None:
        """Once the shutdown is abandoned, cancel everything that is left, and say what it was."""
        jobs = self._abandon_executor_jobs()
        self._written_off.clear()  # They are cancelled again, with everything else.
        leftover = self._look()
        abandoned = []
        if leftover:  # Described now, while each protected task still shows its work.
            groups = ", ".join(_first_few(_group_tasks(leftover), _group_label, _more_groups))
            abandoned.append(f"{_plural(len(leftover), 'pending task')} ({groups})")
        if jobs is not None:
            abandoned.append(f"executor jobs still running ({jobs})")
        self._abandoned_work = "; ".join(abandoned) or "no pending task or running job"
        self._cancel(leftover, spare_protected=False)
        # One pass of the loop delivers the cancellations. Nothing is waited for.
        self._loop.call_soon(self._loop.stop)
        self._run_loop()
        still_running = [task for task in leftover if not task.done()]
        self._write_off(
            still_running,
            "Abandoned %s still running: %s",
            _plural(len(still_running), "task that was", "tasks that were"),
        )

    def _close_written_off(self) -> None:
        """On a loop that run() made, close the written-off tasks' coroutines in one last pass."""
        # Their ``finally:`` blocks run now, in a running loop, and not later in
        # the garbage collector, which would print "Exception ignored" for each.
        if not self._owns_loop:
            return
        if self._abandoned or self._arrival_rounds >= _MAX_ARRIVAL_ROUNDS:
            # What the last passes started will never run.
            self._written_off.update(self._look())
        if not self._written_off:
            return
        closed: list[asyncio.Task[Any]] = []
        tasks = sorted(self._written_off, key=id)
        self._loop.call_soon(lambda: closed.extend(self._close_tasks(tasks)))
        self._loop.stop()  # stop() before run_forever() gives one pass, on uvloop too.
        self._run_loop()
        for task in closed:
            if task.done() and not task.cancelled():
                # uvloop runs due timers first in a pass, so the task may have
                # resumed after the close and failed with "cannot reuse already
                # awaited coroutine". That error is ours, and nobody should see it.
                task.exception()
        self._close_tasks(self._pending_tasks())  # The pass started these, and they never run.

    def _warn_of_arrivals(self) -> None:
        if self._arrivals:
            logger.warning(
                "The shutdown also cancelled %s that started after it had cancelled the others "
                "(%s). Close listening servers in shutdown_callback so that no new work arrives "
                "during the shutdown",
                _plural(sum(self._arrivals.values()), "task"),
                _counted(self._arrivals),
            )

    # --- the shutdown's machinery ---------------------------------------------

    def _run_step(self, step: "Callable[..., Coroutine[Any, Any, object]]", *args: "Any") -> None:
        if not self._abandoned:
            self._drive(step(*args))

    def _drive(self, step: "Coroutine[Any, Any, object]") -> None:
        """Run the loop until ``step``, in the driver task, is over."""
        loop = self._loop
        new_tasks = self._saw_new_task
        driver = self._driver = loop.create_task(step)
        self._saw_new_task = new_tasks  # The driver is not a task to wait for.
        driver.add_done_callback(lambda _: loop.stop())
        # A task that raises SystemExit, or code that calls loop.stop(), ends
        # run_forever() early. Then the loop runs again until the step is over.
        while not driver.done():
            if self._run_loop() is None and not driver.done():
                logger.warning("loop.stop() called during the shutdown was ignored")
        self._driver = None
        failure = None if driver.cancelled() else driver.exception()
        if failure is not None:  # A bug in aiorun, or a callback's error once abandoned.
            self._record_error(failure)

    def _watch_new_tasks(self) -> None:
        """Wrap the task factory to flag new tasks. The shutdown looks again only when flagged."""
        loop = self._loop
        factory = loop.get_task_factory()
        make = factory or (lambda loop, coro, **kwargs: asyncio.Task(coro, loop=loop, **kwargs))
        cleanup = self._cleanup

        def note(loop: "asyncio.AbstractEventLoop", coro: "Any", **kwargs: "Any") -> "Any":
            self._saw_new_task = True
            # A task made by a task is clean-up work, and so is the task in
            # which the loop closes a garbage-collected async generator.
            by_task = (
                asyncio.current_task(loop) is not None
                or type(coro).__name__ == "async_generator_athrow"
            )
            task: Any = make(loop, coro, **kwargs)
            if by_task:
                cleanup.add(task)
            return task

        self._noting_factory = note
        loop.set_task_factory(note)
        self._undo.callback(loop.set_task_factory, factory)

    def _look(self) -> "list[asyncio.Task[Any]]":
        """Find the pending tasks afresh, and start noting new tasks again from here."""
        self._saw_new_task = False
        return self._pending_tasks()

    def _pending_tasks(self) -> "list[asyncio.Task[Any]]":
        """The loop's pending tasks, main first. Not the driver, nor the tasks written off."""
        # Sorted by id(), in memory order, which is kind to CPU caches. main() comes
        # first, so that its clean-up begins before its children see their cancellation.
        # A grpc.aio server whose handlers are cancelled first can crash.
        found = self._finder.find(self._loop)
        found.discard(self._driver)
        found -= self._written_off
        main = self._main
        first = [main] if main in found else []
        found.difference_update(first)
        return first + sorted(found, key=id)

    def _cancel(
        self, tasks: "list[asyncio.Task[Any]]", spare_protected: bool = True
    ) -> "list[asyncio.Task[Any]]":
        """Cancel the tasks, sparing protected work if asked. Return those whose cancel() raised."""
        # Cancelling recurses down a chain of gather() awaits, and a chain some hundreds
        # deep raises RecursionError (CPython #80637). The caller tries again once the
        # tasks further down the chain, each cancelled separately, have ended.
        message = self._cancel_message()
        failed = []
        for task in tasks:
            if spare_protected and _is_protected(task):
                continue
            try:
                task.cancel(message)
            except RecursionError:
                failed.append(task)
        return failed

    async def _wait_for_cancelled(
        self, tasks: "list[asyncio.Task[Any]]", failed: "list[asyncio.Task[Any]]"
    ) -> bool:
        """Wait for the tasks, retrying the cancels that raised. Return whether all ended."""
        while failed:
            left = set(failed)
            if not await self._wait_until_done([t for t in tasks if t not in left]):
                break
            retried = self._cancel(failed)
            if len(retried) == len(failed):
                break  # No progress. They are waited for, and reported if still pending.
            failed = retried
        if await self._wait_until_done(tasks):
            return True
        self._write_off_stuck(self._pending_tasks())
        return False

    async def _wait_for_new_tasks(self) -> None:
        """Wait for the tasks created since the last look, round after round, until none is new."""
        # If something replaced the task factory, new tasks go unnoted, so look anyway.
        while self._saw_new_task or self._loop.get_task_factory() is not self._noting_factory:
            if not await self._wait_for_round(self._look()):
                return

    async def _wait_for_round(self, tasks: "list[asyncio.Task[Any]]") -> bool:
        """Wait for one round of new tasks, and return whether to look for more."""
        # A task that arrived from outside runs once before it is cancelled,
        # because asyncio's connection tasks must run once to close their socket.
        if not tasks:
            return False
        arrived = self._note_arrivals(tasks)
        failed = []
        if arrived:
            self._arrival_rounds += 1
            await asyncio.sleep(0)  # They run once.
            failed = self._cancel(arrived)
            if self._arrival_rounds >= _MAX_ARRIVAL_ROUNDS:
                self._write_off(arrived)
                tasks = [task for task in tasks if task not in self._written_off]
                failed = []
        del arrived
        waited = await self._wait_for_cancelled(tasks, failed)
        return waited and self._arrival_rounds < _MAX_ARRIVAL_ROUNDS

    def _note_arrivals(self, tasks: "list[asyncio.Task[Any]]") -> "list[asyncio.Task[Any]]":
        """Return the tasks that arrived from outside (no task made them), and count them."""
        # If the application replaced the factory, no task is known to come from
        # outside, and timeout_task_shutdown bounds every task.
        if self._loop.get_task_factory() is not self._noting_factory:
            return []
        arrived = [t for t in tasks if not (t in self._cleanup or _is_protected(t))]
        self._arrivals.update(f"{_coro_name(task)}()" for task in arrived)
        return arrived

    async def _wait_until_done(self, tasks: "list[asyncio.Task[Any]]") -> bool:
        """Whether the tasks all ended before the deadline."""
        # The tasks are visited in the order of their cancellation, so most are done when
        # visited. asyncio.wait() on all of them would add a done callback to each.
        for task in tasks:
            if not task.done():
                remaining = self._task_deadline - self._loop.time()
                if remaining > 0:
                    await asyncio.wait((task,), timeout=remaining)
                if not task.done():
                    return False
        return True

    def _write_off(self, tasks: "list[asyncio.Task[Any]]", report: str = "", *args: "Any") -> None:
        """Stop waiting for the tasks, and report them if asked. They are closed later."""
        if tasks and report:
            logger.warning(report, *args, _describe_groups(_group_tasks(tasks)))
        self._written_off.update(tasks)
        for task in tasks:
            _mute_destroy_pending(task)

    def _write_off_stuck(self, tasks: "list[asyncio.Task[Any]]") -> None:
        self._write_off(
            tasks,
            "During shutdown, the following tasks refused to exit after %s seconds: %s",
            self._timeout_task_shutdown,
        )

    def _close_tasks(self, tasks: "list[asyncio.Task[Any]]") -> "list[asyncio.Task[Any]]":
        """Close the tasks' coroutines, report what their clean-ups raise, and return the closed."""
        errors: collections.Counter[str] = collections.Counter()
        closed = []
        for task in tasks:
            coro: Any = task.get_coro()
            if task.done() or coro is None:
                continue
            _mute_destroy_pending(task)
            try:
                coro.close()
            except BaseException as exc:
                key = f"{type(exc).__name__}: {str(exc)[:100]} (in {_coro_name(task)}())"
                if key not in errors and len(errors) >= _MAX_KINDS:
                    key = "other errors"
                errors[key] += 1
            else:
                closed.append(task)
        if errors:
            logger.warning(
                "When run() closed the tasks it no longer waited for, the clean-up of %s "
                "raised: %s",
                _plural(sum(errors.values()), "task"),
                _counted(errors),
            )
        return closed

    def _cancel_message(self) -> str:
        """What each task that the shutdown cancels finds in ``CancelledError.args[0]``."""
        if not self._abandoned:
            return f"aiorun shutdown: {self._cause or 'loop.stop()'}"
        if self._second_signal is not None:
            return f"aiorun shutdown abandoned: second {signal.Signals(self._second_signal).name}"
        return f"aiorun shutdown abandoned: shutdown_timeout={self._shutdown_timeout} passed"

    def _abandon(self, signum: "int | None" = None) -> None:
        """Abandon the shutdown, on a second signal ``signum``, or at the deadline."""
        if self._phase in (_Phase.ABANDONED, _Phase.COMPLETE):
            return
        if signum is None:
            logger.warning(
                "The shutdown did not complete within %s seconds (shutdown_timeout), so it "
                "is abandoned",
                self._shutdown_timeout,
            )
        else:
            logger.warning(
                "Got %s again, so the shutdown is abandoned", signal.Signals(signum).name
            )
        self._second_signal = signum
        self._enter(_Phase.ABANDONED)
        if self._driver is not None:
            self._driver.cancel()
        else:  # While serving, or in a plain shutdown_callback, stop() ends the loop's run.
            self._loop.stop()

    def _abandon_executor_jobs(self) -> "str | None":
        """Cancel the executor's queued jobs, and warn of those still running. Describe them."""
        running = getattr(self._executor, "aiorun_running_jobs", None)
        jobs = _describe_jobs(list(running.values())) if running else None
        if running is None and self._executor_thread and self._executor_thread.is_alive():
            # run() cannot see the jobs of an executor that the application
            # passed. It only knows whether the executor's shutdown still waits.
            jobs = "run() cannot see which ones"
        self._executor.shutdown(wait=False, cancel_futures=True)
        if jobs is not None and self._supplied_executor is None:  # Ours has daemon threads.
            logger.warning(
                "Executor jobs are still running (%s). Their threads cannot be stopped, "
                "but they no longer keep the process from exiting.",
                jobs,
            )
        elif jobs is not None:  # concurrent.futures joins its threads at exit (CPython #111358).
            logger.warning(
                "Jobs of the executor passed to run() are still running (%s). Their threads "
                "cannot be stopped, and the interpreter will wait for them when it exits.",
                jobs,
            )
        return jobs

    # --- the outcome ----------------------------------------------------------

    def _raise_outcome(self) -> "Any":
        """Raise what ended or disturbed the run, or else return main's result (or None)."""
        logger.info("Leaving. Bye!")
        error, self._error = self._error, None  # No reference cycle through this object.
        result, self._result = self._result, None
        if self._abandoned:
            if self._second_signal == signal.SIGINT:
                raise KeyboardInterrupt from error
            if self._second_signal is not None:
                raise SystemExit(128 + self._second_signal) from error
            raise TimeoutError(
                f"The shutdown did not complete within {self._shutdown_timeout} seconds "
                f"(shutdown_timeout). Abandoned: {self._abandoned_work}"
            ) from error
        if error is not None:
            logger.info("Reraising unhandled exception")
            raise error
        return result


def _is_protected(task: "asyncio.Task[Any]") -> bool:
    """Whether the task runs work protected by shutdown_waits_for() or by the application."""
    return task in _protected_tasks or bool(
        _DO_NOT_CANCEL_COROS and task.get_coro() in _DO_NOT_CANCEL_COROS
    )


# run() raises only the first error, and logs each later one with these messages.
# Their words are those that the original aiorun logged for the shutdown_callback().
_LATER_ERROR = (
    "%s raised an error, but there is already a different exception raised from the "
    "loop, so this log message is all you're going to see about it."
)
_LATER_CALLBACK_ERROR = _LATER_ERROR % "The shutdown_callback()"
_LATER_MAIN_ERROR = _LATER_ERROR % "main()"


def _check_awaitable(caller: str, coro: object) -> None:
    if inspect.iscoroutine(coro) or inspect.isawaitable(coro):  # The first test is cheap.
        return
    if inspect.iscoroutinefunction(coro):
        name = getattr(coro, "__name__", "main")
        raise TypeError(
            f"{caller}() takes a coroutine object, not the coroutine function "
            f"{name!r}. Call it, as in {caller}({name}())"
        )
    raise TypeError(f"{caller}() takes a coroutine or awaitable, not {coro!r}")


def _check_seconds(
    name: str, value: object, optional: bool = False, positive: bool = False
) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {value!r}")
    if value != value:
        raise ValueError(f"{name} must be a number of seconds, not NaN")
    if value < 0:
        raise ValueError(f"{name} must not be negative, not {value!r}")
    if positive and value == 0:
        raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")


def _check_flag(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, not {value!r}")


def _stop_loop(loop: "asyncio.AbstractEventLoop") -> None:
    """The default shutdown_handler."""
    logger.debug("Entering shutdown handler")
    logger.warning("Stopping the loop")
    loop.stop()


# Up to Python 3.13, asyncio.all_tasks() copies the registry that all threads
# share, and raises "Set changed size during iteration" after 1,000 copies
# that other threads disturbed (CPython gh-80788). So the switch interval is raised
# while the copy runs. When calls overlap, the first saves the interval, and the last
# puts it back. From 3.14 on, each thread keeps its own tasks.
_SWITCH_INTERVAL_FOR_COPY = 0.1  # seconds, longer than a copy takes
_switch_lock = threading.Lock()
_switch_holders = 0
_switch_saved = 0.0


def _all_tasks(loop: "asyncio.AbstractEventLoop") -> "set[asyncio.Task[Any]]":
    """asyncio.all_tasks(loop), safe from other threads' loops."""
    if sys.version_info >= (3, 14):
        return asyncio.all_tasks(loop)
    global _switch_holders, _switch_saved
    with _switch_lock:
        if _switch_holders == 0:
            _switch_saved = sys.getswitchinterval()
            sys.setswitchinterval(max(_switch_saved, _SWITCH_INTERVAL_FOR_COPY))
        _switch_holders += 1
    try:
        return asyncio.all_tasks(loop)
    finally:
        with _switch_lock:
            _switch_holders -= 1
            if _switch_holders == 0:
                sys.setswitchinterval(_switch_saved)


class _TaskFinder:
    """Finds one loop's pending tasks, look after look, as ``asyncio.all_tasks(loop)`` would."""

    def __init__(self) -> None:
        self._seen: set[Any] = set()  # the registry's references at the last look
        self._found: list[weakref.ref[asyncio.Task[Any]]] = []

    def find(self, loop: "asyncio.AbstractEventLoop") -> "set[asyncio.Task[Any]]":
        # Up to 3.13, all_tasks() walks every thread's tasks in Python code, which is
        # slow while another thread's loop is busy. The finder copies the registry in C,
        # and walks only what its last look found and what was registered since.
        references = _task_registry()
        if references is None:
            return _all_tasks(loop)
        # A look runs in the shutdown's driver task or while the loop is not
        # running, so none of the loop's tasks can be in the first step of an eager task.
        # asyncio's set of eager tasks (3.12 and later) can be left out.
        now = references.copy()
        candidates = [reference() for reference in (now - self._seen if self._seen else now)]
        candidates += [reference() for reference in self._found]
        found = {
            task
            for task in candidates
            if task is not None and task.get_loop() is loop and not task.done()
        }
        self._seen = now
        self._found = [weakref.ref(task) for task in found]
        return found


def _task_registry() -> "set[Any] | None":
    """The weak references in asyncio's registry of all threads' tasks, or None if unsure."""
    # A private detail of asyncio, read here only, and only up to Python 3.13.
    if sys.version_info >= (3, 14) or asyncio.all_tasks is not _STOCK_ALL_TASKS:
        return None
    name = "_scheduled_tasks" if sys.version_info >= (3, 12) else "_all_tasks"
    registry = getattr(asyncio.tasks, name, None)
    references = getattr(registry, "data", None)
    if isinstance(registry, weakref.WeakSet) and isinstance(references, set):
        return references
    return None


_STOCK_ALL_TASKS = asyncio.all_tasks


def _await_chain(coro: object) -> "Iterator[Any]":
    """The coroutines of a chain of awaits, outermost first."""
    for _ in range(100):  # Awaits cannot form a cycle, so this only caps the depth.
        if coro is None:
            return
        yield coro
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)


_SERVER_WAIT_CLOSED_CODE = asyncio.Server.wait_closed.__code__
_MAIN_LOOK_PERIOD = 0.05  # seconds between looks at where main() waits, while it ends alone
_MAX_ARRIVAL_ROUNDS = 10  # rounds of tasks arriving from outside before they are written off


def _mute_destroy_pending(task: "asyncio.Task[Any]") -> None:
    """Silence "Task was destroyed but it is pending!" for a task no longer waited for."""
    # No public call does this. The private flag is on asyncio's own tasks,
    # Python and C. Other task types lack it, and their tasks are then reported twice.
    with contextlib.suppress(AttributeError):
        task._log_destroy_pending = False  # type: ignore[attr-defined]


def _drop_work_never_run(loop: "asyncio.AbstractEventLoop") -> "list[str]":
    """Cancel and close this thread's protected work on an idle loop other than ``loop``."""
    me = threading.get_ident()
    lost: list[tuple[asyncio.Task[Any], Awaitable[Any]]] = []
    with _idle_protected_lock:
        for task, (thread, wrapped) in list(_idle_protected.items()):
            other = task.get_loop()
            if thread == me and other is not loop and not other.is_running() and not task.done():
                del _idle_protected[task]
                lost.append((task, wrapped))
    for task, wrapped in lost:
        _protected_tasks.discard(task)
        task.cancel("aiorun: the loop of this shutdown_waits_for() work was never run")
        guard = task.get_coro()
        if inspect.iscoroutine(guard):
            guard.close()
        if inspect.iscoroutine(wrapped) and inspect.getcoroutinestate(wrapped) == "CORO_CREATED":
            wrapped.close()
        _mute_destroy_pending(task)
    return [f"{_work_name(wrapped)}()" for _, wrapped in lost]


# --- signal capture -----------------------------------------------------------


@contextlib.contextmanager
def _capture_signals(
    loop: "asyncio.AbstractEventLoop", on_signal: "Callable[[int], None]"
) -> "Iterator[list[signal.Signals]]":
    """Route SIGINT and SIGTERM (SIGBREAK on Windows) to ``on_signal``, on the loop."""
    through_loop: list[signal.Signals] = []  # given to add_signal_handler(), and yielded
    if threading.current_thread() is not threading.main_thread():
        logger.debug("Not in the main thread, so no signal handlers are installed")
        yield through_loop
        return
    previous: dict[signal.Signals, _Handler] = {}
    for sig in _SIGNALS:
        handler = signal.getsignal(sig)
        if handler == signal.SIG_IGN:
            # A shell starts a background job with SIGINT ignored, and
            # asyncio.Runner leaves such a SIGINT alone (CPython gh-154167).
            logger.debug("%s is ignored in this process (SIG_IGN), so run() leaves it", sig.name)
        else:
            previous[sig] = handler
    wakeup_fd = signal.set_wakeup_fd(-1)  # Setting it is the only way to read it.
    signal.set_wakeup_fd(wakeup_fd)

    def on_raw_signal(signum: int, frame: "FrameType | None") -> None:
        # This runs between any two bytecodes of the main thread, so it only
        # hands the signal over to the loop.
        with contextlib.suppress(RuntimeError):  # The loop was just closed, as run() returns.
            loop.call_soon_threadsafe(on_signal, signum)

    try:
        try:
            # The loop's own handlers write to a wakeup fd, which wakes a loop
            # blocked in select(). With a plain Python handler, a signal that arrives
            # just before the loop blocks waits for the next event, maybe forever.
            for sig in previous:
                loop.add_signal_handler(sig, on_signal, sig)
                through_loop.append(sig)
        except NotImplementedError:  # Windows has no add_signal_handler(), so use signal.signal().
            for sig in previous:
                signal.signal(sig, on_raw_signal)
        yield through_loop
    finally:
        if not loop.is_closed():  # Closing the loop removes them.
            for sig in through_loop:
                loop.remove_signal_handler(sig)
        for sig, handler in previous.items():
            # None means a handler installed outside Python, which cannot be restored.
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        signal.set_wakeup_fd(wakeup_fd)


# --- systemd notification ------------------------------------------------------


class _Notifier:
    """Sends sd_notify(3) datagrams to systemd, without ever blocking the loop or raising."""

    def __init__(self, loop: "asyncio.AbstractEventLoop", address: str) -> None:
        self._loop = loop
        # "@name" is an abstract socket, whose name starts with a NUL byte.
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.setblocking(False)
        self._failed = False
        self._ping: asyncio.TimerHandle | None = None

    def send(self, message: str) -> None:
        try:
            self._socket.sendto(message.encode(), self._address)
        except OSError as exc:  # Failed, or would have blocked. Only the first failure is logged.
            if not self._failed:
                self._failed = True
                logger.warning(
                    "systemd notification %r not sent to %r (%s). Later notifications that "
                    "fail are dropped without a warning",
                    message,
                    self._address,
                    exc,
                )

    def ping(self, period: float) -> None:
        """Send WATCHDOG=1 now, and every ``period`` seconds from the loop while it runs."""
        self.send("WATCHDOG=1")
        self._ping = self._loop.call_later(period, self.ping, period)

    def close(self) -> None:
        if self._ping is not None:
            self._ping.cancel()
        self._socket.close()


_STOP_MARGIN = 5.0  # seconds asked of systemd beyond shutdown_timeout, to close the loop


@contextlib.contextmanager
def _notifying_systemd(loop: "asyncio.AbstractEventLoop") -> "Iterator[_Notifier | None]":
    """A notifier if systemd asked for one (NOTIFY_SOCKET), else None."""
    # The variables leave the environment, so that no child notifies for us.
    address = os.environ.pop("NOTIFY_SOCKET", None)
    watchdog = os.environ.pop("WATCHDOG_USEC", "")
    pid = os.environ.pop("WATCHDOG_PID", None)
    if not address:
        yield None
        return
    notifier = _Notifier(loop, address)
    try:
        if watchdog.isdecimal() and int(watchdog) > 0 and pid in (None, str(os.getpid())):
            # Three pings in each period that systemd asks for, so that a busy
            # loop still sends two.
            notifier.ping(int(watchdog) / 3e6)
        yield notifier
    finally:
        notifier.close()


# --- the blocked-loop watch ------------------------------------------------------


@contextlib.contextmanager
def _watching_for_a_blocked_loop(
    loop: "asyncio.AbstractEventLoop", threshold: float
) -> "Iterator[None]":
    """Warn, from a thread, when the loop has not run for ``threshold`` seconds."""
    # The warning names the signals that arrived meanwhile. A signal is noted
    # when its Python handler runs, so one that arrives during a long C call
    # that checks no signals is noted when the call returns.
    period = threshold / 4
    loop_thread = threading.get_ident()
    beat = [time.monotonic()]
    signals: list[tuple[float, str]] = []  # Only the main thread changes this list.
    done = threading.Event()

    def on_beat() -> None:
        now = time.monotonic()
        if now - beat[0] >= threshold:
            logger.warning("The event loop ran again after %.1f seconds", now - beat[0])
        beat[0] = now
        handle[0] = loop.call_later(period, on_beat)

    handle = [loop.call_later(period, on_beat)]

    def watch() -> None:
        blocked_since = None
        told = 0.0  # Signals received before this time have been reported.
        while not done.wait(period):
            now = time.monotonic()
            last = beat[0]
            # The loop has run since the signals before its last beat, so only later ones wait.
            waiting = [name for when, name in list(signals) if when > max(last, told)]
            if now - last >= threshold and blocked_since != last:
                blocked_since, told = last, now
                logger.warning(
                    "The event loop has not run for %.1f seconds (warn_blocked_loop=%s); "
                    "its thread is at %s%s",
                    now - last,
                    threshold,
                    _thread_place(sys._current_frames().get(loop_thread), _MAX_PLACES)
                    or "an unknown place",
                    _waiting_signals(waiting),
                )
            elif blocked_since is not None and last != blocked_since:
                blocked_since = None  # The loop runs again, and on_beat() says so.
            elif blocked_since is not None and waiting:
                told = now
                logger.warning("The event loop is still blocked%s", _waiting_signals(waiting))

    with contextlib.ExitStack() as undo:
        if threading.current_thread() is threading.main_thread():
            for sig in _SIGNALS:
                previous = signal.getsignal(sig)
                if callable(previous):
                    undo.callback(signal.signal, sig, previous)
                    signal.signal(sig, _noting_signal(previous, signals))
        thread = threading.Thread(target=watch, name="aiorun-blocked-loop-watch", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()
            handle[0].cancel()


def _noting_signal(
    previous: "Callable[..., Any]", signals: "list[tuple[float, str]]"
) -> "Callable[..., Any]":
    """Wrap a signal handler so that it notes the time and name of each signal."""

    def on_signal(signum: int, frame: "FrameType | None") -> None:
        signals.append((time.monotonic(), signal.Signals(signum).name))
        del signals[:-_MAX_NOTED_SIGNALS]  # The latest are enough.
        previous(signum, frame)

    return on_signal


def _waiting_signals(names: "list[str]") -> str:
    if not names:
        return ""
    listed = ", ".join(dict.fromkeys(names))
    return f"; meanwhile {listed} arrived, which the loop will handle when it runs again"


_MAX_NOTED_SIGNALS = 10  # the latest signals kept for the blocked-loop warning


# --- the executor that run() makes ---------------------------------------------


@functools.cache
def _daemon_executor_class() -> "type[Any]":
    """The class of the executor that run() makes, a ThreadPoolExecutor with daemon threads."""
    # concurrent.futures joins its threads at exit, however long their jobs
    # take (CPython #111358), and so a job abandoned at the deadline would delay
    # the exit. The class is made on first use, to keep the import light.
    import queue
    from concurrent.futures import Future, ThreadPoolExecutor

    class DaemonThreadPoolExecutor(ThreadPoolExecutor):
        """As in ThreadPoolExecutor, a thread starts when none is idle, up to max_workers."""

        def __init__(self, max_workers: "int | None" = None) -> None:
            super().__init__(max_workers)  # It checks max_workers and computes the defaults.
            # Each job adds and deletes one entry, atomically, so the loop's
            # thread may copy the dict meanwhile.
            self.aiorun_running_jobs: dict[object, tuple[str, int]] = {}
            self.aiorun_used = False
            # This reads, here only, the size and name prefix that __init__() computed,
            # a private detail of concurrent.futures (3.9 to 3.15). If they are
            # missing, the default that Python 3.8 to 3.12 document applies.
            most = getattr(self, "_max_workers", None)
            prefix = getattr(self, "_thread_name_prefix", None)
            if type(most) is not int:
                most = max_workers or min(32, (os.cpu_count() or 1) + 4)
            self._aiorun_most: int = most
            self._aiorun_prefix = prefix if isinstance(prefix, str) else "aiorun-executor"
            self._aiorun_queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
            self._aiorun_idle = threading.Semaphore(0)  # Each idle thread releases it once.
            self._aiorun_threads: list[threading.Thread] = []
            self._aiorun_lock = threading.Lock()
            self._aiorun_closed = False

        def submit(self, fn: "Any", /, *args: "Any", **kwargs: "Any") -> "Any":
            self.aiorun_used = True
            running = self.aiorun_running_jobs
            name = _job_name(fn)

            def job() -> "Any":
                token = object()
                running[token] = (name, threading.get_ident())
                try:
                    return fn(*args, **kwargs)
                finally:
                    del running[token]

            with self._aiorun_lock:
                if self._aiorun_closed:
                    raise RuntimeError("cannot schedule new futures after shutdown")
                future: Future[Any] = Future()
                self._aiorun_queue.put((future, job))
                threads = self._aiorun_threads
                idle = self._aiorun_idle.acquire(blocking=False)
                if not idle and len(threads) < self._aiorun_most:
                    label = f"{self._aiorun_prefix}_{len(threads)}"
                    thread = threading.Thread(target=self._aiorun_work, name=label, daemon=True)
                    thread.start()
                    threads.append(thread)
            return future

        def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
            with self._aiorun_lock:
                self._aiorun_closed = True
                with contextlib.suppress(queue.Empty):
                    while cancel_futures:  # until the queue is empty
                        item = self._aiorun_queue.get_nowait()
                        if item is not None:
                            item[0].cancel()
                self._aiorun_queue.put(None)  # The end mark. Each thread passes it on as it ends.
            if wait:
                for thread in list(self._aiorun_threads):
                    thread.join()

        def _aiorun_work(self) -> None:
            while (item := self._aiorun_queue.get()) is not None:
                future, job = item
                del item
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(job())
                    except BaseException as exc:
                        future.set_exception(exc)
                # No reference to the job or its result is kept while idle.
                del future, job
                self._aiorun_idle.release()
            self._aiorun_queue.put(None)

    return DaemonThreadPoolExecutor


def _job_name(fn: "Any") -> str:
    for _ in range(10):  # partials of partials, not a cycle
        if not isinstance(fn, functools.partial):
            break
        if isinstance(getattr(fn.func, "__self__", None), contextvars.Context) and fn.args:
            fn = fn.args[0]  # asyncio.to_thread(f) runs partial(context.run, f).
        else:
            fn = fn.func
    name = getattr(fn, "__qualname__", None)
    return f"{name}()" if isinstance(name, str) else repr(fn)[:100]


# --- the reports --------------------------------------------------------------
# A report is read by a person, after it has passed through a logging
# pipeline. So it has one line for each group of similar things, a bounded
# number of groups, and a bounded call graph.

_MAX_GROUPS = 20  # groups of tasks in one report
_MAX_LEVELS = 6  # levels of awaiters shown above one example task
_MAX_AWAITERS = 6  # awaiting tasks shown for one example, over all levels
_MAX_NAMED = 5  # things named in one line, such as an error message or a list of jobs
_MAX_KINDS = 100  # kinds of errors counted apart before the rest are counted together
_MAX_PLACES = 3  # frames shown of a blocked loop's thread
_ASYNCIO_DIR = asyncio.__file__.rpartition("__init__")[0]
# Frames in these files are plumbing, not the place a person looks for.
_PLUMBING_FILES = (_ASYNCIO_DIR, threading.__file__, __file__)


def _group_tasks(tasks: "list[asyncio.Task[Any]]") -> "list[list[asyncio.Task[Any]]]":
    """Similar tasks together, the largest group first, each group in the order given."""
    # Similar means the same coroutine, suspended at the same instruction. What
    # it awaits is not looked at, because there may be a million tasks.
    groups: dict[Any, list[asyncio.Task[Any]]] = {}
    for task in tasks:
        coro: Any = _work_of(task)
        try:
            frame = coro.cr_frame
            key: Any = (coro.cr_code, frame.f_lasti if frame is not None else -1)
        except AttributeError:
            key = type(coro)
        groups.setdefault(key, []).append(task)
    return sorted(groups.values(), key=len, reverse=True)


def _describe_groups(groups: "list[list[asyncio.Task[Any]]]") -> str:
    """A header, then a line for each group: its size, an example task, where it waits."""
    count = sum(map(len, groups))
    protected = sum(task in _protected_tasks for group in groups for task in group)
    header = (
        f"{_plural(count, 'task')} ({protected} protected by shutdown_waits_for()) "
        f"in {_plural(len(groups), 'group')} of similar tasks"
    )
    described = _first_few(
        groups, _describe_group, lambda rest: f"- {_more_groups(rest)}", _MAX_GROUPS
    )
    return "\n".join([header, *described])


def _describe_group(group: "list[asyncio.Task[Any]]") -> str:
    example = group[0]
    coro = _work_of(example)
    frame = getattr(coro, "cr_frame", None)
    at = _frame_place(frame) if frame is not None else None
    inner = _suspended_at(coro)
    where = f", suspended at {at}" if at else ""
    if inner and inner != at:
        where += f", waiting in {inner}"
    example_name = f"; e.g. {example.get_name()!r}" if len(group) > 1 else ""
    lines = [f"- {_group_label(group)}{where}{example_name}"]
    lines.extend("    " + line for line in _call_graph(example))
    return "\n".join(lines)


def _more_groups(rest: "list[list[asyncio.Task[Any]]]") -> str:
    return f"and {_plural(len(rest), 'more group')} ({_plural(sum(map(len, rest)), 'task')})"


def _group_label(group: "list[asyncio.Task[Any]]") -> str:
    """``'Task-7' work()`` for one task, ``N x work()`` for a group of similar ones."""
    if len(group) == 1:
        return f"{group[0].get_name()!r} {_coro_name(group[0])}()"
    return f"{len(group)} x {_coro_name(group[0])}()"


def _counted(counts: "collections.Counter[str]") -> str:
    """``3 x a, b, and 4 more``, the most frequent first, with a few of them named."""
    return ", ".join(
        _first_few(
            counts.most_common(),
            lambda item: item[0] if item[1] == 1 else f"{item[1]} x {item[0]}",
            lambda rest: f"and {sum(count for _, count in rest)} more",
        )
    )


def _first_few(
    items: "list[_T]",
    label: "Callable[[_T], str]",
    more: "Callable[[list[_T]], str]",
    most: int = _MAX_NAMED,
) -> "list[str]":
    """The labels of the first ``most`` items, then ``more()`` of the rest, if any are left."""
    shown = [label(item) for item in items[:most]]
    if len(items) > most:
        shown.append(more(items[most:]))
    return shown


def _plural(count: int, one: str, many: "str | None" = None) -> str:
    """``1 task``, ``2 tasks``; ``many`` where adding an s will not do."""
    return f"{count} {one if count == 1 else many or one + 's'}"


def _work_of(task: "asyncio.Task[Any]") -> "Any":
    """The coroutine a task runs; for protected work, the work, not its guard."""
    coro: Any = task.get_coro()
    if getattr(coro, "cr_code", None) is _GUARD_CODE and coro.cr_await is not None:
        return coro.cr_await
    return coro


def _coro_name(task: "asyncio.Task[Any]") -> str:
    return _work_name(_work_of(task))


def _work_name(coro: object) -> str:
    name = getattr(coro, "__qualname__", None)
    return name if isinstance(name, str) else type(coro).__name__


def _call_graph(task: "asyncio.Task[Any]") -> "list[str]":
    """Who awaits ``task``, a few levels up, each task once, in a few lines at most."""
    # Not asyncio.format_call_graph(), which prints every path, and the paths
    # double with each level of tasks that gather() each other (CPython
    # gh-156860). That can exhaust the memory in the middle of the shutdown.
    # So this reads, here only, the private attribute behind capture_call_graph()
    # (Python 3.14 and newer), which has no depth limit either.
    lines: list[str] = []
    seen: set[asyncio.Future[Any]] = {task}
    level: list[asyncio.Future[Any]] = [task]
    depth = 0
    while level and len(lines) < _MAX_AWAITERS and depth < _MAX_LEVELS:
        depth += 1
        above: list[asyncio.Future[Any]] = []
        for future in level:
            for parent in getattr(future, "_asyncio_awaited_by", None) or ():
                if parent in seen:
                    continue
                seen.add(parent)
                above.append(parent)
                if len(lines) < _MAX_AWAITERS:
                    lines.append("  " * (depth - 1) + f"awaited by {_future_name(parent)}")
        level = above
    if level and len(lines) >= _MAX_AWAITERS:
        lines.append("  " * depth + "...")
    return lines


def _future_name(future: "asyncio.Future[Any]") -> str:
    if isinstance(future, asyncio.Task):
        where = _suspended_at(future.get_coro())
        return f"{future.get_name()!r} {_coro_name(future)}()" + (f" at {where}" if where else "")
    return type(future).__name__


def _suspended_at(coro: object) -> "str | None":
    """Where a chain of awaits waits, as its innermost frame outside asyncio."""
    chain = _await_chain(coro)
    found = [getattr(c, "cr_frame", None) or getattr(c, "gi_frame", None) for c in chain]
    frames: list[FrameType] = [frame for frame in found if frame is not None]
    if not frames:
        return None
    outside = [f for f in frames if not f.f_code.co_filename.startswith(_ASYNCIO_DIR)]
    return _frame_place((outside or frames)[-1])


def _frame_place(frame: "FrameType") -> str:
    return f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}"


def _thread_place(frame: "FrameType | None", most: int = 1) -> "str | None":
    """Where a thread is, as its ``most`` innermost frames outside asyncio, threading and aiorun."""
    places: list[str] = []
    while frame is not None and len(places) < most:
        if not frame.f_code.co_filename.startswith(_PLUMBING_FILES):
            places.append(_frame_place(frame))
        frame = frame.f_back
    return " <- ".join(places) or None


def _describe_jobs(jobs: "list[tuple[str, int]]") -> str:
    """Executor jobs by function and by where their threads are, similar ones counted."""
    frames = sys._current_frames()  # One snapshot of every thread for all the jobs.
    places: collections.Counter[str] = collections.Counter()
    for name, thread in jobs:
        where = _thread_place(frames.get(thread))  # None inside a C function, such as time.sleep()
        places[f"{name} at {where}" if where else name] += 1
    return f"{_plural(len(jobs), 'job')}: {_counted(places)}"


# --- shutdown_waits_for()'s machinery -----------------------------------------


class _Waiter:
    """What shutdown_waits_for() returns, an object that acts as a coroutine awaiting the result."""

    # A plain class with the methods of a Coroutine, which is all create_task()
    # needs, so that dropping it raises no "never awaited" warning. It has no
    # __init__, which would cost on this hot path. The caller sets each slot.
    __slots__ = ("_iter", "awaited", "future", "guard", "registry", "task", "wrapped")
    _iter: "Generator[Any, None, Any] | None"
    awaited: bool
    future: "asyncio.Future[Any]"
    task: "asyncio.Task[None] | None"  # None while the guard runs inside create_task()
    guard: "Coroutine[Any, Any, None]"
    registry: "weakref.WeakSet[Any]"
    wrapped: "Awaitable[Any]"

    def __await__(self) -> "Generator[Any, None, Any]":
        self.awaited = True
        return self.future.__await__()

    def send(self, value: "Any") -> "Any":  # when it runs as a task's coroutine
        it = self._iter
        if it is None:
            it = self._iter = self.__await__()
        return it.send(value)

    def throw(self, typ: "Any", val: "Any" = None, tb: "Any" = None) -> "Any":
        exc = typ if val is None else val
        if isinstance(exc, type):
            exc = exc()
        if tb is not None:
            exc = exc.with_traceback(tb)
        it = self._iter
        if it is None:  # A waiter not yet started ends here, as a coroutine would.
            self._iter = (_ for _ in ())  # An empty generator, so a later send() ends at once.
            raise exc
        return it.throw(exc)

    def close(self) -> None:
        if self._iter is not None:
            self._iter.close()

    # Task reprs, debuggers and asyncio's introspection read these attributes of a
    # coroutine. The waiter returns the wrapped one's, so that a task shows the work it
    # waits for ("coro=<save() running at app.py:12>"). __name__ and __qualname__
    # cannot be properties, because the class has attributes of those names.
    def __getattr__(self, name: str) -> "Any":
        if name in ("cr_code", "cr_frame"):
            return getattr(self.wrapped, name, None)
        if name == "cr_running":
            return False
        if name == "cr_await":  # The waiter's own, once it runs as a task's coroutine.
            return self.future if self._iter is not None else None
        if name in ("__name__", "__qualname__"):
            value = getattr(self.wrapped, name, None)
            fallback = f"shutdown_waits_for({type(self.wrapped).__name__})"
            return value if isinstance(value, str) else fallback
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")


async def _guard(coro: "Awaitable[Any]", waiter: "_Waiter") -> None:
    """Run protected work, and hand its outcome to whoever awaits the waiter."""
    future = waiter.future
    try:
        result = await coro
    except Exception as exc:
        if not future.done():
            future.set_exception(exc)
        if waiter.task is None:
            # An eager task factory runs this inside create_task(), before the
            # caller has the waiter. waiter.awaited is known once the caller has yielded.
            future.get_loop().call_soon(_report_unawaited, waiter, exc, asyncio.current_task())
        elif future.cancelled() or not waiter.awaited:
            _report_unawaited(waiter, exc, asyncio.current_task())
    except BaseException:  # The task was cancelled, or SystemExit or KeyboardInterrupt.
        future.cancel()
        raise
    else:
        if not future.done():
            future.set_result(result)
    finally:
        task = waiter.task
        if task is not None:  # Work that ended inside create_task() never entered the set.
            _protected_tasks.discard(task)
        waiter.registry.discard(waiter.guard)


_GUARD_CODE = _guard.__code__


def _report_unawaited(waiter: "_Waiter", exc: Exception, task: "asyncio.Task[Any] | None") -> None:
    """Report the failure of protected work, unless a caller awaits it and gets the error."""
    future = waiter.future
    if waiter.awaited and not future.cancelled():
        return
    if not future.cancelled():
        future.exception()  # Retrieve it, so that this report is the only one.
    # The guard's task goes under "protected_task", not "task". From Python
    # 3.12 the loop runs the handler in the context of the "task" it is given. That
    # context is already entered here, and entering it again would fail.
    future.get_loop().call_exception_handler(
        {
            "message": "shutdown_waits_for() work failed with no caller awaiting it",
            "exception": exc,
            "protected_task": task,
        }
    )


if not TYPE_CHECKING:

    def __getattr__(name: str) -> "Any":
        # Importing typing costs more than the rest of the module, so the alias is made
        # only when code asks for it at run time, such as code that reads annotations.
        if name == "ShutdownCallback":
            from collections.abc import Awaitable
            from typing import Any, Callable, Optional, Union

            function = Callable[[asyncio.AbstractEventLoop], Optional[Awaitable[Any]]]
            alias = Optional[Union[Awaitable[Any], function]]
            globals()[name] = alias
            return alias
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
