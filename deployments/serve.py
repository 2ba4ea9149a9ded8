"""``make serve`` / ``tenant-export serve``: a local Prefect server, the deployments on a process
work pool, the alerts, and one worker; Ctrl-C stops the worker, then the server.

When ``PREFECT_API_URL`` is set, that server is used and none is started. The server keeps
the schedules and runs: stopping ``serve`` pauses nothing and deletes nothing; a night that
passes with no worker is shown as Late, alerted, and run when a worker polls again.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TextIO

from deployments import automations, processes
from deployments.definitions import DEPLOYMENTS, WORK_POOL
from deployments.deploy import Provisioned, deploy
from deployments.server import LocalServer
from kernel.errors import BadInput, ExportError

WORKER_START_TIMEOUT = 120.0


def provision(api_url: str, pool: str = WORK_POOL,
              target: automations.AlertTarget | None = None) -> Provisioned:
    """Pool, deployments and automations on the server ``api_url`` (idempotent)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings  # noqa: PLC0415

    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        return deploy(pool, None, target)


def _wait_worker_online(api_url: str, pool: str, name: str,
                        worker: subprocess.Popen[bytes]) -> None:
    """Until the worker is ONLINE in the pool; an error if it exits (refused) first."""
    from prefect.client.orchestration import get_client  # noqa: PLC0415
    from prefect.settings import PREFECT_API_URL, temporary_settings  # noqa: PLC0415

    deadline = time.monotonic() + WORKER_START_TIMEOUT
    with temporary_settings(updates={PREFECT_API_URL: api_url}), \
            get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            if worker.poll() is not None:
                raise ExportError("the worker did not start (its reasons are printed above): "
                                  "fix the configuration, `tenant-export doctor` checks it")
            if any(w.name == name and w.status == "ONLINE"
                   for w in client.read_workers_for_work_pool(pool)):
                return
            time.sleep(0.5)
    raise ExportError(f"the worker did not come online in {WORKER_START_TIMEOUT:g} s")


def serve_all(port: int, *, worker_env: Mapping[str, str] | None = None,
              metrics_port: int | None = None, home: Path | None = None,
              out: TextIO = sys.stdout) -> None:
    """Run server, deployments, alerts and one worker until SIGINT or SIGTERM.

    Args:
        port: the local server's port (ignored when ``PREFECT_API_URL`` is set).
        worker_env: variables added to the worker's environment (embedded defaults).
        metrics_port: where the worker serves Prometheus metrics (``None``: not served).
        home: ``PREFECT_HOME`` of the local server (``None``: Prefect's default).

    Raises:
        BadInput: the port is taken, or the alert target is malformed.
        ExportError: the server or the worker did not start.
    """
    target = automations.AlertTarget.from_environ(os.environ)
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM stops like Ctrl-C
    server: LocalServer | None = None
    worker: subprocess.Popen[bytes] | None = None
    try:
        api_url = os.environ.get("PREFECT_API_URL", "")
        if not api_url:
            server = LocalServer(port=port, home=home)
            print(f"Starting a Prefect server on 127.0.0.1:{port} ...", file=out, flush=True)
            server.start()
            api_url = server.api_url
        provision(api_url, WORK_POOL, target)
        name = f"serve-{os.getpid()}"
        args = ["deployments.worker", "--pool", WORK_POOL, "--name", name]
        if metrics_port is not None:
            args += ["--metrics-port", str(metrics_port)]
        env = {**os.environ, **(worker_env or {}), "PREFECT_API_URL": api_url}
        worker = processes.start(processes.python(*args), env)
        _wait_worker_online(api_url, WORK_POOL, name, worker)
        _banner(out, server.ui_url if server else api_url.removesuffix("/api"), name, target)
        while worker.poll() is None:
            time.sleep(0.5)
        raise ExportError(f"the worker exited with status {worker.returncode}")
    except KeyboardInterrupt:
        print("Stopping: the worker first (its runs end as Crashed), then the server ...",
              file=out, flush=True)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not cut this short
            signal.signal(sig, signal.SIG_IGN)
        if worker is not None:
            processes.stop(worker, signal.SIGTERM, grace=60.0)
        if server is not None:
            server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def _banner(out: TextIO, ui_url: str, worker: str, target: automations.AlertTarget) -> None:
    names = ", ".join(d.name for d in DEPLOYMENTS)
    alert = ("alerts go to the configured target" if target.configured else
             "no alert target configured (TENANT_EXPORT_ALERT_WEBHOOK_URL): alerts show only "
             "in the UI's event feed")
    print(f"Prefect UI: {ui_url}\n"
          f"  deployments on work pool {WORK_POOL!r}: {names}\n"
          f"  worker {worker!r} is running; `make worker` adds one more\n"
          f"  {alert}\n"
          "  Schedules live on the server: keep it running for the 03:30 backup to be due, "
          "and a worker for it to run.\n"
          "Ctrl-C stops the worker, then the server.", file=out, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m deployments.serve``."""
    parser = argparse.ArgumentParser(prog="python -m deployments.serve", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=4200, help="server port (default 4200)")
    parser.add_argument("--metrics-port", type=int,
                        help="the worker serves Prometheus metrics on this port")
    args = parser.parse_args(argv)
    try:
        serve_all(args.port, metrics_port=args.metrics_port)
    except BadInput as err:
        print(f"serve: error: {err}", file=sys.stderr)
        return 2
    except ExportError as err:
        print(f"serve: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
