"""Child processes that stop in order and never outlive the process that started them.

``make serve`` runs a Prefect server and a worker as children. Ctrl-C in a terminal signals the
whole foreground process group at once, which would stop the server before the worker has
handed its runs back; so each child gets its own session (only the parent hears Ctrl-C and
stops them in order), and on Linux the kernel sends it SIGTERM if the parent dies without
cleaning up (``PR_SET_PDEATHSIG``), so no orphan keeps a port or a run.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from kernel.errors import ExportError

_PR_SET_PDEATHSIG = 1
_LIBC = (ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
         if sys.platform.startswith("linux") else None)
"""Loaded once here: between fork and exec the child only makes two plain calls."""


def _child_setup() -> None:
    """Runs in the child before exec: default SIGINT, and SIGTERM when the parent dies.

    SIGINT is reset because a process started in the background inherits it ignored, and
    Prefect's worker then restores "ignored" and never stops on Ctrl-C.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def start(args: Sequence[str], env: Mapping[str, str], log: Path | None = None,
          cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """Start ``args`` in its own session, tied to this process's life."""
    out = open(log, "ab") if log is not None else None  # noqa: SIM115 - closed with the process
    try:
        return subprocess.Popen(  # noqa: S603 - our own interpreter and fixed arguments
            list(args), env=dict(env), cwd=cwd, stdout=out,
            stderr=subprocess.STDOUT if out else None, stdin=subprocess.DEVNULL,
            start_new_session=True, preexec_fn=_child_setup,  # noqa: PLW1509 - two plain calls
        )
    finally:
        if out is not None:
            out.close()


def stop(process: subprocess.Popen[bytes], first: signal.Signals = signal.SIGINT,
         grace: float = 30.0) -> int:
    """Ask ``process`` to stop with ``first``, then SIGTERM, then SIGKILL; its exit status."""
    for sig, wait in ((first, grace), (signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
        if process.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=wait)
    return process.wait()


def children_of(pid: int) -> list[int]:
    """Direct children of ``pid`` (Linux ``/proc``; empty elsewhere)."""
    found: list[int] = []
    for entry in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = entry.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                found.append(int(entry.parent.name))
    return found


def wait_healthy(api_url: str, timeout: float = 120.0,
                 process: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until ``{api_url}/health`` answers 200 (or ``process`` exits)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise ExportError(f"the Prefect server exited with status {process.returncode} "
                              "before it became healthy")
        try:
            with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:  # noqa: S310 - our http URL
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise ExportError(f"the Prefect server at {api_url} did not become healthy in {timeout:g} s")


def prefect_env(base: Mapping[str, str], api_url: str) -> dict[str, str]:
    """``base`` pointed at the server ``api_url``, with analytics off (we run offline)."""
    return {**base, "PREFECT_API_URL": api_url, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}


def python(*module_args: str) -> list[str]:
    """``python -m ...`` with this interpreter."""
    return [sys.executable, "-m", *module_args]


def alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie waiting to be reaped counts as gone)."""
    if not sys.platform.startswith("linux"):
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def signal_pid(pid: int, sig: signal.Signals) -> None:
    """Send ``sig`` to ``pid`` unless it is already gone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)
