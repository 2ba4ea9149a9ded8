"""Which tables and columns make up a tenant: discovery rules plus the catalog TOML overrides.

Overrides that name a table or column that does not exist are refused rather than ignored: a typo
in ``exclude_columns`` would otherwise let a secret column leave the platform.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import Engine, inspect
from sqlalchemy.types import TypeEngine

from kernel.errors import BadInput, SourceUnavailable


class TableRule(BaseModel):
    """Per-table override."""

    model_config = ConfigDict(extra="forbid")
    skip: bool = False
    exclude_columns: list[str] = Field(default_factory=list)


class DocumentsRule(BaseModel):
    """Where uploaded documents are described."""

    model_config = ConfigDict(extra="forbid")
    table: str = "documents"
    id_column: str = "id"
    key_column: str = "storage_key"
    name_column: str = "filename"
    key_prefix: str | None = Field(
        default=None,
        description="Where a tenant's blobs must live, e.g. 'tenants/{tenant_id}/': a key "
        "outside it fails the export instead of shipping another tenant's file.",
    )


class CatalogConfig(BaseModel):
    """The catalog TOML of DESIGN §3.3 (every key optional)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    tenant_column: str = "tenant_id"
    tenants_table: str = "tenants"
    tenants_id_column: str = "id"
    db_schema: str | None = Field(default=None, alias="schema")
    tables: dict[str, TableRule] = Field(default_factory=dict)
    documents: DocumentsRule = Field(default_factory=DocumentsRule)

    @classmethod
    def load(cls, path: Path | None) -> CatalogConfig:
        """Read a catalog TOML, or the discovery defaults when no path is given."""
        if path is None:
            return cls()
        try:
            with path.open("rb") as handle:
                data = tomllib.load(handle)
        except OSError as err:
            raise BadInput(f"cannot read catalog {path}: {err.strerror or err}") from err
        except tomllib.TOMLDecodeError as err:
            raise BadInput(f"catalog {path} is not valid TOML: {err}") from err
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise BadInput(f"catalog {path}: {where}: {first['msg']}") from err


@dataclass(frozen=True)
class Column:
    """A column as declared in the database."""

    name: str
    declared: TypeEngine[object]
    declared_text: str


@dataclass(frozen=True)
class TablePlan:
    """One exported table: its columns (exclusions applied) and the column filtering the tenant."""

    name: str
    columns: tuple[Column, ...]
    filter_column: str
    primary_key: tuple[str, ...]
    excluded: tuple[str, ...] = ()


@dataclass(frozen=True)
class Catalog:
    """The resolved catalog: tables in a stable order and the documents description."""

    config: CatalogConfig
    tables: tuple[TablePlan, ...]
    table_names: frozenset[str] = frozenset()

    def table(self, name: str) -> TablePlan | None:
        """The plan of a table, or None when it is not exported."""
        return next((t for t in self.tables if t.name == name), None)

    @property
    def tenants(self) -> TablePlan | None:
        """The tenants table, when the database has one."""
        return self.table(self.config.tenants_table)


def discover(engine: Engine, config: CatalogConfig) -> Catalog:
    """Reflect the database and apply the rules: tenant tables plus ``tenants`` filtered by id."""
    try:
        inspector = inspect(engine)
        names = sorted(inspector.get_table_names(schema=config.db_schema))
    except Exception as err:
        raise SourceUnavailable(f"cannot read the platform database catalog: {err}") from err
    unknown = sorted(set(config.tables) - set(names))
    if unknown:
        raise BadInput(f"catalog names tables that do not exist: {', '.join(unknown)}")
    plans: list[TablePlan] = []
    for name in names:
        rule = config.tables.get(name, TableRule())
        columns = [
            Column(c["name"], c["type"], _type_text(c["type"], engine))
            for c in inspector.get_columns(name, schema=config.db_schema)
        ]
        column_names = {c.name for c in columns}
        missing = sorted(set(rule.exclude_columns) - column_names)
        if missing:
            raise BadInput(f"catalog excludes columns that {name!r} lacks: {', '.join(missing)}")
        if name == config.tenants_table:
            filter_column = config.tenants_id_column
        elif config.tenant_column in column_names:
            filter_column = config.tenant_column
        else:
            continue  # not tenant content: shared tables never leave the platform
        if rule.skip:
            continue
        if filter_column not in column_names:
            raise BadInput(f"table {name!r} has no column {filter_column!r} to filter tenants")
        pk = tuple(inspector.get_pk_constraint(name, schema=config.db_schema).get(
            "constrained_columns"
        ) or ())
        kept = tuple(c for c in columns if c.name not in rule.exclude_columns)
        if not kept:
            raise BadInput(f"catalog excludes every column of {name!r}: skip the table instead")
        if set(pk) & set(rule.exclude_columns):
            pk = ()  # what is left of a key need not be unique: no key at all
        plans.append(
            TablePlan(
                name=name,
                columns=kept,
                filter_column=filter_column,
                primary_key=pk,
                excluded=tuple(rule.exclude_columns),
            )
        )
    _check_documents(config, plans, names, inspector)
    return Catalog(config=config, tables=tuple(plans), table_names=frozenset(names))


def _check_documents(config: CatalogConfig, plans: list[TablePlan], names: list[str],
                     inspector: Any) -> None:
    """Documents are never dropped silently: a documents table must be exported and complete.

    A platform without a documents table is fine (nothing to put in ZIPs) unless the catalog
    names one explicitly, which then must exist.
    """
    rule = config.documents
    if rule.table not in names:
        if "documents" in config.model_fields_set:
            raise BadInput(f"catalog [documents] names table {rule.table!r}, which does not exist")
        return
    plan = next((p for p in plans if p.name == rule.table), None)
    if plan is None:
        raise BadInput(
            f"documents table {rule.table!r} is skipped or has no tenant column "
            f"{config.tenant_column!r}: documents would silently be left out of exports")
    columns = {c["name"] for c in inspector.get_columns(rule.table, schema=config.db_schema)}
    missing = [c for c in (rule.id_column, rule.key_column, rule.name_column) if c not in columns]
    if missing:
        raise BadInput(f"documents table {rule.table!r} has no column(s) {', '.join(missing)} "
                       "named in the catalog's [documents]")


def _type_text(declared: TypeEngine[object], engine: Engine) -> str:
    """The declared type as the source database spells it (``TIMESTAMP WITH TIME ZONE``)."""
    try:
        return str(declared.compile(dialect=engine.dialect))
    except Exception:  # noqa: BLE001 - a type the dialect cannot render keeps its class name
        return type(declared).__name__
