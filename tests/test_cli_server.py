"""The local Prefect server the CLI keeps between commands (tenant_export.localserver).

The life cycle (one server for concurrent commands, reuse, idle stop, stale state, a taken
port, a crashed server) runs real watchdog processes and locks around a stand-in HTTP server
that answers /api/health, so each case takes a second, not a Prefect start; the end-to-end
test runs real CLI commands against a real kept ``prefect server start``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from deployments import processes
from tenant_export import localserver
from tenant_export.localserver import (
    Lease,
    ServerState,
    files_of,
    healthy,
    use_server,
    watchdog_pid,
)
from tests.conftest import Platform

STAND_IN = r"""
import http.server, sys
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/api/health" else 404)
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Health).serve_forever()
"""
SERVER = [sys.executable, "-c", STAND_IN, "{port}"]


def _wait(what: str, probe: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := probe()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.1)
    return value


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    state = tmp_path / "state"
    yield state
    localserver.stop(state)  # nothing outlives a test


def _stopped(state_dir: Path, lease: Lease) -> bool:
    server = lease.server
    return (watchdog_pid(files_of(state_dir)) is None and not files_of(state_dir).state.exists()
            and not healthy(server.api_url, 0.5)
            and not processes.alive(server.server_pid or 0))


def test_commands_started_at_once_share_one_server(state_dir: Path) -> None:
    leases: list[Lease] = []
    together = threading.Barrier(4)

    def command() -> None:
        together.wait()
        with use_server(state_dir, 60, server_command=SERVER) as lease:
            leases.append(lease)
            time.sleep(0.5)  # all four hold it at the same time

    threads = [threading.Thread(target=command) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(leases) == 4
    assert [lease.started for lease in leases].count(True) == 1
    assert len({lease.server for lease in leases}) == 1
    assert healthy(leases[0].server.api_url)
    assert watchdog_pid(files_of(state_dir)) == leases[0].server.watchdog_pid


def test_reused_then_stopped_after_idling(state_dir: Path) -> None:
    with use_server(state_dir, 1, server_command=SERVER) as first:
        assert first.started and first.server.idle_seconds == 1
    with use_server(state_dir, 1, server_command=SERVER) as second:
        assert not second.started and second.server == first.server
    _wait("the idle server to stop", lambda: _stopped(state_dir, first), 20)
    assert "stopped after 1 s idle" in files_of(state_dir).log.read_text()
    with use_server(state_dir, 1, server_command=SERVER) as third:
        assert third.started and third.server.port == first.server.port  # same UI address


def test_a_command_still_running_keeps_it_up(state_dir: Path) -> None:
    with use_server(state_dir, 1, server_command=SERVER) as lease:
        time.sleep(3)  # three times the idle time: a long export
        assert healthy(lease.server.api_url)
        assert watchdog_pid(files_of(state_dir)) == lease.server.watchdog_pid
    _wait("the server to stop once the command ended", lambda: _stopped(state_dir, lease), 20)


def test_a_stale_state_file_is_replaced_and_its_pids_left_alone(state_dir: Path) -> None:
    files = files_of(state_dir)
    files.root.mkdir(parents=True)
    # After a reboot or a SIGKILL the file names pids that now belong to someone else (here:
    # this very test process) and a port nobody serves.
    stale = ServerState(port=9, watchdog_pid=os.getpid(), server_pid=os.getpid(),
                        idle_seconds=60, started_at="2026-01-01T00:00:00+00:00", ready=True)
    files.state.write_text(json.dumps(stale.__dict__))
    with use_server(state_dir, 60, server_command=SERVER) as lease:
        assert lease.started and lease.server.watchdog_pid != os.getpid()
        assert healthy(lease.server.api_url)


def test_a_taken_port_is_skipped(state_dir: Path) -> None:
    files = files_of(state_dir)
    files.root.mkdir(parents=True)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        files.last_port.write_text(str(port))  # the previous server's port is someone's now
        with use_server(state_dir, 60, server_command=SERVER) as lease:
            assert lease.started and lease.server.port != port
            assert healthy(lease.server.api_url)
    assert f"port {port} is taken" in files.log.read_text()  # one log per start, all attempts


def test_a_crashed_server_is_replaced(state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(localserver, "UNHEALTHY_GRACE_SECONDS", 1.0)
    with use_server(state_dir, 60, server_command=SERVER) as first:
        pass
    processes.signal_pid(first.server.server_pid or 0, signal.SIGKILL)
    with use_server(state_dir, 60, server_command=SERVER) as second:
        assert second.started and healthy(second.server.api_url)
        assert second.server.server_pid != first.server.server_pid
    assert not processes.alive(first.server.watchdog_pid)


def test_stop_and_status_for_operators(state_dir: Path, capsys: pytest.CaptureFixture[str]
                                       ) -> None:
    assert localserver.main(["status", "--state-dir", str(state_dir)]) == 0
    assert json.loads(capsys.readouterr().out)["running"] is False
    with use_server(state_dir, 60, server_command=SERVER) as lease:
        pass
    localserver.main(["status", "--state-dir", str(state_dir)])
    status = json.loads(capsys.readouterr().out)
    assert status["running"] and status["healthy"] and status["url"] == lease.server.ui_url
    assert localserver.main(["stop", "--state-dir", str(state_dir)]) == 0
    assert capsys.readouterr().out == "stopped\n"
    assert _stopped(state_dir, lease)
    localserver.main(["stop", "--state-dir", str(state_dir)])
    assert capsys.readouterr().out == "not running\n"


# -- the real CLI and a real Prefect server ------------------------------------------------------

STARTED = re.compile(r"^started a local Prefect server on (http://127\.0\.0\.1:\d+) \(stops "
                     r"after 5 min idle\); set PREFECT_API_URL to use yours$", re.MULTILINE)


def _cli(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "tenant_export.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_cli_commands_run_their_flows_on_one_kept_server(sqlite_platform: Platform,
                                                         tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName
    from prefect.settings import PREFECT_API_URL, temporary_settings

    state_dir = Path(os.environ["TENANT_EXPORT_STATE_DIR"])
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}  # embedded defaults
    env.update(TENANT_EXPORT_LOCAL_SERVER_IDLE="5m", PREFECT_HOME=str(tmp_path / "client"))
    try:
        # Refused input never starts a server: the body refuses before its first flow.
        refused = _cli(env, "snapshots", "not a tenant!")
        _, err = refused.communicate(timeout=120)
        assert refused.returncode == 2 and "invalid tenant id" in err, err
        bad_idle = _cli({**env, "TENANT_EXPORT_LOCAL_SERVER_IDLE": "soon"}, "migration", "open",
                        "t-1")
        _, err = bad_idle.communicate(timeout=120)
        assert bad_idle.returncode == 2
        assert "TENANT_EXPORT_LOCAL_SERVER_IDLE: invalid duration 'soon'" in err
        assert not files_of(state_dir).state.exists()

        # Two commands at once: one server, said once.
        both = [_cli(env, "migration", "open", "t-1", "--json") for _ in range(2)]
        done = [process.communicate(timeout=300) for process in both]
        assert [process.returncode for process in both] == [0, 0], done
        announced = [m for _, err in done for m in STARTED.findall(err)]
        assert len(announced) == 1, [err for _, err in done]
        cases = [json.loads(out)["case_id"] for out, _ in done]  # stdout: JSON only
        assert len(set(cases)) == 2

        # The next command reuses it, silently (`close` runs a flow; `statement` runs none).
        later = _cli(env, "migration", "close", cases[0], "--json")
        out, err = later.communicate(timeout=300)
        assert later.returncode == 0, err
        assert json.loads(out)["case_id"] == cases[0] and not STARTED.search(err)

        state = localserver.read_state(files_of(state_dir))
        assert state is not None and state.ui_url == announced[0]
        assert state.idle_seconds == 300 and healthy(state.api_url)
        with temporary_settings(updates={PREFECT_API_URL: state.api_url}), \
                get_client(sync_client=True) as client:
            runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(
                name=FlowRunFilterName(any_=["migration-open", "migration-close"])))
        assert sorted(run.name for run in runs) == [
            "migration-close", "migration-open", "migration-open"]
        assert all(run.state is not None and run.state.is_completed() for run in runs)
    finally:
        localserver.stop(state_dir)
    assert not files_of(state_dir).state.exists()
