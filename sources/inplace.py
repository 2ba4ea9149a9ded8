"""Replacing one tenant's rows in the live platform database with a snapshot's
(``restore --in-place``), in one transaction, touching no other tenant.

"The tenant's rows" are exactly what a backup of the tenant selects (:mod:`sources.scoping`,
through the live catalog). Against the snapshot, staged beside each table
(:mod:`sources.existing`), by primary key:

* a row of the tenant the snapshot lacks (created after it) is **deleted**, children first;
* a row of the tenant that differs from the snapshot's is **updated** to it, parents first;
* a snapshot row the table lacks is **inserted**, parents first; the rest is left untouched.

Refused before anything changes (``BadInput``): a snapshot row whose key is now used by a row
that is not the tenant's (another tenant's, or shared between tenants: taking it over would
change another tenant), and a row that is not the tenant's (a cross-tenant join row, another
tenant's row, a shared table's row) pointing at a row the restore would delete. Shared tables
are never touched, since they are not in a snapshot.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine

from kernel.dburl import describe_url
from kernel.errors import BadInput
from sources.catalog import Catalog
from sources.existing import (
    Place,
    Staged,
    advance_sequences,
    drop_stages,
    key_match,
    move_sql,
    place_tables,
    stage,
)
from sources.loader import TableLoad, Transaction, load_order, transaction
from sources.scoping import Owned, Sql
from sources.tables import ForeignKey, Scope, TablePlan, TenantRef


@dataclass
class Replaced:
    """What an in-place restore did, per table: rows deleted, updated, inserted, unchanged;
    ``collected``: the values of the collected column in the rows it deleted."""

    tables: dict[str, dict[str, int]] = field(default_factory=dict)
    collected: list[Any] = field(default_factory=list)
    sequences: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def total(self, what: str) -> int:
        """Rows ``deleted``, ``updated``, ``inserted`` or ``unchanged`` over every table."""
        return sum(t[what] for t in self.tables.values())


def replace_tenant(engine: Engine, catalog: Catalog, tenant: TenantRef,
                   tables: Sequence[TableLoad], *, collect: tuple[str, str] | None = None,
                   before_commit: Callable[[], None] | None = None) -> Replaced:
    """Put the tenant's rows back to the snapshot ``tables``; see the module docstring.

    ``collect``: ``(table, column)`` whose values in deleted rows are returned (the storage
    keys of documents created after the snapshot). ``before_commit`` runs once the rows are in
    place; if it raises, nothing is committed.
    """
    plans = {p.name: p for p in catalog.backup_tables}
    unknown = sorted(t.name for t in tables if t.name not in plans)
    if unknown:
        raise BadInput(f"the platform has no tenant table(s) {', '.join(unknown)} of the "
                       "snapshot any more: restore it into an empty database instead",
                       tenant_id=tenant.id)
    report = Replaced()
    names = {t.name for t in tables}
    report.warnings += [f"table {p!r} is not in the snapshot: the tenant's rows in it are left "
                        "as they are" for p in sorted(plans) if p not in names]
    ordered = load_order(tables)
    places = {t.name: _place(plans[t.name], tenant) for t in ordered}
    what = f"restoring tenant {tenant.id!r} in place in {describe_url(engine.url)}"
    with transaction(engine, what, tenant.id) as tx:
        placed, _ = place_tables(tx, ordered, places)
        staged = [stage(tx, load, target, i, tenant.id)
                  for i, (load, target) in enumerate(placed, 1)]
        scopes = {s.load.name: plans[s.load.name].effective_scope for s in staged}
        job = _Job(tx, Sql(tx.quote, tx.param, tx.backend), tenant, scopes)
        job.refuse_takeovers(staged)
        job.refuse_broken_references(staged, catalog, places)
        for table in reversed(staged):
            if collect is not None and collect[0] == table.load.name:
                report.collected = job.doomed_values(table, collect[1])
            report.tables[table.load.name] = {"deleted": job.delete(table)}
        for table in staged:
            counts = report.tables[table.load.name]
            counts["updated"] = job.update(table)
            counts["inserted"] = tx.run(move_sql(tx, table, job.absent(table)))
            counts["unchanged"] = table.rows - counts["updated"] - counts["inserted"]
        if not tx.sqlite:
            report.sequences = advance_sequences(tx, staged)
        drop_stages(tx, staged)
        if before_commit is not None:
            before_commit()
    return report


def _place(plan: TablePlan, tenant: TenantRef) -> Place:
    """Where the live table is: the tenant's own schema in the schema-per-tenant layout."""
    if plan.effective_scope.kind == "schema":
        return tenant.schema, plan.table_name
    return plan.schema, plan.table_name


class _Job:
    """The statements of one in-place restore (one per table and step, set-based)."""

    def __init__(self, tx: Transaction, sql: Sql, tenant: TenantRef,
                 scopes: dict[str, Scope]) -> None:
        self.tx, self.sql, self.tenant, self.scopes = tx, sql, tenant, scopes

    def owned(self, name: str, alias: str) -> tuple[str, list[object]]:
        """The condition selecting the tenant's rows of table ``name`` as ``alias``."""
        owned = Owned(self.sql, self.tenant)
        condition = owned.where(self.scopes[name], alias)
        return f"({condition})", owned.params

    def _kept(self, table: Staged, alias: str) -> str:
        """The snapshot has a row with the same key (no key: it has no such row)."""
        if not table.key:
            return "1 = 0"
        return (f"EXISTS (SELECT 1 FROM {table.stage} k WHERE "
                f"{key_match(self.tx, 'k', alias, table.key)})")

    def refuse_takeovers(self, staged: Sequence[Staged]) -> None:
        """A snapshot row whose key another tenant's (or a cross-tenant) row now has."""
        found = []
        for table in staged:
            if not table.key:
                continue
            owned, params = self.owned(table.load.name, "t")
            match = key_match(self.tx, "t", "s", table.key)
            count = int(self.tx.scalar(
                f"SELECT count(*) FROM {table.stage} s WHERE EXISTS (SELECT 1 FROM {table.ref} "
                f"t WHERE {match}) AND NOT EXISTS (SELECT 1 FROM {table.ref} t WHERE {match} "
                f"AND {owned})", params) or 0)
            if count:
                found.append(f"{table.load.name} ({count} row(s))")
        if found:
            raise BadInput(
                f"in-place restore of tenant {self.tenant.id!r} refused: rows of the snapshot "
                "now have keys used by rows that are not the tenant's (another tenant's, or "
                f"shared between tenants): {', '.join(found)}; taking them over would change "
                "another tenant (nothing was changed)", tenant_id=self.tenant.id)

    def refuse_broken_references(self, staged: Sequence[Staged], catalog: Catalog,
                                 places: dict[str, Place]) -> None:
        """A row that is not the tenant's pointing at a row the restore deletes."""
        by_name = {t.load.name: t for t in staged}
        found = []
        for entry in catalog.entries:
            if entry.info.kind != "table" or entry.status in ("partition", "view"):
                continue
            for fk in entry.relations or entry.info.foreign_keys:
                parent = by_name.get(fk.parent)
                if parent is None:
                    continue
                child = places.get(entry.name) or (
                    (self.tenant.schema if entry.info.in_tenant_schema else entry.info.schema),
                    entry.info.table)
                count = self._breaking(child, entry.name, fk, parent)
                if count:
                    found.append(f"{count} row(s) of {entry.name} ({fk.describe(entry.name)})")
        if found:
            raise BadInput(
                f"in-place restore of tenant {self.tenant.id!r} refused: rows that are not the "
                "tenant's (another tenant's, shared between tenants, or platform-wide) "
                "reference rows of the tenant that the snapshot does not have (created after "
                f"it), which the restore would delete: {'; '.join(found)} (nothing was changed)",
                tenant_id=self.tenant.id)

    def _breaking(self, child: Place, name: str, fk: ForeignKey, parent: Staged) -> int:
        tx = self.tx
        is_set = " AND ".join(f"c.{tx.quote(c)} IS NOT NULL" for c in fk.columns)
        pairs = list(zip(fk.columns, fk.parent_columns, strict=True))
        to_parent = " AND ".join(f"p.{tx.quote(pc)} = c.{tx.quote(c)}" for c, pc in pairs)
        to_stage = " AND ".join(f"s.{tx.quote(pc)} = c.{tx.quote(c)}" for c, pc in pairs)
        owned_parent, params = self.owned(parent.load.name, "p")
        sql = (f"SELECT count(*) FROM {tx.table(child[1], child[0])} c WHERE {is_set} AND "
               f"EXISTS (SELECT 1 FROM {parent.ref} p WHERE {to_parent} AND {owned_parent}) "
               f"AND NOT EXISTS (SELECT 1 FROM {parent.stage} s WHERE {to_stage})")
        if name in self.scopes:  # the tenant's own rows are deleted or rewritten themselves
            owned_child, more = self.owned(name, "c")
            sql += f" AND (CASE WHEN {owned_child} THEN 1 ELSE 0 END) = 0"
            params = params + more
        return int(tx.scalar(sql, params) or 0)

    def doomed_values(self, table: Staged, column: str) -> list[Any]:
        """``column`` of the tenant's rows the snapshot lacks (before they are deleted)."""
        owned, params = self.owned(table.load.name, "t")
        return [r[0] for r in self.tx.rows(
            f"SELECT t.{self.tx.quote(column)} FROM {table.ref} t WHERE {owned} AND NOT "
            f"({self._kept(table, 't')})", params)]

    def delete(self, table: Staged) -> int:
        """Delete the tenant's rows the snapshot lacks (its ancestors are still in place, so
        ownership is judged as a backup would judge it)."""
        owned, params = self.owned(table.load.name, "t")
        return self.tx.run(f"DELETE FROM {table.ref} AS t WHERE {owned} AND NOT "
                           f"({self._kept(table, 't')})", params)

    def update(self, table: Staged) -> int:
        """Rewrite the rows whose values differ from the snapshot's (compared exactly: as text
        on PostgreSQL, with storage classes and no collation on SQLite)."""
        tx = self.tx
        values = [c for c in table.columns if c not in table.key]
        if not table.key or not values:
            return 0
        if tx.sqlite:
            same = " AND ".join(
                f"t.{tx.quote(c)} IS s.{tx.quote(c)} COLLATE BINARY AND "
                f"typeof(t.{tx.quote(c)}) = typeof(s.{tx.quote(c)})" for c in values)
        else:
            same = " AND ".join(f"CAST(t.{tx.quote(c)} AS TEXT) IS NOT DISTINCT FROM "
                                f"CAST(s.{tx.quote(c)} AS TEXT)" for c in values)
        assign = ", ".join(f"{tx.quote(c)} = s.{tx.quote(c)}" for c in values)
        return tx.run(f"UPDATE {table.ref} AS t SET {assign} FROM {table.stage} s WHERE "
                      f"{key_match(tx, 't', 's', table.key)} AND NOT ({same})")

    def absent(self, table: Staged) -> str:
        """The ``WHERE`` of the insert: snapshot rows whose key the table does not have."""
        if not table.key:
            return ""
        return (f" WHERE NOT EXISTS (SELECT 1 FROM {table.ref} t WHERE "
                f"{key_match(self.tx, 't', 's', table.key)})")
