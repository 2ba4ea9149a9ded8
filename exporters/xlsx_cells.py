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

Columns are converted a slice of rows at a time with Arrow compute kernels (value by value, the
conversion and cell writing were most of an export's time). The functions that state the rules
for one value (``number_cell``, ``serial_from_ms``, the ``_parse_*`` functions) still decide
whatever the kernels cannot decide exactly: decimals beyond 15 significant digits, ``+5``,
PostgreSQL's ``infinity`` and BC dates, offsets with seconds.
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

from exporters.csv_writer import concat, render_text
from exporters.fieldtypes import field_type
from exporters.xlsx_sheet import Cells, repr_texts

Cell = str | bool | int | float | None
Serials = Callable[[pa.Array], tuple[np.ndarray, np.ndarray]]

MAX_EXACT_INTEGER = 2**53
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
# Decided by kernels, as number_cell would: an int64 (Arrow's cast reads it as int() does), and
# decimals of at most 15 significant digits in the normal double range (they read back exactly).
_SHORT_INTEGER = "^-?[0-9]{1,17}$"
_SHORT_DECIMAL = r"^[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,3})?$"
# ISO 8601 that datetime.fromisoformat and Arrow's cast read alike; Arrow refuses 30 February.
_YMD = "(?:19|[2-8][0-9])[0-9]{2}-[0-9]{2}-[0-9]{2}"  # 9xxx: UTC may overflow datetime
_HMS = r"(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,6})?"
_ISO_DATETIME = f"^{_YMD}T{_HMS}(?:[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])?$"
_TEXT = pa.large_string()
_NOT_NUMBERS = pa.array(["nan", "inf", "-inf"], _TEXT)


@dataclass(frozen=True)
class Column:
    """How one column's values become cells; ``number_format`` for its number cells."""

    convert: Callable[[pa.Array], Cells]
    number_format: str | None = None


def column_plan(arrow: pa.Field) -> Column:
    """The conversion for a field of the sources' schema (its type and metadata)."""
    kind, schema_type = arrow.type, field_type(arrow)
    fine = getattr(kind, "unit", "s") != "s"
    if pa.types.is_boolean(kind):
        return Column(lambda a: Cells(boolean=a))
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
            parse, serials, number_format = _TEXT_PARSERS[schema_type]
            return Column(partial(_parsed_texts, parse=parse, serials=serials), number_format)
    return Column(lambda a: Cells(text=render_text(a).cast(_TEXT)))


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


def _where(mask: pa.Array | np.ndarray, values: pa.Array) -> pa.Array:
    return pc.if_else(mask, values, pa.scalar(None, values.type))


def _match(texts: pa.Array, pattern: str) -> pa.Array:
    return pc.fill_null(pc.match_substring_regex(texts, pattern), False)


def _integers(array: pa.Array) -> Cells:
    text = pc.cast(array, _TEXT)
    if array.type.bit_width <= 32:
        return Cells(number=text)
    big = pc.greater(array, pa.scalar(MAX_EXACT_INTEGER, array.type))
    if pa.types.is_signed_integer(array.type):
        big = pc.or_(big, pc.less(array, pa.scalar(-MAX_EXACT_INTEGER, array.type)))
    if not pc.any(big).as_py():
        return Cells(number=text)
    return Cells(text=_where(big, text), number=_where(pc.invert(big), text))


def _floats(array: pa.Array) -> Cells:
    text = render_text(array).cast(_TEXT)  # shortest text: float32 0.1 reads as 0.1
    odd = pc.is_in(text, value_set=_NOT_NUMBERS)
    value = array if pa.types.is_float64(array.type) else pc.cast(text, pa.float64())
    return Cells(text=_where(odd, text), number=repr_texts(_where(pc.invert(odd), value)))


def _number_texts(array: pa.Array) -> Cells:
    """``number_cell`` of each text; kernels decide the integers of up to 17 digits and the
    decimals of up to 15 significant digits in the normal range, Python the rest."""
    text = render_text(array).cast(_TEXT)
    number = _match(text, f"^{_NUMBER.pattern}$")  # else the text as it is (NaN, Infinity)
    integer = _match(text, _SHORT_INTEGER)
    whole = pc.cast(_where(integer, text), pa.int64())
    exact = pc.fill_null(pc.less_equal(pc.abs(whole), MAX_EXACT_INTEGER), False)
    decimal = pc.and_(_match(text, _SHORT_DECIMAL), _match(text, "[.eE]"))
    mantissa = pc.replace_substring_regex(_where(decimal, text), "[eE].*", "")
    digits = pc.utf8_length(pc.utf8_trim(pc.replace_substring_regex(mantissa, "[^0-9]", ""), "0"))
    nearest = pc.cast(_where(decimal, text), pa.float64())
    size = pc.abs(nearest)
    normal = pc.or_(pc.equal(digits, 0), pc.and_(pc.greater_equal(size, 1e-300),
                                                  pc.less_equal(size, 1e300)))
    decimal = pc.and_(decimal, pc.fill_null(pc.and_(pc.less_equal(digits, 15), normal), False))
    as_text = pc.or_(pc.invert(number), pc.and_(integer, pc.invert(exact)))
    cells = Cells(text=_where(as_text, text), number=pc.coalesce(
        _where(exact, pc.cast(whole, _TEXT)), repr_texts(_where(decimal, nearest))))
    rest = pc.and_(number, pc.invert(pc.or_(integer, decimal)))
    return _patch(cells, rest, [number_cell(t) for t in pc.filter(text, rest).to_pylist()])


def _timestamps(array: pa.Array) -> Cells:
    unit = array.type.unit
    values = pc.fill_null(array.view(pa.int64()), 0).to_numpy()  # the UTC instant
    per_ms = _PER_MS[unit]
    ms = values * 1000 if per_ms is None else values // per_ms
    return _serials(array, ms)


def _dates(array: pa.Array) -> Cells:
    if pa.types.is_date64(array.type):  # milliseconds, whole days
        ms = pc.fill_null(array.view(pa.int64()), 0).to_numpy()
    else:
        days = pc.fill_null(array.view(pa.int32()), 0).to_numpy().astype(np.int64)
        ms = days * _MS_PER_DAY
    return _serials(array, ms)


def _serial(ms: np.ndarray) -> np.ndarray:
    """``serial_from_ms`` in numpy, NaN outside: the same IEEE operations, and ``ms`` becomes
    a double exactly wherever the serial can be in range (|ms| < 2^53)."""
    serial = ms / _MS_PER_DAY + _UNIX_EPOCH_SERIAL - (ms < _LEAP_BUG_MS)
    return np.where((serial >= _SERIAL_MIN) & (serial < _SERIAL_END), serial, np.nan)


def _serials(array: pa.Array, ms: np.ndarray) -> Cells:
    """Serials where Excel has the date; the ISO text elsewhere; no cell for NULL."""
    serial = _serial(ms)
    valid = array.is_valid().to_numpy(zero_copy_only=False)
    outside = valid & np.isnan(serial)
    number = repr_texts(pa.array(serial, mask=~valid | outside))
    if not outside.any():
        return Cells(number=number)
    return Cells(text=_where(outside, render_text(array).cast(_TEXT)), number=number)


def _times(array: pa.Array) -> Cells:
    per_ms = _PER_MS[array.type.unit]
    values = pc.fill_null(array.view(pa.int32() if pa.types.is_time32(array.type)
                                     else pa.int64()), 0).to_numpy().astype(np.int64)
    ms = values * 1000 if per_ms is None else values // per_ms
    day = ms / _MS_PER_DAY
    inexact = np.abs(ms) > MAX_EXACT_INTEGER  # not a time of day; as Python divides
    day[inexact] = [m / _MS_PER_DAY for m in ms[inexact].tolist()]
    return Cells(number=repr_texts(pa.array(day, mask=array.is_null().to_numpy(
        zero_copy_only=False))))


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


def _datetime_serials(texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Which texts the kernels read (``_parse_datetime``'s common case), and their serials."""
    read = _match(texts, _ISO_DATETIME)
    zoned = pc.if_else(_match(texts, "[+-][0-9]{2}:[0-9]{2}$"), texts, concat(texts, "+00:00"))
    moments = pc.cast(_where(read, zoned), pa.timestamp("us", "UTC"))
    return _numpy(read), _serial(pc.fill_null(moments.view(pa.int64()), 0).to_numpy() // 1000)


def _date_serials(texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    read = _match(texts, f"^{_YMD}$")
    days = pc.fill_null(pc.cast(_where(read, texts), pa.date32()).view(pa.int32()), 0)
    return _numpy(read), _serial(days.to_numpy().astype(np.int64) * _MS_PER_DAY)


def _time_serials(texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    read = _match(texts, f"^{_HMS}$")
    chosen = _where(read, texts)

    def part(start: int, stop: int) -> np.ndarray:
        digits = pc.utf8_rpad(pc.utf8_slice_codeunits(chosen, start, stop), stop - start, "0")
        return np.asarray(pc.fill_null(pc.cast(digits, pa.int64()), 0).to_numpy())

    ms = ((part(0, 2) * 60 + part(3, 5)) * 60 + part(6, 8)) * 1000 + part(9, 15) // 1000
    return _numpy(read), ms / _MS_PER_DAY


_TEXT_PARSERS: dict[str, tuple[Callable[[str], float | None], Serials, str]] = {
    "datetime": (_parse_datetime, _datetime_serials, DATETIME_MS_FORMAT),
    "date": (_parse_date, _date_serials, DATE_FORMAT),
    "time": (_parse_time, _time_serials, TIME_MS_FORMAT),
}


def _parsed_texts(array: pa.Array, parse: Callable[[str], float | None],
                  serials: Serials) -> Cells:
    """Temporal values the sources hold as text (PostgreSQL): serials where Excel has them."""
    text = array.cast(_TEXT)
    try:
        read, serial = serials(text)
    except pa.ArrowInvalid:  # a date Arrow refuses (30 February): every value by ``parse``
        read, serial = np.zeros(len(text), dtype=bool), np.zeros(len(text))
    inside = read & ~np.isnan(serial)
    cells = Cells(text=_where(read & ~inside, text), number=repr_texts(pa.array(
        serial, mask=~inside)))
    rest = text.is_valid().to_numpy(zero_copy_only=False) & ~read
    values: list[Cell] = []
    for value in pc.filter(text, rest).to_pylist():
        try:
            serial_of = parse(value)
        except ValueError:  # infinity, BC, 24:00:00, 5-digit years: no calendar value in Excel
            serial_of = None
        values.append(value if serial_of is None else serial_of)
    return _patch(cells, rest, values)


def _numpy(mask: pa.Array) -> np.ndarray:
    return np.asarray(mask.to_numpy(zero_copy_only=False))


def _patch(cells: Cells, rows: pa.Array | np.ndarray, values: list[Cell]) -> Cells:
    """``cells`` with ``rows`` replaced by values decided one by one."""
    if not values:
        return cells
    texts = [v if isinstance(v, str) else None for v in values]
    numbers = [None if v is None or isinstance(v, str) else str(v) if isinstance(v, int)
               else repr(v) for v in values]
    mask = pa.array(rows)
    return Cells(text=pc.replace_with_mask(cells.text, mask, pa.array(texts, _TEXT)),
                 number=pc.replace_with_mask(cells.number, mask, pa.array(numbers, _TEXT)))
