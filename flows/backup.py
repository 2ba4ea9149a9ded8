"""Per-tenant backup snapshots, in plain code: sources → Parquet/encryption → S3.

A snapshot is every table of the tenant as encrypted Parquet, read from one consistent database
snapshot, plus its documents stored content-addressed (a blob already backed up is never
uploaded again), described by an encrypted manifest written last. Write order: tables and new
blobs are streamed and read back (ciphertext SHA-256), then the manifest is written and read
back: a snapshot without a manifest is not a snapshot, whatever else its folder holds. The
format itself (keys, sealing, manifests) is :mod:`storage.snapshots`.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any

from exporters.names import UniqueNames
from exporters.parquet_writer import ParquetTableWriter
from flows.context import RunContext, S3Context
from kernel.ids import new_snapshot_id, validate_tenant_id
from sources.catalog import discover
from sources.database import Snapshot
from sources.documents import confined, iter_documents, open_blob
from sources.tenants import tenant_key
from storage import backup_store as layout
from storage import objects
from storage.keys import KeyWrapper
from storage.snapshots import (
    BLOB_OBJECT,
    FORMAT,
    FORMAT_VERSION,
    object_name,
    schema_b64,
)


def checkpoint(name: str) -> None:
    """A named point of the write order; tests replace this to kill the process there."""


@dataclass
class BackupSummary:
    """What one tenant's backup did (the nightly summary artifact lists these)."""

    tenant_id: str
    snapshot_id: str
    rows: int = 0
    documents: int = 0
    documents_missing: int = 0
    blobs_uploaded: int = 0
    bytes_uploaded: int = 0
    seconds: float = 0.0
    tables: dict[str, int] = field(default_factory=dict)


# -- backup ----------------------------------------------------------------------------------


def backup_tenant(ctx: RunContext, wrapper: KeyWrapper, tenant_id: str) -> BackupSummary:
    """One verified snapshot of the tenant; only changed documents are uploaded."""
    started = time.monotonic()
    validate_tenant_id(tenant_id)
    bucket = ctx.settings.backup_bucket
    store = ctx.store
    ctx.check_tenant(tenant_id)  # an unknown tenant gets no data key, no folder
    dek = store.data_key(wrapper, tenant_id, create=True)
    previous = _previous_documents(ctx, dek, tenant_id)
    snapshot_id = new_snapshot_id()
    summary = BackupSummary(tenant_id=tenant_id, snapshot_id=snapshot_id)
    prefix = layout.snapshot_prefix(tenant_id, snapshot_id)
    tables: list[dict[str, Any]] = []
    documents: list[dict[str, Any]] = []
    blobs: dict[str, dict[str, Any]] = {}
    written: list[objects.StoredObject] = []
    names = UniqueNames()
    # A backup must be restorable to what the platform held: the export's exclusions and
    # skipped tables (secrets that never leave for a client) are backed up, encrypted.
    catalog = discover(ctx.engine, ctx.catalog.config.model_copy(update={"tables": {}}))
    with Snapshot(ctx.engine, batch_rows=ctx.settings.batch_rows) as snap:
        key = tenant_key(ctx.catalog, snap, tenant_id)
        for plan in catalog.tables:
            stream = snap.read_table(plan, key, schema=ctx.catalog.config.db_schema)
            name = f"tables/{names.claim(plan.name, 'table')}.parquet"
            rows = 0

            def write(sink: IO[bytes], stream: Any = stream) -> None:
                nonlocal rows
                writer = ParquetTableWriter(sink, stream.schema)
                for batch in stream.batches:
                    writer.write_batch(batch)
                writer.close()
                rows = writer.rows

            sealed = store.seal(dek, tenant_id, prefix + name, object_name(snapshot_id, name),
                                write)
            written.append(objects.StoredObject(prefix + name, sealed["ciphertext_bytes"],
                                                sealed["ciphertext_sha256"]))
            tables.append({"name": plan.name, "object": name, "rows": rows,
                           "schema": schema_b64(stream.schema),
                           "primary_key": list(plan.primary_key), **sealed})
            summary.rows += rows
            summary.tables[plan.name] = rows
            summary.bytes_uploaded += sealed["ciphertext_bytes"]
            checkpoint(f"table:{plan.name}")
        refs = confined(iter_documents(snap, ctx.catalog, key), ctx.catalog.config.documents,
                        tenant_id)
        for ref in refs:
            entry = _backup_document(ctx, dek, tenant_id, ref, previous, blobs, written, summary)
            documents.append(entry)
            checkpoint("document")
    checkpoint("before-verify")
    for stored in written:  # read back every object this run wrote
        objects.verify(ctx.s3, bucket, stored, tenant_id)
    manifest = {
        "format": FORMAT, "version": FORMAT_VERSION, "tenant_id": tenant_id,
        "snapshot_id": snapshot_id, "created_at": datetime.now(UTC).isoformat(),
        "source": ctx.engine.dialect.name, "tables": tables, "documents": documents,
        "blobs": blobs,
    }
    checkpoint("before-manifest")
    sealed = store.write_manifest(dek, tenant_id, snapshot_id, manifest)
    summary.bytes_uploaded += sealed["ciphertext_bytes"]
    checkpoint("committed")
    summary.seconds = time.monotonic() - started
    return summary


def _previous_documents(ctx: S3Context, dek: bytes, tenant_id: str
                        ) -> dict[str, dict[str, Any]]:
    """Documents of the newest complete snapshot, by id, with the blobs they point to."""
    snapshots = ctx.store.list_snapshots(tenant_id)
    if not snapshots:
        return {}
    manifest = ctx.store.read_manifest(dek, tenant_id, snapshots[-1])
    blobs = manifest.get("blobs", {})
    return {d["document_id"]: {**d, "blob_info": blobs.get(d.get("blob"))}
            for d in manifest["documents"] if d.get("blob")}


def _backup_document(ctx: RunContext, dek: bytes, tenant_id: str, ref: Any,
                     previous: dict[str, dict[str, Any]], blobs: dict[str, dict[str, Any]],
                     written: list[objects.StoredObject], summary: BackupSummary
                     ) -> dict[str, Any]:
    summary.documents += 1
    docs_bucket, bucket = ctx.settings.documents_bucket, ctx.settings.backup_bucket
    entry: dict[str, Any] = {"document_id": ref.document_id, "storage_key": ref.storage_key}
    info = layout.head(ctx.s3, docs_bucket, ref.storage_key, tenant_id) if ref.storage_key else (
        None)
    if info is None:
        summary.documents_missing += 1
        return {**entry, "status": "missing", "blob": None}
    entry.update(etag=info["etag"], size=info["size"], status="ok")
    before = previous.get(ref.document_id)
    if before and before.get("blob_info") and (before.get("storage_key"), before.get("etag"),
                                               before.get("size")) == (
            ref.storage_key, info["etag"], info["size"]):
        blobs[before["blob"]] = before["blob_info"]  # unchanged: reuse, upload nothing
        return {**entry, "blob": before["blob"]}
    chunks = open_blob(ctx.s3, docs_bucket, ref.storage_key)
    if chunks is None:  # deleted between HEAD and GET
        summary.documents_missing += 1
        return {**entry, "status": "missing", "blob": None}
    staging = layout.staging_prefix(tenant_id) + uuid.uuid4().hex

    def write(sink: IO[bytes]) -> None:
        for chunk in chunks:
            sink.write(chunk)

    sealed = ctx.store.seal(dek, tenant_id, staging, BLOB_OBJECT, write)
    sha = sealed["plaintext_sha256"]
    target = layout.blob_key(tenant_id, sha)
    if layout.head(ctx.s3, bucket, target, tenant_id) is None:
        layout.copy(ctx.s3, bucket, staging, target, tenant_id, sealed["ciphertext_bytes"])
        summary.blobs_uploaded += 1
        written.append(objects.StoredObject(target, sealed["ciphertext_bytes"],
                                            sealed["ciphertext_sha256"]))
        blobs[sha] = {"ciphertext_bytes": sealed["ciphertext_bytes"],
                      "ciphertext_sha256": sealed["ciphertext_sha256"],
                      "plaintext_bytes": sealed["plaintext_bytes"]}
    else:
        existing = _blob_info(ctx, tenant_id, sha, previous)
        blobs[sha] = existing
    summary.bytes_uploaded += sealed["ciphertext_bytes"]
    layout.delete(ctx.s3, bucket, staging, tenant_id)
    return {**entry, "blob": sha}


def _blob_info(ctx: S3Context, tenant_id: str, sha: str,
               previous: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Sizes of a blob stored by an earlier snapshot (from a manifest, else from S3)."""
    for doc in previous.values():
        if doc.get("blob") == sha and doc.get("blob_info"):
            info: dict[str, Any] = doc["blob_info"]
            return info
    head = layout.head(ctx.s3, ctx.settings.backup_bucket, layout.blob_key(tenant_id, sha),
                       tenant_id)
    return {"ciphertext_bytes": head["size"] if head else None, "ciphertext_sha256": None}
