"""Verify and restore backup snapshots, in plain code: storage → Arrow → target database.

``verify`` reads back and decrypts every object of a snapshot (like ``restic check
--read-data``), after comparing the bucket with the snapshots the control database recorded:
a snapshot recorded as committed but gone from the bucket is reported, and falling back to an
older one than the newest recorded (a rollback) is a warning in the result.

``restore`` verifies first, so a damaged snapshot writes nothing. Then, all or nothing:

1. each document blob is decrypted into a staging object of the target bucket, its SHA-256
   checked *inside* the upload (a mismatch aborts it: nothing becomes visible);
2. the tables are created and loaded in one transaction, row counts checked;
3. only then, still inside the transaction, the staged documents are copied to their
   ``storage_key`` and read back; then the transaction commits and the staging is deleted.

A failure at any step rolls the transaction back (a SQLite file the restore created is
removed), deletes the staged and any published documents, and leaves the target as it was.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from flows.context import S3Context
from kernel.dburl import describe_url
from kernel.errors import BadInput, ControlDbError, ExportError, VerificationFailed
from sources.loader import TableLoad, load_tables, open_target, taken_names
from storage import backup_store as layout
from storage import objects
from storage.aead import SeekableDecryptor, object_associated_data
from storage.keys import KeyWrapper
from storage.registry import SnapshotRegistry
from storage.s3 import require_bucket
from storage.snapshots import BLOB_OBJECT, object_name, schema_of

PARQUET_BATCH_ROWS = 5000
RESTORE_STAGING = "tenant-export-restore-staging/"  # in the target documents bucket
log = logging.getLogger(__name__)


def resolve(ctx: S3Context, tenant_id: str, snapshot_id: str | None
            ) -> tuple[str, dict[str, Any]]:
    """The snapshot to read, and what the control database says about the bucket's state:
    ``{"expected_newest", "missing_snapshots", "warnings"}``."""
    complete = ctx.store.list_snapshots(tenant_id)
    state: dict[str, Any] = {"expected_newest": None, "missing_snapshots": [], "warnings": []}
    try:
        with SnapshotRegistry(ctx.settings.resolved_control_url()) as registry:
            expected = registry.expected(tenant_id)
    except ControlDbError as err:  # a restore must not depend on the control database
        state["warnings"].append(f"cannot check the bucket against the snapshot registry: {err}")
        return ctx.store.resolve_snapshot(tenant_id, snapshot_id, complete), state
    missing = [e for e in expected if e.snapshot_id not in complete]
    state["missing_snapshots"] = [e.snapshot_id for e in missing]
    if expected:
        state["expected_newest"] = expected[-1].snapshot_id
    gone = {e.snapshot_id: e for e in missing}
    if snapshot_id in gone or (snapshot_id is None and not complete and missing):
        lost = gone.get(snapshot_id or "") or missing[-1]
        raise VerificationFailed(
            f"snapshot {lost.snapshot_id} of tenant {tenant_id!r}, committed at "
            f"{lost.committed_at} according to the control database, is missing from bucket "
            f"{ctx.store.bucket!r}: it was deleted (or this is not the bucket it was written "
            "to)", tenant_id=tenant_id)
    chosen = ctx.store.resolve_snapshot(tenant_id, snapshot_id, complete)
    if missing:
        newest = expected[-1]
        rolled_back = (snapshot_id is None and newest.snapshot_id in gone
                       and chosen < newest.snapshot_id)
        if rolled_back:
            state["warnings"].append(
                f"rollback: the newest snapshot of tenant {tenant_id!r}, {newest.snapshot_id} "
                f"(committed at {newest.committed_at}), is missing from the bucket; using the "
                f"older {chosen}")
        others = [m for m in state["missing_snapshots"]
                  if not (rolled_back and m == newest.snapshot_id)]
        if others:
            state["warnings"].append(
                f"{len(others)} snapshot(s) of tenant {tenant_id!r} recorded as committed are "
                f"missing from the bucket: {', '.join(others)}")
    return chosen, state


def verify_snapshot(ctx: S3Context, wrapper: KeyWrapper, tenant_id: str,
                    snapshot_id: str | None = None) -> dict[str, Any]:
    """Decrypt every object of the snapshot and compare sizes and hashes with the manifest."""
    store = ctx.store
    snapshot_id, state = resolve(ctx, tenant_id, snapshot_id)
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
            "ok": True, **state}


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
    """Rebuild the tenant's tables in ``target_url`` (and documents in a bucket), checked;
    on any failure the target is left as it was."""
    engine = open_target(target_url, tenant_id)  # a wrong target fails now, not after hours
    documents: _Documents | None = None
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
            documents = _Documents(ctx, dek, tenant_id, manifest, documents_bucket)
            documents.check_targets()
            documents.stage()
        loads = [_table_load(ctx, dek, tenant_id, snapshot_id, t) for t in manifest["tables"]]
        rows = load_tables(engine, manifest["source"], loads, tenant_id,
                           before_commit=documents.publish if documents else None)
    except BaseException as failure:
        if documents is not None:
            documents.discard(failure)
        raise
    finally:
        engine.dispose()
    warnings = list(report["warnings"]) + (documents.finish() if documents else [])
    return {**report, "target": describe_url(target_url), "rows": rows,
            "documents_restored": documents.restored if documents else 0, "warnings": warnings}


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


class _Documents:
    """The documents of one restore: staged and checked, published last, removed on failure."""

    def __init__(self, ctx: S3Context, dek: bytes, tenant_id: str, manifest: dict[str, Any],
                 bucket: str) -> None:
        self.ctx, self.dek, self.tenant_id, self.bucket = ctx, dek, tenant_id, bucket
        self.blobs: dict[str, dict[str, Any]] = manifest.get("blobs", {})
        self.staging = f"{RESTORE_STAGING}{tenant_id}/{uuid.uuid4().hex}/"
        self.docs = [d for d in manifest["documents"] if d.get("blob") and d.get("storage_key")]
        self.targets: dict[str, str] = {}  # storage_key -> blob
        for doc in self.docs:
            if self.targets.setdefault(doc["storage_key"], doc["blob"]) != doc["blob"]:
                raise VerificationFailed(f"the manifest gives document key "
                                         f"{doc['storage_key']!r} two different blobs",
                                         tenant_id=tenant_id)
        self.staged: dict[str, objects.StoredObject] = {}
        self.published: list[str] = []
        self.restored = 0

    def check_targets(self) -> None:
        """Refuse before writing anything when a document would overwrite an existing object."""
        for key in self.targets:
            if layout.head(self.ctx.s3, self.bucket, key, self.tenant_id) is not None:
                raise BadInput(f"{self.bucket}/{key} already exists: restore documents into an "
                               "empty bucket (nothing was written)", tenant_id=self.tenant_id)

    def stage(self) -> None:
        """Decrypt each blob into a staging object; its hash is checked before the upload
        completes, so a blob swapped since ``verify`` never becomes an object."""
        for doc in self.docs:
            sha = doc["blob"]
            if sha in self.staged:
                continue
            key = self.staging + sha
            size = self.blobs.get(sha, {}).get("plaintext_bytes")
            with objects.upload(self.ctx.s3, self.bucket, key, tenant_id=self.tenant_id) as out:
                for piece in self.ctx.store.decrypt_object(
                        self.dek, self.tenant_id, layout.blob_key(self.tenant_id, sha),
                        BLOB_OBJECT):
                    out.write(piece)
                if out.sha256 != sha or (size is not None and out.bytes != size):
                    raise VerificationFailed(
                        f"document {doc['document_id']} ({doc['storage_key']!r}): blob {sha} "
                        f"decrypts to {out.bytes} bytes sha256 {out.sha256}, the manifest says "
                        f"{size} bytes sha256 {sha}; nothing was restored",
                        tenant_id=self.tenant_id)
            self.staged[sha] = objects.StoredObject(key, out.bytes, out.sha256)

    def publish(self) -> None:
        """Copy every staged document to its key and read it back (the tables are loaded and
        counted, not yet committed)."""
        for key, sha in self.targets.items():
            staged = self.staged[sha]
            self.published.append(key)  # before the copy: a failed copy may leave an object
            layout.copy(self.ctx.s3, self.bucket, staged.key, key, self.tenant_id, staged.bytes)
            objects.verify(self.ctx.s3, self.bucket,
                           objects.StoredObject(key, staged.bytes, staged.sha256),
                           self.tenant_id)
        self.restored = len(self.docs)

    def discard(self, failure: BaseException) -> None:
        """Remove staged and published documents; a cleanup failure is noted, never hides
        ``failure``."""
        try:
            for key in self.published:
                layout.delete(self.ctx.s3, self.bucket, key, self.tenant_id)
            objects.abort_uploads(self.ctx.s3, self.bucket, self.staging, self.tenant_id)
            objects.delete_prefix(self.ctx.s3, self.bucket, self.staging, self.tenant_id)
        except ExportError as err:
            note = (f"cleaning up the failed restore left objects in {self.bucket!r} "
                    f"(under {self.staging!r} or at published keys): {err}")
            log.error(note)
            failure.add_note(note)

    def finish(self) -> list[str]:
        """Delete the staging objects of a committed restore; warnings if that failed."""
        try:
            objects.delete_prefix(self.ctx.s3, self.bucket, self.staging, self.tenant_id)
        except ExportError as err:
            return [f"the restore is complete, but its staging objects under {self.bucket}/"
                    f"{self.staging} could not be deleted: {err}"]
        return []
