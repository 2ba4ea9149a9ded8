"""Per-tenant backup snapshots, in plain code: sources → Parquet/encryption → S3.

A snapshot is every table of the tenant as encrypted Parquet, read from one consistent database
snapshot, plus its documents stored content-addressed (a blob already backed up is never
uploaded again), described by an encrypted manifest written last. Write order: tables and new
blobs are streamed and read back (ciphertext SHA-256), then the manifest is written and read
back: a snapshot without a manifest is not a snapshot, whatever else its folder holds. The
commit is then recorded in the control database (:mod:`storage.registry`), so a snapshot
deleted later is noticed. The format itself (keys, sealing, manifests) is
:mod:`storage.snapshots`.

A blob is named by a keyed hash of its content (``DataKeys.blob_name``), so a listing of the
bucket reveals neither which known files a tenant holds nor which tenants hold the same one;
the manifest keeps each document's plaintext SHA-256. A blob already in the bucket is reused
only when the previous snapshot's manifest (which is authenticated) lists it; whatever else sits
at a blob's name is overwritten and read back. A blob a format-1 snapshot named by its SHA-256
is copied (server-side, once) to its keyed name when a later snapshot reuses it, so the plain
hashes leave the listing once the old snapshots are pruned.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import IO, Any

from exporters.names import UniqueNames
from exporters.parquet_writer import ParquetTableWriter
from flows.context import RunContext, S3Context
from kernel.errors import BadInput, ControlDbError
from kernel.ids import new_snapshot_id, validate_tenant_id
from sources.documents import confined, iter_documents, open_blob
from sources.tenants import tenant_key
from storage import backup_store as layout
from storage import objects
from storage.datakeys import DataKeys
from storage.key_registry import KeyRegistry
from storage.key_store import KeyStore
from storage.registry import SnapshotRegistry
from storage.snapshots import (
    BLOB_OBJECT,
    FORMAT,
    FORMAT_VERSION,
    object_name,
    schema_b64,
    snapshot_time,
)
from storage.wrapping import KeyWrapper

log = logging.getLogger(__name__)


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
    blobs_renamed: int = 0  # format-1 blobs copied to their keyed name
    bytes_uploaded: int = 0
    seconds: float = 0.0
    data_key: int = 0  # the data key that sealed this snapshot's new objects
    tables: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


# -- backup ----------------------------------------------------------------------------------


def backup_tenant(ctx: RunContext, wrapper: KeyWrapper, tenant_id: str, *,
                  fence: Callable[[], None] | None = None) -> BackupSummary:
    """One verified snapshot of the tenant; only changed documents are uploaded.

    ``fence`` is called just before the manifest is written (the tenant lock's
    :meth:`~flows.locks.HeldLock.check`): a run that lost its lock never commits.
    """
    started = time.monotonic()
    validate_tenant_id(tenant_id)
    bucket = ctx.settings.backup_bucket
    store = ctx.store
    as_stored = ctx.check_tenant(tenant_id)  # an unknown tenant gets no data key, no folder
    if as_stored.id != tenant_id:  # one tenant, one spelling: prefixes, keys, locks use it
        raise BadInput(f"tenant {tenant_id!r} is stored as {as_stored.id!r}: use that id",
                       tenant_id=tenant_id)
    with KeyRegistry(ctx.settings.resolved_control_url()) as registry:
        keys, notes = KeyStore(ctx.s3, bucket).data_keys(wrapper, tenant_id, create=True,
                                                         registry=registry)
    for note in notes:
        log.warning(note)
    complete = store.list_snapshots(tenant_id)
    previous = _previous(ctx, keys, tenant_id, complete)
    snapshot_id = _new_id(complete)
    summary = BackupSummary(tenant_id=tenant_id, snapshot_id=snapshot_id, warnings=notes,
                            data_key=keys.active)
    prefix = layout.snapshot_prefix(tenant_id, snapshot_id)
    tables: list[dict[str, Any]] = []
    documents: list[dict[str, Any]] = []
    blobs: dict[str, dict[str, Any]] = {}
    written: list[objects.StoredObject] = []
    names = UniqueNames()
    # A backup must be restorable to what the platform held: the export's exclusions and
    # skipped tables (secrets that never leave for a client) are backed up, encrypted.
    catalog = ctx.catalog.for_backup()
    with ctx.snapshot() as snap:
        key = tenant_key(ctx.catalog, snap, tenant_id)
        for plan in catalog.dependency_order():
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

            sealed = store.seal(keys, tenant_id, prefix + name, object_name(snapshot_id, name),
                                write)
            written.append(objects.StoredObject(prefix + name, sealed["ciphertext_bytes"],
                                                sealed["ciphertext_sha256"]))
            tables.append({"name": plan.name, "object": name, "rows": rows,
                           "schema": schema_b64(stream.schema),
                           "primary_key": list(plan.primary_key),
                           "not_null": list(plan.not_null),
                           "foreign_keys": [{"columns": list(fk.columns), "parent": fk.parent,
                                             "parent_columns": list(fk.parent_columns),
                                             "origin": fk.origin}
                                            for fk in plan.foreign_keys],
                           **sealed})
            summary.rows += rows
            summary.tables[plan.name] = rows
            summary.bytes_uploaded += sealed["ciphertext_bytes"]
            checkpoint(f"table:{plan.name}")
        refs = confined(iter_documents(snap, ctx.catalog, key), ctx.catalog.config.documents,
                        tenant_id)
        for ref in refs:
            entry = _backup_document(ctx, keys, tenant_id, ref, previous, blobs, written, summary)
            documents.append(entry)
            checkpoint("document")
    checkpoint("before-verify")
    for stored in written:  # read back every object this run wrote
        objects.verify(ctx.s3, bucket, stored, tenant_id)
    _commit(ctx, keys, summary, {
        "format": FORMAT, "version": FORMAT_VERSION, "tenant_id": tenant_id,
        "snapshot_id": snapshot_id, "created_at": datetime.now(UTC).isoformat(),
        "source": ctx.engine.dialect.name, "tables": tables, "documents": documents,
        "blobs": blobs,
    }, fence)
    summary.seconds = time.monotonic() - started
    return summary


def _commit(ctx: RunContext, keys: DataKeys, summary: BackupSummary, manifest: dict[str, Any],
            fence: Callable[[], None] | None) -> None:
    """Write the manifest (the commit marker), then record the commit in the control DB."""
    checkpoint("before-manifest")
    if fence is not None:
        fence()
    sealed = ctx.store.write_manifest(keys, summary.tenant_id, summary.snapshot_id, manifest)
    summary.bytes_uploaded += sealed["ciphertext_bytes"]
    try:
        with SnapshotRegistry(ctx.settings.resolved_control_url()) as registry:
            registry.record_commit(summary.tenant_id, summary.snapshot_id)
    except ControlDbError as err:
        raise ControlDbError(
            f"snapshot {summary.snapshot_id} of tenant {summary.tenant_id!r} is committed and "
            "verified, but could not be recorded in the control database (its deletion would "
            f"go unnoticed until the next backup): {err}", tenant_id=summary.tenant_id) from err
    checkpoint("committed")


@dataclass(frozen=True)
class Previous:
    """What the newest complete snapshot's (authenticated) manifest says: its documents by id,
    with the blob each points to, and every blob it lists."""

    documents: dict[str, dict[str, Any]] = field(default_factory=dict)
    blobs: dict[str, dict[str, Any]] = field(default_factory=dict)


def _new_id(complete: list[str]) -> str:
    """A snapshot id that sorts after every existing one ("newest" is the id order), even for
    two backups started within the same second."""
    snapshot_id = new_snapshot_id()
    if complete and snapshot_id <= complete[-1]:
        snapshot_id = new_snapshot_id(snapshot_time(complete[-1]) + timedelta(seconds=1))
    return snapshot_id


def _previous(ctx: S3Context, keys: DataKeys, tenant_id: str, complete: list[str]
              ) -> Previous:
    if not complete:
        return Previous()
    manifest = ctx.store.read_manifest(keys, tenant_id, complete[-1])
    blobs: dict[str, dict[str, Any]] = manifest.get("blobs", {})
    return Previous({d["document_id"]: {**d, "blob_info": blobs.get(d.get("blob"))}
                     for d in manifest["documents"] if d.get("blob")}, blobs)


def _backup_document(ctx: RunContext, keys: DataKeys, tenant_id: str, ref: Any,
                     previous: Previous, blobs: dict[str, dict[str, Any]],
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
    before = previous.documents.get(ref.document_id)
    if before and before.get("blob_info") and (before.get("storage_key"), before.get("etag"),
                                               before.get("size")) == (
            ref.storage_key, info["etag"], info["size"]):
        sha = before.get("sha256") or before["blob"]  # format 1: the name is the SHA-256
        name = keys.blob_name(tenant_id, sha)
        if name == before["blob"] or name in blobs:  # unchanged: reuse, upload nothing
            blobs.setdefault(name, before["blob_info"])
        else:
            _rename(ctx, keys, tenant_id, before["blob"], name, before["blob_info"], written)
            blobs[name] = before["blob_info"]
            summary.blobs_renamed += 1
        return {**entry, "blob": name, "sha256": sha}
    chunks = open_blob(ctx.s3, docs_bucket, ref.storage_key)
    if chunks is None:  # deleted between HEAD and GET
        summary.documents_missing += 1
        return {**entry, "status": "missing", "blob": None}
    staging = layout.staging_prefix(tenant_id) + uuid.uuid4().hex

    def write(sink: IO[bytes]) -> None:
        for chunk in chunks:
            sink.write(chunk)

    sealed = ctx.store.seal(keys, tenant_id, staging, BLOB_OBJECT, write)
    sha = sealed["plaintext_sha256"]
    name = keys.blob_name(tenant_id, sha)
    summary.bytes_uploaded += sealed["ciphertext_bytes"]
    if name in blobs:  # written (and to be verified) or reused earlier in this run
        pass
    elif name in previous.blobs:  # the previous manifest vouches for the stored blob
        blobs[name] = previous.blobs[name]
    else:  # whatever sits at the blob's name is unknown: overwrite it, read it back later
        target = layout.blob_key(tenant_id, name)
        layout.copy(ctx.s3, bucket, staging, target, tenant_id, sealed["ciphertext_bytes"])
        summary.blobs_uploaded += 1
        written.append(objects.StoredObject(target, sealed["ciphertext_bytes"],
                                            sealed["ciphertext_sha256"]))
        blobs[name] = {"ciphertext_bytes": sealed["ciphertext_bytes"],
                       "ciphertext_sha256": sealed["ciphertext_sha256"],
                       "plaintext_bytes": sealed["plaintext_bytes"]}
    layout.delete(ctx.s3, bucket, staging, tenant_id)
    return {**entry, "blob": name, "sha256": sha}


def _rename(ctx: RunContext, keys: DataKeys, tenant_id: str, old: str, name: str,
            info: dict[str, Any], written: list[objects.StoredObject]) -> None:
    """Copy a format-1 blob (named by its plain SHA-256) to its keyed name. Its bytes are
    unchanged (a format-1 object stays readable); they are checked against the ciphertext hash
    the authenticated manifest recorded, or else decrypted and checked against the new name."""
    bucket, target = ctx.settings.backup_bucket, layout.blob_key(tenant_id, name)
    layout.copy(ctx.s3, bucket, layout.blob_key(tenant_id, old), target, tenant_id,
                info.get("ciphertext_bytes"))
    if info.get("ciphertext_sha256") and info.get("ciphertext_bytes") is not None:
        written.append(objects.StoredObject(target, info["ciphertext_bytes"],
                                            info["ciphertext_sha256"]))
        return
    for _ in ctx.store.decrypt_object(keys, tenant_id, target, BLOB_OBJECT):
        pass
