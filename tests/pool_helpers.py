"""Helpers for tests that run a real Prefect server with workers on the process pool: an
HTTP receiver for alerts, an S3 proxy that holds chosen requests, workers as subprocesses."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

from deployments import processes
from tests.s3proxy import S3Proxy, S3Request
from tests.services import ROOT

T = TypeVar("T")


def wait_for(check: Callable[[], T | None], timeout: float, what: str,
             interval: float = 0.5) -> T:
    """Poll ``check`` until it returns something truthy (generous timeouts: a busy CI box)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


class Webhook:
    """A local notification target: collects the JSON bodies POSTed to it."""

    def __init__(self) -> None:
        received: queue.Queue[dict[str, Any]] = queue.Queue()
        self.received = received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.put(json.loads(body or b"{}"))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/alerts"

    def next_matching(self, predicate: Callable[[dict[str, Any]], bool],
                      timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no matching alert within {timeout:g} s")
            with contextlib.suppress(queue.Empty):
                message = self.received.get(timeout=left)
                if predicate(message):
                    return message

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class GatedProxy(S3Proxy):
    """``S3Proxy`` that holds requests matching ``held`` until :meth:`open` (or forever)."""

    def __init__(self, upstream_url: str, held: Callable[[S3Request], bool]) -> None:
        super().__init__(upstream_url)
        self.held = held
        self.gate = threading.Event()
        self._waiting = 0
        self._count_lock = threading.Lock()

    @property
    def waiting(self) -> int:
        with self._count_lock:
            return self._waiting

    def close_gate(self) -> None:
        self.gate.clear()

    def open(self) -> None:
        self.gate.set()

    def _admit(self, request: S3Request) -> Any:
        if not self.gate.is_set() and self.held(request):
            with self._count_lock:
                self._waiting += 1
            try:
                self.gate.wait()
            finally:
                with self._count_lock:
                    self._waiting -= 1
        return super()._admit(request)


class Worker:
    """``python -m deployments.worker`` as a subprocess, its output in a log file."""

    def __init__(self, name: str, env: dict[str, str], log_dir: Path, *args: str) -> None:
        self.name = name
        self.log = log_dir / f"worker-{name}.log"
        self.process = processes.start(
            processes.python("deployments.worker", "--name", name, *args), env,
            log=self.log, cwd=ROOT)

    def tree(self) -> list[int]:
        """The supervisor, Prefect's worker and its flow-run processes."""
        pids = [self.process.pid]
        for child in processes.children_of(self.process.pid):
            pids += [child, *processes.children_of(child)]
        return pids

    def flow_run_pids(self) -> list[int]:
        return [pid for child in processes.children_of(self.process.pid)
                for pid in processes.children_of(child)]

    def kill_machine(self) -> None:
        """What a machine dying does: every process of the worker ends at once, nothing is
        told (flow runs first, so none survives its parent)."""
        for pid in reversed(self.tree()):
            processes.signal_pid(pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> int:
        return processes.stop(self.process, signal.SIGTERM, grace=90)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def worker_env(api_url: str, home: Path, **extra: str) -> dict[str, str]:
    """The test process's environment (the platform's variables) pointed at the server."""
    env = {**os.environ, "PREFECT_API_URL": api_url, "PREFECT_HOME": str(home),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "INFO"}
    env.update(extra)
    return env


@contextlib.contextmanager
def running(*workers: Worker) -> Iterator[tuple[Worker, ...]]:
    try:
        yield workers
    finally:
        for worker in workers:
            if worker.process.poll() is None:
                worker.stop()


def no_process_left(pids: list[int]) -> bool:
    return not any(processes.alive(pid) for pid in pids)


def run_command(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=600, check=False)
