"""Randomized applications, ended every way there is; nothing may be lost.

Each scenario is built from its seed alone: a failing one is reproduced by
its test id (``test_random_application[seed-N]``). ``AIORUN_STRESS_BASE``
shifts the seeds and ``AIORUN_STRESS_COUNT`` sets how many run, so that CI
can explore a different stretch on each interpreter.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from typing import Any

import pytest
from conftest import HAVE_UVLOOP, Child, assert_clean

BASE = int(os.environ.get("AIORUN_STRESS_BASE", "0"))
COUNT = int(os.environ.get("AIORUN_STRESS_COUNT", "60"))
ENDINGS = ["sigterm", "sigint", "stop", "exit", "error", "return"]
KINDS = [
    "idle",
    "slow_cleanup",
    "spawning_cleanup",
    "protected_awaited",
    "protected_fire_and_forget",
    "executor_job",
    "agen",
]
BOUND = 20.0  # seconds: every delay below is at most 0.3 s


def scenario(seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    items = []
    for n in range(rng.randint(1, 12)):
        kind = rng.choice(KINDS)
        item: dict[str, Any] = {
            "kind": kind,
            "name": f"{kind}-{n}",
            "delay": round(rng.uniform(0, 0.3), 3),
        }
        if kind == "spawning_cleanup":
            item["helpers"] = [round(rng.uniform(0, 0.2), 3) for _ in range(rng.randint(1, 3))]
        if kind == "agen":
            item["pause_outside"] = rng.random() < 0.5
        items.append(item)
    return {
        "items": items,
        # The seeds end each way in turn, so that 50 seeds cover them all.
        "ending": ENDINGS[seed % len(ENDINGS)],
        "status": rng.randint(2, 120),
        "loop": "uvloop" if HAVE_UVLOOP and rng.random() < 0.5 else "asyncio",
        # main() returning ends the run only with stop_on_main_exit.
        "main_exit": ENDINGS[seed % len(ENDINGS)] == "return" or rng.random() < 0.5,
    }


@pytest.mark.parametrize("seed", range(BASE, BASE + COUNT), ids=lambda s: f"seed-{s}")
def test_random_application(seed: int) -> None:
    spec = scenario(seed)
    started = time.monotonic()
    child = Child(
        "import runpy, sys; sys.argv[0] = 'tests/stress_app.py'; "
        "runpy.run_path('tests/stress_app.py', run_name='__main__')",
        json.dumps(spec),
    )
    child.wait_for("ready")
    ending = spec["ending"]
    if ending in ("sigterm", "sigint"):
        child.send(signal.SIGTERM if ending == "sigterm" else signal.SIGINT)
    out, err = child.finish(timeout=BOUND)
    context = f"seed {seed}: {json.dumps(spec)}\n--- stdout\n{out}\n--- stderr\n{err}"
    assert time.monotonic() - started < BOUND, context

    expected_status = {"exit": spec["status"], "error": 1}.get(ending, 0)
    assert child.returncode == expected_status, context
    if ending == "error":
        assert "RuntimeError: unhandled error under stop_on_unhandled_errors" in err, context

    lines = [line.split() for line in out.splitlines()]
    said = {tuple(words) for words in lines}
    if ending == "return":
        assert ("returned", "result") in said, context
    elif ending in ("sigterm", "sigint", "stop"):
        assert ("returned", "None") in said, context
    for item in spec["items"]:
        kind, name = item["kind"], item["name"]
        assert ("start", kind, name) in said, context
        if kind in ("slow_cleanup", "spawning_cleanup"):
            assert ("cleanup-start", name) in said, context
            assert ("cleanup-end", name) in said, context
        elif kind.startswith("protected"):
            assert ("protected-end", name) in said, context
        elif kind == "executor_job":
            assert ("job-end", name) in said, context
        elif kind == "agen":
            assert ("agen-closed", name) in said, context
    helpers = {words[1] for words in lines if words[0] == "helper-start"}
    assert helpers == {words[1] for words in lines if words[0] == "helper-end"}, context
    assert lines[-1][:2] == ["handlers-restored", "True"], context
    assert_clean(err)


def test_scenarios_cover_every_ending_and_ingredient() -> None:
    specs = [scenario(seed) for seed in range(BASE, BASE + COUNT)]
    assert COUNT >= 50
    assert {s["ending"] for s in specs} == set(ENDINGS)
    both = {(ending, flag) for ending in ENDINGS[:-1] for flag in (False, True)}
    assert {(s["ending"], s["main_exit"]) for s in specs} >= both
    assert {i["kind"] for s in specs for i in s["items"]} == set(KINDS)
    assert len({json.dumps(s, sort_keys=True) for s in specs}) == COUNT
