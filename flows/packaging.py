"""The export recipe in plain code: sources → exporters → storage, testable without Prefect.

Order of writes (docs/export-format.md, "Write order"): every table (CSV and workbook),
``documents/index.csv``, the ZIP parts and the guide are streamed under
``exports/<tenant>/<export_id>/``; each is read back and its SHA-256 compared, the same bytes
filling the single-download archive (``flows.package_archive``); only then is
``datapackage.json`` written (and verified). A package without ``datapackage.json`` is not an
export: it is never linked and is deleted when the run fails.

The steps live in sibling modules: ``package_tables`` (CSV + workbook per table),
``package_documents`` (ZIP parts and their index), ``package_guide`` (README), ``package_archive``
(verification, archive, commit marker), ``package_retained`` (a published package read back).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta

from exporters.csv_writer import DEFAULT_DIALECT, CsvDialect
from exporters.datapackage import FileRecord, build_descriptor, encode_descriptor
from flows.context import RunContext
from flows.fetch_pool import FetchLimits
from flows.package_archive import Archived, archive_name, archive_package
from flows.package_documents import write_documents
from flows.package_guide import GuideFacts, guide_inventory, write_guide
from flows.package_links import (
    ExportResult,
    FileLink,
    MissingDocument,
    Notice,
    SharedKey,
    fresh_links,
    iter_redacted,
    mint_links,
)
from flows.package_retained import (
    ETAG_FIELD,
    KEPT_FIELDS,
    MANIFEST,
    MISSING_FIELD,
    SHARED_FIELD,
    check_objects,
    export_started,
    package_prefix,
    retained_package,
)
from flows.package_tables import Sink, write_tables
from kernel.errors import BadInput
from kernel.ids import validate_export_id
from kernel.timeparse import DEFAULT_LINK_TTL_SECONDS
from sources.inventory import classification
from sources.tenants import tenant_key
from storage import objects
from storage.backup_store import head
from storage.s3 import require_bucket
from storage.upload_queue import UploadQueue

__all__ = ["ETAG_FIELD", "KEPT_FIELDS", "MANIFEST", "MISSING_FIELD", "SHARED_FIELD", "Archived",
           "ExportResult", "FileLink", "MissingDocument", "Notice", "PackageOptions",
           "SharedKey", "archive_verified", "check_objects", "check_request", "deliver",
           "discard_package", "fresh_links", "iter_redacted", "load_package", "manifest_bytes",
           "mint_links", "package_prefix", "parse_target", "publish", "publish_manifest",
           "verify_package", "write_package"]
Progress = Callable[[float, str], None]
"""Told how far a running export is (0..1) and what it is doing, in words."""
UPLOAD_WORKERS = 4  # PUTs in flight while the package is written


@dataclass(frozen=True)
class PackageOptions:
    """How a package is written: its CSV dialect and the dates its guide states."""

    dialect: CsvDialect
    created_at: datetime
    links_expire_at: datetime
    package_expires_at: datetime

    @classmethod
    def for_export(cls, ctx: RunContext, export_id: str, *, excel: bool = False,
                   dialect: CsvDialect | None = None,
                   ttl_seconds: int = DEFAULT_LINK_TTL_SECONDS,
                   created_at: datetime | None = None) -> PackageOptions:
        """Options from the request; dates from the export's start (its id) by default."""
        created = created_at or export_started(export_id)
        chosen = dialect or (CsvDialect.excel() if excel else DEFAULT_DIALECT)
        return cls(chosen, created, created + timedelta(seconds=ttl_seconds),
                   created + timedelta(days=ctx.settings.export_retention_days))


def check_request(ctx: RunContext, tenant_id: str) -> str:
    """Refuse before anything is written: unknown tenant (exit 2), missing buckets (exit 1).

    Returns the tenant's id as stored (``acme`` for ``ACME`` under a case-insensitive
    collation): the one id the run's prefix, lock and artifacts must use.
    """
    canonical = ctx.check_tenant(tenant_id).id
    require_bucket(ctx.s3, ctx.settings.export_bucket, "export", canonical)
    if ctx.catalog.table(ctx.catalog.config.documents.table) is not None:
        require_bucket(ctx.s3, ctx.settings.documents_bucket, "documents", canonical)
    return canonical


def write_package(ctx: RunContext, tenant_id: str, export_id: str, *, excel: bool = False,
                  options: PackageOptions | None = None,
                  progress: Progress | None = None) -> list[FileRecord]:
    """Stream every table and document of the tenant, from one snapshot, into the package,
    then its guide. Returns the files in the order the manifest and the archive list them."""
    prefix = package_prefix(tenant_id, validate_export_id(export_id))
    options = options or PackageOptions.for_export(ctx, export_id, excel=excel)
    bucket, started = ctx.settings.export_bucket, time.monotonic()
    told = progress or (lambda _fraction, _line: None)

    # Each file's PUT leaves while the next file is written; every one has ended (or the first
    # failure is raised) before this returns, so nothing is read back before it is stored.
    sent = UploadQueue(workers=min(UPLOAD_WORKERS, ctx.settings.fetch_concurrency))

    def sink(path: str, content_type: str) -> AbstractContextManager[objects.HashingSink]:
        return objects.upload(ctx.s3, bucket, prefix + path, content_type=content_type,
                              tenant_id=tenant_id, queue=sent)

    total, done = max(len(ctx.catalog.tables), 1), [0, 0]

    def table_done(name: str, rows: int) -> None:
        done[0] += 1
        done[1] += rows
        fraction = 0.7 * done[0] / total
        told(fraction, f"{done[0]} of {total} tables written ({done[1]} rows; last: {name}); "
             f"{_remaining(started, fraction)}")

    # A retry of this step reuses the export id: start from an empty prefix, so nothing of a
    # failed attempt (an extra ZIP part, say) can end up in the package.
    objects.delete_prefix(ctx.s3, bucket, prefix, tenant_id)
    with sent:
        return _write_files(ctx, tenant_id, export_id, options, sink, told, table_done, total)


def _write_files(ctx: RunContext, tenant_id: str, export_id: str, options: PackageOptions,
                 sink: Sink, told: Progress, table_done: Callable[[str, int], None],
                 total: int) -> list[FileRecord]:
    """The tables, the documents and the guide, each file through ``sink``."""
    with ctx.snapshot(side=True) as snap:
        key = tenant_key(ctx.catalog, snap, tenant_id)
        if key.id != tenant_id:  # prefixes, locks and artifacts use the id as stored
            raise BadInput(f"tenant {tenant_id!r} is stored as {key.id!r}: export it under "
                           "that id", tenant_id=key.id)
        tables = write_tables(ctx.catalog, snap, key, sink, dialect=options.dialect,
                              created=options.created_at, table_done=table_done)
        told(0.7, f"{total} tables written ({tables.rows} rows); packing the documents")
        rule = ctx.catalog.config.documents
        id_schema = tables.schemas.get(rule.table)
        documents = write_documents(
            ctx.s3, ctx.settings.documents_bucket, ctx.catalog, snap, key, sink,
            dialect=options.dialect, part_limit=ctx.settings.zip_part_bytes,
            id_field=id_schema.field(rule.id_column) if id_schema is not None
            and rule.id_column in id_schema.names else None,
            modified_at=options.created_at,
            fetch=FetchLimits(workers=ctx.settings.fetch_concurrency))
    records = [*tables.records, *documents]
    told(0.85, f"{total} tables and {documents[0].rows} documents written; writing the guide")
    facts = GuideFacts(
        tenant_id=tenant_id, tenant_name=tables.tenant.name or tenant_id, export_id=export_id,
        created_at=options.created_at, links_expire_at=options.links_expire_at,
        package_expires_at=options.package_expires_at, language=tables.tenant.language,
        dialect=options.dialect, archive_path=archive_name(tenant_id, export_id))
    inventory = guide_inventory(ctx.catalog, records, truncated_cells=tables.truncated_cells,
                                too_wide=tables.too_wide)
    return [*records, *write_guide(sink, facts, records, inventory)]


def _remaining(started: float, fraction: float) -> str:
    """``about 40 s left`` from the time so far and the share done."""
    if fraction <= 0:
        return "time left unknown"
    left = (time.monotonic() - started) * (1 - fraction) / fraction
    return f"about {left:.0f} s left" if left < 120 else f"about {left / 60:.0f} min left"


def verify_package(ctx: RunContext, tenant_id: str, export_id: str,
                   records: list[FileRecord]) -> None:
    """Read back every object and compare its SHA-256 (raises ``VerificationFailed``); the
    export flow does this while filling the archive (:func:`archive_verified`)."""
    prefix = package_prefix(tenant_id, export_id)
    for record in records:
        objects.verify(
            ctx.s3, ctx.settings.export_bucket,
            objects.StoredObject(prefix + record.path, record.bytes, record.sha256), tenant_id,
        )


def manifest_bytes(ctx: RunContext, tenant_id: str, export_id: str, created_at: datetime,
                   records: list[FileRecord], *, archive: bool) -> bytes:
    """``datapackage.json`` for verified files: with the inventory of every table of the
    platform and each object's ETag, so ``links`` can tell a package whose objects were
    deleted or replaced since."""
    prefix = package_prefix(tenant_id, export_id)
    # One HEAD per file, a round trip each: sent together (at most fetch_concurrency at once).
    workers = max(1, min(ctx.settings.fetch_concurrency, len(records)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="head") as pool:
        found = list(pool.map(lambda r: head(ctx.s3, ctx.settings.export_bucket,
                                             prefix + r.path, tenant_id), records))
    for record, stored in zip(records, found, strict=True):
        if stored is not None and stored["etag"]:
            record.extra[ETAG_FIELD] = stored["etag"]
    inventory = {k: v for k, v in classification(ctx.catalog).items() if k != "unclassified"}
    return encode_descriptor(build_descriptor(
        tenant_id, export_id, created_at, records, inventory,
        archive_path=archive_name(tenant_id, export_id) if archive else None))


def archive_verified(ctx: RunContext, tenant_id: str, export_id: str, created_at: datetime,
                     records: list[FileRecord]) -> Archived:
    """Verify every file by reading it back into the single-download archive, which ends
    with the manifest; the archive is verified too (raises ``VerificationFailed``)."""
    return archive_package(
        ctx.s3, ctx.settings.export_bucket, package_prefix(tenant_id, export_id), tenant_id,
        export_id, records, created_at,
        lambda: manifest_bytes(ctx, tenant_id, export_id, created_at, records, archive=True))


def publish(ctx: RunContext, tenant_id: str, export_id: str, data: bytes) -> FileRecord:
    """Write ``datapackage.json`` (the commit marker) and verify it."""
    stored = objects.put_bytes(ctx.s3, ctx.settings.export_bucket,
                               package_prefix(tenant_id, export_id) + MANIFEST, data,
                               content_type="application/json", tenant_id=tenant_id)
    objects.verify(ctx.s3, ctx.settings.export_bucket, stored, tenant_id)
    return FileRecord(path=MANIFEST, bytes=stored.bytes, sha256=stored.sha256, kind="manifest")


def publish_manifest(ctx: RunContext, tenant_id: str, export_id: str, created_at: datetime,
                     records: list[FileRecord]) -> FileRecord:
    """Build and publish the manifest of verified files, for a package without an archive."""
    return publish(ctx, tenant_id, export_id,
                   manifest_bytes(ctx, tenant_id, export_id, created_at, records, archive=False))


def discard_package(ctx: RunContext, tenant_id: str, export_id: str) -> int:
    """Delete whatever a failed run left under its export id, open uploads included."""
    prefix = package_prefix(tenant_id, export_id)
    objects.abort_uploads(ctx.s3, ctx.settings.export_bucket, prefix, tenant_id)
    return objects.delete_prefix(ctx.s3, ctx.settings.export_bucket, prefix, tenant_id)


def load_package(ctx: RunContext, tenant_id: str, export_id: str | None
                 ) -> tuple[str, str, FileRecord, list[FileRecord]]:
    """A retained, complete export (the newest when no id is given) read from its manifest:
    id, created time, manifest and files (the archive, not a resource, is left out)."""
    found = retained_package(ctx, tenant_id, export_id)
    return found.export_id, found.created, found.manifest, found.records


def parse_target(ctx: RunContext, target_uri: str, tenant_id: str) -> tuple[str, str]:
    """Bucket and prefix of a successor's ``s3://bucket/prefix``; the bucket must exist."""
    bucket, _, prefix = target_uri.removeprefix("s3://").partition("/")
    if not target_uri.startswith("s3://") or not bucket:
        raise BadInput(f"target {target_uri!r} is not an s3://bucket/prefix URI",
                       tenant_id=tenant_id)
    require_bucket(ctx.s3, bucket, "target", tenant_id)
    return bucket, prefix


def deliver(ctx: RunContext, tenant_id: str, export_id: str, records: list[FileRecord],
            manifest: FileRecord, target_uri: str) -> list[str]:
    """Copy a verified package into a successor's bucket (``s3://bucket/prefix``), verified.

    The copy streams through this process, so the target may live on another S3 endpoint
    reachable with the same credentials (cross-account access granted by the successor).
    """
    bucket, prefix = parse_target(ctx, target_uri, tenant_id)
    base = prefix.strip("/") + "/" if prefix.strip("/") else ""
    source = package_prefix(tenant_id, export_id)
    copied: list[str] = []
    for record in [*records, manifest]:  # the manifest last, as in the export itself
        key = f"{base}{tenant_id}/{export_id}/{record.path}"
        with objects.upload(ctx.s3, bucket, key, tenant_id=tenant_id) as out:
            objects.copy_stream(ctx.s3, ctx.settings.export_bucket, source + record.path, out,
                                tenant_id)
        objects.verify(ctx.s3, bucket, objects.StoredObject(key, record.bytes, record.sha256),
                       tenant_id)
        copied.append(f"s3://{bucket}/{key}")
    return copied
