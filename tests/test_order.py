"""The order of the shutdown's cancellations: the main task first."""

from __future__ import annotations

import asyncio

import pytest
from conftest import make_loop

from aiorun import run


@pytest.mark.parametrize("others", [1, 100_000])
@pytest.mark.parametrize("others_first", [True, False], ids=["others-made-first", "main-first"])
def test_the_main_task_sees_its_cancellation_before_any_other_task(
    loop_kind: str, others: int, others_first: bool
) -> None:
    # Whatever the tasks' addresses: some made before main (on the loop
    # run() is given), some after, by main itself.
    seen: list[str] = []
    loop = make_loop(loop_kind)

    async def wait(name: str) -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            seen.append(name)
            raise

    async def main() -> None:
        if not others_first:
            for _ in range(others):
                asyncio.ensure_future(wait("other"))
        # After this step, and the first step of every task made so far.
        asyncio.get_running_loop().call_soon(loop.stop)
        await wait("main")

    try:
        if others_first:
            for _ in range(others):
                loop.create_task(wait("other"))
        run(main(), loop=loop)
    finally:
        loop.close()
    assert seen[0] == "main", seen[:3]
    assert len(seen) == others + 1
