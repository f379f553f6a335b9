"""What aiorun costs, measured side by side against the least possible.

    python benchmarks/bench.py            # the full run (several minutes)
    python benchmarks/bench.py --quick    # small N, two rounds: a smoke test
    python benchmarks/bench.py --prefault # shutdown on memory touched before

Every figure comes from a fresh child process. The contenders run round by
round, interleaved, so that a noisy moment of the machine hits them all
alike; each figure is reported as min and median over the rounds, and as a
ratio of its minimum to the floor's minimum.

- shutdown: from the moment the process sends itself SIGTERM to the moment
  the runner returns, with N idle tasks pending. The floor is the shortest
  correct shutdown written by hand: stop on SIGTERM, cancel every task, wait
  for them, finalize async generators, close the loop.
- protection: N sequential awaits of protected trivial work. The floor,
  ``await loop.create_task(coro)``, is the least any protection can cost
  (one task per call).
- import: ``import aiorun`` in an interpreter that has imported asyncio,
  against importing an empty module.

With ``--prefault``, each shutdown child touches and releases fresh memory
just before its SIGTERM, so that the shutdown's allocations take pages the
kernel already has. On a virtual machine whose host backs a page only at its
first touch, that separates the host's cost from the runner's.
"""

from __future__ import annotations

import argparse
import asyncio
import mmap
import os
import py_compile
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent
# More than any contender allocates while it shuts down (at most about
# 650 bytes per task, measured at a million tasks).
PREFAULT_PER_TASK = 1024


# --- what runs in the children -------------------------------------------


async def _idle_app(n: int, started: list[float], prefault: int) -> None:
    loop = asyncio.get_running_loop()

    async def idle() -> None:
        await loop.create_future()

    # Held by this frame, as an application holds its tasks: the loop itself
    # keeps only weak references to them.
    tasks = [loop.create_task(idle()) for _ in range(n)]
    await asyncio.sleep(0)  # every task takes its first step
    if prefault:
        _prefault(prefault * n)
    started.append(time.perf_counter())
    os.kill(os.getpid(), signal.SIGTERM)
    await loop.create_future()
    del tasks


def _prefault(size: int) -> None:
    """Touch, then release, ``size`` bytes of fresh memory.

    Released pages go back to the kernel, which hands them out again to the
    allocations that follow: already backed by the host, these cost a plain
    page fault, not the first touch a hypervisor must serve.
    """
    with mmap.mmap(-1, size) as area:
        for offset in range(0, size, mmap.PAGESIZE):
            area[offset] = 1


def _loop_factory(kind: str) -> Callable[[], asyncio.AbstractEventLoop]:
    if kind == "uvloop":
        import uvloop

        return uvloop.new_event_loop  # type: ignore[no-any-return]
    return asyncio.new_event_loop


def shutdown_aiorun(n: int, kind: str, prefault: int = 0) -> float:
    import aiorun

    started: list[float] = []
    aiorun.run(_idle_app(n, started, prefault), use_uvloop=kind == "uvloop")
    return time.perf_counter() - started[0]


def shutdown_floor(n: int, kind: str, prefault: int = 0) -> float:
    loop = _loop_factory(kind)()
    asyncio.set_event_loop(loop)
    loop.add_signal_handler(signal.SIGTERM, loop.stop)
    started: list[float] = []
    loop.create_task(_idle_app(n, started, prefault))
    loop.run_forever()
    tasks = asyncio.all_tasks(loop)
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.wait(tasks))
    del tasks
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.remove_signal_handler(signal.SIGTERM)
    loop.close()
    asyncio.set_event_loop(None)
    return time.perf_counter() - started[0]


def shutdown_asyncio_run(n: int, kind: str, prefault: int = 0) -> float:
    started: list[float] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        me = asyncio.current_task()
        assert me is not None
        loop.add_signal_handler(signal.SIGTERM, me.cancel)
        await _idle_app(n, started, prefault)

    try:
        if kind == "uvloop":
            with asyncio.Runner(loop_factory=_loop_factory(kind)) as runner:  # type: ignore[attr-defined]
                runner.run(main())
        else:
            asyncio.run(main())
    except asyncio.CancelledError:
        pass
    return time.perf_counter() - started[0]


async def _noop() -> None:
    pass


def protect(n: int, how: str) -> float:
    import aiorun

    async def main() -> float:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        if how == "shutdown_waits_for":
            swf = aiorun.shutdown_waits_for
            for _ in range(n):
                await swf(_noop())
        elif how == "create_task":
            for _ in range(n):
                await loop.create_task(_noop())
        else:
            shield = asyncio.shield
            for _ in range(n):
                await shield(_noop())
        return time.perf_counter() - started

    return asyncio.run(main())


def import_time(module: str) -> float:
    started = time.perf_counter()
    __import__(module)
    return time.perf_counter() - started


CHILD_JOBS: dict[str, Callable[..., float]] = {
    "shutdown:aiorun": shutdown_aiorun,
    "shutdown:floor": shutdown_floor,
    "shutdown:asyncio.run": shutdown_asyncio_run,
    "protect": protect,
    "import": import_time,
}


# --- the parent: rounds, interleaving, report ----------------------------


def child(job: str, *args: str, path: str | None = None) -> float:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), path]))}
    out = subprocess.run(
        [sys.executable, __file__, "--child", job, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"child {job} {args} failed:\n{out.stdout}\n{out.stderr}")
    return float(out.stdout.split()[-1])


def measure(rounds: int, contenders: dict[str, Callable[[], float]]) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            results[name].append(fn())
    return results


def report(
    title: str, results: dict[str, list[float]], floor: str, unit: float, unit_name: str
) -> None:
    base = min(results[floor])
    print(f"\n{title}")
    print(f"  {'contender':<24}{'min':>12}{'median':>12}{'min / floor':>14}")
    for name, values in results.items():
        print(
            f"  {name:<24}{min(values) * unit:>10.2f}{unit_name}"
            f"{statistics.median(values) * unit:>10.2f}{unit_name}{min(values) / base:>13.3f}x"
        )
    sys.stdout.flush()


def have_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small N and two rounds")
    parser.add_argument("--rounds", type=int, help="rounds per measurement")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--sizes", type=int, nargs="+", help="task counts for the shutdown")
    parser.add_argument(
        "--only", choices=["shutdown", "protection", "import"], help="run one measurement only"
    )
    parser.add_argument(
        "--prefault",
        action="store_true",
        help=f"before the SIGTERM, touch and release {PREFAULT_PER_TASK} bytes per task",
    )
    args = parser.parse_args()
    if args.child:
        job, *params = args.child
        fn = CHILD_JOBS[job]
        converted: list[Any] = [int(p) if p.isdigit() else p for p in params]
        print(fn(*converted))
        return

    rounds = args.rounds or (2 if args.quick else 7)
    sizes = [1_000, 10_000] if args.quick else [1_000, 100_000, 1_000_000]
    if args.sizes:
        sizes = args.sizes
    kinds = ["asyncio"] + (["uvloop"] if have_uvloop() else [])
    prefault = PREFAULT_PER_TASK if args.prefault else 0
    print(
        f"Python {sys.version.split()[0]}, {rounds} rounds; times in ms"
        + (f"; {prefault} bytes per task prefaulted" if prefault else "")
    )

    for kind in kinds if args.only in (None, "shutdown") else []:
        for n in sizes:
            contenders = {
                name: (
                    lambda name=name, n=n, kind=kind: child(
                        f"shutdown:{name}", str(n), kind, str(prefault)
                    )
                )
                for name in ("floor", "aiorun", "asyncio.run")
            }
            if kind == "uvloop" and sys.version_info < (3, 11):
                del contenders["asyncio.run"]  # no loop_factory before 3.11
            results = measure(rounds if n < 1_000_000 else max(2, rounds // 2), contenders)
            report(f"shutdown, {n:,} idle tasks, {kind} loop", results, "floor", 1e3, "ms")

    if args.only in (None, "protection"):
        protection(rounds, 10_000 if args.quick else 100_000)
    if args.only in (None, "import"):
        import_cost(rounds)


def protection(rounds: int, n: int) -> None:
    results = measure(
        rounds,
        {
            how: (lambda how=how: child("protect", str(n), how))
            for how in ("create_task", "shutdown_waits_for", "shield")
        },
    )
    report(f"protection, {n:,} sequential awaits", results, "create_task", 1e3, "ms")


def import_cost(rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "empty_module.py").write_text("")
        # Both from cached bytecode, as an installed package is imported.
        py_compile.compile(str(Path(tmp, "empty_module.py")), doraise=True)
        py_compile.compile(str(REPO / "aiorun.py"), doraise=True)
        results = measure(
            rounds * 3,
            {
                "empty module": lambda: child("import", "empty_module", path=tmp),
                "aiorun": lambda: child("import", "aiorun"),
            },
        )
    report("import, after asyncio", results, "empty module", 1e6, "us")


if __name__ == "__main__":
    main()
