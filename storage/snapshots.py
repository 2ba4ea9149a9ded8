"""The backup snapshot format: data keys, sealed objects and manifests (docs/backup-format.md).

This module knows how a snapshot is laid out and encrypted in the backup bucket; what goes into
a snapshot (tables, documents) is the recipe's business (``flows/backup.py``). Every object is
sealed with the tenant's active data key and named in its associated data, so an object moved
to another name or tenant fails authentication; blobs, whose name is their content's keyed
hash, are checked against their name instead.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any, cast

import pyarrow as pa

from kernel.errors import BadInput, StorageError, VerificationFailed
from storage import backup_store as layout
from storage import objects
from storage.aead import EncryptingWriter, Keys, decrypt_stream, object_associated_data
from storage.datakeys import DataKeys
from storage.doc_index import INDEX, legacy_entries, lines, parse
from storage.key_registry import KeyRegistry
from storage.key_store import KeyStore
from storage.packs import check_sealed, cut, place
from storage.snapshot_list import complete_snapshots
from storage.table_index import TableChunkIndex, table_entries
from storage.wrapping import KeyWrapper

FORMAT = "tenant-export-snapshot"
FORMAT_VERSION = 7  # a table index (6: index chunks packed; 5: small blobs packed; 4: chunks)
READABLE_VERSIONS = (1, 2, 3, 4, 5, 6, 7)
BLOB_OBJECT = "blob"  # associated data of blobs: their name is checked against the content


def snapshot_time(snapshot_id: str) -> datetime:
    """When a snapshot was taken, from its id (``20261126T023000Z-…``)."""
    return datetime.strptime(snapshot_id.split("-", 1)[0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


def object_name(snapshot_id: str, relative: str) -> str:
    """The name bound into an object's associated data (``snapshots/<id>/tables/x.parquet``)."""
    return f"snapshots/{snapshot_id}/{relative}"


def schema_b64(schema: pa.Schema) -> str:
    """An Arrow schema as recorded in a manifest."""
    return base64.b64encode(schema.serialize().to_pybytes()).decode("ascii")


def schema_of(table: dict[str, Any]) -> pa.Schema:
    """The Arrow schema recorded for a table in a manifest."""
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(table["schema"])))


def inflate(pieces: Iterable[bytes], where: str, tenant_id: str) -> Iterator[bytes]:
    """A zlib stream's bytes, at most ``layout.READ_CHUNK`` at a time whatever its ratio."""
    stream = zlib.decompressobj()
    try:
        for piece in pieces:
            pending = piece
            while pending:
                yield stream.decompress(pending, layout.READ_CHUNK)
                pending = stream.unconsumed_tail
        yield stream.flush()
    except zlib.error as err:
        raise VerificationFailed(f"{where}: not a zlib stream ({err})",
                                 tenant_id=tenant_id) from err
    if not stream.eof or stream.unused_data:
        raise VerificationFailed(f"{where}: the zlib stream is truncated or followed by other "
                                 "bytes", tenant_id=tenant_id)


@dataclass(frozen=True)
class SnapshotStore:
    """One backup bucket, read and written in the snapshot format."""

    s3: Any
    bucket: str

    # -- keys --------------------------------------------------------------------------------

    def data_key(self, wrapper: KeyWrapper, tenant_id: str, *, create: bool,
                 registry: KeyRegistry | None = None) -> DataKeys:
        """The tenant's data keys, unwrapped; created (stored wrapped) on the first backup.

        A key is created only for a tenant with nothing in the bucket: when the record is gone
        but snapshots or blobs remain, a new key would leave them unreadable for ever, so the
        record's absence is an error to repair (an older object version, a copy), not a start.
        With ``registry`` the record is also checked against the keys the control database
        remembers (:mod:`storage.key_store`).
        """
        return KeyStore(self.s3, self.bucket).data_keys(wrapper, tenant_id, create=create,
                                                        registry=registry)[0]

    # -- sealed objects ------------------------------------------------------------------------

    def seal(self, keys: Keys, tenant_id: str, key: str, name: str,
             write: Callable[[IO[bytes]], None]) -> dict[str, Any]:
        """Stream ``write``'s plaintext, encrypted under the active data key, to ``key``;
        returns sizes and hashes."""
        with (objects.upload(self.s3, self.bucket, key, tenant_id=tenant_id) as out,
              EncryptingWriter(out, keys, object_associated_data(tenant_id, name)) as enc):
            write(cast(IO[bytes], enc))
        return {"plaintext_bytes": enc.plaintext_bytes, "plaintext_sha256": enc.plaintext_sha256,
                "ciphertext_bytes": out.bytes, "ciphertext_sha256": out.sha256}

    def decrypt_object(self, keys: Keys, tenant_id: str, key: str, name: str
                       ) -> Iterator[bytes]:
        """An object's plaintext, streamed; ``VerificationFailed`` names the object.

        A blob (``name`` :data:`BLOB_OBJECT`) is also checked against its object name once
        its last segment is read: the name must be the blob name of the plaintext (keyed, or
        the plain SHA-256 of a version-1 blob), else it was copied over another blob.
        """
        yield from self._opened(keys, tenant_id, layout.chunks(self.s3, self.bucket, key,
                                                               tenant_id),
                                name, key, key.rsplit("/", 1)[-1])

    def _opened(self, keys: Keys, tenant_id: str, sealed: Iterable[bytes], name: str,
                where: str, blob: str) -> Iterator[bytes]:
        digest = hashlib.sha256() if name == BLOB_OBJECT else None
        try:
            for piece in decrypt_stream(sealed, keys, object_associated_data(tenant_id, name)):
                if digest is not None:
                    digest.update(piece)
                yield piece
        except (VerificationFailed, StorageError) as err:
            raise VerificationFailed(f"{where}: {err}", tenant_id=tenant_id) from err
        if digest is not None and not DataKeys.of(keys).names(tenant_id, blob,
                                                              digest.hexdigest()):
            raise VerificationFailed(f"{where}: the blob's content (sha256 "
                                     f"{digest.hexdigest()}) does not match its name {blob}: "
                                     "it was copied over another blob", tenant_id=tenant_id)

    def blob_plaintext(self, keys: Keys, tenant_id: str, entry: dict[str, Any]
                       ) -> Iterator[bytes]:
        """A document's blob as its index entry places it: an object alone, or a member of
        a pack read with one ranged GET; checked against its name either way."""
        span = self._place(entry, tenant_id)
        if span is None:
            yield from self.decrypt_object(keys, tenant_id,
                                           layout.blob_key(tenant_id, entry["blob"]), BLOB_OBJECT)
            return
        key = layout.blob_key(tenant_id, entry["pack"])
        data = objects.read_bytes(self.s3, self.bucket, key, tenant_id, byte_range=span)
        yield b"".join(self._member(keys, tenant_id, entry, data, key))

    def pack_plaintexts(self, keys: Keys, tenant_id: str, pack: str,
                        entries: list[dict[str, Any]], *, ranged: bool = False
                        ) -> Iterator[tuple[dict[str, Any], bytes]]:
        """The plaintext of each given member of one pack, from one GET of the pack (the
        entries' blobs distinct; any order); ``ranged``: of the bytes from the first member
        to the last only (a few members of a large pack)."""
        key = layout.blob_key(tenant_id, pack)
        spans = sorted(((*cast(tuple[int, int], self._place(e, tenant_id)), e) for e in entries),
                       key=lambda span: (span[0], span[1]))  # never compares the entries
        source: Iterable[bytes]
        if ranged and spans:
            low, high = spans[0][0], max(end for _, end, _ in spans)
            source = [objects.read_bytes(self.s3, self.bucket, key, tenant_id,
                                         byte_range=(low, high))]
            spans = [(start - low, end - low, entry) for start, end, entry in spans]
        else:
            source = layout.chunks(self.s3, self.bucket, key, tenant_id)
        try:
            for entry, data in cut(source, spans, key):
                yield entry, b"".join(self._member(keys, tenant_id, entry, data, key))
        except VerificationFailed as err:
            raise VerificationFailed(str(err), tenant_id=tenant_id) from err

    def _member(self, keys: Keys, tenant_id: str, entry: dict[str, Any], data: bytes,
                key: str) -> Iterator[bytes]:
        where = f"{key} (blob {entry['blob']} at offset {entry['pack_offset']})"
        try:
            check_sealed(data, entry, key)
        except VerificationFailed as err:
            raise VerificationFailed(str(err), tenant_id=tenant_id) from err
        return self._opened(keys, tenant_id, [data], BLOB_OBJECT, where, entry["blob"])

    @staticmethod
    def _place(entry: dict[str, Any], tenant_id: str) -> tuple[int, int] | None:
        try:
            return place(entry)
        except VerificationFailed as err:
            raise VerificationFailed(str(err), tenant_id=tenant_id) from err

    # -- manifests -----------------------------------------------------------------------------

    def write_manifest(self, keys: Keys, tenant_id: str, snapshot_id: str,
                       manifest: dict[str, Any]) -> dict[str, Any]:
        """Seal the manifest (the commit marker of a snapshot) and read it back."""
        data = json.dumps(manifest, sort_keys=True).encode()
        key = layout.snapshot_prefix(tenant_id, snapshot_id) + layout.MANIFEST

        def write(sink: IO[bytes]) -> None:
            sink.write(data)

        sealed = self.seal(keys, tenant_id, key, object_name(snapshot_id, layout.MANIFEST), write)
        objects.verify(self.s3, self.bucket, objects.StoredObject(
            key, sealed["ciphertext_bytes"], sealed["ciphertext_sha256"]), tenant_id)
        return sealed

    def read_manifest(self, keys: Keys, tenant_id: str, snapshot_id: str) -> dict[str, Any]:
        """Decrypt and parse a snapshot's manifest (``VerificationFailed`` names it)."""
        key = layout.snapshot_prefix(tenant_id, snapshot_id) + layout.MANIFEST
        data = b"".join(self.decrypt_object(keys, tenant_id, key,
                                            object_name(snapshot_id, layout.MANIFEST)))
        manifest: dict[str, Any] = json.loads(data)
        if (manifest.get("format"), manifest.get("tenant_id"), manifest.get("snapshot_id")) != (
                FORMAT, tenant_id, snapshot_id):
            raise VerificationFailed(f"{key}: not the manifest of snapshot {snapshot_id}",
                                     tenant_id=tenant_id)
        if manifest.get("version") not in READABLE_VERSIONS:
            raise VerificationFailed(f"{key}: manifest version {manifest.get('version')!r} is "
                                     f"not supported (reads {READABLE_VERSIONS})",
                                     tenant_id=tenant_id)
        return manifest

    def documents(self, keys: Keys, tenant_id: str, manifest: dict[str, Any]
                  ) -> Iterator[dict[str, Any]]:
        """The snapshot's document entries, streamed from its index (format 3) or taken from
        the manifest (formats 1 and 2), each with its blob's sizes and ciphertext hash.

        A reader must consume the iterator to its end before trusting the list as a whole:
        the index's size and hash are checked there.
        """
        if manifest["version"] < 3:
            yield from legacy_entries(manifest)
            return
        snapshot_id, described = manifest["snapshot_id"], manifest["documents"]
        if "chunks" in described:  # version 4: chunks of lines, blobs shared by snapshots
            key = f"the document index of snapshot {snapshot_id}"
            chunks = self._chained(keys, tenant_id, described["chunks"])
        elif described.get("object") == INDEX:  # version 3: an object of the snapshot
            key = layout.snapshot_prefix(tenant_id, snapshot_id) + INDEX
            chunks = self.decrypt_object(keys, tenant_id, key, object_name(snapshot_id, INDEX))
        else:
            raise VerificationFailed(f"snapshot {snapshot_id}: the manifest names no document "
                                     "index", tenant_id=tenant_id)
        try:
            yield from parse(chunks, key, described)
        except VerificationFailed as err:
            raise VerificationFailed(str(err), tenant_id=tenant_id) from err

    def _chained(self, keys: Keys, tenant_id: str, chunks: list[dict[str, Any]]
                 ) -> Iterator[bytes]:
        """The plaintext of blobs one after the other, each inflated when the manifest says it
        is compressed (version 5); the whole is checked by the caller. Packed chunks (version
        6) are read first, one ranged GET per pack, into a temporary file: an index's chunks
        sit in packs of several nights, in any order, and a pack is read once."""
        with tempfile.TemporaryFile(prefix="tenant-export-index-") as spool:
            places: dict[str, tuple[int, int]] = {}  # packed blob -> its plaintext in spool
            by_pack: dict[str, dict[str, dict[str, Any]]] = {}
            for chunk in chunks:
                if chunk.get("pack"):
                    by_pack.setdefault(chunk["pack"], {})[chunk["blob"]] = chunk
            for pack, members in by_pack.items():
                for entry, plain in self.pack_plaintexts(keys, tenant_id, pack,
                                                         list(members.values()), ranged=True):
                    places[entry["blob"]] = (spool.seek(0, io.SEEK_END), len(plain))
                    spool.write(plain)
            for chunk in chunks:
                key = layout.blob_key(tenant_id, chunk.get("pack") or chunk["blob"])
                if chunk.get("pack"):
                    spool.seek(places[chunk["blob"]][0])
                    pieces: Iterable[bytes] = [spool.read(places[chunk["blob"]][1])]
                else:
                    pieces = self.decrypt_object(keys, tenant_id, key, BLOB_OBJECT)
                compression = chunk.get("compression")
                if compression is None:
                    yield from pieces
                elif compression == "zlib":
                    yield from inflate(pieces, key, tenant_id)
                else:
                    raise VerificationFailed(f"{key}: compression {compression!r} is not "
                                             "supported", tenant_id=tenant_id)

    def table_chunks(self, keys: Keys, tenant_id: str, manifest: dict[str, Any]
                     ) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        """``(table, chunk entry)`` for every chunk of the snapshot's tables, in the manifest's
        order: listed inline by formats 4 to 6, streamed from the table index since format 7
        (consume to the end before trusting the list: the index is checked there). Tables
        of formats 1 to 3 are one object each and have no chunks."""
        if manifest["version"] < 7:
            for table in manifest["tables"]:
                for chunk in table.get("chunks", []):
                    yield table, chunk
            return
        described = manifest.get("table_index")
        what = f"the table index of snapshot {manifest['snapshot_id']}"
        if not isinstance(described, dict) or not isinstance(described.get("chunks"), list):
            raise VerificationFailed(f"{what}: the manifest does not describe it",
                                     tenant_id=tenant_id)
        try:
            yield from table_entries(lines(self._chained(keys, tenant_id, described["chunks"]),
                                           what, described), manifest["tables"], what)
        except VerificationFailed as err:
            raise VerificationFailed(str(err), tenant_id=tenant_id) from err

    def table_index(self, keys: Keys, tenant_id: str, manifest: dict[str, Any]
                    ) -> TableChunkIndex:
        """Every table's chunk entries, read and checked now, then served table by table in
        any order from a temporary file (close it, or use it as a context manager)."""
        return TableChunkIndex(self.table_chunks(keys, tenant_id, manifest))

    def blobs(self, keys: Keys, tenant_id: str, manifest: dict[str, Any]) -> Iterator[str]:
        """Every object under ``blobs/`` the snapshot needs: its table chunks and indexes
        (format 4; the table index's since 7), its documents' blobs or their packs (format 5;
        names may repeat). Prune keeps these; consume to the end (the indexes are checked
        there)."""
        for described in (manifest.get("documents"), manifest.get("table_index")):
            for chunk in described.get("chunks", []) if isinstance(described, dict) else []:
                yield chunk.get("pack") or chunk["blob"]
        for _, chunk in self.table_chunks(keys, tenant_id, manifest):
            yield chunk.get("pack") or chunk["blob"]
        for doc in self.documents(keys, tenant_id, manifest):
            if doc.get("blob"):
                yield doc.get("pack") or doc["blob"]

    def list_snapshots(self, tenant_id: str) -> list[str]:
        """Ids of complete snapshots (those with a manifest), oldest first."""
        return complete_snapshots(self.s3, self.bucket, tenant_id)

    def resolve_snapshot(self, tenant_id: str, snapshot_id: str | None,
                         complete: list[str] | None = None) -> str:
        """The given snapshot if complete, else the newest complete one (``complete``: the
        listing, when the caller has it already)."""
        complete = self.list_snapshots(tenant_id) if complete is None else complete
        if snapshot_id is None:
            if not complete:
                raise BadInput(f"tenant {tenant_id!r} has no complete backup snapshot",
                               tenant_id=tenant_id)
            return complete[-1]
        if snapshot_id not in complete:
            raise BadInput(f"no complete snapshot {snapshot_id!r} for tenant {tenant_id!r}",
                           tenant_id=tenant_id)
        return snapshot_id
