"""The classification of every table as a plain document: what ``catalog show --json`` prints
and what the export package's ``x-inventory`` records (DESIGN §3.3: nothing left out silently).

Names only, never values. A table of the schema-per-tenant layout is listed without its schema
(the layout was reflected from some tenant's schema, whose name is not this tenant's business).
"""

from __future__ import annotations

from typing import Any

from sources.catalog import Catalog
from sources.tables import TableEntry

GROUPS = {"exported": "exported", "shared": "shared", "skipped": "skipped",
          "partition": "partitions", "view": "views", "unclassified": "unclassified"}


def describe(entry: TableEntry) -> dict[str, Any]:
    """One table or view: its name, where it lives, and why it is in its class."""
    info = entry.info
    doc: dict[str, Any] = {"table": entry.name}
    if info.schema and not info.in_tenant_schema:
        doc["schema"] = info.schema
    if entry.status == "view":
        doc["kind"] = info.kind
    if entry.status == "partition":
        doc["parent"] = info.parent
    if entry.scope is not None and entry.status in ("exported", "skipped"):
        doc["scope"] = entry.scope.describe()
        if entry.scope.paths:
            doc["paths"] = list(entry.scope.paths)
    if entry.status == "skipped":
        doc["backed_up"] = entry.scope is not None
    if entry.reason is not None or entry.status == "skipped":
        doc["reason"] = entry.reason
    if entry.excluded:
        doc["excluded_columns"] = list(entry.excluded)
    if entry.suggestion:
        doc["suggestion"] = entry.suggestion
    doc["why"] = entry.why
    return doc


def classification(catalog: Catalog) -> dict[str, Any]:
    """Every table and view of the platform, grouped by class."""
    config = catalog.config
    doc: dict[str, Any] = {"tenancy": config.tenancy}
    if config.tenancy == "column":
        doc["tenant_column"] = config.tenant_column
    else:
        doc["schema_pattern"] = config.schema_pattern
    doc["tenants_table"] = config.tenants_table
    for group in GROUPS.values():
        doc[group] = []
    for entry in sorted(catalog.entries, key=lambda e: e.name):
        doc[GROUPS[entry.status]].append(describe(entry))
    return doc
