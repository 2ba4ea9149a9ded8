"""Uploaded documents into streamed ZIP64 parts, with ``documents/index.csv``.

Each document is read once, hashed while it streams into the current part, and listed in the
index; a document whose blob is gone is listed as ``missing``, never dropped. A part is closed
once it holds ``part_limit`` bytes (documents are never split), so no part grows without bound.
"""

from __future__ import annotations

import csv
import hashlib
import io
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any

from stream_zip import ZIP_64, stream_zip

from exporters.names import UniqueNames

INDEX_COLUMNS = ("document_id", "zip_part", "zip_path", "bytes", "sha256", "status")
PART_NAME = "documents-{:04d}.zip"
# Documents are mostly already compressed (PDF, JPEG, DOCX, XLSX): deflate level 0 ("stored"
# blocks inside a deflate stream) keeps ZIP streaming (sizes and CRC go in a data descriptor) at
# almost no CPU cost; level 1 costs ~15x the CPU for no gain on such files (bench/README.md).
COMPRESSION_LEVEL = 0


@dataclass(frozen=True)
class DocumentInput:
    """A document to package: ``open`` returns its chunks, or None when its blob is gone."""

    document_id: str
    filename: str
    open: Callable[[], Iterator[bytes] | None]


@dataclass
class PartsSummary:
    """What went into the parts."""

    parts: list[str]
    documents_ok: int = 0
    documents_missing: int = 0
    document_bytes: int = 0


class IndexWriter:
    """``index.csv`` rows written as they come (memory does not grow with the tenant)."""

    def __init__(self, sink: IO[bytes]) -> None:
        self._text = io.TextIOWrapper(sink, encoding="utf-8", newline="", write_through=True)
        self._csv = csv.writer(self._text, lineterminator="\r\n")
        self._csv.writerow(INDEX_COLUMNS)
        self.rows = 0

    def add(self, document_id: str, part: str, path: str, size: int | None, sha256: str,
            status: str) -> None:
        """One row; empty fields for a missing document."""
        self._csv.writerow([document_id, part, path, "" if size is None else size, sha256, status])
        self.rows += 1

    def close(self) -> None:
        """Flush without closing the sink (its owner closes it)."""
        self._text.flush()
        self._text.detach()


class _Hashing:
    """Wraps a chunk stream, counting and hashing what passes through."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self.sha256 = hashlib.sha256()
        self.size = 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            self.sha256.update(chunk)
            self.size += len(chunk)
            yield chunk


def write_document_parts(
    documents: Iterable[DocumentInput],
    open_part: Callable[[str], AbstractContextManager[IO[bytes]]],
    index: IndexWriter,
    *,
    part_limit: int,
    modified_at: datetime,
) -> PartsSummary:
    """Stream every document into ZIP parts opened with ``open_part(part_name)``.

    Args:
        documents: the tenant's documents, in the order they should appear.
        open_part: returns a context manager giving the byte sink of one part; it must discard
            the part if the block raises.
        index: where each document's row goes, as soon as it is known.
        part_limit: bytes after which the current part is closed.
        modified_at: the timestamp stored for every entry.
    Returns:
        The part names written and counts.
    """
    names = UniqueNames()
    summary = PartsSummary(parts=[])
    pending = iter(documents)

    def next_present() -> tuple[DocumentInput, Iterator[bytes]] | None:
        for doc in pending:
            chunks = doc.open()
            if chunks is not None:
                return doc, chunks
            index.add(doc.document_id, "", "", None, "", "missing")
            summary.documents_missing += 1
        return None

    item = next_present()
    while item is not None:
        part = PART_NAME.format(len(summary.parts) + 1)
        written = 0

        consumed = 0

        def members(
            first: tuple[DocumentInput, Iterator[bytes]], part: str = part
        ) -> Iterator[tuple[str, datetime, int, Any, Iterable[bytes]]]:
            nonlocal item, consumed
            current: tuple[DocumentInput, Iterator[bytes]] | None = first
            while current is not None:
                doc, chunks = current
                name = names.claim(doc.filename, f"document-{doc.document_id}")
                hashed = _Hashing(chunks)
                yield name, modified_at, 0o100644, ZIP_64, hashed
                index.add(doc.document_id, part, name, hashed.size, hashed.sha256.hexdigest(), "ok")
                summary.documents_ok += 1
                summary.document_bytes += hashed.size
                consumed += hashed.size
                # stream_zip holds back up to one chunk, so bytes written lag behind: the part
                # size is at least what the documents put in it (deflate level 1 does not shrink
                # incompressible data, and barely shrinks what most uploads are).
                if max(written, consumed) >= part_limit:  # noqa: B023 - read while this part streams
                    item = next_present()
                    return
                current = next_present()
            item = None

        with open_part(part) as sink:
            for chunk in stream_zip(members(item), get_compressobj=_compressobj):
                sink.write(chunk)
                written += len(chunk)
        summary.parts.append(part)
    return summary


def _compressobj() -> zlib._Compress:
    return zlib.compressobj(level=COMPRESSION_LEVEL, wbits=-zlib.MAX_WBITS)
