"""Per-tenant backup snapshots, in plain code: sources → Parquet/encryption → S3.

A snapshot is every table of the tenant as encrypted Parquet, read from one consistent database
snapshot, plus its documents stored content-addressed (a blob already backed up is never
uploaded again), described by an encrypted manifest written last. Write order: tables and new
blobs are streamed and read back (ciphertext SHA-256), then the manifest is written and read
back: a snapshot without a manifest is not a snapshot, whatever else its folder holds.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any, cast

import pyarrow as pa
from botocore.exceptions import ClientError

from exporters.names import UniqueNames
from exporters.parquet_writer import ParquetTableWriter
from flows.context import RunContext, StoreContext
from flows.packaging import check_tenant, confined, tenant_key
from sources.catalog import discover
from sources.database import Snapshot
from sources.documents import iter_documents, open_blob
from storage import backup_store as store
from storage import objects
from storage.aead import EncryptingWriter, decrypt_stream, object_associated_data
from storage.keys import KeyWrapper, new_data_key
from storage.s3 import error_code, raise_storage
from tenant_export.errors import StorageError, VerificationFailed
from tenant_export.ids import validate_tenant_id

FORMAT = "tenant-export-snapshot"
FORMAT_VERSION = 1
BLOB_OBJECT = "blob"  # associated data of blobs: their name is checked as the plaintext hash


def checkpoint(name: str) -> None:
    """A named point of the write order; tests replace this to kill the process there."""


def new_snapshot_id(now: datetime | None = None) -> str:
    """Sortable by time, unguessable: ``20261126T023000Z-1a2b3c4d``."""
    return f"{(now or datetime.now(UTC)):%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


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


# -- keys ------------------------------------------------------------------------------------


def data_key(ctx: StoreContext, wrapper: KeyWrapper, tenant_id: str, *, create: bool) -> bytes:
    """The tenant's data key, unwrapped; created (and stored wrapped) on the first backup."""
    bucket, key = ctx.settings.backup_bucket, store.key_record_key(tenant_id)
    if store.head(ctx.s3, bucket, key, tenant_id) is None:
        if not create:
            raise VerificationFailed(f"{key}: no data key for tenant {tenant_id!r}, so no backup "
                                     "can be read (never backed up, or purged)",
                                     tenant_id=tenant_id)
        dek = new_data_key()
        try:  # only if still absent: overwriting a data key would orphan every snapshot
            ctx.s3.put_object(Bucket=bucket, Key=key, Body=wrapper.wrap(dek, tenant_id),
                              ContentType="application/json", IfNoneMatch="*")
            return dek
        except ClientError as err:
            if error_code(err) not in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                raise_storage(err, f"writing {key!r} to {bucket!r}", tenant_id)
    return wrapper.unwrap(objects.read_bytes(ctx.s3, bucket, key, tenant_id), tenant_id)


# -- manifests -------------------------------------------------------------------------------


def _seal(ctx: StoreContext, dek: bytes, tenant_id: str, key: str, name: str,
          write: Callable[[IO[bytes]], None]) -> dict[str, Any]:
    """Stream ``write``'s plaintext, encrypted, to ``key``; returns sizes and hashes."""
    with (objects.upload(ctx.s3, ctx.settings.backup_bucket, key, tenant_id=tenant_id) as out,
          EncryptingWriter(out, dek, object_associated_data(tenant_id, name)) as enc):
        write(cast(IO[bytes], enc))
    return {"plaintext_bytes": enc.plaintext_bytes, "plaintext_sha256": enc.plaintext_sha256,
            "ciphertext_bytes": out.bytes, "ciphertext_sha256": out.sha256}


def read_manifest(ctx: StoreContext, dek: bytes, tenant_id: str, snapshot_id: str
                  ) -> dict[str, Any]:
    """Decrypt and parse a snapshot's manifest (``VerificationFailed`` names it)."""
    name = f"snapshots/{snapshot_id}/{store.MANIFEST}"
    key = store.snapshot_prefix(tenant_id, snapshot_id) + store.MANIFEST
    data = b"".join(decrypt_object(ctx, dek, tenant_id, key, name))
    manifest: dict[str, Any] = json.loads(data)
    if (manifest.get("format"), manifest.get("tenant_id"), manifest.get("snapshot_id")) != (
            FORMAT, tenant_id, snapshot_id):
        raise VerificationFailed(f"{key}: not the manifest of snapshot {snapshot_id}",
                                 tenant_id=tenant_id)
    return manifest


def decrypt_object(ctx: StoreContext, dek: bytes, tenant_id: str, key: str, name: str
                   ) -> Any:
    """An object's plaintext, streamed; ``VerificationFailed`` names the object."""
    try:
        yield from decrypt_stream(store.chunks(ctx.s3, ctx.settings.backup_bucket, key,
                                               tenant_id),
                                  dek, object_associated_data(tenant_id, name))
    except VerificationFailed as err:
        raise VerificationFailed(f"{key}: {err}", tenant_id=tenant_id) from err
    except StorageError as err:
        raise VerificationFailed(f"{key}: {err}", tenant_id=tenant_id) from err


def list_snapshots(ctx: StoreContext, tenant_id: str) -> list[str]:
    """Ids of complete snapshots (those with a manifest), oldest first."""
    prefix = store.tenant_prefix(validate_tenant_id(tenant_id)) + "snapshots/"
    found = objects.list_prefixes(ctx.s3, ctx.settings.backup_bucket, prefix, tenant_id)
    ids = [p.rstrip("/").rsplit("/", 1)[-1] for p in found]
    complete = [i for i in ids if store.head(
        ctx.s3, ctx.settings.backup_bucket,
        store.snapshot_prefix(tenant_id, i) + store.MANIFEST, tenant_id) is not None]
    return sorted(complete)


# -- backup ----------------------------------------------------------------------------------


def backup_tenant(ctx: RunContext, wrapper: KeyWrapper, tenant_id: str) -> BackupSummary:
    """One verified snapshot of the tenant; only changed documents are uploaded."""
    started = time.monotonic()
    validate_tenant_id(tenant_id)
    bucket = ctx.settings.backup_bucket
    check_tenant(ctx, tenant_id)  # an unknown tenant gets no data key, no folder
    dek = data_key(ctx, wrapper, tenant_id, create=True)
    previous = _previous_documents(ctx, dek, tenant_id)
    snapshot_id = new_snapshot_id()
    summary = BackupSummary(tenant_id=tenant_id, snapshot_id=snapshot_id)
    prefix = store.snapshot_prefix(tenant_id, snapshot_id)
    tables: list[dict[str, Any]] = []
    documents: list[dict[str, Any]] = []
    blobs: dict[str, dict[str, Any]] = {}
    written: list[objects.StoredObject] = []
    names = UniqueNames()
    # A backup must be restorable to what the platform held: the export's exclusions and
    # skipped tables (secrets that never leave for a client) are backed up, encrypted.
    catalog = discover(ctx.engine, ctx.catalog.config.model_copy(update={"tables": {}}))
    with Snapshot(ctx.engine, batch_rows=ctx.settings.batch_rows) as snap:
        key = tenant_key(ctx, snap, tenant_id)
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

            sealed = _seal(ctx, dek, tenant_id, prefix + name,
                           f"snapshots/{snapshot_id}/{name}", write)
            written.append(objects.StoredObject(prefix + name, sealed["ciphertext_bytes"],
                                                sealed["ciphertext_sha256"]))
            tables.append({"name": plan.name, "object": name, "rows": rows,
                           "schema": _schema_b64(stream.schema),
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
    data = json.dumps(manifest, sort_keys=True).encode()

    def write_manifest(sink: IO[bytes]) -> None:
        sink.write(data)

    sealed = _seal(ctx, dek, tenant_id, prefix + store.MANIFEST,
                   f"snapshots/{snapshot_id}/{store.MANIFEST}", write_manifest)
    summary.bytes_uploaded += sealed["ciphertext_bytes"]
    objects.verify(ctx.s3, bucket, objects.StoredObject(
        prefix + store.MANIFEST, sealed["ciphertext_bytes"], sealed["ciphertext_sha256"]),
        tenant_id)
    checkpoint("committed")
    summary.seconds = time.monotonic() - started
    return summary


def _previous_documents(ctx: StoreContext, dek: bytes, tenant_id: str
                        ) -> dict[str, dict[str, Any]]:
    """Documents of the newest complete snapshot, by id, with the blobs they point to."""
    snapshots = list_snapshots(ctx, tenant_id)
    if not snapshots:
        return {}
    manifest = read_manifest(ctx, dek, tenant_id, snapshots[-1])
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
    info = store.head(ctx.s3, docs_bucket, ref.storage_key, tenant_id) if ref.storage_key else None
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
    staging = store.staging_prefix(tenant_id) + uuid.uuid4().hex

    def write(sink: IO[bytes]) -> None:
        for chunk in chunks:
            sink.write(chunk)

    sealed = _seal(ctx, dek, tenant_id, staging, BLOB_OBJECT, write)
    sha = sealed["plaintext_sha256"]
    target = store.blob_key(tenant_id, sha)
    if store.head(ctx.s3, bucket, target, tenant_id) is None:
        store.copy(ctx.s3, bucket, staging, target, tenant_id, sealed["ciphertext_bytes"])
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
    store.delete(ctx.s3, bucket, staging, tenant_id)
    return {**entry, "blob": sha}


def _blob_info(ctx: StoreContext, tenant_id: str, sha: str,
               previous: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Sizes of a blob stored by an earlier snapshot (from a manifest, else from S3)."""
    for doc in previous.values():
        if doc.get("blob") == sha and doc.get("blob_info"):
            info: dict[str, Any] = doc["blob_info"]
            return info
    head = store.head(ctx.s3, ctx.settings.backup_bucket, store.blob_key(tenant_id, sha),
                      tenant_id)
    return {"ciphertext_bytes": head["size"] if head else None, "ciphertext_sha256": None}


def _schema_b64(schema: pa.Schema) -> str:
    return base64.b64encode(schema.serialize().to_pybytes()).decode("ascii")


def schema_of(table: dict[str, Any]) -> pa.Schema:
    """The Arrow schema recorded for a table in a manifest."""
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(table["schema"])))
