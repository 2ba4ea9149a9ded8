"""``python -m deployments.worker``: one more worker on the work pool (``make worker``).

It refuses to start with an incomplete configuration (the ``doctor`` checks, plus a reachable
``PREFECT_API_URL``): a worker that starts without the master key fails the 03:30 backup, one
that refuses fails now, in front of the operator. Then it runs Prefect's own process worker as
a child and, beside it, the metrics endpoint and the backup-age gauge (``deployments.monitor``).

Stopping (SIGINT, SIGTERM): the flow runs in progress are sent SIGTERM first, so each ends as
Crashed and releases its tenant lock on the way out, then the Prefect worker is stopped; the
automation *re-run crashed flow runs* then runs each again on a worker that is left (or the
next one to start).
Stopped the other way round, Prefect's worker drops its runs and they stay Running, holding
their locks until the leases expire.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TextIO

from pydantic import ValidationError

from deployments import processes
from deployments.definitions import WORK_POOL
from deployments.doctor import Check, run_checks
from deployments.monitor import metrics_config, worker_monitoring
from kernel.errors import BadInput
from kernel.settings import Settings

Preflight = Callable[[Settings], Sequence[Check]]
HEARTBEAT_SECONDS = "30"
"""Flow runs report a heartbeat this often; the zombie automation marks a run Crashed after
three missed beats (its machine died), so it never looks Running forever."""


@dataclass(frozen=True)
class WorkerOptions:
    """How one worker runs."""

    pool: str = WORK_POOL
    name: str | None = None
    limit: int = 4
    """Flow runs at once on this worker (each is a process of its own)."""
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    stop_grace: float = 30.0
    """Seconds a stopping run gets to record its end before it is killed."""

    def worker_name(self) -> str:
        """The name the UI shows: host and process, so two workers of a machine differ."""
        return self.name or f"{socket.gethostname()}-{os.getpid()}"


def refusals(settings: Settings, preflight: Preflight, environ: Mapping[str, str]) -> list[str]:
    """Why this worker must not start (empty: it may)."""
    lines = [c.line() for c in preflight(settings) if c.required and not c.ok]
    if not environ.get("PREFECT_API_URL"):
        lines.append("FAIL  Prefect API: PREFECT_API_URL is not set: a worker polls a Prefect "
                     "server (`make serve` starts one and prints its address)")
    return lines


def worker_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The Prefect worker's environment, inherited by its flow runs (heartbeats on)."""
    env = dict(environ)
    env.setdefault("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", HEARTBEAT_SECONDS)
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    return env


def run_worker(options: WorkerOptions, *, preflight: Preflight = run_checks,
               environ: Mapping[str, str] | None = None, out: TextIO = sys.stderr) -> int:
    """Check the configuration, then run a worker until stopped; the exit status."""
    environ = dict(os.environ if environ is None else environ)
    try:
        settings = Settings()
        config = metrics_config(environ)
    except (ValidationError, BadInput) as err:
        print(f"worker: error: invalid configuration: {err}", file=out)
        return 2
    problems = refusals(settings, preflight, environ)
    if problems:
        print("worker: refusing to start, the configuration is incomplete "
              "(`tenant-export doctor` shows every check):", file=out)
        for line in problems:
            print(f"  {line}", file=out)
        return 1
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with worker_monitoring(settings, config, port=options.metrics_port,
                           host=options.metrics_host) as endpoint:
        if endpoint is not None:
            print(f"worker: Prometheus metrics at {endpoint.url}", file=out, flush=True)
        child = processes.start(
            processes.python("prefect", "worker", "start", "--pool", options.pool,
                             "--name", options.worker_name(), "--limit", str(options.limit)),
            worker_env(environ))
        try:
            while not stop.is_set() and child.poll() is None:
                stop.wait(0.5)
        finally:
            shutdown(child, options.stop_grace)
    return 0 if stop.is_set() else (child.returncode or 1)


def shutdown(child: subprocess.Popen[bytes], grace: float) -> None:
    """End the worker's flow runs (SIGTERM: they record Crashed, release locks), then it."""
    runs = processes.children_of(child.pid)
    for pid in runs:
        processes.signal_pid(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while any(processes.alive(pid) for pid in runs) and time.monotonic() < deadline:
        time.sleep(0.2)
    processes.stop(child, signal.SIGINT, grace)
    for pid in runs:
        processes.signal_pid(pid, signal.SIGKILL)


def parse(argv: Sequence[str] | None = None) -> WorkerOptions:
    """Command-line options (``make worker ARGS=...``)."""
    parser = argparse.ArgumentParser(prog="python -m deployments.worker", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pool", default=WORK_POOL, help="work pool to poll")
    parser.add_argument("--name", help="worker name shown in the UI (default: host-pid)")
    parser.add_argument("--limit", type=int, default=4, help="flow runs at once (default 4)")
    parser.add_argument("--metrics-port", type=int,
                        help="serve Prometheus metrics on this port (default: not served)")
    parser.add_argument("--metrics-host", default="127.0.0.1",
                        help="address the metrics endpoint listens on")
    args = parser.parse_args(argv)
    return WorkerOptions(pool=args.pool, name=args.name, limit=args.limit,
                         metrics_port=args.metrics_port, metrics_host=args.metrics_host)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m deployments.worker``."""
    return run_worker(parse(argv))


if __name__ == "__main__":
    sys.exit(main())
