"""What aiorun costs, side by side with the original aiorun and the stdlib.

    python benchmarks/bench.py            # the full run (about half an hour)
    python benchmarks/bench.py --quick    # small N, two rounds: a smoke test

Every figure comes from a fresh child process. The contenders run round by
round, interleaved, so that a noisy moment of the machine hits them all
alike; each figure is reported as min and median over the rounds, and as a
ratio of its minimum to the reference's minimum.

Contenders: this aiorun; the original, aiorun 2025.1.1, installed from the
package index into a directory of its own (``pip install --no-deps
--target``); asyncio itself. Each child runs in an empty working directory
with only its own aiorun importable, from compiled byte code, as an
installed package is imported.

- shutdown: from the moment the process sends itself SIGTERM to the moment
  the runner returns, with N idle tasks pending. The floor is the shortest
  correct shutdown written by hand: stop on SIGTERM, cancel every task, wait
  for them, finalize async generators, close the loop. ``asyncio.run`` gets
  a SIGTERM handler that cancels its main task. "aiorun, main first" is
  this aiorun with ``stop_on_main_exit=True``: the main task cancelled and
  awaited alone, then the rest, the order asyncio.run keeps.
- protection: N sequential awaits of protected trivial work. The floor,
  ``await loop.create_task(coro)``, is the least any protection can cost
  (one task per call).
- neighbour: one run (a main coroutine that ends at once), averaged over
  many, in a process where another thread's loop holds 100,000 tasks:
  up to Python 3.13 every thread's tasks are in one registry, and finding
  a loop's own tasks means a pass over all of them.
- neighbour, SIGTERM: the same, but each run has a few idle tasks and is
  stopped by SIGTERM, as a service is: every look at the loop's tasks
  during the shutdown is a pass over the other thread's tasks too.
  ``asyncio.run`` gets the SIGTERM handler of the shutdown row.
- import: ``import aiorun`` in an interpreter that has imported asyncio,
  against importing an empty module.
- idle: the CPU a run takes while its loop waits for nothing, as a share
  of one core, with ``systemd_notify=True`` (a notify socket, watchdog
  pings every third of a second) and ``warn_blocked_loop=1`` and without:
  what watching a healthy service costs.
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import os
import py_compile
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent
ORIGINAL = "aiorun==2025.1.1"


# --- what runs in the children -------------------------------------------


def _only_contender_on_path(where: str) -> None:
    """Make the contender's directory the only place aiorun can come from."""
    # An editable install of this project puts the repository on sys.path.
    sys.path[:] = [where] + [
        entry
        for entry in sys.path
        if not (Path(entry or ".", "aiorun.py").exists() or Path(entry or ".", "aiorun").is_dir())
    ]


def _import_aiorun(where: str) -> Any:
    _only_contender_on_path(where)
    import aiorun

    assert Path(aiorun.__file__).resolve().is_relative_to(Path(where).resolve()), aiorun.__file__
    return aiorun


async def _idle_app(n: int, started: list[float]) -> None:
    loop = asyncio.get_running_loop()

    async def idle() -> None:
        await loop.create_future()

    # Held by this frame, as an application holds its tasks: the loop itself
    # keeps only weak references to them.
    tasks = [loop.create_task(idle()) for _ in range(n)]
    await asyncio.sleep(0)  # every task takes its first step
    started.append(time.perf_counter())
    os.kill(os.getpid(), signal.SIGTERM)
    await loop.create_future()
    del tasks


def _loop_factory(kind: str) -> Callable[[], asyncio.AbstractEventLoop]:
    if kind == "uvloop":
        import uvloop

        return uvloop.new_event_loop  # type: ignore[no-any-return]
    return asyncio.new_event_loop


def shutdown_aiorun(n: int, kind: str, where: str, mode: str = "") -> float:
    aiorun = _import_aiorun(where)
    started: list[float] = []
    # "main-first": the main task cancelled and awaited alone, then the rest.
    options = {"stop_on_main_exit": True} if mode == "main-first" else {}
    if kind == "uvloop":
        # The original knows no loop_factory; both take a loop made outside.
        loop = _loop_factory(kind)()
        aiorun.run(_idle_app(n, started), loop=loop, **options)
        elapsed = time.perf_counter() - started[0]
        loop.close()
        return elapsed
    aiorun.run(_idle_app(n, started), **options)
    return time.perf_counter() - started[0]


def shutdown_floor(n: int, kind: str) -> float:
    loop = _loop_factory(kind)()
    asyncio.set_event_loop(loop)
    loop.add_signal_handler(signal.SIGTERM, loop.stop)
    started: list[float] = []
    loop.create_task(_idle_app(n, started))
    loop.run_forever()
    tasks = asyncio.all_tasks(loop)
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.wait(tasks))
    del tasks
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.remove_signal_handler(signal.SIGTERM)
    if kind == "uvloop":
        # The runners above leave a supplied loop open: so does the floor.
        elapsed = time.perf_counter() - started[0]
        loop.close()
        return elapsed
    loop.close()
    asyncio.set_event_loop(None)
    return time.perf_counter() - started[0]


def shutdown_asyncio_run(n: int, kind: str) -> float:
    started: list[float] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        me = asyncio.current_task()
        assert me is not None
        loop.add_signal_handler(signal.SIGTERM, me.cancel)
        await _idle_app(n, started)

    try:
        with asyncio.Runner(loop_factory=_loop_factory(kind)) as runner:  # type: ignore[attr-defined]
            runner.run(main())
    except asyncio.CancelledError:
        pass
    return time.perf_counter() - started[0]


async def _noop() -> None:
    pass


def protect(n: int, how: str, where: str = "") -> float:
    swf = _import_aiorun(where).shutdown_waits_for if where else None

    async def main() -> float:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        if swf is not None:
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


# The idle tasks of each run in "neighbour, SIGTERM".
FEW_TASKS = 10


async def _few_tasks_then_sigterm() -> None:
    loop = asyncio.get_running_loop()
    forever = loop.create_future()
    tasks = [loop.create_task(_wait_for(forever)) for _ in range(FEW_TASKS)]
    await asyncio.sleep(0)  # every task takes its first step
    os.kill(os.getpid(), signal.SIGTERM)
    await loop.create_future()
    del tasks


async def _cancelled_by_sigterm() -> None:
    # As in shutdown_asyncio_run(): SIGTERM cancels the main task.
    me = asyncio.current_task()
    assert me is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, me.cancel)
    await _few_tasks_then_sigterm()


def _sigterm_run(aiorun: Any, mode: str) -> None:
    """One run of _few_tasks_then_sigterm(), by aiorun or asyncio.run."""
    if aiorun is None:
        try:
            asyncio.run(_cancelled_by_sigterm())
        except asyncio.CancelledError:
            pass
    else:
        options = {"stop_on_main_exit": True} if mode == "main-first" else {}
        aiorun.run(_few_tasks_then_sigterm(), **options)


def neighbour(runs: int, how: str, where: str = "", shape: str = "", mode: str = "") -> float:
    """One run, on average, while another thread's loop holds 100,000 tasks.

    ``shape`` "sigterm": a few idle tasks, stopped by SIGTERM; else a main
    coroutine that ends at once.
    """
    aiorun = _import_aiorun(where) if where else None
    held = threading.Event()
    release: list[Callable[[], None]] = []

    def other_thread() -> None:
        async def hold() -> None:
            loop = asyncio.get_running_loop()
            done = loop.create_future()
            tasks = [loop.create_task(_wait_for(done)) for _ in range(100_000)]
            release.append(lambda: loop.call_soon_threadsafe(done.set_result, None))
            await asyncio.sleep(0)
            held.set()
            await asyncio.gather(*tasks)

        asyncio.run(hold())

    thread = threading.Thread(target=other_thread)
    thread.start()
    held.wait()

    async def stop_at_once() -> None:
        asyncio.get_running_loop().stop()

    started = time.perf_counter()
    for _ in range(runs):
        if shape == "sigterm":
            _sigterm_run(aiorun, mode)
        elif aiorun is not None:
            aiorun.run(stop_at_once())
        else:
            asyncio.run(_noop())
    elapsed = time.perf_counter() - started
    release[0]()
    thread.join()
    return elapsed / runs


async def _wait_for(future: asyncio.Future[None]) -> None:
    await future


def idle(seconds: int, watched: str, where: str) -> float:
    """The CPU time of an idle run, per second of it: a share of one core."""
    import resource
    import socket

    aiorun = _import_aiorun(where)
    options: dict[str, Any] = {}
    if watched == "watched":
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        address = os.path.join(tempfile.mkdtemp(), "notify")
        listener.bind(address)
        threading.Thread(
            target=lambda: [listener.recv(100) for _ in iter(int, 1)], daemon=True
        ).start()
        os.environ.update(NOTIFY_SOCKET=address, WATCHDOG_USEC="1000000")
        options = {"systemd_notify": True, "warn_blocked_loop": 1.0}

    async def wait() -> None:
        asyncio.get_running_loop().call_later(seconds, asyncio.get_running_loop().stop)

    before = resource.getrusage(resource.RUSAGE_SELF)
    aiorun.run(wait(), **options)
    after = resource.getrusage(resource.RUSAGE_SELF)
    used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return used / seconds


CHILD_JOBS: dict[str, Callable[..., float]] = {
    "idle": idle,
    "neighbour": neighbour,
    "shutdown:aiorun": shutdown_aiorun,
    "shutdown:floor": shutdown_floor,
    "shutdown:asyncio.run": shutdown_asyncio_run,
    "protect": protect,
}

# Timed in an interpreter that has imported asyncio and nothing else: not
# this script, whose own imports (typing among them) would hide a cost.
IMPORT_CHILD = """
import asyncio, sys, time
where = sys.argv[1]
sys.path[:] = [where] + [p for p in sys.path if p != where]
{prepare}
started = time.perf_counter()
import {module}
elapsed = time.perf_counter() - started
assert {module}.__file__.startswith(where), {module}.__file__
print(elapsed)
"""


# --- the parent: contenders, rounds, interleaving, report ----------------


class Places:
    """An empty working directory, and a directory per aiorun contender."""

    def __init__(self, root: Path) -> None:
        self.cwd = root / "cwd"
        self.cwd.mkdir()
        self.ours = root / "ours"
        self.ours.mkdir()
        shutil.copy(REPO / "aiorun.py", self.ours)
        py_compile.compile(str(self.ours / "aiorun.py"), doraise=True)
        self.original = root / "original"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "-q",
                "--no-deps",
                "--no-compile",
                "--target",
                str(self.original),
                ORIGINAL,
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        compileall.compile_dir(str(self.original), quiet=1)
        self.empty = root / "empty"
        self.empty.mkdir()
        (self.empty / "empty_module.py").write_text("")
        py_compile.compile(str(self.empty / "empty_module.py"), doraise=True)


def child(places: Places, job: str, *args: str) -> float:
    return _child(places, [__file__, "--child", job, *args])


def import_child(places: Places, module: str, where: Path) -> float:
    # The same filter as _only_contender_on_path(), before the clock starts.
    prepare = (
        "import os\n"
        "sys.path[1:] = [p for p in sys.path[1:] if not (os.path.exists(os.path.join(p or '.', "
        "'aiorun.py')) or os.path.isdir(os.path.join(p or '.', 'aiorun')))]"
    )
    code = IMPORT_CHILD.format(module=module, prepare=prepare)
    return _child(places, ["-c", code, str(where)])


def _child(places: Places, argv: list[str]) -> float:
    # Byte code is read from the caches made above, as users have them.
    env = {
        k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPATH")
    }
    out = subprocess.run(
        [sys.executable, *argv],
        capture_output=True,
        text=True,
        env=env,
        cwd=places.cwd,
        timeout=600,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"child {argv[-4:]} failed:\n{out.stdout}\n{out.stderr}")
    return float(out.stdout.split()[-1])


def measure(rounds: int, contenders: dict[str, Callable[[], float]]) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            results[name].append(fn())
    return results


def report(
    title: str,
    results: dict[str, list[float]],
    floor: str,
    unit: float,
    unit_name: str,
    versus: tuple[str, ...] = (),
) -> None:
    base = min(results[floor])
    print(f"\n{title}")
    print(f"  {'contender':<28}{'min':>12}{'median':>12}{'min / ' + floor:>22}")
    for name, values in results.items():
        print(
            f"  {name:<28}{min(values) * unit:>10.2f}{unit_name}"
            f"{statistics.median(values) * unit:>10.2f}{unit_name}{min(values) / base:>21.3f}x"
        )
    ours = min(results["aiorun"])
    for other in versus:
        if other in results:
            print(f"  aiorun / {other}: {ours / min(results[other]):.3f}x")
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
        "--only",
        choices=["shutdown", "neighbour", "neighbour-sigterm", "protection", "import", "idle"],
        help="run one measurement only",
    )
    parser.add_argument("--kinds", nargs="+", choices=["asyncio", "uvloop"], help="loop kinds")
    args = parser.parse_args()
    if args.child:
        job, *params = args.child
        fn = CHILD_JOBS[job]
        converted: list[Any] = [int(p) if p.isdigit() else p for p in params]
        print(fn(*converted))
        return

    rounds = args.rounds or (2 if args.quick else 7)
    sizes = args.sizes or ([1_000, 10_000] if args.quick else [100_000, 1_000_000])
    kinds = args.kinds or ["asyncio"] + (["uvloop"] if have_uvloop() else [])
    print(f"Python {sys.version.split()[0]}, {rounds} rounds; the original is {ORIGINAL}")
    with tempfile.TemporaryDirectory() as tmp:
        places = Places(Path(tmp))
        if args.only in (None, "shutdown"):
            shutdown(places, rounds, sizes, kinds)
        if args.only in (None, "neighbour"):
            neighbour_cost(places, rounds, 5 if args.quick else 50)
        if args.only in (None, "neighbour-sigterm"):
            neighbour_sigterm_cost(places, rounds, 5 if args.quick else 50)
        if args.only in (None, "protection"):
            protection(places, rounds, 10_000 if args.quick else 100_000)
        if args.only in (None, "import"):
            import_cost(places, rounds)
        if args.only in (None, "idle"):
            idle_cost(places, rounds, 2 if args.quick else 20)


def shutdown(places: Places, rounds: int, sizes: list[int], kinds: list[str]) -> None:
    for kind in kinds:
        for n in sizes:
            contenders: dict[str, Callable[[], float]] = {
                "floor": lambda n=n, kind=kind: child(places, "shutdown:floor", str(n), kind),
                "aiorun": lambda n=n, kind=kind: child(
                    places, "shutdown:aiorun", str(n), kind, str(places.ours)
                ),
                "aiorun, main first": lambda n=n, kind=kind: child(
                    places, "shutdown:aiorun", str(n), kind, str(places.ours), "main-first"
                ),
                "original": lambda n=n, kind=kind: child(
                    places, "shutdown:aiorun", str(n), kind, str(places.original)
                ),
                "asyncio.run": lambda n=n, kind=kind: child(
                    places, "shutdown:asyncio.run", str(n), kind
                ),
            }
            if sys.version_info < (3, 11):
                del contenders["asyncio.run"]  # no asyncio.Runner before 3.11
            results = measure(rounds if n < 1_000_000 else max(2, rounds // 2), contenders)
            report(
                f"shutdown, {n:,} idle tasks, {kind} loop (ms)",
                results,
                "floor",
                1e3,
                "ms",
                versus=("original", "asyncio.run"),
            )
            if "asyncio.run" in results:  # the same order: the main task first, alone
                ratio = min(results["aiorun, main first"]) / min(results["asyncio.run"])
                print(f"  aiorun, main first / asyncio.run: {ratio:.3f}x", flush=True)


def neighbour_cost(places: Places, rounds: int, runs: int) -> None:
    results = measure(
        rounds,
        {
            "asyncio.run": lambda: child(places, "neighbour", str(runs), "asyncio.run"),
            "aiorun": lambda: child(places, "neighbour", str(runs), "aiorun", str(places.ours)),
            "original": lambda: child(
                places, "neighbour", str(runs), "aiorun", str(places.original)
            ),
        },
    )
    report(
        "one run, another thread's loop holding 100,000 tasks (ms per run)",
        results,
        "asyncio.run",
        1e3,
        "ms",
        versus=("original",),
    )


def neighbour_sigterm_cost(places: Places, rounds: int, runs: int) -> None:
    def job(*how: str) -> Callable[[], float]:
        return lambda: child(places, "neighbour", str(runs), *how)

    contenders = {
        "asyncio.run": job("asyncio.run", "", "sigterm"),
        "aiorun": job("aiorun", str(places.ours), "sigterm"),
        "aiorun, main first": job("aiorun", str(places.ours), "sigterm", "main-first"),
        "original": job("aiorun", str(places.original), "sigterm"),
    }
    results = measure(rounds, contenders)
    report(
        f"one run stopped by SIGTERM, {FEW_TASKS} idle tasks, another thread's loop "
        "holding 100,000 tasks (ms per run)",
        results,
        "asyncio.run",
        1e3,
        "ms",
        versus=("original",),
    )
    ratio = min(results["aiorun, main first"]) / min(results["asyncio.run"])
    print(f"  aiorun, main first / asyncio.run: {ratio:.3f}x", flush=True)


def protection(places: Places, rounds: int, n: int) -> None:
    results = measure(
        rounds,
        {
            "create_task": lambda: child(places, "protect", str(n), "create_task"),
            "aiorun": lambda: child(places, "protect", str(n), "swf", str(places.ours)),
            "original": lambda: child(places, "protect", str(n), "swf", str(places.original)),
            "shield": lambda: child(places, "protect", str(n), "shield"),
        },
    )
    report(
        f"protection, {n:,} sequential awaits (ms)",
        results,
        "create_task",
        1e3,
        "ms",
        versus=("original",),
    )


def import_cost(places: Places, rounds: int) -> None:
    results = measure(
        rounds * 3,
        {
            "empty module": lambda: import_child(places, "empty_module", places.empty),
            "aiorun": lambda: import_child(places, "aiorun", places.ours),
            "original": lambda: import_child(places, "aiorun", places.original),
        },
    )
    report(
        "import, after asyncio (us)",
        results,
        "empty module",
        1e6,
        "us",
        versus=("original",),
    )


def idle_cost(places: Places, rounds: int, seconds: int) -> None:
    results = measure(
        rounds,
        {
            name: lambda name=name: child(places, "idle", str(seconds), name, str(places.ours))
            for name in ("plain", "watched")
        },
    )
    print(f"\nidle run of {seconds} s, CPU as a share of one core")
    for name, values in results.items():
        print(f"  {name:<28}{min(values) * 100:>10.3f}%{statistics.median(values) * 100:>10.3f}%")
    extra = statistics.median(results["watched"]) - statistics.median(results["plain"])
    print(f"  watching costs (medians): {extra * 100:.3f}% of a core")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
