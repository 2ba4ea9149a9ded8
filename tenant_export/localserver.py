"""The local Prefect server the CLI keeps between commands on embedded defaults.

Without ``PREFECT_API_URL`` Prefect starts a temporary server inside every process that runs a
flow (10-20 s here, DESIGN §6). Instead, the first command that runs a flow starts one detached
``prefect server start`` on 127.0.0.1 (SQLite, its ``PREFECT_HOME`` under the state directory);
the next commands find it and reuse it, and a small watchdog process stops it once it idled.
One server per state directory, whatever runs at the same time.

Files in ``<state dir>/prefect-server/``:

- ``watchdog.lock``: held (``flock``) by the one live watchdog, its pid inside: a watchdog that
  cannot take it exits, so two servers never share the database.
- ``start.lock``: held while a command finds or starts the server and while the watchdog stops
  it: two commands started at once see one server, and none gets one that is stopping.
- ``users.lock``: every command using the server holds it shared for its whole run; the
  watchdog stops the server only when it can take it alone and ``last-used`` is older than the
  idle time, so a long export is never cut off.
- ``state.json``: port and pids, written by the watchdog (``ready`` once the API answers) and
  trusted only while ``watchdog.lock`` is held and the API answers.
- ``home/``: the server's ``PREFECT_HOME`` (runs stay visible across restarts); ``server.log``.

``python -m tenant_export.localserver status|stop [--state-dir DIR]`` shows or stops it.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from deployments import processes
from deployments.server import LocalServer, port_in_use
from kernel.errors import ExportError

DEFAULT_IDLE_SECONDS = 15 * 60
HOST = "127.0.0.1"
SERVER_DIR = "prefect-server"
START_TIMEOUT_SECONDS = 180.0
"""A cold start takes 7-15 s here; a busy 2-core machine has been seen to need far more."""
UNHEALTHY_GRACE_SECONDS = 15.0
"""A running server whose API does not answer for this long is replaced."""
PORT_ATTEMPTS = 3
EXIT_PORT_TAKEN, EXIT_ALREADY_RUNNING = 3, 4


class Files:
    """Where one kept server's files live (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.state, self.start_lock, self.users_lock, self.watchdog_lock = (
            root / name for name in ("state.json", "start.lock", "users.lock", "watchdog.lock"))
        self.last_used, self.last_port = root / "last-used", root / "last-port"
        self.home, self.log = root / "home", root / "server.log"


@dataclass(frozen=True)
class ServerState:
    """What ``state.json`` says about the running server."""

    port: int
    watchdog_pid: int
    idle_seconds: int
    started_at: str
    server_pid: int | None = None
    ready: bool = False

    @property
    def ui_url(self) -> str:
        """What an operator opens in a browser."""
        return f"http://{HOST}:{self.port}"

    @property
    def api_url(self) -> str:
        """``PREFECT_API_URL`` of the commands that use it."""
        return f"{self.ui_url}/api"


@dataclass(frozen=True)
class Lease:
    """The server a command uses, and whether this command started it."""

    server: ServerState
    started: bool


def files_of(state_dir: Path) -> Files:
    """The kept server's files for a state directory."""
    return Files(state_dir / SERVER_DIR)


def read_state(files: Files) -> ServerState | None:
    """The state file, or ``None`` when missing or unreadable (a crash mid-write)."""
    try:
        return ServerState(**json.loads(files.state.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None


def _write_state(files: Files, state: ServerState) -> None:
    partial = files.state.with_suffix(".tmp")
    partial.write_text(json.dumps(asdict(state)), encoding="utf-8")
    partial.replace(files.state)  # readers see the old file or the new one, never half


def _try_lock(path: Path, mode: int) -> IO[str] | None:
    """``path`` opened and locked without waiting; ``None`` when someone else holds it."""
    handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - the lock lives as long as it
    try:
        fcntl.flock(handle, mode | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


@contextmanager
def _locked(path: Path, mode: int = fcntl.LOCK_EX) -> Iterator[IO[str]]:
    with open(path, "a+", encoding="utf-8") as handle:
        fcntl.flock(handle, mode)  # released when the file is closed, also when we crash
        yield handle


def _touch(path: Path) -> None:
    path.touch()  # sets the mtime of an existing file too


def watchdog_pid(files: Files) -> int | None:
    """The pid of the live watchdog, or ``None`` when none holds ``watchdog.lock``."""
    probe = _try_lock(files.watchdog_lock, fcntl.LOCK_EX)
    if probe is not None:
        probe.close()
        return None
    try:
        return int(files.watchdog_lock.read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        return 0  # alive, pid not written yet


def healthy(api_url: str, timeout: float = 2.0) -> bool:
    """Whether the Prefect API at ``api_url`` answers its health check."""
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=timeout) as response:  # noqa: S310 - our own http://127.0.0.1 URL
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


# -- the command's side ----------------------------------------------------------------------


@contextmanager
def use_server(state_dir: Path, idle_seconds: int = DEFAULT_IDLE_SECONDS, *,
               server_command: Sequence[str] | None = None) -> Iterator[Lease]:
    """The kept server for the duration of the block, started if none runs.

    Args:
        state_dir: the settings' state directory (one server per directory).
        idle_seconds: how long a server this call starts may idle before it stops.
        server_command: the server to run instead of ``prefect server start`` (tests);
            ``{port}`` in it is replaced by the port.

    Raises:
        ExportError: the server did not start (the message names its log).
    """
    files = files_of(state_dir)
    files.root.mkdir(parents=True, exist_ok=True)
    with _locked(files.start_lock):
        lease = _find_or_start(files, idle_seconds, server_command)
        users = open(files.users_lock, "a+", encoding="utf-8")  # noqa: SIM115 - closed below
        fcntl.flock(users, fcntl.LOCK_SH)  # taken before start.lock is released: no stop between
    try:
        _touch(files.last_used)
        yield lease
    finally:
        _touch(files.last_used)
        users.close()


def _find_or_start(files: Files, idle: int, command: Sequence[str] | None) -> Lease:
    if watchdog_pid(files) is not None:
        state = _wait_ready(files, None)
        if state is not None:
            return Lease(state, started=False)
        stop_watchdog(files)  # alive but its server does not answer: replace it
    files.state.unlink(missing_ok=True)  # left by a watchdog that died (killed, reboot)
    return Lease(_start(files, idle, command), started=True)


def _wait_ready(files: Files, spawned: subprocess.Popen[bytes] | None) -> ServerState | None:
    """The state once ready and healthy; ``None`` when the watchdog is gone, its server stays
    unhealthy, or the start takes too long."""
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    unhealthy_since: float | None = None
    while time.monotonic() < deadline:
        state = read_state(files)
        if state is not None and state.ready:
            if healthy(state.api_url):
                return state
            unhealthy_since = unhealthy_since or time.monotonic()
            if time.monotonic() - unhealthy_since > UNHEALTHY_GRACE_SECONDS:
                return None
        gone = (spawned.poll() is not None) if spawned is not None else (
            watchdog_pid(files) is None)
        if gone:
            return None
        time.sleep(0.1)
    return None


def _ports(files: Files) -> Iterator[int]:
    """The previous server's port first (bookmarks of its UI keep working), then free ones."""
    with contextlib.suppress(OSError, ValueError):
        yield int(files.last_port.read_text(encoding="utf-8"))
    while True:
        with socket.socket() as sock:
            sock.bind((HOST, 0))
            port = int(sock.getsockname()[1])
        yield port  # closed first: a suspended generator must not keep the port bound


def _start(files: Files, idle: int, command: Sequence[str] | None) -> ServerState:
    if files.log.exists():
        files.log.replace(files.log.with_suffix(".log.1"))  # keep the last life's log
    for attempt, port in enumerate(_ports(files)):
        if attempt >= PORT_ATTEMPTS:
            break
        spawned = _spawn(files, port, idle, command)
        state = _wait_ready(files, spawned)
        if state is not None and state.watchdog_pid == spawned.pid:
            files.last_port.write_text(str(port), encoding="utf-8")
            return state
        if spawned.poll() is None:
            processes.signal_pid(spawned.pid, signal.SIGTERM)
            raise ExportError("the local Prefect server did not start in "
                              f"{START_TIMEOUT_SECONDS:g} s; its log: {files.log}")
        if spawned.returncode != EXIT_PORT_TAKEN:
            raise ExportError(f"the local Prefect server did not start (status "
                              f"{spawned.returncode}); its log: {files.log}")
    raise ExportError(f"no free port for the local Prefect server on {HOST}")


def _spawn(files: Files, port: int, idle: int, command: Sequence[str] | None
           ) -> subprocess.Popen[bytes]:
    """The watchdog, detached: its own session, so it outlives this command and its terminal."""
    args = [sys.executable, "-m", "tenant_export.localserver", "watch", "--port", str(port),
            "--idle", str(idle), str(files.root)]  # options first: the rest is the command
    with open(files.log, "ab") as log:
        return subprocess.Popen(  # noqa: S603 - our interpreter, fixed arguments
            [*args, "--", *command] if command else args, stdin=subprocess.DEVNULL,
            stdout=log, stderr=subprocess.STDOUT, cwd=files.root, start_new_session=True)


def stop_watchdog(files: Files, timeout: float = 45.0) -> bool:
    """Stop the watchdog (it stops its server first: SIGTERM, then SIGKILL after ``timeout``,
    when the server dies with it); whether one was running."""
    pid = watchdog_pid(files)
    if pid is None:
        return False
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
        if pid:
            processes.signal_pid(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            current = watchdog_pid(files)
            if current is None:
                files.state.unlink(missing_ok=True)
                return True
            pid = current or pid
            time.sleep(0.2)
    raise ExportError(f"the local Prefect server's watchdog (pid {pid}) does not stop")


# -- the watchdog (a process of its own) --------------------------------------------------------


def _say(text: str) -> None:
    print(f"{datetime.now(UTC).isoformat(timespec='seconds')} watchdog: {text}", flush=True)


def server_env(home: Path, port: int, base: Mapping[str, str]) -> dict[str, str]:
    """The server's environment: none of the caller's Prefect settings (its profile, its
    database URL), SQLite under ``home``, no schedules (the CLI deploys nothing here)."""
    clean = {key: value for key, value in base.items() if not key.startswith("PREFECT_")}
    clean["PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED"] = "false"
    clean["PREFECT_SERVER_SERVICES_LATE_RUNS_ENABLED"] = "false"
    return LocalServer(port=port, host=HOST, home=home).server_env(clean)


def watch(files: Files, port: int, idle: int, command: Sequence[str] = ()) -> int:
    """Run the server until it idled ``idle`` seconds unused, or SIGTERM; the exit status."""
    me = _try_lock(files.watchdog_lock, fcntl.LOCK_EX)
    for _ in range(100):  # a probe (watchdog_pid) holds it for an instant
        if me is not None:
            break
        time.sleep(0.01)
        me = _try_lock(files.watchdog_lock, fcntl.LOCK_EX)
    if me is None:
        _say("another watchdog runs for this directory")
        return EXIT_ALREADY_RUNNING
    me.truncate(0)
    me.write(str(os.getpid()))
    me.flush()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    if port_in_use(port, HOST):
        _say(f"port {port} is taken")
        return EXIT_PORT_TAKEN
    state = ServerState(port, os.getpid(), idle, datetime.now(UTC).isoformat(timespec="seconds"))
    _write_state(files, state)
    args = ([part.replace("{port}", str(port)) for part in command] if command else
            processes.python("prefect", "server", "start", "--host", HOST, "--port", str(port)))
    files.home.mkdir(exist_ok=True)
    server = processes.start(args, server_env(files.home, port, os.environ))  # dies with us
    try:
        try:
            processes.wait_healthy(state.api_url, START_TIMEOUT_SECONDS, server)
        except ExportError as err:
            _say(str(err))
            taken = server.poll() is not None and port_in_use(port, HOST)
            return EXIT_PORT_TAKEN if taken else 1
        _write_state(files, replace(state, server_pid=server.pid, ready=True))
        _touch(files.last_used)
        _say(f"serving {state.ui_url} (server pid {server.pid}); stops after {idle} s idle")
        return _until_idle(files, server, idle, stop, me)
    finally:
        if server.poll() is None:
            processes.stop(server, first=signal.SIGTERM, grace=30.0)
        if (read_state(files) or state).watchdog_pid == os.getpid():
            files.state.unlink(missing_ok=True)
        me.close()


def _until_idle(files: Files, server: subprocess.Popen[bytes], idle: int,
                stop: threading.Event, me: IO[str]) -> int:
    tick = min(5.0, max(0.2, idle / 5))
    while not stop.wait(tick):
        if server.poll() is not None:
            _say(f"the server exited with status {server.returncode}")
            return 1
        if _stopped_when_idle(files, server, idle, me):
            _say(f"stopped after {idle} s idle")
            return 0
    _say("stopped on request")
    return 0


def _idle_for(files: Files) -> float:
    try:
        return time.time() - files.last_used.stat().st_mtime
    except OSError:
        return float("inf")


def _stopped_when_idle(files: Files, server: subprocess.Popen[bytes], idle: int,
                       me: IO[str]) -> bool:
    """Stop the server if nothing used it for ``idle`` s and no command holds it; the
    watchdog lock goes before ``start.lock``, so the next command finds nothing running."""
    if _idle_for(files) < idle:
        return False
    with ExitStack() as held:
        for path in (files.start_lock, files.users_lock):
            lock = _try_lock(path, fcntl.LOCK_EX)
            if lock is None:
                return False
            held.callback(lock.close)
        if _idle_for(files) < idle:  # a command came and went meanwhile
            return False
        files.state.unlink(missing_ok=True)  # no command finds it from now on
        processes.stop(server, first=signal.SIGTERM, grace=30.0)
        me.close()
        return True
    return False  # pragma: no cover - mypy: the with block always returns


def stop(state_dir: Path) -> bool:
    """Stop the kept server of ``state_dir`` now; whether one was running."""
    files = files_of(state_dir)
    if not files.root.exists():
        return False
    with _locked(files.start_lock):  # a command starting one meanwhile waits, then starts anew
        return stop_watchdog(files)


def status(state_dir: Path) -> dict[str, Any]:
    """Where the kept server stands, for operators."""
    files = files_of(state_dir)
    state = read_state(files) if files.root.exists() else None
    pid = watchdog_pid(files) if files.root.exists() else None
    if pid is None or state is None:
        return {"running": False, "state_dir": str(files.root)}
    return {"running": True, "url": state.ui_url, "healthy": healthy(state.api_url),
            "watchdog_pid": state.watchdog_pid, "server_pid": state.server_pid,
            "idle_seconds": state.idle_seconds, "idle_for_seconds": int(_idle_for(files)),
            "started_at": state.started_at, "log": str(files.log)}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tenant_export.localserver``: ``status``, ``stop`` (and ``watch``, internal)."""
    parser = argparse.ArgumentParser(prog="python -m tenant_export.localserver",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("status", "stop"):
        sub.add_parser(name).add_argument("--state-dir", type=Path, default=None)
    watching = sub.add_parser("watch", help="internal: run a server until it idled")
    watching.add_argument("root", type=Path)
    watching.add_argument("--port", type=int, required=True)
    watching.add_argument("--idle", type=int, default=DEFAULT_IDLE_SECONDS)
    watching.add_argument("server", nargs=argparse.REMAINDER,
                          help="-- and a server command instead of Prefect's ({port} replaced)")
    args = parser.parse_args(argv)
    if args.command == "watch":
        command = args.server[1:] if args.server[:1] == ["--"] else args.server
        return watch(Files(args.root), args.port, args.idle, command)
    state_dir = args.state_dir
    if state_dir is None:
        from kernel.settings import Settings  # noqa: PLC0415 - pydantic: not for the watchdog

        state_dir = Settings().state_dir
    if args.command == "stop":
        print("stopped" if stop(state_dir) else "not running")
        return 0
    print(json.dumps(status(state_dir), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
