"""run(systemd_notify=True) under a real systemd, as Type=notify services.

Each Debian release boots once, in a container whose PID 1 is systemd
(``systemd-nspawn --boot``, on an overlay of the tree that ``.ci/nspawn``
caches, with a network of its own). aiorun is installed from this checkout,
bind-mounted read-only at /src, in a venv of the container's own python3.
The tests install their units, and talk to the container's systemd through
``nsenter``: the host's PID 1 is not systemd, so ``machinectl`` cannot.

The tests need root and systemd-nspawn. Elsewhere they skip, unless
AIORUN_REQUIRE_SYSTEMD=1 is set (as in CI), where they fail. They boot
containers, so the ordinary runs deselect them (the ``systemd`` marker,
in pyproject.toml) and CI runs them once:

    pytest -m systemd tests/test_systemd_real.py
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import signal
import subprocess
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO

# Booting a release whose tree is not cached yet takes a few minutes.
pytestmark = [pytest.mark.systemd, pytest.mark.timeout(600)]

SYSTEMD = {"bookworm": "252", "trixie": "257"}  # each release's systemd
NSPAWN = REPO / ".ci" / "nspawn"
CACHE = os.environ.get("AIORUN_NSPAWN", "/var/cache/aiorun-nspawn")  # as .ci/nspawn has it
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
VENV = "/opt/aiorun"  # aiorun from /src, for the tests' own program
APP = "/opt/test/app.py"
GATES = "/var/lib/aiorun-test"  # files that the program waits for

# The program under test. Its first argument picks what it does.
PROGRAM = """\
import asyncio, logging, os, signal, sys, time
from aiorun import run

case = sys.argv[1]
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
log = logging.getLogger("app")


async def gate(name):
    # The test creates the file when it has seen what it looks for.
    while not os.path.exists(os.path.join("GATES", name)):
        await asyncio.sleep(0.05)


def wait_in_thread(name):
    while not os.path.exists(os.path.join("GATES", name)):
        time.sleep(0.05)


async def holds_on(name):
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        await gate(name)
        raise


def block():
    time.sleep(60)  # the blocking line


async def main():
    loop = asyncio.get_running_loop()
    if case == "slow-ready":
        await asyncio.sleep(2)
    if case == "raises":
        raise ValueError("not ready")
    if case == "gated":
        asyncio.ensure_future(holds_on("task"))
        loop.run_in_executor(None, wait_in_thread, "executor")
    if case == "watchdog":
        loop.add_signal_handler(signal.SIGUSR1, block)
    log.info("main returns")


async def callback(loop):
    log.info("shutdown_callback starts")
    if case == "gated":
        await gate("callback")
    if case == "slow-stop":
        await asyncio.sleep(4)  # twice TimeoutStopSec, within shutdown_timeout
    log.info("shutdown_callback ends")


run(
    main(),
    shutdown_callback=callback,
    shutdown_timeout=10,
    systemd_notify=True,
    warn_blocked_loop=0.5,
)
""".replace('"GATES"', repr(GATES))


def require_systemd() -> None:
    """Skip where no systemd can be booted; fail instead with AIORUN_REQUIRE_SYSTEMD=1."""
    missing = None
    if os.geteuid() != 0:
        missing = "booting a container needs root"
    elif shutil.which("systemd-nspawn") is None:
        missing = "systemd-nspawn is not installed (package systemd-container)"
    elif not (shutil.which("debootstrap") or shutil.which("apt-get") or Path(CACHE).is_dir()):
        missing = "no cached tree, and neither debootstrap nor apt-get to make one"
    if missing is not None:
        if os.environ.get("AIORUN_REQUIRE_SYSTEMD") == "1":  # CI: never skip in silence
            pytest.fail(f"{missing}, and AIORUN_REQUIRE_SYSTEMD=1 is set")
        pytest.skip(missing)


def _power_off_with_parent() -> None:
    # If pytest dies (its timeout ends it with os._exit), nspawn gets a
    # SIGTERM, on which it powers the container off. A SIGKILL would end
    # nspawn alone, and leave the container running.
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Machine:
    """One booted container of a Debian release, and the way into it."""

    def __init__(self, release: str) -> None:
        self.release = release
        self.name = f"aiorun-{release}-{os.getpid()}"
        self.dir = Path(tempfile.mkdtemp(prefix=f"{self.name}-", dir="/var/tmp"))
        self.root = self.dir / "root"
        self.nspawn: subprocess.Popen[bytes] | None = None
        self.leader = 0  # the container's PID 1, as the host numbers it
        self.cursors: dict[str, str] = {}  # where each unit's journal starts for a test

    # --- boot, and power off ----------------------------------------------------

    def boot(self) -> None:
        tree = self._tree()
        # An overlay keeps the cached tree as it is.
        for part in ("upper", "work", "root"):
            (self.dir / part).mkdir()
        options = f"lowerdir={tree},upperdir={self.dir / 'upper'},workdir={self.dir / 'work'}"
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o", options, self.root], check=True)
        self._copy_host_configuration()
        self._start()
        self._wait_until_booted()
        version = self.systemctl("--version").split()[1]
        assert version == SYSTEMD[self.release], f"{self.release} has systemd {version}"
        self.install(f"python3 -m venv {VENV} && {VENV}/bin/pip install -q /src")
        self.write(APP, PROGRAM)

    def _tree(self) -> Path:
        subprocess.run(["bash", NSPAWN, "tree", self.release], check=True, timeout=900)
        path = subprocess.run(
            ["bash", NSPAWN, "path", self.release], check=True, capture_output=True, text=True
        ).stdout.strip()
        return Path(path)

    def _copy_host_configuration(self) -> None:
        # pip in the container reaches PyPI as the host does: its CA bundle
        # and its configuration (an index, a constraint file) travel along.
        for path in ("/etc/ssl/certs/ca-certificates.crt", "/etc/pip.conf", "/etc/xdg/pip"):
            source, target = Path(path), self.root / path.lstrip("/")
            if source.is_dir():
                shutil.copytree(source, target, dirs_exist_ok=True)
            elif source.is_file():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(source, target)

    def _start(self) -> None:
        # nspawn makes the container's cgroups below its own: a cgroup of
        # its own keeps two containers from sharing them.
        cgroups = [Path(f"/sys/fs/cgroup/{h}/{self.name}") for h in ("unified", "systemd")]
        enter = "".join(
            f"echo $$ > {cgroup}/cgroup.procs && " for cgroup in cgroups if cgroup.parent.is_dir()
        )
        for cgroup in cgroups:
            if cgroup.parent.is_dir():
                cgroup.mkdir()
        argv = [
            "systemd-nspawn",
            "--quiet",
            "--boot",
            f"--directory={self.root}",
            f"--machine={self.name}",
            # No machined, no system bus on the host: nothing to register with.
            "--register=no",
            "--keep-unit",
            "--private-network",  # the services' ports are the container's own
            "--console=read-only",
            f"--bind-ro={REPO}:/src",
        ]
        self.log = open(self.dir / "console.log", "wb")  # noqa: SIM115
        self.nspawn = subprocess.Popen(
            ["sh", "-c", f'{enter}exec "$@"', "nspawn", *argv],
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            preexec_fn=_power_off_with_parent,
        )

    def _wait_until_booted(self) -> None:
        deadline = time.monotonic() + 60
        while not self.leader:
            self.leader = self._find_leader()
            if self.nspawn is not None and self.nspawn.poll() is not None:
                pytest.fail(f"systemd-nspawn ended at once:\n{self.console()}")
            if time.monotonic() > deadline:
                pytest.fail(f"the container's PID 1 did not start:\n{self.console()}")
            time.sleep(0.05)  # a poll, bounded by the deadline
        # systemctl answers once the manager listens, which is a little
        # after PID 1 starts; --wait then waits for the boot to end.
        while True:
            state = self.run(["systemctl", "is-system-running", "--wait"], check=False, timeout=60)
            if state.stdout.strip() in ("running", "degraded"):
                return
            if time.monotonic() > deadline:
                failed = self.run(["systemctl", "--failed", "--no-legend"], check=False).stdout
                pytest.fail(
                    f"the container did not boot: {state.stdout}{state.stderr}{failed}\n"
                    + self.console()
                )
            time.sleep(0.05)  # a poll, bounded by the deadline

    def _find_leader(self) -> int:
        """The process whose number in its own PID namespace is 1, below nspawn."""
        assert self.nspawn is not None
        for child in Path(f"/proc/{self.nspawn.pid}/task").glob("*/children"):
            for pid in child.read_text().split():
                status = Path(f"/proc/{pid}/status").read_text()
                numbers = re.search(r"^NSpid:\s+(.*)$", status, re.M)
                if numbers and numbers.group(1).split()[-1] == "1":
                    return int(pid)
        return 0

    def console(self) -> str:
        return (self.dir / "console.log").read_text(errors="replace")[-3000:]

    def close(self) -> None:
        """Power the container off from inside; kill it if it does not go."""
        try:
            self._power_off()
        finally:
            if self.nspawn is not None:
                self.log.close()
            _remove(self.dir, self.name)

    def _power_off(self) -> None:
        if self.nspawn is None or self.nspawn.poll() is not None:
            return
        try:
            poweroff = ["systemctl", "poweroff"]
            asked = self.leader != 0 and self.run(poweroff, check=False).returncode == 0
            # A container that could not be asked (still booting, say) is killed at once.
            self.nspawn.wait(timeout=30 if asked else 0.1)
        except subprocess.TimeoutExpired:
            # The last resort. A PID namespace ends with its PID 1, and
            # nspawn with its container.
            if self.leader:
                os.kill(self.leader, signal.SIGKILL)
            self.nspawn.kill()
            self.nspawn.wait(timeout=30)

    # --- inside -------------------------------------------------------------------

    def run(
        self, argv: list[str], check: bool = True, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        """A command in the container, with a clean environment."""
        result = subprocess.run(
            [
                "nsenter",
                "-t",
                str(self.leader),
                "-a",
                "env",
                "-i",
                f"PATH={PATH}",
                "LANG=C.UTF-8",
                *argv,
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if check and result.returncode != 0:
            pytest.fail(f"{argv} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
        return result

    def install(self, script: str, cwd: str = "/") -> None:
        """A shell script in the container but on the host's network, for pip."""
        env = {
            "PATH": PATH,
            "LANG": "C.UTF-8",
            "HOME": "/root",
            "PIP_CERT": "/etc/ssl/certs/ca-certificates.crt",
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            "PIP_NO_INPUT": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        namespaces = ["--mount", "--uts", "--ipc", "--pid"]  # not --net
        result = subprocess.run(
            [
                *("nsenter", "-t", str(self.leader), *namespaces, "env", "-i"),
                *(f"{k}={v}" for k, v in env.items()),
                *("sh", "-ec", f"cd {cwd}\n{script}"),
            ],
            capture_output=True,
            text=True,
            timeout=300,
            stdin=subprocess.DEVNULL,
        )
        if result.returncode != 0:
            pytest.fail(f"{script!r} failed in {cwd}:\n{result.stdout}{result.stderr}")

    def write(self, path: str, text: str) -> None:
        target = self.root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)

    def systemctl(self, *args: str, check: bool = True, timeout: float = 30) -> str:
        return self.run(["systemctl", *args], check=check, timeout=timeout).stdout

    def show(self, unit: str, *properties: str) -> dict[str, str]:
        out = self.systemctl("show", unit, *(f"--property={p}" for p in properties))
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def poll(self, unit: str, prop: str, wanted: str | tuple[str, ...], within: float) -> float:
        """Wait until ``prop`` of ``unit`` is ``wanted``; return when, on the host's clock."""
        wanted = (wanted,) if isinstance(wanted, str) else wanted
        deadline = time.monotonic() + within
        while True:
            value = self.show(unit, prop)[prop]
            if value in wanted:
                return time.monotonic()
            if time.monotonic() > deadline:
                pytest.fail(
                    f"{unit}: {prop}={value!r} after {within} s, not {wanted}\n"
                    + self.journal(unit)
                )
            time.sleep(0.02)  # a poll, bounded by the deadline

    def mark(self, unit: str) -> None:
        """Let journal() show only what ``unit`` logs from now on, not an earlier test's lines."""
        out = self.run(["journalctl", "--no-pager", "-n", "1", "--show-cursor", "-o", "cat"]).stdout
        self.cursors[unit] = out.rpartition("-- cursor: ")[2].strip()

    def journal(self, unit: str) -> str:
        after = [f"--after-cursor={self.cursors[unit]}"] if unit in self.cursors else []
        return self.run(["journalctl", "--no-pager", "-o", "cat", *after, "-u", unit]).stdout

    def journal_until(self, unit: str, last: str, within: float = 10) -> list[str]:
        """The unit's journal, once it has the line ``last`` (journald may lag)."""
        deadline = time.monotonic() + within
        while True:
            lines = self.journal(unit).splitlines()
            if last in lines:
                return lines
            if time.monotonic() > deadline:
                pytest.fail(f"{unit}: no {last!r} in the journal:\n" + "\n".join(lines))
            time.sleep(0.05)  # a poll, bounded by the deadline

    def unit(self, name: str, case: str, **service: str | int) -> str:
        """Install ``name``.service, running the program with ``case``; return the unit's name."""
        settings = {
            "Type": "notify",
            "NotifyAccess": "main",
            "ExecStart": f"{VENV}/bin/python {APP} {case}",
            "Environment": "PYTHONUNBUFFERED=1",
            **service,
        }
        body = "".join(f"{key}={value}\n" for key, value in settings.items())
        self.write(f"/etc/systemd/system/{name}.service", f"[Service]\n{body}")
        self.systemctl("daemon-reload")
        self.mark(f"{name}.service")
        return f"{name}.service"

    def gate(self, name: str) -> None:
        self.write(f"{GATES}/{name}", "")


def _remove(directory: Path, name: str) -> None:
    """Unmount a machine's overlay, remove its cgroups, then its directory."""
    root = directory / "root"
    if root.is_mount():
        subprocess.run(["umount", root], check=False, timeout=60)
    subprocess.run(["bash", NSPAWN, "clean", name], check=False, timeout=60)
    if not root.is_mount():  # never remove files through a mounted overlay
        shutil.rmtree(directory, ignore_errors=True)


def _remove_what_dead_runs_left() -> None:
    # A run that was killed (by its timeout, say) powered its container off
    # (see _power_off_with_parent) but left its overlay and its cgroups.
    for directory in Path("/var/tmp").glob("aiorun-*-*-*"):
        found = re.fullmatch(r"(aiorun-[a-z]+-(\d+))-\w+", directory.name)
        if found and not Path(f"/proc/{found.group(2)}").exists():
            _remove(directory, found.group(1))


@pytest.fixture(scope="module", params=sorted(SYSTEMD))
def machine(request: pytest.FixtureRequest) -> Iterator[Machine]:
    require_systemd()
    _remove_what_dead_runs_left()
    booted = Machine(request.param)
    try:
        booted.boot()
        yield booted
    finally:
        booted.close()


# The shutdown's log lines, in the order the shutdown writes them.
SHUTDOWN_LINES = [
    "INFO aiorun: Entering shutdown phase.",
    "INFO aiorun: Executing provided shutdown_callback.",
    "INFO app: shutdown_callback starts",
    "INFO app: shutdown_callback ends",
    "INFO aiorun: Cancelling pending tasks.",
    "INFO aiorun: Running pending tasks till complete",
    "INFO aiorun: Shutting down async generators",
    "INFO aiorun: Waiting for executor shutdown.",
    "INFO aiorun: Closing the loop.",
    "INFO aiorun: Leaving. Bye!",
]


def in_order(lines: list[str], expected: list[str]) -> list[str]:
    """The lines of ``expected`` found in ``lines``, in the order ``lines`` has them."""
    return [line for line in lines if line in expected]


def test_start_returns_once_main_has_returned(machine: Machine) -> None:
    unit = machine.unit("slow-ready", "slow-ready")
    started = time.monotonic()
    machine.systemctl("start", unit)
    took = time.monotonic() - started
    # main() sleeps 2 s: READY=1 before it returns would end the start early.
    assert 2 <= took < 10, took
    assert machine.show(unit, "ActiveState")["ActiveState"] == "active"
    machine.journal_until(unit, "INFO app: main returns")
    machine.systemctl("stop", unit)


def test_start_fails_when_main_raises(machine: Machine) -> None:
    unit = machine.unit("raises", "raises", TimeoutStartSec=2)
    result = machine.run(["systemctl", "start", unit], check=False)
    assert result.returncode != 0, result.stdout
    shown = machine.show(unit, "ActiveState", "Result")
    assert shown == {"ActiveState": "failed", "Result": "timeout"}, shown
    # systemd stopped it with SIGTERM, and the shutdown ran.
    machine.journal_until(unit, "INFO aiorun: Leaving. Bye!")


def test_status_text_follows_the_shutdown(machine: Machine) -> None:
    unit = machine.unit("status", "gated")
    machine.run(["rm", "-rf", GATES])
    machine.systemctl("start", unit)
    assert machine.show(unit, "StatusText")["StatusText"] == "serving"
    machine.systemctl("stop", "--no-block", unit)
    # The job runs in a later pass of systemd's event loop than the one
    # that queued it: at once, but not before systemctl returns.
    machine.poll(unit, "ActiveState", "deactivating", within=2)
    # Each step waits for a file: the test sees the status, then lets it go on.
    steps = [
        ("running shutdown_callback", "callback"),
        ("waiting for 1 task to end", "task"),
        ("shutting the executor down", "executor"),
    ]
    for status, gate in steps:
        machine.poll(unit, "StatusText", status, within=10)
        assert machine.show(unit, "ActiveState")["ActiveState"] == "deactivating"
        machine.gate(gate)
    machine.poll(unit, "ActiveState", ("inactive", "failed"), within=10)
    shown = machine.show(unit, "Result", "ExecMainStatus")
    assert shown == {"Result": "success", "ExecMainStatus": "0"}, shown


def test_stopping_reaches_systemd_and_the_shutdown_runs_in_order(machine: Machine) -> None:
    unit = machine.unit("stopping", "gated")
    machine.run(["rm", "-rf", GATES])
    machine.systemctl("start", unit)
    pid = machine.show(unit, "MainPID")["MainPID"]
    # A SIGTERM that systemd did not send: only STOPPING=1 tells it that the
    # service is stopping.
    machine.run(["sh", "-c", f"kill -TERM {pid}"])  # no procps in the tree: the shell's kill
    machine.poll(unit, "ActiveState", "deactivating", within=10)
    machine.gate("callback")
    machine.gate("task")
    machine.gate("executor")
    machine.poll(unit, "ActiveState", ("inactive", "failed"), within=10)
    shown = machine.show(unit, "Result", "ExecMainStatus")
    assert shown == {"Result": "success", "ExecMainStatus": "0"}, shown
    lines = machine.journal_until(unit, SHUTDOWN_LINES[-1])
    assert in_order(lines, SHUTDOWN_LINES) == SHUTDOWN_LINES, lines


def test_extend_timeout_lets_a_shutdown_on_schedule_outlast_timeout_stop_sec(
    machine: Machine,
) -> None:
    # shutdown_timeout=10, TimeoutStopSec=2, and a shutdown_callback of 4 s.
    unit = machine.unit("slow-stop", "slow-stop", TimeoutStopSec=2)
    machine.systemctl("start", unit)
    started = time.monotonic()
    machine.systemctl("stop", unit)
    took = time.monotonic() - started
    shown = machine.show(unit, "Result", "ExecMainStatus")
    assert shown == {"Result": "success", "ExecMainStatus": "0"}, (shown, machine.journal(unit))
    assert 4 <= took < 10, took
    lines = machine.journal_until(unit, "INFO aiorun: Leaving. Bye!")
    assert "INFO app: shutdown_callback ends" in lines, lines


def test_watchdog_keeps_the_unit_alive_until_the_loop_blocks(machine: Machine) -> None:
    unit = machine.unit("watchdog", "watchdog", WatchdogSec=2)
    machine.systemctl("start", unit)
    pings = {machine.show(unit, "WatchdogTimestampMonotonic")["WatchdogTimestampMonotonic"]}
    # Three watchdog periods: without pings, systemd would have killed it.
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        pings.add(machine.show(unit, "WatchdogTimestampMonotonic")["WatchdogTimestampMonotonic"])
        time.sleep(0.2)  # a sample of the pings, for as long as the test lasts
    shown = machine.show(unit, "ActiveState", "NRestarts")
    assert shown["ActiveState"] == "active", (shown, machine.journal(unit))
    assert len(pings) >= 6, pings  # three pings a period
    pid = machine.show(unit, "MainPID")["MainPID"]
    machine.run(["sh", "-c", f"kill -USR1 {pid}"])  # block() runs on the loop: time.sleep(60)
    machine.poll(unit, "ActiveState", "failed", within=10)
    assert machine.show(unit, "Result")["Result"] == "watchdog"
    lines = machine.journal(unit).splitlines()
    warned = [i for i, line in enumerate(lines) if "has not run for" in line]
    killed = [i for i, line in enumerate(lines) if "Watchdog timeout" in line]
    assert warned, lines
    assert killed, lines
    assert warned[0] < killed[0], lines
    line = PROGRAM.splitlines().index("    time.sleep(60)  # the blocking line") + 1
    assert f"app.py:{line} in block" in lines[warned[0]], lines[warned[0]]


def readme_section() -> str:
    readme = (REPO / "README.rst").read_text()
    return readme.split("systemd and Kubernetes\n~~~~~~~~~~~~~~~~~~~~~~\n")[1].split("\n\n\n")[0]


def readme_block(text: str, language: str) -> str:
    found = re.findall(rf"\.\. code-block:: {language}\n\n((?:   .*\n|\n)+)", text)
    assert len(found) == 1, found
    return textwrap.dedent(found[0]).strip() + "\n"


def test_the_readme_unit_works_as_written(machine: Machine) -> None:
    section = readme_section()
    unit_file = readme_block(section, "ini")
    path = re.search(r"saved\s+as\s+``(/etc/systemd/system/[^`]+)``", section).group(1)
    commands = readme_block(section, "console").splitlines()
    readme = (REPO / "README.rst").read_text()
    quick_start = readme.split("Quick start\n-----------\n")[1].split("\n\n\n")[0]
    install = readme_block(quick_start, "console").splitlines()[0]
    # The clone: the checkout's files, without what its own runs made.
    made = shutil.ignore_patterns(".git", ".venv*", "__pycache__", ".*_cache", "dist")
    shutil.copytree(REPO, machine.root / "srv/app", ignore=made, dirs_exist_ok=True)
    machine.install(install, cwd="/srv/app")
    machine.write(path, unit_file)
    unit = Path(path).name
    machine.mark(unit)
    # systemd accepts every line of it.
    verified = machine.run(["systemd-analyze", "verify", path], check=False)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout + verified.stderr == "", verified.stdout + verified.stderr
    for command in commands:
        machine.run(command.split(), timeout=60)
    assert machine.systemctl("is-enabled", unit).strip() == "enabled"
    assert (machine.root / "etc/systemd/system/multi-user.target.wants" / unit).is_symlink()
    shown = machine.show(unit, "ActiveState", "StatusText", "WatchdogUSec", "TimeoutStopUSec")
    assert shown == {
        "ActiveState": "active",
        "StatusText": "serving",
        "WatchdogUSec": "10s",
        "TimeoutStopUSec": "25s",
    }, shown
    answer = machine.run(
        [
            "python3",
            "-c",
            "import socket; s = socket.create_connection(('127.0.0.1', 8888), timeout=10); "
            "s.sendall(b'hello\\n'); print(s.recv(100).decode().strip())",
        ]
    )
    assert answer.stdout.strip() == "ok", answer
    machine.systemctl("stop", unit)
    shown = machine.show(unit, "Result", "ExecMainStatus")
    assert shown == {"Result": "success", "ExecMainStatus": "0"}, shown
    machine.journal_until(unit, "INFO aiorun: Leaving. Bye!")
