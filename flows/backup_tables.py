"""The tables of a backup as content-addressed chunks (format 4): rows already stored are
never uploaded again.

A table's rows, in primary-key order, are cut into chunks where a hash of the row's primary
key hits a mark (content-defined boundaries, :data:`CHUNK_ROWS` rows per chunk on average, like
restic's chunker but on rows rather than bytes): inserting, updating or deleting rows changes
only the chunks holding them, and every other chunk is the same run of rows as the night before.
Each chunk is one Parquet file (one row group, zstd), named by the keyed hash of its bytes like
a document blob (``DataKeys.blob_name``) and stored at ``blobs/<name>``. A chunk that the
previous snapshot lists (its authenticated manifest, or since format 7 its table index; or
that this run stored already) costs no request;
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
known once its pack is read back, so the table entries wait in a temporary database
(:class:`~flows.backup_chunkmap.ChunkMap`) and are completed when the table index is written
(format 7: memory does not grow with the number of chunks). A pack
of table chunks the new snapshot uses less than half of is rewritten from its own bytes (one
GET), as document packs are from the documents bucket.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import zlib
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from flows import backup_packs
from flows.backup_chunkmap import ChunkMap
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
    """The document index's lines in chunks (:func:`line_pieces`, cut by document id).
    ``writer`` writes into ``sink`` and counts lines and missing documents for the manifest."""

    def written() -> Iterator[tuple[bytes, str]]:
        for entry in entries:
            writer.write(entry)
            yield sink.getvalue(), entry["document_id"]
            sink.seek(0)
            sink.truncate()

    return line_pieces(written())


def line_pieces(lines: Iterable[tuple[bytes, str]]) -> Iterator[tuple[bytes, int]]:
    """Index lines in chunks, cut after a line whose key (a document id, a table chunk's blob
    name) hashes to a mark, as table rows are: a changed line changes only its chunk."""
    held, count = bytearray(), 0
    for line, key in lines:
        held += line
        count += 1
        mark = zlib.crc32(repr(key).encode("utf-8", "surrogatepass"))
        if mark & (INDEX_CHUNK_LINES - 1) == 0 or len(held) >= MAX_CHUNK_BYTES:
            yield bytes(held), count
            held.clear()
            count = 0
    if count:
        yield bytes(held), count


def parquet_bytes(table: pa.Table) -> bytes:
    """One chunk as a Parquet file: the same rows give the same bytes (one row group over
    contiguous arrays, whatever batches they came in)."""
    sink = io.BytesIO()
    pq.write_table(table.combine_chunks(), sink, compression="zstd", write_statistics=False,
                   store_schema=True, row_group_size=max(1, table.num_rows))
    return sink.getvalue()


@dataclass
class TableChunks:
    """Stores the chunks of a snapshot's tables; knows the chunks the previous snapshot holds.

    What it knows sits in a temporary database (:class:`flows.backup_chunkmap.ChunkMap`, format
    7): memory does not grow with the number of chunks. Only the index chunks' entries, which
    the manifest lists (one per about 32 index lines), are held until :meth:`finish`.
    """

    store: SnapshotStore
    keys: DataKeys
    tenant_id: str
    known: ChunkMap = field(default_factory=ChunkMap)
    uploaded: int = 0
    uploaded_bytes: int = 0
    reused: int = 0
    packer: Packer | None = None  # format 5: table chunks are packed (set by the backup)
    packs_retired: int = 0
    _packed: list[dict[str, Any]] = field(default_factory=list)  # index chunks to complete
    warnings: list[str] = field(default_factory=list)

    def remember(self, manifest: dict[str, Any]) -> None:
        """The chunks of the previous snapshot, its tables' and its indexes' (its manifest is
        authenticated; the table index is checked as it streams)."""
        inline = [c for name in ("documents", "table_index")
                  if isinstance(manifest.get(name), dict)
                  for c in manifest[name].get("chunks", [])]
        tables = (c for _, c in self.store.table_chunks(self.keys, self.tenant_id, manifest))
        for chunk in itertools.chain(inline, tables):
            if chunk.get("data_key") == self.keys.active:  # else: sealed before a rotation
                self.known.claim(chunk["blob"], {k: v for k, v in chunk.items()
                                                 if k not in ("blob", "rows", "compression")})

    def store_table(self, pool: ThreadPoolExecutor, batches: Iterable[pa.RecordBatch],
                    schema: pa.Schema, primary_key: Sequence[str], table: str
                    ) -> tuple[int, int, int]:
        """Every chunk of one table, in order: reused, or sealed, PUT and read back. The
        entries wait in :attr:`known` for their places; returns (rows, chunks, plaintext
        bytes)."""
        rows = chunks = size = 0
        pieces = ((parquet_bytes(t), t.num_rows) for t in chunk_rows(batches, schema,
                                                                     primary_key))
        for entry in self._store(pool, pieces, packed=self.packer is not None):
            self.known.add(table, entry)
            rows, chunks, size = rows + entry["rows"], chunks + 1, size + entry["plaintext_bytes"]
        return rows, chunks, size

    def store_index(self, pool: ThreadPoolExecutor, pieces: Iterable[tuple[bytes, int]]
                    ) -> list[dict[str, Any]]:
        """An index's zlib-compressed chunks, packed like the table chunks (format 6: a night
        that changes 1 % of documents rewrites few small chunks, not requests); their entries
        are complete once :meth:`finish` returns."""
        entries = list(self._store(pool, pieces, packed=self.packer is not None))
        for entry in entries:
            entry["compression"] = "zlib"
        self._packed.extend(entries)
        return entries

    def store_pieces(self, pool: ThreadPoolExecutor, pieces: Iterable[tuple[bytes, int]]
                     ) -> list[dict[str, Any]]:
        """Pieces stored as blobs of their own (not packed, as format 4 did), their entries
        complete."""
        entries = list(self._store(pool, pieces, packed=False))
        for entry in entries:
            entry.update(self.known.get(entry["blob"]) or {})
        return entries

    def record(self, name: str, info: dict[str, Any]) -> None:
        """A chunk's place in the pack just read back (the packer calls this)."""
        self.known.update(name, {**info, "data_key": self.keys.active})

    def finish(self, pool: ThreadPoolExecutor) -> None:
        """Rewrite the reused packs mostly unused, send the last pack, and complete the index
        chunks' entries with their places (after this, every chunk stored so far is placed)."""
        if self.packer is None:  # nothing packed: every entry's place is known already
            self._completed()
            return
        for pack, used in self.known.used_packs():
            members = [{**(self.known.get(b) or {}), "blob": b} for b in used]
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
                self.known.update(member["blob"], {}, drop=(
                    "pack", "pack_offset", "pack_blobs", "ciphertext_sha256"))
            jobs = [pool.submit(self._seal, m["blob"], plain) for m, plain in replaced]
            for job in jobs:
                self._stored(job.result())
        self.packer.close()
        self._completed()

    def _completed(self) -> None:
        """The index chunks' entries completed from what is known of them now."""
        for entry in self._packed:
            entry.update(self.known.get(entry["blob"]) or {})
        self._packed.clear()

    def _store(self, pool: ThreadPoolExecutor, pieces: Iterable[tuple[bytes, int]], *,
               packed: bool) -> Iterator[dict[str, Any]]:
        """Store ``(plaintext, rows)`` pieces as blobs, yielding each one's entry in order:
        reused, or sealed, PUT and read back (at most :data:`UPLOADS_IN_FLIGHT` at a time);
        with ``packed``, small ones go to the packer. Entries lack their sizes and places until
        stored: complete them from :attr:`known` (consume to the end: the last uploads are
        waited for there)."""
        in_flight: list[Future[dict[str, Any]]] = []
        for data, count in pieces:
            sha = hashlib.sha256(data).hexdigest()
            name = self.keys.blob_name(self.tenant_id, sha)
            if self.known.claim(name):  # else the previous snapshot holds it, or this run does
                in_flight.append(pool.submit(self._seal, name, data, pack=packed))
                if len(in_flight) >= UPLOADS_IN_FLIGHT:
                    self._stored(self._first(in_flight))
            else:
                self.reused += 1
                pack = (self.known.get(name) or {}).get("pack")
                if pack and (self.packer is None or not self.packer.made(pack)):
                    self.known.use(pack, name)  # a pack mostly unused is rewritten
            yield {"blob": name, "rows": count, "plaintext_bytes": len(data),
                   "plaintext_sha256": sha}
        while in_flight:
            self._stored(self._first(in_flight))

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
        self.known.update(name, info)  # the packer may have placed it already
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
