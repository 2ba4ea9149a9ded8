"""exporters.xlsx_writer: every cell read back with openpyxl and compared with its source value
and type, on the awkward values; sheets continue past an (injected) row limit; nothing is left
on disk, whatever happens."""

from __future__ import annotations

import base64
import io
import math
import re
import struct
import tracemalloc
import zipfile
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import openpyxl
import pyarrow as pa
import pytest

from exporters.xlsx_writer import (
    EXCEL_MAX_COLUMNS,
    WorkbookLimitError,
    XlsxTableWriter,
    sheet_name,
)
from kernel.arrowmeta import META_SCHEMA_TYPE
from tests import awkward

CREATED = datetime(2026, 11, 26, 10, 15, tzinfo=UTC)
MAX_EXACT = 2**53
Expect = Callable[[Any], tuple[str, Any]]  # source value -> (openpyxl data_type, value)


def unescape(text: str) -> str:
    """OOXML's _xHHHH_ escapes, which openpyxl leaves in inline strings (Excel decodes them)."""
    return re.sub(r"_x([0-9A-Fa-f]{4})_", lambda m: chr(int(m.group(1), 16)), text)


def ms(moment: Any) -> Any:
    """Excel keeps times to the millisecond; the writer truncates."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def as_text(value: Any) -> tuple[str, Any]:
    return "s", value


def as_int(value: int) -> tuple[str, Any]:
    return ("n", value) if abs(value) <= MAX_EXACT else ("s", str(value))


def as_float(value: float) -> tuple[str, Any]:
    if math.isnan(value):
        return "s", "nan"
    if math.isinf(value):
        return "s", "inf" if value > 0 else "-inf"
    return "n", value


def as_decimal_text(text: str) -> tuple[str, Any]:
    """Independent statement of the rule: exact doubles are numbers, the rest text."""
    if text in ("NaN", "Infinity", "-Infinity"):
        return "s", text
    value = Decimal(text)
    if "." not in text and "e" not in text.lower():
        return ("n", int(value)) if abs(value) <= MAX_EXACT else ("s", text)
    return ("n", float(value)) if Decimal(repr(float(value))) == value else ("s", text)


def as_utc_datetime(value: datetime) -> tuple[str, Any]:
    return "d", ms(value.astimezone(UTC).replace(tzinfo=None))


def as_pg_datetime(text: str) -> tuple[str, Any]:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return "s", text
    if moment.tzinfo:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return ("d", ms(moment)) if moment.year >= 1900 else ("s", text)


HOSTILE_TEXT: list[str | None] = [
    *awkward.STRINGS, "01067", "007", "12345678901234567890", "1/2", "=HYPERLINK(\"http://x\",\"x\")",
    "<r><t>rich?</t></r>", '<r></t></is></c><c r="Z1"><f>1+1</f></c><c><is><t></r>',
    "_x0041_", "\x00nul\x07", "\ufffe", "TRUE", "1e5", "  ",
]

# name, Arrow field, values, expectation of each non-NULL value
COLUMNS: list[tuple[pa.Field, list[Any], Expect]] = [
    (pa.field("text", pa.string()), HOSTILE_TEXT, as_text),
    (pa.field("big", pa.int64()), [*awkward.INTS, MAX_EXACT, MAX_EXACT + 1, -MAX_EXACT - 1],
     as_int),
    (pa.field("u64", pa.uint64()), [2**64 - 1, 5], as_int),
    (pa.field("score", pa.float64()),
     [*awkward.FLOATS, 0.30000000000000004, float("nan"), -math.inf], as_float),
    (pa.field("ratio", pa.float32()), [0.1, 3.25, None], lambda v: ("n", {0.1: 0.1}.get(v, v))),
    (pa.field("balance", pa.string(), metadata={META_SCHEMA_TYPE: b"number"}),
     [*awkward.NUMERICS, "NaN", "12.50", "9007199254740993", "-0.0", "1e+100"], as_decimal_text),
    (pa.field("dec", pa.decimal128(38, 10)), [Decimal("0.1000000000"),
                                              Decimal("1234567890123456789.0123456789")],
     lambda v: as_decimal_text(str(v))),
    (pa.field("active", pa.bool_()), awkward.BOOLS, lambda v: ("b", v)),
    (pa.field("joined", pa.timestamp("us", tz="UTC")),
     [*awkward.TIMESTAMPS, datetime(1900, 1, 1, 0, 0, 0, 500000, tzinfo=UTC)], as_utc_datetime),
    (pa.field("old", pa.timestamp("us", tz="UTC")), [datetime(1899, 12, 31, tzinfo=UTC)],
     lambda v: ("s", "1899-12-31T00:00:00.000000+00:00")),
    (pa.field("local_ts", pa.timestamp("us")), awkward.LOCAL_TS, lambda v: ("d", ms(v))),
    (pa.field("born", pa.date32()), [*awkward.DATES, date(9999, 12, 31), date(1, 1, 1)],
     lambda v: ("d", datetime(v.year, v.month, v.day)) if v.year >= 1900
     else ("s", v.isoformat())),
    (pa.field("at", pa.time64("us")), [time(0, 0), time(23, 59, 59, 999999), time(10, 0, 5, 12)],
     lambda v: ("d", ms(v))),
    (pa.field("avatar", pa.binary()), awkward.BLOBS, lambda v: ("s", base64.b64encode(v).decode())),
    (pa.field("profile", pa.string(), metadata={META_SCHEMA_TYPE: b"any"}), awkward.JSONS,
     as_text),
    (pa.field("pg_ts", pa.string(), metadata={META_SCHEMA_TYPE: b"datetime"}),
     ["2026-03-29T00:30:00+00:00", "infinity", "-infinity", "10000-01-01T00:00:00",
      "0044-03-15T00:00:00 BC", "1969-12-31T23:59:59.999999+00:00", "2026-01-01T00:00:00"],
     as_pg_datetime),
    (pa.field("pg_date", pa.string(), metadata={META_SCHEMA_TYPE: b"date"}),
     ["2026-02-28", "infinity", "1900-01-01"],
     lambda v: ("s", v) if v == "infinity" else ("d", datetime.fromisoformat(v))),
    (pa.field("pg_time", pa.string(), metadata={META_SCHEMA_TYPE: b"time"}),
     ["10:00:05.000012", "24:00:00", "10:00:00+02:00"],
     lambda v: ("d", time(10, 0, 5)) if v.startswith("10:00:05") else ("s", v)),
]


def cycle(values: list[Any], n: int) -> list[Any]:
    return [values[i % len(values)] for i in range(n)]


ROWS = max(len(values) for _, values, _ in COLUMNS) + 1
SCHEMA = pa.schema([field for field, _, _ in COLUMNS])
DATA = [cycle(values, ROWS) for _, values, _ in COLUMNS]


def build(data: list[list[Any]] = DATA, schema: pa.Schema = SCHEMA,
          **options: Any) -> tuple[bytes, XlsxTableWriter]:
    sink = io.BytesIO()
    writer = XlsxTableWriter(sink, schema, created=CREATED, **options)
    arrays = [pa.array(values, type=field.type) for values, field in zip(data, schema,
                                                                         strict=True)]
    batch = pa.record_batch(arrays, schema=schema)
    writer.write_batch(batch.slice(0, 7))
    writer.write_batch(batch.slice(7))
    writer.close()
    return sink.getvalue(), writer


def read_sheets(blob: bytes) -> list[tuple[str, list[tuple[Any, ...]]]]:
    book = openpyxl.load_workbook(io.BytesIO(blob))
    return [(sheet.title, list(sheet.iter_rows())) for sheet in book.worksheets]


def test_every_cell_matches_its_source_value_and_type(tmp_path: Path) -> None:
    blob, writer = build(sheet_name="members", max_rows=6, tmp_dir=str(tmp_path))
    sheets = read_sheets(blob)
    assert [name for name, _ in sheets] == writer.sheets
    assert writer.sheets[:3] == ["members", "members (2)", "members (3)"]
    cells = []
    for _, rows in sheets:
        assert [c.value for c in rows[0]] == SCHEMA.names  # the header on every sheet
        assert all(c.data_type == "s" for c in rows[0])
        assert 1 < len(rows) <= 6
        cells.extend(rows[1:])
    assert len(cells) == writer.rows == ROWS
    for r, row in enumerate(cells):
        for (field, _, expect), column, cell in zip(COLUMNS, DATA, row, strict=True):
            source = column[r]
            where = f"{field.name} row {r}: {source!r}"
            if source is None:
                assert cell.value is None, where
                continue
            kind, value = expect(source)
            assert cell.data_type == kind, where
            got = unescape(cell.value) if kind == "s" else cell.value
            assert got == value, where
            assert type(got) is type(value), where
            if kind == "n" and isinstance(value, float):
                assert struct.pack("<d", got) == struct.pack("<d", value), where
            if kind == "s":
                assert cell.number_format == "@", where  # a cell that stays text when edited
            if kind == "d":
                assert cell.is_date, where
    assert writer.truncated_cells == 0
    assert list(tmp_path.iterdir()) == []


def test_no_formula_is_ever_written() -> None:
    blob, _ = build()
    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        sheets = [n for n in archive.namelist() if n.startswith("xl/worksheets/sheet")]
        assert sheets
        for name in sheets:
            xml = archive.read(name).decode()
            assert "<f>" not in xml
            assert 't="str"' not in xml
            assert "<r>" not in xml  # the rich-text look-alike went in escaped
    for _, rows in read_sheets(blob):
        assert all(cell.data_type != "f" for row in rows for cell in row)


def test_seventeen_digit_doubles_are_exact() -> None:
    values = [0.30000000000000004, 1 / 3, 5e-324, 1.7976931348623157e308, 2.2250738585072014e-308,
              123456789.12345679, -0.0]
    schema = pa.schema([("x", pa.float64())])
    blob, _ = build([values], schema)
    [(_, rows)] = read_sheets(blob)
    for value, (cell,) in zip(values, rows[1:], strict=True):
        assert struct.pack("<d", cell.value) == struct.pack("<d", value)


def test_text_longer_than_a_cell_is_cut_visibly_and_counted() -> None:
    long_ascii = "x" * 40_000
    astral = "😀" * 20_000  # 40,000 UTF-16 units in 20,000 characters
    fits = "é" * 32_767
    blob, writer = build([[long_ascii, astral, fits]], pa.schema([("t", pa.string())]))
    [(_, rows)] = read_sheets(blob)
    texts = [row[0].value for row in rows[1:]]
    assert writer.truncated_cells == 2
    assert texts[2] == fits
    for text, original in zip(texts[:2], (long_ascii, astral), strict=True):
        assert text.endswith("[…]")
        assert original.startswith(text[:-3])
        assert len(text.encode("utf-16-le")) // 2 <= 32_767


def test_sheet_limit_counts_the_header_and_continues_exactly() -> None:
    n = 10
    blob, writer = build([list(range(n))], pa.schema([("id", pa.int64())]), sheet_name="t",
                         max_rows=4)
    sheets = read_sheets(blob)
    assert [name for name, _ in sheets] == ["t", "t (2)", "t (3)", "t (4)"]
    assert [[c.value for (c,) in rows] for _, rows in sheets] == [
        ["id", 0, 1, 2], ["id", 3, 4, 5], ["id", 6, 7, 8], ["id", 9]]
    assert writer.rows == n


def test_empty_table_has_header_only() -> None:
    blob, writer = build([[]], pa.schema([("a", pa.string())]))
    assert read_sheets(blob)[0][1][0][0].value == "a"
    assert len(read_sheets(blob)[0][1]) == 1
    assert writer.rows == 0


def test_sheet_names_are_valid_and_short() -> None:
    assert sheet_name("a/b[c]:d*e?f\\g") == "a_b_c__d_e_f_g"
    assert sheet_name("x" * 40, 12) == "x" * 26 + " (12)"
    assert sheet_name("'quoted'") == "quoted"
    assert sheet_name("") == "data"


def test_too_many_columns_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    schema = pa.schema([(f"c{i}", pa.int8()) for i in range(EXCEL_MAX_COLUMNS + 1)])
    with pytest.raises(WorkbookLimitError, match="columns"):
        XlsxTableWriter(io.BytesIO(), schema, tmp_dir=str(tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_error_mid_stream_removes_temporary_files_and_writes_nothing(tmp_path: Path) -> None:
    sink = io.BytesIO()
    schema = pa.schema([("a", pa.int64()), ("b", pa.int64())])
    writer = XlsxTableWriter(sink, schema, tmp_dir=str(tmp_path))
    writer.write_batch(pa.record_batch([pa.array(range(5000))] * 2, schema=schema))
    assert list(tmp_path.iterdir())  # rows are on disk, not in memory
    with pytest.raises(ValueError, match="zip"):
        writer.write_batch(pa.record_batch([pa.array([1])], names=["a"]))  # a column short
    assert list(tmp_path.iterdir()) == []
    assert sink.getvalue() == b""
    writer.close()  # after an abort: nothing happens
    assert sink.getvalue() == b""


def test_context_manager_aborts_on_error_and_closes_otherwise(tmp_path: Path) -> None:
    schema = pa.schema([("a", pa.string())])
    sink = io.BytesIO()

    def failing_upstream() -> None:
        with XlsxTableWriter(sink, schema, tmp_dir=str(tmp_path)) as writer:
            writer.write_batch(pa.record_batch([pa.array(["x"])], schema=schema))
            raise RuntimeError("upstream failed")

    with pytest.raises(RuntimeError, match="upstream"):
        failing_upstream()
    assert sink.getvalue() == b""
    assert list(tmp_path.iterdir()) == []
    with XlsxTableWriter(sink, schema, tmp_dir=str(tmp_path)) as writer:
        writer.write_batch(pa.record_batch([pa.array(["x"])], schema=schema))
    assert zipfile.is_zipfile(io.BytesIO(sink.getvalue()))
    assert list(tmp_path.iterdir()) == []


def test_failing_sink_still_removes_temporary_files(tmp_path: Path) -> None:
    class Broken(io.RawIOBase):
        def writable(self) -> bool:
            return True

        def write(self, data: Any) -> int:
            raise OSError("upload failed")

    schema = pa.schema([("a", pa.int64())])
    writer = XlsxTableWriter(Broken(), schema, tmp_dir=str(tmp_path))  # type: ignore[arg-type]
    writer.write_batch(pa.record_batch([pa.array([1, 2])], schema=schema))
    with pytest.raises(OSError, match="upload failed"):
        writer.close()
    assert list(tmp_path.iterdir()) == []


def test_same_input_gives_the_same_bytes() -> None:
    assert build()[0] == build()[0]


def peak_memory(rows: int) -> int:
    schema = pa.schema([("id", pa.int64()), ("name", pa.string())])
    batch = pa.record_batch([pa.array(range(2000)), pa.array([f"member {i}" for i in range(2000)])],
                            schema=schema)
    tracemalloc.start()
    try:
        writer = XlsxTableWriter(io.BytesIO(), schema)
        for _ in range(rows // 2000):
            writer.write_batch(batch)
        writer.abort()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_the_table() -> None:
    small, large = peak_memory(4_000), peak_memory(20_000)
    assert large < small * 1.5 + 512 * 1024, (small, large)


def test_float32_written_as_its_shortest_text_reads() -> None:
    blob, _ = build([[0.1]], pa.schema([("r", pa.float32())]))
    assert read_sheets(blob)[0][1][1][0].value == 0.1


def test_zoned_timestamp_in_utc_to_the_millisecond() -> None:
    berlin = datetime(2026, 10, 25, 2, 30, 0, 123999, tzinfo=UTC) + timedelta(0)
    blob, _ = build([[berlin]], pa.schema([("t", pa.timestamp("us", tz="Europe/Berlin"))]))
    assert read_sheets(blob)[0][1][1][0].value == datetime(2026, 10, 25, 2, 30, 0, 123000)
