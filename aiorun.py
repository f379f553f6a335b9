"""Run an asyncio application forever, and shut it down cleanly.

``run()`` starts an event loop and runs it until a signal (SIGINT or
SIGTERM, SIGINT or SIGBREAK on Windows), ``loop.stop()`` or an unhandled
error stops it, or, if asked, until the main coroutine ends. Then it takes
the application down in order. It cancels every pending task and waits for
them, finalizes async generators, shuts the executor down and closes the
loop. ``shutdown_waits_for()`` marks work that the shutdown waits for
instead of cancelling it.
"""

import asyncio
import collections
import contextlib
import contextvars
import functools
import inspect
import logging
import signal
import sys
import threading
import weakref
from concurrent.futures import Executor

# Not typing.TYPE_CHECKING. From Python 3.14 on, asyncio no longer imports
# typing, and importing aiorun must load no module that asyncio has not.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine, Generator, Iterable, Iterator
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

# The coroutine of every task started by shutdown_waits_for(). The shutdown
# leaves a task alone when ``task.get_coro()`` is in this set. Applications
# may add coroutines of their own, as they could with the original aiorun.
# aiorun only adds, removes and tests for membership, and never iterates
# over the set. Those operations are safe while other threads do the same.
_DO_NOT_CANCEL_COROS: "weakref.WeakSet[Any]" = weakref.WeakSet()

# Protected tasks are held here until they finish. The event loop holds only
# weak references to its tasks, so work that nothing else refers to would be
# garbage-collected half-way. Every thread shares this set, and touches it
# only with single add, discard and membership calls, or whole copies.
_protected_tasks: "set[asyncio.Task[Any]]" = set()

# Protected tasks made while their loop was not running, with the thread that
# made them. The common case is shutdown_waits_for() at module level, before
# run(). If run() then runs another loop in that thread, the work never runs,
# and run() says so as it returns. The keys are weak, so a task that ends by
# itself leaves no trace. Entries are added only outside a running loop,
# which is rare, so the lock costs little.
_made_idle: "weakref.WeakKeyDictionary[asyncio.Task[Any], tuple[int, Awaitable[Any]]]" = (
    weakref.WeakKeyDictionary()
)
_made_idle_lock = threading.Lock()


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

    ``coro``, if given, runs as the main task. The loop keeps running after
    it returns. The shutdown starts on SIGINT or SIGTERM (SIGINT or SIGBREAK
    on Windows), when anything calls ``loop.stop()``, or, with
    ``stop_on_unhandled_errors=True``, when an error reaches the loop's
    exception handler. The shutdown then does these steps in order:

    1. It calls ``shutdown_callback`` and waits for it. The callback is a
       coroutine, or a function of the loop, plain or async.
    2. It cancels every pending task, except work protected by
       ``shutdown_waits_for()``, and waits for all of them, including tasks
       created meanwhile, for at most ``timeout_task_shutdown`` seconds.
    3. It finalizes async generators, shuts the executor down (waiting at
       most ``timeout_executor_shutdown`` seconds, if set) and closes the loop.
    4. It restores the signal handlers, and raises the first error that
       stopped or disturbed the run, if there was one.

    Each cancelled task gets a message that names the cause, such as
    ``"aiorun shutdown: signal SIGTERM"``, in ``CancelledError.args[0]``.

    At most one of ``loop`` (yours: run() neither finalizes nor closes it),
    ``loop_factory`` and ``use_uvloop`` chooses the loop. ``executor``
    becomes the loop's default executor; otherwise run() makes a
    ``ThreadPoolExecutor(executor_workers)`` whose threads are daemon
    threads. ``shutdown_handler(loop)`` replaces what the first signal does
    (``loop.stop()``). With ``exit_on_second_signal=True``, a second signal
    abandons the shutdown, and run() raises ``KeyboardInterrupt`` (SIGINT)
    or ``SystemExit(128 + signum)``.

    ``shutdown_timeout`` bounds the whole shutdown, in seconds from the
    moment it started. When it passes, run() cancels everything still
    pending, protected work included, closes the loop and raises
    ``TimeoutError``, which names what was abandoned.

    With ``stop_on_main_exit=True``, the run ends with ``coro``, as in
    ``asyncio.run()``, and run() returns its result or raises its error. A
    shutdown that starts otherwise cancels the main task alone first, and
    waits for it while the other tasks still run. Without this option,
    run() returns ``None``.

    With ``systemd_notify=True``, run() tells systemd when the service is
    ready and when it stops, and sends watchdog pings from the loop.
    ``warn_blocked_loop`` (seconds) logs a WARNING, with the place where the
    loop's thread is, when the loop has not run for that long.

    Example::

        async def main():
            server = await asyncio.start_server(handle, "127.0.0.1", 8888)
            async with server:
                await server.serve_forever()

        aiorun.run(main())
    """
    logger.debug("Entering run()")
    outcome: _T | None = _Runner(
        coro,
        loop=loop,
        shutdown_handler=shutdown_handler,
        shutdown_callback=shutdown_callback,
        executor_workers=executor_workers,
        executor=executor,
        use_uvloop=use_uvloop,
        stop_on_unhandled_errors=stop_on_unhandled_errors,
        timeout_task_shutdown=timeout_task_shutdown,
        timeout_executor_shutdown=timeout_executor_shutdown,
        exit_on_second_signal=exit_on_second_signal,
        loop_factory=loop_factory,
        shutdown_timeout=shutdown_timeout,
        stop_on_main_exit=stop_on_main_exit,
        systemd_notify=systemd_notify,
        warn_blocked_loop=warn_blocked_loop,
    ).run()
    return outcome


def shutdown_waits_for(
    coro: "Awaitable[_T]", loop: "asyncio.AbstractEventLoop | None" = None
) -> "Coroutine[Any, Any, _T]":
    """Protect ``coro`` from the shutdown's cancellation: the shutdown waits for it.

    The work starts at once in a task of its own. The shutdown of ``run()``
    does not cancel that task, and waits for it (for at most
    ``timeout_task_shutdown`` seconds). You may await what this returns (to
    get the result or the exception), pass it to ``create_task()``, or drop
    it when you need no result.

    A caller that awaits it is cancelled at shutdown like any other task,
    while the protected work carries on to its end. Outside the shutdown it
    behaves like ``asyncio.shield()``. If the work fails after its caller has
    gone, the error goes to the loop's exception handler.

    Example::

        async def save(record):
            await shutdown_waits_for(db.write(record))
    """
    _check_awaitable("shutdown_waits_for", coro)
    if loop is None:
        try:
            loop = asyncio.get_running_loop()
            idle = False
        except RuntimeError:
            try:
                loop = _current_loop()
            except RuntimeError:
                if inspect.iscoroutine(coro):
                    coro.close()  # refused: the error is all the caller sees
                raise
            idle = True
    else:
        idle = not loop.is_running()
    waiter = _Waiter()
    waiter._iter = None
    waiter.awaited = False
    waiter.wrapped = coro
    waiter.future = loop.create_future()
    waiter.guard = guard = _guard(coro, waiter)
    # Into the set as it is now: code written for the original may rebind
    # the name, and the guard must leave the set it entered.
    waiter.registry = registry = _DO_NOT_CANCEL_COROS
    registry.add(guard)
    waiter.task = None  # until the task is known to be pending
    task = loop.create_task(guard)
    # An eager task factory (asyncio.eager_task_factory, Python 3.12 and
    # later) runs the guard's first step inside create_task(). Work that
    # never suspends is over by now, and its guard has cleaned up after
    # itself. The set must not take in a task that nothing would remove.
    if not task.done():
        waiter.task = task
        _protected_tasks.add(task)
    if idle:
        with _made_idle_lock:
            _made_idle[task] = (threading.get_ident(), coro)
    return waiter


# --- the runner ---------------------------------------------------------------


class _Phase:
    """Where a run is, in the order a run goes through the phases.

    A run that is abandoned (a second signal, the deadline) goes to
    ABANDONED from wherever it is, and stays there. Each phase is the
    string that names it, which is what a reader prints. Not an
    enum.Enum: making an Enum class is a large share of what importing
    this module would then cost.
    """

    CREATED = "created"
    SERVING = "serving"  # the loop runs until something stops it
    CALLING_BACK = "running shutdown_callback"
    CANCELLING_MAIN = "cancelling the main task alone"  # stop_on_main_exit
    CANCELLING_TASKS = "cancelling the pending tasks"
    SHUTTING_EXECUTOR = "shutting the executor down"
    FINALIZING = "finalizing async generators"
    QUIETING = "waiting for the tasks started in the loop's last passes"
    COMPLETE = "shutdown complete"
    ABANDONED = "shutdown abandoned"


class _Runner:
    """One call of run(): its arguments, its loop, and how it ends.

    The methods read in the order they run: check the arguments, set up
    (each change registering its undo), serve until stopped, shut down step
    by step, give up if told to, raise the outcome.
    """

    def __init__(
        self,
        coro: "Awaitable[Any] | None",
        *,
        loop: "asyncio.AbstractEventLoop | None",
        shutdown_handler: "Callable[[asyncio.AbstractEventLoop], None] | None",
        shutdown_callback: "ShutdownCallback",
        executor_workers: "int | None",
        executor: "ThreadPoolExecutor | None",
        use_uvloop: bool,
        stop_on_unhandled_errors: bool,
        timeout_task_shutdown: float,
        timeout_executor_shutdown: "float | None",
        exit_on_second_signal: bool,
        loop_factory: "Callable[[], asyncio.AbstractEventLoop] | None",
        shutdown_timeout: "float | None",
        stop_on_main_exit: bool,
        systemd_notify: bool,
        warn_blocked_loop: "float | None",
    ) -> None:
        self._coro = coro
        self._supplied_loop = loop
        self._loop_factory = loop_factory
        self._use_uvloop = use_uvloop
        self._shutdown_handler = shutdown_handler or _stop_loop
        self._shutdown_callback = shutdown_callback
        self._executor_workers = executor_workers
        self._supplied_executor = executor
        self._stop_on_unhandled_errors = stop_on_unhandled_errors
        self._timeout_task_shutdown = timeout_task_shutdown
        self._timeout_executor_shutdown = timeout_executor_shutdown
        self._exit_on_second_signal = exit_on_second_signal
        self._shutdown_timeout = shutdown_timeout
        self._stop_on_main_exit = stop_on_main_exit
        self._systemd_notify = systemd_notify
        self._warn_blocked_loop = warn_blocked_loop
        self._notifier: _Notifier | None = None
        # What the run knows once it has started.
        self._phase = _Phase.CREATED
        self._main: asyncio.Future[Any] | None = None
        self._driver: asyncio.Task[Any] | None = None
        self._error: BaseException | None = None
        self._result: Any = None  # main's, under stop_on_main_exit
        self._signals = 0  # how many arrived
        # The Python-level handler of each signal that the loop delivers to
        # us, as the set-up left it; and the signals that came while another
        # library's handler was in its place, until that library passes them on.
        self._our_handlers: dict[int, _Handler] = {}
        self._theirs: set[int] = set()
        self._cause: str | None = None  # what started the shutdown
        self._started_at = 0.0  # when, on the loop's clock
        # The signal that abandoned the shutdown; None if the deadline did.
        self._abort_signal: int | None = None
        self._abandoned = ""  # what was left running then, for the TimeoutError
        # What the set-up makes; assigned there.
        self._undo: contextlib.ExitStack
        self._loop: asyncio.AbstractEventLoop
        self._executor: Executor
        # What the shutdown keeps track of.
        self._deadline: asyncio.TimerHandle | None = None  # the shutdown_timeout timer
        self._task_deadline = 0.0  # when the current wait for tasks ends
        self._held: set[asyncio.Task[Any]] = set()  # tasks held while main ends alone
        self._main_cancelled = False  # whether main was cancelled alone, first
        self._cancelled_all = False  # whether the step that cancels every task has run
        # Tasks written off. Each is reported once and not waited for again, and on a
        # loop run() made, closed before the loop.
        self._written_off: set[asyncio.Task[Any]] = set()
        # Tasks that another task created during the shutdown. They are clean-up work.
        self._cleanup: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()
        self._arrival_rounds = 0  # rounds in which tasks arrived from outside
        self._arrivals: collections.Counter[str] = collections.Counter()  # their names
        self._executor_thread: threading.Thread | None = None
        self._note_factory: Any = None
        self._finder = _TaskFinder()  # how the shutdown finds the loop's tasks
        self._new_tasks = False  # whether the task factory saw a task since the last look

    def run(self) -> "Any":
        with contextlib.ExitStack() as self._undo:
            self._undo.callback(self._let_go)  # the last undo, whatever happened
            self._check_arguments()
            self._set_up()
            self._serve()
            self._shut_down()
        return self._raise_outcome()

    def _enter(self, phase: str) -> None:
        if self._phase is not _Phase.ABANDONED:  # nothing leaves it
            self._phase = phase
            logger.debug("Run phase: %s", phase)
            self._notify(f"STATUS={phase}")

    def _notify(self, message: str) -> None:
        if self._notifier is not None:
            self._notifier.send(message)

    @property
    def _abandoning(self) -> bool:
        """Whether a second signal or the deadline has given up on the shutdown."""
        return self._phase is _Phase.ABANDONED

    # --- check the arguments, by concern --------------------------------------

    def _check_arguments(self) -> None:
        """Refuse bad input before anything (signals, loops, globals) changes."""
        self._check_coro()
        self._check_loop_options()
        self._check_callables()
        self._check_executor()
        _check_seconds("timeout_task_shutdown", self._timeout_task_shutdown)
        if self._timeout_executor_shutdown is not None:
            _check_seconds("timeout_executor_shutdown", self._timeout_executor_shutdown)
        if self._shutdown_timeout is not None:
            _check_seconds("shutdown_timeout", self._shutdown_timeout)
        if self._warn_blocked_loop is not None:
            _check_seconds("warn_blocked_loop", self._warn_blocked_loop)
            if not self._warn_blocked_loop > 0:
                raise ValueError(
                    f"warn_blocked_loop must be a positive number of seconds, "
                    f"not {self._warn_blocked_loop!r}"
                )
        if not isinstance(self._systemd_notify, bool):
            raise TypeError(f"systemd_notify must be True or False, not {self._systemd_notify!r}")
        if self._use_uvloop:
            try:
                import uvloop  # noqa: F401  (here, before anything changes)
            except ImportError as exc:
                raise ModuleNotFoundError(
                    f"use_uvloop=True needs uvloop, which cannot be imported ({exc}): "
                    f"install it with the extra, pip install 'aiorun[uvloop]' (not on Windows)",
                    name="uvloop",
                ) from exc

    def _check_coro(self) -> None:
        coro = self._coro
        if coro is not None:
            _check_awaitable("run", coro)
        if not isinstance(self._stop_on_main_exit, bool):
            raise TypeError(
                f"stop_on_main_exit must be True or False, not {self._stop_on_main_exit!r}"
            )
        if self._stop_on_main_exit and coro is None:
            raise ValueError(
                "stop_on_main_exit=True ends the run with the main coroutine, and none "
                "was given: pass it, as in run(main(), stop_on_main_exit=True)"
            )

    def _check_loop_options(self) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise RuntimeError(
                "run() cannot be called from a running event loop: await the coroutine "
                "instead, or call run() from synchronous code"
            )
        loop = self._supplied_loop
        chosen = [
            name
            for name, value in (
                ("loop", loop is not None),
                ("loop_factory", self._loop_factory is not None),
                ("use_uvloop", self._use_uvloop),
            )
            if value
        ]
        if len(chosen) > 1:
            raise ValueError(
                f"the {' and '.join(repr(n) for n in chosen)} parameters are mutually "
                f"exclusive (make the loop you want and pass it as 'loop')"
            )
        if self._loop_factory is not None and not callable(self._loop_factory):
            raise TypeError(f"loop_factory must be callable, not {self._loop_factory!r}")
        if loop is not None:
            self._check_supplied_loop(loop)

    def _check_supplied_loop(self, loop: "asyncio.AbstractEventLoop") -> None:
        if not isinstance(loop, asyncio.AbstractEventLoop):
            raise TypeError(f"loop must be an event loop, not {loop!r}")
        if loop.is_closed():
            raise RuntimeError("the loop passed to run() is closed")
        if self._stop_on_unhandled_errors and loop.get_exception_handler() is not None:
            raise ValueError(
                "This loop has a custom exception handler, so the "
                "'stop_on_unhandled_errors' parameter is unavailable: your "
                "handler sees every error (call loop.stop() from it to stop)."
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
                "; keep it for your own jobs, with loop.run_in_executor(executor, ...)"
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
        """Make every change the run needs, each registering its undo as it is made.

        The undo runs in reverse order when run() returns, or at once if a
        later step of the set-up fails.
        """
        undo = self._undo
        loop = self._loop = self._supplied_loop or self._new_loop()
        undo.callback(self._release_protected_work)  # registered first: runs after the close
        if self._supplied_loop is None:
            undo.callback(self._close_loop)
        asyncio.set_event_loop(loop)
        executor = self._supplied_executor
        if executor is None:
            logger.debug("Creating default executor")
            executor = _noting_executor_class()(max_workers=self._executor_workers)
            undo.callback(executor.shutdown, wait=False)  # for a set-up that fails
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
        # Taken last: the blocked-loop watch wraps the handlers.
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
        # Leave no closed loop behind as the current one (as asyncio.run).
        asyncio.set_event_loop(None)

    def _release_protected_work(self) -> None:
        """Let go of protected tasks that cannot end by themselves.

        Those cancelled before their first step (their guard never ran),
        those left pending on a loop now closed, and those of a loop never run.
        """
        loop = self._loop
        # A copy in one call: safe while other threads add and discard.
        for task in list(_protected_tasks):
            if task.done() or (loop.is_closed() and task.get_loop() is loop):
                _protected_tasks.discard(task)
        lost = _take_work_never_run(loop)
        if not lost:
            return
        logger.warning(
            "Work protected by shutdown_waits_for() never ran (%s: %s): it was given "
            "to an event loop that was not running, and run() ran another one; call "
            "shutdown_waits_for() from a coroutine that run() runs",
            _plural(len(lost), "task"),
            _first_few(f"{_work_name(wrapped)}()" for _, wrapped in lost),
        )
        for task, wrapped in lost:
            _protected_tasks.discard(task)
            _drop_unstarted(task, wrapped)

    def _let_go(self) -> None:
        """Let go of everything of the run: nothing of it stays reachable."""
        if self._main is None and inspect.iscoroutine(self._coro):
            # Never scheduled (refused, or the set-up failed): closed, so that
            # the error is all the caller sees, not "coroutine ... was never awaited".
            self._coro.close()
        if self._main is not None:  # a main task left pending must not hold the runner
            self._main.remove_done_callback(self._on_main_done_stop)
        self._main = self._driver = self._coro = self._note_factory = None
        self._finder = _TaskFinder()
        self._written_off.clear()
        self._held.clear()

    # --- serve until stopped --------------------------------------------------

    def _serve(self) -> None:
        self._enter(_Phase.SERVING)
        if self._coro is not None:
            self._main = asyncio.ensure_future(self._coro, loop=self._loop)
            if self._stop_on_main_exit:
                self._main.add_done_callback(self._on_main_done_stop)
            else:
                self._main.add_done_callback(self._on_main_done_report)
                if self._notifier is not None:
                    self._main.add_done_callback(self._notifier.on_main_done)
        elif self._notifier is not None:
            self._loop.call_soon(self._notifier.send, "READY=1")
        raised = self._run_loop()
        self._note_cause("loop.stop()" if raised is None else f"{raised} raised in a task")

    def _run_loop(self) -> "str | None":
        """Run the loop until it stops; record what it raised, and return its name."""
        try:
            self._loop.run_forever()
        except BaseException as exc:  # SystemExit or KeyboardInterrupt from a task
            self._record_error(exc)
            return type(exc).__name__
        return None

    def _note_cause(self, cause: str) -> None:
        """Remember what started the shutdown, and when: the first one counts."""
        if self._cause is None:
            self._cause = cause
            self._started_at = self._loop.time()

    def _on_main_done_report(self, main: "asyncio.Future[Any]") -> None:
        """Without stop_on_main_exit: report an error of main() at once; the loop keeps running."""
        if main.cancelled():
            return
        exc = main.exception()
        if not isinstance(exc, Exception):
            return  # None, or SystemExit and KeyboardInterrupt, which end run_forever().
        # Retrieved now, so that the error reaches the exception handler at
        # once, not whenever the task happens to be collected. In asyncio's
        # own words and keys, as the original's users saw it (when its main
        # task was freed) and as their log alerts expect.
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
        """Under stop_on_main_exit: keep main's outcome; if it ended by itself, stop."""
        if main.cancelled():
            cause = "main() was cancelled"
        elif (exc := main.exception()) is None:
            cause = "main() returned"
            self._result = main.result()
        else:
            cause = f"main() raised {type(exc).__name__}"
            self._record_error(exc, _MAIN_ERROR_ALSO)
            if isinstance(exc, (SystemExit, KeyboardInterrupt)):
                # They end run_forever() by themselves, and say so; uvloop
                # runs this callback before that.
                return
        if self._phase is _Phase.SERVING:
            logger.info("%s: stopping the loop", cause)
            self._note_cause(cause)
            self._loop.stop()

    def _on_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        # The loop sees every signal through its wakeup fd, even while another
        # library's handler, installed with signal.signal(), has taken ours
        # out (uvicorn's serve() does so while it serves). Such a signal is
        # theirs to act on, and they may deliver it again once ours is back.
        # On Windows there is no add_signal_handler(), and a handler installed
        # with signal.signal() simply replaces ours. Every signal that reaches
        # us there is ours, so _our_handlers stays empty. A signal passed on
        # after the shutdown began cannot be told from a new one, and counts.
        if signum in self._our_handlers and signal.getsignal(signum) != self._our_handlers[signum]:
            logger.debug(
                "Got %s while another handler was installed for it, and left it alone", name
            )
            self._theirs.add(signum)
            return
        if signum in self._theirs:  # passed on to us once ours was back
            self._theirs.discard(signum)
            # A main that has ended under stop_on_main_exit is ending the run,
            # even if its done callback has not run yet (uvloop delivers the
            # signal first).
            main_ended = self._stop_on_main_exit and self._main is not None and self._main.done()
            if self._phase is not _Phase.SERVING or main_ended:
                logger.debug(
                    "Got %s back from the handler that took it, while the run is already "
                    "ending, so it changes nothing",
                    name,
                )
                return
        self._signals += 1
        if self._signals == 1 and self._phase is _Phase.SERVING:
            logger.debug("Got signal %s", name)
            self._note_cause(f"signal {name}")
            self._shutdown_handler(self._loop)
        elif self._exit_on_second_signal and self._signals >= 2:
            self._abandon(signum)
        elif self._exit_on_second_signal:
            logger.warning(
                "Got %s during the shutdown and ignored it; the next signal ends the run "
                "(exit_on_second_signal=True)",
                name,
            )
        else:
            logger.warning(
                "Got %s during the shutdown and ignored it; "
                "run(exit_on_second_signal=True) makes a second signal end the run",
                name,
            )

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
        """Keep the first error, for run() to raise; log any later one as ``also``."""
        if self._error is None:
            self._error = exc
        elif exc is not self._error:  # the same one, come by two ways
            logger.error(also, exc_info=exc)

    # --- shut down, step by step ----------------------------------------------

    def _shut_down(self) -> None:
        """Take the application down in order, one step after another.

        Every task is cancelled, except protected work, and every task is
        awaited. A task that a cancelled task starts in its clean-up is
        awaited too. A task that arrives from outside during the shutdown (a
        connection that a server left listening accepts) is cancelled in
        turn, and after a few such rounds it is written off: the shutdown
        never depends on the clients going away. No wait lasts longer than
        ``timeout_task_shutdown``, and the whole sequence no longer than
        ``shutdown_timeout``. On a loop that run() made, no task is left
        pending when the loop is closed. A second signal or the deadline
        abandons the steps that remain.
        """
        self._start_shutdown()  # Tell systemd, start the deadline, note new tasks.
        self._call_shutdown_callback()  # The application's own clean-up comes first.
        self._run_step(self._cancel_main_first)  # Under stop_on_main_exit, main() ends first.
        self._run_step(self._cancel_pending_tasks)  # Cancel the other tasks, and wait for them.
        self._run_step(self._shutdown_asyncgens)  # Finalize async generators, as asyncio.run().
        self._run_step(self._shutdown_executor)  # Wait for the executor's jobs to end.
        self._wait_for_last_pass_tasks()  # Deal with tasks started as the loop stopped.
        self._stop_deadline()  # Nothing is abandoned after this point.
        if self._abandoning:
            self._cancel_everything_left()  # After a second signal or the deadline.
        self._close_written_off()  # On our own loop, close the tasks no longer waited for.
        self._warn_of_arrivals()  # Say what kept arriving, and how to prevent it.
        self._enter(_Phase.COMPLETE)

    def _start_shutdown(self) -> None:
        if self._notifier is not None:
            self._notifier.stopping(self._shutdown_timeout, self._started_at)
        self._enter(_Phase.CALLING_BACK)
        logger.info("Entering shutdown phase.")
        if self._shutdown_timeout is not None:
            when = self._started_at + self._shutdown_timeout
            self._deadline = self._loop.call_at(when, self._abandon)
        self._watch_new_tasks()

    def _call_shutdown_callback(self) -> None:
        """Call the callback, outside the running loop, then await what it returned."""
        callback = self._shutdown_callback
        if callback is None:
            return
        if self._abandoning:
            if inspect.iscoroutine(callback):
                callback.close()  # It will never run, so close it to avoid "never awaited".
            return
        logger.info("Executing provided shutdown_callback.")
        if not inspect.isawaitable(callback):
            # Called outside the running loop, as it always was, so that it
            # may still use loop.run_until_complete().
            try:
                callback = callback(self._loop)
            except BaseException as exc:
                self._record_error(exc, _CALLBACK_ERROR_ALSO)
                return
            if not inspect.isawaitable(callback):
                return
        self._run_step(self._await_callback, callback)

    async def _await_callback(self, callback: "Awaitable[Any]") -> None:
        try:
            await callback
        except BaseException as exc:
            if self._abandoning:
                raise
            self._record_error(exc, _CALLBACK_ERROR_ALSO)

    async def _cancel_main_first(self) -> None:
        """Under stop_on_main_exit, cancel the main task alone and wait for it.

        As asyncio.Runner does on Ctrl-C: a main() that holds a TaskGroup (or
        ``async with server``) cancels and awaits its own children, in its
        own order, while every other task still runs.
        """
        main = self._main
        if not self._stop_on_main_exit or not isinstance(main, asyncio.Task) or main.done():
            return
        # The loop refers to tasks only weakly. Tasks that only main()'s frame
        # referred to (workers on a queue it made, say) would be collected,
        # still pending, once main() has returned. Hold them until the next look.
        self._held = self._finder.find(self._loop)
        self._enter(_Phase.CANCELLING_MAIN)
        logger.info("Cancelling the main task.")
        self._task_deadline = self._loop.time() + self._timeout_task_shutdown
        if self._cancel([main]):
            return  # The await chain is too deep to cancel alone. It goes with the rest.
        self._main_cancelled = True
        if not await self._wait_for_main(main):
            self._write_off([main], self._stuck_report)

    async def _wait_for_main(self, main: "asyncio.Task[Any]") -> bool:
        """Wait for main to end; return False if the deadline passed first.

        Since Python 3.12, ``Server.wait_closed()`` waits until every
        connection has closed (CPython gh-79033, gh-104344). A main() that
        leaves ``async with server`` waits there for connection handlers that
        nothing will cancel while main() is waited for alone. Once main() is
        seen waiting there, the other tasks are cancelled at once, and main()
        is waited for with them.
        """
        loop = self._loop
        while not main.done():
            remaining = self._task_deadline - loop.time()
            if remaining <= 0:
                return False
            await asyncio.wait((main,), timeout=min(remaining, _MAIN_LOOK_PERIOD))
            if _waits_for_server_close(main):
                logger.info("main() waits for a server's connections to close: cancelling them")
                break
        return True

    async def _cancel_pending_tasks(self) -> None:
        """Cancel every pending task but protected work; wait for them all, then for new ones."""
        self._enter(_Phase.CANCELLING_TASKS)
        # A fresh look, even after main's wait: a task made meanwhile without
        # the task factory (by asyncio.Task() itself) is found only this way.
        tasks = self._look()
        self._held.clear()  # The look has them all.
        self._cancelled_all = True
        self._task_deadline = self._loop.time() + self._timeout_task_shutdown
        if tasks:
            logger.info("Cancelling pending tasks.")
            self._notify(f"STATUS=waiting for {_plural(len(tasks), 'task')} to end")
            main_first = self._main_cancelled and tasks[0] is self._main
            failed = self._cancel(tasks[1:] if main_first else tasks)
            logger.info("Running pending tasks till complete")
            if not await self._wait_for_cancelled(tasks, failed):
                return
            del tasks  # Let each task go as soon as it is done, so asyncio reports its errors now.
        await self._wait_for_new_tasks()

    async def _shutdown_asyncgens(self) -> None:
        """On a loop run() made, finalize async generators, before the executor goes.

        As in asyncio.run(): a generator's ``finally:`` may still need the
        executor, through ``asyncio.to_thread()`` for example.
        """
        if not self._owns_loop:
            return
        self._enter(_Phase.FINALIZING)
        logger.info("Shutting down async generators")
        await self._loop.shutdown_asyncgens()
        await self._wait_for_new_tasks()

    async def _shutdown_executor(self) -> None:
        """Shut the executor down in a thread, so that the loop keeps running."""
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
                try:
                    loop.call_soon_threadsafe(done.set_result, None)
                except RuntimeError:  # The loop is closed, and nobody waits any more.
                    pass

        thread = self._executor_thread = threading.Thread(
            target=shut_down, name="aiorun-executor-shutdown", daemon=True
        )
        thread.start()
        finished, _ = await asyncio.wait({done}, timeout=self._timeout_executor_shutdown)
        if finished:
            thread.join()  # It only has to end now. Leave no thread behind.
        else:
            logger.warning(
                "The executor did not shut down within %s seconds: abandoning its remaining jobs",
                self._timeout_executor_shutdown,
            )
            jobs = self._running_jobs()
            executor.shutdown(wait=False, cancel_futures=True)
            if jobs is not None:
                self._warn_of_running_jobs(jobs)
        await self._wait_for_new_tasks()

    def _wait_for_last_pass_tasks(self) -> None:
        """Deal with the tasks that the loop's last passes started, until a look finds none.

        The pass that stops the loop still runs its I/O callbacks, so a
        server left listening can accept a connection after the last step
        has looked for new tasks. Only a real look finds every such task:
        aiohttp starts its handlers with ``asyncio.Task(..., eager_start=True)``,
        past the task factory.
        """
        while self._cancelled_all and not self._abandoning:
            tasks = self._look()
            if not tasks:
                return
            self._enter(_Phase.QUIETING)
            if self._arrival_rounds >= _MOST_ARRIVAL_ROUNDS:
                self._cancel(self._note_arrivals(tasks))
                self._write_off(tasks)
                return
            self._drive(self._wait_for_round(tasks))

    def _stop_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _cancel_everything_left(self) -> None:
        """Once the shutdown is abandoned, cancel everything left and say what it was."""
        jobs = self._running_jobs()
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._written_off.clear()  # They are cancelled again, with everything else.
        leftover = self._look()
        self._cancel(leftover, spare_protected=False)
        # One pass of the loop delivers the cancellations; nothing is awaited.
        self._loop.call_soon(self._loop.stop)
        self._run_loop()
        groups = _group_tasks(leftover)
        still_running = [still for group in groups if (still := [t for t in group if not t.done()])]
        still_running.sort(key=len, reverse=True)
        self._write_off([task for group in still_running for task in group], self._abandoned_report)
        abandoned = []
        if leftover:
            abandoned.append(f"{_plural(len(leftover), 'pending task')} ({_name_groups(groups)})")
        if jobs is not None:
            self._warn_of_running_jobs(jobs)
            abandoned.append(f"executor jobs still running ({jobs})")
        self._abandoned = "; ".join(abandoned)

    def _close_written_off(self) -> None:
        """On a loop run() made, close the coroutines of the tasks written off, in a last pass.

        Their clean-up (``finally:``, a Queue.get() leaving the queue) runs
        now, while the loop exists, not when they are collected after run()
        has returned, with one "Exception ignored" traceback each. The close
        happens in a pass of the running loop: a clean-up that awaits (or
        swallows GeneratorExit and awaits again) suspends there, and close()
        says so. Without a running loop such a clean-up would fail, and one
        that swallowed its error would spin forever. The tasks that this pass
        starts never run: they are closed too.
        """
        if not self._owns_loop:
            return
        if self._abandoning or self._arrival_rounds >= _MOST_ARRIVAL_ROUNDS:
            # Whatever the last passes started will never run.
            self._written_off.update(self._look())
        if not self._written_off:
            return
        closed: list[asyncio.Task[Any]] = []

        def close_written_off() -> None:
            closed.extend(self._close_tasks(sorted(self._written_off, key=id)))

        loop = self._loop
        loop.call_soon(close_written_off)
        loop.stop()  # Stopped before it runs, the loop runs one pass (uvloop too).
        self._run_loop()
        for task in closed:
            if task.done() and not task.cancelled():
                # A step queued before the close ran after it (uvloop runs due
                # timers before the callbacks of a pass). It failed with
                # "cannot reuse already awaited coroutine", an error of our
                # making, which nobody should see.
                task.exception()
        self._close_tasks(self._pending_tasks())  # What that pass started.

    def _warn_of_arrivals(self) -> None:
        if self._arrivals:
            logger.warning(
                "%s started after the shutdown had cancelled the others (%s); they were "
                "cancelled too. Close listening servers in shutdown_callback so that no new "
                "work arrives during the shutdown",
                _plural(sum(self._arrivals.values()), "task was", "tasks were"),
                _counted(self._arrivals),
            )

    # --- the shutdown's machinery ---------------------------------------------

    @property
    def _owns_loop(self) -> bool:
        """Whether run() made the loop, and so finalizes and closes it."""
        return self._supplied_loop is None

    def _run_step(self, step: "Callable[..., Coroutine[Any, Any, object]]", *args: "Any") -> None:
        """Run one step of the shutdown as a task on the loop, unless the shutdown is abandoned."""
        if not self._abandoning:
            self._drive(step(*args))

    def _drive(self, steps: "Coroutine[Any, Any, object]") -> None:
        """Run the loop until ``steps``, run as the driver task, are over."""
        loop = self._loop
        new_tasks = self._new_tasks
        driver = self._driver = loop.create_task(steps)
        self._new_tasks = new_tasks  # The driver is not a task to wait for.
        driver.add_done_callback(lambda _: loop.stop())
        # A task raising SystemExit, or user code calling loop.stop(), ends
        # run_forever() early: drive the loop again until the steps are over.
        while not driver.done():
            if self._run_loop() is None and not driver.done():
                logger.warning("loop.stop() called during the shutdown: ignored")
        self._driver = None
        failure = None if driver.cancelled() else driver.exception()
        if failure is not None:  # This is a fault of aiorun itself. Never hide it.
            self._record_error(failure)

    def _watch_new_tasks(self) -> None:
        """From now on, note through the task factory when a task is created, and by whom.

        The note is only a flag, not a list: the tasks themselves are found
        with all_tasks(), which costs a pass over every task alive, and so is
        asked again only when something new may be pending. A task created
        while another task runs is clean-up work (a ``finally:`` that starts
        a flush, say); one created from a plain callback arrived from outside.
        """
        loop = self._loop
        factory = loop.get_task_factory()
        cleanup = self._cleanup

        def note(loop: "asyncio.AbstractEventLoop", coro: "Any", **kwargs: "Any") -> "Any":
            self._new_tasks = True
            # The loop's hook for a collected async generator closes it in a
            # task started from a callback. That is clean-up work too.
            by_task = (
                asyncio.current_task(loop) is not None
                or type(coro).__name__ == "async_generator_athrow"
            )
            task: Any = (
                asyncio.Task(coro, loop=loop, **kwargs)
                if factory is None
                else factory(loop, coro, **kwargs)
            )
            if by_task:
                cleanup.add(task)
            return task

        self._note_factory = note
        loop.set_task_factory(note)
        self._undo.callback(loop.set_task_factory, factory)

    def _may_have_new_tasks(self) -> bool:
        """Whether a task may have been created since the last look."""
        # If something replaced the factory, nothing can be known: look.
        return self._new_tasks or self._loop.get_task_factory() is not self._note_factory

    def _look(self) -> "list[asyncio.Task[Any]]":
        """Find the pending tasks afresh; the note of new tasks starts again from here."""
        self._new_tasks = False
        return self._pending_tasks()

    def _pending_tasks(self) -> "list[asyncio.Task[Any]]":
        """The loop's pending tasks, but the driver and those written off, by address.

        In that order the tasks are visited (here, by the loop as they unwind,
        and while waiting) in the order they lie in memory, which is much
        kinder to the processor's caches than the order of their hashes.
        """
        found = self._finder.find(self._loop)
        found.discard(self._driver)
        found -= self._written_off
        main = self._main
        if main is None or main not in found:
            return sorted(found, key=id)
        # The main task comes first: it is the application's root, and its
        # clean-up (stopping a server, say) must begin before the tasks it
        # started see their cancellation. A gRPC server whose handlers end
        # their RPCs while the server is still up can crash at exit.
        found.discard(main)
        ordered = sorted(found, key=id)
        ordered.insert(0, main)
        return ordered

    def _cancel(
        self, tasks: "list[asyncio.Task[Any]]", spare_protected: bool = True
    ) -> "list[asyncio.Task[Any]]":
        """Cancel the tasks, but protected work; return those that could not be cancelled.

        Cancelling a task recurses down the chain of tasks it awaits through
        gather(), and a chain some hundreds deep raises RecursionError
        (CPython #80637). The tasks further down are cancelled all the same,
        by their own turn in the list; once they have ended, the chain is
        shorter, and the caller tries the rest again.
        """
        message = self._cancel_message()
        protected = _DO_NOT_CANCEL_COROS if spare_protected else None
        failed = []
        for task in tasks:
            if protected is not None and (
                task in _protected_tasks or (protected and task.get_coro() in protected)
            ):
                continue
            try:
                task.cancel(message)
            except RecursionError:
                failed.append(task)
        return failed

    async def _wait_for_cancelled(
        self, tasks: "list[asyncio.Task[Any]]", failed: "list[asyncio.Task[Any]]"
    ) -> bool:
        """Wait for the cancelled tasks, and cancel again those that could not be cancelled.

        Return whether all of them ended before the deadline.
        """
        while failed:
            left = set(failed)
            if not await self._wait_until_done([t for t in tasks if t not in left]):
                break
            retried = self._cancel(failed)
            if len(retried) == len(failed):
                break  # No progress. They are waited for, and reported if they stay.
            failed = retried
        if await self._wait_until_done(tasks):
            return True
        self._write_off(self._pending_tasks(), self._stuck_report)
        return False

    async def _wait_for_new_tasks(self) -> None:
        """Wait for the tasks created since the last look, round after round, until none is new."""
        while self._may_have_new_tasks() and await self._wait_for_round(self._look()):
            pass

    async def _wait_for_round(self, tasks: "list[asyncio.Task[Any]]") -> bool:
        """Wait for one round of new tasks; return whether to look for more.

        Clean-up work and protected work are awaited as they are. The tasks
        that arrived from outside get their first step (asyncio's own
        connection tasks close their socket only from there), and are then
        cancelled. After a few rounds with such arrivals, later arrivals are
        written off and no longer looked for.
        """
        if not tasks:
            return False
        arrived = self._note_arrivals(tasks)
        if not arrived:
            return await self._wait_for_cancelled(tasks, [])
        self._arrival_rounds += 1
        await asyncio.sleep(0)  # Their first step.
        failed = self._cancel(arrived)
        if self._arrival_rounds >= _MOST_ARRIVAL_ROUNDS:
            self._write_off(arrived)
            arrived_now = set(arrived)
            tasks = [task for task in tasks if task not in arrived_now]
            del arrived, arrived_now
            await self._wait_for_cancelled(tasks, [])
            return False
        del arrived
        return await self._wait_for_cancelled(tasks, failed)

    def _arrived_from_outside(self, task: "asyncio.Task[Any]") -> bool:
        """Whether the task was started from outside any task: not clean-up, not protected.

        A task that the note never saw was made past the task factory (as
        aiohttp makes its handlers), and counts as arrived. If the application
        replaced the factory during the shutdown, nothing can be known, and
        every task counts as clean-up, bounded by timeout_task_shutdown.
        """
        if self._loop.get_task_factory() is not self._note_factory:
            return False
        return not (
            task in self._cleanup
            or task in _protected_tasks
            or (_DO_NOT_CANCEL_COROS and task.get_coro() in _DO_NOT_CANCEL_COROS)
        )

    def _note_arrivals(self, tasks: "list[asyncio.Task[Any]]") -> "list[asyncio.Task[Any]]":
        """The tasks that arrived from outside, counted by name for the warning."""
        arrived = [task for task in tasks if self._arrived_from_outside(task)]
        self._arrivals.update(f"{_coro_name(task)}()" for task in arrived)
        return arrived

    async def _wait_until_done(self, tasks: "list[asyncio.Task[Any]]") -> bool:
        """Whether ``tasks`` all ended before the deadline.

        No done callback per task, as ``asyncio.wait()`` on them all would add
        (and remove): they are visited in the order they were cancelled, the
        order their cancellations run in, and only one not yet done is waited
        for at a time. Once the loop has run a single pass most are done, and
        a visit is a ``done()`` call.
        """
        loop = self._loop
        for task in tasks:
            if not task.done():
                remaining = self._task_deadline - loop.time()
                if remaining > 0:
                    await asyncio.wait((task,), timeout=remaining)
                if not task.done():
                    return False
        return True

    def _write_off(
        self,
        tasks: "list[asyncio.Task[Any]]",
        report: "Callable[[list[list[asyncio.Task[Any]]]], None] | None" = None,
    ) -> None:
        """Stop waiting for the tasks: report them once, and on our loop close them before it."""
        if not tasks:
            return
        if report is not None:
            report(_group_tasks(tasks))
        self._written_off.update(tasks)
        for task in tasks:
            _mute_destroy_pending(task)

    def _stuck_report(self, groups: "list[list[asyncio.Task[Any]]]") -> None:
        logger.warning(
            "During shutdown, the following tasks refused to exit after %s seconds: %s",
            self._timeout_task_shutdown,
            _describe_groups(groups),
        )

    def _abandoned_report(self, groups: "list[list[asyncio.Task[Any]]]") -> None:
        logger.warning(
            "Abandoned %s still running: %s",
            _plural(sum(map(len, groups)), "task that was", "tasks that were"),
            _describe_groups(groups),
        )

    def _close_tasks(self, tasks: "list[asyncio.Task[Any]]") -> "list[asyncio.Task[Any]]":
        """Close the tasks' coroutines; report what their clean-ups raise, once.

        Return the tasks whose coroutine is closed now.
        """
        errors: collections.Counter[str] = collections.Counter()
        closed = []
        for task in tasks:
            coro: Any = task.get_coro()
            if task.done() or coro is None:
                continue
            _mute_destroy_pending(task)
            name = _coro_name(task)
            try:
                coro.close()
            except BaseException as exc:
                key = f"{type(exc).__name__}: {str(exc)[:100]} (in {name}())"
                if key not in errors and len(errors) >= _MOST_KINDS:
                    key = "other errors"
                errors[key] += 1
            else:
                closed.append(task)
        if errors:
            logger.warning(
                "Closing the tasks written off before the loop, the clean-up of %s raised: %s",
                _plural(sum(errors.values()), "task"),
                _counted(errors),
            )
        return closed

    def _cancel_message(self) -> str:
        """What each task the shutdown cancels is told: ``CancelledError.args[0]``."""
        if not self._abandoning:
            return f"aiorun shutdown: {self._cause or 'loop.stop()'}"
        if self._abort_signal is not None:
            return f"aiorun shutdown abandoned: second {signal.Signals(self._abort_signal).name}"
        return f"aiorun shutdown abandoned: shutdown_timeout={self._shutdown_timeout} passed"

    # --- abandon the shutdown -------------------------------------------------

    def _abandon(self, signum: "int | None" = None) -> None:
        """Abandon the shutdown: on a second signal ``signum``, or at the deadline."""
        if self._phase in (_Phase.ABANDONED, _Phase.COMPLETE):
            return
        if signum is None:
            logger.warning(
                "The shutdown did not complete within %s seconds (shutdown_timeout): abandoning it",
                self._shutdown_timeout,
            )
        else:
            logger.warning("Got %s again: abandoning the shutdown", signal.Signals(signum).name)
        self._abort_signal = signum
        self._enter(_Phase.ABANDONED)
        if self._driver is not None:
            self._driver.cancel()
        else:  # Serving, or in a plain shutdown_callback. End its run_until_complete().
            self._loop.stop()

    def _running_jobs(self) -> "str | None":
        """The executor's jobs still running, named, or None if there are none.

        Known for the executor run() makes, which notes what its threads run.
        Of one the application supplied only this much can be known: whether
        its shutdown, once begun, is still waiting for something.
        """
        running = getattr(self._executor, "aiorun_running_jobs", None)
        if running is not None:
            jobs = list(running.values())
            return _describe_jobs(jobs) if jobs else None
        thread = self._executor_thread
        if thread is not None and thread.is_alive():
            return "run() cannot see which jobs an executor you passed is running"
        return None

    def _warn_of_running_jobs(self, jobs: str) -> None:
        """Say that the jobs go on running, and whether they hold the process's exit."""
        if self._supplied_executor is None:
            # The threads of the executor run() makes are daemon threads.
            logger.warning(
                "Executor jobs are still running (%s). Their threads cannot be stopped, "
                "but they no longer keep the process from exiting.",
                jobs,
            )
        else:
            # concurrent.futures joins its threads at exit (CPython #111358).
            logger.warning(
                "Jobs of the executor passed to run() are still running (%s). Their threads "
                "cannot be stopped, and the interpreter will wait for them when it exits.",
                jobs,
            )

    # --- the outcome ----------------------------------------------------------

    def _raise_outcome(self) -> "Any":
        """Raise what ended or disturbed the run; else return main's result (or None)."""
        logger.info("Leaving. Bye!")
        error, self._error = self._error, None  # no cycle through this object
        result, self._result = self._result, None
        if self._abandoning:
            if self._abort_signal == signal.SIGINT:
                raise KeyboardInterrupt from error
            if self._abort_signal is not None:
                raise SystemExit(128 + self._abort_signal) from error
            raise TimeoutError(
                f"The shutdown did not complete within {self._shutdown_timeout} seconds "
                f"(shutdown_timeout); abandoned: {self._abandoned or 'nothing left running'}"
            ) from error
        if error is not None:
            logger.info("Reraising unhandled exception")
            raise error
        return result


_CALLBACK_ERROR_ALSO = (
    "The shutdown_callback() raised an error, but another error is already "
    "pending; it is only logged here"
)
_MAIN_ERROR_ALSO = (
    "main() raised an error, but another error is already pending; it is only logged here"
)


def _check_awaitable(caller: str, coro: object) -> None:
    if inspect.iscoroutine(coro) or inspect.isawaitable(coro):  # the first is cheap
        return
    if inspect.iscoroutinefunction(coro):
        name = getattr(coro, "__name__", "main")
        raise TypeError(
            f"{caller}() takes a coroutine object, not the coroutine function "
            f"{name!r}: call it, as in {caller}({name}())"
        )
    raise TypeError(f"{caller}() takes a coroutine or awaitable, not {coro!r}")


def _check_seconds(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {value!r}")
    if value != value:
        raise ValueError(f"{name} must be a number of seconds, not NaN")
    if value < 0:
        raise ValueError(f"{name} must not be negative, not {value!r}")


def _stop_loop(loop: "asyncio.AbstractEventLoop") -> None:
    """The default shutdown_handler."""
    logger.debug("Entering shutdown handler")
    logger.warning("Stopping the loop")
    loop.stop()


# Up to Python 3.13, asyncio.all_tasks() copies one registry shared by every
# thread's loops in Python code, one bytecode at a time. Each time another
# thread creates or ends a task meanwhile, the copy fails, and after 1,000
# failures all_tasks() gives up with "RuntimeError: Set changed size during
# iteration" (CPython gh-80788, bpo-36607). _TaskFinder avoids that copy, but
# where it cannot read the registry, all_tasks() is asked. While it runs, the
# switch interval is raised so that no other thread runs in the middle of the
# copy, and it is put back as soon as the copy is done. Several runs in
# several threads may overlap, so the first one in saves the interval and the
# last one out puts it back. From 3.14 on, each thread keeps its own tasks
# (CPython gh-128002), the race is gone, and the switch interval is left alone.
_SWITCH_INTERVAL_FOR_COPY = 0.1  # seconds: longer than a copy takes
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
    """Finds one loop's pending tasks, look after look, as ``asyncio.all_tasks(loop)`` would.

    Up to Python 3.13, asyncio keeps the tasks of every thread in one
    registry, and all_tasks() walks all of it in Python code. When another
    thread's loop holds 100,000 tasks, each look of the shutdown costs a walk
    over all of them. So the finder reads the registry itself. The first look
    walks a copy of it, made by one call in C that no other thread can
    interrupt. Each later look walks only the tasks that the previous look
    found and the tasks registered since then, which one set difference in C
    finds. The finder keeps weak references only, so it holds no task.
    """

    def __init__(self) -> None:
        self._seen: set[Any] | None = None  # the registry's references at the last look
        self._found: list[weakref.ref[asyncio.Task[Any]]] = []

    def find(self, loop: "asyncio.AbstractEventLoop") -> "set[asyncio.Task[Any]]":
        references = _task_registry()
        if references is None:
            return _all_tasks(loop)
        # The loop's own tasks cannot be in their first, eager step now: a
        # look runs in the shutdown's driver task or while the loop is not
        # running. So asyncio's set of eager tasks (3.12 and later) can be left out.
        now = references.copy()
        if self._seen is None:
            candidates = [reference() for reference in now]
        else:
            candidates = [reference() for reference in now - self._seen]
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
    """The set of weak references behind asyncio's registry of every thread's tasks.

    A private detail of asyncio, read here only, and only up to Python 3.13
    (from 3.14 on, each thread keeps its own tasks, CPython gh-128002). None
    when the registry is not what this expects, or when a library has
    replaced asyncio.all_tasks() to track tasks its own way: all_tasks() is
    then asked at each look.
    """
    if sys.version_info >= (3, 14) or asyncio.all_tasks is not _STOCK_ALL_TASKS:
        return None
    name = "_scheduled_tasks" if sys.version_info >= (3, 12) else "_all_tasks"
    registry = getattr(asyncio.tasks, name, None)
    references = getattr(registry, "data", None)
    if isinstance(registry, weakref.WeakSet) and isinstance(references, set):
        return references
    return None


_STOCK_ALL_TASKS = asyncio.all_tasks


def _waits_for_server_close(task: "asyncio.Task[Any]") -> bool:
    """Whether the task waits in asyncio's ``Server.wait_closed()``, anywhere in its await chain."""
    coro: Any = task.get_coro()
    for _ in range(100):  # A chain of awaits, not a cycle.
        if coro is None:
            return False
        if getattr(coro, "cr_code", None) is _SERVER_WAIT_CLOSED_CODE:
            return True
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return False


_SERVER_WAIT_CLOSED_CODE = asyncio.Server.wait_closed.__code__
_MAIN_LOOK_PERIOD = 0.05  # seconds between looks at where main() waits, while it ends alone


def _mute_destroy_pending(task: "asyncio.Task[Any]") -> None:
    """Silence "Task was destroyed but it is pending!" for a task reported already.

    No public call does this: it is the task's private flag, present on
    asyncio's own tasks (Python and C) and absent from other task types,
    which then report twice.
    """
    try:
        task._log_destroy_pending = False  # type: ignore[attr-defined]
    except AttributeError:
        pass


def _take_work_never_run(
    loop: "asyncio.AbstractEventLoop",
) -> "list[tuple[asyncio.Task[Any], Awaitable[Any]]]":
    """Take out protected work of this thread's given to a loop other than ``loop``, never run.

    Work protected before run() (at module level, say) goes to the thread's
    current loop of the moment, which run() replaces and never runs.
    """
    me = threading.get_ident()
    with _made_idle_lock:
        lost = [
            (task, wrapped)
            for task, (thread, wrapped) in list(_made_idle.items())
            if thread == me
            and task.get_loop() is not loop
            and not task.done()
            and not task.get_loop().is_running()
        ]
        for task, _ in lost:
            del _made_idle[task]
    return lost


def _drop_unstarted(task: "asyncio.Task[Any]", wrapped: "Awaitable[Any]") -> None:
    """End a protected task that never started, reported already, in silence.

    Cancelled, should its loop ever run it; its coroutines closed, so that
    neither is "never awaited"; muted, so that its destruction says nothing.
    """
    task.cancel("aiorun: the loop of this shutdown_waits_for() work was never run")
    guard = task.get_coro()
    if inspect.iscoroutine(guard):
        guard.close()
    if inspect.iscoroutine(wrapped) and inspect.getcoroutinestate(wrapped) == "CORO_CREATED":
        wrapped.close()
    _mute_destroy_pending(task)


# --- signal capture -----------------------------------------------------------


@contextlib.contextmanager
def _capture_signals(
    loop: "asyncio.AbstractEventLoop", on_signal: "Callable[[int], None]"
) -> "Iterator[list[signal.Signals]]":
    """Route SIGINT and SIGTERM (SIGINT and SIGBREAK on Windows) to ``on_signal(signum)``.

    ``on_signal`` runs on the loop, in its own time. A signal that is
    ignored (SIG_IGN) stays ignored. Yields the signals that go through
    the loop's own signal handling. On leaving, or if installing fails
    half-way, the previous handlers and wakeup fd are put back. As in
    asyncio.Runner, handlers belong to the main thread: in any other,
    nothing changes.
    """
    through_loop: list[signal.Signals] = []
    if threading.current_thread() is not threading.main_thread():
        logger.debug("Not in the main thread: signal handlers not installed")
        yield through_loop
        return
    previous: dict[signal.Signals, _Handler] = {}
    for sig in _SIGNALS:
        handler = signal.getsignal(sig)
        if handler == signal.SIG_IGN:
            # A shell starts a background job with SIGINT ignored, and
            # asyncio.Runner leaves such a SIGINT alone (CPython gh-154167).
            # Whoever ignored a signal wants it ignored, so run() does too.
            logger.debug("%s is ignored in this process (SIG_IGN), so run() leaves it", sig.name)
        else:
            previous[sig] = handler
    wakeup_fd = signal.set_wakeup_fd(-1)  # read by setting: the only way there is
    signal.set_wakeup_fd(wakeup_fd)

    def on_raw_signal(signum: int, frame: "FrameType | None") -> None:
        # Runs between any two bytecodes of the main thread: only hand the
        # signal over to the loop, which deals with it in its own time.
        try:
            loop.call_soon_threadsafe(on_signal, signum)
        except RuntimeError:  # the loop was just closed: run() is returning
            pass

    try:
        try:
            # Through the loop wherever it can: its handlers write to a
            # wakeup fd, which wakes a loop blocked in select(). A plain
            # Python handler cannot: a signal landing just before the loop
            # blocks waits, unseen, for the next event, maybe forever.
            for sig in previous:
                loop.add_signal_handler(sig, on_signal, sig)
                through_loop.append(sig)
        except NotImplementedError:  # No add_signal_handler() on Windows: use signal.signal().
            for sig in previous:
                signal.signal(sig, on_raw_signal)
        yield through_loop
    finally:
        if not loop.is_closed():  # closing removes them
            for sig in through_loop:
                loop.remove_signal_handler(sig)
        for sig, handler in previous.items():
            # None: installed outside Python, nothing to restore it with.
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        signal.set_wakeup_fd(wakeup_fd)


# --- systemd notification ------------------------------------------------------


class _Notifier:
    """sd_notify(3) datagrams, sent without ever blocking the loop or raising.

    A datagram queue is short, and a blocking send to a reader that falls
    behind would hold the loop: a send that fails or would block is logged
    once, and the rest are dropped.
    """

    def __init__(self, loop: "asyncio.AbstractEventLoop", address: str) -> None:
        import socket

        self._loop = loop
        # "@name": an abstract socket, whose name starts with a NUL byte.
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.setblocking(False)
        self._failed = False
        self._ping: asyncio.TimerHandle | None = None
        self._period = 0.0

    def send(self, message: str) -> None:
        try:
            self._socket.sendto(message.encode(), self._address)
        except OSError as exc:
            if not self._failed:
                self._failed = True
                logger.warning(
                    "systemd notification %r not sent to %r (%s); any more are dropped "
                    "without a word",
                    message,
                    self._address,
                    exc,
                )

    def watch(self, period: float) -> None:
        """Send WATCHDOG=1 every ``period`` seconds from the loop: a blocked loop stops them."""
        self._period = period
        self._on_ping()

    def _on_ping(self) -> None:
        self.send("WATCHDOG=1")
        self._ping = self._loop.call_later(self._period, self._on_ping)

    def on_main_done(self, main: "asyncio.Future[Any]") -> None:
        if not main.cancelled() and main.exception() is None:
            self.send("READY=1")

    def stopping(self, shutdown_timeout: "float | None", started_at: float) -> None:
        message = "STOPPING=1"
        if shutdown_timeout is not None:
            # Ask for the time the deadline leaves, and a margin to close.
            left = started_at + shutdown_timeout - self._loop.time()
            message += f"\nEXTEND_TIMEOUT_USEC={int((max(left, 0) + _STOP_MARGIN) * 1e6)}"
        self.send(message)

    def close(self) -> None:
        if self._ping is not None:
            self._ping.cancel()
        self._socket.close()


_STOP_MARGIN = 5.0  # seconds asked of systemd beyond shutdown_timeout, to close


@contextlib.contextmanager
def _notifying_systemd(loop: "asyncio.AbstractEventLoop") -> "Iterator[_Notifier | None]":
    """A notifier for systemd if it asked for one (NOTIFY_SOCKET), else None.

    The variables are taken out of the environment, so that no child
    process notifies in this one's name.
    """
    import os

    address = os.environ.pop("NOTIFY_SOCKET", None)
    watchdog = os.environ.pop("WATCHDOG_USEC", None)
    pid = os.environ.pop("WATCHDOG_PID", None)
    if not address:
        yield None
        return
    notifier = _Notifier(loop, address)
    try:
        if (
            watchdog
            and watchdog.isdigit()
            and int(watchdog) > 0
            and pid in (None, str(os.getpid()))
        ):
            # Twice as often as systemd asks at the least, and a margin for a busy loop.
            notifier.watch(int(watchdog) / 3e6)
        yield notifier
    finally:
        notifier.close()


# --- the blocked-loop watch ------------------------------------------------------


@contextlib.contextmanager
def _watching_for_a_blocked_loop(
    loop: "asyncio.AbstractEventLoop", threshold: float
) -> "Iterator[None]":
    """Warn, from a thread, when the loop has not run for ``threshold`` seconds.

    The loop keeps a heartbeat with one timer callback per period; the
    thread sleeps, and looks at it. A signal that arrives meanwhile (its
    handler runs in the main thread, even while the loop is blocked) is
    named too: it waits for the loop to act on it.
    """
    import time

    period = threshold / 4
    loop_thread = threading.get_ident()
    beat = [time.monotonic()]
    signals: list[tuple[float, str]] = []  # changed by the main thread only
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
        told = 0.0  # signals up to then are told of already
        while not done.wait(period):
            now = time.monotonic()
            last = beat[0]
            # Those that came while the loop ran, it acted on.
            waiting = [name for when, name in list(signals) if when > max(last, told)]
            if now - last >= threshold and blocked_since != last:
                blocked_since, told = last, now
                logger.warning(
                    "The event loop has not run for %.1f seconds (warn_blocked_loop=%s); "
                    "its thread is at %s%s",
                    now - last,
                    threshold,
                    _thread_place(loop_thread),
                    _waiting_signals(waiting),
                )
            elif blocked_since is not None and last != blocked_since:
                blocked_since = None  # the loop says so itself
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
    import time

    def on_signal(signum: int, frame: "FrameType | None") -> None:
        signals.append((time.monotonic(), signal.Signals(signum).name))
        del signals[:-_MOST_FRAMES]  # the latest are enough
        previous(signum, frame)

    return on_signal


def _waiting_signals(names: "list[str]") -> str:
    if not names:
        return ""
    listed = ", ".join(dict.fromkeys(names))
    return f"; {listed} arrived meanwhile, and waits for the loop to act on it"


def _thread_place(thread: int) -> str:
    """Where a thread is: its innermost frames outside asyncio and aiorun, innermost first."""
    frame = sys._current_frames().get(thread)  # documented; the only way to ask a thread
    places: list[str | None] = []
    while frame is not None and len(places) < _MOST_FRAMES:
        name = frame.f_code.co_filename
        if not name.startswith(_ASYNCIO_DIR) and name != __file__:
            places.append(_frame_place(frame))
        frame = frame.f_back
    del frame
    return " <- ".join(str(place) for place in places) or "an unknown place"


# --- the executor that names its jobs -----------------------------------------

_noting_executor: "type[Any] | None" = None


def _noting_executor_class() -> "type[Any]":
    """A ThreadPoolExecutor that notes which job each of its threads runs.

    Its threads are daemon threads, and concurrent.futures does not know of
    them. A job still running when the shutdown abandons it then no longer
    keeps the interpreter from exiting. Since Python 3.9 the stdlib's own
    workers are joined at exit, however long their jobs take (CPython
    #111358).
    Made on first use: concurrent.futures.thread costs an import, and
    importing aiorun loads nothing that asyncio has not loaded.
    """
    global _noting_executor
    if _noting_executor is not None:
        return _noting_executor
    import queue
    from concurrent.futures import Future, ThreadPoolExecutor

    class NotingExecutor(ThreadPoolExecutor):
        aiorun_running_jobs: "dict[object, tuple[str, int]]"
        aiorun_used: bool

        def __init__(self, max_workers: "int | None" = None) -> None:
            super().__init__(max_workers)  # checks max_workers, computes the defaults
            # One insertion and one deletion per job, each atomic: safe
            # from the worker threads while the loop's thread copies it.
            self.aiorun_running_jobs = {}
            self.aiorun_used = False
            self._aiorun_pool = _DaemonPool.of(self)

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

            if self._aiorun_pool is None:
                return super().submit(job)
            return self._aiorun_pool.submit(job)

        def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
            if self._aiorun_pool is None:
                super().shutdown(wait, cancel_futures=cancel_futures)
            else:
                self._aiorun_pool.shutdown(wait, cancel_futures)

    class _DaemonPool:
        """The daemon threads of one NotingExecutor, started as needed and reused.

        They behave as ThreadPoolExecutor's do. A new thread starts only
        when no thread is idle and there are fewer than ``max_workers``. On
        shutdown the jobs queued still run (unless cancelled), then every
        thread ends.
        """

        @classmethod
        def of(cls, executor: "ThreadPoolExecutor") -> "_DaemonPool | None":
            # Private detail of concurrent.futures, read here only: the size
            # and the thread name prefix that ThreadPoolExecutor.__init__()
            # computed (both there from Python 3.8 to 3.15), so that the
            # pool has the stdlib's defaults on every version. Without them,
            # the stdlib's own threads run the jobs, as they did before.
            workers = getattr(executor, "_max_workers", None)
            prefix = getattr(executor, "_thread_name_prefix", None)
            if type(workers) is int and workers > 0 and isinstance(prefix, str):
                return cls(workers, prefix)
            logger.debug(
                "ThreadPoolExecutor has no _max_workers or _thread_name_prefix: the "
                "executor's threads will keep the interpreter from exiting until their jobs end"
            )
            return None

        def __init__(self, workers: int, prefix: str) -> None:
            self._workers = workers
            self._prefix = prefix
            self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
            self._idle = threading.Semaphore(0)  # one release per idle thread
            self._threads: set[threading.Thread] = set()
            self._lock = threading.Lock()
            self._closed = False

        def submit(self, job: "Callable[[], Any]") -> "Future[Any]":
            with self._lock:
                if self._closed:
                    raise RuntimeError("cannot schedule new futures after shutdown")
                future: Future[Any] = Future()
                self._queue.put((future, job))
                if not self._idle.acquire(blocking=False) and len(self._threads) < self._workers:
                    thread = threading.Thread(
                        target=self._work,
                        name=f"{self._prefix}_{len(self._threads)}",
                        daemon=True,
                    )
                    thread.start()
                    self._threads.add(thread)
            return future

        def shutdown(self, wait: bool, cancel_futures: bool) -> None:
            with self._lock:
                self._closed = True
                if cancel_futures:
                    while True:
                        try:
                            item = self._queue.get_nowait()
                        except queue.Empty:
                            break
                        if item is not None:
                            item[0].cancel()
                self._queue.put(None)  # each thread passes it on as it ends
            if wait:
                for thread in list(self._threads):
                    thread.join()

        def _work(self) -> None:
            while True:
                item = self._queue.get()
                if item is None:
                    self._queue.put(None)
                    return
                future, job = item
                del item
                if future.set_running_or_notify_cancel():
                    try:
                        result = job()
                    except BaseException as exc:
                        future.set_exception(exc)
                    else:
                        future.set_result(result)
                        del result
                # No reference to the job's work is kept while idle.
                del future, job
                self._idle.release()

    _noting_executor = NotingExecutor
    return NotingExecutor


def _job_name(fn: "Any") -> str:
    for _ in range(10):  # partials of partials, not a cycle
        if not isinstance(fn, functools.partial):
            break
        if isinstance(getattr(fn.func, "__self__", None), contextvars.Context) and fn.args:
            fn = fn.args[0]  # asyncio.to_thread(f): partial(context.run, f)
        else:
            fn = fn.func
    name = getattr(fn, "__qualname__", None)
    return f"{name}()" if isinstance(name, str) else repr(fn)[:100]


# --- the reports --------------------------------------------------------------
# A report is for a person and for the logging pipeline between: a line per
# group of alike things, a bounded number of groups, a bounded call graph.

_MOST_GROUPS = 20  # in a report of tasks
_MOST_LEVELS = 6  # of awaiters above one example
_MOST_AWAITERS = 6  # tasks shown awaiting one example, over all levels
_MOST_NAMED = 5  # kinds named in one line: an error message, a list of jobs
_MOST_KINDS = 100  # kinds of errors counted apart before the rest are lumped together
_MOST_ARRIVAL_ROUNDS = 10  # rounds of tasks arriving from outside, before they are written off
_MOST_FRAMES = 3  # of a blocked loop's thread
_ASYNCIO_DIR = asyncio.__file__.rpartition("__init__")[0]
_THREADING_FILES = {threading.__file__, __file__}


def _group_tasks(tasks: "list[asyncio.Task[Any]]") -> "list[list[asyncio.Task[Any]]]":
    """Alike tasks together, the largest group first; the order kept within.

    Alike: the same coroutine, its frame suspended at the same instruction.
    Only the task's own coroutine is looked at, not what it awaits: this
    runs over every task left, a million of them in a large process.
    """
    groups: dict[Any, list[asyncio.Task[Any]]] = {}
    for task in tasks:
        coro: Any = _work_of(task)
        try:
            frame = coro.cr_frame
            key: Any = (coro.cr_code, frame.f_lasti if frame is not None else -1)
        except AttributeError:
            key = type(coro)
        group = groups.get(key)
        if group is None:
            groups[key] = [task]
        else:
            group.append(task)
    return sorted(groups.values(), key=len, reverse=True)


def _describe_groups(groups: "list[list[asyncio.Task[Any]]]") -> str:
    """A report a person can act on, from the tasks grouped by _group_tasks().

    Each group is one line with its count, one example by name and where
    it waits; on Python 3.14 and newer, with a short call graph of that
    example.
    """
    count = sum(map(len, groups))
    protected = 0
    if _protected_tasks:
        protected = sum(sum(map(_protected_tasks.__contains__, group)) for group in groups)
    lines = [
        f"{_plural(count, 'task')} ({protected} protected by shutdown_waits_for()) "
        f"in {_plural(len(groups), 'group')} of alike tasks"
    ]
    for group in groups[:_MOST_GROUPS]:
        example = group[0]
        coro = _work_of(example)
        at = _frame_place(getattr(coro, "cr_frame", None))
        inner = _suspended_at(coro)
        where = f", suspended at {at}" if at else ""
        if inner and inner != at:
            where += f", waiting in {inner}"
        example_name = f"; e.g. {example.get_name()!r}" if len(group) > 1 else ""
        lines.append(f"- {_group_label(group)}{where}{example_name}")
        lines.extend("    " + line for line in _call_graph(example))
    if len(groups) > _MOST_GROUPS:
        rest = sum(len(group) for group in groups[_MOST_GROUPS:])
        more = _plural(len(groups) - _MOST_GROUPS, "more group")
        lines.append(f"- and {more} ({_plural(rest, 'task')})")
    return "\n".join(lines)


def _name_groups(groups: "list[list[asyncio.Task[Any]]]") -> str:
    """A short list for an error message: alike tasks counted, a few kinds named."""
    names = [_group_label(group) for group in groups[:_MOST_NAMED]]
    if len(groups) > _MOST_NAMED:
        rest = sum(len(group) for group in groups[_MOST_NAMED:])
        more = _plural(len(groups) - _MOST_NAMED, "more group")
        names.append(f"and {more} ({_plural(rest, 'task')})")
    return ", ".join(names)


def _group_label(group: "list[asyncio.Task[Any]]") -> str:
    """``'Task-7' work()`` for one task, ``N x work()`` for a group of alike ones."""
    if len(group) == 1:
        return f"{group[0].get_name()!r} {_coro_name(group[0])}()"
    return f"{len(group)} x {_coro_name(group[0])}()"


def _first_few(names: "Iterable[str]") -> str:
    """The first few of ``names``, and how many more there are."""
    names = list(names)
    shown = ", ".join(names[:_MOST_NAMED])
    return shown + (f" and {len(names) - _MOST_NAMED} more" if len(names) > _MOST_NAMED else "")


def _work_of(task: "asyncio.Task[Any]") -> "Any":
    """The coroutine a task runs; for protected work, the work, not its guard."""
    coro: Any = task.get_coro()
    if getattr(coro, "cr_code", None) is _GUARD_CODE and coro.cr_await is not None:
        return coro.cr_await
    return coro


def _call_graph(task: "asyncio.Task[Any]") -> "list[str]":
    """Who awaits ``task``, a few levels up, each task once: a few lines at most.

    Not asyncio.format_call_graph(): it prints every path through the
    "awaited by" graph, which doubles with each level of a graph whose
    tasks await each other through gather() (CPython gh-156860), enough to
    exhaust the memory of a process in the middle of its shutdown.
    """
    lines: list[str] = []
    seen: set[asyncio.Future[Any]] = {task}
    level: list[asyncio.Future[Any]] = [task]
    depth = 0
    while level and len(lines) < _MOST_AWAITERS and depth < _MOST_LEVELS:
        depth += 1
        above: list[asyncio.Future[Any]] = []
        for future in level:
            for parent in _awaited_by(future):
                if parent in seen:
                    continue
                seen.add(parent)
                above.append(parent)
                if len(lines) < _MOST_AWAITERS:
                    lines.append("  " * (depth - 1) + f"awaited by {_future_name(parent)}")
        level = above
    if level and len(lines) >= _MOST_AWAITERS:
        lines.append("  " * depth + "...")
    return lines


def _awaited_by(future: "asyncio.Future[Any]") -> "list[asyncio.Future[Any]]":
    """The futures awaiting ``future`` (Python 3.14 and newer; none before).

    The private attribute behind asyncio.capture_call_graph(), read here
    only: that function has no bound, and no public call answers this.
    """
    parents = getattr(future, "_asyncio_awaited_by", None)
    return list(parents) if parents else []


def _future_name(future: "asyncio.Future[Any]") -> str:
    if isinstance(future, asyncio.Task):
        where = _suspended_at(future.get_coro())
        return f"{future.get_name()!r} {_coro_name(future)}()" + (f" at {where}" if where else "")
    return type(future).__name__


def _coro_name(task: "asyncio.Task[Any]") -> str:
    return _work_name(_work_of(task))


def _work_name(coro: object) -> str:
    name = getattr(coro, "__qualname__", None)
    return name if isinstance(name, str) else type(coro).__name__


def _suspended_at(coro: object) -> "str | None":
    """Where a coroutine chain waits: the innermost frame outside asyncio."""
    frames = []
    for _ in range(100):  # a chain of awaits, not a cycle
        if coro is None:
            break
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            frames.append(frame)
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    if not frames:
        return None
    outside = [f for f in frames if not f.f_code.co_filename.startswith(_ASYNCIO_DIR)]
    return _frame_place((outside or frames)[-1])


def _frame_place(frame: "Any") -> "str | None":
    if frame is None:
        return None
    return f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}"


def _describe_jobs(jobs: "list[tuple[str, int]]") -> str:
    """Executor jobs by function and where their threads are, alike ones counted."""
    frames = sys._current_frames()  # documented; the only way to ask a thread
    counts: dict[str, int] = {}
    for name, thread in jobs:
        # The innermost frame outside threading and aiorun's worker, if any:
        # a job that is a C function (time.sleep) has no frame of its own.
        frame = frames.get(thread)
        while frame is not None and frame.f_code.co_filename in _THREADING_FILES:
            frame = frame.f_back
        where = _frame_place(frame)
        key = f"{name} at {where}" if where else name
        counts[key] = counts.get(key, 0) + 1
    del frames
    return f"{_plural(len(jobs), 'job')}: {_counted(counts)}"


def _counted(counts: "dict[str, int]") -> str:
    """``3 x a, b and 4 more``: the most frequent first, a few named."""
    ordered = sorted(counts.items(), key=lambda item: item[1], reverse=True)
    parts = [key if count == 1 else f"{count} x {key}" for key, count in ordered[:_MOST_NAMED]]
    if len(ordered) > _MOST_NAMED:
        parts.append(f"and {sum(c for _, c in ordered[_MOST_NAMED:])} more")
    return ", ".join(parts)


def _plural(count: int, one: str, many: "str | None" = None) -> str:
    """``1 task``, ``2 tasks``; ``many`` where adding an s will not do."""
    return f"{count} {one if count == 1 else many or one + 's'}"


# --- shutdown_waits_for()'s machinery -----------------------------------------


class _Waiter:
    """What shutdown_waits_for() returns: a coroutine over the result future.

    A plain class rather than an ``async def``, so that dropping it unawaited
    (fire and forget) raises no "coroutine ... was never awaited" warning.
    It has the four methods of ``collections.abc.Coroutine``, which is all
    ``asyncio.iscoroutine()`` and ``create_task()`` ask for, and it shows
    the wrapped coroutine's name and place to task reprs and introspection.
    """

    # No __init__: on this hot path a Python-level constructor is a
    # measurable share of the cost; shutdown_waits_for() sets every slot.
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

    def send(self, value: "Any") -> "Any":  # when run as a task's coroutine
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
        if it is None:  # not started: end here, as a coroutine would
            self._iter = _exhausted()  # a later send() ends at once, too
            raise exc
        return it.throw(exc)

    def close(self) -> None:
        it = self._iter
        if it is not None:
            it.close()

    # What task reprs, debuggers and asyncio's introspection read of a
    # coroutine: the wrapped one's, so that a task running this one shows
    # as the work it waits for ("coro=<save() running at app.py:12>").
    # __name__ and __qualname__ cannot be properties of a class (they are
    # the class's own): instances find them here.
    def __getattr__(self, name: str) -> "Any":
        if name in ("__name__", "__qualname__"):
            value = getattr(self.wrapped, name, None)
            return (
                value
                if isinstance(value, str)
                else f"shutdown_waits_for({type(self.wrapped).__name__})"
            )
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def cr_code(self) -> "Any":
        return getattr(self.wrapped, "cr_code", None)

    @property
    def cr_frame(self) -> "Any":
        return getattr(self.wrapped, "cr_frame", None)

    @property
    def cr_running(self) -> bool:
        return False

    @property
    def cr_await(self) -> "Any":
        return self.future if self._iter is not None else None


def _exhausted() -> "Generator[Any, None, Any]":
    yield from ()


async def _guard(coro: "Awaitable[Any]", waiter: "_Waiter") -> None:
    """Run protected work and hand its outcome to whoever awaits the waiter."""
    future = waiter.future
    try:
        result = await coro
    except asyncio.CancelledError:
        future.cancel()  # the protected task itself was cancelled
        raise
    except Exception as exc:
        if not future.cancelled() and waiter.awaited:
            future.set_exception(exc)
        elif waiter.task is None:
            # An eager task factory started the guard inside create_task().
            # The caller has not had the waiter yet, let alone a chance to
            # await it. Whether it does is known once its step is over.
            future.set_exception(exc)
            future.get_loop().call_soon(_on_failed_at_once, waiter, exc, asyncio.current_task())
        else:  # the caller is gone, or never came: report, do not drop
            if not future.done():
                future.set_exception(exc)
                future.exception()  # the report below is the one
            _report_failure(future, exc, asyncio.current_task())
    except BaseException:  # SystemExit, KeyboardInterrupt: they end run()
        future.cancel()
        raise
    else:
        if not future.done():
            future.set_result(result)
    finally:
        task = waiter.task
        if task is not None:  # work that ended inside create_task() never entered the set
            _protected_tasks.discard(task)
        waiter.registry.discard(waiter.guard)


_GUARD_CODE = _guard.__code__


def _on_failed_at_once(waiter: "_Waiter", exc: Exception, task: "asyncio.Task[Any] | None") -> None:
    """Report the failure of work that ended at once, unless its caller awaited it."""
    if not waiter.awaited:
        waiter.future.exception()  # the report below is the one
        _report_failure(waiter.future, exc, task)


def _report_failure(
    future: "asyncio.Future[Any]", exc: Exception, task: "asyncio.Task[Any] | None"
) -> None:
    # Not under "task": from 3.12 the handler would be run inside that
    # task's context, which is the one running (already entered).
    future.get_loop().call_exception_handler(
        {
            "message": "shutdown_waits_for() work failed with no caller awaiting it",
            "exception": exc,
            "protected_task": task,
        }
    )


def _current_loop() -> "asyncio.AbstractEventLoop":
    """The current loop, outside a coroutine (no loop is running), as the original found it."""
    # With no current loop, asyncio 3.10 to 3.13 warns (DeprecationWarning)
    # and makes one, as the original aiorun then did; where warnings are
    # errors, and from 3.14 on, asyncio raises instead: say what to do.
    try:
        return asyncio.get_event_loop()
    except (RuntimeError, DeprecationWarning):
        raise RuntimeError(
            "shutdown_waits_for() found no event loop: call it from a coroutine, or pass loop="
        ) from None


if not TYPE_CHECKING:

    def __getattr__(name: str) -> "Any":
        # The typing alias is built on first use: typing costs more than the
        # rest of the module, and only type checkers and annotations ask.
        if name == "ShutdownCallback":
            from collections.abc import Awaitable
            from typing import Any, Callable, Optional, Union

            alias = Optional[
                Union[
                    Awaitable[Any],
                    Callable[[asyncio.AbstractEventLoop], Optional[Awaitable[Any]]],
                ]
            ]
            globals()[name] = alias
            return alias
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
