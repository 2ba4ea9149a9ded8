"""Assembles a ``Platform`` from a finished model: truth, catalog and the table inventory."""

from __future__ import annotations

from .catalog import catalog_toml
from .model import Model
from .schema import MATERIALIZED_VIEWS, TABLES, VIEWS, Backend, partitions
from .spec import Platform, tenant_schema


def platform(model: Model, backend: Backend, location: str, *,
             schema_per_tenant: bool = False) -> Platform:
    pg = backend == "postgresql"
    parts = partitions() if pg else []
    if schema_per_tenant:
        tenant_schemas = [tenant_schema(t) for t in model.tenants]
        schemas = ["public", *tenant_schemas]
        where = {t.name: "public" if t.kind in ("shared", "root") else "tenant_{tenant_id}"
                 for t in TABLES}
    elif pg:
        schemas = ["public", "billing"]
        where = {t.name: t.schema for t in TABLES}
    else:
        schemas = ["main"]
        where = {t.name: "main" for t in TABLES}
    return Platform(
        backend=backend, location=location, spec=model.spec, tenant_ids=list(model.tenants),
        catalog_toml=catalog_toml(partitions=parts, schema_per_tenant=schema_per_tenant),
        owned=model.owned, cross_tenant=dict(model.cross_tenant), orphans=dict(model.orphans),
        row_counts=dict(model.row_counts),
        shared_tables=[t.name for t in TABLES if t.kind == "shared"],
        content_tables=[t.name for t in TABLES if t.kind != "shared"],
        partitioned={t.name: parts for t in TABLES if t.partitioned} if pg else {},
        views=list(VIEWS), materialized_views=list(MATERIALIZED_VIEWS) if pg else [],
        schemas=schemas, table_schemas=where,
        primary_keys={t.name: t.key(schema_per_tenant) for t in TABLES},
        missing_blobs=list(model.missing_blobs), schema_per_tenant=schema_per_tenant,
        blobs=dict(model.blobs),
    )
