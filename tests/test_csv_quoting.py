"""The CSV quoting rule (text quoted, nothing else) and the Excel dialect, read back strictly."""

from __future__ import annotations

import base64
import io
import math
import re
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest

from exporters import csv_writer
from exporters.csv_writer import (
    DEFAULT_DIALECT,
    FORMULA_TRIGGERS,
    UTF8_BOM,
    CsvDialect,
    CsvTableWriter,
)
from exporters.fieldtypes import field_type
from kernel.arrowmeta import META_SCHEMA_TYPE, META_STORAGE_CLASSES, META_TYPE_OF
from tests import awkward
from tests.csvquoting import check_csv, tokenize


def typed(name: str, kind: pa.DataType, schema_type: str | None = None,
          **extra: bytes) -> pa.Field:
    metadata = {META_SCHEMA_TYPE: schema_type.encode()} if schema_type else {}
    metadata.update({k.encode(): v for k, v in extra.items()})
    return pa.field(name, kind, metadata=metadata or None)


def write(fields: list[pa.Field], columns: list[list[Any]],
          dialect: CsvDialect | None = None) -> bytes:
    schema = pa.schema(fields)
    sink = io.BytesIO()
    writer = CsvTableWriter(sink, schema, dialect=dialect)
    arrays = [pa.array(v, type=f.type) for v, f in zip(columns, fields, strict=True)]
    writer.write_batch(pa.record_batch(arrays, schema=schema))
    writer.close()
    assert writer.rows == (len(columns[0]) if columns else 0)
    return sink.getvalue()


def resource(fields: list[pa.Field], dialect: CsvDialect = DEFAULT_DIALECT) -> dict[str, Any]:
    """The parts of a datapackage.json resource the checker reads."""
    return {"dialect": dialect.to_descriptor(),
            "schema": {"fields": [{"name": f.name, "type": field_type(f)} for f in fields]}}


def records(fields: list[pa.Field], columns: list[list[Any]],
            dialect: CsvDialect = DEFAULT_DIALECT) -> list[list[tuple[str | None, bool]]]:
    """Write, check the rule on the bytes, and return the data records."""
    return check_csv(write(fields, columns, dialect), resource(fields, dialect))[1:]


BARE_COLUMNS: list[tuple[pa.Field, list[Any], list[str]]] = [
    (typed("i", pa.int64()), [2**63 - 1, -(2**63), -1], ["9223372036854775807",
                                                          "-9223372036854775808", "-1"]),
    (typed("u", pa.uint64()), [2**64 - 1], [str(2**64 - 1)]),
    (typed("f", pa.float64()), [0.1, -0.0, float("inf")], ["0.1", "-0", "inf"]),
    (typed("f32", pa.float32()), [0.1], ["0.1"]),
    (typed("dec", pa.decimal128(38, 10)), [Decimal("-12.5000000000")], ["-12.5000000000"]),
    (typed("b", pa.bool_()), [True, False], ["true", "false"]),
    (typed("ts", pa.timestamp("us", tz="UTC")), [datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)],
     ["2024-01-02T03:04:05.000000+00:00"]),
    (typed("ts_s", pa.timestamp("s")), [datetime(1999, 12, 31, 23, 59, 59)],
     ["1999-12-31T23:59:59"]),
    (typed("ts_ns", pa.timestamp("ns", tz="Europe/Berlin")),
     [datetime(2026, 10, 25, 0, 30, tzinfo=UTC)], ["2026-10-25T00:30:00.000000000+00:00"]),
    (typed("d", pa.date32()), [date(1, 1, 1), date(9999, 12, 31)], ["0001-01-01", "9999-12-31"]),
    (typed("t", pa.time64("us")), [time(10, 0, 5, 12)], ["10:00:05.000012"]),
    # PostgreSQL values read as the server's text, typed by the sources' metadata.
    (typed("pg_numeric", pa.string(), "number"), ["12345678901234567890.0123456789", "NaN"],
     ["12345678901234567890.0123456789", "NaN"]),
    (typed("pg_ts", pa.string(), "datetime"), ["2026-03-29T00:30:00+00:00", "infinity"],
     ["2026-03-29T00:30:00+00:00", "infinity"]),
    (typed("pg_date", pa.string(), "date"), ["-infinity", "10000-01-01"],
     ["-infinity", "10000-01-01"]),
    (typed("pg_time", pa.string(), "time"), ["24:00:00", "10:00:00+02"],
     ["24:00:00", "10:00:00+02"]),
    # SQLite NUMERIC affinity: integers and reals mixed, told apart by their text.
    (typed("mixed_number", pa.string(), "number", sqlite_storage_classes=b"integer,real"),
     ["7", "3.5", "-0.5", "9223372036854775807", "1e+100"],
     ["7", "3.5", "-0.5", "9223372036854775807", "1e+100"]),
]


@pytest.mark.parametrize(("field", "values", "expected"), BARE_COLUMNS,
                         ids=[c[0].name for c in BARE_COLUMNS])
def test_bare_types_are_never_quoted(field: pa.Field, values: list[Any],
                                     expected: list[str]) -> None:
    rows = records([field], [[*values, None]])
    assert rows == [*([(text, False)] for text in expected), [(None, False)]]


TEXT_COLUMNS: list[tuple[pa.Field, list[Any], list[str]]] = [
    (typed("s", pa.string()), ["007", "1/2", "12345678901234567890", "true", "2024-01-01"],
     ["007", "1/2", "12345678901234567890", "true", "2024-01-01"]),
    (typed("ls", pa.large_string()), ["x,\"y\"\n"], ["x,\"y\"\n"]),
    (typed("blob", pa.binary()), [b"\x00\xff", b""], [base64.b64encode(b"\x00\xff").decode(), ""]),
    (typed("json", pa.string(), "any"), ['{"a": [1, 2.5]}', "42"], ['{"a": [1, 2.5]}', "42"]),
    (typed("uuid", pa.string()), ["3f2a0000-0000-0000-0000-000000000000"],
     ["3f2a0000-0000-0000-0000-000000000000"]),
    (typed("anything__sqlite_type", pa.string(), None, sqlite_type_of=b"anything"),
     ["integer", "text"], ["integer", "text"]),
]


@pytest.mark.parametrize(("field", "values", "expected"), TEXT_COLUMNS,
                         ids=[c[0].name for c in TEXT_COLUMNS])
def test_text_types_are_always_quoted(field: pa.Field, values: list[Any],
                                      expected: list[str]) -> None:
    rows = records([field], [[*values, None]])
    assert rows == [*([(text, True)] for text in expected), [(None, False)]]


def test_companion_metadata_keys_are_the_kernel_ones() -> None:
    assert TEXT_COLUMNS[-1][0].metadata == {META_TYPE_OF: b"anything"}
    assert BARE_COLUMNS[-1][0].metadata[META_STORAGE_CLASSES] == b"integer,real"


def test_awkward_strings_quoted_and_exact() -> None:
    values = [v for v in awkward.STRINGS if v is not None] + ["\x00nul", "\u2028", "\ufeffbom"]
    rows = records([typed("s", pa.string())], [values])
    assert rows == [[(v, True)] for v in values]


def test_empty_string_is_quoted_null_is_not_in_every_type() -> None:
    fields = [typed("s", pa.string()), typed("n", pa.int64()), typed("x", pa.binary()),
              typed("d", pa.date32())]
    data = write(fields, [["", None], [None, 1], [b"", None], [None, date(2024, 1, 1)]])
    assert data.split(b"\r\n")[1:3] == [b'"",,"",', b",1,,2024-01-01"]


def test_mixed_row_puts_quotes_only_around_text() -> None:
    fields = [typed("id", pa.int64()), typed("name", pa.string()), typed("fee", pa.string(),
              "number"), typed("paid", pa.bool_()), typed("at", pa.timestamp("s", tz="UTC"))]
    data = write(fields, [[1], ["=1+1"], ["12.50"], [True],
                          [datetime(2026, 1, 2, tzinfo=UTC)]])
    assert data == (b'"id","name","fee","paid","at"\r\n'
                    b'1,"=1+1",12.50,true,2026-01-02T00:00:00+00:00\r\n')


def test_bare_text_that_would_break_the_record_is_quoted_not_broken() -> None:
    field = typed("odd", pa.string(), "number")
    data = write([field], [["1,5", 'a"b', "x\r\ny", "2"]])
    assert tokenize(data.decode())[1:] == [[("1,5", True)], [('a"b', True)],
                                           [("x\r\ny", True)], [("2", False)]]


def test_many_rows_and_sliced_batches_keep_order_and_count() -> None:
    n = 70_001  # more than one internal slice
    schema = pa.schema([typed("i", pa.int64()), typed("s", pa.string()),
                        typed("t", pa.timestamp("ms", tz="UTC"))])
    base = datetime(2020, 1, 1, tzinfo=UTC)
    batch = pa.record_batch([
        pa.array(range(n)), pa.array([None if i % 3 else f"r{i}" for i in range(n)]),
        pa.array([base + timedelta(milliseconds=i) for i in range(n)], pa.timestamp("ms", "UTC")),
    ], schema=schema)
    sink = io.BytesIO()
    writer = CsvTableWriter(sink, schema)
    writer.write_batch(batch.slice(5))  # an offset into Arrow's buffers
    writer.write_batch(batch.slice(0, 5))
    rows = check_csv(sink.getvalue(), resource(list(schema)))[1:]
    assert writer.rows == n == len(rows)
    order = [*range(5, n), *range(5)]
    for row, i in zip(rows, order, strict=True):
        stamp = (base + timedelta(milliseconds=i)).isoformat(timespec="milliseconds")
        assert row == [(str(i), False), (None, False) if i % 3 else (f"r{i}", True),
                       (stamp, False)]


def test_semicolon_dialect_quotes_text_holding_semicolons() -> None:
    dialect = CsvDialect(delimiter=";")
    fields = [typed("s", pa.string()), typed("n", pa.float64())]
    data = write(fields, [["a;b", "1,5"], [1.5, None]], dialect)
    assert data == b'"s";"n"\r\n"a;b";1.5\r\n"1,5";\r\n'
    assert check_csv(data, resource(fields, dialect))[1:] == [
        [("a;b", True), ("1.5", False)], [("1,5", True), (None, False)]]


def unescape(value: str) -> str:
    """The reverse of the Excel variant's neutralisation, as docs/export-format.md states it."""
    return value[1:] if re.match(r"'+[=+\-@\t\r]", value) else value


HOSTILE = ["=HYPERLINK(\"http://x\")", "=1+1", "+49 170", "-5", "@SUM(A1)", "\tlead", "\rcr",
           "'=already", "''=twice", "'plain", "''", "'", "a=b", "", " =x", "é"]


def test_excel_dialect_neutralises_formulas_and_stays_reversible() -> None:
    excel = CsvDialect.excel()
    fields = [typed("s", pa.string()), typed("n", pa.int64()), typed("x", pa.string(), "any")]
    data = write(fields, [HOSTILE, [-1] * len(HOSTILE), HOSTILE], excel)
    assert data.startswith(UTF8_BOM + b'"s","n","x"\r\n')
    rows = check_csv(data, resource(fields, excel))[1:]
    for original, row in zip(HOSTILE, rows, strict=True):
        (text, _), (number, _), (other, _) = row
        assert text is not None
        starts_formula = original[:1] in FORMULA_TRIGGERS or re.match(r"'+[=+\-@\t\r]", original)
        assert text == ("'" + original if starts_formula else original)
        assert text[:1] not in FORMULA_TRIGGERS
        assert unescape(text) == original
        assert number == "-1"  # numbers are numbers: never prefixed
        assert other == text


def test_excel_neutralises_base64_that_starts_with_plus() -> None:
    blob = base64.b64decode("+AAA")
    [[(text, quoted)]] = records([typed("b", pa.binary())], [[blob]], CsvDialect.excel())
    assert (text, quoted) == ("'+AAA", True)


def test_default_dialect_never_prefixes() -> None:
    rows = records([typed("s", pa.string())], [HOSTILE])
    assert [r[0][0] for r in rows] == HOSTILE


def test_excel_semicolon_variant_bom_and_separator() -> None:
    dialect = CsvDialect.excel(semicolon=True)
    data = write([typed("a", pa.string()), typed("b", pa.int64())], [["x"], [1]], dialect)
    assert data == UTF8_BOM + b'"a";"b"\r\n"x";1\r\n'


def test_dialect_descriptor_records_all_three_choices() -> None:
    assert CsvDialect().to_descriptor() == {
        "header": True, "delimiter": ",", "lineTerminator": "\r\n", "quoteChar": '"',
        "doubleQuote": True, "x-quoting": "text", "x-bom": False}
    excel = CsvDialect.excel(semicolon=True).to_descriptor()
    assert excel["delimiter"] == ";"
    assert excel["x-bom"] is True
    assert excel["x-formula-prefix"] == "'"
    assert excel["x-formula-triggers"] == ["=", "+", "-", "@", "\t", "\r"]
    assert CsvDialect().exact
    assert not CsvDialect.excel().exact


def test_dialect_refuses_other_separators_and_double_choice() -> None:
    with pytest.raises(ValueError, match="delimiter"):
        CsvDialect(delimiter="\t")
    with pytest.raises(ValueError, match="either"):
        CsvTableWriter(io.BytesIO(), pa.schema([("a", pa.int64())]), dialect=CsvDialect(),
                       excel=True)


def test_excel_flag_is_the_excel_dialect() -> None:
    sink = io.BytesIO()
    writer = CsvTableWriter(sink, pa.schema([("a", pa.string())]), excel=True)
    assert writer.dialect == CsvDialect.excel()


def test_batch_with_wrong_width_is_refused() -> None:
    writer = CsvTableWriter(io.BytesIO(), pa.schema([("a", pa.int64()), ("b", pa.int64())]))
    with pytest.raises(ValueError, match="columns"):
        writer.write_batch(pa.record_batch([pa.array([1])], names=["a"]))


def test_zoned_timestamps_in_any_zone_render_the_utc_instant() -> None:
    moment = datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    for tz in ("UTC", "+05:30", "America/St_Johns"):
        [[(text, quoted)]] = records([typed("t", pa.timestamp("s", tz=tz))], [[moment]])
        assert not quoted
        assert text == "2024-01-01T21:34:05+00:00"


NATIVE_FIELDS = [typed("i", pa.int64()), typed("u8", pa.uint8()), typed("f", pa.float64()),
                 typed("f32", pa.float32()), typed("dec", pa.decimal128(20, 4)),
                 typed("b", pa.bool_()), typed("d", pa.date32()), typed("d64", pa.date64()),
                 typed("t", pa.time32("s")), typed("t64", pa.time64("ns")),
                 typed("s", pa.string()), typed("ls", pa.large_string()),
                 typed("x", pa.binary()), typed("lx", pa.large_binary()),
                 typed("j", pa.string(), "any")]


def native_columns(n: int) -> list[list[Any]]:
    texts = [v for v in awkward.STRINGS if v is not None] + HOSTILE
    floats = [v for v in awkward.FLOATS if v is not None] + [float("nan"), -math.inf]
    def pick(values: list[Any], i: int) -> Any:
        return None if i % 7 == 3 else values[i % len(values)]
    return [
        [pick([2**63 - 1, -(2**63), 0, -1], i) for i in range(n)],
        [pick([0, 255], i) for i in range(n)],
        [pick(floats, i) for i in range(n)],
        [pick([0.1, 3.4028234663852886e38, -0.0], i) for i in range(n)],
        [pick([Decimal("-12.5000"), Decimal("9999999999999999.9999")], i) for i in range(n)],
        [pick([True, False], i) for i in range(n)],
        [pick([date(1, 1, 1), date(9999, 12, 31), date(1970, 1, 1)], i) for i in range(n)],
        [pick([date(2024, 2, 29), date(1900, 1, 1)], i) for i in range(n)],
        [pick([time(0, 0), time(23, 59, 59)], i) for i in range(n)],
        [pick([time(10, 0, 5, 12), time(0, 0, 0, 1)], i) for i in range(n)],
        [pick(texts, i) for i in range(n)],
        [pick(list(reversed(texts)), i) for i in range(n)],
        [pick([b"", b"\xfb\xff", bytes(range(256))], i) for i in range(n)],
        [pick([b"\xf8", b"x"], i) for i in range(n)],
        [pick(['{"a": 1}', "-1", "=x"], i) for i in range(n)],
    ]


@pytest.mark.parametrize("dialect", [CsvDialect(), CsvDialect.excel(),
                                     CsvDialect.excel(semicolon=True)],
                         ids=["exact", "excel", "excel-semicolon"])
def test_pyarrow_writer_path_and_kernel_path_give_the_same_bytes(
        dialect: CsvDialect, monkeypatch: pytest.MonkeyPatch) -> None:
    columns = native_columns(100)
    schema = pa.schema(NATIVE_FIELDS)
    probe = CsvTableWriter(io.BytesIO(), schema)
    assert probe._native is not None  # this table takes pyarrow's writer
    native = write(NATIVE_FIELDS, columns, dialect)
    monkeypatch.setattr(csv_writer, "_arrow_renders", lambda field: False)
    assert CsvTableWriter(io.BytesIO(), schema)._native is None
    kernels = write(NATIVE_FIELDS, columns, dialect)
    assert native == kernels
    check_csv(native, resource(NATIVE_FIELDS, dialect))


def test_a_timestamp_or_text_held_number_takes_the_kernel_path() -> None:
    for extra in (typed("ts", pa.timestamp("s")), typed("n", pa.string(), "number"),
                  typed("odd", pa.int64(), "string")):
        assert CsvTableWriter(io.BytesIO(), pa.schema([typed("s", pa.string()), extra]))._native \
            is None


def test_a_timestamp_pyarrow_cannot_render_is_refused_not_altered() -> None:
    cases = [(typed("t", pa.timestamp("s")), 10**12), (typed("d", pa.date32()), 11_248_738),
             (typed("d", pa.date32()), -12_687_429), (typed("d64", pa.date64()), 10**15)]
    for field, value in cases:  # alone (pyarrow's writer) and beside a timestamp (kernels)
        for fields in ([field], [field, typed("ts", pa.timestamp("s"))]):
            with pytest.raises(ValueError, match="ISO 8601"):
                write(fields, [[value]] * len(fields))
    edge = write([typed("d", pa.date32())], [[11_248_737, -12_687_428]])
    assert edge.split(b"\r\n")[1:3] == [b"32767-12-31", b"-32767-01-01"]
