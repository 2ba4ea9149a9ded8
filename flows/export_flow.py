"""``offboarding_export``: the self-service export as a Prefect flow (thin: a recipe of tasks)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field, field_validator

from exporters.datapackage import FileRecord
from flows import packaging
from flows.context import RunContext
from flows.locks import tenant_lock
from tenant_export.errors import BadInput, is_transient
from tenant_export.ids import (
    DEFAULT_LINK_TTL_SECONDS,
    MAX_LINK_TTL_SECONDS,
    new_export_id,
    validate_tenant_id,
)
from tenant_export.settings import Settings


class ExportRequest(BaseModel):
    """Parameters of an offboarding export (the form the Prefect UI shows)."""

    model_config = ConfigDict(extra="forbid")
    tenant_id: str = Field(description="Tenant to export (its id in the platform database).")
    link_ttl_seconds: int = Field(
        default=DEFAULT_LINK_TTL_SECONDS, gt=0, le=MAX_LINK_TTL_SECONDS,
        description="Lifetime of the signed links, at most 7 days (604800 s).",
    )
    excel: bool = Field(default=False, description="Start CSV files with a UTF-8 BOM for Excel.")

    @field_validator("tenant_id")
    @classmethod
    def _valid_tenant(cls, value: str) -> str:
        try:
            return validate_tenant_id(value)
        except BadInput as err:  # pydantic reports ValueError as a form validation error
            raise ValueError(str(err)) from err


def _retry_transient(_task: Any, _task_run: Any, state: Any) -> bool:
    return is_transient(state.result(raise_on_failure=False))


RETRY_DELAYS = [2.0, 10.0, 30.0]


@task(cache_policy=NO_CACHE, retries=len(RETRY_DELAYS), retry_delay_seconds=RETRY_DELAYS,
      retry_condition_fn=_retry_transient)
def write_package(ctx: RunContext, tenant_id: str, export_id: str, excel: bool
                  ) -> list[FileRecord]:
    """Stream tables and documents from one snapshot into the staged package."""
    return packaging.write_package(ctx, tenant_id, export_id, excel=excel)


@task(cache_policy=NO_CACHE, retries=len(RETRY_DELAYS), retry_delay_seconds=RETRY_DELAYS,
      retry_condition_fn=_retry_transient)
def verify_package(ctx: RunContext, tenant_id: str, export_id: str,
                   records: list[FileRecord]) -> None:
    """Read back every object and compare SHA-256."""
    packaging.verify_package(ctx, tenant_id, export_id, records)


@task(cache_policy=NO_CACHE, retries=len(RETRY_DELAYS), retry_delay_seconds=RETRY_DELAYS,
      retry_condition_fn=_retry_transient)
def publish_manifest(ctx: RunContext, tenant_id: str, export_id: str, created_at: datetime,
                     records: list[FileRecord]) -> FileRecord:
    """Write datapackage.json last: the package becomes an export."""
    return packaging.publish_manifest(ctx, tenant_id, export_id, created_at, records)


@task(cache_policy=NO_CACHE, retries=len(RETRY_DELAYS), retry_delay_seconds=RETRY_DELAYS,
      retry_condition_fn=_retry_transient)
def discard_package(ctx: RunContext, tenant_id: str, export_id: str) -> int:
    """Delete a package that failed before it was published."""
    return packaging.discard_package(ctx, tenant_id, export_id)


def publish_artifacts(result: packaging.ExportResult) -> None:
    """A table of files with their links, and the manifest summary, on the flow run."""
    key = "export-" + "".join(c if c.isalnum() else "-" for c in result.tenant_id.lower())
    create_table_artifact(
        key=key,
        table=[f.model_dump() for f in result.files],
        description=f"Export {result.export_id} of tenant {result.tenant_id}: signed links "
        f"valid until {result.expires_at}. Links are bearer secrets: send them only to the "
        "tenant's authorised contacts.",
    )
    rows = sum(f.rows or 0 for f in result.files if f.path.startswith("data/"))
    size = sum(f.bytes for f in result.files)
    lines = [f"| `{f.path}` | {f.bytes} | {'' if f.rows is None else f.rows} | `{f.sha256}` |"
             for f in result.files]
    create_markdown_artifact(
        key=key + "-manifest",
        markdown="\n".join([
            f"# Export `{result.export_id}` of tenant `{result.tenant_id}`",
            f"{len(result.files)} files, {size} bytes, {rows} table rows; "
            f"links expire {result.expires_at}.", "",
            "| file | bytes | rows | sha256 |", "|---|---|---|---|", *lines,
        ]),
    )


@flow(name="offboarding_export", flow_run_name="export-{request.tenant_id}",
      validate_parameters=True)
def offboarding_export(request: ExportRequest) -> dict[str, Any]:
    """Export one tenant's content as CSV and documents as ZIP, verified, with signed links."""
    logger = get_run_logger()
    settings = Settings()
    tenant = request.tenant_id
    ctx = RunContext.open(settings)
    try:
        packaging.check_request(ctx, tenant)
        with tenant_lock(tenant, settings.lock_wait_seconds):
            created = datetime.now(UTC).replace(microsecond=0)
            export_id = new_export_id(created)
            logger.info("exporting tenant %s as %s", tenant, export_id)
            try:
                records = write_package(ctx, tenant, export_id, request.excel)
                verify_package(ctx, tenant, export_id, records)
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
    publish_artifacts(result)
    return result.model_dump(mode="json")


@flow(name="export_links", flow_run_name="links-{tenant_id}")
def export_links(tenant_id: str, export_id: str | None = None,
                 link_ttl_seconds: int = DEFAULT_LINK_TTL_SECONDS) -> dict[str, Any]:
    """Fresh signed links for a retained export (the newest when no id is given)."""
    validate_tenant_id(tenant_id)
    if not 0 < link_ttl_seconds <= MAX_LINK_TTL_SECONDS:
        raise BadInput(f"link TTL {link_ttl_seconds} s: signed S3 links live 1 s to 7 days "
                       f"({MAX_LINK_TTL_SECONDS} s)", tenant_id=tenant_id)
    ctx = RunContext.open(Settings())
    try:
        found_id, created, manifest, records = packaging.load_package(ctx, tenant_id, export_id)
        result = packaging.mint_links(ctx, tenant_id, found_id, created, manifest, records,
                                      link_ttl_seconds)
    finally:
        ctx.close()
    publish_artifacts(result)
    return result.model_dump(mode="json")
