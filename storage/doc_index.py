"""A snapshot's document index: one JSON line per document (docs/backup-format.md, section 9.2).

Since format 3 the document list is its own sealed object beside the manifest, written and read
as a stream, so neither a backup nor a restore holds every document in memory; the manifest
keeps only its size, line count and hashes. Snapshots of formats 1 and 2 carry the list inline
(``documents`` and ``blobs``); :func:`legacy_entries` gives their entries the same shape.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from typing import IO, Any

from kernel.errors import VerificationFailed

INDEX = "documents.jsonl"
MAX_LINE_BYTES = 64 * 1024  # a line is a few hundred bytes; S3 keys are at most 1,024 bytes
ENTRY_FIELDS = ("document_id", "storage_key", "status", "etag", "size", "blob", "sha256",
                "ciphertext_bytes", "ciphertext_sha256", "pack", "pack_offset", "pack_blobs")


def encode(entry: dict[str, Any]) -> bytes:
    """One index line: the entry's fields (``None`` values left out), keys sorted, ASCII."""
    kept = {k: entry[k] for k in ENTRY_FIELDS if entry.get(k) is not None}
    if kept.get("status") == "missing":
        kept["blob"] = None  # explicit, as in the inline lists of formats 1 and 2
    return json.dumps(kept, sort_keys=True, separators=(",", ":")).encode("ascii") + b"\n"


class IndexWriter:
    """Writes entries as lines into a sink, counting what the manifest records about them."""

    def __init__(self, sink: IO[bytes]) -> None:
        self._sink = sink
        self.count = 0
        self.missing = 0

    def write(self, entry: dict[str, Any]) -> None:
        """Append one document's entry."""
        self._sink.write(encode(entry))
        self.count += 1
        if entry.get("status") == "missing":
            self.missing += 1

    def write_all(self, entries: Iterable[dict[str, Any]]) -> None:
        """Append every entry, in the order given."""
        for entry in entries:
            self.write(entry)


def parse(chunks: Iterable[bytes], what: str, expected: dict[str, Any] | None = None
          ) -> Iterator[dict[str, Any]]:
    """The entries of a document index from its plaintext chunks, one line at a time (checked
    as :func:`lines` says). Entries come with ``plaintext_bytes`` (the document's ``size``),
    the shape :func:`legacy_entries` gives older formats."""
    for number, line in lines(chunks, what, expected):
        yield _entry(line, what, number)


def lines(chunks: Iterable[bytes], what: str, expected: dict[str, Any] | None = None
          ) -> Iterator[tuple[int, bytes]]:
    """The numbered lines of an index (documents, or table chunks since format 7) from its
    plaintext chunks, one at a time, none longer than :data:`MAX_LINE_BYTES`.

    With ``expected`` (the manifest's record of the index), the line count, size and SHA-256
    are checked once the stream ends: an index rolled back to another version of the same
    object fails here, even though it decrypts.
    """
    digest, total, count, pending = hashlib.sha256(), 0, 0, b""
    for chunk in chunks:
        digest.update(chunk)
        total += len(chunk)
        split = (pending + chunk).split(b"\n")
        pending = split.pop()
        for line in [*split, pending]:
            if len(line) > MAX_LINE_BYTES:  # a reader's memory must not depend on the input
                raise VerificationFailed(f"{what}: a line after line {count} is longer than "
                                         f"{MAX_LINE_BYTES} bytes")
        for line in split:
            count += 1
            yield count, line
    if pending:
        raise VerificationFailed(f"{what}: the last line is not terminated")
    if expected is not None and (count, total, digest.hexdigest()) != (
            expected.get("count"), expected.get("plaintext_bytes"),
            expected.get("plaintext_sha256")):
        raise VerificationFailed(
            f"{what}: holds {count} lines, {total} bytes, sha256 {digest.hexdigest()}; the "
            f"manifest says {expected.get('count')} lines, {expected.get('plaintext_bytes')} "
            f"bytes, sha256 {expected.get('plaintext_sha256')}")


def _entry(line: bytes, what: str, number: int) -> dict[str, Any]:
    try:
        entry = json.loads(line)
    except ValueError as err:
        raise VerificationFailed(f"{what}: line {number} is not JSON ({err})") from err
    if not isinstance(entry, dict) or not isinstance(entry.get("document_id"), str):
        raise VerificationFailed(f"{what}: line {number} is not a document entry")
    if entry.get("blob"):  # the blob's sizes and hash travel with the document since format 3
        entry.update(plaintext_bytes=entry.get("size"), listed=True)
    return entry


def legacy_entries(manifest: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The inline document list of a format-1 or -2 manifest, each entry completed with its
    blob's sizes and ciphertext hash from ``blobs`` (a format-1 entry has no ``sha256``: its
    blob name is the plaintext SHA-256)."""
    blobs: dict[str, dict[str, Any]] = manifest.get("blobs", {})
    for doc in manifest["documents"]:
        info = blobs.get(doc.get("blob") or "", {})
        yield {**doc, **{k: info[k] for k in ("plaintext_bytes", "ciphertext_bytes",
                                              "ciphertext_sha256") if k in info},
               "listed": bool(doc.get("blob")) and doc["blob"] in blobs}
