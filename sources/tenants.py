"""Which tenants the platform lists, and a tenant's id as the database stores it."""

from __future__ import annotations

from kernel.errors import BadInput, UnknownTenant
from kernel.ids import validate_tenant_id
from sources.catalog import Catalog
from sources.database import Snapshot


def tenant_key(catalog: Catalog, snap: Snapshot, tenant_id: str) -> object:
    """The tenant's id as the database stores it (compared as text: no aliases).

    Raises ``UnknownTenant`` (exit 2) unless the platform's tenants table lists the id.
    """
    validate_tenant_id(tenant_id)
    config = catalog.config
    if config.tenants_table not in catalog.table_names:
        raise BadInput(f"the platform database has no {config.tenants_table!r} table listing "
                       "tenants", tenant_id=tenant_id)
    key = snap.tenant_key(config.tenants_table, config.tenants_id_column, tenant_id,
                          schema=config.db_schema)
    if key is None:
        raise UnknownTenant(f"unknown tenant {tenant_id!r}", tenant_id=tenant_id)
    return key


def all_tenants(catalog: Catalog, snap: Snapshot) -> list[str]:
    """Every tenant id the platform lists, sorted."""
    config = catalog.config
    return sorted(str(row[0]) for row in snap.select_all(
        config.tenants_table, config.tenants_id_column, schema=config.db_schema))
