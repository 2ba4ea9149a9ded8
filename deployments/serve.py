"""``tenant-export serve``: a Prefect server plus the deployments operators run from the UI.

When ``PREFECT_API_URL`` is set, the deployments are served against that server; otherwise a
local server is started on 127.0.0.1 (SQLite-backed, as ``prefect server start`` does) and
stopped on exit.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any, cast

from kernel.errors import ExportError

# Nightly backups at 03:30 Berlin time: after the 02:00-03:00 hour that the DST switches skip
# or repeat, so the run happens exactly once every night. Retention follows at 05:30.
NIGHTLY_BACKUP_CRON = "30 3 * * *"
PRUNE_CRON = "30 5 * * *"
TIMEZONE = "Europe/Berlin"


def build_deployments() -> list[Any]:
    """The deployments operators see in the UI (schedules included)."""
    from prefect.deployments.runner import RunnerDeployment  # noqa: PLC0415
    from prefect.schedules import Cron  # noqa: PLC0415

    from flows.backup_flow import (  # noqa: PLC0415
        nightly_backup,
        prune_backups,
        restore_backup,
        verify_backup,
    )
    from flows.export_flow import export_links, offboarding_export  # noqa: PLC0415
    from flows.migration_flow import assisted_migration  # noqa: PLC0415

    specs: list[tuple[Any, str, str, dict[str, Any]]] = [
        (offboarding_export, "offboarding-export",
         "Self-service offboarding export of one tenant (CSV + ZIP, signed links).", {}),
        (export_links, "export-links", "Fresh signed links for a retained export.", {}),
        (assisted_migration, "assisted-migration",
         "Assisted migration case (terms 14.2): waits for the operator's input (time, "
         "bookings, automated steps) until closed; produces the statement.", {}),
        (nightly_backup, "nightly-backup", "Encrypted backup of every tenant, every night.",
         {"schedules": [Cron(NIGHTLY_BACKUP_CRON, timezone=TIMEZONE)]}),
        (prune_backups, "prune-backups", "Backup retention (GFS), after the nightly backup.",
         {"schedules": [Cron(PRUNE_CRON, timezone=TIMEZONE)]}),
        (verify_backup, "verify-backup", "Decrypt and check every object of a snapshot.", {}),
        (restore_backup, "restore-backup", "Restore a snapshot into an empty database.", {}),
    ]
    return [cast(RunnerDeployment, flow_.to_deployment(name=name, description=text,
                                                       tags=["tenant-export"], **extra))
            for flow_, name, text, extra in specs]


def _wait_healthy(api_url: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:  # noqa: S310
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            time.sleep(0.5)
    raise ExportError(f"the Prefect server at {api_url} did not become healthy in {timeout:g} s")


def _port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def serve_all(port: int) -> None:
    """Serve the flows as deployments (blocks until interrupted)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings  # noqa: PLC0415

    server: subprocess.Popen[bytes] | None = None
    api_url = os.environ.get("PREFECT_API_URL", "")
    try:
        if not api_url:
            api_url = f"http://127.0.0.1:{port}/api"
            if _port_in_use(port):
                raise ExportError(f"port {port} is in use: stop what listens there, pass "
                                  "--port, or set PREFECT_API_URL to use that server")
            env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                   "PREFECT_UI_API_URL": api_url}
            server = subprocess.Popen(  # noqa: S603 - our own interpreter, fixed arguments
                [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                 "--port", str(port)], env=env,
            )
            _wait_healthy(api_url)
            print(f"Prefect UI: http://127.0.0.1:{port}  (API {api_url})")
        from prefect import serve  # noqa: PLC0415

        deployments = build_deployments()
        # Settings are read when Prefect is imported: point this process at the server here.
        with temporary_settings(updates={PREFECT_API_URL: api_url}):
            serve(*deployments)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
