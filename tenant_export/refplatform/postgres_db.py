"""The platform in PostgreSQL: one transaction, COPY per table, then keys, indexes and views.

Foreign keys and indexes are added after the data (the usual bulk-load order, much faster than
checking row by row). In the schema-per-tenant layout each tenant's rows are copied into its own
schema without the tenant column, as django-tenants lays them out.
"""

from __future__ import annotations

import itertools
from operator import itemgetter

import psycopg

from .build import platform
from .model import Model, Owned
from .schema import TABLES, TENANT_COLUMN, Table, render
from .spec import Platform, PlatformSpec, tenant_schema


def plain_url(url: str) -> str:
    """psycopg wants a libpq URL: drop a SQLAlchemy driver suffix such as ``+psycopg``."""
    scheme, sep, rest = url.partition("://")
    if scheme.split("+")[0] not in ("postgresql", "postgres") or not sep:
        raise ValueError("expected a postgresql:// URL")
    return f"postgresql://{rest}"


def create_postgres(url: str, spec: PlatformSpec, *, schema_per_tenant: bool = False) -> Platform:
    """Create the platform in an empty database. With ``schema_per_tenant``, row anomalies
    (cross-tenant join rows, orphans) cannot exist and are not generated: a row's schema is its
    owner. Missing blobs still are."""
    model = Model(spec, row_anomalies=not schema_per_tenant, schema_mode=schema_per_tenant)
    schemas = [tenant_schema(t) for t in model.tenants] if schema_per_tenant else []
    ddl = render("postgresql", schemas)
    with psycopg.connect(plain_url(url)) as conn, conn.cursor() as cur:
        for statement in ddl.create:
            cur.execute(statement)
        for table, rows in model.generate():
            _copy(cur, table, rows, schemas)
        for statement in ddl.post:
            cur.execute(statement)
        for table in TABLES:
            if table.columns[0].type in ("id", "serial"):
                for schema in _homes(table, schemas):
                    name = f"{schema}.{table.name}"
                    cur.execute(f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), "
                                f"coalesce(max(id), 0) + 1, false) FROM {name}")
        for statement in ddl.views:
            cur.execute(statement)
        cur.execute("ANALYZE")
    return platform(model, "postgresql", url, schema_per_tenant=schema_per_tenant)


def _homes(table: Table, schemas: list[str]) -> list[str]:
    """The schemas holding a table: its own, or every tenant's for content in schema mode."""
    if schemas and table.kind in ("tenant", "child"):
        return schemas
    return ["public" if schemas else table.schema]


def _copy(cur: psycopg.Cursor[tuple[object, ...]], table: Table, rows: Owned,
          schemas: list[str]) -> None:
    if not (schemas and table.kind in ("tenant", "child")):
        columns = ", ".join(table.names)
        home = _homes(table, schemas)[0]
        with cur.copy(f"COPY {home}.{table.name} ({columns}) FROM STDIN") as copy:
            for _, row in rows:
                copy.write_row(row)
        return
    keep = [i for i, name in enumerate(table.names)
            if not (table.kind == "tenant" and name == TENANT_COLUMN)]
    columns = ", ".join(table.names[i] for i in keep)
    pick = itemgetter(*keep)
    for owner, group in itertools.groupby(rows, key=itemgetter(0)):
        if owner < 0:
            raise AssertionError(f"{table.name}: a row without a tenant in schema mode")
        with cur.copy(f"COPY {schemas[owner]}.{table.name} ({columns}) FROM STDIN") as copy:
            for _, row in group:
                copy.write_row(pick(row) if len(keep) > 1 else (pick(row),))
