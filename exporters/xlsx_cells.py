"""What each value becomes in a workbook cell: a number, a boolean, a date, or text.

A value becomes a number or a date only when the cell then holds exactly that value (to
Excel's millisecond for times); everything else is written as text, so nothing a spreadsheet
shows differs from the source:

- integers: numbers up to 2^53 in magnitude (every such integer is an exact double); larger
  ones as their digits, as text.
- decimals (PostgreSQL ``numeric``, Arrow decimals, SQLite integer/real text): a number when the
  nearest double reads back as the same decimal (``0.1``, ``12.50``), else text
  (``12345678901234567890.0123456789``); ``NaN``/``Infinity`` as text.
- floats: numbers (all finite doubles are exact; ``float32`` values as their shortest text
  reads); ``nan``/``inf`` as text.
- dates and timestamps: Excel date serials with a date format, in UTC for zoned timestamps,
  truncated to the millisecond (Excel keeps no finer time); outside Excel's range
  (1900-01-01 to 9999-12-31) or not a calendar value (PostgreSQL ``infinity``, BC, year
  10000) as their ISO 8601 text. Times with a zone stay text (Excel has no zones).
- binary: base64 text. NULL: no cell. Text: always a string cell, never a formula.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from functools import partial

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from exporters.csv_writer import render_text
from exporters.fieldtypes import field_type

Cell = str | bool | int | float | None

MAX_EXACT_INTEGER = 2**53
MAX_TEXT_UNITS = 32_767  # UTF-16 code units Excel holds in one cell
TRUNCATED_MARK = "[…]"
DATE_FORMAT = "yyyy-mm-dd"
DATETIME_FORMAT = "yyyy-mm-dd hh:mm:ss"
DATETIME_MS_FORMAT = "yyyy-mm-dd hh:mm:ss.000"
TIME_FORMAT = "hh:mm:ss"
TIME_MS_FORMAT = "hh:mm:ss.000"

_MS_PER_DAY = 86_400_000
_UNIX_EPOCH_SERIAL = 25_569  # 1970-01-01
_LEAP_BUG_MS = -25_508 * _MS_PER_DAY  # 1900-03-01: Excel counts a 29 February 1900 before it
_SERIAL_MIN, _SERIAL_END = 1.0, 2_958_466.0  # 1900-01-01 up to 10000-01-01 (excluded)
_EPOCH = datetime(1970, 1, 1)
_MS = timedelta(milliseconds=1)
_PER_MS = {"s": None, "ms": 1, "us": 1_000, "ns": 1_000_000}
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


@dataclass(frozen=True)
class Column:
    """How one column's values become cells; ``number_format`` for its number cells."""

    convert: Callable[[pa.Array], list[Cell]]
    number_format: str | None = None


def column_plan(arrow: pa.Field) -> Column:
    """The conversion for a field of the sources' schema (its type and metadata)."""
    kind, schema_type = arrow.type, field_type(arrow)
    fine = getattr(kind, "unit", "s") != "s"
    if pa.types.is_boolean(kind):
        return Column(lambda a: a.to_pylist())
    if pa.types.is_integer(kind):
        return Column(_integers)
    if pa.types.is_floating(kind):
        return Column(_floats)
    if pa.types.is_decimal(kind):
        return Column(_number_texts)
    if pa.types.is_timestamp(kind):
        return Column(_timestamps, DATETIME_MS_FORMAT if fine else DATETIME_FORMAT)
    if pa.types.is_date(kind):
        return Column(_dates, DATE_FORMAT)
    if pa.types.is_time(kind):
        return Column(_times, TIME_MS_FORMAT if fine else TIME_FORMAT)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        if schema_type == "number":
            return Column(_number_texts)
        if schema_type in _TEXT_PARSERS:
            parse, number_format = _TEXT_PARSERS[schema_type]
            return Column(partial(_parsed_texts, parse=parse), number_format)
    return Column(_texts)


def fit_text(text: str) -> tuple[str, bool]:
    """The text a cell can hold, and whether it had to be cut (with ``TRUNCATED_MARK``)."""
    if len(text) <= MAX_TEXT_UNITS // 2 or len(text.encode("utf-16-le")) <= 2 * MAX_TEXT_UNITS:
        return text, False
    budget = 2 * (MAX_TEXT_UNITS - len(TRUNCATED_MARK))
    cut = text.encode("utf-16-le")[:budget].decode("utf-16-le", errors="ignore")
    return cut + TRUNCATED_MARK, True


def serial_from_ms(ms: int) -> float | None:
    """Excel's 1900-system date serial of a UTC wall time in ms since 1970, None if outside."""
    serial = ms / _MS_PER_DAY + _UNIX_EPOCH_SERIAL - (1 if ms < _LEAP_BUG_MS else 0)
    return serial if _SERIAL_MIN <= serial < _SERIAL_END else None


def number_cell(text: str) -> Cell:
    """A number when a double holds exactly the decimal ``text`` denotes, else the text."""
    if not _NUMBER.fullmatch(text):  # NaN, Infinity, anything unexpected: the text as it is
        return text
    value = Decimal(text)
    if not any(c in text for c in ".eE"):
        whole = int(value)
        return whole if abs(whole) <= MAX_EXACT_INTEGER else text
    nearest = float(value)
    return nearest if Decimal(repr(nearest)) == value else text


def _texts(array: pa.Array) -> list[Cell]:
    return list(render_text(array).to_pylist())


def _integers(array: pa.Array) -> list[Cell]:
    return [v if v is None or abs(v) <= MAX_EXACT_INTEGER else str(v) for v in array.to_pylist()]


def _floats(array: pa.Array) -> list[Cell]:
    texts = render_text(array).to_pylist()  # shortest text: float32 0.1 reads as 0.1
    return [t if t is None or t in ("nan", "inf", "-inf") else float(t) for t in texts]


def _number_texts(array: pa.Array) -> list[Cell]:
    return [None if t is None else number_cell(t) for t in render_text(array).to_pylist()]


def _timestamps(array: pa.Array) -> list[Cell]:
    unit = array.type.unit
    values = pc.fill_null(array.view(pa.int64()), 0).to_numpy()  # the UTC instant
    per_ms = _PER_MS[unit]
    ms = values * 1000 if per_ms is None else values // per_ms
    return _serials(array, ms.tolist())


def _dates(array: pa.Array) -> list[Cell]:
    if pa.types.is_date64(array.type):  # milliseconds, whole days
        ms = pc.fill_null(array.view(pa.int64()), 0).to_numpy()
    else:
        days = pc.fill_null(array.view(pa.int32()), 0).to_numpy().astype(np.int64)
        ms = days * _MS_PER_DAY
    return _serials(array, ms.tolist())


def _serials(array: pa.Array, ms: list[int]) -> list[Cell]:
    """Serials where Excel has the date; the ISO text elsewhere; None for NULL."""
    serials = [serial_from_ms(m) for m in ms]
    texts: list[str | None] | None = None
    cells: list[Cell] = []
    for i, (valid, serial) in enumerate(zip(array.is_valid().to_pylist(), serials, strict=True)):
        if not valid:
            cells.append(None)
        elif serial is not None:
            cells.append(serial)
        else:
            texts = texts if texts is not None else render_text(array).to_pylist()
            cells.append(texts[i])
    return cells


def _times(array: pa.Array) -> list[Cell]:
    unit = array.type.unit
    per_ms = _PER_MS[unit]
    values = array.view(pa.int32() if pa.types.is_time32(array.type) else pa.int64()).to_pylist()
    return [None if v is None else (v * 1000 if per_ms is None else v // per_ms) / _MS_PER_DAY
            for v in values]


def _parse_datetime(text: str) -> float | None:
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return serial_from_ms((moment - _EPOCH) // _MS)


def _parse_date(text: str) -> float | None:
    return serial_from_ms((date.fromisoformat(text) - _EPOCH.date()).days * _MS_PER_DAY)


def _parse_time(text: str) -> float | None:
    moment = time.fromisoformat(text)
    if moment.tzinfo is not None:
        return None
    of_day = timedelta(hours=moment.hour, minutes=moment.minute, seconds=moment.second,
                       microseconds=moment.microsecond)
    return (of_day // _MS) / _MS_PER_DAY


_TEXT_PARSERS: dict[str, tuple[Callable[[str], float | None], str]] = {
    "datetime": (_parse_datetime, DATETIME_MS_FORMAT),
    "date": (_parse_date, DATE_FORMAT),
    "time": (_parse_time, TIME_MS_FORMAT),
}


def _parsed_texts(array: pa.Array, parse: Callable[[str], float | None]) -> list[Cell]:
    """Temporal values the sources hold as text (PostgreSQL): serials where Excel has them."""
    cells: list[Cell] = []
    for text in array.to_pylist():
        try:
            serial = None if text is None else parse(text)
        except ValueError:  # infinity, BC, 24:00:00, 5-digit years: no calendar value in Excel
            serial = None
        cells.append(text if serial is None else serial)
    return cells
