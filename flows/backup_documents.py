"""The documents of one backup: which changed, and storing those concurrently.

What changed is learnt without a request per document: one ListObjectsV2 page per 1,000
objects under the tenant's key prefix gives every document's ETag and size, compared (in
:class:`~flows.backup_scratch.Scratch`) with what the previous snapshot's authenticated index
recorded. An unchanged document costs no request at all. Where the catalog gives no
per-tenant prefix (``keys_tenant_scoped = false``), a listing would cover other tenants'
files, so each document gets a HEAD instead, run concurrently.

A new or changed document is read once and sealed; a small one (up to ``PACKED_BLOB_BYTES``
sealed) joins a pack of many (:mod:`flows.backup_packs`: one PUT per pack), a medium one (up to
``SMALL_BLOB_BYTES``) is stored with one PUT at its blob name, a larger one streams into a
multipart upload under ``staging/`` and is copied server-side to its name once its content
(hence its name) is known. Either way the blob is read back before the snapshot can commit,
unless this run already stored it or the previous snapshot vouches for it (a name is claimed
once per run, so two documents with the same content never race on one object).
"""

from __future__ import annotations

import functools
import io
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO, Any

from flows import backup_packs
from flows.backup_packs import Packer, should_retire
from flows.backup_pool import BUFFERS, run_bounded
from flows.backup_scratch import PAGE, Planned, Scratch
from flows.context import RunContext
from sources.documents import (
    head_document,
    key_prefix,
    list_documents,
    open_document,
)
from storage import backup_store as layout
from storage import objects
from storage.aead import EncryptingWriter, object_associated_data
from storage.datakeys import DataKeys
from storage.snapshots import BLOB_OBJECT

SMALL_BLOB_BYTES = 8 * 1024 * 1024  # sealed in memory and PUT once; larger: multipart
BUFFER_SLACK = 2 * 1024 * 1024  # a segment being sealed and a chunk being read, per job


@dataclass
class Outcome:
    """What one document's job did; the main thread applies it (entries, counters)."""

    seq: int
    entry: dict[str, Any]
    uploaded: int = 0
    renamed: int = 0
    bytes: int = 0


@dataclass
class Counts:
    """The documents' share of the backup summary."""

    documents: int = 0
    missing: int = 0
    uploaded: int = 0
    renamed: int = 0
    bytes: int = 0
    listed: bool = False  # the bucket was listed (False: one HEAD per document)
    packs: int = 0  # packs written (format 5)
    packs_retired: int = 0  # packs of earlier snapshots whose blobs in use were packed again

    def apply(self, outcome: Outcome) -> None:
        """Count one finished document."""
        self.documents += 1
        self.missing += outcome.entry["status"] == "missing"
        self.uploaded += outcome.uploaded
        self.renamed += outcome.renamed
        self.bytes += outcome.bytes


class Documents:
    """The documents phase of one tenant's backup (the platform snapshot is already closed)."""

    def __init__(self, ctx: RunContext, keys: DataKeys, tenant_id: str, snapshot_id: str,
                 scratch: Scratch, checkpoint: Callable[[str], None]) -> None:
        self.ctx, self.keys, self.tenant_id, self.scratch = ctx, keys, tenant_id, scratch
        self.checkpoint = checkpoint
        self.docs_bucket = ctx.settings.documents_bucket
        self.bucket = ctx.settings.backup_bucket
        self.counts = Counts()
        self.workers = ctx.settings.fetch_concurrency
        self._entries: list[tuple[int, dict[str, Any]]] = []  # written to scratch in pages
        self._reused: list[tuple[str, dict[str, Any]]] = []
        self.packer = Packer(ctx.s3, self.bucket, tenant_id, snapshot_id, scratch.record,
                             checkpoint)

    def run(self) -> Counts:
        """Survey the bucket, then store every new or changed document, entries in order."""
        with ThreadPoolExecutor(self.workers, thread_name_prefix="backup-doc") as pool:
            self._survey(pool)
            self.counts.packs_retired = len(self.scratch.retire_packs(should_retire))
            run_bounded(pool, (self._job(p) for p in self.scratch.plan()), self._done,
                        2 * self.workers)
        self.packer.close()
        self.counts.packs = self.packer.packs
        self._flush()
        return self.counts

    def _flush(self) -> None:
        self.scratch.adopt(self._reused)
        self.scratch.add_entries(self._entries)
        self._reused.clear()
        self._entries.clear()

    def _survey(self, pool: ThreadPoolExecutor) -> None:
        """What the bucket holds now: a listing of the tenant's prefix, else a HEAD per key."""
        rule = self.ctx.catalog.config.documents
        prefix = key_prefix(rule, self.tenant_id)
        if prefix is not None and "{tenant_id}" in (rule.key_prefix or ""):
            self.counts.listed = True
            self.scratch.add_objects(list_documents(self.ctx.s3, self.docs_bucket, prefix))
            return

        def head(key: str) -> None:
            found = head_document(self.ctx.s3, self.docs_bucket, key)
            if found is None:
                self.scratch.add_gone(key)
            else:
                self.scratch.add_objects([found])

        def done(_: None) -> None:
            """HEADs record their answer in the scratch themselves."""

        run_bounded(pool, (functools.partial(head, key) for key in self.scratch.row_keys()),
                    done, 2 * self.workers)

    def _done(self, outcome: Outcome) -> None:
        self._entries.append((outcome.seq, outcome.entry))
        if len(self._entries) >= PAGE:
            self._flush()
        self.counts.apply(outcome)
        self.checkpoint("document")

    def _job(self, planned: Planned) -> Callable[[], Outcome] | Outcome:
        """The outcome of a document that needs no request, else the job that gets it."""
        entry: dict[str, Any] = {"document_id": planned.document_id,
                                 "storage_key": planned.storage_key}
        gone = {**entry, "status": "missing", "blob": None}
        if not planned.storage_key or (planned.listed and planned.etag is None):
            return Outcome(planned.seq, gone)
        if not planned.listed and self.counts.listed:  # not in the listing: not in the bucket
            return Outcome(planned.seq, gone)
        if planned.blob and planned.sha256:  # unchanged since the previous snapshot
            sha = planned.sha256
            name = self.keys.blob_name(self.tenant_id, sha)
            done = Outcome(planned.seq, {**entry, "status": "ok", "etag": planned.etag,
                                         "size": planned.size, "blob": name, "sha256": sha})
            if name == planned.blob:
                self._reused.append((name, planned.info))
                return done
            old, info = planned.blob, planned.info
            return lambda: self._rename(done, old, info)
        key, expected = planned.storage_key, planned.size or 0
        return lambda: self._store(planned.seq, entry, key, expected)

    def _store(self, seq: int, entry: dict[str, Any], key: str, expected: int) -> Outcome:
        """Read one document, seal it, and store its blob unless this run or the previous
        snapshot already holds it; the memory it will hold is reserved first (by the size the
        survey saw: a document that grew since holds at most one small blob more)."""
        small = expected <= SMALL_BLOB_BYTES
        with BUFFERS.reserve((expected if small else objects.PART_BYTES) + BUFFER_SLACK):
            opened = open_document(self.ctx.s3, self.docs_bucket, key)
            if opened is None:  # deleted since the survey
                return Outcome(seq, {**entry, "status": "missing", "blob": None})
            found, chunks = opened
            put = self._put_small if found.size <= SMALL_BLOB_BYTES else self._put_large
            sha, size, uploaded, sent = put(chunks)
        return Outcome(seq, {**entry, "status": "ok", "etag": found.etag, "size": size,
                             "blob": self.keys.blob_name(self.tenant_id, sha), "sha256": sha},
                       uploaded=uploaded, bytes=sent)

    def _put_small(self, chunks: Iterable[bytes]) -> tuple[str, int, int, int]:
        """Seal in memory, then into a pack, or one PUT at the blob's name if it is too large
        for a pack: (sha256, size, uploaded, bytes)."""
        buffer = io.BytesIO()
        with EncryptingWriter(buffer, self.keys,
                              object_associated_data(self.tenant_id, BLOB_OBJECT)) as sealer:
            for chunk in chunks:
                sealer.write(chunk)
        sha, size = sealer.plaintext_sha256, sealer.plaintext_bytes
        name = self.keys.blob_name(self.tenant_id, sha)
        if not self.scratch.claim(name):
            return sha, size, 0, 0
        if buffer.tell() <= backup_packs.PACKED_BLOB_BYTES:
            self.packer.add(name, buffer.getvalue(), size)
            return sha, size, 1, buffer.tell()
        stored = layout.put(self.ctx.s3, self.bucket, layout.blob_key(self.tenant_id, name),
                            buffer, self.tenant_id)
        self.checkpoint("blob-written")
        self._verified(name, stored, size)
        return sha, size, 1, stored.bytes

    def _put_large(self, chunks: Iterable[bytes]) -> tuple[str, int, int, int]:
        """Stream into a multipart upload under ``staging/``, then copy it to its name."""
        staging = layout.staging_prefix(self.tenant_id) + uuid.uuid4().hex

        def write(sink: IO[bytes]) -> None:
            for chunk in chunks:
                sink.write(chunk)

        sealed = self.ctx.store.seal(self.keys, self.tenant_id, staging, BLOB_OBJECT, write)
        sha, size = sealed["plaintext_sha256"], sealed["plaintext_bytes"]
        name = self.keys.blob_name(self.tenant_id, sha)
        uploaded = 0
        if self.scratch.claim(name):  # whatever sits at the name is unknown: overwrite it
            target = layout.blob_key(self.tenant_id, name)
            layout.copy(self.ctx.s3, self.bucket, staging, target, self.tenant_id,
                        sealed["ciphertext_bytes"])
            self._verified(name, objects.StoredObject(target, sealed["ciphertext_bytes"],
                                                      sealed["ciphertext_sha256"]), size)
            uploaded = 1
        layout.delete(self.ctx.s3, self.bucket, staging, self.tenant_id)
        return sha, size, uploaded, sealed["ciphertext_bytes"]

    def _verified(self, name: str, stored: objects.StoredObject, plaintext_bytes: int) -> None:
        """Read a written blob back (ciphertext size and SHA-256), then record it."""
        objects.verify(self.ctx.s3, self.bucket, stored, self.tenant_id)
        self.scratch.record(name, {"plaintext_bytes": plaintext_bytes,
                                   "ciphertext_bytes": stored.bytes,
                                   "ciphertext_sha256": stored.sha256})

    def _rename(self, done: Outcome, old: str, info: dict[str, Any]) -> Outcome:
        """Copy a format-1 blob (named by its plain SHA-256) to its keyed name. Its bytes are
        unchanged; they are checked against the ciphertext hash the authenticated manifest
        recorded, or else decrypted and checked against the new name."""
        name = done.entry["blob"]
        if not self.scratch.claim(name):
            return done
        target = layout.blob_key(self.tenant_id, name)
        layout.copy(self.ctx.s3, self.bucket, layout.blob_key(self.tenant_id, old), target,
                    self.tenant_id, info.get("ciphertext_bytes"))
        if info.get("ciphertext_sha256") and info.get("ciphertext_bytes") is not None:
            objects.verify(self.ctx.s3, self.bucket, objects.StoredObject(
                target, info["ciphertext_bytes"], info["ciphertext_sha256"]), self.tenant_id)
        else:
            for _ in self.ctx.store.decrypt_object(self.keys, self.tenant_id, target,
                                                   BLOB_OBJECT):
                pass
        self.scratch.record(name, info)
        done.renamed = 1
        return done
