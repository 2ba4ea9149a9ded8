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
from exporters.datapackage import FileRecord, build_descriptor, encode_descriptor, table_schema
from exporters.documents import DocumentInput, IndexWriter, write_document_parts
from exporters.names import UniqueNames
from flows.context import RunContext
from kernel.errors import BadInput, StorageError
from kernel.ids import validate_export_id, validate_tenant_id
from sources.database import Snapshot
from sources.documents import confined, iter_documents, open_blob
from sources.tenants import tenant_key
from storage import links, objects
from storage.s3 import require_bucket

MANIFEST = "datapackage.json"


class FileLink(BaseModel):
    """One file of the package with its signed link (the ``--json`` contract of DESIGN §3.1)."""

    path: str
    url: str
    bytes: int
    sha256: str
    rows: int | None = None


class ExportResult(BaseModel):
    """What ``export --json`` and ``links --json`` print."""

    tenant_id: str
    export_id: str
    created_at: str
    expires_at: str
    files: list[FileLink]


def package_prefix(tenant_id: str, export_id: str) -> str:
    """The folder of one export package in the export bucket."""
    return f"exports/{tenant_id}/{export_id}/"


def check_request(ctx: RunContext, tenant_id: str) -> None:
    """Refuse before anything is written: unknown tenant (exit 2), missing buckets (exit 1)."""
    ctx.check_tenant(tenant_id)
    require_bucket(ctx.s3, ctx.settings.export_bucket, "export", tenant_id)
    if ctx.catalog.table(ctx.catalog.config.documents.table) is not None:
        require_bucket(ctx.s3, ctx.settings.documents_bucket, "documents", tenant_id)


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
    with Snapshot(ctx.engine, batch_rows=ctx.settings.batch_rows) as snap:
        key = tenant_key(ctx.catalog, snap, tenant_id)
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
            ))
        records.extend(_write_documents(ctx, snap, tenant_id, key, sink))
    return records


def _write_documents(
    ctx: RunContext, snap: Snapshot, tenant_id: str, key: object, sink: Any,
) -> list[FileRecord]:
    docs_bucket = ctx.settings.documents_bucket
    refs = confined(iter_documents(snap, ctx.catalog, key), ctx.catalog.config.documents,
                     tenant_id)
    inputs = (
        DocumentInput(
            document_id=ref.document_id,
            filename=ref.filename,
            open=partial(open_blob, ctx.s3, docs_bucket, ref.storage_key),
        )
        for ref in refs
    )
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
    index_record = FileRecord(
        path="documents/index.csv", bytes=index_out.bytes, sha256=index_out.sha256,
        rows=index.rows, kind="index",
        extra={"x-documents-ok": summary.documents_ok,
               "x-documents-missing": summary.documents_missing},
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
    """Write ``datapackage.json`` (the commit marker) and verify it."""
    data = encode_descriptor(build_descriptor(tenant_id, export_id, created_at, records))
    key = package_prefix(tenant_id, export_id) + MANIFEST
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
    return ExportResult(tenant_id=tenant_id, export_id=export_id, created_at=created_at,
                        expires_at=expires.isoformat(timespec="seconds"), files=files)


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
                   rows=r.get("rows"))
        for r in descriptor["resources"]
    ]
    return export_id, descriptor["created"], manifest, records


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
