"""Which tables and columns make up a tenant: discovery classifies every table of the platform
(:mod:`sources.classify`) under the catalog TOML's rules, and plans what a run reads.

Discovery itself only refuses a catalog that names what the database lacks. Whether a run may
start (every table classified, documents confined to their tenant) is
:meth:`Catalog.require_runnable`, so ``catalog show`` can explain a catalog that is not ready.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from sqlalchemy import Engine

from kernel.errors import BadInput
from sources.catalog_config import CatalogConfig, DocumentsRule, TableRule
from sources.classify import classify, toml_key
from sources.reflect import Signature, reflect
from sources.tables import Column, ForeignKey, Scope, TableEntry, TableInfo, TablePlan

__all__ = ["Catalog", "CatalogConfig", "Column", "DocumentsRule", "ForeignKey", "Scope",
           "TableEntry", "TableInfo", "TablePlan", "TableRule", "discover"]


@dataclass(frozen=True)
class Catalog:
    """The resolved catalog: the tables a run reads, in name order, and every table's class."""

    config: CatalogConfig
    tables: tuple[TablePlan, ...]
    table_names: frozenset[str] = frozenset()
    entries: tuple[TableEntry, ...] = ()
    backup_tables: tuple[TablePlan, ...] = ()
    backend: str = "sqlite"
    tenant_schemas: dict[str, Signature] = field(default_factory=dict)
    template: Signature | None = None

    def table(self, name: str) -> TablePlan | None:
        """The plan of a table this run reads, or None."""
        return next((t for t in self.tables if t.name == name), None)

    def entry(self, name: str) -> TableEntry | None:
        """The classification of a table or view."""
        return next((e for e in self.entries if e.name == name), None)

    def scoped(self, name: str) -> tuple[TableInfo, Scope] | None:
        """A tenant-scoped table (exported or not) with its scope: what parents resolve to."""
        entry = self.entry(name)
        if entry is None or entry.scope is None:
            return None
        return entry.info, entry.scope

    @property
    def tenants(self) -> TablePlan | None:
        """The tenants table, when the database has one and it is read."""
        return self.table(self.config.tenants_table)

    @property
    def tenants_info(self) -> TableInfo | None:
        """The tenants table as reflected, exported or not."""
        entry = next((e for e in self.entries if e.scope and e.scope.kind == "root"), None)
        return entry.info if entry else None

    @property
    def unclassified(self) -> list[TableEntry]:
        """Tables no rule classifies: a run refuses while there are any."""
        return [e for e in self.entries if e.status == "unclassified"]

    def problems(self) -> list[str]:
        """Why a run would refuse, one line each (empty when it may start)."""
        lines = [
            f"table {e.name!r} is not classified ({e.why}); add to the catalog: "
            + " ".join((e.suggestion or "").replace("\n", " ").split())
            + f" (or [tables.{toml_key(e.name)}] skip = true with a reason)"
            for e in self.unclassified
        ]
        lines.extend(_documents_problems(self))
        return lines

    def require_runnable(self) -> None:
        """Refuse (``BadInput``, exit 2) while a table is unclassified or documents are not
        confined, naming each table and the catalog line that would fix it."""
        problems = self.problems()
        if problems:
            raise BadInput("; ".join(problems))

    def for_backup(self) -> Catalog:
        """The catalog a backup reads: every table that reaches a tenant, skipped ones
        included, with every column (export exclusions do not apply)."""
        self.require_runnable()
        return replace(self, tables=self.backup_tables)

    def dependency_order(self, plans: tuple[TablePlan, ...] | None = None
                         ) -> tuple[TablePlan, ...]:
        """Plans with every referenced table before the tables referencing it (self and
        circular references ignored), for loads that check foreign keys."""
        todo = {p.name: p for p in (plans if plans is not None else self.tables)}
        ordered: list[TablePlan] = []
        while todo:
            ready = [p for p in todo.values() if not any(
                fk.parent in todo and fk.parent != p.name for fk in p.foreign_keys)]
            chosen = ready or [min(todo.values(), key=lambda p: p.name)]  # a cycle: break it
            for plan in sorted(chosen, key=lambda p: p.name):
                ordered.append(todo.pop(plan.name))
        return tuple(ordered)


def _documents_problems(catalog: Catalog) -> list[str]:
    """Documents are never dropped silently and never read across tenants by default."""
    rule = catalog.config.documents
    entry = catalog.entry(rule.table)
    if entry is None:
        if "documents" in catalog.config.model_fields_set:
            return [f"catalog [documents] names table {rule.table!r}, which does not exist"]
        return []
    if entry.status != "exported":
        return [f"documents table {rule.table!r} is {entry.status}: documents would silently "
                "be left out of exports"]
    names = {c.name for c in entry.info.columns}
    missing = [c for c in (rule.id_column, rule.key_column, rule.name_column) if c not in names]
    if missing:
        return [f"documents table {rule.table!r} has no column(s) {', '.join(missing)} named "
                "in the catalog's [documents]"]
    if not rule.has_key_rule:
        fixed = (f"key_prefix {rule.key_prefix!r} names no tenant, so it keeps no tenant's "
                 "blobs from another's; " if rule.key_prefix else "")
        return [fixed + "the catalog does not say where a tenant's documents live: add to "
                "[documents] "
                'key_prefix = "tenants/{tenant_id}/" (the prefix holding each tenant\'s blobs), '
                "or keys_tenant_scoped = false to export keys as they are and report those "
                "other tenants' rows also use"]
    return []


def discover(engine: Engine, config: CatalogConfig) -> Catalog:
    """Reflect the database and classify every table under the catalog's rules.

    Raises ``BadInput`` when the catalog names tables, columns or relations the database lacks
    and ``SourceUnavailable`` when the database cannot be read.
    """
    reflected = reflect(engine, config)
    entries = classify(reflected, config)
    exported = tuple(_plan(e, export=True) for e in entries if e.status == "exported")
    backed_up = tuple(_plan(e, export=False) for e in entries
                      if e.status in ("exported", "skipped") and e.scope is not None)
    tables = frozenset(e.name for e in entries if e.info.kind == "table")
    return Catalog(config=config, tables=exported, table_names=tables, entries=tuple(entries),
                   backup_tables=backed_up, backend=reflected.backend,
                   tenant_schemas=reflected.tenant_schemas, template=reflected.template)


def _plan(entry: TableEntry, *, export: bool) -> TablePlan:
    info, scope = entry.info, entry.scope
    if scope is None:
        raise ValueError(f"{info.name!r} reaches no tenant: it cannot be read per tenant")
    excluded = entry.excluded if export else ()
    if export and excluded and len(excluded) >= len(info.columns):
        raise BadInput(f"catalog excludes every column of {info.name!r}: skip the table instead")
    kept = tuple(c for c in info.columns if c.name not in excluded)
    pk = info.primary_key if not set(info.primary_key) & set(excluded) else ()
    names = {c.name for c in kept}
    fks = tuple(fk for fk in entry.relations if set(fk.columns) <= names)
    return TablePlan(
        name=info.name, columns=kept,
        filter_column=(scope.column or "") if scope.kind in ("root", "column") else "",
        primary_key=pk, excluded=excluded, schema=info.schema, table=info.table, scope=scope,
        not_null=tuple(c.name for c in kept if not c.nullable), foreign_keys=fks)

