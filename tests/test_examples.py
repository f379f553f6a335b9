"""Every example runs as documented, from a checkout."""

from __future__ import annotations

import signal
import socket
import sys
from pathlib import Path

import pytest
from conftest import REPO, Child, assert_clean

EXAMPLES = REPO / "examples"


def example(name: str, *args: str) -> Child:
    return Child.script(EXAMPLES / name, *args)


def test_demo_ends_by_itself_with_the_whole_shutdown() -> None:
    demo = example("demo.py")
    out, err = demo.finish()
    assert demo.returncode == 0, err
    assert "report saved" in out
    assert out.count("clean\n") == 3
    assert "run() returned" in out
    assert "aiorun: Leaving. Bye!" in err
    assert_clean(err)


def test_echo_client_talks_to_echo_server_which_ends_on_ctrl_c() -> None:
    server = example("echo_server.py", "0")
    line = server.readline()  # readiness: the server prints its port
    assert line.startswith("Serving on"), line + server.finish()[1]
    port = line.split()[-1]
    client = example("echo_client.py", port, "hello aiorun")
    out, err = client.finish()
    assert client.returncode == 0, err
    assert "Received: 'hello aiorun'" in out
    server.send(signal.SIGINT)
    out, err = server.finish()
    assert server.returncode == 0, err
    assert "Received 'hello aiorun'" in out
    assert_clean(err)


def test_stop_on_unhandled_error_in_main() -> None:
    proc = example("stop_unhandled.py")
    _, err = proc.finish()
    assert proc.returncode == 1
    assert err.rstrip().endswith("Exception: ouch")
    assert "Unhandled exception; stopping loop" in err


def test_stop_on_unhandled_error_in_a_task_on_your_loop() -> None:
    proc = example("stop_unhandled_task.py")
    _, err = proc.finish()
    assert proc.returncode == 1
    assert err.rstrip().endswith("Exception: ouch")
    assert "Unhandled exception; stopping loop: 'Task exception was never retrieved'" in err
    assert_clean(err)


def test_custom_handler_stops_the_loop_and_others_are_cancelled() -> None:
    proc = example("stop_custom_handler.py")
    out, err = proc.finish()
    assert proc.returncode == 0, err
    assert out.splitlines() == ["Stopping loop due to error: ouch", "other_job was cancelled!"]
    assert_clean(err)


def test_refused_combination_says_why() -> None:
    proc = example("stop_unhandled_illegal.py")
    _, err = proc.finish()
    assert proc.returncode == 1
    assert "parameter is unavailable" in err
    assert_clean(err)  # the refused coroutine is closed: no "never awaited"


def test_shield_demo_finishes_protected_work_after_ctrl_c() -> None:
    proc = example("shield_demo.py", "0.05")
    assert proc.readline() == "0\n"  # readiness: counting has begun
    proc.send(signal.SIGINT)
    out, err = proc.finish()
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert "oh noes!" in lines
    assert lines[-1] == "done!"
    assert lines.index("oh noes!") < lines.index("9")
    assert_clean(err)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.TaskGroup came with 3.11")
def test_taskgroup_workers_clean_up_before_the_heartbeat_is_cancelled() -> None:
    proc = example("taskgroup_workers.py")
    line = proc.readline()  # readiness: the workers are running
    assert line.startswith("ready: pid"), line + proc.finish()[1]
    proc.send(signal.SIGTERM)
    out, err = proc.finish()
    assert proc.returncode == 0, err
    lines = out.splitlines()[1:]
    # Each worker is told first (after how many jobs depends on the timing),
    # then each cleans up in its own time, then main() ends, and only then
    # is the task outside the group cancelled.
    assert sorted(line.split(":")[0] for line in lines[:3]) == ["worker 1", "worker 2", "worker 3"]
    assert all(line.endswith("jobs, flushing its results") for line in lines[:3]), lines
    assert lines[3:] == [
        "worker 1: clean",
        "worker 2: clean",
        "worker 3: clean",
        "main: every worker is clean, the task group has closed",
        "heartbeat: cancelled (aiorun shutdown: signal SIGTERM); main() ended: True",
        "run() returned None",
    ], lines
    assert_clean(err)


def test_systemd_service_is_ready_names_a_blocked_loop_and_stops(tmp_path: Path) -> None:
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(10)
    try:
        service = Child(
            (EXAMPLES / "systemd_service.py").read_text(),
            "0",
            env={"NOTIFY_SOCKET": str(tmp_path / "notify")},
        )
        port = int(service.readline().split()[-1])  # readiness: the port
        assert notify.recv(100) == b"STATUS=serving"
        assert notify.recv(100) == b"READY=1"
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            client.sendall(b"block\n")
            assert client.recv(10) == b"ok\n"
        service.send(signal.SIGTERM)
        _, err = service.finish()
        assert notify.recv(100).startswith(b"STOPPING=1\nEXTEND_TIMEOUT_USEC=")
    finally:
        notify.close()
    assert service.returncode == 0, err
    assert "its thread is at <string>:28 in handle" in err, err
    assert "The event loop ran again after 2." in err
    assert_clean(err)
