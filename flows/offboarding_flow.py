"""Offboarding flows: the case (a form in the UI), the daily sweeper that advances cases whose
dates have come, the export-retention cleanup and the purge. Thin: the recipes are
``flows/offboarding.py`` and ``flows/purge.py``.

``now`` parameters replay a day (tests drive the clock with them); scheduled runs leave them
empty. A run started from a deployment may only replay the past: a ``now`` ahead of the clock
would send notices and purge early on anyone's say-so (:func:`replay_clock`).
Events (``tenant.export.ready``, ``tenant.purged``, ``tenant.offboarding.<step>``) name
the resource ``tenant.<id>`` so operators can attach automations.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.events import emit_event
from pydantic import BaseModel, ConfigDict, Field, field_validator

from flows import offboarding as case_recipe
from flows import purge as purge_recipe
from flows.backup_flow import error_line, nightly_backup
from flows.context import RunContext, current_settings
from flows.export_flow import ExportRequest, export_links, offboarding_export
from flows.locks import tenant_lock
from flows.offboarding import CaseActions, CaseDesk
from kernel.errors import BadInput, ExportError
from kernel.ids import artifact_key, validate_tenant_id
from storage.cases import Case
from storage.s3 import make_client
from storage.signing import signing_key_from_settings


def _valid_tenant(value: str) -> str:
    try:
        return validate_tenant_id(value)
    except BadInput as err:  # pydantic reports ValueError as a form validation error
        raise ValueError(str(err)) from err


class OffboardingRequest(BaseModel):
    """Start (or resume) the offboarding case of a departing tenant (the UI's form)."""

    model_config = ConfigDict(extra="forbid")
    tenant_id: str = Field(description="The departing tenant.")
    contract_end: date = Field(description="The day the contract ended.")
    retention_days: int | None = Field(default=None, ge=1, le=3650, description="Days after "
                                       "the contract end before purge; default "
                                       "TENANT_EXPORT_EXPORT_RETENTION_DAYS (30).")
    notice_days: int = Field(default=case_recipe.DEFAULT_NOTICE_DAYS, ge=1, le=90,
                             description="The deletion notice goes out this many days before "
                             "the purge.")
    requested_by: str = Field(default="operator", min_length=1, max_length=200)
    _tenant = field_validator("tenant_id")(_valid_tenant)


class PurgeRequest(BaseModel):
    """Delete everything of a tenant, destroy its data key, issue the certificate."""

    model_config = ConfigDict(extra="forbid")
    tenant_id: str = Field(description="The tenant to purge.")
    confirm: bool = Field(default=False, description="Required: purge cannot be undone.")
    replica_buckets: list[str] = Field(default_factory=list, description="Replicas of the "
                                       "backup bucket to purge too.")
    requested_by: str = Field(default="operator", min_length=1, max_length=200)
    _tenant = field_validator("tenant_id")(_valid_tenant)


def emit(name: str, tenant_id: str, payload: dict[str, Any]) -> None:
    """A Prefect event about ``tenant.<id>`` (facts only: never a link)."""
    emit_event(event=name, resource={"prefect.resource.id": f"tenant.{tenant_id}",
                                     "prefect.resource.name": tenant_id}, payload=payload)


def _actions(now: datetime | None) -> CaseActions:
    def backup(tenant: str) -> str:
        return str(nightly_backup([tenant])[0]["snapshot_id"])

    def purge(case: Case, actor: str) -> dict[str, Any]:
        return purge_tenant(PurgeRequest(tenant_id=case.tenant_id, confirm=True,
                                         requested_by=actor), now=now)

    return CaseActions(backup=backup,
                       export=lambda tenant: offboarding_export(  # the case sends its notice
                           ExportRequest(tenant_id=tenant, notify=False)),
                       links=export_links,
                       purge=purge)


CLOCK_SKEW = timedelta(minutes=5)


def replay_clock(now: datetime | None) -> datetime | None:
    """``now`` unless a deployment's run names a time ahead of the real clock (refused)."""
    if now is None:
        return None
    from prefect.runtime import deployment  # noqa: PLC0415 - only when a time is named

    aware = now if now.tzinfo else now.replace(tzinfo=UTC)
    if deployment.id and aware > datetime.now(UTC) + CLOCK_SKEW:
        raise BadInput(f"now={aware:%Y-%m-%dT%H:%M:%SZ} is in the future: a deployment's run "
                       "may replay a past day, never bring dates forward")
    return now


@flow(name="offboarding", flow_run_name="offboarding-{request.tenant_id}", persist_result=False)
def offboarding(request: OffboardingRequest, now: datetime | None = None) -> dict[str, Any]:
    """Open (or resume) the case: final backup, export, export-ready email; the sweeper does
    the rest on its dates. The result holds the export's links; they are never logged."""
    now = replay_clock(now)
    settings = current_settings()
    ctx = RunContext.open(settings)
    try:
        tenant = ctx.check_tenant(request.tenant_id).id  # unknown tenant: exit 2, no case
    finally:
        ctx.close()
    desk = CaseDesk.open(settings, now, emit)
    try:
        case = case_recipe.start_case(desk, tenant, request.contract_end, request.requested_by,
                                      retention_days=request.retention_days,
                                      notice_days=request.notice_days)
        outcome = case_recipe.advance(desk, case, _actions(now), request.requested_by,
                                      early=True)
        status = case_recipe.case_status(desk.cases, case)
    finally:
        desk.close()
    upcoming = status["next_step"]
    following = f"{upcoming['step']} on {upcoming['due_at']}" if upcoming else "none"
    create_markdown_artifact(key=artifact_key("offboarding", tenant), markdown="\n".join([
        f"# Offboarding case `{case.case_id}` of tenant `{tenant}`",
        f"State **{status['state']}**; retention ends {status['retention_ends_at']}; next "
        f"step: {following}. Links are not shown here: `tenant-export links {tenant}`.", "",
        "| step | at | by |", "|---|---|---|",
        *(f"| {s['step']} | {s['at']} | {s['by']} |" for s in status["steps"])]))
    return {"case": status, "export": outcome["export"]}


@flow(name="offboarding_sweeper", flow_run_name="offboarding-sweep")
def offboarding_sweeper(now: datetime | None = None) -> list[dict[str, Any]]:
    """Daily: send the deletion notices that are due, purge the cases whose date has come.
    One case failing never stops the others, but fails the run."""
    now = replay_clock(now)
    desk = CaseDesk.open(current_settings(), now, emit)
    rows: list[dict[str, Any]] = []
    try:
        open_cases = [c for c in desk.cases.cases() if "purged" not in desk.cases.steps(
            c.case_id)]
        for case in open_cases:
            try:
                outcome = case_recipe.advance(desk, case, _actions(now), "schedule",
                                              early=False)
                rows.append({k: v for k, v in outcome.items() if k != "export"})
            except ExportError as err:
                get_run_logger().error("case %s failed: %s", case.case_id, err)
                rows.append({"case_id": case.case_id, "tenant_id": case.tenant_id,
                             "outcome": "failed", "error": error_line(err)})
    finally:
        desk.close()
    create_table_artifact(key="offboarding-sweep", table=rows,
                          description="Offboarding cases advanced by the daily sweep.")
    failed = [f"{r['case_id']} ({r['error']})" for r in rows if r["outcome"] == "failed"]
    if failed:
        raise ExportError(f"{len(failed)} offboarding case(s) failed: {'; '.join(failed)}")
    return rows


@flow(name="export_retention", flow_run_name="export-retention")
def export_retention(now: datetime | None = None, dry_run: bool = False) -> list[dict[str, Any]]:
    """Delete export packages whose retention ended (and incomplete ones older than a day)."""
    now = replay_clock(now)
    settings = current_settings()
    desk = CaseDesk.open(settings, now, emit)
    try:
        report = purge_recipe.expire_exports(
            desk, make_client(settings), dry_run=dry_run,
            locked=lambda t: tenant_lock(t, settings.lock_wait_seconds,
                                         control_url=settings.resolved_control_url()))
    finally:
        desk.close()
    create_table_artifact(key="export-retention", table=report,
                          description="Export packages deleted by retention.")
    return report


@flow(name="purge_tenant", flow_run_name="purge-{request.tenant_id}", persist_result=False)
def purge_tenant(request: PurgeRequest, now: datetime | None = None) -> dict[str, Any]:
    """Purge one tenant under its lock; returns the signed deletion certificate."""
    if not request.confirm:
        raise BadInput("purge deletes every export and backup of the tenant and destroys its "
                       "data key: confirm it (--confirm)", tenant_id=request.tenant_id)
    now = replay_clock(now)
    settings = current_settings()
    key = signing_key_from_settings(settings)
    desk = CaseDesk.open(settings, now, emit)
    try:
        with tenant_lock(request.tenant_id, settings.lock_wait_seconds,
                         control_url=settings.resolved_control_url()) as held:
            outcome = purge_recipe.purge_tenant(
                desk, make_client(settings), key, request.tenant_id, request.requested_by,
                replica_buckets=tuple(request.replica_buckets), fence=held.check)
    finally:
        desk.close()
    certificate = outcome.certificate
    if outcome.issued_now:
        emit("tenant.purged", request.tenant_id, {
            "certificate_id": certificate["certificate_id"], "case_id": certificate["case_id"]})
    get_run_logger().info("tenant %s purged: certificate %s", request.tenant_id,
                          certificate["certificate_id"])
    return certificate
