"""The tables of a backup as content-addressed chunks (format 4): rows already stored are
never uploaded again.

A table's rows, in primary-key order, are cut into chunks where a hash of the row's primary
key hits a mark (content-defined boundaries, :data:`CHUNK_ROWS` rows per chunk on average, like
restic's chunker but on rows rather than bytes): inserting, updating or deleting rows changes
only the chunks holding them, and every other chunk is the same run of rows as the night before.
Each chunk is one Parquet file (one row group, zstd), named by the keyed hash of its bytes like
a document blob (``DataKeys.blob_name``) and stored at ``blobs/<name>``. A chunk that the
previous snapshot's authenticated manifest lists (or this run stored already) costs no request;
a new one is sealed in memory, sent with one PUT and read back, on a small pool, while the next
chunk is read from the database. An unchanged table uploads nothing.

A table without a primary key is cut by a hash of the whole row; its order is the database's,
so a change may move more chunks. Chunks are also cut at :data:`MAX_CHUNK_ROWS` rows or at
about :data:`MAX_CHUNK_BYTES` of Arrow data (estimated from each batch's average row: a batch
of very uneven rows can make a larger chunk); the chunks in flight reserve their bytes from the
process's transfer budget (``flows.backup_pool.BUFFERS``), shared with the documents.

A chunk is reused only when the active data key sealed it: after a rotation every chunk is
written once more under the new key. The Parquet footer names the pyarrow version, so an
upgrade of pyarrow also rewrites every chunk once.

Since format 5 a table chunk of at most 1 MiB sealed goes into a pack of its own series
(:mod:`flows.backup_packs`: a million rows are about ten PUTs, not 4,000); a chunk's place is
known once its pack is read back, so the table entries are completed by :meth:`finish`. A pack
of table chunks the new snapshot uses less than half of is rewritten from its own bytes (one
GET), as document packs are from the documents bucket.
"""

from __future__ import annotations

import hashlib
import io
import zlib
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from flows import backup_packs
from flows.backup_packs import Packer, should_retire
from flows.backup_pool import BUFFERS
from kernel.errors import StorageError, VerificationFailed
from storage import backup_store as layout
from storage import objects
from storage.aead import EncryptingWriter, object_associated_data
from storage.datakeys import DataKeys
from storage.doc_index import IndexWriter
from storage.snapshots import BLOB_OBJECT, SnapshotStore

CHUNK_BITS = 8
# Rows per chunk on average: few enough that a night's changed rows re-upload little (a table of
# a few thousand rows is then several chunks), many enough that a million rows are about 4,000
# chunks (format 5: in about ten packs of about 8 MiB, a PUT and a read-back each).
CHUNK_ROWS = 1 << CHUNK_BITS
MAX_CHUNK_ROWS = 16 * CHUNK_ROWS
MAX_CHUNK_BYTES = 4 * 1024 * 1024  # of Arrow data; its Parquet is usually much smaller
# Index lines per chunk on average. Small (a few KB compressed): a night that changes 1 % of
# the documents at random touches 1 - 0.99**32 = 28 % of the chunks (at 1,024 lines: all of
# them). Chunks travel in packs and are read a pack at a time, so their number costs no request.
INDEX_CHUNK_LINES = 32
UPLOADS_IN_FLIGHT = 8
_MIX = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing: the high bits mix every input bit
_SHIFT = np.uint64(64 - CHUNK_BITS)


def marks(batch: pa.RecordBatch, primary_key: Sequence[str]) -> list[int]:
    """Rows of ``batch`` after which a chunk ends (content-defined: by the row's key only)."""
    names = list(primary_key) or batch.schema.names
    if len(names) == 1:
        column = batch.column(names[0])
        if pa.types.is_integer(column.type) and column.null_count == 0:
            values = column.to_numpy(zero_copy_only=False).astype(np.uint64)
            with np.errstate(over="ignore"):
                hits = ((values * _MIX) >> _SHIFT) == 0
            return [int(i) for i in np.flatnonzero(hits)]
    columns = [batch.column(n).to_pylist() for n in names]
    mask = CHUNK_ROWS - 1
    return [i for i, row in enumerate(zip(*columns, strict=True))
            if zlib.crc32(repr(row).encode("utf-8", "surrogatepass")) & mask == 0]


def chunk_rows(batches: Iterable[pa.RecordBatch], schema: pa.Schema,
               primary_key: Sequence[str]) -> Iterator[pa.Table]:
    """The rows of ``batches`` regrouped into chunks (an empty table yields none)."""
    pending: list[pa.RecordBatch] = []
    rows, held = 0, 0.0
    for batch in batches:
        if batch.num_rows == 0:
            continue
        per_row = batch.nbytes / batch.num_rows
        cuts = marks(batch, primary_key)
        start, mark = 0, 0
        while start < batch.num_rows:
            room = min(MAX_CHUNK_ROWS - rows,
                       max(1, int((MAX_CHUNK_BYTES - held) / per_row)) if per_row else
                       MAX_CHUNK_ROWS)
            while mark < len(cuts) and cuts[mark] < start:
                mark += 1
            if mark < len(cuts) and cuts[mark] < start + room:
                end, cut = cuts[mark] + 1, True
            elif start + room <= batch.num_rows:
                end, cut = start + room, True
            else:
                end, cut = batch.num_rows, False
            pending.append(batch.slice(start, end - start))
            rows += end - start
            held += (end - start) * per_row
            if cut:
                yield pa.Table.from_batches(pending, schema)
                pending, rows, held = [], 0, 0.0
            start = end
    if pending:
        yield pa.Table.from_batches(pending, schema)


def index_pieces(entries: Iterable[dict[str, Any]], writer: IndexWriter, sink: io.BytesIO
                 ) -> Iterator[tuple[bytes, int]]:
    """The document index's lines in chunks, cut after a line whose document id hashes to a
    mark (as table rows are): a changed document changes only its chunk. ``writer`` writes
    into ``sink`` and counts lines and missing documents for the manifest."""
    lines = 0
    for entry in entries:
        writer.write(entry)
        lines += 1
        mark = zlib.crc32(repr(entry["document_id"]).encode("utf-8", "surrogatepass"))
        if mark & (INDEX_CHUNK_LINES - 1) == 0 or sink.tell() >= MAX_CHUNK_BYTES:
            yield sink.getvalue(), lines
            sink.seek(0)
            sink.truncate()
            lines = 0
    if lines:
        yield sink.getvalue(), lines


def parquet_bytes(table: pa.Table) -> bytes:
    """One chunk as a Parquet file: the same rows give the same bytes (one row group over
    contiguous arrays, whatever batches they came in)."""
    sink = io.BytesIO()
    pq.write_table(table.combine_chunks(), sink, compression="zstd", write_statistics=False,
                   store_schema=True, row_group_size=max(1, table.num_rows))
    return sink.getvalue()


@dataclass
class TableChunks:
    """Stores the chunks of a snapshot's tables; knows the chunks the previous snapshot holds."""

    store: SnapshotStore
    keys: DataKeys
    tenant_id: str
    known: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> sizes and hash
    uploaded: int = 0
    uploaded_bytes: int = 0
    reused: int = 0
    packer: Packer | None = None  # format 5: table chunks are packed (set by the backup)
    packs_retired: int = 0
    _packed: list[dict[str, Any]] = field(default_factory=list)  # entries to place at finish
    _used: dict[str, set[str]] = field(default_factory=dict)  # reused pack -> its chunks used
    _claimed: set[str] = field(default_factory=set)  # chunks this run writes
    warnings: list[str] = field(default_factory=list)

    def remember(self, manifest: dict[str, Any]) -> None:
        """The chunks of the previous snapshot, its tables' and its index's (its manifest is
        authenticated)."""
        documents = manifest.get("documents")
        index = documents.get("chunks", []) if isinstance(documents, dict) else []
        for chunk in [*(c for t in manifest.get("tables", []) for c in t.get("chunks", [])),
                      *index]:
            if chunk.get("data_key") == self.keys.active:  # else: sealed before a rotation
                self.known.setdefault(chunk["blob"], {k: v for k, v in chunk.items()
                                                      if k not in ("blob", "rows")})

    def store_table(self, pool: ThreadPoolExecutor, batches: Iterable[pa.RecordBatch],
                    schema: pa.Schema, primary_key: Sequence[str]) -> list[dict[str, Any]]:
        """Every chunk of one table, in order: reused, or sealed, PUT and read back."""
        return self._stored_packed(self.store_pieces(
            pool, ((parquet_bytes(t), t.num_rows) for t in chunk_rows(batches, schema,
                                                                     primary_key)),
            packed=self.packer is not None))

    def store_index(self, pool: ThreadPoolExecutor, pieces: Iterable[tuple[bytes, int]]
                    ) -> list[dict[str, Any]]:
        """The document index's zlib-compressed chunks, packed like the table chunks (format
        6: a night that changes 1 % of documents rewrites few small chunks, not requests)."""
        entries = self.store_pieces(pool, pieces, packed=self.packer is not None)
        for entry in entries:
            entry["compression"] = "zlib"
        return self._stored_packed(entries)

    def _stored_packed(self, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Entries whose places :meth:`finish` fills in; reused packed ones count as uses of
        their pack (a pack mostly unused is rewritten)."""
        for entry in entries:
            if "pack" in self.known[entry["blob"]] and entry["blob"] not in self._claimed:
                info = self.known[entry["blob"]]
                self._used.setdefault(info["pack"], set()).add(entry["blob"])
        self._packed.extend(entries)
        return entries

    def record(self, name: str, info: dict[str, Any]) -> None:
        """A chunk's place in the pack just read back (the packer calls this)."""
        self.known.setdefault(name, {}).update(info, data_key=self.keys.active)

    def finish(self, pool: ThreadPoolExecutor) -> None:
        """Rewrite the reused packs mostly unused, send the last pack, and complete every
        table entry with its chunk's place (call once every table is stored)."""
        if self.packer is None:
            return
        for pack, used in self._used.items():
            members = [{"blob": b, **self.known[b]} for b in sorted(used)]
            if not should_retire(int(members[0].get("pack_blobs") or 0), len(used)):
                continue
            try:  # less than half of a pack: its members in use, read and checked (one GET)
                replaced = list(self.store.pack_plaintexts(self.keys, self.tenant_id, pack,
                                                           members))
            except (VerificationFailed, StorageError) as err:  # kept as it is, said loudly:
                self.warnings.append(  # a damaged pack must not stop every later backup
                    f"pack {pack} could not be read to rewrite it ({err}); the snapshot still "
                    "names it: run `tenant-export verify` and see the restore runbook")
                continue
            self.packs_retired += 1
            for member, _ in replaced:  # its next place is wherever it is sealed now
                for place in ("pack", "pack_offset", "pack_blobs", "ciphertext_sha256"):
                    self.known[member["blob"]].pop(place, None)
            jobs = [pool.submit(self._seal, m["blob"], plain) for m, plain in replaced]
            for job in jobs:
                self._stored(job.result())
        self.packer.close()
        for entry in self._packed:
            entry.update(self.known[entry["blob"]])

    def store_pieces(self, pool: ThreadPoolExecutor, pieces: Iterable[tuple[bytes, int]],
                     *, packed: bool = False) -> list[dict[str, Any]]:
        """Store ``(plaintext, rows)`` pieces as blobs, in order: each reused, or sealed, PUT
        and read back (at most :data:`UPLOADS_IN_FLIGHT` at a time); with ``packed``, small
        ones go to the packer (their place is filled in by :meth:`finish`)."""
        entries: list[dict[str, Any]] = []
        in_flight: list[Future[dict[str, Any]]] = []
        for data, count in pieces:
            sha = hashlib.sha256(data).hexdigest()
            name = self.keys.blob_name(self.tenant_id, sha)
            entries.append({"blob": name, "rows": count,
                            "plaintext_bytes": len(data), "plaintext_sha256": sha})
            if name in self.known:  # the previous snapshot holds it, or this run stores it
                self.reused += 1
                continue
            self.known[name] = {}  # claimed; filled in once stored and read back
            self._claimed.add(name)
            in_flight.append(pool.submit(self._seal, name, data, pack=packed))
            if len(in_flight) >= UPLOADS_IN_FLIGHT:
                self._stored(self._first(in_flight))
        while in_flight:
            self._stored(self._first(in_flight))
        for entry in entries:
            entry.update(self.known[entry["blob"]])
        return entries

    @staticmethod
    def _first(in_flight: list[Future[dict[str, Any]]]) -> dict[str, Any]:
        """The oldest upload's outcome; on its failure the queued ones are cancelled."""
        try:
            return in_flight.pop(0).result()
        except BaseException:
            for future in in_flight:
                future.cancel()
            raise

    def _stored(self, info: dict[str, Any]) -> None:
        name = info.pop("blob")
        self.known.setdefault(name, {}).update(info)  # the packer may have placed it already
        self.uploaded += 1
        self.uploaded_bytes += info["ciphertext_bytes"]

    def _seal(self, name: str, data: bytes, *, pack: bool = True) -> dict[str, Any]:
        """Seal one chunk in memory (the plaintext and its sealed copy reserved from the
        budget); into a pack when asked and small enough, else PUT alone and read back."""
        with BUFFERS.reserve(2 * len(data)):
            sealed = io.BytesIO()
            with EncryptingWriter(sealed, self.keys,
                                  object_associated_data(self.tenant_id, BLOB_OBJECT)) as enc:
                enc.write(data)
            if not pack or self.packer is None or sealed.tell() > backup_packs.PACKED_BLOB_BYTES:
                return self._sent(name, data, enc.plaintext_sha256, sealed)
            size = sealed.tell()
            self.packer.add(name, sealed.getvalue(), len(data))
        return {"blob": name, "plaintext_bytes": len(data),
                "plaintext_sha256": enc.plaintext_sha256, "data_key": self.keys.active,
                "ciphertext_bytes": size}

    def _sent(self, name: str, data: bytes, sha: str, sealed: io.BytesIO) -> dict[str, Any]:
        """PUT one sealed chunk at its blob name and read it back."""
        stored = layout.put(self.store.s3, self.store.bucket,
                            layout.blob_key(self.tenant_id, name), sealed, self.tenant_id)
        objects.verify(self.store.s3, self.store.bucket, stored, self.tenant_id)
        return {"blob": name, "plaintext_bytes": len(data), "plaintext_sha256": sha,
                "data_key": self.keys.active, "ciphertext_bytes": stored.bytes,
                "ciphertext_sha256": stored.sha256}
