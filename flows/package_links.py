"""Signed links for a verified package, and the result ``export`` and ``links`` print.

Apart from the export recipe (``flows.packaging``) so that ``tenant-export links`` loads only
what minting needs: neither Prefect nor Arrow nor the writers (issue 13). The export flow and
the CLI both mint links here.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from pydantic import BaseModel

from exporters.datapackage import FileRecord
from flows.package_retained import MISSING_FIELD, SHARED_FIELD, package_prefix, retained_package
from storage import links

if TYPE_CHECKING:
    from flows.context import S3Context

__all__ = ["ExportResult", "FileLink", "MissingDocument", "Notice", "SharedKey", "fresh_links",
           "iter_redacted", "mint_links"]


class FileLink(BaseModel):
    """One file of the package with its signed link (the ``--json`` contract of DESIGN §3.1)."""

    path: str
    url: str
    bytes: int
    sha256: str
    rows: int | None = None


class MissingDocument(BaseModel):
    """A document the package lists as ``missing``, and why: ``key is NULL``, ``key is empty``
    or ``object not found``."""

    document_id: str
    reason: str


class SharedKey(BaseModel):
    """A document whose blob key a row that is not the tenant's also uses (reported when the
    catalog says keys are not tenant-scoped)."""

    document_id: str
    storage_key: str


class Notice(BaseModel):
    """Whether the tenant's contacts were told the export is ready, and if not why."""

    sent: bool
    recipients: int
    reason: str


class ExportResult(BaseModel):
    """What ``export --json`` and ``links --json`` print (DESIGN §3.1, extended: the documents
    listed as missing, keys shared with other tenants' rows, when the package is deleted, and
    the export-ready notice). The first file is the single-download archive when there is one.
    """

    tenant_id: str
    export_id: str
    created_at: str
    expires_at: str
    files: list[FileLink]
    documents_missing: list[MissingDocument] = []
    documents_shared_keys: list[SharedKey] = []
    package_expires_at: str | None = None
    notice: Notice | None = None


def mint_links(ctx: S3Context, tenant_id: str, export_id: str, created_at: str,
               manifest: FileRecord, records: list[FileRecord], ttl_seconds: int, *,
               archive: FileRecord | None = None,
               expires_at: datetime | None = None) -> ExportResult:
    """Fresh signed links for every file of a verified package, the archive first.

    ``expires_at``: the moment the package's guide promises (set when the export began);
    the links then live until exactly then (at least one second), not ``ttl_seconds`` from
    now, so the guide and the links agree.
    """
    prefix = package_prefix(tenant_id, export_id)
    bucket = ctx.settings.export_bucket
    now = datetime.now(UTC)
    if expires_at is not None:
        left = math.ceil((expires_at - now).total_seconds())
        ttl_seconds = max(1, min(ttl_seconds, left))
    expires = links.expiry(ttl_seconds, now)
    if expires_at is not None and ttl_seconds > 1:
        expires = expires_at
    files = [
        FileLink(path=r.path, url=links.signed_get(ctx.s3, bucket, prefix + r.path, ttl_seconds,
                                                   tenant_id),
                 bytes=r.bytes, sha256=r.sha256, rows=r.rows)
        for r in [*([archive] if archive else []), manifest, *records]
    ]
    index = next((r for r in records if r.path == "documents/index.csv"), None)
    extra = index.extra if index is not None else {}
    try:
        created = datetime.fromisoformat(created_at)
        kept = created + timedelta(days=ctx.settings.export_retention_days)
        package_expires: str | None = kept.astimezone(UTC).isoformat(timespec="seconds")
    except ValueError:
        package_expires = None
    return ExportResult(tenant_id=tenant_id, export_id=export_id, created_at=created_at,
                        expires_at=expires.isoformat(timespec="seconds"), files=files,
                        documents_missing=extra.get(MISSING_FIELD, []),
                        documents_shared_keys=extra.get(SHARED_FIELD, []),
                        package_expires_at=package_expires)


def fresh_links(ctx: S3Context, tenant_id: str, export_id: str | None, ttl_seconds: int
                ) -> ExportResult:
    """Fresh signed links for a retained export (the newest when no id is given), every object
    checked against its manifest first: S3 only, neither the platform database nor Prefect."""
    found = retained_package(ctx, tenant_id, export_id)
    return mint_links(ctx, tenant_id, found.export_id, found.created, found.manifest,
                      found.records, ttl_seconds, archive=found.archive)


def iter_redacted(result: ExportResult) -> Iterator[str]:
    """Log-safe lines describing the links (a link is a bearer secret)."""
    for f in result.files:
        yield f"{f.path}: {f.bytes} bytes sha256 {f.sha256[:12]}… {links.redact(f.url)}"
