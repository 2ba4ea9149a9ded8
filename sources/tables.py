"""What discovery knows about a table: as reflected, as classified, and as planned for a read.

Plain frozen records shared by reflection, classification, the SQL that scopes rows to a tenant
and the readers; restores read the same plan (primary key, NOT NULL columns, foreign keys).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from sqlalchemy.types import TypeEngine

TableKind = Literal["table", "view", "materialized view"]
Status = Literal["exported", "shared", "skipped", "partition", "view", "unclassified"]
ScopeKind = Literal["root", "column", "references", "schema"]


@dataclass(frozen=True)
class Column:
    """A column as declared in the database."""

    name: str
    declared: TypeEngine[object]
    declared_text: str
    nullable: bool = True
    category: str | None = None  # PostgreSQL type category (S string, N numeric, ...)


@dataclass(frozen=True)
class ForeignKey:
    """Columns of a table pointing at columns of ``parent`` (a catalog table name)."""

    columns: tuple[str, ...]
    parent: str
    parent_columns: tuple[str, ...]
    origin: Literal["database", "catalog"] = "database"
    nullable: bool = True  # some column may be NULL: "no parent via this relation"

    def describe(self, table: str) -> str:
        """``comments.post_id → posts.id``."""
        cols = ", ".join(self.columns)
        parents = ", ".join(self.parent_columns)
        return f"{table}.{cols} → {self.parent}.{parents}"


@dataclass(frozen=True)
class TableInfo:
    """A reflected table or view. ``name`` is how the catalog calls it: the bare name, or
    ``schema.table`` when two schemas hold the same name."""

    name: str
    schema: str | None
    table: str
    kind: TableKind = "table"
    columns: tuple[Column, ...] = ()
    primary_key: tuple[str, ...] = ()
    unique: tuple[tuple[str, ...], ...] = ()
    foreign_keys: tuple[ForeignKey, ...] = ()
    parent: str | None = None  # a partition (or inheriting table) is read through its parent
    in_tenant_schema: bool = False  # schema-per-tenant: one of the tenant schemas' tables

    def column(self, name: str) -> Column | None:
        """The column called ``name``, if any."""
        return next((c for c in self.columns if c.name == name), None)

    def is_unique(self, columns: tuple[str, ...]) -> bool:
        """Whether ``columns`` identify at most one row (a key or a unique constraint)."""
        wanted = set(columns)
        return any(set(key) <= wanted for key in (self.primary_key, *self.unique) if key)


@dataclass(frozen=True)
class Place:
    """Where a table lives, and (for the tenants table) the id column and its type category."""

    schema: str | None
    table: str
    column: str = ""
    category: str | None = None


@dataclass(frozen=True)
class Hop:
    """One relation used for scoping, with the parent it leads to and the parent's own scope,
    so a plan carries everything the SQL that selects a tenant's rows needs."""

    fk: ForeignKey
    parent: Place
    scope: Scope


@dataclass(frozen=True)
class Scope:
    """How a table's rows are attributed to a tenant.

    ``root``: the tenants table, by its id column. ``column``: by the tenant column, matched
    with the tenants table's id as the database compares them. ``references``: through
    ``hops`` to tenant-scoped parents, every non-NULL one of which must belong to the tenant
    (and at least one must be non-NULL). ``schema``: every row of the tenant's own schema.
    """

    kind: ScopeKind
    column: str | None = None
    category: str | None = None  # the tenant column's type category (PostgreSQL)
    tenants: Place | None = None  # column scope: the tenants table it is matched with
    hops: tuple[Hop, ...] = ()
    paths: tuple[str, ...] = ()

    @property
    def refs(self) -> tuple[ForeignKey, ...]:
        """The relations that scope the rows."""
        return tuple(h.fk for h in self.hops)

    def describe(self) -> str:
        """One line for operators and the inventory."""
        if self.kind == "root":
            return f"the tenants table, by {self.column}"
        if self.kind == "column":
            return f"tenant column {self.column}"
        if self.kind == "schema":
            return "the tenant's own schema"
        return "foreign keys: " + "; ".join(self.paths)


@dataclass(frozen=True)
class TableEntry:
    """One table or view of the platform with its class and why."""

    info: TableInfo
    status: Status
    why: str
    scope: Scope | None = None  # exported, and skipped tables that reach a tenant
    reason: str | None = None
    excluded: tuple[str, ...] = ()
    suggestion: str | None = None  # unclassified: the catalog lines that would classify it
    relations: tuple[ForeignKey, ...] = ()  # declared in the database or in the catalog

    @property
    def name(self) -> str:
        """The table's catalog name."""
        return self.info.name


@dataclass(frozen=True)
class TablePlan:
    """One table to read for a tenant: its columns (exclusions applied), where it lives and how
    its rows are scoped, plus what a restore needs (primary key, NOT NULL, foreign keys)."""

    name: str
    columns: tuple[Column, ...]
    filter_column: str
    primary_key: tuple[str, ...]
    excluded: tuple[str, ...] = ()
    schema: str | None = None
    table: str = ""
    scope: Scope | None = None
    not_null: tuple[str, ...] = ()
    foreign_keys: tuple[ForeignKey, ...] = field(default=())

    @property
    def table_name(self) -> str:
        """The table's name inside its schema."""
        return self.table or self.name

    @property
    def effective_scope(self) -> Scope:
        """The scope, defaulting to the tenant column (plans built by hand in tests)."""
        return self.scope or Scope("column", column=self.filter_column)


@dataclass(frozen=True)
class TenantRef:
    """A tenant as the platform stores it: its id as text (used for object keys, locks and
    artifacts: one tenant, one spelling), the typed key content queries compare with, and
    (schema per tenant) the schema its tables live in."""

    id: str
    key: object
    schema: str | None = None

    @classmethod
    def of(cls, value: object) -> TenantRef:
        """A reference from a bare stored key (callers predating ``TenantRef``)."""
        return value if isinstance(value, TenantRef) else cls(str(value), value)
