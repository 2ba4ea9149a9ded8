"""What runs tell the outside: audit events, metrics, Prefect events, and who acted.

Every flow reports through here, so an export, a backup and a purge describe themselves the
same way. Audit events are required (an installation without a reachable control database
cannot lock tenants either); metrics and Prefect events never fail the run that reports them.
"""

from __future__ import annotations

import getpass
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kernel.errors import ExportError
from kernel.settings import Settings
from monitoring import METADATA, FigureStore, Metrics, MetricsConfig
from storage.audit import AuditEvent, AuditTrail
from storage.control import open_control

logger = logging.getLogger(__name__)


def current_actor(explicit: str | None = None) -> str:
    """Who acts: the caller's own word, else ``schedule`` for a scheduled run, ``prefect-ui``
    for a run started from a deployment by hand, ``cli:<user>`` for a command."""
    if explicit:
        return explicit
    if "prefect" in sys.modules:  # no flow run without Prefect loaded (the CLI's quick commands)
        try:
            from prefect.runtime import deployment, flow_run  # noqa: PLC0415 - at run time

            if deployment.id:
                return "schedule" if _auto_scheduled(flow_run.id) else "prefect-ui"
        except Exception:
            logger.debug("no Prefect run context for the actor", exc_info=True)
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name (a container without one)
        return "cli"


def _auto_scheduled(flow_run_id: str | None) -> bool:
    from uuid import UUID  # noqa: PLC0415

    from prefect.client.orchestration import get_client  # noqa: PLC0415

    if not flow_run_id:
        return False
    with get_client(sync_client=True) as client:
        return bool(client.read_flow_run(UUID(flow_run_id)).auto_scheduled)


def audit(settings: Settings, kind: str, tenant_id: str | None, actor: str,
          **details: Any) -> AuditEvent:
    """Append one event to the audit trail (ids, counts and TTLs only: never a link)."""
    trail = AuditTrail(settings.resolved_control_url())
    try:
        return trail.record(kind, tenant_id, actor, **details)
    finally:
        trail.close()


def audit_if_possible(settings: Settings, kind: str, tenant_id: str | None, actor: str,
                      **details: Any) -> AuditEvent | None:
    """Record the event unless the control database is unreachable, which must not stop a
    recovery (restore, verify) that does not otherwise need it: then say so in the log."""
    try:
        return audit(settings, kind, tenant_id, actor, **details)
    except ExportError as err:
        logger.warning("the audit trail did not record %s for tenant %s: %s", kind, tenant_id,
                       err)
        return None


@contextmanager
def open_metrics(settings: Settings) -> Iterator[Metrics]:
    """Metrics for one run; with the control database unreachable, DogStatsD only."""
    engine = None
    try:
        engine = open_control(settings.resolved_control_url(), METADATA)
        store: FigureStore | None = FigureStore(engine)
    except ExportError as err:
        logger.warning("metrics are not kept for Prometheus: %s", err)
        store = None
    metrics = Metrics.open(MetricsConfig(settings.dogstatsd_host, settings.dogstatsd_port),
                           store)
    try:
        yield metrics
    finally:
        metrics.close()
        if engine is not None:
            engine.dispose()


def emit(name: str, tenant_id: str, payload: dict[str, Any]) -> None:
    """A Prefect event about a tenant (``tenant.export.ready``...) for operators' automations;
    outside a run or without a server it is dropped with a debug line, never an error."""
    try:
        from prefect.events import emit_event  # noqa: PLC0415

        emit_event(event=name, resource={"prefect.resource.id": f"tenant.{tenant_id}",
                                         "prefect.resource.name": tenant_id}, payload=payload)
    except Exception:
        logger.debug("event %s for %s not emitted", name, tenant_id, exc_info=True)
