# Type information for aiorun.py, as a PEP 561 stub-only package: a single
# module cannot carry py.typed. Kept equal to the module by mypy's stubtest
# in CI (.ci/typed-consumer).
import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Generator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, TypeVar, overload, type_check_only
from weakref import WeakSet

from typing_extensions import TypeAlias

_T = TypeVar("_T")

__version__: str
__all__ = ["run", "shutdown_waits_for"]

logger: logging.Logger
WINDOWS: bool

ShutdownCallback: TypeAlias = (
    Awaitable[Any] | Callable[[asyncio.AbstractEventLoop], Awaitable[Any] | None] | None
)

_DO_NOT_CANCEL_COROS: WeakSet[Any]

# run() returns main's result only with stop_on_main_exit=True, and then
# "_T | None", not "_T": a run stopped by a signal (or loop.stop(), or an
# error under stop_on_unhandled_errors) cancels main(), and if main() ends
# by that cancellation run() returns None. That is how a service usually
# ends, and how a batch job interrupted half-way ends: the caller must be
# made to tell it from a finished job.
@overload
def run(
    coro: Awaitable[_T],
    *,
    loop: asyncio.AbstractEventLoop | None = None,
    shutdown_handler: Callable[[asyncio.AbstractEventLoop], None] | None = None,
    shutdown_callback: ShutdownCallback = None,
    executor_workers: int | None = None,
    executor: ThreadPoolExecutor | None = None,
    use_uvloop: bool = False,
    stop_on_unhandled_errors: bool = False,
    timeout_task_shutdown: float = 60,
    timeout_executor_shutdown: float | None = None,
    exit_on_second_signal: bool = False,
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
    shutdown_timeout: float | None = None,
    stop_on_main_exit: Literal[True],
    systemd_notify: bool = False,
    warn_blocked_loop: float | None = None,
) -> _T | None: ...
@overload
def run(
    coro: Awaitable[Any] | None = None,
    *,
    loop: asyncio.AbstractEventLoop | None = None,
    shutdown_handler: Callable[[asyncio.AbstractEventLoop], None] | None = None,
    shutdown_callback: ShutdownCallback = None,
    executor_workers: int | None = None,
    executor: ThreadPoolExecutor | None = None,
    use_uvloop: bool = False,
    stop_on_unhandled_errors: bool = False,
    timeout_task_shutdown: float = 60,
    timeout_executor_shutdown: float | None = None,
    exit_on_second_signal: bool = False,
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
    shutdown_timeout: float | None = None,
    stop_on_main_exit: Literal[False] = False,
    systemd_notify: bool = False,
    warn_blocked_loop: float | None = None,
) -> None: ...
@overload
def run(  # a flag known only at run time: a coroutine is needed, in case it is True
    coro: Awaitable[_T],
    *,
    loop: asyncio.AbstractEventLoop | None = None,
    shutdown_handler: Callable[[asyncio.AbstractEventLoop], None] | None = None,
    shutdown_callback: ShutdownCallback = None,
    executor_workers: int | None = None,
    executor: ThreadPoolExecutor | None = None,
    use_uvloop: bool = False,
    stop_on_unhandled_errors: bool = False,
    timeout_task_shutdown: float = 60,
    timeout_executor_shutdown: float | None = None,
    exit_on_second_signal: bool = False,
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
    shutdown_timeout: float | None = None,
    stop_on_main_exit: bool,
    systemd_notify: bool = False,
    warn_blocked_loop: float | None = None,
) -> _T | None: ...

# What shutdown_waits_for() returns: a coroutine that may be awaited, passed
# to create_task(), or dropped. A subclass, not Coroutine itself: mypy and
# pyright report a dropped Coroutine ("unused-coroutine"), and dropping this
# one is allowed. mypy's optional "unused-awaitable" check still sees it.
@type_check_only
class _ProtectedWork(Coroutine[Any, Any, _T]):
    def send(self, value: Any, /) -> Any: ...
    def throw(self, typ: Any, val: Any = ..., tb: Any = ..., /) -> Any: ...
    def close(self) -> None: ...
    def __await__(self) -> Generator[Any, None, _T]: ...

def shutdown_waits_for(
    coro: Awaitable[_T], loop: asyncio.AbstractEventLoop | None = None
) -> _ProtectedWork[_T]: ...
