"""The cells of a worksheet for a run of rows, and their XML, built by Arrow compute kernels.

``Cells`` are one column's cells (``exporters.xlsx_cells`` decides which kind each value is).
Their XML is, byte for byte, what xlsxwriter writes for the same cells in constant-memory mode
(``exporters.xlsx_writer`` wrote every cell through it before, four fifths of the workbook's
CPU time): ``<row r="2">`` with no spans, each cell with its A1 reference, its style when it has
one, and its value:

- text: an inline string, cut to what a cell holds (``fit_text``). Control characters become
  ``_xHHHH_`` escapes (XML 1.0 cannot hold them), a literal ``_xHHHH_`` gets its underscore
  escaped (``_x005F_xHHHH_``), and so do U+FFFE/U+FFFF; ``&``, ``<``, ``>`` become entities;
  ``xml:space="preserve"`` when the text starts or ends with white space (Python's ``\\s``)
  or looks like rich text (``<r>...</r>``, which xlsxwriter would otherwise copy unescaped).
- numbers: ``<v>`` with the text ``repr`` writes (``repr_texts``); booleans ``t="b"``, 1 or 0.

The rare texts with control characters or escape look-alikes are escaped value by value (as
xlsxwriter's ``_escape_control_characters`` does); everything else by kernels.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from exporters.csv_writer import concat

MAX_TEXT_UNITS = 32_767  # UTF-16 code units Excel holds in one cell
TRUNCATED_MARK = "[…]"
# Python's white space (str.isspace) less the characters escaped as _xHHHH_ before the check.
WHITESPACE = ("\t\n \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009"
              "\u200a\u2028\u2029\u202f\u205f\u3000")
_SPACE_CLASS = "[" + "".join(f"\\x{{{ord(c):x}}}" for c in WHITESPACE) + "]"
_EDGE_SPACE = f"^{_SPACE_CLASS}|{_SPACE_CLASS}$"
_ESCAPED = r"[\x00-\x08\x0b-\x1f\x{fffe}\x{ffff}]|_x[0-9a-fA-F]{4}_"
# xlsxwriter's _escape_control_characters: literal escapes first, then the characters.
_LITERAL_ESCAPE = re.compile("(_x[0-9a-fA-F]{4}_)")
_ESCAPES = {c: f"_x{c:04X}_" for c in (*range(0x09), *range(0x0B, 0x20), 0xFFFE, 0xFFFF)}
_ENTITIES = (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"))
_TEXT = pa.large_string()


@dataclass(frozen=True)
class Cells:
    """One column's cells for a run of rows: per row, at most one of ``text`` (the text a
    string cell holds), ``number`` (the number as written) and ``boolean`` is non-null."""

    text: pa.Array | None = None
    number: pa.Array | None = None
    boolean: pa.Array | None = None

    def parts(self) -> list[pa.Array]:
        return [a for a in (self.text, self.number, self.boolean) if a is not None]

    def slice(self, start: int, length: int) -> Cells:
        return Cells(*(None if a is None else a.slice(start, length)
                       for a in (self.text, self.number, self.boolean)))


@dataclass(frozen=True)
class Styles:
    """The ``s`` attribute of a column's cells: xf index of the text and the number format,
    None where the cells have no style (or none of that kind is written)."""

    text: str | None
    numbers: list[str | None]


def fit_text(text: str) -> tuple[str, bool]:
    """The text a cell can hold, and whether it had to be cut (with ``TRUNCATED_MARK``)."""
    if len(text) <= MAX_TEXT_UNITS // 2 or len(text.encode("utf-16-le")) <= 2 * MAX_TEXT_UNITS:
        return text, False
    budget = 2 * (MAX_TEXT_UNITS - len(TRUNCATED_MARK))
    cut = text.encode("utf-16-le")[:budget].decode("utf-16-le", errors="ignore")
    return cut + TRUNCATED_MARK, True


def fit_texts(texts: pa.Array) -> tuple[pa.Array, int]:
    """``fit_text`` of each text, and how many were cut (only long texts are looked at)."""
    long = pc.greater(pc.utf8_length(texts), MAX_TEXT_UNITS // 2)
    if not pc.any(long).as_py():
        return texts, 0
    fitted = [fit_text(t) for t in pc.filter(texts, long).to_pylist()]
    cut = sum(c for _, c in fitted)
    return pc.replace_with_mask(texts, long, pa.array([t for t, _ in fitted], _TEXT)), cut


def repr_texts(values: pa.Array) -> pa.Array:
    """``repr`` of each double (null stays null): ``46023.0``, ``0.1``, ``1e-05``.

    Arrow's cast writes the same shortest digits; where it writes them without an exponent and
    Python also would (1e-4 <= |x| < 1e16), only a missing ``.0`` differs. Other values (tiny,
    huge) are rare and rendered by Python.
    """
    text = pc.cast(values, _TEXT)
    size = pc.abs(values)
    fixed = pc.and_(pc.invert(pc.match_substring(text, "e")), pc.or_(
        pc.and_(pc.greater_equal(size, 1e-4), pc.less(size, 1e16)), pc.equal(size, 0.0)))
    written = pc.if_else(pc.match_substring(text, "."), text, concat(text, ".0"))
    rest = pc.and_(values.is_valid(), pc.invert(pc.fill_null(fixed, True)))
    if not pc.any(rest).as_py():
        return written
    reprs = [repr(v) for v in pc.filter(values, rest).to_pylist()]
    return pc.replace_with_mask(written, rest, pa.array(reprs, _TEXT))


def escape_texts(texts: pa.Array) -> tuple[pa.Array, pa.Array]:
    """The XML text of each string cell, and whether it needs ``xml:space="preserve"``."""
    odd = pc.match_substring_regex(texts, _ESCAPED)
    if pc.any(odd).as_py():
        escaped = [_LITERAL_ESCAPE.sub(r"_x005F\1", t).translate(_ESCAPES)
                   for t in pc.filter(texts, odd).to_pylist()]
        texts = pc.replace_with_mask(texts, odd, pa.array(escaped, _TEXT))
    preserve = pc.or_(pc.match_substring_regex(texts, _EDGE_SPACE),
                      pc.and_(pc.starts_with(texts, "<r>"), pc.ends_with(texts, "</r>")))
    for raw, entity in _ENTITIES:
        texts = pc.replace_substring(texts, raw, entity)
    return texts, preserve


def rows_xml(columns: list[Cells], letters: list[str], styles: Styles, first_row: int,
             present: np.ndarray) -> memoryview:
    """The ``<row>`` elements of ``columns``' rows, the first being sheet row ``first_row``
    (0-based); rows with no cell (``present`` False) are left out, as xlsxwriter does."""
    count = len(present)
    numbers = pc.cast(pa.array(np.arange(first_row + 1, first_row + count + 1)), _TEXT)
    cells = [_column_xml(c, letter, styles.text, style, numbers)
             for c, letter, style in zip(columns, letters, styles.numbers, strict=True)]
    rows = concat('<row r="', numbers, '">', *[c for c in cells if c is not None], "</row>",
                  large=True, null_as_empty=True)
    if not present.all():
        rows = pc.filter(rows, pa.array(present))
    return _data(rows)


def _column_xml(cells: Cells, letter: str, text_style: str | None, number_style: str | None,
                numbers: pa.Array) -> pa.Array | None:
    parts: list[pa.Array] = []
    if cells.text is not None and cells.text.null_count < len(cells.text):
        escaped, preserve = escape_texts(cells.text)
        opening = pc.if_else(preserve, '<t xml:space="preserve">', "<t>")
        parts.append(concat(f'<c r="{letter}', numbers, f'"{_style(text_style)} t="inlineStr"><is>',
                            opening, escaped, "</t></is></c>", large=True))
    if cells.number is not None and cells.number.null_count < len(cells.number):
        parts.append(concat(f'<c r="{letter}', numbers, f'"{_style(number_style, True)}><v>',
                            cells.number, "</v></c>", large=True))
    if cells.boolean is not None and cells.boolean.null_count < len(cells.boolean):
        parts.append(concat(f'<c r="{letter}', numbers, '" t="b"><v>',
                            pc.if_else(cells.boolean, "1", "0"), "</v></c>", large=True))
    if len(parts) > 1:
        return pc.coalesce(*parts)
    return parts[0] if parts else None


def _style(style: str | None, optional: bool = False) -> str:
    if style is None:
        if not optional:
            raise RuntimeError("a text cell without its style's index")  # writer's bookkeeping
        return ""
    return f' s="{style}"'


def _data(texts: pa.Array) -> memoryview:
    """The concatenated bytes of a string array, straight from its buffer (no copy)."""
    _, offsets, data = texts.buffers()
    if data is None:
        return memoryview(b"")
    bounds = np.frombuffer(offsets, dtype=np.int64)[texts.offset:texts.offset + len(texts) + 1]
    return memoryview(data)[int(bounds[0]):int(bounds[-1])]
