"""exporters.xlsx_writer: every cell read back with openpyxl and compared with its source value
and type, on the awkward values; sheets continue past an (injected) row limit; nothing is left
on disk, whatever happens."""

from __future__ import annotations

import base64
import io
import math
import random
import re
import struct
import tracemalloc
import zipfile
import zlib
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import openpyxl
import pyarrow as pa
import pytest
from xlsxwriter import Workbook

from exporters.xlsx_cells import serial_from_ms
from exporters.xlsx_sheet import WHITESPACE
from exporters.xlsx_writer import (
    EXCEL_MAX_COLUMNS,
    XML_LEVEL,
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


# The cells are built by Arrow kernels, not value by value: the tests below pin what the
# value-by-value writers wrote (xlsxwriter's escaping, Python's repr of numbers, the date
# serials) on the values where the two could part.

CONTROL = [chr(c) for c in range(32) if chr(c) not in "\t\n"]
# Python's white space (xlsxwriter's \s) that survives the _xHHHH_ escaping of control characters.
EDGE_SPACES = [c for c in map(chr, range(0x110000)) if re.match(r"\s", c) and c not in CONTROL]


def sheet_xml(blob: bytes, number: int = 1) -> str:
    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        return archive.read(f"xl/worksheets/sheet{number}.xml").decode()


def raw_values(blob: bytes) -> dict[str, str]:
    """Cell reference -> the text of its <v>."""
    return dict(re.findall(r'<c r="([A-Z]+[0-9]+)"[^>]*><v>([^<]*)</v></c>', sheet_xml(blob)))


def test_hostile_text_reads_back_exactly_with_excel_escapes() -> None:
    texts = [*CONTROL, "a\x00b\x1fc", "_x0041_", "_X0041_", "_x0041_x0042_", "_x004G_", "_x00",
             "__x0041__", "\x07_x0007_", "\ufffe\uffff", "\ufffd", "&amp; <b> \"q\" 'a'", "]]>",
             "<r></r>", "<r>\x01</r>", "<r>", " <r></r>", "😀" * 3, "e\u0301", "=1+1", "007",
             *[f"{s}x" for s in EDGE_SPACES], *[f"x{s}" for s in EDGE_SPACES], "\u200bx\u200b",
             "\ufeffx", "x\u180e", "a\tb", None, "a\nb", ""]
    assert sorted(WHITESPACE) == EDGE_SPACES  # the kernels' class is Python's
    schema = pa.schema([("t", pa.string())])
    blob, _ = build([texts], schema)
    [(_, rows)] = read_sheets(blob)
    for text, (cell,) in zip(texts, rows[1:], strict=True):
        if text is None:
            assert cell.value is None
            continue
        # xlsxwriter's rule escapes the first of two escapes sharing an underscore only, so
        # Excel reads "_x0041_x0042_" as "_x0041B": as before the writer was vectorised.
        lossy = text == "_x0041_x0042_"
        assert cell.data_type == "s" and (unescape(cell.value) == text) != lossy, repr(text)
        assert cell.number_format == "@"
    xml = sheet_xml(blob)
    for row, text in enumerate(texts, start=2):
        if text is None:
            continue
        match = re.search(f'<c r="A{row}" s="[0-9]+" t="inlineStr"><is><t( xml:space="preserve")?>'
                          r"([^<]*)</t></is></c>", xml)
        assert match, repr(text)
        escaped = re.sub("(_x[0-9a-fA-F]{4}_)", r"_x005F\1", text)
        escaped = "".join(f"_x{ord(c):04X}_" if c in CONTROL else c for c in escaped)
        escaped = escaped.replace("\ufffe", "_xFFFE_").replace("\uffff", "_xFFFF_")
        preserve = bool(re.search(r"^\s|\s$", escaped)) or (
            escaped.startswith("<r>") and escaped.endswith("</r>"))
        assert bool(match.group(1)) == preserve, repr(text)
        assert match.group(2) == escaped.replace("&", "&amp;").replace("<", "&lt;").replace(
            ">", "&gt;"), repr(text)


def test_numbers_are_written_as_python_writes_them() -> None:
    rng = random.Random(20261126)
    doubles = [struct.unpack("<d", rng.randbytes(8))[0] for _ in range(300)]
    doubles += [rng.uniform(-1e6, 1e6) for _ in range(100)]
    doubles += [10.0 ** e * m for e in range(-330, 310, 7) for m in (1, -1.5, 9.999)]
    doubles += [1e-4, 9.999999999999999e-05, 1e16, 9999999999999998.0, 1e15, 1e10, 0.0, -0.0, 100.0]
    doubles = [d for d in doubles if math.isfinite(d)]
    halves = [1.5, 0.1, 3.4028234663852886e38, 1e-45, 1e-5, 16777217.0, 1e16, 123456.7]
    ints = [0, -1, 2**53, -(2**53), 2**53 + 1, 2**63 - 1, -(2**63)]
    schema = pa.schema([("d", pa.float64()), ("f", pa.float32()), ("i", pa.int64())])
    n = len(doubles)
    data = [doubles, cycle(halves, n), cycle(ints, n)]
    blob, _ = build(data, schema)
    [(_, rows)] = read_sheets(blob)
    written = raw_values(blob)
    for r, (row, value, half, whole) in enumerate(zip(rows[1:], *data, strict=True), start=2):
        single = float(str(pa.scalar(half, pa.float32()).cast(pa.string())))
        assert written[f"A{r}"] == repr(value)
        assert written[f"B{r}"] == repr(single)
        assert struct.pack("<d", row[0].value) == struct.pack("<d", value)
        assert type(row[0].value) is float and type(row[1].value) is float
        assert row[1].value == single
        assert (row[2].data_type, row[2].value) == as_int(whole)


def test_serials_are_exact_to_the_millisecond_at_the_edges() -> None:
    moments = [datetime(1900, 1, 1), datetime(1900, 2, 28, 23, 59, 59, 999999),
               datetime(1900, 3, 1), datetime(1899, 12, 31, 23, 59, 59, 999999),
               datetime(9999, 12, 31, 23, 59, 59, 999999), datetime(1970, 1, 1),
               datetime(1969, 12, 31, 23, 59, 59, 999500), datetime(2026, 3, 29, 2, 30, 0, 1)]
    rng = random.Random(7)
    moments += [datetime(1900, 1, 1) + timedelta(microseconds=rng.randrange(8099 * 365 * 86_400_000_000))
                for _ in range(200)]
    epoch = datetime(1970, 1, 1)
    schema = pa.schema([(unit, pa.timestamp(unit)) for unit in ("s", "ms", "us", "ns")]
                       + [("d", pa.date32()), ("t", pa.time64("us"))])
    data = [[m.replace(microsecond=0) for m in moments], [ms(m) for m in moments], moments,
            [pd_safe(m) for m in moments], [m.date() for m in moments],
            [m.time() for m in moments]]
    blob, _ = build(data, schema)
    written = raw_values(blob)
    for r, moment in enumerate(moments, start=2):
        for col, value in zip("ABCD", (d[r - 2] for d in data), strict=False):
            if value is None:
                continue
            serial = serial_from_ms((value - epoch) // timedelta(milliseconds=1))
            assert written.get(f"{col}{r}") == (None if serial is None else repr(serial))
        day = serial_from_ms((datetime.combine(moment.date(), time()) - epoch).days * 86_400_000)
        assert written.get(f"E{r}") == (None if day is None else repr(day))
        of_day = timedelta(hours=moment.hour, minutes=moment.minute, seconds=moment.second,
                           microseconds=moment.microsecond) // timedelta(milliseconds=1)
        assert written[f"F{r}"] == repr(of_day / 86_400_000)


def pd_safe(moment: datetime) -> datetime | None:
    """Nanosecond timestamps hold years 1677 to 2262 only."""
    return moment if 1678 <= moment.year <= 2261 else None


def test_texts_read_as_numbers_and_dates_like_value_by_value() -> None:
    numbers = ["0.1", "12.50", "-0.000", "1e5", "+5", "007", "-0", "-007", ".5", "5.", "1E-3",
               "123456789012345.6", "0.30000000000000004", "1e-400", "1e400", "4.9e-324",
               "99999999999999999", "9007199254740993", "-9007199254740992", "NaN", "abc", "1 ",
               "1.7976931348623157e308", "2.2250738585072014e-308", "1e-300", "0e999", ""]
    stamps = ["2026-03-29T00:30:00+00:00", "2026-03-29T00:30:00.5-09:30", "1900-01-01T00:00:00",
              "1900-01-01T04:00:00+05:00", "2026-01-01T10:00:00+00:53:28", "2026-02-30T00:00:00",
              "2026-01-01 10:00:00", "9999-12-31T23:59:59.999999", "2026-01-01T10:00:00.1234567",
              "2026-01-01T23:59:60", "infinity"]
    dates = ["2026-02-28", "2026-02-29", "1900-02-28", "1900-03-01", "9999-12-31", "20260228"]
    times = ["10:00:05.000012", "00:00:00", "23:59:59.9999", "24:00:00", "10:00", "10:00:00Z"]
    n = max(map(len, (numbers, stamps, dates, times)))
    columns = [("n", b"number", numbers, as_number_text), ("s", b"datetime", stamps,
                                                             as_pg_datetime),
               ("d", b"date", dates, as_pg_date), ("t", b"time", times, as_pg_time)]
    schema = pa.schema([pa.field(name, pa.string(), metadata={META_SCHEMA_TYPE: kind})
                        for name, kind, _, _ in columns])
    blob, _ = build([cycle(values, n) for _, _, values, _ in columns], schema)
    [(_, rows)] = read_sheets(blob)
    for r, row in enumerate(rows[1:]):
        for (name, _, values, expect), cell in zip(columns, row, strict=True):
            source = values[r % len(values)]
            if not source:
                assert cell.value is None or cell.value == ""
                continue
            kind, value = expect(source)
            got = ms(cell.value) if kind == "d" else cell.value
            assert (cell.data_type if kind != "d" else "d", got) == (kind, value), (name, source)
            assert type(got) is type(value), (name, source)


def as_number_text(text: str) -> tuple[str, Any]:
    number = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
    return as_decimal_text(text) if re.fullmatch(number, text) else ("s", text)


def as_pg_date(text: str) -> tuple[str, Any]:
    try:
        day = date.fromisoformat(text)
    except ValueError:
        return "s", text
    return ("d", datetime(day.year, day.month, day.day)) if day.year >= 1900 else ("s", text)


def as_pg_time(text: str) -> tuple[str, Any]:
    try:
        moment = time.fromisoformat(text)
    except ValueError:
        return "s", text
    return ("s", text) if moment.tzinfo else ("d", ms(moment))


def test_styles_stay_right_when_first_used_late_across_sheets() -> None:
    n = 23
    texts: list[Any] = [None] * n
    texts[2] = "first text, the last row with a cell of sheet 1"
    texts[14] = "x"
    days: list[Any] = [None] * n
    days[13] = date(2026, 1, 1)
    days[22] = date(2026, 1, 2)
    stamps: list[Any] = [None] * n
    stamps[7] = datetime(2026, 1, 1, 12)
    schema = pa.schema([("t", pa.string()), ("d", pa.date32()), ("ts", pa.timestamp("ms")),
                        ("i", pa.int64())])
    ints = [i if i % 5 == 1 else None for i in range(n)]
    for split in (1, 3, 7, 14):
        sink = io.BytesIO()
        with XlsxTableWriter(sink, schema, max_rows=5, created=CREATED) as writer:
            arrays = [pa.array(v, type=f.type) for v, f in zip((texts, days, stamps, ints),
                                                               schema, strict=True)]
            batch = pa.record_batch(arrays, schema=schema)
            writer.write_batch(batch.slice(0, split))
            writer.write_batch(batch.slice(split))
        cells = [c for _, rows in read_sheets(sink.getvalue()) for row in rows[1:] for c in row]
        for cell in cells:
            if cell.value is None:
                continue
            if cell.column_letter == "A":
                assert (cell.data_type, cell.number_format) == ("s", "@"), cell.coordinate
            elif cell.column_letter in "BC":
                assert cell.is_date and cell.number_format == (
                    "yyyy-mm-dd" if cell.column_letter == "B" else "yyyy-mm-dd hh:mm:ss.000")
            else:
                assert cell.number_format == "General" and isinstance(cell.value, int)
        assert sum(c.value is not None for c in cells) == sum(
            v is not None for col in (texts, days, stamps, ints) for v in col)


def deflated_size(data: bytes, level: int) -> int:
    packer = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
    return len(packer.compress(data) + packer.flush())


def parts(blob: bytes) -> dict[str, tuple[bytes, int]]:
    """Each part of a workbook: its bytes and the size it takes deflated in the ZIP."""
    with zipfile.ZipFile(io.BytesIO(blob)) as book:
        assert all(i.compress_type == zipfile.ZIP_DEFLATED for i in book.infolist())
        return {i.filename: (book.read(i), i.compress_size) for i in book.infolist()}


def test_workbook_parts_are_deflated_at_the_fast_level() -> None:
    fast = parts(build()[0])
    assert fast and all(size == deflated_size(data, XML_LEVEL) for data, size in fast.values())
    assert XML_LEVEL == 1


def test_the_level_changes_the_compression_only(tmp_path: Path) -> None:
    wide = [[f"member {i} of the club" for i in range(2000)], list(range(2000))]
    schema = pa.schema([("name", pa.string()), ("n", pa.int64())])
    fast, default = build(wide, schema)[0], build(wide, schema, level=6)[0]
    assert {k: v[0] for k, v in parts(fast).items()} == {
        k: v[0] for k, v in parts(default).items()}  # the very same XML in every part
    assert all(size == deflated_size(data, 6) for data, size in parts(default).values())
    assert len(default) < len(fast) < 2 * len(default)
    assert ([[c.value for c in row] for row in read_sheets(fast)[0][1]]
            == [[c.value for c in row] for row in read_sheets(default)[0][1]])


def test_other_workbooks_in_the_process_keep_xlsxwriters_default(tmp_path: Path) -> None:
    path = tmp_path / "plain.xlsx"
    book = Workbook(str(path))
    book.add_worksheet().write_string(0, 0, "plain " * 500)
    book.close()
    assert all(size == deflated_size(data, zlib.Z_DEFAULT_COMPRESSION)
               for data, size in parts(path.read_bytes()).values())
