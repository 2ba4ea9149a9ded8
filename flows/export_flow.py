"""``offboarding_export`` and ``export_links``: the self-service export as Prefect flows (thin:
a recipe of tasks; the steps are ``flows.packaging``, the reporting ``flows.export_report``).

Under the tenant lock no other export of the tenant runs, so any export folder of the tenant
without ``datapackage.json`` (and any multipart upload still open under one) is debris of a
run that was killed: the next export of the tenant deletes it first and says so in its log.
The lock is checked once more (the fence) just before ``datapackage.json`` is written.

Every run is audited (``export.requested``, then ``export.completed`` or ``export.failed``
with its one-line reason, ``links.minted`` with TTL and file count, never a link), measured,
and ends with a result artifact; a published package emits ``tenant.export.ready``.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated, Any, cast
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    update_progress_artifact,
)
from pydantic import Field
from pydantic.json_schema import SkipJsonSchema

from exporters.datapackage import FileRecord
from flows import export_report as report
from flows import package_links, packaging
from flows.context import RunContext, S3Context, current_settings
from flows.export_form import ExportRequest
from flows.forms import LinkTtl, OptionalExportId, TenantId, form_field
from flows.locks import tenant_lock
from flows.observe import audit, current_actor, emit, open_metrics
from flows.package_archive import Archived
from flows.retry import step
from kernel.errors import BadInput
from kernel.ids import new_export_id, validate_tenant_id
from kernel.settings import Settings
from kernel.timeparse import check_link_ttl, parse_link_ttl
from storage import objects
from storage.audit import AuditKind

__all__ = ["ExportRequest", "export_links", "offboarding_export"]


@step()
def write_package(ctx: RunContext, tenant_id: str, export_id: str,
                  options: packaging.PackageOptions,
                  progress: packaging.Progress | None = None) -> list[FileRecord]:
    """Stream tables (CSV and workbook), documents and the guide from one snapshot."""
    return packaging.write_package(ctx, tenant_id, export_id, options=options,
                                   progress=progress)


@step()
def verify_package(ctx: RunContext, tenant_id: str, export_id: str, created: datetime,
                   records: list[FileRecord]) -> Archived:
    """Read back every object (SHA-256) into the single-download archive; verify it too."""
    return packaging.archive_verified(ctx, tenant_id, export_id, created, records)


@step()
def publish_manifest(ctx: RunContext, tenant_id: str, export_id: str, data: bytes
                     ) -> FileRecord:
    """Write datapackage.json last: the package becomes an export."""
    return packaging.publish(ctx, tenant_id, export_id, data)


@step()
def discard_orphans(ctx: RunContext, tenant_id: str) -> list[str]:
    """Delete unpublished export folders of the tenant (call only under the tenant lock)."""
    bucket = ctx.settings.export_bucket
    parent = packaging.package_prefix(tenant_id, "").removesuffix("/")  # exports/<tenant>/
    orphans = objects.unmarked_folders(ctx.s3, bucket, parent, packaging.MANIFEST, tenant_id)
    for folder in orphans:
        objects.abort_uploads(ctx.s3, bucket, folder, tenant_id)
        objects.delete_prefix(ctx.s3, bucket, folder, tenant_id)
    return [f.rstrip("/").rsplit("/", 1)[-1] for f in orphans]


@step()
def discard_package(ctx: RunContext, tenant_id: str, export_id: str) -> int:
    """Delete a package that failed before it was published."""
    return packaging.discard_package(ctx, tenant_id, export_id)


class _Run:
    """What the reporting of one export run needs to know as it goes."""

    def __init__(self, settings: Settings, request: ExportRequest) -> None:
        self.settings, self.request = settings, request
        self.tenant: str = request.tenant_id
        self.export_id: str | None = None
        self.started = time.monotonic()
        self.progress_id = cast(UUID, create_progress_artifact(  # sync in a sync flow
            0.0, description=f"Export of tenant {request.tenant_id}: starting"))

    def progress(self, fraction: float, line: str) -> None:
        update_progress_artifact(self.progress_id, round(100 * fraction, 1),
                                 description=f"Export of tenant {self.tenant}: {line}")


@flow(name="offboarding_export", flow_run_name="export-{request.tenant_id}",
      validate_parameters=True, persist_result=False)
def offboarding_export(request: ExportRequest) -> dict[str, Any]:
    """Export one tenant's content (CSV and .xlsx, documents as ZIP, a guide, one archive),
    verified, with signed links; audited, measured, and the tenant's contacts told."""
    settings, actor = current_settings(), current_actor(request.requested_by or None)
    audit(settings, AuditKind.EXPORT_REQUESTED, request.tenant_id, actor,
          csv_variant=request.variant, link_ttl_seconds=request.ttl_seconds)
    run = _Run(settings, request)
    with open_metrics(settings) as metrics:
        try:
            result = _export(run)
        except Exception as failure:
            reason = report.error_line(failure)
            metrics.export_failed(run.tenant)
            audit(settings, AuditKind.EXPORT_FAILED, run.tenant, actor, reason=reason,
                  export_id=run.export_id, seconds=round(time.monotonic() - run.started, 1))
            create_markdown_artifact(key=report.result_key(run.tenant), markdown=(
                report.failure_markdown(run.tenant, reason, refused=isinstance(
                    failure, BadInput), export_id=run.export_id)))
            raise
        seconds = time.monotonic() - run.started
        facts = report.artifact_facts(result)
        metrics.export_completed(run.tenant, facts["bytes"], seconds)
    audit(settings, AuditKind.EXPORT_COMPLETED, run.tenant, actor, **facts,
          seconds=round(seconds, 1), documents_missing_count=len(result.documents_missing))
    audit(settings, AuditKind.LINKS_MINTED, run.tenant, actor, export_id=result.export_id,
          link_ttl_seconds=request.ttl_seconds, files_count=len(result.files))
    emit("tenant.export.ready", run.tenant, facts)
    if result.notice is not None and result.notice.recipients:
        audit(settings, AuditKind.NOTIFICATION_SENT, run.tenant, actor, notice="export.ready",
              export_id=result.export_id, sent=result.notice.sent,
              recipients_count=result.notice.recipients, outcome=result.notice.reason)
    _log(result)
    run.progress(1.0, f"completed: export {result.export_id}")
    create_markdown_artifact(key=report.result_key(run.tenant), markdown=report.result_markdown(
        result, with_links=request.links_in_artifact))
    return result.model_dump(mode="json")


def _export(run: _Run) -> package_links.ExportResult:
    """Check, stage, verify and publish under the tenant lock; then links and the notice."""
    logger, settings, request = get_run_logger(), run.settings, run.request
    ctx = RunContext.open(settings)
    try:
        run.tenant = packaging.check_request(ctx, request.tenant_id)  # the id as stored
        with tenant_lock(run.tenant, settings.lock_wait_seconds,
                         control_url=settings.resolved_control_url()) as held:
            orphans = discard_orphans(ctx, run.tenant)
            if orphans:
                logger.warning("deleted %d unpublished export folder(s) of tenant %s left by "
                               "interrupted runs: %s", len(orphans), run.tenant,
                               ", ".join(orphans))
            created = datetime.now(UTC).replace(microsecond=0)
            run.export_id = export_id = new_export_id(created)
            options = packaging.PackageOptions.for_export(
                ctx, export_id, dialect=request.dialect, ttl_seconds=request.ttl_seconds,
                created_at=created)
            logger.info("exporting tenant %s as %s", run.tenant, export_id)
            try:
                records = write_package(ctx, run.tenant, export_id, options,
                                        report.throttled(run.progress))
                run.progress(0.9, "verifying every file and building the single download")
                archived = verify_package(ctx, run.tenant, export_id, created, records)
                held.check()  # the fence: a run that lost its lock never publishes
                manifest = publish_manifest(ctx, run.tenant, export_id, archived.manifest)
            except BaseException as failure:
                try:
                    discard_package(ctx, run.tenant, export_id)
                except Exception as cleanup:  # noqa: BLE001 - the first error is the one to report
                    logger.error("could not clean up export %s after %s: %s", export_id,
                                 type(failure).__name__, cleanup)
                raise
        result = package_links.mint_links(ctx, run.tenant, export_id, created.isoformat(),
                                          manifest, records, request.ttl_seconds,
                                          archive=archived.archive,
                                          expires_at=options.links_expire_at)
        result.notice = (report.notify_contacts(ctx, settings, result, created)
                         if request.notify else package_links.Notice(
                             sent=False, recipients=0, reason=report.NOT_ASKED))
    finally:
        ctx.close()
    return result


def _log(result: package_links.ExportResult) -> None:
    """Sizes and hashes, links redacted (a link is a bearer secret); what the client sees."""
    logger = get_run_logger()
    for line in package_links.iter_redacted(result):
        logger.info(line)
    if result.documents_missing:
        logger.warning("%d document(s) of tenant %s listed as missing: %s",
                       len(result.documents_missing), result.tenant_id,
                       ", ".join(f"{d.document_id} ({d.reason})" for d in result.documents_missing))
    if result.documents_shared_keys:
        logger.warning("%d document(s) of tenant %s use keys that other tenants' rows also use: "
                       "%s", len(result.documents_shared_keys), result.tenant_id,
                       ", ".join(d.document_id for d in result.documents_shared_keys))
    if result.notice is not None and not result.notice.sent:
        logger.info("export-ready email: %s", result.notice.reason)


@flow(name="export_links", flow_run_name="links-{tenant_id}", persist_result=False)
def export_links(
    tenant_id: Annotated[TenantId, form_field(
        "Tenant", "The tenant's id as the platform database lists it (for example "
        "harbour-rowing): letters, digits, '.', '_' or '-'.")],
    export_id: Annotated[OptionalExportId, form_field(
        "Export", "The export to make links for, as its id (for example "
        "20261126T101500Z-3f2a). Leave empty: the newest complete export.", default="")
    ] = None,
    link_ttl_seconds: SkipJsonSchema[int | None] = None,
    link_ttl: Annotated[LinkTtl, form_field(
        "Links stay valid for", "How long the download links work, as a duration: 7d, 36h, "
        "90m or a number of seconds. At most 7 days (signed S3 links cannot live longer).")
    ] = "7d",
    links_in_artifact: Annotated[bool, form_field(
        "Show the links in the run's result", "Also list the download links in the run's "
        "result (anyone who can read the Prefect UI can then use them until they expire).")
    ] = False,
    requested_by: Annotated[str, Field(max_length=200), form_field(
        "Requested by", "Who asks for the links, for the audit trail (for example "
        "portal:anna@club.example). Empty: prefect-ui for a run started here, cli:<login> "
        "from the command line.")] = "",
) -> dict[str, Any]:
    """Fresh signed links for a retained export (the newest when no id is given); refused
    when the package is gone (its retention ended). Programs may give the lifetime in seconds
    (``link_ttl_seconds``, the third argument as it always was) instead of ``link_ttl``."""
    validate_tenant_id(tenant_id)
    try:
        ttl = (check_link_ttl(link_ttl_seconds) if link_ttl_seconds is not None
               else parse_link_ttl(link_ttl))
    except BadInput as err:
        raise BadInput(str(err), tenant_id=tenant_id) from err
    settings = current_settings()
    result = package_links.fresh_links(S3Context.open(settings), tenant_id, export_id, ttl)
    audit(settings, AuditKind.LINKS_MINTED, tenant_id, current_actor(requested_by or None),
          export_id=result.export_id, link_ttl_seconds=ttl, files_count=len(result.files))
    create_markdown_artifact(key=report.result_key(tenant_id), markdown=report.result_markdown(
        result, with_links=links_in_artifact, fresh=True))
    return result.model_dump(mode="json")
