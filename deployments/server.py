"""A local Prefect server (SQLite) as a child process: what ``make serve`` and the tests run.

The server owns the schedules, the runs and the per-tenant locks; workers come and go. Its
database lives in ``PREFECT_HOME`` (``~/.prefect`` unless set), so schedules, past-due (Late)
runs and history survive a restart of ``make serve``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from deployments import processes
from kernel.errors import BadInput

# Leases of the per-tenant locks kept on disk: with the default in-memory storage a server
# restart forgets the lease while the slot stays taken, and that tenant's lock never frees.
LEASE_STORAGE = "prefect.server.concurrency.lease_storage.filesystem"


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something already listens on ``host:port``."""
    with socket.socket() as sock:
        return sock.connect_ex((host, port)) == 0


@dataclass
class LocalServer:
    """``prefect server start`` on ``host:port``, with the UI pointed at its own API."""

    port: int
    host: str = "127.0.0.1"
    home: Path | None = None
    """``PREFECT_HOME`` (database, leases); ``None``: the environment's or ``~/.prefect``."""
    log: Path | None = None
    """Where the server's output goes; ``None``: this process's stdout."""
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def api_url(self) -> str:
        """The REST API (``PREFECT_API_URL`` of workers and the CLI)."""
        return f"http://{self.host}:{self.port}/api"

    @property
    def ui_url(self) -> str:
        """What an operator opens in a browser."""
        return f"http://{self.host}:{self.port}"

    def server_env(self, base: Mapping[str, str]) -> dict[str, str]:
        """The server's environment: the UI must be told the API's address on any port other
        than 4200 (else it shows "Can't connect to Server API")."""
        env = processes.prefect_env(base, self.api_url)
        env["PREFECT_UI_API_URL"] = self.api_url
        env.pop("PREFECT_SERVER_UI_API_URL", None)
        env.setdefault("PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE", LEASE_STORAGE)
        if self.home is not None:
            env["PREFECT_HOME"] = str(self.home)
        return env

    def start(self, base_env: Mapping[str, str] | None = None, timeout: float = 180.0) -> None:
        """Start the server and wait until its API answers."""
        if port_in_use(self.port, self.host):
            raise BadInput(f"port {self.port} is in use: stop what listens there, choose "
                           "another port, or set PREFECT_API_URL to use that server")
        env = self.server_env(os.environ if base_env is None else base_env)
        self.process = processes.start(
            processes.python("prefect", "server", "start", "--host", self.host,
                             "--port", str(self.port)), env, log=self.log)
        try:
            processes.wait_healthy(self.api_url, timeout, self.process)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> int | None:
        """Stop the server (SIGTERM, then SIGKILL); its exit status."""
        if self.process is None:
            return None
        return processes.stop(self.process, first=signal.SIGTERM, grace=30.0)


@contextmanager
def local_server(port: int, *, home: Path | None = None, log: Path | None = None,
                 base_env: Mapping[str, str] | None = None) -> Iterator[LocalServer]:
    """A running local server for the block, stopped afterwards."""
    server = LocalServer(port=port, home=home, log=log)
    server.start(base_env)
    try:
        yield server
    finally:
        server.stop()
