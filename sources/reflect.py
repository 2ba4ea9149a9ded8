"""Reflect every table and view of the platform database, in every schema the catalog covers.

PostgreSQL: one query per schema and kind (SQLAlchemy's ``get_multi_*``), plus the system
catalogs for what reflection does not say: which tables are partitions (or inherit) of another,
and each column's type category (so a text tenant column is compared with a text id natively
and with an integer id as text). In the schema-per-tenant layout the tenant schemas are
compared by their tables and columns and one of the most common layout is reflected as the
template every tenant is read with.
"""

from __future__ import annotations

import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, inspect
from sqlalchemy.exc import SAWarning
from sqlalchemy.types import TypeEngine

from kernel.errors import SourceUnavailable
from sources.catalog_config import CatalogConfig
from sources.tables import Column, ForeignKey, TableInfo, TableKind

Signature = frozenset[tuple[str, tuple[str, ...]]]

_PARENTS = """
SELECT cn.nspname, c.relname, pn.nspname, p.relname
FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_namespace cn ON cn.oid = c.relnamespace
JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace pn ON pn.oid = p.relnamespace
WHERE cn.nspname = ANY(%(schemas)s)
"""
_CATEGORIES = """
SELECT n.nspname, c.relname, a.attname, t.typcategory
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_type t ON t.oid = a.atttypid
WHERE n.nspname = ANY(%(schemas)s) AND a.attnum > 0 AND NOT a.attisdropped
"""
_SIGNATURES = """
SELECT table_schema, table_name, column_name FROM information_schema.columns
WHERE table_schema = ANY(%(schemas)s) ORDER BY table_schema, table_name, ordinal_position
"""


@dataclass
class Reflected:
    """Every table and view found, by catalog name, and the tenant schemas (schema tenancy)."""

    backend: str
    tables: dict[str, TableInfo]
    tenant_schemas: dict[str, Signature] = field(default_factory=dict)
    template_schema: str | None = None

    @property
    def template(self) -> Signature | None:
        """The layout every tenant schema must have (schema tenancy)."""
        return self.tenant_schemas.get(self.template_schema or "")

    def resolve(self, name: str) -> TableInfo | None:
        """A table by catalog name, by ``schema.table``, or by a bare name that is unique."""
        if name in self.tables:
            return self.tables[name]
        found = [t for t in self.tables.values()
                 if name in (f"{t.schema}.{t.table}", t.table)]
        return found[0] if len(found) == 1 else None


def reflect(engine: Engine, config: CatalogConfig) -> Reflected:
    """Every table and view of the platform, or ``SourceUnavailable`` naming why not."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SAWarning)  # unknown types are read as text
            if engine.dialect.name == "sqlite":
                return _sqlite(engine)
            return _postgres(engine, config)
    except SourceUnavailable:
        raise
    except Exception as err:
        raise SourceUnavailable(f"cannot read the platform database catalog: {err}") from err


def _sqlite(engine: Engine) -> Reflected:
    inspector = inspect(engine)
    found: dict[tuple[str | None, str], dict[str, Any]] = {}
    for name in inspector.get_table_names():
        found[(None, name)] = {
            "kind": "table",
            "columns": inspector.get_columns(name),
            "pk": inspector.get_pk_constraint(name),
            "fks": inspector.get_foreign_keys(name),
            "unique": [u["column_names"] for u in inspector.get_unique_constraints(name)]
            + [i["column_names"] for i in inspector.get_indexes(name) if i.get("unique")],
        }
    for name in inspector.get_view_names():
        found[(None, name)] = {"kind": "view"}
    return Reflected("sqlite", _assemble(engine, found, {}, {}, None, None))


def _postgres(engine: Engine, config: CatalogConfig) -> Reflected:
    inspector = inspect(engine)
    default = inspector.default_schema_name
    existing = [s for s in inspector.get_schema_names()
                if s != "information_schema" and not s.startswith("pg_")]
    pattern = pattern_regex(config.schema_pattern) if config.tenancy == "schema" and (
        config.schema_pattern) else None
    shared = config.shared_schemas or [s for s in existing
                                       if pattern is None or not pattern.fullmatch(s)]
    missing = [s for s in shared if s not in existing]
    if missing:
        raise SourceUnavailable(f"the catalog names schema(s) the database lacks: "
                                f"{', '.join(missing)}")
    tenant_schemas: dict[str, Signature] = {}
    template: str | None = None
    if pattern is not None:
        names = [s for s in existing if pattern.fullmatch(s) and s not in shared]
        tenant_schemas = _signatures(engine, names)
        if tenant_schemas:
            counts = Counter(tenant_schemas.values())
            top = max(counts.values())
            template = min(s for s, sig in tenant_schemas.items() if counts[sig] == top)
    schemas = [*shared, *([template] if template else [])]
    found: dict[tuple[str | None, str], dict[str, Any]] = {}
    for schema in schemas:
        columns = inspector.get_multi_columns(schema=schema)
        pks = inspector.get_multi_pk_constraint(schema=schema)
        fks = inspector.get_multi_foreign_keys(schema=schema)
        uniques = inspector.get_multi_unique_constraints(schema=schema)
        indexes = inspector.get_multi_indexes(schema=schema)
        for key, cols in columns.items():
            found[(schema, key[1])] = {
                "kind": "table", "columns": cols, "pk": pks.get(key, {}),
                "fks": fks.get(key, []),
                "unique": [u["column_names"] for u in uniques.get(key, [])] + [
                    i["column_names"] for i in indexes.get(key, [])
                    if i.get("unique") and None not in i["column_names"]
                    and not i.get("dialect_options", {}).get("postgresql_where")],
            }
        for name in inspector.get_view_names(schema=schema):
            found[(schema, name)] = {"kind": "view"}
        for name in inspector.get_materialized_view_names(schema=schema):
            found[(schema, name)] = {"kind": "materialized view"}
    with engine.connect() as conn:
        parents = {(r[0], r[1]): (r[2], r[3])
                   for r in conn.exec_driver_sql(_PARENTS, {"schemas": schemas})}
        categories = {(r[0], r[1], r[2]): r[3]
                      for r in conn.exec_driver_sql(_CATEGORIES, {"schemas": schemas})}
    tables = _assemble(engine, found, parents, categories, default, template)
    return Reflected("postgresql", tables, tenant_schemas, template)


def _signatures(engine: Engine, schemas: list[str]) -> dict[str, Signature]:
    """Each schema's tables (and views) with their column names, to compare tenant schemas."""
    layout: dict[str, dict[str, list[str]]] = {s: {} for s in schemas}
    if schemas:
        with engine.connect() as conn:
            for schema, table, column in conn.exec_driver_sql(_SIGNATURES, {"schemas": schemas}):
                layout[schema].setdefault(table, []).append(column)
    return {s: frozenset((t, tuple(c)) for t, c in tables.items()) for s, tables in
            layout.items()}


def pattern_regex(schema_pattern: str) -> re.Pattern[str]:
    """The schemas a ``schema_pattern`` such as ``tenant_{tenant_id}`` can produce."""
    head, _, tail = schema_pattern.partition("{tenant_id}")
    return re.compile(re.escape(head) + r"(?P<tenant>.+)" + re.escape(tail))


def schema_name(schema_pattern: str, tenant_id: str) -> str:
    """The schema of a tenant: characters other than letters, digits and ``_`` become ``_``."""
    return schema_pattern.replace("{tenant_id}", re.sub(r"[^A-Za-z0-9_]", "_", tenant_id))


def _assemble(engine: Engine, found: dict[tuple[str | None, str], dict[str, Any]],
              parents: dict[tuple[str, str], tuple[str, str]],
              categories: dict[tuple[str, str, str], str], default: str | None,
              template: str | None) -> dict[str, TableInfo]:
    """TableInfo records named as the catalog names them (bare unless ambiguous)."""
    bare = Counter(name for schema, name in found if schema != template)
    names: dict[tuple[str | None, str], str] = {}
    for schema, name in found:
        ambiguous = schema != template and (bare[name] > 1 or (
            template is not None and (template, name) in found))
        names[(schema, name)] = f"{schema}.{name}" if ambiguous else name
    result: dict[str, TableInfo] = {}
    for (schema, name), raw in sorted(found.items(), key=lambda item: names[item[0]]):
        catalog_name = names[(schema, name)]
        kind: TableKind = raw["kind"]
        if kind != "table":
            result[catalog_name] = TableInfo(
                catalog_name, schema, name, kind,
                in_tenant_schema=template is not None and schema == template)
            continue
        pk = tuple(raw["pk"].get("constrained_columns") or ())
        columns = tuple(
            Column(c["name"], c["type"], _type_text(c["type"], engine), bool(c["nullable"]),
                   categories.get((schema or "", name, c["name"])))
            for c in raw["columns"])
        by_name = {c.name: c for c in columns}
        fks = []
        for fk in raw["fks"]:
            target = (fk.get("referred_schema") or (default if schema else None),
                      fk["referred_table"])
            if target not in names:
                continue  # a table outside the schemas the catalog covers
            cols = tuple(fk["constrained_columns"])
            referred = tuple(fk["referred_columns"]) or tuple(
                found[target].get("pk", {}).get("constrained_columns") or ())
            fks.append(ForeignKey(cols, names[target], referred, "database",
                                  any(by_name[c].nullable for c in cols if c in by_name)))
        parent = parents.get((schema or "", name))
        result[catalog_name] = TableInfo(
            name=catalog_name, schema=schema, table=name, kind="table", columns=columns,
            primary_key=pk, unique=tuple(tuple(u) for u in raw["unique"] if u),
            foreign_keys=tuple(fks),
            parent=names.get(parent) if parent else None,
            in_tenant_schema=template is not None and schema == template)
    return result


def _type_text(declared: TypeEngine[object], engine: Engine) -> str:
    """The declared type as the source database spells it (``TIMESTAMP WITH TIME ZONE``)."""
    try:
        return str(declared.compile(dialect=engine.dialect))
    except Exception:  # noqa: BLE001 - a type the dialect cannot render keeps its class name
        return type(declared).__name__
