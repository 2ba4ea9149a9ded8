"""How a requested export gets run: through the Prefect deployment, or in-process.

A starter launches the offboarding export for one request and later says what became of it.
``PrefectStarter`` creates a flow run of the export deployment (``run_deployment(...,
timeout=0)``): workers run it, operators see it in the UI. ``InProcessStarter`` runs the same
flow in a thread of the portal process, for one machine without a Prefect server (and tests);
while it runs, a heartbeat in the control database says the process is alive, so a request
whose process died is reported failed instead of running for ever.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from flows.context import using
from kernel.errors import BadInput, ExportError, TenantBusy, VerificationFailed
from kernel.settings import Settings
from portal.config import PortalSettings
from portal.jobs import Job, JobState, JobStore

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun

    from flows.export_flow import ExportRequest

log = logging.getLogger("portal")
HEARTBEAT_SECONDS = 10.0
STALE_AFTER = timedelta(seconds=90)
INTERRUPTED = ("interrupted: the portal process that ran this export stopped before it "
               "finished; start a new export")


@dataclass(frozen=True)
class RunUpdate:
    """What a run says about itself now."""

    state: JobState
    started_at: datetime | None = None
    finished_at: datetime | None = None
    failure: str | None = None


class ExportStarter(Protocol):
    """Launches exports and reports on them (``name`` is stored with each request)."""

    name: str

    def start(self, job: Job) -> str:
        """Launch the export of ``job``; returns a reference to the run."""
        ...

    def status(self, job: Job) -> RunUpdate | None:
        """What became of an active request (None: nothing to add)."""
        ...


def failure_line(err: BaseException) -> str:
    """A failure as the client may read it: refusals and failed checks say what failed; any
    other error only its kind (its message may name the platform's hosts and buckets)."""
    if isinstance(err, BadInput | TenantBusy | VerificationFailed):
        return f"{type(err).__name__}: {err}"
    return (f"{type(err).__name__}: the export failed on the platform's side; the operators "
            "have the details")


def stale(job: Job, now: datetime) -> RunUpdate | None:
    """A failed update for an in-process request whose heartbeat stopped."""
    beat = job.heartbeat_at or job.requested_at
    if job.active and datetime.fromisoformat(beat) < now - STALE_AFTER:
        return RunUpdate("failed", failure=INTERRUPTED)
    return None


class InProcessStarter:
    """Runs the export flow in a thread of this process."""

    name = "in-process"

    def __init__(self, settings: Settings, jobs: JobStore, *, link_ttl_seconds: int,
                 run_export: Callable[[ExportRequest], dict[str, Any]] | None = None) -> None:
        self._settings, self._jobs, self._ttl = settings, jobs, link_ttl_seconds
        self._run_export = run_export or _offboarding_export
        if run_export is None:
            _prefect_logging_now()
        self._instance = uuid.uuid4().hex
        self._threads: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()
        self._beating: threading.Thread | None = None

    def start(self, job: Job) -> str:
        """A thread runs the flow; returns ``in-process:<this process's instance>``."""
        thread = threading.Thread(target=self._run, args=(job,), daemon=True,
                                  name=f"portal-export-{job.request_id}")
        with self._lock:
            self._threads[job.request_id] = thread
            if self._beating is None or not self._beating.is_alive():
                self._beating = threading.Thread(target=self._heartbeat, daemon=True,
                                                 name="portal-export-heartbeat")
                self._beating.start()
        thread.start()
        return f"in-process:{self._instance}"

    def status(self, job: Job) -> RunUpdate | None:
        """Failed when the heartbeat stopped (the process that ran it is gone)."""
        return stale(job, self._jobs.clock())

    def wait(self, timeout: float) -> bool:
        """Wait for the running exports (tests, shutdown); True when none is left."""
        with self._lock:
            threads = list(self._threads.values())
        deadline = datetime.now(UTC) + timedelta(seconds=timeout)
        for thread in threads:
            thread.join(max(0.0, (deadline - datetime.now(UTC)).total_seconds()))
        return not any(t.is_alive() for t in threads)

    def _run(self, job: Job) -> None:
        from flows.export_flow import ExportRequest  # noqa: PLC0415 - imports Prefect

        try:
            self._jobs.running(job.request_id)
            with using(self._settings):
                result = self._run_export(ExportRequest(
                    tenant_id=job.tenant_id, link_ttl_seconds=self._ttl, excel=job.excel))
            self._jobs.completed(job.request_id, str(result["export_id"]))
        except BaseException as err:  # noqa: BLE001 - every end of the run is recorded
            log.error("export request %s of tenant %s failed: %s: %s", job.request_id,
                      job.tenant_id, type(err).__name__, err)
            with contextlib.suppress(ExportError):  # else the stopped heartbeat tells
                self._jobs.failed(job.request_id, failure_line(err))
        finally:
            with self._lock:
                self._threads.pop(job.request_id, None)

    def _heartbeat(self) -> None:
        """Every few seconds while exports run: they are alive (stops when none runs)."""
        while True:
            with self._lock:
                running = list(self._threads)
                if not running:
                    self._beating = None
                    return
            with contextlib.suppress(ExportError):  # the next beat tries again
                self._jobs.heartbeat(running)
            threading.Event().wait(HEARTBEAT_SECONDS)


SERVER_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "fastapi")


@contextlib.contextmanager
def _loggers_kept(names: tuple[str, ...]) -> Iterator[None]:
    """Restore these loggers' level, handlers and propagation afterwards."""
    saved = {n: (logging.getLogger(n).level, logging.getLogger(n).propagate,
                 list(logging.getLogger(n).handlers)) for n in names}
    try:
        yield
    finally:
        for name, (level, propagate, handlers) in saved.items():
            logger = logging.getLogger(name)
            logger.setLevel(level)
            logger.propagate = propagate
            logger.handlers[:] = handlers


def _prefect_logging_now() -> None:
    """Configure Prefect's logging at start-up rather than at the first flow run: its
    configuration also claims uvicorn's loggers (WARNING, its own handler), which would
    silence the server's access log mid-way; the server's loggers are kept as they are."""
    from prefect.logging.configuration import ensure_logging_setup  # noqa: PLC0415

    with _loggers_kept(SERVER_LOGGERS):
        ensure_logging_setup()


def _offboarding_export(request: ExportRequest) -> dict[str, Any]:
    from flows.export_flow import offboarding_export  # noqa: PLC0415 - Prefect, when used

    return offboarding_export(request)


_PREFECT_STATES: dict[str, JobState] = {
    "SCHEDULED": "requested", "PENDING": "requested", "PAUSED": "running",
    "RUNNING": "running", "CANCELLING": "running", "COMPLETED": "completed",
    "FAILED": "failed", "CRASHED": "failed", "CANCELLED": "failed",
}


class PrefectStarter:
    """Creates flow runs of the export deployment; reads their state back from the API."""

    name = "prefect"

    def __init__(self, deployment: str, *, link_ttl_seconds: int) -> None:
        self._deployment, self._ttl = deployment, link_ttl_seconds

    def start(self, job: Job) -> str:
        """A flow run scheduled now (workers pick it up); returns its id."""
        from prefect.deployments import run_deployment  # noqa: PLC0415

        run: FlowRun = run_deployment(  # type: ignore[assignment] # sync here: no event loop
            self._deployment, timeout=0, as_subflow=False, idempotency_key=job.request_id,
            parameters={"request": {"tenant_id": job.tenant_id, "link_ttl_seconds": self._ttl,
                                    "excel": job.excel}},
            tags=["portal"], flow_run_name=f"export-{job.tenant_id}-portal",
        )
        return str(run.id)

    def status(self, job: Job) -> RunUpdate | None:
        """The flow run's state, as a request state (its message when it failed)."""
        if not job.run_ref:
            return None
        return prefect_status(job.run_ref)


def prefect_status(run_ref: str) -> RunUpdate | None:
    """A flow run's state as a request state (its message when it failed)."""
    from prefect.client.orchestration import get_client  # noqa: PLC0415

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(uuid.UUID(run_ref))
    state = run.state
    if state is None:
        return None
    mapped = _PREFECT_STATES.get(state.type.name, "running")
    failure = None
    if mapped == "failed":
        failure = f"{state.name}: {state.message or 'no reason given'}"
    return RunUpdate(mapped, started_at=run.start_time, finished_at=run.end_time,
                     failure=failure)


def choose_starter(settings: Settings, portal: PortalSettings, jobs: JobStore) -> ExportStarter:
    """The starter the settings ask for; ``auto`` takes the deployment when a Prefect API is
    configured and has it, else runs exports in-process.

    Raises:
        ExportError: ``prefect`` asked for, and the API or the deployment cannot be reached.
    """
    if portal.starter == "in-process":
        return InProcessStarter(settings, jobs, link_ttl_seconds=portal.link_ttl_seconds)
    prefect = PrefectStarter(portal.deployment, link_ttl_seconds=portal.link_ttl_seconds)
    if portal.starter == "prefect" or deployment_exists(portal.deployment):
        return prefect
    return InProcessStarter(settings, jobs, link_ttl_seconds=portal.link_ttl_seconds)


def deployment_exists(name: str) -> bool:
    """Whether the configured Prefect API has the deployment (False without an API)."""
    from prefect.client.orchestration import get_client  # noqa: PLC0415
    from prefect.exceptions import ObjectNotFound  # noqa: PLC0415
    from prefect.settings import PREFECT_API_URL  # noqa: PLC0415

    if not PREFECT_API_URL.value():
        return False
    try:
        with get_client(sync_client=True) as client:
            client.read_deployment_by_name(name)
    except ObjectNotFound:
        return False
    except Exception as err:
        raise ExportError(f"the Prefect API at {PREFECT_API_URL.value()} did not answer "
                          f"whether deployment {name!r} exists: {type(err).__name__}: {err}"
                          ) from err
    return True
