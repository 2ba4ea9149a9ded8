"""``datapackage.json``: a Frictionless Data Package describing every file of the export.

Written last: its presence means every file it lists was read back and verified.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import TYPE_CHECKING, Any

from kernel.arrowmeta import META_SOURCE_TYPE, META_STORAGE_CLASSES, META_TYPE_OF

if TYPE_CHECKING:  # Arrow only where a schema is described: reading a manifest needs none
    import pyarrow as pa

PROFILE = "https://datapackage.org/profiles/2.0/datapackage.json"
FORMAT_VERSION = "1.2"
XLSX_MEDIATYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
# kind of a non-table file -> (format, mediatype); each is a ``"type": "file"`` resource
FILE_KINDS = {
    "zip": ("zip", "application/zip"),
    "workbook": ("xlsx", XLSX_MEDIATYPE),
    "guide-html": ("html", "text/html"),
    "guide-text": ("txt", "text/plain"),
}


@dataclass
class FileRecord:
    """One file of the package as written and verified."""

    path: str
    bytes: int
    sha256: str
    rows: int | None = None
    kind: str = "table"  # table | index (CSV) | zip | workbook | guide-html | guide-text
    table: str | None = None
    schema: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # relations of a table: {"fields": [...], "table": parent table, "parent_fields": [...]}
    foreign_keys: list[dict[str, Any]] = field(default_factory=list)
    dialect: dict[str, Any] | None = None  # a CSV's CsvDialect.to_descriptor()

    @property
    def is_csv(self) -> bool:
        """A table of the package (a data CSV or documents/index.csv)."""
        return self.kind in ("table", "index")


def table_schema(schema: pa.Schema, primary_key: tuple[str, ...]) -> dict[str, Any]:
    """A Frictionless Table Schema for an Arrow schema produced by the sources."""
    from exporters.fieldtypes import field_type, is_binary  # noqa: PLC0415 - Arrow

    fields = []
    for arrow in schema:
        metadata = arrow.metadata or {}
        descriptor: dict[str, Any] = {"name": arrow.name, "type": field_type(arrow)}
        if is_binary(arrow.type):
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


# inventory field -> resource field: rows of a table exported to nobody (platform-wide counts)
UNOWNED = {"cross_tenant_rows": "x-cross-tenant-rows", "orphan_rows": "x-orphan-rows"}

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


def index_schema(schema: pa.Schema) -> dict[str, Any]:
    """The Table Schema of ``documents/index.csv`` as its writer laid it out."""
    result = table_schema(schema, ("document_id",))
    for descriptor in result["fields"]:
        if descriptor["name"] == "status":
            descriptor["constraints"] = {"enum": ["ok", "missing"]}
    return result


@cache
def _csv_dialect() -> dict[str, Any]:
    """The dialect of packages written without a recorded one (the writer's default)."""
    from exporters.csv_writer import DEFAULT_DIALECT  # noqa: PLC0415 - Arrow and numpy

    return DEFAULT_DIALECT.to_descriptor()


def _resource_name(path: str, used: set[str]) -> str:
    base = re.sub(r"[^a-z0-9._-]+", "-", path.lower()).strip("-.") or "resource"
    name, n = base, 1
    while name in used:
        n += 1
        name = f"{base}-{n}"
    used.add(name)
    return name


def build_descriptor(
    tenant_id: str, export_id: str, created_at: datetime, files: list[FileRecord],
    inventory: dict[str, Any] | None = None, archive_path: str | None = None,
) -> dict[str, Any]:
    """The datapackage.json document for the verified files, with the inventory of every
    table of the platform (``x-inventory``) when given.

    ``archive_path`` names the single-download ZIP of the package (``x-archive``). It is not a
    resource: it holds this very file, so its size and hash cannot be stated here.
    """
    used: set[str] = set()
    names = [_resource_name(record.path, used) for record in files]
    by_table = {r.table: (n, r) for n, r in zip(names, files, strict=True)
                if r.kind == "table" and r.table is not None}
    by_path = {r.path: n for n, r in zip(names, files, strict=True) if r.is_csv}
    resources = []
    for name, record in zip(names, files, strict=True):
        resource: dict[str, Any] = {
            "name": name,
            "path": record.path,
            "bytes": record.bytes,
            "hash": f"sha256:{record.sha256}",
        }
        if record.is_csv:
            resource.update(_table_resource(record, by_table))
        else:
            file_format, mediatype = FILE_KINDS.get(record.kind, (None, None))
            resource["type"] = "file"
            if file_format is not None:
                resource.update(format=file_format, mediatype=mediatype)
            if record.kind.startswith("guide"):
                resource["encoding"] = "utf-8"
            sibling = by_path.get(record.path.rsplit(".", 1)[0] + ".csv")
            if record.kind == "workbook" and sibling is not None:
                resource["x-workbook-of"] = sibling  # the CSV resource it mirrors
        resource.update(record.extra)
        resources.append(resource)
    descriptor: dict[str, Any] = {
        "$schema": PROFILE,
        "name": _resource_name(f"tenant-{tenant_id}-export-{export_id}", set()),
        "title": f"Data export of tenant {tenant_id}",
        "created": created_at.isoformat(),
        "x-tenant-id": tenant_id,
        "x-export-id": export_id,
        "x-format-version": FORMAT_VERSION,
        "resources": resources,
    }
    if archive_path is not None:
        descriptor["x-archive"] = archive_path
    if inventory is not None:
        descriptor["x-inventory"] = _with_resources(inventory, by_table)
    return descriptor


def _table_resource(record: FileRecord, by_table: dict[str, tuple[str, FileRecord]]
                    ) -> dict[str, Any]:
    """The Table Schema part of a CSV resource: dialect as written, schema, relations."""
    schema = record.schema or (INDEX_SCHEMA if record.kind == "index" else None)
    inside, outside = _foreign_keys(record, by_table)
    if inside and schema is not None:
        schema = {**schema, "foreignKeys": inside}
    resource: dict[str, Any] = {
        "type": "table", "format": "csv", "mediatype": "text/csv", "encoding": "utf-8",
        "dialect": record.dialect or _csv_dialect(), "rows": record.rows, "schema": schema,
    }
    if record.kind == "table" and record.table is not None:
        resource["x-source-table"] = record.table
    if outside:
        resource["x-external-foreign-keys"] = outside
    return resource


def _foreign_keys(record: FileRecord, by_table: dict[str, tuple[str, FileRecord]]
                  ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Frictionless ``foreignKeys`` between resources of the package, and the relations to
    tables the package does not hold (shared, skipped) by table name."""
    inside, outside = [], []
    fields = _field_names(record)
    for fk in record.foreign_keys:
        if not set(fk["fields"]) <= fields:
            continue
        target = by_table.get(fk["table"])
        if target is not None and set(fk["parent_fields"]) <= _field_names(target[1]):
            inside.append({"fields": list(fk["fields"]),
                           "reference": {"resource": target[0],
                                         "fields": list(fk["parent_fields"])}})
        else:
            outside.append({"fields": list(fk["fields"]),
                            "reference": {"table": fk["table"],
                                          "fields": list(fk["parent_fields"])}})
    return inside, outside


def _field_names(record: FileRecord) -> set[str]:
    return {f["name"] for f in (record.schema or {}).get("fields", [])}


def _with_resources(inventory: dict[str, Any], by_table: dict[str, tuple[str, FileRecord]]
                    ) -> dict[str, Any]:
    """The inventory with each exported table's resource, row count and the counts of rows
    exported to nobody (cross-tenant, orphan)."""
    result = dict(inventory)
    exported = []
    for table in inventory.get("exported", []):
        found = by_table.get(table["table"])
        extra: dict[str, Any] = {}
        if found is not None:
            name, record = found
            extra = {"resource": name, "rows": record.rows}
            extra.update({key: record.extra[x] for key, x in UNOWNED.items() if x in record.extra})
        exported.append({**table, **extra})
    result["exported"] = exported
    return result


def encode_descriptor(descriptor: dict[str, Any]) -> bytes:
    """Stable UTF-8 JSON bytes."""
    return (json.dumps(descriptor, indent=2, ensure_ascii=False) + "\n").encode()
