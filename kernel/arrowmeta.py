"""Arrow field metadata keys: the contract between sources (which set them) and exporters,
backups and restores (which read them). Defined once so the stages cannot drift apart."""

from __future__ import annotations

META_SCHEMA_TYPE = b"table_schema_type"  # Frictionless field type when Arrow's type is text
META_SOURCE_TYPE = b"source_type"  # the column's declared type, as the source spells it
META_STORAGE_CLASSES = b"sqlite_storage_classes"  # SQLite classes present, comma-separated
META_TYPE_OF = b"sqlite_type_of"  # on a companion column: the mixed column it types
