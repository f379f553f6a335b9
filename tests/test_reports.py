"""Reports on stuck and abandoned work stay small, whatever the application holds."""

from __future__ import annotations

import signal

import pytest
from conftest import STUBBORN, Child

# Log records are cut or dropped past a few dozen KiB on their way to a
# person (journald, docker's json-file driver, log services).
MOST_RECORD = 16 * 1024
MOST_ERROR = 2 * 1024

CHILD = (
    STUBBORN
    + """
import asyncio, logging, sys
from aiorun import run

sizes = []

class Measure(logging.Handler):
    def emit(self, record):
        sizes.append((len(self.format(record)), record.getMessage()[:60]))

logging.basicConfig()  # to stderr, as an operator sees it
logging.getLogger("aiorun").addHandler(Measure())
kind, shape = sys.argv[1], sys.argv[2]

async def also_stubborn(event):
    while True:
        try:
            await event.wait()
        except asyncio.CancelledError:
            pass

async def node(children):
    await asyncio.gather(*children)

async def main():
    if shape == "many":
        event = asyncio.Event()
        for i in range(20_000):
            asyncio.ensure_future(stubborn() if i % 4 else also_stubborn(event))
    else:  # awaiting each other through gather(), 18 levels of 2
        level = [asyncio.ensure_future(stubborn()) for _ in range(2)]
        for _ in range(17):
            level = [asyncio.ensure_future(node(level)) for _ in range(2)]
    await asyncio.sleep(0)
    print("ready", flush=True)
    await asyncio.sleep(3600)

try:
    if kind == "stuck":
        run(main(), timeout_task_shutdown=0.5)
    else:
        run(main(), timeout_task_shutdown=60, shutdown_timeout=1)
except TimeoutError as exc:
    print("error", len(str(exc)), flush=True)
    print(str(exc)[:MOST_ERROR], file=sys.stderr)
for size, start in sizes:
    print("record", size, start, flush=True)
""".replace("MOST_ERROR", str(MOST_ERROR))
)


@pytest.mark.parametrize("shape", ["many", "dag"])
@pytest.mark.parametrize("kind", ["stuck", "abandoned"])
def test_reports_are_bounded(kind: str, shape: str) -> None:
    child = Child(CHILD, kind, shape, dev=False)
    child.wait_for("ready")
    child.send(signal.SIGTERM)
    out, err = child.finish(timeout=60)
    assert child.returncode == 0, err[-4000:]
    records = [line.split(" ", 2) for line in out.splitlines() if line.startswith("record ")]
    assert records, out
    for _, size, start in records:
        assert int(size) < MOST_RECORD, (size, start)
    report = next(r for r in records if "refused to exit" in r[2] or "Abandoned" in r[2])
    assert report
    if kind == "abandoned":
        (error,) = [line for line in out.splitlines() if line.startswith("error ")]
        assert int(error.split()[1]) < MOST_ERROR, err
    if shape == "many":
        # Two kinds of task, two lines, each with its count.
        assert "20000 tasks (0 protected by shutdown_waits_for()) in 2 groups" in err, err[:3000]
        assert "- 15000 x stubborn(), suspended at " in err
        assert "- 5000 x also_stubborn(), suspended at " in err
