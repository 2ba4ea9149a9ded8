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
from typing import Annotated, Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.events import emit_event
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema
from pydantic.json_schema import SkipJsonSchema

from flows import offboarding as case_recipe
from flows import purge as purge_recipe
from flows.backup_flow import error_line, nightly_backup
from flows.context import RunContext, current_settings
from flows.export_flow import ExportRequest, export_links, offboarding_export
from flows.forms import REPLAY_HELP, REPLAY_TITLE, Bucket, ReplayTime, TenantId, form_field
from flows.locks import tenant_lock
from flows.offboarding import CaseActions, CaseDesk
from kernel.errors import BadInput, ExportError
from kernel.ids import artifact_key
from storage.cases import Case
from storage.s3 import make_client
from storage.signing import signing_key_from_settings


def _no_null_defaults(schema: dict[str, Any]) -> None:
    """A field left empty takes the configured value: the form shows no default (a ``null``
    one would be refused by the schema the server checks)."""
    for field in schema.get("properties", {}).values():
        if "default" in field and field["default"] is None:
            del field["default"]


class OffboardingRequest(BaseModel):
    """Start (or resume) the offboarding case of a departing tenant at contract end: final
    backup, self-service export, notice to the authorised contacts."""

    model_config = ConfigDict(extra="forbid", title="Offboarding case",
                              json_schema_extra=_no_null_defaults)
    tenant_id: TenantId = Field(
        title="Departing tenant", description="The tenant's id as the platform database lists "
        "it (for example harbour-rowing): letters, digits, '.', '_' or '-'.")
    contract_end: date = Field(
        title="Contract ended on", description="The day the tenant's contract ended "
        "(YYYY-MM-DD): the retention window and the purge date count from it.")
    retention_days: Annotated[int | None, WithJsonSchema(
        {"type": "integer", "minimum": 1, "maximum": 3650})] = Field(
        default=None, ge=1, le=3650, title="Days kept after the contract end",
        description="How many days after the contract end the export stays downloadable "
        "before the purge, 1 to 3650. Leave empty: TENANT_EXPORT_EXPORT_RETENTION_DAYS "
        "(30 unless configured).")
    notice_days: int = Field(
        default=case_recipe.DEFAULT_NOTICE_DAYS, ge=1, le=90,
        title="Deletion notice, days ahead", description="The deletion notice goes out this "
        "many days before the purge, 1 to 90.")
    requested_by: str = Field(
        default="operator", min_length=1, max_length=200, title="Requested by",
        description="Who opens the case, for the audit trail and the case's steps (for "
        "example operator:maria).")


class PurgeRequest(BaseModel):
    """Delete everything of a tenant (refused under legal hold), destroy its data key, issue
    the signed deletion certificate."""

    model_config = ConfigDict(extra="forbid", title="Purge")
    tenant_id: TenantId = Field(
        title="Tenant to purge", description="The tenant's id as the platform database lists "
        "it (for example harbour-rowing): letters, digits, '.', '_' or '-'.")
    confirm: bool = Field(
        default=False, title="Yes, delete everything of this tenant",
        description="Required: the purge cannot be undone. Every export, backup and data key "
        "version of the tenant is deleted, then the deletion certificate is signed. Off: "
        "nothing is touched.")
    replica_buckets: list[Bucket] = Field(
        default_factory=list, title="Replica buckets to purge too",
        description="S3 buckets that replicate the backup bucket (for example "
        "tenant-backups-replica): the tenant's backups and key records are deleted there "
        "too. Leave empty when there are none.")
    requested_by: str = Field(
        default="operator", min_length=1, max_length=200, title="Requested by",
        description="Who orders the purge, for the audit trail and the certificate (for "
        "example operator:maria).")


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


def replay_clock(now: datetime | None, *, past: bool = True) -> datetime | None:
    """``now`` unless a deployment's run names a time ahead of the real clock, or any time at
    all where the day it stamps matters (``past=False``: a case opened, a purge and its
    certificate are dated by the real clock). Both refused."""
    if now is None:
        return None
    from prefect.runtime import deployment  # noqa: PLC0415 - only when a time is named

    if not deployment.id:
        return now  # in-process: tests and the CLI, run by the operator at the machine
    aware = now if now.tzinfo else now.replace(tzinfo=UTC)
    if not past:
        raise BadInput("a deployment's run of this flow takes no replay time: a case and a "
                       "deletion certificate are dated by the real clock")
    if aware > datetime.now(UTC) + CLOCK_SKEW:
        raise BadInput(f"now={aware:%Y-%m-%dT%H:%M:%SZ} is in the future: a deployment's run "
                       "may replay a past day, never bring dates forward")
    return now


@flow(name="offboarding", flow_run_name="offboarding-{request.tenant_id}", persist_result=False)
def offboarding(
    request: Annotated[OffboardingRequest, form_field(
        "Open or resume a case", "The departing tenant, its contract end and the retention; a "
        "case already open for the tenant is resumed.")],
    now: SkipJsonSchema[datetime | None] = None,  # tests only: a deployment's run is refused
) -> dict[str, Any]:
    """Open (or resume) the case: final backup, export, export-ready email; the sweeper does
    the rest on its dates. The result holds the export's links; they are never logged."""
    now = replay_clock(now, past=False)
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
def offboarding_sweeper(
    now: Annotated[ReplayTime, form_field(REPLAY_TITLE, REPLAY_HELP, default="")] = None,
) -> list[dict[str, Any]]:
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
def export_retention(
    now: Annotated[ReplayTime, form_field(REPLAY_TITLE, REPLAY_HELP, default="")] = None,
    dry_run: Annotated[bool, form_field(
        "Only report, delete nothing", "List the export packages whose retention ended "
        "(and unfinished export folders older than a day) without deleting them.")] = False,
) -> list[dict[str, Any]]:
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
def purge_tenant(
    request: Annotated[PurgeRequest, form_field(
        "What to purge", "The tenant to purge, the confirmation and any replica buckets.")],
    now: SkipJsonSchema[datetime | None] = None,  # tests only: a deployment's run is refused
) -> dict[str, Any]:
    """Purge one tenant under its lock; returns the signed deletion certificate."""
    if not request.confirm:
        raise BadInput("purge deletes every export and backup of the tenant and destroys its "
                       "data key: confirm it (--confirm)", tenant_id=request.tenant_id)
    now = replay_clock(now, past=False)
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
