"""Checks a client could run on a downloaded package, shared by the package-level tests.

``expected_cell`` states, independently of the exporter, what a workbook cell must hold for a
source value of a given Table Schema field (the same rule tests/test_xlsx_writer.py pins for
the writer alone); ``check_workbook`` applies it to every cell of a real package's ``.xlsx``.
"""

from __future__ import annotations

import base64
import io
import json
import math
import re
import struct
import zipfile
from datetime import UTC, date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any

import openpyxl

from tests.csvquoting import tokenize

MAX_EXACT = 2**53
BOM = b"\xef\xbb\xbf"


def export(tenant: str = "t-1", **options: Any) -> dict[str, Any]:
    """The export flow, as the CLI and the UI run it."""
    from flows.export_flow import ExportRequest, offboarding_export

    return offboarding_export(ExportRequest(tenant_id=tenant, **{"link_ttl": "1h", **options}))


def save(files: dict[str, bytes], folder: Path) -> Path:
    """Every downloaded file at its path under ``folder``."""
    for path, body in files.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_bytes(body)
    return folder


def csv_rows(data: bytes, resource: dict[str, Any]) -> list[dict[str, str | None]]:
    """A CSV of the package as dicts (NULL None, "" kept), in the resource's dialect."""
    dialect = resource.get("dialect", {})
    text = data[len(BOM):] if data.startswith(BOM) else data
    records = tokenize(text.decode("utf-8"), dialect.get("delimiter", ","))
    header = [h or "" for h, _ in records[0]]
    return [dict(zip(header, (v for v, _ in r), strict=True)) for r in records[1:]]


def unescape(text: str) -> str:
    """OOXML's _xHHHH_ escapes, which openpyxl leaves in inline strings (Excel decodes them)."""
    return re.sub(r"_x([0-9A-Fa-f]{4})_", lambda m: chr(int(m.group(1), 16)), text)


def ms(moment: Any) -> Any:
    """Excel keeps times to the millisecond; the writer truncates."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def expected_cell(value: Any, field: dict[str, Any], text: str | None) -> tuple[str, Any] | None:
    """(openpyxl data type, value) of the cell for a source ``value`` of ``field``; ``text``
    is the value's CSV text (the rendering text-like cells must show). None: an empty cell."""
    if value is None:
        return None
    kind, source = field["type"], field.get("x-source-type", "").upper()
    if field.get("format") == "binary":
        return "s", base64.b64encode(bytes(value)).decode()
    if kind == "string":
        return "s", value if isinstance(value, str) else text
    if kind == "any":
        return "s", text  # PostgreSQL JSON, SQLite mixed columns: the CSV's text
    if kind == "boolean":
        return "b", bool(value)
    if kind == "integer":
        return ("n", int(value)) if abs(int(value)) <= MAX_EXACT else ("s", str(value))
    if kind == "number":
        return _number(value, text, single=source in ("REAL", "FLOAT4") and not field.get(
            "x-sqlite-storage-classes"))
    if kind in ("datetime", "date", "time"):
        return _temporal(value, kind, text)
    raise AssertionError(f"no expectation for field type {kind!r}")


def _number(value: Any, text: str | None, *, single: bool) -> tuple[str, Any]:
    if isinstance(value, Decimal | str):
        literal = str(value)
        if literal in ("NaN", "Infinity", "-Infinity"):
            return "s", literal
        exact = Decimal(literal)
        if "." not in literal and "e" not in literal.lower():
            return ("n", int(exact)) if abs(exact) <= MAX_EXACT else ("s", literal)
        near = float(exact)
        return ("n", near) if Decimal(repr(near)) == exact else ("s", literal)
    if isinstance(value, int) and not isinstance(value, bool):
        return ("n", value) if abs(value) <= MAX_EXACT else ("s", str(value))
    number = float(text) if single and text is not None else float(value)
    if math.isnan(number):
        return "s", "nan"
    if math.isinf(number):
        return "s", "inf" if number > 0 else "-inf"
    return "n", number


def _temporal(value: Any, kind: str, text: str | None) -> tuple[str, Any]:
    try:
        if isinstance(value, str):
            parsed: Any = (datetime.fromisoformat(value) if kind == "datetime" else
                           date.fromisoformat(value) if kind == "date" else
                           time.fromisoformat(value))
        else:
            parsed = value
    except ValueError:
        return "s", text
    if kind == "time":
        return ("s", text) if parsed.tzinfo else ("d", ms(parsed))
    if kind == "date" and not isinstance(parsed, datetime):
        parsed = datetime(parsed.year, parsed.month, parsed.day)
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    return ("d", ms(parsed)) if parsed.year >= 1900 else ("s", text)


def workbook_rows(data: bytes) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Header and data rows of a workbook, every sheet in turn; no cell is a formula."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for name in archive.namelist():
            if name.startswith("xl/worksheets/"):
                assert b"<f>" not in archive.read(name) and b"<f " not in archive.read(name)
    book = openpyxl.load_workbook(io.BytesIO(data))
    header: list[str] = []
    rows: list[tuple[Any, ...]] = []
    for sheet in book.worksheets:
        cells = list(sheet.iter_rows())
        names = [c.value for c in cells[0]]
        assert not header or names == header, "every sheet repeats the header"
        header = [str(n) for n in names]
        rows.extend(tuple(cells[1:]))
    for row in rows:
        for cell in row:
            assert cell.data_type != "f", (cell.coordinate, cell.value)
    return header, rows


def check_workbook(data: bytes, resource: dict[str, Any], csv: list[dict[str, str | None]],
                   source: list[dict[str, Any]]) -> int:
    """Every cell of the table's workbook holds the source value with the right type.

    ``source`` holds the source rows (column -> value, as the database's driver returns it) in
    the order of the CSV; ``csv`` the CSV's rows. Returns how many cells were compared.
    """
    header, rows = workbook_rows(data)
    fields = resource["schema"]["fields"]
    assert header == [f["name"] for f in fields]
    assert len(rows) == len(csv) == len(source), resource["path"]
    compared = 0
    for row, text_row, values in zip(rows, csv, source, strict=True):
        for cell, field in zip(row, fields, strict=True):
            name = field["name"]
            if name not in values:  # a __sqlite_type companion: text like any other
                want: tuple[str, Any] | None = (
                    None if text_row[name] is None else ("s", text_row[name]))
            else:
                want = expected_cell(values[name], field, text_row[name])
            where = f"{resource['path']} {cell.coordinate} {name}: {values.get(name)!r}"
            if want is None:
                assert cell.value is None, where
                continue
            kind, value = want
            got = unescape(cell.value) if kind == "s" and isinstance(cell.value, str) else (
                cell.value)
            if kind == "d":
                assert cell.is_date, where
                got = ms(got)
            else:
                assert cell.data_type == kind, f"{where} is {cell.data_type} {cell.value!r}"
            assert got == value and type(got) is type(value), f"{where}: {got!r} != {value!r}"
            if isinstance(value, float):
                assert struct.pack("<d", got) == struct.pack("<d", value), where
            if kind == "s":
                assert cell.number_format == "@", where  # stays text when edited
            compared += 1
    return compared


def manifest(files: dict[str, bytes]) -> dict[str, Any]:
    package: dict[str, Any] = json.loads(files["datapackage.json"])
    return package
