"""One table as an ``.xlsx`` workbook a person can open without an import dialog.

Every cell is written with an explicit type (``exporters.xlsx_cells`` says which): text is a
string cell, so ``=1+1``, ``007`` and 20-digit codes stay exactly as typed and no formula is
ever written; numbers, booleans and dates are cells of their kind. A table longer than a sheet
(1,048,576 rows, header included) continues on further sheets, each with the header.

xlsxwriter runs in constant-memory mode and makes the workbook: styles, sheet headers, the
package. The data rows no longer go through its per-cell writers (four fifths of the workbook's
CPU time): ``exporters.xlsx_sheet`` builds the same XML for a slice of rows at once, appended to
the sheet's row file that xlsxwriter copies into the sheet at ``close``. Styles get their index
in the order xlsxwriter's writers gave it, so every part is byte for byte what they made.

The package's parts are deflated at level 1 (``XML_LEVEL``), not zlib's default 6: for the
reference platform's tenant of a million rows (20 tables) that cuts the workbooks' CPU time by
a third (7.7 s -> 5.0 s, XML included) for files a quarter larger (35.8 -> 44.7 MiB); the sheet
XML is repetitive, so level 6 mostly buys the last few per cent. The level is set on the
``ZipFile`` xlsxwriter opens for this writer only (``_LeveledZipFile``); any other use of
xlsxwriter in the process keeps its default.

Only one slice of rows is in memory; the rows go to temporary files in a private directory,
and ``close`` assembles the workbook there and copies it to the sink in chunks. The directory
is removed whatever happens (``abort`` or an error), so nothing outlives the writer. Disk use
is about twice the sheet XML of the table.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xlsxwriter.workbook  # type: ignore[import-untyped]  # no stubs, no py.typed
from xlsxwriter import Workbook
from xlsxwriter.utility import xl_col_to_name  # type: ignore[import-untyped]
from xlsxwriter.worksheet import Worksheet  # type: ignore[import-untyped]

from exporters.xlsx_cells import column_plan
from exporters.xlsx_sheet import Cells, Styles, fit_texts, rows_xml
from kernel.errors import TerminalError

EXCEL_MAX_ROWS = 1_048_576
EXCEL_MAX_COLUMNS = 16_384
SLICE_ROWS = 8_192  # rows converted at once: bounded memory per batch
COPY_CHUNK = 1024 * 1024
XML_LEVEL = 1  # deflate level of the workbook's parts (see the module's docstring)
_SHEET_NAME_MAX = 31
_SHEET_FORBIDDEN = str.maketrans(dict.fromkeys("[]:*?/\\", "_"))
_OPTIONS = {"constant_memory": True, "strings_to_numbers": False, "strings_to_formulas": False,
            "strings_to_urls": False}


class WorkbookLimitError(TerminalError):
    """The table cannot be a workbook (more columns than a sheet has); its CSV stays exact."""


class _ExactSheet(Worksheet):  # type: ignore[misc]  # xlsxwriter is untyped
    """xlsxwriter's worksheet, which writes the header row. In constant-memory mode it writes a
    string that starts with ``<r>`` and ends with ``</r>`` as raw rich-text XML, unescaped; it
    is written as a plain, escaped string (as ``exporters.xlsx_sheet`` writes the data rows)."""

    def _xml_rich_inline_string(self, string: str, attributes: Any = ()) -> None:
        self._xml_inline_string(string, True, list(attributes))


for _name in ("_xml_rich_inline_string", "_xml_inline_string", "_write_single_row",
              "_opt_close", "_opt_reopen", "_write_optimized_sheet_data"):
    if not hasattr(Worksheet, _name):  # fail loudly rather than write altered workbooks
        raise ImportError(f"xlsxwriter changed: Worksheet.{_name} is gone; check xlsx_writer")


_ZIP_LEVEL: ContextVar[int | None] = ContextVar("xlsx_zip_level", default=None)


class _LeveledZipFile(zipfile.ZipFile):
    """The ``ZipFile`` xlsxwriter packs a workbook into, at the level ``_Book`` chose while it
    packs (xlsxwriter passes none: zlib's default); outside that, the plain ``ZipFile``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        level = _ZIP_LEVEL.get()
        if level is not None and self.compresslevel is None:
            self.compresslevel = level  # read by ZipFile.write for every part


if xlsxwriter.workbook.ZipFile not in (zipfile.ZipFile, _LeveledZipFile):
    raise ImportError("xlsxwriter changed: workbook.ZipFile is not zipfile's; check xlsx_writer")
xlsxwriter.workbook.ZipFile = _LeveledZipFile


class _Book(Workbook):  # type: ignore[misc]  # xlsxwriter is untyped
    """xlsxwriter's workbook, packed at ``level`` (zlib's 0-9)."""

    def __init__(self, filename: str, options: dict[str, Any], level: int) -> None:
        super().__init__(filename, options)
        self._zip_level = level

    def _store_workbook(self) -> None:
        token = _ZIP_LEVEL.set(self._zip_level)
        try:
            super()._store_workbook()
        finally:
            _ZIP_LEVEL.reset(token)


def sheet_name(name: str, number: int = 1) -> str:
    """A valid, unique-per-workbook sheet name: ``members``, ``members (2)``, ..."""
    base = name.translate(_SHEET_FORBIDDEN).strip("'") or "data"
    suffix = "" if number == 1 else f" ({number})"
    return base[: _SHEET_NAME_MAX - len(suffix)] + suffix


@dataclass
class _Sheet:
    """One worksheet: xlsxwriter's, its row file while rows are appended, and the row held
    back (its sheet row and cells) until the next row with a cell or ``close`` (``_append``)."""

    book_sheet: Any
    rows: IO[bytes] | None
    held: tuple[int, list[Cells]] | None = None


class XlsxTableWriter:
    """Streams one table's batches into a workbook written to ``sink`` on ``close``.

    Args:
        sink: the byte sink (its owner closes it); written only by ``close``.
        schema: the sources' Arrow schema, metadata included (it decides the cell types).
        sheet_name: the first sheet's name (the table's); later sheets add `` (2)``, ...
        max_rows: rows per sheet, header included (Excel's limit; smaller in tests).
        created: the workbook's creation date (makes the bytes reproducible).
        tmp_dir: where the private temporary directory goes (the system's by default).
        level: deflate level of the workbook's parts (``XML_LEVEL`` by default).
    Raises:
        WorkbookLimitError: the table has more columns than a sheet.
    """

    def __init__(self, sink: IO[bytes], schema: pa.Schema, *, sheet_name: str = "data",
                 max_rows: int = EXCEL_MAX_ROWS, created: datetime | None = None,
                 tmp_dir: str | None = None, level: int = XML_LEVEL) -> None:
        if len(schema) > EXCEL_MAX_COLUMNS:
            raise WorkbookLimitError(f"{len(schema)} columns: a sheet holds {EXCEL_MAX_COLUMNS}")
        if max_rows < 2:
            raise ValueError("a sheet needs room for the header and one row")
        self._sink, self._names, self._max_rows = sink, [f.name for f in schema], max_rows
        self._base_name = sheet_name
        self._plans = [column_plan(f) for f in schema]
        self._letters = [xl_col_to_name(col) for col in range(len(schema))]
        self._sheets: list[_Sheet] = []
        self._tmp = tempfile.TemporaryDirectory(prefix="xlsx-", dir=tmp_dir,
                                                ignore_cleanup_errors=True)
        try:
            self._path = os.path.join(self._tmp.name, "table.xlsx")
            self._book = _Book(self._path, {**_OPTIONS, "tmpdir": self._tmp.name}, level)
            if created is not None:
                self._book.set_properties({"created": created})
            self._header = self._book.add_format({"bold": True})
            self._text = self._book.add_format({"num_format": "@"})
            self._formats = [None if p.number_format is None
                             else self._book.add_format({"num_format": p.number_format})
                             for p in self._plans]
            self._styles: dict[int, str] = {}  # id(format) -> its xf index, once first used
            self.sheets: list[str] = []
            self._new_sheet()
        except BaseException:
            self.abort()
            raise
        self.rows = 0
        self.truncated_cells = 0  # texts longer than a cell holds (see xlsx_sheet.fit_text)
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
            for sheet in self._sheets:
                self._close_rows(sheet)
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
        sheet = self._book.add_worksheet(name, worksheet_class=_ExactSheet)
        self._sheets.append(_Sheet(sheet, None))
        sheet.freeze_panes(1, 0)
        for col, title in enumerate(self._names):
            sheet.write_string(0, col, title, self._header)
        sheet._write_single_row(1)  # the header row, as its first data row would flush it
        sheet._opt_close()  # the data rows are appended to the file; reopened at close
        self.sheets.append(name)
        self._row = 1

    def _write_rows(self, rows: pa.RecordBatch) -> None:
        columns = [plan.convert(array) for plan, array in zip(self._plans, rows.columns,
                                                               strict=True)]
        for col, cells in enumerate(columns):
            if cells.text is not None:
                text, cut = fit_texts(cells.text)
                self.truncated_cells += cut
                columns[col] = Cells(text, cells.number, cells.boolean)
        done = 0
        while done < rows.num_rows:
            if self._row >= self._max_rows:
                self._close_rows(self._sheets[-1], keep_held=True)
                self._new_sheet()
            count = min(rows.num_rows - done, self._max_rows - self._row)
            self._append([c.slice(done, count) for c in columns], self._row, count)
            self._row += count
            self.rows += count
            done += count

    def _append(self, columns: list[Cells], first_row: int, count: int) -> None:
        """Rows ``first_row``... of the current sheet.

        xlsxwriter flushed a row, giving the styles its cells use their index, when the next
        row with a cell came, and a sheet's last such row at ``close``; so the last row with a
        cell is held back when it is the first to use a style, and written then.
        """
        sheet = self._sheets[-1]
        present = self._present(columns, count)
        if not present.any():
            return
        last = int(np.flatnonzero(present)[-1])
        sheet.book_sheet.dim_rowmax = max(sheet.book_sheet.dim_rowmax, first_row + last)
        self._write_held(sheet)
        self._index_styles(columns, last)
        if self._new_style_in(columns, last):
            sheet.held = (first_row + last, [c.slice(last, 1) for c in columns])
            count = last
        if count:
            self._write_xml(sheet, [c.slice(0, count) for c in columns], first_row,
                            present[:count])

    def _unindexed(self, columns: list[Cells]) -> Iterator[tuple[int, pa.Array, Any]]:
        """(column, cells, style) of the kinds of cells whose style has no index yet."""
        for col, cells in enumerate(columns):
            for values, style in ((cells.text, self._text), (cells.number, self._formats[col])):
                if values is not None and style is not None and id(style) not in self._styles:
                    yield col, values, style

    def _index_styles(self, columns: list[Cells], stop: int) -> None:
        """Index the styles first used in rows before ``stop``, in row-major order."""
        found = []
        for col, values, style in self._unindexed(columns):
            first = pc.index(values.slice(0, stop).is_valid(), True).as_py() if stop else -1
            if first >= 0:
                found.append((first, col, style))
        for _, _, style in sorted(found, key=lambda use: use[:2]):
            self._styles.setdefault(id(style), str(style._get_xf_index()))

    def _new_style_in(self, columns: list[Cells], row: int) -> bool:
        return any(values[row].is_valid for _, values, _ in self._unindexed(columns))

    def _write_xml(self, sheet: _Sheet, columns: list[Cells], first_row: int,
                   present: np.ndarray) -> None:
        numbers: list[str | None] = []
        for cells, style in zip(columns, self._formats, strict=True):
            index = None if style is None else self._styles.get(id(style))
            if style is not None and index is None and cells.number is not None and (
                    cells.number.null_count < len(cells.number)):
                raise RuntimeError("a number cell without its style's index")  # bookkeeping
            numbers.append(index)
        styles = Styles(self._styles.get(id(self._text)), numbers)
        if sheet.rows is None:  # closed by _close_rows and _cleanup
            sheet.rows = open(sheet.book_sheet.row_data_filename, "ab")  # noqa: SIM115
        sheet.rows.write(rows_xml(columns, self._letters, styles, first_row, present))

    @staticmethod
    def _present(columns: list[Cells], count: int) -> np.ndarray:
        present = np.zeros(count, dtype=bool)
        for cells in columns:
            for values in cells.parts():
                present |= values.is_valid().to_numpy(zero_copy_only=False)
        return present

    def _write_held(self, sheet: _Sheet) -> None:
        if sheet.held is not None:
            row, columns = sheet.held
            sheet.held = None
            self._index_styles(columns, 1)
            self._write_xml(sheet, columns, row, np.ones(1, dtype=bool))

    def _close_rows(self, sheet: _Sheet, keep_held: bool = False) -> None:
        """Write the sheet's held row (at ``close``) and close its row file."""
        if not keep_held:
            self._write_held(sheet)
        if sheet.rows is not None:
            sheet.rows.close()
            sheet.rows = None

    def _cleanup(self) -> None:
        for sheet in getattr(self, "_sheets", ()):
            if sheet.rows is not None:
                sheet.rows.close()
            handle = getattr(sheet.book_sheet, "row_data_fh", None)  # xlsxwriter's row file
            if handle is not None and not handle.closed:
                handle.close()
        self._tmp.cleanup()
