"""The Table Schema type of an Arrow field, decided once for every writer and the descriptor.

The CSV quoting rule (text quoted, nothing else), the workbook's cell types and the field types
of ``datapackage.json`` all follow from this one mapping, so they cannot disagree.
"""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa

from kernel.arrowmeta import META_SCHEMA_TYPE

# Types whose CSV rendering is a bare token (digits, ISO 8601, true/false): never quoted.
# Every other type (string, any, and whatever a later version adds) is text and always quoted.
BARE_TYPES = frozenset({"integer", "number", "boolean", "date", "time", "datetime"})

_BY_ARROW: tuple[tuple[Callable[[pa.DataType], bool], str], ...] = (
    (pa.types.is_boolean, "boolean"),
    (pa.types.is_integer, "integer"),
    (pa.types.is_floating, "number"),
    (pa.types.is_decimal, "number"),
    (pa.types.is_timestamp, "datetime"),
    (pa.types.is_date, "date"),
    (pa.types.is_time, "time"),
)


def field_type(arrow: pa.Field) -> str:
    """The Table Schema type: the sources' metadata when set (text columns that hold numbers or
    ISO 8601), else derived from the Arrow type; binary is ``string`` (base64)."""
    metadata = arrow.metadata or {}
    if META_SCHEMA_TYPE in metadata:
        return str(metadata[META_SCHEMA_TYPE].decode())
    return next((name for check, name in _BY_ARROW if check(arrow.type)), "string")


def is_text(arrow: pa.Field) -> bool:
    """True when the field's values are text in the package (quoted in every CSV)."""
    return field_type(arrow) not in BARE_TYPES


def is_binary(arrow_type: pa.DataType) -> bool:
    """Binary columns are written as base64 text (``"format": "binary"`` in the schema)."""
    return bool(pa.types.is_binary(arrow_type) or pa.types.is_large_binary(arrow_type)
                or pa.types.is_fixed_size_binary(arrow_type))
