"""Which tenants the platform lists, and a tenant as the database stores it.

A tenant id is looked up the way the database compares it: under a case-insensitive collation
(SQLite ``COLLATE NOCASE``, PostgreSQL ``citext``) ``ACME`` finds ``acme``, and the id *as
stored* is what every object key, lock and artifact uses, so one tenant never gets two export
prefixes or two locks. A value that only equals the id after a type conversion (``'07'`` for
the integer 7) is no alias: it is refused.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kernel.errors import BadInput, UnknownTenant
from kernel.ids import validate_tenant_id
from sources.catalog import Catalog
from sources.reflect import schema_name
from sources.tables import Place, TableInfo, TenantRef

if TYPE_CHECKING:  # handed in by the caller: Arrow stays out of a plain lookup's imports
    from sources.database import Snapshot

__all__ = ["TenantRef", "all_tenants", "tenant_key"]


def tenant_key(catalog: Catalog, snap: Snapshot, tenant_id: str) -> TenantRef:
    """The tenant as stored: canonical id text, typed key and (schema tenancy) its schema.

    Raises ``UnknownTenant`` (exit 2) unless the platform's tenants table lists the id, and
    ``BadInput`` when the id matches several stored ids or its schema is missing or unlike
    the other tenants'.
    """
    validate_tenant_id(tenant_id)
    info = _tenants(catalog, tenant_id)
    column = catalog.config.tenants_id_column
    id_column = info.column(column)
    textual = snap.is_sqlite or (id_column is not None and id_column.category == "S")
    sql = snap.sql
    ref = sql.table(Place(info.schema, info.table))
    where = (f"{sql.quote(column)} = {sql.param}" if textual
             else f"CAST({sql.quote(column)} AS TEXT) = {sql.param}")
    found = [row[0] for row in snap.rows(f"SELECT {sql.quote(column)} FROM {ref} WHERE {where}",
                                         [tenant_id], f"table {info.name!r}")]
    # A typed value equal only after a conversion ('07' = 7) is not the tenant; a text value
    # equal under the column's collation ('ACME' = 'acme') is.
    matches = [v for v in found if str(v) == tenant_id] or [v for v in found if isinstance(v, str)]
    if not matches:
        raise UnknownTenant(f"unknown tenant {tenant_id!r}", tenant_id=tenant_id)
    if len(matches) > 1:
        raise BadInput(f"tenant id {tenant_id!r} matches several stored ids ("
                       f"{', '.join(repr(str(m)) for m in matches)}); use the exact one",
                       tenant_id=tenant_id)
    key = matches[0]
    canonical = str(key)
    try:
        validate_tenant_id(canonical)
    except BadInput as err:
        raise BadInput(f"tenant {tenant_id!r} is stored as {canonical!r}, which is not a valid "
                       "tenant id for object keys", tenant_id=tenant_id) from err
    schema = _schema_of(catalog, snap, canonical) if catalog.config.tenancy == "schema" else None
    return TenantRef(canonical, key, schema)


def _tenants(catalog: Catalog, tenant_id: str) -> TableInfo:
    info = catalog.tenants_info
    if info is None:
        raise BadInput(f"the platform database has no {catalog.config.tenants_table!r} table "
                       "listing tenants", tenant_id=tenant_id)
    return info


def _schema_of(catalog: Catalog, snap: Snapshot, tenant_id: str) -> str:
    """The tenant's own schema: it must exist, belong to no other tenant, and hold the same
    tables and columns as the other tenants' schemas (the layout the plans were made from)."""
    pattern = catalog.config.schema_pattern or ""
    wanted = schema_name(pattern, tenant_id)
    existing = catalog.tenant_schemas
    schema = wanted if wanted in existing else wanted.lower()
    if schema not in existing:
        raise BadInput(f"tenant {tenant_id!r} has no schema {wanted!r} "
                       f"(schema_pattern {pattern!r})", tenant_id=tenant_id)
    clash = [t for t in all_tenants(catalog, snap)
             if t != tenant_id and schema_name(pattern, t) in (wanted, schema)]
    if clash:
        raise BadInput(f"tenants {tenant_id!r} and {clash[0]!r} both map to schema {schema!r}",
                       tenant_id=tenant_id)
    if existing[schema] != catalog.template:
        template = dict(catalog.template or ())
        mine = dict(existing[schema])
        differ = sorted(t for t in set(template) | set(mine) if template.get(t) != mine.get(t))
        raise BadInput(f"schema {schema!r} of tenant {tenant_id!r} differs from the other "
                       f"tenants' schemas in: {', '.join(differ)}", tenant_id=tenant_id)
    return schema


def all_tenants(catalog: Catalog, snap: Snapshot) -> list[str]:
    """Every tenant id the platform lists, as stored, sorted."""
    info = catalog.tenants_info
    if info is None:
        return []
    return sorted(str(row[0]) for row in snap.select_all(
        info.table, catalog.config.tenants_id_column, schema=info.schema))
