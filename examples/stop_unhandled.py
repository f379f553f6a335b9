"""An error nobody handles ends the program, after a full shutdown.

.venv/bin/python examples/stop_unhandled.py     # exits 1 with the traceback of "ouch"
"""

from aiorun import run


async def main() -> None:
    raise Exception("ouch")


if __name__ == "__main__":
    run(main(), stop_on_unhandled_errors=True)
