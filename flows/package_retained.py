"""A retained export read back from its manifest, for fresh links and deliveries.

Before anyone is handed a link, every object the manifest lists (and the archive) must still be
there unchanged: same size, same ETag. A package whose manifest is gone was deleted (its
retention ended, or a purge) or never completed: ``links`` says which, as bad input (exit 2);
an access-denied answer stays a storage failure (exit 1).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from exporters.datapackage import FileRecord
from flows.context import S3Context
from flows.package_archive import read_archive_info
from kernel.errors import BadInput, VerificationFailed
from kernel.ids import validate_export_id, validate_tenant_id
from storage import objects
from storage.audit import AuditKind, AuditTrail
from storage.backup_store import head
from storage.s3 import require_bucket

MANIFEST = "datapackage.json"
ETAG_FIELD = "x-etag"  # the object's S3 ETag when the package was published
MISSING_FIELD = "x-missing-documents"  # on index.csv: [{"document_id", "reason"}]
SHARED_FIELD = "x-shared-keys"  # on index.csv: [{"document_id", "storage_key"}]
KEPT_FIELDS = (ETAG_FIELD, MISSING_FIELD, SHARED_FIELD)


@dataclass(frozen=True)
class Retained:
    """A retained package: its manifest, files and (when it has one) its archive."""

    export_id: str
    created: str
    manifest: FileRecord
    records: list[FileRecord]
    archive: FileRecord | None


def package_prefix(tenant_id: str, export_id: str) -> str:
    """The folder of one export package in the export bucket."""
    return f"exports/{tenant_id}/{export_id}/"


def export_started(export_id: str) -> datetime:
    """When an export began, from its id (``20261126T101500Z-…``)."""
    return datetime.strptime(export_id.split("-", 1)[0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


def retained_package(ctx: S3Context, tenant_id: str, export_id: str | None) -> Retained:
    """A retained, complete export (the newest when no id is given), every object checked."""
    validate_tenant_id(tenant_id)
    bucket = ctx.settings.export_bucket
    require_bucket(ctx.s3, bucket, "export", tenant_id)
    export_id = validate_export_id(export_id) if export_id else _newest(ctx, tenant_id)
    prefix = package_prefix(tenant_id, export_id)
    if head(ctx.s3, bucket, prefix + MANIFEST, tenant_id) is None:
        raise BadInput(_gone(ctx, tenant_id, export_id), tenant_id=tenant_id)
    raw = objects.read_bytes(ctx.s3, bucket, prefix + MANIFEST, tenant_id)
    descriptor = json.loads(raw)
    manifest = FileRecord(path=MANIFEST, bytes=len(raw), sha256=hashlib.sha256(raw).hexdigest(),
                          kind="manifest")
    records = [
        FileRecord(path=r["path"], bytes=r["bytes"], sha256=r["hash"].removeprefix("sha256:"),
                   rows=r.get("rows"), extra={k: v for k, v in r.items() if k in KEPT_FIELDS})
        for r in descriptor["resources"]
    ]
    archive = read_archive_info(ctx.s3, bucket, prefix, tenant_id) if descriptor.get(
        "x-archive") else None
    check_objects(ctx, tenant_id, export_id, [*records, *([archive] if archive else [])])
    return Retained(export_id, descriptor["created"], manifest, records, archive)


def _newest(ctx: S3Context, tenant_id: str) -> str:
    bucket = ctx.settings.export_bucket
    candidates = sorted(objects.list_prefixes(ctx.s3, bucket, f"exports/{tenant_id}/",
                                              tenant_id), reverse=True)
    complete = (p for p in candidates if objects.list_keys(ctx.s3, bucket, p + MANIFEST,
                                                           tenant_id))
    chosen = next(complete, None)
    if chosen is None:
        raise BadInput(f"no complete export is retained for tenant {tenant_id!r} (packages are "
                       f"deleted {ctx.settings.export_retention_days} days after they were "
                       "made): run a new export", tenant_id=tenant_id)
    return chosen.rstrip("/").rsplit("/", 1)[-1]


def _gone(ctx: S3Context, tenant_id: str, export_id: str) -> str:
    """Why an export has no manifest, as precisely as the audit trail and its id tell."""
    trail = AuditTrail(ctx.settings.resolved_control_url())
    try:
        events = trail.events(tenant_id)
    finally:
        trail.close()
    deleted = next((e for e in reversed(events) if e.kind == AuditKind.EXPORT_DELETED
                    and e.details.get("export_id") == export_id), None)
    if deleted is not None:
        why = deleted.details.get("reason") or "deleted"
        return (f"export {export_id} of tenant {tenant_id!r} is gone: it was deleted on "
                f"{deleted.recorded_at[:10]} ({why}); run a new export")
    days = ctx.settings.export_retention_days
    ended = export_started(export_id) + timedelta(days=days)
    if datetime.now(UTC) >= ended:
        return (f"export {export_id} of tenant {tenant_id!r} is gone: no complete export with "
                f"this id is retained, and packages are deleted {days} days after they were "
                f"made (this one's retention ended on {ended:%Y-%m-%d}); run a new export")
    return (f"no complete export {export_id!r} for tenant {tenant_id!r}: it never completed "
            "or was deleted; run a new export")


def check_objects(ctx: S3Context, tenant_id: str, export_id: str,
                  records: list[FileRecord]) -> None:
    """Refuse a retained package whose objects no longer match its manifest (deleted, or
    replaced: another size, another ETag) before anyone is handed a link to them."""
    prefix = package_prefix(tenant_id, export_id)
    for record in records:
        found = head(ctx.s3, ctx.settings.export_bucket, prefix + record.path, tenant_id)
        expected = record.extra.get(ETAG_FIELD)
        if found is None:
            problem = "is gone"
        elif found["size"] != record.bytes:
            problem = f"is {found['size']} bytes, the manifest says {record.bytes}"
        elif expected and found["etag"] != expected:
            problem = f"was replaced (ETag {found['etag']}, the manifest says {expected})"
        else:
            continue
        raise VerificationFailed(
            f"export {export_id} of tenant {tenant_id!r} no longer matches its manifest: "
            f"{record.path} {problem}; no links were signed, run a new export",
            tenant_id=tenant_id)
