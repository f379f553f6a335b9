"""shutdown_waits_for(): work the shutdown waits for instead of cancelling.

    .venv/bin/python examples/shield_demo.py [SECONDS_PER_STEP]

Press Ctrl-C before it counts to 9: main() is cancelled at once ("oh noes!"),
the protected count carries on to "done!", then the program exits.
"""

import asyncio
import sys

from aiorun import run, shutdown_waits_for


async def count(step: float) -> None:
    for i in range(10):
        print(i, flush=True)
        await asyncio.sleep(step)
    print("done!", flush=True)


async def main(step: float) -> None:
    try:
        await shutdown_waits_for(count(step))
    except asyncio.CancelledError:
        print("oh noes!", flush=True)
        raise


if __name__ == "__main__":
    run(main(float(sys.argv[1]) if len(sys.argv) > 1 else 1.0))
