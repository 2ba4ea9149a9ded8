"""The tenant's tables into the package: each read once, feeding its CSV and its workbook.

One read of a table streams every batch into two writers at once: the exact CSV (the dialect
the request chose) and the ``.xlsx`` workbook a person opens without an import dialog. A table
wider than a sheet (16,384 columns) keeps its CSV and is reported, never dropped. The tenants
table also tells the guide the tenant's name and language (its ``locale`` column, or
``language``/``lang``), so no second query is needed.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any, cast

import pyarrow as pa

from exporters.csv_writer import CsvDialect, CsvTableWriter
from exporters.datapackage import UNOWNED, FileRecord, table_schema
from exporters.names import UniqueNames
from exporters.xlsx_writer import EXCEL_MAX_COLUMNS, XlsxTableWriter
from sources.catalog import Catalog
from sources.database import Snapshot, TableStream
from sources.tables import TablePlan, TenantRef
from sources.unowned import UnownedAhead
from storage.objects import HashingSink

CSV_TYPE = "text/csv; charset=utf-8"
XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
NAME_COLUMNS = ("name", "display_name", "title")
LANGUAGE_COLUMNS = ("locale", "language", "lang")
Sink = Callable[[str, str], AbstractContextManager[HashingSink]]


@dataclass
class TenantFacts:
    """What the tenants table says about the tenant for its guide."""

    name: str | None = None
    language: str | None = None

    @classmethod
    def from_batch(cls, batch: pa.RecordBatch) -> TenantFacts:
        """The first row's name and locale, from the first column named like one."""
        if batch.num_rows == 0:
            return cls()
        row = batch.slice(0, 1).to_pylist()[0]
        name = next((row[c] for c in NAME_COLUMNS if isinstance(row.get(c), str)), None)
        language = next((row[c] for c in LANGUAGE_COLUMNS if isinstance(row.get(c), str)), None)
        return cls(name=name or None, language=language or None)


@dataclass
class TablesWritten:
    """The files of the tables, and what the guide and the documents index need from them."""

    records: list[FileRecord] = field(default_factory=list)
    tenant: TenantFacts = field(default_factory=TenantFacts)
    truncated_cells: int = 0
    too_wide: list[tuple[str, int]] = field(default_factory=list)
    schemas: dict[str, pa.Schema] = field(default_factory=dict)  # by table name
    rows: int = 0


def write_tables(catalog: Catalog, snap: Snapshot, key: TenantRef, sink: Sink, *,
                 dialect: CsvDialect, created: datetime,
                 table_done: Callable[[str, int], None] | None = None) -> TablesWritten:
    """Every table of the tenant as ``data/<name>.csv`` and ``data/<name>.xlsx``.

    Args:
        catalog: the tables to read (every exported table of the platform).
        snap: the one snapshot every table is read from.
        key: the tenant as stored.
        sink: opens a verified upload for a package path and content type.
        dialect: how every CSV is written (recorded on each resource).
        created: the export's time, the workbooks' creation date (reproducible bytes).
        table_done: called with each table's name and row count once its files are written
            (their PUTs may still be in flight: the sink's owner waits for them).
    """
    written = TablesWritten()
    names = UniqueNames()
    # The platform-wide counts of rows no tenant gets run beside the reads when the snapshot
    # has a side connection (the same statements, the same instant), else table by table here.
    ahead = snap.unowned_ahead(catalog.tables)
    try:
        for plan in catalog.tables:
            stream = snap.read_table(plan, key, schema=catalog.config.db_schema)
            stem = f"data/{names.claim(plan.name, 'table')}"
            tenants = plan.name == catalog.config.tenants_table
            csv_record, rows = _write_table(stream, plan, stem, sink, dialect, created,
                                            written, tenants=tenants)
            csv_record.extra.update(_scope_extra(snap, plan, ahead))
            written.schemas[plan.name] = stream.schema
            written.rows += rows
            if table_done is not None:
                table_done(plan.name, rows)
    finally:
        if ahead is not None:
            ahead.close()
    return written


def _write_table(stream: TableStream, plan: TablePlan, stem: str, sink: Sink,
                 dialect: CsvDialect, created: datetime, written: TablesWritten, *,
                 tenants: bool) -> tuple[FileRecord, int]:
    """One read of the table into its CSV and (when it fits a sheet) its workbook;
    ``tenants``: the tenants table, whose row names the tenant and its language."""
    wide = len(stream.schema) > EXCEL_MAX_COLUMNS
    with ExitStack() as stack:
        csv_out = stack.enter_context(sink(f"{stem}.csv", CSV_TYPE))
        csv = CsvTableWriter(cast(IO[bytes], csv_out), stream.schema, dialect=dialect)
        book: XlsxTableWriter | None = None
        book_out: HashingSink | None = None
        if not wide:
            book_out = stack.enter_context(sink(f"{stem}.xlsx", XLSX_TYPE))
            book = stack.enter_context(XlsxTableWriter(
                cast(IO[bytes], book_out), stream.schema, sheet_name=plan.name,
                created=created))
        for batch in stream.batches:
            if tenants and written.tenant.name is None and written.tenant.language is None:
                written.tenant = TenantFacts.from_batch(batch)
            csv.write_batch(batch)
            if book is not None:
                book.write_batch(batch)
        csv.close()
        if book is not None:
            book.close()  # the workbook reaches its sink here, inside the upload
    csv_record = FileRecord(
        path=f"{stem}.csv", bytes=csv_out.bytes, sha256=csv_out.sha256, rows=csv.rows,
        kind="table", table=plan.name, schema=table_schema(stream.schema, plan.primary_key),
        dialect=dialect.to_descriptor(), foreign_keys=[
            {"fields": list(fk.columns), "table": fk.parent,
             "parent_fields": list(fk.parent_columns)} for fk in plan.foreign_keys])
    written.records.append(csv_record)
    if book is not None and book_out is not None:
        written.truncated_cells += book.truncated_cells
        extra: dict[str, Any] = {"x-sheets": list(book.sheets)}
        if book.truncated_cells:
            extra["x-truncated-cells"] = book.truncated_cells
        written.records.append(FileRecord(
            path=f"{stem}.xlsx", bytes=book_out.bytes, sha256=book_out.sha256, kind="workbook",
            table=plan.name, extra=extra))
    else:
        written.too_wide.append((plan.name, len(stream.schema)))
        csv_record.extra["x-no-workbook"] = (
            f"{len(stream.schema)} columns: more than a sheet holds ({EXCEL_MAX_COLUMNS})")
    return csv_record, csv.rows


def _scope_extra(snap: Snapshot, plan: TablePlan, ahead: UnownedAhead | None
                 ) -> dict[str, Any]:
    """How the table's rows were chosen, and how many rows of it went to nobody."""
    scope = plan.effective_scope
    extra: dict[str, Any] = {"x-scope": scope.describe()}
    if scope.kind in ("column", "references"):
        cross, orphans = ahead.get(plan.name) if ahead is not None else snap.unowned(plan)
        extra.update({UNOWNED["cross_tenant_rows"]: cross, UNOWNED["orphan_rows"]: orphans})
    return extra
