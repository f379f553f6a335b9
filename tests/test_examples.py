"""Every example runs as documented, from a checkout."""

from __future__ import annotations

import signal
import subprocess
import sys

from conftest import REPO, assert_clean

EXAMPLES = REPO / "examples"


def start(name: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-W", "error", str(EXAMPLES / name), *args],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 30) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"{proc.args} did not exit:\n{out}\n{err}") from None


def test_demo_ends_by_itself_with_the_whole_shutdown() -> None:
    out, err = finish(start("demo.py"))
    assert "report saved" in out
    assert out.count("clean\n") == 3
    assert "run() returned" in out
    assert "aiorun: Leaving. Bye!" in err
    assert_clean(err)


def test_echo_client_talks_to_echo_server_which_ends_on_ctrl_c() -> None:
    server = start("echo_server.py", "0")
    assert server.stdout is not None
    line = server.stdout.readline()  # readiness: the server prints its port
    assert line.startswith("Serving on"), line + finish(server)[1]
    port = line.split()[-1]
    client = start("echo_client.py", port, "hello aiorun")
    out, err = finish(client)
    assert client.returncode == 0, err
    assert "Received: 'hello aiorun'" in out
    server.send_signal(signal.SIGINT)
    out, err = finish(server)
    assert server.returncode == 0, err
    assert "Received 'hello aiorun'" in out
    assert_clean(err)


def test_stop_on_unhandled_error_in_main() -> None:
    proc = start("stop_unhandled.py")
    _, err = finish(proc)
    assert proc.returncode == 1
    assert err.rstrip().endswith("Exception: ouch")
    assert "Unhandled exception; stopping loop" in err


def test_stop_on_unhandled_error_in_a_task_on_your_loop() -> None:
    proc = start("stop_unhandled_task.py")
    _, err = finish(proc)
    assert proc.returncode == 1
    assert err.rstrip().endswith("Exception: ouch")
    assert "Unhandled exception; stopping loop: 'Task exception was never retrieved'" in err
    assert_clean(err)


def test_custom_handler_stops_the_loop_and_others_are_cancelled() -> None:
    proc = start("stop_custom_handler.py")
    out, err = finish(proc)
    assert proc.returncode == 0, err
    assert out.splitlines() == ["Stopping loop due to error: ouch", "other_job was cancelled!"]
    assert_clean(err)


def test_refused_combination_says_why() -> None:
    proc = start("stop_unhandled_illegal.py")
    _, err = finish(proc)
    assert proc.returncode == 1
    assert "parameter is unavailable" in err
    assert_clean(err)  # the refused coroutine is closed: no "never awaited"


def test_shield_demo_finishes_protected_work_after_ctrl_c() -> None:
    proc = start("shield_demo.py", "0.05")
    assert proc.stdout is not None
    assert proc.stdout.readline() == "0\n"  # readiness: counting has begun
    proc.send_signal(signal.SIGINT)
    out, err = finish(proc)
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert "oh noes!" in lines
    assert lines[-1] == "done!"
    assert lines.index("oh noes!") < lines.index("9")
    assert_clean(err)
