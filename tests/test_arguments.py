"""Bad input is refused before anything changes."""

from __future__ import annotations

import asyncio
import signal
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import pytest

from aiorun import run


async def main() -> None:
    asyncio.get_running_loop().stop()


def snapshot() -> tuple[Any, ...]:
    return (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"coro": main}, TypeError, r"coroutine function 'main'. Call it"),
        ({"coro": 42}, TypeError, "coroutine or awaitable"),
        ({"timeout_task_shutdown": -1}, ValueError, "must not be negative"),
        ({"timeout_task_shutdown": "5"}, TypeError, "number of seconds"),
        ({"timeout_executor_shutdown": -0.5}, ValueError, "must not be negative"),
        ({"shutdown_timeout": -1}, ValueError, "shutdown_timeout must not be negative"),
        (
            {"shutdown_timeout": float("nan")},
            ValueError,
            "^shutdown_timeout must be a number of seconds, not NaN$",
        ),
        (
            {"timeout_task_shutdown": float("nan")},
            ValueError,
            "^timeout_task_shutdown must be a number of seconds, not NaN$",
        ),
        ({"warn_blocked_loop": -1}, ValueError, "^warn_blocked_loop must not be negative, not -1$"),
        (
            {"warn_blocked_loop": 0},
            ValueError,
            "^warn_blocked_loop must be a positive number of seconds, not 0$",
        ),
        ({"shutdown_timeout": True}, TypeError, "shutdown_timeout must be a number"),
        ({"shutdown_timeout": "25"}, TypeError, "shutdown_timeout must be a number"),
        ({"shutdown_callback": 42}, TypeError, "shutdown_callback must be"),
        ({"shutdown_handler": "stop"}, TypeError, "shutdown_handler must be callable"),
        ({"executor": object()}, TypeError, "ThreadPoolExecutor"),
        ({"executor_workers": 0}, ValueError, "positive int"),
        ({"loop_factory": 3}, TypeError, "loop_factory must be callable"),
        ({"stop_on_main_exit": True}, ValueError, r"none was given. Pass it, as in run\(main\(\)"),
        ({"stop_on_main_exit": 1}, TypeError, "stop_on_main_exit must be True or False, not 1"),
        ({"stop_on_main_exit": "yes"}, TypeError, "stop_on_main_exit must be True or False"),
        (
            {"loop_factory": asyncio.new_event_loop, "use_uvloop": True},
            ValueError,
            "mutually exclusive",
        ),
    ],
)
def test_bad_input_is_refused_before_anything_changes(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    before = snapshot()
    coro = kwargs.pop("coro", None)
    with pytest.raises(error, match=match):
        run(coro, **kwargs)
    assert snapshot() == before
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()


def test_coroutine_refused_with_other_input_is_closed_quietly() -> None:
    # filterwarnings=error: a "never awaited" warning would fail this test.
    coro = main()
    with pytest.raises(ValueError, match="must not be negative"):
        run(coro, timeout_task_shutdown=-1)
    assert coro.cr_frame is None


def test_stop_on_main_exit_refused_with_a_coroutine_closes_it_quietly() -> None:
    before = snapshot()
    coro = main()
    with pytest.raises(TypeError, match="stop_on_main_exit must be True or False, not None"):
        run(coro, stop_on_main_exit=None)  # type: ignore[call-overload]
    assert coro.cr_frame is None
    assert snapshot() == before


def test_loop_and_use_uvloop_are_mutually_exclusive() -> None:
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(ValueError, match="mutually exclusive"):
            run(loop=loop, use_uvloop=True)
        with pytest.raises(ValueError, match="mutually exclusive"):
            run(loop=loop, loop_factory=asyncio.new_event_loop)
        assert loop.get_exception_handler() is None
    finally:
        loop.close()


def test_process_pool_is_refused_up_front_by_its_own_name() -> None:
    with ProcessPoolExecutor(1) as pool, pytest.raises(TypeError) as refused:
        run(executor=pool)
    message = str(refused.value)
    assert message.startswith("executor must be a concurrent.futures.ThreadPoolExecutor")
    assert "not ProcessPoolExecutor <concurrent.futures.process.ProcessPoolExecutor" in message
    assert message.endswith(". Keep it for your own jobs, with loop.run_in_executor(executor, ...)")


def test_closed_loop_is_refused() -> None:
    loop = asyncio.new_event_loop()
    loop.close()
    with pytest.raises(RuntimeError, match="closed"):
        run(loop=loop)


def test_run_inside_a_running_loop_is_refused() -> None:
    async def outer() -> None:
        coro = main()
        with pytest.raises(RuntimeError, match="running event loop"):
            run(coro)

    asyncio.run(outer())


def test_missing_uvloop_raises_importerror_before_anything_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "uvloop", None)
    before = snapshot()
    with pytest.raises(ImportError) as refused:
        run(main(), use_uvloop=True)
    assert snapshot() == before
    assert refused.value.name == "uvloop"
    assert "pip install 'aiorun[uvloop]'" in str(refused.value)
