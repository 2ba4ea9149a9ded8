"""Verify and restore backup snapshots, in plain code: storage → Arrow → target database.

``verify`` reads back and decrypts every object of a snapshot (like ``restic check
--read-data``). ``restore`` verifies first, so a damaged snapshot writes nothing; then it creates
the tenant's tables in an empty target database in one transaction, loads the rows, uploads the
documents, and checks row counts and document hashes against the manifest.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from flows.context import S3Context
from kernel.dburl import describe_url
from kernel.errors import BadInput, VerificationFailed
from sources.loader import TableLoad, load_tables, open_target, taken_names
from storage import backup_store as layout
from storage import objects
from storage.aead import SeekableDecryptor, object_associated_data
from storage.keys import KeyWrapper
from storage.s3 import require_bucket
from storage.snapshots import BLOB_OBJECT, object_name, schema_of

PARQUET_BATCH_ROWS = 5000


def verify_snapshot(ctx: S3Context, wrapper: KeyWrapper, tenant_id: str,
                    snapshot_id: str | None = None) -> dict[str, Any]:
    """Decrypt every object of the snapshot and compare sizes and hashes with the manifest."""
    store = ctx.store
    snapshot_id = store.resolve_snapshot(tenant_id, snapshot_id)
    dek = store.data_key(wrapper, tenant_id, create=False)
    manifest = store.read_manifest(dek, tenant_id, snapshot_id)
    prefix = layout.snapshot_prefix(tenant_id, snapshot_id)
    checked = 0
    for table in manifest["tables"]:
        _check_plain(ctx, dek, tenant_id, prefix + table["object"],
                     object_name(snapshot_id, table["object"]),
                     table["plaintext_bytes"], table["plaintext_sha256"])
        checked += 1
    for sha in sorted({d["blob"] for d in manifest["documents"] if d.get("blob")}):
        info = manifest["blobs"].get(sha, {})
        _check_plain(ctx, dek, tenant_id, layout.blob_key(tenant_id, sha), BLOB_OBJECT,
                     info.get("plaintext_bytes"), sha)
        checked += 1
    return {"tenant_id": tenant_id, "snapshot_id": snapshot_id, "objects": checked + 1,
            "tables": len(manifest["tables"]), "documents": len(manifest["documents"]),
            "ok": True}


def _check_plain(ctx: S3Context, dek: bytes, tenant_id: str, key: str, name: str,
                 size: int | None, sha256: str) -> None:
    digest, total = hashlib.sha256(), 0
    for piece in ctx.store.decrypt_object(dek, tenant_id, key, name):
        digest.update(piece)
        total += len(piece)
    if digest.hexdigest() != sha256 or (size is not None and total != size):
        raise VerificationFailed(
            f"{key}: decrypts to {total} bytes sha256 {digest.hexdigest()}, the manifest says "
            f"{size} bytes sha256 {sha256}", tenant_id=tenant_id)


# -- restore ---------------------------------------------------------------------------------


def restore_snapshot(ctx: S3Context, wrapper: KeyWrapper, tenant_id: str, target_url: str,
                     snapshot_id: str | None = None,
                     documents_bucket: str | None = None) -> dict[str, Any]:
    """Rebuild the tenant's tables in ``target_url`` (and documents in a bucket), checked."""
    engine = open_target(target_url, tenant_id)  # a wrong target fails now, not after hours
    try:
        taken = taken_names(engine)
        if documents_bucket:  # must exist before any table is written
            require_bucket(ctx.s3, documents_bucket, "target documents", tenant_id)
        report = verify_snapshot(ctx, wrapper, tenant_id, snapshot_id)  # nothing written if bad
        snapshot_id = report["snapshot_id"]
        dek = ctx.store.data_key(wrapper, tenant_id, create=False)
        manifest = ctx.store.read_manifest(dek, tenant_id, snapshot_id)
        clash = sorted(t["name"] for t in manifest["tables"] if t["name"].casefold() in taken)
        if clash:
            raise BadInput(f"target database already has table(s) or view(s) "
                           f"{', '.join(clash)}; restore into an empty database",
                           tenant_id=tenant_id)
        if documents_bucket:
            _check_document_targets(ctx, tenant_id, manifest, documents_bucket)
        loads = [_table_load(ctx, dek, tenant_id, snapshot_id, t) for t in manifest["tables"]]
        rows = load_tables(engine, manifest["source"], loads, tenant_id)
    finally:
        engine.dispose()
    restored_docs = 0
    if documents_bucket:
        restored_docs = _restore_documents(ctx, dek, tenant_id, manifest, documents_bucket)
    return {**report, "target": describe_url(target_url), "rows": rows,
            "documents_restored": restored_docs}


def _table_load(ctx: S3Context, dek: bytes, tenant_id: str, snapshot_id: str,
                table: dict[str, Any]) -> TableLoad:
    """A table of the manifest as the loader takes it: batches decrypted on demand."""
    key = layout.snapshot_prefix(tenant_id, snapshot_id) + table["object"]

    def batches() -> Iterator[pa.RecordBatch]:
        reader = SeekableDecryptor(
            layout.range_reader(ctx.s3, ctx.store.bucket, key, tenant_id),
            table["ciphertext_bytes"], dek,
            object_associated_data(tenant_id, object_name(snapshot_id, table["object"])))
        yield from pq.ParquetFile(reader).iter_batches(batch_size=PARQUET_BATCH_ROWS)

    return TableLoad(name=table["name"], schema=schema_of(table),
                     primary_key=tuple(table.get("primary_key", [])),
                     expected_rows=table["rows"], batches=batches)


def _check_document_targets(ctx: S3Context, tenant_id: str, manifest: dict[str, Any],
                            bucket: str) -> None:
    """Refuse before writing anything when a document would overwrite an existing object."""
    for doc in manifest["documents"]:
        key = doc.get("storage_key")
        if not doc.get("blob") or not key:
            continue
        if layout.head(ctx.s3, bucket, key, tenant_id) is not None:
            raise BadInput(f"{bucket}/{key} already exists: restore documents into an empty "
                           "bucket (nothing was written)", tenant_id=tenant_id)


def _restore_documents(ctx: S3Context, dek: bytes, tenant_id: str, manifest: dict[str, Any],
                       bucket: str) -> int:
    count = 0
    for doc in manifest["documents"]:
        if not doc.get("blob") or not doc.get("storage_key"):
            continue
        written: list[objects.StoredObject] = []
        with objects.upload(ctx.s3, bucket, doc["storage_key"], tenant_id=tenant_id,
                            written=written) as out:
            for piece in ctx.store.decrypt_object(dek, tenant_id,
                                                  layout.blob_key(tenant_id, doc["blob"]),
                                                  BLOB_OBJECT):
                out.write(piece)
        if written[0].sha256 != doc["blob"]:
            raise VerificationFailed(f"document {doc['document_id']}: restored bytes do not "
                                     "match its blob hash", tenant_id=tenant_id)
        objects.verify(ctx.s3, bucket, written[0], tenant_id)
        count += 1
    return count
