"""``datapackage.json``: a Frictionless Data Package describing every file of the export.

Written last: its presence means every file it lists was read back and verified.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pyarrow as pa

from kernel.arrowmeta import (
    META_SCHEMA_TYPE,
    META_SOURCE_TYPE,
    META_STORAGE_CLASSES,
    META_TYPE_OF,
)

PROFILE = "https://datapackage.org/profiles/2.0/datapackage.json"
FORMAT_VERSION = "1.0"
CSV_DIALECT = {
    "header": True,
    "delimiter": ",",
    "lineTerminator": "\r\n",
    "quoteChar": '"',
    "doubleQuote": True,
}


@dataclass
class FileRecord:
    """One file of the package as written and verified."""

    path: str
    bytes: int
    sha256: str
    rows: int | None = None
    kind: str = "table"  # table | index | zip
    table: str | None = None
    schema: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def table_schema(schema: pa.Schema, primary_key: tuple[str, ...]) -> dict[str, Any]:
    """A Frictionless Table Schema for an Arrow schema produced by the sources."""
    fields = []
    for arrow in schema:
        metadata = arrow.metadata or {}
        descriptor: dict[str, Any] = {"name": arrow.name, "type": _field_type(arrow)}
        if pa.types.is_binary(arrow.type) or pa.types.is_large_binary(arrow.type):
            descriptor["format"] = "binary"
        if metadata.get(META_SOURCE_TYPE):
            descriptor["x-source-type"] = metadata[META_SOURCE_TYPE].decode()
        if META_TYPE_OF in metadata:
            column = metadata[META_TYPE_OF].decode()
            descriptor["description"] = (
                f"SQLite storage class of {column!r} in this row: integer, real, text or blob "
                "(blob values are base64)")
            descriptor["constraints"] = {"enum": ["integer", "real", "text", "blob"]}
        if META_STORAGE_CLASSES in metadata:
            classes = metadata[META_STORAGE_CLASSES].decode().split(",")
            descriptor["x-sqlite-storage-classes"] = classes
        fields.append(descriptor)
    result: dict[str, Any] = {"fields": fields, "missingValues": [""]}
    if primary_key:
        result["primaryKey"] = list(primary_key)
    return result


def _field_type(arrow: pa.Field) -> str:
    metadata = arrow.metadata or {}
    if META_SCHEMA_TYPE in metadata:
        return str(metadata[META_SCHEMA_TYPE].decode())
    kind = arrow.type
    checks = (
        (pa.types.is_boolean, "boolean"),
        (pa.types.is_integer, "integer"),
        (pa.types.is_floating, "number"),
        (pa.types.is_decimal, "number"),
        (pa.types.is_timestamp, "datetime"),
        (pa.types.is_date, "date"),
        (pa.types.is_time, "time"),
    )
    return next((name for check, name in checks if check(kind)), "string")


INDEX_SCHEMA: dict[str, Any] = {
    "fields": [
        {"name": "document_id", "type": "string"},
        {"name": "zip_part", "type": "string"},
        {"name": "zip_path", "type": "string"},
        {"name": "bytes", "type": "integer"},
        {"name": "sha256", "type": "string"},
        {"name": "status", "type": "string", "constraints": {"enum": ["ok", "missing"]}},
    ],
    "missingValues": [""],
    "primaryKey": ["document_id"],
}


def _resource_name(path: str, used: set[str]) -> str:
    base = re.sub(r"[^a-z0-9._-]+", "-", path.lower()).strip("-.") or "resource"
    name, n = base, 1
    while name in used:
        n += 1
        name = f"{base}-{n}"
    used.add(name)
    return name


def build_descriptor(
    tenant_id: str, export_id: str, created_at: datetime, files: list[FileRecord]
) -> dict[str, Any]:
    """The datapackage.json document for the verified files."""
    used: set[str] = set()
    resources = []
    for record in files:
        resource: dict[str, Any] = {
            "name": _resource_name(record.path, used),
            "path": record.path,
            "bytes": record.bytes,
            "hash": f"sha256:{record.sha256}",
        }
        if record.kind == "zip":
            resource.update(format="zip", mediatype="application/zip")
        else:
            resource.update(
                type="table",
                format="csv",
                mediatype="text/csv",
                encoding="utf-8",
                dialect=CSV_DIALECT,
                rows=record.rows,
                schema=record.schema if record.kind == "table" else INDEX_SCHEMA,
            )
            if record.table is not None:
                resource["x-source-table"] = record.table
        resource.update(record.extra)
        resources.append(resource)
    return {
        "$schema": PROFILE,
        "name": _resource_name(f"tenant-{tenant_id}-export-{export_id}", set()),
        "title": f"Data export of tenant {tenant_id}",
        "created": created_at.isoformat(),
        "x-tenant-id": tenant_id,
        "x-export-id": export_id,
        "x-format-version": FORMAT_VERSION,
        "resources": resources,
    }


def encode_descriptor(descriptor: dict[str, Any]) -> bytes:
    """Stable UTF-8 JSON bytes."""
    return (json.dumps(descriptor, indent=2, ensure_ascii=False) + "\n").encode()
