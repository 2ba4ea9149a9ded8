"""How a database column becomes an Arrow column without altering any value.

PostgreSQL columns map by declared type; types with no exact Arrow equivalent (numeric, json,
uuid, interval, arrays, ...) are read as the server's own text rendering, which is exact.
SQLite columns map by the storage classes actually present (``typeof``), not the declared type:
SQLite keeps ``'abc'`` as text in an INTEGER column, and a column holding several storage classes
is rendered value by value as text. Integers mixed with reals stay a ``number`` column (a real
is always written with a ``.`` or an exponent); any other mix becomes field type ``any``, followed
by a companion column ``<name>__sqlite_type`` giving each value's storage class, so nothing about
the value is lost.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

import pyarrow as pa
from sqlalchemy import types as sat

from kernel.arrowmeta import (
    META_SCHEMA_TYPE,
    META_SOURCE_TYPE,
    META_STORAGE_CLASSES,
    META_TYPE_OF,
)


@dataclass(frozen=True)
class ColumnMapping:
    """Arrow type of a column, whether SQL must cast it to text, and how to convert values."""

    arrow_type: pa.DataType
    cast_to_text: bool = False
    as_json_text: bool = False
    schema_type: str | None = None
    mixed: bool = False
    companion: bool = False
    storage_classes: tuple[str, ...] = field(default_factory=tuple)


def postgres_mapping(declared: sat.TypeEngine[object]) -> ColumnMapping:
    """Arrow mapping of a PostgreSQL column from its reflected SQLAlchemy type."""
    if isinstance(declared, sat.Boolean):
        return ColumnMapping(pa.bool_())
    if isinstance(declared, sat.Integer):
        return ColumnMapping(pa.int64())
    if isinstance(declared, sat.Float):
        precision = getattr(declared, "precision", None)
        if type(declared).__name__ == "REAL" or (precision is not None and precision <= 24):
            return ColumnMapping(pa.float32())
        return ColumnMapping(pa.float64())
    if isinstance(declared, sat.Numeric):
        return ColumnMapping(pa.string(), cast_to_text=True, schema_type="number")
    # Temporal values are read as the server's ISO 8601 text (the JSON rendering): Python's
    # datetime cannot hold 'infinity', BC dates, years past 9999 or 24:00, which PostgreSQL can.
    if isinstance(declared, sat.DateTime):
        return ColumnMapping(pa.string(), as_json_text=True, schema_type="datetime")
    if isinstance(declared, sat.Date):
        return ColumnMapping(pa.string(), as_json_text=True, schema_type="date")
    if isinstance(declared, sat.Time):
        return ColumnMapping(pa.string(), as_json_text=True, schema_type="time")
    if isinstance(declared, sat._Binary):
        return ColumnMapping(pa.binary())
    if isinstance(declared, sat.JSON):
        return ColumnMapping(pa.string(), cast_to_text=True, schema_type="any")
    if isinstance(declared, sat.String) and not isinstance(declared, sat.Enum):
        return ColumnMapping(pa.string())
    return ColumnMapping(pa.string(), cast_to_text=True)


_AFFINITY_TYPES = {
    "integer": pa.int64(),
    "real": pa.float64(),
    "text": pa.string(),
    "blob": pa.binary(),
}


def sqlite_mapping(declared_text: str, storage_classes: set[str]) -> ColumnMapping:
    """Arrow mapping of a SQLite column from the storage classes its tenant rows hold."""
    classes = tuple(sorted(storage_classes - {"null"}))
    if len(classes) == 1:
        return ColumnMapping(_AFFINITY_TYPES[classes[0]], storage_classes=classes)
    if len(classes) > 1:
        if set(classes) == {"integer", "real"}:
            # NUMERIC affinity keeps 60 as integer and 42.5 as real. The text tells them apart
            # (a real is always written with '.', 'e', 'inf' or 'nan'), so no companion column.
            return ColumnMapping(pa.string(), schema_type="number", mixed=True,
                                 storage_classes=classes)
        return ColumnMapping(pa.string(), schema_type="any", mixed=True, companion=True,
                             storage_classes=classes)
    return ColumnMapping(_affinity(declared_text))


def _affinity(declared_text: str) -> pa.DataType:
    """SQLite's column affinity rules (section 3.1 of its datatype docs) for an empty column."""
    upper = declared_text.upper()
    if "INT" in upper:
        return pa.int64()
    if any(word in upper for word in ("CHAR", "CLOB", "TEXT")):
        return pa.string()
    if "BLOB" in upper or not upper:
        return pa.binary() if "BLOB" in upper else pa.string()
    if any(word in upper for word in ("REAL", "FLOA", "DOUB")):
        return pa.float64()
    return pa.string()


_CLASS_OF = {int: "integer", float: "real", str: "text", bytes: "blob"}


def storage_class(value: object) -> str | None:
    """The SQLite storage class of a value as the driver returns it (None for NULL)."""
    return None if value is None else _CLASS_OF.get(type(value), "text")


def companion_field(name: str, taken: set[str]) -> pa.Field:
    """The column that carries, row by row, the storage class of mixed column ``name``."""
    candidate = f"{name}__sqlite_type"
    while candidate in taken:
        candidate += "_"
    return pa.field(candidate, pa.string(), nullable=True,
                    metadata={META_TYPE_OF: name.encode(), META_SOURCE_TYPE: b""})


def render_mixed(value: object) -> str | None:
    """One value of a mixed-class SQLite column as text, exactly as its storage class holds it."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, float):
        return repr(value)
    return str(value)


def arrow_field(name: str, mapping: ColumnMapping, declared_text: str) -> pa.Field:
    """The Arrow field with the metadata exporters use to describe it."""
    metadata = {META_SOURCE_TYPE: declared_text.encode()}
    if mapping.schema_type:
        metadata[META_SCHEMA_TYPE] = mapping.schema_type.encode()
    if mapping.storage_classes:
        metadata[META_STORAGE_CLASSES] = ",".join(mapping.storage_classes).encode()
    return pa.field(name, mapping.arrow_type, nullable=True, metadata=metadata)
