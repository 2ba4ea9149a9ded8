"""Uploaded documents into streamed ZIP64 parts, with ``documents/index.csv``.

Each document is read once, hashed while it streams into the current part, and listed in the
index; a document whose blob is gone is listed as ``missing``, never dropped. A part is closed
once it holds ``part_limit`` bytes (documents are never split), so no part grows without bound.
Each entry carries the document's upload date where the platform records one, so a person
unpacking the part sees when each file was uploaded rather than when it was exported.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any

import pyarrow as pa
from stream_zip import ZIP_64, stream_zip

from exporters.base import TableWriter
from exporters.csv_writer import CsvDialect, CsvTableWriter
from exporters.names import UniqueNames
from kernel.arrowmeta import META_SCHEMA_TYPE

# The contract of DESIGN §3.4 first; columns are only ever added after it.
INDEX_COLUMNS = ("document_id", "zip_part", "zip_path", "bytes", "sha256", "status",
                 "filename", "uploaded_at")
PART_NAME = "documents-{:04d}.zip"
# Documents are mostly already compressed (PDF, JPEG, DOCX, XLSX): deflate level 0 ("stored"
# blocks inside a deflate stream) keeps ZIP streaming (sizes and CRC go in a data descriptor) at
# almost no CPU cost; level 1 costs ~15x the CPU for no gain on such files (bench/README.md).
COMPRESSION_LEVEL = 0
INDEX_FLUSH_ROWS = 1024  # index rows buffered before they go out as one Arrow batch
# What a ZIP entry can say: MS-DOS dates start in 1980, and stream-zip's extended timestamp is
# a signed 32-bit Unix time. An upload date outside this range falls back to ``modified_at``.
ZIP_TIME_MIN = datetime(1980, 1, 1, tzinfo=UTC)
ZIP_TIME_MAX = datetime(2038, 1, 19, 3, 14, 6, tzinfo=UTC)


@dataclass(frozen=True)
class DocumentInput:
    """A document to package: ``open`` returns its chunks, or None when its blob is gone.

    ``document_id`` is the id as text (names the fallback entry ``document-<id>``);
    ``document_key`` the id as the database stores it (an int for an integer key), written to
    ``index.csv`` with its type; ``uploaded_at`` the upload date where the platform records it
    (naive values are taken as UTC).
    """

    document_id: str
    filename: str | None
    open: Callable[[], Iterator[bytes] | None]
    document_key: object = None
    uploaded_at: datetime | None = None

    @property
    def key(self) -> object:
        """The id for ``index.csv``: the stored key when known, else the text id."""
        return self.document_id if self.document_key is None else self.document_key


@dataclass
class PartsSummary:
    """What went into the parts."""

    parts: list[str]
    documents_ok: int = 0
    documents_missing: int = 0
    document_bytes: int = 0


def index_schema(id_field: pa.Field | None = None) -> pa.Schema:
    """The Arrow schema of ``index.csv``; ``id_field`` is the documents table's id column (its
    type and metadata decide how ``document_id`` is written), text when not given."""
    id_type = pa.field("document_id", pa.string()) if id_field is None else id_field
    return pa.schema([
        id_type.with_name("document_id"),
        pa.field("zip_part", pa.string()),
        pa.field("zip_path", pa.string()),
        pa.field("bytes", pa.int64()),
        pa.field("sha256", pa.string()),
        pa.field("status", pa.string()),
        pa.field("filename", pa.string()),
        pa.field("uploaded_at", pa.string(), metadata={META_SCHEMA_TYPE: b"datetime"}),
    ])


class IndexWriter:
    """``index.csv`` through the same CSV writer as the tables (quoting rule, dialect).

    Rows are buffered up to ``INDEX_FLUSH_ROWS`` and written as one batch, so memory does not
    grow with the tenant; ``close`` writes the rest. ``also`` receives the same batches (the
    index's workbook, built from ``index_schema(id_field)``); its owner closes it.
    """

    def __init__(self, sink: IO[bytes], *, id_field: pa.Field | None = None,
                 dialect: CsvDialect | None = None, excel: bool = False,
                 also: TableWriter | None = None) -> None:
        self.schema = index_schema(id_field)
        self._csv = CsvTableWriter(sink, self.schema, dialect=dialect, excel=excel)
        self._also = also
        self._text_ids = pa.types.is_string(self.schema[0].type) or pa.types.is_large_string(
            self.schema[0].type)
        self._pending: list[list[Any]] = [[] for _ in self.schema]
        self.rows = 0

    @property
    def dialect(self) -> CsvDialect:
        """The dialect the index is written in (for ``datapackage.json``)."""
        return self._csv.dialect

    def add(self, document_id: object, part: str, path: str, size: int | None, sha256: str,
            status: str, *, filename: str | None = None,
            uploaded_at: datetime | None = None) -> None:
        """One row; empty part, path, size and hash for a missing document."""
        if self._text_ids and document_id is not None and not isinstance(document_id, str):
            document_id = str(document_id)
        row = [document_id, part or None, path or None, size, sha256 or None, status, filename,
               None if uploaded_at is None else _iso(uploaded_at)]
        for column, value in zip(self._pending, row, strict=True):
            column.append(value)
        self.rows += 1
        if len(self._pending[0]) >= INDEX_FLUSH_ROWS:
            self._flush()

    def close(self) -> None:
        """Write the buffered rows; the sink stays open (its owner closes it)."""
        self._flush()
        self._csv.close()

    def _flush(self) -> None:
        if not self._pending[0]:
            return
        arrays = [pa.array(values, type=f.type) for values, f in zip(self._pending, self.schema,
                                                                      strict=True)]
        batch = pa.record_batch(arrays, schema=self.schema)
        self._csv.write_batch(batch)
        if self._also is not None:
            self._also.write_batch(batch)
        self._pending = [[] for _ in self.schema]


def _iso(moment: datetime) -> str:
    """ISO 8601; an aware time in UTC with its offset, a naive one as recorded."""
    return moment.astimezone(UTC).isoformat() if moment.tzinfo else moment.isoformat()


def entry_time(uploaded_at: datetime | None, fallback: datetime) -> datetime:
    """The time a ZIP entry carries: the upload date when a ZIP can say it, else ``fallback``."""
    if uploaded_at is None:
        return fallback
    moment = uploaded_at if uploaded_at.tzinfo else uploaded_at.replace(tzinfo=UTC)
    moment = moment.astimezone(UTC)
    return moment if ZIP_TIME_MIN <= moment <= ZIP_TIME_MAX else fallback


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
        modified_at: the timestamp of entries whose upload date is unknown (the export's).
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
            index.add(doc.key, "", "", None, "", "missing", filename=doc.filename,
                      uploaded_at=doc.uploaded_at)
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
                name = names.claim(doc.filename or "", f"document-{doc.document_id}")
                hashed = _Hashing(chunks)
                yield (name, entry_time(doc.uploaded_at, modified_at), 0o100644, ZIP_64,
                       hashed)
                index.add(doc.key, part, name, hashed.size, hashed.sha256.hexdigest(), "ok",
                          filename=doc.filename, uploaded_at=doc.uploaded_at)
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
