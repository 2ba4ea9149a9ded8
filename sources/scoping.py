"""The SQL that selects one tenant's rows of a table, and the SQL that counts the rows no tenant
gets, from the same definition of ownership (:class:`sources.tables.Scope`).

A tenant's rows: a tenant column is matched with the tenants table's id the way the database
compares them in a join, with the tenant column on the left (its affinity and collation
decide: SQLite's text ``'7'`` in an untyped column matches the integer id 7, and an index on
the tenant column serves the query), and a child table's rows through
``IN (SELECT parent key ... )`` up its relations, one
statement per table, which the planner can drive from the tenant's index. The counts resolve
every row's owner with outer joins (one pass per table): a row whose non-NULL relations lead to
two tenants is cross-tenant, one that leads to none is an orphan; both go to nobody.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

from sources.tables import Place, Scope, TenantRef

Quote = Callable[[str], str]


class Sql:
    """Dialect pieces: identifier quoting, the parameter marker, and the backend's name."""

    def __init__(self, quote: Quote, param: str, backend: str) -> None:
        self.quote = quote
        self.param = param
        self.backend = backend

    def table(self, place: Place, tenant: TenantRef | None = None, *,
              in_tenant_schema: bool = False) -> str:
        """A table reference: its schema (the tenant's own in the schema-per-tenant layout)."""
        schema = tenant.schema if in_tenant_schema and tenant is not None else place.schema
        name = self.quote(place.table)
        return f"{self.quote(schema)}.{name}" if schema else name

    def column(self, alias: str, name: str) -> str:
        """``alias."name"``."""
        return f"{alias}.{self.quote(name)}"

    def comparable(self, left: str, left_category: str | None, right: str,
                   right_category: str | None) -> tuple[str, str]:
        """Both sides as the database can compare them: PostgreSQL refuses text = integer,
        so values of different type categories are compared as text."""
        if self.backend == "postgresql" and left_category != right_category and (
                left_category and right_category):
            return f"CAST({left} AS TEXT)", f"CAST({right} AS TEXT)"
        return left, right


class Owned:
    """``WHERE`` conditions selecting a tenant's rows; parameters collected in text order."""

    def __init__(self, sql: Sql, tenant: TenantRef) -> None:
        self.sql = sql
        self.tenant = tenant
        self.params: list[object] = []
        self._aliases = (f"s{n}" for n in itertools.count(1))

    def where(self, scope: Scope, alias: str) -> str:
        """Rows of ``alias`` (a table with ``scope``) that belong to the tenant."""
        sql = self.sql
        if scope.kind == "schema":
            return "1 = 1"
        if scope.kind == "root" or (scope.kind == "column" and scope.tenants is None):
            self.params.append(self.tenant.key)
            return f"{sql.column(alias, scope.column or '')} = {sql.param}"
        if scope.kind == "column" and scope.tenants is not None:
            tenants, x = scope.tenants, next(self._aliases)
            left, right = sql.comparable(sql.column(alias, scope.column or ""), scope.category,
                                         sql.column(x, tenants.column), tenants.category)
            self.params.append(self.tenant.key)
            return (f"{left} IN (SELECT {right} FROM {sql.table(tenants)} {x} "
                    f"WHERE {sql.column(x, tenants.column)} = {sql.param})")
        parts: list[str] = []
        any_set: list[str] = []
        for hop in scope.hops:
            cols = [sql.column(alias, c) for c in hop.fk.columns]
            left = cols[0] if len(cols) == 1 else "(" + ", ".join(cols) + ")"
            p = next(self._aliases)
            keys = ", ".join(sql.column(p, c) for c in hop.fk.parent_columns)
            inner = self.where(hop.scope, p)
            clause = f"{left} IN (SELECT {keys} FROM {sql.table(hop.parent)} {p} WHERE {inner})"
            if parts and sql.backend == "sqlite":
                # Only the first relation may drive an index: given two IN lists over the two
                # columns of a composite key (group_members), SQLite probes every pair of
                # their values (12k groups x 120k members). ``(x IN ...) = 1`` is the same test
                # (IN gives 1, 0 or NULL) that the planner only checks row by row.
                clause = f"({clause}) = 1"
            if len(scope.hops) > 1 and hop.fk.nullable:
                clause = "(" + " OR ".join(f"{c} IS NULL" for c in cols) + f" OR {clause})"
            parts.append(clause)
            any_set.append(" AND ".join(f"{c} IS NOT NULL" for c in cols))
        if len(scope.hops) > 1 and all(h.fk.nullable for h in scope.hops):
            parts.append("(" + " OR ".join(f"({s})" for s in any_set) + ")")
        return " AND ".join(parts)


def unowned_counts(sql: Sql, place: Place, scope: Scope) -> str | None:
    """A statement returning (cross-tenant rows, orphan rows) of a table, platform-wide; None
    when no row can be unowned (the tenants table, a tenant's own schema)."""
    if scope.kind in ("root", "schema") or (scope.kind == "column" and scope.tenants is None):
        return None
    ctes: list[str] = []
    names: dict[tuple[str | None, str], str] = {}
    keys: dict[tuple[str | None, str], list[str]] = {}
    _collect_keys(scope, keys)
    target = _cte(sql, place, scope, ctes, names, keys)
    return (f"WITH {', '.join(ctes)} SELECT "
            "COALESCE(SUM(CASE WHEN crossed = 1 THEN 1 ELSE 0 END), 0), "
            "COALESCE(SUM(CASE WHEN owner IS NULL AND crossed = 0 THEN 1 ELSE 0 END), 0) "
            f"FROM {target}")


def _collect_keys(scope: Scope, keys: dict[tuple[str | None, str], list[str]]) -> None:
    """The columns children join on, per parent table."""
    for hop in scope.hops:
        wanted = keys.setdefault((hop.parent.schema, hop.parent.table), [])
        wanted.extend(c for c in hop.fk.parent_columns if c not in wanted)
        _collect_keys(hop.scope, keys)


def _cte(sql: Sql, place: Place, scope: Scope, ctes: list[str],
         names: dict[tuple[str | None, str], str],
         keys: dict[tuple[str | None, str], list[str]]) -> str:
    """Name of a CTE ``(k0.., owner, crossed)`` for a table, parents' CTEs first."""
    ident = (place.schema, place.table)
    if ident in names:
        return names[ident]
    exposed = ", ".join(f"{sql.column('a', c)} AS k{i}" for i, c in enumerate(keys.get(ident, [])))
    exposed = exposed + ", " if exposed else ""
    source = f"{sql.table(place)} a"
    if scope.kind == "root":
        body = f"SELECT {exposed}{sql.column('a', scope.column or '')} AS owner, 0 AS crossed " \
               f"FROM {source}"
    elif scope.kind == "column" and scope.tenants is not None:
        tenants = scope.tenants
        left, right = sql.comparable(sql.column("a", scope.column or ""), scope.category,
                                     sql.column("x", tenants.column), tenants.category)
        body = (f"SELECT {exposed}{sql.column('x', tenants.column)} AS owner, 0 AS crossed "
                f"FROM {source} LEFT JOIN {sql.table(tenants)} x ON {left} = {right}")
    else:
        joins, owners, set_, parents_crossed = [], [], [], []
        for i, hop in enumerate(scope.hops):
            parent = _cte(sql, hop.parent, hop.scope, ctes, names, keys)
            positions = keys[(hop.parent.schema, hop.parent.table)]
            on = " AND ".join(f"{sql.column('a', c)} = p{i}.k{positions.index(pc)}"
                              for c, pc in zip(hop.fk.columns, hop.fk.parent_columns,
                                               strict=True))
            joins.append(f"LEFT JOIN {parent} p{i} ON {on}")
            owners.append(f"p{i}.owner")
            is_set = " AND ".join(f"{sql.column('a', c)} IS NOT NULL" for c in hop.fk.columns)
            set_.append(f"({is_set})")
            parents_crossed.append(f"({is_set} AND p{i}.crossed = 1)")
        resolved = [f"(NOT {s} OR {o} IS NOT NULL)" for s, o in zip(set_, owners, strict=True)]
        agree = [f"({a} IS NULL OR {b} IS NULL OR {a} = {b})"
                 for a, b in itertools.combinations(owners, 2)]
        differ = [f"({a} IS NOT NULL AND {b} IS NOT NULL AND {a} <> {b})"
                  for a, b in itertools.combinations(owners, 2)]
        owned = " AND ".join([*resolved, "(" + " OR ".join(set_) + ")", *agree])
        crossed = " OR ".join([*differ, *parents_crossed])
        first = owners[0] if len(owners) == 1 else f"COALESCE({', '.join(owners)})"
        body = (f"SELECT {exposed}CASE WHEN {owned} THEN {first} END "
                f"AS owner, CASE WHEN {crossed} THEN 1 ELSE 0 END AS crossed "
                f"FROM {source} {' '.join(joins)}")
    name = sql.quote(f"te_owner_{len(names) + 1}")
    names[ident] = name
    ctes.append(f"{name} AS ({body})")
    return name
