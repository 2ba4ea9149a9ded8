"""Processes the benchmark starts, how one is measured, and how all are stopped.

Every child (services and measured commands) runs in a session of its own, so a terminal's
Ctrl-C reaches only the benchmark, which then stops them in order; and the kernel sends each
SIGTERM if the benchmark itself dies (``PR_SET_PDEATHSIG``), so no service outlives a run.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

SPAWN = Path(__file__).with_name("spawn.py")
_PR_SET_PDEATHSIG = 1
_LIBC = (ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
         if sys.platform.startswith("linux") else None)


class BenchError(Exception):
    """The benchmark cannot go on (a service did not start, a setup step failed)."""


def _child_setup() -> None:
    """In the child before exec: default SIGINT, SIGTERM when the benchmark dies."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class Processes:
    """Every process the benchmark started and has not stopped yet."""

    def __init__(self) -> None:
        self._running: list[subprocess.Popen[bytes]] = []

    def start(self, args: Sequence[str], env: Mapping[str, str], *, log: Path | None = None,
              stdout: Path | None = None, stdin: Path | None = None,
              cwd: Path | None = None) -> subprocess.Popen[bytes]:
        """Start ``args`` in its own session; output to ``stdout`` and ``log`` (stderr), or
        both to ``log``, or nowhere."""
        opened = []
        try:
            out = err = subprocess.DEVNULL
            if log is not None:
                err = open(log, "ab")  # noqa: SIM115 - closed below, the child keeps its copy
                opened.append(err)
                out = err
            if stdout is not None:
                out = open(stdout, "wb")  # noqa: SIM115
                opened.append(out)
            inp = open(stdin, "rb") if stdin is not None else subprocess.DEVNULL  # noqa: SIM115
            if stdin is not None:
                opened.append(inp)
            proc = subprocess.Popen(list(args), env=dict(env), cwd=cwd, stdin=inp, stdout=out,
                                    stderr=err, start_new_session=True,
                                    preexec_fn=_child_setup)  # noqa: PLW1509 - two plain calls
        finally:
            for f in opened:
                f.close()  # type: ignore[union-attr]
        self._running.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], grace: float = 10.0) -> int:
        """SIGTERM to the child's whole session (its own children too), then SIGKILL."""
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
            if proc.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=wait)
        # what the child left running in its session (a grandchild) goes too
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        if proc in self._running:
            self._running.remove(proc)
        return proc.wait()

    def stop_all(self) -> None:
        """Stop every child still running, newest first (measured commands before services)."""
        for proc in reversed(list(self._running)):
            self.stop(proc, grace=5.0)


PROCESSES = Processes()


@contextlib.contextmanager
def interrupts_as_exceptions() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP raise ``KeyboardInterrupt``, so every ``finally`` runs
    (services stopped, work directory removed), even when the benchmark was started in the
    background (where a shell leaves SIGINT ignored)."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {s: signal.signal(s, handler)
                for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        PROCESSES.stop_all()
        for sig, old in previous.items():
            signal.signal(sig, old)


@dataclass(frozen=True)
class Measured:
    """One command measured from outside: wall and CPU seconds, peak RSS, exit status."""

    name: str
    wall_s: float
    cpu_s: float
    peak_rss_kib: int
    rc: int
    timed_out: bool
    start: float
    """``time.monotonic()`` when the command was started (system-wide clock)."""
    stdout: Path
    stderr: Path

    @property
    def ok(self) -> bool:
        return self.rc == 0 and not self.timed_out

    @property
    def peak_rss_mib(self) -> float:
        return self.peak_rss_kib / 1024

    def output(self) -> str:
        return self.stdout.read_text(encoding="utf-8", errors="replace")

    def error_tail(self, lines: int = 5) -> str:
        text = self.stderr.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        return " | ".join(line.strip() for line in text[-lines:])


def measure(name: str, args: Sequence[str], env: Mapping[str, str], logs: Path, *,
            timeout: float, stdin: Path | None = None, cwd: Path | None = None) -> Measured:
    """Run ``args`` to its end (or kill it after ``timeout`` seconds) and measure it."""
    logs.mkdir(parents=True, exist_ok=True)
    figures = logs / f"{name}.figures.json"
    figures.unlink(missing_ok=True)
    stdout, stderr = logs / f"{name}.out", logs / f"{name}.err"
    started = time.monotonic()
    proc = PROCESSES.start([sys.executable, "-S", "-E", "-s", str(SPAWN), str(figures), "--",
                            *args], env, log=stderr, stdout=stdout, stdin=stdin, cwd=cwd)
    timed_out = False
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
    finally:
        PROCESSES.stop(proc, grace=30.0)  # spawn.py gives the command 8 s, then kills it
    ended = time.monotonic()
    if figures.exists():
        data = json.loads(figures.read_text(encoding="utf-8"))
        return Measured(name, data["end"] - data["start"], data["user_s"] + data["sys_s"],
                        int(data["maxrss_kib"]), int(data["rc"]), timed_out, data["start"],
                        stdout, stderr)
    # killed before the wrapper could write (timeout, Ctrl-C): what the outside saw
    return Measured(name, ended - started, 0.0, 0, -1, timed_out, started, stdout, stderr)


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a running process has used so far, its reaped children
    included; 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))  # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def tree_cpu_s(pid: int) -> float:
    """CPU seconds of a process and of its live descendants (a server and its workers)."""
    total = process_cpu_s(pid)
    for child in children_of(pid):
        total += tree_cpu_s(child)
    return total


def children_of(pid: int) -> list[int]:
    """Direct children of ``pid`` (Linux ``/proc``)."""
    found: list[int] = []
    for entry in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int(entry.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.parent.name))
    return found


def wait_for_port(port: int, proc: subprocess.Popen[bytes] | None = None,
                  timeout: float = 60.0, what: str = "service") -> None:
    """Until something listens on 127.0.0.1:``port``; fails early if ``proc`` exits."""
    import socket  # noqa: PLC0415

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise BenchError(f"{what} exited with status {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise BenchError(f"{what}: nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


def free_port() -> int:
    import socket  # noqa: PLC0415

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
