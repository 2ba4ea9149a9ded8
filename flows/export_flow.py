"""``offboarding_export``: the self-service export as a Prefect flow (thin: a recipe of tasks).

Under the tenant lock no other export of the tenant runs, so any export folder of the tenant
without ``datapackage.json`` (and any multipart upload still open under one) is debris of a
run that was killed: the next export of the tenant deletes it first and says so in its log.
The lock is checked once more (the fence) just before ``datapackage.json`` is written.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from pydantic import BaseModel, ConfigDict, Field, field_validator

from exporters.datapackage import FileRecord
from flows import packaging
from flows.context import RunContext, current_settings
from flows.locks import tenant_lock
from flows.retry import step
from kernel.errors import BadInput
from kernel.ids import artifact_key, new_export_id, validate_tenant_id
from kernel.timeparse import DEFAULT_LINK_TTL_SECONDS, MAX_LINK_TTL_SECONDS, check_link_ttl
from storage import objects


class ExportRequest(BaseModel):
    """Parameters of an offboarding export (the form the Prefect UI shows)."""

    model_config = ConfigDict(extra="forbid")
    tenant_id: str = Field(description="Tenant to export (its id in the platform database).")
    link_ttl_seconds: int = Field(
        default=DEFAULT_LINK_TTL_SECONDS, gt=0, le=MAX_LINK_TTL_SECONDS,
        description="Lifetime of the signed links, at most 7 days (604800 s).",
    )
    excel: bool = Field(default=False, description="Start CSV files with a UTF-8 BOM for Excel.")
    links_in_artifact: bool = Field(
        default=False, description="Also show the signed links in the run's artifact (anyone "
        "who can read the Prefect UI can then use them until they expire).")

    @field_validator("tenant_id")
    @classmethod
    def _valid_tenant(cls, value: str) -> str:
        try:
            return validate_tenant_id(value)
        except BadInput as err:  # pydantic reports ValueError as a form validation error
            raise ValueError(str(err)) from err


@step()
def write_package(ctx: RunContext, tenant_id: str, export_id: str, excel: bool
                  ) -> list[FileRecord]:
    """Stream tables and documents from one snapshot into the staged package."""
    return packaging.write_package(ctx, tenant_id, export_id, excel=excel)


@step()
def verify_package(ctx: RunContext, tenant_id: str, export_id: str,
                   records: list[FileRecord]) -> None:
    """Read back every object and compare SHA-256."""
    packaging.verify_package(ctx, tenant_id, export_id, records)


@step()
def publish_manifest(ctx: RunContext, tenant_id: str, export_id: str, created_at: datetime,
                     records: list[FileRecord]) -> FileRecord:
    """Write datapackage.json last: the package becomes an export."""
    return packaging.publish_manifest(ctx, tenant_id, export_id, created_at, records)


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


def publish_artifacts(result: packaging.ExportResult, *, with_links: bool = False) -> None:
    """The files of the package (sizes, SHA-256) on the flow run; links only when asked for,
    since anyone who can read the Prefect UI could use them."""
    key = artifact_key("export", result.tenant_id)
    rows = [{"path": f.path, "bytes": f.bytes, "rows": f.rows, "sha256": f.sha256,
             **({"url": f.url} if with_links else {})} for f in result.files]
    note = (" Links are bearer secrets: send them only to the tenant's authorised contacts."
            if with_links else " Links are not shown here; run export-links or the CLI for them.")
    create_table_artifact(
        key=key, table=rows,
        description=f"Export {result.export_id} of tenant {result.tenant_id}: links valid "
        f"until {result.expires_at}.{note}",
    )
    total_rows = sum(f.rows or 0 for f in result.files if f.path.startswith("data/"))
    size = sum(f.bytes for f in result.files)
    lines = [f"| `{f.path}` | {f.bytes} | {'' if f.rows is None else f.rows} | `{f.sha256}` |"
             for f in result.files]
    create_markdown_artifact(
        key=key + "-manifest",
        markdown="\n".join([
            f"# Export `{result.export_id}` of tenant `{result.tenant_id}`",
            f"{len(result.files)} files, {size} bytes, {total_rows} table rows; "
            f"links expire {result.expires_at}.", "",
            "| file | bytes | rows | sha256 |", "|---|---|---|---|", *lines,
        ]),
    )


@flow(name="offboarding_export", flow_run_name="export-{request.tenant_id}",
      validate_parameters=True, persist_result=False)
def offboarding_export(request: ExportRequest) -> dict[str, Any]:
    """Export one tenant's content as CSV and documents as ZIP, verified, with signed links."""
    logger = get_run_logger()
    settings = current_settings()
    tenant = request.tenant_id
    ctx = RunContext.open(settings)
    try:
        tenant = packaging.check_request(ctx, tenant)  # the id as stored: one spelling, one lock
        with tenant_lock(tenant, settings.lock_wait_seconds,
                         control_url=settings.resolved_control_url()) as held:
            orphans = discard_orphans(ctx, tenant)
            if orphans:
                logger.warning("deleted %d unpublished export folder(s) of tenant %s left by "
                               "interrupted runs: %s", len(orphans), tenant, ", ".join(orphans))
            created = datetime.now(UTC).replace(microsecond=0)
            export_id = new_export_id(created)
            logger.info("exporting tenant %s as %s", tenant, export_id)
            try:
                records = write_package(ctx, tenant, export_id, request.excel)
                verify_package(ctx, tenant, export_id, records)
                held.check()  # the fence: a run that lost its lock never publishes
                manifest = publish_manifest(ctx, tenant, export_id, created, records)
            except BaseException as failure:
                try:
                    discard_package(ctx, tenant, export_id)
                except Exception as cleanup:  # noqa: BLE001 - the first error is the one to report
                    logger.error("could not clean up export %s after %s: %s", export_id,
                                 type(failure).__name__, cleanup)
                raise
        result = packaging.mint_links(ctx, tenant, export_id, created.isoformat(), manifest,
                                      records, request.link_ttl_seconds)
    finally:
        ctx.close()
    for line in packaging.iter_redacted(result):
        logger.info(line)
    if result.documents_missing:
        logger.warning("%d document(s) of tenant %s listed as missing: %s",
                       len(result.documents_missing), tenant,
                       ", ".join(f"{d.document_id} ({d.reason})" for d in result.documents_missing))
    if result.documents_shared_keys:
        logger.warning("%d document(s) of tenant %s use keys that other tenants' rows also use: "
                       "%s", len(result.documents_shared_keys), tenant,
                       ", ".join(d.document_id for d in result.documents_shared_keys))
    publish_artifacts(result, with_links=request.links_in_artifact)
    return result.model_dump(mode="json")


@flow(name="export_links", flow_run_name="links-{tenant_id}", persist_result=False)
def export_links(tenant_id: str, export_id: str | None = None,
                 link_ttl_seconds: int = DEFAULT_LINK_TTL_SECONDS,
                 links_in_artifact: bool = False) -> dict[str, Any]:
    """Fresh signed links for a retained export (the newest when no id is given)."""
    validate_tenant_id(tenant_id)
    try:
        check_link_ttl(link_ttl_seconds)
    except BadInput as err:
        raise BadInput(str(err), tenant_id=tenant_id) from err
    ctx = RunContext.open(current_settings())
    try:
        found_id, created, manifest, records = packaging.load_package(ctx, tenant_id, export_id)
        result = packaging.mint_links(ctx, tenant_id, found_id, created, manifest, records,
                                      link_ttl_seconds)
    finally:
        ctx.close()
    publish_artifacts(result, with_links=links_in_artifact)
    return result.model_dump(mode="json")
