"""The README's code runs: its Python blocks, its quick start, its claims."""

from __future__ import annotations

import re
import signal
import sys

import pytest
from conftest import REPO, Child, assert_clean, require_uvloop

README = (REPO / "README.rst").read_text()
BLOCKS = re.findall(r"\.\. code-block:: python\n\n((?:   .*\n|\n)+)", README)
# These serve or count until Ctrl-C; they get one once they have started.
LONG_RUNNING = ("serve_forever", "for i in range(10)")


def test_readme_has_python_blocks() -> None:
    assert len(BLOCKS) >= 7


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs(index: int) -> None:
    code = "\n".join(line[3:] for line in BLOCKS[index].splitlines())
    compile(code, f"README block {index}", "exec")
    if any(marker in code for marker in LONG_RUNNING):
        return  # the same programs are examples/, run by test_examples.py
    if "asyncio.TaskGroup" in code and sys.version_info < (3, 11):
        pytest.skip("asyncio.TaskGroup came with 3.11")
    if "use_uvloop=True" in code:
        require_uvloop()
    child = Child(code)
    out, err = child.finish()
    if "stop_on_unhandled_errors=True" in code:
        assert child.returncode == 1
        assert err.rstrip().endswith("Exception: ouch")
    else:
        assert child.returncode == 0, err
    if "stop_on_main_exit=True" in code:  # main's result, handed back by run()
        assert out.splitlines()[-1] in ("total: 90", "exported 120 rows"), out
    assert_clean(err)


def test_quick_start_is_two_commands() -> None:
    section = README.split("Quick start\n-----------\n")[1].split("\n\n\n")[0]
    block = section.split(".. code-block:: console\n\n")[1].split("\n\n")[0]
    commands = [line.strip() for line in block.splitlines()]
    assert commands == [
        "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/python examples/demo.py",
        ".venv/bin/pip install -e '.[test,uvloop]' && .venv/bin/python -m pytest",
    ]
    ci = (REPO / ".ci" / "run").read_text()
    for command in commands:
        assert command in ci


def test_readme_states_the_performance_table() -> None:
    assert "PERFORMANCE_" not in README
    assert "shutdown, 100,000 idle tasks" in README


def test_readme_fits_its_budget() -> None:
    assert len(README) <= 25_000


def test_every_example_says_how_to_run_it_from_the_quick_start() -> None:
    for example in sorted((REPO / "examples").glob("*.py")):
        usage = example.read_text().split("\n\n")[1]
        assert f".venv/bin/python examples/{example.name}" in usage, example.name


def test_sigint_on_the_protection_example_behaves_as_described() -> None:
    child = Child.script(REPO / "examples" / "shield_demo.py", "0.02")
    child.wait_for("0")
    child.send(signal.SIGINT)
    out, err = child.finish()
    assert child.returncode == 0, err
    assert "oh noes!" in out
    assert out.rstrip().endswith("done!")
