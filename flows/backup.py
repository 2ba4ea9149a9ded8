"""Per-tenant backup snapshots, in plain code: sources → Parquet/encryption → S3.

A snapshot is every table of the tenant as content-addressed chunks of encrypted Parquet
(:mod:`flows.backup_tables`: rows already stored are not uploaded again), read from one
consistent database snapshot, plus its documents stored content-addressed (a blob already
backed up is never uploaded again), listed in a sealed document index, the chunks in a table
index (format 7), and described by an encrypted manifest written last. Write order: new
chunks, new blobs and the indexes are
written and read back (ciphertext SHA-256), then the manifest is written and read back: a
snapshot without a manifest is not a snapshot, whatever else its folder holds. The commit is
then recorded in the control database (:mod:`storage.registry`), so a snapshot deleted later
is noticed. The format itself (keys, sealing, manifests) is :mod:`storage.snapshots`.

The database snapshot ends before any document is fetched: the tables stream out inside it, the
document rows are spooled to a temporary file (:mod:`flows.backup_scratch`), and the snapshot
is closed; then :mod:`flows.backup_documents` learns from a listing of the documents bucket
which documents changed and stores those concurrently. A blob is named by a keyed hash of its
content (``DataKeys.blob_name``) and reused only when the previous snapshot's authenticated
index lists it; whatever else sits at a blob's name is overwritten and read back.
"""

from __future__ import annotations

import hashlib
import io
import logging
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from flows.backup_documents import Documents
from flows.backup_packs import Packer
from flows.backup_scratch import Scratch
from flows.backup_tables import UPLOADS_IN_FLIGHT, TableChunks, index_pieces, line_pieces
from flows.context import RunContext
from kernel.errors import BadInput, ControlDbError, StorageError, VerificationFailed
from kernel.ids import new_snapshot_id, validate_tenant_id
from sources.database import Snapshot
from sources.documents import confined, iter_documents
from sources.tenants import tenant_key
from storage.datakeys import DataKeys
from storage.doc_index import IndexWriter
from storage.key_registry import KeyRegistry
from storage.key_store import KeyStore
from storage.registry import SnapshotRegistry
from storage.snapshots import FORMAT, FORMAT_VERSION, schema_b64, snapshot_time
from storage.table_index import encode as encode_table_line
from storage.wrapping import KeyWrapper

log = logging.getLogger(__name__)
INDEX_ZLIB_LEVEL = 6  # fixed: the same lines must give the same chunk, hence the same blob


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
    documents_survey: str = ""  # "listing" (one request per 1,000) or "head" (one each)
    packs_uploaded: int = 0  # packs of small blobs written (format 5)
    packs_retired: int = 0  # earlier packs used in part whose blobs in use were packed again
    table_packs_uploaded: int = 0  # packs of table chunks written
    table_packs_retired: int = 0
    tables: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


# -- backup ----------------------------------------------------------------------------------


def backup_tenant(ctx: RunContext, wrapper: KeyWrapper, tenant_id: str, *,
                  fence: Callable[[], None] | None = None) -> BackupSummary:
    """One verified snapshot of the tenant; only changed documents are read and uploaded.

    ``fence`` is called just before the manifest is written (the tenant lock's
    :meth:`~flows.locks.HeldLock.check`): a run that lost its lock never commits.
    """
    started = time.monotonic()
    validate_tenant_id(tenant_id)
    store = ctx.store
    as_stored = ctx.check_tenant(tenant_id)  # an unknown tenant gets no data key, no folder
    if as_stored.id != tenant_id:  # one tenant, one spelling: prefixes, keys, locks use it
        raise BadInput(f"tenant {tenant_id!r} is stored as {as_stored.id!r}: use that id",
                       tenant_id=tenant_id)
    with KeyRegistry(ctx.settings.resolved_control_url()) as registry:
        keys, notes = KeyStore(ctx.s3, ctx.settings.backup_bucket).data_keys(
            wrapper, tenant_id, create=True, registry=registry)
    for note in notes:
        log.warning(note)
    complete = store.list_snapshots(tenant_id)
    snapshot_id = _new_id(complete)
    summary = BackupSummary(tenant_id=tenant_id, snapshot_id=snapshot_id, warnings=notes,
                            data_key=keys.active)
    chunks = TableChunks(store, keys, tenant_id)
    at = lambda name: checkpoint(name)  # noqa: E731, PLW0108 - late-bound, tests replace it
    chunks.packer = Packer(ctx.s3, ctx.settings.backup_bucket, tenant_id, snapshot_id,
                           chunks.record, at, series="t")
    with chunks.known, Scratch() as scratch:
        if complete:  # what the previous snapshot stored: documents, blobs, table chunks
            _remember(store.read_manifest(keys, tenant_id, complete[-1]), chunks, scratch,
                      summary)
        with ctx.snapshot() as snap:  # one snapshot: the tables, then the document rows
            key = tenant_key(ctx.catalog, snap, tenant_id)
            tables = _write_tables(ctx, chunks, snap, key, summary)
            scratch.add_rows(confined(iter_documents(snap, ctx.catalog, key),
                                      ctx.catalog.config.documents, tenant_id))
        counts = Documents(ctx, keys, tenant_id, snapshot_id, scratch, at).run()
        summary.documents, summary.documents_missing = counts.documents, counts.missing
        summary.blobs_uploaded, summary.blobs_renamed = counts.uploaded, counts.renamed
        summary.bytes_uploaded += counts.bytes
        summary.documents_survey = "listing" if counts.listed else "head"
        summary.packs_uploaded, summary.packs_retired = counts.packs, counts.packs_retired
        with ThreadPoolExecutor(UPLOADS_IN_FLIGHT, thread_name_prefix="backup-index") as pool:
            index = _write_index(chunks, pool, scratch)  # every chunk placed once it returns
            packs = chunks.packer.packs
            chunks.packer = Packer(ctx.s3, ctx.settings.backup_bucket, tenant_id, snapshot_id,
                                   chunks.record, at, series="x")
            table_index = _write_table_index(chunks, pool, tables)
        summary.table_packs_uploaded = packs + chunks.packer.packs
        summary.table_packs_retired = chunks.packs_retired
        summary.warnings.extend(chunks.warnings)
        checkpoint("before-verify")  # every chunk and blob written is read back already
    summary.bytes_uploaded += index.pop("uploaded_bytes") + table_index.pop("uploaded_bytes")
    _commit(ctx, keys, summary, {
        "format": FORMAT, "version": FORMAT_VERSION, "tenant_id": tenant_id,
        "snapshot_id": snapshot_id, "created_at": datetime.now(UTC).isoformat(),
        "source": ctx.engine.dialect.name, "tables": tables, "table_index": table_index,
        "documents": index,
    }, fence)
    summary.seconds = time.monotonic() - started
    return summary


def _remember(previous: dict[str, Any], chunks: TableChunks, scratch: Scratch,
              summary: BackupSummary) -> None:
    """What the previous snapshot stored, from its indexes. An index that fails its checks (a
    damaged pack, say) must not stop every later backup: this night then reuses nothing,
    stores everything again, and says so."""
    try:
        chunks.remember(previous)
        scratch.add_previous(chunks.store.documents(chunks.keys, chunks.tenant_id, previous))
    except (VerificationFailed, StorageError) as err:
        chunks.known.forget()  # claims made before the failure came from an unchecked index
        scratch.forget_previous()
        note = (f"the previous snapshot {previous['snapshot_id']} could not be read to reuse "
                f"what it stored ({err}); this snapshot stores every chunk and document again: "
                "run `tenant-export verify` on it and see the restore runbook")
        log.warning(note)
        summary.warnings.append(note)


def _write_tables(ctx: RunContext, chunks: TableChunks, snap: Snapshot, key: object,
                  summary: BackupSummary) -> list[dict[str, Any]]:
    """Every table of the tenant, in dependency order, as content-addressed chunks of sealed
    Parquet (:mod:`flows.backup_tables`): the manifest's entries."""
    tables: list[dict[str, Any]] = []
    # A backup must be restorable to what the platform held: the export's exclusions and
    # skipped tables (secrets that never leave for a client) are backed up, encrypted.
    with ThreadPoolExecutor(UPLOADS_IN_FLIGHT, thread_name_prefix="backup-chunk") as pool:
        for plan in ctx.catalog.for_backup().dependency_order():
            stream = snap.read_table(plan, key, schema=ctx.catalog.config.db_schema)
            before = chunks.uploaded_bytes
            rows, count, size = chunks.store_table(pool, stream.batches, stream.schema,
                                                   plan.primary_key, plan.name)
            tables.append({"name": plan.name, "rows": rows,
                           "schema": schema_b64(stream.schema),
                           "primary_key": list(plan.primary_key),
                           "not_null": list(plan.not_null),
                           "foreign_keys": [{"columns": list(fk.columns), "parent": fk.parent,
                                             "parent_columns": list(fk.parent_columns),
                                             "origin": fk.origin}
                                            for fk in plan.foreign_keys],
                           "chunk_count": count, "plaintext_bytes": size,
                           "uploaded_bytes": chunks.uploaded_bytes - before})
            summary.rows += rows
            summary.tables[plan.name] = rows
            checkpoint(f"table:{plan.name}")
        if chunks.packer is not None:  # the tables' last pack goes now: the documents'
            chunks.packer.close()  # transfers must not hold it (the index fills a new one)
    summary.bytes_uploaded += chunks.uploaded_bytes
    return tables


def _write_index(chunks: TableChunks, pool: ThreadPoolExecutor, scratch: Scratch
                 ) -> dict[str, Any]:
    """The document index as chunks of lines, stored like table chunks (an unchanged chunk
    costs nothing; format 6: packed like them), then the packs rewritten and the last one
    sent: the manifest's record of the index."""
    sink = io.BytesIO()
    writer = IndexWriter(sink)
    before = chunks.uploaded_bytes
    record = _stored_index(chunks, pool, index_pieces(scratch.entries(), writer, sink))
    chunks.finish(pool)  # the last pack sent, every chunk's place filled in
    return {**record, "count": writer.count, "missing": writer.missing,
            "blobs": scratch.blob_count(),
            "ciphertext_bytes": sum(c["ciphertext_bytes"] for c in record["chunks"]),
            "uploaded_bytes": chunks.uploaded_bytes - before}


def _write_table_index(chunks: TableChunks, pool: ThreadPoolExecutor,
                       tables: list[dict[str, Any]]) -> dict[str, Any]:
    """Every table chunk's entry, places included, as the table index (format 7): lines
    streamed from the backup's temporary database into chunks stored like the document
    index's, in packs of their own series; each table's sealed size added up on the way."""
    sealed = dict.fromkeys((t["name"] for t in tables), 0)
    count, before = 0, chunks.uploaded_bytes

    def lines() -> Iterator[tuple[bytes, str]]:
        nonlocal count
        for table, entry in chunks.known.entries():
            sealed[table] += entry["ciphertext_bytes"]
            count += 1
            yield encode_table_line(table, entry), entry["blob"]

    record = _stored_index(chunks, pool, line_pieces(lines()))
    chunks.finish(pool)
    for table in tables:  # what the packs' sealed bytes add up to, now that they are known
        table["ciphertext_bytes"] = sealed[table["name"]]
    return {**record, "count": count,
            "ciphertext_bytes": sum(c["ciphertext_bytes"] for c in record["chunks"]),
            "uploaded_bytes": chunks.uploaded_bytes - before}


def _stored_index(chunks: TableChunks, pool: ThreadPoolExecutor,
                  pieces: Iterable[tuple[bytes, int]]) -> dict[str, Any]:
    """Index chunks compressed and stored; their entries (complete after ``chunks.finish``),
    with the size and SHA-256 of the index's plaintext."""
    digest, size = hashlib.sha256(), 0

    def hashed() -> Iterator[tuple[bytes, int]]:
        nonlocal size
        for data, lines in pieces:
            digest.update(data)
            size += len(data)
            # lines are mostly hex digests and repeated keys: zlib halves what a night writes
            yield zlib.compress(data, INDEX_ZLIB_LEVEL), lines

    stored = chunks.store_index(pool, hashed())
    return {"chunks": stored, "plaintext_bytes": size, "plaintext_sha256": digest.hexdigest()}


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


def _new_id(complete: list[str]) -> str:
    """A snapshot id that sorts after every existing one ("newest" is the id order), even for
    two backups started within the same second."""
    snapshot_id = new_snapshot_id()
    if complete and snapshot_id <= complete[-1]:
        snapshot_id = new_snapshot_id(snapshot_time(complete[-1]) + timedelta(seconds=1))
    return snapshot_id
