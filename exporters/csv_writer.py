"""One table as RFC 4180 CSV, following the value rules of DESIGN §3.4 exactly.

Quoting rule: text is quoted and nothing else is. A field whose Table Schema type is a bare
type (integer, number, boolean, date, time, datetime: ``exporters.fieldtypes``) is written
unquoted; string, binary (base64) and ``any`` values are always quoted. NULL is an empty
unquoted field, so ``""`` is an empty string. A spreadsheet's "format quoted field as text"
then keeps every text as typed, and a reader can tell text from the rest.

Values: integers exact, floats the shortest text that parses back to the same value, booleans
``true``/``false``, temporal values ISO 8601 (``+00:00`` for zoned timestamps, normalised to
UTC), binary base64. A table whose columns are all numbers, booleans, dates, times or text
goes through pyarrow's own CSV writer, which renders exactly that in one C++ pass. Any other
table (timestamps, numbers or dates the sources hold as text) is rendered column by column
with pyarrow compute kernels over slices of rows, its records joined in one kernel and written
straight from Arrow's buffer; both paths give the same bytes (tests/test_csv_quoting.py).
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from exporters.fieldtypes import BARE_TYPES, field_type, is_binary

UTF8_BOM = b"\xef\xbb\xbf"
EOL = "\r\n"
DELIMITERS = (",", ";")
# OWASP "CSV injection": a cell starting with one of these may be run as a formula.
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
FORMULA_PREFIX = "'"
# Values already starting with apostrophes before a trigger get one more, so the escape can be
# undone exactly: strip one leading apostrophe wherever this pattern matches after the prefix.
_NEEDS_PREFIX = "^'*[=+\\-@\t\r]"
_SLICE_ROWS = 32_768  # rows rendered at once: bounded buffers whatever the batch size
_SMALL_LIMIT = 2**31 - 2**20  # beyond this many bytes a slice is joined as large_string
_DAY_RANGE = (-12_687_428, 11_248_737)  # days pyarrow writes as ISO 8601: years -32767..32767
_OUT_OF_RANGE = "a date or timestamp lies beyond what can be written as ISO 8601"


@dataclass(frozen=True)
class CsvDialect:
    """How every CSV of one package is written; ``datapackage.json`` records it.

    The default is the exact, machine-readable form. ``excel()`` adds a UTF-8 byte-order mark
    (Excel otherwise guesses a legacy code page), optionally ``;`` as the separator (what
    spreadsheets expect where the decimal separator is a comma), and neutralises formulas:
    a text value starting with ``= + - @``, tab or CR gets a leading apostrophe (OWASP).
    """

    delimiter: str = ","
    bom: bool = False
    neutralise_formulas: bool = False

    def __post_init__(self) -> None:
        if self.delimiter not in DELIMITERS:
            raise ValueError(f"CSV delimiter must be one of {DELIMITERS}, not {self.delimiter!r}")

    @classmethod
    def excel(cls, *, semicolon: bool = False) -> CsvDialect:
        """The spreadsheet variant: BOM, formula neutralisation, optionally ``;``."""
        return cls(delimiter=";" if semicolon else ",", bom=True, neutralise_formulas=True)

    @property
    def exact(self) -> bool:
        """True when every value is written exactly as the source holds it."""
        return not self.neutralise_formulas

    def to_descriptor(self) -> dict[str, Any]:
        """The resource's Frictionless ``dialect``, with ``x-`` fields for the rest.

        ``x-quoting: "text"`` says that exactly the text fields are quoted; ``x-bom`` that
        the file starts with EF BB BF; ``x-formula-prefix``/``x-formula-triggers`` (Excel
        variant only) how text values were neutralised.
        """
        dialect: dict[str, Any] = {
            "header": True,
            "delimiter": self.delimiter,
            "lineTerminator": EOL,
            "quoteChar": '"',
            "doubleQuote": True,
            "x-quoting": "text",
            "x-bom": self.bom,
        }
        if self.neutralise_formulas:
            dialect["x-formula-prefix"] = FORMULA_PREFIX
            dialect["x-formula-triggers"] = list(FORMULA_TRIGGERS)
        return dialect


DEFAULT_DIALECT = CsvDialect()


def render_text(array: pa.Array) -> pa.Array:
    """One column as the text of DESIGN §3.4, NULL kept as null (shared with the workbook)."""
    kind = array.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return array
    if pa.types.is_timestamp(kind):
        # Arrow stores the UTC instant; read as a naive timestamp it renders the UTC wall time.
        wall = array.view(pa.timestamp(kind.unit)) if kind.tz else array
        text = _rendered(pc.cast(wall, pa.string()))
        text = pc.replace_substring(text, " ", "T", max_replacements=1)
        return pc.binary_join_element_wise(text, "+00:00", "") if kind.tz else text
    if is_binary(kind):
        return _base64(array)
    if pa.types.is_dictionary(kind):
        return render_text(array.dictionary_decode())
    try:
        text = pc.cast(array, pa.string())  # integers, floats (shortest), booleans, dates, times
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid) as err:
        raise TypeError(f"no CSV rendering for Arrow type {kind}") from err
    return _rendered(text) if pa.types.is_date(kind) else text


def _rendered(text: pa.Array) -> pa.Array:
    """Refuse what pyarrow renders as ``<value out of range: ...>`` (beyond year ±32767)."""
    if pc.any(pc.starts_with(text, "<")).as_py():
        raise ValueError(_OUT_OF_RANGE)
    return text


def _check_dates(array: pa.Array) -> None:
    """The same refusal for dates pyarrow's writer renders itself (a min/max, no rendering)."""
    short = pa.types.is_date32(array.type)
    low, high = _DAY_RANGE if short else (_DAY_RANGE[0] * 86_400_000,
                                          (_DAY_RANGE[1] + 1) * 86_400_000 - 1)
    bounds = pc.min_max(array.view(pa.int32() if short else pa.int64())).as_py()
    if bounds["min"] is not None and (bounds["min"] < low or bounds["max"] > high):
        raise ValueError(_OUT_OF_RANGE)


def _base64(array: pa.Array) -> pa.Array:
    encoded = [None if v is None else binascii.b2a_base64(v, newline=False)
               for v in array.to_pylist()]
    large = pa.types.is_large_binary(array.type)
    return pa.array(encoded, type=pa.large_binary() if large else pa.binary()).cast(
        pa.large_string() if large else pa.string())


def concat(*parts: pa.Array | str, large: bool = False, null_as_empty: bool = False
           ) -> pa.Array:
    """Element-wise concatenation of arrays and constants; null when a part is null, unless
    ``null_as_empty`` (then a null part counts as empty text).

    The constants take the arrays' string type (``large_string`` when any part or ``large``
    asks for it), which pyarrow does not do by itself.
    """
    arrays = [p for p in parts if isinstance(p, pa.Array)]
    large = large or any(pa.types.is_large_string(a.type) for a in arrays)
    kind = pa.large_string() if large else pa.string()
    values = [p.cast(kind) if isinstance(p, pa.Array) else pa.scalar(p, kind) for p in parts]
    options = pc.JoinOptions(null_handling="replace" if null_as_empty else "emit_null",
                             null_replacement="")
    return pc.binary_join_element_wise(*values, pa.scalar("", kind), options=options)


def quote(text: pa.Array) -> pa.Array:
    """RFC 4180 quoting of every non-null value (``"`` doubled); null stays null."""
    return concat('"', pc.replace_substring(text, '"', '""'), '"')


def neutralise(text: pa.Array) -> pa.Array:
    """A leading apostrophe on values a spreadsheet would run as a formula (Excel variant)."""
    mask = pc.match_substring_regex(text, _NEEDS_PREFIX)
    if not pc.any(mask).as_py():
        return text
    return pc.if_else(mask, concat(FORMULA_PREFIX, text), text)


@dataclass(frozen=True)
class _Column:
    quoted: bool
    guarded: bool  # a bare type held as text (PostgreSQL numeric, dates): check it stays bare


class CsvTableWriter:
    """Streams one table's batches as CSV into ``sink``; the header is written at once.

    Args:
        sink: the byte sink (its owner closes it).
        schema: the sources' Arrow schema, metadata included (it decides the quoting).
        dialect: separator, BOM and formula neutralisation; the exact form by default.
        excel: shorthand for ``dialect=CsvDialect.excel()``.
    """

    def __init__(self, sink: IO[bytes], schema: pa.Schema, *,
                 dialect: CsvDialect | None = None, excel: bool = False) -> None:
        if dialect is not None and excel:
            raise ValueError("give either dialect or excel=True, not both")
        self.dialect = dialect or (CsvDialect.excel() if excel else DEFAULT_DIALECT)
        self._sink = sink
        self._columns = [_column(f) for f in schema]
        self._guard = f'["\r\n{self.dialect.delimiter}]'
        if self.dialect.bom:
            sink.write(UTF8_BOM)
        header = self.dialect.delimiter.join(
            '"' + f.name.replace('"', '""') + '"' for f in schema)
        sink.write((header + EOL).encode("utf-8"))
        self._native: pacsv.CSVWriter | None = None
        if len(schema) and all(_arrow_renders(f) for f in schema):
            self._native_schema = pa.schema([pa.field(f.name, _native_type(f.type))
                                             for f in schema])
            options = pacsv.WriteOptions(include_header=False, quoting_style="needed", eol=EOL,
                                         null_string="", delimiter=self.dialect.delimiter)
            self._native = pacsv.CSVWriter(sink, self._native_schema, write_options=options)
        self.rows = 0

    def write_batch(self, batch: pa.RecordBatch) -> None:
        """Append one batch; values are rendered, never altered (bar the Excel variant's
        documented apostrophe)."""
        if batch.num_columns != len(self._columns):
            raise ValueError(f"batch has {batch.num_columns} columns, the schema "
                             f"{len(self._columns)}")
        if self._native is not None:
            arrays = [self._native_array(a, c) for a, c in zip(batch.columns, self._columns,
                                                               strict=True)]
            self._native.write_batch(pa.RecordBatch.from_arrays(arrays,
                                                                schema=self._native_schema))
        else:
            for start in range(0, batch.num_rows, _SLICE_ROWS):
                self._write_slice(batch.slice(start, _SLICE_ROWS))
        self.rows += batch.num_rows

    def close(self) -> None:
        """Flush what pyarrow's writer holds; the sink is its owner's to close."""
        if self._native is not None:
            self._native.close()

    def _native_array(self, array: pa.Array, column: _Column) -> pa.Array:
        """A column as pyarrow's writer takes it: binary as base64 text, text guarded."""
        if pa.types.is_date(array.type):
            _check_dates(array)
        if not column.quoted:
            return array
        text = render_text(array)
        return neutralise(text) if self.dialect.neutralise_formulas else text

    def _write_slice(self, rows: pa.RecordBatch) -> None:
        if not self._columns:
            self._sink.write(EOL.encode() * rows.num_rows)
            return
        parts: list[Any] = []
        for array, column in zip(rows.columns, self._columns, strict=True):
            parts.extend(self._field(array, column))
            parts.append(self.dialect.delimiter)
        parts[-1] = EOL
        # NULL fields become empty; a slice too big for 32-bit offsets is joined as large.
        size = sum(p.nbytes if isinstance(p, pa.Array) else 2 * rows.num_rows for p in parts)
        records = concat(*parts, large=size >= _SMALL_LIMIT, null_as_empty=True)
        _write_values(self._sink, records)

    def _field(self, array: pa.Array, column: _Column) -> list[Any]:
        text = render_text(array)
        if column.quoted:
            if self.dialect.neutralise_formulas:
                text = neutralise(text)
            if text.null_count == 0:  # quotes joined in the record kernel: one pass less
                return ['"', pc.replace_substring(text, '"', '""'), '"']
            return [quote(text)]
        if column.guarded:
            # Never seen (numbers and ISO 8601 hold no such character), but a value that would
            # break the record is quoted rather than written broken.
            mask = pc.match_substring_regex(text, self._guard)
            if pc.any(mask).as_py():
                text = pc.if_else(mask, quote(text), text)
        return [text]


def _arrow_renders(arrow: pa.Field) -> bool:
    """Whether pyarrow's writer renders the field as the rule wants: it quotes every string and
    nothing else, and casts numbers, booleans, dates and times as ``render_text`` does."""
    kind, bare = arrow.type, field_type(arrow) in BARE_TYPES
    native = any(check(kind) for check in (pa.types.is_integer, pa.types.is_floating,
                                           pa.types.is_decimal, pa.types.is_boolean,
                                           pa.types.is_date, pa.types.is_time))
    textual = pa.types.is_string(kind) or pa.types.is_large_string(kind) or is_binary(kind)
    return (native and bare) or (textual and not bare)


def _native_type(kind: pa.DataType) -> pa.DataType:
    if pa.types.is_large_binary(kind):
        return pa.large_string()
    return pa.string() if is_binary(kind) else kind


def _column(arrow: pa.Field) -> _Column:
    bare = field_type(arrow) in BARE_TYPES
    textual = pa.types.is_string(arrow.type) or pa.types.is_large_string(arrow.type)
    return _Column(quoted=not bare, guarded=bare and textual)


def _write_values(sink: IO[bytes], records: pa.Array) -> None:
    """Write the concatenated values of a string array straight from its data buffer."""
    if len(records) == 0:
        return
    width = np.int64 if pa.types.is_large_string(records.type) else np.int32
    _, offsets_buffer, data = records.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=width)
    start, end = int(offsets[records.offset]), int(offsets[records.offset + len(records)])
    sink.write(memoryview(data)[start:end])
