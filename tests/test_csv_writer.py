"""exporters.csv_writer.CsvTableWriter: the CSV value rules of DESIGN §3.4, read back strictly."""

from __future__ import annotations

import base64
import io
import math
import struct
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pyarrow as pa
import pytest

from exporters.csv_writer import UTF8_BOM, CsvTableWriter
from tests.csvparse import parse

Rows = list[list[str | None]]


def write(schema: pa.Schema, *batches: list[Any], excel: bool = False) -> tuple[bytes, int]:
    """Each batch given as a list of column value lists; returns the bytes and the rows count."""
    sink = io.BytesIO()
    writer = CsvTableWriter(sink, schema, excel=excel)
    for columns in batches:
        arrays = [pa.array(v, type=f.type) for v, f in zip(columns, schema, strict=True)]
        writer.write_batch(pa.record_batch(arrays, schema=schema))
    writer.close()
    return sink.getvalue(), writer.rows


def column(arrow_type: pa.DataType, values: list[Any]) -> Rows:
    """Write one column ``c`` and return the parsed rows after checking the header."""
    data, rows = write(pa.schema([pa.field("c", arrow_type)]), [values])
    parsed = parse(data.decode("utf-8"))
    assert parsed[0] == ["c"]
    assert rows == len(values) == len(parsed) - 1
    return parsed[1:]


def cells(arrow_type: pa.DataType, values: list[Any]) -> list[str | None]:
    return [row[0] for row in column(arrow_type, values)]


def test_header_present_with_zero_batches() -> None:
    schema = pa.schema([("id", pa.int64()), ("name", pa.string()), ("at", pa.timestamp("us"))])
    data, rows = write(schema)
    assert rows == 0
    assert parse(data.decode()) == [["id", "name", "at"]]
    assert data.endswith(b"\r\n")


def test_header_written_at_construction() -> None:
    sink = io.BytesIO()
    CsvTableWriter(sink, pa.schema([("a", pa.int64())]))
    assert parse(sink.getvalue().decode()) == [["a"]]


def test_awkward_column_names_in_header() -> None:
    names = ['we"ird', "com,ma", "new\nline", "", "é"]
    schema = pa.schema([(n, pa.int64()) for n in names])
    data, _ = write(schema, [[1], [2], [3], [4], [5]])
    assert parse(data.decode()) == [names, ["1", "2", "3", "4", "5"]]


def test_null_is_unquoted_empty_and_empty_string_is_quoted() -> None:
    schema = pa.schema([("a", pa.string()), ("b", pa.string()), ("n", pa.int64())])
    data, _ = write(schema, [[None, ""], ["", None], [None, None]])
    assert data.split(b"\r\n")[1:3] == [b',"",', b'"",,']
    assert parse(data.decode())[1:] == [[None, "", None], ["", None, None]]


@pytest.mark.parametrize(
    "value",
    ['say "hi"', '"', '""', "a,b", ",", "line1\nline2", "cr\rhere", "crlf\r\nx", "\r\n",
     "=SUM(A1:A2)", "+1", "-1", "@cmd", "=cmd|' /C calc'!A0", " padded ", "\t", "tab\tx",
     "null", "NULL", "\\N", "é\u0301 日本 😀", "\x00nul", "\u202e", "\ufeffbom"],
)
def test_strings_are_preserved_exactly(value: str) -> None:
    assert cells(pa.string(), [value]) == [value]


def test_large_string_is_preserved() -> None:
    assert cells(pa.large_string(), ["x,\"y\"\n", None, ""]) == ["x,\"y\"\n", None, ""]


def test_int64_extremes_are_exact() -> None:
    values = [2**63 - 1, -(2**63), 0, -1, 2**53 + 1]
    assert cells(pa.int64(), [*values, None]) == [*(str(v) for v in values), None]


def test_uint64_max_is_exact() -> None:
    assert cells(pa.uint64(), [2**64 - 1]) == [str(2**64 - 1)]


FLOATS = [0.1, 1e-300, 5e-324, 1.7976931348623157e308, -0.0, math.inf, -math.inf, 1 / 3,
          2.2250738585072014e-308, 123456789.123456789, 1e16, -2.5]


def test_floats_round_trip_exactly() -> None:
    out = cells(pa.float64(), FLOATS)
    for original, text in zip(FLOATS, out, strict=True):
        assert text is not None
        back = float(text)
        assert struct.pack("<d", back) == struct.pack("<d", original), (original, text)


def test_float_text_is_short() -> None:
    assert cells(pa.float64(), [0.1, 5e-324]) == ["0.1", "5e-324"]


def test_nan_and_null_float_differ() -> None:
    nan_text, null_text = cells(pa.float64(), [math.nan, None])
    assert nan_text is not None
    assert math.isnan(float(nan_text))
    assert null_text is None


def test_float32_round_trips_as_float32() -> None:
    values = [0.1, 3.4028234663852886e38, 1.401298464324817e-45]
    out = cells(pa.float32(), values)
    for original, text in zip(values, out, strict=True):
        assert text is not None
        assert struct.pack("<f", float(text)) == struct.pack("<f", original)


def test_booleans() -> None:
    assert cells(pa.bool_(), [True, False, None]) == ["true", "false", None]


def test_zoned_timestamps_end_in_utc_offset_and_keep_the_instant() -> None:
    values = [datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=UTC),
              datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC),
              datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)]
    out = cells(pa.timestamp("us", tz="UTC"), [*values, None])
    assert out[-1] is None
    for original, text in zip(values, out[:-1], strict=True):
        assert text is not None
        assert text.endswith("+00:00")
        assert datetime.fromisoformat(text) == original


def test_zoned_timestamp_in_seconds_unit() -> None:
    moment = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    [text] = cells(pa.timestamp("s", tz="UTC"), [moment])
    assert text is not None
    assert datetime.fromisoformat(text) == moment


@pytest.mark.parametrize("tz", ["Europe/Paris", "+05:30"])
def test_non_utc_zoned_timestamps_keep_the_instant(tz: str) -> None:
    moment = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    [text] = cells(pa.timestamp("us", tz=tz), [moment])
    assert text is not None
    assert datetime.fromisoformat(text) == moment


def test_naive_timestamps_have_no_offset() -> None:
    values = [datetime(2024, 1, 2, 3, 4, 5, 6), datetime(2000, 1, 1)]
    out = cells(pa.timestamp("us"), values)
    for original, text in zip(values, out, strict=True):
        assert text is not None
        assert "+" not in text
        assert not text.endswith("Z")
        parsed = datetime.fromisoformat(text)
        assert parsed.tzinfo is None
        assert parsed == original


def test_dates() -> None:
    values = [date(2024, 2, 29), date(1, 1, 1), date(9999, 12, 31), date(1970, 1, 1)]
    out = cells(pa.date32(), [*values, None])
    assert out == [*(d.isoformat() for d in values), None]


def test_times() -> None:
    [text] = cells(pa.time64("us"), [datetime(2000, 1, 1, 1, 2, 3, 4).time()])
    assert text == "01:02:03.000004"


def test_binary_is_base64() -> None:
    blobs = [b"\x00\xff\r\n,\"", b"", bytes(range(256))]
    out = cells(pa.binary(), [*blobs, None])
    assert out[-1] is None
    assert [base64.b64decode(t, validate=True) for t in out[:-1] if t is not None] == blobs
    assert out[1] == ""


def test_large_binary_is_base64() -> None:
    assert cells(pa.large_binary(), [b"hello"]) == [base64.b64encode(b"hello").decode()]


def test_crlf_line_endings_everywhere() -> None:
    schema = pa.schema([("a", pa.int64()), ("b", pa.string())])
    data, _ = write(schema, [[1, 2], ["x", "y"]])
    assert data == b'"a","b"\r\n1,"x"\r\n2,"y"\r\n'


def test_excel_adds_utf8_bom_only_when_asked() -> None:
    schema = pa.schema([("a", pa.string())])
    with_bom, _ = write(schema, [["é"]], excel=True)
    without, _ = write(schema, [["é"]])
    assert with_bom.startswith(UTF8_BOM)
    assert with_bom == UTF8_BOM + without
    assert not without.startswith(UTF8_BOM)
    assert parse(with_bom[len(UTF8_BOM):].decode()) == [["a"], ["é"]]


def test_excel_bom_even_with_zero_batches() -> None:
    data, _ = write(pa.schema([("a", pa.int64())]), excel=True)
    assert data == UTF8_BOM + b'"a"\r\n'


def test_several_batches_append_rows_and_count() -> None:
    schema = pa.schema([("id", pa.int64()), ("at", pa.timestamp("us", tz="UTC")),
                        ("blob", pa.binary())])
    base = datetime(2024, 1, 1, tzinfo=UTC)
    batches = [
        [[i, i + 1], [base + timedelta(seconds=i), None], [b"a", None]] for i in (0, 10, 20)
    ]
    batches.append([[], [], []])
    data, rows = write(schema, *batches)
    assert rows == 6
    parsed = parse(data.decode())
    assert parsed[0] == ["id", "at", "blob"]
    assert [r[0] for r in parsed[1:]] == ["0", "1", "10", "11", "20", "21"]
    assert parsed[3][1] is not None
    assert datetime.fromisoformat(parsed[3][1]) == base + timedelta(seconds=10)
    assert parsed[2] == ["1", None, None]
    assert parsed[1][2] == "YQ=="


def test_mixed_row_with_every_type() -> None:
    schema = pa.schema([("i", pa.int64()), ("f", pa.float64()), ("s", pa.string()),
                        ("b", pa.bool_()), ("t", pa.timestamp("us", tz="UTC")),
                        ("d", pa.date32()), ("x", pa.binary())])
    when = datetime(2024, 5, 6, 7, 8, 9, 10, tzinfo=timezone(timedelta(0)))
    data, rows = write(schema, [[7], [0.1], ['a,"b"'], [False], [when], [date(2024, 5, 6)],
                                [b"\x01"]])
    assert rows == 1
    assert parse(data.decode())[1] == [
        "7", "0.1", 'a,"b"', "false", "2024-05-06T07:08:09.000010+00:00", "2024-05-06", "AQ==",
    ]
