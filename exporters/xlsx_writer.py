"""One table as an ``.xlsx`` workbook a person can open without an import dialog.

Every cell is written with an explicit type (``exporters.xlsx_cells`` says which): text is a
string cell, so ``=1+1``, ``007`` and 20-digit codes stay exactly as typed and no formula is
ever written; numbers, booleans and dates are cells of their kind. A table longer than a sheet
(1,048,576 rows, header included) continues on further sheets, each with the header.

xlsxwriter runs in constant-memory mode: one row is held in memory, the rows go to temporary
files in a private directory, and ``close`` assembles the workbook there and copies it to the
sink in chunks. The directory is removed whatever happens (``abort`` or an error), so nothing
outlives the writer. Disk use is about twice the sheet XML of the table.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from datetime import datetime
from types import TracebackType
from typing import IO, Any

import pyarrow as pa
from xlsxwriter import Workbook  # type: ignore[import-untyped]  # no stubs, no py.typed
from xlsxwriter.worksheet import Worksheet  # type: ignore[import-untyped]

from exporters.xlsx_cells import column_plan, fit_text
from kernel.errors import TerminalError

EXCEL_MAX_ROWS = 1_048_576
EXCEL_MAX_COLUMNS = 16_384
SLICE_ROWS = 8_192  # rows converted to Python values at once: bounded memory per batch
COPY_CHUNK = 1024 * 1024
_SHEET_NAME_MAX = 31
_SHEET_FORBIDDEN = str.maketrans(dict.fromkeys("[]:*?/\\", "_"))
_OPTIONS = {"constant_memory": True, "strings_to_numbers": False, "strings_to_formulas": False,
            "strings_to_urls": False}


class WorkbookLimitError(TerminalError):
    """The table cannot be a workbook (more columns than a sheet has); its CSV stays exact."""


class _ExactSheet(Worksheet):  # type: ignore[misc]  # xlsxwriter is untyped
    """xlsxwriter's worksheet with two corrections, both pinned by tests/test_xlsx_writer.py.

    Numbers: xlsxwriter writes ``%.16G``, which changes doubles that need 17 digits
    (``0.30000000000000004`` would read back as ``0.3``); the shortest round-trip text is used.
    Text: in constant-memory mode xlsxwriter writes a string that starts with ``<r>`` and ends
    with ``</r>`` as raw rich-text XML, unescaped; it is written as a plain, escaped string.
    """

    def _xml_number_element(self, number: float, attributes: Any = ()) -> None:
        attrs = "".join(f' {k}="{v}"' for k, v in attributes)  # cell refs and style ids
        text = str(number) if isinstance(number, int) else repr(float(number))
        self.fh.write(f"<c{attrs}><v>{text}</v></c>")

    def _xml_rich_inline_string(self, string: str, attributes: Any = ()) -> None:
        self._xml_inline_string(string, True, list(attributes))


for _name in ("_xml_number_element", "_xml_rich_inline_string", "_xml_inline_string",
              "_escape_attributes", "_write_string", "_write_number", "_write_boolean"):
    if not hasattr(Worksheet, _name):  # fail loudly rather than write altered values
        raise ImportError(f"xlsxwriter changed: Worksheet.{_name} is gone; check _ExactSheet")


def sheet_name(name: str, number: int = 1) -> str:
    """A valid, unique-per-workbook sheet name: ``members``, ``members (2)``, ..."""
    base = name.translate(_SHEET_FORBIDDEN).strip("'") or "data"
    suffix = "" if number == 1 else f" ({number})"
    return base[: _SHEET_NAME_MAX - len(suffix)] + suffix


class XlsxTableWriter:
    """Streams one table's batches into a workbook written to ``sink`` on ``close``.

    Args:
        sink: the byte sink (its owner closes it); written only by ``close``.
        schema: the sources' Arrow schema, metadata included (it decides the cell types).
        sheet_name: the first sheet's name (the table's); later sheets add `` (2)``, ...
        max_rows: rows per sheet, header included (Excel's limit; smaller in tests).
        created: the workbook's creation date (makes the bytes reproducible).
        tmp_dir: where the private temporary directory goes (the system's by default).
    Raises:
        WorkbookLimitError: the table has more columns than a sheet.
    """

    def __init__(self, sink: IO[bytes], schema: pa.Schema, *, sheet_name: str = "data",
                 max_rows: int = EXCEL_MAX_ROWS, created: datetime | None = None,
                 tmp_dir: str | None = None) -> None:
        if len(schema) > EXCEL_MAX_COLUMNS:
            raise WorkbookLimitError(f"{len(schema)} columns: a sheet holds {EXCEL_MAX_COLUMNS}")
        if max_rows < 2:
            raise ValueError("a sheet needs room for the header and one row")
        self._sink, self._names, self._max_rows = sink, [f.name for f in schema], max_rows
        self._base_name = sheet_name
        self._plans = [column_plan(f) for f in schema]
        self._tmp = tempfile.TemporaryDirectory(prefix="xlsx-", dir=tmp_dir,
                                                ignore_cleanup_errors=True)
        try:
            self._path = os.path.join(self._tmp.name, "table.xlsx")
            self._book = Workbook(self._path, {**_OPTIONS, "tmpdir": self._tmp.name})
            if created is not None:
                self._book.set_properties({"created": created})
            self._header = self._book.add_format({"bold": True})
            self._text = self._book.add_format({"num_format": "@"})
            self._formats = [None if p.number_format is None
                             else self._book.add_format({"num_format": p.number_format})
                             for p in self._plans]
            self.sheets: list[str] = []
            self._new_sheet()
        except BaseException:
            self.abort()
            raise
        self.rows = 0
        self.truncated_cells = 0  # texts longer than a cell holds (see xlsx_cells.fit_text)
        self._closed = False

    def write_batch(self, batch: pa.RecordBatch) -> None:
        """Append one batch's rows, starting a new sheet whenever one is full."""
        try:
            for start in range(0, batch.num_rows, SLICE_ROWS):
                self._write_rows(batch.slice(start, SLICE_ROWS))
        except BaseException:
            self.abort()
            raise

    def close(self) -> None:
        """Assemble the workbook and copy it to the sink; the temporary files are removed."""
        if self._closed:
            return
        self._closed = True
        try:
            self._book.close()
            with open(self._path, "rb") as built:
                shutil.copyfileobj(built, self._sink, COPY_CHUNK)
        finally:
            self._cleanup()

    def abort(self) -> None:
        """Discard everything written so far (nothing reaches the sink)."""
        self._closed = True
        self._cleanup()

    def __enter__(self) -> XlsxTableWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()

    def _new_sheet(self) -> None:
        name = sheet_name(self._base_name, len(self.sheets) + 1)
        self._sheet = self._book.add_worksheet(name, worksheet_class=_ExactSheet)
        self._sheet.freeze_panes(1, 0)
        for col, title in enumerate(self._names):
            self._sheet.write_string(0, col, title, self._header)
        self.sheets.append(name)
        self._row = 1

    def _write_rows(self, rows: pa.RecordBatch) -> None:
        columns = [plan.convert(array) for plan, array in zip(self._plans, rows.columns,
                                                               strict=True)]
        records = zip(*columns, strict=True) if columns else (() for _ in range(rows.num_rows))
        for values in records:
            if self._row >= self._max_rows:
                self._new_sheet()
            self._write_row(values)
            self._row += 1
            self.rows += 1

    def _write_row(self, values: tuple[Any, ...]) -> None:
        # The undecorated writers (no A1-notation parsing): a quarter less time per cell.
        sheet, row = self._sheet, self._row
        for col, value in enumerate(values):
            if value is None:
                continue
            if isinstance(value, str):
                text, cut = fit_text(value)
                self.truncated_cells += cut
                sheet._write_string(row, col, text, self._text)
            elif isinstance(value, bool):
                sheet._write_boolean(row, col, value)
            else:
                sheet._write_number(row, col, value, self._formats[col])

    def _cleanup(self) -> None:
        book = getattr(self, "_book", None)
        for sheet in book.worksheets() if book is not None else ():
            handle = getattr(sheet, "row_data_fh", None)  # xlsxwriter's open row-data file
            if handle is not None and not handle.closed:
                handle.close()
        self._tmp.cleanup()
