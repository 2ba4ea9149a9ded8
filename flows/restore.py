"""Restore backup snapshots, in plain code: storage → Arrow → target database.

A restore verifies first (:mod:`flows.verify`), so a damaged snapshot writes nothing. Three modes
(``docs/restore-runbook.md``): into an empty database, tables recreated (:mod:`sources.ddl`);
``data_only``, into the platform's own schema (:mod:`sources.existing`); and in place, one
tenant of the live platform put back to the snapshot (:mod:`sources.inplace`). Then, all or
nothing:

1. each document blob to write is decrypted into a staging object of the target bucket, its
   SHA-256 checked *inside* the upload (a mismatch aborts it: nothing becomes visible);
2. the tables are written in one transaction, row counts checked;
3. only then, still inside the transaction, the staged documents are copied to their
   ``storage_key`` (an object they replace is first copied aside) and read back; then the
   transaction commits and the staging is deleted.

A failure at any step rolls the transaction back (a SQLite file the restore created is
removed), puts back or deletes what was published, and leaves the target as it was.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from flows.context import RunContext, S3Context
from flows.verify import verify_snapshot
from kernel.dburl import describe_url
from kernel.errors import BadInput, ExportError, VerificationFailed
from sources.catalog_config import CatalogConfig
from sources.ddl import create_and_load
from sources.documents import inside, key_prefix, shared_keys
from sources.existing import load_existing
from sources.inplace import replace_tenant
from sources.loader import TableLoad, open_target, taken_names
from sources.tables import ForeignKey
from storage import backup_store as layout
from storage import objects
from storage.aead import Keys, SeekableDecryptor, object_associated_data
from storage.keys import KeyWrapper
from storage.s3 import require_bucket
from storage.snapshots import object_name, schema_of
from storage.table_index import TableChunkIndex

PARQUET_BATCH_ROWS = 5000
RESTORE_STAGING = "tenant-export-restore-staging/"  # in the target documents bucket
log = logging.getLogger(__name__)


# -- restore ---------------------------------------------------------------------------------


def restore_snapshot(ctx: S3Context, wrapper: KeyWrapper, tenant_id: str, target_url: str,
                     snapshot_id: str | None = None, documents_bucket: str | None = None, *,
                     data_only: bool = False) -> dict[str, Any]:
    """Rebuild the tenant's tables in ``target_url`` (and documents in a bucket), checked; on
    any failure the target is left as it was.

    The target is an empty database, or with ``data_only`` one whose schema the platform's
    migrations created and which holds none of the tenant's rows.
    """
    engine = open_target(target_url, tenant_id)  # a wrong target fails now, not after hours
    documents: _Documents | None = None
    closing = ExitStack()
    try:
        taken = set() if data_only else taken_names(engine)
        if documents_bucket:  # must exist before any table is written
            require_bucket(ctx.s3, documents_bucket, "target documents", tenant_id)
        report = verify_snapshot(ctx, wrapper, tenant_id, snapshot_id)  # nothing written if bad
        snapshot_id = report["snapshot_id"]
        dek = ctx.store.data_key(wrapper, tenant_id, create=False)
        manifest = ctx.store.read_manifest(dek, tenant_id, snapshot_id)
        # read and checked again before anything is staged: the index may have changed since
        chunks = closing.enter_context(ctx.store.table_index(dek, tenant_id, manifest))
        clash = sorted(t["name"] for t in manifest["tables"] if t["name"].casefold() in taken)
        if clash:
            raise BadInput(f"target database already has table(s) or view(s) "
                           f"{', '.join(clash)}; restore into an empty database",
                           tenant_id=tenant_id)
        if documents_bucket:
            documents = _Documents(ctx, dek, tenant_id,
                                   ctx.store.documents(dek, tenant_id, manifest),
                                   documents_bucket)
            documents.check_targets()
            documents.stage()
        loads = [_table_load(ctx, dek, tenant_id, snapshot_id, t, chunks)
                 for t in manifest["tables"]]
        publish = documents.publish if documents else None
        if data_only:
            loaded = load_existing(engine, loads, tenant_id, before_commit=publish,
                                   owner_columns=_owner_columns(ctx, loads))
            outcome: dict[str, Any] = {"rows": loaded.rows,
                                       "sequences_advanced": loaded.sequences}
            notes = loaded.warnings
        else:
            recreated = create_and_load(engine, manifest["source"], loads, tenant_id,
                                        before_commit=publish)
            outcome, notes = recreated.as_result(), recreated.warnings
    except BaseException as failure:
        if documents is not None:
            documents.discard(failure)
        raise
    finally:
        closing.close()
        engine.dispose()
    warnings = [*report["warnings"], *notes, *(documents.finish() if documents else [])]
    return {**report, "mode": "data-only" if data_only else "new",
            "target": describe_url(target_url), **outcome,
            "documents_restored": documents.restored if documents else 0, "warnings": warnings}


def restore_in_place(ctx: RunContext, wrapper: KeyWrapper, tenant_id: str,
                     snapshot_id: str | None = None, *,
                     fence: Callable[[], None] | None = None) -> dict[str, Any]:
    """Put one tenant of the live platform back to a snapshot: its rows replaced (rows created
    after the snapshot are removed), its documents rewritten where missing or different.

    The caller holds the tenant lock; ``fence`` (its check) runs just before the commit.
    """
    tenant = ctx.check_tenant(tenant_id)
    if tenant.id != tenant_id:  # one tenant, one spelling: the lock is taken on the stored id
        raise BadInput(f"tenant {tenant_id!r} is stored as {tenant.id!r}: use that id",
                       tenant_id=tenant_id)
    bucket = ctx.settings.documents_bucket
    require_bucket(ctx.s3, bucket, "documents", tenant_id)
    report = verify_snapshot(ctx, wrapper, tenant_id, snapshot_id)  # nothing written if bad
    snapshot_id = report["snapshot_id"]
    dek = ctx.store.data_key(wrapper, tenant_id, create=False)
    manifest = ctx.store.read_manifest(dek, tenant_id, snapshot_id)
    documents = _Documents(ctx, dek, tenant_id, ctx.store.documents(dek, tenant_id, manifest),
                           bucket, replacing=True)
    rule = ctx.catalog.config.documents

    def before_commit() -> None:
        if fence is not None:
            fence()
        documents.publish()

    closing = ExitStack()
    try:  # the table index read and checked again before anything is staged
        chunks = closing.enter_context(ctx.store.table_index(dek, tenant_id, manifest))
        skipped = documents.confine(ctx)
        documents.select_changed()
        documents.stage()
        loads = [_table_load(ctx, dek, tenant_id, snapshot_id, t, chunks)
                 for t in manifest["tables"]]
        replaced = replace_tenant(ctx.engine, ctx.catalog, tenant, loads,
                                  collect=(rule.table, rule.key_column),
                                  before_commit=before_commit)
    except BaseException as failure:
        documents.discard(failure)
        raise
    finally:
        closing.close()
    left = sorted({str(k) for k in replaced.collected if k} - set(documents.targets))
    warnings = [*report["warnings"], *skipped, *replaced.warnings, *documents.finish()]
    if left:
        warnings.append(f"{len(left)} document object(s) of rows created after the snapshot "
                        f"are left in bucket {bucket!r} (see documents_left): delete them once "
                        "nobody needs them")
    return {**report, "mode": "in-place", "target": describe_url(ctx.engine.url),
            "rows": replaced.tables, **{f"rows_{what}": replaced.total(what) for what in (
                "deleted", "updated", "inserted", "unchanged")},
            "documents_rewritten": len(documents.chosen),
            "documents_unchanged": len(documents.targets) - len(documents.chosen),
            "documents_left": left, "sequences_advanced": replaced.sequences,
            "warnings": warnings}


def _owner_columns(ctx: S3Context, loads: list[TableLoad]) -> dict[str, str]:
    """The column naming the tenant in each table (the tenants table: its id), by the catalog."""
    config = CatalogConfig.load(ctx.settings.catalog)
    owners = {t.name: config.tenant_column for t in loads if config.tenant_column in t.columns}
    owners[config.tenants_table] = config.tenants_id_column
    return owners


def _table_load(ctx: S3Context, dek: Keys, tenant_id: str, snapshot_id: str,
                table: dict[str, Any], chunks: TableChunkIndex) -> TableLoad:
    """A table of the manifest as the loader takes it: batches decrypted on demand."""

    def chunked() -> Iterator[pa.RecordBatch]:
        for chunk in chunks.chunks(table["name"]):  # each read whole (a few MB at most) and
            data = _read_chunk(ctx, dek, tenant_id, chunk)  # checked again
            yield from pq.ParquetFile(pa.BufferReader(data)).iter_batches(
                batch_size=PARQUET_BATCH_ROWS)

    def batches() -> Iterator[pa.RecordBatch]:
        if "object" not in table:  # format 4 on: content-addressed chunks
            yield from chunked()
            return
        key = layout.snapshot_prefix(tenant_id, snapshot_id) + table["object"]
        reader = SeekableDecryptor(
            layout.range_reader(ctx.s3, ctx.store.bucket, key, tenant_id),
            table["ciphertext_bytes"], dek,
            object_associated_data(tenant_id, object_name(snapshot_id, table["object"])))
        yield from pq.ParquetFile(reader).iter_batches(batch_size=PARQUET_BATCH_ROWS)

    return TableLoad(name=table["name"], schema=schema_of(table),
                     primary_key=tuple(table.get("primary_key", [])),
                     expected_rows=table["rows"], batches=batches,
                     not_null=tuple(table.get("not_null", [])),
                     foreign_keys=tuple(
                         ForeignKey(tuple(fk["columns"]), fk["parent"],
                                    tuple(fk["parent_columns"]), fk.get("origin", "database"))
                         for fk in table.get("foreign_keys", [])),
                     db_schema=table.get("db_schema"))


def _read_chunk(ctx: S3Context, dek: Keys, tenant_id: str, chunk: dict[str, Any]) -> bytes:
    """A table chunk's Parquet bytes, checked against the manifest (it was verified before the
    restore began; a blob swapped since then is caught here, before its rows are loaded)."""
    key = layout.blob_key(tenant_id, chunk.get("pack") or chunk["blob"])
    data = b"".join(ctx.store.blob_plaintext(dek, tenant_id, chunk))
    sha = hashlib.sha256(data).hexdigest()
    if sha != chunk["plaintext_sha256"] or len(data) != chunk["plaintext_bytes"]:
        raise VerificationFailed(f"{key}: decrypts to {len(data)} bytes sha256 {sha}, the "
                                 f"manifest says {chunk['plaintext_bytes']} bytes sha256 "
                                 f"{chunk['plaintext_sha256']}", tenant_id=tenant_id)
    return data


class _Documents:
    """The documents of one restore: staged and checked, published last (an object replaced is
    copied aside first), undone on failure."""

    def __init__(self, ctx: S3Context, dek: Keys, tenant_id: str,
                 entries: Iterable[dict[str, Any]], bucket: str, *,
                 replacing: bool = False) -> None:
        self.ctx, self.dek, self.tenant_id, self.bucket = ctx, dek, tenant_id, bucket
        self.replacing = replacing
        self.staging = f"{RESTORE_STAGING}{tenant_id}/{uuid.uuid4().hex}/"
        self.docs = [d for d in entries if d.get("blob") and d.get("storage_key")]
        self.hashes = {d["blob"]: d.get("sha256") or d["blob"] for d in self.docs}
        self.sizes = {d["blob"]: d.get("plaintext_bytes") for d in self.docs}
        self.targets: dict[str, dict[str, Any]] = {}  # storage_key -> its (first) document
        for doc in self.docs:
            if self.targets.setdefault(doc["storage_key"], doc)["blob"] != doc["blob"]:
                raise VerificationFailed(f"the manifest gives document key "
                                         f"{doc['storage_key']!r} two different blobs",
                                         tenant_id=tenant_id)
        self.chosen: list[str] = list(self.targets)  # the keys to write
        self.staged: dict[str, objects.StoredObject] = {}  # blob -> staged object
        self.aside: dict[str, tuple[str, int]] = {}  # key -> (copy of what it held, size)
        self.published: list[str] = []
        self.restored = 0

    def check_targets(self) -> None:
        """Refuse before writing anything when a document would overwrite an existing object."""
        for key in self.targets:
            if layout.head(self.ctx.s3, self.bucket, key, self.tenant_id) is not None:
                raise BadInput(f"{self.bucket}/{key} already exists: restore documents into an "
                               "empty bucket (nothing was written)", tenant_id=self.tenant_id)

    def confine(self, ctx: RunContext) -> list[str]:
        """In the live bucket only the tenant's own objects are written: a key outside its
        prefix is refused, and (keys not tenant-scoped) a key that rows of others also use is
        left alone; warnings for those."""
        rule = ctx.catalog.config.documents
        prefix = key_prefix(rule, self.tenant_id)
        outside = [k for k in self.targets if prefix is not None and not inside(k, prefix)]
        if outside:
            raise BadInput(f"the snapshot's document keys {', '.join(outside[:5])} lie outside "
                           f"the tenant's prefix {prefix!r}: refusing to write them (nothing "
                           "was changed)", tenant_id=self.tenant_id)
        if prefix is not None:
            return []
        with ctx.snapshot() as snap:
            shared = {r.storage_key for r in shared_keys(snap, ctx.catalog,
                                                         ctx.check_tenant(self.tenant_id).key)}
        kept = sorted(k for k in self.targets if k in shared)
        self.targets = {k: d for k, d in self.targets.items() if k not in shared}
        return [f"document {k!r} is also used by rows that are not tenant {self.tenant_id!r}'s: "
                "left as it is" for k in kept]

    def select_changed(self) -> None:
        """Keep only keys whose object is missing or differs (size, then SHA-256; an object
        with the ETag it had at backup time is the one backed up)."""
        self.chosen = []
        for key, doc in self.targets.items():
            size = self.sizes[doc["blob"]]
            info = layout.head(self.ctx.s3, self.bucket, key, self.tenant_id)
            if info is None or size is None or info["size"] != size:
                self.chosen.append(key)
            elif not (doc.get("etag") and info["etag"] == doc["etag"]):
                digest = hashlib.sha256()
                for piece in layout.chunks(self.ctx.s3, self.bucket, key, self.tenant_id):
                    digest.update(piece)
                if digest.hexdigest() != self.hashes[doc["blob"]]:
                    self.chosen.append(key)

    def stage(self) -> None:
        """Decrypt each blob to write into a staging object; its hash is checked before the
        upload completes, so a blob swapped since ``verify`` never becomes an object."""
        for key in self.chosen:
            doc = self.targets[key]
            blob, sha = doc["blob"], self.hashes[doc["blob"]]
            if blob in self.staged:
                continue
            staged = f"{self.staging}blob-{len(self.staged):06d}"
            size = self.sizes[blob]
            what = f"document {doc['document_id']} ({key!r})"
            with objects.upload(self.ctx.s3, self.bucket, staged,
                                tenant_id=self.tenant_id) as out:
                try:
                    for piece in self.ctx.store.blob_plaintext(self.dek, self.tenant_id, doc):
                        out.write(piece)
                except VerificationFailed as err:
                    raise VerificationFailed(f"{what}: {err}; nothing was restored",
                                             tenant_id=self.tenant_id) from err
                if out.sha256 != sha or (size is not None and out.bytes != size):
                    raise VerificationFailed(
                        f"{what}: blob {blob} decrypts to {out.bytes} bytes sha256 "
                        f"{out.sha256}, the manifest says {size} bytes sha256 {sha}; nothing "
                        "was restored", tenant_id=self.tenant_id)
            self.staged[blob] = objects.StoredObject(staged, out.bytes, out.sha256)

    def publish(self) -> None:
        """Copy every staged document to its key and read it back (the tables are written,
        not yet committed); an object it replaces is copied aside first."""
        s3, bucket, tenant = self.ctx.s3, self.bucket, self.tenant_id
        for key in self.chosen:
            staged = self.staged[self.targets[key]["blob"]]
            current = layout.head(s3, bucket, key, tenant) if self.replacing else None
            if current is not None:
                aside = f"{self.staging}previous-{len(self.aside):06d}"
                layout.copy(s3, bucket, key, aside, tenant, current["size"])
                self.aside[key] = (aside, current["size"])
            self.published.append(key)  # before the copy: a failed copy may leave an object
            layout.copy(s3, bucket, staged.key, key, tenant, staged.bytes)
            objects.verify(s3, bucket, objects.StoredObject(key, staged.bytes, staged.sha256),
                           tenant)
        self.restored = len(self.docs)

    def discard(self, failure: BaseException) -> None:
        """Put back or remove what was published, remove the staging; a cleanup failure is
        noted, never hides ``failure``."""
        s3, bucket, tenant = self.ctx.s3, self.bucket, self.tenant_id
        try:
            for key in self.published:
                if key in self.aside:
                    layout.copy(s3, bucket, self.aside[key][0], key, tenant, self.aside[key][1])
                else:
                    layout.delete(s3, bucket, key, tenant)
            objects.abort_uploads(s3, bucket, self.staging, tenant)
            objects.delete_prefix(s3, bucket, self.staging, tenant)
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
