"""The export recipe in plain code: sources → exporters → storage, testable without Prefect.

Order of writes (docs/export-format.md, "Write order"): every data file and ZIP part is streamed
under ``exports/<tenant>/<export_id>/``; each is read back and its SHA-256 compared; only then is
``datapackage.json`` written (and verified). A package without ``datapackage.json`` is not an
export: it is never linked and is deleted when the run fails.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import AbstractContextManager, closing
from datetime import UTC, datetime
from functools import partial
from typing import IO, Any, cast

from pydantic import BaseModel

from exporters.csv_writer import CsvTableWriter
from exporters.datapackage import (
    UNOWNED,
    FileRecord,
    build_descriptor,
    encode_descriptor,
    index_schema,
    table_schema,
)
from exporters.documents import DocumentInput, IndexWriter, write_document_parts
from exporters.names import UniqueNames
from flows.context import RunContext
from kernel.errors import BadInput, StorageError, VerificationFailed
from kernel.ids import validate_export_id, validate_tenant_id
from sources.database import Snapshot
from sources.documents import (
    DocumentRef,
    confined,
    iter_documents,
    missing_reason,
    open_blob,
    shared_keys,
)
from sources.inventory import classification
from sources.tables import TablePlan, TenantRef
from sources.tenants import tenant_key
from storage import links, objects
from storage.backup_store import head
from storage.s3 import require_bucket

MANIFEST = "datapackage.json"
ETAG_FIELD = "x-etag"  # the object's S3 ETag when the package was published
MISSING_FIELD = "x-missing-documents"  # on index.csv: [{"document_id", "reason"}]
SHARED_FIELD = "x-shared-keys"  # on index.csv: [{"document_id", "storage_key"}]
KEPT_FIELDS = (ETAG_FIELD, MISSING_FIELD, SHARED_FIELD)


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


class ExportResult(BaseModel):
    """What ``export --json`` and ``links --json`` print (DESIGN §3.1, plus the documents
    the package lists as missing and the keys shared with other tenants' rows)."""

    tenant_id: str
    export_id: str
    created_at: str
    expires_at: str
    files: list[FileLink]
    documents_missing: list[MissingDocument] = []
    documents_shared_keys: list[SharedKey] = []


def package_prefix(tenant_id: str, export_id: str) -> str:
    """The folder of one export package in the export bucket."""
    return f"exports/{tenant_id}/{export_id}/"


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


def write_package(
    ctx: RunContext, tenant_id: str, export_id: str, *, excel: bool = False
) -> list[FileRecord]:
    """Stream every table and document of the tenant, from one snapshot, into the package."""
    prefix = package_prefix(tenant_id, validate_export_id(export_id))
    bucket = ctx.settings.export_bucket
    records: list[FileRecord] = []
    table_names = UniqueNames()

    def sink(path: str, content_type: str) -> AbstractContextManager[objects.HashingSink]:
        return objects.upload(ctx.s3, bucket, prefix + path, content_type=content_type,
                              tenant_id=tenant_id)

    # A retry of this step reuses the export id: start from an empty prefix, so nothing of a
    # failed attempt (an extra ZIP part, say) can end up in the package.
    objects.delete_prefix(ctx.s3, bucket, prefix, tenant_id)
    with ctx.snapshot() as snap:
        key = tenant_key(ctx.catalog, snap, tenant_id)
        if key.id != tenant_id:  # prefixes, locks and artifacts use the id as stored
            raise BadInput(f"tenant {tenant_id!r} is stored as {key.id!r}: export it under "
                           "that id", tenant_id=key.id)
        for plan in ctx.catalog.tables:
            stream = snap.read_table(plan, key, schema=ctx.catalog.config.db_schema)
            path = f"data/{table_names.claim(plan.name, 'table')}.csv"
            with sink(path, "text/csv; charset=utf-8") as out:
                writer = CsvTableWriter(cast(IO[bytes], out), stream.schema, excel=excel)
                for batch in stream.batches:
                    writer.write_batch(batch)
                writer.close()
            records.append(FileRecord(
                path=path, bytes=out.bytes, sha256=out.sha256, rows=writer.rows, kind="table",
                table=plan.name, schema=table_schema(stream.schema, plan.primary_key),
                extra=_scope_extra(snap, plan), foreign_keys=[
                    {"fields": list(fk.columns), "table": fk.parent,
                     "parent_fields": list(fk.parent_columns)} for fk in plan.foreign_keys],
            ))
        records.extend(_write_documents(ctx, snap, key, sink))
    return records


def _scope_extra(snap: Snapshot, plan: TablePlan) -> dict[str, Any]:
    """How the table's rows were chosen, and how many rows of it went to nobody."""
    scope = plan.effective_scope
    extra: dict[str, Any] = {"x-scope": scope.describe()}
    if scope.kind in ("column", "references"):
        cross, orphans = snap.unowned(plan)
        extra.update({UNOWNED["cross_tenant_rows"]: cross, UNOWNED["orphan_rows"]: orphans})
    return extra


def _write_documents(ctx: RunContext, snap: Snapshot, key: TenantRef, sink: Any
                     ) -> list[FileRecord]:
    docs_bucket, rule = ctx.settings.documents_bucket, ctx.catalog.config.documents
    refs = confined(iter_documents(snap, ctx.catalog, key), rule, key.id)
    missing: list[dict[str, str]] = []

    def opener(ref: DocumentRef) -> Iterator[bytes] | None:
        reason = missing_reason(ref)
        chunks = None if reason else open_blob(ctx.s3, docs_bucket, ref.storage_key)
        if chunks is None:
            missing.append({"document_id": ref.document_id,
                            "reason": reason or "object not found"})
        return chunks

    inputs = (DocumentInput(document_id=ref.document_id, filename=ref.filename,
                            open=partial(opener, ref)) for ref in refs)
    parts: list[FileRecord] = []

    def open_part(name: str) -> AbstractContextManager[IO[bytes]]:
        return _recording(sink(f"documents/{name}", "application/zip"), f"documents/{name}", parts)

    with closing(refs), sink("documents/index.csv", "text/csv; charset=utf-8") as index_out:
        index = IndexWriter(cast(IO[bytes], index_out))
        summary = write_document_parts(
            inputs, open_part, index, part_limit=ctx.settings.zip_part_bytes,
            modified_at=datetime.now(UTC).replace(microsecond=0),
        )
        index.close()
    shared = [] if rule.keys_tenant_scoped is not False else [
        {"document_id": r.document_id, "storage_key": r.storage_key}
        for r in shared_keys(snap, ctx.catalog, key)]
    index_record = FileRecord(
        path="documents/index.csv", bytes=index_out.bytes, sha256=index_out.sha256,
        rows=index.rows, kind="index", schema=index_schema(index.schema),
        extra={"x-documents-ok": summary.documents_ok,
               "x-documents-missing": summary.documents_missing,
               MISSING_FIELD: missing, **({SHARED_FIELD: shared} if shared else {})},
    )
    return [index_record, *parts]


class _recording(AbstractContextManager[IO[bytes]]):
    """Wraps an upload so the finished part is recorded with its size and hash."""

    def __init__(self, inner: AbstractContextManager[objects.HashingSink], path: str,
                 into: list[FileRecord]) -> None:
        self._inner, self._path, self._into = inner, path, into
        self._sink: objects.HashingSink | None = None

    def __enter__(self) -> IO[bytes]:
        self._sink = self._inner.__enter__()
        return cast(IO[bytes], self._sink)  # a RawIOBase is a valid byte sink

    def __exit__(self, *exc: Any) -> bool | None:
        result = self._inner.__exit__(*exc)
        if exc[0] is None and self._sink is not None:
            self._into.append(FileRecord(path=self._path, bytes=self._sink.bytes,
                                         sha256=self._sink.sha256, kind="zip"))
        return result


def verify_package(ctx: RunContext, tenant_id: str, export_id: str,
                   records: list[FileRecord]) -> None:
    """Read back every object and compare its SHA-256 (raises ``VerificationFailed``)."""
    prefix = package_prefix(tenant_id, export_id)
    for record in records:
        objects.verify(
            ctx.s3, ctx.settings.export_bucket,
            objects.StoredObject(prefix + record.path, record.bytes, record.sha256), tenant_id,
        )


def publish_manifest(ctx: RunContext, tenant_id: str, export_id: str, created_at: datetime,
                     records: list[FileRecord]) -> FileRecord:
    """Write ``datapackage.json`` (the commit marker) and verify it.

    It carries the inventory of every table of the platform and each object's ETag, so
    ``links`` can tell a package whose objects were deleted or replaced since.
    """
    prefix = package_prefix(tenant_id, export_id)
    for record in records:
        found = head(ctx.s3, ctx.settings.export_bucket, prefix + record.path, tenant_id)
        if found is not None and found["etag"]:
            record.extra[ETAG_FIELD] = found["etag"]
    inventory = {k: v for k, v in classification(ctx.catalog).items() if k != "unclassified"}
    data = encode_descriptor(build_descriptor(tenant_id, export_id, created_at, records,
                                              inventory))
    key = prefix + MANIFEST
    stored = objects.put_bytes(ctx.s3, ctx.settings.export_bucket, key, data,
                               content_type="application/json", tenant_id=tenant_id)
    objects.verify(ctx.s3, ctx.settings.export_bucket, stored, tenant_id)
    return FileRecord(path=MANIFEST, bytes=stored.bytes, sha256=stored.sha256, kind="manifest")


def discard_package(ctx: RunContext, tenant_id: str, export_id: str) -> int:
    """Delete whatever a failed run left under its export id, open uploads included."""
    prefix = package_prefix(tenant_id, export_id)
    objects.abort_uploads(ctx.s3, ctx.settings.export_bucket, prefix, tenant_id)
    return objects.delete_prefix(ctx.s3, ctx.settings.export_bucket, prefix, tenant_id)


def mint_links(ctx: RunContext, tenant_id: str, export_id: str, created_at: str,
               manifest: FileRecord, records: list[FileRecord], ttl_seconds: int) -> ExportResult:
    """Fresh signed links for every file of a verified package."""
    prefix = package_prefix(tenant_id, export_id)
    bucket = ctx.settings.export_bucket
    expires = links.expiry(ttl_seconds)
    files = [
        FileLink(path=r.path, url=links.signed_get(ctx.s3, bucket, prefix + r.path, ttl_seconds,
                                                   tenant_id),
                 bytes=r.bytes, sha256=r.sha256, rows=r.rows)
        for r in [manifest, *records]
    ]
    index = next((r for r in records if r.path == "documents/index.csv"), None)
    extra = index.extra if index is not None else {}
    return ExportResult(tenant_id=tenant_id, export_id=export_id, created_at=created_at,
                        expires_at=expires.isoformat(timespec="seconds"), files=files,
                        documents_missing=extra.get(MISSING_FIELD, []),
                        documents_shared_keys=extra.get(SHARED_FIELD, []))


def load_package(ctx: RunContext, tenant_id: str, export_id: str | None
                 ) -> tuple[str, str, FileRecord, list[FileRecord]]:
    """A retained, complete export (the newest when no id is given) read from its manifest."""
    validate_tenant_id(tenant_id)
    bucket = ctx.settings.export_bucket
    require_bucket(ctx.s3, bucket, "export", tenant_id)
    if export_id is None:
        candidates = sorted(objects.list_prefixes(ctx.s3, bucket, f"exports/{tenant_id}/",
                                                  tenant_id), reverse=True)
        complete = (p for p in candidates
                    if objects.list_keys(ctx.s3, bucket, p + MANIFEST, tenant_id))
        chosen = next(complete, None)
        if chosen is None:
            raise BadInput(f"no complete export is retained for tenant {tenant_id!r}",
                           tenant_id=tenant_id)
        export_id = chosen.rstrip("/").rsplit("/", 1)[-1]
    validate_export_id(export_id)
    key = package_prefix(tenant_id, export_id) + MANIFEST
    try:
        raw = objects.read_bytes(ctx.s3, bucket, key, tenant_id)
    except StorageError as err:
        raise BadInput(f"no complete export {export_id!r} for tenant {tenant_id!r}",
                       tenant_id=tenant_id) from err
    descriptor = json.loads(raw)
    manifest = FileRecord(path=MANIFEST, bytes=len(raw), sha256=hashlib.sha256(raw).hexdigest(),
                          kind="manifest")
    records = [
        FileRecord(path=r["path"], bytes=r["bytes"], sha256=r["hash"].removeprefix("sha256:"),
                   rows=r.get("rows"), extra={k: v for k, v in r.items() if k in KEPT_FIELDS})
        for r in descriptor["resources"]
    ]
    check_objects(ctx, tenant_id, export_id, records)
    return export_id, descriptor["created"], manifest, records


def check_objects(ctx: RunContext, tenant_id: str, export_id: str,
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


def iter_redacted(result: ExportResult) -> Iterator[str]:
    """Log-safe lines describing the links (a link is a bearer secret)."""
    for f in result.files:
        yield f"{f.path}: {f.bytes} bytes sha256 {f.sha256[:12]}… {links.redact(f.url)}"
