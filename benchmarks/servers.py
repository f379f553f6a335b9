"""A real HTTP server under load, stopped by SIGTERM: what is lost, how fast.

    python benchmarks/servers.py            # 5 rounds
    python benchmarks/servers.py --quick    # 1 round: a smoke test

The server is an aiohttp application (installed for the run into a
directory of its own, as the original aiorun 2025.1.1 is) whose handler
answers "accepted", works for a second, then answers "done". A client on
loopback opens LOAD requests at once; when every one has been accepted it
sends SIGTERM, and counts the requests that never got "done" (lost) and
the time from the signal to the process's exit.

Contenders, each a way aiorun's users write servers, with this aiorun and
with the original, and aiohttp's own runner for reference:

- drain: the shutdown_callback stops the sites and waits for the handlers
  (``await runner.cleanup()``); with this aiorun, shutdown_timeout=10.
- drain-plain: the same, from a plain function that returns the coroutine
  of ``runner.cleanup()``.
- cancel-cleanup: main() waits forever and cleans up on CancelledError
  (the original README's pattern).
- web.run_app(shutdown_timeout=10): aiohttp's own runner.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import Places, _only_contender_on_path

LOAD = 40
WORK = 1.0

SERVER = """
import asyncio, sys
from aiohttp import web

async def slow(request):
    response = web.StreamResponse()
    await response.prepare(request)
    await response.write(b"accepted\\n")
    await asyncio.sleep(WORK)
    await response.write(b"done\\n")
    await response.write_eof()
    return response

app = web.Application()
app.router.add_get("/", slow)
runner = web.AppRunner(app, shutdown_timeout=10)

async def start():
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print("ready", site._server.sockets[0].getsockname()[1], flush=True)
"""

STYLES = {
    "drain": """
async def main():
    await start()

async def drain(loop):
    await runner.cleanup()

run(main(), shutdown_callback=drain, **EXTRA)
""",
    "drain-plain": """
async def main():
    await start()

def drain(loop):  # a plain function returning the coroutine
    return runner.cleanup()

run(main(), shutdown_callback=drain, **EXTRA)
""",
    "cancel-cleanup": """
async def main():
    await start()
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        await runner.cleanup()
        raise

run(main())
""",
    "web.run_app": """
import socket
sock = socket.socket()
sock.bind(("127.0.0.1", 0))
port = sock.getsockname()[1]
# run_app calls print() once its site listens: that is the readiness line.
web.run_app(app, sock=sock, shutdown_timeout=10, print=lambda _: print("ready", port, flush=True))
""",
}


def serve(style: str, where: str) -> None:
    """The child: run one contender's server."""
    namespace: dict[str, object] = {"WORK": WORK}
    if where:
        _only_contender_on_path(where)
        import aiorun

        namespace["run"] = aiorun.run
        is_ours = "shutdown_timeout" in aiorun.run.__code__.co_varnames
        namespace["EXTRA"] = {"shutdown_timeout": 10} if is_ours else {}
    code = SERVER + STYLES[style]
    exec(compile(textwrap.dedent(code), f"<server {style}>", "exec"), namespace)


async def load(port: int, proc: subprocess.Popen[bytes]) -> tuple[int, float]:
    async def one() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        await writer.drain()
        while (await reader.readline()) not in (b"accepted\n", b""):
            pass  # status line, headers, chunk sizes
        return reader, writer

    connections = await asyncio.gather(*(one() for _ in range(LOAD)))
    proc.send_signal(signal.SIGTERM)
    sent = time.perf_counter()

    async def finished(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        try:
            while True:
                line = await reader.readline()
                if line == b"done\n":
                    return True
                if not line:
                    return False
        except ConnectionError:
            return False
        finally:
            writer.close()

    done = await asyncio.gather(*(finished(r, w) for r, w in connections))
    await asyncio.get_running_loop().run_in_executor(None, proc.wait)
    return LOAD - sum(done), time.perf_counter() - sent


def one_round(
    places: Places, aiohttp_dir: Path, style: str, where: Path | None
) -> tuple[int, float]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(aiohttp_dir)
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", style, str(where or "")],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=places.cwd,
        env=env,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    assert line, "the server died before it was ready"
    assert line[0] == b"ready", line
    try:
        return asyncio.run(load(int(line[1]), proc))
    finally:
        proc.kill()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one round")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--serve", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(*args.serve)
        return
    rounds = args.rounds or (1 if args.quick else 5)
    with tempfile.TemporaryDirectory() as tmp:
        places = Places(Path(tmp))
        aiohttp_dir = Path(tmp, "aiohttp")
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--target", str(aiohttp_dir), "aiohttp"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        version = subprocess.run(
            [sys.executable, "-c", "import aiohttp; print(aiohttp.__version__)"],
            env={**os.environ, "PYTHONPATH": str(aiohttp_dir)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        print(
            f"Python {sys.version.split()[0]}, aiohttp {version}, {rounds} rounds, "
            f"{LOAD} requests of {WORK:g} s in flight at SIGTERM"
        )
        contenders = {
            "aiorun, drain": ("drain", places.ours),
            "original, drain": ("drain", places.original),
            "aiorun, drain-plain": ("drain-plain", places.ours),
            "original, drain-plain": ("drain-plain", places.original),
            "aiorun, cancel-cleanup": ("cancel-cleanup", places.ours),
            "original, cancel-cleanup": ("cancel-cleanup", places.original),
            "web.run_app": ("web.run_app", None),
        }
        results: dict[str, list[tuple[int, float]]] = {name: [] for name in contenders}
        for _ in range(rounds):
            for name, (style, where) in contenders.items():
                results[name].append(one_round(places, aiohttp_dir, style, where))
        print(f"\n  {'contender':<28}{'lost (worst)':>14}{'SIGTERM to exit (median)':>28}")
        for name, values in results.items():
            lost = max(v[0] for v in values)
            times = sorted(v[1] for v in values)
            median = times[len(times) // 2]
            print(f"  {name:<28}{f'{lost} of {LOAD}':>14}{median * 1e3:>25.0f} ms")


if __name__ == "__main__":
    main()
