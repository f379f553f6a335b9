"""Every example runs as documented, from a checkout."""

from __future__ import annotations

import http.client
import signal
import socket
import sys
import threading
import time
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


class HttpClients:
    """Clients on loopback that send GET / over and over, each from its own thread.

    Each client keeps its connection open between requests, as browsers and
    proxies do, and opens a new one when the server has closed it.
    """

    def __init__(self, port: int, count: int) -> None:
        self.port = port
        self.served = 0
        self.failed_before_signal: list[str] = []
        self.signalled = threading.Event()
        self.lock = threading.Lock()
        self.traffic_flows = threading.Event()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.loop, daemon=True) for _ in range(count)]
        for thread in self.threads:
            thread.start()

    def loop(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        while not self.stop.is_set():
            try:
                conn.request("GET", "/")
                response = conn.getresponse()
                body = response.read()
                if response.status != 200 or body != b"hello\n":
                    raise OSError(f"{response.status} {body!r}")
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                if not self.signalled.is_set():
                    with self.lock:
                        self.failed_before_signal.append(repr(exc))
                # Refused or reset after the signal: the server is going.
                # Clients keep trying until the test stops them, as real ones do.
                time.sleep(0.001)  # pacing the retries, not waiting for anything
                continue
            with self.lock:
                self.served += 1
                if self.served >= 500:
                    self.traffic_flows.set()
        conn.close()

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=15)


def slow_request(port: int, seconds: float, result: list[object]) -> None:
    """GET /slow in a thread: what it got, status and body, goes into ``result``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", f"/slow?seconds={seconds}")
        response = conn.getresponse()
        result.append((response.status, response.read()))
    except (OSError, http.client.HTTPException) as exc:
        result.append(exc)
    finally:
        conn.close()


def test_aiohttp_app_finishes_the_request_in_flight_under_load_on_sigterm() -> None:
    app = example("aiohttp_app.py", "0")
    line = app.readline()  # readiness: the server prints its port
    assert line.startswith("Serving on port"), line + app.finish()[1]
    port = int(line.split()[-1])
    clients = HttpClients(port, 32)
    try:
        assert clients.traffic_flows.wait(30), f"only {clients.served} requests were served"
        result: list[object] = []
        slow = threading.Thread(target=slow_request, args=(port, 2, result))
        slow.start()
        line = app.readline()  # readiness: the slow request is being handled
        assert line.startswith("slow request: working"), line + app.finish()[1]
        clients.signalled.set()
        app.send(signal.SIGTERM)
        sent = time.monotonic()
        out, err = app.finish(timeout=60)
        gone = time.monotonic() - sent
        slow.join(timeout=30)
    finally:
        clients.close()
        if app.returncode is None:  # a check above failed: do not leave the server running
            app.proc.kill()
            app.finish()
    assert app.returncode == 0, out + err
    assert clients.failed_before_signal == [], clients.failed_before_signal[:5]
    # The request in flight was not cut: runner.cleanup() in shutdown_callback
    # waited for it before run() cancelled any task.
    assert result == [(200, b"done\n")], result
    assert "clean-up done" in out, out
    # Two seconds of work were left, and the clean-up takes little more. A
    # clean-up that hung would last until shutdown_timeout (25 seconds).
    assert gone < 10, gone
    assert_clean(out + err)
