"""The tenant's uploaded documents into ZIP parts, listed in ``documents/index.csv``.

``index.csv`` goes through the tables' CSV writer in the package's dialect; its
``document_id`` keeps the type of the documents table's id column (the field the table's own
CSV was written with), and it is declared as referring to that table. Each document is read
once from the documents bucket; its original filename and, where the platform records one
(an ``uploaded_at`` column), its upload date go into the index and onto its ZIP entry.
The blobs are fetched by a bounded pool reading ahead of the ZIP writer (``flows.fetch_pool``):
round trips overlap, the ZIP keeps the documents' order and bytes, memory stays bounded.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from contextlib import AbstractContextManager, closing
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any, cast

import pyarrow as pa

from exporters.csv_writer import CsvDialect
from exporters.datapackage import FileRecord, index_schema
from exporters.documents import (
    DocumentInput,
    IndexWriter,
    PartsSummary,
    write_document_parts,
)
from exporters.documents import (
    index_schema as index_arrow_schema,
)
from exporters.xlsx_writer import XlsxTableWriter
from flows.fetch_pool import FetchLimits, ReadAhead
from flows.package_retained import MISSING_FIELD, SHARED_FIELD
from flows.package_tables import CSV_TYPE, XLSX_TYPE, Sink
from sources.catalog import Catalog
from sources.database import Snapshot
from sources.documents import DocumentRef, confined, missing_reason, open_blob, shared_keys
from sources.tables import TenantRef
from storage.objects import HashingSink

INDEX_PATH = "documents/index.csv"
INDEX_WORKBOOK = "documents/index.xlsx"
UPLOADED_COLUMNS = ("uploaded_at",)  # the documents table's column holding the upload date


@dataclass(frozen=True)
class StoredDocument(DocumentRef):
    """A document row with its id as the database holds it and its upload date, if any."""

    key: object = None
    uploaded_at: datetime | None = None


def write_documents(ctx_s3: Any, bucket: str, catalog: Catalog, snap: Snapshot,
                    key: TenantRef, sink: Sink, *, dialect: CsvDialect, part_limit: int,
                    id_field: pa.Field | None, modified_at: datetime,
                    fetch: FetchLimits | None = None) -> list[FileRecord]:
    """``documents/index.csv``, its workbook and the ZIP parts, in that order.

    Args:
        ctx_s3: the S3 client the blobs are read with (from several threads: boto3 clients
            are thread-safe; its connection pool must hold ``fetch.workers`` connections).
        bucket: the documents bucket.
        catalog, snap, key: where the tenant's document rows are read from.
        sink: opens a verified upload for a package path and content type.
        dialect: the package's CSV dialect, for the index too.
        part_limit: bytes after which a ZIP part is closed.
        id_field: the documents table's id field as exported (None: ids as text).
        modified_at: the date of entries whose upload date is unknown (the export's).
        fetch: how many blobs are read at once and how many bytes ahead of the writer
            (default: ``FetchLimits()``, 16 in flight).
    Raises:
        StorageError: a blob could not be read (not a missing one: that one is listed); the
            fetches still pending are cancelled, and the parts discarded, before it propagates.
    """
    rule = catalog.config.documents
    refs = confined(_stored_documents(catalog, snap, key), rule, key.id)
    missing: list[dict[str, str]] = []

    def opener(ref: DocumentRef) -> Iterator[bytes] | None:
        """On a fetch thread: the blob's chunks, None when it cannot be read."""
        return None if missing_reason(ref) else open_blob(ctx_s3, bucket, ref.storage_key)

    def inputs(fetched: ReadAhead[DocumentRef]) -> Iterator[DocumentInput]:
        for ref, chunks in fetched:  # in the rows' order, whatever order the GETs ended in
            if chunks is None:
                missing.append({"document_id": ref.document_id,
                                "reason": missing_reason(ref) or "object not found"})
            stored = ref if isinstance(ref, StoredDocument) else None
            yield DocumentInput(
                document_id=ref.document_id, filename=ref.filename, open=_given(chunks),
                document_key=stored.key if stored else None,
                uploaded_at=stored.uploaded_at if stored else None)

    parts: list[FileRecord] = []

    def open_part(name: str) -> AbstractContextManager[IO[bytes]]:
        return _Recording(sink(f"documents/{name}", "application/zip"), f"documents/{name}",
                          parts)

    with closing(refs), ReadAhead(refs, opener, fetch) as fetched, \
            sink(INDEX_PATH, CSV_TYPE) as index_out, \
            sink(INDEX_WORKBOOK, XLSX_TYPE) as book_out, XlsxTableWriter(
                cast(IO[bytes], book_out), index_arrow_schema(id_field), sheet_name="documents",
                created=modified_at) as book:
        index = IndexWriter(cast(IO[bytes], index_out), id_field=id_field, dialect=dialect,
                            also=book)
        summary = write_document_parts(inputs(fetched), open_part, index,
                                       part_limit=part_limit, modified_at=modified_at)
        index.close()
        book.close()  # the workbook reaches its upload here
    shared = [] if rule.keys_tenant_scoped is not False else [
        {"document_id": r.document_id, "storage_key": r.storage_key}
        for r in shared_keys(snap, catalog, key)]
    workbook = FileRecord(path=INDEX_WORKBOOK, bytes=book_out.bytes, sha256=book_out.sha256,
                          kind="workbook", rows=index.rows, extra={"x-sheets": list(book.sheets)})
    return [_index_record(index, index_out, summary, missing, shared,
                          documents_table=rule.table if catalog.table(rule.table) else None,
                          id_column=rule.id_column), workbook, *parts]


def _given(chunks: Iterator[bytes] | None) -> Callable[[], Iterator[bytes] | None]:
    """``DocumentInput.open`` for chunks already fetched."""
    return lambda: chunks


def _index_record(index: IndexWriter, out: HashingSink, summary: PartsSummary,
                  missing: list[dict[str, str]], shared: list[dict[str, str | None]], *,
                  documents_table: str | None, id_column: str) -> FileRecord:
    """index.csv as the manifest describes it: its schema, dialect, relation and counts."""
    relation = [] if documents_table is None else [
        {"fields": ["document_id"], "table": documents_table, "parent_fields": [id_column]}]
    return FileRecord(
        path=INDEX_PATH, bytes=out.bytes, sha256=out.sha256, rows=index.rows, kind="index",
        schema=index_schema(index.schema), dialect=index.dialect.to_descriptor(),
        foreign_keys=relation,
        extra={"x-documents-ok": summary.documents_ok,
               "x-documents-missing": summary.documents_missing,
               MISSING_FIELD: missing, **({SHARED_FIELD: shared} if shared else {})})


def _stored_documents(catalog: Catalog, snap: Snapshot, key: TenantRef
                      ) -> Generator[DocumentRef, None, None]:
    """The tenant's document rows in id order, with typed ids and upload dates (none when
    the platform has no documents table)."""
    rule = catalog.config.documents
    plan = catalog.table(rule.table)
    if plan is None:
        return
    present = {c.name for c in plan.columns}
    uploaded = next((c for c in UPLOADED_COLUMNS if c in present), None)
    columns = [rule.id_column, rule.name_column, rule.key_column, *([uploaded] if uploaded else [])]
    rows = snap.select_owned(plan, columns, key, order_by=[rule.id_column],
                             schema=catalog.config.db_schema)
    try:
        for row in rows:
            doc_id, name, blob_key = row[0], row[1], row[2]
            yield StoredDocument(
                document_id=str(doc_id), filename="" if name is None else str(name),
                storage_key=None if blob_key is None else str(blob_key), key=doc_id,
                uploaded_at=upload_date(row[3]) if uploaded else None)
    finally:
        rows.close()


def upload_date(value: object) -> datetime | None:
    """An upload date as the database returned it (a datetime, or ISO 8601 text in SQLite);
    None when it is none of these (the documents table's CSV still holds the value)."""
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.strip())
        except ValueError:
            return None
    return None


class _Recording(AbstractContextManager[IO[bytes]]):
    """Wraps an upload so the finished part is recorded with its size and hash."""

    def __init__(self, inner: AbstractContextManager[HashingSink], path: str,
                 into: list[FileRecord]) -> None:
        self._inner, self._path, self._into = inner, path, into
        self._sink: HashingSink | None = None

    def __enter__(self) -> IO[bytes]:
        self._sink = self._inner.__enter__()
        return cast(IO[bytes], self._sink)  # a RawIOBase is a valid byte sink

    def __exit__(self, *exc: Any) -> bool | None:
        result = self._inner.__exit__(*exc)
        if exc[0] is None and self._sink is not None:
            self._into.append(FileRecord(path=self._path, bytes=self._sink.bytes,
                                         sha256=self._sink.sha256, kind="zip"))
        return result
